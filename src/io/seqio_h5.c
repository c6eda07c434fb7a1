/* Sequence inputs from HDF5: "examples" [B][P][D] (float) and "labels" [B][P] (integer or
 * integral float), read a chunk of sequences at a time so a large file is never loaded whole. */
#include <hdf5.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fewshot/seqio.h"

struct fs_seq_h5 {
    char *path;
    hid_t file, ex, lab;
    int B, P, D, num_classes;
    double *lab_buf;
};

bool fs_file_is_hdf5(const char *path)
{
    unsigned char sig[8] = {0};
    FILE *f = fopen(path, "rb");
    if (!f)
        return false;
    size_t n = fread(sig, 1, sizeof sig, f);
    fclose(f);
    return n == 8 && !memcmp(sig, "\211HDF\r\n\032\n", 8);
}

void fs_seq_h5_close(fs_seq_h5 *r)
{
    if (!r)
        return;
    if (r->lab >= 0) H5Dclose(r->lab);
    if (r->ex >= 0) H5Dclose(r->ex);
    if (r->file >= 0) H5Fclose(r->file);
    free(r->lab_buf);
    free(r->path);
    free(r);
}

/* Open dataset `name` of rank `rank`: floats, or integers too when `ints` (`want` names
 * the expected shape and type in errors). */
static int open_dset(fs_seq_h5 *r, const char *name, int rank, bool ints, const char *want, hsize_t *dims,
                     hid_t *out, fs_error *err)
{
    if (H5Lexists(r->file, name, H5P_DEFAULT) <= 0)
        return fs_fail(err, "%s: no dataset \"%s\" (expected %s)", r->path, name, want);
    hid_t d = H5Dopen2(r->file, name, H5P_DEFAULT);
    if (d < 0)
        return fs_fail(err, "%s: \"%s\" is not a dataset (expected %s)", r->path, name, want);
    *out = d;
    hid_t space = H5Dget_space(d), type = H5Dget_type(d);
    H5T_class_t cls = type >= 0 ? H5Tget_class(type) : H5T_NO_CLASS;
    int nd = space >= 0 ? H5Sget_simple_extent_ndims(space) : -1;
    if (nd == rank)
        H5Sget_simple_extent_dims(space, dims, NULL);
    if (type >= 0) H5Tclose(type);
    if (space >= 0) H5Sclose(space);
    if (!(cls == H5T_FLOAT || (ints && cls == H5T_INTEGER)))
        return fs_fail(err, "%s: dataset \"%s\": expected %s, found another type", r->path, name, want);
    if (nd != rank)
        return fs_fail(err, "%s: dataset \"%s\": expected rank %d (%s), found rank %d", r->path, name, rank, want, nd);
    for (int i = 0; i < rank; i++)
        if (dims[i] < 1 || dims[i] > INT_MAX / 4)
            return fs_fail(err, "%s: dataset \"%s\": dimension %d has size %llu (expected %s, every size >= 1)",
                           r->path, name, i, (unsigned long long)dims[i], want);
    return 0;
}

int fs_seq_h5_open(fs_seq_h5 **out, const char *path, int input_dim, int num_classes, int *B, int *P,
                   fs_error *err)
{
    *out = NULL;
    fs_seq_h5 *r = calloc(1, sizeof *r);
    if (!r || !(r->path = strdup(path))) {
        free(r);
        return fs_fail(err, "out of memory");
    }
    r->file = r->ex = r->lab = -1;
    r->num_classes = num_classes;
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    hsize_t ed[3], ld[2];
    int rc = 0;
    if ((r->file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT)) < 0)
        rc = fs_fail(err, "%s: not a readable HDF5 file", path);
    else if (open_dset(r, "examples", 3, false, "[B][P][D] floats", ed, &r->ex, err) ||
             open_dset(r, "labels", 2, true, "[B][P] integers", ld, &r->lab, err))
        rc = -1;
    else if (ed[2] != (hsize_t)input_dim)
        rc = fs_fail(err, "%s: examples: each example must have input_dim = %d numbers, got %llu", path, input_dim,
                     (unsigned long long)ed[2]);
    else if (ld[0] != ed[0] || ld[1] != ed[1])
        rc = fs_fail(err, "%s: labels: shape [%llu][%llu] does not match examples [%llu][%llu][%llu]", path,
                     (unsigned long long)ld[0], (unsigned long long)ld[1], (unsigned long long)ed[0],
                     (unsigned long long)ed[1], (unsigned long long)ed[2]);
    if (rc) {
        fs_seq_h5_close(r);
        return -1;
    }
    r->B = *B = (int)ed[0];
    r->P = *P = (int)ed[1];
    r->D = input_dim;
    *out = r;
    return 0;
}

