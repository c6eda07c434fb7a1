/* Safetensors reader/writer, F32 only. See include/fewshot/safetensors.h. */
#include "fewshot/safetensors.h"
#include "io/st_header.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "base/fileio.h"

#define ST_MAX_HEADER ((uint64_t)100 * 1000 * 1000) /* anything larger is not a real header */
#define ST_MAX_EXACT ((uint64_t)1 << 53)           /* largest integer a JSON double holds exactly */
#define ST_ALIGN 64                                 /* alignment of tensor buffers we allocate */

/* ---------------------------------------------------------------- small helpers */

static int host_is_little_endian(void)
{
    const uint16_t one = 1;
    unsigned char first;
    memcpy(&first, &one, 1);
    return first == 1;
}

/* Swap the bytes of n 4-byte words in place (only needed on big-endian hosts). */
static void swap32_inplace(void *buf, size_t n)
{
    unsigned char *p = buf;
    for (size_t i = 0; i < n; i++, p += 4) {
        unsigned char t0 = p[0], t1 = p[1];
        p[0] = p[3];
        p[1] = p[2];
        p[2] = t1;
        p[3] = t0;
    }
}

static uint64_t load_u64_le(const unsigned char b[8])
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | b[i];
    return v;
}

static void store_u64_le(unsigned char b[8], uint64_t v)
{
    for (int i = 0; i < 8; i++)
        b[i] = (unsigned char)(v >> (8 * i));
}

static char *dup_string(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

/* Index of the first NaN/Inf among n floats, or n if all are finite. */
static size_t first_nonfinite(const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t bits;
        memcpy(&bits, &x[i], 4);
        if ((bits & 0x7f800000u) == 0x7f800000u)
            return i;
    }
    return n;
}

/* Product of the dims into *numel; -1 if numel * 4 bytes would not be exact/representable. */
static int shape_numel(int ndim, const int64_t *shape, size_t *numel)
{
    size_t f[FS_ST_MAX_DIMS];
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return -1;
        f[i] = (size_t)shape[i];
    }
    const uint64_t limit = (ST_MAX_EXACT / 4 < SIZE_MAX / 4) ? ST_MAX_EXACT / 4 : SIZE_MAX / 4;
    return fs_size_mul(numel, (size_t)limit, ndim, f);
}

/* "[64, 512]" into buf. */
static const char *shape_str(char *buf, size_t size, int ndim, const int64_t *shape)
{
    size_t len = 0;
    buf[0] = '\0';
    len += (size_t)snprintf(buf, size, "[");
    for (int i = 0; i < ndim && len < size; i++)
        len += (size_t)snprintf(buf + len, size - len, "%s%" PRId64, i ? ", " : "", shape[i]);
    if (len < size)
        snprintf(buf + len, size - len, "]");
    return buf;
}

/* Up to 24 bytes of `s` with non-printable bytes shown as '?', for error messages. */
static const char *snippet(char out[32], const char *s)
{
    size_t i = 0;
    for (; i < 24 && s[i]; i++)
        out[i] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
    out[i] = '\0';
    return out;
}

static float *alloc_floats(size_t numel)
{
    size_t bytes = numel * 4;
    bytes = (bytes + ST_ALIGN - 1) / ST_ALIGN * ST_ALIGN;
    if (bytes == 0)
        bytes = ST_ALIGN; /* never hand out NULL, even for empty tensors */
    return aligned_alloc(ST_ALIGN, bytes);
}

/* ---------------------------------------------------------------- reading */

/* One tensor entry of the header, before its data is read. */
typedef struct {
    fs_st_tensor t;
    uint64_t begin, end; /* data_offsets, relative to the data section */
} st_entry;

typedef struct {
    const char *path;
    FILE *fp;
    uint64_t file_size;
    uint64_t header_len;
    uint64_t data_size; /* bytes after the header */
    st_entry *entries;
    int count;
    char **meta_keys, **meta_values;
    int meta_count;
} st_reader;

