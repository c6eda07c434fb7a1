/* Cache files: format choice, the writer's life cycle and the streamed JSON dump. The JSON
 * text is the layout cJSON_Print gives the cache tree (tab indentation, "key":<TAB>value,
 * ", " between array elements), written leaf by leaf from the arena: the leaf table lists
 * each subtree's leaves contiguously, so a stack of open containers is all the state. */
#include <errno.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/json.h"
#include "base/numfmt.h"
#include "io/cachefile_internal.h"
#include "model/path.h"

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && !strcmp(s + n - m, suffix);
}

int fs_cache_format_parse(const char *name, const char *path, fs_cache_format *out, fs_error *err)
{
    if (name) {
        if (!strcmp(name, "json"))
            *out = FS_CACHE_JSON;
        else if (!strcmp(name, "h5") || !strcmp(name, "hdf5"))
            *out = FS_CACHE_H5;
        else if (!strcmp(name, "safetensors"))
            *out = FS_CACHE_SAFETENSORS;
        else
            return fs_fail(err, "--format: unknown format '%s' (expected json, h5 or safetensors)", name);
        return 0;
    }
    if (path && (ends_with(path, ".h5") || ends_with(path, ".hdf5")))
        *out = FS_CACHE_H5;
    else if (path && ends_with(path, ".safetensors"))
        *out = FS_CACHE_SAFETENSORS;
    else
        *out = FS_CACHE_JSON;
    return 0;
}

void fs_cache_leaf_name(const fs_cache_writer *w, int i, char sep, char *out, size_t n)
{
    char dotted[160];
    fs_leaf_dotted(&w->leaf[i], dotted, sizeof dotted);
    if (sep == '.') {
        snprintf(out, n, "%s", dotted);
        return;
    }
    snprintf(out, n, "%c%s", sep, dotted);
    for (char *c = out + 1; *c; c++)
        if (*c == '.')
            *c = sep;
}

int fs_pwrite_all(int fd, const void *buf, size_t n, uint64_t offset)
{
    const char *p = buf;
    while (n) {
        ssize_t got = pwrite(fd, p, n, (off_t)offset);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0) {
            if (got == 0)
                errno = ENOSPC;
            return -1;
        }
        p += got, n -= (size_t)got, offset += (uint64_t)got;
    }
    return 0;
}

/* ---- JSON text ---- */

static void put_number(char *at, size_t *len, float x, bool is_int)
{
    if (is_int)
        *len += (size_t)sprintf(at, "%d", (int)x);
    else if (isfinite(x))
        *len += (size_t)fs_format_g9(at, x);
    else /* the JSON convention for non-finite numbers (docs/formats.md), which the readers accept */
        *len += (size_t)sprintf(at, "\"%s\"", fs_nonfinite_name(x));
}

/* Text of one sequence's value, nested arrays, into `at` (room for text_bound bytes). */
static char *put_array(char *at, const float *x, const int *shape, int nd, bool is_int)
{
    *at++ = '[';
    if (nd == 1) {
        size_t len = 0;
        for (int i = 0; i < shape[0]; i++) {
            if (i) {
                at[len++] = ',';
                at[len++] = ' ';
            }
            put_number(at + len, &len, x[i], is_int);
        }
        at += len;
    } else {
        size_t stride = 1;
        for (int i = 1; i < nd; i++)
            stride *= (size_t)shape[i];
        for (int i = 0; i < shape[0]; i++) {
            if (i) {
                *at++ = ',';
                *at++ = ' ';
            }
            at = put_array(at, x + (size_t)i * stride, shape + 1, nd - 1, is_int);
        }
    }
    *at++ = ']';
    return at;
}

/* Bytes the text of one sequence of a leaf may take: a number, ", " and brackets per element. */
static size_t text_bound(const fs_leaf *l) { return l->numel * (FS_G9_MAX + 4) + 16; }

/* Sequences [0, n) of a leaf's block as text, ", "-separated (a leading ", " unless first),
 * formatted in parallel slices and written in order. */
