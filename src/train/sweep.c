/* Sweep files: parsing, expansion into grid points, validation; the sweep manifest. */
#include "train/sweep.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "base/fileio.h"
#include "base/json.h"
#include "fewshot/interventions.h"

enum { MAX_VARS = 8, MAX_POINTS = 100000 };

typedef struct {
    int n;
    const char *name[MAX_VARS];
    const cJSON *value[MAX_VARS];
} bindings;

/* Text of a scalar for names and "{var}" substitution: integers without a decimal point. */
static void scalar_text(const cJSON *v, char *out, size_t n)
{
    if (cJSON_IsString(v))
        snprintf(out, n, "%s", v->valuestring);
    else if (cJSON_IsBool(v))
        snprintf(out, n, "%s", cJSON_IsTrue(v) ? "true" : "false");
    else if (cJSON_IsNumber(v) && v->valuedouble == (double)(long long)v->valuedouble)
        snprintf(out, n, "%lld", (long long)v->valuedouble);
    else if (cJSON_IsNumber(v))
        snprintf(out, n, "%g", v->valuedouble);
    else if (cJSON_IsArray(v)) {
        size_t used = 0;
        out[0] = 0;
        for (const cJSON *e = v->child; e && used + 1 < n; e = e->next) {
            char part[64];
            scalar_text(e, part, sizeof part);
            used += (size_t)snprintf(out + used, n - used, "%s%s", used ? "-" : "", part);
        }
    } else
        snprintf(out, n, "null");
}

static bool is_range(const char *s, size_t len, long *a, long *b)
{
    char buf[64];
    if (len >= sizeof buf)
        return false;
    memcpy(buf, s, len);
    buf[len] = 0;
    char tail;
    return sscanf(buf, "%ld..%ld%c", a, b, &tail) == 2;
}

/* Replace "{var}" in a string; "{a..b}" ranges are kept for the list expansion. A string
 * that is exactly "{var}" becomes a copy of the value. */
static cJSON *subst_string(const char *s, const bindings *b, const char *origin, fs_error *err)
{
    size_t len = strlen(s);
    if (len > 2 && s[0] == '{' && s[len - 1] == '}')
        for (int i = 0; i < b->n; i++)
            if (strlen(b->name[i]) == len - 2 && !strncmp(s + 1, b->name[i], len - 2))
                return cJSON_Duplicate(b->value[i], 1);
    char out[4096];
    size_t used = 0;
    for (const char *p = s; *p;) {
        const char *close = *p == '{' ? strchr(p, '}') : NULL;
        if (!close) {
            if (used + 1 >= sizeof out)
                goto too_long;
            out[used++] = *p++;
            continue;
        }
        size_t n = (size_t)(close - p - 1);
        long ra, rb;
        int k = -1;
        for (int i = 0; i < b->n; i++)
            if (strlen(b->name[i]) == n && !strncmp(p + 1, b->name[i], n))
                k = i;
        char text[512];
        if (k >= 0)
            scalar_text(b->value[k], text, sizeof text);
        else if (is_range(p + 1, n, &ra, &rb))
            snprintf(text, sizeof text, "%.*s", (int)(n + 2), p);
        else {
            fs_fail(err, "%s: \"%s\": unknown variable {%.*s} (bound here: %d variable(s) from \"for\")", origin, s,
                    (int)n, p + 1, b->n);
            return NULL;
        }
        size_t tl = strlen(text);
        if (used + tl + 1 >= sizeof out)
            goto too_long;
        memcpy(out + used, text, tl);
        used += tl;
        p = close + 1;
    }
    out[used] = 0;
    return cJSON_CreateString(out);
too_long:
    fs_fail(err, "%s: \"%.100s...\": expanded string too long", origin, s);
    return NULL;
}

/* Copy of `v` with variables substituted; in lists, "{a..b}" elements expand and "!x"
 * elements remove x. */
