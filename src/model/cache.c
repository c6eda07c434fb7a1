/* The leaf table of the activation cache (docs/cache.md) and the arena it lays out. */
#include "fewshot/cache.h"
#include "model/leaves.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fewshot/model.h"
#include "base/fileio.h"

typedef struct {
    const char *key;
    fs_scope scope;
    bool hidden;
} leaf_name;

static const leaf_name top_before[L_TOP_BEFORE_BLOCKS_COUNT] = {
    [L_EXAMPLES] = {"examples", FS_SCOPE_TOP, false},
    [L_LABELS] = {"labels", FS_SCOPE_TOP, false},
    [L_EXAMPLE_EMBEDDING] = {"example_embedding", FS_SCOPE_TOP, false},
    [L_ONEHOT_LABELS] = {"onehot_labels", FS_SCOPE_TOP, false},
    [L_LABEL_EMBEDDING] = {"label_embedding", FS_SCOPE_TOP, false},
    [L_TOK_EMBEDDING] = {"tok_embedding", FS_SCOPE_TOP, false},
    [L_POS_EMBEDDING] = {"pos_embedding", FS_SCOPE_TOP, false},
    [L_EMBEDDING] = {"embedding", FS_SCOPE_TOP, false},
    [L_TRANSFORMER_X] = {"x", FS_SCOPE_TRANSFORMER, false},
};

static const leaf_name block_names[B_COUNT] = {
    [B_X] = {"x", FS_SCOPE_BLOCK, false},
    [B_NORM_INP] = {"norm_inp", FS_SCOPE_BLOCK, false},
    [B_LN1_MEAN] = {"ln1_mean", FS_SCOPE_BLOCK, true},
    [B_LN1_RSTD] = {"ln1_rstd", FS_SCOPE_BLOCK, true},
    [B_ATTN_X] = {"x", FS_SCOPE_ATTN, false},
    [B_QKV_RAW] = {"qkv_raw", FS_SCOPE_ATTN, true},
    [B_QKV] = {"qkv", FS_SCOPE_ATTN, false},
    [B_PRE_ROPE_Q] = {"pre_rope_q", FS_SCOPE_ATTN, false},
    [B_PRE_ROPE_K] = {"pre_rope_k", FS_SCOPE_ATTN, false},
    [B_V] = {"v", FS_SCOPE_ATTN, false},
    [B_Q] = {"q", FS_SCOPE_ATTN, false},
    [B_K] = {"k", FS_SCOPE_ATTN, false},
    [B_ATTN_PRE_SOFTMAX] = {"attn_pre_softmax", FS_SCOPE_ATTN, false},
    [B_ATTN_SCORES] = {"attn_scores", FS_SCOPE_ATTN, false},
    [B_ATTN_POST_DROP] = {"attn_post_drop", FS_SCOPE_ATTN, false},
    [B_VALUES_PRE_PROJ] = {"values_pre_proj", FS_SCOPE_ATTN, false},
    [B_VALUES_POST_PROJ] = {"values_post_proj", FS_SCOPE_ATTN, false},
    [B_ATTN_OUT] = {"out", FS_SCOPE_ATTN, false},
    [B_RESIDUAL_POST_ATTN] = {"residual_post_attn", FS_SCOPE_BLOCK, false},
    [B_NORM_RESIDUAL_POST_ATTN] = {"norm_residual_post_attn", FS_SCOPE_BLOCK, false},
    [B_LN2_MEAN] = {"ln2_mean", FS_SCOPE_BLOCK, true},
    [B_LN2_RSTD] = {"ln2_rstd", FS_SCOPE_BLOCK, true},
    [B_MLP_FC1] = {"mlp_fc1", FS_SCOPE_BLOCK, true},
    [B_MLP_GELU] = {"mlp_gelu", FS_SCOPE_BLOCK, true},
    [B_MLP] = {"mlp", FS_SCOPE_BLOCK, false},
    [B_OUT] = {"out", FS_SCOPE_BLOCK, false},
};

