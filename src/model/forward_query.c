/* Forward-only query logits (no cache, no clamps): only what out[P-1] needs.
 *  - every layer but the last runs on all tokens; in the first one (RoPE, so a label
 *    token's input is its label's embedding alone) the label tokens' LayerNorm and qkv
 *    rows are looked up from a per-call table of the C labels (plus an all-zero row for
 *    out-of-range labels) and only the exemplar tokens go through the qkv product;
 *  - the last layer computes keys and values of every token but the query, the
 *    attention, the projection, the MLP, the final norm and the unembedding only for the
 *    query token.
 * Work is split across threads in chunks of CHUNK sequences with per-thread scratch;
 * every product is the same micro-kernel as the cache-writing forward, so the logits
 * equal its out[P-1] (the same floating-point operations per element). */
#include <math.h>
#include <stdbool.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fewshot/forward.h"
#include "kernels/kernels.h"
#include "model/position.h"
#include "simd/vmath.h"

enum { CHUNK = 32, MAX_TABLE_LABELS = 64 };

typedef struct {
    float *ee, *x, *xn, *qkv, *vals, *tmp, *hid, *qkv_ex; /* per chunk */
    float *q, *vq, *xq, *hq;                              /* query rows */
    float *lab_emb, *lab_xn, *lab_qkv;                    /* [C+1][d], [C+1][d], [C+1][3d] */
    float *rope;                                          /* [N][2][d]: fs_rope_table tiled over heads */
    float *rope_hd;                                       /* [2][N][hd]: fs_rope_table itself */
    float *pos;                                           /* [N][d] APE / sinusoidal */
    float *attn; /* long sequences' head-major copies (long_attn_floats), else unused */
} qbuf;

/* ---- packed weights ----
 * The weight matrices of the products transposed to [in][out] (the layout the matrix
 * kernel streams), in one buffer, refreshed from the parameters on every call (split
 * between the threads, then a barrier): with a few rows per product, reading a
 * ready-made transpose beats transposing panels on the way in. */
typedef struct {
    const float *src; /* [rows][cols] in the parameters */
    int rows, cols;
    size_t offset;    /* of the [cols][rows] transpose in buf */
} packed_mat;

typedef struct {
    float *buf;
    int count;
    packed_mat mat[2 + 4 * FS_MAX_DEPTH];
    const float *example_wt, *label_wt; /* [D][d], [C][d] */
    const float *qkv_wt[FS_MAX_DEPTH], *proj_wt[FS_MAX_DEPTH], *fc1_wt[FS_MAX_DEPTH], *fc2_wt[FS_MAX_DEPTH];
} packed_weights;

/* The next matrix: its transpose's place in buf (NULL while only laying out). */
static const float *add_mat(packed_weights *pk, size_t *off, const float *src, int rows, int cols)
{
    packed_mat *mt = &pk->mat[pk->count++];
    mt->src = src;
    mt->rows = rows;
    mt->cols = cols;
    mt->offset = *off;
    *off += ((size_t)rows * cols + 15) / 16 * 16; /* 64-byte aligned */
    return pk->buf ? pk->buf + mt->offset : NULL;
}

/* The matrices of a model of config c (m NULL: only their layout), with the transposes
 * in pk->buf when it is set; returns the floats buf needs. */
static size_t packed_bind(packed_weights *pk, const fs_model_config *c, const fs_model *m)
{
    int d = c->d_model, F = fs_mlp_hidden(c);
    float *buf = pk->buf;
    memset(pk, 0, sizeof *pk);
    pk->buf = buf;
    size_t off = 0;
    pk->example_wt = add_mat(pk, &off, m ? m->p.example_w : NULL, d, c->input_dim);
    pk->label_wt = add_mat(pk, &off, m ? m->p.label_w : NULL, d, c->num_classes);
    for (int l = 0; l < c->depth; l++) {
        const fs_block_params *bp = m ? &m->p.blocks[l] : NULL;
        pk->qkv_wt[l] = add_mat(pk, &off, bp ? bp->qkv_w : NULL, 3 * d, d);
        pk->proj_wt[l] = add_mat(pk, &off, bp ? bp->proj_w : NULL, d, d);
        if (F > 0) {
            pk->fc1_wt[l] = add_mat(pk, &off, bp ? bp->fc1_w : NULL, F, d);
            pk->fc2_wt[l] = add_mat(pk, &off, bp ? bp->fc2_w : NULL, d, F);
        }
    }
    return off;
}