static int put_block(fs_ostream *o, const fs_leaf *l, const float *x, int n, bool first, char **bufs, int nbufs,
                     size_t *caps, fs_error *err)
{
    size_t bound = text_bound(l);
    int parts = n < nbufs ? n : nbufs;
    for (int t = 0; t < parts; t++) {
        size_t need = ((size_t)(n / parts) + 1) * (bound + 2);
        if (caps[t] < need) {
            char *p = realloc(bufs[t], need);
            if (!p)
                return fs_fail(err, "out of memory formatting the cache text");
            bufs[t] = p, caps[t] = need;
        }
    }
    size_t lens[64];
#pragma omp parallel for num_threads(parts) schedule(static)
    for (int t = 0; t < parts; t++) {
        int s0 = (int)((long long)n * t / parts), s1 = (int)((long long)n * (t + 1) / parts);
        char *at = bufs[t];
        for (int b = s0; b < s1; b++) {
            if (b || !first) {
                *at++ = ',';
                *at++ = ' ';
            }
            at = put_array(at, x + (size_t)b * l->numel, l->shape, l->ndim, l->is_int);
        }
        lens[t] = (size_t)(at - bufs[t]);
    }
    for (int t = 0; t < parts; t++)
        fs_ostream_write(o, bufs[t], lens[t]);
    return 0;
}

typedef struct {
    bool is_array, first;
    int next_index;
    fs_path_part comp; /* the member of this container whose value is open at the next level */
} json_level;

typedef struct {
    fs_ostream *o;
    int depth;         /* cJSON's: containers open */
    int nlev;          /* levels open, [0] = the root object */
    json_level lev[12];
} json_tree;

static void tabs(fs_ostream *o, int n)
{
    static const char t[] = "\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t";
    fs_ostream_write(o, t, (size_t)(n < 16 ? n : 16));
}

static void open_container(json_tree *t, bool is_array)
{
    json_level *l = &t->lev[t->nlev++];
    l->is_array = is_array, l->first = true, l->next_index = 0;
    fs_ostream_write(t->o, is_array ? "[" : "{\n", is_array ? 1 : 2);
    t->depth++;
}

static void close_container(json_tree *t)
{
    json_level *l = &t->lev[--t->nlev];
    if (l->is_array) {
        fs_ostream_write(t->o, "]", 1);
    } else {
        fs_ostream_write(t->o, "\n", 1);
        tabs(t->o, t->depth - 1);
        fs_ostream_write(t->o, "}", 1);
    }
    t->depth--;
}

/* Start member `c` of the innermost open container. */
static int add_member(json_tree *t, const fs_path_part *c, fs_error *err)
{
    json_level *l = &t->lev[t->nlev - 1];
    if (l->is_array) {
        if (c->key[0] || c->index < l->next_index)
            return fs_fail(err, "cache tree: leaves of one array are not contiguous at index %d", c->index);
        for (; l->next_index < c->index; l->next_index++, l->first = false) /* unselected elements */
            fs_ostream_puts(t->o, l->first ? "{}" : ", {}");
        if (!l->first)
            fs_ostream_write(t->o, ", ", 2);
        l->next_index = c->index + 1;
    } else {
        if (!c->key[0])
            return fs_fail(err, "cache tree: an index inside an object");
        if (!l->first)
            fs_ostream_write(t->o, ",\n", 2);
        tabs(t->o, t->depth);
        fs_ostream_printf(t->o, "\"%s\":\t", c->key);
    }
    l->first = false;
    l->comp = *c;
    return 0;
}

static bool same_part(const fs_path_part *a, const fs_path_part *b)
{
    return a->index == b->index && !strcmp(a->key, b->key);
}

/* Open the containers down to leaf i and start its member. */
static int enter_leaf(json_tree *t, const fs_leaf *leaf, fs_error *err)
{
    fs_path_part parts[10];
    int n = fs_path_split(leaf->path, parts, 10);
    int common = 0;
    while (common < t->nlev - 1 && common < n - 1 && same_part(&t->lev[common].comp, &parts[common]))
        common++;
    while (t->nlev > common + 1)
        close_container(t);
    for (int i = common; i < n; i++) {
        if (add_member(t, &parts[i], err))
            return -1;
        if (i + 1 < n)
            open_container(t, parts[i + 1].key[0] == 0);
    }
    return 0;
}

/* Sequences [b0, b1) of selected leaf i: from the arena, or read back from the spool. */
static const float *leaf_block(fs_cache_writer *w, const fs_acts *a, int i, int b0, int b1, float *buf,
                               fs_error *err)
{
    size_t numel = w->leaf[i].numel;
    if (w->spool_fd < 0)
        return fs_leaf_ptr(a, w->id[i], b0);
    size_t bytes = (size_t)(b1 - b0) * numel * sizeof(float), got = 0;
    uint64_t at = w->spool_off[i] + (uint64_t)b0 * numel * sizeof(float);
    while (got < bytes) {
        ssize_t r = pread(w->spool_fd, (char *)buf + got, bytes - got, (off_t)(at + got));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            fs_fail(err, "%s: reading back the spooled cache failed (%s)", w->path ? w->path : "stdout",
                    r < 0 ? strerror(errno) : "short read");
            return NULL;
        }
        got += (size_t)r;
    }
    return buf;
}

