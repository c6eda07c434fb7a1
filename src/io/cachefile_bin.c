/* Binary cache files: HDF5 (groups mirroring the tree, chunked float32 datasets) and
 * safetensors (data section written in place at each leaf's offset). Both go to a
 * temporary file beside the output and are renamed over it when complete. */
#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "io/cachefile_internal.h"
#include "io/st_header.h"

struct fs_cache_bin {
    fs_outfile out; /* written at out.tmp, committed by the close functions */
    /* h5 */
    hid_t file;
    hid_t *dset;
    /* safetensors */
    int fd;
    uint64_t data_start;
    uint64_t *off;
};

static int bin_alloc(fs_cache_writer *w, fs_error *err)
{
    w->bin = calloc(1, sizeof *w->bin);
    if (!w->bin)
        return fs_fail(err, "out of memory");
    if (fs_outfile_begin(&w->bin->out, w->path, err)) {
        free(w->bin);
        w->bin = NULL;
        return -1;
    }
    w->bin->file = -1;
    w->bin->fd = -1;
    return 0;
}

static void bin_free(fs_cache_writer *w)
{
    if (w->bin) {
        fs_outfile_abort(&w->bin->out); /* no-op once committed */
        free(w->bin->dset);
        free(w->bin->off);
        free(w->bin);
        w->bin = NULL;
    }
}

/* ---- HDF5 ---- */

static int h5_string_attr(hid_t obj, const char *name, const char *value)
{
    hid_t type = H5Tcopy(H5T_C_S1), space = H5Screate(H5S_SCALAR), attr = -1;
    int rc = -1;
    if (type >= 0 && space >= 0 && H5Tset_size(type, strlen(value) + 1) >= 0 &&
        (attr = H5Acreate2(obj, name, type, space, H5P_DEFAULT, H5P_DEFAULT)) >= 0 && H5Awrite(attr, type, value) >= 0)
        rc = 0;
    if (attr >= 0) H5Aclose(attr);
    if (space >= 0) H5Sclose(space);
    if (type >= 0) H5Tclose(type);
    return rc;
}

static int h5_int_attr(hid_t obj, const char *name, long long value)
{
    hid_t space = H5Screate(H5S_SCALAR), attr = -1;
    int rc = -1;
    if (space >= 0 && (attr = H5Acreate2(obj, name, H5T_STD_I64LE, space, H5P_DEFAULT, H5P_DEFAULT)) >= 0 &&
        H5Awrite(attr, H5T_NATIVE_LLONG, &value) >= 0)
        rc = 0;
    if (attr >= 0) H5Aclose(attr);
    if (space >= 0) H5Sclose(space);
    return rc;
}

static int h5_dataset(fs_cache_writer *w, int i, hid_t lcpl, fs_error *err)
{
    const fs_leaf *l = &w->leaf[i];
    hsize_t dims[5], chunk[5];
    int nd = l->ndim + 1;
    dims[0] = (hsize_t)w->B;
    for (int d = 0; d < l->ndim; d++)
        dims[d + 1] = chunk[d + 1] = (hsize_t)l->shape[d];
    size_t per_chunk = (256u << 10) / (l->numel * sizeof(float)); /* ~256 KB chunks along B */
    chunk[0] = per_chunk < 1 ? 1 : per_chunk > (size_t)w->B ? (hsize_t)w->B : per_chunk;
    char name[200];
    fs_cache_leaf_name(w, i, '/', name, sizeof name);
    hid_t space = H5Screate_simple(nd, dims, NULL), dcpl = H5Pcreate(H5P_DATASET_CREATE);
    int rc = 0;
    if (space < 0 || dcpl < 0 || H5Pset_chunk(dcpl, nd, chunk) < 0 ||
        (w->opts.compress && (H5Pset_shuffle(dcpl) < 0 || H5Pset_deflate(dcpl, (unsigned)w->opts.compress) < 0)))
        rc = fs_fail(err, "%s: HDF5 setup failed for dataset '%s'", w->path, name);
    else if ((w->bin->dset[i] = H5Dcreate2(w->bin->file, name, H5T_IEEE_F32LE, space, lcpl, dcpl, H5P_DEFAULT)) < 0)
        rc = fs_fail(err, "%s: cannot create dataset '%s'", w->path, name);
    if (dcpl >= 0) H5Pclose(dcpl);
    if (space >= 0) H5Sclose(space);
    return rc;
}

/* libhdf5 does not survive a failed write well (a file whose close failed crashes the
 * library's exit handler), so the room for the whole file is checked before writing: free
 * space in the directory and the process's file size limit, against the uncompressed size. */
