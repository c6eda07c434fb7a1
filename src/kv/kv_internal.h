/* Internals of the frozen key-value cache (include/fewshot/kvcache.h): the batched
 * single-token step, built from the lane-major kernels of kernels/lanes.h (FS_LANES
 * tokens at once, every activation [features][FS_LANES]). Not public API. */
#ifndef FEWSHOT_KV_INTERNAL_H
#define FEWSHOT_KV_INTERNAL_H

#include <stddef.h>

#include "fewshot/kvcache.h"
#include "kernels/lanes.h"

/* The model's weights, packed once per cache (docs/formats.md names in comments). */
struct fs_kv_weights {
    fs_lane_linear embed;            /* example_embedding: [d, D] */
    fs_lane_linear unembed;          /* unembedding: [C, d] */
    struct {
        fs_lane_linear qkv;          /* attn.qkv: [3d, d] */
        fs_lane_linear proj;         /* attn.proj: [d, d] */
        fs_lane_linear fc1, fc2;     /* mlp: [F, d], [d, F] (unused when attention-only) */
    } layer[FS_MAX_DEPTH];
};

/* Per-thread scratch of one step chunk; every buffer but `staged`, `gathered` and
 * `stage` is [rows][FS_LANES]. */
typedef struct {
    float *staged;     /* exemplars staged by fs_lanes_stage_rows */
    float *gathered;   /* [FS_LANES][D]: query exemplars of several rows, gathered */
    float *x;          /* [d]: residual stream */
    float *norm;       /* [d]: LayerNorm output */
    float *qkv;        /* [3d]: q | k | v rows, head-major inside each */
    float *vals;       /* [d]: attention values, heads concatenated */
    float *group_vals; /* [d]: attention values of every lane against one row's cache */
    float *hidden;     /* [F]: MLP hidden */
    float *scores;     /* [max_keys]: one head's attention weights over cached tokens + self */
    float *logits;     /* [C] */
    float *rope_cos, *rope_sin; /* [hd/2]: each lane's RoPE rotation (kv_lanes_at) */
    float *pos_add;    /* [d]: each lane's APE/sinusoidal embedding (kv_lanes_at) */
    float *stage;      /* one head of one cache staged for fs_lanes_attend_lane (not lane-major) */
} kv_scratch;

/* Position terms of one position: RoPE rotations or an additive embedding. */
typedef struct {
    int pos;
    float *rope_cos, *rope_sin;  /* [hd/2] (RoPE) */
    float *add;                  /* [d] (APE, sinusoidal) */
} kv_position;

/* Lanes [lane0, lane0 + lanes) of a step chunk attend to one cache (a chunk holds the
 * queries of one or several rows of a batch). */
typedef struct {
    const fs_kv_cache *cache;
    int lane0, lanes;
} kv_group;

/* kvcache.c */
/* fs_kv_init, packing the weights unless `shared` is given (then borrowed: the batch's
 * rows share row 0's). */
int kv_cache_init(fs_kv_cache *c, const fs_model *m, struct fs_kv_weights *shared, fs_error *err);
/* Queries [count][D] against one frozen, non-empty cache -> logits [count][C]. */
typedef struct {
    const fs_kv_cache *cache;
    const float *queries;
    size_t count;
    float *logits;
} kv_job;
/* Every job's queries in chunks of FS_LANES on `threads` threads (0 = all cores): full
 * chunks of one job, then the jobs' remaining queries packed into shared chunks (each
 * lane at its own job's position, attending to its own job's cache). */
int kv_classify_jobs(const kv_job *jobs, int njobs, int threads, fs_error *err);

/* kv_step.c */
struct fs_kv_weights *kv_weights_create(const fs_model *m); /* packs every Linear once */
void kv_weights_free(struct fs_kv_weights *w, int depth);
int kv_scratch_init(kv_scratch *s, const fs_model_config *cfg, int max_keys); /* -1: out of memory */
void kv_scratch_free(kv_scratch *s);
int kv_position_init(kv_position *p, const fs_model *m, int pos); /* -1: out of memory */
void kv_position_free(kv_position *p);
/* Lanes [lane0, lane0 + lanes) of the step run at position p. */
void kv_lanes_at(kv_scratch *s, const fs_model_config *cfg, const kv_position *p, int lane0, int lanes);
/* Run s->x (embedded tokens, each at its lane's position) through every block, the lanes
 * of group g attending to g's cache's seq tokens and to themselves. If new_k/new_v are
 * given, lane `lane`'s keys (after RoPE) and values of layer l are written to
 * new_k/new_v + l*d ([H][hd] each). With logits, the final LayerNorm and unembedding
 * fill s->logits [C][L]. */
void kv_step(const kv_group *g, int ngroups, kv_scratch *s, float *new_k, float *new_v, int lane, int logits);
/* Example embedding of up to FS_LANES exemplars ([rows][D]) into s->x, plus position. */
void kv_embed_examples(const fs_kv_cache *c, kv_scratch *s, const float *examples, int rows);
/* Label embedding of one label token into lane 0 of s->x, plus position. */
void kv_embed_label(const fs_kv_cache *c, kv_scratch *s, int label);

#endif
