/* Causal attention of one sequence, specialised for short sequences: with N <= FS_VL
 * tokens a row of scores (one query against every key) is one vector, the keys are
 * transposed once per head into [hd][FS_VL] so a row costs hd broadcast-FMAs, and the
 * softmax runs on that vector. With head width 8 and N <= 8 (the documented model) the
 * transposes stay in registers and the softmax runs in column form (head8_attention),
 * every row at once. Longer sequences or wide heads take plain loops. All paths give
 * the softmax of fs_softmax_forward (the same floats). Layouts are the cache's:
 * q, k, v [H][N][hd], scores [H][N][N], values [N][H*hd] (heads concatenated). */
#include <stdbool.h>
#include <string.h>

#include "kernels/kernels.h"
#include "simd/vmath.h"

#define MASKED -1e20f
#define MAX_HD 64

static inline int fast(int N, int hd) { return N <= FS_VL && hd <= MAX_HD; }

/* Longer sequences: a head's N x N products (query rows against keys, or output
 * gradients against values) as one matrix product with the keys transposed into this
 * per-thread buffer; beyond it (N * hd > LONG_FLOATS) plain loops. */
#define LONG_FLOATS (MAX_HD * 512)
static _Thread_local float long_t[LONG_FLOATS];

static inline bool long_fits(int N, int hd) { return (size_t)N * hd <= LONG_FLOATS; }

/* out[i][j] (row stride N) = x_i . y_j for rows x_i (stride ldx) and y_j (stride hd):
 * y transposed into long_t, then fs_gemm. With `causal`, only the elements j <= i are
 * needed (the caller masks the rest): the columns past the last whole vector, which
 * fs_gemm runs through a zero-padded copy at the cost of a whole vector, are then
 * computed for the rows that reach them only (at 17 tokens, 1 row instead of 17). Each
 * element is fs_gemm's either way: its sum does not depend on how the product is split. */
static void rows_dot_rows(float *out, const float *x, size_t ldx, const float *y, int N, int hd, bool causal)
{
    fs_transpose(long_t, y, N, hd);
    int jt = N / FS_VL * FS_VL;
    if (!causal || jt == 0 || jt == N) {
        fs_gemm(out, (size_t)N, x, ldx, 1, long_t, (size_t)N, N, N, hd, 0, NULL);
        return;
    }
    fs_gemm(out, (size_t)N, x, ldx, 1, long_t, (size_t)N, N, jt, hd, 0, NULL);
    fs_gemm(out + (size_t)jt * N + jt, (size_t)N, x + (size_t)jt * ldx, ldx, 1, long_t + jt, (size_t)N, N - jt, N - jt,
            hd, 0, NULL);
}

/* kt[t][j] = x[j][t] for j < N (lanes N.. are left as they are: zeroed once by the caller) */
static inline void transpose_keys(float kt[][FS_VL], const float *x, int N, int hd)
{
    for (int j = 0; j < N; j++)
        for (int t = 0; t < hd; t++)
            kt[t][j] = x[(size_t)j * hd + t];
}

static inline void copy_n(float *dst, const float *src, int n)
{
    for (int j = 0; j < n; j++)
        dst[j] = src[j];
}

/* Store row i of an [N][N] block that is followed by `after` more floats of the output
 * (the next heads' blocks, written later): whole when the vector fits (its spill is
 * overwritten by the rows that follow), else through a buffer. */
static inline void store_row(float *block, int i, int N, fs_vf v, size_t after)
{
    if ((size_t)(N - i) * N + after >= FS_VL) {
        vstore(block + (size_t)i * N, v);
        return;
    }
    float t[FS_VL];
    vstore(t, v);
    copy_n(block + (size_t)i * N, t, N);
}

/* One query row's scores against every key of a head, as a vector over keys. */
static inline fs_vf score_row(const float (*kt)[FS_VL], const float *q, int hd)
{
    fs_vf s = vzero();
    for (int t = 0; t < hd; t++)
        s = vfma(vset1(q[t]), vload(kt[t]), s);
    return s;
}