static cJSON *expand(const cJSON *v, const bindings *b, const char *origin, fs_error *err)
{
    if (cJSON_IsString(v)) {
        cJSON *s = subst_string(v->valuestring, b, origin, err);
        const char *brace = s && cJSON_IsString(s) ? strstr(s->valuestring, "..") : NULL;
        if (brace && strchr(s->valuestring, '{')) {
            fs_fail(err, "%s: \"%s\": a {a..b} range is only allowed in an element of a list", origin, v->valuestring);
            cJSON_Delete(s);
            return NULL;
        }
        return s;
    }
    if (cJSON_IsObject(v)) {
        cJSON *o = cJSON_CreateObject();
        for (const cJSON *e = v->child; e; e = e->next) {
            cJSON *x = expand(e, b, origin, err);
            if (!x) {
                cJSON_Delete(o);
                return NULL;
            }
            cJSON_AddItemToObject(o, e->string, x);
        }
        return o;
    }
    if (!cJSON_IsArray(v))
        return cJSON_Duplicate(v, 1);
    cJSON *arr = cJSON_CreateArray(), *remove = cJSON_CreateArray();
    for (const cJSON *e = v->child; e; e = e->next) {
        cJSON *x;
        if (!cJSON_IsString(e)) {
            x = expand(e, b, origin, err);
            if (!x)
                goto fail;
            cJSON_AddItemToArray(arr, x);
            continue;
        }
        x = subst_string(e->valuestring, b, origin, err);
        if (!x)
            goto fail;
        if (!cJSON_IsString(x)) {
            cJSON_AddItemToArray(arr, x);
            continue;
        }
        const char *s = x->valuestring, *open = strchr(s, '{'), *close = open ? strchr(open, '}') : NULL;
        long ra, rb;
        bool neg = s[0] == '!';
        cJSON *dest = neg ? remove : arr;
        if (open && close && is_range(open + 1, (size_t)(close - open - 1), &ra, &rb)) {
            if (rb < ra || rb - ra > 10000) {
                fs_fail(err, "%s: \"%s\": expected a range {a..b} with a <= b (at most 10001 values)", origin, s);
                cJSON_Delete(x);
                goto fail;
            }
            for (long i = ra; i <= rb; i++) {
                char item[4200];
                snprintf(item, sizeof item, "%.*s%ld%s", (int)(open - s - neg), s + neg, i, close + 1);
                cJSON_AddItemToArray(dest, cJSON_CreateString(item));
            }
            cJSON_Delete(x);
        } else if (neg) {
            cJSON_AddItemToArray(remove, cJSON_CreateString(s + 1));
            cJSON_Delete(x);
        } else {
            cJSON_AddItemToArray(arr, x);
        }
    }
    for (const cJSON *r = remove->child; r; r = r->next) {
        bool found = false;
        for (cJSON *e = arr->child; e;) {
            cJSON *next = e->next;
            if (cJSON_IsString(e) && !strcmp(e->valuestring, r->valuestring)) {
                cJSON_Delete(cJSON_DetachItemViaPointer(arr, e));
                found = true;
            }
            e = next;
        }
        if (!found) {
            fs_fail(err, "%s: \"!%s\" removes nothing: \"%s\" is not in the list", origin, r->valuestring,
                    r->valuestring);
            goto fail;
        }
    }
    cJSON_Delete(remove);
    return arr;
fail:
    cJSON_Delete(arr);
    cJSON_Delete(remove);
    return NULL;
}

/* root[section][key] = value for "section.key" (or "seed" = model.init_seed). Takes value. */
static int set_dotted(cJSON *root, const char *key, cJSON *value, const char *origin, fs_error *err)
{
    char section[64], name[128];
    if (!strcmp(key, "seed")) {
        snprintf(section, sizeof section, "model");
        snprintf(name, sizeof name, "init_seed");
    } else {
        const char *dot = strchr(key, '.');
        if (!dot || dot == key || !dot[1] || strchr(dot + 1, '.') || (size_t)(dot - key) >= sizeof section ||
            strlen(dot + 1) >= sizeof name) {
            cJSON_Delete(value);
            return fs_fail(err, "%s: \"%s\": expected \"section.key\" (e.g. \"train.lr\") or \"seed\"", origin, key);
        }
        snprintf(section, sizeof section, "%.*s", (int)(dot - key), key);
        snprintf(name, sizeof name, "%s", dot + 1);
    }
    cJSON *sec = cJSON_GetObjectItemCaseSensitive(root, section);
    if (!sec)
        sec = cJSON_AddObjectToObject(root, section);
    if (!cJSON_IsObject(sec)) {
        cJSON_Delete(value);
        return fs_fail(err, "%s: \"%s\": the config's \"%s\" is not an object", origin, key, section);
    }
    cJSON_DeleteItemFromObjectCaseSensitive(sec, name);
    cJSON_AddItemToObject(sec, name, value);
    return 0;
}