static void packed_update(packed_weights *pk, int part, int nparts)
{
    /* every matrix split by source rows (multiples of 8) so the parts are even */
    for (int i = 0; i < pk->count; i++) {
        const packed_mat *mt = &pk->mat[i];
        int blocks = (mt->rows + 7) / 8;
        int r0 = blocks * part / nparts * 8, r1 = blocks * (part + 1) / nparts * 8;
        if (r1 > mt->rows)
            r1 = mt->rows;
        if (r0 < r1)
            fs_transpose_rows(pk->buf + mt->offset, mt->src, mt->rows, mt->cols, r0, r1);
    }
}

struct fs_query_ws {
    fs_model_config cfg;
    int P, N, threads;
    packed_weights pk; /* its buffer made with the workspace, bound to the model on each call */
    float **mem;
    qbuf *buf;
};

/* Carving cursor: with base NULL, layout only counts floats (no arithmetic on NULL). */
typedef struct {
    float *base;
    size_t at;
} cursor;

static float *carve(cursor *p, size_t n)
{
    float *r = p->base ? p->base + p->at : NULL;
    p->at += (n + 15) / 16 * 16;
    return r;
}

/* attend()'s vector paths: at most FS_VL tokens and heads at most 64 wide */
static bool short_attn(int N, int hd) { return N <= FS_VL && hd <= 64; }

/* Floats of attend()'s copies for longer sequences: q, k, v, scores, weights, values. */
static size_t long_attn_floats(const fs_model_config *c, int N)
{
    size_t d = (size_t)c->d_model, hb = (size_t)N * d;
    return short_attn(N, c->d_model / c->num_heads) ? 1 : 3 * hb + 2 * (size_t)c->num_heads * N * N + (size_t)N * d;
}

static size_t layout(qbuf *b, float *base, const fs_model_config *c, int P, int N)
{
    size_t d = (size_t)c->d_model, F = (size_t)fs_mlp_hidden(c), R = (size_t)CHUNK * N, E = (size_t)CHUNK * P;
    size_t C1 = (size_t)c->num_classes + 1;
    cursor p = {base, 0};
    b->ee = carve(&p, E * d);
    b->x = carve(&p, R * d);
    b->xn = carve(&p, R * d);
    b->qkv = carve(&p, R * 3 * d);
    b->vals = carve(&p, R * d);
    b->tmp = carve(&p, R * d);
    b->hid = carve(&p, R * (F ? F : 1));
    b->qkv_ex = carve(&p, E * 3 * d);
    b->q = carve(&p, CHUNK * d);
    b->vq = carve(&p, CHUNK * d);
    b->xq = carve(&p, CHUNK * d);
    b->hq = carve(&p, CHUNK * (F ? F : 1));
    b->lab_emb = carve(&p, C1 * d);
    b->lab_xn = carve(&p, C1 * d);
    b->lab_qkv = carve(&p, (C1 <= MAX_TABLE_LABELS + 1 ? C1 : 1) * 3 * d);
    b->rope = carve(&p, (size_t)N * 2 * d);
    b->rope_hd = carve(&p, (size_t)N * 2 * d / (size_t)c->num_heads);
    b->pos = carve(&p, (size_t)N * d);
    b->attn = carve(&p, long_attn_floats(c, N));
    return p.at;
}

