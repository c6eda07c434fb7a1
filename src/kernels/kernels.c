/* Elementwise and row kernels (LayerNorm, GELU, softmax, RoPE, Adam) on SIMDe vectors;
 * the matrix products are in kernels_gemm.c. */
#include "kernels/kernels.h"

#include <math.h>
#include <string.h>

#include "simd/simd.h"

/* Sum of a row [0, n) and of squared deviations from mu, vectorised. */
static inline float row_sum(const float *x, int n)
{
    int nv = n / FS_VL * FS_VL;
    fs_vf s = vzero();
    for (int i = 0; i < nv; i += FS_VL)
        s = vadd(s, vload(x + i));
    float t = vhsum(s);
    for (int i = nv; i < n; i++)
        t += x[i];
    return t;
}

void fs_layernorm_forward(float *out, float *mean, float *rstd, const float *in, const float *w, const float *b,
                          int M, int C)
{
    int cv = C / FS_VL * FS_VL;
    for (int m = 0; m < M; m++) {
        const float *x = in + (size_t)m * C;
        float *y = out + (size_t)m * C;
        float mu = row_sum(x, C) / (float)C;
        fs_vf vm = vset1(mu), acc = vzero();
        for (int i = 0; i < cv; i += FS_VL) {
            fs_vf d = vsub(vload(x + i), vm);
            acc = vfma(d, d, acc);
        }
        float var = vhsum(acc);
        for (int i = cv; i < C; i++)
            var += (x[i] - mu) * (x[i] - mu);
        var /= (float)C;
        float r = 1.0f / sqrtf(var + 1e-5f);
        fs_vf vr = vset1(r);
        for (int i = 0; i < cv; i += FS_VL)
            vstore(y + i, vfma(vmul(vsub(vload(x + i), vm), vr), vload(w + i), vload(b + i)));
        for (int i = cv; i < C; i++)
            y[i] = (x[i] - mu) * r * w[i] + b[i];
        mean[m] = mu;
        rstd[m] = r;
    }
}

void fs_layernorm_backward(float *din, float *dw, float *db, const float *dout, const float *in, const float *w,
                           const float *mean, const float *rstd, int M, int C)
{
    int cv = C / FS_VL * FS_VL;
    for (int m = 0; m < M; m++) {
        const float *x = in + (size_t)m * C, *g = dout + (size_t)m * C;
        float *dx = din + (size_t)m * C;
        float mu = mean[m], r = rstd[m];
        fs_vf vm = vset1(mu), vr = vset1(r);
        /* dx = r * (gw - mean(gw) - xhat * mean(gw * xhat)), gw = g * w */
        fs_vf s1 = vzero(), s2 = vzero();
        for (int i = 0; i < cv; i += FS_VL) {
            fs_vf xhat = vmul(vsub(vload(x + i), vm), vr), gw = vmul(vload(g + i), vload(w + i));
            s1 = vadd(s1, gw);
            s2 = vfma(gw, xhat, s2);
        }
        float sum_gw = vhsum(s1), sum_gw_xhat = vhsum(s2);
        for (int i = cv; i < C; i++) {
            float xhat = (x[i] - mu) * r, gw = g[i] * w[i];
            sum_gw += gw;
            sum_gw_xhat += gw * xhat;
        }
        sum_gw /= (float)C;
        sum_gw_xhat /= (float)C;
        fs_vf va = vset1(sum_gw), vb = vset1(sum_gw_xhat);
        for (int i = 0; i < cv; i += FS_VL) {
            fs_vf xhat = vmul(vsub(vload(x + i), vm), vr), gv = vload(g + i);
            if (dw)
                vstore(dw + i, vfma(gv, xhat, vload(dw + i)));
            if (db)
                vstore(db + i, vadd(vload(db + i), gv));
            fs_vf t = vsub(vsub(vmul(gv, vload(w + i)), va), vmul(xhat, vb));
            vstore(dx + i, vfma(vr, t, vload(dx + i)));
        }
        for (int i = cv; i < C; i++) {
            float xhat = (x[i] - mu) * r;
            if (dw)
                dw[i] += g[i] * xhat;
            if (db)
                db[i] += g[i];
            dx[i] += r * (g[i] * w[i] - sum_gw - xhat * sum_gw_xhat);
        }
    }
}

void fs_exp_inplace(float *x, size_t n)
{
    size_t nv = n / FS_VL * FS_VL;
    for (size_t i = 0; i < nv; i += FS_VL)
        vstore(x + i, vexp(vload(x + i)));
    if (nv < n) { /* the tail through the same vector code, so every element gets the same function */
        float t[FS_VL] = {0};
        memcpy(t, x + nv, sizeof(float) * (n - nv));
        vstore(t, vexp(vload(t)));
        memcpy(x + nv, t, sizeof(float) * (n - nv));
    }
}

/* GELU(x) = 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3), in the reference's
 * float form (its rounding of 1 + tanh near -1 included); tanh(u) = 1 - 2 / (1 + e^{2u}). */
#define GELU_K 0.7978845608028654f
#define GELU_C 0.044715f

