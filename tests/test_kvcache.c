/* The frozen key-value cache (issue 7): frozen-cache logits equal the full forward's
 * out[P-1], appending pair by pair equals building from the whole context, bad input
 * gives clear errors, and `fewshot classify` works end to end. */
#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fewshot/cache.h"
#include "fewshot/forward.h"
#include "model/leaves.h"
#include "fewshot/kvcache.h"
#include "base/rng.h"
#include "fewshot/seqio.h"
#include "golden_util.h"
#include "base/fileio.h"

#define KV_TOL 1e-5

/* ---- fixtures ---- */

static float *random_rows(size_t rows, int dim, uint64_t seed)
{
    fs_rng_stream r;
    fs_rng_stream_init(&r, seed, 11);
    float *x = malloc(sizeof(float) * rows * dim);
    for (size_t i = 0; i < rows * (size_t)dim; i++)
        x[i] = (float)fs_rng_next_normal(&r);
    return x;
}

static int *random_labels(int n, int C, uint64_t seed)
{
    fs_rng_stream r;
    fs_rng_stream_init(&r, seed, 12);
    int *y = malloc(sizeof(int) * (n > 0 ? n : 1));
    for (int i = 0; i < n; i++)
        y[i] = (int)fs_rng_next_below(&r, (uint32_t)C);
    return y;
}

/* A freshly initialised model whose every parameter is then jittered, so biases and
 * LayerNorm affines are non-trivial too. */
static void random_model(fs_model *m, const fs_model_config *cfg, uint64_t seed)
{
    fs_error err = {{0}};
    fs_model_config c = *cfg;
    c.init_seed = (int64_t)seed;
    cr_assert_eq(fs_model_create(m, &c, &err), 0, "%s", err.msg);
    fs_model_init_params(m);
    fs_rng_stream r;
    fs_rng_stream_init(&r, seed, 13);
    for (size_t i = 0; i < m->layout.total; i++)
        m->params[i] += 0.1f * (2.f * fs_rng_next_float(&r) - 1.f);
}

/* Small configs covering every code path (position kinds, attention-only, qkv bias,
 * no_norm, head dims, odd widths, depth). */
static fs_model_config small_config(int variant)
{
    fs_model_config c;
    fs_model_config_default(&c);
    c.input_dim = 24;
    c.num_classes = 4;
    c.d_model = 32;
    c.num_heads = 4;
    c.depth = 2;
    c.mlp_ratio = 2;
    switch (variant) {
    case 1: c.mlp_ratio = 0; break;
    case 2: c.pos_embedding = FS_POS_APE; break;
    case 3: c.pos_embedding = FS_POS_SINUSOIDAL; break;
    case 4: c.qkv_bias = true; c.num_heads = 2; c.depth = 3; break;
    case 5: c.no_norm = true; c.d_model = 40; c.num_heads = 5; c.input_dim = 7; c.num_classes = 3; break;
    case 6: c.d_model = 48; c.num_heads = 1; c.mlp_ratio = 1.5; c.depth = 1; c.num_classes = 9; break;
    default: break;
    }
    return c;
}
enum { SMALL_VARIANTS = 7 };

/* out[P-1] of the full forward for each query after the context: logits [nq][C]. */
static void full_forward_logits(const fs_model *m, const float *ctx, const int *labels, int pairs, const float *q,
                                int nq, float *logits)
{
    int D = m->cfg.input_dim, C = m->cfg.num_classes, P = pairs + 1;
    fs_error err = {{0}};
    fs_acts a;
    cr_assert_eq(fs_acts_create(&a, &m->cfg, P, nq, &err), 0, "%s", err.msg);
    float *ex = malloc(sizeof(float) * (size_t)nq * P * D);
    int *lab = calloc((size_t)nq * P, sizeof(int));
    for (int b = 0; b < nq; b++) {
        memcpy(ex + (size_t)b * P * D, ctx, sizeof(float) * (size_t)pairs * D);
        memcpy(ex + ((size_t)b * P + pairs) * D, q + (size_t)b * D, sizeof(float) * D);
        memcpy(lab + (size_t)b * P, labels, sizeof(int) * pairs);
    }
    fs_acts_set_inputs(&a, ex, lab, 0, nq);
    fs_forward(m, &a, NULL, nq);
    int out = fs_top_after(&m->cfg, L_OUT);
    for (int b = 0; b < nq; b++)
        memcpy(logits + (size_t)b * C, fs_leaf_ptr(&a, out, b) + (size_t)(P - 1) * C, sizeof(float) * C);
    free(ex);
    free(lab);
    fs_acts_free(&a);
}

