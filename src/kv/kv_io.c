/* Inputs of `fewshot classify` (issue 7): a context JSON {"examples": [k][D], "labels":
 * [k]} and queries as JSON {"examples": [Q][D]} or a 2-D [Q, D] HDF5 dataset. Every
 * malformation is an error naming the file and the field. */
#include <cjson/cJSON.h>
#include <hdf5.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fewshot/kvcache.h"
#include "fewshot/seqio.h"
#include "base/fileio.h"

void fs_kv_context_free(fs_kv_context *ctx)
{
    free(ctx->examples);
    free(ctx->labels);
    memset(ctx, 0, sizeof *ctx);
}

void fs_kv_queries_free(fs_kv_queries *q)
{
    free(q->examples);
    free(q->labels);
    memset(q, 0, sizeof *q);
}

/* Context labels, when given as a flat array: integers in [0, C). */
static int check_labels(const cJSON *labels, const char *origin, int C, fs_error *err)
{
    int i = 0;
    for (const cJSON *y = cJSON_IsArray(labels) ? labels->child : NULL; y; y = y->next, i++)
        if (cJSON_IsNumber(y) && (y->valuedouble != floor(y->valuedouble) || y->valuedouble < 0 || y->valuedouble >= C))
            return fs_fail(err, "%s: labels[%d]: label %g is out of range: expected an integer in [0, %d) (num_classes)",
                           origin, i, y->valuedouble, C);
    return 0;
}

int fs_kv_context_from_json(const cJSON *json, const char *origin, const fs_model_config *cfg, fs_kv_context *ctx,
                            fs_error *err)
{
    memset(ctx, 0, sizeof *ctx);
    const cJSON *root = json;
    const cJSON *ex = cJSON_IsObject(root) ? cJSON_GetObjectItemCaseSensitive(root, "examples") : NULL;
    if (cJSON_IsArray(ex) && cJSON_GetArraySize(ex) == 0)
        return fs_fail(err, "%s: examples: empty context: need at least one exemplar-label pair ([k][%d], k >= 1)",
                       origin, cfg->input_dim);
    if (check_labels(cJSON_IsObject(root) ? cJSON_GetObjectItemCaseSensitive(root, "labels") : NULL, origin,
                     cfg->num_classes, err))
        return -1;
    fs_seq_batch b;
    if (fs_seq_batch_from_json(root, origin, cfg->input_dim, cfg->num_classes, &b, err))
        return -1;
    if (b.batched) {
        fs_seq_batch_free(&b);
        return fs_fail(err, "%s: examples: expected one context [k][%d] (k pairs), not a batch [B][k][%d]", origin,
                       cfg->input_dim, cfg->input_dim);
    }
    ctx->pairs = b.P;
    ctx->dim = b.D;
    ctx->examples = b.examples;
    ctx->labels = b.labels;
    return 0;
}

int fs_kv_context_load(const char *path, const fs_model_config *cfg, fs_kv_context *ctx, fs_error *err)
{
    memset(ctx, 0, sizeof *ctx);
    cJSON *root = fs_json_load(path, err);
    if (!root)
        return -1;
    int rc = fs_kv_context_from_json(root, path, cfg, ctx, err);
    cJSON_Delete(root);
    return rc;
}

/* One query row: exactly `dim` finite float32 numbers. */
static int query_row(const cJSON *row, const char *origin, size_t i, int dim, float *out, fs_error *err)
{
    if (!cJSON_IsArray(row) || cJSON_GetArraySize(row) != dim)
        return fs_fail(err, "%s: examples[%zu]: expected %d numbers (the model's input_dim), got %s %d "
                            "(inputs for a model of another size: docs/formats.md)", origin, i,
                       dim, cJSON_IsArray(row) ? "an array of" : "a non-array; size",
                       cJSON_IsArray(row) ? cJSON_GetArraySize(row) : 0);
    int j = 0;
    for (const cJSON *x = row->child; x; x = x->next, j++) {
        if (!cJSON_IsNumber(x) || !isfinite(x->valuedouble) || fabs(x->valuedouble) > 3.4e38)
            return fs_fail(err, "%s: examples[%zu][%d]: expected a finite float32 number", origin, i, j);
        out[j] = (float)x->valuedouble;
    }
    return 0;
}