static int apply_all(cJSON *root, const cJSON *overrides, const char *origin, fs_error *err)
{
    for (const cJSON *o = overrides ? overrides->child : NULL; o; o = o->next)
        if (set_dotted(root, o->string, cJSON_Duplicate(o, 1), origin, err))
            return -1;
    return 0;
}

static int check_keys(const cJSON *obj, const char *const *known, const char *origin, const char *what,
                      fs_error *err)
{
    for (const cJSON *e = obj->child; e; e = e->next) {
        bool ok = false;
        for (const char *const *k = known; *k; k++)
            ok |= !strcmp(e->string, *k);
        if (!ok) {
            char list[256] = "";
            for (const char *const *k = known; *k; k++)
                snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", k == known ? "" : ", ", *k);
            return fs_fail(err, "%s: %s: unknown key \"%s\" (known: %s)", origin, what, e->string, list);
        }
    }
    return 0;
}

static void sanitize(char *s)
{
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && !strchr("._=+-", *s))
            *s = '_';
}

/* A point: resolve and validate its config. Takes `overrides`. */
static int add_point(fs_sweep *s, const cJSON *base, const cJSON *common, const char *variant, cJSON *overrides,
                     const cJSON *axes, const int *axis_pick, fs_error *err)
{
    if (s->n >= MAX_POINTS) {
        cJSON_Delete(overrides);
        return fs_fail(err, "%s: more than %d grid points", s->path, MAX_POINTS);
    }
    fs_sweep_point *p = &s->points[s->n];
    memset(p, 0, sizeof *p);
    p->overrides = overrides;
    s->n++;
    snprintf(p->variant, sizeof p->variant, "%s", variant ? variant : "");
    char name[1024];
    snprintf(name, sizeof name, "%s", variant ? variant : "");
    int a = 0;
    for (const cJSON *ax = axes->child; ax; ax = ax->next, a++) {
        const cJSON *v = cJSON_GetArrayItem(ax, axis_pick[a]);
        const char *dot = strrchr(ax->string, '.');
        char text[256];
        scalar_text(v, text, sizeof text);
        size_t used = strlen(name);
        snprintf(name + used, sizeof name - used, "%s%s=%s", used ? "_" : "", dot ? dot + 1 : ax->string, text);
        if (cJSON_HasObjectItem(overrides, ax->string))
            return fs_fail(err, "%s: variant %s sets \"%s\", which is also an axis; keep it in one place", s->path,
                           variant ? variant : "(none)", ax->string);
        cJSON_AddItemToObject(overrides, ax->string, cJSON_Duplicate(v, 1));
    }
    if (!name[0])
        snprintf(name, sizeof name, "run");
    if (strlen(name) >= sizeof p->name)
        return fs_fail(err, "%s: run name \"%.200s\" is longer than %zu characters", s->path, name,
                       sizeof p->name - 1);
    snprintf(p->name, sizeof p->name, "%s", name);
    sanitize(p->name);
    for (int i = 0; i < s->n - 1; i++)
        if (!strcmp(s->points[i].name, p->name))
            return fs_fail(err, "%s: two grid points are both named \"%s\"; give variants distinct names", s->path,
                           p->name);
    char origin[1400];
    snprintf(origin, sizeof origin, "%s: run %s", s->path, p->name);
    p->config = cJSON_Duplicate(base, 1);
    if (apply_all(p->config, common, origin, err) || apply_all(p->config, overrides, origin, err))
        return -1;
    fs_run_config cfg;
    fs_run_config_default(&cfg);
    int rc = fs_run_config_apply(p->config, origin, &cfg, err);
    if (!rc)
        rc = fs_run_config_validate(&cfg, origin, err);
    if (!rc && cfg.clamps.named) {
        fs_interventions iv;
        fs_interventions_default(&iv);
        rc = fs_interventions_from_json(&iv, cfg.clamps.named, &cfg.model, origin, err);
    }
    p->train_iters = cfg.train.train_iters;
    fs_run_config_free(&cfg);
    return rc;
}

