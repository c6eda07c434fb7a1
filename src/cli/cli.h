/* Command-line plumbing shared by the subcommands. */
#ifndef FEWSHOT_CLI_H
#define FEWSHOT_CLI_H

#include <stdbool.h>
#include <stddef.h>

#include "fewshot/config.h"
#include "fewshot/interventions.h"
#include "fewshot/model.h"

enum { FS_CLI_MAX_OPTS = 40, FS_CLI_MAX_SETS = 64 };

typedef struct {
    const char *name;  /* "--model" (or "-o") */
    const char *arg;   /* metavariable, NULL for a flag */
    const char *help;
} fs_opt;

typedef struct {
    const fs_opt *opts;
    const char *value[FS_CLI_MAX_OPTS];
    bool given[FS_CLI_MAX_OPTS];
    const char *sets[FS_CLI_MAX_SETS]; /* repeated --set */
    int num_sets;
} fs_args;

/* Parse argv (after the subcommand). Returns 0 ok, 1 when --help was printed, -1 on
 * a usage error (already reported). */
int fs_cli_parse(fs_args *a, int argc, char **argv, const char *cmd, const char *synopsis, const char *about,
                 const fs_opt *opts);
const char *fs_arg(const fs_args *a, const char *name); /* NULL if not given */
bool fs_flag(const fs_args *a, const char *name);
int fs_arg_int(const fs_args *a, const char *name, long long def, long long lo, long long hi, long long *out);

/* Resolve the run config: defaults, then --config FILE, then --set overrides. */
int fs_cli_run_config(const fs_args *a, fs_run_config *cfg, bool require_config);
/* Resolve the model config from --config and/or the model file's metadata, then load
 * the model (an explicit --config must agree with the file). */
int fs_cli_load_model(const fs_args *a, fs_run_config *cfg, fs_model *m);

/* What --cache/--mask and --intervene ask to hold on (on top of `config`, may be NULL). */
fs_held_source fs_cli_held(const fs_args *a, const fs_clamps_config *config, const char *origin);

int fs_cli_error(const char *msg); /* prints "fewshot: msg" to stderr, returns 1 */

/* Write text to -o FILE atomically, or to stdout. */
int fs_cli_output(const fs_args *a, const char *text);

/* fewshot bench's classify phase: throughput of fs_kv_classify on random inputs, a
 * context of `context_pairs` pairs, `nqueries` queries, `threads` (0 = all cores).
 * Queries per second, or a negative number when the cache cannot be built (e.g. APE
 * beyond 15 context pairs). */
double fs_kv_bench_queries_per_s(const fs_model *m, int context_pairs, size_t nqueries, int threads);

/* The phase-change time of an accuracy curve (acc[i] at iter[i] sequences, in order; NaN
 * = not logged): the first iter whose acc reaches 0.5 + half the way from 0.5 to the final
 * (last logged) acc; NaN when that is not above 0.5. fewshot sweep summarize and report. */
double fs_phase_change(const double *iter, const double *acc, size_t n);

/* Subcommands. */
int fs_cmd_init(int argc, char **argv);
int fs_cmd_cache(int argc, char **argv);
int fs_cmd_grad(int argc, char **argv);
int fs_cmd_steps(int argc, char **argv);
int fs_cmd_train(int argc, char **argv);
int fs_cmd_eval(int argc, char **argv);
int fs_cmd_measure(int argc, char **argv);
int fs_cmd_classify(int argc, char **argv);
int fs_cmd_dataset(int argc, char **argv);
int fs_cmd_bench(int argc, char **argv);
int fs_cmd_report(int argc, char **argv);
int fs_cmd_sweep(int argc, char **argv);

#endif
