/* fewshot train: an in-context classification training run. */
#include <cjson/cJSON.h>
#include <libgen.h>
#include <omp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/cli.h"
#include "cli/progress.h"
#include "base/fileio.h"
#include "base/json.h"
#include "fewshot/train.h"

static const fs_opt opts[] = {
    {"--config", "FILE", "run config JSON (sections model, data, train, eval, measures, clamps)"},
    {"--set", "S.K=V", "override a config value, e.g. --set train.lr=1e-4 (repeatable)"},
    {"--out", "DIR", "run directory (default: runs/<config name>)"},
    {"--resume", NULL, "continue the run in --out from its latest checkpoint"},
    {"--threads", "T", "worker threads (default: train.threads, 0 = all cores)"},
    {"--no-progress", NULL, "no progress output (bar on a terminal, plain lines otherwise)"},
    {"--log-every", "SECONDS", "when stderr is not a terminal: a plain progress line every SECONDS (default 30, 0 = none)"},
    {"--stop-after", "N", "stop after N sequences with a checkpoint (resume later with --resume)"},
    {"--cache", "FILE", "clamp values held on during training and evaluation (= clamps.cache)"},
    {"--mask", "FILE", "clamp mask (= clamps.mask)"},
    {"--intervene", "JSON", "named interventions held on, inline JSON or a file (= the clamps section)"},
    {NULL, NULL, NULL},
};

static fs_train_progress last_progress; /* for run.json */

/* DIR/run.json: how this invocation ran (read by fewshot report): the command, UTC start
 * and end, wall seconds, sequences trained and their rate, threads, how it ended. */
static void write_run_facts(const char *out, int argc, char **argv, time_t start, double wall_s, int threads,
                            int batch, const char *ended)
{
    cJSON *o = cJSON_CreateObject(), *cmd = cJSON_AddArrayToObject(o, "command");
    cJSON_AddItemToArray(cmd, cJSON_CreateString("fewshot"));
    cJSON_AddItemToArray(cmd, cJSON_CreateString("train"));
    for (int i = 0; i < argc; i++)
        cJSON_AddItemToArray(cmd, cJSON_CreateString(argv[i]));
    char t0[32], t1[32];
    time_t end = time(NULL);
    strftime(t0, sizeof t0, "%Y-%m-%dT%H:%M:%SZ", gmtime(&start));
    strftime(t1, sizeof t1, "%Y-%m-%dT%H:%M:%SZ", gmtime(&end));
    cJSON_AddStringToObject(o, "started", t0);
    cJSON_AddStringToObject(o, "ended", t1);
    cJSON_AddNumberToObject(o, "wall_s", wall_s);
    const fs_train_progress *p = &last_progress;
    cJSON_AddNumberToObject(o, "sequences", (double)(p->step - p->first_step) * batch);
    cJSON_AddNumberToObject(o, "seqs_per_s", p->seqs_per_s);
    cJSON_AddNumberToObject(o, "threads", threads > 0 ? threads : omp_get_max_threads());
    cJSON_AddBoolToObject(o, "resumed", p->first_step > 0);
    cJSON_AddStringToObject(o, "ended_by", ended);
    char *text = fs_json_text(o), path[1100];
    cJSON_Delete(o);
    snprintf(path, sizeof path, "%s/run.json", out);
    fs_error err = {{0}};
    if (!text || fs_write_file_atomic(path, text, &err))
        fprintf(stderr, "fewshot: warning: %s\n", err.msg);
    free(text);
}

static volatile sig_atomic_t stop_signal; /* the signal that asked the run to stop, 0 if none */

static void on_stop_signal(int sig) { stop_signal = sig; }

static void show_progress(void *ctx, const fs_train_progress *p)
{
    fs_progress *bar = ctx;
    last_progress = *p;
    if (p->step == p->first_step + 1 && p->first_step > 0)
        fprintf(stderr, "resumed at step %lld\n", (long long)p->first_step);
    fs_progress_update(bar, p->step, p->total_steps, p->first_step, p->seqs_per_s, p->loss, p->eval_name,
                       p->eval_acc);
}

