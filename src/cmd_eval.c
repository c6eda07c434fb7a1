/* fewshot eval: metrics of a model on the config's evaluators or on given sequences. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "fewshot/run.h"
#include "fewshot/seqio.h"

static const fs_opt opts[] = {
    {"--config", "FILE", "run config (data + eval sections; model section optional with a fewshot model file)"},
    {"--model", "FILE", "model parameters or a training checkpoint (.safetensors)"},
    {"--input", "FILE", "evaluate these sequences instead of the evaluators ({examples, labels})"},
    {"--per-sequence", NULL, "with --input: every sequence's metrics, {\"metrics\": {\"acc\": [...], ...}}"},
    {"--cache", "FILE", "clamp values (cache tree) held on during evaluation"},
    {"--mask", "FILE", "clamp mask"},
    {"--set", "S.K=V", "override a config value"},
    {"-o", "FILE", "write the JSON here instead of stdout"},
    {NULL, NULL, NULL},
};

static cJSON *metrics_object(const fs_metrics *m)
{
    cJSON *o = cJSON_CreateObject();
    fs_metrics copy = *m;
    for (int k = 0; k < FS_NUM_METRICS; k++)
        cJSON_AddNumberToObject(o, fs_metric_names[k], *fs_metric_field(&copy, k));
    return o;
}

static cJSON *eval_input(const fs_args *args, const fs_model *model, const fs_clamp_set *clamps, fs_error *err,
                         int *rc)
{
    fs_seq_batch batch;
    if (fs_seq_batch_load(fs_arg(args, "--input"), model->cfg.input_dim, model->cfg.num_classes, &batch, err)) {
        *rc = fs_cli_error(err->msg);
        return NULL;
    }
    fs_metrics mean, *per = calloc((size_t)batch.B, sizeof *per);
    fs_eval_ws ws = {0};
    cJSON *out = NULL;
    if (fs_eval_sequences(model, batch.examples, batch.labels, batch.B, batch.P, clamps, &ws, &mean, per, err)) {
        *rc = fs_cli_error(err->msg);
    } else if (fs_flag(args, "--per-sequence")) {
        out = cJSON_CreateObject();
        cJSON *ms = cJSON_AddObjectToObject(out, "metrics");
        for (int k = 0; k < FS_NUM_METRICS; k++) {
            cJSON *arr = cJSON_AddArrayToObject(ms, fs_metric_names[k]);
            for (int b = 0; b < batch.B; b++)
                cJSON_AddItemToArray(arr, cJSON_CreateNumber(*fs_metric_field(&per[b], k)));
        }
    } else {
        out = metrics_object(&mean);
    }
    fs_eval_ws_free(&ws);
    free(per);
    fs_seq_batch_free(&batch);
    return out;
}

int fs_cmd_eval(int argc, char **argv)
{
    fs_args args;
    int rc = fs_cli_parse(&args, argc, argv, "eval", "--config RUN.json --model MODEL.safetensors [--input SEQ.json [--per-sequence]]",
                          "Evaluate a model: on the config's evaluators (fixed sets drawn from eval_seed), or on the\n"
                          "sequences of --input. Metrics: loss, acc, in/out_context_acc, prob, in/out_context_prob,\n"
                          "use_context_prob (SPEC section 4).",
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
    cJSON *out = NULL;
    fs_clamp_set clamps = {0};
    const char *cpath = fs_arg(&args, "--cache"), *mpath = fs_arg(&args, "--mask");
    if ((cpath != NULL) != (mpath != NULL)) {
        rc = fs_cli_error("--cache and --mask go together");
        goto done;
    }
    if (fs_arg(&args, "--input")) {
        if (cpath) {
            fs_seq_batch probe;
            if (fs_seq_batch_load(fs_arg(&args, "--input"), cfg.model.input_dim, cfg.model.num_classes, &probe, &err)) {
                rc = fs_cli_error(err.msg);
                goto done;
            }
            fs_acts layout;
            int ok = fs_acts_create(&layout, &cfg.model, probe.P, 1, &err) == 0;
            fs_seq_batch_free(&probe);
            if (ok) {
                fs_clamp_set_init(&clamps, &layout);
                ok = fs_clamp_set_load(&clamps, &layout, cpath, mpath, &err) == 0;
                fs_acts_free(&layout);
            }
            if (!ok) {
                rc = fs_cli_error(err.msg);
                goto done;
            }
        }
        out = eval_input(&args, &model, cpath ? &clamps : NULL, &err, &rc);
    } else {
        fs_run_data rd;
        const char *origin = fs_arg(&args, "--config") ? fs_arg(&args, "--config") : "config";
        if (fs_run_data_open(&rd, &cfg, origin, true, &err)) {
            rc = fs_cli_error(err.msg);
            goto done;
        }
        if (cpath) {
            fs_acts layout;
            if (fs_acts_create(&layout, &cfg.model, rd.sets[0].P, 1, &err) == 0) {
                fs_clamp_set_init(&clamps, &layout);
                if (fs_clamp_set_load(&clamps, &layout, cpath, mpath, &err))
                    rc = fs_cli_error(err.msg);
                fs_acts_free(&layout);
            } else {
                rc = fs_cli_error(err.msg);
            }
        }
        fs_metrics ms[FS_MAX_EVALUATORS];
        fs_eval_ws ws = {0};
        if (!rc && fs_run_evaluate(&model, &rd, cpath ? &clamps : NULL, &ws, ms, &err))
            rc = fs_cli_error(err.msg);
        if (!rc)
            out = fs_metrics_json(&rd, ms);
        fs_eval_ws_free(&ws);
        fs_run_data_close(&rd);
    }
    if (out) {
        char *text = cJSON_Print(out);
        size_t n = strlen(text);
        text = realloc(text, n + 2);
        text[n] = '\n', text[n + 1] = 0;
        rc = fs_cli_output(&args, text);
        free(text);
        cJSON_Delete(out);
    } else if (!rc) {
        rc = 1;
    }
done:
    fs_clamp_set_free(&clamps);
    fs_model_free(&model);
    fs_run_config_free(&cfg);
    return rc;
}
