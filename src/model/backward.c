/* The backward pass of the mean query cross-entropy (docs/model.md), layer by layer
 * in reverse. A leaf's gradient is complete before it flows upstream, and clamped
 * elements are zeroed there first: a clamped value is a constant (docs/cache.md).
 *
 * Gradients live in a few compact buffers (the thread's share of `grad_acts`), not one
 * per leaf: a leaf that the forward copies from another (attn_x = norm_inp, q = pre_rope_q
 * without RoPE, ...) shares its source's gradient buffer, with the stop applied in place,
 * unless a clamp on one branch of a fan-out needs a separate copy. The residual stream's
 * gradient stays in one buffer from the head down to the embedding, the LayerNorms adding
 * into it. Products write (=) their results, so nothing is zeroed first; every parameter
 * gradient is written. Each layer's leaves are resolved once from the table
 * (model/leaves.h), then the layer functions do plain pointer arithmetic. */
#include <math.h>
#include <string.h>

#include "fewshot/forward.h"
#include "model/forward_gemm.h"
#include "model/grad_links.h"
#include "model/leaves.h"
#include "kernels/kernels.h"

/* Space for the RoPE table (tokens x head_dim) on the stack. */
enum { ROPE_TABLE_MAX = 4096 };

typedef struct {
    const fs_model *m;
    const fs_acts *a;
    fs_embed_acts emb; /* the leaves before and after the blocks */
    fs_head_acts head;
    const fs_clamp_set *clamps;
    const fs_grad_links *links; /* may be NULL */
    const fs_param_ptrs *gp;
    int b0, b1, nb, rows; /* sequences [b0, b1), rows = tokens */
    const float *rope;    /* fs_rope_table for N tokens, or NULL */
    const float *gelu_grad; /* the GELU derivatives the forward kept (fs_gelu_grad_offset), or NULL */
    /* scratch buffers, [rows][d] unless noted */
    float *gx;            /* the residual stream */
    float *gy;            /* a layer input's gradient: nrpa, values_pre_proj, attn_x, pre_unembed */
    float *gcopy;         /* copies for clamped branches */
    float *gf;            /* [rows][F] the MLP hidden layer */
    float *ga1, *ga2;     /* [nb][H][N][N] attention weights */
    float *gq, *gk, *gv;  /* [nb][H][N][hd] */
    float *gqkv;          /* [nb][3][H][N][hd] (only with a clamp on qkv) */
    float *graw;          /* [rows][3d] */
    float *gsmall;        /* [nb][max(P C, N C)] and [2][nb][P][d] for the head and embedding */
    float *glabt;         /* [C][d] the label embedding's gradient, transposed */
} bwd;

static bool clamped(const bwd *w, const fs_leaf_at *leaf)
{
    return w->clamps && w->clamps->leaf && w->clamps->leaf[leaf->id].mask;
}

static const fs_leaf_link *link(const bwd *w, const fs_leaf_at *leaf)
{
    return w->links ? &w->links->leaf[leaf->id] : NULL;
}
/* A leaf whose gradient differs from its fan-out siblings': clamped or linked. */
static bool own_grad(const bwd *w, const fs_leaf_at *leaf)
{
    const fs_leaf_link *l = link(w, leaf);
    return clamped(w, leaf) || (l && (l->inject || l->capture));
}

/* Leaf's gradient g ([nb][numel]) is complete: add what later passes send back (inject),
 * hand the gradient of computed clamped elements to their computation (capture), and
 * zero the clamped elements (a clamp replaces the computed value). */