/* Head width 8 and at most 8 tokens: 8 x 8 blocks transposed in registers. */
static inline bool in_registers(int N, int hd) { return hd == 8 && N <= 8; }

void fs_attn_scores(float *pre, float *probs, const float *q, const float *k, int H, int N, int hd, float scale)
{
    float kt[MAX_HD][FS_VL];
    if (fast(N, hd) && !in_registers(N, hd))
        memset(kt, 0, sizeof(float) * FS_VL * (size_t)hd);
    for (int h = 0; h < H; h++) {
        const float *qh = q + (size_t)h * N * hd, *kh = k + (size_t)h * N * hd;
        float *ph = pre + (size_t)h * N * N, *sh = probs ? probs + (size_t)h * N * N : NULL;
        if (!fast(N, hd) && long_fits(N, hd)) {
            rows_dot_rows(ph, qh, (size_t)hd, kh, N, hd, true);
            for (int i = 0; i < N; i++)
                for (int j = 0; j < N; j++)
                    ph[i * N + j] = j <= i ? ph[i * N + j] * scale : MASKED;
            if (sh)
                fs_softmax_forward(sh, ph, N, N);
            continue;
        }
        if (!fast(N, hd)) {
            for (int i = 0; i < N; i++)
                for (int j = 0; j < N; j++) {
                    float s = MASKED;
                    if (j <= i) {
                        s = 0.f;
                        for (int t = 0; t < hd; t++)
                            s += qh[i * hd + t] * kh[j * hd + t];
                        s *= scale;
                    }
                    ph[i * N + j] = s;
                }
            if (sh)
                fs_softmax_forward(sh, ph, N, N);
            continue;
        }
        size_t after = (size_t)(H - 1 - h) * N * N;
        if (in_registers(N, hd)) { /* column form, then back to rows */
            fs_vf qt[8], st[8], pt[8], rows[8];
            vtranspose8_rows(qt, qh, 8, N);
            head8_attention(N, st, sh ? pt : NULL, qt, kh, 8, scale);
            vtranspose8(rows, st);
            for (int i = 0; i < N; i++)
                store_row(ph, i, N, rows[i], after);
            if (sh) {
                vtranspose8(rows, pt);
                for (int i = 0; i < N; i++)
                    store_row(sh, i, N, rows[i], after);
            }
            continue;
        }
        transpose_keys(kt, kh, N, hd);
        for (int i = 0; i < N; i++) {
            fs_vf s = score_row(kt, qh + i * hd, hd);
            s = vfill_after(vmul(s, vset1(scale)), i, MASKED);
            store_row(ph, i, N, s, after);
            if (sh)
                store_row(sh, i, N, vsoftmax_row(s, N), after);
        }
    }
}

void fs_attn_values(float *out, const float *probs, const float *v, int H, int N, int hd)
{
    int d = H * hd;
    for (int h = 0; h < H; h++) /* every query row i of head h: out_i = sum_j p[i][j] v_j */
        vweighted_rows_n(out + h * hd, (size_t)d, N, probs + (size_t)h * N * N, 1, (size_t)N, v + (size_t)h * N * hd,
                         (size_t)hd, N, hd);
}

