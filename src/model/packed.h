/* Packed weights (internal): the forward's weight matrices transposed for the matrix
 * kernel, shared by the training step, the cache forward and the query-only path. */
#ifndef FEWSHOT_MODEL_PACKED_H
#define FEWSHOT_MODEL_PACKED_H

#include "fewshot/forward.h"

/* The weight matrices of the forward's products transposed to [in][out] (the layout
 * the matrix kernel streams), in one buffer. Bound to a model's parameter memory at
 * init; refresh after every parameter change with fs_packed_update, which splits the
 * work into `nparts` (one call per thread, then a barrier before the forward). */
typedef struct {
    const float *src; /* [rows][cols] in the parameters */
    int rows, cols;
    size_t offset;    /* of the [cols][rows] transpose in buf */
} fs_packed_mat;

typedef struct {
    float *buf;
    int count;
    fs_packed_mat mat[2 + 4 * FS_MAX_DEPTH];
    const float *example_wt, *label_wt; /* [D][d], [C][d] */
    const float *qkv_wt[FS_MAX_DEPTH], *proj_wt[FS_MAX_DEPTH], *fc1_wt[FS_MAX_DEPTH], *fc2_wt[FS_MAX_DEPTH];
} fs_packed;

int fs_packed_init(fs_packed *pk, const fs_model *m); /* -1 when out of memory */
void fs_packed_free(fs_packed *pk);
void fs_packed_update(fs_packed *pk, int part, int nparts);

/* fs_forward_range with packed weights (NULL = unpacked kernels); same results up to rounding. */
void fs_forward_range_packed(const fs_model *m, const fs_packed *pk, fs_acts *a, const fs_clamp_set *clamps, int b0,
                             int b1);

/* fs_forward with packed weights held by the caller (refreshed here; used, as by
 * fs_forward, from 8 sequences on, so both give identical results; NULL = unpacked). */
void fs_forward_packed(const fs_model *m, fs_packed *pk, fs_acts *a, const fs_clamp_set *clamps, int nseq);

#endif
