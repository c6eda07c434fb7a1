/* The vector type the kernels are written in, on SIMDe: 16 floats (AVX-512) when the
 * compiler targets AVX-512, else 8 floats (AVX2/FMA natively, or SIMDe's portable
 * fallback elsewhere). Also the register blocking of the matrix kernels for each width
 * and a vectorised exp. Internal to the kernels. */
#ifndef FEWSHOT_KERNELS_SIMD_H
#define FEWSHOT_KERNELS_SIMD_H

#include <simde/x86/avx2.h>
#include <simde/x86/avx512.h>
#include <simde/x86/fma.h>

#if defined(SIMDE_X86_AVX512F_NATIVE) && !defined(FS_NO_AVX512)
#define FS_VL 16
#define FS_MR 6 /* rows x vectors of the matmul micro-tile: 24 of the 32 registers */
#define FS_NV 4
typedef simde__m512 fs_vf;
#define vload(p) simde_mm512_loadu_ps(p)
#define vstore(p, v) simde_mm512_storeu_ps((p), (v))
#define vset1(x) simde_mm512_set1_ps(x)
#define vzero() simde_mm512_setzero_ps()
#define vadd(a, b) simde_mm512_add_ps((a), (b))
#define vsub(a, b) simde_mm512_sub_ps((a), (b))
#define vmul(a, b) simde_mm512_mul_ps((a), (b))
#define vdiv(a, b) simde_mm512_div_ps((a), (b))
#define vmax(a, b) simde_mm512_max_ps((a), (b))
#define vmin(a, b) simde_mm512_min_ps((a), (b))
#define vsqrt(a) simde_mm512_sqrt_ps(a)
#define vfma(a, b, c) simde_mm512_fmadd_ps((a), (b), (c))   /* a*b + c */
#define vfnma(a, b, c) simde_mm512_fnmadd_ps((a), (b), (c)) /* c - a*b */
static inline float vhsum(fs_vf v)
{
    simde__m256 lo = simde_mm512_castps512_ps256(v);
    simde__m256 hi = simde_mm256_castpd_ps(simde_mm512_extractf64x4_pd(simde_mm512_castps_pd(v), 1));
    simde__m256 s = simde_mm256_add_ps(lo, hi);
    simde__m128 q = simde_mm_add_ps(simde_mm256_castps256_ps128(s), simde_mm256_extractf128_ps(s, 1));
    q = simde_mm_add_ps(q, simde_mm_movehl_ps(q, q));
    q = simde_mm_add_ss(q, simde_mm_shuffle_ps(q, q, 1));
    return simde_mm_cvtss_f32(q);
}
/* a*b + c through the vector FMA (fused or not, as the vector lanes compute it) */
static inline float sfma(float a, float b, float c)
{
    return simde_mm_cvtss_f32(simde_mm512_castps512_ps128(vfma(vset1(a), vset1(b), vset1(c))));
}
/* 2^n for float-held integers n in [-126, 127] (via the exponent bits) */
static inline fs_vf vexp2i(fs_vf n)
{
    simde__m512i i = simde_mm512_castps_si512(simde_mm512_add_ps(n, simde_mm512_set1_ps(12582912.0f + 127.0f)));
    return simde_mm512_castsi512_ps(simde_mm512_slli_epi32(i, 23));
}
/* x where x >= lo, else 0 */
static inline fs_vf vkeep_ge(fs_vf v, fs_vf x, fs_vf lo)
{
    return simde_mm512_maskz_mov_ps(simde_mm512_cmp_ps_mask(x, lo, SIMDE_CMP_GE_OQ), v);
}
/* lanes j > i take `fill`, the others keep v */
static inline fs_vf vfill_after(fs_vf v, int i, float fill)
{
    simde__mmask16 keep = (simde__mmask16)(i >= 15 ? 0xFFFF : (1u << (i + 1)) - 1u);
    return simde_mm512_mask_blend_ps(keep, vset1(fill), v);
}
/* lanes i < j take `fill`, the others keep v */
static inline fs_vf vfill_before(fs_vf v, int j, float fill)
{
    simde__mmask16 keep = (simde__mmask16)(j >= 16 ? 0 : ~((1u << j) - 1u));
    return simde_mm512_mask_blend_ps(keep, vset1(fill), v);
}
static inline simde__m256 vlow8(fs_vf v) { return simde_mm512_castps512_ps256(v); }
static inline fs_vf vwiden8(simde__m256 v) { return simde_mm512_insertf32x8(simde_mm512_setzero_ps(), v, 0); }
static inline float vhmax(fs_vf v)
{
    simde__m256 lo = simde_mm512_castps512_ps256(v);
    simde__m256 hi = simde_mm256_castpd_ps(simde_mm512_extractf64x4_pd(simde_mm512_castps_pd(v), 1));
    simde__m256 s = simde_mm256_max_ps(lo, hi);
    simde__m128 q = simde_mm_max_ps(simde_mm256_castps256_ps128(s), simde_mm256_extractf128_ps(s, 1));
    q = simde_mm_max_ps(q, simde_mm_movehl_ps(q, q));
    q = simde_mm_max_ss(q, simde_mm_shuffle_ps(q, q, 1));
    return simde_mm_cvtss_f32(q);
}
#else
#define FS_VL 8
#define FS_MR 6 /* 12 accumulators of 16 registers */
#define FS_NV 2
typedef simde__m256 fs_vf;
#define vload(p) simde_mm256_loadu_ps(p)
#define vstore(p, v) simde_mm256_storeu_ps((p), (v))
#define vset1(x) simde_mm256_set1_ps(x)
#define vzero() simde_mm256_setzero_ps()
#define vadd(a, b) simde_mm256_add_ps((a), (b))
#define vsub(a, b) simde_mm256_sub_ps((a), (b))
#define vmul(a, b) simde_mm256_mul_ps((a), (b))
#define vdiv(a, b) simde_mm256_div_ps((a), (b))
#define vmax(a, b) simde_mm256_max_ps((a), (b))
#define vmin(a, b) simde_mm256_min_ps((a), (b))
#define vsqrt(a) simde_mm256_sqrt_ps(a)
#define vfma(a, b, c) simde_mm256_fmadd_ps((a), (b), (c))
#define vfnma(a, b, c) simde_mm256_fnmadd_ps((a), (b), (c))
static inline float vhsum(fs_vf v)
{
    simde__m128 q = simde_mm_add_ps(simde_mm256_castps256_ps128(v), simde_mm256_extractf128_ps(v, 1));
    q = simde_mm_add_ps(q, simde_mm_movehl_ps(q, q));
    q = simde_mm_add_ss(q, simde_mm_shuffle_ps(q, q, 1));
    return simde_mm_cvtss_f32(q);
}
static inline float sfma(float a, float b, float c)
{
    return simde_mm_cvtss_f32(simde_mm256_castps256_ps128(vfma(vset1(a), vset1(b), vset1(c))));
}
static inline fs_vf vexp2i(fs_vf n)
{
    simde__m256i i = simde_mm256_castps_si256(simde_mm256_add_ps(n, simde_mm256_set1_ps(12582912.0f + 127.0f)));
    return simde_mm256_castsi256_ps(simde_mm256_slli_epi32(i, 23));
}
static inline fs_vf vkeep_ge(fs_vf v, fs_vf x, fs_vf lo)
{
    return simde_mm256_and_ps(v, simde_mm256_cmp_ps(x, lo, SIMDE_CMP_GE_OQ));
}
static inline fs_vf vfill_after(fs_vf v, int i, float fill)
{
    fs_vf iota = simde_mm256_setr_ps(0.f, 1.f, 2.f, 3.f, 4.f, 5.f, 6.f, 7.f);
    return simde_mm256_blendv_ps(v, vset1(fill), simde_mm256_cmp_ps(iota, vset1((float)i), SIMDE_CMP_GT_OQ));
}
static inline fs_vf vfill_before(fs_vf v, int j, float fill)
{
    fs_vf iota = simde_mm256_setr_ps(0.f, 1.f, 2.f, 3.f, 4.f, 5.f, 6.f, 7.f);
    return simde_mm256_blendv_ps(v, vset1(fill), simde_mm256_cmp_ps(iota, vset1((float)j), SIMDE_CMP_LT_OQ));
}
static inline simde__m256 vlow8(fs_vf v) { return v; }
static inline fs_vf vwiden8(simde__m256 v) { return v; }
static inline float vhmax(fs_vf v)
{
    simde__m128 q = simde_mm_max_ps(simde_mm256_castps256_ps128(v), simde_mm256_extractf128_ps(v, 1));
    q = simde_mm_max_ps(q, simde_mm_movehl_ps(q, q));
    q = simde_mm_max_ss(q, simde_mm_shuffle_ps(q, q, 1));
    return simde_mm_cvtss_f32(q);
}
#endif

