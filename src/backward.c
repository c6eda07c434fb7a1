/* The backward pass of the mean query cross-entropy (SPEC section 5), layer by layer
 * in reverse. Gradients of activations live in `grad_acts`, laid out like the arena;
 * each leaf's gradient is complete before it flows upstream, and clamped elements
 * are zeroed there first: a clamped value is a constant (SPEC section 3). */
#include <math.h>
#include <string.h>

#include "fewshot/forward.h"
#include "fewshot/kernels.h"

typedef struct {
    const fs_model *m;
    const fs_acts *a;
    const fs_clamp_set *clamps;
    float *ga;
    const fs_param_ptrs *gp;
    int b0, b1;
} bwd;

static float *grad(const bwd *w, int leaf) { return w->ga + w->a->leaves[leaf].offset + (size_t)w->b0 * w->a->leaves[leaf].numel; }
static const float *act(const bwd *w, int leaf) { return fs_leaf_ptr(w->a, leaf, w->b0); }
static size_t span(const bwd *w, int leaf) { return w->a->leaves[leaf].numel * (size_t)(w->b1 - w->b0); }
static void stop(const bwd *w, int leaf) { fs_clamp_stop_grad(w->clamps, w->a, w->ga, leaf, w->b0, w->b1); }
static void zero(const bwd *w, int leaf) { memset(grad(w, leaf), 0, sizeof(float) * span(w, leaf)); }
static void copy_grad(const bwd *w, int dst, int src) { memcpy(grad(w, dst), grad(w, src), sizeof(float) * span(w, dst)); }
static void add_grad(const bwd *w, int dst, int src)
{
    float *d = grad(w, dst);
    const float *s = grad(w, src);
    for (size_t i = 0, n = span(w, dst); i < n; i++)
        d[i] += s[i];
}
static int blk(int layer, int which) { return fs_block_leaf_id(layer, which); }

/* LayerNorm backward (or identity under no_norm): din += ... */
static void norm_backward(const bwd *w, int din, int dout, int in, int mean, int rstd, const float *weight,
                          float *dweight, float *dbias)
{
    int d = w->m->cfg.d_model, rows = (w->b1 - w->b0) * w->a->N;
    if (w->m->cfg.no_norm)
        add_grad(w, din, dout);
    else
        fs_layernorm_backward(grad(w, din), dweight, dbias, grad(w, dout), act(w, in), weight, act(w, mean),
                              act(w, rstd), rows, d);
}