/* Every combination of the axes' values for one variant. */
static int add_axes_product(fs_sweep *s, const cJSON *base, const cJSON *common, const char *variant,
                            const cJSON *vset, fs_error *err)
{
    int naxes = cJSON_GetArraySize(s->axes), pick[64] = {0};
    if (naxes > 64)
        return fs_fail(err, "%s: axes: at most 64 axes", s->path);
    for (;;) {
        cJSON *ov = vset ? cJSON_Duplicate(vset, 1) : cJSON_CreateObject();
        if (add_point(s, base, common, variant, ov, s->axes, pick, err))
            return -1;
        int a = naxes - 1;
        const cJSON *ax = cJSON_GetArrayItem(s->axes, a);
        while (a >= 0 && ++pick[a] == cJSON_GetArraySize(ax)) {
            pick[a--] = 0;
            ax = a >= 0 ? cJSON_GetArrayItem(s->axes, a) : NULL;
        }
        if (a < 0)
            return 0;
    }
}

static int expand_variant(fs_sweep *s, const cJSON *base, const cJSON *common, const cJSON *v, int index,
                          fs_error *err)
{
    char origin[1200];
    snprintf(origin, sizeof origin, "%s: variants[%d]", s->path, index);
    static const char *const known[] = {"name", "for", "set", "description", "skip", NULL};
    if (!cJSON_IsObject(v))
        return fs_fail(err, "%s: expected an object {\"name\": ..., \"for\": ..., \"set\": ...}", origin);
    if (check_keys(v, known, origin, "variant", err))
        return -1;
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(v, "name");
    const cJSON *loop = cJSON_GetObjectItemCaseSensitive(v, "for");
    const cJSON *set = cJSON_GetObjectItemCaseSensitive(v, "set");
    if (!cJSON_IsString(name) || !name->valuestring[0])
        return fs_fail(err, "%s: \"name\": expected a non-empty string", origin);
    const cJSON *skip = cJSON_GetObjectItemCaseSensitive(v, "skip");
    if (skip && (!cJSON_IsString(skip) || !skip->valuestring[0]))
        return fs_fail(err, "%s (%s): \"skip\": expected the reason, a non-empty string", origin, name->valuestring);
    if (skip) {
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "name", name->valuestring);
        cJSON_AddStringToObject(e, "reason", skip->valuestring);
        cJSON_AddItemToArray(s->skipped, e);
        return 0;
    }
    if (set && !cJSON_IsObject(set))
        return fs_fail(err, "%s (%s): \"set\": expected an object {\"section.key\": value}", origin, name->valuestring);
    bindings b = {0};
    int pick[MAX_VARS] = {0};
    if (loop) {
        if (!cJSON_IsObject(loop) || cJSON_GetArraySize(loop) > MAX_VARS)
            return fs_fail(err, "%s (%s): \"for\": expected an object of at most %d variables, each a list of values",
                           origin, name->valuestring, MAX_VARS);
        for (const cJSON *e = loop->child; e; e = e->next) {
            if (!cJSON_IsArray(e) || cJSON_GetArraySize(e) == 0)
                return fs_fail(err, "%s (%s): for.%s: expected a non-empty list of values", origin, name->valuestring,
                               e->string);
            b.name[b.n] = e->string;
            b.value[b.n++] = e->child;
        }
    }
    for (;;) {
        for (int i = 0; i < b.n; i++)
            b.value[i] = cJSON_GetArrayItem(cJSON_GetArrayItem(loop, i), pick[i]);
        cJSON *vname = subst_string(name->valuestring, &b, origin, err);
        if (!vname)
            return -1;
        if (!cJSON_IsString(vname)) { /* the name was exactly "{var}" */
            char text[128];
            scalar_text(vname, text, sizeof text);
            cJSON_Delete(vname);
            vname = cJSON_CreateString(text);
        }
        cJSON *vset = set ? expand(set, &b, origin, err) : cJSON_CreateObject();
        int rc = vset ? add_axes_product(s, base, common, vname->valuestring, vset, err) : -1;
        cJSON_Delete(vname);
        cJSON_Delete(vset);
        if (rc)
            return -1;
        int i = b.n - 1;
        while (i >= 0 && ++pick[i] == cJSON_GetArraySize(cJSON_GetArrayItem(loop, i)))
            pick[i--] = 0;
        if (i < 0)
            return 0;
    }
}