/* out[c] lane r = in[r] lane c, for 8 x 8 (lanes 8.. of a 16-wide vector are 0). */
static inline void vtranspose8_regs(fs_vf out[8], const simde__m256 r[8])
{
    simde__m256 t[8], s[8];
    for (int i = 0; i < 8; i += 2) {
        t[i] = simde_mm256_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = simde_mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 8; i += 4) {
        s[i] = simde_mm256_shuffle_ps(t[i], t[i + 2], 0x44);
        s[i + 1] = simde_mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
        s[i + 2] = simde_mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        s[i + 3] = simde_mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
    }
    for (int i = 0; i < 4; i++) {
        out[i] = vwiden8(simde_mm256_permute2f128_ps(s[i], s[i + 4], 0x20));
        out[i + 4] = vwiden8(simde_mm256_permute2f128_ps(s[i], s[i + 4], 0x31));
    }
}

/* kt[t] for t < 8: lane j (< n <= 8) = src[j * ld + t], the rest 0 -- an 8 x 8 transpose
 * in registers (no store-to-load round trip). */
static inline void vtranspose8_rows(fs_vf kt[8], const float *src, size_t ld, int n)
{
    simde__m256 r[8];
    for (int i = 0; i < 8; i++)
        r[i] = i < n ? simde_mm256_loadu_ps(src + (size_t)i * ld) : simde_mm256_setzero_ps();
    vtranspose8_regs(kt, r);
}

