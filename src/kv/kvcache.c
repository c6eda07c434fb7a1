/* The frozen key-value cache (include/fewshot/kvcache.h): entries per layer, build from
 * a whole context via the full forward, append pair by pair, freeze, classify. */
#include "kv/kv_internal.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "fewshot/cache.h"
#include "fewshot/forward.h"
#include "fewshot/seqio.h"
#include "model/leaves.h"
#include "base/fileio.h"

/* Contexts up to this many pairs are built by one full forward (its attention leaves
 * grow as tokens^2); longer ones append the remaining pairs. */
enum { KV_BUILD_FORWARD_PAIRS = 256 };

int kv_cache_init(fs_kv_cache *c, const fs_model *m, struct fs_kv_weights *shared, fs_error *err)
{
    memset(c, 0, sizeof *c);
    const fs_model_config *cfg = &m->cfg;
    if (cfg->num_heads < 1 || cfg->d_model % cfg->num_heads != 0 || cfg->depth < 1 || cfg->depth > FS_MAX_DEPTH)
        return fs_fail(err, "kv cache: invalid model config (d_model %d, num_heads %d, depth %d)", cfg->d_model,
                       cfg->num_heads, cfg->depth);
    c->model = m;
    c->heads = cfg->num_heads;
    c->head_dim = cfg->d_model / cfg->num_heads;
    c->depth = cfg->depth;
    c->layer = calloc((size_t)c->depth, sizeof *c->layer);
    c->weights = !c->layer ? NULL : shared ? shared : kv_weights_create(m);
    if (!c->weights) {
        fs_kv_free(c);
        return fs_fail(err, "kv cache: out of memory packing the model's weights");
    }
    return 0;
}

int fs_kv_init(fs_kv_cache *c, const fs_model *m, fs_error *err) { return kv_cache_init(c, m, NULL, err); }

void fs_kv_free(fs_kv_cache *c)
{
    if (c->layer)
        for (int l = 0; l < c->depth; l++) {
            free(c->layer[l].keys);
            free(c->layer[l].values);
            free(c->layer[l].positions);
        }
    free(c->layer);
    free(c->ctx_examples);
    free(c->ctx_labels);
    kv_weights_free(c->weights, c->depth);
    memset(c, 0, sizeof *c);
}

/* [H][new_cap][hd] holding rows [0, seq) of each head of `old` ([H][old_cap][hd]); NULL when
 * out of memory (old untouched). */
static float *relayout(const float *old, int heads, int seq, int old_cap, int new_cap, int hd)
{
    float *fresh = fs_alloc(sizeof(float) * (size_t)heads * (new_cap > 0 ? new_cap : 1) * hd);
    for (int h = 0; fresh && h < heads && seq > 0; h++)
        memcpy(fresh + (size_t)h * new_cap * hd, old + (size_t)h * old_cap * hd, sizeof(float) * (size_t)seq * hd);
    return fresh;
}

/* All layers move to the new capacity, or (out of memory) none does. */
static int set_capacity(fs_kv_cache *c, int cap, fs_error *err)
{
    float *fresh[3 * FS_MAX_DEPTH] = {0};
    bool ok = true;
    for (int l = 0; l < c->depth && ok; l++) {
        fresh[3 * l] = relayout(c->layer[l].keys, c->heads, c->seq, c->capacity, cap, c->head_dim);
        fresh[3 * l + 1] = relayout(c->layer[l].values, c->heads, c->seq, c->capacity, cap, c->head_dim);
        fresh[3 * l + 2] = relayout((const float *)c->layer[l].positions, 1, c->seq, c->capacity, cap, 1);
        ok = fresh[3 * l] && fresh[3 * l + 1] && fresh[3 * l + 2];
    }
    if (!ok) {
        for (int i = 0; i < 3 * c->depth; i++)
            free(fresh[i]);
        return fs_fail(err, "kv cache: out of memory for %d cached tokens", cap);
    }
    for (int l = 0; l < c->depth; l++) {
        free(c->layer[l].keys), free(c->layer[l].values), free(c->layer[l].positions);
        c->layer[l].keys = fresh[3 * l];
        c->layer[l].values = fresh[3 * l + 1];
        c->layer[l].positions = (int *)fresh[3 * l + 2];
    }
    c->capacity = cap;
    return 0;
}

