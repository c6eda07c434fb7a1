/* A flat C API over the library, for language bindings (python/fewshot reads it through
 * cffi in ABI mode) and for C programs that want opaque handles instead of the structs.
 *
 * Conventions:
 * - Handles (fs_api_model, fs_api_layout, fs_api_clamps, fs_api_kv) are created by one
 *   call and released by their _free call; nothing is global, so any number of them can
 *   live at once. A layout, clamp set or KV classifier borrows its model: free it first.
 * - Arrays are C-contiguous: float32 for values, int32 for labels, uint8 (0/1) for masks.
 *   The caller owns every array it passes and every output buffer (sized as documented).
 * - Fallible calls return 0 on success and -1 on error with the message in *err (naming
 *   the field and what was expected); nothing is printed and the process never exits.
 * - Leaves are named by dotted paths, the block index as a component:
 *   "transformer_output.block_outputs.1.attn_output.attn_scores" (docs/cache.md).
 * - Calls on one handle are not reentrant; different handles may be used from different
 *   threads. Forward and backward passes use OpenMP threads internally. */
#ifndef FEWSHOT_API_H
#define FEWSHOT_API_H

#include <stddef.h>
#include <stdint.h>

#include "fewshot/error.h"

/* The library's version string, e.g. "0.3.0" (FEWSHOT_VERSION of the build). */
const char *fs_api_version(void);

/* Release a string returned by this API. */
void fs_api_free(void *p);

/* ---- models ---- */

typedef struct fs_api_model fs_api_model;

/* Initialise a model. config_json: a JSON object with a "model" section (a whole run
 * config is fine), or NULL for the documented model; seed >= 0 replaces model.init_seed. */
int fs_api_model_init(const char *config_json, int64_t seed, fs_api_model **out, fs_error *err);
/* Load a safetensors model or checkpoint; config_json as above, or NULL to use the
 * config stored in the file (an explicit one must agree with it). */
int fs_api_model_load(const char *path, const char *config_json, fs_api_model **out, fs_error *err);
int fs_api_model_save(const fs_api_model *m, const char *path, fs_error *err);
void fs_api_model_free(fs_api_model *m);
/* The model config as a JSON object text (the "model" section); free with fs_api_free. */
char *fs_api_model_config(const fs_api_model *m);

/* Parameters, in the file's order (docs/model.md): the name and shape of tensor i
 * (ndim 1 or 2, shape[1] unused for 1), and a copy of its values into out (numel floats). */
int fs_api_param_count(const fs_api_model *m);
const char *fs_api_param_info(const fs_api_model *m, int i, int *ndim, int64_t shape[2]);
void fs_api_param_copy(const fs_api_model *m, int i, float *out);

/* ---- the cache tree for sequences of P pairs ---- */

typedef struct fs_api_layout fs_api_layout;

int fs_api_layout_create(const fs_api_model *m, int P, fs_api_layout **out, fs_error *err);
void fs_api_layout_free(fs_api_layout *l);
int fs_api_layout_count(const fs_api_layout *l);
/* Dotted name of leaf i; its per-sequence shape into shape[0..rank) and the rank as the
 * result (-1 for a null leaf: pos_embedding under RoPE). Leaf "labels" holds the labels
 * as float32 values. */
const char *fs_api_layout_name(const fs_api_layout *l, int i);
int fs_api_layout_shape(const fs_api_layout *l, int i, int64_t shape[4]);

/* ---- clamps: per leaf a value and a mask, for every sequence or per sequence ---- */

typedef struct fs_api_clamps fs_api_clamps;

int fs_api_clamps_create(const fs_api_layout *l, fs_api_clamps **out, fs_error *err);
void fs_api_clamps_free(fs_api_clamps *c);
/* Clamp leaf i: value and mask hold numel elements (batch 0: every sequence) or
 * batch * numel (sequence b gets entry b; the run must then have exactly batch
 * sequences). Where mask is 1 the value replaces the computed one (docs/cache.md). */
int fs_api_clamps_set(fs_api_clamps *c, int i, const float *value, const uint8_t *mask, int64_t batch,
                      fs_error *err);

/* ---- runs ---- */

/* Forward B sequences (examples [B][P][D], labels [B][P]) with `clamps` (may be NULL; made
 * from a layout of the same P) and named interventions (JSON object text, may be NULL)
 * held on. logits (may be NULL) receives out: [B][P][C]. For k < nsel, outs[k] receives
 * leaf sel[k] of every sequence: [B] + its shape. */
int fs_api_run(const fs_api_model *m, const float *examples, const int32_t *labels, int64_t B, int P,
               const fs_api_clamps *clamps, const char *interventions_json, const int *sel, int nsel,
               float *const *outs, float *logits, fs_error *err);

/* Mean query cross-entropy of B sequences plus weight_decay x the sum of the parameter
 * tensors' Frobenius norms, and its gradient: grads[i] receives the gradient of parameter
 * tensor i (its numel floats). Clamped elements get no gradient (docs/cache.md). */
int fs_api_loss_and_grads(const fs_api_model *m, const float *examples, const int32_t *labels, int64_t B, int P,
                          const fs_api_clamps *clamps, const char *interventions_json, double weight_decay,
                          double *loss, float *const *grads, fs_error *err);

/* ---- classifying many queries against one context (frozen key-value cache) ---- */

typedef struct fs_api_kv fs_api_kv;

/* Context: pairs >= 1 exemplar-label pairs (examples [pairs][D], labels [pairs]). */
int fs_api_kv_create(const fs_api_model *m, const float *examples, const int32_t *labels, int pairs,
                     fs_api_kv **out, fs_error *err);
void fs_api_kv_free(fs_api_kv *kv);
/* logits [nq][C] of queries [nq][D]; threads <= 0: all cores. */
int fs_api_kv_classify(const fs_api_kv *kv, const float *queries, int64_t nq, int threads, float *logits,
                       fs_error *err);

/* ---- training runs ---- */

/* Called after every step; the run's position and latest evaluation (eval_name "" before
 * the first). */
typedef void (*fs_api_progress_fn)(void *ctx, int64_t step, int64_t total_steps, int64_t iter, double seqs_per_s,
                                   double loss, const char *eval_name, double eval_acc);

/* A training run into out_dir (docs/formats.md): config is a file path (is_path 1) or
 * JSON text; threads >= 0 replaces train.threads. When *stop (may be NULL) becomes
 * non-zero (e.g. set from the progress callback), the run writes a checkpoint after the
 * current step and returns 1; stop_after > 0 does the same after that many sequences.
 * Returns 0 when done, 1 when stopped, -1 on error. */
int fs_api_train(const char *config, int is_path, const char *out_dir, int resume, int64_t stop_after, int threads,
                 const volatile int *stop, fs_api_progress_fn progress, void *ctx, fs_error *err);

#endif