static void reader_release(st_reader *r)
{
    if (r->fp)
        fclose(r->fp);
    for (int i = 0; i < r->count; i++)
        free(r->entries[i].t.data);
    free(r->entries);
    for (int i = 0; i < r->meta_count; i++) {
        free(r->meta_keys[i]);
        free(r->meta_values[i]);
    }
    free(r->meta_keys);
    free(r->meta_values);
    memset(r, 0, sizeof *r);
}

static int open_file(st_reader *r, fs_error *err)
{
    r->fp = fopen(r->path, "rb");
    if (!r->fp)
        return fs_fail(err, "%s: cannot open safetensors file: %s", r->path, strerror(errno));
    struct stat st;
    if (fstat(fileno(r->fp), &st) != 0)
        return fs_fail(err, "%s: cannot stat: %s", r->path, strerror(errno));
    if (!S_ISREG(st.st_mode))
        return fs_fail(err, "%s: not a regular file", r->path);
    r->file_size = (uint64_t)st.st_size;
    return 0;
}

/* Read the length prefix and the header text (NUL-terminated, caller frees). */
static int read_header_text(st_reader *r, char **text, fs_error *err)
{
    unsigned char len_bytes[8];
    if (r->file_size < 8)
        return fs_fail(err, "%s: file is %" PRIu64 " bytes, shorter than the 8-byte header length; "
                       "truncated or not a safetensors file", r->path, r->file_size);
    if (fread(len_bytes, 1, 8, r->fp) != 8)
        return fs_fail(err, "%s: cannot read the header length: %s", r->path, strerror(errno));
    r->header_len = load_u64_le(len_bytes);
    if (r->header_len > ST_MAX_HEADER)
        return fs_fail(err, "%s: header length %" PRIu64 " is absurd (limit %" PRIu64 " bytes); "
                       "not a safetensors file?", r->path, r->header_len, ST_MAX_HEADER);
    if (r->header_len > r->file_size - 8)
        return fs_fail(err, "%s: header length %" PRIu64 " exceeds the %" PRIu64 " bytes after the "
                       "length field; the file is truncated?", r->path, r->header_len, r->file_size - 8);
    if (r->header_len == 0)
        return fs_fail(err, "%s: header is empty (length 0); expected a JSON object", r->path);
    r->data_size = r->file_size - 8 - r->header_len;

    char *buf = malloc((size_t)r->header_len + 1);
    if (!buf)
        return fs_fail(err, "%s: out of memory for a %" PRIu64 "-byte header", r->path, r->header_len);
    if (fread(buf, 1, (size_t)r->header_len, r->fp) != (size_t)r->header_len) {
        free(buf);
        return fs_fail(err, "%s: cannot read the %" PRIu64 "-byte header; the file is truncated?",
                       r->path, r->header_len);
    }
    buf[r->header_len] = '\0';
    if (strlen(buf) != (size_t)r->header_len) {
        size_t at = strlen(buf);
        free(buf);
        return fs_fail(err, "%s: header contains a NUL byte at offset %zu; expected JSON text", r->path, at);
    }
    *text = buf;
    return 0;
}

static int parse_header_json(const st_reader *r, const char *text, cJSON **root, fs_error *err)
{
    const char *end = NULL;
    char snip[32];
    *root = cJSON_ParseWithOpts(text, &end, 1);
    if (!*root) {
        const char *at = end ? end : cJSON_GetErrorPtr();
        if (!at || at < text || at > text + r->header_len)
            at = text;
        return fs_fail(err, "%s: header is not valid JSON (error near byte %td: \"%s\")", r->path,
                       at - text, snippet(snip, at));
    }
    if (!cJSON_IsObject(*root)) {
        cJSON_Delete(*root);
        *root = NULL;
        return fs_fail(err, "%s: header is not a JSON object (it starts with \"%s\")", r->path,
                       snippet(snip, text));
    }
    return 0;
}

/* A JSON number that is a non-negative integer representable exactly. */
static int json_uint(const cJSON *item, uint64_t *out)
{
    if (!cJSON_IsNumber(item))
        return -1;
    double d = item->valuedouble;
    if (!isfinite(d) || d < 0 || d != floor(d) || d > (double)ST_MAX_EXACT)
        return -1;
    *out = (uint64_t)d;
    return 0;
}

