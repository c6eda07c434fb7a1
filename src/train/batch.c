/* Training batches into the input leaves (train/batch.h). */
#include "train/batch.h"

#include <omp.h>
#include <stdlib.h>
#include <string.h>

int fs_batch_sampler_init(fs_batch_sampler *s, const fs_task *task, const fs_seq_mix *mix, uint64_t seed, int B,
                          int context_len, int threads, fs_error *err)
{
    memset(s, 0, sizeof *s);
    s->task = task;
    s->mix = mix;
    s->seed = seed;
    s->B = B;
    s->threads = threads > 0 ? threads : 1;
    s->labels = calloc((size_t)B * (size_t)(context_len + 1), sizeof *s->labels);
    s->scratch = calloc((size_t)s->threads, sizeof *s->scratch);
    if (!s->labels || !s->scratch) {
        fs_batch_sampler_free(s);
        return fs_fail(err, "batch sampler: out of memory");
    }
    for (int i = 0; i < s->threads; i++)
        if (!(s->scratch[i] = malloc(fs_seq_scratch_bytes(context_len)))) {
            fs_batch_sampler_free(s);
            return fs_fail(err, "batch sampler: out of memory");
        }
    return 0;
}

void fs_batch_sampler_free(fs_batch_sampler *s)
{
    for (int i = 0; s->scratch && i < s->threads; i++)
        free(s->scratch[i]);
    free(s->scratch);
    free(s->labels);
    memset(s, 0, sizeof *s);
}

/* Sequences [b0, b1) of the batch of step `step`, with scratch buffer `thread`. */
static void sample_range(fs_batch_sampler *s, fs_acts *a, int64_t step, int b0, int b1, int thread)
{
    int P = a->P, D = a->cfg.input_dim;
    float *examples = fs_leaf_ptr(a, L_EXAMPLES, 0), *labels = fs_leaf_ptr(a, L_LABELS, 0);
    uint64_t first = (uint64_t)step * (uint64_t)s->B;
    for (int b = b0; b < b1; b++) {
        fs_sample_mixed(s->task, s->mix, s->seed, FS_STREAM_TRAIN, first + (uint64_t)b, examples + (size_t)b * P * D,
                        s->labels + (size_t)b * P, NULL, s->scratch[thread]);
        for (int i = b * P; i < (b + 1) * P; i++)
            labels[i] = (float)s->labels[i];
    }
}

void fs_batch_sample(fs_batch_sampler *s, fs_acts *a, int64_t step)
{
    int B = s->B;
#pragma omp parallel num_threads(s->threads)
    {
        int id = omp_get_thread_num(), n = omp_get_num_threads();
        sample_range(s, a, step, (int)((long)B * id / n), (int)((long)B * (id + 1) / n), id);
    }
}

static void fill_in_step(void *ctx, fs_acts *a, int b0, int b1, int thread)
{
    fs_batch_sampler *s = ctx;
    sample_range(s, a, s->step, b0, b1, thread);
}

double fs_batch_train_step(fs_batch_sampler *s, fs_trainer *t, int64_t step, double *grad_norm)
{
    s->step = step;
    t->fill = fill_in_step;
    t->fill_ctx = s;
    double loss = fs_trainer_step(t, s->B, grad_norm);
    t->fill = NULL;
    t->fill_ctx = NULL;
    return loss;
}
