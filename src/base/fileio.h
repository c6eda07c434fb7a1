/* Small file and memory helpers used by every layer above base. */
#ifndef FEWSHOT_BASE_FILEIO_H
#define FEWSHOT_BASE_FILEIO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fewshot/error.h"

/* ---- sizes and memory ---- */

/* Overflow-checked product of n factors: *out = f[0] * ... * f[n-1], or -1 if the product
 * exceeds `limit` (SIZE_MAX for a size_t, INT_MAX for an int count, SIZE_MAX / sizeof(T)
 * for an element count). Negative ints passed in become huge and fail too. The one place
 * that multiplies sizes and counts derived from input: fs_size_mul(&n, INT_MAX, FS_DIMS(a, b)). */
int fs_size_mul(size_t *out, size_t limit, int n, const size_t *f);
#define FS_DIMS(...) (int)(sizeof((size_t[]){__VA_ARGS__}) / sizeof(size_t)), (size_t[]){__VA_ARGS__}

/* Upper bound for one allocation: FEWSHOT_MAX_MEMORY_MB if set, else the machine's RAM. */
size_t fs_memory_limit(void);
/* 64-byte aligned, zeroed memory, or NULL (never aborts) when `bytes` is over
 * fs_memory_limit() or the allocation fails. */
void *fs_alloc(size_t bytes);
/* The error for a failed allocation of `bytes` for `what`; returns -1. */
int fs_fail_alloc(fs_error *err, const char *what, size_t bytes);

/* ---- reading ---- */

/* Largest input file read whole: FEWSHOT_MAX_INPUT_MB (default 1024) megabytes. */
size_t fs_max_input_bytes(void);
/* Read a whole file / parse JSON from a file, with errors naming the file; inputs larger
 * than fs_max_input_bytes() (e.g. /dev/zero) are an error, not an endless read. */
char *fs_read_file(const char *path, size_t *len, fs_error *err);
void *fs_json_load(const char *path, fs_error *err); /* cJSON* */

/* ---- writing: every output file goes through fs_outfile ----
 * Regular files (new or existing) are written to "<path>.tmp.<pid>" in the same directory
 * and renamed over the target once complete (fsync'd), so readers never see a partial file.
 * A symlink is followed: the file it points to is replaced and the link kept (a dangling
 * link is refused). FIFOs and character devices (/dev/stdout, /dev/null) are written
 * through: the data goes to a private temp file first and is copied into the target on
 * commit, so the device node itself is never replaced. Directories, sockets and block
 * devices are refused. */
typedef struct {
    char *target;  /* where the data ends up (the symlink's target when path is a link) */
    char *tmp;     /* write here (fopen, H5Fcreate, ...), then fs_outfile_commit */
    bool through;  /* non-regular target: copy into it on commit */
} fs_outfile;

int fs_outfile_begin(fs_outfile *o, const char *path, fs_error *err);
/* Make the temp file the target (rename or copy-through); frees o. On error the temp file
 * is removed and the target is untouched (regular files). */
int fs_outfile_commit(fs_outfile *o, fs_error *err);
/* Give up: remove the temp file, free o. */
void fs_outfile_abort(fs_outfile *o);
/* Commit when ok, else abort; 0 when the target now holds the new data. */
int fs_outfile_end(fs_outfile *o, bool ok, fs_error *err);
/* Write bytes / text as one output file through fs_outfile. */
int fs_write_bytes_atomic(const char *path, const void *data, size_t n, fs_error *err);
int fs_write_file_atomic(const char *path, const char *text, fs_error *err);

/* ---- run directories ---- */

/* mkdir -p (existing directories are fine). */
int fs_mkdir_p(const char *path, fs_error *err);
/* Take the exclusive lock "<dir>/lock" (flock) for the life of the process or until
 * fs_dir_unlock; the file records "pid P on host H". If another process holds it, the
 * error names that holder. *fd gets the descriptor (close-on-exec). */
int fs_dir_lock(const char *dir, int *fd, fs_error *err);
void fs_dir_unlock(int fd);
/* Remove the "<name>.tmp.<pid>" files that interrupted writes left in dir; call it while
 * holding the directory's lock (then no other writer is active). Returns how many. */
int fs_remove_stale_tmp(const char *dir);

#endif
