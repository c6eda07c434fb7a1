/* Vector math on the types of vec.h, each function written once: horizontal sums and
 * maxima, the 8 x 8 and full-width (FS_VL x FS_VL) transposes, exp, GELU and its
 * derivative, the softmax of a score row, the RoPE pair rotation, and the column-form
 * attention of one head of width 8. Functions generated for both widths (exp) share one
 * body through a macro, so fs_vf and fs_v8 code compute the same floats lane by lane. */
#ifndef FEWSHOT_SIMD_VMATH_H
#define FEWSHOT_SIMD_VMATH_H

#include "simd/vec.h"

/* ---- horizontal reductions ---- */

static inline float v8hsum(fs_v8 s)
{
    fs_v4 q = v4add(v8lo4(s), v8hi4(s));
    q = v4add(q, v4movehl(q));
    q = v4add1(q, v4lane1(q));
    return v4first(q);
}

static inline float v8hmax(fs_v8 s)
{
    fs_v4 q = v4max(v8lo4(s), v8hi4(s));
    q = v4max(q, v4movehl(q));
    q = v4max1(q, v4lane1(q));
    return v4first(q);
}

#if FS_VL == 16
static inline float vhsum(fs_vf v) { return v8hsum(v8add(vlow8(v), vhigh8(v))); }
static inline float vhmax(fs_vf v) { return v8hmax(v8max(vlow8(v), vhigh8(v))); }
#else
static inline float vhsum(fs_vf v) { return v8hsum(v); }
static inline float vhmax(fs_vf v) { return v8hmax(v); }
#endif

/* sum of x[i]^2 over n floats in double lanes (4 + 4 interleaved, then in order) */
static inline double vsum_squares_f64(const float *x, size_t n)
{
    fs_vd4 s0 = vd4zero(), s1 = vd4zero();
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        fs_vd4 a = vd4from4(x + i), b = vd4from4(x + i + 4);
        s0 = vd4fma(a, a, s0);
        s1 = vd4fma(b, b, s1);
    }
    double t[4];
    vd4store(t, vd4add(s0, s1));
    double total = (t[0] + t[1]) + (t[2] + t[3]);
    for (; i < n; i++)
        total += (double)x[i] * x[i];
    return total;
}

/* ---- transposes ---- */

/* The first two steps of a transpose, within each 128-bit block: interleave pairs of
 * rows, then pairs of pairs (n rows; s may be in). Generated for both widths. */
#define FS_VMATH_QUADS(P, T)                                                                                       \
    static inline void P##transpose_quads(T s[], const T in[], int n)                                              \
    {                                                                                                              \
        T t[16];                                                                                                   \
        for (int i = 0; i < n; i += 2) {                                                                           \
            t[i] = P##unpacklo(in[i], in[i + 1]);                                                                  \
            t[i + 1] = P##unpackhi(in[i], in[i + 1]);                                                              \
        }                                                                                                          \
        for (int i = 0; i < n; i += 4) {                                                                           \
            s[i] = P##shuffle(t[i], t[i + 2], 0x44);                                                               \
            s[i + 1] = P##shuffle(t[i], t[i + 2], 0xEE);                                                           \
            s[i + 2] = P##shuffle(t[i + 1], t[i + 3], 0x44);                                                       \
            s[i + 3] = P##shuffle(t[i + 1], t[i + 3], 0xEE);                                                       \
        }                                                                                                          \
    }

FS_VMATH_QUADS(v8, fs_v8)
#if FS_VL == 16
FS_VMATH_QUADS(v, fs_vf)
#endif

/* out[c] lane r = in[r] lane c for an 8 x 8 block (out may be in). */
static inline void v8transpose(fs_v8 out[8], const fs_v8 in[8])
{
    fs_v8 s[8];
    v8transpose_quads(s, in, 8);
    for (int i = 0; i < 4; i++) {
        out[i] = v8permute_halves(s[i], s[i + 4], 0x20);
        out[i + 4] = v8permute_halves(s[i], s[i + 4], 0x31);
    }
}

/* dst row c = column c of the 8 x 8 block at src (row strides lds, ldd). */
static inline void v8transpose_mem(float *dst, size_t ldd, const float *src, size_t lds)
{
    fs_v8 r[8];
    for (int i = 0; i < 8; i++)
        r[i] = v8load(src + i * lds);
    v8transpose(r, r);
    for (int i = 0; i < 8; i++)
        v8store(dst + i * ldd, r[i]);
}

