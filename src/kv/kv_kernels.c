/* SIMD kernels of the key-value cache step (layout in kv_internal.h): activations are
 * [features][KV_LANES], one AVX-512 vector = one feature of 16 tokens. Element-wise
 * arithmetic follows the order of forward.c/kernels.c (docs/model.md) so that the
 * results agree with the full forward to float rounding of the matmul sums. */
#include "kv/kv_internal.h"
#include "base/fileio.h"

#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <simde/x86/avx512.h>

typedef simde__m512 vec;

#define LANE_VECS for (int v = 0; v < KV_VECS; v++)
#define LD(p) simde_mm512_loadu_ps(p)
#define ST(p, x) simde_mm512_storeu_ps((p), (x))
#define SET1(x) simde_mm512_set1_ps(x)

/* ---- packed Linear layers ---- */

int kv_linear_pack(kv_linear *l, const float *w, const float *bias, int n, int k, int block)
{
    size_t blocks = (size_t)(n + block - 1) / block;
    l->n = n;
    l->k = k;
    l->block = block;
    l->w = fs_alloc(sizeof(float) * blocks * (size_t)k * block);
    l->bias = fs_alloc(sizeof(float) * (size_t)n);
    if (!l->w || !l->bias) {
        kv_linear_free(l);
        return -1;
    }
    for (int r = 0; r < n; r++)
        for (int i = 0; i < k; i++)
            l->w[((size_t)(r / block) * k + i) * block + r % block] = w[(size_t)r * k + i];
    if (bias)
        memcpy(l->bias, bias, sizeof(float) * (size_t)n);
    return 0;
}

void kv_linear_free(kv_linear *l)
{
    free(l->w);
    free(l->bias);
    memset(l, 0, sizeof *l);
}

/* ---- vector math ---- */

/* exp(x) = 2^n * p(r), n = round(x / ln2), r = x - n ln2 (|r| <= ln2/2; Cephes expf
 * polynomial, ~1 ulp); scalef applies 2^n and saturates to 0 / inf far out of range. */
static inline vec vexp(vec x)
{
    vec n = simde_mm512_roundscale_ps(simde_mm512_mul_ps(x, SET1(1.44269504088896341f)),
                                      SIMDE_MM_FROUND_TO_NEAREST_INT | SIMDE_MM_FROUND_NO_EXC);
    vec r = simde_mm512_fnmadd_ps(n, SET1(0.693359375f), x);
    r = simde_mm512_fnmadd_ps(n, SET1(-2.12194440e-4f), r);
    vec p = SET1(1.9875691500e-4f);
    p = simde_mm512_fmadd_ps(p, r, SET1(1.3981999507e-3f));
    p = simde_mm512_fmadd_ps(p, r, SET1(8.3334519073e-3f));
    p = simde_mm512_fmadd_ps(p, r, SET1(4.1665795894e-2f));
    p = simde_mm512_fmadd_ps(p, r, SET1(1.6666665459e-1f));
    p = simde_mm512_fmadd_ps(p, r, SET1(5.0000001201e-1f));
    p = simde_mm512_fmadd_ps(simde_mm512_mul_ps(p, r), r, simde_mm512_add_ps(r, SET1(1.f)));
    return simde_mm512_scalef_ps(p, n);
}

/* GELU, tanh form: 0.5 x (1 + tanh u) = x / (1 + exp(-2u)), u = sqrt(2/pi)(x + 0.044715 x^3). */
static inline vec gelu(vec x)
{
    const float k2 = -2.f * 0.7978845608028654f;
    vec minus_2u = simde_mm512_mul_ps(x, simde_mm512_fmadd_ps(simde_mm512_mul_ps(x, x), SET1(k2 * 0.044715f), SET1(k2)));
    return simde_mm512_div_ps(x, simde_mm512_add_ps(SET1(1.f), vexp(minus_2u)));
}

/* ---- matmuls ---- */

/* What a matmul does with W in + b before storing it. */
typedef enum { EPI_STORE, EPI_GELU, EPI_ADD_TO } epilogue;

/* One block of KV_ROWS outputs, feature-major: acc[r] = sum_i w[i][r] * in[i] over all
 * lanes, y = acc + bias, then out = y, gelu(y) or out + y. */
