/* KV cache compression (issue 19): rank each layer's cached tokens by a policy, keep the
 * top ones, compact their key/value rows (positions kept, see fewshot/kvcache.h). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/fileio.h"
#include "fewshot/cache.h"
#include "fewshot/forward.h"
#include "fewshot/kvcache.h"
#include "fewshot/seqio.h"
#include "model/leaves.h"

const char *const fs_kv_policies[] = {"recent",      "sinks+recent",   "attention", "labels-only",
                                      "exemplars-only", "drop-pairs", NULL};

enum { KV_SINK_TOKENS = 2, KV_OBSERVATION_TOKENS = 8 };

typedef enum { P_RECENT, P_SINKS, P_ATTENTION, P_LABELS, P_EXEMPLARS, P_DROP_PAIRS } policy_kind;

typedef struct {
    policy_kind kind;
    long drop;  /* drop-pairs:N; -1 = from the budget */
} policy;

static int parse_policy(const char *name, policy *p, fs_error *err)
{
    p->drop = -1;
    for (int i = 0; name && fs_kv_policies[i]; i++)
        if (!strcmp(name, fs_kv_policies[i])) {
            p->kind = (policy_kind)i;
            return 0;
        }
    if (name && !strncmp(name, "drop-pairs:", 11)) {
        char *end;
        p->kind = P_DROP_PAIRS;
        p->drop = strtol(name + 11, &end, 10);
        if (end != name + 11 && !*end && p->drop >= 0)
            return 0;
        return fs_fail(err, "kv compress: policy '%s': expected drop-pairs:N with N a whole number >= 0", name);
    }
    return fs_fail(err,
                   "kv compress: unknown policy '%s': expected recent, sinks+recent, attention, labels-only, "
                   "exemplars-only, drop-pairs or drop-pairs:N",
                   name ? name : "(none)");
}

/* Tokens kept from `seq`: a fraction in (0, 1] or a whole count in (1, seq]. */
static int budget(double keep, int seq, int *kept, fs_error *err)
{
    if (!(keep > 0) || !isfinite(keep))
        return fs_fail(err, "kv compress: keep %g: expected a fraction in (0, 1] or a token count in [1, %d]", keep,
                       seq);
    if (keep <= 1) {
        long n = (long)floor(keep * seq + 1e-9);
        *kept = n < 1 ? 1 : (int)n;
        return 0;
    }
    if (keep != floor(keep) || keep > seq)
        return fs_fail(err, "kv compress: keep %g: a count above 1 must be a whole number of tokens <= %d (the "
                            "tokens cached)",
                       keep, seq);
    *kept = (int)keep;
    return 0;
}

/* Attention mass each context token receives from the observation window (the last
 * KV_OBSERVATION_TOKENS context tokens), per layer: score[l][t] for positions t < pos,
 * from one full forward over the stored context. */
static int observation_scores(const fs_kv_cache *c, float *score, fs_error *err)
{
    if (!c->ctx_examples)
        return fs_fail(err, "kv compress: the attention policy needs an uncompressed cache (its context is "
                            "dropped by the first compression)");
    const fs_model *m = c->model;
    int pairs = c->pos / 2, T = c->pos, D = m->cfg.input_dim, H = c->heads;
    fs_acts a;
    if (fs_acts_create(&a, &m->cfg, pairs + 1, 1, err))
        return -1;
    float *ex = fs_alloc(sizeof(float) * (size_t)(pairs + 1) * D);
    int *lab = fs_alloc(sizeof(int) * (size_t)(pairs + 1));
    if (!ex || !lab) {
        free(ex), free(lab);
        fs_acts_free(&a);
        return fs_fail(err, "kv compress: out of memory re-running a context of %d pairs", pairs);
    }
    memcpy(ex, c->ctx_examples, sizeof(float) * (size_t)pairs * D);
    memcpy(lab, c->ctx_labels, sizeof(int) * (size_t)pairs);
    fs_acts_set_inputs(&a, ex, lab, 0, 1);
    fs_forward_range(m, &a, NULL, 0, 1);
    int N = a.N, w0 = T > KV_OBSERVATION_TOKENS ? T - KV_OBSERVATION_TOKENS : 0;
    for (int l = 0; l < c->depth; l++) {
        const float *A = fs_leaf_ptr(&a, fs_block_leaf_id(l, B_ATTN_SCORES), 0); /* [H][N][N] */
        for (int t = 0; t < T; t++) {
            double sum = 0;
            int rows = 0;
            for (int r = t > w0 ? t : w0; r < T; r++, rows++)
                for (int h = 0; h < H; h++)
                    sum += A[((size_t)h * N + r) * N + t];
            score[(size_t)l * T + t] = (float)(sum / rows);
        }
    }
    free(ex);
    free(lab);
    fs_acts_free(&a);
    return 0;
}

/* Rank of token i (position pos) under the policy: larger = kept first; -INFINITY = evicted. */
static double rank(const policy *p, int pos, int first_pair, long drop, const float *attn)
{
    const double lift = 1e9; /* above any position */
    switch (p->kind) {
    case P_SINKS: return pos < KV_SINK_TOKENS ? lift + pos : pos;
    case P_ATTENTION: return attn[pos];
    case P_LABELS: return pos % 2 ? lift + pos : pos;
    case P_EXEMPLARS: return pos % 2 ? pos : lift + pos;
    case P_DROP_PAIRS: return pos / 2 < first_pair + drop ? -INFINITY : pos;
    default: return pos;
    }
}

typedef struct {
    double rank;
    int index;
} ranked;

