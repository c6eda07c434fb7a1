/* Inputs of `fewshot classify` (issue 7): a context JSON {"examples": [k][D], "labels":
 * [k]} and queries as JSON {"examples": [Q][D]} or a 2-D [Q, D] HDF5 dataset. Every
 * malformation is an error naming the file and the field. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fewshot/kvcache.h"
#include "fewshot/seqio.h"
#include "base/fileio.h"
#include "io/h5read.h"

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
    size_t bytes;
    if (fs_size_mul(&bytes, SIZE_MAX, FS_DIMS(n, (size_t)input_dim, sizeof(float))) || !(q->examples = malloc(bytes))) {
        memset(q, 0, sizeof *q);
        return fs_fail_alloc(err, origin, n * (size_t)input_dim * sizeof(float));
    }
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

int fs_kv_queries_load_h5(const char *path, const char *dataset, int input_dim, fs_kv_queries *q, fs_error *err)
{
    memset(q, 0, sizeof *q);
    if (!dataset || !*dataset)
        return fs_fail(err, "%s: HDF5 queries need a dataset path (--queries-path): a 2-D [Q, %d] float32 array",
                       path, input_dim);
    char hint[64];
    snprintf(hint, sizeof hint, "[Q, %d] (query exemplars)", input_dim);
    fs_h5_floats x;
    if (fs_h5_read_floats(path, dataset, 2, hint, &x, err))
        return -1;
    if (x.dims[1] != input_dim) {
        free(x.data);
        return fs_fail(err, "%s: dataset '%s': queries have %d features, the model's input_dim is %d", path, dataset,
                       x.dims[1], input_dim);
    }
    q->count = (size_t)x.dims[0];
    q->dim = input_dim;
    q->examples = x.data;
    return 0;
}
