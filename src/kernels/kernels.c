/* Elementwise and row kernels (LayerNorm, GELU, softmax, RoPE, Adam) on SIMDe vectors;
 * the matrix products are in kernels_gemm.c. */
#include "kernels/kernels.h"

#include <math.h>
#include <stdbool.h>
#include <string.h>

#include "simd/vmath.h"

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

void fs_gelu_forward(float *out, const float *in, size_t n)
{
    size_t nv = n / FS_VL * FS_VL;
    for (size_t i = 0; i < nv; i += FS_VL)
        vstore(out + i, vgelu(vload(in + i)));
    if (nv < n) {
        float t[FS_VL] = {0};
        memcpy(t, in + nv, sizeof(float) * (n - nv));
        vstore(t, vgelu(vload(t)));
        memcpy(out + nv, t, sizeof(float) * (n - nv));
    }
}

/* out = gelu(in) and grad = gelu'(in) from one tanh per element: the same floats as
 * fs_gelu_forward and the derivative fs_gelu_backward_inplace computes. */
void fs_gelu_forward_keep_grad(float *out, float *grad, const float *in, size_t n)
{
    size_t nv = n / FS_VL * FS_VL;
    for (size_t i = 0; i < nv; i += FS_VL) {
        fs_vf x = vload(in + i), t = vgelu_tanh(x);
        vstore(out + i, vgelu_from_tanh(x, t));
        vstore(grad + i, vgelu_grad_from_tanh(x, t));
    }
    if (nv < n) {
        float x[FS_VL] = {0}, y[FS_VL], g[FS_VL];
        memcpy(x, in + nv, sizeof(float) * (n - nv));
        fs_vf xv = vload(x), t = vgelu_tanh(xv);
        vstore(y, vgelu_from_tanh(xv, t));
        vstore(g, vgelu_grad_from_tanh(xv, t));
        memcpy(out + nv, y, sizeof(float) * (n - nv));
        memcpy(grad + nv, g, sizeof(float) * (n - nv));
    }
}

void fs_mul_inplace(float *g, const float *s, size_t n)
{
    size_t nv = n / FS_VL * FS_VL;
    for (size_t i = 0; i < nv; i += FS_VL)
        vstore(g + i, vmul(vload(g + i), vload(s + i)));
    for (size_t i = nv; i < n; i++)
        g[i] *= s[i];
}

void fs_gelu_backward(float *din, const float *in, const float *dout, size_t n)
{
    size_t nv = n / FS_VL * FS_VL;
    for (size_t i = 0; i < nv; i += FS_VL)
        vstore(din + i, vfma(vload(dout + i), vgelu_grad(vload(in + i)), vload(din + i)));
    if (nv < n) {
        float t[FS_VL] = {0};
        memcpy(t, in + nv, sizeof(float) * (n - nv));
        vstore(t, vgelu_grad(vload(t)));
        for (size_t i = nv; i < n; i++)
            din[i] += dout[i] * t[i - nv];
    }
}

void fs_gelu_backward_inplace(float *g, const float *in, size_t n)
{
    size_t nv = n / FS_VL * FS_VL;
    for (size_t i = 0; i < nv; i += FS_VL)
        vstore(g + i, vmul(vload(g + i), vgelu_grad(vload(in + i))));
    if (nv < n) {
        float t[FS_VL] = {0};
        memcpy(t, in + nv, sizeof(float) * (n - nv));
        vstore(t, vgelu_grad(vload(t)));
        for (size_t i = nv; i < n; i++)
            g[i] *= t[i - nv];
    }
}

/* The largest of x[0, n), whole vectors first. Any order gives the same softmax: max is
 * exact, x - (+0) equals x - (-0) under exp, and a NaN anywhere makes the row NaN either way. */
static float row_max(const float *x, int n)
{
    int nv = n / FS_VL * FS_VL, i = 1;
    float mx = x[0];
    if (nv > 0) {
        fs_vf m = vload(x);
        for (i = FS_VL; i < nv; i += FS_VL)
            m = vmax(m, vload(x + i));
        mx = vhmax(m);
    }
    for (; i < n; i++)
        mx = x[i] > mx ? x[i] : mx;
    return mx;
}

/* From this many columns on, the row loops below sum 4 rows side by side. */
enum { LONG_ROW = 32 };

/* Rows of exp values are normalised by their sums taken left to right; rows of LONG_ROW
 * or more 4 at a time, so the 4 chains of dependent additions overlap (each row's order is
 * unchanged). */
static void normalise_rows(float *y, int rows, int n)
{
    int r = 0;
    for (; n >= LONG_ROW && r + 4 <= rows; r += 4) {
        float *y0 = y + (size_t)r * n, *y1 = y0 + n, *y2 = y1 + n, *y3 = y2 + n;
        float s0 = 0.f, s1 = 0.f, s2 = 0.f, s3 = 0.f;
        for (int i = 0; i < n; i++) {
            s0 += y0[i];
            s1 += y1[i];
            s2 += y2[i];
            s3 += y3[i];
        }
        float inv[4] = {1.f / s0, 1.f / s1, 1.f / s2, 1.f / s3};
        for (int k = 0; k < 4; k++)
            for (int i = 0; i < n; i++)
                y0[(size_t)k * n + i] *= inv[k];
    }
    for (; r < rows; r++) {
        float *yr = y + (size_t)r * n, s = 0.f;
        for (int i = 0; i < n; i++)
            s += yr[i];
        float inv = 1.f / s;
        for (int i = 0; i < n; i++)
            yr[i] *= inv;
    }
}

