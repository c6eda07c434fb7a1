/* Named interventions: the spec, parsed from JSON (config `clamps` section or
 * --intervene) and checked against the model config. See interventions.h. */
#include <cjson/cJSON.h>
#include <ctype.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fewshot/interventions.h"
#include "interp/held.h"

void fs_interventions_default(fs_interventions *iv)
{
    memset(iv, 0, sizeof *iv);
    iv->induction_strength = 1.0;
    iv->prev_token_strength = 1.0;
}

typedef enum { K_HEADS, K_HEAD, K_BOOL, K_NUM, K_PRESERVE, K_LAYER, K_TEMPS, K_GRADS, K_GRAFT, K_IGNORED } key_kind;

static const struct {
    const char *name;
    key_kind kind;
    size_t off;
    double lo, hi; /* K_NUM range */
} keys[] = {
    {"ablate_heads", K_HEADS, offsetof(fs_interventions, ablate_heads), 0, 0},
    {"ablate_embedding", K_BOOL, offsetof(fs_interventions, ablate_embedding), 0, 0},
    {"induction_heads", K_HEADS, offsetof(fs_interventions, induction_heads), 0, 0},
    {"induction_strength", K_NUM, offsetof(fs_interventions, induction_strength), 0, 1},
    {"match_heads", K_HEADS, offsetof(fs_interventions, match_heads), 0, 0},
    {"match_temperature", K_NUM, offsetof(fs_interventions, match_temperature), 0, 1e6},
    {"prev_token_heads", K_HEADS, offsetof(fs_interventions, prev_token_heads), 0, 0},
    {"prev_token_strength", K_NUM, offsetof(fs_interventions, prev_token_strength), 0, 1},
    {"prev_token_only_label", K_BOOL, offsetof(fs_interventions, prev_token_only_label), 0, 0},
    {"disallow_prev_token_heads", K_HEADS, offsetof(fs_interventions, disallow_prev_token_heads), 0, 0},
    {"disallow_prev_token_only_label", K_BOOL, offsetof(fs_interventions, disallow_prev_token_only_label), 0, 0},
    {"silence_non_label_heads", K_HEADS, offsetof(fs_interventions, silence_non_label_heads), 0, 0},
    {"preserve", K_PRESERVE, 0, 0, 0},
    {"preserve_from_layer", K_LAYER, offsetof(fs_interventions, preserve_from_layer), 0, 0},
    {"head_temperature", K_TEMPS, offsetof(fs_interventions, head_temperature), 0, 0},
    {"perfect_copy_from_head_pattern", K_HEAD, offsetof(fs_interventions, perfect_copy_head), 0, 0},
    {"perfect_prev_token_input", K_BOOL, offsetof(fs_interventions, perfect_prev_token_input), 0, 0},
    {"graft_in", K_GRAFT, offsetof(fs_interventions, graft_in), 0, 0},
    {"graft_out", K_GRAFT, offsetof(fs_interventions, graft_out), 0, 0},
    {"clamp_gradients", K_GRADS, offsetof(fs_interventions, clamp_gradients_stop), 0, 0},
    {"cache", K_IGNORED, 0, 0, 0}, /* clamp file names, read by the config loader */
    {"mask", K_IGNORED, 0, 0, 0},
};
enum { NUM_KEYS = sizeof keys / sizeof keys[0] };

static int check_layer(long l, const fs_model_config *cfg, const char *where, int *out, fs_error *err)
{
    if (l < -cfg->depth || l >= cfg->depth)
        return fs_fail(err, "%s: layer %ld out of range (the model has %d layers: 0..%d, or -%d..-1 from the end)",
                       where, l, cfg->depth, cfg->depth - 1, cfg->depth);
    *out = (int)(l < 0 ? l + cfg->depth : l);
    return 0;
}

static int parse_long(const char *s, const char **end, long *out)
{
    char *e;
    if (!isdigit((unsigned char)*s) && *s != '-')
        return -1;
    *out = strtol(s, &e, 10);
    *end = e;
    return e == s ? -1 : 0;
}

/* "L:H" (or "L:H:T" when temp is wanted). */
static int parse_head(const char *s, const fs_model_config *cfg, const char *where, bool temp, fs_head_ref *out,
                      fs_error *err)
{
    const char *e;
    long l, h;
    const char *want = temp ? "\"layer:head:temperature\"" : "\"layer:head\"";
    if (parse_long(s, &e, &l) || *e != ':' || parse_long(e + 1, &e, &h) || (temp ? *e != ':' : *e != 0))
        return fs_fail(err, "%s: \"%s\": expected %s, e.g. \"1:0\"", where, s, want);
    if (temp) {
        char *te;
        out->temperature = strtod(e + 1, &te);
        if (te == e + 1 || *te)
            return fs_fail(err, "%s: \"%s\": expected %s, e.g. \"1:0:2.0\"", where, s, want);
    }
    if (check_layer(l, cfg, where, &out->layer, err))
        return -1;
    if (h < 0 || h >= cfg->num_heads)
        return fs_fail(err, "%s: \"%s\": head %ld out of range (the model has %d heads per layer: 0..%d)", where, s, h,
                       cfg->num_heads, cfg->num_heads - 1);
    out->head = (int)h;
    return 0;
}