fs_query_ws *fs_query_ws_create(const fs_model_config *cfg, int P, int threads)
{
    fs_query_ws *ws = calloc(1, sizeof *ws);
    if (!ws)
        return NULL;
    ws->cfg = *cfg;
    ws->P = P;
    ws->N = 2 * P - 1;
    ws->threads = threads > 0 ? threads : omp_get_max_threads();
    ws->mem = calloc((size_t)ws->threads, sizeof *ws->mem);
    ws->buf = calloc((size_t)ws->threads, sizeof *ws->buf);
    if (!ws->mem || !ws->buf) {
        fs_query_ws_free(ws);
        return NULL;
    }
    size_t packed = packed_bind(&ws->pk, cfg, NULL);
    ws->pk.buf = aligned_alloc(64, (packed > 0 ? packed : 16) * sizeof(float));
    if (!ws->pk.buf) {
        fs_query_ws_free(ws);
        return NULL;
    }
    qbuf probe;
    size_t floats = layout(&probe, NULL, cfg, P, ws->N);
    for (int t = 0; t < ws->threads; t++) {
        ws->mem[t] = aligned_alloc(64, floats * sizeof(float));
        if (!ws->mem[t]) {
            fs_query_ws_free(ws);
            return NULL;
        }
        layout(&ws->buf[t], ws->mem[t], cfg, P, ws->N);
    }
    return ws;
}

void fs_query_ws_free(fs_query_ws *ws)
{
    if (!ws)
        return;
    for (int t = 0; ws->mem && t < ws->threads; t++)
        free(ws->mem[t]);
    free(ws->mem);
    free(ws->buf);
    free(ws->pk.buf);
    free(ws);
}

static void norm_rows(const fs_model *m, float *out, const float *in, const float *w, const float *b, int rows)
{
    int d = m->cfg.d_model;
    if (m->cfg.no_norm) {
        memcpy(out, in, sizeof(float) * (size_t)rows * d);
        return;
    }
    float mean[CHUNK * 64], rstd[CHUNK * 64]; /* rows <= CHUNK * N; larger N in pieces */
    for (int r0 = 0; r0 < rows; r0 += CHUNK * 64) {
        int n = rows - r0 < CHUNK * 64 ? rows - r0 : CHUNK * 64;
        fs_layernorm_forward(out + (size_t)r0 * d, mean, rstd, in + (size_t)r0 * d, w, b, n, d);
    }
}

static void add_into(float *x, const float *y, size_t n)
{
    for (size_t i = 0; i < n; i++)
        x[i] += y[i];
}

/* RoPE of one token row's H heads (a [d] slice) at position n, with the tiled table */
static void rope_row(float *x, const qbuf *b, int n, int d)
{
    fs_rope_forward_table(x, x, 1, 1, d, b->rope + (size_t)n * 2 * d);
}

/* Attention with the heads as vector lanes (head width 8, at most 8 heads, N <= 16):
 * each token's q, k and v rows (H heads x 8) are transposed to [8 dims][lanes = heads],
 * so a score is 8 FMAs for all heads at once and the softmax over keys is lane-wise.
 * Every lane computes what the per-head code computes: the same FMA chain over the 8
 * dims, exp, the sum over keys in order (masked keys add exact zeros there, so they are
 * skipped here) and the value sum over keys in order. */
