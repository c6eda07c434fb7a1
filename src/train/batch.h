/* The training batch of a step, sampled straight into the trainer's input leaves:
 * sequences step*B .. step*B+B-1 of the counter-based mixed sampler, threads over
 * sequences with per-thread scratch allocated once. The run loop and `fewshot bench`
 * both take their batches through it, so the bench times what training runs. */
#ifndef FEWSHOT_TRAIN_BATCH_H
#define FEWSHOT_TRAIN_BATCH_H

#include <stdint.h>

#include "fewshot/cache.h"
#include "fewshot/error.h"
#include "train/sampler.h"
#include "train/trainer.h"

typedef struct {
    const fs_task *task;
    const fs_seq_mix *mix;
    uint64_t seed;
    int B;
    int *labels;    /* [B][P] sampled labels */
    void **scratch; /* [threads] sampler scratch */
    int threads;
    int64_t step;   /* the batch fs_batch_train_step is sampling */
} fs_batch_sampler;

int fs_batch_sampler_init(fs_batch_sampler *s, const fs_task *task, const fs_seq_mix *mix, uint64_t seed, int B,
                          int context_len, int threads, fs_error *err);
void fs_batch_sampler_free(fs_batch_sampler *s);
/* Sample the batch of step `step` into the examples and labels leaves of a (no allocation). */
void fs_batch_sample(fs_batch_sampler *s, fs_acts *a, int64_t step);
/* fs_trainer_step on the batch of step `step`, sampled inside the step's parallel region
 * (each thread samples the sequences it runs: one parallel region per step). The same
 * inputs as fs_batch_sample; s must have at least t->threads scratch buffers. */
double fs_batch_train_step(fs_batch_sampler *s, fs_trainer *t, int64_t step, double *grad_norm);

#endif
