/* The vector types every kernel is written in, mapped onto SIMDe for the build's width:
 *   fs_vf  FS_VL floats: 16 (AVX-512) when the compiler targets AVX-512, else 8 (AVX2/FMA
 *          natively, or SIMDe's portable fallback, e.g. on ARM or with -DSIMDE_NO_NATIVE);
 *   fs_v8  always 8 floats (an AVX register; on AVX-512 builds the VL encoding), for code
 *          whose natural width is 8 (one head of width 8, the 8 heads of a token).
 * Both have the same operation names, prefixed v (fs_vf) and v8 (fs_v8), so that
 * vmath.h writes each function once for both. This folder is the only place naming
 * SIMDe (make check-layers). Also the register blocking of the kernels for the width. */
#ifndef FEWSHOT_SIMD_VEC_H
#define FEWSHOT_SIMD_VEC_H

#include <stddef.h>

#include <simde/x86/avx2.h>
#include <simde/x86/avx512.h>
#include <simde/x86/fma.h>

/* ---- fs_v8: 8 floats ---- */
typedef simde__m256 fs_v8;
#define v8load(p) simde_mm256_loadu_ps(p)
#define v8store(p, v) simde_mm256_storeu_ps((p), (v))
#define v8set1(x) simde_mm256_set1_ps(x)
#define v8zero() simde_mm256_setzero_ps()
#define v8add(a, b) simde_mm256_add_ps((a), (b))
#define v8sub(a, b) simde_mm256_sub_ps((a), (b))
#define v8mul(a, b) simde_mm256_mul_ps((a), (b))
#define v8div(a, b) simde_mm256_div_ps((a), (b))
#define v8max(a, b) simde_mm256_max_ps((a), (b))
#define v8min(a, b) simde_mm256_min_ps((a), (b))
#define v8fma(a, b, c) simde_mm256_fmadd_ps((a), (b), (c))   /* a*b + c */
#define v8fnma(a, b, c) simde_mm256_fnmadd_ps((a), (b), (c)) /* c - a*b */
/* (x0, x1, x2, x3, ...) -> (x1, x0, x3, x2, ...): the partner of each pair */
#define v8swap_pairs(a) simde_mm256_permute_ps((a), 0xB1)
/* 2^n for float-held integers n in [-126, 127] (via the exponent bits) */
static inline fs_v8 v8exp2i(fs_v8 n)
{
    simde__m256i i = simde_mm256_castps_si256(simde_mm256_add_ps(n, simde_mm256_set1_ps(12582912.0f + 127.0f)));
    return simde_mm256_castsi256_ps(simde_mm256_slli_epi32(i, 23));
}
/* v where x >= lo, else 0 */
static inline fs_v8 v8keep_ge(fs_v8 v, fs_v8 x, fs_v8 lo)
{
    return simde_mm256_and_ps(v, simde_mm256_cmp_ps(x, lo, SIMDE_CMP_GE_OQ));
}

/* The first n lanes (n <= 8; a masked-off lane touches no memory): for the columns past
 * the last whole vector. v8load_first zeroes the other lanes. */