static int add_head(fs_head_list *list, fs_head_ref r, const char *where, fs_error *err)
{
    for (int i = 0; i < list->n; i++)
        if (list->h[i].layer == r.layer && list->h[i].head == r.head) {
            list->h[i] = r; /* a set: the last temperature wins */
            return 0;
        }
    if (list->n == FS_IV_MAX_HEADS)
        return fs_fail(err, "%s: more than %d heads", where, FS_IV_MAX_HEADS);
    list->h[list->n++] = r;
    return 0;
}

static int check_temperature(double t, const char *where, const char *name, fs_error *err)
{
    if (!(t >= 1e-6 && t <= 1e6))
        return fs_fail(err, "%s: \"%s\": temperature %g out of range (expected 1e-6 .. 1e6)", where, name, t);
    return 0;
}

static int parse_heads(const cJSON *v, const fs_model_config *cfg, const char *where, fs_head_list *list,
                       fs_error *err)
{
    if (!cJSON_IsArray(v))
        return fs_fail(err, "%s: expected a list of \"layer:head\" strings, e.g. [\"1:7\", \"0:3\"]", where);
    int i = 0;
    for (const cJSON *it = v->child; it; it = it->next, i++) {
        char w[300];
        snprintf(w, sizeof w, "%s[%d]", where, i);
        fs_head_ref r = {0, 0, 1.0};
        if (!cJSON_IsString(it))
            return fs_fail(err, "%s: expected a \"layer:head\" string, e.g. \"1:7\"", w);
        if (parse_head(it->valuestring, cfg, w, false, &r, err) || add_head(list, r, w, err))
            return -1;
    }
    return 0;
}

/* {"L:H": T, ...} or the reference's ["L:H:T", ...]. */
static int parse_temps(const cJSON *v, const fs_model_config *cfg, const char *where, fs_head_list *list,
                       fs_error *err)
{
    bool obj = cJSON_IsObject(v);
    if (!obj && !cJSON_IsArray(v))
        return fs_fail(err, "%s: expected {\"layer:head\": temperature, ...} or [\"layer:head:temperature\", ...]",
                       where);
    int i = 0;
    for (const cJSON *it = v->child; it; it = it->next, i++) {
        char w[300];
        if (obj)
            snprintf(w, sizeof w, "%s.%s", where, it->string);
        else
            snprintf(w, sizeof w, "%s[%d]", where, i);
        fs_head_ref r = {0, 0, 1.0};
        if (obj) {
            if (!cJSON_IsNumber(it))
                return fs_fail(err, "%s: expected a number (the temperature)", w);
            if (parse_head(it->string, cfg, w, false, &r, err))
                return -1;
            r.temperature = it->valuedouble;
        } else {
            if (!cJSON_IsString(it))
                return fs_fail(err, "%s: expected a \"layer:head:temperature\" string", w);
            if (parse_head(it->valuestring, cfg, w, true, &r, err))
                return -1;
        }
        if (check_temperature(r.temperature, w, obj ? it->string : it->valuestring, err) || add_head(list, r, w, err))
            return -1;
    }
    return 0;
}

static int parse_preserve(const cJSON *v, fs_interventions *iv, const char *where, fs_error *err)
{
    static const char *const what = "\"patterns\", \"values\", \"queries\", \"keys\"";
    if (!cJSON_IsArray(v))
        return fs_fail(err, "%s: expected a list of %s", where, what);
    int i = 0;
    for (const cJSON *it = v->child; it; it = it->next, i++) {
        const char *s = cJSON_IsString(it) ? it->valuestring : "";
        bool *flag = !strcmp(s, "patterns") ? &iv->preserve_patterns
                     : !strcmp(s, "values") ? &iv->preserve_values
                     : !strcmp(s, "queries") ? &iv->preserve_queries
                     : !strcmp(s, "keys")    ? &iv->preserve_keys
                                             : NULL;
        if (!flag)
            return fs_fail(err, "%s[%d]: expected one of %s", where, i, what);
        *flag = true;
    }
    return 0;
}