static double max_abs_diff(const float *a, const float *b, size_t n)
{
    double worst = 0;
    for (size_t i = 0; i < n; i++)
        worst = fmax(worst, fabs((double)a[i] - b[i]));
    return worst;
}

static void frozen_logits(const fs_model *m, const float *ctx, const int *labels, int pairs, const float *q, int nq,
                          int threads, float *logits)
{
    fs_error err = {{0}};
    fs_kv_cache c;
    cr_assert_eq(fs_kv_init(&c, m, &err), 0, "%s", err.msg);
    cr_assert_eq(fs_kv_build(&c, ctx, labels, pairs, &err), 0, "%s", err.msg);
    fs_kv_freeze(&c);
    cr_assert_eq(fs_kv_classify(&c, q, (size_t)nq, logits, threads, &err), 0, "%s", err.msg);
    fs_kv_free(&c);
}

/* Frozen-cache logits vs the full forward for one model and context length. */
static void check_matches_forward(const fs_model *m, int pairs, int nq, uint64_t seed)
{
    int D = m->cfg.input_dim, C = m->cfg.num_classes;
    float *ctx = random_rows((size_t)pairs, D, seed), *q = random_rows((size_t)nq, D, seed + 1);
    int *labels = random_labels(pairs, C, seed);
    float *want = malloc(sizeof(float) * nq * C), *got = malloc(sizeof(float) * nq * C);
    full_forward_logits(m, ctx, labels, pairs, q, nq, want);
    frozen_logits(m, ctx, labels, pairs, q, nq, 0, got);
    double diff = max_abs_diff(got, want, (size_t)nq * C);
    cr_expect_leq(diff, KV_TOL, "d_model %d heads %d depth %d mlp %g pos %d: %d pairs: frozen vs full forward differ by %g",
                  m->cfg.d_model, m->cfg.num_heads, m->cfg.depth, m->cfg.mlp_ratio, (int)m->cfg.pos_embedding, pairs,
                  diff);
    free(ctx), free(q), free(labels), free(want), free(got);
}

/* ---- frozen cache == full forward ---- */

Test(kvcache, frozen_matches_full_forward_small_models)
{
    static const int lengths[] = {1, 2, 3, 7, 15};
    for (int v = 0; v < SMALL_VARIANTS; v++) {
        fs_model_config cfg = small_config(v);
        fs_model m;
        random_model(&m, &cfg, 100 + v);
        for (size_t i = 0; i < sizeof lengths / sizeof *lengths; i++)
            check_matches_forward(&m, lengths[i], 37, 1000 + 10 * v + i); /* 37: a partial chunk */
        fs_model_free(&m);
    }
}

Test(kvcache, frozen_matches_full_forward_documented_model)
{
    fs_model_config cfg;
    fs_model_config_default(&cfg);
    fs_model m;
    random_model(&m, &cfg, 7);
    static const int lengths[] = {1, 2, 5, 16, 40};
    for (size_t i = 0; i < sizeof lengths / sizeof *lengths; i++)
        check_matches_forward(&m, lengths[i], lengths[i] > 16 ? 5 : 70, 2000 + i);
    fs_model_free(&m);
}

/* Beyond KV_BUILD_FORWARD_PAIRS (256) the build appends the remaining pairs. */
Test(kvcache, frozen_matches_full_forward_long_context)
{
    fs_model_config cfg = small_config(0);
    cfg.num_heads = 2;
    cfg.depth = 1;
    fs_model m;
    random_model(&m, &cfg, 8);
    check_matches_forward(&m, 300, 3, 3000);
    fs_model_free(&m);
}

/* The golden inputs: context = the first P-1 pairs, query = the last exemplar; logits
 * equal the golden out[P-1] (the golden tolerance) and our full forward (1e-5). */