static inline fs_vf gelu_tanh(fs_vf x)
{
    fs_vf one = vset1(1.f);
    fs_vf u = vmul(vset1(GELU_K), vadd(x, vmul(vmul(vmul(vset1(GELU_C), x), x), x)));
    /* e^{2u} below 1e-38 leaves 1 + e^{2u} = 1 exactly, so the exp need not flush to 0 */
    return vsub(one, vdiv(vset1(2.f), vadd(one, vexp_raw(vadd(u, u)))));
}

static inline fs_vf gelu_v(fs_vf x) { return vmul(vmul(vset1(0.5f), x), vadd(vset1(1.f), gelu_tanh(x))); }

/* d gelu / dx = 0.5 (1 + t) + 0.5 x (1 - t^2) u',  u' = K (1 + 3 c x^2) */
static inline fs_vf gelu_grad_v(fs_vf x)
{
    fs_vf one = vset1(1.f), half = vset1(0.5f), t = gelu_tanh(x);
    fs_vf du = vmul(vset1(GELU_K), vadd(one, vmul(vmul(vset1(3.f * GELU_C), x), x)));
    return vadd(vmul(half, vadd(one, t)), vmul(vmul(vmul(half, x), vsub(one, vmul(t, t))), du));
}

void fs_gelu_forward(float *out, const float *in, size_t n)
{
    size_t nv = n / FS_VL * FS_VL;
    for (size_t i = 0; i < nv; i += FS_VL)
        vstore(out + i, gelu_v(vload(in + i)));
    if (nv < n) {
        float t[FS_VL] = {0};
        memcpy(t, in + nv, sizeof(float) * (n - nv));
        vstore(t, gelu_v(vload(t)));
        memcpy(out + nv, t, sizeof(float) * (n - nv));
    }
}

void fs_gelu_backward(float *din, const float *in, const float *dout, size_t n)
{
    size_t nv = n / FS_VL * FS_VL;
    for (size_t i = 0; i < nv; i += FS_VL)
        vstore(din + i, vfma(vload(dout + i), gelu_grad_v(vload(in + i)), vload(din + i)));
    if (nv < n) {
        float t[FS_VL] = {0};
        memcpy(t, in + nv, sizeof(float) * (n - nv));
        vstore(t, gelu_grad_v(vload(t)));
        for (size_t i = nv; i < n; i++)
            din[i] += dout[i] * t[i - nv];
    }
}

