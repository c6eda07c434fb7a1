/* Shared state of the cache file writers (cachefile.c: json and dispatch; cachefile_bin.c:
 * h5 and safetensors). */
#ifndef FEWSHOT_IO_CACHEFILE_INTERNAL_H
#define FEWSHOT_IO_CACHEFILE_INTERNAL_H

#include <stdint.h>

#include "base/ostream.h"
#include "fewshot/cachefile.h"

typedef struct fs_cache_bin fs_cache_bin; /* h5 or safetensors state */

struct fs_cache_writer {
    fs_cache_file_opts opts;
    char *path;       /* NULL = stdout */
    int B, written;
    int nsel;
    int *id;          /* selected leaves' indices in the table */
    fs_leaf *leaf;    /* their descriptions */
    /* json */
    fs_ostream out;
    bool out_open;
    int spool_fd;     /* -1: streamed straight from the arena (one chunk) */
    uint64_t *spool_off;
    /* h5, safetensors */
    fs_cache_bin *bin;
};

/* Dotted name of selected leaf i ("a.b.1.c"), or with '/' for HDF5 ("/a/b/1/c"). */
void fs_cache_leaf_name(const fs_cache_writer *w, int i, char sep, char *out, size_t n);
/* Write all of buf at `offset` of fd; errno on failure. */
int fs_pwrite_all(int fd, const void *buf, size_t n, uint64_t offset);

int fs_cache_h5_open(fs_cache_writer *w, fs_error *err);
int fs_cache_h5_put(fs_cache_writer *w, const fs_acts *a, int n, fs_error *err);
int fs_cache_h5_close(fs_cache_writer *w, bool commit, fs_error *err);
int fs_cache_st_open(fs_cache_writer *w, fs_error *err);
int fs_cache_st_put(fs_cache_writer *w, const fs_acts *a, int n, fs_error *err);
int fs_cache_st_close(fs_cache_writer *w, bool commit, fs_error *err);

#endif