int fs_cmd_train(int argc, char **argv)
{
    fs_args args;
    int rc = fs_cli_parse(&args, argc, argv, "train", "--config RUN.json [--set S.K=V ...] [--out DIR] [--resume] [--threads T] [--stop-after N]\n"
                          "       [--cache CACHE.json --mask MASK.json] [--intervene JSON|FILE] [--no-progress] [--log-every S]",
                          "Train on in-context classification sequences sampled from the config's dataset. Writes\n"
                          "DIR/config.json (fully resolved), DIR/metrics.jsonl (train lines every log_every sequences,\n"
                          "eval lines with every evaluator's eight metrics every eval_every sequences) and\n"
                          "DIR/checkpoints/step_N.safetensors, and at the end DIR/run.json (command, times,\n"
                          "sequences/s, threads: read by fewshot report). Ctrl-C writes a checkpoint and exits;\n"
                          "--resume continues exactly as an uninterrupted run would; resuming with a larger\n"
                          "train.train_iters extends the run. Config keys: docs/formats.md; samplers and evaluators:\n"
                          "docs/sampling.md; the metrics: docs/metrics.md.",
                          opts);
    if (rc)
        return rc > 0 ? 0 : 2;
    fs_run_config cfg;
    if (fs_cli_run_config(&args, &cfg, true))
        return 1;
    long long threads, stop_after, log_every;
    if (fs_arg_int(&args, "--threads", cfg.train.threads, 0, 1024, &threads) ||
        fs_arg_int(&args, "--log-every", 30, 0, 86400, &log_every) ||
        fs_arg_int(&args, "--stop-after", 0, 0, (1LL << 62), &stop_after)) {
        fs_run_config_free(&cfg);
        return 1;
    }
    cfg.train.threads = (int)threads;
    fs_error err = {{0}};
    /* --cache/--mask/--intervene go into the clamps section, saved with the run */
    fs_held_source held = fs_cli_held(&args, NULL, NULL);
    if (fs_held_record(&cfg, &held, &err)) {
        fs_run_config_free(&cfg);
        return fs_cli_error(err.msg);
    }
    char out[1024];
    const char *config_path = fs_arg(&args, "--config");
    if (fs_arg(&args, "--out")) {
        if (strlen(fs_arg(&args, "--out")) >= sizeof out) {
            fs_run_config_free(&cfg);
            return fs_cli_error("--out: the directory name is longer than 1023 bytes");
        }
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
    fs_progress bar;
    fs_progress_start(&bar, !fs_flag(&args, "--no-progress"), (double)log_every);
    /* Ctrl-C, and SIGTERM (SLURM, systemd, timeout, preemption): checkpoint, then exit 128+signal. */
    struct sigaction sa, old_int, old_term;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    stop_signal = 0;
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    fs_train_options opt = {.out_dir = out, .resume = fs_flag(&args, "--resume"), .stop_after = stop_after,
                            .stop_flag = &stop_signal, .on_progress = show_progress, .progress_ctx = &bar};
    time_t start = time(NULL);
    struct timespec w0, w1;
    clock_gettime(CLOCK_MONOTONIC, &w0);
    rc = fs_train_run(&cfg, config_path, &opt, &err);
    clock_gettime(CLOCK_MONOTONIC, &w1);
    if (rc >= 0)
        write_run_facts(out, argc, argv, start, (double)(w1.tv_sec - w0.tv_sec) + 1e-9 * (double)(w1.tv_nsec - w0.tv_nsec),
                        cfg.train.threads, cfg.train.train_bs, rc == 0 ? "done" : stop_signal ? "signal" : "stop-after");
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    fs_progress_finish(&bar);
    fs_run_config_free(&cfg);
    if (rc < 0)
        return fs_cli_error(err.msg);
    if (rc == 1) {
        fprintf(stderr, "stopped%s; checkpoint written in %s/checkpoints. Continue with --resume.\n",
                stop_signal == SIGINT ? " by Ctrl-C" : stop_signal == SIGTERM ? " by SIGTERM" : " (--stop-after)", out);
        if (stop_signal)
            return 128 + stop_signal;
        return 0;
    }
    fprintf(stderr, "done: %s/metrics.jsonl\n", out);
    return 0;
}