/* In place, FS_VL x FS_VL: r[i] = row i -> r[j] = column j. */
static inline void vtranspose(fs_vf r[FS_VL])
{
#if FS_VL == 16
    fs_vf t[16];
    vtranspose_quads(r, r, 16); /* then 128-bit blocks, then 256-bit halves */
    for (int i = 0; i < 4; i++) {
        t[i] = vshuffle_blocks(r[i], r[i + 4], 0x88);
        t[i + 4] = vshuffle_blocks(r[i], r[i + 4], 0xDD);
        t[i + 8] = vshuffle_blocks(r[i + 8], r[i + 12], 0x88);
        t[i + 12] = vshuffle_blocks(r[i + 8], r[i + 12], 0xDD);
    }
    for (int i = 0; i < 8; i++) {
        r[i] = vshuffle_blocks(t[i], t[i + 8], 0x88);
        r[i + 8] = vshuffle_blocks(t[i], t[i + 8], 0xDD);
    }
#else
    v8transpose(r, r);
#endif
}

/* kt[t] for t < 8: lane j (< n <= 8) = src[j * ld + t], the rest 0. */
static inline void vtranspose8_rows(fs_vf kt[8], const float *src, size_t ld, int n)
{
    fs_v8 r[8];
    for (int i = 0; i < 8; i++)
        r[i] = i < n ? v8load(src + (size_t)i * ld) : v8zero();
    v8transpose(r, r);
    for (int i = 0; i < 8; i++)
        kt[i] = vwiden8(r[i]);
}

/* The same for the first 8 lanes of 8 vectors (lanes 8.. of the result are 0). */
static inline void vtranspose8(fs_vf out[8], const fs_vf in[8])
{
    fs_v8 r[8];
    for (int i = 0; i < 8; i++)
        r[i] = vlow8(in[i]);
    v8transpose(r, r);
    for (int i = 0; i < 8; i++)
        out[i] = vwiden8(r[i]);
}

/* ---- exp ---- */

/* exp(x) to about 2 ulp: x = n ln2 + f, |f| <= ln2/2, exp(f) by a degree-6 polynomial
 * (Taylor-like coefficients refined for the interval), times 2^n. exp_raw: above 88.7
 * +inf; below -87.3 (where the result would be subnormal) about 1e-38; exp makes that
 * exactly 0. Generated for fs_vf (vexp) and fs_v8 (v8exp). */
#define FS_VMATH_EXP(P, T)                                                                                         \
    static inline T P##exp_raw(T x)                                                                                \
    {                                                                                                              \
        T xc = P##min(P##max(x, P##set1(-87.3f)), P##set1(88.7f));                                                 \
        T n = P##sub(P##fma(xc, P##set1(1.44269504088896341f), P##set1(12582912.0f)), P##set1(12582912.0f));      \
        T f = P##fnma(n, P##set1(0.693359375f), xc); /* ln2 split: high part exact in float */                    \
        f = P##fnma(n, P##set1(-2.12194440e-4f), f);                                                               \
        T p = P##set1(1.9875691500e-4f);                                                                           \
        p = P##fma(p, f, P##set1(1.3981999507e-3f));                                                               \
        p = P##fma(p, f, P##set1(8.3334519073e-3f));                                                               \
        p = P##fma(p, f, P##set1(4.1665795894e-2f));                                                               \
        p = P##fma(p, f, P##set1(1.6666665459e-1f));                                                               \
        p = P##fma(p, f, P##set1(5.0000001201e-1f));                                                               \
        p = P##fma(P##mul(p, f), f, P##add(f, P##set1(1.f)));                                                      \
        return P##mul(p, P##exp2i(n));                                                                             \
    }                                                                                                              \
    static inline T P##exp(T x) { return P##keep_ge(P##exp_raw(x), x, P##set1(-87.3f)); }

FS_VMATH_EXP(v, fs_vf)
#if FS_VL != 8
FS_VMATH_EXP(v8, fs_v8)
#else
#define v8exp vexp
#endif

/* ---- GELU ---- */

/* GELU(x) = 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3), in the reference's
 * float form (its rounding of 1 + tanh near -1 included); tanh(u) = 1 - 2 / (1 + e^{2u}). */
static inline fs_vf vgelu_tanh(fs_vf x)
{
    fs_vf one = vset1(1.f);
    fs_vf u = vmul(vset1(0.7978845608028654f), vadd(x, vmul(vmul(vmul(vset1(0.044715f), x), x), x)));
    /* e^{2u} below 1e-38 leaves 1 + e^{2u} = 1 exactly, so the exp need not flush to 0 */
    return vsub(one, vdiv(vset1(2.f), vadd(one, vexp_raw(vadd(u, u)))));
}

