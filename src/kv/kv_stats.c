/* --kv-stats: the cache's memory and value ranges per layer (issue 7). */
#include <float.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fewshot/kvcache.h"

/* min / max / mean over the filled rows [0, seq) of every head of [H][capacity][hd]. */
static void range(const float *x, const fs_kv_cache *c, float *mn, float *mx, float *mean)
{
    double sum = 0;
    float lo = FLT_MAX, hi = -FLT_MAX;
    size_t n = (size_t)c->seq * c->head_dim;
    for (int h = 0; h < c->heads; h++) {
        const float *row = x + (size_t)h * c->capacity * c->head_dim;
        for (size_t i = 0; i < n; i++) {
            lo = row[i] < lo ? row[i] : lo;
            hi = row[i] > hi ? row[i] : hi;
            sum += row[i];
        }
    }
    size_t count = n * c->heads;
    *mn = count ? lo : 0.f;
    *mx = count ? hi : 0.f;
    *mean = count ? (float)(sum / count) : 0.f;
}

/* Bytes of one layer's keys (= its values): [1, H, seq, hd] float32. */
static size_t layer_bytes(const fs_kv_cache *c) { return sizeof(float) * (size_t)c->heads * c->seq * c->head_dim; }

size_t fs_kv_bytes(const fs_kv_cache *c) { return 2 * (size_t)c->depth * layer_bytes(c); }

void fs_kv_stats(const fs_kv_cache *c, int layer, fs_kv_layer_stats *s)
{
    memset(s, 0, sizeof *s);
    s->shape[0] = 1;
    s->shape[1] = c->heads;
    s->shape[2] = c->seq;
    s->shape[3] = c->head_dim;
    s->key_bytes = s->value_bytes = layer_bytes(c);
    range(c->layer[layer].keys, c, &s->key_min, &s->key_max, &s->key_mean);
    range(c->layer[layer].values, c, &s->value_min, &s->value_max, &s->value_mean);
}

/* Append printf-style text to a growing buffer. */
static void put(char **buf, size_t *len, size_t *cap, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void put(char **buf, size_t *len, size_t *cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (*len + n + 1 > *cap) {
        *cap = (*len + n + 1) * 2;
        *buf = realloc(*buf, *cap);
    }
    va_start(ap, fmt);
    vsnprintf(*buf + *len, *cap - *len, fmt, ap);
    va_end(ap);
    *len += n;
}

char *fs_kv_stats_table(const fs_kv_cache *c)
{
    char *buf = NULL;
    size_t len = 0, cap = 0, keys = 0, values = 0;
    put(&buf, &len, &cap, "kv cache: %d context pairs, %d → %d tokens (%.1f%% kept), %d layers, float32 [batch, kv_heads, seq, head_dim]%s%s\n",
        fs_kv_pairs(c), c->pos, c->seq, 100.0 * c->seq / (c->pos > 0 ? c->pos : 1), c->depth,
        c->model->cfg.pos_embedding == FS_POS_ROPE ? ", keys after RoPE" : "", c->frozen ? ", frozen" : "");
    put(&buf, &len, &cap, "%-5s  %-16s %10s %12s %11s %11s %11s %11s %11s %11s\n", "layer", "shape", "key_bytes",
        "value_bytes", "key_min", "key_max", "key_mean", "value_min", "value_max", "value_mean");
    for (int l = 0; l < c->depth; l++) {
        fs_kv_layer_stats s;
        fs_kv_stats(c, l, &s);
        char shape[64];
        snprintf(shape, sizeof shape, "[%d, %d, %d, %d]", s.shape[0], s.shape[1], s.shape[2], s.shape[3]);
        put(&buf, &len, &cap, "%-5d  %-16s %10zu %12zu %11.5g %11.5g %11.5g %11.5g %11.5g %11.5g\n", l, shape,
            s.key_bytes, s.value_bytes, s.key_min, s.key_max, s.key_mean, s.value_min, s.value_max, s.value_mean);
        keys += s.key_bytes;
        values += s.value_bytes;
    }
    put(&buf, &len, &cap, "%-5s  %-16s %10zu %12zu   (keys + values: %zu bytes = %.3f MiB)\n", "total", "", keys,
        values, keys + values, (double)(keys + values) / (1 << 20));
    put(&buf, &len, &cap, "per layer: keys = values = 1 × %d × %d × %d × 4 bytes = %zu bytes; %d layers × 2 = %zu bytes\n",
        c->heads, c->seq, c->head_dim, keys / (size_t)c->depth, c->depth, keys + values);
    return buf;
}
