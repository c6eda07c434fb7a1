/* fewshot cache: forward pass and JSON dump of the activation cache (docs/cache.md, docs/formats.md). */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "base/json.h"
#include "fewshot/cache.h"
#include "fewshot/forward.h"
#include "fewshot/interventions.h"
#include "fewshot/seqio.h"

static const fs_opt opts[] = {
    {"--config", "FILE", "config JSON with a \"model\" section (optional if the model file carries it)"},
    {"--model", "FILE", "model parameters (.safetensors)"},
    {"--input", "FILE", "sequences: {\"examples\": [P][D] or [B][P][D], \"labels\": [P] or [B][P]}"},
    {"--cache", "FILE", "clamp values: a cache tree holding the leaves to clamp"},
    {"--mask", "FILE", "clamp mask: the same tree with booleans (true = clamp)"},
    {"--intervene", "JSON|FILE", "named interventions, e.g. '{\"ablate_heads\": [\"1:7\"]}' (on top of --cache/--mask)"},
    {"--shapes", NULL, "print only the shape of every leaf (keys sorted, as in docs/cache.md)"},
    {"--pairs", "P", "with --shapes and no --input: number of pairs per sequence (default 3)"},
    {"--set", "S.K=V", "override a config value, e.g. --set model.depth=3"},
    {"-o", "FILE", "write the JSON here (atomically) instead of stdout"},
    {NULL, NULL, NULL},
};

int fs_cmd_cache(int argc, char **argv)
{
    fs_args args;
    int rc = fs_cli_parse(&args, argc, argv, "cache", "[--config C.json] --model M.safetensors --input SEQ.json [--cache CACHE.json --mask MASK.json]\n"
                          "       [--intervene JSON|FILE] [--shapes] [--set S.K=V ...] [-o OUT.json]\n"
                          "   or: fewshot cache --config C.json --shapes [--pairs P]   (shapes without a model)",
                          "Run the forward pass on the input sequences and dump every activation of the cache tree\n"
                          "as JSON. With --cache/--mask, clamped activations replace computed ones where the mask\n"
                          "is true and everything downstream follows. --intervene adds named interventions (ablate_heads,\n"
                          "induction_heads, prev_token_heads, preserve, head_temperature, ...; see README).",
                          opts);
    if (rc)
        return rc > 0 ? 0 : 2;
    fs_error err = {{0}};
    fs_run_config cfg;
    fs_model model = {0};
    bool shapes = fs_flag(&args, "--shapes");
    const char *input = fs_arg(&args, "--input");
    if (shapes && !fs_arg(&args, "--model")) {
        if (fs_cli_run_config(&args, &cfg, true))
            return 1;
        if (fs_model_config_validate(&cfg.model, fs_arg(&args, "--config"), &err))
            return fs_cli_error(err.msg);
    } else if (fs_cli_load_model(&args, &cfg, &model)) {
        fs_run_config_free(&cfg);
        return 1;
    }

    fs_seq_batch batch = {0};
    long long pairs;
    if (fs_arg_int(&args, "--pairs", 3, 1, 4096, &pairs))
        goto fail;
    if (input) {
        if (fs_seq_batch_load(input, cfg.model.input_dim, cfg.model.num_classes, &batch, &err))
            goto fail_err;
    } else if (!shapes) {
        fs_cli_error("--input FILE is required (or --shapes)");
        goto fail;
    } else {
        batch.B = 1;
        batch.P = (int)pairs;
    }
    fs_acts acts;
    if (fs_acts_create(&acts, &cfg.model, batch.P, batch.B, &err))
        goto fail_err;
    char *text = NULL;
    if (shapes) {
        cJSON *tree = fs_cache_shapes_json(&acts, batch.B, batch.batched);
        text = fs_json_print_sorted(tree);
        cJSON_Delete(tree);
    } else {
        fs_held_source src = fs_cli_held(&args, NULL, NULL);
        fs_held held;
        fs_held_clamps hc;
        if (fs_held_load(&held, &src, &cfg.model, batch.P, batch.B, &err)) {
            fs_acts_free(&acts);
            goto fail_err;
        }
        if (fs_held_bind(&hc, &held, &acts, &err)) {
            fs_held_free(&held);
            fs_acts_free(&acts);
            goto fail_err;
        }
        fs_acts_set_inputs(&acts, batch.examples, batch.labels, 0, batch.B);
        fs_forward(&model, &acts, fs_held_update(&hc, &model, &acts, batch.B), batch.B);
        fs_held_unbind(&hc);
        fs_held_free(&held);
        cJSON *tree = fs_cache_to_json(&acts, batch.B, batch.batched);
        text = fs_json_text(tree);
        cJSON_Delete(tree);
    }
    fs_acts_free(&acts);
    rc = text ? fs_cli_output(&args, text) : fs_cli_error("out of memory printing the cache");
    free(text);
    fs_seq_batch_free(&batch);
    fs_model_free(&model);
    fs_run_config_free(&cfg);
    return rc;
fail_err:
    fs_cli_error(err.msg);
fail:
    fs_seq_batch_free(&batch);
    fs_model_free(&model);
    fs_run_config_free(&cfg);
    return 1;
}
