/* fewshot: one binary, subcommands (docs/formats.md). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "fewshot/version.h"

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} command;

static const command commands[] = {
    {"init", fs_cmd_init, "initialise a model and write it as safetensors"},
    {"cache", fs_cmd_cache, "run the forward pass and dump the activation cache (or its shapes) as JSON"},
    {"grad", fs_cmd_grad, "loss and parameter gradients of a batch"},
    {"steps", fs_cmd_steps, "run N optimizer steps on one batch"},
    {"train", fs_cmd_train, "in-context classification training run"},
    {"eval", fs_cmd_eval, "evaluate a model (evaluators, or given sequences)"},
    {"measure", fs_cmd_measure, "per-head progress measures of a model (induction strength, ablations)"},
    {"classify", fs_cmd_classify, "classify many queries against one context (frozen KV cache)"},
    {"dataset", fs_cmd_dataset, "dataset tools (synth)"},
    {"sweep", fs_cmd_sweep, "grids of training runs: plan, run (local pool), slurm, summarize"},
    {"bench", fs_cmd_bench, "measure training and evaluation throughput"},
    {"report", fs_cmd_report, "draw runs and sweeps as one self-contained HTML file (curves, attention)"},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: fewshot <command> [options]   (fewshot <command> --help for details)\n"
               "       fewshot --version\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        fprintf(f, "  %-9s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\ndocumentation: README.md and docs/ (model, cache, formats, sampling, metrics)\n");
}

/* OpenMP threads that wait at a barrier spin for about 10,000 rounds (tens of
 * microseconds), then sleep, unless the user chose (OMP_WAIT_POLICY or GOMP_SPINCOUNT).
 * libgomp's default spins ~300,000 rounds: on cores shared with other jobs a spinning
 * thread takes the core from the thread it waits for. Sleeping at once (passive) gives
 * the core away at every barrier, and a training step has a few per millisecond: with
 * one busy process per core it kept a third of the quiet speed, this setting about half
 * (README "Shared cores"). libgomp reads its environment when it is loaded, before main,
 * so the program sets it and runs itself again (once; if exec fails it carries on). */
static void set_wait_policy(char **argv)
{
    if (getenv("OMP_WAIT_POLICY") || getenv("GOMP_SPINCOUNT"))
        return;
    if (setenv("GOMP_SPINCOUNT", "10000", 1))
        return;
    execv("/proc/self/exe", argv);
}

int main(int argc, char **argv)
{
    set_wait_policy(argv);
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "-V")) {
        printf("fewshot %s\n", FEWSHOT_VERSION);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        if (!strcmp(argv[1], commands[i].name))
            return commands[i].run(argc - 2, argv + 2);
    fprintf(stderr, "fewshot: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