void fs_gelu_backward_inplace(float *g, const float *in, size_t n)
{
    size_t nv = n / FS_VL * FS_VL;
    for (size_t i = 0; i < nv; i += FS_VL)
        vstore(g + i, vmul(vload(g + i), gelu_grad_v(vload(in + i))));
    if (nv < n) {
        float t[FS_VL] = {0};
        memcpy(t, in + nv, sizeof(float) * (n - nv));
        vstore(t, gelu_grad_v(vload(t)));
        for (size_t i = nv; i < n; i++)
            g[i] *= t[i - nv];
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
        for (int i = 0; i < n; i++)
            y[i] = x[i] - mx;
    }
    fs_exp_inplace(out, (size_t)rows * n);
    for (int r = 0; r < rows; r++) {
        float *y = out + (size_t)r * n;
        float s = 0.f;
        for (int i = 0; i < n; i++)
            s += y[i];
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

void fs_rope_table(float *cs, int N, int hd, double base)
{
    float *C = cs, *S = cs + (size_t)N * hd;
    for (int p = 0; p < N; p++)
        for (int i = 0; i < hd / 2; i++) {
            float s, c;
            rope_sincos(p, i, hd, base, &s, &c);
            C[(size_t)p * hd + 2 * i] = C[(size_t)p * hd + 2 * i + 1] = c;
            S[(size_t)p * hd + 2 * i] = -s;
            S[(size_t)p * hd + 2 * i + 1] = s;
        }
}

/* y = x * C + swap(x) * S, swap exchanging the two floats of each pair */
void fs_rope_forward_table(float *out, const float *in, int H, int N, int hd, const float *cs)
{
    const float *C = cs, *S = cs + (size_t)N * hd;
    size_t span = (size_t)N * hd;
    for (int h = 0; h < H; h++) {
        const float *x = in + h * span;
        float *y = out + h * span;
        size_t i = 0;
        for (; i + 8 <= span; i += 8) {
            simde__m256 v = simde_mm256_loadu_ps(x + i);
            simde__m256 sw = simde_mm256_permute_ps(v, 0xB1);
            simde_mm256_storeu_ps(y + i, simde_mm256_fmadd_ps(sw, simde_mm256_loadu_ps(S + i),
                                                              simde_mm256_mul_ps(v, simde_mm256_loadu_ps(C + i))));
        }
        for (; i < span; i += 2) { /* as the vector lanes compute it */
            y[i] = sfma(x[i + 1], S[i], x[i] * C[i]);
            y[i + 1] = sfma(x[i], S[i + 1], x[i + 1] * C[i + 1]);
        }
    }
}

/* dx = g * C - swap(g) * S (din may be dout) */
void fs_rope_backward_table(float *din, const float *dout, int H, int N, int hd, const float *cs)
{
    const float *C = cs, *S = cs + (size_t)N * hd;
    size_t span = (size_t)N * hd;
    for (int h = 0; h < H; h++) {
        const float *g = dout + h * span;
        float *dx = din + h * span;
        size_t i = 0;
        for (; i + 8 <= span; i += 8) {
            simde__m256 v = simde_mm256_loadu_ps(g + i);
            simde__m256 sw = simde_mm256_permute_ps(v, 0xB1);
            simde__m256 t = simde_mm256_fnmadd_ps(sw, simde_mm256_loadu_ps(S + i),
                                                  simde_mm256_mul_ps(v, simde_mm256_loadu_ps(C + i)));
            simde_mm256_storeu_ps(dx + i, t);
        }
        for (; i < span; i += 2) { /* as the vector lanes compute it */
            float g0 = g[i], g1 = g[i + 1];
            dx[i] = sfma(-g1, S[i], g0 * C[i]);
            dx[i + 1] = sfma(-g0, S[i + 1], g1 * C[i + 1]);
        }
    }
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

/* Exactly the float operations of fs_optim_update's Adam loop (no contraction), so a
 * vectorised, sliced update gives bit-identical parameters. */
void fs_adam_update(float *p, float *m, float *v, const float *g, size_t n, float b1, float b2, float eps, float bc1,
                    float bc2, float lr, float clip)
{
    const fs_vf vb1 = vset1(b1), vb2 = vset1(b2), va1 = vset1(1.f - b1), va2 = vset1(1.f - b2);
    const fs_vf vc1 = vset1(bc1), vc2 = vset1(bc2), veps = vset1(eps), vlr = vset1(lr), vclip = vset1(clip);
    size_t nv = n / FS_VL * FS_VL;
    for (size_t i = 0; i < nv; i += FS_VL) {
        fs_vf gi = vmul(vload(g + i), vclip);
        fs_vf mi = vadd(vmul(vb1, vload(m + i)), vmul(va1, gi));
        fs_vf vi = vadd(vmul(vb2, vload(v + i)), vmul(vmul(va2, gi), gi));
        vstore(m + i, mi);
        vstore(v + i, vi);
        fs_vf mhat = vdiv(mi, vc1), vhat = vdiv(vi, vc2);
        vstore(p + i, vsub(vload(p + i), vdiv(vmul(vlr, mhat), vadd(vsqrt(vhat), veps))));
    }
    for (size_t i = nv; i < n; i++) {
        float gi = g[i] * clip;
        m[i] = b1 * m[i] + (1.f - b1) * gi;
        v[i] = b2 * v[i] + (1.f - b2) * gi * gi;
        float mhat = m[i] / bc1, vhat = v[i] / bc2;
        p[i] -= lr * mhat / (sqrtf(vhat) + eps);
    }
}

double fs_sum_squares_blocks(const float *x, size_t n)
{
    double total = 0;
    size_t i = 0;
    while (i < n) { /* float lanes over blocks of 1024, the blocks summed in double */
        size_t end = n - i > 1024 ? i + 1024 : n, nv = i + (end - i) / FS_VL * FS_VL;
        fs_vf s = vzero();
        for (; i < nv; i += FS_VL) {
            fs_vf v = vload(x + i);
            s = vfma(v, v, s);
        }
        double t = vhsum(s);
        for (; i < end; i++)
            t += (double)x[i] * x[i];
        total += t;
    }
    return total;
}

double fs_sum_squares(const float *x, size_t n)
{
    /* double lanes: as exact as fs_optim_update's sequential double sum up to ~1e-16 */
    simde__m256d s0 = simde_mm256_setzero_pd(), s1 = simde_mm256_setzero_pd();
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        simde__m256d a = simde_mm256_cvtps_pd(simde_mm_loadu_ps(x + i));
        simde__m256d b = simde_mm256_cvtps_pd(simde_mm_loadu_ps(x + i + 4));
        s0 = simde_mm256_fmadd_pd(a, a, s0);
        s1 = simde_mm256_fmadd_pd(b, b, s1);
    }
    double t[4];
    simde_mm256_storeu_pd(t, simde_mm256_add_pd(s0, s1));
    double total = (t[0] + t[1]) + (t[2] + t[3]);
    for (; i < n; i++)
        total += (double)x[i] * x[i];
    return total;
}

void fs_sum_rows(float *out, const float *const *rows, int n, size_t offset, size_t count)
{
    size_t nv = count / FS_VL * FS_VL;
    for (size_t i = 0; i < nv; i += FS_VL) {
        fs_vf s = vload(rows[0] + offset + i);
        for (int k = 1; k < n; k++)
            s = vadd(s, vload(rows[k] + offset + i));
        vstore(out + i, s);
    }
    for (size_t i = nv; i < count; i++) {
        float s = rows[0][offset + i];
        for (int k = 1; k < n; k++)
            s += rows[k][offset + i];
        out[i] = s;
    }
}
