/* Tests for the optimised kernels (src/kernels*.c): each against a straightforward
 * double-precision reference written here, over random sizes including tails
 * (M = 1, N = 3, K = 5, sizes just past a vector width, ...). Plus the trainer's
 * determinism and its sliced optimizer against fs_optim_update. */
#include <criterion/criterion.h>

#include <malloc.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fewshot/forward.h"
#include "model/leaves.h"
#include "kernels/kernels.h"
#include "simd/vec.h"
#include "simd/vmath.h"
#include "fewshot/model.h"
#include "train/optim.h"
#include "fewshot/seqio.h"
#include "train/trainer.h"

/* ---------------------------------------------------------------- helpers */

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static double urand(void) /* [0, 1) */
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (double)(rng_state >> 11) / 9007199254740992.0;
}

static float *rand_buf(size_t n, double scale)
{
    float *x = malloc(sizeof(float) * (n ? n : 1));
    for (size_t i = 0; i < n; i++)
        x[i] = (float)((2 * urand() - 1) * scale);
    return x;
}

static float *copy_buf(const float *x, size_t n)
{
    float *y = malloc(sizeof(float) * (n ? n : 1));
    memcpy(y, x, sizeof(float) * n);
    return y;
}

/* |got - want| <= tol * (1 + |want|) element-wise */
static void assert_close(const float *got, const double *want, size_t n, double tol, const char *what)
{
    for (size_t i = 0; i < n; i++)
        cr_assert(fabs(got[i] - want[i]) <= tol * (1 + fabs(want[i])), "%s[%zu]: got %.9g, want %.9g", what, i,
                  got[i], want[i]);
}

static const int sizes[] = {1, 2, 3, 5, 7, 8, 9, 15, 16, 17, 31, 33, 64, 65};
#define NSIZES ((int)(sizeof sizes / sizeof *sizes))
static int pick(void) { return sizes[(int)(urand() * NSIZES)]; }

/* ---------------------------------------------------------------- matrix products */

Test(kernels, gemm_all_modes_and_tails)
{
    for (int trial = 0; trial < 300; trial++) {
        int M = pick(), N = pick(), R = trial % 3 == 0 ? 5 : pick();
        if (trial % 7 == 0)
            R = 100 + trial % 50; /* several accumulation chunks */
        int accumulate = trial % 2, use_bias = trial % 3 == 1;
        size_t ars = (size_t)R, acs = 1;
        if (trial % 4 == 3) { /* A transposed: A(i, r) = A[r * M + i] */
            ars = 1;
            acs = (size_t)M;
        }
        size_t ldb = (size_t)N + (size_t)(trial % 5), ldc = (size_t)N + (size_t)(trial % 3);
        float *A = rand_buf((size_t)M * R, 1), *B = rand_buf((size_t)R * ldb, 1), *bias = rand_buf((size_t)N, 1);
        float *C = rand_buf((size_t)M * ldc, 1), *C0 = copy_buf(C, (size_t)M * ldc);
        fs_gemm(C, ldc, A, ars, acs, B, ldb, M, N, R, accumulate, use_bias ? bias : NULL);
        double *want = malloc(sizeof(double) * (size_t)M * ldc);
        for (int i = 0; i < M; i++)
            for (size_t j = 0; j < ldc; j++) {
                double s = C0[i * ldc + j];
                if ((int)j < N) {
                    s = accumulate ? C0[i * ldc + j] : use_bias ? bias[j] : 0;
                    for (int r = 0; r < R; r++)
                        s += (double)A[i * ars + r * acs] * B[r * ldb + j];
                }
                want[i * ldc + j] = s;
            }
        char what[96];
        snprintf(what, sizeof what, "gemm M=%d N=%d R=%d acc=%d", M, N, R, accumulate);
        assert_close(C, want, (size_t)M * ldc, 2e-5 * sqrt(R + 1), what);
        free(A), free(B), free(bias), free(C), free(C0), free(want);
    }
}

/* fs_gemm's documented arithmetic, element by element: the r sum in chunks of 32 (the
 * last chunk takes the remainder), each chunk a fused multiply-add chain from 0 added to
 * the running value. Blocking r into panels must not change a single bit of it. */
Test(kernels, gemm_blocks_keep_the_chunked_sums_exactly)
{
    static const int Rs[] = {1, 16, 127, 128, 129, 140, 143, 256, 300, 515};
    for (int trial = 0; trial < 40; trial++) {
        int M = 7 + 13 * (trial % 5), N = 16 * (trial % 4) + (trial % 3 == 0 ? 16 : 1 + trial % 7), R = Rs[trial % 10];
        int accumulate = trial % 2, use_bias = trial % 3 == 1;
        size_t ars = (size_t)R, acs = 1, ldb = (size_t)N + 1024 * (trial % 2), ldc = (size_t)N;
        if (trial % 4 == 3) {
            ars = 1;
            acs = (size_t)M;
        }
        float *A = rand_buf((size_t)M * R, 1), *B = rand_buf((size_t)R * ldb, 1), *bias = rand_buf((size_t)N, 1);
        float *C = rand_buf((size_t)M * ldc, 1), *C0 = copy_buf(C, (size_t)M * ldc);
        fs_gemm(C, ldc, A, ars, acs, B, ldb, M, N, R, accumulate, use_bias ? bias : NULL);
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) {
                float v = accumulate ? C0[i * ldc + j] : use_bias ? bias[j] : 0.f;
                for (int r0 = 0, r1; r0 < R; r0 = r1) {
                    r1 = R - r0 < 32 ? R : r0 + 32;
                    float acc = 0.f;
                    for (int r = r0; r < r1; r++)
                        acc = sfma(A[i * ars + r * acs], B[r * ldb + j], acc);
                    v = v + acc;
                }
                cr_assert_eq(C[i * ldc + j], v, "gemm M=%d N=%d R=%d ldb=%zu acc=%d: C[%d][%d] = %.9g, chunked sum %.9g",
                             M, N, R, ldb, accumulate, i, j, C[i * ldc + j], v);
            }
        free(A), free(B), free(bias), free(C), free(C0);
    }
}

