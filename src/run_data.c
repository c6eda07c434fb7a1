#include "fewshot/run.h"

#include <cjson/cJSON.h>
#include <string.h>

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
        fs_run_data_close(rd);
        return fs_fail(err, "%s: model.input_dim is %d but the features in %s have dim %d", origin,
                       cfg->model.input_dim, cfg->data.file, rd->data.dim);
    }
    if (with_eval)
        for (int i = 0; i < cfg->eval.num_evaluators; i++) {
            if (fs_eval_set_build(&rd->sets[i], &rd->task, &cfg->eval, i, cfg->train.train_context_len, origin, err)) {
                fs_run_data_close(rd);
                return -1;
            }
            rd->num_sets = i + 1;
        }
    return 0;
}

void fs_run_data_close(fs_run_data *rd)
{
    for (int i = 0; i < rd->num_sets; i++)
        fs_eval_set_free(&rd->sets[i]);
    fs_task_free(&rd->task);
    fs_dataset_free(&rd->data);
    memset(rd, 0, sizeof *rd);
}

int fs_run_evaluate(const fs_model *m, const fs_run_data *rd, const fs_eval_clamps *clamps, fs_eval_ws *ws,
                    fs_metrics *out, fs_error *err)
{
    for (int i = 0; i < rd->num_sets; i++) {
        const fs_eval_set *s = &rd->sets[i];
        if (fs_eval_sequences(m, s->examples, s->labels, s->n, s->P, clamps, &ws[i], &out[i], NULL, err))
            return -1;
    }
    return 0;
}

void *fs_metrics_json(const fs_run_data *rd, const fs_metrics *m)
{
    cJSON *root = cJSON_CreateObject();
    for (int i = 0; i < rd->num_sets; i++) {
        cJSON *e = cJSON_AddObjectToObject(root, rd->sets[i].name);
        fs_metrics copy = m[i];
        for (int k = 0; k < FS_NUM_METRICS; k++)
            cJSON_AddNumberToObject(e, fs_metric_names[k], *fs_metric_field(&copy, k));
    }
    return root;
}
