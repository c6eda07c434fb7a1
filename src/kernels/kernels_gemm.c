/* Matrix products, register-blocked on SIMDe vectors.
 *
 * One micro-kernel does all of them: C[i][j] (+)= sum_r A(i, r) * B[r][j], with B's rows
 * contiguous in j. A tile of FS_MR rows x FS_NV vectors of C lives in registers while r
 * runs: each step loads FS_NV vectors of B's row r, broadcasts FS_MR elements of A and
 * issues FS_MR * FS_NV fused multiply-adds. A is addressed by two strides, so the same
 * kernel computes
 *   forward      out = in @ W^T      A = in,      B = W^T (packed [K][N]),  r over K
 *   input grad   din += dout @ W     A = dout,    B = W ([N][K] as stored), r over N
 *   weight grad  dW += dout^T @ in   A = dout^T,  B = in,                  r over rows
 * Columns past the last whole vector run through the same tiles on a zero-padded copy. */
#include <math.h>
#include <stdbool.h>
#include <string.h>

#include "kernels/kernels.h"
#include "simd/vmath.h"

#define ALWAYS_INLINE static inline __attribute__((always_inline))

/* The r loop runs in chunks of FS_CHUNK: each chunk's sum starts in fresh registers and
 * is then added to C, so rounding errors grow with sqrt(chunk) + sqrt(R / chunk) rather
 * than sqrt(R) -- about as accurate as dot products with lane-parallel partial sums.
 * 32 rather than 16 halves the loads, adds and stores of C per multiply-add: 2-4% faster
 * products on every training shape (AVX-512, both chunk sizes interleaved in one process). */
#define FS_CHUNK 32

ALWAYS_INLINE void tile(const int mr, const int nv, float *C, size_t ldc, const float *A, size_t ars, size_t acs,
                        const float *B, size_t ldb, int R, int accumulate, const float *bias)
{
    fs_vf acc[FS_MR][FS_NV];
    for (int r0 = 0; r0 < R || r0 == 0; r0 += FS_CHUNK) {
        int r1 = R - r0 < FS_CHUNK ? R : r0 + FS_CHUNK;
#pragma GCC unroll 8
        for (int i = 0; i < mr; i++)
#pragma GCC unroll 8
            for (int v = 0; v < nv; v++)
                acc[i][v] = vzero();
        for (int r = r0; r < r1; r++) {
            const float *b = B + (size_t)r * ldb, *a = A + (size_t)r * acs;
            fs_vf bv[FS_NV];
#pragma GCC unroll 8
            for (int v = 0; v < nv; v++)
                bv[v] = vload(b + v * FS_VL);
#pragma GCC unroll 8
            for (int i = 0; i < mr; i++) {
                fs_vf av = vset1(a[i * ars]);
#pragma GCC unroll 8
                for (int v = 0; v < nv; v++)
                    acc[i][v] = vfma(av, bv[v], acc[i][v]);
            }
        }
        bool first = r0 == 0 && !accumulate;
#pragma GCC unroll 8
        for (int i = 0; i < mr; i++)
#pragma GCC unroll 8
            for (int v = 0; v < nv; v++) {
                float *c = C + i * ldc + v * FS_VL;
                fs_vf base = first ? (bias ? vload(bias + v * FS_VL) : vzero()) : vload(c);
                vstore(c, vadd(base, acc[i][v]));
            }
    }
}

typedef void (*tile_fn)(float *C, size_t ldc, const float *A, size_t ars, size_t acs, const float *B, size_t ldb,
                        int R, int accumulate, const float *bias);

#define TILE(mr, nv)                                                                                              \
    static void tile_##mr##_##nv(float *C, size_t ldc, const float *A, size_t ars, size_t acs, const float *B,   \
                                 size_t ldb, int R, int accumulate, const float *bias)                            \
    {                                                                                                             \
        tile(mr, nv, C, ldc, A, ars, acs, B, ldb, R, accumulate, bias);                                           \
    }
