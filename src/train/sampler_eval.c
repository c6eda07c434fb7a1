/* Evaluator sets (docs/sampling.md): eval_iters fixed sequences per evaluator, drawn once
 * from eval_seed (as the reference's main.py draws eval_data once). */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>

#include "base/fileio.h"
#include "train/sampler.h"

void fs_eval_set_free(fs_eval_set *set)
{
    if (set) {
        free(set->examples);
        free(set->labels);
        free(set->item_types);
        *set = (fs_eval_set){0};
    }
}

int fs_eval_set_build(fs_eval_set *set, const fs_task *t, const fs_eval_config *eval, int index,
                      int train_context_len, const char *origin, fs_error *err)
{
    *set = (fs_eval_set){0};
    if (index < 0 || index >= eval->num_evaluators)
        return fs_fail(err, "%s: eval.evaluators: no evaluator %d (have %d)", origin ? origin : "config", index,
                       eval->num_evaluators);
    const fs_evaluator_config *ev = &eval->evaluators[index];
    if (eval->eval_iters < 1)
        return fs_fail(err, "%s: eval.eval_iters: expected >= 1, got %d", origin ? origin : "config",
                       eval->eval_iters);
    if (fs_seq_spec_from_evaluator(&set->spec, t, ev, train_context_len, origin, err))
        return -1;
    snprintf(set->name, sizeof set->name, "%s", ev->name);
    set->n = eval->eval_iters;
    set->P = set->spec.context_len + 1;
    set->D = t->data->dim;
    size_t items, bytes;
    if (fs_size_mul(&items, INT_MAX, FS_DIMS((size_t)set->n, (size_t)set->P)) ||
        fs_size_mul(&bytes, fs_memory_limit(), FS_DIMS(items, (size_t)set->D, sizeof(float))))
        return fs_fail(err, "evaluator \"%s\": %d sequences of %d pairs of %d features are too many", ev->name,
                       set->n, set->P, set->D);
    set->examples = malloc(bytes);
    set->labels = malloc(items * sizeof(int));
    set->item_types = malloc(items * sizeof(int));
    if (!set->examples || !set->labels || !set->item_types) {
        fs_eval_set_free(set);
        return fs_fail(err, "evaluator \"%s\": out of memory for %d sequences", ev->name, eval->eval_iters);
    }
    fs_seq_mix mix;
    fs_seq_mix_single(&mix, &set->spec);
    if (fs_sample_batch(t, &mix, (uint64_t)eval->eval_seed, FS_STREAM_EVAL + (uint64_t)index, 0, set->n,
                        set->examples, set->labels, set->item_types, err)) {
        fs_eval_set_free(set);
        return -1;
    }
    return 0;
}