static int reserve(fs_kv_cache *c, int tokens, fs_error *err)
{
    if (tokens <= c->capacity)
        return 0;
    int cap = c->capacity * 2 > tokens ? c->capacity * 2 : tokens;
    return set_capacity(c, cap < 8 ? 8 : cap, err);
}

/* Keep a copy of the context's pairs [pos/2, pos/2 + n) while the cache is uncompressed
 * (the attention policy re-runs their forward). */
static int keep_inputs(fs_kv_cache *c, const float *examples, const int *labels, int n, fs_error *err)
{
    if (c->pos != 0 && !c->ctx_examples)
        return 0; /* compressed: the context is no longer needed */
    int D = c->model->cfg.input_dim, have = c->pos / 2;
    float *ex = fs_alloc(sizeof(float) * (size_t)(have + n) * D);
    int *lab = fs_alloc(sizeof(int) * (size_t)(have + n));
    if (!ex || !lab) {
        free(ex), free(lab);
        return fs_fail(err, "kv cache: out of memory keeping a context of %d pairs", have + n);
    }
    if (have) {
        memcpy(ex, c->ctx_examples, sizeof(float) * (size_t)have * D);
        memcpy(lab, c->ctx_labels, sizeof(int) * (size_t)have);
    }
    free(c->ctx_examples);
    free(c->ctx_labels);
    memcpy(ex + (size_t)have * D, examples, sizeof(float) * (size_t)n * D);
    memcpy(lab + have, labels, sizeof(int) * (size_t)n);
    c->ctx_examples = ex;
    c->ctx_labels = lab;
    return 0;
}

/* A context of `pairs` pairs puts the query at token 2*pairs: APE has 32 positions. */
static int check_context_length(const fs_kv_cache *c, long pairs, fs_error *err)
{
    int max_pairs = (FS_APE_MAX_TOKENS - 1) / 2;
    if (c->model->cfg.pos_embedding == FS_POS_APE && pairs > max_pairs)
        return fs_fail(err, "kv cache: learned absolute position embeddings (ape) have %d positions, so a context "
                            "holds at most %d pairs (the query is token 2k); got %ld pairs",
                       FS_APE_MAX_TOKENS, max_pairs, pairs);
    if (pairs > (1L << 28))
        return fs_fail(err, "kv cache: context of %ld pairs is too long", pairs);
    return 0;
}

static int check_label(const fs_kv_cache *c, int label, long pair, fs_error *err)
{
    int C = c->model->cfg.num_classes;
    if (label < 0 || label >= C)
        return fs_fail(err, "kv cache: context label %d (pair %ld) is out of range [0, %d)", label, pair, C);
    return 0;
}

static int check_mutable(const fs_kv_cache *c, const char *what, fs_error *err)
{
    if (c->frozen)
        return fs_fail(err, "kv cache: cannot %s: the cache is frozen (fs_kv_unfreeze first)", what);
    return 0;
}

/* The full forward over `pairs` context pairs plus a dummy query pair; keys (leaf k,
 * after RoPE) and values (leaf v) of the first 2*pairs tokens become the entries. */
static int build_by_forward(fs_kv_cache *c, const float *examples, const int *labels, int pairs, fs_error *err)
{
    const fs_model *m = c->model;
    int D = m->cfg.input_dim, hd = c->head_dim, tokens = 2 * pairs;
    fs_acts a;
    if (fs_acts_create(&a, &m->cfg, pairs + 1, 1, err))
        return -1;
    float *ex = calloc((size_t)(pairs + 1) * D, sizeof(float));
    int *lab = calloc((size_t)(pairs + 1), sizeof(int));
    if (!ex || !lab || reserve(c, tokens, err) || keep_inputs(c, examples, labels, pairs, err)) {
        if (!ex || !lab)
            fs_fail(err, "kv cache: out of memory for a context of %d pairs", pairs);
        free(ex), free(lab);
        fs_acts_free(&a);
        return -1;
    }
    memcpy(ex, examples, sizeof(float) * (size_t)pairs * D);
    memcpy(lab, labels, sizeof(int) * (size_t)pairs);
    fs_acts_set_inputs(&a, ex, lab, 0, 1);
    fs_forward_range(m, &a, NULL, 0, 1);
    for (int l = 0; l < c->depth; l++) {
        for (int t = 0; t < tokens; t++)
            c->layer[l].positions[t] = t;
        const float *K = fs_leaf_ptr(&a, fs_block_leaf_id(l, B_K), 0), *V = fs_leaf_ptr(&a, fs_block_leaf_id(l, B_V), 0);
        for (int h = 0; h < c->heads; h++) {
            size_t dst = (size_t)h * c->capacity * hd, src = (size_t)h * a.N * hd;
            memcpy(c->layer[l].keys + dst, K + src, sizeof(float) * (size_t)tokens * hd);
            memcpy(c->layer[l].values + dst, V + src, sizeof(float) * (size_t)tokens * hd);
        }
    }
    c->seq = c->pos = tokens;
    free(ex);
    free(lab);
    fs_acts_free(&a);
    return 0;
}

