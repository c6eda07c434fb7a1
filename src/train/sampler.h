/* Few-shot sequence sampling (docs/sampling.md, docs/model.md): a task (class/exemplar splits,
 * relabel pairs, class distribution) resolved from the data config and a dataset;
 * sequence specs from training samplers or evaluators; counter-based sampling so a
 * sequence depends only on (seed, stream, sequence index). */
#ifndef FEWSHOT_SAMPLER_H
#define FEWSHOT_SAMPLER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fewshot/config.h"
#include "fewshot/data.h"
#include "fewshot/error.h"

typedef enum { FS_ITEM_OTHER = 0, FS_ITEM_BURSTY = 1, FS_ITEM_DISTRACTOR = 2, FS_ITEM_QUERY = 3 } fs_item_type;

/* RNG streams: training sequences use FS_STREAM_TRAIN with train_seed (sequence index
 * = sequences seen, so step t of batch B is t*B .. t*B+B-1); evaluator i uses
 * FS_STREAM_EVAL + i with eval_seed. */
enum { FS_STREAM_TRAIN = 0, FS_STREAM_EVAL = 1 };

typedef struct { int start, count; } fs_range;
typedef struct { int first, second; } fs_label_pair; /* first < second < L */

enum { FS_NO_RELABEL = -1 };

typedef struct {
    const fs_dataset *data;     /* not owned */
    fs_range classes[4];        /* by fs_split: train, val, test, all (contiguous, in order) */
    fs_range exemplars[4];
    int relabel;                /* L = data.fs_relabel (0 = no relabelling) */
    int num_pairs[4];           /* relabel pairs per split: train, val, test, all */
    const fs_label_pair *pairs[4];
    fs_label_pair *pair_storage; /* owned: all L(L-1)/2 pairs, permuted test|val|train */
    double *zipf_cdf;           /* owned: cumulative Zipf distribution over train classes, or NULL */
    int num_classes;            /* default model num_classes: L when relabelling, else train classes */
    /* Training options of the data section. */
    double noise_scale;
    bool assign_query_label_random;
    bool match_query_and_distractors;
} fs_task;

/* Check the splits against the dataset and resolve everything; `origin` (the config
 * file) prefixes error messages. `data` must outlive the task. */
int fs_task_init(fs_task *t, const fs_dataset *data, const fs_data_config *cfg, const char *origin, fs_error *err);
void fs_task_free(fs_task *t);

/* One kind of sequence: context_len pairs then the query (P = context_len + 1). */
typedef struct {
    fs_split classes, exemplars;
    int context_len;
    int burstiness;             /* copies of the query class in context */
    bool distract;              /* plus one other class, also `burstiness` times (if burstiness > 0) */
    bool no_support;            /* the rest excludes query and distractor classes */
    bool unique_rest;           /* the rest: distinct classes, excluding query and distractor */
    bool zipf;                  /* classes ~ the task's Zipf distribution (train classes only) */
    int relabel;                /* FS_NO_RELABEL or the pair set (FS_SPLIT_TRAIN/VAL/TEST) */
    double noise_scale;         /* sd of Gaussian noise added to every example */
    bool assign_query_label_random;
    bool match_query_and_distractors;
} fs_seq_spec;

/* Training sampler `index` of train config: train classes and exemplars, the data
 * section's Zipf/noise/relabel options. Checks feasibility. */
int fs_seq_spec_from_sampler(fs_seq_spec *s, const fs_task *t, const fs_train_config *train, int index,
                             const char *origin, fs_error *err);
/* An evaluator: uniform classes; non-train classes use all exemplars (as the
 * reference); context_len 0 = train_context_len; scheme "all" = no relabelling. */
int fs_seq_spec_from_evaluator(fs_seq_spec *s, const fs_task *t, const fs_evaluator_config *ev,
                               int train_context_len, const char *origin, fs_error *err);
/* Feasibility of a spec on a task; `what` names it in messages. */
int fs_seq_spec_check(const fs_task *t, const fs_seq_spec *s, const char *what, fs_error *err);

/* Scratch memory fs_sample_sequence needs for a context length. */
size_t fs_seq_scratch_bytes(int context_len);

/* Sample one sequence: examples [P][D], labels [P], item_types [P] (or NULL). The result
 * depends only on (seed, stream, seq_index). Allocation-free and thread-safe given
 * per-thread scratch (fs_seq_scratch_bytes). The spec must have passed the check. */
void fs_sample_sequence(const fs_task *t, const fs_seq_spec *s, uint64_t seed, uint64_t stream,
                        uint64_t seq_index, float *examples, int *labels, int *item_types, void *scratch);

/* Training samplers mixed per sequence by mixing_coeffs (all specs share context_len). */
typedef struct {
    int count;
    fs_seq_spec specs[FS_MAX_SAMPLERS];
    double cum[FS_MAX_SAMPLERS]; /* normalised cumulative mixing coefficients */
} fs_seq_mix;

int fs_seq_mix_from_train(fs_seq_mix *m, const fs_task *t, const fs_train_config *train, const char *origin,
                          fs_error *err);
/* A mix of one spec (no mixing draw). */
void fs_seq_mix_single(fs_seq_mix *m, const fs_seq_spec *s);
/* Which spec sequence seq_index uses (a draw of its own, from (seed, stream, seq_index)). */
int fs_seq_mix_pick(const fs_seq_mix *m, uint64_t seed, uint64_t stream, uint64_t seq_index);
void fs_sample_mixed(const fs_task *t, const fs_seq_mix *m, uint64_t seed, uint64_t stream, uint64_t seq_index,
                     float *examples, int *labels, int *item_types, void *scratch);

/* Sequences first .. first+n-1 into examples [n][P][D], labels [n][P], item_types
 * [n][P] (or NULL); OpenMP-parallel over sequences. Fails only on out-of-memory. */
int fs_sample_batch(const fs_task *t, const fs_seq_mix *m, uint64_t seed, uint64_t stream, uint64_t first, int n,
                    float *examples, int *labels, int *item_types, fs_error *err);

/* A fixed evaluator set (docs/sampling.md): eval_iters sequences drawn once from
 * eval_seed on stream FS_STREAM_EVAL + evaluator index. */
typedef struct {
    char name[64];
    fs_seq_spec spec;
    int n, P, D;
    float *examples;  /* [n][P][D] */
    int *labels;      /* [n][P] */
    int *item_types;  /* [n][P] */
} fs_eval_set;

int fs_eval_set_build(fs_eval_set *set, const fs_task *t, const fs_eval_config *eval, int index,
                      int train_context_len, const char *origin, fs_error *err);
void fs_eval_set_free(fs_eval_set *set);

#endif
