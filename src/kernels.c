/* Portable reference kernels; the matmuls use SIMDe AVX2 intrinsics. */
#include "fewshot/kernels.h"

#include <math.h>
#include <string.h>

#include <simde/x86/avx2.h>
#include <simde/x86/fma.h>

static inline float hsum256(simde__m256 v)
{
    simde__m128 lo = simde_mm256_castps256_ps128(v), hi = simde_mm256_extractf128_ps(v, 1);
    lo = simde_mm_add_ps(lo, hi);
    lo = simde_mm_add_ps(lo, simde_mm_movehl_ps(lo, lo));
    lo = simde_mm_add_ss(lo, simde_mm_shuffle_ps(lo, lo, 1));
    return simde_mm_cvtss_f32(lo);
}

static inline float dot(const float *a, const float *b, int K)
{
    simde__m256 acc0 = simde_mm256_setzero_ps(), acc1 = simde_mm256_setzero_ps();
    int k = 0;
    for (; k + 16 <= K; k += 16) {
        acc0 = simde_mm256_fmadd_ps(simde_mm256_loadu_ps(a + k), simde_mm256_loadu_ps(b + k), acc0);
        acc1 = simde_mm256_fmadd_ps(simde_mm256_loadu_ps(a + k + 8), simde_mm256_loadu_ps(b + k + 8), acc1);
    }
    for (; k + 8 <= K; k += 8)
        acc0 = simde_mm256_fmadd_ps(simde_mm256_loadu_ps(a + k), simde_mm256_loadu_ps(b + k), acc0);
    float s = hsum256(simde_mm256_add_ps(acc0, acc1));
    for (; k < K; k++)
        s += a[k] * b[k];
    return s;
}

/* y[0..n) += alpha * x[0..n) */
static inline void axpy(float *y, float alpha, const float *x, int n)
{
    simde__m256 va = simde_mm256_set1_ps(alpha);
    int i = 0;
    for (; i + 8 <= n; i += 8)
        simde_mm256_storeu_ps(y + i, simde_mm256_fmadd_ps(va, simde_mm256_loadu_ps(x + i), simde_mm256_loadu_ps(y + i)));
    for (; i < n; i++)
        y[i] += alpha * x[i];
}

void fs_matmul_forward(float *out, const float *in, const float *w, const float *bias, int M, int K, int N)
{
    for (int m = 0; m < M; m++) {
        const float *x = in + (size_t)m * K;
        float *y = out + (size_t)m * N;
        for (int n = 0; n < N; n++)
            y[n] = dot(x, w + (size_t)n * K, K) + (bias ? bias[n] : 0.f);
    }
}

void fs_matmul_backward(float *din, float *dw, float *dbias, const float *dout, const float *in, const float *w,
                        int M, int K, int N)
{
    if (din)
        for (int m = 0; m < M; m++) {
            const float *g = dout + (size_t)m * N;
            float *dx = din + (size_t)m * K;
            for (int n = 0; n < N; n++)
                if (g[n] != 0.f)
                    axpy(dx, g[n], w + (size_t)n * K, K);
        }
    if (dw)
        for (int n = 0; n < N; n++) {
            float *dwn = dw + (size_t)n * K;
            for (int m = 0; m < M; m++) {
                float g = dout[(size_t)m * N + n];
                if (g != 0.f)
                    axpy(dwn, g, in + (size_t)m * K, K);
            }
        }
    if (dbias)
        for (int m = 0; m < M; m++)
            for (int n = 0; n < N; n++)
                dbias[n] += dout[(size_t)m * N + n];
}

void fs_layernorm_forward(float *out, float *mean, float *rstd, const float *in, const float *w, const float *b,
                          int M, int C)
{
    for (int m = 0; m < M; m++) {
        const float *x = in + (size_t)m * C;
        float *y = out + (size_t)m * C;
        float mu = 0.f;
        for (int i = 0; i < C; i++)
            mu += x[i];
        mu /= (float)C;
        float var = 0.f;
        for (int i = 0; i < C; i++)
            var += (x[i] - mu) * (x[i] - mu);
        var /= (float)C;
        float r = 1.0f / sqrtf(var + 1e-5f);
        for (int i = 0; i < C; i++)
            y[i] = (x[i] - mu) * r * w[i] + b[i];
        mean[m] = mu;
        rstd[m] = r;
    }
}

