/* Feature datasets: HDF5 reading, the one-hot identity (docs/sampling.md). */
#include "fewshot/data.h"

#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/fileio.h"
#include "io/h5read.h"

void fs_dataset_free(fs_dataset *d)
{
    if (d) {
        free(d->feat);
        *d = (fs_dataset){0};
    }
}

static int alloc_feat(fs_dataset *d, int k, int e, int dim, const char *what, fs_error *err)
{
    size_t n;
    if (k < 1 || e < 1 || dim < 1 || fs_size_mul(&n, SIZE_MAX, FS_DIMS(k, e, dim, sizeof(float))))
        return fs_fail(err, "%s: cannot hold a %d x %d x %d dataset", what, k, e, dim);
    d->feat = fs_alloc(n);
    if (!d->feat)
        return fs_fail_alloc(err, what, n);
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
    for (int k = 0; k < num_classes; k++)
        d->feat[(size_t)k * num_classes + k] = 1.0f;
    return 0;
}

int fs_dataset_load_h5(fs_dataset *d, const char *file, const char *path, fs_error *err)
{
    *d = (fs_dataset){0};
    if (!path || !*path)
        path = FS_DEFAULT_DATA_PATH;
    if (!file || !*file)
        return fs_fail(err, "data.file: no HDF5 file given");
    fs_h5_floats x;
    if (fs_h5_read_floats(file, path, 3, "[classes, exemplars, dim]", &x, err))
        return -1;
    d->feat = x.data;
    d->num_classes = x.dims[0], d->num_exemplars = x.dims[1], d->dim = x.dims[2];
    return 0;
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