static const leaf_name top_after[L_TOP_AFTER_BLOCKS_COUNT] = {
    [L_PRE_UNEMBED] = {"pre_unembed", FS_SCOPE_TRANSFORMER, false},
    [L_FINAL_MEAN] = {"final_mean", FS_SCOPE_TRANSFORMER, true},
    [L_FINAL_RSTD] = {"final_rstd", FS_SCOPE_TRANSFORMER, true},
    [L_TRANSFORMER_OUT] = {"out", FS_SCOPE_TRANSFORMER, false},
    [L_UNEMBEDDING] = {"unembedding", FS_SCOPE_TOP, false},
    [L_OUT] = {"out", FS_SCOPE_TOP, false},
};

static void set_shape(fs_leaf *l, int ndim, int d0, int d1, int d2, int d3)
{
    int dims[4] = {d0, d1, d2, d3};
    size_t f[4];
    l->ndim = ndim;
    for (int i = 0; i < ndim; i++) {
        l->shape[i] = dims[i];
        f[i] = (size_t)dims[i];
    }
    if (fs_size_mul(&l->numel, SIZE_MAX / sizeof(float), ndim, f))
        l->numel = SIZE_MAX; /* too large: fs_acts_create reports it */
}

/* Per-sequence shape of each leaf, docs/model.md, docs/cache.md. */
static void top_before_shape(fs_leaf *l, int which, const fs_model_config *c, int P, int N)
{
    int d = c->d_model;
    switch (which) {
    case L_EXAMPLES: set_shape(l, 2, P, c->input_dim, 0, 0); break;
    case L_LABELS: set_shape(l, 1, P, 0, 0, 0); l->is_int = true; break;
    case L_EXAMPLE_EMBEDDING: set_shape(l, 2, P, d, 0, 0); break;
    case L_ONEHOT_LABELS: set_shape(l, 2, P, c->num_classes, 0, 0); break;
    case L_LABEL_EMBEDDING: set_shape(l, 2, P, d, 0, 0); break;
    case L_POS_EMBEDDING:
        set_shape(l, 2, N, d, 0, 0);
        if (c->pos_embedding == FS_POS_ROPE) {
            l->is_null = true;
            l->ndim = 0;
            l->numel = 0;
        }
        break;
    default: set_shape(l, 2, N, d, 0, 0); break;
    }
}

static void block_shape(fs_leaf *l, int which, const fs_model_config *c, int N)
{
    int d = c->d_model, H = c->num_heads, hd = d / H, F = fs_mlp_hidden(c);
    switch (which) {
    case B_LN1_MEAN:
    case B_LN1_RSTD:
    case B_LN2_MEAN:
    case B_LN2_RSTD: set_shape(l, 1, N, 0, 0, 0); break;
    case B_QKV_RAW: set_shape(l, 2, N, 3 * d, 0, 0); break;
    case B_QKV: set_shape(l, 4, 3, H, N, hd); break;
    case B_PRE_ROPE_Q:
    case B_PRE_ROPE_K:
    case B_V:
    case B_Q:
    case B_K: set_shape(l, 4, 1, H, N, hd); break;
    case B_ATTN_PRE_SOFTMAX:
    case B_ATTN_SCORES:
    case B_ATTN_POST_DROP: set_shape(l, 4, 1, H, N, N); break;
    case B_MLP_FC1:
    case B_MLP_GELU: set_shape(l, 2, N, F, 0, 0); break;
    default: set_shape(l, 2, N, d, 0, 0); break;
    }
}

static void top_after_shape(fs_leaf *l, int which, const fs_model_config *c, int P, int N)
{
    switch (which) {
    case L_FINAL_MEAN:
    case L_FINAL_RSTD: set_shape(l, 1, N, 0, 0, 0); break;
    case L_UNEMBEDDING: set_shape(l, 2, N, c->num_classes, 0, 0); break;
    case L_OUT: set_shape(l, 2, P, c->num_classes, 0, 0); break;
    default: set_shape(l, 2, N, c->d_model, 0, 0); break;
    }
}

