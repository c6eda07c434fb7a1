/* The forward pass (docs/model.md) over the arena: every layer runs on all tokens of
 * the sequences [b0, b1) at once (their rows are contiguous in each leaf), and after
 * each leaf is computed its clamp is applied (docs/cache.md). Each layer's leaves are
 * resolved once from the table (model/leaves.h), then the layer functions do plain
 * pointer arithmetic. Matrix products use the blocked matrix kernel, which transposes
 * panels of the weights as it reads them, or (for a few sequences, and in
 * fs_forward_range) the dot-product kernel. */
#include "fewshot/forward.h"
#include "model/leaves.h"
#include "model/forward_gemm.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels.h"
#include "model/position.h"

typedef struct {
    const fs_model *m;
    bool gemm; /* the blocked matrix kernel, else dot products */
    fs_acts *a;
    const fs_clamp_set *clamps;
    int b0, b1, nb;
    const float *rope; /* fs_rope_table for N tokens, or NULL */
    float *gelu_grad;  /* fs_forward_range_gemm's buffer of GELU derivatives, or NULL */
} fwd;

static void clamp(const fwd *f, const fs_leaf_at *l) { fs_clamp_apply(f->clamps, f->a, l->id, f->b0, f->b1); }

static bool clamped(const fwd *f, const fs_leaf_at *l)
{
    return f->clamps && f->clamps->leaf && f->clamps->leaf[l->id].mask;
}

static void copy_leaf(const fwd *f, const fs_leaf_at *dst, const fs_leaf_at *src)
{
    memcpy(dst->p, src->p, sizeof(float) * dst->numel * (size_t)f->nb);
}

/* out = in @ w^T + bias: the matrix kernel when asked for and the output spans at
 * least one vector, else dot products. */
