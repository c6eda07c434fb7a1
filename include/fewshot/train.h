/* In-context classification training runs (SPEC sections 5 and 8): a run directory
 * with the resolved config.json, metrics.jsonl and atomic checkpoints; --resume
 * continues from the latest checkpoint exactly as an uninterrupted run would. */
#ifndef FEWSHOT_TRAIN_H
#define FEWSHOT_TRAIN_H

#include <stdbool.h>

#include "fewshot/config.h"
#include "fewshot/error.h"

typedef struct {
    const char *out_dir;   /* run directory */
    bool resume;           /* continue from out_dir/checkpoints (error if none) */
    bool progress;         /* progress bar on stderr */
    int64_t stop_after;    /* testing aid: stop (with a checkpoint) after this many sequences; 0 = off */
} fs_train_options;

/* Returns 0 when done, 1 when interrupted (a checkpoint was written), -1 on error. */
int fs_train_run(fs_run_config *cfg, const char *origin, const fs_train_options *opt, fs_error *err);

#endif
