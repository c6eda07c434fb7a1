/* fewshot eval: metrics of a model on the config's evaluators or on given sequences. */
#include <cjson/cJSON.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "train/held_open.h"
#include "cli/cli.h"
#include "base/json.h"
#include "base/ostream.h"
#include "train/run.h"
#include "fewshot/seqio.h"

static const fs_opt opts[] = {
    {"--config", "FILE", "run config (data + eval sections; model section optional with a fewshot model file)"},
    {"--model", "FILE", "model parameters or a training checkpoint (.safetensors)"},
    {"--input", "FILE", "evaluate these sequences instead of the evaluators (JSON {examples, labels} or HDF5)"},
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
    return fs_held_open(held, &src, &cfg->model, P, nseq, err);
}

/* A number as cJSON_Print writes it (integers plain, else %1.15g if it reads back within
 * DBL_EPSILON, else %1.17g), so the streamed per-sequence output keeps its old text. */
static void put_cjson_number(fs_ostream *o, double d)
{
    char *at = fs_ostream_reserve(o, 32);
    int n;
    if (!at)
        return;
    if (!isfinite(d)) /* the JSON convention for non-finite numbers: docs/formats.md */
        n = snprintf(at, 32, "\"%s\"", fs_nonfinite_name(d));
    else if (d == (double)(int)d && fabs(d) < 2147483647.0)
        n = snprintf(at, 32, "%d", (int)d);
    else {
        n = snprintf(at, 32, "%1.15g", d);
        double back = strtod(at, NULL); /* cJSON's test: equal within DBL_EPSILON relative */
        if (fabs(back - d) > fmax(fabs(back), fabs(d)) * DBL_EPSILON)
            n = snprintf(at, 32, "%1.17g", d);
    }
    fs_ostream_advance(o, (size_t)n);
}

/* {"metrics": {"<metric>": [one per sequence], ...}}, streamed (cJSON_Print's layout). */
static int write_per_sequence(const fs_args *args, const fs_metrics *per, int B, fs_error *err)
{
    fs_ostream o;
    if (fs_ostream_open(&o, fs_arg(args, "-o"), err))
        return -1;
    fs_ostream_puts(&o, "{\n\t\"metrics\":\t{\n");
    for (int k = 0; k < FS_NUM_METRICS; k++) {
        fs_ostream_printf(&o, "\t\t\"%s\":\t[", fs_metric_names[k]);
        for (int b = 0; b < B; b++) {
            if (b)
                fs_ostream_write(&o, ", ", 2);
            fs_metrics copy = per[b];
            put_cjson_number(&o, *fs_metric_field(&copy, k));
        }
        fs_ostream_puts(&o, k + 1 < FS_NUM_METRICS ? "],\n" : "]\n");
    }
    fs_ostream_puts(&o, "\t}\n}\n");
    return fs_ostream_close(&o, err);
}

enum { H5_EVAL_CHUNK = 4096 };

/* An HDF5 input, read and evaluated chunk by chunk (the mean weights each chunk by its
 * size; per-sequence clamp files need every sequence in one chunk). */
static int eval_h5(fs_seq_h5 *r, int B, int P, const fs_model *model, const fs_held *held, fs_eval_ws *ws,
                   fs_metrics *mean, fs_metrics *per, fs_error *err)
{
    int chunk = B < H5_EVAL_CHUNK || fs_clamp_set_per_sequence(&held->files) ? B : H5_EVAL_CHUNK, rc = 0;
    float *ex = malloc(sizeof(float) * (size_t)chunk * P * model->cfg.input_dim);
    int *lab = malloc(sizeof(int) * (size_t)chunk * P);
    memset(mean, 0, sizeof *mean);
    if (!ex || !lab)
        rc = fs_fail(err, "out of memory for %d sequences", chunk);
    for (int b0 = 0; rc == 0 && b0 < B; b0 += chunk) {
        int n = B - b0 < chunk ? B - b0 : chunk;
        fs_metrics m;
        rc = fs_seq_h5_read(r, b0, n, ex, lab, err) ||
             fs_eval_sequences(model, ex, lab, n, P, held, ws, &m, per + b0, err);
        for (int k = 0; rc == 0 && k < FS_NUM_METRICS; k++)
            *fs_metric_field(mean, k) += *fs_metric_field(&m, k) * n / B;
    }
    free(ex);
    free(lab);
    return rc ? -1 : 0;
}

/* Metrics of the --input sequences (JSON or HDF5): the mean (returned as JSON), or every
 * sequence's, streamed to the output (*streamed set, NULL returned). */
static cJSON *eval_input(const fs_args *args, const fs_run_config *cfg, const fs_model *model, bool *streamed,
                         fs_error *err)
{
    const char *input = fs_arg(args, "--input");
    fs_seq_batch batch = {0};
    fs_seq_h5 *h5 = NULL;
    int B, P;
    if (fs_file_is_hdf5(input) ? fs_seq_h5_open(&h5, input, model->cfg.input_dim, model->cfg.num_classes, &B, &P, err)
                               : fs_seq_batch_load(input, model->cfg.input_dim, model->cfg.num_classes, &batch, err))
        return NULL;
    if (!h5)
        B = batch.B, P = batch.P;
    fs_held held;
    cJSON *out = NULL;
    fs_metrics mean, *per = calloc((size_t)B, sizeof *per);
    fs_eval_ws ws = {0};
    if (!per) {
        fs_fail(err, "out of memory for %d sequences", B);
    } else if (load_held(args, cfg, P, B, &held, err) == 0) {
        int rc = h5 ? eval_h5(h5, B, P, model, &held, &ws, &mean, per, err)
                    : fs_eval_sequences(model, batch.examples, batch.labels, B, P, &held, &ws, &mean, per, err);
        if (rc == 0 && fs_flag(args, "--per-sequence"))
            *streamed = write_per_sequence(args, per, B, err) == 0;
        else if (rc == 0)
            out = fs_metrics_object(&mean);
        fs_eval_ws_free(&ws);
        fs_held_free(&held);
    }
    free(per);
    fs_seq_h5_close(h5);
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
    bool streamed = false;
    cJSON *out = fs_arg(&args, "--input") ? eval_input(&args, &cfg, &model, &streamed, &err)
                                          : eval_evaluators(&args, &cfg, &model, &err);
    if (streamed) {
        rc = 0;
    } else if (!out) {
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
