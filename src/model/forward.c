/* The forward pass (docs/model.md) over the arena: every layer runs on all tokens of
 * the sequences [b0, b1) at once (their rows are contiguous in each leaf), and after
 * each leaf is computed its clamp is applied (docs/cache.md). Matrix products use the
 * packed (transposed) weights when given, else the dot-product kernel. */
#include "fewshot/forward.h"
#include "model/leaves.h"
#include "model/packed.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels.h"
#include "model/position.h"

typedef struct {
    const fs_model *m;
    const fs_packed *pk; /* may be NULL */
    fs_acts *a;
    const fs_clamp_set *clamps;
    int b0, b1;
    const float *rope; /* fs_rope_table for N tokens, or NULL */
} fwd;

#define LEAF(id) fs_leaf_ptr(f->a, (id), f->b0)
#define BLK(layer, which) fs_leaf_ptr(f->a, fs_block_leaf_id((layer), (which)), f->b0)
#define CLAMP(id) fs_clamp_apply(f->clamps, f->a, (id), f->b0, f->b1)

static bool clamped(const fs_clamp_set *c, int leaf) { return c && c->leaf && c->leaf[leaf].mask; }

static void copy_leaf(const fwd *f, int dst, int src)
{
    memcpy(LEAF(dst), LEAF(src), sizeof(float) * f->a->leaves[dst].numel * (size_t)(f->b1 - f->b0));
}

/* out = in @ w^T + bias: packed kernel when the transposed weights are there and the
 * output spans at least one vector, else dot products on w. */
static void linear(float *out, const float *in, const float *w, const float *wt, const float *bias, int M, int K,
                   int N)
{
    if (wt && N >= 16)
        fs_matmul_forward_packed(out, in, wt, bias, M, K, N);
    else
        fs_matmul_forward(out, in, w, bias, M, K, N);
}

/* LayerNorm, or the identity under no_norm. */
static void norm_forward(const fs_model *m, float *out, float *mean, float *rstd, const float *in, const float *w,
                         const float *b, int rows)
{
    int d = m->cfg.d_model;
    if (m->cfg.no_norm)
        memcpy(out, in, sizeof(float) * (size_t)rows * d);
    else
        fs_layernorm_forward(out, mean, rstd, in, w, b, rows, d);
}

static void embed_forward(const fwd *f)
{
    const fs_model *m = f->m;
    const fs_model_config *c = &m->cfg;
    fs_acts *a = f->a;
    int P = a->P, N = a->N, d = c->d_model, C = c->num_classes, nb = f->b1 - f->b0;

    linear(LEAF(L_EXAMPLE_EMBEDDING), LEAF(L_EXAMPLES), m->p.example_w, f->pk ? f->pk->example_wt : NULL,
           m->p.example_b, nb * P, c->input_dim, d);
    CLAMP(L_EXAMPLE_EMBEDDING);

    /* one_hot: a label outside [0, C) gives an all-zero row (docs/sampling.md) */
    float *onehot = LEAF(L_ONEHOT_LABELS);
    const float *labels = LEAF(L_LABELS);
    memset(onehot, 0, sizeof(float) * (size_t)nb * P * C);
    for (int i = 0; i < nb * P; i++) {
        int y = (int)labels[i];
        if (y >= 0 && y < C)
            onehot[(size_t)i * C + y] = 1.f;
    }
    CLAMP(L_ONEHOT_LABELS);
    linear(LEAF(L_LABEL_EMBEDDING), onehot, m->p.label_w, f->pk ? f->pk->label_wt : NULL, NULL, nb * P, C, d);
    CLAMP(L_LABEL_EMBEDDING);

    /* tokens e1 l1 e2 l2 ... eP: examples at even positions, labels (but the query's) at odd */
    for (int b = f->b0; b < f->b1; b++) {
        float *tok = fs_leaf_ptr(a, L_TOK_EMBEDDING, b);
        const float *ex = fs_leaf_ptr(a, L_EXAMPLE_EMBEDDING, b), *lab = fs_leaf_ptr(a, L_LABEL_EMBEDDING, b);
        for (int p = 0; p < P; p++) {
            memcpy(tok + (size_t)(2 * p) * d, ex + (size_t)p * d, sizeof(float) * d);
            if (p + 1 < P)
                memcpy(tok + (size_t)(2 * p + 1) * d, lab + (size_t)p * d, sizeof(float) * d);
        }
    }
    CLAMP(L_TOK_EMBEDDING);

    if (c->pos_embedding == FS_POS_ROPE) {
        copy_leaf(f, L_EMBEDDING, L_TOK_EMBEDDING);
    } else {
        for (int b = f->b0; b < f->b1; b++)
            fs_position_embedding(m, 0, N, fs_leaf_ptr(a, L_POS_EMBEDDING, b));
        CLAMP(L_POS_EMBEDDING);
        float *emb = LEAF(L_EMBEDDING);
        const float *tok = LEAF(L_TOK_EMBEDDING), *pos = LEAF(L_POS_EMBEDDING);
        for (size_t i = 0; i < (size_t)nb * N * d; i++)
            emb[i] = tok[i] + pos[i];
    }
    CLAMP(L_EMBEDDING);
}