int fs_kv_build(fs_kv_cache *c, const float *examples, const int *labels, int pairs, fs_error *err)
{
    if (check_mutable(c, "build", err))
        return -1;
    if (c->pos != 0)
        return fs_fail(err, "kv cache: build needs an empty cache (it holds %d pairs); append adds pairs",
                       fs_kv_pairs(c));
    if (pairs < 1)
        return fs_fail(err, "kv cache: empty context: need at least one exemplar-label pair");
    if (check_context_length(c, pairs, err))
        return -1;
    for (int i = 0; i < pairs; i++)
        if (check_label(c, labels[i], i, err))
            return -1;
    int first = pairs < KV_BUILD_FORWARD_PAIRS ? pairs : KV_BUILD_FORWARD_PAIRS;
    if (build_by_forward(c, examples, labels, first, err))
        return -1;
    for (int i = first; i < pairs; i++)
        if (fs_kv_append(c, examples + (size_t)i * c->model->cfg.input_dim, labels[i], err))
            return -1;
    return 0;
}

/* Write one token's keys/values ([depth][H*hd] each) at position seq. */
static void store_token(fs_kv_cache *c, const float *new_k, const float *new_v)
{
    int d = c->heads * c->head_dim, hd = c->head_dim;
    for (int l = 0; l < c->depth; l++)
        for (int h = 0; h < c->heads; h++) {
            size_t dst = ((size_t)h * c->capacity + c->seq) * hd, src = (size_t)l * d + (size_t)h * hd;
            memcpy(c->layer[l].keys + dst, new_k + src, sizeof(float) * hd);
            memcpy(c->layer[l].values + dst, new_v + src, sizeof(float) * hd);
            c->layer[l].positions[c->seq] = c->pos;
        }
    c->seq++;
    c->pos++;
}

/* Run one token (exemplar or label) at position seq and append its keys/values. */
static int append_token(fs_kv_cache *c, kv_scratch *s, const float *example, int label, float *new_k, float *new_v)
{
    kv_position p;
    if (kv_position_init(&p, c->model, c->pos))
        return -1;
    kv_lanes_at(s, &c->model->cfg, &p, 0, FS_LANES);
    if (example)
        kv_embed_examples(c, s, example, 1);
    else
        kv_embed_label(c, s, label);
    kv_group g = {c, 0, FS_LANES};
    kv_step(&g, 1, s, new_k, new_v, 0, 0);
    store_token(c, new_k, new_v);
    kv_position_free(&p);
    return 0;
}

int fs_kv_append(fs_kv_cache *c, const float *example, int label, fs_error *err)
{
    if (check_mutable(c, "append", err) || check_context_length(c, fs_kv_pairs(c) + 1L, err) ||
        check_label(c, label, fs_kv_pairs(c), err))
        return -1;
    if (reserve(c, c->seq + 2, err) || keep_inputs(c, example, &label, 1, err))
        return -1;
    size_t per_token = (size_t)c->depth * c->heads * c->head_dim;
    float *new_k = malloc(sizeof(float) * per_token), *new_v = malloc(sizeof(float) * per_token);
    kv_scratch s;
    int rc = -1;
    if (new_k && new_v && kv_scratch_init(&s, &c->model->cfg, c->seq + 2) == 0) {
        rc = append_token(c, &s, example, 0, new_k, new_v);
        if (rc == 0 && append_token(c, &s, NULL, label, new_k, new_v)) { /* the pair goes in whole or not at all */
            c->seq--, c->pos--;
            rc = -1;
        }
        kv_scratch_free(&s);
    }
    free(new_k);
    free(new_v);
    if (rc)
        return fs_fail(err, "kv cache: out of memory appending pair %d", fs_kv_pairs(c));
    return 0;
}

