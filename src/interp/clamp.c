/* Clamps: a cache tree plus a mask tree replace activations where the mask is true,
 * at the moment each leaf is assigned (the reference's assign_fn, docs/cache.md). */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fewshot/cache.h"
#include "fewshot/model.h"
#include "model/path.h"
#include "base/fileio.h"
#include "base/json.h"

void fs_clamp_set_init(fs_clamp_set *c, const fs_acts *a)
{
    c->count = a->count;
    c->P = a->P;
    c->leaf = calloc((size_t)a->count, sizeof *c->leaf);
    c->active = 0;
}

void fs_clamp_set_free(fs_clamp_set *c)
{
    if (!c->leaf)
        return;
    for (int i = 0; i < c->count; i++) {
        free(c->leaf[i].value);
        free(c->leaf[i].mask);
    }
    free(c->leaf);
    memset(c, 0, sizeof *c);
}

int fs_clamp_set_leaf(fs_clamp_set *c, const fs_acts *a, int leaf, const float *value, const uint8_t *mask,
                      int batch)
{
    if (!c->leaf)
        return -1;
    fs_clamp *k = &c->leaf[leaf];
    if (k->mask)
        c->active--;
    free(k->value);
    free(k->mask);
    size_t n = a->leaves[leaf].numel * (size_t)(batch ? batch : 1);
    k->value = malloc(n * sizeof(float) + 1);
    k->mask = malloc(n + 1);
    if (!k->value || !k->mask) {
        free(k->value);
        free(k->mask);
        k->value = NULL, k->mask = NULL;
        return -1;
    }
    c->active++;
    memcpy(k->value, value, n * sizeof(float));
    memcpy(k->mask, mask, n);
    k->batch = batch;
    return 0;
}

bool fs_clamp_set_per_sequence(const fs_clamp_set *c)
{
    for (int i = 0; c && c->leaf && i < c->count; i++)
        if (c->leaf[i].mask && c->leaf[i].batch > 0)
            return true;
    return false;
}

void fs_clamp_apply(const fs_clamp_set *c, fs_acts *a, int leaf, int b0, int b1)
{
    if (!c || !c->leaf || !c->leaf[leaf].mask)
        return;
    const fs_clamp *k = &c->leaf[leaf];
    size_t n = a->leaves[leaf].numel;
    for (int b = b0; b < b1; b++) {
        float *x = fs_leaf_ptr(a, leaf, b);
        size_t at = k->batch ? (size_t)b * n : 0;
        const float *v = k->value + at;
        const uint8_t *m = k->mask + at;
        for (size_t i = 0; i < n; i++)
            if (m[i])
                x[i] = v[i];
    }
}

/* ---- loading from JSON trees ---- */

typedef struct {
    const fs_acts *a;
    const char *cache_origin, *mask_origin;
    fs_error *err;
} load_ctx;

static bool is_container_path(const fs_acts *a, const char *path, char sep)
{
    size_t n = strlen(path);
    for (int i = 0; i < a->count; i++)
        if (!a->leaves[i].hidden && strncmp(a->leaves[i].path, path, n) == 0 && a->leaves[i].path[n] == sep)
            return true;
    return false;
}

static void shape_str(const int *shape, int nd, char *buf, size_t n)
{
    buf[0] = 0;
    snprintf(buf, n, "[");
    for (int i = 0; i < nd; i++)
        snprintf(buf + strlen(buf), n - strlen(buf), "%s%d", i ? ", " : "", shape[i]);
    snprintf(buf + strlen(buf), n - strlen(buf), "]");
}

/* Flatten a nested JSON array of exactly `shape` into out; is_mask accepts booleans. */
static int flatten(const cJSON *v, const int *shape, int nd, float *out, size_t *pos, bool is_mask)
{
    if (nd == 0) {
        if (is_mask && cJSON_IsBool(v)) {
            out[(*pos)++] = cJSON_IsTrue(v) ? 1.f : 0.f;
            return 0;
        }
        double x;
        if (fs_json_get_float(v, &x)) /* a number, or "NaN"/"Infinity"/"-Infinity" as a dump writes them */
            return -1;
        out[(*pos)++] = (float)x;
        return 0;
    }
    if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) != shape[0])
        return -1;
    for (const cJSON *c = v->child; c; c = c->next)
        if (flatten(c, shape + 1, nd - 1, out, pos, is_mask))
            return -1;
    return 0;
}