/* {"model": FILE, "config": FILE (optional), "till_layer" / "from_layer": L} */
static int parse_graft(const cJSON *v, const fs_model_config *cfg, const char *where, bool in, fs_graft_spec *g,
                       fs_error *err)
{
    const char *lname = in ? "till_layer" : "from_layer";
    if (!cJSON_IsObject(v))
        return fs_fail(err, "%s: expected {\"model\": FILE.safetensors, \"config\": FILE.json (optional), \"%s\": L}",
                       where, lname);
    memset(g, 0, sizeof *g);
    bool have_layer = false;
    for (const cJSON *it = v->child; it; it = it->next) {
        char w[300];
        snprintf(w, sizeof w, "%s.%s", where, it->string);
        char *dst = !strcmp(it->string, "model") ? g->model : !strcmp(it->string, "config") ? g->config : NULL;
        if (dst) {
            if (!cJSON_IsString(it) || !it->valuestring[0])
                return fs_fail(err, "%s: expected a file name", w);
            if (strlen(it->valuestring) >= sizeof g->model)
                return fs_fail(err, "%s: file name is %zu bytes, longer than the %zu allowed", w,
                               strlen(it->valuestring), sizeof g->model - 1);
            snprintf(dst, sizeof g->model, "%s", it->valuestring);
        } else if (!strcmp(it->string, lname)) {
            if (!cJSON_IsNumber(it) || it->valuedouble != floor(it->valuedouble) || fabs(it->valuedouble) > 1e6)
                return fs_fail(err, "%s: expected a layer index", w);
            if (check_layer((long)it->valuedouble, cfg, w, &g->layer, err))
                return -1;
            have_layer = true;
        } else {
            return fs_fail(err, "%s: unknown key (known: model, config, %s)", w, lname);
        }
    }
    if (!g->model[0] || !have_layer)
        return fs_fail(err, "%s: \"%s\" is required", where, !g->model[0] ? "model" : lname);
    g->on = true;
    return 0;
}

static bool overlap(const fs_head_list *a, const fs_head_list *b, fs_head_ref *which)
{
    for (int i = 0; i < a->n; i++)
        for (int j = 0; j < b->n; j++)
            if (a->h[i].layer == b->h[j].layer && a->h[i].head == b->h[j].head) {
                *which = a->h[i];
                return true;
            }
    return false;
}

int fs_interventions_from_json(fs_interventions *iv, const cJSON *obj, const fs_model_config *cfg,
                               const char *origin, fs_error *err)
{
    fs_interventions_default(iv);
    if (!cJSON_IsObject(obj))
        return fs_fail(err, "%s: expected a JSON object of named interventions, e.g. {\"ablate_heads\": [\"1:7\"]}",
                       origin);
    for (const cJSON *kid = obj->child; kid; kid = kid->next) {
        int k = 0;
        while (k < NUM_KEYS && strcmp(keys[k].name, kid->string))
            k++;
        if (k == NUM_KEYS) {
            char known[1024] = "";
            for (int j = 0; j < NUM_KEYS; j++)
                snprintf(known + strlen(known), sizeof known - strlen(known), "%s%s", j ? ", " : "", keys[j].name);
            return fs_fail(err, "%s: unknown key \"%s\" (known: %s)", origin, kid->string, known);
        }
        char where[200];
        snprintf(where, sizeof where, "%s: %s", origin, kid->string);
        void *dst = (char *)iv + keys[k].off;
        switch (keys[k].kind) {
        case K_HEADS:
            if (parse_heads(kid, cfg, where, dst, err))
                return -1;
            break;
        case K_HEAD:
            if (!cJSON_IsString(kid))
                return fs_fail(err, "%s: expected a \"layer:head\" string, e.g. \"1:3\"", where);
            if (parse_head(kid->valuestring, cfg, where, false, dst, err))
                return -1;
            iv->perfect_copy = true;
            break;
        case K_GRADS:
            if (!cJSON_IsString(kid) || (strcmp(kid->valuestring, "through") && strcmp(kid->valuestring, "stop")))
                return fs_fail(err, "%s: expected \"through\" (the reference's: gradients flow into computed clamp "
                                    "values) or \"stop\" (clamped values are constants)",
                               where);
            *(bool *)dst = !strcmp(kid->valuestring, "stop");
            break;
        case K_TEMPS:
            if (parse_temps(kid, cfg, where, dst, err))
                return -1;
            break;
        case K_BOOL:
            if (!cJSON_IsBool(kid))
                return fs_fail(err, "%s: expected true or false", where);
            *(bool *)dst = cJSON_IsTrue(kid);
            break;
        case K_NUM:
            if (!cJSON_IsNumber(kid) || !(kid->valuedouble >= keys[k].lo && kid->valuedouble <= keys[k].hi))
                return fs_fail(err, "%s: expected a number in [%g, %g]", where, keys[k].lo, keys[k].hi);
            *(double *)dst = kid->valuedouble;
            break;
        case K_LAYER:
            if (!cJSON_IsNumber(kid) || kid->valuedouble != floor(kid->valuedouble) || fabs(kid->valuedouble) > 1e6)
                return fs_fail(err, "%s: expected a layer index", where);
            if (check_layer((long)kid->valuedouble, cfg, where, dst, err))
                return -1;
            break;
        case K_PRESERVE:
            if (parse_preserve(kid, iv, where, err))
                return -1;
            break;
        case K_GRAFT:
            if (parse_graft(kid, cfg, where, dst == (void *)&iv->graft_in, dst, err))
                return -1;
            break;
        case K_IGNORED:
            break;
        }
    }
    /* As the reference: a head cannot be both previous-token and induction, nor both
     * previous-token and disallowed previous-token. */
    fs_head_ref r;
    if (overlap(&iv->prev_token_heads, &iv->induction_heads, &r))
        return fs_fail(err, "%s: head \"%d:%d\" is in both prev_token_heads and induction_heads", origin, r.layer,
                       r.head);
    if (overlap(&iv->prev_token_heads, &iv->disallow_prev_token_heads, &r))
        return fs_fail(err, "%s: head \"%d:%d\" is in both prev_token_heads and disallow_prev_token_heads", origin,
                       r.layer, r.head);
    if (iv->graft_out.on && iv->perfect_copy)
        return fs_fail(err, "%s: graft_out replaces the whole `out` leaf: perfect_copy_from_head_pattern would have "
                            "no effect",
                       origin);
    if (iv->perfect_prev_token_input) {
        if (cfg->depth != 2)
            return fs_fail(err, "%s: perfect_prev_token_input: needs a 2-layer model (this one has %d layers)", origin,
                           cfg->depth);
        for (int i = 0; i < iv->ablate_heads.n; i++)
            if (iv->ablate_heads.h[i].layer != 1)
                return fs_fail(err, "%s: perfect_prev_token_input: ablate_heads only in layer 1 (got \"%d:%d\")",
                               origin, iv->ablate_heads.h[i].layer, iv->ablate_heads.h[i].head);
        fs_interventions only = *iv;
        only.ablate_heads.n = 0;
        only.perfect_prev_token_input = only.perfect_copy = only.clamp_gradients_stop = false;
        if (fs_interventions_any(&only))
            return fs_fail(err, "%s: perfect_prev_token_input: combines only with ablate_heads (layer 1) and "
                                "perfect_copy_from_head_pattern",
                           origin);
    }
    return 0;
}