/* gelu(x) = 0.5 x (1 + t), t = vgelu_tanh(x) */
static inline fs_vf vgelu_from_tanh(fs_vf x, fs_vf t) { return vmul(vmul(vset1(0.5f), x), vadd(vset1(1.f), t)); }

static inline fs_vf vgelu(fs_vf x) { return vgelu_from_tanh(x, vgelu_tanh(x)); }

/* d gelu / dx = 0.5 (1 + t) + 0.5 x (1 - t^2) u',  u' = K (1 + 3 c x^2) */
static inline fs_vf vgelu_grad_from_tanh(fs_vf x, fs_vf t)
{
    fs_vf one = vset1(1.f), half = vset1(0.5f);
    fs_vf du = vmul(vset1(0.7978845608028654f), vadd(one, vmul(vmul(vset1(3.f * 0.044715f), x), x)));
    return vadd(vmul(half, vadd(one, t)), vmul(vmul(vmul(half, x), vsub(one, vmul(t, t))), du));
}

static inline fs_vf vgelu_grad(fs_vf x) { return vgelu_grad_from_tanh(x, vgelu_tanh(x)); }

/* ---- RoPE ---- */

/* One 8-float slice of interleaved pairs: forward y = x C + swap(x) S, backward
 * dx = g C - swap(g) S, with C = (c, c, ...) and S = (-s, s, ...) from fs_rope_table. */
static inline fs_v8 v8rope(fs_v8 x, fs_v8 c, fs_v8 s) { return v8fma(v8swap_pairs(x), s, v8mul(x, c)); }
static inline fs_v8 v8rope_back(fs_v8 g, fs_v8 c, fs_v8 s) { return v8fnma(v8swap_pairs(g), s, v8mul(g, c)); }

/* ---- softmax and attention ---- */

/* Softmax of a score row held in a vector whose lanes past the row hold -1e20:
 * exp(x - max) times 1 / (the sum of the first n lanes in order) -- the same floats as
 * fs_softmax_forward and head8_cols. */
static inline fs_vf vsoftmax_row(fs_vf x, int n)
{
    fs_vf e = vexp(vsub(x, vset1(vhmax(x))));
    float t[FS_VL];
    vstore(t, e);
    float s = t[0];
    for (int j = 1; j < n; j++)
        s += t[j];
    return vmul(e, vset1(1.f / s));
}

/* Causal attention weights of one head of width 8 with n <= 8 tokens, in column form:
 * qt[t] = the queries transposed (lanes = query rows i), k rows of 8 at k + j * ldk.
 * st[j] lane i = score of query i on key j = (sum_t k_j[t] q_i[t]) * scale, -1e20 when
 * j > i; pt[j] lane i = softmax over j: exp(s - max) times 1 / (sum over j in order).
 * Every lane computes exactly what the row-by-row code computes (same FMA chain over t,
 * same exp, the same sequential sum), with the rows' chains interleaved. */
static inline __attribute__((always_inline)) void head8_cols(const int n, fs_vf st[8], fs_vf pt[8],
                                                             const fs_vf qt[8], const float *k, size_t ldk,
                                                             float scale)
{
    fs_vf acc[8];
#pragma GCC unroll 8
    for (int j = 0; j < n; j++)
        acc[j] = vzero();
#pragma GCC unroll 8
    for (int t = 0; t < 8; t++)
#pragma GCC unroll 8
        for (int j = 0; j < n; j++)
            acc[j] = vfma(vset1(k[(size_t)j * ldk + t]), qt[t], acc[j]);
#pragma GCC unroll 8
    for (int j = 0; j < 8; j++)
        st[j] = j < n ? vfill_before(vmul(acc[j], vset1(scale)), j, -1e20f) : vset1(-1e20f);
    if (!pt)
        return;
    fs_vf mx = st[0];
#pragma GCC unroll 8
    for (int j = 1; j < n; j++)
        mx = vmax(mx, st[j]);
    fs_vf e[8], z;
#pragma GCC unroll 8
    for (int j = 0; j < n; j++)
        e[j] = vexp(vsub(st[j], mx));
    z = e[0];
#pragma GCC unroll 8
    for (int j = 1; j < n; j++)
        z = vadd(z, e[j]);
    fs_vf r = vdiv(vset1(1.f), z);
#pragma GCC unroll 8
    for (int j = 0; j < 8; j++)
        pt[j] = j < n ? vmul(e[j], r) : vzero();
}