/* Optional query labels: [Q] whole numbers >= 0 (the CLI checks them against num_classes). */
static int query_labels(const cJSON *labels, const char *origin, size_t n, fs_kv_queries *q, fs_error *err)
{
    if (!cJSON_IsArray(labels) || (size_t)cJSON_GetArraySize(labels) != n)
        return fs_fail(err, "%s: labels: expected an array of %zu class indices (one per query)", origin, n);
    q->labels = malloc(sizeof(int) * n);
    if (!q->labels)
        return fs_fail(err, "%s: labels: out of memory", origin);
    size_t i = 0;
    for (const cJSON *y = labels->child; y; y = y->next, i++) {
        if (!cJSON_IsNumber(y) || y->valuedouble != floor(y->valuedouble) || y->valuedouble < 0 ||
            y->valuedouble > 1e9)
            return fs_fail(err, "%s: labels[%zu]: expected a class index (a whole number >= 0)", origin, i);
        q->labels[i] = (int)y->valuedouble;
    }
    return 0;
}

int fs_kv_queries_from_json(const cJSON *json, const char *origin, int input_dim, fs_kv_queries *q, fs_error *err)
{
    memset(q, 0, sizeof *q);
    const cJSON *root = json;
    if (!cJSON_IsObject(root))
        return fs_fail(err, "%s: expected a JSON object with key \"examples\" ([Q][%d] numbers)", origin, input_dim);
    const cJSON *ex = cJSON_GetObjectItemCaseSensitive(root, "examples");
    if (!ex)
        return fs_fail(err, "%s: missing key \"examples\" ([Q][%d] numbers)", origin, input_dim);
    if (!cJSON_IsArray(ex))
        return fs_fail(err, "%s: examples: expected an array [Q][%d] of query exemplars", origin, input_dim);
    size_t n = (size_t)cJSON_GetArraySize(ex);
    if (n == 0)
        return fs_fail(err, "%s: examples: no queries (expected [Q][%d] with Q >= 1)", origin, input_dim);
    q->count = n;
    q->dim = input_dim;
    q->examples = malloc(sizeof(float) * n * (size_t)input_dim);
    size_t i = 0;
    for (const cJSON *row = ex->child; row; row = row->next, i++)
        if (query_row(row, origin, i, input_dim, q->examples + i * input_dim, err)) {
            fs_kv_queries_free(q);
            return -1;
        }
    const cJSON *labels = cJSON_GetObjectItemCaseSensitive(root, "labels");
    if (labels && query_labels(labels, origin, n, q, err)) {
        fs_kv_queries_free(q);
        return -1;
    }
    return 0;
}

int fs_kv_queries_load_json(const char *path, int input_dim, fs_kv_queries *q, fs_error *err)
{
    memset(q, 0, sizeof *q);
    cJSON *root = fs_json_load(path, err);
    if (!root)
        return -1;
    int rc = fs_kv_queries_from_json(root, path, input_dim, q, err);
    cJSON_Delete(root);
    return rc;
}

/* ---- HDF5 ---- */

typedef struct {
    hid_t file, dset, space, type;
} h5_open;

static void h5_close(h5_open *h)
{
    if (h->type >= 0) H5Tclose(h->type);
    if (h->space >= 0) H5Sclose(h->space);
    if (h->dset >= 0) H5Dclose(h->dset);
    if (h->file >= 0) H5Fclose(h->file);
}

