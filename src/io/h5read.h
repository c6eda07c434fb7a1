/* Reading one float array from an untrusted HDF5 file (feature datasets, query files). */
#ifndef FEWSHOT_IO_H5READ_H
#define FEWSHOT_IO_H5READ_H

#include <stddef.h>
#include <stdint.h>

#include "fewshot/error.h"

enum { FS_H5_MAX_RANK = 8 };

typedef struct {
    int rank;
    int dims[FS_H5_MAX_RANK];
    size_t count;  /* product of dims */
    float *data;   /* count float32 values, all finite (free() it) */
} fs_h5_floats;

/* Dataset `dset` of `file`: a float32/float64 array of rank `rank` (`shape_hint` such as
 * "[Q, D]" goes into the error), every dim in 1..INT_MAX, every value finite, read as
 * float32. The file's signature is checked first; libhdf5 itself then runs in a forked
 * child (fs_run_isolated), so a damaged file that crashes the library is an error naming
 * the file, never a crash of the caller. */
int fs_h5_read_floats(const char *file, const char *dset, int rank, const char *shape_hint, fs_h5_floats *out,
                      fs_error *err);

#endif