static void stop(const bwd *w, const fs_leaf_at *leaf, float *g)
{
    size_t n = leaf->numel;
    const fs_leaf_link *l = link(w, leaf);
    if (l && l->inject) {
        const float *in = l->inject + (size_t)w->b0 * n;
        for (size_t i = 0, t = (size_t)w->nb * n; i < t; i++)
            g[i] += in[i];
    }
    if (l && l->capture) {
        const uint8_t *from = l->from + (size_t)w->b0 * n;
        float *cap = l->capture + (size_t)w->b0 * n;
        for (size_t i = 0, t = (size_t)w->nb * n; i < t; i++)
            cap[i] = from[i] ? g[i] : 0.f;
    }
    if (!clamped(w, leaf))
        return;
    const fs_clamp *k = &w->clamps->leaf[leaf->id];
    for (int b = 0; b < w->nb; b++) {
        const uint8_t *mask = k->mask + (k->batch ? (size_t)(w->b0 + b) * n : 0);
        float *gb = g + (size_t)b * n;
        for (size_t i = 0; i < n; i++)
            if (mask[i])
                gb[i] = 0;
    }
}

/* The gradient of a branch `leaf` that receives g: g itself, or a copy in `spare` when
 * the leaf has its own (the stop must not reach the other branches). */
static float *branch(const bwd *w, const fs_leaf_at *leaf, float *g, float *spare, size_t n)
{
    if (!own_grad(w, leaf))
        return g;
    memcpy(spare, g, sizeof(float) * n);
    stop(w, leaf, spare);
    return spare;
}

/* LayerNorm backward (or identity under no_norm): din += ... */
static void norm_backward(const bwd *w, float *din, const float *dout, const fs_leaf_at *in,
                          const fs_leaf_at *mean, const fs_leaf_at *rstd, const float *weight, float *dweight,
                          float *dbias)
{
    int d = w->m->cfg.d_model;
    if (w->m->cfg.no_norm) {
        for (size_t i = 0, n = (size_t)w->rows * d; i < n; i++)
            din[i] += dout[i];
        return;
    }
    memset(dweight, 0, sizeof(float) * d);
    memset(dbias, 0, sizeof(float) * d);
    fs_layernorm_backward(din, dweight, dbias, dout, in->p, weight, mean->p, rstd->p, w->rows, d);
}

double fs_query_loss_range(const fs_acts *a, int b0, int b1, double denom)
{
    int P = a->P, C = a->cfg.num_classes;
    fs_leaf_at out = fs_leaf_from(a, fs_top_after(&a->cfg, L_OUT), b0), labels = fs_leaf_from(a, L_LABELS, b0);
    double total = 0;
    for (int b = 0; b < b1 - b0; b++) {
        const float *z = fs_leaf_seq(&out, b) + (size_t)(P - 1) * C;
        int y = (int)fs_leaf_seq(&labels, b)[P - 1];
        if (y < 0 || y >= C)
            continue; /* all-zero one-hot: no loss (docs/sampling.md) */
        double mx = z[0];
        for (int c = 1; c < C; c++)
            mx = z[c] > mx ? z[c] : mx;
        double s = 0;
        for (int c = 0; c < C; c++)
            s += exp((double)z[c] - mx);
        total += log(s) + mx - z[y];
    }
    return total / denom;
}

/* dL/dout: only the query row, softmax(z) - onehot(y), divided by the batch size;
 * then out = unembedding[0::2], unembedding = pre_unembed @ Wu^T + bu, the final norm
 * on the last block's output `in`. Leaves that output's gradient in w->gx. */
