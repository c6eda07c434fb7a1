/* Reading sequence inputs and small file helpers. */
#include "fewshot/seqio.h"
#include "model/leaves.h"
#include "base/fileio.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int array_shape(const cJSON *v, int *shape, int max_dims, int *ndim)
{
    int nd = 0;
    const cJSON *x = v;
    while (cJSON_IsArray(x)) {
        if (nd == max_dims)
            return -1;
        shape[nd++] = cJSON_GetArraySize(x);
        x = x->child;
        if (!x)
            break;
    }
    *ndim = nd;
    return 0;
}

static int check_rect(const cJSON *v, const int *shape, int nd)
{
    if (nd == 0)
        return cJSON_IsNumber(v) ? 0 : -1;
    if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) != shape[0])
        return -1;
    for (const cJSON *c = v->child; c; c = c->next)
        if (check_rect(c, shape + 1, nd - 1))
            return -1;
    return 0;
}

static void fill(const cJSON *v, int nd, double *out, size_t *pos)
{
    if (nd == 0) {
        out[(*pos)++] = v->valuedouble;
        return;
    }
    for (const cJSON *c = v->child; c; c = c->next)
        fill(c, nd - 1, out, pos);
}

static const char *shape_text(const int *s, int nd, char *buf, size_t n)
{
    buf[0] = 0;
    snprintf(buf, n, "[");
    for (int i = 0; i < nd; i++)
        snprintf(buf + strlen(buf), n - strlen(buf), "%s%d", i ? ", " : "", s[i]);
    snprintf(buf + strlen(buf), n - strlen(buf), "]");
    return buf;
}

int fs_seq_batch_from_json(const cJSON *json, const char *origin, int input_dim, int num_classes,
                           fs_seq_batch *out, fs_error *err)
{
    memset(out, 0, sizeof *out);
    const cJSON *root = json;
    if (!cJSON_IsObject(root))
        return fs_fail(err, "%s: expected a JSON object with keys \"examples\" and \"labels\"", origin);
    const cJSON *ex = cJSON_GetObjectItemCaseSensitive(root, "examples");
    const cJSON *lab = cJSON_GetObjectItemCaseSensitive(root, "labels");
    if (!ex)
        return fs_fail(err, "%s: missing key \"examples\" ([P][%d] or [B][P][%d] numbers)", origin, input_dim,
                       input_dim);
    if (!lab)
        return fs_fail(err, "%s: missing key \"labels\" ([P] or [B][P] integers)", origin);
    int es[4], ls[4], end, lnd;
    char buf[64];
    if (array_shape(ex, es, 4, &end) || (end != 2 && end != 3))
        return fs_fail(err, "%s: examples: expected a [P][%d] or [B][P][%d] array of numbers", origin, input_dim,
                       input_dim);
    if (check_rect(ex, es, end))
        return fs_fail(err, "%s: examples: ragged array or non-numeric element (expected shape %s)", origin,
                       shape_text(es, end, buf, sizeof buf));
    for (int i = 0; i < end; i++)
        if (es[i] == 0)
            return fs_fail(err, "%s: examples: empty array (shape %s)", origin, shape_text(es, end, buf, sizeof buf));
    if (es[end - 1] != input_dim)
        return fs_fail(err, "%s: examples: each example must have input_dim = %d numbers, got %d (the model "
                            "reads %d-dim exemplars: make inputs of that size, see docs/formats.md \"Inputs for a "
                            "model of another size\"; datasets/examples/*_small.json are 64-dim)",
                       origin, input_dim, es[end - 1], input_dim);
    if (array_shape(lab, ls, 4, &lnd) || lnd != end - 1 || check_rect(lab, ls, lnd))
        return fs_fail(err, "%s: labels: expected a %s array of integers matching examples %s", origin,
                       end == 3 ? "[B][P]" : "[P]", shape_text(es, end, buf, sizeof buf));
    for (int i = 0; i < lnd; i++)
        if (ls[i] != es[i])
            return fs_fail(err, "%s: labels: shape %s does not match examples %s", origin,
                           shape_text(ls, lnd, buf, sizeof buf), shape_text(es, end, (char[64]){0}, 64));
    out->batched = end == 3;
    out->B = end == 3 ? es[0] : 1;
    out->P = es[end - 2];
    out->D = input_dim;
    size_t ne, nl;
    if (fs_size_mul(&ne, SIZE_MAX / sizeof(double), FS_DIMS((size_t)out->B, (size_t)out->P, (size_t)out->D)) ||
        fs_size_mul(&nl, INT_MAX, FS_DIMS((size_t)out->B, (size_t)out->P)))
        return fs_fail(err, "%s: examples: %d x %d x %d is too large", origin, out->B, out->P, out->D);
    double *tmp = malloc(sizeof(double) * (ne > nl ? ne : nl));
    out->examples = malloc(sizeof(float) * ne);
    out->labels = malloc(sizeof(int) * nl);
    if (!tmp || !out->examples || !out->labels) {
        free(tmp);
        fs_seq_batch_free(out);
        return fs_fail_alloc(err, origin, sizeof(double) * ne);
    }
    size_t pos = 0;
    fill(ex, end, tmp, &pos);
    for (size_t i = 0; i < ne; i++) {
        if (!isfinite(tmp[i]) || fabs(tmp[i]) > 3.4e38) {
            free(tmp);
            fs_fail(err, "%s: examples: element %zu (sequence %zu, pair %zu) is not a finite float", origin,
                    i % out->D, i / ((size_t)out->P * out->D), (i / out->D) % out->P);
            fs_seq_batch_free(out); /* after the message: it reads out->P and out->D */
            return -1;
        }
        out->examples[i] = (float)tmp[i];
    }
    pos = 0;
    fill(lab, lnd, tmp, &pos);
    for (size_t i = 0; i < nl; i++) {
        double y = tmp[i];
        if (y != floor(y) || y < 0 || y >= num_classes) {
            free(tmp);
            fs_fail(err, "%s: labels: label %g (sequence %zu, pair %zu) must be an integer in [0, %d)", origin, y,
                    i / out->P, i % out->P, num_classes);
            fs_seq_batch_free(out); /* after the message: it reads out->P */
            return -1;
        }
        out->labels[i] = (int)y;
    }
    free(tmp);
    return 0;
}

int fs_seq_batch_load(const char *path, int input_dim, int num_classes, fs_seq_batch *out, fs_error *err)
{
    memset(out, 0, sizeof *out);
    cJSON *root = fs_json_load(path, err);
    if (!root)
        return -1;
    int rc = fs_seq_batch_from_json(root, path, input_dim, num_classes, out, err);
    cJSON_Delete(root);
    return rc;
}

void fs_seq_batch_free(fs_seq_batch *s)
{
    free(s->examples);
    free(s->labels);
    memset(s, 0, sizeof *s);
}

void fs_acts_set_inputs(fs_acts *a, const float *examples, const int *labels, int b0, int nseq)
{
    int P = a->P, D = a->cfg.input_dim;
    memcpy(fs_leaf_ptr(a, L_EXAMPLES, b0), examples, sizeof(float) * (size_t)nseq * P * D);
    float *lab = fs_leaf_ptr(a, L_LABELS, b0);
    for (size_t i = 0; i < (size_t)nseq * P; i++)
        lab[i] = (float)labels[i];
}