static int count_points(const fs_sweep *s, const cJSON *variants, size_t *out, fs_error *err)
{
    double n = 1;
    for (const cJSON *ax = s->axes->child; ax; ax = ax->next) {
        if (!cJSON_IsArray(ax) || cJSON_GetArraySize(ax) == 0)
            return fs_fail(err, "%s: axes.%s: expected a non-empty list of values", s->path, ax->string);
        n *= cJSON_GetArraySize(ax);
    }
    double nv = 0;
    for (const cJSON *v = variants->child; v; v = v->next) {
        double k = cJSON_HasObjectItem(v, "skip") ? 0 : 1;
        const cJSON *loop = cJSON_GetObjectItemCaseSensitive(v, "for");
        for (const cJSON *e = cJSON_IsObject(loop) ? loop->child : NULL; e; e = e->next)
            k *= cJSON_IsArray(e) && cJSON_GetArraySize(e) ? cJSON_GetArraySize(e) : 1;
        nv += k;
    }
    n *= variants->child ? nv : 1;
    if (n > MAX_POINTS)
        return fs_fail(err, "%s: the grid has %.0f points (at most %d)", s->path, n, MAX_POINTS);
    *out = (size_t)n;
    return 0;
}

int fs_sweep_load(fs_sweep *s, const char *path, fs_error *err)
{
    memset(s, 0, sizeof *s);
    snprintf(s->path, sizeof s->path, "%s", path);
    cJSON *root = fs_json_load(path, err), *base = NULL, *common = NULL;
    if (!root)
        return -1;
    int rc = -1;
    static const char *const known[] = {"base", "set", "axes", "variants", "description", NULL};
    if (!cJSON_IsObject(root)) {
        fs_fail(err, "%s: expected a JSON object with \"base\", \"axes\", \"variants\"", path);
        goto done;
    }
    if (check_keys(root, known, path, "sweep file", err))
        goto done;
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(root, "base");
    if (cJSON_IsString(b)) {
        if (!(base = fs_json_load(b->valuestring, err)))
            goto done;
        if (!cJSON_IsObject(base)) {
            fs_fail(err, "%s: base %s: expected a run config object", path, b->valuestring);
            goto done;
        }
    } else if (cJSON_IsObject(b)) {
        base = cJSON_Duplicate(b, 1);
    } else {
        fs_fail(err, "%s: \"base\": expected a run config file name or an inline config object", path);
        goto done;
    }
    const cJSON *set = cJSON_GetObjectItemCaseSensitive(root, "set");
    if (set && !cJSON_IsObject(set)) {
        fs_fail(err, "%s: \"set\": expected an object {\"section.key\": value}", path);
        goto done;
    }
    bindings none = {0};
    char origin[1100];
    snprintf(origin, sizeof origin, "%s: set", path);
    if (set && !(common = expand(set, &none, origin, err)))
        goto done;
    const cJSON *axes = cJSON_GetObjectItemCaseSensitive(root, "axes");
    const cJSON *variants = cJSON_GetObjectItemCaseSensitive(root, "variants");
    if (axes && !cJSON_IsObject(axes)) {
        fs_fail(err, "%s: \"axes\": expected an object {\"section.key\": [values], ...}", path);
        goto done;
    }
    if (variants && !cJSON_IsArray(variants)) {
        fs_fail(err, "%s: \"variants\": expected a list of {\"name\", \"for\", \"set\"} objects", path);
        goto done;
    }
    s->axes = axes ? cJSON_Duplicate(axes, 1) : cJSON_CreateObject();
    s->variants = variants ? cJSON_Duplicate(variants, 1) : cJSON_CreateArray();
    s->skipped = cJSON_CreateArray();
    size_t n = 0;
    if (count_points(s, s->variants, &n, err))
        goto done;
    s->points = calloc(n ? n : 1, sizeof *s->points);
    if (!s->points) {
        fs_fail(err, "%s: out of memory for %zu points", path, n);
        goto done;
    }
    if (!s->variants->child) {
        rc = add_axes_product(s, base, common, NULL, NULL, err);
    } else {
        int i = 0;
        rc = 0;
        for (const cJSON *v = s->variants->child; v && !rc; v = v->next)
            rc = expand_variant(s, base, common, v, i++, err);
    }
done:
    cJSON_Delete(root);
    cJSON_Delete(base);
    cJSON_Delete(common);
    if (rc)
        fs_sweep_free(s);
    return rc;
}