/* Higher rank first; ties to the more recent (larger index). */
static int by_rank(const void *x, const void *y)
{
    const ranked *a = x, *b = y;
    if (a->rank != b->rank)
        return a->rank > b->rank ? -1 : 1;
    return b->index - a->index;
}

static int by_index(const void *x, const void *y) { return ((const ranked *)x)->index - ((const ranked *)y)->index; }

/* Pairs to drop for `drop-pairs` without N: whole oldest pairs until <= kept tokens
 * remain, never the newest pair (the budget then trims it by recency). */
static long pairs_to_drop(const fs_kv_cache *c, const int *positions, int kept)
{
    long drop = 0;
    int left = c->seq, i = 0;
    while (left > kept) {
        int pair = positions[i] / 2, j = i;
        while (j < c->seq && positions[j] / 2 == pair)
            j++;
        if (j == c->seq)
            break;
        left -= j - i;
        i = j;
        drop++;
    }
    return drop;
}

/* The kept rows of [H][capacity][hd] (indices sel[0..n), ascending) as a fresh [H][n][hd]. */
static float *compact(const float *x, const ranked *sel, int n, const fs_kv_cache *c)
{
    int hd = c->head_dim;
    float *out = fs_alloc(sizeof(float) * (size_t)c->heads * n * hd);
    for (int h = 0; out && h < c->heads; h++)
        for (int i = 0; i < n; i++)
            memcpy(out + ((size_t)h * n + i) * hd, x + ((size_t)h * c->capacity + sel[i].index) * hd,
                   sizeof(float) * hd);
    return out;
}

int fs_kv_compress(fs_kv_cache *c, double keep, const char *name, fs_error *err)
{
    policy p;
    int kept = 0;
    if (parse_policy(name, &p, err))
        return -1;
    if (c->seq == 0)
        return fs_fail(err, "kv compress: the cache is empty");
    if (budget(keep, c->seq, &kept, err))
        return -1;
    float *attn = NULL;
    if (p.kind == P_ATTENTION) {
        attn = fs_alloc(sizeof(float) * (size_t)c->depth * c->pos);
        if (!attn || observation_scores(c, attn, err)) {
            if (!attn)
                fs_fail(err, "kv compress: out of memory");
            free(attn);
            return -1;
        }
    }
    ranked *order = fs_alloc(sizeof(ranked) * (size_t)c->depth * c->seq);
    int *counts = fs_alloc(sizeof(int) * (size_t)c->depth);
    if (!order || !counts) {
        free(order), free(counts), free(attn);
        return fs_fail(err, "kv compress: out of memory");
    }
    for (int l = 0; l < c->depth; l++) {
        const int *pos = c->layer[l].positions;
        long drop = p.kind == P_DROP_PAIRS && p.drop < 0 ? pairs_to_drop(c, pos, kept) : p.drop;
        ranked *o = order + (size_t)l * c->seq;
        int n = 0;
        for (int i = 0; i < c->seq; i++) {
            o[i].rank = rank(&p, pos[i], pos[0] / 2, drop, attn ? attn + (size_t)l * c->pos : NULL);
            o[i].index = i;
            n += o[i].rank != -INFINITY;
        }
        qsort(o, (size_t)c->seq, sizeof *o, by_rank);
        counts[l] = n < kept ? n : kept;
        if (counts[l] < 1) {
            free(order), free(counts), free(attn);
            return fs_fail(err, "kv compress: policy '%s' evicts every cached token (%d tokens, %d pairs)", name,
                           c->seq, fs_kv_pairs(c));
        }
        qsort(o, (size_t)counts[l], sizeof *o, by_index);
    }
    /* every layer keeps the same count (the step reads one seq) */
    int n = counts[0];
    for (int l = 1; l < c->depth; l++)
        n = counts[l] < n ? counts[l] : n;
    /* every layer's kept rows first, then the swap: out of memory leaves the cache unchanged */
    float *kept_k[FS_MAX_DEPTH] = {0}, *kept_v[FS_MAX_DEPTH] = {0};
    int *kept_pos[FS_MAX_DEPTH] = {0};
    bool ok = true;
    for (int l = 0; l < c->depth && ok; l++) {
        ranked *o = order + (size_t)l * c->seq;
        if (counts[l] != n) /* only drop-pairs can differ: keep the most recent n */
            o += counts[l] - n;
        const fs_kv_entry *e = &c->layer[l];
        kept_k[l] = compact(e->keys, o, n, c), kept_v[l] = compact(e->values, o, n, c);
        kept_pos[l] = fs_alloc(sizeof(int) * (size_t)n);
        ok = kept_k[l] && kept_v[l] && kept_pos[l];
        for (int i = 0; ok && i < n; i++)
            kept_pos[l][i] = e->positions[o[i].index];
    }
    if (!ok) {
        for (int l = 0; l < c->depth; l++)
            free(kept_k[l]), free(kept_v[l]), free(kept_pos[l]);
        free(order), free(counts), free(attn);
        return fs_fail(err, "kv compress: out of memory for %d kept tokens", n);
    }
    for (int l = 0; l < c->depth; l++) {
        fs_kv_entry *e = &c->layer[l];
        free(e->keys), free(e->values), free(e->positions);
        e->keys = kept_k[l], e->values = kept_v[l], e->positions = kept_pos[l];
    }
    c->seq = c->capacity = n;
    free(c->ctx_examples), free(c->ctx_labels);
    c->ctx_examples = NULL, c->ctx_labels = NULL;
    free(order), free(counts), free(attn);
    return 0;
}