static inline void head8_attention(int n, fs_vf st[8], fs_vf pt[8], const fs_vf qt[8], const float *k, size_t ldk,
                                   float scale)
{
    switch (n) {
    case 1: head8_cols(1, st, pt, qt, k, ldk, scale); break;
    case 2: head8_cols(2, st, pt, qt, k, ldk, scale); break;
    case 3: head8_cols(3, st, pt, qt, k, ldk, scale); break;
    case 4: head8_cols(4, st, pt, qt, k, ldk, scale); break;
    case 5: head8_cols(5, st, pt, qt, k, ldk, scale); break;
    case 6: head8_cols(6, st, pt, qt, k, ldk, scale); break;
    case 7: head8_cols(7, st, pt, qt, k, ldk, scale); break;
    default: head8_cols(8, st, pt, qt, k, ldk, scale); break;
    }
}

/* out[0..n) = sum over j < m of w[j * ldw] * rows[j * ld + 0..n), vectors of 8 then a
 * scalar tail (the same sum in j order for every element): a weighted sum of rows. */
static inline void vweighted_rows(float *out, const float *w, size_t ldw, const float *rows, size_t ld, int m, int n)
{
    int t = 0;
    for (; t + 8 <= n; t += 8) {
        fs_v8 acc = v8zero();
        for (int j = 0; j < m; j++)
            acc = v8fma(v8set1(w[(size_t)j * ldw]), v8load(rows + (size_t)j * ld + t), acc);
        v8store(out + t, acc);
    }
    for (; t < n; t++) {
        float acc = 0.f;
        for (int j = 0; j < m; j++)
            acc += w[(size_t)j * ldw] * rows[(size_t)j * ld + t];
        out[t] = acc;
    }
}

/* g output rows at once, each n = 8 * nb floats (out row r at out + r * ldo):
 * out_r = sum over j < m of w[r * ws + j * ldw] * rows[j * ld + ..], the g * nb sums in
 * separate registers so their fused multiply-adds overlap instead of waiting on one
 * another -- per element the same sum in j order as vweighted_rows. */
static inline __attribute__((always_inline)) void vweighted_tile(const int g, const int nb, float *out, size_t ldo,
                                                                 const float *w, size_t ldw, size_t ws,
                                                                 const float *rows, size_t ld, int m)
{
    fs_v8 acc[4][8];
    for (int r = 0; r < g; r++)
        for (int b = 0; b < nb; b++)
            acc[r][b] = v8zero();
    for (int j = 0; j < m; j++) {
        fs_v8 x[8];
        for (int b = 0; b < nb; b++)
            x[b] = v8load(rows + (size_t)j * ld + 8 * b);
        for (int r = 0; r < g; r++) {
            fs_v8 s = v8set1(w[r * ws + (size_t)j * ldw]);
            for (int b = 0; b < nb; b++)
                acc[r][b] = v8fma(s, x[b], acc[r][b]);
        }
    }
    for (int r = 0; r < g; r++)
        for (int b = 0; b < nb; b++)
            v8store(out + r * ldo + 8 * b, acc[r][b]);
}

/* vweighted_rows for `count` output rows (row r: out + r * ldo, weights w + r * ws), in
 * tiles of up to 8 independent sums when n is 8, 16, 32 or 64. */
static inline void vweighted_rows_n(float *out, size_t ldo, int count, const float *w, size_t ldw, size_t ws,
                                    const float *rows, size_t ld, int m, int n)
{
    int r = 0;
#define FS_WROWS(G, NB)                                                                                            \
    for (; r + G <= count; r += G)                                                                                 \
        vweighted_tile(G, NB, out + (size_t)r * ldo, ldo, w + (size_t)r * ws, ldw, ws, rows, ld, m);             \
    for (; r < count; r++)                                                                                         \
        vweighted_tile(1, NB, out + (size_t)r * ldo, ldo, w + (size_t)r * ws, ldw, ws, rows, ld, m);
    switch (n) {
    case 8: FS_WROWS(4, 1) break;
    case 16: FS_WROWS(4, 2) break;
    case 32: FS_WROWS(2, 4) break;
    case 64: FS_WROWS(1, 8) break;
    default:
        for (; r < count; r++)
            vweighted_rows(out + (size_t)r * ldo, w + (size_t)r * ws, ldw, rows, ld, m, n);
    }
#undef FS_WROWS
}

/* y[0..n) += a * x[0..n) */
static inline void vaxpy(float *y, float a, const float *x, int n)
{
    int t = 0;
    fs_v8 va = v8set1(a);
    for (; t + 8 <= n; t += 8)
        v8store(y + t, v8fma(va, v8load(x + t), v8load(y + t)));
    for (; t < n; t++)
        y[t] += a * x[t];
}

#endif
