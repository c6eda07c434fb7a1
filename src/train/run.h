/* What a training or evaluation run reads: the dataset, the task (splits, relabel
 * pairs) and the fixed evaluator sets (docs/sampling.md, docs/formats.md). */
#ifndef FEWSHOT_RUN_H
#define FEWSHOT_RUN_H

#include "fewshot/config.h"
#include "fewshot/data.h"
#include "train/eval.h"
#include "train/sampler.h"

/* Evaluator sets are not stored: the sampler is counter-based, so each evaluation
 * re-draws the same fixed sequences chunk by chunk (the sets' examples/labels stay
 * NULL), which keeps a run's memory small. */
typedef struct {
    fs_dataset data;
    fs_task task;
    int num_sets;
    fs_eval_set sets[FS_MAX_EVALUATORS];
    int64_t eval_seed;
    float *chunk_examples;   /* [EVAL_CHUNK][max P][D] */
    int *chunk_labels;       /* [EVAL_CHUNK][max P] */
} fs_run_data;

/* Load the data and resolve the model's input_dim/num_classes when the config left
 * them unset; builds the evaluator sets when with_eval. */
int fs_run_data_open(fs_run_data *rd, fs_run_config *cfg, const char *origin, bool with_eval, fs_error *err);
void fs_run_data_close(fs_run_data *rd);

/* Evaluate every evaluator set; out[i] gets set i's mean metrics. A workspace per
 * set (ws[FS_MAX_EVALUATORS]) keeps the intervention clamps of each set's length. */
int fs_run_evaluate(const fs_model *m, const fs_run_data *rd, const fs_held *held, fs_eval_ws *ws,
                    fs_metrics *out, fs_error *err);

/* {"<evaluator>": {"loss": .., "acc": .., ...}, ...} */
cJSON *fs_metrics_json(const fs_run_data *rd, const fs_metrics *m);

#endif
