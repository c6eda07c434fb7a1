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

/* ---- batches of contexts (--contexts FILE.h5) ---- */

void fs_kv_batch_inputs_free(fs_kv_batch_inputs *in)
{
    for (int r = 0; r < in->rows; r++) {
        if (in->contexts)
            fs_kv_context_free(&in->contexts[r]);
        if (in->queries)
            fs_kv_queries_free(&in->queries[r]);
    }
    free(in->contexts);
    free(in->queries);
    memset(in, 0, sizeof *in);
}

/* A whole number in [lo, hi]. */
static bool whole_in(double x, double lo, double hi) { return x == floor(x) && x >= lo && x <= hi; }

/* The optional datasets beside examples/labels. */
typedef struct {
    double *lengths;       /* [B] */
    double *queries;       /* [B][Q][D] */
    double *query_labels;  /* [B][Q] */
    int Q;
} batch_extras;

static int read_extras(fs_seq_h5 *h5, const char *path, int B, int P, int D, int C, batch_extras *x, fs_error *err)
{
    int dims[3], rc;
    memset(x, 0, sizeof *x);
    if ((rc = fs_seq_h5_read_extra(h5, "lengths", 1, "[B] whole numbers of real pairs", dims, &x->lengths, err)) < 0)
        return -1;
    if (rc == 0 && dims[0] != B)
        return fs_fail(err, "%s: lengths: %d entries, expected one per row of examples (B = %d)", path, dims[0], B);
    for (int b = 0; x->lengths && b < B; b++) {
        if (x->lengths[b] == 0)
            return fs_fail(err, "%s: lengths[%d] = 0 hides every token of row %d: expected 1..%d real pairs", path, b,
                           b, P);
        if (!whole_in(x->lengths[b], 1, P))
            return fs_fail(err, "%s: lengths[%d] = %g: expected a whole number of real pairs in 1..%d (P)", path, b,
                           x->lengths[b], P);
    }
    if ((rc = fs_seq_h5_read_extra(h5, "queries", 3, "[B][Q][D] floats", dims, &x->queries, err)) < 0)
        return -1;
    if (rc == 0) {
        if (dims[0] != B || dims[2] != D)
            return fs_fail(err, "%s: queries: shape [%d][%d][%d], expected [%d][Q][%d] (B rows of the model's "
                                "input_dim %d)",
                           path, dims[0], dims[1], dims[2], B, D, D);
        x->Q = dims[1];
        for (size_t i = 0; i < (size_t)B * x->Q * D; i++)
            if (fabs(x->queries[i]) > 3.4e38)
                return fs_fail(err, "%s: queries: element %zu is outside the float32 range", path, i);
    }
    int has_labels = fs_seq_h5_read_extra(h5, "query_labels", 2, "[B][Q] integers", dims, &x->query_labels, err);
    if (has_labels < 0)
        return -1;
    if (has_labels == 0 && !x->queries)
        return fs_fail(err, "%s: query_labels needs a queries dataset [B][Q][%d] beside it", path, D);
    if (has_labels == 0 && (dims[0] != B || dims[1] != x->Q))
        return fs_fail(err, "%s: query_labels: shape [%d][%d], expected [%d][%d] (one per query)", path, dims[0],
                       dims[1], B, x->Q);
    for (size_t i = 0; x->query_labels && i < (size_t)B * x->Q; i++)
        if (!whole_in(x->query_labels[i], 0, C - 1))
            return fs_fail(err, "%s: query_labels[%zu][%zu] = %g is out of range: expected an integer in [0, %d) "
                                "(num_classes)",
                           path, i / x->Q, i % x->Q, x->query_labels[i], C);
    return 0;
}

