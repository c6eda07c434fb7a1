/* Dense kernels over flat row-major arrays: one forward and one backward per layer
 * type, as in llm.c. Backward functions accumulate (+=) into their gradients.
 * Written on SIMDe vectors (AVX-512 or AVX2 paths, SIMDe's portable code elsewhere);
 * every kernel handles any size (tails past the last whole vector included), and an
 * output element's value never depends on the sizes around it (M, the tiling). */
#ifndef FEWSHOT_KERNELS_H
#define FEWSHOT_KERNELS_H

#include <stddef.h>

/* out[M,N] = in[M,K] @ w[N,K]^T (+ bias[N] if non-NULL). Weights are [out, in]. */
void fs_matmul_forward(float *out, const float *in, const float *w, const float *bias, int M, int K, int N);
/* din[M,K] += dout @ w; dw[N,K] += dout^T @ in; dbias[N] += column sums of dout.
 * Any of din, dw, dbias may be NULL. */
void fs_matmul_backward(float *din, float *dw, float *dbias, const float *dout, const float *in, const float *w,
                        int M, int K, int N);

/* The matrix-product micro-kernel behind the others:
 * C[i][j] (+)= sum_{r<R} A[i*a_row + r*a_col] * B[r*ldb + j] for i < M, j < N;
 * accumulate = 0 overwrites C with (bias[j] or 0) + the sum. */
void fs_gemm(float *C, size_t ldc, const float *A, size_t a_row, size_t a_col, const float *B, size_t ldb, int M,
             int N, int R, int accumulate, const float *bias);
/* out[M,N] = in[M,K] @ wt + bias with the weights packed as wt[K][N] = w^T (fs_transpose). */
void fs_matmul_forward_packed(float *out, const float *in, const float *wt, const float *bias, int M, int K, int N);
/* The same from w as stored ([N][K]): the same floats, no transposed copy needed. */
void fs_matmul_forward_gemm(float *out, const float *in, const float *w, const float *bias, int M, int K, int N);
/* dst[cols][rows] = src[rows][cols]^T. */
void fs_transpose(float *dst, const float *src, int rows, int cols);
/* Only source rows [r0, r1) (dst columns r0..r1-1): to split a transpose between threads. */
void fs_transpose_rows(float *dst, const float *src, int rows, int cols, int r0, int r1);
/* fs_matmul_backward writing (=) din, dw and dbias instead of adding to them. */
void fs_matmul_backward_set(float *din, float *dw, float *dbias, const float *dout, const float *in, const float *w,
                            int M, int K, int N);
/* sum[N] += column sums of x[M][N]. */
void fs_colsum_add(float *sum, const float *x, int M, int N);

/* LayerNorm over the last dimension C of [M,C] rows (biased variance, eps 1e-5). */
void fs_layernorm_forward(float *out, float *mean, float *rstd, const float *in, const float *w, const float *b,
                          int M, int C);
void fs_layernorm_backward(float *din, float *dw, float *db, const float *dout, const float *in, const float *w,
                           const float *mean, const float *rstd, int M, int C);

/* x[i] = exp(x[i]), vectorised (about 2 ulp; exactly 0 below -87.3). */
void fs_exp_inplace(float *x, size_t n);

/* GELU, tanh approximation (evaluated as x * sigmoid(2u), the same function). */
void fs_gelu_forward(float *out, const float *in, size_t n);
void fs_gelu_backward(float *din, const float *in, const float *dout, size_t n);
/* g[i] *= gelu'(in[i]) */
void fs_gelu_backward_inplace(float *g, const float *in, size_t n);
/* out[i] = gelu(in[i]) and grad[i] = gelu'(in[i]), bit for bit those of fs_gelu_forward
 * and fs_gelu_backward_inplace, sharing the tanh */
void fs_gelu_forward_keep_grad(float *out, float *grad, const float *in, size_t n);
/* g[i] *= s[i] */
void fs_mul_inplace(float *g, const float *s, size_t n);

/* Softmax over rows of length n (full rows: masked entries hold -1e20 and give 0). */
void fs_softmax_forward(float *out, const float *in, int rows, int n);
/* din = p * (dout - sum_i p_i dout_i) per row of the softmax p (written, not added). */
void fs_softmax_backward(float *din, const float *p, const float *dout, int rows, int n);

/* RoPE, interleaved pairs, on [H, N, hd] with positions 0..N-1 (docs/model.md). */
void fs_rope_forward(float *out, const float *in, int H, int N, int hd, double base);
void fs_rope_backward(float *din, const float *dout, int H, int N, int hd, double base);

/* The angle of pair i at position p (theta = p / base^(2i/hd), in double, rounded to
 * float like the reference's f32 tables): its sine and cosine. Every RoPE path's table. */
void fs_rope_angle(int p, int i, int hd, double base, float *s, float *c);
/* The same with a precomputed table cs[2][N][hd] of fs_rope_table: cos of each pair's
 * angle twice, then (-sin, sin); hd even. */
void fs_rope_table(float *cs, int N, int hd, double base);
void fs_rope_forward_table(float *out, const float *in, int H, int N, int hd, const float *cs); /* out may be in */
/* din = the rotated-back gradient (overwritten; din may be dout). */
void fs_rope_backward_table(float *din, const float *dout, int H, int N, int hd, const float *cs);

/* Adam on n elements: g' = g * clip; m = b1 m + (1-b1) g'; v = b2 v + (1-b2) g'^2;
 * p -= lr (m / bc1) / (sqrt(v / bc2) + eps) -- the float operations of
 * fs_optim_update, so slices of it give bit-identical results. */
void fs_adam_update(float *p, float *m, float *v, const float *g, size_t n, float b1, float b2, float eps, float bc1,
                    float bc2, float lr, float clip);
/* out[i] = rows[0][offset + i] + rows[1][offset + i] + ... (in that order), i < count */
void fs_sum_rows(float *out, const float *const *rows, int n, size_t offset, size_t count);
/* sum of x[i]^2 in double */
double fs_sum_squares(const float *x, size_t n);
/* the same to ~1e-7 relative (float lanes over blocks, blocks summed in double); faster */
double fs_sum_squares_blocks(const float *x, size_t n);

/* Causal attention of one sequence (docs/model.md), layouts as the cache: q, k, v
 * [H][N][hd], pre/probs [H][N][N], values [N][H*hd]. Specialised for N <= vector width.
 * pre = scale * q k^T with key > query set to -1e20; probs (if non-NULL) = softmax(pre). */
void fs_attn_scores(float *pre, float *probs, const float *q, const float *k, int H, int N, int hd, float scale);
/* values[i] = sum over every key j of probs[i][j] v_j (heads concatenated). */
void fs_attn_values(float *values, const float *probs, const float *v, int H, int N, int hd);
/* gprobs = gvalues . v; gv = probs^T gvalues (both overwritten). */
void fs_attn_values_backward(float *gprobs, float *gv, const float *gvalues, const float *probs, const float *v, int H,
                             int N, int hd);
/* gq, gk += the gradients through pre = scale * q k^T at unmasked entries (key <= query). */
void fs_attn_scores_backward(float *gq, float *gk, const float *gpre, const float *q, const float *k, int H, int N,
                             int hd, float scale);

/* The build's vector width: its name ("AVX-512", "AVX2+FMA", "portable (SIMDe)") and
 * floats per vector. */
const char *fs_simd_name(void);
int fs_simd_width(void);
/* Measured fp32 multiply-adds per second (vector lanes, FMA chains in registers) on
 * `threads` threads for about `seconds`: the peak the kernels are compared against. */
double fs_fma_peak(int threads, double seconds);

#endif