static void set_path(fs_leaf *l, const leaf_name *name, int layer)
{
    l->key = name->key;
    l->scope = name->scope;
    l->hidden = name->hidden;
    l->layer = layer;
    switch (name->scope) {
    case FS_SCOPE_TOP: snprintf(l->path, sizeof l->path, "%s", name->key); break;
    case FS_SCOPE_TRANSFORMER: snprintf(l->path, sizeof l->path, "transformer_output.%s", name->key); break;
    case FS_SCOPE_BLOCK:
        snprintf(l->path, sizeof l->path, "transformer_output.block_outputs[%d].%s", layer, name->key);
        break;
    case FS_SCOPE_ATTN:
        snprintf(l->path, sizeof l->path, "transformer_output.block_outputs[%d].attn_output.%s", layer, name->key);
        break;
    }
}

int fs_acts_create(fs_acts *a, const fs_model_config *cfg, int P, int B, fs_error *err)
{
    memset(a, 0, sizeof *a);
    if (P < 1)
        return fs_fail(err, "a sequence needs at least 1 pair (got %d)", P);
    if (B < 1)
        return fs_fail(err, "a batch needs at least 1 sequence (got %d)", B);
    if (P > (1 << 24))
        return fs_fail(err, "a sequence of %d pairs is too long (at most %d)", P, 1 << 24);
    int N = 2 * P - 1;
    if (cfg->pos_embedding == FS_POS_APE && N > FS_APE_MAX_TOKENS)
        return fs_fail(err, "learned absolute position embeddings (ape) allow at most %d tokens (%d pairs); "
                            "this input has %d pairs",
                       FS_APE_MAX_TOKENS, (FS_APE_MAX_TOKENS + 1) / 2, P);
    a->cfg = *cfg;
    a->P = P;
    a->N = N;
    a->B = B;
    a->count = L_TOP_BEFORE_BLOCKS_COUNT + cfg->depth * B_COUNT + L_TOP_AFTER_BLOCKS_COUNT;
    a->leaves = calloc((size_t)a->count, sizeof *a->leaves);
    if (!a->leaves)
        return fs_fail(err, "activation cache: out of memory");
    int i = 0;
    for (int w = 0; w < L_TOP_BEFORE_BLOCKS_COUNT; w++, i++) {
        set_path(&a->leaves[i], &top_before[w], -1);
        top_before_shape(&a->leaves[i], w, cfg, P, N);
    }
    for (int layer = 0; layer < cfg->depth; layer++)
        for (int w = 0; w < B_COUNT; w++, i++) {
            set_path(&a->leaves[i], &block_names[w], layer);
            block_shape(&a->leaves[i], w, cfg, N);
        }
    for (int w = 0; w < L_TOP_AFTER_BLOCKS_COUNT; w++, i++) {
        set_path(&a->leaves[i], &top_after[w], -1);
        top_after_shape(&a->leaves[i], w, cfg, P, N);
    }
    size_t offset = 0, limit = SIZE_MAX / sizeof(float) / 2, block;
    for (i = 0; i < a->count; i++) {
        a->leaves[i].offset = offset;
        /* keep every leaf 64-byte aligned: pad each [B][numel] block to 16 floats */
        if (offset > limit - 16 || fs_size_mul(&block, limit - offset - 16, FS_DIMS((size_t)B, a->leaves[i].numel))) {
            fs_acts_free(a);
            return fs_fail(err, "activation cache: %d sequences of %d pairs overflow the address space", B, P);
        }
        offset += (block + 15) & ~(size_t)15;
    }
    a->arena_floats = offset;
    a->arena = fs_alloc(offset * sizeof(float) + 64);
    if (!a->arena) {
        char what[120];
        snprintf(what, sizeof what, "activation cache (%d sequences of %d pairs)", B, P);
        fs_acts_free(a);
        return fs_fail_alloc(err, what, offset * sizeof(float) + 64);
    }
    return 0;
}

void fs_acts_free(fs_acts *a)
{
    free(a->leaves);
    free(a->arena);
    memset(a, 0, sizeof *a);
}

int fs_leaf_find(const fs_acts *a, const char *path)
{
    for (int i = 0; i < a->count; i++)
        if (!a->leaves[i].hidden && strcmp(a->leaves[i].path, path) == 0)
            return i;
    return -1;
}

/* ---- a pass's views of the table (model/leaves.h) ---- */

