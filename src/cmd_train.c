/* fewshot train: an in-context classification training run. */
#include <libgen.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "fewshot/train.h"

static const fs_opt opts[] = {
    {"--config", "FILE", "run config JSON (sections model, data, train, eval, clamps)"},
    {"--set", "S.K=V", "override a config value, e.g. --set train.lr=1e-4 (repeatable)"},
    {"--out", "DIR", "run directory (default: runs/<config name>)"},
    {"--resume", NULL, "continue the run in --out from its latest checkpoint"},
    {"--threads", "T", "worker threads (default: train.threads, 0 = all cores)"},
    {"--no-progress", NULL, "no progress bar (it is also off when stderr is not a terminal)"},
    {"--stop-after", "N", "stop after N sequences with a checkpoint (resume later with --resume)"},
    {NULL, NULL, NULL},
};

int fs_cmd_train(int argc, char **argv)
{
    fs_args args;
    int rc = fs_cli_parse(&args, argc, argv, "train", "--config RUN.json [--set k=v ...] [--out DIR] [--resume]",
                          "Train on in-context classification sequences sampled from the config's dataset. Writes\n"
                          "DIR/config.json (fully resolved), DIR/metrics.jsonl (train lines every log_every sequences,\n"
                          "eval lines with every evaluator's eight metrics every eval_every sequences) and\n"
                          "DIR/checkpoints/step_N.safetensors. Ctrl-C writes a checkpoint and exits; --resume\n"
                          "continues exactly as an uninterrupted run would.",
                          opts);
    if (rc)
        return rc > 0 ? 0 : 2;
    fs_run_config cfg;
    if (fs_cli_run_config(&args, &cfg, true))
        return 1;
    long long threads, stop_after;
    if (fs_arg_int(&args, "--threads", cfg.train.threads, 0, 1024, &threads) ||
        fs_arg_int(&args, "--stop-after", 0, 0, (1LL << 62), &stop_after)) {
        fs_run_config_free(&cfg);
        return 1;
    }
    cfg.train.threads = (int)threads;
    char out[1024];
    const char *config_path = fs_arg(&args, "--config");
    if (fs_arg(&args, "--out")) {
        snprintf(out, sizeof out, "%s", fs_arg(&args, "--out"));
    } else {
        char name[512];
        snprintf(name, sizeof name, "%s", config_path);
        char *base = basename(name);
        char *dot = strrchr(base, '.');
        if (dot)
            *dot = 0;
        snprintf(out, sizeof out, "runs/%s", base);
    }
    fs_train_options opt = {.out_dir = out, .resume = fs_flag(&args, "--resume"),
                            .progress = !fs_flag(&args, "--no-progress"), .stop_after = stop_after};
    fs_error err = {{0}};
    rc = fs_train_run(&cfg, config_path, &opt, &err);
    fs_run_config_free(&cfg);
    if (rc < 0)
        return fs_cli_error(err.msg);
    if (rc == 0)
        fprintf(stderr, "done: %s/metrics.jsonl\n", out);
    return rc == 1 ? 130 : 0;
}
