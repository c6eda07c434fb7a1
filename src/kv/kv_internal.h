/* Internals of the frozen key-value cache (include/fewshot/kvcache.h): the batched
 * single-token step and its SIMD kernels. Not public API.
 *
 * Layout: a step runs KV_LANES independent tokens at once, "feature-major": every
 * activation is [features][KV_LANES], so one AVX-512 register holds one feature of 16
 * tokens. LayerNorm, RoPE, attention and the MLP's GELU are then plain vector code
 * across tokens, and a matmul is a packed weight block times rows of lanes. */
#ifndef FEWSHOT_KV_INTERNAL_H
#define FEWSHOT_KV_INTERNAL_H

#include <stddef.h>

#include "fewshot/kvcache.h"

enum {
    KV_LANES = 32,     /* tokens per step chunk (a multiple of 16) */
    KV_VECS = KV_LANES / 16,
    KV_ROWS = 8,       /* output rows per packed weight block */
};

/* A Linear layer packed for the matmuls: W [n, k] ([out, in]) regrouped into blocks of
 * `block` output rows, block b = [k][block] (rows past n zero), plus a bias [n] (zeros
 * when the layer has none). kv_matmul takes KV_ROWS blocks, kv_matmul_rows 16. */
struct fs_kv_linear {
    float *w;
    float *bias;
    int n, k, block;
};
typedef struct fs_kv_linear kv_linear;

/* The model's weights, packed once per cache (docs/formats.md names in comments). */
struct fs_kv_weights {
    kv_linear embed;            /* example_embedding: [d, D] */
    kv_linear unembed;          /* unembedding: [C, d] */
    struct {
        kv_linear qkv;          /* attn.qkv: [3d, d] */
        kv_linear proj;         /* attn.proj: [d, d] */
        kv_linear fc1, fc2;     /* mlp: [F, d], [d, F] (unused when attention-only) */
    } layer[FS_MAX_DEPTH];
};

/* Per-thread scratch of one step chunk; every buffer but `staged` is [rows][KV_LANES]. */
typedef struct {
    float *staged;     /* exemplars staged by kv_stage_rows: KV_LANES x D rounded up to 16 */
    float *x;          /* [d]: residual stream */
    float *norm;       /* [d]: LayerNorm output */
    float *qkv;        /* [3d]: q | k | v rows, head-major inside each */
    float *vals;       /* [d]: attention values, heads concatenated */
    float *hidden;     /* [F]: MLP hidden */
    float *scores;     /* [max_keys]: one head's attention weights over cached tokens + self */
    float *logits;     /* [C] */
} kv_scratch;

/* Position terms of the step's tokens: RoPE rotations or an additive embedding. */
typedef struct {
    int pos;
    float *rope_cos, *rope_sin;  /* [hd/2] (RoPE) */
    float *add;                  /* [d] (APE, sinusoidal) */
} kv_position;

/* kv_kernels.c */
int kv_linear_pack(kv_linear *l, const float *w, const float *bias, int n, int k, int block); /* -1: no memory */
void kv_linear_free(kv_linear *l);
void kv_matmul(float *out, const float *in, const kv_linear *l);      /* out[n][L] = W in[k][L] + b */
void kv_matmul_gelu(float *out, const float *in, const kv_linear *l); /* gelu(W in + b) */
void kv_matmul_add_to(float *out, const float *in, const kv_linear *l); /* out += W in + b (residual) */
/* Token rows src [rows <= L][k] -> staged tiles for kv_matmul_rows (missing rows 0). */
void kv_stage_rows(float *staged, const float *src, int rows, int k);
/* out[n][L] = W x + b for KV_LANES staged token rows (block-16 packing). */
void kv_matmul_rows(float *out, const float *staged, const kv_linear *l);
void kv_layernorm(float *out, const float *in, const float *w, const float *b, int dim);
void kv_rope(float *rows, const kv_position *p, int heads, int hd); /* rotate [heads*hd][L] in place */
/* One head: q, k, v = [hd][L] rows of the step's tokens; ctx_k, ctx_v = [seq][hd] */
void kv_attend_head(float *vals, const float *q, const float *k, const float *v, const float *ctx_k,
                    const float *ctx_v, int seq, int hd, float *scores);

/* kv_step.c */
struct fs_kv_weights *kv_weights_create(const fs_model *m); /* packs every Linear once; NULL: no memory */
void kv_weights_free(struct fs_kv_weights *w, int depth);
int kv_scratch_init(kv_scratch *s, const fs_model_config *cfg, int max_keys); /* -1: no memory (freed) */
void kv_scratch_free(kv_scratch *s);
int kv_position_init(kv_position *p, const fs_model *m, int pos); /* -1: no memory (freed) */
void kv_position_free(kv_position *p);
/* Run s->x (embedded tokens at p->pos) through every block, each token attending to the
 * cache's seq tokens and itself. If new_k/new_v are given, lane `lane`'s keys (after
 * RoPE) and values of layer l are written to new_k/new_v + l*d ([H][hd] each). With
 * logits, the final LayerNorm and unembedding fill s->logits [C][L]. */
void kv_step(const fs_kv_cache *c, const kv_position *p, kv_scratch *s, float *new_k, float *new_v, int lane,
             int logits);
/* Example embedding of up to KV_LANES exemplars ([rows][D]) into s->x, plus position. */
void kv_embed_examples(const fs_kv_cache *c, const kv_position *p, kv_scratch *s, const float *examples, int rows);
/* Label embedding of one label token into lane 0 of s->x, plus position. */
void kv_embed_label(const fs_kv_cache *c, const kv_position *p, kv_scratch *s, int label);

#endif