static inline simde__m256i v8first_mask(int n)
{
    return simde_mm256_cmpgt_epi32(simde_mm256_set1_epi32(n), simde_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
static inline fs_v8 v8load_first(const float *p, int n) { return simde_mm256_maskload_ps(p, v8first_mask(n)); }
static inline void v8store_first(float *p, fs_v8 v, int n) { simde_mm256_maskstore_ps(p, v8first_mask(n), v); }

/* ---- fs_vf: FS_VL floats ---- */
#if defined(SIMDE_X86_AVX512F_NATIVE) && !defined(FS_NO_AVX512)
#define FS_VL 16
#define FS_SIMD_NAME "AVX-512"
#define FS_NREGS 32 /* vector registers */
#define FS_MR 6     /* rows x vectors of the matmul micro-tile: 24 of the 32 registers */
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
#define vfma(a, b, c) simde_mm512_fmadd_ps((a), (b), (c))
#define vfnma(a, b, c) simde_mm512_fnmadd_ps((a), (b), (c))
/* the low 8 lanes, and 8 lanes widened with zeros */
static inline fs_v8 vlow8(fs_vf v) { return simde_mm512_castps512_ps256(v); }
static inline fs_v8 vhigh8(fs_vf v)
{
    return simde_mm256_castpd_ps(simde_mm512_extractf64x4_pd(simde_mm512_castps_pd(v), 1));
}
static inline fs_vf vwiden8(fs_v8 v) { return simde_mm512_insertf32x8(simde_mm512_setzero_ps(), v, 0); }
/* the first n lanes (n < 16), through the two 8-lane halves */
static inline fs_vf vload_first(const float *p, int n)
{
    fs_vf lo = vwiden8(v8load_first(p, n < 8 ? n : 8));
    return n <= 8 ? lo : simde_mm512_insertf32x8(lo, v8load_first(p + 8, n - 8), 1);
}
static inline void vstore_first(float *p, fs_vf v, int n)
{
    v8store_first(p, vlow8(v), n < 8 ? n : 8);
    if (n > 8)
        v8store_first(p + 8, vhigh8(v), n - 8);
}
static inline fs_vf vexp2i(fs_vf n)
{
    simde__m512i i = simde_mm512_castps_si512(simde_mm512_add_ps(n, simde_mm512_set1_ps(12582912.0f + 127.0f)));
    return simde_mm512_castsi512_ps(simde_mm512_slli_epi32(i, 23));
}
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
/* 128-bit blocks: (a0 a1 a2 a3), (b0 ..) -> (a0 a2 b0 b2) with 0x88, (a1 a3 b1 b3) with 0xDD */
#define vshuffle_blocks(a, b, imm) simde_mm512_shuffle_f32x4((a), (b), (imm))
#define vunpacklo(a, b) simde_mm512_unpacklo_ps((a), (b))
#define vunpackhi(a, b) simde_mm512_unpackhi_ps((a), (b))
#define vshuffle(a, b, imm) simde_mm512_shuffle_ps((a), (b), (imm))
#else
#define FS_VL 8
#if defined(SIMDE_X86_AVX2_NATIVE) && defined(SIMDE_X86_FMA_NATIVE)
#define FS_SIMD_NAME "AVX2+FMA"
#else
#define FS_SIMD_NAME "portable (SIMDe)"
#endif
#define FS_NREGS 16
#define FS_MR 6 /* 12 accumulators of 16 registers */
#define FS_NV 2
typedef simde__m256 fs_vf;
#define vload v8load
#define vstore v8store
#define vset1 v8set1
#define vzero v8zero
#define vadd v8add
#define vsub v8sub
#define vmul v8mul
#define vdiv v8div
#define vmax v8max
#define vmin v8min
#define vsqrt(a) simde_mm256_sqrt_ps(a)
#define vfma v8fma
#define vfnma v8fnma
#define vexp2i v8exp2i
#define vkeep_ge v8keep_ge
static inline fs_v8 vlow8(fs_vf v) { return v; }
static inline fs_vf vwiden8(fs_v8 v) { return v; }
#define vload_first v8load_first
#define vstore_first v8store_first
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
#endif

/* a*b + c through the vector FMA (fused or not, as the vector lanes compute it) */
static inline float sfma(float a, float b, float c)
{
    return simde_mm_cvtss_f32(simde_mm256_castps256_ps128(v8fma(v8set1(a), v8set1(b), v8set1(c))));
}

/* Steps of the in-register transposes (vmath.h), on 8-float vectors. */
#define v8unpacklo(a, b) simde_mm256_unpacklo_ps((a), (b))
#define v8unpackhi(a, b) simde_mm256_unpackhi_ps((a), (b))
#define v8shuffle(a, b, imm) simde_mm256_shuffle_ps((a), (b), (imm))
#define v8permute_halves(a, b, imm) simde_mm256_permute2f128_ps((a), (b), (imm))

/* Horizontal reductions of 4 floats (the last steps of vmath.h's sums). */
typedef simde__m128 fs_v4;
#define v8lo4(v) simde_mm256_castps256_ps128(v)
#define v8hi4(v) simde_mm256_extractf128_ps((v), 1)
#define v4add(a, b) simde_mm_add_ps((a), (b))
#define v4max(a, b) simde_mm_max_ps((a), (b))
#define v4add1(a, b) simde_mm_add_ss((a), (b))
#define v4max1(a, b) simde_mm_max_ss((a), (b))
#define v4movehl(a) simde_mm_movehl_ps((a), (a))
#define v4lane1(a) simde_mm_shuffle_ps((a), (a), 1)
#define v4first(a) simde_mm_cvtss_f32(a)

/* 4 doubles (sums of squares in double) */
typedef simde__m256d fs_vd4;
#define vd4zero() simde_mm256_setzero_pd()
#define vd4from4(p) simde_mm256_cvtps_pd(simde_mm_loadu_ps(p)) /* 4 floats widened */
#define vd4fma(a, b, c) simde_mm256_fmadd_pd((a), (b), (c))
#define vd4add(a, b) simde_mm256_add_pd((a), (b))
#define vd4store(p, v) simde_mm256_storeu_pd((p), (v))

#endif