static int parse_metadata(st_reader *r, const cJSON *meta, fs_error *err)
{
    if (r->meta_keys)
        return fs_fail(err, "%s: \"__metadata__\" appears twice in the header", r->path);
    if (!cJSON_IsObject(meta))
        return fs_fail(err, "%s: \"__metadata__\" is not an object of strings", r->path);
    int n = cJSON_GetArraySize(meta);
    r->meta_keys = calloc((size_t)n + 1, sizeof(char *));
    r->meta_values = calloc((size_t)n + 1, sizeof(char *));
    if (!r->meta_keys || !r->meta_values)
        return fs_fail(err, "%s: out of memory for metadata", r->path);
    for (const cJSON *it = meta->child; it; it = it->next) {
        if (!cJSON_IsString(it))
            return fs_fail(err, "%s: \"__metadata__\" entry '%s' is not a string", r->path, it->string);
        for (int i = 0; i < r->meta_count; i++)
            if (strcmp(r->meta_keys[i], it->string) == 0)
                return fs_fail(err, "%s: duplicate \"__metadata__\" key '%s'", r->path, it->string);
        char *k = dup_string(it->string), *v = dup_string(it->valuestring);
        if (!k || !v) {
            free(k);
            free(v);
            return fs_fail(err, "%s: out of memory for metadata", r->path);
        }
        r->meta_keys[r->meta_count] = k;
        r->meta_values[r->meta_count] = v;
        r->meta_count++;
    }
    return 0;
}

static int parse_dtype(const st_reader *r, const char *name, const cJSON *entry, fs_error *err)
{
    const cJSON *dtype = cJSON_GetObjectItemCaseSensitive(entry, "dtype");
    if (!dtype)
        return fs_fail(err, "%s: tensor '%s': missing \"dtype\"", r->path, name);
    if (!cJSON_IsString(dtype))
        return fs_fail(err, "%s: tensor '%s': \"dtype\" is not a string", r->path, name);
    if (strcmp(dtype->valuestring, "F32") != 0)
        return fs_fail(err, "%s: tensor '%s': dtype \"%s\" is not supported (only F32)", r->path, name,
                       dtype->valuestring);
    return 0;
}

static int parse_shape(const st_reader *r, const cJSON *entry, fs_st_tensor *t, fs_error *err)
{
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(entry, "shape");
    if (!cJSON_IsArray(shape))
        return fs_fail(err, "%s: tensor '%s': %s", r->path, t->name,
                       shape ? "\"shape\" is not an array" : "missing \"shape\"");
    int ndim = cJSON_GetArraySize(shape);
    if (ndim > FS_ST_MAX_DIMS)
        return fs_fail(err, "%s: tensor '%s': shape has %d dims (at most %d supported)", r->path,
                       t->name, ndim, FS_ST_MAX_DIMS);
    t->ndim = 0;
    for (const cJSON *d = shape->child; d; d = d->next) {
        uint64_t v;
        if (json_uint(d, &v) != 0)
            return fs_fail(err, "%s: tensor '%s': shape[%d] is not a non-negative integer", r->path,
                           t->name, t->ndim);
        t->shape[t->ndim++] = (int64_t)v;
    }
    char s[256];
    if (shape_numel(t->ndim, t->shape, &t->numel) != 0)
        return fs_fail(err, "%s: tensor '%s': shape %s has too many elements", r->path, t->name,
                       shape_str(s, sizeof s, t->ndim, t->shape));
    return 0;
}