/* qkv_raw [N, 3d] (row n = [q | k | v], heads inside) -> qkv [3, H, N, hd] */
static void split_heads(float *qkv, const float *raw, int N, int H, int hd)
{
    int d = H * hd;
    for (int s = 0; s < 3; s++)
        for (int h = 0; h < H; h++)
            for (int n = 0; n < N; n++) {
                float *dst = qkv + (((size_t)s * H + h) * N + n) * hd;
                const float *src = raw + (size_t)n * 3 * d + s * d + h * hd;
                for (int t = 0; t < hd; t++)
                    dst[t] = src[t];
            }
}

static void attention_forward(const fwd *f, int layer)
{
    const fs_model *m = f->m;
    const fs_model_config *c = &m->cfg;
    const fs_block_params *bp = &m->p.blocks[layer];
    fs_acts *a = f->a;
    int N = a->N, d = c->d_model, H = c->num_heads, hd = d / H, nb = f->b1 - f->b0;
    float scale = 1.0f / sqrtf((float)hd);
    int id_x = fs_block_leaf_id(layer, B_ATTN_X);

    copy_leaf(f, id_x, fs_block_leaf_id(layer, B_NORM_INP));
    CLAMP(id_x);
    linear(BLK(layer, B_QKV_RAW), BLK(layer, B_ATTN_X), bp->qkv_w, f->pk ? f->pk->qkv_wt[layer] : NULL, bp->qkv_b,
           nb * N, d, 3 * d);
    for (int b = f->b0; b < f->b1; b++)
        split_heads(fs_leaf_ptr(a, fs_block_leaf_id(layer, B_QKV), b),
                    fs_leaf_ptr(a, fs_block_leaf_id(layer, B_QKV_RAW), b), N, H, hd);
    CLAMP(fs_block_leaf_id(layer, B_QKV));

    size_t head_block = (size_t)H * N * hd;
    static const int parts[3] = {B_PRE_ROPE_Q, B_PRE_ROPE_K, B_V};
    for (int s = 0; s < 3; s++) {
        int id = fs_block_leaf_id(layer, parts[s]);
        for (int b = f->b0; b < f->b1; b++)
            memcpy(fs_leaf_ptr(a, id, b), fs_leaf_ptr(a, fs_block_leaf_id(layer, B_QKV), b) + s * head_block,
                   sizeof(float) * head_block);
        CLAMP(id);
    }
    static const int rotated[2][2] = {{B_PRE_ROPE_Q, B_Q}, {B_PRE_ROPE_K, B_K}};
    for (int r = 0; r < 2; r++) {
        int src = fs_block_leaf_id(layer, rotated[r][0]), dst = fs_block_leaf_id(layer, rotated[r][1]);
        if (c->pos_embedding != FS_POS_ROPE)
            copy_leaf(f, dst, src);
        else if (f->rope)
            fs_rope_forward_table(LEAF(dst), LEAF(src), nb * H, N, hd, f->rope);
        else
            for (int b = f->b0; b < f->b1; b++)
                fs_rope_forward(fs_leaf_ptr(a, dst, b), fs_leaf_ptr(a, src, b), H, N, hd, c->rope_base);
        CLAMP(dst);
    }

    /* scores: (q k^T) * hd^-0.5, key > query masked to exactly -1e20; the softmax in the
     * same pass unless the pre-softmax leaf is clamped */
    int id_pre = fs_block_leaf_id(layer, B_ATTN_PRE_SOFTMAX), id_scores = fs_block_leaf_id(layer, B_ATTN_SCORES);
    bool fused = !clamped(f->clamps, id_pre);
    for (int b = f->b0; b < f->b1; b++)
        fs_attn_scores(fs_leaf_ptr(a, id_pre, b), fused ? fs_leaf_ptr(a, id_scores, b) : NULL,
                       fs_leaf_ptr(a, fs_block_leaf_id(layer, B_Q), b), fs_leaf_ptr(a, fs_block_leaf_id(layer, B_K), b),
                       H, N, hd, scale);
    CLAMP(id_pre);
    if (!fused)
        fs_softmax_forward(LEAF(id_scores), LEAF(id_pre), nb * H * N, N);
    CLAMP(id_scores);
    int id_drop = fs_block_leaf_id(layer, B_ATTN_POST_DROP);
    copy_leaf(f, id_drop, id_scores);
    CLAMP(id_drop);

    /* values_pre_proj[n, h*hd + t] = sum_j attn[h, n, j] v[h, j, t] (heads concatenated) */
    int id_vpre = fs_block_leaf_id(layer, B_VALUES_PRE_PROJ);
    for (int b = f->b0; b < f->b1; b++)
        fs_attn_values(fs_leaf_ptr(a, id_vpre, b), fs_leaf_ptr(a, id_drop, b),
                       fs_leaf_ptr(a, fs_block_leaf_id(layer, B_V), b), H, N, hd);
    CLAMP(id_vpre);
    int id_vpost = fs_block_leaf_id(layer, B_VALUES_POST_PROJ);
    linear(LEAF(id_vpost), LEAF(id_vpre), bp->proj_w, f->pk ? f->pk->proj_wt[layer] : NULL, NULL, nb * N, d, d);
    CLAMP(id_vpost);
    int id_out = fs_block_leaf_id(layer, B_ATTN_OUT);
    copy_leaf(f, id_out, id_vpost);
    CLAMP(id_out);
}