static void head_backward(const bwd *w, const fs_leaf_at *in, double denom)
{
    const fs_model_config *c = &w->m->cfg;
    const fs_head_acts *h = &w->head;
    int P = w->a->P, C = c->num_classes, d = c->d_model, nb = w->nb;
    float *gout = w->gsmall, *gunemb = w->gsmall + (size_t)nb * P * C;
    memset(gout, 0, sizeof(float) * (size_t)nb * P * C);
    for (int b = 0; b < nb; b++) {
        const float *z = fs_leaf_seq(&h->out, b) + (size_t)(P - 1) * C;
        float *g = gout + ((size_t)b * P + P - 1) * C;
        int y = (int)fs_leaf_seq(&w->emb.labels, b)[P - 1];
        if (y < 0 || y >= C || (w->links && w->links->no_loss))
            continue;
        float mx = z[0];
        for (int k = 1; k < C; k++)
            mx = z[k] > mx ? z[k] : mx;
        float s = 0;
        for (int k = 0; k < C; k++)
            s += expf(z[k] - mx);
        for (int k = 0; k < C; k++)
            g[k] = (float)((expf(z[k] - mx) / s - (k == y ? 1.f : 0.f)) / denom);
    }
    stop(w, &h->out, gout);

    memset(gunemb, 0, sizeof(float) * (size_t)w->rows * C);
    for (int b = 0; b < nb; b++)
        for (int p = 0; p < P; p++)
            memcpy(gunemb + ((size_t)b * w->a->N + 2 * p) * C, gout + ((size_t)b * P + p) * C, sizeof(float) * C);
    stop(w, &h->unembedding, gunemb);
    /* transformer_output.out and pre_unembed: the same gradient */
    fs_matmul_backward_set(w->gy, w->gp->unembed_w, w->gp->unembed_b, gunemb, h->transformer_out.p, w->m->p.unembed_w,
                           w->rows, d, C);
    stop(w, &h->transformer_out, w->gy);
    stop(w, &h->pre_unembed, w->gy);
    memset(w->gx, 0, sizeof(float) * (size_t)w->rows * d);
    norm_backward(w, w->gx, w->gy, in, &h->final_mean, &h->final_rstd, w->m->p.norm_w, w->gp->norm_w, w->gp->norm_b);
}

/* softmax backward: din = p * (g - sum p g), with p the softmax of the logits when the
 * scores were clamped (their Jacobian is the computed softmax's) */
static void softmax_backward(float *din, const float *p_or_logits, const float *g, int rows, int n, bool from_logits)
{
    if (!from_logits) {
        fs_softmax_backward(din, p_or_logits, g, rows, n);
        return;
    }
    for (int r = 0; r < rows; r++) {
        const float *x = p_or_logits + (size_t)r * n, *gr = g + (size_t)r * n;
        float *dx = din + (size_t)r * n;
        float p[64], mx = x[0], z = 0.f, s = 0.f;
        for (int i = 1; i < n; i++)
            mx = x[i] > mx ? x[i] : mx;
        if (n <= 64) {
            for (int i = 0; i < n; i++)
                z += (p[i] = expf(x[i] - mx));
            for (int i = 0; i < n; i++)
                p[i] /= z;
            fs_softmax_backward(dx, p, gr, 1, n);
            continue;
        }
        /* long rows: recompute per element */
        for (int i = 0; i < n; i++)
            z += expf(x[i] - mx);
        for (int i = 0; i < n; i++)
            s += expf(x[i] - mx) / z * gr[i];
        for (int i = 0; i < n; i++)
            dx[i] = expf(x[i] - mx) / z * (gr[i] - s);
    }
}

/* From the gradient of attn_output.out (already stopped) to that of attn_output.x,
 * left in w->gy. */