static int parse_offsets(const st_reader *r, const cJSON *entry, st_entry *e, fs_error *err)
{
    const char *name = e->t.name;
    const cJSON *offs = cJSON_GetObjectItemCaseSensitive(entry, "data_offsets");
    if (!offs)
        return fs_fail(err, "%s: tensor '%s': missing \"data_offsets\"", r->path, name);
    if (!cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2 || json_uint(offs->child, &e->begin) != 0 ||
        json_uint(offs->child->next, &e->end) != 0)
        return fs_fail(err, "%s: tensor '%s': \"data_offsets\" must be [begin, end] with non-negative "
                       "integers", r->path, name);
    if (e->begin > e->end)
        return fs_fail(err, "%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] has begin > end",
                       r->path, name, e->begin, e->end);
    if (e->end > r->data_size)
        return fs_fail(err, "%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] extend past the end "
                       "of the data section (%" PRIu64 " bytes); the file is truncated?", r->path, name,
                       e->begin, e->end, r->data_size);
    uint64_t want = (uint64_t)e->t.numel * 4;
    if (e->end - e->begin != want) {
        char s[256];
        return fs_fail(err, "%s: tensor '%s': shape %s needs %" PRIu64 " bytes of F32 but data_offsets "
                       "[%" PRIu64 ", %" PRIu64 "] span %" PRIu64 " bytes", r->path, name,
                       shape_str(s, sizeof s, e->t.ndim, e->t.shape), want, e->begin, e->end,
                       e->end - e->begin);
    }
    return 0;
}

static int parse_tensor_entry(const st_reader *r, const cJSON *entry, st_entry *e, fs_error *err)
{
    const char *name = entry->string;
    size_t len = strlen(name);
    if (len == 0)
        return fs_fail(err, "%s: a tensor has an empty name", r->path);
    if (len >= FS_ST_MAX_NAME)
        return fs_fail(err, "%s: tensor name '%.40s...' is %zu bytes (limit %d)", r->path, name, len,
                       FS_ST_MAX_NAME - 1);
    memcpy(e->t.name, name, len + 1);
    if (!cJSON_IsObject(entry))
        return fs_fail(err, "%s: tensor '%s': entry is not an object", r->path, name);
    if (parse_dtype(r, name, entry, err) || parse_shape(r, entry, &e->t, err) || parse_offsets(r, entry, e, err))
        return -1;
    return 0;
}

static int parse_entries(st_reader *r, const cJSON *root, fs_error *err)
{
    int n = cJSON_GetArraySize(root);
    r->entries = calloc((size_t)n + 1, sizeof(st_entry));
    if (!r->entries)
        return fs_fail(err, "%s: out of memory for %d header entries", r->path, n);
    for (const cJSON *it = root->child; it; it = it->next) {
        if (strcmp(it->string, "__metadata__") == 0) {
            if (parse_metadata(r, it, err) != 0)
                return -1;
            continue;
        }
        if (parse_tensor_entry(r, it, &r->entries[r->count], err) != 0)
            return -1;
        r->count++;
    }
    return 0;
}

static int cmp_entry_name(const void *a, const void *b)
{
    return strcmp(((const st_entry *)a)->t.name, ((const st_entry *)b)->t.name);
}

static int cmp_entry_ptr_begin(const void *a, const void *b)
{
    const st_entry *x = *(const st_entry *const *)a, *y = *(const st_entry *const *)b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : (x->end > y->end);
}

/* Entries sorted by name; reject duplicates. */
static int sort_and_check_names(st_reader *r, fs_error *err)
{
    qsort(r->entries, (size_t)r->count, sizeof(st_entry), cmp_entry_name);
    for (int i = 1; i < r->count; i++)
        if (strcmp(r->entries[i - 1].t.name, r->entries[i].t.name) == 0)
            return fs_fail(err, "%s: duplicate tensor name '%s' in the header", r->path, r->entries[i].t.name);
    return 0;
}

