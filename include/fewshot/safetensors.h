/* Safetensors reader/writer (docs/formats.md), F32 only.
 *
 * Format: u64 little-endian header length N, N bytes of JSON header (padded with
 * spaces), then the raw little-endian data section. The header maps tensor names to
 * {"dtype", "shape", "data_offsets": [begin, end]} (offsets relative to the data
 * section) plus an optional "__metadata__" object of string values.
 *
 * Reading validates everything (header, dtypes, shapes, offsets, coverage of the
 * data section, finite values) and fails with a message naming the file, the tensor
 * and the field. Writing produces the same layout as the Python library: tensors
 * sorted by name, contiguous offsets, header padded to 8 bytes, written atomically. */
#ifndef FEWSHOT_SAFETENSORS_H
#define FEWSHOT_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "fewshot/error.h"

enum { FS_ST_MAX_NAME = 160, FS_ST_MAX_DIMS = 8 };

typedef struct {
    char name[FS_ST_MAX_NAME]; /* NUL-terminated */
    int ndim;                  /* 0 (scalar) .. FS_ST_MAX_DIMS */
    int64_t shape[FS_ST_MAX_DIMS];
    size_t numel;              /* product of shape (1 for a scalar) */
    float *data;               /* numel floats; from fs_st_read: 64-byte aligned, never NULL */
} fs_st_tensor;

typedef struct {
    fs_st_tensor *tensors;     /* sorted by name (strcmp order) */
    int count;
    char **meta_keys;          /* "__metadata__" entries, in file order */
    char **meta_values;
    int meta_count;
} fs_st_file;

/* Read and validate `path`. On failure `out` is left empty (safe to fs_st_free). */
int fs_st_read(const char *path, fs_st_file *out, fs_error *err);
/* Free everything `f` owns and zero it; safe on a zeroed or already-freed struct. */
void fs_st_free(fs_st_file *f);

/* Tensor named `name`, or NULL. */
const fs_st_tensor *fs_st_find(const fs_st_file *f, const char *name);
/* Tensor named `name` with exactly this shape; otherwise NULL and an error naming
 * `what` (e.g. the file name), the tensor and the shapes found/expected. */
const fs_st_tensor *fs_st_get(const fs_st_file *f, const char *what, const char *name, int ndim,
                              const int64_t *shape, fs_error *err);
/* Metadata value for `key`, or NULL if absent. */
const char *fs_st_meta(const fs_st_file *f, const char *key);

/* Write `count` tensors and `meta_count` metadata pairs to `path` atomically (via
 * PATH.tmp.<pid>, fsync, rename). Names must be unique and non-empty, numel must
 * match the shape and all values must be finite. meta_* may be NULL if meta_count
 * is 0; the "__metadata__" entry is omitted when there is no metadata. */
int fs_st_write(const char *path, const fs_st_tensor *tensors, int count,
                const char *const *meta_keys, const char *const *meta_values, int meta_count,
                fs_error *err);

#endif
