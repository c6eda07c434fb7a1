/* fewshot train: an in-context classification training run. */
#include <cjson/cJSON.h>
#include <libgen.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "fewshot/seqio.h"
#include "fewshot/train.h"

static const fs_opt opts[] = {
    {"--config", "FILE", "run config JSON (sections model, data, train, eval, clamps)"},
    {"--set", "S.K=V", "override a config value, e.g. --set train.lr=1e-4 (repeatable)"},
    {"--out", "DIR", "run directory (default: runs/<config name>)"},
    {"--resume", NULL, "continue the run in --out from its latest checkpoint"},
    {"--threads", "T", "worker threads (default: train.threads, 0 = all cores)"},
    {"--no-progress", NULL, "no progress bar (it is also off when stderr is not a terminal)"},
    {"--stop-after", "N", "stop after N sequences with a checkpoint (resume later with --resume)"},
    {"--cache", "FILE", "clamp values held on during training and evaluation (= clamps.cache)"},
    {"--mask", "FILE", "clamp mask (= clamps.mask)"},
    {"--intervene", "JSON", "named interventions held on, inline JSON or a file (= the clamps section)"},
    {NULL, NULL, NULL},
};

/* --cache/--mask/--intervene fill the config's clamps section (saved with the run). */
static int held_on(const fs_args *args, fs_run_config *cfg, fs_error *err)
{
    const char *cache = fs_arg(args, "--cache"), *mask = fs_arg(args, "--mask"), *iv = fs_arg(args, "--intervene");
    if ((cache != NULL) != (mask != NULL))
        return fs_fail(err, "--cache and --mask go together");
    if (!cache && !iv)
        return 0;
    cJSON *section = NULL;
    if (iv) {
        fs_error ignored;
        section = iv[0] == '{' ? cJSON_Parse(iv) : fs_json_load(iv, &ignored);
        if (!cJSON_IsObject(section)) {
            cJSON_Delete(section);
            return fs_fail(err, "--intervene: expected a JSON object or a JSON file holding one: %s", iv);
        }
    } else {
        section = cfg->clamps.named ? cJSON_Duplicate(cfg->clamps.named, 1) : cJSON_CreateObject();
    }
    if (cache) {
        cJSON_DeleteItemFromObject(section, "cache");
        cJSON_DeleteItemFromObject(section, "mask");
        cJSON_AddStringToObject(section, "cache", cache);
        cJSON_AddStringToObject(section, "mask", mask);
    }
    cJSON *root = cJSON_CreateObject();
    cJSON_AddItemToObject(root, "clamps", section);
    int rc = fs_run_config_apply(root, "--cache/--mask/--intervene", cfg, err);
    cJSON_Delete(root);
    return rc;
}

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
    fs_error err = {{0}};
    if (held_on(&args, &cfg, &err)) {
        fs_run_config_free(&cfg);
        return fs_cli_error(err.msg);
    }
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
    rc = fs_train_run(&cfg, config_path, &opt, &err);
    fs_run_config_free(&cfg);
    if (rc < 0)
        return fs_cli_error(err.msg);
    if (rc == 0)
        fprintf(stderr, "done: %s/metrics.jsonl\n", out);
    return rc == 1 ? 130 : 0;
}
