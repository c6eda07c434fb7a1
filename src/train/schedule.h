/* When a run evaluates or writes model snapshots: every `every` sequences and/or at
 * listed sequence counts (the reference's eval_sched / ckpt_sched) and/or at N
 * log-spaced counts. An event is due at the step whose sequence count crosses it. */
#ifndef FEWSHOT_TRAIN_SCHEDULE_H
#define FEWSHOT_TRAIN_SCHEDULE_H

#include <stdbool.h>
#include <stdint.h>

#include "fewshot/config.h"

typedef struct {
    int64_t every;  /* 0 = none */
    int n;
    int64_t *at;    /* increasing */
} fs_schedule;

/* The listed counts plus `log_points` counts round(first * (last/first)^(k/(N-1))),
 * k = 0..N-1 (N = 1: last alone; none when last < first), merged without repeats. */
int fs_schedule_init(fs_schedule *s, int64_t every, const fs_sched *list, int log_points, int64_t first,
                     int64_t last, fs_error *err);
void fs_schedule_free(fs_schedule *s);
/* Whether a multiple of `every` or a listed count lies in (a, b]. */
bool fs_schedule_due(const fs_schedule *s, int64_t a, int64_t b);

#endif