Test(kvcache, golden_models_out_last)
{
    static const char *const models[] = {"doc", "attn_only", "ape", "sinusoidal"};
    for (size_t k = 0; k < sizeof models / sizeof *models; k++)
        for (int f = 0; f < 3; f++) {
            char path[512];
            snprintf(path, sizeof path, GOLDEN_DIR "/%s/forward_%d.json", models[k], f);
            if (access(path, R_OK) != 0)
                continue;
            fs_model m;
            golden_load_model(models[k], &m);
            fs_error err = {{0}};
            fs_seq_batch b;
            cr_assert_eq(fs_seq_batch_load(path, m.cfg.input_dim, m.cfg.num_classes, &b, &err), 0, "%s", err.msg);
            int P = b.P, C = m.cfg.num_classes, D = m.cfg.input_dim;
            cJSON *doc = fs_json_load(path, &err);
            const cJSON *out = cJSON_GetObjectItem(cJSON_GetObjectItem(doc, "cache"), "out");
            cr_assert(cJSON_IsArray(out) && cJSON_GetArraySize(out) == P, "%s: cache.out", path);
            float got[64], mine[64];
            frozen_logits(&m, b.examples, b.labels, P - 1, b.examples + (size_t)(P - 1) * D, 1, 1, got);
            full_forward_logits(&m, b.examples, b.labels, P - 1, b.examples + (size_t)(P - 1) * D, 1, mine);
            const cJSON *row = cJSON_GetArrayItem(out, P - 1);
            for (int c = 0; c < C; c++) {
                double g = cJSON_GetArrayItem(row, c)->valuedouble;
                cr_expect_leq(fabs(got[c] - g), 1e-4 + 1e-4 * fabs(g), "%s: logit %d: %g vs golden %g", path, c,
                              got[c], g);
                cr_expect_leq(fabs(got[c] - mine[c]), KV_TOL, "%s: logit %d: %g vs full forward %g", path, c, got[c],
                              mine[c]);
            }
            cJSON_Delete(doc);
            fs_seq_batch_free(&b);
            fs_model_free(&m);
        }
}

Test(kvcache, result_independent_of_threads)
{
    fs_model_config cfg = small_config(0);
    fs_model m;
    random_model(&m, &cfg, 9);
    int nq = 200, C = cfg.num_classes;
    float *ctx = random_rows(3, cfg.input_dim, 1), *q = random_rows(nq, cfg.input_dim, 2);
    int labels[3] = {0, 1, 2};
    float *one = malloc(sizeof(float) * nq * C), *two = malloc(sizeof(float) * nq * C);
    frozen_logits(&m, ctx, labels, 3, q, nq, 1, one);
    frozen_logits(&m, ctx, labels, 3, q, nq, 2, two);
    cr_expect_eq(memcmp(one, two, sizeof(float) * nq * C), 0, "1 and 2 threads give different logits");
    free(ctx), free(q), free(one), free(two);
    fs_model_free(&m);
}

/* ---- append == build ---- */

static void expect_same_entries(const fs_kv_cache *a, const fs_kv_cache *b, const char *what)
{
    cr_assert_eq(a->seq, b->seq, "%s: seq %d vs %d", what, a->seq, b->seq);
    int hd = a->head_dim;
    for (int l = 0; l < a->depth; l++)
        for (int h = 0; h < a->heads; h++) {
            size_t n = (size_t)a->seq * hd;
            const float *ka = a->layer[l].keys + (size_t)h * a->capacity * hd;
            const float *kb = b->layer[l].keys + (size_t)h * b->capacity * hd;
            const float *va = a->layer[l].values + (size_t)h * a->capacity * hd;
            const float *vb = b->layer[l].values + (size_t)h * b->capacity * hd;
            double dk = max_abs_diff(ka, kb, n), dv = max_abs_diff(va, vb, n);
            cr_expect_leq(dk, KV_TOL, "%s: layer %d head %d keys differ by %g", what, l, h, dk);
            cr_expect_leq(dv, KV_TOL, "%s: layer %d head %d values differ by %g", what, l, h, dv);
        }
}

