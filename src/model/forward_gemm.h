/* The cache forward's choice of matrix kernel (internal). */
#ifndef FEWSHOT_MODEL_FORWARD_GEMM_H
#define FEWSHOT_MODEL_FORWARD_GEMM_H

#include <stdbool.h>

#include "fewshot/forward.h"

/* fs_forward_range with the blocked matrix kernel (gemm: it reads the weights as
 * stored, transposing panels of them on the way in, so nothing needs refreshing when
 * they change) or with dot products (!gemm, as fs_forward_range); the same results up
 * to rounding. fs_forward uses the matrix kernel from 8 sequences on.
 * gelu_grad (fs_gelu_grad_floats(a), or NULL) keeps GELU's derivative at every MLP
 * hidden unit of the range for a backward that follows (fs_backward_range_links): the
 * forward computes it from the tanh it has anyway, the backward then only multiplies. */
void fs_forward_range_gemm(const fs_model *m, fs_acts *a, const fs_clamp_set *clamps, int b0, int b1, bool gemm,
                           float *gelu_grad);

/* A gelu_grad buffer for a is [depth][B][N][mlp hidden]: its floats, and where layer
 * `layer`'s rows of sequence b start. */
size_t fs_gelu_grad_floats(const fs_acts *a);
size_t fs_gelu_grad_offset(const fs_acts *a, int layer, int b);

#endif