static void add_rows(float *out, const float *x, const float *y, size_t n)
{
    for (size_t i = 0; i < n; i++)
        out[i] = x[i] + y[i];
}

static void block_forward(const fwd *f, int layer)
{
    const fs_model *m = f->m;
    const fs_model_config *c = &m->cfg;
    const fs_block_params *bp = &m->p.blocks[layer];
    int N = f->a->N, d = c->d_model, F = fs_mlp_hidden(c), nb = f->b1 - f->b0, rows = nb * N;
    size_t n = (size_t)rows * d;

    int id_x = fs_block_leaf_id(layer, B_X);
    copy_leaf(f, id_x, layer == 0 ? L_TRANSFORMER_X : fs_block_leaf_id(layer - 1, B_OUT));
    CLAMP(id_x);
    norm_forward(m, BLK(layer, B_NORM_INP), BLK(layer, B_LN1_MEAN), BLK(layer, B_LN1_RSTD), BLK(layer, B_X),
                 bp->norm1_w, bp->norm1_b, rows);
    CLAMP(fs_block_leaf_id(layer, B_NORM_INP));

    attention_forward(f, layer);

    float *rpa = BLK(layer, B_RESIDUAL_POST_ATTN);
    add_rows(rpa, BLK(layer, B_X), BLK(layer, B_ATTN_OUT), n);
    CLAMP(fs_block_leaf_id(layer, B_RESIDUAL_POST_ATTN));

    int id_nrpa = fs_block_leaf_id(layer, B_NORM_RESIDUAL_POST_ATTN), id_mlp = fs_block_leaf_id(layer, B_MLP);
    int id_out = fs_block_leaf_id(layer, B_OUT);
    if (F > 0) {
        norm_forward(m, LEAF(id_nrpa), BLK(layer, B_LN2_MEAN), BLK(layer, B_LN2_RSTD), rpa, bp->norm2_w,
                     bp->norm2_b, rows);
        CLAMP(id_nrpa);
        linear(BLK(layer, B_MLP_FC1), LEAF(id_nrpa), bp->fc1_w, f->pk ? f->pk->fc1_wt[layer] : NULL, bp->fc1_b, rows, d,
               F);
        fs_gelu_forward(BLK(layer, B_MLP_GELU), BLK(layer, B_MLP_FC1), (size_t)rows * F);
        linear(LEAF(id_mlp), BLK(layer, B_MLP_GELU), bp->fc2_w, f->pk ? f->pk->fc2_wt[layer] : NULL, bp->fc2_b, rows,
               F, d);
        CLAMP(id_mlp);
        add_rows(LEAF(id_out), rpa, LEAF(id_mlp), n);
    } else {
        /* attention-only: norm2 and mlp are identities and the block adds zeros */
        copy_leaf(f, id_nrpa, fs_block_leaf_id(layer, B_RESIDUAL_POST_ATTN));
        CLAMP(id_nrpa);
        copy_leaf(f, id_mlp, id_nrpa);
        CLAMP(id_mlp);
        copy_leaf(f, id_out, fs_block_leaf_id(layer, B_RESIDUAL_POST_ATTN));
    }
    CLAMP(id_out);
}