static void check_append_equals_build(const fs_model *m, int pairs, uint64_t seed)
{
    int D = m->cfg.input_dim;
    float *ctx = random_rows((size_t)pairs, D, seed);
    int *labels = random_labels(pairs, m->cfg.num_classes, seed);
    fs_error err = {{0}};
    fs_kv_cache built, appended;
    cr_assert_eq(fs_kv_init(&built, m, &err), 0, "%s", err.msg);
    cr_assert_eq(fs_kv_init(&appended, m, &err), 0, "%s", err.msg);
    cr_assert_eq(fs_kv_build(&built, ctx, labels, pairs, &err), 0, "%s", err.msg);
    for (int i = 0; i < pairs; i++) {
        cr_assert_eq(fs_kv_append(&appended, ctx + (size_t)i * D, labels[i], &err), 0, "%s", err.msg);
        cr_assert_eq(appended.seq, 2 * (i + 1));
    }
    char what[128];
    snprintf(what, sizeof what, "pos %d depth %d, %d pairs", (int)m->cfg.pos_embedding, m->cfg.depth, pairs);
    expect_same_entries(&built, &appended, what);
    fs_kv_freeze(&built);
    fs_kv_freeze(&appended);
    cr_expect_eq(appended.capacity, appended.seq, "a frozen cache is exactly [1, H, seq, hd]");
    expect_same_entries(&built, &appended, what);
    fs_kv_free(&built);
    fs_kv_free(&appended);
    free(ctx);
    free(labels);
}

Test(kvcache, append_pair_by_pair_equals_build)
{
    for (int v = 0; v < SMALL_VARIANTS; v++) {
        fs_model_config cfg = small_config(v);
        fs_model m;
        random_model(&m, &cfg, 200 + v);
        check_append_equals_build(&m, 1, 10 + v);
        check_append_equals_build(&m, 9, 20 + v);
        fs_model_free(&m);
    }
    fs_model_config cfg;
    fs_model_config_default(&cfg);
    fs_model m;
    random_model(&m, &cfg, 300);
    check_append_equals_build(&m, 12, 30);
    fs_model_free(&m);
}

/* Appending to a built context, then classifying, equals the forward of the longer one. */
Test(kvcache, append_after_build_then_classify)
{
    fs_model_config cfg = small_config(0);
    fs_model m;
    random_model(&m, &cfg, 10);
    int D = cfg.input_dim, C = cfg.num_classes, nq = 5;
    float *ctx = random_rows(4, D, 3), *q = random_rows(nq, D, 4);
    int labels[4] = {3, 1, 0, 2};
    fs_error err = {{0}};
    fs_kv_cache c;
    cr_assert_eq(fs_kv_init(&c, &m, &err), 0, "%s", err.msg);
    cr_assert_eq(fs_kv_build(&c, ctx, labels, 2, &err), 0, "%s", err.msg);
    fs_kv_freeze(&c);
    cr_expect_eq(fs_kv_append(&c, ctx + 2 * D, labels[2], &err), -1, "append to a frozen cache must fail");
    cr_expect(strstr(err.msg, "frozen") != NULL, "message: %s", err.msg);
    fs_kv_unfreeze(&c);
    cr_assert_eq(fs_kv_append(&c, ctx + 2 * D, labels[2], &err), 0, "%s", err.msg);
    cr_assert_eq(fs_kv_append(&c, ctx + 3 * D, labels[3], &err), 0, "%s", err.msg);
    float got[5 * 4], want[5 * 4];
    cr_expect_eq(fs_kv_classify(&c, q, nq, got, 1, &err), -1, "classify needs a frozen cache");
    fs_kv_freeze(&c);
    cr_assert_eq(fs_kv_classify(&c, q, nq, got, 1, &err), 0, "%s", err.msg);
    full_forward_logits(&m, ctx, labels, 4, q, nq, want);
    cr_expect_leq(max_abs_diff(got, want, (size_t)nq * C), KV_TOL);
    fs_kv_free(&c);
    free(ctx), free(q);
    fs_model_free(&m);
}

/* ---- statistics ---- */