/* Nested array's shape by first elements. */
static int probe_shape(const cJSON *v, int *shape, int max)
{
    int nd = 0;
    while (cJSON_IsArray(v) && nd < max) {
        shape[nd++] = cJSON_GetArraySize(v);
        v = v->child;
    }
    return nd;
}

static int parse_leaf_array(const load_ctx *ctx, int leaf, const cJSON *v, const char *origin, bool is_mask,
                            float **out, int *batch)
{
    const fs_leaf *l = &ctx->a->leaves[leaf];
    int found[8];
    int nd = probe_shape(v, found, 8);
    char want[64], got[64];
    shape_str(l->shape, l->ndim, want, sizeof want);
    shape_str(found, nd, got, sizeof got);
    int shape[5];
    *batch = 0;
    if (nd == l->ndim + 1 && nd >= 1) {
        *batch = found[0];
        shape[0] = found[0];
        memcpy(shape + 1, l->shape, sizeof(int) * (size_t)l->ndim);
    } else {
        memcpy(shape, l->shape, sizeof(int) * (size_t)l->ndim);
    }
    if (*batch == 0 && nd != l->ndim)
        return fs_fail(ctx->err, "%s: %s: expected shape %s (or [B] + %s for per-sequence values), got %s",
                       origin, l->path, want, want, got);
    size_t n = l->numel * (size_t)(*batch ? *batch : 1);
    *out = malloc(n * sizeof(float) + 1);
    if (!*out)
        return fs_fail_alloc(ctx->err, origin, n * sizeof(float));
    size_t pos = 0;
    if (flatten(v, shape, *batch ? l->ndim + 1 : l->ndim, *out, &pos, is_mask) || pos != n) {
        free(*out);
        *out = NULL;
        return fs_fail(ctx->err, "%s: %s: expected a %s array of %s (a ragged array or a non-%s element?)",
                       origin, l->path, want, is_mask ? "booleans" : "numbers", is_mask ? "boolean" : "numeric");
    }
    return 0;
}

static const cJSON *lookup(const cJSON *root, const char *path)
{
    fs_path_part parts[8];
    int n = fs_path_split(path, parts, 8);
    const cJSON *node = root;
    for (int i = 0; i < n && node; i++)
        node = parts[i].key[0] ? cJSON_GetObjectItemCaseSensitive(node, parts[i].key)
                               : cJSON_GetArrayItem(node, parts[i].index);
    return node;
}

static int load_leaf(fs_clamp_set *c, const load_ctx *ctx, int leaf, const cJSON *value, const cJSON *mask_root)
{
    const char *path = ctx->a->leaves[leaf].path;
    const cJSON *mask = lookup(mask_root, path);
    if (!mask || cJSON_IsNull(mask))
        return fs_fail(ctx->err, "%s: %s: the clamp cache sets this leaf but the mask (%s) has no entry for it",
                       ctx->cache_origin, path, ctx->mask_origin);
    float *vals = NULL, *mvals = NULL;
    int vb, mb;
    if (parse_leaf_array(ctx, leaf, value, ctx->cache_origin, false, &vals, &vb))
        return -1;
    if (parse_leaf_array(ctx, leaf, mask, ctx->mask_origin, true, &mvals, &mb)) {
        free(vals);
        return -1;
    }
    if (vb != mb) {
        free(vals);
        free(mvals);
        return fs_fail(ctx->err, "%s: cache and mask disagree on the batch dimension (%d vs %d)", path, vb, mb);
    }
    size_t n = ctx->a->leaves[leaf].numel * (size_t)(vb ? vb : 1);
    uint8_t *m = malloc(n + 1);
    for (size_t i = 0; m && i < n; i++)
        m[i] = mvals[i] != 0;
    int rc = m ? fs_clamp_set_leaf(c, ctx->a, leaf, vals, m, vb) : -1;
    free(vals);
    free(mvals);
    free(m);
    return rc ? fs_fail_alloc(ctx->err, path, n * (sizeof(float) + 1)) : 0;
}