void fs_kv_freeze(fs_kv_cache *c)
{
    fs_error ignored; /* out of memory: the cache keeps its spare capacity, which is harmless */
    if (c->capacity != c->seq)
        (void)set_capacity(c, c->seq, &ignored);
    c->frozen = true;
}

void fs_kv_unfreeze(fs_kv_cache *c) { c->frozen = false; }

/* Queries [q0, q0 + n) of job `job` in lanes [lane0, lane0 + n) of a step chunk. */
typedef struct {
    int job, lane0, n;
    size_t q0;
} kv_segment;

/* One chunk: the segments' queries (one job's, or the last few of several) -> their
 * logits rows. Every lane's arithmetic is independent of the other lanes, so a query's
 * logits do not depend on which chunk or lanes it ran in. */
static void classify_chunk(const kv_job *jobs, const kv_position *const *pos, const kv_segment *seg, int nseg,
                           kv_scratch *s)
{
    const fs_model_config *cfg = &jobs[seg[0].job].cache->model->cfg;
    int D = cfg->input_dim, C = cfg->num_classes, rows = seg[nseg - 1].lane0 + seg[nseg - 1].n;
    kv_group g[FS_LANES];
    const float *src = jobs[seg[0].job].queries + seg[0].q0 * D;
    for (int i = 0; i < nseg; i++) {
        const kv_job *j = &jobs[seg[i].job];
        g[i] = (kv_group){j->cache, seg[i].lane0, seg[i].n};
        kv_lanes_at(s, cfg, pos[seg[i].job], nseg == 1 ? 0 : seg[i].lane0, nseg == 1 ? FS_LANES : seg[i].n);
        if (nseg > 1)
            memcpy(s->gathered + (size_t)seg[i].lane0 * D, j->queries + seg[i].q0 * D,
                   sizeof(float) * (size_t)seg[i].n * D);
    }
    kv_embed_examples(g[0].cache, s, nseg == 1 ? src : s->gathered, rows);
    kv_step(g, nseg, s, NULL, NULL, 0, 1);
    for (int i = 0; i < nseg; i++)
        for (int r = 0; r < seg[i].n; r++)
            for (int k = 0; k < C; k++)
                jobs[seg[i].job].logits[(seg[i].q0 + r) * C + k] = s->logits[(size_t)k * FS_LANES + seg[i].lane0 + r];
}

/* The chunks: every job's full chunks of FS_LANES queries, then the jobs' remaining
 * queries packed together (a batch of one-query rows fills whole chunks). Chunk i is
 * segments [start[i], start[i + 1]). Returns the chunk count, -1 when out of memory. */
static long plan_chunks(const kv_job *jobs, int njobs, kv_segment **segs, size_t **start)
{
    size_t full = 0, rest = 0;
    for (int j = 0; j < njobs; j++) {
        full += jobs[j].count / FS_LANES;
        rest += jobs[j].count % FS_LANES;
    }
    size_t packed = (rest + FS_LANES - 1) / FS_LANES, chunks = full + packed;
    *segs = fs_alloc(sizeof(kv_segment) * (full + (size_t)njobs + packed + 1));
    *start = fs_alloc(sizeof(size_t) * (chunks + 1));
    if (!*segs || !*start)
        return -1;
    size_t n = 0, c = 0;
    for (int j = 0; j < njobs; j++)
        for (size_t q0 = 0; q0 + FS_LANES <= jobs[j].count; q0 += FS_LANES) {
            (*start)[c++] = n;
            (*segs)[n++] = (kv_segment){j, 0, FS_LANES, q0};
        }
    int lane = 0;
    for (int j = 0; j < njobs; j++)
        for (size_t q0 = jobs[j].count / FS_LANES * FS_LANES; q0 < jobs[j].count;) {
            if (lane == 0)
                (*start)[c++] = n;
            size_t left = jobs[j].count - q0, room = (size_t)(FS_LANES - lane);
            int take = (int)(left < room ? left : room);
            (*segs)[n++] = (kv_segment){j, lane, take, q0};
            q0 += take;
            lane = (lane + take) % FS_LANES;
        }
    (*start)[c] = n;
    return (long)chunks;
}

