/* The forward pass (SPEC section 1), one pair of plain loops per layer over the arena.
 * After each leaf is computed its clamp is applied (SPEC section 3). */
#include "fewshot/forward.h"

#include <math.h>
#include <omp.h>
#include <string.h>

#include "fewshot/kernels.h"

#define LEAF(id) fs_leaf_ptr(a, (id), b0)
#define BLK(layer, which) fs_leaf_ptr(a, fs_block_leaf_id((layer), (which)), b0)
#define CLAMP(id) fs_clamp_apply(clamps, a, (id), b0, b1)

static void copy_leaf(fs_acts *a, int dst, int src, int b0, int b1)
{
    memcpy(fs_leaf_ptr(a, dst, b0), fs_leaf_ptr(a, src, b0), sizeof(float) * a->leaves[dst].numel * (size_t)(b1 - b0));
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

/* pos_embedding [N, d]: APE = columns of pos_embed.weight; sinusoidal per SPEC 1. */
static void position_embedding(const fs_model *m, float *pos, int N)
{
    int d = m->cfg.d_model;
    for (int p = 0; p < N; p++)
        for (int i = 0; i < d; i++) {
            if (m->cfg.pos_embedding == FS_POS_APE) {
                pos[p * d + i] = m->p.pos_w[(size_t)i * FS_APE_MAX_TOKENS + p];
            } else {
                float inv = (float)(1.0 / pow(m->cfg.rope_base, (double)(2 * (i / 2)) / d));
                float angle = (float)p * inv;
                pos[p * d + i] = (i % 2 == 0) ? sinf(angle) : cosf(angle);
            }
        }
}

static void embed_forward(const fs_model *m, fs_acts *a, const fs_clamp_set *clamps, int b0, int b1)
{
    const fs_model_config *c = &m->cfg;
    int P = a->P, N = a->N, d = c->d_model, C = c->num_classes, nb = b1 - b0;

    fs_matmul_forward(LEAF(L_EXAMPLE_EMBEDDING), LEAF(L_EXAMPLES), m->p.example_w, m->p.example_b, nb * P,
                      c->input_dim, d);
    CLAMP(L_EXAMPLE_EMBEDDING);

    /* one_hot: a label outside [0, C) gives an all-zero row (SPEC section 4) */
    float *onehot = LEAF(L_ONEHOT_LABELS);
    const float *labels = LEAF(L_LABELS);
    memset(onehot, 0, sizeof(float) * (size_t)nb * P * C);
    for (int i = 0; i < nb * P; i++) {
        int y = (int)labels[i];
        if (y >= 0 && y < C)
            onehot[(size_t)i * C + y] = 1.f;
    }
    CLAMP(L_ONEHOT_LABELS);
    fs_matmul_forward(LEAF(L_LABEL_EMBEDDING), onehot, m->p.label_w, NULL, nb * P, C, d);
    CLAMP(L_LABEL_EMBEDDING);

    /* tokens e1 l1 e2 l2 ... eP: examples at even positions, labels (but the query's) at odd */
    for (int b = b0; b < b1; b++) {
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
        copy_leaf(a, L_EMBEDDING, L_TOK_EMBEDDING, b0, b1);
    } else {
        for (int b = b0; b < b1; b++)
            position_embedding(m, fs_leaf_ptr(a, L_POS_EMBEDDING, b), N);
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
            for (int n = 0; n < N; n++)
                memcpy(qkv + (((size_t)s * H + h) * N + n) * hd, raw + (size_t)n * 3 * d + s * d + h * hd,
                       sizeof(float) * hd);
}

static void attention_forward(const fs_model *m, fs_acts *a, const fs_clamp_set *clamps, int layer, int b0, int b1)
{
    const fs_model_config *c = &m->cfg;
    const fs_block_params *bp = &m->p.blocks[layer];
    int N = a->N, d = c->d_model, H = c->num_heads, hd = d / H, nb = b1 - b0;
    float scale = 1.0f / sqrtf((float)hd);
    int id_x = fs_block_leaf_id(layer, B_ATTN_X);

    copy_leaf(a, id_x, fs_block_leaf_id(layer, B_NORM_INP), b0, b1);
    CLAMP(id_x);
    fs_matmul_forward(BLK(layer, B_QKV_RAW), BLK(layer, B_ATTN_X), bp->qkv_w, bp->qkv_b, nb * N, d, 3 * d);
    for (int b = b0; b < b1; b++)
        split_heads(fs_leaf_ptr(a, fs_block_leaf_id(layer, B_QKV), b),
                    fs_leaf_ptr(a, fs_block_leaf_id(layer, B_QKV_RAW), b), N, H, hd);
    CLAMP(fs_block_leaf_id(layer, B_QKV));

    size_t head_block = (size_t)H * N * hd;
    static const int parts[3] = {B_PRE_ROPE_Q, B_PRE_ROPE_K, B_V};
    for (int s = 0; s < 3; s++) {
        int id = fs_block_leaf_id(layer, parts[s]);
        for (int b = b0; b < b1; b++)
            memcpy(fs_leaf_ptr(a, id, b), fs_leaf_ptr(a, fs_block_leaf_id(layer, B_QKV), b) + s * head_block,
                   sizeof(float) * head_block);
        CLAMP(id);
    }
    static const int rotated[2][2] = {{B_PRE_ROPE_Q, B_Q}, {B_PRE_ROPE_K, B_K}};
    for (int r = 0; r < 2; r++) {
        int src = fs_block_leaf_id(layer, rotated[r][0]), dst = fs_block_leaf_id(layer, rotated[r][1]);
        if (c->pos_embedding == FS_POS_ROPE)
            for (int b = b0; b < b1; b++)
                fs_rope_forward(fs_leaf_ptr(a, dst, b), fs_leaf_ptr(a, src, b), H, N, hd, c->rope_base);
        else
            copy_leaf(a, dst, src, b0, b1);
        CLAMP(dst);
    }

    /* scores: (q k^T) * hd^-0.5, key > query masked to exactly -1e20 */
    int id_pre = fs_block_leaf_id(layer, B_ATTN_PRE_SOFTMAX);
    for (int b = b0; b < b1; b++) {
        const float *q = fs_leaf_ptr(a, fs_block_leaf_id(layer, B_Q), b);
        const float *k = fs_leaf_ptr(a, fs_block_leaf_id(layer, B_K), b);
        float *pre = fs_leaf_ptr(a, id_pre, b);
        for (int h = 0; h < H; h++)
            for (int i = 0; i < N; i++)
                for (int j = 0; j < N; j++) {
                    float s = 0.f;
                    if (j <= i) {
                        const float *qi = q + ((size_t)h * N + i) * hd, *kj = k + ((size_t)h * N + j) * hd;
                        for (int t = 0; t < hd; t++)
                            s += qi[t] * kj[t];
                        s *= scale;
                    } else {
                        s = -1e20f;
                    }
                    pre[((size_t)h * N + i) * N + j] = s;
                }
    }
    CLAMP(id_pre);
    int id_scores = fs_block_leaf_id(layer, B_ATTN_SCORES);
    fs_softmax_forward(LEAF(id_scores), LEAF(id_pre), nb * H * N, N);
    CLAMP(id_scores);
    int id_drop = fs_block_leaf_id(layer, B_ATTN_POST_DROP);
    copy_leaf(a, id_drop, id_scores, b0, b1);
    CLAMP(id_drop);

    /* values_pre_proj[n, h*hd + t] = sum_j attn[h, n, j] v[h, j, t] (heads concatenated) */
    int id_vpre = fs_block_leaf_id(layer, B_VALUES_PRE_PROJ);
    for (int b = b0; b < b1; b++) {
        const float *att = fs_leaf_ptr(a, id_drop, b), *v = fs_leaf_ptr(a, fs_block_leaf_id(layer, B_V), b);
        float *out = fs_leaf_ptr(a, id_vpre, b);
        memset(out, 0, sizeof(float) * (size_t)N * d);
        for (int h = 0; h < H; h++)
            for (int i = 0; i < N; i++) {
                float *o = out + (size_t)i * d + h * hd;
                for (int j = 0; j < N; j++) {
                    float w = att[((size_t)h * N + i) * N + j];
                    const float *vj = v + ((size_t)h * N + j) * hd;
                    for (int t = 0; t < hd; t++)
                        o[t] += w * vj[t];
                }
            }
    }
    CLAMP(id_vpre);
    int id_vpost = fs_block_leaf_id(layer, B_VALUES_POST_PROJ);
    fs_matmul_forward(LEAF(id_vpost), LEAF(id_vpre), bp->proj_w, NULL, nb * N, d, d);
    CLAMP(id_vpost);
    int id_out = fs_block_leaf_id(layer, B_ATTN_OUT);
    copy_leaf(a, id_out, id_vpost, b0, b1);
    CLAMP(id_out);
}

static void block_forward(const fs_model *m, fs_acts *a, const fs_clamp_set *clamps, int layer, int b0, int b1)
{
    const fs_model_config *c = &m->cfg;
    const fs_block_params *bp = &m->p.blocks[layer];
    int N = a->N, d = c->d_model, F = fs_mlp_hidden(c), nb = b1 - b0, rows = nb * N;
    size_t n = (size_t)rows * d;

    int id_x = fs_block_leaf_id(layer, B_X);
    copy_leaf(a, id_x, layer == 0 ? L_TRANSFORMER_X : fs_block_leaf_id(layer - 1, B_OUT), b0, b1);
    CLAMP(id_x);
    norm_forward(m, BLK(layer, B_NORM_INP), BLK(layer, B_LN1_MEAN), BLK(layer, B_LN1_RSTD), BLK(layer, B_X),
                 bp->norm1_w, bp->norm1_b, rows);
    CLAMP(fs_block_leaf_id(layer, B_NORM_INP));

    attention_forward(m, a, clamps, layer, b0, b1);

    float *rpa = BLK(layer, B_RESIDUAL_POST_ATTN);
    const float *x = BLK(layer, B_X), *attn_out = BLK(layer, B_ATTN_OUT);
    for (size_t i = 0; i < n; i++)
        rpa[i] = x[i] + attn_out[i];
    CLAMP(fs_block_leaf_id(layer, B_RESIDUAL_POST_ATTN));

    int id_nrpa = fs_block_leaf_id(layer, B_NORM_RESIDUAL_POST_ATTN), id_mlp = fs_block_leaf_id(layer, B_MLP);
    int id_out = fs_block_leaf_id(layer, B_OUT);
    if (F > 0) {
        norm_forward(m, LEAF(id_nrpa), BLK(layer, B_LN2_MEAN), BLK(layer, B_LN2_RSTD), rpa, bp->norm2_w,
                     bp->norm2_b, rows);
        CLAMP(id_nrpa);
        fs_matmul_forward(BLK(layer, B_MLP_FC1), LEAF(id_nrpa), bp->fc1_w, bp->fc1_b, rows, d, F);
        fs_gelu_forward(BLK(layer, B_MLP_GELU), BLK(layer, B_MLP_FC1), (size_t)rows * F);
        fs_matmul_forward(LEAF(id_mlp), BLK(layer, B_MLP_GELU), bp->fc2_w, bp->fc2_b, rows, F, d);
        CLAMP(id_mlp);
        float *out = LEAF(id_out);
        const float *rpa_c = BLK(layer, B_RESIDUAL_POST_ATTN), *mlp = LEAF(id_mlp);
        for (size_t i = 0; i < n; i++)
            out[i] = rpa_c[i] + mlp[i];
    } else {
        /* attention-only: norm2 and mlp are identities and the block adds zeros */
        copy_leaf(a, id_nrpa, fs_block_leaf_id(layer, B_RESIDUAL_POST_ATTN), b0, b1);
        CLAMP(id_nrpa);
        copy_leaf(a, id_mlp, id_nrpa, b0, b1);
        CLAMP(id_mlp);
        copy_leaf(a, id_out, fs_block_leaf_id(layer, B_RESIDUAL_POST_ATTN), b0, b1);
    }
    CLAMP(id_out);
}

void fs_forward_range(const fs_model *m, fs_acts *a, const fs_clamp_set *clamps, int b0, int b1)
{
    const fs_model_config *c = &m->cfg;
    int P = a->P, N = a->N, C = c->num_classes, nb = b1 - b0;
    if (nb <= 0)
        return;
    CLAMP(L_EXAMPLES);
    CLAMP(L_LABELS);
    embed_forward(m, a, clamps, b0, b1);
    copy_leaf(a, L_TRANSFORMER_X, L_EMBEDDING, b0, b1);
    CLAMP(L_TRANSFORMER_X);
    for (int layer = 0; layer < c->depth; layer++)
        block_forward(m, a, clamps, layer, b0, b1);

    int id_pre = fs_top_after(c, L_PRE_UNEMBED), id_tout = fs_top_after(c, L_TRANSFORMER_OUT);
    norm_forward(m, LEAF(id_pre), LEAF(fs_top_after(c, L_FINAL_MEAN)), LEAF(fs_top_after(c, L_FINAL_RSTD)),
                 BLK(c->depth - 1, B_OUT), m->p.norm_w, m->p.norm_b, nb * N);
    CLAMP(id_pre);
    copy_leaf(a, id_tout, id_pre, b0, b1);
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

void fs_forward(const fs_model *m, fs_acts *a, const fs_clamp_set *clamps, int nseq)
{
#pragma omp parallel
    {
        int nt = omp_get_num_threads(), t = omp_get_thread_num();
        int b0 = (int)((long)nseq * t / nt), b1 = (int)((long)nseq * (t + 1) / nt);
        fs_forward_range(m, a, clamps, b0, b1);
    }
}