enum { BLOCK_BYTES = 4 << 20 };

static int json_write(fs_cache_writer *w, const fs_acts *a, fs_error *err)
{
    json_tree t = {.o = &w->out};
    open_container(&t, false);
    int nbufs = omp_get_max_threads();
    nbufs = nbufs < 1 ? 1 : nbufs > 64 ? 64 : nbufs;
    char *bufs[64] = {0};
    size_t caps[64] = {0};
    float *buf = NULL;
    int rc = 0;
    for (int i = 0; i < w->nsel && rc == 0; i++) {
        const fs_leaf *l = &w->leaf[i];
        if ((rc = enter_leaf(&t, l, err)))
            break;
        if (l->is_null) {
            fs_ostream_write(&w->out, "null", 4);
            continue;
        }
        if (w->opts.batched)
            fs_ostream_write(&w->out, "[", 1);
        size_t per_block = BLOCK_BYTES / (l->numel * sizeof(float));
        int block = per_block < 1 ? 1 : per_block > (size_t)w->B ? w->B : (int)per_block;
        if (w->spool_fd >= 0 && !buf && !(buf = malloc(BLOCK_BYTES > l->numel * 4 ? BLOCK_BYTES : l->numel * 4))) {
            rc = fs_fail(err, "out of memory for the cache spool buffer");
            break;
        }
        if (w->spool_fd >= 0 && l->numel * sizeof(float) > BLOCK_BYTES) { /* a leaf bigger than the buffer */
            float *big = realloc(buf, l->numel * sizeof(float));
            if (!big) {
                rc = fs_fail(err, "out of memory for the cache spool buffer");
                break;
            }
            buf = big;
        }
        for (int b0 = 0; b0 < w->B && rc == 0; b0 += block) {
            int b1 = b0 + block < w->B ? b0 + block : w->B;
            const float *x = leaf_block(w, a, i, b0, b1, buf, err);
            rc = x ? put_block(&w->out, l, x, b1 - b0, b0 == 0, bufs, nbufs, caps, err) : -1;
        }
        if (w->opts.batched)
            fs_ostream_write(&w->out, "]", 1);
    }
    free(buf);
    for (int k = 0; k < nbufs; k++)
        free(bufs[k]);
    if (rc)
        return rc;
    while (t.nlev > 0)
        close_container(&t);
    fs_ostream_write(&w->out, "\n", 1);
    return 0;
}

/* More than one chunk: keep the selected leaves in an unlinked file beside the output,
 * laid out leaf after leaf ([B][numel] each), and print the JSON from it at the end. */
