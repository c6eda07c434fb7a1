#include "train/run.h"
#include "base/fileio.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { EVAL_CHUNK = 512 };

int fs_run_data_open(fs_run_data *rd, fs_run_config *cfg, const char *origin, bool with_eval, fs_error *err)
{
    memset(rd, 0, sizeof *rd);
    if (fs_dataset_load(&rd->data, &cfg->data, err))
        return -1;
    if (fs_task_init(&rd->task, &rd->data, &cfg->data, origin, err)) {
        fs_dataset_free(&rd->data);
        return -1;
    }
    if (!cfg->input_dim_given)
        cfg->model.input_dim = rd->data.dim;
    if (!cfg->num_classes_given)
        cfg->model.num_classes = rd->task.num_classes;
    if (cfg->model.input_dim != rd->data.dim) {
        int dim = rd->data.dim; /* close clears it */
        fs_run_data_close(rd);
        return fs_fail(err, "%s: model.input_dim is %d but the features in %s have dim %d", origin,
                       cfg->model.input_dim, cfg->data.file, dim);
    }
    if (!with_eval)
        return 0;
    if (cfg->eval.eval_iters < 1) {
        fs_run_data_close(rd);
        return fs_fail(err, "%s: eval.eval_iters: expected >= 1, got %d", origin, cfg->eval.eval_iters);
    }
    int max_P = 1;
    rd->eval_seed = cfg->eval.eval_seed;
    for (int i = 0; i < cfg->eval.num_evaluators; i++) {
        fs_eval_set *s = &rd->sets[i];
        const fs_evaluator_config *ev = &cfg->eval.evaluators[i];
        if (fs_seq_spec_from_evaluator(&s->spec, &rd->task, ev, cfg->train.train_context_len, origin, err)) {
            fs_run_data_close(rd);
            return -1;
        }
        snprintf(s->name, sizeof s->name, "%s", ev->name);
        s->n = cfg->eval.eval_iters;
        s->P = s->spec.context_len + 1;
        s->D = rd->data.dim;
        max_P = s->P > max_P ? s->P : max_P;
        rd->num_sets = i + 1;
    }
    size_t bytes;
    if (fs_size_mul(&bytes, SIZE_MAX, FS_DIMS(sizeof(float), EVAL_CHUNK, (size_t)max_P, (size_t)rd->data.dim)) ||
        !(rd->chunk_examples = fs_alloc(bytes)) || !(rd->chunk_labels = fs_alloc(sizeof(int) * EVAL_CHUNK * (size_t)max_P))) {
        fs_run_data_close(rd);
        return fs_fail_alloc(err, "evaluation batches", bytes);
    }
    return 0;
}

void fs_run_data_close(fs_run_data *rd)
{
    free(rd->chunk_examples);
    free(rd->chunk_labels);
    fs_task_free(&rd->task);
    fs_dataset_free(&rd->data);
    memset(rd, 0, sizeof *rd);
}

int fs_run_evaluate(const fs_model *m, const fs_run_data *rd, const fs_held *held, fs_eval_ws *ws,
                    fs_metrics *out, fs_error *err)
{
    for (int i = 0; i < rd->num_sets; i++) {
        const fs_eval_set *s = &rd->sets[i];
        fs_seq_mix mix;
        fs_seq_mix_single(&mix, &s->spec);
        double sums[FS_NUM_METRICS] = {0};
        for (int first = 0; first < s->n; first += EVAL_CHUNK) {
            int count = s->n - first < EVAL_CHUNK ? s->n - first : EVAL_CHUNK;
            /* the same sequences as drawing the whole set at once (docs/sampling.md) */
            if (fs_sample_batch(&rd->task, &mix, (uint64_t)rd->eval_seed, FS_STREAM_EVAL + (uint64_t)i,
                                (uint64_t)first, count, rd->chunk_examples, rd->chunk_labels, NULL, err))
                return -1;
            fs_metrics part;
            if (fs_eval_sequences(m, rd->chunk_examples, rd->chunk_labels, count, s->P, held, &ws[i], &part, NULL,
                                  err))
                return -1;
            for (int k = 0; k < FS_NUM_METRICS; k++)
                sums[k] += *fs_metric_field(&part, k) * count;
        }
        for (int k = 0; k < FS_NUM_METRICS; k++)
            *fs_metric_field(&out[i], k) = sums[k] / s->n;
    }
    return 0;
}

cJSON *fs_metrics_json(const fs_run_data *rd, const fs_metrics *m)
{
    cJSON *root = cJSON_CreateObject();
    for (int i = 0; i < rd->num_sets; i++)
        cJSON_AddItemToObject(root, rd->sets[i].name, fs_metrics_object(&m[i]));
    return root;
}