static void attention_backward(const bwd *w, int layer, const fs_block_acts *L, float *gao)
{
    const fs_model_config *c = &w->m->cfg;
    const fs_block_params *bp = &w->m->p.blocks[layer];
    const fs_block_params *gbp = &w->gp->blocks[layer];
    int N = w->a->N, d = c->d_model, H = c->num_heads, hd = d / H, nb = w->nb, rows = w->rows;
    size_t head_block = (size_t)H * N * hd, att_block = (size_t)H * N * N;
    float scale = 1.0f / sqrtf((float)hd);

    /* values_post_proj = out; values_pre_proj @ Wo^T = values_post_proj */
    stop(w, &L->values_post_proj, gao);
    float *gvpre = w->gy;
    fs_matmul_backward_set(gvpre, gbp->proj_w, NULL, gao, L->values_pre_proj.p, bp->proj_w, rows, d, d);
    stop(w, &L->values_pre_proj, gvpre);

    /* values_pre_proj[i, h*hd+t] = sum_j attn[h,i,j] v[h,j,t] */
    for (int b = 0; b < nb; b++)
        fs_attn_values_backward(w->ga1 + b * att_block, w->gv + b * head_block, gvpre + (size_t)b * N * d,
                                fs_leaf_seq(&L->attn_post_drop, b), fs_leaf_seq(&L->v, b), H, N, hd);
    stop(w, &L->attn_post_drop, w->ga1);
    stop(w, &L->attn_scores, w->ga1); /* post_drop = scores */
    bool from_logits = clamped(w, &L->attn_scores);
    softmax_backward(w->ga2, from_logits ? L->attn_pre_softmax.p : L->attn_scores.p, w->ga1, nb * H * N, N,
                     from_logits);
    stop(w, &L->attn_pre_softmax, w->ga2);

    /* pre[h,i,j] = scale * q_i . k_j for j <= i; masked entries are constants */
    memset(w->gq, 0, sizeof(float) * (size_t)rows * d);
    memset(w->gk, 0, sizeof(float) * (size_t)rows * d);
    for (int b = 0; b < nb; b++)
        fs_attn_scores_backward(w->gq + b * head_block, w->gk + b * head_block, w->ga2 + b * att_block,
                                fs_leaf_seq(&L->q, b), fs_leaf_seq(&L->k, b), H, N, hd, scale);
    stop(w, &L->q, w->gq);
    stop(w, &L->k, w->gk);
    float *gr[3] = {w->gq, w->gk, w->gv};
    if (c->pos_embedding == FS_POS_ROPE)
        for (int r = 0; r < 2; r++) {
            if (w->rope)
                fs_rope_backward_table(gr[r], gr[r], nb * H, N, hd, w->rope);
            else
                for (int b = 0; b < nb; b++) { /* in place through a copy of the rotated gradient */
                    float *g = gr[r] + b * head_block;
                    memcpy(w->graw, g, sizeof(float) * head_block);
                    memset(g, 0, sizeof(float) * head_block);
                    fs_rope_backward(g, w->graw, H, N, hd, c->rope_base);
                }
        }
    stop(w, &L->pre_rope_q, w->gq);
    stop(w, &L->pre_rope_k, w->gk);
    stop(w, &L->v, w->gv);

    /* qkv [3,H,N,hd] = stack(pre_rope_q, pre_rope_k, v); qkv_raw [N, 3d] */
    if (own_grad(w, &L->qkv)) {
        for (int b = 0; b < nb; b++)
            for (int s = 0; s < 3; s++)
                memcpy(w->gqkv + (size_t)b * 3 * head_block + s * head_block, gr[s] + b * head_block,
                       sizeof(float) * head_block);
        stop(w, &L->qkv, w->gqkv);
        for (int s = 0; s < 3; s++)
            gr[s] = NULL;
    }
    for (int b = 0; b < nb; b++)
        for (int s = 0; s < 3; s++) {
            const float *src = gr[s] ? gr[s] + b * head_block : w->gqkv + (size_t)b * 3 * head_block + s * head_block;
            float *raw = w->graw + (size_t)b * N * 3 * d + s * d;
            for (int h = 0; h < H; h++)
                for (int n = 0; n < N; n++) {
                    float *dst = raw + (size_t)n * 3 * d + h * hd;
                    const float *g = src + ((size_t)h * N + n) * hd;
                    for (int t = 0; t < hd; t++)
                        dst[t] = g[t];
                }
        }
    fs_matmul_backward_set(w->gy, gbp->qkv_w, gbp->qkv_b, w->graw, L->attn_x.p, bp->qkv_w, rows, d, 3 * d);
    stop(w, &L->attn_x, w->gy);
}