/* Space for the RoPE table of sequences up to this many tokens x head_dim on the stack. */
enum { ROPE_TABLE_MAX = 4096 };

void fs_forward_range_packed(const fs_model *m, const fs_packed *pk, fs_acts *a, const fs_clamp_set *clamps, int b0,
                             int b1)
{
    const fs_model_config *c = &m->cfg;
    int P = a->P, N = a->N, C = c->num_classes, nb = b1 - b0, hd = c->d_model / c->num_heads;
    if (nb <= 0)
        return;
    float rope[2 * ROPE_TABLE_MAX];
    bool table = c->pos_embedding == FS_POS_ROPE && hd % 2 == 0 && (size_t)N * hd <= ROPE_TABLE_MAX;
    if (table)
        fs_rope_table(rope, N, hd, c->rope_base);
    fwd ctx = {m, pk, a, clamps, b0, b1, table ? rope : NULL}, *f = &ctx;

    CLAMP(L_EXAMPLES);
    CLAMP(L_LABELS);
    embed_forward(f);
    copy_leaf(f, L_TRANSFORMER_X, L_EMBEDDING);
    CLAMP(L_TRANSFORMER_X);
    for (int layer = 0; layer < c->depth; layer++)
        block_forward(f, layer);

    int id_pre = fs_top_after(c, L_PRE_UNEMBED), id_tout = fs_top_after(c, L_TRANSFORMER_OUT);
    norm_forward(m, LEAF(id_pre), LEAF(fs_top_after(c, L_FINAL_MEAN)), LEAF(fs_top_after(c, L_FINAL_RSTD)),
                 BLK(c->depth - 1, B_OUT), m->p.norm_w, m->p.norm_b, nb * N);
    CLAMP(id_pre);
    copy_leaf(f, id_tout, id_pre);
    CLAMP(id_tout);
    int id_unemb = fs_top_after(c, L_UNEMBEDDING), id_out = fs_top_after(c, L_OUT);
    fs_matmul_forward(LEAF(id_unemb), LEAF(id_tout), m->p.unembed_w, m->p.unembed_b, nb * N, c->d_model, C);
    CLAMP(id_unemb);
    /* out = unembedding[0::2]: predictions at exemplar tokens */
    for (int b = b0; b < b1; b++)
        for (int p = 0; p < P; p++)
            memcpy(fs_leaf_ptr(a, id_out, b) + (size_t)p * C, fs_leaf_ptr(a, id_unemb, b) + (size_t)(2 * p) * C,
                   sizeof(float) * C);
    CLAMP(id_out);
}