void fs_softmax_forward(float *out, const float *in, int rows, int n)
{
    for (int r = 0; r < rows; r++) {
        const float *x = in + (size_t)r * n;
        float *y = out + (size_t)r * n, mx = row_max(x, n);
        for (int i = 0; i < n; i++)
            y[i] = x[i] - mx;
    }
    fs_exp_inplace(out, (size_t)rows * n);
    normalise_rows(out, rows, n);
}

void fs_softmax_backward(float *din, const float *p, const float *dout, int rows, int n)
{
    int r = 0;
    /* rows of 32+: 4 rows' sums side by side, each left to right (shorter rows overlap
     * anyway in the core's out-of-order window, and run faster one at a time) */
    for (; n >= LONG_ROW && r + 4 <= rows; r += 4) {
        const float *p0 = p + (size_t)r * n, *g0 = dout + (size_t)r * n;
        float s0 = 0.f, s1 = 0.f, s2 = 0.f, s3 = 0.f;
        for (int i = 0; i < n; i++) {
            s0 += p0[i] * g0[i];
            s1 += p0[n + i] * g0[n + i];
            s2 += p0[2 * n + i] * g0[2 * n + i];
            s3 += p0[3 * n + i] * g0[3 * n + i];
        }
        const float s[4] = {s0, s1, s2, s3};
        for (int k = 0; k < 4; k++) {
            const float *pk = p0 + (size_t)k * n, *gk = g0 + (size_t)k * n, sk = s[k];
            float *dk = din + (size_t)(r + k) * n;
            for (int i = 0; i < n; i++)
                dk[i] = pk[i] * (gk[i] - sk);
        }
    }
    for (; r < rows; r++) {
        const float *pr = p + (size_t)r * n, *gr = dout + (size_t)r * n;
        float *dr = din + (size_t)r * n, s = 0.f;
        for (int i = 0; i < n; i++)
            s += pr[i] * gr[i];
        for (int i = 0; i < n; i++)
            dr[i] = pr[i] * (gr[i] - s);
    }
}

/* theta(p, i) = p / base^(2i/hd), computed in double then rounded like the reference's f32 tables */
void fs_rope_angle(int p, int i, int hd, double base, float *s, float *c)
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
            fs_rope_angle(p, i, hd, base, &s, &c);
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
            v8store(y + i, v8rope(v8load(x + i), v8load(C + i), v8load(S + i)));
        }
        for (; i < span; i += 2) { /* as the vector lanes compute it (out may be in) */
            float x0 = x[i], x1 = x[i + 1];
            y[i] = sfma(x1, S[i], x0 * C[i]);
            y[i + 1] = sfma(x0, S[i + 1], x1 * C[i + 1]);
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
            v8store(dx + i, v8rope_back(v8load(g + i), v8load(C + i), v8load(S + i)));
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
                fs_rope_angle(p, i, hd, base, &s, &c);
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
                fs_rope_angle(p, i, hd, base, &s, &c);
                float g0 = g[2 * i], g1 = g[2 * i + 1];
                dx[2 * i] += g0 * c + g1 * s;
                dx[2 * i + 1] += g1 * c - g0 * s;
            }
        }
}

/* One vector of Adam. Dividing by a bias correction of exactly 1 (1 - b^t rounds to 1 in
 * float after ~165 steps for b1 0.9, ~17,000 for b2 0.999) returns its operand unchanged,
 * so those divisions are skipped then: the same floats, a third to two thirds fewer
 * divisions (the update is bound by the divider). */
static inline __attribute__((always_inline)) void adam_vec(float *p, float *m, float *v, const float *g, fs_vf vb1,
                                                           fs_vf vb2, fs_vf va1, fs_vf va2, fs_vf vc1, fs_vf vc2,
                                                           fs_vf veps, fs_vf vlr, fs_vf vclip, const bool div1,
                                                           const bool div2)
{
    fs_vf gi = vmul(vload(g), vclip);
    fs_vf mi = vadd(vmul(vb1, vload(m)), vmul(va1, gi));
    fs_vf vi = vadd(vmul(vb2, vload(v)), vmul(vmul(va2, gi), gi));
    vstore(m, mi);
    vstore(v, vi);
    fs_vf mhat = div1 ? vdiv(mi, vc1) : mi, vhat = div2 ? vdiv(vi, vc2) : vi;
    vstore(p, vsub(vload(p), vdiv(vmul(vlr, mhat), vadd(vsqrt(vhat), veps))));
}

/* Exactly the float operations of fs_optim_update's Adam loop (no contraction), so a
 * vectorised, sliced update gives bit-identical parameters. */
void fs_adam_update(float *p, float *m, float *v, const float *g, size_t n, float b1, float b2, float eps, float bc1,
                    float bc2, float lr, float clip)
{
    const fs_vf vb1 = vset1(b1), vb2 = vset1(b2), va1 = vset1(1.f - b1), va2 = vset1(1.f - b2);
    const fs_vf vc1 = vset1(bc1), vc2 = vset1(bc2), veps = vset1(eps), vlr = vset1(lr), vclip = vset1(clip);
    size_t nv = n / FS_VL * FS_VL;
#define ADAM_LOOP(d1, d2)                                                                                          \
    for (size_t i = 0; i < nv; i += FS_VL)                                                                         \
        adam_vec(p + i, m + i, v + i, g + i, vb1, vb2, va1, va2, vc1, vc2, veps, vlr, vclip, d1, d2)
    if (bc1 == 1.f && bc2 == 1.f)
        ADAM_LOOP(false, false);
    else if (bc1 == 1.f)
        ADAM_LOOP(false, true);
    else
        ADAM_LOOP(true, true);
#undef ADAM_LOOP
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
    return vsum_squares_f64(x, n);
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