/* w->gx: in, the gradient of the block's out; on return, that of its x. */
static void block_backward(const bwd *w, int layer, const fs_block_acts *L)
{
    const fs_model_config *c = &w->m->cfg;
    const fs_block_params *bp = &w->m->p.blocks[layer];
    const fs_block_params *gbp = &w->gp->blocks[layer];
    int d = c->d_model, F = fs_mlp_hidden(c), rows = w->rows;
    size_t n = (size_t)rows * d;

    stop(w, &L->out, w->gx);
    /* out = residual_post_attn + mlp (attention-only: out = residual_post_attn) */
    if (F > 0) {
        float *gmlp = branch(w, &L->mlp, w->gx, w->gcopy, n);
        fs_matmul_backward_set(w->gf, gbp->fc2_w, gbp->fc2_b, gmlp, L->mlp_gelu.p, bp->fc2_w, rows, F, d);
        if (w->gelu_grad)
            fs_mul_inplace(w->gf, w->gelu_grad + fs_gelu_grad_offset(w->a, layer, w->b0), (size_t)rows * F);
        else
            fs_gelu_backward_inplace(w->gf, L->mlp_fc1.p, (size_t)rows * F);
        fs_matmul_backward_set(w->gy, gbp->fc1_w, gbp->fc1_b, w->gf, L->norm_residual_post_attn.p, bp->fc1_w, rows, d,
                               F);
        stop(w, &L->norm_residual_post_attn, w->gy);
        norm_backward(w, w->gx, w->gy, &L->residual_post_attn, &L->ln2_mean, &L->ln2_rstd, bp->norm2_w, gbp->norm2_w,
                      gbp->norm2_b);
    }
    stop(w, &L->residual_post_attn, w->gx);
    /* residual_post_attn = x + attn_output.out */
    float *gao = branch(w, &L->attn_out, w->gx, w->gcopy, n);
    if (gao == w->gx && own_grad(w, &L->values_post_proj)) {
        memcpy(w->gcopy, w->gx, sizeof(float) * n);
        gao = w->gcopy;
    }
    attention_backward(w, layer, L, gao);
    stop(w, &L->norm_inp, w->gy); /* attn_output.x = norm_inp */
    norm_backward(w, w->gx, w->gy, &L->x, &L->ln1_mean, &L->ln1_rstd, bp->norm1_w, gbp->norm1_w, gbp->norm1_b);
    stop(w, &L->x, w->gx);
}

static void embed_backward(const bwd *w)
{
    const fs_model_config *c = &w->m->cfg;
    const fs_embed_acts *e = &w->emb;
    int P = w->a->P, N = w->a->N, d = c->d_model, nb = w->nb;
    float *g = w->gx; /* transformer_output.x = embedding */
    stop(w, &e->x, g);
    stop(w, &e->embedding, g);
    if (c->pos_embedding == FS_POS_APE) { /* embedding = tok_embedding + pos_embedding */
        const float *gpos = branch(w, &e->pos_embedding, g, w->gcopy, (size_t)w->rows * d);
        memset(w->gp->pos_w, 0, sizeof(float) * (size_t)d * FS_APE_MAX_TOKENS);
        for (int b = 0; b < nb; b++)
            for (int p = 0; p < N; p++)
                for (int i = 0; i < d; i++)
                    w->gp->pos_w[(size_t)i * FS_APE_MAX_TOKENS + p] += gpos[((size_t)b * N + p) * d + i];
    }
    stop(w, &e->tok_embedding, g);
    float *gex = w->gsmall, *glab = w->gsmall + (size_t)nb * P * d;
    for (int b = 0; b < nb; b++)
        for (int p = 0; p < P; p++) {
            memcpy(gex + ((size_t)b * P + p) * d, g + ((size_t)b * N + 2 * p) * d, sizeof(float) * d);
            if (p + 1 < P)
                memcpy(glab + ((size_t)b * P + p) * d, g + ((size_t)b * N + 2 * p + 1) * d, sizeof(float) * d);
            else
                memset(glab + ((size_t)b * P + p) * d, 0, sizeof(float) * d);
        }
    stop(w, &e->example_embedding, gex);
    stop(w, &e->label_embedding, glab);
    /* Wl [d][C] with C small: its transpose [C][d] = onehot^T @ glab is the vector-wide
     * product (the same sums per element), then transposed into place */
    int C = c->num_classes;
    fs_gemm(w->glabt, (size_t)d, e->onehot_labels.p, 1, (size_t)C, glab, (size_t)d, C, d, nb * P, 0, NULL);
    fs_transpose(w->gp->label_w, w->glabt, C, d);
    fs_matmul_backward_set(NULL, w->gp->example_w, w->gp->example_b, gex, e->examples.p, w->m->p.example_w, nb * P,
                           c->input_dim, d);
}