int fs_interventions_from_arg(fs_interventions *iv, const char *json_or_file, const fs_model_config *cfg,
                              fs_error *err)
{
    const char *origin;
    cJSON *root = fs_json_arg(json_or_file, "--intervene", &origin, err);
    if (!root)
        return -1;
    int rc = fs_interventions_from_json(iv, root, cfg, origin, err);
    cJSON_Delete(root);
    return rc;
}

bool fs_interventions_need_clean_pass(const fs_interventions *iv)
{
    return iv->preserve_patterns || iv->preserve_values || iv->preserve_queries || iv->preserve_keys ||
           iv->head_temperature.n > 0 || iv->perfect_copy || iv->perfect_prev_token_input;
}

/* qkv weight rows [2d + h*hd, 2d + (h+1)*hd) compute head h's values (row n of qkv_raw
 * is [q | k | v], heads inside). */
int fs_interventions_ablated_model(const fs_interventions *iv, const fs_model *src, fs_model *m, fs_error *err)
{
    if (m->params && !fs_model_config_equal(&m->cfg, &src->cfg))
        fs_model_free(m);
    if (!m->params && fs_model_create(m, &src->cfg, err))
        return -1;
    memcpy(m->params, src->params, sizeof(float) * src->layout.total);
    const int d = m->cfg.d_model, hd = d / m->cfg.num_heads;
    for (int i = 0; i < iv->ablate_heads.n; i++) {
        const fs_block_params *bp = &m->p.blocks[iv->ablate_heads.h[i].layer];
        int row0 = 2 * d + iv->ablate_heads.h[i].head * hd;
        memset(bp->qkv_w + (size_t)row0 * d, 0, sizeof(float) * (size_t)hd * d);
        if (bp->qkv_b)
            memset(bp->qkv_b + row0, 0, sizeof(float) * (size_t)hd);
    }
    return 0;
}

bool fs_interventions_any(const fs_interventions *iv)
{
    return iv->ablate_heads.n || iv->ablate_embedding || iv->induction_heads.n || iv->match_heads.n ||
           iv->prev_token_heads.n || iv->disallow_prev_token_heads.n || iv->silence_non_label_heads.n ||
           iv->graft_in.on || iv->graft_out.on || fs_interventions_need_clean_pass(iv);
}