static void attend_heads8(float *out, const float *qrows, size_t ldq, const float *kv, size_t ld, size_t kofs,
                          size_t vofs, int i0, int N, int H, float scale)
{
    fs_v8 kt[16][8], vt[16][8], r[8];
    for (int j = 0; j < N; j++) {
        for (int h = 0; h < 8; h++)
            r[h] = h < H ? v8load(kv + (size_t)j * ld + kofs + h * 8) : v8zero();
        v8transpose(kt[j], r);
        for (int h = 0; h < 8; h++)
            r[h] = h < H ? v8load(kv + (size_t)j * ld + vofs + h * 8) : v8zero();
        v8transpose(vt[j], r);
    }
    const fs_v8 vscale = v8set1(scale);
    for (int i = i0; i < N; i++) {
        fs_v8 qt[8], s[16], ot[8];
        for (int h = 0; h < 8; h++)
            r[h] = h < H ? v8load(qrows + (size_t)(i - i0) * ldq + h * 8) : v8zero();
        v8transpose(qt, r);
        fs_v8 mx = v8set1(-1e20f); /* the masked entries' value */
        for (int j = 0; j <= i; j++) {
            fs_v8 acc = v8zero();
            for (int t = 0; t < 8; t++)
                acc = v8fma(qt[t], kt[j][t], acc);
            s[j] = v8mul(acc, vscale);
            mx = v8max(mx, s[j]);
        }
        fs_v8 z = v8zero();
        for (int j = 0; j <= i; j++) {
            s[j] = v8exp(v8sub(s[j], mx));
            z = v8add(z, s[j]);
        }
        fs_v8 inv = v8div(v8set1(1.f), z);
        for (int t = 0; t < 8; t++)
            ot[t] = v8zero();
        for (int j = 0; j <= i; j++) {
            fs_v8 p = v8mul(s[j], inv);
            for (int t = 0; t < 8; t++)
                ot[t] = v8fma(p, vt[j][t], ot[t]);
        }
        v8transpose(r, ot);
        for (int h = 0; h < H; h++)
            v8store(out + (size_t)(i - i0) * H * 8 + h * 8, r[h]);
    }
}

/* Attention of query rows i in [i0, N) of one sequence, on rows [N][ld] holding q at
 * column 0, k at kofs, v at vofs (heads inside): out rows [N - i0][d]. `scratch` holds
 * long_attn_floats for sequences the vector paths do not take. */
static void attend(float *out, const float *qrows, size_t ldq, const float *kv, size_t ld, size_t kofs, size_t vofs,
                   int i0, int N, int H, int hd, float scale, float *scratch)
{
    int d = H * hd;
    /* N <= FS_VL: where the cache forward's attention kernels take their vector path too
     * (the same FMA chains); longer sequences take those kernels themselves, below */
    if (hd == 8 && H <= 8 && N <= 16 && N <= FS_VL) {
        attend_heads8(out, qrows, ldq, kv, ld, kofs, vofs, i0, N, H, scale);
        return;
    }
    if (short_attn(N, hd)) {
        float kt[64][FS_VL];
        fs_vf ktv[8];
        bool reg = hd == 8 && N <= 8; /* keys transposed in registers */
        if (!reg)
            memset(kt, 0, sizeof(float) * FS_VL * (size_t)hd);
        for (int h = 0; h < H; h++) {
            float p[FS_VL][FS_VL]; /* p[i - i0][j] */
            if (reg && i0 == 0) { /* all rows: column form */
                fs_vf qt[8], st[8], pt[8];
                vtranspose8_rows(qt, qrows + h * hd, ldq, N);
                head8_attention(N, st, pt, qt, kv + kofs + h * hd, ld, scale);
                float pc[8][FS_VL];
                for (int j = 0; j < N; j++)
                    vstore(pc[j], pt[j]);
                for (int i = 0; i < N; i++)
                    for (int j = 0; j < N; j++)
                        p[i][j] = pc[j][i];
            } else {
                if (reg)
                    vtranspose8_rows(ktv, kv + kofs + h * hd, ld, N);
                else
                    for (int j = 0; j < N; j++)
                        for (int t = 0; t < hd; t++)
                            kt[t][j] = kv[(size_t)j * ld + kofs + h * hd + t];
                for (int i = i0; i < N; i++) {
                    const float *q = qrows + (size_t)(i - i0) * ldq + h * hd;
                    fs_vf s = vzero();
                    for (int t = 0; t < hd; t++)
                        s = vfma(vset1(q[t]), reg ? ktv[t] : vload(kt[t]), s);
                    vstore(p[i - i0], vsoftmax_row(vfill_after(vmul(s, vset1(scale)), i, -1e20f), N));
                }
            }
            vweighted_rows_n(out + h * hd, (size_t)d, N - i0, p[0], 1, FS_VL, kv + vofs + h * hd, ld, N, hd);
        }
        return;
    }
    /* long sequences: the cache forward's kernels on head-major copies */
    size_t hb = (size_t)H * N * hd;
    float *q = scratch;
    float *k = q + hb, *v = k + hb, *pre = v + hb, *probs = pre + (size_t)H * N * N, *vals = probs + (size_t)H * N * N;
    memset(q, 0, sizeof(float) * hb);
    for (int h = 0; h < H; h++)
        for (int j = 0; j < N; j++)
            for (int t = 0; t < hd; t++) {
                if (j >= i0)
                    q[((size_t)h * N + j) * hd + t] = qrows[(size_t)(j - i0) * ldq + h * hd + t];
                k[((size_t)h * N + j) * hd + t] = kv[(size_t)j * ld + kofs + h * hd + t];
                v[((size_t)h * N + j) * hd + t] = kv[(size_t)j * ld + vofs + h * hd + t];
            }
    fs_attn_scores(pre, probs, q, k, H, N, hd, scale);
    fs_attn_values(vals, probs, v, H, N, hd);
    memcpy(out, vals + (size_t)i0 * d, sizeof(float) * (size_t)(N - i0) * d);
}

