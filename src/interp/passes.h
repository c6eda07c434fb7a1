/* The other forward passes of a step behind computed clamps (interventions.h): their
 * backward, run after the final pass's, adds their parameter gradients. */
#ifndef FEWSHOT_INTERP_PASSES_H
#define FEWSHOT_INTERP_PASSES_H

#include "fewshot/interventions.h"
#include "model/grad_links.h"

/* Links for the final (clamped, loss) pass's backward; NULL when no clamp is computed
 * or clamp_gradients is "stop". */
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