/* Tensors must tile the data section exactly: no overlaps, holes or trailing bytes. */
static int check_layout(const st_reader *r, fs_error *err)
{
    const st_entry **by_begin = malloc(((size_t)r->count + 1) * sizeof *by_begin);
    if (!by_begin)
        return fs_fail(err, "%s: out of memory", r->path);
    for (int i = 0; i < r->count; i++)
        by_begin[i] = &r->entries[i];
    qsort(by_begin, (size_t)r->count, sizeof *by_begin, cmp_entry_ptr_begin);

    int rc = 0;
    uint64_t pos = 0;
    const st_entry *prev = NULL;
    for (int i = 0; i < r->count && rc == 0; i++) {
        const st_entry *e = by_begin[i];
        if (e->begin < pos)
            rc = fs_fail(err, "%s: tensors '%s' [%" PRIu64 ", %" PRIu64 "] and '%s' [%" PRIu64 ", %" PRIu64
                         "] overlap in the data section", r->path, prev->t.name, prev->begin, prev->end,
                         e->t.name, e->begin, e->end);
        else if (e->begin > pos)
            rc = fs_fail(err, "%s: hole of %" PRIu64 " unused bytes in the data section before tensor '%s' "
                         "(data_offsets [%" PRIu64 ", %" PRIu64 "]); corrupt header?", r->path,
                         e->begin - pos, e->t.name, e->begin, e->end);
        if (e->end > pos) {
            pos = e->end;
            prev = e;
        }
    }
    if (rc == 0 && pos != r->data_size)
        rc = fs_fail(err, "%s: data section has %" PRIu64 " bytes but the tensors cover only %" PRIu64
                     "; %" PRIu64 " trailing bytes (corrupt header?)", r->path, r->data_size, pos,
                     r->data_size - pos);
    free(by_begin);
    return rc;
}

static int read_tensor_data(st_reader *r, st_entry *e, fs_error *err)
{
    fs_st_tensor *t = &e->t;
    t->data = alloc_floats(t->numel);
    if (!t->data)
        return fs_fail(err, "%s: tensor '%s': out of memory for %zu floats", r->path, t->name, t->numel);
    if (t->numel == 0)
        return 0;
    uint64_t at = 8 + r->header_len + e->begin;
    if (at > (uint64_t)INT64_MAX || fseeko(r->fp, (off_t)at, SEEK_SET) != 0)
        return fs_fail(err, "%s: tensor '%s': cannot seek to offset %" PRIu64 ": %s", r->path, t->name, at,
                       strerror(errno));
    if (fread(t->data, 4, t->numel, r->fp) != t->numel)
        return fs_fail(err, "%s: tensor '%s': short read of %zu bytes at offset %" PRIu64 "; the file is "
                       "truncated or changed while reading?", r->path, t->name, t->numel * 4, at);
    if (!host_is_little_endian())
        swap32_inplace(t->data, t->numel);
    size_t bad = first_nonfinite(t->data, t->numel);
    if (bad < t->numel)
        return fs_fail(err, "%s: tensor '%s': element %zu of %zu is %s; parameters containing NaN/Inf are "
                       "unusable", r->path, t->name, bad, t->numel, isnan(t->data[bad]) ? "NaN" : "Inf");
    return 0;
}

/* Hand the reader's tensors and metadata over to `out`. */
static int move_to_file(st_reader *r, fs_st_file *out, fs_error *err)
{
    out->tensors = calloc((size_t)r->count + 1, sizeof(fs_st_tensor));
    if (!out->tensors)
        return fs_fail(err, "%s: out of memory", r->path);
    for (int i = 0; i < r->count; i++) {
        out->tensors[i] = r->entries[i].t;
        r->entries[i].t.data = NULL;
    }
    out->count = r->count;
    out->meta_keys = r->meta_keys;
    out->meta_values = r->meta_values;
    out->meta_count = r->meta_count;
    r->meta_keys = r->meta_values = NULL;
    r->meta_count = 0;
    return 0;
}

int fs_st_read(const char *path, fs_st_file *out, fs_error *err)
{
    memset(out, 0, sizeof *out);
    st_reader r = {.path = path};
    char *text = NULL;
    cJSON *root = NULL;
    int rc = open_file(&r, err);
    if (rc == 0)
        rc = read_header_text(&r, &text, err);
    if (rc == 0)
        rc = parse_header_json(&r, text, &root, err);
    if (rc == 0)
        rc = parse_entries(&r, root, err);
    if (rc == 0)
        rc = sort_and_check_names(&r, err);
    if (rc == 0)
        rc = check_layout(&r, err);
    for (int i = 0; rc == 0 && i < r.count; i++)
        rc = read_tensor_data(&r, &r.entries[i], err);
    if (rc == 0)
        rc = move_to_file(&r, out, err);
    cJSON_Delete(root);
    free(text);
    reader_release(&r);
    if (rc != 0)
        fs_st_free(out);
    return rc;
}