/* The forward from the weights as stored ([N][K]), transposing panels on the way in,
 * gives the same bits as the product with a transposed copy: any M (one row tile or
 * several), K past a block and not a multiple of 8, N with a tail past the last vector. */
Test(kernels, matmul_forward_gemm_equals_the_transposed_copy_bit_for_bit)
{
    static const int Ks[] = {1, 5, 8, 13, 64, 129, 200, 515};
    for (int trial = 0; trial < 48; trial++) {
        int M = trial % 3 == 0 ? 1 + trial % 6 : pick() + 6 * (trial % 4), K = Ks[trial % 8];
        int N = trial % 5 == 0 ? 16 : pick() + 16 * (trial % 3);
        float *in = rand_buf((size_t)M * K, 1), *w = rand_buf((size_t)N * K, 1), *bias = rand_buf((size_t)N, 1);
        float *wt = malloc(sizeof(float) * (size_t)K * N), *got = malloc(sizeof(float) * (size_t)M * N),
              *want = malloc(sizeof(float) * (size_t)M * N);
        fs_transpose(wt, w, N, K);
        const float *b = trial % 2 ? bias : NULL;
        fs_matmul_forward_packed(want, in, wt, b, M, K, N);
        fs_matmul_forward_gemm(got, in, w, b, M, K, N);
        for (int i = 0; i < M * N; i++)
            cr_assert_eq(got[i], want[i], "M=%d K=%d N=%d: out[%d] = %.9g, with the transposed copy %.9g", M, K, N, i,
                         got[i], want[i]);
        free(in), free(w), free(bias), free(wt), free(got), free(want);
    }
}

Test(kernels, matmul_backward_add_and_set)
{
    for (int trial = 0; trial < 120; trial++) {
        int M = pick(), K = trial % 5 == 0 ? 5 : pick(), N = trial % 4 == 0 ? 3 : pick();
        float *dout = rand_buf((size_t)M * N, 1), *in = rand_buf((size_t)M * K, 1), *w = rand_buf((size_t)N * K, 1);
        float *din = rand_buf((size_t)M * K, 1), *dw = rand_buf((size_t)N * K, 1), *db = rand_buf((size_t)N, 1);
        float *din0 = copy_buf(din, (size_t)M * K), *dw0 = copy_buf(dw, (size_t)N * K), *db0 = copy_buf(db, (size_t)N);
        double *wdin = malloc(sizeof(double) * (size_t)M * K), *wdw = malloc(sizeof(double) * (size_t)N * K);
        double *wdb = malloc(sizeof(double) * (size_t)N);
        for (int set = 0; set < 2; set++) {
            memcpy(din, din0, sizeof(float) * (size_t)M * K);
            memcpy(dw, dw0, sizeof(float) * (size_t)N * K);
            memcpy(db, db0, sizeof(float) * (size_t)N);
            for (int m = 0; m < M; m++)
                for (int k = 0; k < K; k++) {
                    double s = set ? 0 : din0[m * K + k];
                    for (int n = 0; n < N; n++)
                        s += (double)dout[m * N + n] * w[n * K + k];
                    wdin[m * K + k] = s;
                }
            for (int n = 0; n < N; n++) {
                double sb = set ? 0 : db0[n];
                for (int m = 0; m < M; m++)
                    sb += dout[m * N + n];
                wdb[n] = sb;
                for (int k = 0; k < K; k++) {
                    double s = set ? 0 : dw0[n * K + k];
                    for (int m = 0; m < M; m++)
                        s += (double)dout[m * N + n] * in[m * K + k];
                    wdw[n * K + k] = s;
                }
            }
            if (set)
                fs_matmul_backward_set(din, dw, db, dout, in, w, M, K, N);
            else
                fs_matmul_backward(din, dw, db, dout, in, w, M, K, N);
            double tol = 2e-5 * sqrt(M + N);
            assert_close(din, wdin, (size_t)M * K, tol, set ? "backward_set din" : "backward din");
            assert_close(dw, wdw, (size_t)N * K, tol, set ? "backward_set dw" : "backward dw");
            assert_close(db, wdb, (size_t)N, tol, set ? "backward_set db" : "backward db");
        }
        free(dout), free(in), free(w), free(din), free(dw), free(db), free(din0), free(dw0), free(db0);
        free(wdin), free(wdw), free(wdb);
    }
}

Test(kernels, transpose_row_ranges)
{
    for (int trial = 0; trial < 60; trial++) {
        int rows = pick(), cols = pick();
        float *src = rand_buf((size_t)rows * cols, 1), *dst = calloc((size_t)rows * cols, sizeof(float));
        int parts = 1 + trial % 3;
        for (int p = 0; p < parts; p++) { /* the packing's split: ranges in multiples of 8 */
            int blocks = (rows + 7) / 8, r0 = blocks * p / parts * 8, r1 = blocks * (p + 1) / parts * 8;
            fs_transpose_rows(dst, src, rows, cols, r0 < rows ? r0 : rows, r1 < rows ? r1 : rows);
        }
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++)
                cr_assert_eq(dst[(size_t)c * rows + r], src[(size_t)r * cols + c]);
        free(src), free(dst);
    }
}

