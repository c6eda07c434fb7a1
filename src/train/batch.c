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

void fs_batch_sample(fs_batch_sampler *s, fs_acts *a, int64_t step)
{
    int B = s->B, P = a->P, D = a->cfg.input_dim;
    float *examples = fs_leaf_ptr(a, L_EXAMPLES, 0), *labels = fs_leaf_ptr(a, L_LABELS, 0);
    uint64_t first = (uint64_t)step * (uint64_t)B;
#pragma omp parallel num_threads(s->threads)
    {
        void *scratch = s->scratch[omp_get_thread_num()];
#pragma omp for schedule(static)
        for (int b = 0; b < B; b++)
            fs_sample_mixed(s->task, s->mix, s->seed, FS_STREAM_TRAIN, first + (uint64_t)b,
                            examples + (size_t)b * P * D, s->labels + (size_t)b * P, NULL, scratch);
    }
    for (int i = 0; i < B * P; i++)
        labels[i] = (float)s->labels[i];
}
