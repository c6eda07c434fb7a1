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

#endif