/* ---------------------------------------------------------------- row and elementwise kernels */

Test(kernels, layernorm_forward_backward)
{
    for (int trial = 0; trial < 40; trial++) {
        int M = pick(), C = pick() + (trial % 2);
        float *x = rand_buf((size_t)M * C, 2), *w = rand_buf((size_t)C, 1), *b = rand_buf((size_t)C, 1);
        float *g = rand_buf((size_t)M * C, 1), *y = malloc(sizeof(float) * (size_t)M * C);
        float *mean = malloc(sizeof(float) * M), *rstd = malloc(sizeof(float) * M);
        float *dx = rand_buf((size_t)M * C, 1), *dx0 = copy_buf(dx, (size_t)M * C);
        float *dw = calloc((size_t)C, sizeof(float)), *db = calloc((size_t)C, sizeof(float));
        double *wy = malloc(sizeof(double) * (size_t)M * C), *wdx = malloc(sizeof(double) * (size_t)M * C);
        double *wdw = calloc((size_t)C, sizeof(double)), *wdb = calloc((size_t)C, sizeof(double));
        double scale_dx = 1;
        for (int m = 0; m < M; m++) {
            const float *xr = x + (size_t)m * C, *gr = g + (size_t)m * C;
            double mu = 0, var = 0;
            for (int i = 0; i < C; i++)
                mu += xr[i];
            mu /= C;
            for (int i = 0; i < C; i++)
                var += (xr[i] - mu) * (xr[i] - mu);
            var /= C;
            double r = 1 / sqrt(var + 1e-5), a = 0, c2 = 0;
            for (int i = 0; i < C; i++) {
                double xh = (xr[i] - mu) * r;
                wy[m * C + i] = xh * w[i] + b[i];
                a += gr[i] * w[i];
                c2 += gr[i] * w[i] * xh;
                wdw[i] += gr[i] * xh;
                wdb[i] += gr[i];
            }
            for (int i = 0; i < C; i++) {
                double xh = (xr[i] - mu) * r;
                wdx[m * C + i] = dx0[m * C + i] + r * (gr[i] * w[i] - a / C - xh * c2 / C);
                /* float cancels these terms: the error scales with their size */
                scale_dx = fmax(scale_dx, r * (fabs(gr[i] * w[i]) + fabs(a / C) + fabs(xh * c2 / C)));
            }
        }
        fs_layernorm_forward(y, mean, rstd, x, w, b, M, C);
        assert_close(y, wy, (size_t)M * C, 1e-5, "layernorm y");
        fs_layernorm_backward(dx, dw, db, g, x, w, mean, rstd, M, C);
        assert_close(dx, wdx, (size_t)M * C, 2e-6 * scale_dx, "layernorm dx");
        assert_close(dw, wdw, (size_t)C, 2e-5 * sqrt(M), "layernorm dw");
        assert_close(db, wdb, (size_t)C, 2e-5 * sqrt(M), "layernorm db");
        free(x), free(w), free(b), free(g), free(y), free(mean), free(rstd), free(dx), free(dx0), free(dw), free(db);
        free(wy), free(wdx), free(wdw), free(wdb);
    }
}

static double gelu_ref(double x) { return 0.5 * x * (1 + tanh(0.7978845608028654 * (x + 0.044715 * x * x * x))); }
static double gelu_grad_ref(double x)
{
    double u = 0.7978845608028654 * (x + 0.044715 * x * x * x), t = tanh(u);
    return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * 0.7978845608028654 * (1 + 3 * 0.044715 * x * x);
}

Test(kernels, gelu_forward_backward)
{
    for (int trial = 0; trial < 20; trial++) {
        size_t n = (size_t)pick() * 3 + (size_t)trial;
        float *x = rand_buf(n, 6), *y = malloc(sizeof(float) * n), *g = rand_buf(n, 1);
        float *dx = rand_buf(n, 1), *dx0 = copy_buf(dx, n), *gi = copy_buf(g, n);
        double *wy = malloc(sizeof(double) * n), *wdx = malloc(sizeof(double) * n), *wgi = malloc(sizeof(double) * n);
        for (size_t i = 0; i < n; i++) {
            wy[i] = gelu_ref(x[i]);
            wdx[i] = dx0[i] + g[i] * gelu_grad_ref(x[i]);
            wgi[i] = g[i] * gelu_grad_ref(x[i]);
        }
        fs_gelu_forward(y, x, n);
        /* float GELU-tanh: about 1 ulp of 1 in 1 + tanh, times the x-dependent factors */
        assert_close(y, wy, n, 1e-6, "gelu");
        fs_gelu_backward(dx, x, g, n);
        assert_close(dx, wdx, n, 5e-6, "gelu backward");
        fs_gelu_backward_inplace(gi, x, n);
        assert_close(gi, wgi, n, 5e-6, "gelu backward in place");
        /* kept for the backward: the same output, and the derivative that multiplies as
         * the in-place backward does, bit for bit */
        float *y2 = malloc(sizeof(float) * n), *d = malloc(sizeof(float) * n), *gk = copy_buf(g, n);
        fs_gelu_forward_keep_grad(y2, d, x, n);
        fs_mul_inplace(gk, d, n);
        for (size_t i = 0; i < n; i++) {
            cr_assert_eq(y2[i], y[i], "gelu kept: output %zu differs", i);
            cr_assert_eq(gk[i], gi[i], "gelu kept: gradient %zu differs", i);
        }
        free(y2), free(d), free(gk);
        free(x), free(y), free(g), free(dx), free(dx0), free(gi), free(wy), free(wdx), free(wgi);
    }
}

