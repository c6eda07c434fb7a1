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

/* HDF5 sequence files: "examples" [B][P][D] floats and "labels" [B][P] integers (or
 * integral floats), read in chunks of sequences (every malformation is an error naming
 * the file and dataset). */
typedef struct fs_seq_h5 fs_seq_h5;
bool fs_file_is_hdf5(const char *path); /* starts with the HDF5 signature */
int fs_seq_h5_open(fs_seq_h5 **r, const char *path, int input_dim, int num_classes, int *B, int *P,
                   fs_error *err);
/* Sequences [b0, b0 + n) into examples [n][P][D] and labels [n][P]. */
int fs_seq_h5_read(fs_seq_h5 *r, int b0, int n, float *examples, int *labels, fs_error *err);
/* An optional dataset `name` of the same file (rank 1..3, integers or floats; `want`,
 * such as "[B] integers", goes into errors), read whole as float64: 1 when the file has
 * no such dataset, else 0 with its dims and finite values (free() them), -1 on error. */
int fs_seq_h5_read_extra(fs_seq_h5 *r, const char *name, int rank, const char *want, int *dims, double **values,
                         fs_error *err);
void fs_seq_h5_close(fs_seq_h5 *r);

/* Copy sequences [0, nseq) of examples/labels into the arena's input leaves at b0. */
void fs_acts_set_inputs(fs_acts *a, const float *examples, const int *labels, int b0, int nseq);

#endif
