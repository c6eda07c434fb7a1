/* Forward and backward passes over the activation arena (docs/model.md, docs/cache.md). */
#ifndef FEWSHOT_FORWARD_H
#define FEWSHOT_FORWARD_H

#include "fewshot/cache.h"
#include "fewshot/model.h"

/* Forward on sequences [b0, b1) whose `examples` and `labels` leaves are filled;
 * every leaf is assigned, then clamped (clamps may be NULL). */
void fs_forward_range(const fs_model *m, fs_acts *a, const fs_clamp_set *clamps, int b0, int b1);

/* Mean query cross-entropy over sequences [b0, b1) (labels >= C give no loss, docs/sampling.md),
 * divided by `denom` (the whole batch size when a batch is split across threads). */
double fs_query_loss_range(const fs_acts *a, int b0, int b1, double denom);

/* Backward of (sum over [b0,b1) of query CE) / denom. `scratch` holds
 * fs_backward_scratch_floats(a) floats (sequences [b0, b1) use their share, so ranges
 * may run in parallel); `grads` points into a buffer with the parameter layout, every
 * tensor of which is written (overwritten). */
void fs_backward_range(const fs_model *m, const fs_acts *a, const fs_clamp_set *clamps, float *scratch,
                       const fs_param_ptrs *grads, int b0, int b1, double denom);
size_t fs_backward_scratch_floats(const fs_acts *a);

/* Forward on sequences [0, nseq), split across OpenMP threads by whole sequences. */
void fs_forward(const fs_model *m, fs_acts *a, const fs_clamp_set *clamps, int nseq);

/* Forward-only query logits (no cache, no clamps): logits[nseq][C] = out[P-1] of each
 * sequence, for examples [nseq][P][D] and labels [nseq][P] (a label outside [0, C)
 * embeds as zeros, as in the forward). Computes only what the query needs (the last
 * layer for the query token alone) with the same floating-point operations per element
 * as the cache-writing forward, so the logits are bit-identical to its out[P-1].
 * The workspace (created for m->cfg and P; `threads` workers, <= 0: all cores) holds
 * all scratch and a transposed copy of the weights (refreshed on every call), and can be
 * reused across calls and models of that config. Not reentrant on one workspace.
 * Returns 0, or -1 (nothing written) when m's config is not the workspace's. */
typedef struct fs_query_ws fs_query_ws;
fs_query_ws *fs_query_ws_create(const fs_model_config *cfg, int P, int threads); /* NULL on OOM */
void fs_query_ws_free(fs_query_ws *ws);
int fs_forward_query_logits(const fs_model *m, fs_query_ws *ws, const float *examples, const int *labels, int nseq,
                            float *logits);
/* The same from the residual stream entering block `layer` (1 <= layer < depth): resid
 * [nseq][2P-1][d_model] as the cache leaf block_outputs[layer].x; only blocks layer.. run.
 * Bit-identical to the whole path when resid holds what the forward computed. */
int fs_forward_query_logits_from(const fs_model *m, fs_query_ws *ws, int layer, const float *resid, int nseq,
                                 float *logits);

#endif
