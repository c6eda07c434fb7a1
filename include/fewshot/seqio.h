/* Sequence input files (docs/formats.md): JSON with `examples` [P][D] or [B][P][D] and
 * `labels` [P] or [B][P]; other keys are ignored, so a cache dump or golden file is
 * itself a valid input. Every malformation is a clear error. */
#ifndef FEWSHOT_SEQIO_H
#define FEWSHOT_SEQIO_H

#include <stdbool.h>

#include "fewshot/cache.h"
#include "fewshot/config.h"
#include "fewshot/error.h"

typedef struct {
    int B, P, D;
    bool batched;     /* the file had a leading batch dimension */
    float *examples;  /* [B][P][D] */
    int *labels;      /* [B][P] */
} fs_seq_batch;

/* Parse a JSON document (already read) or a file. `num_classes` bounds the labels. */
int fs_seq_batch_from_json(const cJSON *root, const char *origin, int input_dim, int num_classes,
                           fs_seq_batch *out, fs_error *err);
int fs_seq_batch_load(const char *path, int input_dim, int num_classes, fs_seq_batch *out, fs_error *err);
void fs_seq_batch_free(fs_seq_batch *s);

/* Copy sequences [0, nseq) of examples/labels into the arena's input leaves at b0. */
void fs_acts_set_inputs(fs_acts *a, const float *examples, const int *labels, int b0, int nseq);

#endif
