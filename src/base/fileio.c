/* Sizes, memory, reading whole files, output files and run-directory locks (see fileio.h). */
#include "base/fileio.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---------------------------------------------------------------- sizes and memory */

int fs_size_mul(size_t *out, size_t limit, int n, const size_t *f)
{
    size_t p = 1;
    for (int i = 0; i < n; i++)
        if (f[i] == 0) {
            *out = 0;
            return 0;
        }
    for (int i = 0; i < n; i++) {
        if (f[i] > limit / p)
            return -1;
        p *= f[i];
    }
    *out = p;
    return 0;
}

/* A positive integer from the environment variable `name`, or `def`. */
static size_t env_megabytes(const char *name, size_t def)
{
    const char *v = getenv(name);
    if (!v || !*v)
        return def;
    char *end;
    unsigned long long mb = strtoull(v, &end, 10);
    if (*end || mb == 0 || mb > SIZE_MAX / (1024 * 1024))
        return def;
    return (size_t)mb * 1024 * 1024;
}

size_t fs_memory_limit(void)
{
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    size_t ram = pages > 0 && page > 0 && (size_t)pages <= SIZE_MAX / (size_t)page ? (size_t)pages * (size_t)page
                                                                                    : SIZE_MAX;
    return env_megabytes("FEWSHOT_MAX_MEMORY_MB", ram);
}

void *fs_alloc(size_t bytes)
{
    /* the limit is at least 1 MB: smaller blocks skip its system call */
    if ((bytes >= ((size_t)1 << 20) && bytes > fs_memory_limit()) || bytes > SIZE_MAX - 64) {
        errno = ENOMEM;
        return NULL;
    }
    size_t n = (bytes + 63) & ~(size_t)63;
    void *p = aligned_alloc(64, n ? n : 64);
    if (p)
        memset(p, 0, n ? n : 64);
    return p;
}

int fs_fail_alloc(fs_error *err, const char *what, size_t bytes)
{
    size_t limit = fs_memory_limit();
    if (bytes > limit)
        return fs_fail(err, "%s: needs %.1f MB, more than the %.1f MB allowed (the machine's memory, or "
                       "FEWSHOT_MAX_MEMORY_MB)", what, bytes / 1048576.0, limit / 1048576.0);
    return fs_fail(err, "%s: out of memory allocating %.1f MB", what, bytes / 1048576.0);
}

/* ---------------------------------------------------------------- reading */

size_t fs_max_input_bytes(void) { return env_megabytes("FEWSHOT_MAX_INPUT_MB", (size_t)1024 * 1024 * 1024); }

static char *input_too_large(const char *path, size_t cap, fs_error *err)
{
    fs_fail(err, "%s: input is larger than %zu MB (raise FEWSHOT_MAX_INPUT_MB to read it)", path,
            cap / (1024 * 1024));
    return NULL;
}

char *fs_read_file(const char *path, size_t *len, fs_error *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fs_fail(err, "%s: cannot open (%s)", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    size_t limit = fs_max_input_bytes();
    if (fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode)) {
        fclose(f);
        fs_fail(err, "%s: is a directory, expected a file", path);
        return NULL;
    }
    if (fstat(fileno(f), &st) == 0 && S_ISREG(st.st_mode) && (uint64_t)st.st_size > limit) {
        fclose(f);
        return input_too_large(path, limit, err);
    }
    size_t cap = 1 << 16, n = 0, got;
    char *buf = malloc(cap);
    bool failed = !buf, too_large = false;
    while (!failed && (got = fread(buf + n, 1, cap - n - 1, f)) > 0) {
        n += got;
        if (n > limit) {
            too_large = true;
            break;
        }
        if (cap - n - 1 == 0) {
            char *grown = cap <= SIZE_MAX / 2 ? realloc(buf, cap * 2) : NULL;
            if (!grown)
                failed = true;
            else
                buf = grown, cap *= 2;
        }
    }
    bool read_error = !failed && !too_large && ferror(f);
    fclose(f);
    if (failed || read_error || too_large) {
        free(buf);
        if (too_large)
            return input_too_large(path, limit, err);
        fs_fail(err, failed ? "%s: out of memory reading the file" : "%s: read error", path);
        return NULL;
    }
    buf[n] = 0;
    if (len)
        *len = n;
    return buf;
}

void *fs_json_load(const char *path, fs_error *err)
{
    size_t n;
    char *text = fs_read_file(path, &n, err);
    if (!text)
        return NULL;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithOpts(text, &end, 1);
    if (!root) {
        long at = end ? (long)(end - text) : -1;
        fs_fail(err, "%s: malformed JSON near byte %ld of %zu (or out of memory)", path, at, n);
    }
    free(text);
    return root;
}