Test(kernels, exp_accuracy_and_limits)
{
    size_t n = 4001;
    float *x = malloc(sizeof(float) * n);
    for (size_t i = 0; i < n; i++)
        x[i] = -87.0f + 175.0f * (float)i / (float)(n - 1);
    float *y = copy_buf(x, n);
    fs_exp_inplace(y, n);
    for (size_t i = 0; i < n; i++) {
        double want = exp((double)x[i]);
        cr_assert(fabs(y[i] - want) <= 3e-7 * want, "exp(%.9g) = %.9g, want %.9g", x[i], y[i], want);
    }
    float special[5] = {-1e20f, -100.f, 0.f, 100.f, -INFINITY};
    fs_exp_inplace(special, 5);
    cr_assert_eq(special[0], 0.f);
    cr_assert_eq(special[1], 0.f);
    cr_assert_eq(special[2], 1.f);
    cr_assert(isinf(special[3]));
    cr_assert_eq(special[4], 0.f);
    free(x), free(y);
}

Test(kernels, softmax_rows_masked)
{
    for (int trial = 0; trial < 30; trial++) {
        int rows = pick(), n = trial < 20 ? 1 + trial % 16 : pick() + 10;
        float *x = rand_buf((size_t)rows * n, 8), *y = malloc(sizeof(float) * (size_t)rows * n);
        for (int r = 0; r < rows; r++)
            for (int j = r % n + 1; j < n; j++)
                x[(size_t)r * n + j] = -1e20f; /* causal mask */
        double *want = malloc(sizeof(double) * (size_t)rows * n);
        for (int r = 0; r < rows; r++) {
            double mx = -1e300, s = 0;
            for (int j = 0; j < n; j++)
                mx = fmax(mx, x[(size_t)r * n + j]);
            for (int j = 0; j < n; j++)
                s += exp(x[(size_t)r * n + j] - mx);
            for (int j = 0; j < n; j++)
                want[(size_t)r * n + j] = exp(x[(size_t)r * n + j] - mx) / s;
        }
        fs_softmax_forward(y, x, rows, n);
        assert_close(y, want, (size_t)rows * n, 1e-6, "softmax");
        for (int r = 0; r < rows; r++)
            for (int j = r % n + 1; j < n; j++)
                cr_assert_eq(y[(size_t)r * n + j], 0.f, "masked entry not exactly 0");
        free(x), free(y), free(want);
    }
}

/* fs_softmax_forward's documented arithmetic, bit for bit: the row maximum (a chain of
 * comparisons), x - max, fs_exp_inplace, the sum left to right, times its reciprocal.
 * Row counts not a multiple of the 4 rows summed together, widths past several vectors,
 * rows masked and not, ties at the maximum, and a +0 / -0 maximum. */
Test(kernels, softmax_rows_equal_the_documented_arithmetic)
{
    static const int ns[] = {1, 3, 8, 16, 17, 24, 33, 47, 65};
    for (int trial = 0; trial < 54; trial++) {
        int n = ns[trial % 9], rows = 1 + trial % 13;
        size_t len = (size_t)rows * n;
        float *x = rand_buf(len, 8), *y = malloc(sizeof(float) * len), *want = malloc(sizeof(float) * len);
        for (int r = 0; r < rows && trial % 2; r++) /* causal mask on odd trials */
            for (int j = r % n + 1; j < n; j++)
                x[(size_t)r * n + j] = -1e20f;
        if (n > 3) {
            x[0] = x[1] = 9.f;           /* a tie at the maximum */
            if (rows > 1) {              /* row 1: maxima +0 and -0, everything else below */
                for (int j = 0; j < n; j++)
                    x[(size_t)n + j] = -1.f - (float)j;
                x[(size_t)n] = -0.f;
                x[(size_t)n + 1] = 0.f;
            }
        }
        for (int r = 0; r < rows; r++) {
            const float *xr = x + (size_t)r * n;
            float *w = want + (size_t)r * n, mx = xr[0];
            for (int j = 1; j < n; j++)
                mx = xr[j] > mx ? xr[j] : mx;
            for (int j = 0; j < n; j++)
                w[j] = xr[j] - mx;
        }
        fs_exp_inplace(want, len);
        for (int r = 0; r < rows; r++) {
            float *w = want + (size_t)r * n, s = 0.f;
            for (int j = 0; j < n; j++)
                s += w[j];
            float inv = 1.f / s;
            for (int j = 0; j < n; j++)
                w[j] *= inv;
        }
        fs_softmax_forward(y, x, rows, n);
        for (size_t i = 0; i < len; i++)
            cr_assert_eq(y[i], want[i], "softmax rows %d n %d: element %zu is %.9g, the documented arithmetic %.9g",
                         rows, n, i, y[i], want[i]);
        free(x), free(y), free(want);
    }
}

/* fs_softmax_backward's documented arithmetic, bit for bit: per row s = sum p_i g_i left
 * to right, then din = p (g - s), written over what din held; row counts around the 4
 * rows done together. */
Test(kernels, softmax_backward_rows_equal_the_documented_arithmetic)
{
    static const int ns[] = {1, 5, 16, 17, 33, 65};
    for (int trial = 0; trial < 36; trial++) {
        int n = ns[trial % 6], rows = 1 + trial % 11;
        size_t len = (size_t)rows * n;
        float *p = rand_buf(len, 1), *g = rand_buf(len, 3), *din = rand_buf(len, 5), *want = malloc(sizeof(float) * len);
        for (int r = 0; r < rows; r++) {
            const float *pr = p + (size_t)r * n, *gr = g + (size_t)r * n;
            float s = 0.f;
            for (int i = 0; i < n; i++)
                s += pr[i] * gr[i];
            for (int i = 0; i < n; i++)
                want[(size_t)r * n + i] = pr[i] * (gr[i] - s);
        }
        fs_softmax_backward(din, p, g, rows, n);
        for (size_t i = 0; i < len; i++)
            cr_assert_eq(din[i], want[i], "softmax backward rows %d n %d: element %zu is %.9g, the documented %.9g", rows,
                         n, i, din[i], want[i]);
        free(p), free(g), free(din), free(want);
    }
}