Test(kvcache, stats_shape_bytes_ranges)
{
    fs_model_config cfg;
    fs_model_config_default(&cfg);
    fs_model m;
    random_model(&m, &cfg, 11);
    float *ctx = random_rows(2, cfg.input_dim, 5);
    int labels[2] = {0, 4};
    fs_error err = {{0}};
    fs_kv_cache c;
    cr_assert_eq(fs_kv_init(&c, &m, &err), 0, "%s", err.msg);
    cr_assert_eq(fs_kv_build(&c, ctx, labels, 2, &err), 0, "%s", err.msg);
    fs_kv_freeze(&c);
    fs_kv_layer_stats s;
    fs_kv_stats(&c, 1, &s);
    cr_expect(s.shape[0] == 1 && s.shape[1] == 8 && s.shape[2] == 4 && s.shape[3] == 8);
    cr_expect_eq(s.key_bytes, 8 * 4 * 8 * sizeof(float));
    cr_expect_eq(s.value_bytes, s.key_bytes);
    double lo = INFINITY, hi = -INFINITY, sum = 0;
    for (int i = 0; i < 8 * 4 * 8; i++) {
        float x = c.layer[1].keys[i];
        lo = fmin(lo, x), hi = fmax(hi, x), sum += x;
    }
    cr_expect_eq(s.key_min, (float)lo);
    cr_expect_eq(s.key_max, (float)hi);
    cr_expect_float_eq(s.key_mean, (float)(sum / 256), 1e-6);
    char *table = fs_kv_stats_table(&c);
    cr_expect(strstr(table, "[1, 8, 4, 8]") != NULL, "%s", table);
    cr_expect(strstr(table, "total") != NULL && strstr(table, "4096") != NULL, "%s", table);
    free(table);
    fs_kv_free(&c);
    free(ctx);
    fs_model_free(&m);
}

/* ---- bad input ---- */

static void expect_error(int rc, const fs_error *err, const char *n1, const char *n2)
{
    cr_expect_eq(rc, -1, "expected an error mentioning '%s'", n1);
    cr_expect(strstr(err->msg, n1) != NULL, "message '%s' should mention '%s'", err->msg, n1);
    if (n2)
        cr_expect(strstr(err->msg, n2) != NULL, "message '%s' should mention '%s'", err->msg, n2);
}

static int context_from_text(const char *text, const fs_model_config *cfg, fs_kv_context *ctx, fs_error *err)
{
    cJSON *j = cJSON_Parse(text);
    cr_assert_not_null(j, "bad test JSON");
    int rc = fs_kv_context_from_json(j, "CTX.json", cfg, ctx, err);
    cJSON_Delete(j);
    return rc;
}

static int queries_from_text(const char *text, int dim, fs_kv_queries *q, fs_error *err)
{
    cJSON *j = cJSON_Parse(text);
    cr_assert_not_null(j, "bad test JSON");
    int rc = fs_kv_queries_from_json(j, "Q.json", dim, q, err);
    cJSON_Delete(j);
    return rc;
}

Test(kvcache, bad_context_and_queries_json)
{
    fs_model_config cfg;
    fs_model_config_default(&cfg);
    cfg.input_dim = 3;
    cfg.num_classes = 5;
    fs_error err = {{0}};
    fs_kv_context ctx;
    expect_error(context_from_text("{\"examples\": [], \"labels\": []}", &cfg, &ctx, &err), &err, "CTX.json",
                 "empty context");
    expect_error(context_from_text("{\"examples\": [[1,2,3]], \"labels\": [5]}", &cfg, &ctx, &err), &err, "labels",
                 "[0, 5)");
    expect_error(context_from_text("{\"examples\": [[1,2,3]], \"labels\": [-1]}", &cfg, &ctx, &err), &err, "labels",
                 NULL);
    expect_error(context_from_text("{\"examples\": [[1,2]], \"labels\": [0]}", &cfg, &ctx, &err), &err, "examples",
                 "input_dim");
    expect_error(context_from_text("{\"examples\": [[1,2,3]]}", &cfg, &ctx, &err), &err, "labels", NULL);
    expect_error(context_from_text("{\"examples\": [[[1,2,3]]], \"labels\": [[0]]}", &cfg, &ctx, &err), &err,
                 "examples", "not a batch");
    cr_assert_eq(context_from_text("{\"examples\": [[1,2,3],[4,5,6]], \"labels\": [0, 4]}", &cfg, &ctx, &err), 0,
                 "%s", err.msg);
    cr_expect(ctx.pairs == 2 && ctx.labels[1] == 4 && ctx.examples[5] == 6.f);
    fs_kv_context_free(&ctx);

    fs_kv_queries q;
    expect_error(queries_from_text("{\"examples\": [[1,2,3],[1,2]]}", 3, &q, &err), &err, "examples[1]",
                 "expected 3 numbers");
    expect_error(queries_from_text("{\"examples\": []}", 3, &q, &err), &err, "Q.json", "no queries");
    expect_error(queries_from_text("{\"queries\": [[1,2,3]]}", 3, &q, &err), &err, "Q.json", "\"examples\"");
    expect_error(queries_from_text("{\"examples\": [[1,\"x\",3]]}", 3, &q, &err), &err, "examples[0][1]", NULL);
    cr_assert_eq(queries_from_text("{\"examples\": [[1,2,3],[4,5,6]], \"labels\": [0, 1]}", 3, &q, &err), 0, "%s",
                 err.msg);
    cr_expect(q.count == 2 && q.examples[4] == 5.f);
    fs_kv_queries_free(&q);
}

