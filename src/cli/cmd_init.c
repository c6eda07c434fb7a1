/* fewshot init: a freshly initialised model (docs/model.md) as safetensors. */
#include <stdio.h>

#include "cli/cli.h"

static const fs_opt opts[] = {
    {"--config", "FILE", "config JSON with a \"model\" section (default: the documented model)"},
    {"--seed", "N", "init seed (overrides model.init_seed)"},
    {"--set", "S.K=V", "override a config value, e.g. --set model.depth=3"},
    {"-o", "FILE", "output .safetensors (required)"},
    {NULL, NULL, NULL},
};

int fs_cmd_init(int argc, char **argv)
{
    fs_args args;
    int rc = fs_cli_parse(&args, argc, argv, "init", "[--config C.json] [--seed N] [--set S.K=V ...] -o MODEL.safetensors",
                          "Initialise a model as the reference does (lecun-normal truncated weights, label embedding\n"
                          "0.02 x truncated normal, LayerNorm 1/0) and write it with its config in the metadata.\n"
                          "Parameters and their shapes: docs/model.md.",
                          opts);
    if (rc)
        return rc > 0 ? 0 : 2;
    const char *out = fs_arg(&args, "-o");
    if (!out)
        return fs_cli_error("-o MODEL.safetensors is required");
    fs_run_config cfg;
    if (fs_cli_run_config(&args, &cfg, false))
        return 1;
    long long seed;
    if (fs_arg_int(&args, "--seed", cfg.model.init_seed, 0, (1LL << 62), &seed)) {
        fs_run_config_free(&cfg);
        return 1;
    }
    cfg.model.init_seed = seed;
    fs_error err = {{0}};
    fs_model m;
    if (fs_model_create(&m, &cfg.model, &err)) {
        fs_run_config_free(&cfg);
        return fs_cli_error(err.msg);
    }
    fs_model_init_params(&m);
    rc = fs_model_save(&m, out, &err) ? fs_cli_error(err.msg) : 0;
    size_t count = 0;
    for (int i = 0; i < m.layout.count; i++)
        count += m.layout.tensors[i].numel;
    if (!rc)
        fprintf(stderr, "wrote %s (%zu parameters in %d tensors)\n", out, count, m.layout.count);
    fs_model_free(&m);
    fs_run_config_free(&cfg);
    return rc;
}