/* ---------------------------------------------------------------- attention */

/* Sequences longer than a vector: each head's scores are fs_gemm's elements of q k^T
 * (keys transposed), scaled, with key > query masked, and the probabilities
 * fs_softmax_forward's -- bit for bit, although the columns past the last whole vector
 * are computed only for the rows that reach them. */
Test(kernels, long_attention_scores_equal_the_masked_full_product)
{
    static const int Ns[] = {17, 23, 31, 33, 40, 65};
    static const int hds[] = {8, 12, 16, 32};
    for (int trial = 0; trial < 24; trial++) {
        int N = Ns[trial % 6], hd = hds[trial % 4], H = 1 + trial % 3;
        size_t nq = (size_t)H * N * hd, ns = (size_t)H * N * N;
        float *q = rand_buf(nq, 1), *k = rand_buf(nq, 1), scale = 0.3f;
        float *pre = malloc(sizeof(float) * ns), *probs = malloc(sizeof(float) * ns);
        float *want = malloc(sizeof(float) * ns), *want_p = malloc(sizeof(float) * ns);
        float *kt = malloc(sizeof(float) * (size_t)N * hd);
        for (int h = 0; h < H; h++) {
            float *w = want + (size_t)h * N * N;
            fs_transpose(kt, k + (size_t)h * N * hd, N, hd);
            fs_gemm(w, (size_t)N, q + (size_t)h * N * hd, (size_t)hd, 1, kt, (size_t)N, N, N, hd, 0, NULL);
            for (int i = 0; i < N; i++)
                for (int j = 0; j < N; j++)
                    w[i * N + j] = j <= i ? w[i * N + j] * scale : -1e20f;
        }
        fs_softmax_forward(want_p, want, H * N, N);
        fs_attn_scores(pre, probs, q, k, H, N, hd, scale);
        for (size_t i = 0; i < ns; i++) {
            cr_assert_eq(pre[i], want[i], "N %d hd %d H %d: score %zu is %.9g, the masked product %.9g", N, hd, H, i,
                         pre[i], want[i]);
            cr_assert_eq(probs[i], want_p[i], "N %d hd %d H %d: probability %zu is %.9g, want %.9g", N, hd, H, i,
                         probs[i], want_p[i]);
        }
        free(q), free(k), free(pre), free(probs), free(want), free(want_p), free(kt);
    }
}