typedef struct {
    int pos, job;
} pos_job;

static int by_pos(const void *x, const void *y)
{
    const pos_job *a = x, *b = y;
    return a->pos != b->pos ? (a->pos > b->pos) - (a->pos < b->pos) : a->job - b->job;
}

/* Position terms once per distinct position (a batch's rows often share their length):
 * at[j] points to job j's in table[0, *n). -1 when out of memory. */
static int job_positions(const fs_model *m, const kv_job *jobs, int njobs, kv_position *table, int *n,
                         const kv_position **at)
{
    pos_job *order = fs_alloc(sizeof *order * (size_t)njobs);
    if (!order)
        return -1;
    for (int j = 0; j < njobs; j++)
        order[j] = (pos_job){jobs[j].cache->pos, j};
    qsort(order, (size_t)njobs, sizeof *order, by_pos);
    int rc = 0;
    *n = 0;
    for (int i = 0; i < njobs && rc == 0; i++) {
        if (i == 0 || order[i].pos != order[i - 1].pos)
            rc = kv_position_init(&table[(*n)++], m, order[i].pos);
        at[order[i].job] = &table[*n - 1];
    }
    free(order);
    return rc;
}

int kv_classify_jobs(const kv_job *jobs, int njobs, int threads, fs_error *err)
{
    const fs_model *m = jobs[0].cache->model;
    int max_keys = 1;
    for (int j = 0; j < njobs; j++)
        max_keys = jobs[j].cache->seq + 1 > max_keys ? jobs[j].cache->seq + 1 : max_keys;
    kv_segment *segs = NULL;
    size_t *start = NULL;
    long chunks = plan_chunks(jobs, njobs, &segs, &start);
    kv_position *table = fs_alloc(sizeof(kv_position) * (size_t)njobs);
    const kv_position **pos = fs_alloc(sizeof(kv_position *) * (size_t)njobs);
    int npos = 0, failed = chunks < 0 || !table || !pos || job_positions(m, jobs, njobs, table, &npos, pos);
    int nt = threads > 0 ? threads : omp_get_max_threads();
    if (!failed && nt > chunks)
        nt = chunks > 0 ? (int)chunks : 1;
    if (!failed) {
#pragma omp parallel num_threads(nt) reduction(| : failed)
        {
            kv_scratch s;
            failed = kv_scratch_init(&s, &m->cfg, max_keys) != 0;
#pragma omp for schedule(static)
            for (long ch = 0; ch < chunks; ch++)
                if (!failed)
                    classify_chunk(jobs, pos, segs + start[ch], (int)(start[ch + 1] - start[ch]), &s);
            kv_scratch_free(&s);
        }
    }
    for (int i = 0; i < npos; i++)
        kv_position_free(&table[i]);
    free(segs), free(start), free(table), free(pos);
    if (failed)
        return fs_fail(err, "kv cache: out of memory for the query step's scratch buffers");
    return 0;
}

int fs_kv_classify(const fs_kv_cache *c, const float *queries, size_t nq, float *logits, int threads,
                   fs_error *err)
{
    if (!c->frozen)
        return fs_fail(err, "kv cache: classify needs a frozen cache (fs_kv_freeze)");
    if (c->seq == 0)
        return fs_fail(err, "kv cache: empty context: need at least one exemplar-label pair");
    kv_job job = {c, queries, nq, logits};
    return kv_classify_jobs(&job, 1, threads, err);
}

int fs_kv_probs(const float *logits, int C, float *probs)
{
    int best = 0;
    for (int k = 1; k < C; k++)
        if (logits[k] > logits[best])
            best = k;
    float sum = 0.f;
    for (int k = 0; k < C; k++) {
        probs[k] = expf(logits[k] - logits[best]);
        sum += probs[k];
    }
    for (int k = 0; k < C; k++)
        probs[k] /= sum;
    return best;
}
