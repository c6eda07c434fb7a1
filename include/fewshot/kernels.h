/* Dense kernels over flat row-major arrays: one forward and one backward per layer
 * type, as in llm.c. Backward functions accumulate (+=) into their gradients. */
#ifndef FEWSHOT_KERNELS_H
#define FEWSHOT_KERNELS_H

#include <stddef.h>

/* out[M,N] = in[M,K] @ w[N,K]^T (+ bias[N] if non-NULL). Weights are [out, in]. */
void fs_matmul_forward(float *out, const float *in, const float *w, const float *bias, int M, int K, int N);
/* din[M,K] += dout @ w; dw[N,K] += dout^T @ in; dbias[N] += column sums of dout.
 * Any of din, dw, dbias may be NULL. */
void fs_matmul_backward(float *din, float *dw, float *dbias, const float *dout, const float *in, const float *w,
                        int M, int K, int N);

/* LayerNorm over the last dimension C of [M,C] rows (biased variance, eps 1e-5). */
void fs_layernorm_forward(float *out, float *mean, float *rstd, const float *in, const float *w, const float *b,
                          int M, int C);
void fs_layernorm_backward(float *din, float *dw, float *db, const float *dout, const float *in, const float *w,
                           const float *mean, const float *rstd, int M, int C);

/* GELU, tanh approximation. */
void fs_gelu_forward(float *out, const float *in, size_t n);
void fs_gelu_backward(float *din, const float *in, const float *dout, size_t n);

/* Softmax over rows of length n (full rows: masked entries hold -1e20 and give 0). */
void fs_softmax_forward(float *out, const float *in, int rows, int n);
void fs_softmax_backward(float *din, const float *out, const float *dout, int rows, int n);

/* RoPE, interleaved pairs, on [H, N, hd] with positions 0..N-1 (SPEC section 1). */
void fs_rope_forward(float *out, const float *in, int H, int N, int hd, double base);
void fs_rope_backward(float *din, const float *dout, int H, int N, int hd, double base);

#endif