Test(kernels, attention_forward_backward)
{
    static const int Ns[] = {1, 2, 3, 5, 8, 9, 16, 17, 21};
    static const int hds[] = {2, 4, 8, 12, 16, 32, 64, 72};
    for (int trial = 0; trial < 72; trial++) {
        int N = Ns[trial % 9], hd = hds[trial / 9], H = 1 + trial % 4, d = H * hd;
        size_t hb = (size_t)H * N * hd, ab = (size_t)H * N * N;
        float scale = 1.f / sqrtf((float)hd);
        float *q = rand_buf(hb, 1), *k = rand_buf(hb, 1), *v = rand_buf(hb, 1);
        /* + 16 floats of guard after each output: nothing may be written past its end */
        float *pre = malloc(sizeof(float) * (ab + 16)), *probs = malloc(sizeof(float) * (ab + 16));
        float *probs2 = malloc(sizeof(float) * (ab + 16)), *vals = malloc(sizeof(float) * ((size_t)N * d + 16));
        for (int i = 0; i < 16; i++)
            pre[ab + i] = probs[ab + i] = probs2[ab + i] = vals[(size_t)N * d + i] = 7.f;
        fs_attn_scores(pre, probs, q, k, H, N, hd, scale);
        fs_attn_scores(pre, NULL, q, k, H, N, hd, scale);
        fs_softmax_forward(probs2, pre, H * N, N);
        fs_attn_values(vals, probs, v, H, N, hd);
        double *wpre = malloc(sizeof(double) * ab), *wp = malloc(sizeof(double) * ab);
        double *wvals = calloc((size_t)N * d, sizeof(double));
        for (int h = 0; h < H; h++)
            for (int i = 0; i < N; i++) {
                double mx = -1e300, s = 0;
                for (int j = 0; j < N; j++) {
                    double t = -1e20;
                    if (j <= i) {
                        t = 0;
                        for (int u = 0; u < hd; u++)
                            t += (double)q[((size_t)h * N + i) * hd + u] * k[((size_t)h * N + j) * hd + u];
                        t *= scale;
                    }
                    wpre[((size_t)h * N + i) * N + j] = t;
                    mx = fmax(mx, t);
                }
                for (int j = 0; j < N; j++)
                    s += exp(wpre[((size_t)h * N + i) * N + j] - mx);
                for (int j = 0; j < N; j++) {
                    double p = exp(wpre[((size_t)h * N + i) * N + j] - mx) / s;
                    wp[((size_t)h * N + i) * N + j] = p;
                    for (int u = 0; u < hd; u++)
                        wvals[(size_t)i * d + h * hd + u] += p * v[((size_t)h * N + j) * hd + u];
                }
            }
        char what[64];
        snprintf(what, sizeof what, "attn N=%d hd=%d H=%d", N, hd, H);
        assert_close(pre, wpre, ab, 1e-5, what);
        assert_close(probs, wp, ab, 1e-5, what);
        for (size_t i = 0; i < ab; i++)
            cr_assert_eq(probs[i], probs2[i], "%s: fused and separate softmax differ at %zu", what, i);
        assert_close(vals, wvals, (size_t)N * d, 1e-5, what);
        for (int i = 0; i < 16; i++)
            cr_assert(pre[ab + i] == 7.f && probs[ab + i] == 7.f && vals[(size_t)N * d + i] == 7.f,
                      "%s: wrote past the end", what);

        /* backward */
        float *gvals = rand_buf((size_t)N * d, 1), *gprobs = malloc(sizeof(float) * (ab + 16)), *gv = rand_buf(hb, 1);
        float *gpre = rand_buf(ab, 1), *gq = rand_buf(hb, 1), *gk = rand_buf(hb, 1);
        float *gq0 = copy_buf(gq, hb), *gk0 = copy_buf(gk, hb);
        gprobs[ab] = 7.f;
        fs_attn_values_backward(gprobs, gv, gvals, probs, v, H, N, hd);
        fs_attn_scores_backward(gq, gk, gpre, q, k, H, N, hd, scale);
        double *wgp = malloc(sizeof(double) * ab), *wgv = calloc(hb, sizeof(double));
        double *wgq = malloc(sizeof(double) * hb), *wgk = malloc(sizeof(double) * hb);
        for (size_t i = 0; i < hb; i++)
            wgq[i] = gq0[i], wgk[i] = gk0[i];
        for (int h = 0; h < H; h++)
            for (int i = 0; i < N; i++)
                for (int j = 0; j < N; j++) {
                    double s = 0, p = probs[((size_t)h * N + i) * N + j];
                    double g = (double)gpre[((size_t)h * N + i) * N + j] * scale;
                    for (int u = 0; u < hd; u++) {
                        double go = gvals[(size_t)i * d + h * hd + u];
                        s += go * v[((size_t)h * N + j) * hd + u];
                        wgv[((size_t)h * N + j) * hd + u] += p * go;
                        if (j <= i) {
                            wgq[((size_t)h * N + i) * hd + u] += g * k[((size_t)h * N + j) * hd + u];
                            wgk[((size_t)h * N + j) * hd + u] += g * q[((size_t)h * N + i) * hd + u];
                        }
                    }
                    wgp[((size_t)h * N + i) * N + j] = s;
                }
        assert_close(gprobs, wgp, ab, 1e-5, "attn values backward gprobs");
        cr_assert_eq(gprobs[ab], 7.f, "gprobs written past the end");
        assert_close(gv, wgv, hb, 1e-5, "attn values backward gv");
        assert_close(gq, wgq, hb, 1e-5, "attn scores backward gq");
        assert_close(gk, wgk, hb, 1e-5, "attn scores backward gk");
        free(q), free(k), free(v), free(pre), free(probs), free(probs2), free(vals), free(wpre), free(wp), free(wvals);
        free(gvals), free(gprobs), free(gv), free(gpre), free(gq), free(gk), free(gq0), free(gk0);
        free(wgp), free(wgv), free(wgq), free(wgk);
    }
}

/* ---------------------------------------------------------------- optimizer */

/* Attention's weighted sums of rows, several output rows (or a wide row's 8-float
 * blocks) at once, give each element the sum of one row at a time, bit for bit. */
Test(kernels, weighted_rows_in_tiles_equal_one_row_at_a_time)
{
    static const int widths[] = {4, 8, 12, 16, 32, 64};
    for (int trial = 0; trial < 60; trial++) {
        int n = widths[trial % 6], count = 1 + trial % 9, m = 1 + (trial * 7) % 23;
        size_t ldw = 1 + (size_t)(trial % 2) * 30, ws = trial % 2 ? 1 : (size_t)m, ld = (size_t)n + 3 * (trial % 3);
        float *w = rand_buf((size_t)count * m * ldw + 32, 1), *rows = rand_buf((size_t)m * ld + 8, 1);
        float *got = rand_buf((size_t)count * (n + 5), 1), *want = malloc(sizeof(float) * (size_t)count * (n + 5));
        memcpy(want, got, sizeof(float) * (size_t)count * (n + 5));
        vweighted_rows_n(got, (size_t)n + 5, count, w, ldw, ws, rows, ld, m, n);
        for (int r = 0; r < count; r++)
            vweighted_rows(want + (size_t)r * (n + 5), w + (size_t)r * ws, ldw, rows, ld, m, n);
        for (size_t i = 0; i < (size_t)count * (n + 5); i++)
            cr_assert_eq(got[i], want[i], "n %d count %d m %d: element %zu %.9g vs %.9g", n, count, m, i, got[i],
                         want[i]);
        free(w), free(rows), free(got), free(want);
    }
}

