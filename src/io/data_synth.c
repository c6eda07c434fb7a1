/* Synthetic Gaussian-cluster datasets and the HDF5 writer (docs/sampling.md). */
#include "fewshot/data.h"

#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>

#include "base/fileio.h"
#include "base/rng.h"

int fs_dataset_synth(fs_dataset *d, int num_classes, int num_exemplars, int dim, double eps,
                     uint64_t seed, fs_error *err)
{
    *d = (fs_dataset){0};
    if (num_classes < 1 || num_exemplars < 1 || dim < 1)
        return fs_fail(err, "synthetic dataset: classes, exemplars and dim must be >= 1 (got %d, %d, %d)",
                       num_classes, num_exemplars, dim);
    if (!(eps >= 0) || !isfinite(eps))
        return fs_fail(err, "synthetic dataset: eps must be finite and >= 0 (got %g)", eps);
    size_t bytes;
    if (fs_size_mul(&bytes, SIZE_MAX, FS_DIMS(num_classes, num_exemplars, dim, sizeof(float))))
        return fs_fail(err, "synthetic dataset: %d x %d x %d floats overflow the address space", num_classes,
                       num_exemplars, dim);
    if (!(d->feat = fs_alloc(bytes)))
        return fs_fail_alloc(err, "synthetic dataset", bytes);
    d->num_classes = num_classes, d->num_exemplars = num_exemplars, d->dim = dim;

    const double sd = 1.0 / sqrt((double)dim), norm = 1.0 / sqrt(1.0 + eps * eps);
    /* One RNG stream per class: mu_k first, then eta for exemplars 0..E-1. mu is
     * parked in the class's last row, which is overwritten last, element by element. */
#pragma omp parallel for schedule(static)
    for (int k = 0; k < num_classes; k++) {
        fs_rng_stream s;
        fs_rng_stream_init(&s, seed, (uint64_t)k);
        float *cls = d->feat + (size_t)k * num_exemplars * dim;
        float *mu = cls + (size_t)(num_exemplars - 1) * dim;
        for (int j = 0; j < dim; j++)
            mu[j] = (float)(sd * fs_rng_next_normal(&s));
        for (int e = 0; e < num_exemplars; e++)
            for (int j = 0; j < dim; j++)
                cls[(size_t)e * dim + j] = (float)((mu[j] + eps * sd * fs_rng_next_normal(&s)) * norm);
    }
    return 0;
}

int fs_dataset_save_h5(const fs_dataset *d, const char *file, const char *path, fs_error *err)
{
    if (!path || !*path)
        path = FS_DEFAULT_DATA_PATH;
    fs_outfile out;
    if (fs_outfile_begin(&out, file, err))
        return -1;
    const char *tmp = out.tmp;
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    hid_t f = -1, lcpl = -1, space = -1, dset = -1;
    int rc = -1;
    const hsize_t dims[3] = {(hsize_t)d->num_classes, (hsize_t)d->num_exemplars, (hsize_t)d->dim};
    if ((f = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT)) < 0)
        fs_fail(err, "%s: cannot create the temporary HDF5 file '%s'", file, tmp);
    else if ((lcpl = H5Pcreate(H5P_LINK_CREATE)) < 0 || H5Pset_create_intermediate_group(lcpl, 1) < 0 ||
             (space = H5Screate_simple(3, dims, NULL)) < 0)
        fs_fail(err, "%s: HDF5 setup failed", file);
    else if ((dset = H5Dcreate2(f, path, H5T_IEEE_F32LE, space, lcpl, H5P_DEFAULT, H5P_DEFAULT)) < 0)
        fs_fail(err, "%s: cannot create dataset '%s'", file, path);
    else if (H5Dwrite(dset, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, d->feat) < 0)
        fs_fail(err, "%s: writing dataset '%s' failed", file, path);
    else
        rc = 0;
    if (dset >= 0) H5Dclose(dset);
    if (space >= 0) H5Sclose(space);
    if (lcpl >= 0) H5Pclose(lcpl);
    if (f >= 0 && H5Fclose(f) < 0 && rc == 0)
        rc = fs_fail(err, "%s: closing the HDF5 file failed", file);
    if (rc != 0) {
        fs_outfile_abort(&out);
        return -1;
    }
    return fs_outfile_commit(&out, err);
}