void fs_forward_range(const fs_model *m, fs_acts *a, const fs_clamp_set *clamps, int b0, int b1)
{
    fs_forward_range_packed(m, NULL, a, clamps, b0, b1);
}

/* Packing pays off once a few sequences share the weights. */
enum { PACK_MIN_SEQS = 8 };

void fs_forward_packed(const fs_model *m, fs_packed *pk, fs_acts *a, const fs_clamp_set *clamps, int nseq)
{
    if (nseq < PACK_MIN_SEQS) /* as fs_forward: the same results for the same batch */
        pk = NULL;
#pragma omp parallel
    {
        int nt = omp_get_num_threads(), t = omp_get_thread_num();
        if (pk) {
            fs_packed_update(pk, t, nt);
#pragma omp barrier
        }
        int b0 = (int)((long)nseq * t / nt), b1 = (int)((long)nseq * (t + 1) / nt);
        fs_forward_range_packed(m, pk, a, clamps, b0, b1);
    }
}

void fs_forward(const fs_model *m, fs_acts *a, const fs_clamp_set *clamps, int nseq)
{
    fs_packed pk;
    bool packed = nseq >= PACK_MIN_SEQS && fs_packed_init(&pk, m) == 0;
    fs_forward_packed(m, packed ? &pk : NULL, a, clamps, nseq);
    if (packed)
        fs_packed_free(&pk);
}

/* ---- packed weights ---- */

static void add_mat(fs_packed *pk, size_t *off, const float *src, int rows, int cols)
{
    fs_packed_mat *mt = &pk->mat[pk->count++];
    mt->src = src;
    mt->rows = rows;
    mt->cols = cols;
    mt->offset = *off;
    *off += ((size_t)rows * cols + 15) / 16 * 16; /* 64-byte aligned */
}

int fs_packed_init(fs_packed *pk, const fs_model *m)
{
    const fs_model_config *c = &m->cfg;
    int d = c->d_model, F = fs_mlp_hidden(c);
    memset(pk, 0, sizeof *pk);
    size_t off = 0;
    add_mat(pk, &off, m->p.example_w, d, c->input_dim);
    add_mat(pk, &off, m->p.label_w, d, c->num_classes);
    for (int l = 0; l < c->depth; l++) {
        const fs_block_params *bp = &m->p.blocks[l];
        add_mat(pk, &off, bp->qkv_w, 3 * d, d);
        add_mat(pk, &off, bp->proj_w, d, d);
        if (F > 0) {
            add_mat(pk, &off, bp->fc1_w, F, d);
            add_mat(pk, &off, bp->fc2_w, d, F);
        }
    }
    pk->buf = aligned_alloc(64, (off > 0 ? off : 16) * sizeof(float));
    if (!pk->buf)
        return -1;
    int k = 0;
    pk->example_wt = pk->buf + pk->mat[k++].offset;
    pk->label_wt = pk->buf + pk->mat[k++].offset;
    for (int l = 0; l < c->depth; l++) {
        pk->qkv_wt[l] = pk->buf + pk->mat[k++].offset;
        pk->proj_wt[l] = pk->buf + pk->mat[k++].offset;
        if (F > 0) {
            pk->fc1_wt[l] = pk->buf + pk->mat[k++].offset;
            pk->fc2_wt[l] = pk->buf + pk->mat[k++].offset;
        }
    }
    return 0;
}

void fs_packed_free(fs_packed *pk)
{
    free(pk->buf);
    memset(pk, 0, sizeof *pk);
}

void fs_packed_update(fs_packed *pk, int part, int nparts)
{
    /* every matrix split by source rows (multiples of 8) so the parts are even */
    for (int i = 0; i < pk->count; i++) {
        const fs_packed_mat *mt = &pk->mat[i];
        int blocks = (mt->rows + 7) / 8;
        int r0 = blocks * part / nparts * 8, r1 = blocks * (part + 1) / nparts * 8;
        if (r1 > mt->rows)
            r1 = mt->rows;
        if (r0 < r1)
            fs_transpose_rows(pk->buf + mt->offset, mt->src, mt->rows, mt->cols, r0, r1);
    }
}