static int open_spool(fs_cache_writer *w, fs_error *err)
{
    char dir[4096];
    const char *slash = w->path ? strrchr(w->path, '/') : NULL;
    if (w->path && slash)
        snprintf(dir, sizeof dir, "%.*s", (int)(slash - w->path + (slash == w->path)), w->path);
    else if (w->path)
        snprintf(dir, sizeof dir, ".");
    else
        snprintf(dir, sizeof dir, "%s", getenv("TMPDIR") && *getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    char name[4200];
    snprintf(name, sizeof name, "%s/.fewshot-cache-spool-XXXXXX", dir);
    w->spool_fd = mkstemp(name);
    if (w->spool_fd < 0)
        return fs_fail(err, "%s: cannot create a spool file in %s (%s)", w->path ? w->path : "stdout", dir,
                       strerror(errno));
    unlink(name);
    w->spool_off = calloc((size_t)w->nsel, sizeof *w->spool_off);
    if (!w->spool_off)
        return fs_fail(err, "out of memory");
    uint64_t off = 0;
    for (int i = 0; i < w->nsel; i++) {
        w->spool_off[i] = off;
        off += (uint64_t)w->B * w->leaf[i].numel * sizeof(float);
    }
    return 0;
}

static int json_put(fs_cache_writer *w, const fs_acts *a, int n, fs_error *err)
{
    if (w->written == 0 && n == w->B)
        return json_write(w, a, err); /* one chunk: straight from the arena */
    if (w->spool_fd < 0 && open_spool(w, err))
        return -1;
    for (int i = 0; i < w->nsel; i++) {
        size_t bytes = (size_t)n * w->leaf[i].numel * sizeof(float);
        uint64_t at = w->spool_off[i] + (uint64_t)w->written * w->leaf[i].numel * sizeof(float);
        if (bytes && fs_pwrite_all(w->spool_fd, fs_leaf_ptr(a, w->id[i], 0), bytes, at))
            return fs_fail(err, "%s: writing the spool file failed (%s); no file written",
                           w->path ? w->path : "stdout", strerror(errno));
    }
    return 0;
}

/* ---- life cycle ---- */

static void writer_free(fs_cache_writer *w)
{
    if (w->spool_fd >= 0)
        close(w->spool_fd);
    free(w->spool_off);
    free(w->id);
    free(w->leaf);
    free(w->path);
    free(w);
}

int fs_cache_writer_open(fs_cache_writer **out, const char *path, const fs_acts *layout, const bool *sel, int B,
                         const fs_cache_file_opts *opts, fs_error *err)
{
    *out = NULL;
    if (B < 1)
        return fs_fail(err, "cache file: expected at least 1 sequence, got %d", B);
    if (!path && opts->format != FS_CACHE_JSON)
        return fs_fail(err, "cache file: the %s format needs an output file (-o FILE)",
                       opts->format == FS_CACHE_H5 ? "h5" : "safetensors");
    if (opts->compress < 0 || opts->compress > 9)
        return fs_fail(err, "--compress: expected a gzip level in 0..9, got %d", opts->compress);
    fs_cache_writer *w = calloc(1, sizeof *w);
    if (!w)
        return fs_fail(err, "out of memory");
    w->opts = *opts;
    w->B = B;
    w->spool_fd = -1;
    w->path = path ? strdup(path) : NULL;
    w->id = calloc((size_t)layout->count, sizeof *w->id);
    w->leaf = calloc((size_t)layout->count, sizeof *w->leaf);
    if ((path && !w->path) || !w->id || !w->leaf) {
        writer_free(w);
        return fs_fail(err, "out of memory");
    }
    for (int i = 0; i < layout->count; i++) {
        if (!sel[i] || layout->leaves[i].hidden)
            continue;
        if (opts->format != FS_CACHE_JSON && layout->leaves[i].is_null)
            continue;
        w->id[w->nsel] = i;
        w->leaf[w->nsel++] = layout->leaves[i];
    }
    int rc;
    if (opts->format == FS_CACHE_JSON) {
        rc = fs_ostream_open(&w->out, path, err);
        w->out_open = rc == 0;
    } else {
        rc = opts->format == FS_CACHE_H5 ? fs_cache_h5_open(w, err) : fs_cache_st_open(w, err);
    }
    if (rc) {
        writer_free(w);
        return -1;
    }
    *out = w;
    return 0;
}

int fs_cache_writer_put(fs_cache_writer *w, const fs_acts *a, int n, fs_error *err)
{
    if (n < 1 || n > a->B || w->written + n > w->B)
        return fs_fail(err, "cache file: %d more sequences do not fit (%d of %d written, chunk capacity %d)", n,
                       w->written, w->B, a->B);
    int rc = w->opts.format == FS_CACHE_JSON ? json_put(w, a, n, err)
             : w->opts.format == FS_CACHE_H5 ? fs_cache_h5_put(w, a, n, err)
                                             : fs_cache_st_put(w, a, n, err);
    if (rc == 0)
        w->written += n;
    return rc;
}

int fs_cache_writer_close(fs_cache_writer *w, fs_error *err)
{
    int rc = 0;
    if (w->written != w->B)
        rc = fs_fail(err, "cache file: %d of %d sequences were written", w->written, w->B);
    if (w->opts.format == FS_CACHE_JSON) {
        if (rc == 0 && w->spool_fd >= 0)
            rc = json_write(w, NULL, err);
        if (rc == 0) {
            rc = fs_ostream_close(&w->out, err);
        } else {
            fs_ostream_abort(&w->out);
        }
    } else {
        int (*finish)(fs_cache_writer *, bool, fs_error *) =
            w->opts.format == FS_CACHE_H5 ? fs_cache_h5_close : fs_cache_st_close;
        if (finish(w, rc == 0, err))
            rc = -1;
    }
    writer_free(w);
    return rc;
}

void fs_cache_writer_abort(fs_cache_writer *w)
{
    if (!w)
        return;
    if (w->opts.format == FS_CACHE_JSON)
        fs_ostream_abort(&w->out);
    else
        (w->opts.format == FS_CACHE_H5 ? fs_cache_h5_close : fs_cache_st_close)(w, false, NULL);
    writer_free(w);
}