Test(kvcache, bad_cache_use)
{
    fs_model_config cfg = small_config(2); /* ape: 32 positions */
    fs_model m;
    random_model(&m, &cfg, 12);
    int D = cfg.input_dim;
    float *ctx = random_rows(16, D, 6);
    int labels[16] = {0}, bad[2] = {0, 4};
    fs_error err = {{0}};
    fs_kv_cache c;
    cr_assert_eq(fs_kv_init(&c, &m, &err), 0, "%s", err.msg);
    expect_error(fs_kv_build(&c, ctx, labels, 0, &err), &err, "empty context", NULL);
    expect_error(fs_kv_build(&c, ctx, bad, 2, &err), &err, "label 4", "[0, 4)");
    expect_error(fs_kv_build(&c, ctx, labels, 16, &err), &err, "ape", "at most 15 pairs");
    fs_kv_freeze(&c);
    float logits[4];
    expect_error(fs_kv_classify(&c, ctx, 1, logits, 1, &err), &err, "empty context", NULL);
    fs_kv_unfreeze(&c);
    cr_assert_eq(fs_kv_build(&c, ctx, labels, 15, &err), 0, "%s", err.msg);
    expect_error(fs_kv_build(&c, ctx, labels, 1, &err), &err, "empty cache", NULL);
    expect_error(fs_kv_append(&c, ctx, 0, &err), &err, "at most 15 pairs", NULL);
    expect_error(fs_kv_append(&c, ctx, 7, &err), &err, "at most 15 pairs", NULL);
    fs_kv_free(&c);
    free(ctx);
    fs_model_free(&m);
}