static inline void matmul_block(float *out, const float *in, const float *wb, const float *bias, int k, int rows,
                                epilogue epi)
{
    vec acc[KV_ROWS][KV_VECS];
    for (int r = 0; r < KV_ROWS; r++)
        LANE_VECS acc[r][v] = simde_mm512_setzero_ps();
    for (int i = 0; i < k; i++) {
        vec x[KV_VECS];
        LANE_VECS x[v] = LD(in + (size_t)i * KV_LANES + 16 * v);
        const float *wi = wb + (size_t)i * KV_ROWS;
        for (int r = 0; r < KV_ROWS; r++) {
            vec wr = SET1(wi[r]);
            LANE_VECS acc[r][v] = simde_mm512_fmadd_ps(wr, x[v], acc[r][v]);
        }
    }
    for (int r = 0; r < rows; r++)
        LANE_VECS {
            float *o = out + (size_t)r * KV_LANES + 16 * v;
            vec y = simde_mm512_add_ps(acc[r][v], SET1(bias[r]));
            ST(o, epi == EPI_GELU ? gelu(y) : epi == EPI_ADD_TO ? simde_mm512_add_ps(LD(o), y) : y);
        }
}

static void matmul(float *out, const float *in, const kv_linear *l, epilogue epi)
{
    assert(l->block == KV_ROWS);
    for (int r0 = 0; r0 < l->n; r0 += KV_ROWS) {
        int rows = l->n - r0 < KV_ROWS ? l->n - r0 : KV_ROWS;
        matmul_block(out + (size_t)r0 * KV_LANES, in, l->w + (size_t)r0 * l->k, l->bias + r0, l->k, rows, epi);
    }
}

void kv_matmul(float *out, const float *in, const kv_linear *l) { matmul(out, in, l, EPI_STORE); }
void kv_matmul_gelu(float *out, const float *in, const kv_linear *l) { matmul(out, in, l, EPI_GELU); }
void kv_matmul_add_to(float *out, const float *in, const kv_linear *l) { matmul(out, in, l, EPI_ADD_TO); }

/* 16 x 16 transpose in registers: r[i] = row i -> r[j] = column j (interleave pairs,
 * then quads, then 128-bit lanes, then 256-bit halves). */
static inline void transpose16(vec r[16])
{
    vec t[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = simde_mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = simde_mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {
        r[i] = simde_mm512_shuffle_ps(t[i], t[i + 2], 0x44);
        r[i + 1] = simde_mm512_shuffle_ps(t[i], t[i + 2], 0xEE);
        r[i + 2] = simde_mm512_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        r[i + 3] = simde_mm512_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
    }
    for (int i = 0; i < 4; i++) {
        t[i] = simde_mm512_shuffle_f32x4(r[i], r[i + 4], 0x88);
        t[i + 4] = simde_mm512_shuffle_f32x4(r[i], r[i + 4], 0xDD);
        t[i + 8] = simde_mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0x88);
        t[i + 12] = simde_mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0xDD);
    }
    for (int i = 0; i < 8; i++) {
        r[i] = simde_mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
        r[i + 8] = simde_mm512_shuffle_f32x4(t[i], t[i + 8], 0xDD);
    }
}

/* Tile-major staging of KV_LANES token rows for kv_matmul_rows: element (q, i) of the
 * [L][k] rows lands at tile (q / 16, i / 16), offset (q % 16) * 16 + i % 16, so the kernel
 * addresses 16 tokens with constant offsets. Rows >= `rows` and columns >= k are 0. */
void kv_stage_rows(float *staged, const float *src, int rows, int k)
{
    int tiles = (k + 15) / 16;
    for (int q = 0; q < KV_LANES; q++)
        for (int t = 0; t < tiles; t++) {
            float *dst = staged + (((size_t)(q / 16) * tiles + t) * 16 + q % 16) * 16;
            int cols = k - 16 * t < 16 ? k - 16 * t : 16;
            if (q < rows && cols == 16) {
                ST(dst, LD(src + (size_t)q * k + 16 * t));
            } else {
                memset(dst, 0, sizeof(float) * 16);
                if (q < rows)
                    memcpy(dst, src + (size_t)q * k + 16 * t, sizeof(float) * cols);
            }
        }
}

/* 16 staged tokens x 16 outputs: acc[q] = sum_i in[q][i] * w[i][:], transposed in
 * registers to feature-major rows of 16 lanes, + bias. */