#define TILE_ROW(mr) TILE(mr, 1) TILE(mr, 2)
TILE_ROW(1) TILE_ROW(2) TILE_ROW(3) TILE_ROW(4) TILE_ROW(5) TILE_ROW(6)
#if FS_NV == 4
#define TILE_ROW34(mr) TILE(mr, 3) TILE(mr, 4)
TILE_ROW34(1) TILE_ROW34(2) TILE_ROW34(3) TILE_ROW34(4) TILE_ROW34(5) TILE_ROW34(6)
#define ROW(mr) {tile_##mr##_1, tile_##mr##_2, tile_##mr##_3, tile_##mr##_4}
#else
#define ROW(mr) {tile_##mr##_1, tile_##mr##_2}
#endif
static const tile_fn tiles[FS_MR][FS_NV] = {ROW(1), ROW(2), ROW(3), ROW(4), ROW(5), ROW(6)};

/* B is read in blocks of FS_KC rows; when several row tiles share a block, its FS_NV
 * vectors of columns are first copied into a contiguous panel (FS_KC x FS_NV vectors,
 * 32 KB with AVX-512) that stays in L1 while the tiles run: rows of B a power of two
 * apart (d_model 256, MLP 1024) would otherwise fall into the same few cache sets.
 * FS_KC is a multiple of FS_CHUNK, so blocks split r exactly where chunks do and the
 * sums are the same floats as without blocking. The panel is per thread and static: on
 * the stack it measured ~15% slower with AVX2 (its address aliasing C's rows). */
#define FS_KC 128
_Static_assert(FS_KC % FS_CHUNK == 0, "blocks must split r where the accumulation chunks do");

/* B(r, j): B[r * ldb + j], or with bt (B given transposed, as the weights are stored)
 * B[j * ldb + r]. A transposed B is always read through the panel, transposing
 * FS_VL x FS_VL blocks on the way in, so the tiles see the same floats either way. */