static int h5_check_room(const fs_cache_writer *w, fs_error *err)
{
    uint64_t need = 1 << 16;
    for (int i = 0; i < w->nsel; i++)
        need += (uint64_t)w->B * w->leaf[i].numel * sizeof(float) + (8 << 10) +
                64 * ((uint64_t)w->B * w->leaf[i].numel * sizeof(float) / (256u << 10) + 1);
    char dir[4096];
    const char *slash = strrchr(w->path, '/');
    snprintf(dir, sizeof dir, "%.*s", slash ? (int)(slash - w->path + (slash == w->path)) : 1, slash ? w->path : ".");
    struct statvfs fsinfo;
    struct rlimit lim;
    if (statvfs(dir, &fsinfo) == 0 && (uint64_t)fsinfo.f_bavail * fsinfo.f_frsize < need)
        return fs_fail(err, "%s: not enough disk space: the file needs up to %.1f MB, %s has %.1f MB free; no file written",
                       w->path, need / 1e6, dir, (double)fsinfo.f_bavail * fsinfo.f_frsize / 1e6);
    if (getrlimit(RLIMIT_FSIZE, &lim) == 0 && lim.rlim_cur != RLIM_INFINITY && (uint64_t)lim.rlim_cur < need)
        return fs_fail(err, "%s: the file needs up to %.1f MB, more than this process's file size limit (%.1f MB; "
                            "file too large); no file written",
                       w->path, need / 1e6, (double)lim.rlim_cur / 1e6);
    return 0;
}

int fs_cache_h5_open(fs_cache_writer *w, fs_error *err)
{
    if (h5_check_room(w, err) || bin_alloc(w, err))
        return -1;
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL); /* errors are reported here, by name */
    fs_cache_bin *b = w->bin;
    b->dset = malloc(sizeof *b->dset * (size_t)(w->nsel ? w->nsel : 1));
    for (int i = 0; b->dset && i < w->nsel; i++)
        b->dset[i] = -1;
    hid_t lcpl = -1, fapl = -1;
    int rc = 0;
    if (!b->dset)
        rc = fs_fail(err, "out of memory");
    else if ((fapl = H5Pcreate(H5P_FILE_ACCESS)) < 0 || H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG) < 0)
        rc = fs_fail(err, "%s: HDF5 setup failed", w->path);
    else if ((b->file = H5Fcreate(b->out.tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl)) < 0)
        rc = fs_fail(err, "%s: cannot create the output file (missing directory or no permission?)", w->path);
    else if ((lcpl = H5Pcreate(H5P_LINK_CREATE)) < 0 || H5Pset_create_intermediate_group(lcpl, 1) < 0)
        rc = fs_fail(err, "%s: HDF5 setup failed", w->path);
    else if ((w->opts.config_json && h5_string_attr(b->file, "config", w->opts.config_json)) ||
             (w->opts.input && h5_string_attr(b->file, "input", w->opts.input)) ||
             h5_int_attr(b->file, "num_sequences", w->B))
        rc = fs_fail(err, "%s: cannot write the file's attributes", w->path);
    for (int i = 0; rc == 0 && i < w->nsel; i++)
        rc = h5_dataset(w, i, lcpl, err);
    if (lcpl >= 0)
        H5Pclose(lcpl);
    if (fapl >= 0)
        H5Pclose(fapl);
    if (rc)
        fs_cache_h5_close(w, false, NULL);
    return rc;
}

int fs_cache_h5_put(fs_cache_writer *w, const fs_acts *a, int n, fs_error *err)
{
    for (int i = 0; i < w->nsel; i++) {
        const fs_leaf *l = &w->leaf[i];
        hsize_t start[5] = {(hsize_t)w->written}, count[5] = {(hsize_t)n};
        for (int d = 0; d < l->ndim; d++)
            count[d + 1] = (hsize_t)l->shape[d];
        hid_t fspace = H5Dget_space(w->bin->dset[i]), mspace = H5Screate_simple(l->ndim + 1, count, NULL);
        int rc = fspace >= 0 && mspace >= 0 &&
                         H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start, NULL, count, NULL) >= 0 &&
                         H5Dwrite(w->bin->dset[i], H5T_NATIVE_FLOAT, mspace, fspace, H5P_DEFAULT,
                                  fs_leaf_ptr(a, w->id[i], 0)) >= 0
                     ? 0
                     : -1;
        if (mspace >= 0) H5Sclose(mspace);
        if (fspace >= 0) H5Sclose(fspace);
        if (rc) {
            char name[200];
            fs_cache_leaf_name(w, i, '/', name, sizeof name);
            return fs_fail(err, "%s: writing sequences %d..%d of '%s' failed (disk full?); no file written", w->path,
                           w->written, w->written + n - 1, name);
        }
    }
    return 0;
}

