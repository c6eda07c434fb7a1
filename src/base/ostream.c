/* Buffered, atomically committed output streams (see ostream.h). */
#include "base/ostream.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { BUF_BYTES = 1 << 20 };

int fs_ostream_open(fs_ostream *o, const char *path, fs_error *err)
{
    memset(o, 0, sizeof *o);
    o->fd = -1;
    o->cap = BUF_BYTES;
    o->buf = malloc(o->cap);
    if (!o->buf)
        return fs_fail(err, "%s: out of memory for the output buffer", path ? path : "stdout");
    if (!path || !strcmp(path, "-")) {
        o->fd = STDOUT_FILENO;
        return 0;
    }
    if (fs_outfile_begin(&o->out, path, err)) {
        fs_ostream_abort(o);
        return -1;
    }
    o->to_file = true;
    o->fd = open(o->out.tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (o->fd < 0) {
        fs_fail(err, "%s: cannot create the output file (%s)", path, strerror(errno));
        fs_ostream_abort(o);
        return -1;
    }
    return 0;
}

static void flush(fs_ostream *o)
{
    size_t at = 0;
    while (at < o->len && !o->write_errno) {
        ssize_t w = write(o->fd, o->buf + at, o->len - at);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            o->write_errno = w < 0 ? errno : ENOSPC;
        else
            at += (size_t)w;
    }
    o->bytes += at;
    o->len = 0;
}

char *fs_ostream_reserve(fs_ostream *o, size_t n)
{
    if (o->len + n > o->cap)
        flush(o);
    if (n > o->cap) { /* larger than the buffer: grow it (the caller checks nothing) */
        char *p = realloc(o->buf, n);
        if (!p) {
            o->write_errno = ENOMEM; /* close reports it */
            return NULL;
        }
        o->buf = p, o->cap = n;
    }
    return o->buf + o->len;
}

void fs_ostream_advance(fs_ostream *o, size_t n) { o->len += n; }

void fs_ostream_write(fs_ostream *o, const void *data, size_t n)
{
    const char *p = data;
    while (n) {
        if (o->len == o->cap)
            flush(o);
        size_t m = o->cap - o->len < n ? o->cap - o->len : n;
        memcpy(o->buf + o->len, p, m);
        o->len += m, p += m, n -= m;
    }
}

void fs_ostream_puts(fs_ostream *o, const char *text) { fs_ostream_write(o, text, strlen(text)); }

void fs_ostream_printf(fs_ostream *o, const char *fmt, ...)
{
    char small[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n < sizeof small) {
        fs_ostream_write(o, small, (size_t)n);
        return;
    }
    char *big = malloc((size_t)n + 1);
    if (!big) {
        o->write_errno = ENOMEM;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    fs_ostream_write(o, big, (size_t)n);
    free(big);
}

static void release(fs_ostream *o)
{
    free(o->buf);
    memset(o, 0, sizeof *o);
    o->fd = -1;
}

int fs_ostream_close(fs_ostream *o, fs_error *err)
{
    flush(o);
    int rc = 0;
    const char *name = o->to_file ? o->out.target : "stdout";
    if (!o->to_file) {
        if (o->write_errno)
            rc = fs_fail(err, "%s: write failed (%s)", name, strerror(o->write_errno));
        release(o);
        return rc;
    }
    if (!o->write_errno && fsync(o->fd) != 0 && errno != EINVAL)
        o->write_errno = errno;
    if (close(o->fd) != 0 && !o->write_errno)
        o->write_errno = errno;
    o->fd = -1;
    if (o->write_errno)
        rc = fs_fail(err, "%s: write failed after %llu bytes (%s); no file written", name,
                     (unsigned long long)o->bytes, strerror(o->write_errno));
    if (fs_outfile_end(&o->out, rc == 0, err))
        rc = -1;
    release(o);
    return rc;
}

void fs_ostream_abort(fs_ostream *o)
{
    if (o->to_file && o->fd >= 0)
        close(o->fd);
    fs_outfile_abort(&o->out);
    release(o);
}