static void gemm(float *C, size_t ldc, const float *A, size_t ars, size_t acs, const float *B, size_t ldb, bool bt,
                 int M, int N, int R, int accumulate, const float *bias)
{
    if (M <= 0 || N <= 0)
        return;
    int nvec = N / FS_VL;
    /* rows split into ceil(M / FS_MR) tiles of nearly equal height (no thin last tile) */
    int ntiles = (M + FS_MR - 1) / FS_MR, base = M / ntiles, extra = M % ntiles;
    static _Thread_local _Alignas(64) float panel[FS_KC * FS_NV * FS_VL];
    for (int r0 = 0; r0 < R || r0 == 0; r0 += FS_KC) {
        int kc = R - r0 < FS_KC ? R - r0 : FS_KC;
        int acc = accumulate || r0 > 0;
        const float *first_bias = r0 == 0 ? bias : NULL;
        for (int j0 = 0; j0 < nvec; j0 += FS_NV) {
            int nv = nvec - j0 < FS_NV ? nvec - j0 : FS_NV, w = nv * FS_VL;
            const float *b = B + (size_t)r0 * ldb + (size_t)j0 * FS_VL;
            size_t lb = ldb;
            if (bt && kc > 0) {
                const float *src = B + (size_t)j0 * FS_VL * ldb + r0;
                int kv = kc / FS_VL * FS_VL;
                for (int r = 0; r < kv; r += FS_VL)
                    for (int c = 0; c < w; c += FS_VL) {
                        fs_vf t[FS_VL];
                        for (int i = 0; i < FS_VL; i++)
                            t[i] = vload(src + (size_t)(c + i) * ldb + r);
                        vtranspose(t);
                        for (int i = 0; i < FS_VL; i++)
                            vstore(panel + (size_t)(r + i) * w + c, t[i]);
                    }
                for (int r = kv; r < kc; r++)
                    for (int c = 0; c < w; c++)
                        panel[(size_t)r * w + c] = src[(size_t)c * ldb + r];
                b = panel;
                lb = (size_t)w;
            } else if (ntiles > 1 && kc > 0) {
                for (int r = 0; r < kc; r++)
                    for (int v = 0; v < nv; v++)
                        vstore(panel + (size_t)(r * nv + v) * FS_VL, vload(b + (size_t)r * ldb + v * FS_VL));
                b = panel;
                lb = (size_t)w;
            }
            for (int t = 0, i0 = 0; t < ntiles; t++) {
                int mr = base + (t < extra);
                tiles[mr - 1][nv - 1](C + (size_t)i0 * ldc + (size_t)j0 * FS_VL, ldc, A + (size_t)i0 * ars + (size_t)r0 * acs,
                                      ars, acs, b, lb, kc, acc, first_bias ? first_bias + (size_t)j0 * FS_VL : NULL);
                i0 += mr;
            }
        }
    }
    /* columns past the last vector (fewer than FS_VL): the same tiles on a zero-padded
     * copy of them, through a buffer of FS_MR x FS_VL, so an element's value does not
     * depend on whether it fell in a vector */
    int jt = nvec * FS_VL, nt = N - jt;
    if (nt == 0)
        return;
    _Alignas(64) float tmp[FS_MR * FS_VL], tbias[FS_VL];
    vstore(tbias, bias ? vload_first(bias + jt, nt) : vzero());
    const float *tail = bt ? B + (size_t)jt * ldb : B + jt;
    for (int t = 0, i0 = 0; t < ntiles; t++) {
        int mr = base + (t < extra);
        float *c = C + (size_t)i0 * ldc + jt;
        for (int i = 0; i < mr && accumulate; i++)
            vstore(tmp + i * FS_VL, vload_first(c + (size_t)i * ldc, nt));
        for (int r0 = 0; r0 < R || r0 == 0; r0 += FS_KC) {
            int kc = R - r0 < FS_KC ? R - r0 : FS_KC;
            if (t == 0 || R > FS_KC) { /* one block of B packed once, else again per tile */
                for (int r = 0; r < kc; r++) {
                    if (!bt) {
                        vstore(panel + r * FS_VL, vload_first(tail + (size_t)(r0 + r) * ldb, nt));
                        continue;
                    }
                    vstore(panel + r * FS_VL, vzero());
                    for (int j = 0; j < nt; j++)
                        panel[r * FS_VL + j] = tail[(size_t)j * ldb + r0 + r];
                }
            }
            tiles[mr - 1][0](tmp, FS_VL, A + (size_t)i0 * ars + (size_t)r0 * acs, ars, acs, panel, FS_VL, kc,
                             accumulate || r0 > 0, r0 == 0 && bias ? tbias : NULL);
        }
        for (int i = 0; i < mr; i++)
            vstore_first(c + (size_t)i * ldc, vload(tmp + i * FS_VL), nt);
        i0 += mr;
    }
}

void fs_gemm(float *C, size_t ldc, const float *A, size_t ars, size_t acs, const float *B, size_t ldb, int M, int N,
             int R, int accumulate, const float *bias)
{
    gemm(C, ldc, A, ars, acs, B, ldb, false, M, N, R, accumulate, bias);
}

/* out = in @ w^T with w as stored ([N][K]): the panels transpose it on the way in. */
void fs_matmul_forward_gemm(float *out, const float *in, const float *w, const float *bias, int M, int K, int N)
{
    gemm(out, (size_t)N, in, (size_t)K, 1, w, (size_t)K, true, M, N, K, 0, bias);
}

void fs_matmul_forward_packed(float *out, const float *in, const float *wt, const float *bias, int M, int K, int N)
{
    fs_gemm(out, (size_t)N, in, (size_t)K, 1, wt, (size_t)N, M, N, K, 0, bias);
}

