/* Progress measures of a model on a probe set (issue 15): per head and layer, from the
 * attention patterns of one forward pass and from the accuracy with heads ablated by
 * the `ablate_heads` intervention. Definitions (README "Progress measures"), for a
 * sequence of P pairs with tokens x_0 y_0 ... x_{P-2} y_{P-2} x_q, A = a head's
 * attn_scores, q = the query token, "matching" context pairs = those whose label is
 * the query's label:
 *
 *   induction_strength   mean over sequences of  sum_match A[q, y_j] - sum_other A[q, y_j]
 *   prev_token_strength  mean over sequences and context labels of  A[y_j, x_j]
 *   label_attention      mean over sequences of  sum_match A[q, y_j]
 *   ablate_head_acc      query accuracy with that head's values zeroed (ablate_heads)
 *   only_head_acc        query accuracy with every other head of its layer zeroed
 *
 * Ablations run the query-only forward on a copy of the model whose ablated heads'
 * value weights are zero (bit-identical to the ablate_heads clamps), from the clean
 * pass's residual stream entering the ablated head's block.
 *
 * The probe set is a fixed, seeded set of training-class sequences in which exactly
 * one context pair has the query's class and label and every other pair another class
 * and another label (for P = 3: the reference's two-pair construction). */
#ifndef FEWSHOT_TRAIN_MEASURES_H
#define FEWSHOT_TRAIN_MEASURES_H

#include "fewshot/cache.h"
#include "fewshot/config.h"
#include "fewshot/forward.h"
#include "fewshot/model.h"
#include "train/sampler.h"

typedef struct {
    int n, P, D;
    float *examples; /* [n][P][D] */
    int *labels;     /* [n][P] */
} fs_probe_set;

/* Draw cfg->measures.probe_size sequences from cfg->measures.probe_seed (training
 * classes, exemplars and label pairs; train_context_len pairs of context). The same
 * seed always gives the same set. */
int fs_probe_set_build(fs_probe_set *p, const fs_task *t, const fs_run_config *cfg, const char *origin,
                       fs_error *err);
void fs_probe_set_free(fs_probe_set *p);

/* Values [depth][heads] of each measure in `which` (bit 1u << fs_measure_kind); NULL
 * for the others. */
typedef struct {
    unsigned which;
    int depth, heads;
    double *v[FS_NUM_MEASURES];
} fs_measures;

/* Reusable workspace: a cache arena for the attention measures; for the ablations, the
 * residual stream entering each block, a copy of the model with heads' value weights
 * zeroed (the ablate_heads intervention as weights) and the query-only forward's
 * workspace. Zero-initialise before first use. */
typedef struct {
    fs_acts acts;
    bool ready;
    float *resid;          /* [depth][n][2P-1][d_model] (layer 0 unused) */
    size_t resid_floats;
    fs_model ablated;
    struct fs_query_ws *qws;
    int qws_P;
    float *logits;         /* [n][C] */
    size_t logits_floats;
} fs_measures_ws;

void fs_measures_ws_free(fs_measures_ws *ws);

/* Measures of model m on n sequences (examples [n][P][D], labels [n][P], P >= 2). */
int fs_measures_compute(const fs_model *m, const float *examples, const int *labels, int n, int P, unsigned which,
                        fs_measures_ws *ws, fs_measures *out, fs_error *err);
void fs_measures_free(fs_measures *ms);

/* {"induction_strength": [[h0, h1, ...] per layer], ...}: the measures computed, in
 * fs_measure_names order. Returns a cJSON*. */
void *fs_measures_json(const fs_measures *ms);

#endif
