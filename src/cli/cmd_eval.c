/* fewshot eval: metrics of a model on the config's evaluators or on given sequences. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "base/json.h"
#include "train/run.h"
#include "fewshot/seqio.h"

static const fs_opt opts[] = {
    {"--config", "FILE", "run config (data + eval sections; model section optional with a fewshot model file)"},
    {"--model", "FILE", "model parameters or a training checkpoint (.safetensors)"},
    {"--input", "FILE", "evaluate these sequences instead of the evaluators ({examples, labels})"},
    {"--per-sequence", NULL, "with --input: every sequence's metrics, {\"metrics\": {\"acc\": [...], ...}}"},
    {"--cache", "FILE", "clamp values (cache tree) held on during evaluation (default: the config's clamps)"},
    {"--mask", "FILE", "clamp mask"},
    {"--intervene", "JSON", "named interventions, inline JSON or a file (default: the config's clamps section)"},
    {"--set", "S.K=V", "override a config value"},
    {"-o", "FILE", "write the JSON here instead of stdout"},
    {NULL, NULL, NULL},
};

/* What is held on: --cache/--mask and --intervene, else the config's clamps section. */
static int load_held(const fs_args *args, const fs_run_config *cfg, int P, int nseq, fs_held *held, fs_error *err)
{
    fs_held_source src = fs_cli_held(args, &cfg->clamps, "config clamps");
    return fs_held_load(held, &src, &cfg->model, P, nseq, err);
}

static cJSON *eval_input(const fs_args *args, const fs_run_config *cfg, const fs_model *model, fs_error *err)
{
    fs_seq_batch batch;
    if (fs_seq_batch_load(fs_arg(args, "--input"), model->cfg.input_dim, model->cfg.num_classes, &batch, err))
        return NULL;
    fs_held held;
    cJSON *out = NULL;
    fs_metrics mean, *per = calloc((size_t)batch.B, sizeof *per);
    fs_eval_ws ws = {0};
    if (load_held(args, cfg, batch.P, batch.B, &held, err) == 0) {
        if (fs_eval_sequences(model, batch.examples, batch.labels, batch.B, batch.P, &held, &ws, &mean, per, err) == 0) {
            if (fs_flag(args, "--per-sequence")) {
                out = cJSON_CreateObject();
                cJSON *ms = cJSON_AddObjectToObject(out, "metrics");
                for (int k = 0; k < FS_NUM_METRICS; k++) {
                    cJSON *arr = cJSON_AddArrayToObject(ms, fs_metric_names[k]);
                    for (int b = 0; b < batch.B; b++)
                        cJSON_AddItemToArray(arr, fs_json_float(*fs_metric_field(&per[b], k)));
                }
            } else {
                out = fs_metrics_object(&mean);
            }
        }
        fs_eval_ws_free(&ws);
        fs_held_free(&held);
    }
    free(per);
    fs_seq_batch_free(&batch);
    return out;
}

static cJSON *eval_evaluators(const fs_args *args, fs_run_config *cfg, const fs_model *model, fs_error *err)
{
    fs_run_data rd;
    const char *origin = fs_arg(args, "--config") ? fs_arg(args, "--config") : "config";
    if (fs_run_data_open(&rd, cfg, origin, true, err))
        return NULL;
    if (rd.num_sets == 0) {
        fs_run_data_close(&rd);
        fs_fail(err, "%s: eval.evaluators is empty", origin);
        return NULL;
    }
    fs_held held;
    fs_metrics ms[FS_MAX_EVALUATORS];
    fs_eval_ws ws[FS_MAX_EVALUATORS];
    memset(ws, 0, sizeof ws);
    cJSON *out = NULL;
    if (load_held(args, cfg, rd.sets[0].P, 0, &held, err) == 0) {
        if (fs_run_evaluate(model, &rd, &held, ws, ms, err) == 0)
            out = fs_metrics_json(&rd, ms);
        for (int i = 0; i < FS_MAX_EVALUATORS; i++)
            fs_eval_ws_free(&ws[i]);
        fs_held_free(&held);
    }
    fs_run_data_close(&rd);
    return out;
}

int fs_cmd_eval(int argc, char **argv)
{
    fs_args args;
    int rc = fs_cli_parse(&args, argc, argv, "eval",
                          "[--config RUN.json] --model MODEL.safetensors [--input SEQ.json [--per-sequence]]\n"
                          "       [--cache CACHE.json --mask MASK.json] [--intervene JSON|FILE] [--set S.K=V ...] [-o OUT.json]",
                          "Evaluate a model: on the config's evaluators (fixed sets drawn from eval_seed), or on the\n"
                          "sequences of --input. Metrics: loss, acc, in/out_context_acc, prob, in/out_context_prob,\n"
                          "use_context_prob (docs/metrics.md). Clamps and named interventions of the config's clamps\n"
                          "section (or --cache/--mask, --intervene) are held on.",
                          opts);
    if (rc)
        return rc > 0 ? 0 : 2;
    fs_run_config cfg;
    fs_model model = {0};
    if (fs_cli_load_model(&args, &cfg, &model)) {
        fs_run_config_free(&cfg);
        return 1;
    }
    cfg.input_dim_given = cfg.num_classes_given = true; /* the model fixes them */
    fs_error err = {{0}};
    cJSON *out = fs_arg(&args, "--input") ? eval_input(&args, &cfg, &model, &err)
                                          : eval_evaluators(&args, &cfg, &model, &err);
    if (!out) {
        rc = fs_cli_error(err.msg);
    } else {
        char *text = fs_json_text(out);
        rc = text ? fs_cli_output(&args, text) : fs_cli_error("out of memory printing the metrics");
        free(text);
        cJSON_Delete(out);
    }
    fs_model_free(&model);
    fs_run_config_free(&cfg);
    return rc;
}