double fs_query_loss_range(const fs_acts *a, int b0, int b1, double denom)
{
    int P = a->P, C = a->cfg.num_classes;
    int id_out = fs_top_after(&a->cfg, L_OUT);
    double total = 0;
    for (int b = b0; b < b1; b++) {
        const float *z = fs_leaf_ptr(a, id_out, b) + (size_t)(P - 1) * C;
        int y = (int)fs_leaf_ptr(a, L_LABELS, b)[P - 1];
        if (y < 0 || y >= C)
            continue; /* all-zero one-hot: no loss (SPEC section 4) */
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

/* dL/dout: only the query row, softmax(z) - onehot(y), divided by the batch size. */
static void loss_backward(const bwd *w, double denom)
{
    const fs_acts *a = w->a;
    int P = a->P, C = a->cfg.num_classes, id_out = fs_top_after(&a->cfg, L_OUT);
    zero(w, id_out);
    for (int b = w->b0; b < w->b1; b++) {
        const float *z = fs_leaf_ptr(a, id_out, b) + (size_t)(P - 1) * C;
        float *g = w->ga + a->leaves[id_out].offset + (size_t)b * a->leaves[id_out].numel + (size_t)(P - 1) * C;
        int y = (int)fs_leaf_ptr(a, L_LABELS, b)[P - 1];
        if (y < 0 || y >= C)
            continue;
        float mx = z[0];
        for (int c = 1; c < C; c++)
            mx = z[c] > mx ? z[c] : mx;
        float s = 0;
        for (int c = 0; c < C; c++)
            s += expf(z[c] - mx);
        for (int c = 0; c < C; c++)
            g[c] = (float)((expf(z[c] - mx) / s - (c == y ? 1.f : 0.f)) / denom);
    }
    stop(w, id_out);
}

static void head_backward(const bwd *w)
{
    const fs_model_config *c = &w->m->cfg;
    const fs_acts *a = w->a;
    int P = a->P, N = a->N, C = c->num_classes, d = c->d_model, rows = (w->b1 - w->b0) * N;
    int id_out = fs_top_after(c, L_OUT), id_unemb = fs_top_after(c, L_UNEMBEDDING);
    int id_tout = fs_top_after(c, L_TRANSFORMER_OUT), id_pre = fs_top_after(c, L_PRE_UNEMBED);
    /* out = unembedding[0::2] */
    zero(w, id_unemb);
    for (int b = w->b0; b < w->b1; b++) {
        float *gu = w->ga + a->leaves[id_unemb].offset + (size_t)b * a->leaves[id_unemb].numel;
        const float *go = w->ga + a->leaves[id_out].offset + (size_t)b * a->leaves[id_out].numel;
        for (int p = 0; p < P; p++)
            memcpy(gu + (size_t)(2 * p) * C, go + (size_t)p * C, sizeof(float) * C);
    }
    stop(w, id_unemb);
    zero(w, id_tout);
    fs_matmul_backward(grad(w, id_tout), w->gp->unembed_w, w->gp->unembed_b, grad(w, id_unemb), act(w, id_tout),
                       w->m->p.unembed_w, rows, d, C);
    stop(w, id_tout);
    copy_grad(w, id_pre, id_tout);
    stop(w, id_pre);
    int last_out = blk(c->depth - 1, B_OUT);
    zero(w, last_out);
    norm_backward(w, last_out, id_pre, last_out, fs_top_after(c, L_FINAL_MEAN), fs_top_after(c, L_FINAL_RSTD),
                  w->m->p.norm_w, w->gp->norm_w, w->gp->norm_b);
}

static void attention_backward(const bwd *w, int layer)
{
    const fs_model_config *c = &w->m->cfg;
    const fs_acts *a = w->a;
    const fs_block_params *bp = &w->m->p.blocks[layer];
    const fs_block_params *gbp = &w->gp->blocks[layer];
    int N = a->N, d = c->d_model, H = c->num_heads, hd = d / H, nb = w->b1 - w->b0, rows = nb * N;
    float scale = 1.0f / sqrtf((float)hd);

    stop(w, blk(layer, B_ATTN_OUT));
    copy_grad(w, blk(layer, B_VALUES_POST_PROJ), blk(layer, B_ATTN_OUT));
    stop(w, blk(layer, B_VALUES_POST_PROJ));
    int id_vpre = blk(layer, B_VALUES_PRE_PROJ);
    zero(w, id_vpre);
    fs_matmul_backward(grad(w, id_vpre), gbp->proj_w, NULL, grad(w, blk(layer, B_VALUES_POST_PROJ)), act(w, id_vpre),
                       bp->proj_w, rows, d, d);
    stop(w, id_vpre);

    /* values_pre_proj[i, h*hd+t] = sum_j attn[h,i,j] v[h,j,t] */
    int id_drop = blk(layer, B_ATTN_POST_DROP), id_v = blk(layer, B_V);
    for (int b = 0; b < nb; b++) {
        const float *gvp = grad(w, id_vpre) + (size_t)b * N * d;
        const float *att = act(w, id_drop) + (size_t)b * H * N * N, *v = act(w, id_v) + (size_t)b * H * N * hd;
        float *gatt = grad(w, id_drop) + (size_t)b * H * N * N, *gv = grad(w, id_v) + (size_t)b * H * N * hd;
        memset(gv, 0, sizeof(float) * (size_t)H * N * hd);
        for (int h = 0; h < H; h++)
            for (int i = 0; i < N; i++) {
                const float *go = gvp + (size_t)i * d + h * hd;
                for (int j = 0; j < N; j++) {
                    const float *vj = v + ((size_t)h * N + j) * hd;
                    float *gvj = gv + ((size_t)h * N + j) * hd;
                    float s = 0.f, p = att[((size_t)h * N + i) * N + j];
                    for (int t = 0; t < hd; t++) {
                        s += go[t] * vj[t];
                        gvj[t] += p * go[t];
                    }
                    gatt[((size_t)h * N + i) * N + j] = s;
                }
            }
    }
    stop(w, id_drop);
    int id_scores = blk(layer, B_ATTN_SCORES), id_pre = blk(layer, B_ATTN_PRE_SOFTMAX);
    copy_grad(w, id_scores, id_drop);
    stop(w, id_scores);
    zero(w, id_pre);
    fs_softmax_backward(grad(w, id_pre), act(w, id_scores), grad(w, id_scores), nb * H * N, N);
    stop(w, id_pre);

    /* pre[h,i,j] = scale * q_i . k_j for j <= i; masked entries are constants */
    int id_q = blk(layer, B_Q), id_k = blk(layer, B_K);
    zero(w, id_q);
    zero(w, id_k);
    for (int b = 0; b < nb; b++) {
        size_t off = (size_t)b * H * N * hd;
        const float *q = act(w, id_q) + off, *k = act(w, id_k) + off;
        float *gq = grad(w, id_q) + off, *gk = grad(w, id_k) + off;
        const float *gpre = grad(w, id_pre) + (size_t)b * H * N * N;
        for (int h = 0; h < H; h++)
            for (int i = 0; i < N; i++)
                for (int j = 0; j <= i; j++) {
                    float g = gpre[((size_t)h * N + i) * N + j] * scale;
                    if (g == 0.f)
                        continue;
                    const float *qi = q + ((size_t)h * N + i) * hd, *kj = k + ((size_t)h * N + j) * hd;
                    float *gqi = gq + ((size_t)h * N + i) * hd, *gkj = gk + ((size_t)h * N + j) * hd;
                    for (int t = 0; t < hd; t++) {
                        gqi[t] += g * kj[t];
                        gkj[t] += g * qi[t];
                    }
                }
    }
    stop(w, id_q);
    stop(w, id_k);
    static const int rotated[2][2] = {{B_PRE_ROPE_Q, B_Q}, {B_PRE_ROPE_K, B_K}};
    for (int r = 0; r < 2; r++) {
        int pre = blk(layer, rotated[r][0]), post = blk(layer, rotated[r][1]);
        if (c->pos_embedding == FS_POS_ROPE) {
            zero(w, pre);
            for (int b = 0; b < nb; b++) {
                size_t off = (size_t)b * H * N * hd;
                fs_rope_backward(grad(w, pre) + off, grad(w, post) + off, H, N, hd, c->rope_base);
            }
        } else {
            copy_grad(w, pre, post);
        }
        stop(w, pre);
    }
    stop(w, id_v);

    /* qkv [3,H,N,hd] = stack(pre_rope_q, pre_rope_k, v); qkv_raw [N, 3d] */
    int id_qkv = blk(layer, B_QKV), id_raw = blk(layer, B_QKV_RAW);
    static const int parts[3] = {B_PRE_ROPE_Q, B_PRE_ROPE_K, B_V};
    size_t head_block = (size_t)H * N * hd;
    for (int b = 0; b < nb; b++)
        for (int s = 0; s < 3; s++)
            memcpy(grad(w, id_qkv) + (size_t)b * 3 * head_block + s * head_block,
                   grad(w, blk(layer, parts[s])) + (size_t)b * head_block, sizeof(float) * head_block);
    stop(w, id_qkv);
    for (int b = 0; b < nb; b++) {
        const float *gqkv = grad(w, id_qkv) + (size_t)b * 3 * head_block;
        float *graw = grad(w, id_raw) + (size_t)b * N * 3 * d;
        for (int s = 0; s < 3; s++)
            for (int h = 0; h < H; h++)
                for (int n = 0; n < N; n++)
                    memcpy(graw + (size_t)n * 3 * d + s * d + h * hd, gqkv + (((size_t)s * H + h) * N + n) * hd,
                           sizeof(float) * hd);
    }
    int id_ax = blk(layer, B_ATTN_X);
    zero(w, id_ax);
    fs_matmul_backward(grad(w, id_ax), gbp->qkv_w, gbp->qkv_b, grad(w, id_raw), act(w, id_ax), bp->qkv_w, rows, d,
                       3 * d);
    stop(w, id_ax);
}

static void block_backward(const bwd *w, int layer)
{
    const fs_model_config *c = &w->m->cfg;
    const fs_block_params *bp = &w->m->p.blocks[layer];
    const fs_block_params *gbp = &w->gp->blocks[layer];
    int N = w->a->N, d = c->d_model, F = fs_mlp_hidden(c), rows = (w->b1 - w->b0) * N;
    int id_out = blk(layer, B_OUT), id_rpa = blk(layer, B_RESIDUAL_POST_ATTN);

    stop(w, id_out);
    copy_grad(w, id_rpa, id_out); /* out = residual_post_attn + mlp (attention-only: + 0) */
    if (F > 0) {
        int id_mlp = blk(layer, B_MLP), id_nrpa = blk(layer, B_NORM_RESIDUAL_POST_ATTN);
        int id_gelu = blk(layer, B_MLP_GELU), id_fc1 = blk(layer, B_MLP_FC1);
        copy_grad(w, id_mlp, id_out);
        stop(w, id_mlp);
        zero(w, id_gelu);
        fs_matmul_backward(grad(w, id_gelu), gbp->fc2_w, gbp->fc2_b, grad(w, id_mlp), act(w, id_gelu), bp->fc2_w,
                           rows, F, d);
        zero(w, id_fc1);
        fs_gelu_backward(grad(w, id_fc1), act(w, id_fc1), grad(w, id_gelu), (size_t)rows * F);
        zero(w, id_nrpa);
        fs_matmul_backward(grad(w, id_nrpa), gbp->fc1_w, gbp->fc1_b, grad(w, id_fc1), act(w, id_nrpa), bp->fc1_w,
                           rows, d, F);
        stop(w, id_nrpa);
        norm_backward(w, id_rpa, id_nrpa, id_rpa, blk(layer, B_LN2_MEAN), blk(layer, B_LN2_RSTD), bp->norm2_w,
                      gbp->norm2_w, gbp->norm2_b);
    }
    stop(w, id_rpa);
    int id_x = blk(layer, B_X);
    copy_grad(w, id_x, id_rpa);
    copy_grad(w, blk(layer, B_ATTN_OUT), id_rpa);
    attention_backward(w, layer);
    int id_norm = blk(layer, B_NORM_INP);
    copy_grad(w, id_norm, blk(layer, B_ATTN_X));
    stop(w, id_norm);
    norm_backward(w, id_x, id_norm, id_x, blk(layer, B_LN1_MEAN), blk(layer, B_LN1_RSTD), bp->norm1_w, gbp->norm1_w,
                  gbp->norm1_b);
    stop(w, id_x);
}

static void embed_backward(const bwd *w)
{
    const fs_model_config *c = &w->m->cfg;
    const fs_acts *a = w->a;
    int P = a->P, N = a->N, d = c->d_model, nb = w->b1 - w->b0;
    copy_grad(w, L_TRANSFORMER_X, blk(0, B_X));
    stop(w, L_TRANSFORMER_X);
    copy_grad(w, L_EMBEDDING, L_TRANSFORMER_X);
    stop(w, L_EMBEDDING);
    copy_grad(w, L_TOK_EMBEDDING, L_EMBEDDING);
    stop(w, L_TOK_EMBEDDING);
    if (c->pos_embedding == FS_POS_APE) {
        copy_grad(w, L_POS_EMBEDDING, L_EMBEDDING);
        stop(w, L_POS_EMBEDDING);
        const float *gpos = grad(w, L_POS_EMBEDDING);
        for (int b = 0; b < nb; b++)
            for (int p = 0; p < N; p++)
                for (int i = 0; i < d; i++)
                    w->gp->pos_w[(size_t)i * FS_APE_MAX_TOKENS + p] += gpos[((size_t)b * N + p) * d + i];
    }
    float *gex = grad(w, L_EXAMPLE_EMBEDDING), *glab = grad(w, L_LABEL_EMBEDDING);
    const float *gtok = grad(w, L_TOK_EMBEDDING);
    for (int b = 0; b < nb; b++)
        for (int p = 0; p < P; p++) {
            memcpy(gex + ((size_t)b * P + p) * d, gtok + ((size_t)b * N + 2 * p) * d, sizeof(float) * d);
            if (p + 1 < P)
                memcpy(glab + ((size_t)b * P + p) * d, gtok + ((size_t)b * N + 2 * p + 1) * d, sizeof(float) * d);
            else
                memset(glab + ((size_t)b * P + p) * d, 0, sizeof(float) * d);
        }
    stop(w, L_EXAMPLE_EMBEDDING);
    stop(w, L_LABEL_EMBEDDING);
    fs_matmul_backward(NULL, w->gp->label_w, NULL, glab, act(w, L_ONEHOT_LABELS), w->m->p.label_w, nb * P,
                       c->num_classes, d);
    fs_matmul_backward(NULL, w->gp->example_w, w->gp->example_b, gex, act(w, L_EXAMPLES), w->m->p.example_w, nb * P,
                       c->input_dim, d);
}

void fs_backward_range(const fs_model *m, const fs_acts *a, const fs_clamp_set *clamps, float *grad_acts,
                       const fs_param_ptrs *grads, int b0, int b1, double denom)
{
    if (b1 <= b0)
        return;
    bwd w = {m, a, clamps, grad_acts, grads, b0, b1};
    loss_backward(&w, denom);
    head_backward(&w);
    for (int layer = m->cfg.depth - 1; layer >= 0; layer--) {
        block_backward(&w, layer);
        if (layer > 0)
            copy_grad(&w, blk(layer - 1, B_OUT), blk(layer, B_X));
    }
    embed_backward(&w);
}