static void matmul_rows_block(float *out, const float *staged, const float *wb, const float *bias, int k, int outputs)
{
    vec acc[16];
    for (int q = 0; q < 16; q++)
        acc[q] = simde_mm512_setzero_ps();
    for (int i0 = 0; i0 < k; i0 += 16) {
        const float *tile = staged + (size_t)i0 * 16;
        int cols = k - i0 < 16 ? k - i0 : 16;
        for (int j = 0; j < cols; j++) {
            vec w = LD(wb + (size_t)(i0 + j) * 16);
            for (int q = 0; q < 16; q++)
                acc[q] = simde_mm512_fmadd_ps(SET1(tile[q * 16 + j]), w, acc[q]);
        }
    }
    transpose16(acc);
    for (int j = 0; j < outputs; j++)
        ST(out + (size_t)j * KV_LANES, simde_mm512_add_ps(acc[j], SET1(bias[j])));
}

void kv_matmul_rows(float *out, const float *staged, const kv_linear *l)
{
    assert(l->block == 16);
    size_t half = (size_t)16 * ((l->k + 15) / 16 * 16);
    for (int q0 = 0; q0 < KV_LANES; q0 += 16)
        for (int r0 = 0; r0 < l->n; r0 += 16)
            matmul_rows_block(out + (size_t)r0 * KV_LANES + q0, staged + (q0 / 16) * half, l->w + (size_t)r0 * l->k,
                              l->bias + r0, l->k, l->n - r0 < 16 ? l->n - r0 : 16);
}

/* ---- element-wise layers ---- */

/* LayerNorm over the feature axis (biased variance, eps 1e-5), as fs_layernorm_forward. */
void kv_layernorm(float *out, const float *in, const float *w, const float *b, int dim)
{
    vec n = SET1((float)dim), one = SET1(1.f), eps = SET1(1e-5f);
    LANE_VECS {
        const float *x = in + 16 * v;
        float *y = out + 16 * v;
        vec mu = simde_mm512_setzero_ps();
        for (int i = 0; i < dim; i++)
            mu = simde_mm512_add_ps(mu, LD(x + (size_t)i * KV_LANES));
        mu = simde_mm512_div_ps(mu, n);
        vec var = simde_mm512_setzero_ps();
        for (int i = 0; i < dim; i++) {
            vec c = simde_mm512_sub_ps(LD(x + (size_t)i * KV_LANES), mu);
            var = simde_mm512_add_ps(var, simde_mm512_mul_ps(c, c));
        }
        var = simde_mm512_div_ps(var, n);
        vec rstd = simde_mm512_div_ps(one, simde_mm512_sqrt_ps(simde_mm512_add_ps(var, eps)));
        for (int i = 0; i < dim; i++) {
            vec c = simde_mm512_mul_ps(simde_mm512_sub_ps(LD(x + (size_t)i * KV_LANES), mu), rstd);
            ST(y + (size_t)i * KV_LANES, simde_mm512_add_ps(simde_mm512_mul_ps(c, SET1(w[i])), SET1(b[i])));
        }
    }
}

/* RoPE on the step's tokens (one position): pair i of every head, (x0, x1) ->
 * (x0 cos - x1 sin, x1 cos + x0 sin) (docs/model.md, interleaved pairs). */
void kv_rope(float *rows, const kv_position *p, int heads, int hd)
{
    for (int h = 0; h < heads; h++)
        for (int i = 0; i < hd / 2; i++) {
            float *r0 = rows + (size_t)(h * hd + 2 * i) * KV_LANES, *r1 = r0 + KV_LANES;
            vec c = SET1(p->rope_cos[i]), s = SET1(p->rope_sin[i]);
            LANE_VECS {
                vec x0 = LD(r0 + 16 * v), x1 = LD(r1 + 16 * v);
                ST(r0 + 16 * v, simde_mm512_sub_ps(simde_mm512_mul_ps(x0, c), simde_mm512_mul_ps(x1, s)));
                ST(r1 + 16 * v, simde_mm512_add_ps(simde_mm512_mul_ps(x1, c), simde_mm512_mul_ps(x0, s)));
            }
        }
}

/* ---- attention of one head: context keys [0, seq) then the token itself ---- */

enum { KEY_BLOCK = 4, DIM_BLOCK = 8 }; /* keys / value dims kept in registers at once */

