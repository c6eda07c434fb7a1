/* Evaluation metrics (docs/metrics.md): per sequence, from the query logits z = out[-1],
 * the query label y and the context's labels; reported as means over a set. */
#ifndef FEWSHOT_EVAL_H
#define FEWSHOT_EVAL_H

#include "fewshot/cache.h"
#include "fewshot/interventions.h"
#include "fewshot/model.h"

typedef struct {
    double loss, acc, in_context_acc, out_context_acc;
    double prob, in_context_prob, out_context_prob, use_context_prob;
} fs_metrics;

enum { FS_NUM_METRICS = 8 };
extern const char *const fs_metric_names[FS_NUM_METRICS];
double *fs_metric_field(fs_metrics *m, int i);
/* {"loss": .., "acc": .., ...}: the eight metrics in fs_metric_names order. */
cJSON *fs_metrics_object(const fs_metrics *m);

/* Metrics of one sequence: z [C] query logits, labels [P] (last = query). */
void fs_metrics_of_sequence(const float *z, int C, const int *labels, int P, fs_metrics *out);

/* Reusable forward workspace for evaluation in chunks (no per-sequence allocation). */
typedef struct {
    fs_acts acts;
    int chunk;        /* sequences per forward */
    bool ready;
    fs_held_clamps hc;         /* what is held on, bound to acts */
    bool hc_ready;
    struct fs_query_ws *qws;   /* forward-only query path, used when nothing is clamped */
    int qws_P;
    float *logits;             /* [chunk][C] */
} fs_eval_ws;

void fs_eval_ws_free(fs_eval_ws *ws);

/* Forward n sequences (examples [n][P][D], labels [n][P]) in chunks and average the
 * metrics into *mean; per_seq (may be NULL) receives each sequence's metrics. `held`
 * (may be NULL) is held on; clamp files built for another sequence length are not. */
int fs_eval_sequences(const fs_model *m, const float *examples, const int *labels, int n, int P,
                      const fs_held *held, fs_eval_ws *ws, fs_metrics *mean, fs_metrics *per_seq,
                      fs_error *err);

#endif