/* ---------------------------------------------------------------- writing */

static char *str_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *str_printf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *s = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (s) {
        va_start(ap, fmt);
        vsnprintf(s, (size_t)n + 1, fmt, ap);
        va_end(ap);
    }
    return s;
}

static const char *kind_name(mode_t m)
{
    return S_ISDIR(m) ? "a directory" : S_ISSOCK(m) ? "a socket" : S_ISBLK(m) ? "a block device" : "a special file";
}

int fs_outfile_begin(fs_outfile *o, const char *path, fs_error *err)
{
    *o = (fs_outfile){0};
    if (!path || !*path)
        return fs_fail(err, "no output file name given");
    if (strlen(path) >= PATH_MAX)
        return fs_fail(err, "%.64s...: output path is %zu bytes, longer than the system's %d", path, strlen(path),
                       PATH_MAX - 1);
    struct stat st;
    char *resolved = NULL;
    if (lstat(path, &st) == 0 && S_ISLNK(st.st_mode)) {
        if (stat(path, &st) != 0) /* follows the link */
            return fs_fail(err, "%s: is a symbolic link to a missing or unreachable file (%s); refusing to write "
                           "through it", path, strerror(errno));
        /* a regular file is replaced where it is (the link is kept); FIFOs and devices
         * (/dev/stdout -> a pipe) are opened through the link */
        if (S_ISREG(st.st_mode) && !(resolved = realpath(path, NULL)))
            return fs_fail(err, "%s: cannot resolve the symbolic link (%s)", path, strerror(errno));
    } else if (lstat(path, &st) != 0) {
        st.st_mode = S_IFREG; /* new file */
    }
    const char *target = resolved ? resolved : path;
    if (S_ISDIR(st.st_mode) || S_ISSOCK(st.st_mode) || S_ISBLK(st.st_mode)) {
        fs_fail(err, "%s: is %s; refusing to write there (give a regular file, a FIFO or a character device "
                "such as /dev/stdout)", path, kind_name(st.st_mode));
        free(resolved);
        return -1;
    }
    o->through = S_ISFIFO(st.st_mode) || S_ISCHR(st.st_mode);
    o->target = resolved ? resolved : strdup(path);
    if (o->through) {
        const char *dir = getenv("TMPDIR");
        o->tmp = str_printf("%s/fewshot-out.tmp.%ld", dir && *dir ? dir : "/tmp", (long)getpid());
    } else {
        o->tmp = str_printf("%s.tmp.%ld", target, (long)getpid());
    }
    if (!o->target || !o->tmp) {
        fs_outfile_abort(o);
        return fs_fail(err, "%s: out of memory", path);
    }
    return 0;
}

int fs_outfile_end(fs_outfile *o, bool ok, fs_error *err)
{
    if (ok)
        return fs_outfile_commit(o, err);
    fs_outfile_abort(o);
    return -1;
}

void fs_outfile_abort(fs_outfile *o)
{
    if (o->tmp)
        unlink(o->tmp);
    free(o->tmp);
    free(o->target);
    *o = (fs_outfile){0};
}

/* Best effort: make a rename durable. */
static void fsync_parent_dir(const char *path)
{
    const char *slash = strrchr(path, '/');
    char *dir = slash ? strndup(path, (size_t)(slash - path) + (slash == path)) : strdup(".");
    if (!dir)
        return;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
    free(dir);
}

/* Copy the temp file into a FIFO or character device, without truncating or replacing it. */
static int copy_through(const fs_outfile *o, fs_error *err)
{
    int in = open(o->tmp, O_RDONLY | O_CLOEXEC), out = open(o->target, O_WRONLY | O_NOCTTY | O_CLOEXEC);
    int rc = 0;
    if (in < 0 || out < 0)
        rc = fs_fail(err, "%s: cannot open for writing (%s)", o->target, strerror(errno));
    char buf[1 << 16];
    ssize_t got;
    while (rc == 0 && (got = read(in, buf, sizeof buf)) != 0) {
        if (got < 0) {
            if (errno == EINTR)
                continue;
            rc = fs_fail(err, "%s: reading the temporary file failed (%s)", o->target, strerror(errno));
            break;
        }
        for (ssize_t done = 0; rc == 0 && done < got;) {
            ssize_t put = write(out, buf + done, (size_t)(got - done));
            if (put < 0 && errno != EINTR)
                rc = fs_fail(err, "%s: write failed (%s)", o->target, strerror(errno));
            done += put > 0 ? put : 0;
        }
    }
    if (in >= 0)
        close(in);
    if (out >= 0 && close(out) != 0 && rc == 0)
        rc = fs_fail(err, "%s: write failed (%s)", o->target, strerror(errno));
    return rc;
}