static int read_slab(hid_t d, int rank, const hsize_t *start, const hsize_t *count, hid_t mem_type, void *buf)
{
    hid_t fs = H5Dget_space(d), ms = H5Screate_simple(rank, count, NULL);
    int ok = fs >= 0 && ms >= 0 && H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL) >= 0 &&
             H5Dread(d, mem_type, ms, fs, H5P_DEFAULT, buf) >= 0;
    if (ms >= 0) H5Sclose(ms);
    if (fs >= 0) H5Sclose(fs);
    return ok ? 0 : -1;
}

int fs_seq_h5_read_extra(fs_seq_h5 *r, const char *name, int rank, const char *want, int *dims, double **values,
                         fs_error *err)
{
    *values = NULL;
    if (rank < 1 || rank > 3 || H5Lexists(r->file, name, H5P_DEFAULT) <= 0)
        return 1;
    hsize_t hd[3], start[3] = {0}, count = 1;
    hid_t d = -1;
    if (open_dset(r, name, rank, true, want, hd, &d, err)) {
        if (d >= 0)
            H5Dclose(d);
        return -1;
    }
    for (int i = 0; i < rank; i++) {
        dims[i] = (int)hd[i];
        count *= hd[i];
    }
    double *x = count <= SIZE_MAX / sizeof *x ? malloc(sizeof *x * count) : NULL;
    int rc = 0;
    if (!x)
        rc = fs_fail(err, "%s: dataset \"%s\": out of memory for %llu values", r->path, name,
                     (unsigned long long)count);
    else if (read_slab(d, rank, start, hd, H5T_NATIVE_DOUBLE, x))
        rc = fs_fail(err, "%s: dataset \"%s\": reading it failed (damaged file?)", r->path, name);
    for (hsize_t i = 0; rc == 0 && i < count; i++)
        if (!isfinite(x[i]))
            rc = fs_fail(err, "%s: dataset \"%s\": element %llu is not a finite number", r->path, name,
                         (unsigned long long)i);
    H5Dclose(d);
    if (rc)
        free(x);
    else
        *values = x;
    return rc;
}

int fs_seq_h5_read(fs_seq_h5 *r, int b0, int n, float *examples, int *labels, fs_error *err)
{
    if (b0 < 0 || n < 1 || b0 + n > r->B)
        return fs_fail(err, "%s: sequences %d..%d are out of range (B = %d)", r->path, b0, b0 + n - 1, r->B);
    hsize_t s3[3] = {(hsize_t)b0, 0, 0}, c3[3] = {(hsize_t)n, (hsize_t)r->P, (hsize_t)r->D};
    if (read_slab(r->ex, 3, s3, c3, H5T_NATIVE_FLOAT, examples))
        return fs_fail(err, "%s: examples: reading sequences %d..%d failed (damaged file?)", r->path, b0, b0 + n - 1);
    size_t ne = (size_t)n * r->P * r->D, nl = (size_t)n * r->P;
    for (size_t i = 0; i < ne; i++)
        if (!isfinite(examples[i]))
            return fs_fail(err, "%s: examples: element %zu of sequence %zu, pair %zu is not a finite float", r->path,
                           i % r->D, b0 + i / ((size_t)r->P * r->D), (i / r->D) % r->P);
    double *lab = realloc(r->lab_buf, nl * sizeof *lab);
    if (!lab)
        return fs_fail(err, "out of memory");
    r->lab_buf = lab;
    if (read_slab(r->lab, 2, s3, c3, H5T_NATIVE_DOUBLE, lab))
        return fs_fail(err, "%s: labels: reading sequences %d..%d failed (damaged file?)", r->path, b0, b0 + n - 1);
    for (size_t i = 0; i < nl; i++) {
        if (lab[i] != floor(lab[i]) || lab[i] < 0 || lab[i] >= r->num_classes)
            return fs_fail(err, "%s: labels: label %g (sequence %zu, pair %zu) must be an integer in [0, %d)", r->path,
                           lab[i], b0 + i / r->P, i % r->P, r->num_classes);
        labels[i] = (int)lab[i];
    }
    return 0;
}