/* The same for 8 vectors' first 8 lanes. */
static inline void vtranspose8(fs_vf out[8], const fs_vf in[8])
{
    simde__m256 r[8];
    for (int i = 0; i < 8; i++)
        r[i] = vlow8(in[i]);
    vtranspose8_regs(out, r);
}

/* exp(x) to about 2 ulp: x = n ln2 + f, |f| <= ln2/2, exp(f) by a degree-6 polynomial
 * (Taylor-like coefficients refined for the interval), times 2^n. Above 88.7 it returns
 * +inf; below -87.3 (where the result would be subnormal) about 1e-38 -- vexp makes
 * that exactly 0. */
static inline fs_vf vexp_raw(fs_vf x)
{
    fs_vf xc = vmax(x, vset1(-87.3f));
    xc = vmin(xc, vset1(88.7f));
    fs_vf n = vsub(vfma(xc, vset1(1.44269504088896341f), vset1(12582912.0f)), vset1(12582912.0f));
    fs_vf f = vfnma(n, vset1(0.693359375f), xc);       /* ln2 split: high part exact in float */
    f = vfnma(n, vset1(-2.12194440e-4f), f);
    fs_vf p = vset1(1.9875691500e-4f);
    p = vfma(p, f, vset1(1.3981999507e-3f));
    p = vfma(p, f, vset1(8.3334519073e-3f));
    p = vfma(p, f, vset1(4.1665795894e-2f));
    p = vfma(p, f, vset1(1.6666665459e-1f));
    p = vfma(p, f, vset1(5.0000001201e-1f));
    p = vfma(vmul(p, f), f, vadd(f, vset1(1.f)));
    return vmul(p, vexp2i(n));
}

static inline fs_vf vexp(fs_vf x)
{
    const fs_vf lo = vset1(-87.3f);
    return vkeep_ge(vexp_raw(x), x, lo);
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

/* exp on 8 lanes, the same arithmetic as vexp lane for lane (for code that works on
 * 8-float vectors, e.g. across the 8 heads of a token). */
static inline simde__m256 v8exp(simde__m256 x)
{
    simde__m256 xc = simde_mm256_min_ps(simde_mm256_max_ps(x, simde_mm256_set1_ps(-87.3f)), simde_mm256_set1_ps(88.7f));
    simde__m256 n = simde_mm256_sub_ps(
        simde_mm256_fmadd_ps(xc, simde_mm256_set1_ps(1.44269504088896341f), simde_mm256_set1_ps(12582912.0f)),
        simde_mm256_set1_ps(12582912.0f));
    simde__m256 f = simde_mm256_fnmadd_ps(n, simde_mm256_set1_ps(0.693359375f), xc);
    f = simde_mm256_fnmadd_ps(n, simde_mm256_set1_ps(-2.12194440e-4f), f);
    simde__m256 p = simde_mm256_set1_ps(1.9875691500e-4f);
    p = simde_mm256_fmadd_ps(p, f, simde_mm256_set1_ps(1.3981999507e-3f));
    p = simde_mm256_fmadd_ps(p, f, simde_mm256_set1_ps(8.3334519073e-3f));
    p = simde_mm256_fmadd_ps(p, f, simde_mm256_set1_ps(4.1665795894e-2f));
    p = simde_mm256_fmadd_ps(p, f, simde_mm256_set1_ps(1.6666665459e-1f));
    p = simde_mm256_fmadd_ps(p, f, simde_mm256_set1_ps(5.0000001201e-1f));
    p = simde_mm256_fmadd_ps(simde_mm256_mul_ps(p, f), f, simde_mm256_add_ps(f, simde_mm256_set1_ps(1.f)));
    simde__m256i bits = simde_mm256_castps_si256(simde_mm256_add_ps(n, simde_mm256_set1_ps(12582912.0f + 127.0f)));
    simde__m256 r = simde_mm256_mul_ps(p, simde_mm256_castsi256_ps(simde_mm256_slli_epi32(bits, 23)));
    return simde_mm256_and_ps(r, simde_mm256_cmp_ps(x, simde_mm256_set1_ps(-87.3f), SIMDE_CMP_GE_OQ));
}

/* out[c] lane r = rows[r][c] for an 8 x 8 block of 8-float vectors. */
static inline void v8transpose(simde__m256 out[8], const simde__m256 r[8])
{
    simde__m256 t[8], s[8];
    for (int i = 0; i < 8; i += 2) {
        t[i] = simde_mm256_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = simde_mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 8; i += 4) {
        s[i] = simde_mm256_shuffle_ps(t[i], t[i + 2], 0x44);
        s[i + 1] = simde_mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
        s[i + 2] = simde_mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        s[i + 3] = simde_mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
    }
    for (int i = 0; i < 4; i++) {
        out[i] = simde_mm256_permute2f128_ps(s[i], s[i + 4], 0x20);
        out[i + 4] = simde_mm256_permute2f128_ps(s[i], s[i + 4], 0x31);
    }
}

#endif