/* Walk a clamp tree; `visit` = 1 loads leaves (cache tree), 0 only checks paths (mask tree). */
static int walk(fs_clamp_set *c, const load_ctx *ctx, const cJSON *node, const char *path, const cJSON *mask_root,
                bool load, const char *origin)
{
    for (const cJSON *kid = node->child; kid; kid = kid->next) {
        char sub[160];
        snprintf(sub, sizeof sub, "%s%s%s", path, path[0] ? "." : "", kid->string);
        if (cJSON_IsNull(kid))
            continue;
        if (cJSON_IsObject(kid)) {
            if (!kid->child)
                continue;
            if (!is_container_path(ctx->a, sub, '.'))
                return fs_fail(ctx->err, "%s: %s: unknown key (not a subtree of the cache)", origin, sub);
            if (walk(c, ctx, kid, sub, mask_root, load, origin))
                return -1;
            continue;
        }
        if (cJSON_IsArray(kid) && is_container_path(ctx->a, sub, '[')) {
            int i = 0;
            for (const cJSON *blk = kid->child; blk; blk = blk->next, i++) {
                char bp[176];
                snprintf(bp, sizeof bp, "%s[%d]", sub, i);
                if (!cJSON_IsObject(blk))
                    return fs_fail(ctx->err, "%s: %s: expected an object ({} for an untouched layer)", origin, bp);
                if (!blk->child)
                    continue;
                if (i >= ctx->a->cfg.depth)
                    return fs_fail(ctx->err, "%s: %s: layer index out of range (the model has %d layers)", origin,
                                   bp, ctx->a->cfg.depth);
                if (walk(c, ctx, blk, bp, mask_root, load, origin))
                    return -1;
            }
            continue;
        }
        int leaf = fs_leaf_find(ctx->a, sub);
        if (leaf < 0)
            return fs_fail(ctx->err, "%s: %s: unknown key (no such leaf in the cache)", origin, sub);
        if (ctx->a->leaves[leaf].is_null)
            return fs_fail(ctx->err, "%s: %s: this leaf is null for this model and cannot be clamped", origin, sub);
        if (load) {
            if (load_leaf(c, ctx, leaf, kid, mask_root))
                return -1;
        } else if (!c->leaf[leaf].mask) {
            return fs_fail(ctx->err, "%s: %s: the mask sets this leaf but the clamp cache has no value for it",
                           origin, sub);
        }
    }
    return 0;
}

int fs_clamp_set_from_json(fs_clamp_set *c, const fs_acts *a, const cJSON *cache_json, const cJSON *mask_json,
                           const char *cache_origin, const char *mask_origin, fs_error *err)
{
    const cJSON *cache = cache_json, *mask = mask_json;
    if (!cJSON_IsObject(cache))
        return fs_fail(err, "%s: expected a JSON object (a cache tree)", cache_origin);
    if (!cJSON_IsObject(mask))
        return fs_fail(err, "%s: expected a JSON object (a mask tree)", mask_origin);
    if (!c->leaf)
        return fs_fail(err, "%s: out of memory for the clamp table", cache_origin);
    load_ctx ctx = {a, cache_origin, mask_origin, err};
    if (walk(c, &ctx, cache, "", mask, true, cache_origin))
        return -1;
    return walk(c, &ctx, mask, "", NULL, false, mask_origin);
}

int fs_clamp_set_load(fs_clamp_set *c, const fs_acts *a, const char *cache_path, const char *mask_path,
                      fs_error *err)
{
    cJSON *cache = fs_json_load(cache_path, err);
    if (!cache)
        return -1;
    cJSON *mask = fs_json_load(mask_path, err);
    if (!mask) {
        cJSON_Delete(cache);
        return -1;
    }
    /* A golden clamp file holds both trees under "cache" and "cache_mask". */
    const cJSON *ct = cJSON_GetObjectItemCaseSensitive(cache, "cache");
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(mask, "cache_mask");
    int rc = fs_clamp_set_from_json(c, a, ct && cJSON_IsObject(ct) ? ct : cache,
                                    mt && cJSON_IsObject(mt) ? mt : mask, cache_path, mask_path, err);
    cJSON_Delete(cache);
    cJSON_Delete(mask);
    return rc;
}

int fs_clamp_check_batch(const fs_clamp_set *c, const fs_acts *a, int nseq, const char *origin, fs_error *err)
{
    for (int i = 0; i < c->count; i++)
        if (c->leaf[i].mask && c->leaf[i].batch && c->leaf[i].batch != nseq)
            return fs_fail(err, "%s: %s: per-sequence clamp holds %d sequences but the input has %d", origin, a->leaves[i].path,
                           c->leaf[i].batch, nseq);
    return 0;
}
