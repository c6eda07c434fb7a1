/* Gradient links of one forward pass, for clamps whose values another pass of the same
 * step computes (docs/cache.md: the reference differentiates where(mask, cached, computed)
 * through `cached` too). Per leaf, all [B][numel] like the leaf, any of them NULL:
 *   from     the clamped elements whose value is computed (not a constant)
 *   capture  written by the backward: the leaf's gradient at `from` elements, 0 elsewhere
 *            (what flows into the computation of the cached value)
 *   inject   added to the leaf's gradient: what later passes send back through this
 *            leaf's value.
 * A pass that only feeds other passes has no loss of its own (no_loss). */
#ifndef FEWSHOT_MODEL_GRAD_LINKS_H
#define FEWSHOT_MODEL_GRAD_LINKS_H

#include <stdbool.h>
#include <stdint.h>

#include "fewshot/cache.h"
#include "fewshot/model.h"

typedef struct {
    const uint8_t *from;
    float *capture;
    const float *inject;
} fs_leaf_link;

typedef struct {
    const fs_leaf_link *leaf; /* [leaf count] */
    bool no_loss;
} fs_grad_links;

/* fs_backward_range with links (NULL: as fs_backward_range) and the GELU derivatives
 * the forward kept (fs_forward_range_gemm's gelu_grad, or NULL: computed here). */
void fs_backward_range_links(const fs_model *m, const fs_acts *a, const fs_clamp_set *clamps,
                             const fs_grad_links *links, float *scratch, const float *gelu_grad,
                             const fs_param_ptrs *grads, int b0, int b1, double denom);

#endif