/* Row b of the file: context pairs and queries. */
static int split_row(const char *path, int b, int P, int D, const float *ex, const int *lab, const batch_extras *x,
                     fs_kv_context *ctx, fs_kv_queries *q, fs_error *err)
{
    int n = x->lengths ? (int)x->lengths[b] : P, pairs = x->queries ? n : n - 1;
    size_t nq = x->queries ? (size_t)x->Q : 1;
    if (pairs < 1)
        return fs_fail(err, "%s: row %d: %d real pair%s leave%s no context pair before the query (the last real "
                            "pair; without a queries dataset a row needs >= 2 pairs)",
                       path, b, n, n == 1 ? "" : "s", n == 1 ? "s" : "");
    const float *row = ex + (size_t)b * P * D;
    const int *row_lab = lab + (size_t)b * P;
    ctx->pairs = pairs;
    ctx->dim = q->dim = D;
    q->count = nq;
    ctx->examples = malloc(sizeof(float) * (size_t)pairs * D);
    ctx->labels = malloc(sizeof(int) * (size_t)pairs);
    q->examples = malloc(sizeof(float) * nq * D);
    q->labels = (!x->queries || x->query_labels) ? malloc(sizeof(int) * nq) : NULL;
    if (!ctx->examples || !ctx->labels || !q->examples || (!q->labels && (!x->queries || x->query_labels)))
        return fs_fail(err, "%s: row %d: out of memory", path, b);
    memcpy(ctx->examples, row, sizeof(float) * (size_t)pairs * D);
    memcpy(ctx->labels, row_lab, sizeof(int) * (size_t)pairs);
    if (!x->queries) {
        memcpy(q->examples, row + (size_t)pairs * D, sizeof(float) * D);
        q->labels[0] = row_lab[pairs];
        return 0;
    }
    for (size_t i = 0; i < nq * D; i++)
        q->examples[i] = (float)x->queries[(size_t)b * nq * D + i];
    for (size_t i = 0; q->labels && i < nq; i++)
        q->labels[i] = (int)x->query_labels[(size_t)b * nq + i];
    return 0;
}

int fs_kv_batch_inputs_load_h5(const char *path, const fs_model_config *cfg, fs_kv_batch_inputs *in, fs_error *err)
{
    memset(in, 0, sizeof *in);
    int B, P, D = cfg->input_dim;
    fs_seq_h5 *h5;
    if (!fs_file_is_hdf5(path))
        return fs_fail(err, "%s: not an HDF5 file: --contexts expects datasets examples [B][P][%d] and labels [B][P]",
                       path, D);
    if (fs_seq_h5_open(&h5, path, D, cfg->num_classes, &B, &P, err))
        return -1;
    size_t n_ex, n_lab;
    float *ex = NULL;
    int *lab = NULL, rc = -1;
    batch_extras x = {0};
    if (fs_size_mul(&n_ex, fs_memory_limit(), FS_DIMS((size_t)B, (size_t)P, (size_t)D, sizeof(float))) ||
        fs_size_mul(&n_lab, fs_memory_limit(), FS_DIMS((size_t)B, (size_t)P, sizeof(int))) ||
        !(ex = malloc(n_ex)) || !(lab = malloc(n_lab))) {
        fs_fail_alloc(err, path, (size_t)B * P * D * sizeof(float));
        goto done;
    }
    if (fs_seq_h5_read(h5, 0, B, ex, lab, err) || read_extras(h5, path, B, P, D, cfg->num_classes, &x, err))
        goto done;
    in->contexts = calloc((size_t)B, sizeof *in->contexts);
    in->queries = calloc((size_t)B, sizeof *in->queries);
    if (!in->contexts || !in->queries) {
        fs_fail(err, "%s: out of memory for %d rows", path, B);
        goto done;
    }
    in->rows = B;
    rc = 0;
    for (int b = 0; b < B && rc == 0; b++)
        rc = split_row(path, b, P, D, ex, lab, &x, &in->contexts[b], &in->queries[b], err);
done:
    if (rc)
        fs_kv_batch_inputs_free(in);
    free(ex), free(lab), free(x.lengths), free(x.queries), free(x.query_labels);
    fs_seq_h5_close(h5);
    return rc;
}