void fs_layernorm_backward(float *din, float *dw, float *db, const float *dout, const float *in, const float *w,
                           const float *mean, const float *rstd, int M, int C)
{
    for (int m = 0; m < M; m++) {
        const float *x = in + (size_t)m * C, *g = dout + (size_t)m * C;
        float *dx = din + (size_t)m * C;
        float mu = mean[m], r = rstd[m];
        /* dx = r * (gw - mean(gw) - xhat * mean(gw * xhat)), gw = g * w */
        float sum_gw = 0.f, sum_gw_xhat = 0.f;
        for (int i = 0; i < C; i++) {
            float xhat = (x[i] - mu) * r, gw = g[i] * w[i];
            sum_gw += gw;
            sum_gw_xhat += gw * xhat;
        }
        sum_gw /= (float)C;
        sum_gw_xhat /= (float)C;
        for (int i = 0; i < C; i++) {
            float xhat = (x[i] - mu) * r;
            if (dw)
                dw[i] += g[i] * xhat;
            if (db)
                db[i] += g[i];
            dx[i] += r * (g[i] * w[i] - sum_gw - xhat * sum_gw_xhat);
        }
    }
}

#define GELU_K 0.7978845608028654f /* sqrt(2/pi) */

void fs_gelu_forward(float *out, const float *in, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        float x = in[i];
        out[i] = 0.5f * x * (1.f + tanhf(GELU_K * (x + 0.044715f * x * x * x)));
    }
}

void fs_gelu_backward(float *din, const float *in, const float *dout, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        float x = in[i];
        float u = GELU_K * (x + 0.044715f * x * x * x);
        float t = tanhf(u);
        float du = GELU_K * (1.f + 3.f * 0.044715f * x * x);
        din[i] += dout[i] * (0.5f * (1.f + t) + 0.5f * x * (1.f - t * t) * du);
    }
}

void fs_softmax_forward(float *out, const float *in, int rows, int n)
{
    for (int r = 0; r < rows; r++) {
        const float *x = in + (size_t)r * n;
        float *y = out + (size_t)r * n;
        float mx = x[0];
        for (int i = 1; i < n; i++)
            mx = x[i] > mx ? x[i] : mx;
        float s = 0.f;
        for (int i = 0; i < n; i++) {
            y[i] = expf(x[i] - mx);
            s += y[i];
        }
        float inv = 1.f / s;
        for (int i = 0; i < n; i++)
            y[i] *= inv;
    }
}

void fs_softmax_backward(float *din, const float *out, const float *dout, int rows, int n)
{
    for (int r = 0; r < rows; r++) {
        const float *p = out + (size_t)r * n, *g = dout + (size_t)r * n;
        float *dx = din + (size_t)r * n;
        float s = 0.f;
        for (int i = 0; i < n; i++)
            s += p[i] * g[i];
        for (int i = 0; i < n; i++)
            dx[i] += p[i] * (g[i] - s);
    }
}

/* theta(p, i) = p / base^(2i/hd), computed in double then rounded like the reference's f32 tables */
static inline void rope_sincos(int p, int i, int hd, double base, float *s, float *c)
{
    float inv = (float)(1.0 / pow(base, (double)(2 * i) / hd));
    float theta = (float)p * inv;
    *s = sinf(theta);
    *c = cosf(theta);
}

void fs_rope_forward(float *out, const float *in, int H, int N, int hd, double base)
{
    for (int h = 0; h < H; h++)
        for (int p = 0; p < N; p++) {
            const float *x = in + ((size_t)h * N + p) * hd;
            float *y = out + ((size_t)h * N + p) * hd;
            for (int i = 0; i < hd / 2; i++) {
                float s, c;
                rope_sincos(p, i, hd, base, &s, &c);
                float x0 = x[2 * i], x1 = x[2 * i + 1];
                y[2 * i] = x0 * c - x1 * s;
                y[2 * i + 1] = x1 * c + x0 * s;
            }
        }
}

void fs_rope_backward(float *din, const float *dout, int H, int N, int hd, double base)
{
    for (int h = 0; h < H; h++)
        for (int p = 0; p < N; p++) {
            const float *g = dout + ((size_t)h * N + p) * hd;
            float *dx = din + ((size_t)h * N + p) * hd;
            for (int i = 0; i < hd / 2; i++) {
                float s, c;
                rope_sincos(p, i, hd, base, &s, &c);
                float g0 = g[2 * i], g1 = g[2 * i + 1];
                dx[2 * i] += g0 * c + g1 * s;
                dx[2 * i + 1] += g1 * c - g0 * s;
            }
        }
}