/* Check type (float32/64), rank 2, [Q >= 1, input_dim]; read as float32; all finite. */
static int h5_read_queries(h5_open *h, const char *file, const char *path, int input_dim, fs_kv_queries *q,
                           fs_error *err)
{
    H5T_class_t cls = H5Tget_class(h->type);
    size_t size = H5Tget_size(h->type);
    if (cls != H5T_FLOAT || (size != 4 && size != 8))
        return fs_fail(err, "%s: dataset '%s': expected float32 query exemplars, found a non-float type of %zu bytes",
                       file, path, size);
    int rank = H5Sget_simple_extent_ndims(h->space);
    hsize_t dims[H5S_MAX_RANK];
    if (rank < 0 || rank > H5S_MAX_RANK || H5Sget_simple_extent_dims(h->space, dims, NULL) < 0)
        return fs_fail(err, "%s: dataset '%s': cannot read its shape", file, path);
    if (rank != 2) {
        char shape[256] = "";
        for (int i = 0; i < rank && strlen(shape) < 200; i++)
            snprintf(shape + strlen(shape), sizeof shape - strlen(shape), "%s%llu", i ? ", " : "",
                     (unsigned long long)dims[i]);
        return fs_fail(err, "%s: dataset '%s': expected rank 2 [Q, %d] (query exemplars), found rank %d [%s]", file,
                       path, input_dim, rank, shape);
    }
    if (dims[1] != (hsize_t)input_dim)
        return fs_fail(err, "%s: dataset '%s': queries have %llu features, the model's input_dim is %d", file, path,
                       (unsigned long long)dims[1], input_dim);
    if (dims[0] < 1 || dims[0] > SIZE_MAX / sizeof(float) / (size_t)input_dim / 2)
        return fs_fail(err, "%s: dataset '%s': expected 1 or more queries, found %llu", file, path,
                       (unsigned long long)dims[0]);
    q->count = (size_t)dims[0];
    q->dim = input_dim;
    q->examples = malloc(sizeof(float) * q->count * (size_t)input_dim);
    if (!q->examples || H5Dread(h->dset, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, q->examples) < 0)
        return fs_fail(err, "%s: dataset '%s': reading %zu x %d values failed", file, path, q->count, input_dim);
    for (size_t i = 0; i < q->count * (size_t)input_dim; i++)
        if (!isfinite(q->examples[i]))
            return fs_fail(err, "%s: dataset '%s': non-finite value at [%zu][%zu]", file, path, i / input_dim,
                           i % input_dim);
    return 0;
}

/* Every prefix of `path` must be a link in the file (H5Lexists needs the parents). */
static int h5_path_exists(hid_t f, const char *path)
{
    char prefix[1024];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof prefix)
        return 0;
    for (size_t i = 1; i <= n; i++) {
        if (i < n && path[i] != '/')
            continue;
        memcpy(prefix, path, i);
        prefix[i] = '\0';
        if (H5Lexists(f, prefix, H5P_DEFAULT) <= 0)
            return 0;
    }
    return 1;
}

int fs_kv_queries_load_h5(const char *path, const char *dataset, int input_dim, fs_kv_queries *q, fs_error *err)
{
    memset(q, 0, sizeof *q);
    if (!dataset || !*dataset)
        return fs_fail(err, "%s: HDF5 queries need a dataset path (--queries-path): a 2-D [Q, %d] float32 array",
                       path, input_dim);
    if (access(path, R_OK) != 0)
        return fs_fail(err, "%s: cannot read the HDF5 queries file (missing or unreadable)", path);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL); /* we report our own messages */
    h5_open h = {-1, -1, -1, -1};
    int rc = -1;
    if ((h.file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT)) < 0)
        fs_fail(err, "%s: not a readable HDF5 file", path);
    else if (!h5_path_exists(h.file, dataset))
        fs_fail(err, "%s: no dataset '%s' in the file (--queries-path)", path, dataset);
    else if ((h.dset = H5Dopen2(h.file, dataset, H5P_DEFAULT)) < 0)
        fs_fail(err, "%s: '%s' is not a dataset", path, dataset);
    else if ((h.space = H5Dget_space(h.dset)) < 0 || (h.type = H5Dget_type(h.dset)) < 0)
        fs_fail(err, "%s: dataset '%s': cannot read its shape or type", path, dataset);
    else
        rc = h5_read_queries(&h, path, dataset, input_dim, q, err);
    h5_close(&h);
    if (rc)
        fs_kv_queries_free(q);
    return rc;
}