/* Scratch per sequence: 6 [N][d] buffers, the MLP hidden layer, two of attention weights,
 * two [N][3d], the head's or the embedding's small buffers, the label embedding's
 * gradient (needed once per range); plus alignment slack. */
static size_t small_per_seq(const fs_acts *a)
{
    size_t P = (size_t)a->P, N = (size_t)a->N, C = (size_t)a->cfg.num_classes, d = (size_t)a->cfg.d_model;
    return P * C + N * C > 2 * P * d ? P * C + N * C : 2 * P * d;
}

static size_t share_per_seq(const fs_acts *a)
{
    const fs_model_config *c = &a->cfg;
    size_t N = (size_t)a->N, d = (size_t)c->d_model, H = (size_t)c->num_heads, F = (size_t)fs_mlp_hidden(c);
    return N * d * 6 + N * F + 2 * H * N * N + 2 * N * 3 * d + small_per_seq(a) + (size_t)c->num_classes * d +
           13 * 16; /* the [C][d] buffer once per range: per sequence is more than enough */
}

size_t fs_backward_scratch_floats(const fs_acts *a) { return share_per_seq(a) * (size_t)a->B; }

void fs_backward_range(const fs_model *m, const fs_acts *a, const fs_clamp_set *clamps, float *scratch,
                       const fs_param_ptrs *grads, int b0, int b1, double denom)
{
    fs_backward_range_links(m, a, clamps, NULL, scratch, NULL, grads, b0, b1, denom);
}

void fs_backward_range_links(const fs_model *m, const fs_acts *a, const fs_clamp_set *clamps,
                             const fs_grad_links *links, float *scratch, const float *gelu_grad,
                             const fs_param_ptrs *grads, int b0, int b1, double denom)
{
    if (b1 <= b0)
        return;
    const fs_model_config *c = &m->cfg;
    int nb = b1 - b0, N = a->N, d = c->d_model, H = c->num_heads, hd = d / H;
    float rope[2 * ROPE_TABLE_MAX];
    bool table = c->pos_embedding == FS_POS_ROPE && hd % 2 == 0 && (size_t)N * hd <= ROPE_TABLE_MAX;
    if (table)
        fs_rope_table(rope, N, hd, c->rope_base);

    /* this range's share of the scratch, carved into 64-byte aligned buffers */
    float *pool = scratch + (size_t)b0 * share_per_seq(a);
    size_t used = 0, rows = (size_t)nb * N;
#define TAKE(count) (used = (used + 15) / 16 * 16, used += (count), pool + used - (count))
    bwd w = {.m = m, .a = a, .clamps = clamps, .links = links, .gp = grads, .b0 = b0, .b1 = b1, .nb = nb, .rows = (int)rows,
             .rope = table ? rope : NULL, .gelu_grad = gelu_grad};
    w.gx = TAKE(rows * d);
    w.gy = TAKE(rows * d);
    w.gcopy = TAKE(rows * d);
    w.gq = TAKE(rows * d);
    w.gk = TAKE(rows * d);
    w.gv = TAKE(rows * d);
    w.gf = TAKE(rows * (size_t)fs_mlp_hidden(c));
    w.ga1 = TAKE((size_t)nb * H * N * N);
    w.ga2 = TAKE((size_t)nb * H * N * N);
    w.gqkv = TAKE(rows * 3 * d);
    w.graw = TAKE(rows * 3 * d);
    w.gsmall = TAKE(small_per_seq(a) * nb);
    w.glabt = TAKE((size_t)c->num_classes * d);
#undef TAKE

    fs_embed_acts_at(&w.emb, a, b0);
    fs_head_acts_at(&w.head, a, b0);

    fs_block_acts L; /* the leaves of the block being run, resolved once each */
    fs_block_acts_at(&L, a, c->depth - 1, b0);
    head_backward(&w, &L.out, denom);
    for (int layer = c->depth - 1; layer >= 0; layer--) {
        block_backward(&w, layer, &L); /* block l's x gradient is block l-1's out gradient */
        if (layer > 0)
            fs_block_acts_at(&L, a, layer - 1, b0);
    }
    embed_backward(&w);
}
