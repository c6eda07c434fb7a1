/* Shared test helpers: golden paths, temp dirs, running the fewshot binary and
 * capturing its exit status and output, tiny random models. Tests run with the
 * repository root as working directory. */
#ifndef FEWSHOT_TEST_HELPERS_H
#define FEWSHOT_TEST_HELPERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fewshot/config.h"
#include "fewshot/model.h"

#define TH_GOLDEN "tests/golden"

/* ---- files and temp dirs ---- */

/* Create a fresh directory /tmp/fewshot_test_<tag>_XXXXXX into dir (>= 64 bytes). */
void th_tmpdir(char *dir, size_t n, const char *tag);
/* Remove a directory tree created by th_tmpdir (regular files and subdirectories). */
void th_rmtree(const char *dir);
/* dir + "/" + name into a static ring of buffers (valid for the next 16 calls). */
const char *th_path(const char *dir, const char *name);
void th_write_file(const char *path, const void *data, size_t n);
void th_write_text(const char *path, const char *text);
/* printf into a file. */
void th_write_textf(const char *path, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Whole file, NUL-terminated, or NULL; *n gets the length if n != NULL. Caller frees. */
char *th_read_file(const char *path, size_t *n);
void th_copy_file(const char *src, const char *dst);

/* ---- running the binary ---- */

typedef struct {
    bool exited;       /* normal exit (not a signal) */
    int code;          /* exit code if exited */
    int signal;        /* terminating signal otherwise */
    char *out, *err;   /* captured stdout / stderr, NUL-terminated */
} th_run_result;

/* FEWSHOT_BIN from the environment, else "./fewshot". */
const char *th_bin(void);
/* Run the binary with arguments (NULL-terminated argv without argv[0]). */
void th_run_argv(th_run_result *r, const char *const *args);
/* Run the binary with a command line split on spaces (no quoting; paths must not
 * hold spaces), built printf-style: th_run(&r, "cache --config %s", path). */
void th_run(th_run_result *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* th_run, asserting a normal exit with code 0 (the command and its stderr otherwise). */
void th_run_ok(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void th_run_free(th_run_result *r);
/* true if stderr shows a sanitizer report (ASan, UBSan, LSan). */
bool th_sanitizer_report(const th_run_result *r);
/* Human-readable summary (exit status + stderr) for assertion messages (static buffer). */
const char *th_describe(const th_run_result *r);

/* ---- models ---- */

/* Tiny model for gradient checks: input_dim 6, num_classes 3, d_model 8, num_heads 2,
 * depth 1, mlp_ratio 2, RoPE. */
void th_tiny_config(fs_model_config *c);
/* Create a model and fill every parameter: the documented init (docs/model.md) from `seed`, then uniform noise of
 * +-noise on every element (so biases and LayerNorm parameters are not trivial). */
void th_random_model(fs_model *m, const fs_model_config *cfg, uint64_t seed, double noise);

/* A run config (JSON text) that trains in about a second on datasets/synth_small.h5:
 * d_model 16, 2 heads, 2 layers, 3200 sequences, evaluators fsl_train and fsl_val_rl. */
extern const char th_tiny_run_config[];

/* ---- random numbers (splitmix64) ---- */

typedef struct {
    uint64_t s;
} th_rng;

uint64_t th_rng_u64(th_rng *r);
double th_rng_uniform(th_rng *r);              /* [0, 1) */
double th_rng_sym(th_rng *r, double a);        /* [-a, a) */
int th_rng_int(th_rng *r, int n);              /* [0, n) */

/* ---- tolerances ---- */

/* |a - b| <= atol + rtol * max(|a|, |b|) */
bool th_close(double a, double b, double rtol, double atol);

#endif
