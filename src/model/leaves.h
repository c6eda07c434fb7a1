/* The activation leaf table's order (internal): the index of every leaf, by name, for
 * the code that computes them. Library users find leaves by path (fs_leaf_find). */
#ifndef FEWSHOT_MODEL_LEAVES_H
#define FEWSHOT_MODEL_LEAVES_H

#include "fewshot/cache.h"

/* Top-level leaves, in the cache tree's order. */
typedef enum {
    L_EXAMPLES, L_LABELS, L_EXAMPLE_EMBEDDING, L_ONEHOT_LABELS, L_LABEL_EMBEDDING, L_TOK_EMBEDDING,
    L_POS_EMBEDDING, L_EMBEDDING,
    L_TRANSFORMER_X,
    L_TOP_BEFORE_BLOCKS_COUNT
} fs_top_leaf_before;

typedef enum {
    L_PRE_UNEMBED, L_FINAL_MEAN, L_FINAL_RSTD, L_TRANSFORMER_OUT, L_UNEMBEDDING, L_OUT,
    L_TOP_AFTER_BLOCKS_COUNT
} fs_top_leaf_after;

/* Per-block leaves, in the tree's order (hidden ones interleaved where computed). */
typedef enum {
    B_X, B_NORM_INP, B_LN1_MEAN, B_LN1_RSTD,
    B_ATTN_X, B_QKV_RAW, B_QKV, B_PRE_ROPE_Q, B_PRE_ROPE_K, B_V, B_Q, B_K, B_ATTN_PRE_SOFTMAX, B_ATTN_SCORES,
    B_ATTN_POST_DROP, B_VALUES_PRE_PROJ, B_VALUES_POST_PROJ, B_ATTN_OUT,
    B_RESIDUAL_POST_ATTN, B_NORM_RESIDUAL_POST_ATTN, B_LN2_MEAN, B_LN2_RSTD, B_MLP_FC1, B_MLP_GELU, B_MLP, B_OUT,
    B_COUNT
} fs_block_leaf;

/* Index of a leaf in the table. */
static inline int fs_block_leaf_id(int layer, int which) { return L_TOP_BEFORE_BLOCKS_COUNT + layer * B_COUNT + which; }
static inline int fs_top_after(const fs_model_config *cfg, int which)
{
    return L_TOP_BEFORE_BLOCKS_COUNT + cfg->depth * B_COUNT + which;
}

/* A layer's leaves for the sequences [b0, b1) of one pass, resolved once from the table
 * (llm.c's gpt2_forward style): the layer functions then do plain pointer arithmetic.
 * Sequence b0 + i of a leaf starts at p + i * numel; id keys its clamp and gradient
 * links. */
typedef struct {
    float *p;     /* sequence b0 */
    size_t numel; /* per sequence */
    int id;       /* index in the table */
} fs_leaf_at;

/* Leaf `id` from sequence b0 on. */
static inline fs_leaf_at fs_leaf_from(const fs_acts *a, int id, int b0)
{
    return (fs_leaf_at){fs_leaf_ptr(a, id, b0), a->leaves[id].numel, id};
}

/* Sequence b0 + i of a leaf. */
static inline float *fs_leaf_seq(const fs_leaf_at *l, int i) { return l->p + (size_t)i * l->numel; }

/* The leaves before the blocks (fs_top_leaf_before), x = transformer_output.x. */
typedef struct {
    fs_leaf_at examples, labels, example_embedding, onehot_labels, label_embedding, tok_embedding, pos_embedding,
        embedding, x;
} fs_embed_acts;

/* One block's leaves (fs_block_leaf). */
typedef struct {
    fs_leaf_at x, norm_inp, ln1_mean, ln1_rstd;
    fs_leaf_at attn_x, qkv_raw, qkv, pre_rope_q, pre_rope_k, v, q, k, attn_pre_softmax, attn_scores, attn_post_drop,
        values_pre_proj, values_post_proj, attn_out;
    fs_leaf_at residual_post_attn, norm_residual_post_attn, ln2_mean, ln2_rstd, mlp_fc1, mlp_gelu, mlp, out;
} fs_block_acts;

/* The leaves after the blocks (fs_top_leaf_after). */
typedef struct {
    fs_leaf_at pre_unembed, final_mean, final_rstd, transformer_out, unembedding, out;
} fs_head_acts;

void fs_embed_acts_at(fs_embed_acts *e, const fs_acts *a, int b0);
void fs_block_acts_at(fs_block_acts *k, const fs_acts *a, int layer, int b0);
void fs_head_acts_at(fs_head_acts *h, const fs_acts *a, int b0);

#endif
