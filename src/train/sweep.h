/* Sweeps (issue 16): a sweep file expands into grid points, each a run config; a sweep
 * directory holds one `fewshot train` run directory per point, the points' configs under
 * configs/ and the manifest sweep.json. No processes, no printing: the CLI runs them.
 *
 * Sweep file (JSON object; unknown keys are errors):
 *   "base":        a run config: a file name (relative to the working directory, like the
 *                  config's own data paths) or an inline object
 *   "set":         {"section.key": value, ...} applied to the base for every point
 *   "axes":        {"section.key" | "seed": [v1, v2, ...], ...}: the cartesian product
 *   "variants":    [{"name": N, "for": {"var": [values]}, "set": {...}}, ...]: named override
 *                  sets; `for` repeats the entry for each value (several vars: their product)
 *                  and "{var}" in the name and in strings of `set` is replaced by the value
 *                  (a string that is exactly "{var}" becomes the value itself)
 *                  A variant with "skip": "reason" is checked for its name only and not run:
 *                  room for runs that need features not there yet (listed by `plan`).
 *   "description": free text
 * "seed" is model.init_seed (the reference's --init_seed). In a `set` list of strings, an
 * element holding "{a..b}" expands to b - a + 1 elements, and an element "!x" removes x:
 * ["1:{0..7}", "!1:{h}"] is every layer-1 head but h. Points are the variants (or one
 * unnamed point) times the axes product, the last axis varying fastest. */
#ifndef FEWSHOT_TRAIN_SWEEP_H
#define FEWSHOT_TRAIN_SWEEP_H

#include <stdint.h>

#include "fewshot/config.h"
#include "fewshot/error.h"

typedef struct {
    char name[160];      /* directory-safe, unique in the sweep */
    char variant[128];   /* "" when the sweep has no variants */
    cJSON *overrides;    /* {"train.lr": 1e-5, "seed": 5, ...}: the variant's then the axes' */
    cJSON *config;       /* the point's run config (base + set + overrides), unresolved */
    int64_t train_iters; /* resolved */
} fs_sweep_point;

typedef struct {
    char path[1024];
    cJSON *axes;     /* as given (object), never NULL */
    cJSON *variants; /* as given (array), never NULL */
    cJSON *skipped;  /* [{"name", "reason"}] of the variants marked "skip", never NULL */
    int n;
    fs_sweep_point *points;
} fs_sweep;

/* Parse, expand and validate every point (config keys, cross-field checks, named
 * interventions) before anything runs. */
int fs_sweep_load(fs_sweep *s, const char *path, fs_error *err);
void fs_sweep_free(fs_sweep *s);

/* Create DIR, write DIR/configs/<name>.json for every point and DIR/sweep.json (all
 * pending), or check an existing DIR/sweep.json holds the same points and keep their
 * status (a "running" one becomes "pending": its process is gone). */
int fs_sweep_prepare(const fs_sweep *s, const char *dir, fs_error *err);

/* DIR/sweep.json (caller frees with cJSON_Delete), checked to hold a runs list. */
cJSON *fs_sweep_manifest_load(const char *dir, fs_error *err);
/* Set run `index`'s status, error (NULL = null) and wall_s (< 0 = null) under an exclusive
 * lock on DIR/sweep.lock (SLURM tasks update one manifest concurrently); atomic write. */
int fs_sweep_manifest_update(const char *dir, int index, const char *status, const char *error, double wall_s,
                             fs_error *err);
/* Run `index` of a manifest: its name (NULL if out of range or malformed). */
const char *fs_sweep_run_name(const cJSON *manifest, int index);
int fs_sweep_run_count(const cJSON *manifest);

#endif