/* Unpacked weights: dot products along K, a 2 x 4 block of outputs at a time. */
void fs_matmul_forward(float *out, const float *in, const float *w, const float *bias, int M, int K, int N)
{
    int kv = K / FS_VL * FS_VL;
    for (int m = 0; m < M; m += 2) {
        int rows = M - m < 2 ? M - m : 2;
        const float *x0 = in + (size_t)m * K, *x1 = rows > 1 ? x0 + K : x0;
        for (int n = 0; n < N; n += 4) {
            int cols = N - n < 4 ? N - n : 4;
            const float *wr[4];
            for (int c = 0; c < 4; c++)
                wr[c] = w + (size_t)(n + (c < cols ? c : 0)) * K;
            fs_vf a0[4] = {vzero(), vzero(), vzero(), vzero()}, a1[4] = {vzero(), vzero(), vzero(), vzero()};
            for (int k = 0; k < kv; k += FS_VL) {
                fs_vf u = vload(x0 + k), v = vload(x1 + k);
                for (int c = 0; c < 4; c++) {
                    fs_vf wv = vload(wr[c] + k);
                    a0[c] = vfma(u, wv, a0[c]);
                    a1[c] = vfma(v, wv, a1[c]);
                }
            }
            for (int c = 0; c < cols; c++) {
                float s0 = vhsum(a0[c]), s1 = vhsum(a1[c]);
                for (int k = kv; k < K; k++) {
                    s0 += x0[k] * wr[c][k];
                    s1 += x1[k] * wr[c][k];
                }
                float bb = bias ? bias[n + c] : 0.f;
                out[(size_t)m * N + n + c] = s0 + bb;
                if (rows > 1)
                    out[(size_t)(m + 1) * N + n + c] = s1 + bb;
            }
        }
    }
}

void fs_matmul_backward(float *din, float *dw, float *dbias, const float *dout, const float *in, const float *w,
                        int M, int K, int N)
{
    if (din) /* din[M][K] += dout[M][N] @ w[N][K] */
        fs_gemm(din, (size_t)K, dout, (size_t)N, 1, w, (size_t)K, M, K, N, 1, NULL);
    if (dw) /* dw[N][K] += dout^T @ in[M][K] */
        fs_gemm(dw, (size_t)K, dout, 1, (size_t)N, in, (size_t)K, N, K, M, 1, NULL);
    if (dbias)
        fs_colsum_add(dbias, dout, M, N);
}

void fs_matmul_backward_set(float *din, float *dw, float *dbias, const float *dout, const float *in, const float *w,
                            int M, int K, int N)
{
    if (din)
        fs_gemm(din, (size_t)K, dout, (size_t)N, 1, w, (size_t)K, M, K, N, 0, NULL);
    if (dw)
        fs_gemm(dw, (size_t)K, dout, 1, (size_t)N, in, (size_t)K, N, K, M, 0, NULL);
    if (dbias) {
        memset(dbias, 0, sizeof(float) * (size_t)N);
        fs_colsum_add(dbias, dout, M, N);
    }
}

void fs_colsum_add(float *sum, const float *x, int M, int N)
{
    int nv = N / FS_VL * FS_VL;
    for (int j = 0; j < nv; j += FS_VL) {
        fs_vf s = vload(sum + j);
        for (int i = 0; i < M; i++)
            s = vadd(s, vload(x + (size_t)i * N + j));
        vstore(sum + j, s);
    }
    for (int j = nv; j < N; j++) {
        float s = sum[j];
        for (int i = 0; i < M; i++)
            s += x[(size_t)i * N + j];
        sum[j] = s;
    }
}

void fs_transpose_rows(float *dst, const float *src, int rows, int cols, int r0, int r1)
{
    int r8 = r0 + (r1 - r0) / 8 * 8, c8 = cols / 8 * 8;
    for (int r = r0; r < r8; r += 8)
        for (int c = 0; c < c8; c += 8)
            v8transpose_mem(dst + (size_t)c * rows + r, (size_t)rows, src + (size_t)r * cols + c, (size_t)cols);
    for (int r = r0; r < r1; r++)
        for (int c = (r < r8 ? c8 : 0); c < cols; c++)
            dst[(size_t)c * rows + r] = src[(size_t)r * cols + c];
}

void fs_transpose(float *dst, const float *src, int rows, int cols) { fs_transpose_rows(dst, src, rows, cols, 0, rows); }