/* The MLP half of a block on rows x (residual_post_attn in, block out out). */
static void mlp_rows(const fs_model *m, const packed_weights *pk, int layer, float *x, float *xn, float *hid, float *tmp,
                     int rows)
{
    const fs_block_params *bp = &m->p.blocks[layer];
    int d = m->cfg.d_model, F = fs_mlp_hidden(&m->cfg);
    if (F <= 0)
        return;
    norm_rows(m, xn, x, bp->norm2_w, bp->norm2_b, rows);
    fs_matmul_forward_packed(hid, xn, pk->fc1_wt[layer], bp->fc1_b, rows, d, F);
    fs_gelu_forward(hid, hid, (size_t)rows * F);
    fs_matmul_forward_packed(tmp, hid, pk->fc2_wt[layer], bp->fc2_b, rows, F, d);
    add_into(x, tmp, (size_t)rows * d);
}

/* Whether the first layer's label-token rows come from the table. */
static bool label_table(const fs_model_config *c)
{
    return c->pos_embedding == FS_POS_ROPE && c->num_classes <= MAX_TABLE_LABELS && c->depth > 1;
}

/* Per-thread tables: label embeddings and their first-layer qkv rows, RoPE, positions. */
static void thread_tables(const fs_model *m, const packed_weights *pk, qbuf *b, int N)
{
    const fs_model_config *c = &m->cfg;
    int d = c->d_model, C = c->num_classes, H = c->num_heads, hd = d / H;
    memset(b->lab_emb, 0, sizeof(float) * (size_t)(C + 1) * d);
    for (int k = 0; k < C; k++) /* one_hot(k) @ Wl^T = column k of Wl, exactly */
        for (int i = 0; i < d; i++)
            b->lab_emb[(size_t)k * d + i] = m->p.label_w[(size_t)i * C + k];
    if (label_table(c)) {
        norm_rows(m, b->lab_xn, b->lab_emb, m->p.blocks[0].norm1_w, m->p.blocks[0].norm1_b, C + 1);
        fs_matmul_forward_packed(b->lab_qkv, b->lab_xn, pk->qkv_wt[0], m->p.blocks[0].qkv_b, C + 1, d, 3 * d);
    }
    if (c->pos_embedding == FS_POS_ROPE) {
        float *cs = b->rope_hd;
        fs_rope_table(cs, N, hd, c->rope_base);
        for (int n = 0; n < N; n++)
            for (int h = 0; h < H; h++) {
                memcpy(b->rope + (size_t)n * 2 * d + h * hd, cs + (size_t)n * hd, sizeof(float) * hd);
                memcpy(b->rope + (size_t)n * 2 * d + d + h * hd, cs + (size_t)N * hd + (size_t)n * hd,
                       sizeof(float) * hd);
            }
    } else {
        fs_position_embedding(m, 0, N, b->pos);
    }
}