void fs_sweep_free(fs_sweep *s)
{
    for (int i = 0; i < s->n; i++) {
        cJSON_Delete(s->points[i].overrides);
        cJSON_Delete(s->points[i].config);
    }
    free(s->points);
    cJSON_Delete(s->axes);
    cJSON_Delete(s->variants);
    cJSON_Delete(s->skipped);
    memset(s, 0, sizeof *s);
}

/* ---- manifest ---- */

static int lock_dir(const char *dir, fs_error *err)
{
    char path[1200];
    snprintf(path, sizeof path, "%s/sweep.lock", dir);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        return fs_fail(err, "%s: cannot open (%s)", path, strerror(errno));
    while (flock(fd, LOCK_EX) != 0)
        if (errno != EINTR) {
            close(fd);
            return fs_fail(err, "%s: cannot lock (%s)", path, strerror(errno));
        }
    return fd;
}

static void unlock_dir(int fd) { close(fd); } /* closing drops the lock */

static int save_manifest(const char *dir, const cJSON *m, fs_error *err)
{
    char path[1200];
    snprintf(path, sizeof path, "%s/sweep.json", dir);
    char *text = fs_json_text(m);
    if (!text)
        return fs_fail(err, "%s: out of memory", path);
    int rc = fs_write_file_atomic(path, text, err);
    free(text);
    return rc;
}

int fs_sweep_run_count(const cJSON *manifest)
{
    return cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(manifest, "runs"));
}

const char *fs_sweep_run_name(const cJSON *manifest, int index)
{
    const cJSON *runs = cJSON_GetObjectItemCaseSensitive(manifest, "runs");
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(runs, index), "name");
    return index >= 0 && cJSON_IsString(name) ? name->valuestring : NULL;
}

cJSON *fs_sweep_manifest_load(const char *dir, fs_error *err)
{
    char path[1200];
    snprintf(path, sizeof path, "%s/sweep.json", dir);
    cJSON *m = fs_json_load(path, err);
    if (!m)
        return NULL;
    const cJSON *runs = cJSON_GetObjectItemCaseSensitive(m, "runs");
    bool ok = cJSON_IsArray(runs);
    for (const cJSON *r = ok ? runs->child : NULL; r && ok; r = r->next) {
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(r, "name");
        ok = cJSON_IsString(name) && name->valuestring[0] && !strchr(name->valuestring, '/') &&
             strcmp(name->valuestring, "..") && cJSON_IsString(cJSON_GetObjectItemCaseSensitive(r, "status"));
    }
    if (!ok) {
        fs_fail(err, "%s: expected a sweep manifest with a \"runs\" list of {\"name\", \"status\", ...}", path);
        cJSON_Delete(m);
        return NULL;
    }
    return m;
}

