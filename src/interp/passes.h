/* The other forward passes of a step behind computed clamps (interventions.h): their
 * backward, run after the final pass's, adds their parameter gradients. */
#ifndef FEWSHOT_INTERP_PASSES_H
#define FEWSHOT_INTERP_PASSES_H

#include "fewshot/interventions.h"
#include "model/grad_links.h"

/* The buffers the gradient through the passes needs (what a forward alone does not),
 * allocated once, for ranges run by up to `threads` threads at a time; call before
 * fs_held_update so that it marks the computed elements.
 * Nothing to do with clamp_gradients "stop" or without computed clamps. */
int fs_held_grads(fs_held_clamps *hc, int threads, fs_error *err);
/* Links for the final (clamped, loss) pass's backward; NULL when no clamp is computed
 * and nothing runs after it (graft_out), clamp_gradients is "stop" or fs_held_grads was
 * not called. */
const fs_grad_links *fs_held_links(const fs_held_clamps *hc);
/* After the final pass's forward of sequences [b0, b1): the passes that run on it
 * (graft_out's model, whose out becomes a's `out`). */
void fs_held_finish_range(const fs_held_clamps *hc, fs_acts *a, int b0, int b1);
/* Before the final pass's backward of sequences [b0, b1) with fs_held_links, by thread
 * `thread` (< fs_held_grads' threads): the backward of the passes after it (graft_out's
 * model), which fs_held_links hands on to the final pass. */
void fs_held_backward_later(const fs_held_clamps *hc, int b0, int b1, double denom, int thread);
/* Whether fs_held_backward_range has work (then it needs a spare gradient buffer). */
bool fs_held_has_backward(const fs_held_clamps *hc);
/* After the final pass's backward of sequences [b0, b1) with fs_held_links: the other
 * passes' backward in reverse order, each written into `spare` (bound by spare_ptrs) and
 * added into `grads` (`total` floats). Ranges may run in parallel (scratch as for
 * fs_backward_range). */
void fs_held_backward_range(const fs_held_clamps *hc, const fs_model *m, float *scratch, float *spare,
                            const fs_param_ptrs *spare_ptrs, float *grads, size_t total, int b0, int b1,
                            double denom);

/* Grafts (interp/graft.c), for interv_clamps.c. */
int fs_grafts_bind(fs_held_clamps *hc, const fs_held *h, const fs_acts *a, fs_error *err);
void fs_grafts_unbind(fs_held_clamps *hc);
void fs_grafts_update(fs_held_clamps *hc, const fs_acts *a, int nseq);
void fs_grafts_fill(const fs_held_clamps *hc, const fs_acts *a, int b);
void fs_grafts_after_forward(fs_held_clamps *hc, fs_acts *a, int nseq);
int fs_grafts_grads(fs_held_clamps *hc, int threads, fs_error *err);
const float *fs_grafts_inject(const fs_held_clamps *hc, int *leaf);
const fs_grad_links *fs_grafts_links(const fs_held_clamps *hc);

#endif
