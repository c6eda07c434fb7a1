/* Feature datasets: HDF5 reading, the one-hot identity (docs/sampling.md). */
#include "fewshot/data.h"

#include <hdf5.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void fs_dataset_free(fs_dataset *d)
{
    if (d) {
        free(d->feat);
        *d = (fs_dataset){0};
    }
}

static int alloc_feat(fs_dataset *d, int k, int e, int dim, const char *what, fs_error *err)
{
    size_t n = (size_t)k * (size_t)e * (size_t)dim;
    if (n == 0 || n > SIZE_MAX / sizeof(float) / 2)
        return fs_fail(err, "%s: cannot hold a %d x %d x %d dataset", what, k, e, dim);
    d->feat = malloc(n * sizeof(float));
    if (!d->feat)
        return fs_fail(err, "%s: out of memory for a %d x %d x %d dataset", what, k, e, dim);
    d->num_classes = k, d->num_exemplars = e, d->dim = dim;
    return 0;
}

int fs_dataset_onehot(fs_dataset *d, int num_classes, fs_error *err)
{
    *d = (fs_dataset){0};
    if (num_classes < 1)
        return fs_fail(err, "onehot dataset: expected at least 1 class, got %d", num_classes);
    if (alloc_feat(d, num_classes, 1, num_classes, "onehot dataset", err))
        return -1;
    memset(d->feat, 0, (size_t)num_classes * num_classes * sizeof(float));
    for (int k = 0; k < num_classes; k++)
        d->feat[(size_t)k * num_classes + k] = 1.0f;
    return 0;
}

/* Every proper prefix of `path` and `path` itself must be an existing link. */
static int check_path(hid_t f, const char *file, const char *path, fs_error *err)
{
    char prefix[1024];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof prefix)
        return fs_fail(err, "%s: invalid dataset path '%s'", file, path);
    for (size_t i = 1; i <= n; i++) {
        if (i < n && path[i] != '/')
            continue;
        memcpy(prefix, path, i);
        prefix[i] = '\0';
        if (H5Lexists(f, prefix, H5P_DEFAULT) <= 0)
            return fs_fail(err, "%s: no '%s' in the file (looking for dataset '%s')", file, prefix, path);
    }
    return 0;
}

static const char *type_class_name(H5T_class_t c)
{
    switch (c) {
    case H5T_INTEGER: return "integer";
    case H5T_FLOAT: return "float";
    case H5T_STRING: return "string";
    case H5T_COMPOUND: return "compound";
    case H5T_ENUM: return "enum";
    case H5T_ARRAY: return "array";
    default: return "non-numeric";
    }
}

/* Opened HDF5 handles; close_all releases whatever is open. */
typedef struct {
    hid_t file, dset, space, type;
} h5_handles;

static void close_all(h5_handles *h)
{
    if (h->type >= 0) H5Tclose(h->type);
    if (h->space >= 0) H5Sclose(h->space);
    if (h->dset >= 0) H5Dclose(h->dset);
    if (h->file >= 0) H5Fclose(h->file);
}

static int read_feat(fs_dataset *d, h5_handles *h, const char *file, const char *path, fs_error *err)
{
    H5T_class_t cls = H5Tget_class(h->type);
    size_t size = H5Tget_size(h->type);
    if (cls != H5T_FLOAT || (size != 4 && size != 8))
        return fs_fail(err, "%s: dataset '%s': expected float32 (or float64) values, found %s of %zu bytes",
                       file, path, type_class_name(cls), size);
    int rank = H5Sget_simple_extent_ndims(h->space);
    if (rank != 3)
        return fs_fail(err, "%s: dataset '%s': expected rank 3 [classes, exemplars, dim], found rank %d",
                       file, path, rank);
    hsize_t dims[3];
    H5Sget_simple_extent_dims(h->space, dims, NULL);
    for (int i = 0; i < 3; i++)
        if (dims[i] < 1 || dims[i] > INT_MAX)
            return fs_fail(err, "%s: dataset '%s': dimension %d has size %llu (expected 1..%d)", file,
                           path, i, (unsigned long long)dims[i], INT_MAX);
    if (alloc_feat(d, (int)dims[0], (int)dims[1], (int)dims[2], file, err))
        return -1;
    if (H5Dread(h->dset, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, d->feat) < 0)
        return fs_fail(err, "%s: dataset '%s': reading the %llu x %llu x %llu values failed (file damaged or truncated?)",
                       file, path, (unsigned long long)dims[0], (unsigned long long)dims[1],
                       (unsigned long long)dims[2]);
    size_t n = (size_t)d->num_classes * d->num_exemplars * d->dim;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(d->feat[i])) {
            size_t row = i / d->dim;
            return fs_fail(err, "%s: dataset '%s': non-finite value %g at [%zu][%zu][%zu] (expected finite features)",
                           file, path, d->feat[i], row / d->num_exemplars, row % d->num_exemplars, i % d->dim);
        }
    }
    return 0;
}

int fs_dataset_load_h5(fs_dataset *d, const char *file, const char *path, fs_error *err)
{
    *d = (fs_dataset){0};
    if (!path || !*path)
        path = FS_DEFAULT_DATA_PATH;
    if (!file || !*file)
        return fs_fail(err, "data.file: no HDF5 file given");
    if (access(file, R_OK) != 0)
        return fs_fail(err, "%s: cannot read the HDF5 data file (missing or unreadable)", file);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL); /* we report our own messages */
    h5_handles h = {-1, -1, -1, -1};
    int rc = -1;
    h.file = H5Fopen(file, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (h.file < 0)
        fs_fail(err, "%s: not a readable HDF5 file (damaged or truncated?)", file);
    else if (check_path(h.file, file, path, err) == 0) {
        h.dset = H5Dopen2(h.file, path, H5P_DEFAULT);
        if (h.dset < 0)
            fs_fail(err, "%s: '%s' is not a dataset", file, path);
        else if ((h.space = H5Dget_space(h.dset)) < 0 || (h.type = H5Dget_type(h.dset)) < 0)
            fs_fail(err, "%s: dataset '%s': cannot read its shape or type", file, path);
        else
            rc = read_feat(d, &h, file, path, err);
    }
    close_all(&h);
    if (rc != 0)
        fs_dataset_free(d);
    return rc;
}

int fs_dataset_load(fs_dataset *d, const fs_data_config *cfg, fs_error *err)
{
    *d = (fs_dataset){0};
    if (cfg->type == FS_DATA_ONEHOT) {
        int k = cfg->onehot_classes;
        if (k == 0)
            k = cfg->class_split[0] + cfg->class_split[1] + cfg->class_split[2];
        if (k < 1)
            return fs_fail(err, "data.onehot_classes: expected >= 1 classes (or a class_split with a positive sum), got %d", k);
        return fs_dataset_onehot(d, k, err);
    }
    return fs_dataset_load_h5(d, cfg->file, cfg->path, err);
}