static cJSON *new_run(const fs_sweep_point *p, int index)
{
    cJSON *r = cJSON_CreateObject();
    cJSON_AddNumberToObject(r, "index", index);
    cJSON_AddStringToObject(r, "name", p->name);
    cJSON_AddStringToObject(r, "dir", p->name);
    cJSON_AddItemToObject(r, "overrides", cJSON_Duplicate(p->overrides, 1));
    if (p->variant[0])
        cJSON_AddStringToObject(r, "variant", p->variant);
    else
        cJSON_AddNullToObject(r, "variant");
    cJSON_AddStringToObject(r, "status", "pending");
    cJSON_AddNullToObject(r, "error");
    cJSON_AddNullToObject(r, "wall_s");
    return r;
}

int fs_sweep_prepare(const fs_sweep *s, const char *dir, fs_error *err)
{
    char path[1400];
    snprintf(path, sizeof path, "%s/configs", dir);
    if (fs_mkdir_p(path, err))
        return -1;
    for (int i = 0; i < s->n; i++) {
        snprintf(path, sizeof path, "%s/configs/%s.json", dir, s->points[i].name);
        char *text = cJSON_Print(s->points[i].config);
        int rc = fs_write_file_atomic(path, text, err);
        free(text);
        if (rc)
            return -1;
    }
    int fd = lock_dir(dir, err);
    if (fd < 0)
        return -1;
    int rc = -1;
    cJSON *m = NULL;
    snprintf(path, sizeof path, "%s/sweep.json", dir);
    if (access(path, F_OK) == 0) {
        if (!(m = fs_sweep_manifest_load(dir, err)))
            goto done;
        cJSON *runs = cJSON_GetObjectItemCaseSensitive(m, "runs");
        if (cJSON_GetArraySize(runs) != s->n) {
            fs_fail(err, "%s holds a sweep of %d runs, %s has %d; use another --out", path, cJSON_GetArraySize(runs),
                    s->path, s->n);
            goto done;
        }
        for (int i = 0; i < s->n; i++) {
            cJSON *r = cJSON_GetArrayItem(runs, i);
            if (strcmp(fs_sweep_run_name(m, i), s->points[i].name) ||
                !cJSON_Compare(cJSON_GetObjectItemCaseSensitive(r, "overrides"), s->points[i].overrides, 1)) {
                fs_fail(err, "%s: run %d is %s there but %s in %s (a different sweep); use another --out", path, i,
                        fs_sweep_run_name(m, i), s->points[i].name, s->path);
                goto done;
            }
            cJSON *st = cJSON_GetObjectItemCaseSensitive(r, "status");
            if (!strcmp(st->valuestring, "running"))
                cJSON_SetValuestring(st, "pending");
        }
    } else {
        m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "sweep_file", s->path);
        cJSON_AddItemToObject(m, "axes", cJSON_Duplicate(s->axes, 1));
        cJSON_AddItemToObject(m, "variants", cJSON_Duplicate(s->variants, 1));
        cJSON *runs = cJSON_AddArrayToObject(m, "runs");
        for (int i = 0; i < s->n; i++)
            cJSON_AddItemToArray(runs, new_run(&s->points[i], i));
    }
    rc = save_manifest(dir, m, err);
done:
    cJSON_Delete(m);
    unlock_dir(fd);
    return rc;
}

int fs_sweep_manifest_update(const char *dir, int index, const char *status, const char *error, double wall_s,
                             fs_error *err)
{
    int fd = lock_dir(dir, err);
    if (fd < 0)
        return -1;
    int rc = -1;
    cJSON *m = fs_sweep_manifest_load(dir, err);
    if (!m)
        goto done;
    cJSON *r = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(m, "runs"), index);
    if (!r || index < 0) {
        fs_fail(err, "%s/sweep.json: no run %d (it has %d)", dir, index, fs_sweep_run_count(m));
        goto done;
    }
    cJSON_ReplaceItemInObjectCaseSensitive(r, "status", cJSON_CreateString(status));
    cJSON_ReplaceItemInObjectCaseSensitive(r, "error", error ? cJSON_CreateString(error) : cJSON_CreateNull());
    cJSON_ReplaceItemInObjectCaseSensitive(r, "wall_s", wall_s >= 0 ? cJSON_CreateNumber(wall_s) : cJSON_CreateNull());
    rc = save_manifest(dir, m, err);
done:
    cJSON_Delete(m);
    unlock_dir(fd);
    return rc;
}
