/* A buffered output stream for large outputs: to stdout, or to a file written atomically
 * (a temporary file beside it, renamed over it only when everything was written, synced
 * and closed; removed on any error, so the output name never holds a partial file).
 * Write errors are sticky and reported once, by fs_ostream_close, naming the file. */
#ifndef FEWSHOT_BASE_OSTREAM_H
#define FEWSHOT_BASE_OSTREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/fileio.h"
#include "fewshot/error.h"

typedef struct {
    int fd;
    bool to_file;    /* false: stdout */
    fs_outfile out;  /* the output file (base/fileio.h: atomic, symlinks, devices) */
    char *buf;
    size_t len, cap;
    int write_errno; /* first write error, 0 if none */
    uint64_t bytes;  /* written so far */
} fs_ostream;

/* Open `path` for writing (NULL or "-" = stdout). Fails if the temporary file cannot be
 * created (missing directory, no permission). */
int fs_ostream_open(fs_ostream *o, const char *path, fs_error *err);
void fs_ostream_write(fs_ostream *o, const void *data, size_t n);
void fs_ostream_puts(fs_ostream *o, const char *text);
void fs_ostream_printf(fs_ostream *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Room for n more bytes in the buffer: write up to n bytes at the pointer returned, then
 * fs_ostream_advance by the number written. NULL (the error kept for close) only when n
 * exceeds the buffer and growing it fails. */
char *fs_ostream_reserve(fs_ostream *o, size_t n);
void fs_ostream_advance(fs_ostream *o, size_t n);
/* Flush, sync and move into place (or flush stdout). Frees o either way. */
int fs_ostream_close(fs_ostream *o, fs_error *err);
/* Drop the output: remove the temporary file. Frees o. */
void fs_ostream_abort(fs_ostream *o);

#endif