static void linear(const fwd *f, float *out, const float *in, const float *w, const float *bias, int M, int K, int N)
{
    if (f->gemm && N >= 16)
        fs_matmul_forward_gemm(out, in, w, bias, M, K, N);
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

static void embed_forward(const fwd *f, const fs_embed_acts *e)
{
    const fs_model *m = f->m;
    const fs_model_config *c = &m->cfg;
    int P = f->a->P, N = f->a->N, d = c->d_model, C = c->num_classes, nb = f->nb;

    linear(f, e->example_embedding.p, e->examples.p, m->p.example_w, m->p.example_b, nb * P, c->input_dim, d);
    clamp(f, &e->example_embedding);

    /* one_hot: a label outside [0, C) gives an all-zero row (docs/sampling.md) */
    float *onehot = e->onehot_labels.p;
    const float *labels = e->labels.p;
    memset(onehot, 0, sizeof(float) * (size_t)nb * P * C);
    for (int i = 0; i < nb * P; i++) {
        int y = (int)labels[i];
        if (y >= 0 && y < C)
            onehot[(size_t)i * C + y] = 1.f;
    }
    clamp(f, &e->onehot_labels);
    linear(f, e->label_embedding.p, onehot, m->p.label_w, NULL, nb * P, C, d);
    clamp(f, &e->label_embedding);

    /* tokens e1 l1 e2 l2 ... eP: examples at even positions, labels (but the query's) at odd */
    for (int b = 0; b < nb; b++) {
        float *tok = fs_leaf_seq(&e->tok_embedding, b);
        const float *ex = fs_leaf_seq(&e->example_embedding, b), *lab = fs_leaf_seq(&e->label_embedding, b);
        for (int p = 0; p < P; p++) {
            memcpy(tok + (size_t)(2 * p) * d, ex + (size_t)p * d, sizeof(float) * d);
            if (p + 1 < P)
                memcpy(tok + (size_t)(2 * p + 1) * d, lab + (size_t)p * d, sizeof(float) * d);
        }
    }
    clamp(f, &e->tok_embedding);

    if (c->pos_embedding == FS_POS_ROPE) {
        copy_leaf(f, &e->embedding, &e->tok_embedding);
    } else {
        for (int b = 0; b < nb; b++)
            fs_position_embedding(m, 0, N, fs_leaf_seq(&e->pos_embedding, b));
        clamp(f, &e->pos_embedding);
        float *emb = e->embedding.p;
        const float *tok = e->tok_embedding.p, *pos = e->pos_embedding.p;
        for (size_t i = 0; i < (size_t)nb * N * d; i++)
            emb[i] = tok[i] + pos[i];
    }
    clamp(f, &e->embedding);
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

static void attention_forward(const fwd *f, int layer, const fs_block_acts *L)
{
    const fs_model *m = f->m;
    const fs_model_config *c = &m->cfg;
    const fs_block_params *bp = &m->p.blocks[layer];
    int N = f->a->N, d = c->d_model, H = c->num_heads, hd = d / H, nb = f->nb;
    float scale = 1.0f / sqrtf((float)hd);

    copy_leaf(f, &L->attn_x, &L->norm_inp);
    clamp(f, &L->attn_x);
    linear(f, L->qkv_raw.p, L->attn_x.p, bp->qkv_w, bp->qkv_b, nb * N, d, 3 * d);
    for (int b = 0; b < nb; b++)
        split_heads(fs_leaf_seq(&L->qkv, b), fs_leaf_seq(&L->qkv_raw, b), N, H, hd);
    clamp(f, &L->qkv);

    size_t head_block = (size_t)H * N * hd;
    const fs_leaf_at *parts[3] = {&L->pre_rope_q, &L->pre_rope_k, &L->v};
    for (int s = 0; s < 3; s++) {
        for (int b = 0; b < nb; b++)
            memcpy(fs_leaf_seq(parts[s], b), fs_leaf_seq(&L->qkv, b) + s * head_block, sizeof(float) * head_block);
        clamp(f, parts[s]);
    }
    const fs_leaf_at *rotated[2][2] = {{&L->pre_rope_q, &L->q}, {&L->pre_rope_k, &L->k}};
    for (int r = 0; r < 2; r++) {
        const fs_leaf_at *src = rotated[r][0], *dst = rotated[r][1];
        if (c->pos_embedding != FS_POS_ROPE)
            copy_leaf(f, dst, src);
        else if (f->rope)
            fs_rope_forward_table(dst->p, src->p, nb * H, N, hd, f->rope);
        else
            for (int b = 0; b < nb; b++)
                fs_rope_forward(fs_leaf_seq(dst, b), fs_leaf_seq(src, b), H, N, hd, c->rope_base);
        clamp(f, dst);
    }

    /* scores: (q k^T) * hd^-0.5, key > query masked to exactly -1e20; the softmax in the
     * same pass unless the pre-softmax leaf is clamped */
    bool fused = !clamped(f, &L->attn_pre_softmax);
    for (int b = 0; b < nb; b++)
        fs_attn_scores(fs_leaf_seq(&L->attn_pre_softmax, b), fused ? fs_leaf_seq(&L->attn_scores, b) : NULL,
                       fs_leaf_seq(&L->q, b), fs_leaf_seq(&L->k, b), H, N, hd, scale);
    clamp(f, &L->attn_pre_softmax);
    if (!fused)
        fs_softmax_forward(L->attn_scores.p, L->attn_pre_softmax.p, nb * H * N, N);
    clamp(f, &L->attn_scores);
    copy_leaf(f, &L->attn_post_drop, &L->attn_scores);
    clamp(f, &L->attn_post_drop);

    /* values_pre_proj[n, h*hd + t] = sum_j attn[h, n, j] v[h, j, t] (heads concatenated) */
    for (int b = 0; b < nb; b++)
        fs_attn_values(fs_leaf_seq(&L->values_pre_proj, b), fs_leaf_seq(&L->attn_post_drop, b), fs_leaf_seq(&L->v, b),
                       H, N, hd);
    clamp(f, &L->values_pre_proj);
    linear(f, L->values_post_proj.p, L->values_pre_proj.p, bp->proj_w, NULL, nb * N, d, d);
    clamp(f, &L->values_post_proj);
    copy_leaf(f, &L->attn_out, &L->values_post_proj);
    clamp(f, &L->attn_out);
}

static void add_rows(float *out, const float *x, const float *y, size_t n)
{
    for (size_t i = 0; i < n; i++)
        out[i] = x[i] + y[i];
}

/* Block `layer` on its input `in` (transformer_output.x or the previous block's out). */
static void block_forward(const fwd *f, int layer, const fs_block_acts *L, const fs_leaf_at *in)
{
    const fs_model *m = f->m;
    const fs_model_config *c = &m->cfg;
    const fs_block_params *bp = &m->p.blocks[layer];
    int N = f->a->N, d = c->d_model, F = fs_mlp_hidden(c), rows = f->nb * N;
    size_t n = (size_t)rows * d;

    copy_leaf(f, &L->x, in);
    clamp(f, &L->x);
    norm_forward(m, L->norm_inp.p, L->ln1_mean.p, L->ln1_rstd.p, L->x.p, bp->norm1_w, bp->norm1_b, rows);
    clamp(f, &L->norm_inp);

    attention_forward(f, layer, L);

    float *rpa = L->residual_post_attn.p;
    add_rows(rpa, L->x.p, L->attn_out.p, n);
    clamp(f, &L->residual_post_attn);

    if (F > 0) {
        norm_forward(m, L->norm_residual_post_attn.p, L->ln2_mean.p, L->ln2_rstd.p, rpa, bp->norm2_w, bp->norm2_b,
                     rows);
        clamp(f, &L->norm_residual_post_attn);
        linear(f, L->mlp_fc1.p, L->norm_residual_post_attn.p, bp->fc1_w, bp->fc1_b, rows, d, F);
        if (f->gelu_grad)
            fs_gelu_forward_keep_grad(L->mlp_gelu.p, f->gelu_grad + fs_gelu_grad_offset(f->a, layer, f->b0),
                                      L->mlp_fc1.p, (size_t)rows * F);
        else
            fs_gelu_forward(L->mlp_gelu.p, L->mlp_fc1.p, (size_t)rows * F);
        linear(f, L->mlp.p, L->mlp_gelu.p, bp->fc2_w, bp->fc2_b, rows, F, d);
        clamp(f, &L->mlp);
        add_rows(L->out.p, rpa, L->mlp.p, n);
    } else {
        /* attention-only: norm2 and mlp are identities and the block adds zeros */
        copy_leaf(f, &L->norm_residual_post_attn, &L->residual_post_attn);
        clamp(f, &L->norm_residual_post_attn);
        copy_leaf(f, &L->mlp, &L->norm_residual_post_attn);
        clamp(f, &L->mlp);
        copy_leaf(f, &L->out, &L->residual_post_attn);
    }
    clamp(f, &L->out);
}

/* The final norm and the unembedding on the last block's output `in`. */
static void head_forward(const fwd *f, const fs_head_acts *h, const fs_leaf_at *in)
{
    const fs_model *m = f->m;
    const fs_model_config *c = &m->cfg;
    int P = f->a->P, N = f->a->N, C = c->num_classes, nb = f->nb;

    norm_forward(m, h->pre_unembed.p, h->final_mean.p, h->final_rstd.p, in->p, m->p.norm_w, m->p.norm_b, nb * N);
    clamp(f, &h->pre_unembed);
    copy_leaf(f, &h->transformer_out, &h->pre_unembed);
    clamp(f, &h->transformer_out);
    fs_matmul_forward(h->unembedding.p, h->transformer_out.p, m->p.unembed_w, m->p.unembed_b, nb * N, c->d_model, C);
    clamp(f, &h->unembedding);
    /* out = unembedding[0::2]: predictions at exemplar tokens */
    for (int b = 0; b < nb; b++)
        for (int p = 0; p < P; p++)
            memcpy(fs_leaf_seq(&h->out, b) + (size_t)p * C, fs_leaf_seq(&h->unembedding, b) + (size_t)(2 * p) * C,
                   sizeof(float) * C);
    clamp(f, &h->out);
}

/* Space for the RoPE table of sequences up to this many tokens x head_dim on the stack. */
enum { ROPE_TABLE_MAX = 4096 };

void fs_forward_range_gemm(const fs_model *m, fs_acts *a, const fs_clamp_set *clamps, int b0, int b1, bool gemm,
                           float *gelu_grad)
{
    const fs_model_config *c = &m->cfg;
    int N = a->N, nb = b1 - b0, hd = c->d_model / c->num_heads;
    if (nb <= 0)
        return;
    float rope[2 * ROPE_TABLE_MAX];
    bool table = c->pos_embedding == FS_POS_ROPE && hd % 2 == 0 && (size_t)N * hd <= ROPE_TABLE_MAX;
    if (table)
        fs_rope_table(rope, N, hd, c->rope_base);
    fwd f = {m, gemm, a, clamps, b0, b1, nb, table ? rope : NULL, gelu_grad};

    fs_embed_acts e;
    fs_embed_acts_at(&e, a, b0);
    clamp(&f, &e.examples);
    clamp(&f, &e.labels);
    embed_forward(&f, &e);
    copy_leaf(&f, &e.x, &e.embedding);
    clamp(&f, &e.x);
    fs_leaf_at in = e.x; /* the residual stream entering the next block */
    for (int layer = 0; layer < c->depth; layer++) {
        fs_block_acts L;
        fs_block_acts_at(&L, a, layer, b0);
        block_forward(&f, layer, &L, &in);
        in = L.out;
    }
    fs_head_acts h;
    fs_head_acts_at(&h, a, b0);
    head_forward(&f, &h, &in);
}

size_t fs_gelu_grad_offset(const fs_acts *a, int layer, int b)
{
    return ((size_t)layer * (size_t)a->B + (size_t)b) * (size_t)a->N * (size_t)fs_mlp_hidden(&a->cfg);
}

size_t fs_gelu_grad_floats(const fs_acts *a) { return fs_gelu_grad_offset(a, a->cfg.depth, 0); }

void fs_forward_range(const fs_model *m, fs_acts *a, const fs_clamp_set *clamps, int b0, int b1)
{
    fs_forward_range_gemm(m, a, clamps, b0, b1, false, NULL);
}

/* The matrix kernel pays off once a few sequences share the weights. */
enum { GEMM_MIN_SEQS = 8 };

void fs_forward(const fs_model *m, fs_acts *a, const fs_clamp_set *clamps, int nseq)
{
    bool gemm = nseq >= GEMM_MIN_SEQS;
#pragma omp parallel
    {
        int nt = omp_get_num_threads(), t = omp_get_thread_num();
        int b0 = (int)((long)nseq * t / nt), b1 = (int)((long)nseq * (t + 1) / nt);
        fs_forward_range_gemm(m, a, clamps, b0, b1, gemm, NULL);
    }
}

