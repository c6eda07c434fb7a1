/* A one-line progress bar on stderr (only when it is a terminal). */
#ifndef FEWSHOT_PROGRESS_H
#define FEWSHOT_PROGRESS_H

#include <stdbool.h>
#include <stdint.h>

typedef struct {
    bool enabled;
    int64_t total, first_step;
    double started, last_draw;
} fs_progress;

void fs_progress_start(fs_progress *p, bool enabled);
void fs_progress_update(fs_progress *p, int64_t step, int64_t total, int64_t first_step, double seqs_per_s,
                        double loss, const char *eval_name, double eval_acc);
void fs_progress_finish(fs_progress *p);

#endif