void fs_attn_values_backward(float *gprobs, float *gv, const float *gout, const float *probs, const float *v, int H,
                             int N, int hd)
{
    int d = H * hd;
    float vt[MAX_HD][FS_VL];
    fs_vf vtv[8];
    if (fast(N, hd) && !in_registers(N, hd))
        memset(vt, 0, sizeof(float) * FS_VL * (size_t)hd);
    for (int h = 0; h < H; h++) {
        const float *vh = v + (size_t)h * N * hd, *ph = probs + (size_t)h * N * N;
        float *gph = gprobs + (size_t)h * N * N, *gvh = gv + (size_t)h * N * hd;
        /* gprobs[i][j] = gout_i . v_j */
        if (fast(N, hd)) {
            bool reg = in_registers(N, hd);
            if (reg)
                vtranspose8_rows(vtv, vh, (size_t)hd, N);
            else
                transpose_keys(vt, vh, N, hd);
            for (int i = 0; i < N; i++) {
                fs_vf s = vzero();
                if (reg)
                    for (int t = 0; t < 8; t++)
                        s = vfma(vset1(gout[(size_t)i * d + h * hd + t]), vtv[t], s);
                else
                    s = score_row(vt, gout + (size_t)i * d + h * hd, hd);
                store_row(gph, i, N, s, (size_t)(H - 1 - h) * N * N);
            }
        } else if (long_fits(N, hd)) {
            rows_dot_rows(gph, gout + h * hd, (size_t)d, vh, N, hd, false);
        } else {
            for (int i = 0; i < N; i++)
                for (int j = 0; j < N; j++) {
                    const float *go = gout + (size_t)i * d + h * hd;
                    float s = 0.f;
                    for (int t = 0; t < hd; t++)
                        s += go[t] * vh[j * hd + t];
                    gph[i * N + j] = s;
                }
        }
        /* gv_j = sum_i p[i][j] gout_i, every key row j */
        vweighted_rows_n(gvh, (size_t)hd, N, ph, (size_t)N, 1, gout + h * hd, (size_t)d, N, hd);
    }
}

/* Query row i's gradients (head width 8 nb): gq_i held in registers over the keys j <= i
 * (vaxpy's fused multiply-adds in the same order, without storing and reloading the row
 * per key), gk_j += g q_i as vaxpy does. */
static inline __attribute__((always_inline)) void query_row_grads(const int nb, float *gqi, const float *qi,
                                                                  const float *kh, float *gkh, const float *gpi,
                                                                  int i, float scale)
{
    int hd = 8 * nb;
    fs_v8 aq[8];
    for (int b = 0; b < nb; b++)
        aq[b] = v8load(gqi + 8 * b);
    for (int j = 0; j <= i; j++) { /* masked entries are constants */
        float g = gpi[j] * scale;
        if (g == 0.f)
            continue;
        const float *kj = kh + j * hd;
        fs_v8 vg = v8set1(g);
        for (int b = 0; b < nb; b++)
            aq[b] = v8fma(vg, v8load(kj + 8 * b), aq[b]);
        vaxpy(gkh + j * hd, g, qi, hd);
    }
    for (int b = 0; b < nb; b++)
        v8store(gqi + 8 * b, aq[b]);
}

void fs_attn_scores_backward(float *gq, float *gk, const float *gpre, const float *q, const float *k, int H, int N,
                             int hd, float scale)
{
    for (int h = 0; h < H; h++) {
        size_t off = (size_t)h * N * hd;
        const float *qh = q + off, *kh = k + off, *gp = gpre + (size_t)h * N * N;
        float *gqh = gq + off, *gkh = gk + off;
        for (int i = 0; i < N; i++) {
            const float *qi = qh + i * hd;
            float *gqi = gqh + i * hd;
            int nb = hd / 8;
            if (hd % 8 == 0 && (nb == 1 || nb == 2 || nb == 4 || nb == 8)) {
                switch (nb) { /* a constant count, so the row stays in registers */
                case 1: query_row_grads(1, gqi, qi, kh, gkh, gp + i * N, i, scale); break;
                case 2: query_row_grads(2, gqi, qi, kh, gkh, gp + i * N, i, scale); break;
                case 4: query_row_grads(4, gqi, qi, kh, gkh, gp + i * N, i, scale); break;
                default: query_row_grads(8, gqi, qi, kh, gkh, gp + i * N, i, scale); break;
                }
                continue;
            }
            for (int j = 0; j <= i; j++) {
                float g = gp[i * N + j] * scale;
                if (g == 0.f)
                    continue;
                vaxpy(gqi, g, kh + j * hd, hd);
                vaxpy(gkh + j * hd, g, qi, hd);
            }
        }
    }
}