/* HDF5 queries: a [Q, D] float dataset; wrong rank, width, type or path are errors. */
static void write_h5(const char *file, const char *path, int rank, const hsize_t *dims, hid_t type, const void *data)
{
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    hid_t f = H5Fcreate(file, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    cr_assert_geq(f, 0);
    hid_t space = H5Screate_simple(rank, dims, NULL);
    hid_t d = H5Dcreate2(f, path, type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    cr_assert_geq(d, 0);
    cr_assert_geq(H5Dwrite(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data), 0);
    H5Dclose(d), H5Sclose(space), H5Fclose(f);
}

Test(kvcache, hdf5_queries)
{
    char file[256];
    snprintf(file, sizeof file, "/tmp/fewshot_test_kv_%ld.h5", (long)getpid());
    float data[6] = {1, 2, 3, 4, 5, 6};
    int ints[6] = {0};
    fs_kv_queries q;
    fs_error err = {{0}};
    write_h5(file, "q", 2, (hsize_t[]){2, 3}, H5T_NATIVE_FLOAT, data);
    cr_assert_eq(fs_kv_queries_load_h5(file, "q", 3, &q, &err), 0, "%s", err.msg);
    cr_expect(q.count == 2 && q.dim == 3 && q.examples[5] == 6.f);
    fs_kv_queries_free(&q);
    expect_error(fs_kv_queries_load_h5(file, "q", 4, &q, &err), &err, file, "input_dim is 4");
    expect_error(fs_kv_queries_load_h5(file, "nope", 3, &q, &err), &err, "no dataset 'nope'", NULL);
    expect_error(fs_kv_queries_load_h5(file, NULL, 3, &q, &err), &err, "--queries-path", NULL);
    write_h5(file, "q", 1, (hsize_t[]){6}, H5T_NATIVE_FLOAT, data);
    expect_error(fs_kv_queries_load_h5(file, "q", 3, &q, &err), &err, "rank 2", "found rank 1");
    write_h5(file, "q", 3, (hsize_t[]){1, 2, 3}, H5T_NATIVE_FLOAT, data);
    expect_error(fs_kv_queries_load_h5(file, "q", 3, &q, &err), &err, "rank 2", "found rank 3");
    write_h5(file, "q", 2, (hsize_t[]){2, 3}, H5T_NATIVE_INT, ints);
    expect_error(fs_kv_queries_load_h5(file, "q", 3, &q, &err), &err, "float32", NULL);
    remove(file);
    expect_error(fs_kv_queries_load_h5(file, "q", 3, &q, &err), &err, "cannot read", NULL);
}

/* ---- the command ---- */

static const char *bin(void) { return getenv("FEWSHOT_BIN") ? getenv("FEWSHOT_BIN") : "./fewshot"; }

/* `fewshot classify` with the shipped example: one line per query, labels and probs
 * as the library computes them. */
Test(kvcache, classify_command_with_shipped_example)
{
    char dir[] = "/tmp/fewshot_kv_XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char cmd[2048], model[300], out[300];
    snprintf(model, sizeof model, "%s/m.safetensors", dir);
    snprintf(out, sizeof out, "%s/pred.jsonl", dir);
    snprintf(cmd, sizeof cmd, "%s init -o %s 2>/dev/null", bin(), model);
    cr_assert_eq(system(cmd), 0, "%s", cmd);
    snprintf(cmd, sizeof cmd,
             "%s classify --model %s --context datasets/examples/classify_context.json "
             "--queries datasets/examples/classify_queries.json -o %s 2>/dev/null",
             bin(), model, out);
    cr_assert_eq(system(cmd), 0, "%s", cmd);
    fs_error err = {{0}};
    char *text = fs_read_file(out, NULL, &err);
    cr_assert_not_null(text, "%s", err.msg);
    int lines = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n"), lines++) {
        cJSON *j = cJSON_Parse(line);
        cr_assert_not_null(j, "line %d is not JSON: %s", lines, line);
        const cJSON *label = cJSON_GetObjectItem(j, "label"), *probs = cJSON_GetObjectItem(j, "probs");
        cr_assert(cJSON_IsNumber(label) && cJSON_IsArray(probs) && cJSON_GetArraySize(probs) == 5, "%s", line);
        double sum = 0, best = -1;
        for (const cJSON *p = probs->child; p; p = p->next)
            sum += p->valuedouble, best = fmax(best, p->valuedouble);
        cr_expect_float_eq(sum, 1.0, 1e-5, "%s", line);
        cr_expect_eq(cJSON_GetArrayItem(probs, label->valueint)->valuedouble, best, "%s", line);
        cJSON_Delete(j);
    }
    fs_kv_queries q;
    cr_assert_eq(fs_kv_queries_load_json("datasets/examples/classify_queries.json", 512, &q, &err), 0, "%s", err.msg);
    cr_expect_eq((size_t)lines, q.count);
    fs_kv_queries_free(&q);
    free(text);

    snprintf(cmd, sizeof cmd, "%s classify --model %s --context datasets/examples/classify_context.json --kv-stats > %s",
             bin(), model, out);
    cr_assert_eq(system(cmd), 0, "%s", cmd);
    text = fs_read_file(out, NULL, &err);
    cr_expect(text && strstr(text, "[1, 8, 4, 8]") && strstr(text, "total"), "--kv-stats: %s", text);
    free(text);

    char h5[300];
    snprintf(h5, sizeof h5, "%s/q.h5", dir);
    float *rows = random_rows(3, 512, 77);
    write_h5(h5, "feat", 2, (hsize_t[]){3, 512}, H5T_NATIVE_FLOAT, rows);
    free(rows);
    snprintf(cmd, sizeof cmd,
             "%s classify --model %s --context datasets/examples/classify_context.json --queries %s --queries-path feat "
             "--threads 1 2>/dev/null > %s",
             bin(), model, h5, out);
    cr_assert_eq(system(cmd), 0, "%s", cmd);
    text = fs_read_file(out, NULL, &err);
    int h5_lines = 0;
    for (char *p = text; p && *p; p++)
        h5_lines += *p == '\n';
    cr_expect_eq(h5_lines, 3, "HDF5 queries: %s", text);
    free(text);
    remove(h5);

    snprintf(cmd, sizeof cmd,
             "%s classify --model %s --context datasets/examples/classify_context.json --queries %s 2>/dev/null",
             bin(), model, model);
    cr_expect_neq(system(cmd), 0, "a non-JSON queries file must fail");
    remove(out);
    remove(model);
    rmdir(dir);
}