void fs_st_free(fs_st_file *f)
{
    if (!f)
        return;
    for (int i = 0; i < f->count; i++)
        free(f->tensors[i].data);
    free(f->tensors);
    for (int i = 0; i < f->meta_count; i++) {
        free(f->meta_keys[i]);
        free(f->meta_values[i]);
    }
    free(f->meta_keys);
    free(f->meta_values);
    memset(f, 0, sizeof *f);
}

const fs_st_tensor *fs_st_find(const fs_st_file *f, const char *name)
{
    for (int i = 0; i < f->count; i++)
        if (strcmp(f->tensors[i].name, name) == 0)
            return &f->tensors[i];
    return NULL;
}

const fs_st_tensor *fs_st_get(const fs_st_file *f, const char *what, const char *name, int ndim,
                              const int64_t *shape, fs_error *err)
{
    const fs_st_tensor *t = fs_st_find(f, name);
    if (!t) {
        fs_fail(err, "%s: tensor '%s' is missing", what, name);
        return NULL;
    }
    int same = t->ndim == ndim;
    for (int i = 0; same && i < ndim; i++)
        same = t->shape[i] == shape[i];
    if (!same) {
        char got[256], want[256];
        fs_fail(err, "%s: tensor '%s' has shape %s, expected %s", what, name,
                shape_str(got, sizeof got, t->ndim, t->shape), shape_str(want, sizeof want, ndim, shape));
        return NULL;
    }
    return t;
}

const char *fs_st_meta(const fs_st_file *f, const char *key)
{
    for (int i = 0; i < f->meta_count; i++)
        if (strcmp(f->meta_keys[i], key) == 0)
            return f->meta_values[i];
    return NULL;
}

/* ---------------------------------------------------------------- writing */

/* Growable text buffer; `failed` latches on out-of-memory. */
typedef struct {
    char *p;
    size_t len, cap;
    int failed;
} st_buf;

