/* fewshot measure: the progress measures of a model or checkpoint (the `measures`
 * object of metrics.jsonl's eval lines), on the config's probe set or given sequences. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/json.h"
#include "cli/cli.h"
#include "train/measures.h"
#include "train/run.h"
#include "fewshot/seqio.h"

static const fs_opt opts[] = {
    {"--model", "FILE", "model parameters, a ckpt_<iter>.safetensors snapshot or a training checkpoint"},
    {"--config", "FILE", "run config (data + measures sections; default: the config.json of the model's run "
                         "directory, beside the model or one level up)"},
    {"--input", "FILE", "measure these sequences ({examples, labels}) instead of the probe set"},
    {"--set", "S.K=V", "override a config value, e.g. --set measures.probe_size=1024"},
    {"-o", "FILE", "write the JSON here instead of stdout"},
    {NULL, NULL, NULL},
};

/* DIR/config.json or DIR/../config.json for the model's directory DIR, or NULL. */
static const char *run_dir_config(const char *model_path, char *buf, size_t n)
{
    const char *slash = strrchr(model_path, '/');
    int dlen = slash ? (int)(slash - model_path) : 1;
    const char *dir = slash ? model_path : ".";
    const char *tries[2] = {"%.*s/config.json", "%.*s/../config.json"};
    for (int i = 0; i < 2; i++) {
        snprintf(buf, n, tries[i], dlen, dir);
        if (access(buf, R_OK) == 0)
            return buf;
    }
    return NULL;
}

static cJSON *measure(const fs_args *args, fs_run_config *cfg, const char *origin, const fs_model *model,
                      fs_error *err)
{
    fs_measures_ws ws = {0};
    fs_measures ms;
    cJSON *out = NULL;
    if (fs_arg(args, "--input")) {
        fs_seq_batch batch;
        if (fs_seq_batch_load(fs_arg(args, "--input"), model->cfg.input_dim, model->cfg.num_classes, &batch, err))
            return NULL;
        if (fs_measures_compute(model, batch.examples, batch.labels, batch.B, batch.P, cfg->measures.which, &ws, &ms,
                                err) == 0)
            out = fs_measures_json(&ms);
        fs_seq_batch_free(&batch);
    } else {
        fs_run_data rd;
        if (fs_run_data_open(&rd, cfg, origin, false, err))
            return NULL;
        fs_probe_set probe;
        if (fs_probe_set_build(&probe, &rd.task, cfg, origin, err) == 0) {
            if (fs_measures_compute(model, probe.examples, probe.labels, probe.n, probe.P, cfg->measures.which, &ws,
                                    &ms, err) == 0)
                out = fs_measures_json(&ms);
            fs_probe_set_free(&probe);
        }
        fs_run_data_close(&rd);
    }
    if (out)
        fs_measures_free(&ms);
    fs_measures_ws_free(&ws);
    return out;
}

int fs_cmd_measure(int argc, char **argv)
{
    fs_args args;
    int rc = fs_cli_parse(&args, argc, argv, "measure", "--model MODEL.safetensors [--config RUN.json] [--input SEQ.json]",
                          "Progress measures of a model, per layer and head (README \"Progress measures\"):\n"
                          "induction_strength, prev_token_strength, label_attention (attention of the probe set's\n"
                          "query and label tokens), ablate_head_acc and only_head_acc (probe accuracy with the head\n"
                          "ablated, or with every other head of its layer ablated). Prints the same JSON object as\n"
                          "the `measures` of metrics.jsonl's eval lines. The probe set comes from the config's\n"
                          "data, train_context_len and measures sections (probe_size, probe_seed, which).",
                          opts);
    if (rc)
        return rc > 0 ? 0 : 2;
    char found[2200];
    if (!fs_arg(&args, "--config") && fs_arg(&args, "--model") &&
        run_dir_config(fs_arg(&args, "--model"), found, sizeof found)) {
        for (int k = 0; opts[k].name; k++) /* as if --config had been given */
            if (!strcmp(opts[k].name, "--config"))
                args.given[k] = true, args.value[k] = found;
    }
    fs_run_config cfg;
    fs_model model = {0};
    if (fs_cli_load_model(&args, &cfg, &model) ||
        (!fs_arg(&args, "--config") && !fs_arg(&args, "--input") &&
         fs_cli_error("--config FILE is required (no config.json in the model's run directory): the probe set is "
                      "drawn from its data section"))) {
        fs_model_free(&model);
        fs_run_config_free(&cfg);
        return 1;
    }
    cfg.input_dim_given = cfg.num_classes_given = true; /* the model fixes them */
    fs_error err = {{0}};
    cJSON *out = measure(&args, &cfg, fs_arg(&args, "--config") ? fs_arg(&args, "--config") : "config", &model, &err);
    if (!out) {
        rc = fs_cli_error(err.msg);
    } else {
        char *text = fs_json_text(out);
        rc = text ? fs_cli_output(&args, text) : fs_cli_error("out of memory printing the measures");
        free(text);
        cJSON_Delete(out);
    }
    fs_model_free(&model);
    fs_run_config_free(&cfg);
    return rc;
}
