/* Reading whole files, loading JSON and writing files atomically (errors name the file). */
#include "base/fileio.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void *fs_alloc(size_t bytes)
{
    size_t n = (bytes + 63) & ~(size_t)63;
    void *p = aligned_alloc(64, n ? n : 64);
    if (!p) {
        fprintf(stderr, "fewshot: out of memory allocating %zu bytes\n", bytes);
        abort();
    }
    memset(p, 0, n ? n : 64);
    return p;
}

char *fs_read_file(const char *path, size_t *len, fs_error *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fs_fail(err, "%s: cannot open (%s)", path, strerror(errno));
        return NULL;
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    size_t got;
    while ((got = fread(buf + n, 1, cap - n - 1, f)) > 0) {
        n += got;
        if (cap - n - 1 == 0) {
            cap *= 2;
            buf = realloc(buf, cap);
        }
    }
    bool failed = ferror(f);
    fclose(f);
    if (failed) {
        free(buf);
        fs_fail(err, "%s: read error", path);
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
        fs_fail(err, "%s: malformed JSON near byte %ld of %zu", path, at, n);
    }
    free(text);
    return root;
}

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

int fs_write_file_atomic(const char *path, const char *text, fs_error *err)
{
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f)
        return fs_fail(err, "%s: cannot create (%s)", tmp, strerror(errno));
    size_t n = strlen(text);
    bool ok = fwrite(text, 1, n, f) == n;
    ok = (fflush(f) == 0) && ok;
    ok = (fsync(fileno(f)) == 0 || errno == EINVAL) && ok;
    ok = (fclose(f) == 0) && ok;
    if (!ok || rename(tmp, path) != 0) {
        unlink(tmp);
        return fs_fail(err, "%s: write failed (%s)", path, strerror(errno));
    }
    return 0;
}

/* Shape of a nested array, checking that it is rectangular (not ragged). */