/* scores[j] = (q . ctx_k[j]) * scale for n <= KEY_BLOCK context keys (sum over t ascending). */
static inline void context_scores(float *scores, const float *q, const float *ctx_k, int n, int hd, vec scale)
{
    vec acc[KEY_BLOCK][KV_VECS];
    for (int j = 0; j < n; j++)
        LANE_VECS acc[j][v] = simde_mm512_setzero_ps();
    for (int t = 0; t < hd; t++) {
        vec qt[KV_VECS];
        LANE_VECS qt[v] = LD(q + (size_t)t * KV_LANES + 16 * v);
        for (int j = 0; j < n; j++)
            LANE_VECS acc[j][v] = simde_mm512_fmadd_ps(qt[v], SET1(ctx_k[(size_t)j * hd + t]), acc[j][v]);
    }
    for (int j = 0; j < n; j++)
        LANE_VECS ST(scores + (size_t)j * KV_LANES + 16 * v, simde_mm512_mul_ps(acc[j][v], scale));
}

/* Scores of the seq context keys, then of the token's own key at index seq. */
static void head_scores(float *scores, const float *q, const float *k, const float *ctx_k, int seq, int hd)
{
    vec scale = SET1(1.0f / sqrtf((float)hd));
    int j = 0;
    for (; j + KEY_BLOCK <= seq; j += KEY_BLOCK)
        context_scores(scores + (size_t)j * KV_LANES, q, ctx_k + (size_t)j * hd, KEY_BLOCK, hd, scale);
    for (; j < seq; j++)
        context_scores(scores + (size_t)j * KV_LANES, q, ctx_k + (size_t)j * hd, 1, hd, scale);
    LANE_VECS {
        vec acc = simde_mm512_setzero_ps();
        for (int t = 0; t < hd; t++)
            acc = simde_mm512_fmadd_ps(LD(q + (size_t)t * KV_LANES + 16 * v), LD(k + (size_t)t * KV_LANES + 16 * v), acc);
        ST(scores + (size_t)seq * KV_LANES + 16 * v, simde_mm512_mul_ps(acc, scale));
    }
}

/* Softmax over the seq + 1 keys of every lane, in place (as fs_softmax_forward). */
static void head_softmax(float *scores, int keys)
{
    LANE_VECS {
        float *s = scores + 16 * v;
        vec mx = LD(s);
        for (int j = 1; j < keys; j++)
            mx = simde_mm512_max_ps(mx, LD(s + (size_t)j * KV_LANES));
        vec sum = simde_mm512_setzero_ps();
        for (int j = 0; j < keys; j++) {
            vec e = vexp(simde_mm512_sub_ps(LD(s + (size_t)j * KV_LANES), mx));
            ST(s + (size_t)j * KV_LANES, e);
            sum = simde_mm512_add_ps(sum, e);
        }
        vec inv = simde_mm512_div_ps(SET1(1.f), sum);
        for (int j = 0; j < keys; j++)
            ST(s + (size_t)j * KV_LANES, simde_mm512_mul_ps(LD(s + (size_t)j * KV_LANES), inv));
    }
}

/* vals[t] = sum_j p_j ctx_v[j][t] + p_self v[t] for n <= DIM_BLOCK dims t0.. (j ascending). */
static inline void head_values(float *vals, const float *probs, const float *ctx_v, const float *v_rows, int seq,
                               int t0, int n, int hd)
{
    vec acc[DIM_BLOCK][KV_VECS];
    for (int t = 0; t < n; t++)
        LANE_VECS acc[t][v] = simde_mm512_setzero_ps();
    for (int j = 0; j < seq; j++) {
        vec p[KV_VECS];
        LANE_VECS p[v] = LD(probs + (size_t)j * KV_LANES + 16 * v);
        for (int t = 0; t < n; t++)
            LANE_VECS acc[t][v] = simde_mm512_fmadd_ps(p[v], SET1(ctx_v[(size_t)j * hd + t0 + t]), acc[t][v]);
    }
    for (int t = 0; t < n; t++)
        LANE_VECS {
            vec self = simde_mm512_fmadd_ps(LD(probs + (size_t)seq * KV_LANES + 16 * v),
                                            LD(v_rows + (size_t)(t0 + t) * KV_LANES + 16 * v), acc[t][v]);
            ST(vals + (size_t)(t0 + t) * KV_LANES + 16 * v, self);
        }
}

void kv_attend_head(float *vals, const float *q, const float *k, const float *v_rows, const float *ctx_k,
                    const float *ctx_v, int seq, int hd, float *scores)
{
    head_scores(scores, q, k, ctx_k, seq, hd);
    head_softmax(scores, seq + 1);
    int t = 0;
    for (; t + DIM_BLOCK <= hd; t += DIM_BLOCK)
        head_values(vals, scores, ctx_v, v_rows, seq, t, DIM_BLOCK, hd);
    for (; t < hd; t++)
        head_values(vals, scores, ctx_v, v_rows, seq, t, 1, hd);
}
