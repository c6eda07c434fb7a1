/* fewshot report: the data a report draws, read from run and sweep directories.
 * The command (cmd_report.c) turns it into one self-contained HTML file (the template
 * src/cli/report/template.html with Chart.js and the data inlined) and, on request,
 * static SVG figures (report_svg.c). Problems with the input that still leave something
 * to draw become notes shown at the top of the report (and on stderr). */
#ifndef FEWSHOT_CLI_REPORT_H
#define FEWSHOT_CLI_REPORT_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>

#include "fewshot/config.h"
#include "fewshot/error.h"

enum { RP_ACC = 0, RP_LOSS = 1, RP_METRICS = 2 };
extern const char *const rp_metric_names[RP_METRICS]; /* "acc", "loss" */

/* A series of values at sequence counts (x ascending); NaN = no value. */
typedef struct {
    size_t n, cap;
    double *x, *y;
} rp_series;

typedef struct {
    char name[256];      /* legend label */
    char dir[1100];      /* run directory */
    char status[32];     /* done, running, pending, failed, stopped, unknown */
    cJSON *config;       /* config.json, or NULL */
    cJSON *facts;        /* run.json (plus what the sweep manifest says), or NULL */
    cJSON *overrides;    /* sweep overrides, or NULL */
    char group_key[400]; /* sweeps: the grid point without the seed ("variant, axis=value") */
    rp_series train_loss;
    rp_series eval[FS_MAX_EVALUATORS][RP_METRICS]; /* by the report's evaluator index */
    cJSON *measures;     /* [{"iter": n, "m": {...}}] from eval lines, or NULL */
    double phase;        /* phase-change sequence count, NaN if none */
} rp_run;

typedef struct {
    rp_run *runs;
    int num_runs, cap_runs;
    char evaluators[FS_MAX_EVALUATORS][64];
    int num_evaluators;
    int phase_evaluator; /* fsl_train if present, else 0; -1 without evaluators */
    bool seed_axis;      /* some sweep varies "seed": lines are grouped over seeds */
    cJSON *notes;        /* array of strings */
} rp_report;

void rp_note(rp_report *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Add PATH: a run directory or a sweep directory (its runs). -1 with err when PATH
 * is neither or cannot be read. */
int rp_add_path(rp_report *r, const char *path, fs_error *err);
/* After every path: phase-change times, evaluator-coverage notes. */
void rp_finish(rp_report *r);
void rp_free(rp_report *r);

/* A drawn line: one run, or a group of runs (mean with a min-max band). */
typedef struct {
    char label[512];
    int first_run;       /* its (first) run */
    int num_runs;
    rp_series mean, lo, hi; /* lo/hi empty for a single run */
    double phase;
} rp_line;

/* A chart of the curves. One run: query accuracy (a line per evaluator) and loss (a line
 * per evaluator and the training loss). Several runs: a chart per evaluator and metric
 * (a line per run, or per group over seeds) and one of the training loss. */
typedef struct {
    char title[160];
    int metric;          /* RP_ACC or RP_LOSS */
    rp_line *lines;
    int num_lines;
} rp_chart;

int rp_charts(const rp_report *r, rp_chart **out); /* count; free with rp_charts_free */
void rp_charts_free(rp_chart *charts, int n);

/* The report's data as JSON (curves, measures, facts, configs, notes). */
cJSON *rp_data_json(const rp_report *r);

/* Attention patterns of `run` (final model and checkpoints) on `probes` sequences from
 * its training sampler: a JSON object, or NULL with a note when they cannot be made. */
cJSON *rp_attention_json(rp_report *r, int run, int probes, int max_checkpoints);

/* Static SVG figures of the curves into dir (created); returns the number written or -1. */
int rp_write_svgs(const rp_report *r, const char *dir, bool logx, fs_error *err);

/* realloc that ends the command on out-of-memory (a report is all or nothing). */
void *rp_grow(void *p, size_t bytes);

/* Round to `digits` significant digits (smaller JSON). */
double rp_round(double v, int digits);

#endif