/* One field per leaf, in the table's order (tests/test_shapes.c walks them so). */
_Static_assert(sizeof(fs_embed_acts) == L_TOP_BEFORE_BLOCKS_COUNT * sizeof(fs_leaf_at), "a view per leaf");
_Static_assert(sizeof(fs_block_acts) == B_COUNT * sizeof(fs_leaf_at), "a view per block leaf");
_Static_assert(sizeof(fs_head_acts) == L_TOP_AFTER_BLOCKS_COUNT * sizeof(fs_leaf_at), "a view per leaf");

void fs_embed_acts_at(fs_embed_acts *e, const fs_acts *a, int b0)
{
    *e = (fs_embed_acts){
        .examples = fs_leaf_from(a, L_EXAMPLES, b0),
        .labels = fs_leaf_from(a, L_LABELS, b0),
        .example_embedding = fs_leaf_from(a, L_EXAMPLE_EMBEDDING, b0),
        .onehot_labels = fs_leaf_from(a, L_ONEHOT_LABELS, b0),
        .label_embedding = fs_leaf_from(a, L_LABEL_EMBEDDING, b0),
        .tok_embedding = fs_leaf_from(a, L_TOK_EMBEDDING, b0),
        .pos_embedding = fs_leaf_from(a, L_POS_EMBEDDING, b0),
        .embedding = fs_leaf_from(a, L_EMBEDDING, b0),
        .x = fs_leaf_from(a, L_TRANSFORMER_X, b0),
    };
}

void fs_block_acts_at(fs_block_acts *k, const fs_acts *a, int layer, int b0)
{
#define AT(which) fs_leaf_from(a, fs_block_leaf_id(layer, (which)), b0)
    *k = (fs_block_acts){
        .x = AT(B_X),
        .norm_inp = AT(B_NORM_INP),
        .ln1_mean = AT(B_LN1_MEAN),
        .ln1_rstd = AT(B_LN1_RSTD),
        .attn_x = AT(B_ATTN_X),
        .qkv_raw = AT(B_QKV_RAW),
        .qkv = AT(B_QKV),
        .pre_rope_q = AT(B_PRE_ROPE_Q),
        .pre_rope_k = AT(B_PRE_ROPE_K),
        .v = AT(B_V),
        .q = AT(B_Q),
        .k = AT(B_K),
        .attn_pre_softmax = AT(B_ATTN_PRE_SOFTMAX),
        .attn_scores = AT(B_ATTN_SCORES),
        .attn_post_drop = AT(B_ATTN_POST_DROP),
        .values_pre_proj = AT(B_VALUES_PRE_PROJ),
        .values_post_proj = AT(B_VALUES_POST_PROJ),
        .attn_out = AT(B_ATTN_OUT),
        .residual_post_attn = AT(B_RESIDUAL_POST_ATTN),
        .norm_residual_post_attn = AT(B_NORM_RESIDUAL_POST_ATTN),
        .ln2_mean = AT(B_LN2_MEAN),
        .ln2_rstd = AT(B_LN2_RSTD),
        .mlp_fc1 = AT(B_MLP_FC1),
        .mlp_gelu = AT(B_MLP_GELU),
        .mlp = AT(B_MLP),
        .out = AT(B_OUT),
    };
#undef AT
}

void fs_head_acts_at(fs_head_acts *h, const fs_acts *a, int b0)
{
    const fs_model_config *c = &a->cfg;
    *h = (fs_head_acts){
        .pre_unembed = fs_leaf_from(a, fs_top_after(c, L_PRE_UNEMBED), b0),
        .final_mean = fs_leaf_from(a, fs_top_after(c, L_FINAL_MEAN), b0),
        .final_rstd = fs_leaf_from(a, fs_top_after(c, L_FINAL_RSTD), b0),
        .transformer_out = fs_leaf_from(a, fs_top_after(c, L_TRANSFORMER_OUT), b0),
        .unembedding = fs_leaf_from(a, fs_top_after(c, L_UNEMBEDDING), b0),
        .out = fs_leaf_from(a, fs_top_after(c, L_OUT), b0),
    };
}
