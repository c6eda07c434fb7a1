/* In-context classification training runs (docs/model.md, docs/formats.md): a run directory
 * with the resolved config.json, metrics.jsonl and atomic checkpoints; --resume
 * continues from the latest checkpoint exactly as an uninterrupted run would. */
#ifndef FEWSHOT_TRAIN_H
#define FEWSHOT_TRAIN_H

#include <stdbool.h>

#include "fewshot/config.h"
#include "fewshot/error.h"

#include <signal.h>
#include <stdint.h>

/* Where a run stands, handed to the progress callback after every step. */
typedef struct {
    int64_t step, total_steps, first_step; /* first_step: where this process started (resume) */
    int64_t iter;                          /* sequences seen */
    double seqs_per_s;                     /* since this process started */
    double loss;                           /* this step's loss */
    const char *eval_name;                 /* latest evaluator logged, "" before any */
    double eval_acc;                       /* its query accuracy */
} fs_train_progress;

typedef struct {
    const char *out_dir;   /* run directory */
    bool resume;           /* continue from out_dir/checkpoints (error if none) */
    int64_t stop_after;    /* stop (with a checkpoint) after this many sequences; 0 = off */
    /* Set asynchronously (e.g. by a signal handler the caller installs): the run writes a
     * checkpoint at the end of the current step and returns 1. May be NULL. */
    volatile sig_atomic_t *stop_flag;
    /* Called after every step; may be NULL. */
    void (*on_progress)(void *ctx, const fs_train_progress *p);
    void *progress_ctx;
} fs_train_options;

/* Returns 0 when done, 1 when stopped early by stop_flag or stop_after (a checkpoint was
 * written; `*stopped_at` holds the iter if non-NULL via fs_train_progress), -1 on error. */
int fs_train_run(fs_run_config *cfg, const char *origin, const fs_train_options *opt, fs_error *err);

#endif
