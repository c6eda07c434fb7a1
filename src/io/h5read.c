/* fs_h5_read_floats: signature check, then libhdf5 in an isolated child (see h5read.h). */
#include "io/h5read.h"

#include <hdf5.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/fileio.h"
#include "base/isolate.h"

typedef struct {
    const char *file, *dset, *hint;
    int rank;
} h5_job;

/* Header of the reply the child sends: rank and dims, then the float32 values. */
typedef struct {
    int32_t rank;
    int32_t dims[FS_H5_MAX_RANK];
} h5_head;

/* HDF5's superblock signature sits at byte 0, 512, 1024, 2048, ... (after a user block). */
static int has_signature(const char *file, fs_error *err)
{
    FILE *f = fopen(file, "rb");
    if (!f)
        return fs_fail(err, "%s: cannot read the HDF5 file (missing or unreadable)", file);
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        return fs_fail(err, "%s: not a readable HDF5 file (not a regular file)", file);
    }
    int found = 0;
    for (long at = 0; !found && at + 8 <= st.st_size; at = at ? at * 2 : 512) {
        unsigned char sig[8];
        found = fseek(f, at, SEEK_SET) == 0 && fread(sig, 1, 8, f) == 8 && !memcmp(sig, "\211HDF\r\n\032\n", 8);
    }
    fclose(f);
    return found ? 0 : fs_fail(err, "%s: not a readable HDF5 file (no HDF5 signature; damaged or another format)", file);
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

/* Every proper prefix of the path and the path itself must be a link (H5Lexists needs the parents). */
static int check_path(hid_t f, const h5_job *j, fs_error *err)
{
    size_t n = strlen(j->dset);
    char *prefix = malloc(n + 1);
    if (!prefix)
        return fs_fail(err, "%s: out of memory", j->file);
    int rc = 0;
    for (size_t i = 1; rc == 0 && i <= n; i++) {
        if (i < n && j->dset[i] != '/')
            continue;
        memcpy(prefix, j->dset, i);
        prefix[i] = '\0';
        if (H5Lexists(f, prefix, H5P_DEFAULT) <= 0)
            rc = fs_fail(err, "%s: no dataset '%s' in the file (no '%s')", j->file, j->dset, prefix);
    }
    free(prefix);
    return rc;
}

/* The element index i of a row-major array with these dims, as "[a][b][c]". */
static void index_text(char *buf, size_t n, size_t i, int rank, const int32_t *dims)
{
    size_t idx[FS_H5_MAX_RANK];
    for (int r = rank - 1; r >= 0; r--) {
        idx[r] = i % (size_t)dims[r];
        i /= (size_t)dims[r];
    }
    buf[0] = 0;
    for (int r = 0; r < rank; r++)
        snprintf(buf + strlen(buf), n - strlen(buf), "[%zu]", idx[r]);
}

