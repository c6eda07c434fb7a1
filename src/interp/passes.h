/* The other forward passes of a step behind computed clamps (interventions.h): their
 * backward, run after the final pass's, adds their parameter gradients. */
#ifndef FEWSHOT_INTERP_PASSES_H
#define FEWSHOT_INTERP_PASSES_H

#include "fewshot/interventions.h"
#include "model/grad_links.h"

/* The buffers the gradient through the passes needs (what a forward alone does not),
 * allocated once; call before fs_held_update so that it marks the computed elements.
 * Nothing to do with clamp_gradients "stop" or without computed clamps. */
int fs_held_grads(fs_held_clamps *hc, fs_error *err);
/* Links for the final (clamped, loss) pass's backward; NULL when no clamp is computed,
 * clamp_gradients is "stop" or fs_held_grads was not called. */
const fs_grad_links *fs_held_links(const fs_held_clamps *hc);
/* Whether fs_held_backward_range has work (then it needs a spare gradient buffer). */
bool fs_held_has_backward(const fs_held_clamps *hc);
/* After the final pass's backward of sequences [b0, b1) with fs_held_links: the other
 * passes' backward in reverse order, each written into `spare` (bound by spare_ptrs) and
 * added into `grads` (`total` floats). Ranges may run in parallel (scratch as for
 * fs_backward_range). */
void fs_held_backward_range(const fs_held_clamps *hc, const fs_model *m, float *scratch, float *spare,
                            const fs_param_ptrs *spare_ptrs, float *grads, size_t total, int b0, int b1,
                            double denom);

#endif