Test(kernels, adam_update_is_bit_exact_scalar_formula)
{
    /* bias corrections as early steps have them, and exactly 1 (b1's, then both) as
     * later steps do: the vector path skips those divisions */
    static const float bcs[3][2] = {{0.271f, 0.00299f}, {1.f, 0.00299f}, {1.f, 1.f}};
    for (int k = 0; k < 3; k++) {
        size_t n = 1000 + 13;
        float *p = rand_buf(n, 1), *m = rand_buf(n, 0.01), *v = rand_buf(n, 0.01), *g = rand_buf(n, 0.1);
        for (size_t i = 0; i < n; i++)
            v[i] = fabsf(v[i]) * 1e-3f;
        for (size_t i = 0; i < n; i += 17)
            g[i] *= 1e-9f; /* near eps */
        float *p2 = copy_buf(p, n), *m2 = copy_buf(m, n), *v2 = copy_buf(v, n);
        float b1 = 0.9f, b2 = 0.999f, eps = 1e-8f, bc1 = bcs[k][0], bc2 = bcs[k][1], lr = 1e-3f, clip = 0.75f;
        fs_adam_update(p, m, v, g, n, b1, b2, eps, bc1, bc2, lr, clip);
        for (size_t i = 0; i < n; i++) { /* the loop of fs_optim_update, as written there */
            float gi = g[i] * clip;
            m2[i] = b1 * m2[i] + (1.f - b1) * gi;
            v2[i] = b2 * v2[i] + (1.f - b2) * gi * gi;
            float mhat = m2[i] / bc1, vhat = v2[i] / bc2;
            p2[i] -= lr * mhat / (sqrtf(vhat) + eps);
            cr_assert(p[i] == p2[i] && m[i] == m2[i] && v[i] == v2[i], "bc %g %g: adam element %zu differs", bc1,
                      bc2, i);
        }
        double ss = 0;
        for (size_t i = 0; i < n; i++)
            ss += (double)g[i] * g[i];
        cr_assert(fabs(fs_sum_squares(g, n) - ss) <= 1e-12 * ss);
        cr_assert(fabs(fs_sum_squares_blocks(g, n) - ss) <= 1e-6 * ss);
        free(p), free(m), free(v), free(g), free(p2), free(m2), free(v2);
    }
}

/* ---------------------------------------------------------------- trainer */

typedef struct {
    fs_model m;
    fs_trainer t;
    float *ex;
    int *lab;
} small_run;

static void small_setup(small_run *r, fs_optimizer_kind kind, int threads, double wd)
{
    fs_model_config c;
    fs_model_config_default(&c);
    c.input_dim = 24;
    c.d_model = 32;
    c.num_heads = 4;
    c.init_seed = 3;
    fs_error err = {{0}};
    cr_assert_eq(fs_model_create(&r->m, &c, &err), 0, "%s", err.msg);
    fs_model_init_params(&r->m);
    fs_optim_config oc = {.kind = kind, .lr = 1e-2, .b1 = 0.9, .b2 = 0.999, .eps = 1e-8, .weight_decay = wd,
                          .warmup_steps = 2, .decay_steps = 10};
    int P = 3, B = 12;
    cr_assert_eq(fs_trainer_init(&r->t, &r->m, P, B, threads, &oc, &err), 0, "%s", err.msg);
    r->ex = rand_buf((size_t)B * P * c.input_dim, 1);
    r->lab = malloc(sizeof(int) * (size_t)B * P);
    for (int i = 0; i < B * P; i++)
        r->lab[i] = (int)(urand() * c.num_classes);
    fs_acts_set_inputs(&r->t.acts, r->ex, r->lab, 0, B);
}

static void small_free(small_run *r)
{
    fs_trainer_free(&r->t);
    fs_model_free(&r->m);
    free(r->ex);
    free(r->lab);
}

Test(kernels, trainer_is_deterministic_for_a_thread_count)
{
    for (int threads = 1; threads <= 3; threads++) {
        small_run a, b;
        rng_state = 42;
        small_setup(&a, FS_OPT_ADAM, threads, 0);
        rng_state = 42;
        small_setup(&b, FS_OPT_ADAM, threads, 0);
        for (int s = 0; s < 4; s++) {
            double la = fs_trainer_step(&a.t, 12, NULL), lb = fs_trainer_step(&b.t, 12, NULL);
            cr_assert(la == lb, "threads %d step %d: losses %.17g vs %.17g", threads, s, la, lb);
        }
        cr_assert(memcmp(a.m.params, b.m.params, sizeof(float) * a.m.layout.total) == 0,
                  "threads %d: parameters differ between identical runs", threads);
        small_free(&a);
        small_free(&b);
    }
}

Test(kernels, trainer_step_equals_grad_then_optim_update)
{
    static const fs_optimizer_kind kinds[] = {FS_OPT_ADAM, FS_OPT_SGD, FS_OPT_WARMUP_DECAY, FS_OPT_COSINE};
    for (int k = 0; k < 4; k++)
        for (int wd = 0; wd < 2; wd++) {
            small_run a, b;
            rng_state = 7;
            small_setup(&a, kinds[k], 2, wd ? 1e-3 : 0);
            rng_state = 7;
            small_setup(&b, kinds[k], 2, wd ? 1e-3 : 0);
            for (int s = 0; s < 3; s++) {
                double ga, la = fs_trainer_step(&a.t, 12, &ga);
                double lb = fs_trainer_grad(&b.t, 12);
                double gb = fs_optim_update(&b.t.optim, &b.t.state, &b.m, b.t.grads);
                cr_assert(la == lb, "kind %d wd %d step %d: loss %.17g vs %.17g", k, wd, s, la, lb);
                /* warmup_decay clips with it: double precision; otherwise reported only */
                double tol = kinds[k] == FS_OPT_WARMUP_DECAY || wd ? 1e-12 : 1e-6;
                cr_assert(fabs(ga - gb) <= tol * gb, "kind %d: grad norm %.17g vs %.17g", k, ga, gb);
                cr_assert(memcmp(a.m.params, b.m.params, sizeof(float) * a.m.layout.total) == 0,
                          "kind %d wd %d step %d: parameters differ from fs_optim_update's", k, wd, s);
            }
            small_free(&a);
            small_free(&b);
        }
}

/* ---------------------------------------------------------------- forward-only query logits */

/* fs_forward_query_logits equals out[P-1] of the cache-writing forward (the same float
 * operations per element), over configurations that take its different paths. */