static int read_checked(hid_t dset, hid_t space, hid_t type, const h5_job *j, void **out, size_t *len, fs_error *err)
{
    H5T_class_t cls = H5Tget_class(type);
    size_t size = H5Tget_size(type);
    if (cls != H5T_FLOAT || (size != 4 && size != 8))
        return fs_fail(err, "%s: dataset '%s': expected float32 (or float64) values, found %s of %zu bytes", j->file,
                       j->dset, type_class_name(cls), size);
    int rank = H5Sget_simple_extent_ndims(space);
    hsize_t dims[H5S_MAX_RANK];
    if (rank < 0 || rank > H5S_MAX_RANK || H5Sget_simple_extent_dims(space, dims, NULL) < 0)
        return fs_fail(err, "%s: dataset '%s': cannot read its shape", j->file, j->dset);
    if (rank != j->rank) {
        char shape[256] = "";
        for (int i = 0; i < rank && strlen(shape) < 200; i++)
            snprintf(shape + strlen(shape), sizeof shape - strlen(shape), "%s%llu", i ? ", " : "",
                     (unsigned long long)dims[i]);
        return fs_fail(err, "%s: dataset '%s': expected rank %d %s, found rank %d [%s]", j->file, j->dset, j->rank,
                       j->hint, rank, shape);
    }
    h5_head h = {.rank = rank};
    size_t f[FS_H5_MAX_RANK], count, bytes;
    for (int i = 0; i < rank; i++) {
        if (dims[i] < 1 || dims[i] > INT_MAX)
            return fs_fail(err, "%s: dataset '%s': dimension %d has size %llu (expected 1..%d)", j->file, j->dset, i,
                           (unsigned long long)dims[i], INT_MAX);
        h.dims[i] = (int32_t)dims[i];
        f[i] = (size_t)dims[i];
    }
    f[rank] = sizeof(float);
    if (fs_size_mul(&count, SIZE_MAX / sizeof(float), rank, f) ||
        fs_size_mul(&bytes, fs_memory_limit() - sizeof h, rank + 1, f))
        return fs_fail_alloc(err, j->file, SIZE_MAX);
    char *buf = malloc(sizeof h + bytes);
    if (!buf)
        return fs_fail_alloc(err, j->file, bytes);
    float *x = (float *)(buf + sizeof h);
    memcpy(buf, &h, sizeof h);
    if (H5Dread(dset, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, x) < 0) {
        free(buf);
        return fs_fail(err, "%s: dataset '%s': reading the %zu values failed (file damaged or truncated?)", j->file,
                       j->dset, count);
    }
    for (size_t i = 0; i < count; i++)
        if (!isfinite(x[i])) {
            char at[160];
            index_text(at, sizeof at, i, rank, h.dims);
            fs_fail(err, "%s: dataset '%s': non-finite value %g at %s (expected finite features)", j->file, j->dset,
                    x[i], at);
            free(buf);
            return -1;
        }
    *out = buf;
    *len = sizeof h + bytes;
    return 0;
}

/* Runs in the child process. */
static int read_in_child(void *arg, void **out, size_t *len, fs_error *err)
{
    const h5_job *j = arg;
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL); /* we report our own messages */
    hid_t file = -1, dset = -1, space = -1, type = -1;
    int rc = -1;
    if ((file = H5Fopen(j->file, H5F_ACC_RDONLY, H5P_DEFAULT)) < 0)
        fs_fail(err, "%s: not a readable HDF5 file (damaged or truncated?)", j->file);
    else if (check_path(file, j, err) == 0) {
        if ((dset = H5Dopen2(file, j->dset, H5P_DEFAULT)) < 0)
            fs_fail(err, "%s: '%s' is not a dataset", j->file, j->dset);
        else if ((space = H5Dget_space(dset)) < 0 || (type = H5Dget_type(dset)) < 0)
            fs_fail(err, "%s: dataset '%s': cannot read its shape or type", j->file, j->dset);
        else
            rc = read_checked(dset, space, type, j, out, len, err);
    }
    if (type >= 0) H5Tclose(type);
    if (space >= 0) H5Sclose(space);
    if (dset >= 0) H5Dclose(dset);
    if (file >= 0) H5Fclose(file);
    return rc;
}

int fs_h5_read_floats(const char *file, const char *dset, int rank, const char *shape_hint, fs_h5_floats *out,
                      fs_error *err)
{
    memset(out, 0, sizeof *out);
    if (rank < 1 || rank > FS_H5_MAX_RANK || !dset || !*dset)
        return fs_fail(err, "%s: invalid dataset request", file);
    if (has_signature(file, err))
        return -1;
    h5_job job = {file, dset, shape_hint, rank};
    void *reply;
    size_t len;
    if (fs_run_isolated(read_in_child, &job, file, &reply, &len, err))
        return -1;
    h5_head h;
    if (len < sizeof h) {
        free(reply);
        return fs_fail(err, "%s: short answer from the HDF5 reader", file);
    }
    memcpy(&h, reply, sizeof h);
    size_t f[FS_H5_MAX_RANK], count = 0;
    for (int i = 0; i < rank; i++)
        f[i] = h.dims[i] > 0 ? (size_t)h.dims[i] : 0;
    if (h.rank != rank || fs_size_mul(&count, SIZE_MAX / sizeof(float), rank, f) ||
        len != sizeof h + count * sizeof(float)) {
        free(reply);
        return fs_fail(err, "%s: inconsistent answer from the HDF5 reader", file);
    }
    memmove(reply, (char *)reply + sizeof h, count * sizeof(float));
    out->data = reply;
    out->rank = rank;
    memcpy(out->dims, h.dims, sizeof h.dims);
    out->count = count;
    return 0;
}