/* From the inputs (start 0), or from the residual stream entering block `start`. */
static void chunk_logits(const fs_model *m, const packed_weights *pk, qbuf *b, int start, const float *resid,
                         const float *examples, const int *labels, int S, int P, float *logits)
{
    const fs_model_config *c = &m->cfg;
    int N = 2 * P - 1, d = c->d_model, H = c->num_heads, hd = d / H, C = c->num_classes, D = c->input_dim;
    int R = S * N, E = S * P;
    float scale = 1.0f / sqrtf((float)hd);
    bool rope = c->pos_embedding == FS_POS_ROPE;

    if (start > 0)
        memcpy(b->x, resid, sizeof(float) * (size_t)R * d);
    else
        fs_matmul_forward_packed(b->ee, examples, pk->example_wt, m->p.example_b, E, D, d);
    for (int s = 0; s < S && start == 0; s++)
        for (int p = 0; p < P; p++) {
            memcpy(b->x + ((size_t)s * N + 2 * p) * d, b->ee + ((size_t)s * P + p) * d, sizeof(float) * d);
            if (p + 1 < P) {
                int y = labels[s * P + p];
                memcpy(b->x + ((size_t)s * N + 2 * p + 1) * d, b->lab_emb + (size_t)(y >= 0 && y < C ? y : C) * d,
                       sizeof(float) * d);
            }
        }
    if (!rope && start == 0)
        for (int s = 0; s < S; s++)
            add_into(b->x + (size_t)s * N * d, b->pos, (size_t)N * d);

    for (int layer = start; layer < c->depth; layer++) {
        const fs_block_params *bp = &m->p.blocks[layer];
        bool last = layer == c->depth - 1, table = layer == 0 && label_table(c);
        if (!table)
            norm_rows(m, b->xn, b->x, bp->norm1_w, bp->norm1_b, R);
        if (!last) {
            if (table) { /* exemplar rows through the product, label rows from the table */
                norm_rows(m, b->vals, b->ee, bp->norm1_w, bp->norm1_b, E);
                fs_matmul_forward_packed(b->qkv_ex, b->vals, pk->qkv_wt[0], bp->qkv_b, E, d, 3 * d);
                for (int s = 0; s < S; s++)
                    for (int p = 0; p < P; p++) {
                        memcpy(b->qkv + ((size_t)s * N + 2 * p) * 3 * d, b->qkv_ex + ((size_t)s * P + p) * 3 * d,
                               sizeof(float) * 3 * d);
                        if (p + 1 < P) {
                            int y = labels[s * P + p];
                            memcpy(b->qkv + ((size_t)s * N + 2 * p + 1) * 3 * d,
                                   b->lab_qkv + (size_t)(y >= 0 && y < C ? y : C) * 3 * d, sizeof(float) * 3 * d);
                        }
                    }
            } else {
                fs_matmul_forward_packed(b->qkv, b->xn, pk->qkv_wt[layer], bp->qkv_b, R, d, 3 * d);
            }
            for (int s = 0; s < S; s++) {
                float *rows = b->qkv + (size_t)s * N * 3 * d;
                if (rope)
                    for (int n = 0; n < N; n++) {
                        rope_row(rows + (size_t)n * 3 * d, b, n, d);
                        rope_row(rows + (size_t)n * 3 * d + d, b, n, d);
                    }
                attend(b->vals + (size_t)s * N * d, rows, 3 * (size_t)d, rows, 3 * (size_t)d, (size_t)d,
                       2 * (size_t)d, 0, N, H, hd, scale, b->attn);
            }
            fs_matmul_forward_packed(b->tmp, b->vals, pk->proj_wt[layer], NULL, R, d, d);
            add_into(b->x, b->tmp, (size_t)R * d);
            mlp_rows(m, pk, layer, b->x, b->xn, b->hid, b->tmp, R);
            continue;
        }
        /* last layer: keys and values of every token, everything else for the query only */
        size_t ld = 2 * (size_t)d;
        fs_gemm(b->qkv, ld, b->xn, (size_t)d, 1, pk->qkv_wt[layer] + d, 3 * (size_t)d, R, 2 * d, d, 0,
                bp->qkv_b ? bp->qkv_b + d : NULL);
        fs_gemm(b->q, (size_t)d, b->xn + (size_t)(N - 1) * d, (size_t)N * d, 1, pk->qkv_wt[layer], 3 * (size_t)d, S, d,
                d, 0, bp->qkv_b);
        for (int s = 0; s < S; s++) {
            float *rows = b->qkv + (size_t)s * N * ld;
            if (rope) {
                rope_row(b->q + (size_t)s * d, b, N - 1, d);
                for (int n = 0; n < N; n++)
                    rope_row(rows + (size_t)n * ld, b, n, d);
            }
            attend(b->vq + (size_t)s * d, b->q + (size_t)s * d, (size_t)d, rows, ld, 0, (size_t)d, N - 1, N, H, hd,
                   scale, b->attn);
        }
        fs_matmul_forward_packed(b->tmp, b->vq, pk->proj_wt[layer], NULL, S, d, d);
        for (int s = 0; s < S; s++)
            for (int i = 0; i < d; i++)
                b->xq[(size_t)s * d + i] = b->x[((size_t)s * N + N - 1) * d + i] + b->tmp[(size_t)s * d + i];
        mlp_rows(m, pk, layer, b->xq, b->xn, b->hq, b->tmp, S);
    }
    norm_rows(m, b->xn, b->xq, m->p.norm_w, m->p.norm_b, S);
    fs_matmul_forward(logits, b->xn, m->p.unembed_w, m->p.unembed_b, S, d, C);
}