int fs_cache_h5_close(fs_cache_writer *w, bool commit, fs_error *err)
{
    fs_cache_bin *b = w->bin;
    if (!b)
        return commit ? -1 : 0;
    bool ok = commit;
    for (int i = 0; b->dset && i < w->nsel; i++)
        if (b->dset[i] >= 0 && H5Dclose(b->dset[i]) < 0)
            ok = false;
    if (b->file >= 0 && H5Fclose(b->file) < 0)
        ok = false;
    int rc = 0;
    if (commit && !ok)
        rc = fs_fail(err, "%s: finishing the HDF5 file failed (disk full?); no file written", w->path);
    if (b->file >= 0 || commit) {
        if (fs_outfile_end(&b->out, ok, commit && rc == 0 ? err : NULL))
            rc = -1;
    }
    bin_free(w);
    return rc;
}

/* ---- safetensors ---- */

int fs_cache_st_open(fs_cache_writer *w, fs_error *err)
{
    const union { uint32_t u; unsigned char c[4]; } probe = {1};
    if (!probe.c[0])
        return fs_fail(err, "%s: safetensors cache files are written on little-endian hosts only", w->path);
    if (bin_alloc(w, err))
        return -1;
    fs_cache_bin *b = w->bin;
    fs_st_tensor *t = calloc((size_t)(w->nsel ? w->nsel : 1), sizeof *t);
    const fs_st_tensor **order = calloc((size_t)(w->nsel ? w->nsel : 1), sizeof *order);
    b->off = calloc((size_t)(w->nsel ? w->nsel : 1), sizeof *b->off);
    int rc = 0;
    if (!t || !order || !b->off)
        rc = fs_fail(err, "out of memory");
    uint64_t off = 0;
    for (int i = 0; rc == 0 && i < w->nsel; i++) {
        fs_cache_leaf_name(w, i, '.', t[i].name, sizeof t[i].name);
        t[i].ndim = w->leaf[i].ndim + 1;
        t[i].shape[0] = w->B;
        for (int d = 0; d < w->leaf[i].ndim; d++)
            t[i].shape[d + 1] = w->leaf[i].shape[d];
        t[i].numel = (size_t)w->B * w->leaf[i].numel;
        order[i] = &t[i];
        b->off[i] = off;
        off += (uint64_t)t[i].numel * sizeof(float);
    }
    char count[32];
    snprintf(count, sizeof count, "%d", w->B);
    const char *keys[3] = {"num_sequences", "config", "input"};
    const char *values[3] = {count, w->opts.config_json, w->opts.input};
    int nmeta = 1;
    if (values[1])
        nmeta++;
    if (values[2]) {
        keys[nmeta] = keys[2];
        values[nmeta++] = values[2];
    }
    char *header = NULL;
    size_t hlen = 0;
    if (rc == 0)
        rc = fs_st_header(w->path, order, w->nsel, keys, values, nmeta, &header, &hlen, err);
    if (rc == 0 && (b->fd = open(b->out.tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666)) < 0)
        rc = fs_fail(err, "%s: cannot create the output file (%s)", w->path, strerror(errno));
    if (rc == 0) {
        unsigned char len8[8];
        for (int k = 0; k < 8; k++)
            len8[k] = (unsigned char)((uint64_t)hlen >> (8 * k));
        b->data_start = 8 + hlen;
        if (fs_pwrite_all(b->fd, len8, 8, 0) || fs_pwrite_all(b->fd, header, hlen, 8))
            rc = fs_fail(err, "%s: writing the header failed (%s); no file written", w->path, strerror(errno));
    }
    free(header);
    free(order);
    free(t);
    if (rc)
        fs_cache_st_close(w, false, NULL);
    return rc;
}

int fs_cache_st_put(fs_cache_writer *w, const fs_acts *a, int n, fs_error *err)
{
    for (int i = 0; i < w->nsel; i++) {
        size_t numel = w->leaf[i].numel;
        uint64_t at = w->bin->data_start + w->bin->off[i] + (uint64_t)w->written * numel * sizeof(float);
        if (fs_pwrite_all(w->bin->fd, fs_leaf_ptr(a, w->id[i], 0), (size_t)n * numel * sizeof(float), at))
            return fs_fail(err, "%s: write failed (%s); no file written", w->path, strerror(errno));
    }
    return 0;
}

int fs_cache_st_close(fs_cache_writer *w, bool commit, fs_error *err)
{
    fs_cache_bin *b = w->bin;
    if (!b)
        return commit ? -1 : 0;
    int rc = 0, e = 0;
    bool had_fd = b->fd >= 0;
    if (had_fd) {
        if (commit && fsync(b->fd) != 0)
            e = errno;
        if (close(b->fd) != 0 && !e)
            e = errno;
    }
    if (commit && e)
        rc = fs_fail(err, "%s: write failed (%s); no file written", w->path, strerror(e));
    if (had_fd && fs_outfile_end(&b->out, commit && rc == 0, commit && rc == 0 ? err : NULL))
        rc = -1;
    bin_free(w);
    return rc;
}