int fs_outfile_commit(fs_outfile *o, fs_error *err)
{
    int rc = 0;
    int fd = open(o->tmp, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        rc = fs_fail(err, "%s: the temporary file %s vanished (%s)", o->target, o->tmp, strerror(errno));
    else if (!o->through && fsync(fd) != 0 && errno != EINVAL)
        rc = fs_fail(err, "%s: fsync of %s failed (%s)", o->target, o->tmp, strerror(errno));
    if (fd >= 0)
        close(fd);
    if (rc == 0 && o->through)
        rc = copy_through(o, err);
    else if (rc == 0 && rename(o->tmp, o->target) != 0)
        rc = fs_fail(err, "%s: cannot move %s into place (%s)", o->target, o->tmp, strerror(errno));
    else if (rc == 0)
        fsync_parent_dir(o->target);
    fs_outfile_abort(o); /* removes the temp file unless it was renamed */
    return rc;
}

int fs_write_bytes_atomic(const char *path, const void *data, size_t n, fs_error *err)
{
    fs_outfile o;
    if (fs_outfile_begin(&o, path, err))
        return -1;
    FILE *f = fopen(o.tmp, "wb");
    if (!f) {
        fs_fail(err, "%s: cannot create %s (%s)", path, o.tmp, strerror(errno));
        fs_outfile_abort(&o);
        return -1;
    }
    bool ok = fwrite(data, 1, n, f) == n;
    ok = (fflush(f) == 0) && ok;
    int saved = errno;
    ok = (fclose(f) == 0) && ok;
    if (!ok) {
        fs_fail(err, "%s: write failed (%s)", path, strerror(saved ? saved : errno));
        fs_outfile_abort(&o);
        return -1;
    }
    return fs_outfile_commit(&o, err);
}

int fs_write_file_atomic(const char *path, const char *text, fs_error *err)
{
    return fs_write_bytes_atomic(path, text, strlen(text), err);
}

/* ---------------------------------------------------------------- run directories */

int fs_mkdir_p(const char *path, fs_error *err)
{
    char tmp[4200];
    if (snprintf(tmp, sizeof tmp, "%s", path) >= (int)sizeof tmp)
        return fs_fail(err, "%.200s...: path too long", path);
    for (char *p = tmp + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            mkdir(tmp, 0755);
            *p = '/';
        }
    if (mkdir(tmp, 0755) && errno != EEXIST)
        return fs_fail(err, "%s: cannot create directory (%s)", path, strerror(errno));
    return 0;
}

int fs_dir_lock(const char *dir, int *fd, fs_error *err)
{
    char *path = str_printf("%s/lock", dir);
    if (!path)
        return fs_fail(err, "%s: out of memory", dir);
    int f = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (f < 0) {
        fs_fail(err, "%s: cannot create the run lock (%s)", path, strerror(errno));
        free(path);
        return -1;
    }
    if (flock(f, LOCK_EX | LOCK_NB) != 0) {
        char holder[256] = "";
        ssize_t n = pread(f, holder, sizeof holder - 1, 0);
        holder[n > 0 ? n : 0] = 0;
        holder[strcspn(holder, "\n")] = 0;
        int e = errno;
        close(f);
        free(path);
        if (e != EWOULDBLOCK && e != EAGAIN && !holder[0])
            return fs_fail(err, "%s: cannot lock the run directory (%s)", dir, strerror(e));
        return fs_fail(err, "%s: the run directory is in use by another fewshot run (%s); wait for it to finish or "
                       "choose another --out", dir, holder[0] ? holder : "holder unknown");
    }
    char host[256] = "?", text[400];
    gethostname(host, sizeof host - 1);
    host[sizeof host - 1] = 0;
    int n = snprintf(text, sizeof text, "pid %ld on host %s\n", (long)getpid(), host);
    if (ftruncate(f, 0) != 0 || pwrite(f, text, (size_t)n, 0) != n) {
        fs_fail(err, "%s: cannot write the run lock (%s)", path, strerror(errno));
        close(f);
        free(path);
        return -1;
    }
    free(path);
    *fd = f;
    return 0;
}

void fs_dir_unlock(int fd)
{
    if (fd >= 0)
        close(fd);
}

int fs_remove_stale_tmp(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    int removed = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        const char *mark = strstr(e->d_name, ".tmp.");
        if (!mark || !mark[5] || strspn(mark + 5, "0123456789") != strlen(mark + 5))
            continue;
        removed += unlinkat(dirfd(d), e->d_name, 0) == 0;
    }
    closedir(d);
    return removed;
}
