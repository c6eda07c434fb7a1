/* Forward and backward passes over the activation arena (SPEC sections 1, 3, 5). */
#ifndef FEWSHOT_FORWARD_H
#define FEWSHOT_FORWARD_H

#include "fewshot/cache.h"
#include "fewshot/model.h"

/* Forward on sequences [b0, b1) whose `examples` and `labels` leaves are filled;
 * every leaf is assigned, then clamped (clamps may be NULL). */
void fs_forward_range(const fs_model *m, fs_acts *a, const fs_clamp_set *clamps, int b0, int b1);

/* Mean query cross-entropy over sequences [b0, b1) (labels >= C give no loss, SPEC 4),
 * divided by `denom` (the whole batch size when a batch is split across threads). */
double fs_query_loss_range(const fs_acts *a, int b0, int b1, double denom);

/* Backward of (sum over [b0,b1) of query CE) / denom. `grad_acts` has the arena's
 * layout (scratch, overwritten), `grads` points into a buffer with the parameter layout (accumulated into). */
void fs_backward_range(const fs_model *m, const fs_acts *a, const fs_clamp_set *clamps, float *grad_acts,
                       const fs_param_ptrs *grads, int b0, int b1, double denom);

/* Forward on sequences [0, nseq), split across OpenMP threads by whole sequences. */
void fs_forward(const fs_model *m, fs_acts *a, const fs_clamp_set *clamps, int nseq);

#endif