static int query_logits(const fs_model *m, fs_query_ws *ws, int start, const float *resid, const float *examples,
                        const int *labels, int nseq, float *logits)
{
    if (!fs_model_config_equal(&ws->cfg, &m->cfg)) /* the scratch is sized for ws->cfg */
        return -1;
    if (nseq <= 0)
        return 0;
    packed_bind(&ws->pk, &m->cfg, m);
    int P = ws->P, D = m->cfg.input_dim, C = m->cfg.num_classes;
    int nt = ws->threads < nseq ? ws->threads : nseq;
#pragma omp parallel num_threads(nt)
    {
        int id = omp_get_thread_num(), n = omp_get_num_threads();
        packed_update(&ws->pk, id, n);
#pragma omp barrier
        qbuf *b = &ws->buf[id];
        thread_tables(m, &ws->pk, b, ws->N);
        /* an even share of the sequences per thread, in chunks */
        int first = (int)((long)nseq * id / n), last = (int)((long)nseq * (id + 1) / n);
        for (int s0 = first; s0 < last; s0 += CHUNK) {
            int S = last - s0 < CHUNK ? last - s0 : CHUNK;
            chunk_logits(m, &ws->pk, b, start, start ? resid + (size_t)s0 * ws->N * m->cfg.d_model : NULL,
                         start ? NULL : examples + (size_t)s0 * P * D, start ? NULL : labels + (size_t)s0 * P, S, P,
                         logits + (size_t)s0 * C);
        }
    }
    return 0;
}

int fs_forward_query_logits(const fs_model *m, fs_query_ws *ws, const float *examples, const int *labels, int nseq,
                            float *logits)
{
    return query_logits(m, ws, 0, NULL, examples, labels, nseq, logits);
}

int fs_forward_query_logits_from(const fs_model *m, fs_query_ws *ws, int layer, const float *resid, int nseq,
                                 float *logits)
{
    return query_logits(m, ws, layer, resid, NULL, NULL, nseq, logits);
}