Test(kernels, query_logits_equal_full_forward)
{
    for (int variant = 0; variant < 11; variant++) {
        fs_model_config c;
        fs_model_config_default(&c);
        c.input_dim = 40;
        c.d_model = 32;
        c.num_heads = 4;
        c.init_seed = 11 + variant;
        int P = 3;
        switch (variant) {
        case 1: c.mlp_ratio = 0; break;                         /* attention-only */
        case 2: c.pos_embedding = FS_POS_APE; break;
        case 3: c.pos_embedding = FS_POS_SINUSOIDAL; break;
        case 4: c.no_norm = true; break;
        case 5: c.qkv_bias = true; c.depth = 3; break;
        case 6: c.depth = 1; break;
        case 7: P = 10; break;                                  /* 19 tokens: longer than a vector */
        case 8: c.num_classes = 70; break;                      /* no label table */
        case 9: c.d_model = 36; c.num_heads = 3; c.input_dim = 7; break; /* odd widths */
        case 10: c.d_model = 144; c.num_heads = 2; break;       /* heads 72 wide: the copies path */
        }
        fs_error err = {{0}};
        fs_model m;
        cr_assert_eq(fs_model_create(&m, &c, &err), 0, "%s", err.msg);
        fs_model_init_params(&m);
        for (size_t i = 0; i < m.layout.total; i++) /* break the init's symmetries (LN 1/0, zero biases) */
            m.params[i] += (float)((2 * urand() - 1) * 0.05);
        int B = 37;
        fs_acts a;
        cr_assert_eq(fs_acts_create(&a, &c, P, B, &err), 0, "%s", err.msg);
        float *ex = rand_buf((size_t)B * P * c.input_dim, 1);
        int *lab = malloc(sizeof(int) * (size_t)B * P);
        for (int i = 0; i < B * P; i++)
            lab[i] = i % 11 == 5 ? c.num_classes + 2 : (int)(urand() * c.num_classes); /* some out of range */
        fs_acts_set_inputs(&a, ex, lab, 0, B);
        fs_forward(&m, &a, NULL, B);
        float *logits = malloc(sizeof(float) * (size_t)B * c.num_classes);
        for (int threads = 1; threads <= 2; threads++) {
            fs_query_ws *ws = fs_query_ws_create(&c, P, threads);
            cr_assert_not_null(ws);
            cr_assert_eq(fs_forward_query_logits(&m, ws, ex, lab, B, logits), 0);
            cr_assert_eq(fs_forward_query_logits(&m, ws, ex, lab, B, logits), 0); /* reuse of the workspace */
            for (int b = 0; b < B; b++)
                for (int k = 0; k < c.num_classes; k++) {
                    float want = fs_leaf_ptr(&a, fs_top_after(&c, L_OUT), b)[(size_t)(P - 1) * c.num_classes + k];
                    float got = logits[(size_t)b * c.num_classes + k];
                    cr_assert(got == want, "variant %d threads %d seq %d class %d: %.9g vs full forward %.9g", variant,
                              threads, b, k, got, want);
                }
            fs_query_ws_free(ws);
        }
        free(ex), free(lab), free(logits);
        fs_acts_free(&a);
        fs_model_free(&m);
    }
}

/* A query workspace made for another model config is refused with -1, nothing written
 * (its scratch is sized for that config): no crash, no abort. */
Test(kernels, query_logits_refuse_a_workspace_of_another_config)
{
    fs_model_config c, other;
    fs_model_config_default(&c);
    other = c;
    other.d_model = 2 * c.d_model;
    fs_error err = {{0}};
    fs_model m;
    cr_assert_eq(fs_model_create(&m, &c, &err), 0, "%s", err.msg);
    fs_model_init_params(&m);
    int P = 3, B = 4;
    float *ex = rand_buf((size_t)B * P * c.input_dim, 1), logits[4 * 64];
    int lab[4 * 3] = {0};
    for (int i = 0; i < B * c.num_classes; i++)
        logits[i] = 7.f;
    fs_query_ws *ws = fs_query_ws_create(&other, P, 1);
    cr_assert_not_null(ws);
    cr_assert_eq(fs_forward_query_logits(&m, ws, ex, lab, B, logits), -1);
    cr_assert_eq(fs_forward_query_logits_from(&m, ws, 1, ex, B, logits), -1);
    for (int i = 0; i < B * c.num_classes; i++)
        cr_assert_eq(logits[i], 7.f, "logits[%d] was written", i);
    fs_query_ws_free(ws);
    free(ex);
    fs_model_free(&m);
}

/* After warm-up, a training step allocates nothing: heap in use and mapped blocks stay
 * exactly the same across steps (mallinfo2; under ASan the counters do not move). */
Test(kernels, trainer_step_does_not_allocate)
{
    small_run r;
    rng_state = 5;
    small_setup(&r, FS_OPT_ADAM, 2, 0);
    for (int s = 0; s < 3; s++)
        fs_trainer_step(&r.t, 12, NULL);
    struct mallinfo2 before = mallinfo2();
    for (int s = 0; s < 20; s++)
        fs_trainer_step(&r.t, 12, NULL);
    struct mallinfo2 after = mallinfo2();
    cr_assert_eq(after.uordblks, before.uordblks, "heap in use changed: %zu -> %zu", before.uordblks, after.uordblks);
    cr_assert_eq(after.hblkhd, before.hblkhd, "mmapped blocks changed: %zu -> %zu", before.hblkhd, after.hblkhd);
    cr_assert_eq(after.arena, before.arena, "heap size changed: %zu -> %zu", before.arena, after.arena);
    small_free(&r);
}
