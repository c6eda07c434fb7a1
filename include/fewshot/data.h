/* Feature datasets (docs/formats.md): a float32 array [classes][exemplars][dim], from an
 * HDF5 file, the one-hot identity, or Omniglot-shaped synthetic Gaussian clusters. */
#ifndef FEWSHOT_DATA_H
#define FEWSHOT_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "fewshot/config.h"
#include "fewshot/error.h"

#define FS_DEFAULT_DATA_PATH "resnet18/224/feat"

typedef struct {
    int num_classes;   /* K */
    int num_exemplars; /* E */
    int dim;           /* D */
    float *feat;       /* [K][E][D], owned */
} fs_dataset;

static inline const float *fs_dataset_row(const fs_dataset *d, int cls, int ex)
{
    return d->feat + ((size_t)cls * d->num_exemplars + ex) * d->dim;
}

/* Read a rank-3 float dataset at `path` (NULL or "" = FS_DEFAULT_DATA_PATH). float64
 * is converted to float32; any other type, a wrong rank, an empty dimension or a
 * non-finite value is an error naming the file and path. */
int fs_dataset_load_h5(fs_dataset *d, const char *file, const char *path, fs_error *err);
/* K classes, one exemplar each, dim K: the identity (data type "onehot"). */
int fs_dataset_onehot(fs_dataset *d, int num_classes, fs_error *err);
/* The dataset a data config names: type "file" reads data.file at data.path; type
 * "onehot" builds onehot_classes classes (0 = sum of class_split). */
int fs_dataset_load(fs_dataset *d, const fs_data_config *cfg, fs_error *err);
void fs_dataset_free(fs_dataset *d);

/* Synthetic clusters (docs/formats.md): x[k][e] = (mu_k + eps eta_ke) / sqrt(1 + eps^2),
 * mu, eta ~ N(0, I/dim); deterministic in `seed`. */
int fs_dataset_synth(fs_dataset *d, int num_classes, int num_exemplars, int dim, double eps,
                     uint64_t seed, fs_error *err);
/* Write as float32 at `path` (groups created), atomically: a temporary file beside
 * `file` renamed over it once complete. */
int fs_dataset_save_h5(const fs_dataset *d, const char *file, const char *path, fs_error *err);

#endif