static void buf_put(st_buf *b, const char *s, size_t n)
{
    if (b->failed)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->failed = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void buf_puts(st_buf *b, const char *s) { buf_put(b, s, strlen(s)); }

static void buf_printf(st_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void buf_printf(st_buf *b, const char *fmt, ...)
{
    char tmp[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof tmp)
        b->failed = 1;
    else
        buf_put(b, tmp, (size_t)n);
}

/* A JSON string literal, escaped the way serde_json does it. */
static void buf_json_string(st_buf *b, const char *s)
{
    buf_put(b, "\"", 1);
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        switch (*c) {
        case '"': buf_puts(b, "\\\""); break;
        case '\\': buf_puts(b, "\\\\"); break;
        case '\b': buf_puts(b, "\\b"); break;
        case '\f': buf_puts(b, "\\f"); break;
        case '\n': buf_puts(b, "\\n"); break;
        case '\r': buf_puts(b, "\\r"); break;
        case '\t': buf_puts(b, "\\t"); break;
        default:
            if (*c < 0x20)
                buf_printf(b, "\\u%04x", *c);
            else
                buf_put(b, (const char *)c, 1);
        }
    }
    buf_put(b, "\"", 1);
}

static int check_tensor_for_write(const char *path, const fs_st_tensor *t, int index, fs_error *err)
{
    size_t len = strnlen(t->name, FS_ST_MAX_NAME);
    if (len == 0)
        return fs_fail(err, "%s: tensor #%d has an empty name", path, index);
    if (len == FS_ST_MAX_NAME)
        return fs_fail(err, "%s: tensor #%d: name is not NUL-terminated within %d bytes", path, index,
                       FS_ST_MAX_NAME);
    if (strcmp(t->name, "__metadata__") == 0)
        return fs_fail(err, "%s: tensor #%d: \"__metadata__\" is reserved and cannot name a tensor", path, index);
    if (t->ndim < 0 || t->ndim > FS_ST_MAX_DIMS)
        return fs_fail(err, "%s: tensor '%s': ndim %d out of range [0, %d]", path, t->name, t->ndim,
                       FS_ST_MAX_DIMS);
    char s[256];
    size_t numel;
    for (int i = 0; i < t->ndim; i++)
        if (t->shape[i] < 0)
            return fs_fail(err, "%s: tensor '%s': negative dimension in shape %s", path, t->name,
                           shape_str(s, sizeof s, t->ndim, t->shape));
    if (shape_numel(t->ndim, t->shape, &numel) != 0)
        return fs_fail(err, "%s: tensor '%s': shape %s has too many elements", path, t->name,
                       shape_str(s, sizeof s, t->ndim, t->shape));
    if (numel != t->numel)
        return fs_fail(err, "%s: tensor '%s': numel %zu does not match shape %s (%zu elements)", path,
                       t->name, t->numel, shape_str(s, sizeof s, t->ndim, t->shape), numel);
    if (numel > 0 && !t->data)
        return fs_fail(err, "%s: tensor '%s': data is NULL", path, t->name);
    size_t bad = numel ? first_nonfinite(t->data, numel) : 0;
    if (bad < numel)
        return fs_fail(err, "%s: tensor '%s': element %zu of %zu is %s; refusing to save non-finite "
                       "parameters", path, t->name, bad, numel, isnan(t->data[bad]) ? "NaN" : "Inf");
    return 0;
}

static int cmp_tensor_ptr_name(const void *a, const void *b)
{
    return strcmp((*(const fs_st_tensor *const *)a)->name, (*(const fs_st_tensor *const *)b)->name);
}

/* Validate all tensors; *order gets them sorted by name (caller frees). */
static int sort_tensors_for_write(const char *path, const fs_st_tensor *tensors, int count,
                                  const fs_st_tensor ***order, fs_error *err)
{
    for (int i = 0; i < count; i++)
        if (check_tensor_for_write(path, &tensors[i], i, err) != 0)
            return -1;
    const fs_st_tensor **o = malloc(((size_t)count + 1) * sizeof *o);
    if (!o)
        return fs_fail(err, "%s: out of memory", path);
    for (int i = 0; i < count; i++)
        o[i] = &tensors[i];
    qsort(o, (size_t)count, sizeof *o, cmp_tensor_ptr_name);
    for (int i = 1; i < count; i++) {
        if (strcmp(o[i - 1]->name, o[i]->name) == 0) {
            fs_fail(err, "%s: duplicate tensor name '%s'", path, o[i]->name);
            free(o);
            return -1;
        }
    }
    *order = o;
    return 0;
}

static int check_meta_for_write(const char *path, const char *const *keys, const char *const *values,
                                int count, fs_error *err)
{
    if (count > 0 && (!keys || !values))
        return fs_fail(err, "%s: %d metadata entries but keys or values is NULL", path, count);
    for (int i = 0; i < count; i++) {
        if (!keys[i] || !values[i])
            return fs_fail(err, "%s: metadata entry #%d has a NULL key or value", path, i);
        for (int j = 0; j < i; j++)
            if (strcmp(keys[i], keys[j]) == 0)
                return fs_fail(err, "%s: duplicate metadata key '%s'", path, keys[i]);
    }
    return 0;
}

/* The JSON header padded with spaces so that 8 + its length is a multiple of 8. */
static int build_header(const char *path, const fs_st_tensor *const *order, int count,
                        const char *const *keys, const char *const *values, int meta_count, st_buf *b,
                        fs_error *err)
{
    buf_puts(b, "{");
    if (meta_count > 0) {
        buf_puts(b, "\"__metadata__\":{");
        for (int i = 0; i < meta_count; i++) {
            if (i)
                buf_puts(b, ",");
            buf_json_string(b, keys[i]);
            buf_puts(b, ":");
            buf_json_string(b, values[i]);
        }
        buf_puts(b, "}");
    }
    uint64_t offset = 0;
    for (int i = 0; i < count; i++) {
        const fs_st_tensor *t = order[i];
        if (i || meta_count > 0)
            buf_puts(b, ",");
        buf_json_string(b, t->name);
        buf_puts(b, ":{\"dtype\":\"F32\",\"shape\":[");
        for (int d = 0; d < t->ndim; d++)
            buf_printf(b, "%s%" PRId64, d ? "," : "", t->shape[d]);
        uint64_t end = offset + (uint64_t)t->numel * 4;
        buf_printf(b, "],\"data_offsets\":[%" PRIu64 ",%" PRIu64 "]}", offset, end);
        offset = end;
    }
    buf_puts(b, "}");
    while (!b->failed && b->len % 8 != 0)
        buf_puts(b, " ");
    if (b->failed)
        return fs_fail(err, "%s: out of memory building the header", path);
    if (b->len > ST_MAX_HEADER)
        return fs_fail(err, "%s: header would be %zu bytes (limit %" PRIu64 ")", path, b->len, ST_MAX_HEADER);
    return 0;
}

/* Write n floats little-endian. */
static int write_floats(FILE *fp, const float *x, size_t n)
{
    if (host_is_little_endian())
        return fwrite(x, 4, n, fp) == n ? 0 : -1;
    float chunk[1024];
    for (size_t i = 0; i < n; i += 1024) {
        size_t m = n - i < 1024 ? n - i : 1024;
        memcpy(chunk, x + i, m * 4);
        swap32_inplace(chunk, m);
        if (fwrite(chunk, 4, m, fp) != m)
            return -1;
    }
    return 0;
}

static int write_contents(FILE *fp, const st_buf *header, const fs_st_tensor *const *order, int count)
{
    unsigned char len_bytes[8];
    store_u64_le(len_bytes, header->len);
    if (fwrite(len_bytes, 1, 8, fp) != 8 || fwrite(header->p, 1, header->len, fp) != header->len)
        return -1;
    for (int i = 0; i < count; i++)
        if (order[i]->numel > 0 && write_floats(fp, order[i]->data, order[i]->numel) != 0)
            return -1;
    return 0;
}

/* Write through fs_outfile: a temporary file renamed (or copied) into place once complete. */
static int write_atomically(const char *path, const st_buf *header, const fs_st_tensor *const *order,
                            int count, fs_error *err)
{
    fs_outfile out;
    if (fs_outfile_begin(&out, path, err))
        return -1;
    int rc = 0;
    FILE *fp = fopen(out.tmp, "wb");
    if (!fp) {
        fs_fail(err, "%s: cannot create temporary file %s: %s", path, out.tmp, strerror(errno));
        fs_outfile_abort(&out);
        return -1;
    }
    if (write_contents(fp, header, order, count) != 0 || fflush(fp) != 0)
        rc = fs_fail(err, "%s: write to %s failed: %s", path, out.tmp, strerror(errno));
    if (fclose(fp) != 0 && rc == 0)
        rc = fs_fail(err, "%s: closing %s failed: %s", path, out.tmp, strerror(errno));
    if (rc != 0) {
        fs_outfile_abort(&out);
        return -1;
    }
    return fs_outfile_commit(&out, err);
}

int fs_st_write(const char *path, const fs_st_tensor *tensors, int count,
                const char *const *meta_keys, const char *const *meta_values, int meta_count,
                fs_error *err)
{
    if (count < 0 || meta_count < 0 || (count > 0 && !tensors))
        return fs_fail(err, "%s: invalid arguments (count %d, meta_count %d)", path, count, meta_count);
    if (check_meta_for_write(path, meta_keys, meta_values, meta_count, err) != 0)
        return -1;
    const fs_st_tensor **order = NULL;
    if (sort_tensors_for_write(path, tensors, count, &order, err) != 0)
        return -1;
    st_buf header = {0};
    int rc = build_header(path, order, count, meta_keys, meta_values, meta_count, &header, err);
    if (rc == 0)
        rc = write_atomically(path, &header, order, count, err);
    free(header.p);
    free(order);
    return rc;
}

int fs_st_header(const char *path, const fs_st_tensor *const *order, int count, const char *const *meta_keys,
                 const char *const *meta_values, int meta_count, char **text, size_t *len, fs_error *err)
{
    if (check_meta_for_write(path, meta_keys, meta_values, meta_count, err) != 0)
        return -1;
    st_buf header = {0};
    if (build_header(path, order, count, meta_keys, meta_values, meta_count, &header, err) != 0) {
        free(header.p);
        return -1;
    }
    *text = header.p;
    *len = header.len;
    return 0;
}
