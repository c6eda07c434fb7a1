/* The frozen key-value cache (issue 7): frozen-cache logits equal the full forward's
 * out[P-1], appending pair by pair equals building from the whole context, bad input
 * gives clear errors, and `fewshot classify` works end to end. */
#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <hdf5.h>
#include <malloc.h>
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
#include "helpers.h"
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

/* Running out of memory while the cache grows (FEWSHOT_MAX_MEMORY_MB caps one allocation)
 * is an error naming the cause; the cache keeps the pairs it had and stays usable. */
Test(kvcache, out_of_memory_is_an_error_and_keeps_the_cache)
{
    fs_model_config cfg = small_config(0); /* 4 heads x 8 dims: 128 bytes a token per layer */
    fs_model m;
    random_model(&m, &cfg, 13);
    int D = cfg.input_dim, pairs = 6000; /* 12000 tokens: 1.5 MB a layer, over a 1 MB cap */
    float *ctx = random_rows((size_t)pairs, D, 7);
    int *labels = random_labels(pairs, cfg.num_classes, 8);
    fs_error err = {{0}};
    fs_kv_cache c;
    cr_assert_eq(fs_kv_init(&c, &m, &err), 0, "%s", err.msg);
    cr_assert_eq(fs_kv_build(&c, ctx, labels, 4, &err), 0, "%s", err.msg);
    cr_assert_eq(setenv("FEWSHOT_MAX_MEMORY_MB", "1", 1), 0);
    int rc = 0, added = 0;
    for (int i = 4; i < pairs && rc == 0; i++, added++)
        rc = fs_kv_append(&c, ctx + (size_t)i * D, labels[i], &err);
    cr_assert_eq(rc, -1, "a cache over the memory cap must fail");
    expect_error(rc, &err, "out of memory", NULL);
    cr_assert_eq(fs_kv_pairs(&c), 4 + added - 1, "the failed pair is not half in the cache");
    cr_assert_eq(unsetenv("FEWSHOT_MAX_MEMORY_MB"), 0);
    fs_kv_freeze(&c);
    float logits[4];
    cr_assert_eq(fs_kv_classify(&c, ctx, 1, logits, 1, &err), 0, "%s", err.msg);
    fs_kv_free(&c);
    free(ctx);
    free(labels);
    fs_model_free(&m);
}

/* ---- compression (issue 19) ---- */

static const char *const every_policy[] = {"recent",         "sinks+recent", "attention",   "labels-only",
                                           "exemplars-only", "drop-pairs",   "drop-pairs:0", NULL};

static void build_frozen(fs_kv_cache *c, const fs_model *m, const float *ctx, const int *labels, int pairs)
{
    fs_error err = {{0}};
    cr_assert_eq(fs_kv_init(c, m, &err), 0, "%s", err.msg);
    cr_assert_eq(fs_kv_build(c, ctx, labels, pairs, &err), 0, "%s", err.msg);
    fs_kv_freeze(c);
}

/* keep 1 (as a fraction and as the full count) leaves every logit bit-identical. */
Test(kvcompress, keep_one_identical_every_policy)
{
    const int lengths[] = {1, 2, 7, 15, 33, 64};
    for (int v = 0; v < SMALL_VARIANTS; v++) {
        fs_model_config cfg = small_config(v);
        fs_model m;
        random_model(&m, &cfg, 400 + v);
        int D = cfg.input_dim, C = cfg.num_classes, nq = 37;
        for (size_t li = 0; li < sizeof lengths / sizeof *lengths; li++) {
            int pairs = lengths[li];
            if (cfg.pos_embedding == FS_POS_APE && pairs > 15)
                continue;
            float *ctx = random_rows((size_t)pairs, D, 500 + li), *q = random_rows((size_t)nq, D, 600 + li);
            int *labels = random_labels(pairs, C, 700 + li);
            float *want = malloc(sizeof(float) * nq * C), *got = malloc(sizeof(float) * nq * C);
            fs_error err = {{0}};
            fs_kv_cache c;
            build_frozen(&c, &m, ctx, labels, pairs);
            cr_assert_eq(fs_kv_classify(&c, q, nq, want, 1, &err), 0, "%s", err.msg);
            fs_kv_free(&c);
            for (int p = 0; every_policy[p]; p++)
                for (int as_count = 0; as_count < 2; as_count++) {
                    build_frozen(&c, &m, ctx, labels, pairs);
                    double keep = as_count && pairs > 1 ? 2.0 * pairs : 1.0;
                    cr_assert_eq(fs_kv_compress(&c, keep, every_policy[p], &err), 0, "%s", err.msg);
                    cr_expect_eq(c.seq, 2 * pairs);
                    cr_expect(c.frozen);
                    cr_assert_eq(fs_kv_classify(&c, q, nq, got, 1, &err), 0, "%s", err.msg);
                    cr_expect_eq(memcmp(got, want, sizeof(float) * nq * C), 0,
                                 "variant %d, %d pairs, policy %s, keep %g: logits differ (max %g)", v, pairs,
                                 every_policy[p], keep, max_abs_diff(got, want, (size_t)nq * C));
                    fs_kv_free(&c);
                }
            free(ctx), free(q), free(labels), free(want), free(got);
        }
        fs_model_free(&m);
    }
}

static void expect_positions(const fs_kv_cache *c, const int *want, int n, const char *policy)
{
    cr_assert_eq(c->seq, n, "%s: kept %d tokens, expected %d", policy, c->seq, n);
    for (int l = 0; l < c->depth; l++)
        for (int i = 0; i < n; i++)
            cr_expect_eq(c->layer[l].positions[i], want[i], "%s: layer %d kept position %d at %d, expected %d",
                         policy, l, c->layer[l].positions[i], i, want[i]);
}

/* Which tokens each policy keeps (12 tokens, 6 pairs), and that the kept rows are the
 * uncompressed cache's rows at those positions. */
Test(kvcompress, kept_positions_per_policy)
{
    fs_model_config cfg = small_config(0);
    fs_model m;
    random_model(&m, &cfg, 41);
    int D = cfg.input_dim, pairs = 6;
    float *ctx = random_rows((size_t)pairs, D, 42);
    int *labels = random_labels(pairs, cfg.num_classes, 43);
    struct {
        const char *policy;
        double keep;
        int n, want[12];
    } cases[] = {
        {"recent", 0.5, 6, {6, 7, 8, 9, 10, 11}},
        {"recent", 3, 3, {9, 10, 11}},
        {"sinks+recent", 0.5, 6, {0, 1, 8, 9, 10, 11}},
        {"labels-only", 0.5, 6, {1, 3, 5, 7, 9, 11}},
        {"labels-only", 0.25, 3, {7, 9, 11}},
        {"labels-only", 0.75, 9, {1, 3, 5, 6, 7, 8, 9, 10, 11}},
        {"exemplars-only", 0.5, 6, {0, 2, 4, 6, 8, 10}},
        {"drop-pairs:2", 1, 8, {4, 5, 6, 7, 8, 9, 10, 11}},
        {"drop-pairs:1", 5, 5, {7, 8, 9, 10, 11}},
        {"drop-pairs", 0.6, 6, {6, 7, 8, 9, 10, 11}}, /* floor(7.2) = 7 tokens: whole pairs -> 6 */
        {"drop-pairs", 1.0 / 12, 1, {11}},            /* the newest pair stays, trimmed to its label */
    };
    fs_error err = {{0}};
    fs_kv_cache full;
    build_frozen(&full, &m, ctx, labels, pairs);
    int hd = full.head_dim;
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        fs_kv_cache c;
        build_frozen(&c, &m, ctx, labels, pairs);
        cr_assert_eq(fs_kv_compress(&c, cases[k].keep, cases[k].policy, &err), 0, "%s", err.msg);
        expect_positions(&c, cases[k].want, cases[k].n, cases[k].policy);
        cr_expect_eq(c.pos, 2 * pairs, "the query stays at position 2k");
        cr_expect_eq(fs_kv_pairs(&c), pairs);
        for (int l = 0; l < c.depth; l++)
            for (int h = 0; h < c.heads; h++)
                for (int i = 0; i < c.seq; i++) {
                    size_t got = ((size_t)h * c.seq + i) * hd, src = ((size_t)h * full.seq + cases[k].want[i]) * hd;
                    cr_expect_eq(memcmp(c.layer[l].keys + got, full.layer[l].keys + src, sizeof(float) * hd), 0);
                    cr_expect_eq(memcmp(c.layer[l].values + got, full.layer[l].values + src, sizeof(float) * hd), 0);
                }
        fs_kv_free(&c);
    }
    /* attention: per layer, kept = the highest observation scores; ascending positions */
    fs_kv_cache c;
    build_frozen(&c, &m, ctx, labels, pairs);
    cr_assert_eq(fs_kv_compress(&c, 0.5, "attention", &err), 0, "%s", err.msg);
    cr_expect_eq(c.seq, 6);
    for (int l = 0; l < c.depth; l++)
        for (int i = 1; i < c.seq; i++)
            cr_expect_lt(c.layer[l].positions[i - 1], c.layer[l].positions[i]);
    fs_kv_free(&c);
    fs_kv_free(&full);
    free(ctx), free(labels);
    fs_model_free(&m);
}

/* The reported bytes are what the kept entries allocate: [1, H, kept, hd] floats. */
Test(kvcompress, memory_is_allocated_bytes)
{
    fs_model_config cfg;
    fs_model_config_default(&cfg);
    fs_model m;
    random_model(&m, &cfg, 44);
    int pairs = 24;
    float *ctx = random_rows((size_t)pairs, cfg.input_dim, 45);
    int *labels = random_labels(pairs, cfg.num_classes, 46);
    fs_error err = {{0}};
    for (int p = 0; every_policy[p]; p++) {
        fs_kv_cache c;
        build_frozen(&c, &m, ctx, labels, pairs);
        cr_assert_eq(fs_kv_compress(&c, 0.5, every_policy[p], &err), 0, "%s", err.msg);
        cr_expect_eq(c.capacity, c.seq, "compressed entries are exactly the kept tokens");
        for (int l = 0; l < c.depth; l++) {
            fs_kv_layer_stats s;
            fs_kv_stats(&c, l, &s);
            size_t bytes = sizeof(float) * (size_t)c.heads * c.seq * c.head_dim;
            cr_expect_eq(s.shape[2], c.seq);
            cr_expect_eq(s.key_bytes, bytes);
            cr_expect_eq(s.value_bytes, bytes);
            size_t usable = malloc_usable_size(c.layer[l].keys);
            cr_expect(usable >= bytes && usable < bytes + 128, "%s: %zu bytes reported, %zu allocated",
                      every_policy[p], bytes, usable);
        }
        char *table = fs_kv_stats_table(&c);
        char line[128];
        snprintf(line, sizeof line, "1 × %d × %d × %d × 4 bytes", c.heads, c.seq, c.head_dim);
        cr_expect(strstr(table, line) != NULL, "table should hold '%s':\n%s", line, table);
        cr_expect(strstr(table, "48 → 24 tokens") != NULL, "%s", table);
        free(table);
        fs_kv_free(&c);
    }
    free(ctx), free(labels);
    fs_model_free(&m);
}

Test(kvcompress, bad_input)
{
    fs_model_config cfg = small_config(0);
    fs_model m;
    random_model(&m, &cfg, 47);
    float *ctx = random_rows(4, cfg.input_dim, 48);
    int labels[4] = {0, 1, 2, 3};
    fs_error err = {{0}};
    fs_kv_cache c;
    cr_assert_eq(fs_kv_init(&c, &m, &err), 0, "%s", err.msg);
    expect_error(fs_kv_compress(&c, 1, "recent", &err), &err, "empty", NULL);
    cr_assert_eq(fs_kv_build(&c, ctx, labels, 4, &err), 0, "%s", err.msg);
    expect_error(fs_kv_compress(&c, 0, "recent", &err), &err, "keep 0", "(0, 1]");
    expect_error(fs_kv_compress(&c, -0.5, "recent", &err), &err, "keep -0.5", NULL);
    expect_error(fs_kv_compress(&c, NAN, "recent", &err), &err, "keep nan", NULL);
    expect_error(fs_kv_compress(&c, 9, "recent", &err), &err, "keep 9", "<= 8");
    expect_error(fs_kv_compress(&c, 2.5, "recent", &err), &err, "keep 2.5", "whole number");
    expect_error(fs_kv_compress(&c, 0.5, "oldest", &err), &err, "unknown policy 'oldest'", "labels-only");
    expect_error(fs_kv_compress(&c, 0.5, NULL, &err), &err, "unknown policy", NULL);
    expect_error(fs_kv_compress(&c, 0.5, "drop-pairs:x", &err), &err, "drop-pairs:x", "whole number");
    expect_error(fs_kv_compress(&c, 0.5, "drop-pairs:-1", &err), &err, "drop-pairs:-1", NULL);
    expect_error(fs_kv_compress(&c, 1, "drop-pairs:4", &err), &err, "evicts every cached token", NULL);
    cr_expect_eq(c.seq, 8, "a failed compression leaves the cache as it was");
    cr_assert_eq(fs_kv_compress(&c, 0.5, "recent", &err), 0, "%s", err.msg);
    expect_error(fs_kv_compress(&c, 0.5, "attention", &err), &err, "attention", "uncompressed");
    /* appending after compression continues at the context's next position */
    cr_assert_eq(fs_kv_append(&c, ctx, 1, &err), 0, "%s", err.msg);
    cr_expect_eq(c.seq, 6);
    cr_expect_eq(c.pos, 10);
    cr_expect_eq(c.layer[0].positions[4], 8);
    cr_expect_eq(c.layer[0].positions[5], 9);
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

/* `fewshot classify --kv-keep/--kv-policy/--kv-stats/--kv-sweep` end to end, with labelled queries. */
Test(kvcompress, classify_command_compressed_and_sweep)
{
    char dir[128];
    th_tmpdir(dir, sizeof dir, "kvc");
    const char *model = th_path(dir, "m.safetensors"), *queries = th_path(dir, "q.json");
    th_run_result r;
    th_run_ok("init -o %s", model);
    /* the shipped queries plus labels */
    char *text = th_read_file("datasets/examples/classify_queries.json", NULL);
    cJSON *j = cJSON_Parse(text);
    cr_assert_not_null(j);
    int labels[6] = {0, 1, 2, 3, 4, 0};
    int nq = cJSON_GetArraySize(cJSON_GetObjectItem(j, "examples"));
    cr_assert_eq(nq, 6);
    cJSON_AddItemToObject(j, "labels", cJSON_CreateIntArray(labels, nq));
    char *printed = cJSON_PrintUnformatted(j);
    th_write_text(queries, printed);
    free(printed), free(text);
    const char *ctx = "datasets/examples/classify_context.json";

    th_run(&r, "classify --model %s --context %s --queries %s --kv-keep 0.5 --kv-policy labels-only --kv-stats", model,
           ctx, queries);
    cr_assert(r.exited && r.code == 0, "%s", th_describe(&r));
    cr_expect(strstr(r.err, "4 → 2 tokens") != NULL, "%s", r.err);
    cr_expect(strstr(r.err, "1 × 8 × 2 × 8 × 4 bytes = 512 bytes") != NULL, "%s", r.err);
    cr_expect(strstr(r.err, "accuracy ") != NULL && strstr(r.err, "agreement with the uncompressed cache") != NULL,
              "%s", r.err);
    int lines = 0;
    for (const char *p = r.out; (p = strchr(p, '\n')); p++)
        lines++;
    cr_expect_eq(lines, nq, "one prediction per query: %s", r.out);
    th_run_free(&r);

    th_run(&r, "classify --model %s --context %s --queries %s --kv-sweep --json", model, ctx, queries);
    cr_assert(r.exited && r.code == 0, "%s", th_describe(&r));
    cJSON *sweep = cJSON_Parse(r.out);
    cr_assert_not_null(sweep, "%s", r.out);
    const cJSON *rows = cJSON_GetObjectItem(sweep, "rows");
    cr_expect_eq(cJSON_GetArraySize(rows), 6 * 4, "keep {1, .75, .5, .25} x 6 policies");
    for (const cJSON *row = rows ? rows->child : NULL; row; row = row->next) {
        double keep = cJSON_GetObjectItem(row, "keep")->valuedouble;
        int tokens = cJSON_GetObjectItem(row, "tokens")->valueint;
        cr_expect_eq(cJSON_GetObjectItem(row, "bytes")->valuedouble, 2.0 * 2 * 8 * tokens * 8 * 4);
        cr_expect(cJSON_IsNumber(cJSON_GetObjectItem(row, "accuracy")));
        if (keep == 1)
            cr_expect_eq(cJSON_GetObjectItem(row, "agreement")->valuedouble, 1.0, "keep 1 agrees with itself");
    }
    cJSON_Delete(sweep);
    th_run_free(&r);

    th_run(&r, "classify --model %s --context %s --queries %s --kv-sweep", model, ctx, queries);
    cr_assert(r.exited && r.code == 0, "%s", th_describe(&r));
    cr_expect(strstr(r.out, "labels-only") && strstr(r.out, "agreement"), "%s", r.out);
    th_run_free(&r);

    struct {
        const char *args, *want;
    } bad[] = {
        {"--kv-keep 0", "keep 0"},
        {"--kv-keep 5", "<= 4"},
        {"--kv-keep half", "--kv-keep"},
        {"--kv-policy oldest", "unknown policy 'oldest'"},
        {"--kv-sweep --kv-keep 0.5", "--kv-sweep"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        th_run(&r, "classify --model %s --context %s --queries %s %s", model, ctx, queries, bad[i].args);
        cr_expect(r.exited && r.code == 1 && strstr(r.err, bad[i].want), "%s: %s", bad[i].args, th_describe(&r));
        cr_expect_eq(r.out[0], 0, "%s: no output on error", bad[i].args);
        th_run_free(&r);
    }
    /* query labels outside [0, C) */
    cJSON_ReplaceItemInObject(j, "labels", cJSON_CreateIntArray((int[]){0, 1, 2, 3, 4, 5}, nq));
    printed = cJSON_PrintUnformatted(j);
    th_write_text(queries, printed);
    free(printed);
    th_run(&r, "classify --model %s --context %s --queries %s", model, ctx, queries);
    cr_expect(r.exited && r.code == 1 && strstr(r.err, "labels[5]") && strstr(r.err, "[0, 5)"), "%s", th_describe(&r));
    th_run_free(&r);
    cJSON_Delete(j);
    th_rmtree(dir);
}

/* ---- batches of contexts (issue 19) ---- */

/* Lengths 1..64 pairs (APE: its 15), ragged; each row gets its own queries (0, 1 or a
 * partial chunk). */
typedef struct {
    fs_model m; /* a random model of the config */
    int rows;
    fs_kv_context ctx[8];
    fs_kv_queries q[8];
} test_batch;

static void make_batch(test_batch *t, const fs_model_config *cfg, int rows, uint64_t seed)
{
    random_model(&t->m, cfg, seed);
    static const int lengths[] = {64, 1, 7, 33, 2, 15, 50, 3};
    static const size_t counts[] = {5, 1, 42, 0, 2, 33, 1, 64}; /* remainders 10, 5, 2, 1: both shared-chunk paths */
    int max_pairs = cfg->pos_embedding == FS_POS_APE ? 15 : 64;
    t->rows = rows;
    for (int r = 0; r < rows; r++) {
        int k = lengths[r] < max_pairs ? lengths[r] : max_pairs;
        t->ctx[r] = (fs_kv_context){k, cfg->input_dim, random_rows((size_t)k, cfg->input_dim, seed + 3 * r),
                                    random_labels(k, cfg->num_classes, seed + 3 * r)};
        t->q[r] = (fs_kv_queries){counts[r], cfg->input_dim, random_rows(counts[r] + 1, cfg->input_dim, seed + 3 * r + 1),
                                  NULL};
    }
}

static void free_batch(test_batch *t)
{
    fs_model_free(&t->m);
    for (int r = 0; r < t->rows; r++) {
        fs_kv_context_free(&t->ctx[r]);
        fs_kv_queries_free(&t->q[r]);
    }
}

static size_t batch_queries(const test_batch *t)
{
    size_t n = 0;
    for (int r = 0; r < t->rows; r++)
        n += t->q[r].count;
    return n;
}

/* Row by row, the batched cache's logits are bit-identical to a one-context cache of the
 * row's context (same kernels, same summation order, queries chunked from the row's
 * first), and within KV_TOL of the full forward of the row's context + query. */
Test(kvbatch, rows_equal_one_context_caches)
{
    for (int v = 0; v <= SMALL_VARIANTS; v++) {
        fs_model_config cfg = small_config(v);
        if (v == SMALL_VARIANTS)
            fs_model_config_default(&cfg); /* the documented model */
        test_batch t;
        make_batch(&t, &cfg, 8, 900 + 10 * v);
        int C = cfg.num_classes;
        size_t total = batch_queries(&t);
        float *got = malloc(sizeof(float) * (total + 1) * C), *want = malloc(sizeof(float) * 64 * C);
        fs_error err = {{0}};
        fs_kv_batch b;
        cr_assert_eq(fs_kv_build_batch(&b, &t.m, t.ctx, t.rows, &err), 0, "%s", err.msg);
        cr_assert_eq(b.rows, t.rows);
        fs_kv_batch_freeze(&b);
        cr_assert_eq(fs_kv_classify_batch(&b, t.q, got, 2, &err), 0, "%s", err.msg);
        size_t q0 = 0;
        for (int r = 0; r < t.rows; r++) {
            cr_expect_eq(b.row[r].pos, 2 * t.ctx[r].pairs, "row %d runs its queries at its own position", r);
            cr_expect_eq(b.row[r].seq, 2 * t.ctx[r].pairs, "row %d holds exactly its own tokens", r);
            cr_expect_eq(b.row[r].weights, b.row[0].weights, "rows share the packed weights");
            if (t.q[r].count) {
                frozen_logits(&t.m, t.ctx[r].examples, t.ctx[r].labels, t.ctx[r].pairs, t.q[r].examples,
                              (int)t.q[r].count, 1, want);
                cr_expect_eq(memcmp(got + q0 * C, want, sizeof(float) * t.q[r].count * C), 0,
                             "variant %d row %d (%d pairs): batched vs one-context logits differ (max %g)", v, r,
                             t.ctx[r].pairs, max_abs_diff(got + q0 * C, want, t.q[r].count * C));
                full_forward_logits(&t.m, t.ctx[r].examples, t.ctx[r].labels, t.ctx[r].pairs, t.q[r].examples, 1,
                                    want);
                cr_expect_leq(max_abs_diff(got + q0 * C, want, (size_t)C), KV_TOL,
                              "variant %d row %d: batched vs full forward", v, r);
            }
            q0 += t.q[r].count;
        }
        fs_kv_batch_free(&b);
        free(got), free(want);
        free_batch(&t);
    }
}

static float *copy_floats(const float *x, size_t n)
{
    float *y = malloc(sizeof(float) * (n ? n : 1));
    memcpy(y, x, sizeof(float) * n);
    return y;
}

/* Appending a pair to one row leaves every other row's keys/values bit-identical and
 * gives that row the cache of its context plus the pair (as fs_kv_append does: KV_TOL
 * against the forward-built cache, as in append_pair_by_pair_equals_build). */
Test(kvbatch, append_to_one_row_leaves_others_unchanged)
{
    for (int v = 0; v < SMALL_VARIANTS; v++) {
        fs_model_config cfg = small_config(v);
        test_batch t;
        make_batch(&t, &cfg, 4, 940 + 10 * v);
        int D = cfg.input_dim, target = 2, hd = cfg.d_model / cfg.num_heads;
        fs_error err = {{0}};
        fs_kv_batch b;
        cr_assert_eq(fs_kv_build_batch(&b, &t.m, t.ctx, t.rows, &err), 0, "%s", err.msg);
        float *before_k[4][FS_MAX_DEPTH], *before_v[4][FS_MAX_DEPTH];
        for (int r = 0; r < b.rows; r++)
            for (int l = 0; l < cfg.depth; l++) {
                size_t n = (size_t)b.row[r].heads * b.row[r].capacity * hd;
                before_k[r][l] = copy_floats(b.row[r].layer[l].keys, n);
                before_v[r][l] = copy_floats(b.row[r].layer[l].values, n);
            }
        float *extra = random_rows(1, D, 990 + v);
        int label = 1;
        cr_assert_eq(fs_kv_append_row(&b, target, extra, label, &err), 0, "%s", err.msg);
        for (int r = 0; r < b.rows; r++) {
            if (r == target)
                continue;
            cr_expect_eq(b.row[r].seq, 2 * t.ctx[r].pairs, "row %d grew", r);
            for (int l = 0; l < cfg.depth; l++)
                for (int h = 0; h < b.row[r].heads; h++) {
                    size_t off = (size_t)h * b.row[r].capacity * hd, n = (size_t)b.row[r].seq * hd;
                    cr_expect_eq(memcmp(b.row[r].layer[l].keys + off, before_k[r][l] + off, sizeof(float) * n), 0,
                                 "variant %d: row %d layer %d keys changed", v, r, l);
                    cr_expect_eq(memcmp(b.row[r].layer[l].values + off, before_v[r][l] + off, sizeof(float) * n), 0,
                                 "variant %d: row %d layer %d values changed", v, r, l);
                }
        }
        /* the target row == a one-context cache built from its context + the pair */
        int k = t.ctx[target].pairs;
        if (cfg.pos_embedding != FS_POS_APE || k + 1 <= 15) {
            float *ex = malloc(sizeof(float) * (size_t)(k + 1) * D);
            int *lab = malloc(sizeof(int) * (size_t)(k + 1));
            memcpy(ex, t.ctx[target].examples, sizeof(float) * (size_t)k * D);
            memcpy(ex + (size_t)k * D, extra, sizeof(float) * D);
            memcpy(lab, t.ctx[target].labels, sizeof(int) * k);
            lab[k] = label;
            fs_kv_cache one;
            cr_assert_eq(fs_kv_init(&one, &t.m, &err), 0, "%s", err.msg);
            cr_assert_eq(fs_kv_build(&one, ex, lab, k + 1, &err), 0, "%s", err.msg);
            char what[96];
            snprintf(what, sizeof what, "variant %d, row %d after append", v, target);
            expect_same_entries(&b.row[target], &one, what);
            fs_kv_free(&one);
            free(ex), free(lab);
        }
        for (int r = 0; r < b.rows; r++)
            for (int l = 0; l < cfg.depth; l++)
                free(before_k[r][l]), free(before_v[r][l]);
        free(extra);
        fs_kv_batch_free(&b);
        free_batch(&t);
    }
}

/* Freeze trims every row to exactly its tokens and is needed to classify; a frozen
 * batch refuses appends until unfrozen; classify after unfreeze + append + freeze sees
 * the appended pair in that row only. */
Test(kvbatch, freeze_unfreeze)
{
    fs_model_config cfg = small_config(0);
    test_batch t;
    make_batch(&t, &cfg, 3, 960);
    int D = cfg.input_dim, C = cfg.num_classes;
    size_t total = batch_queries(&t);
    float *logits = malloc(sizeof(float) * total * C), *want = malloc(sizeof(float) * 64 * C);
    fs_error err = {{0}};
    fs_kv_batch b;
    cr_assert_eq(fs_kv_build_batch(&b, &t.m, t.ctx, t.rows, &err), 0, "%s", err.msg);
    expect_error(fs_kv_classify_batch(&b, t.q, logits, 1, &err), &err, "frozen batch", "fs_kv_batch_freeze");
    fs_kv_batch_freeze(&b);
    for (int r = 0; r < b.rows; r++)
        cr_expect(b.row[r].frozen && b.row[r].capacity == b.row[r].seq, "row %d: frozen, exactly [1, H, seq, hd]", r);
    float *extra = random_rows(1, D, 961);
    expect_error(fs_kv_append_row(&b, 1, extra, 0, &err), &err, "row 1", "frozen");
    fs_kv_batch_unfreeze(&b);
    for (int r = 0; r < b.rows; r++)
        cr_expect(!b.row[r].frozen);
    cr_assert_eq(fs_kv_append_row(&b, 1, extra, 3, &err), 0, "%s", err.msg);
    fs_kv_batch_freeze(&b);
    cr_assert_eq(fs_kv_classify_batch(&b, t.q, logits, 1, &err), 0, "%s", err.msg);
    /* row 1 (1 pair + the appended one) against the full forward of its 2 pairs */
    float ex[2 * 24];
    int lab[2] = {t.ctx[1].labels[0], 3};
    memcpy(ex, t.ctx[1].examples, sizeof(float) * D);
    memcpy(ex + D, extra, sizeof(float) * D);
    full_forward_logits(&t.m, ex, lab, 2, t.q[1].examples, (int)t.q[1].count, want);
    cr_expect_leq(max_abs_diff(logits + t.q[0].count * C, want, t.q[1].count * C), KV_TOL);
    /* row 0 is unchanged */
    frozen_logits(&t.m, t.ctx[0].examples, t.ctx[0].labels, t.ctx[0].pairs, t.q[0].examples, (int)t.q[0].count, 1, want);
    cr_expect_eq(memcmp(logits, want, sizeof(float) * t.q[0].count * C), 0);
    free(extra), free(logits), free(want);
    fs_kv_batch_free(&b);
    free_batch(&t);
}

/* Keys and values take exactly the bytes reported: per row [1, H, 2k, hd] per layer,
 * no padding to the longest row. */
Test(kvbatch, memory_is_allocated_bytes)
{
    fs_model_config cfg;
    fs_model_config_default(&cfg);
    test_batch t;
    make_batch(&t, &cfg, 8, 970);
    fs_error err = {{0}};
    fs_kv_batch b;
    cr_assert_eq(fs_kv_build_batch(&b, &t.m, t.ctx, t.rows, &err), 0, "%s", err.msg);
    fs_kv_batch_freeze(&b);
    for (int r = 0; r < b.rows; r++) {
        size_t layer = sizeof(float) * (size_t)cfg.num_heads * 2 * t.ctx[r].pairs * (cfg.d_model / cfg.num_heads);
        cr_expect_eq(fs_kv_bytes(&b.row[r]), 2 * (size_t)cfg.depth * layer, "row %d", r);
        for (int l = 0; l < cfg.depth; l++) {
            size_t k = malloc_usable_size(b.row[r].layer[l].keys), v = malloc_usable_size(b.row[r].layer[l].values);
            cr_expect(k >= layer && k < layer + 128 && v >= layer && v < layer + 128,
                      "row %d layer %d: %zu bytes reported, %zu / %zu allocated", r, l, layer, k, v);
        }
    }
    fs_kv_batch_free(&b);
    free_batch(&t);
}

Test(kvbatch, bad_input)
{
    fs_model_config cfg = small_config(0);
    test_batch t;
    make_batch(&t, &cfg, 3, 980);
    fs_error err = {{0}};
    fs_kv_batch b;
    expect_error(fs_kv_build_batch(&b, &t.m, t.ctx, 0, &err), &err, "no contexts", "B = 0");
    int pairs = t.ctx[1].pairs;
    t.ctx[1].pairs = 0;
    expect_error(fs_kv_build_batch(&b, &t.m, t.ctx, t.rows, &err), &err, "row 1", "hides every token");
    t.ctx[1].pairs = pairs;
    t.ctx[2].dim = cfg.input_dim + 1;
    expect_error(fs_kv_build_batch(&b, &t.m, t.ctx, t.rows, &err), &err, "row 2", "input_dim 24");
    t.ctx[2].dim = cfg.input_dim;
    int label = t.ctx[2].labels[0];
    t.ctx[2].labels[0] = cfg.num_classes;
    expect_error(fs_kv_build_batch(&b, &t.m, t.ctx, t.rows, &err), &err, "row 2", "label 4");
    t.ctx[2].labels[0] = label;
    cr_assert_eq(fs_kv_build_batch(&b, &t.m, t.ctx, t.rows, &err), 0, "%s", err.msg);
    expect_error(fs_kv_append_row(&b, 3, t.ctx[0].examples, 0, &err), &err, "row 3", "3 rows");
    expect_error(fs_kv_append_row(&b, 0, t.ctx[0].examples, 9, &err), &err, "row 0", "label 9");
    fs_kv_batch_freeze(&b);
    float logits[256];
    t.q[0].dim = 5;
    expect_error(fs_kv_classify_batch(&b, t.q, logits, 1, &err), &err, "row 0", "queries have 5 features");
    t.q[0].dim = cfg.input_dim;
    fs_kv_batch_free(&b);
    free_batch(&t);
}

/* ---- --contexts HDF5 files ---- */

typedef struct {
    const char *name;
    int rank;
    hsize_t dims[3];
    hid_t type;
    const void *data;
} h5_dset;

static void write_h5_sets(const char *file, const h5_dset *sets, int n)
{
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    hid_t f = H5Fcreate(file, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    cr_assert_geq(f, 0);
    for (int i = 0; i < n; i++) {
        hid_t space = H5Screate_simple(sets[i].rank, sets[i].dims, NULL);
        hid_t d = H5Dcreate2(f, sets[i].name, sets[i].type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        cr_assert_geq(d, 0);
        cr_assert_geq(H5Dwrite(d, sets[i].type, H5S_ALL, H5S_ALL, H5P_DEFAULT, sets[i].data), 0);
        H5Dclose(d), H5Sclose(space);
    }
    H5Fclose(f);
}

/* 3 rows x 4 pairs x D; lengths {4, 2, 3}. */
enum { HB = 3, HP = 4, HQ = 2 };

Test(kvbatch, hdf5_contexts_layout)
{
    fs_model_config cfg = small_config(0);
    int D = cfg.input_dim;
    char dir[128];
    th_tmpdir(dir, sizeof dir, "kvb");
    const char *file = th_path(dir, "ctx.h5");
    float *ex = random_rows(HB * HP, D, 990), *qx = random_rows(HB * HQ, D, 991);
    int lab[HB * HP] = {0, 1, 2, 3, 1, 2, 0, 0, 3, 3, 2, 1}, len[HB] = {4, 2, 3}, qlab[HB * HQ] = {0, 1, 2, 3, 0, 1};
    h5_dset sets[] = {
        {"examples", 3, {HB, HP, D}, H5T_NATIVE_FLOAT, ex},
        {"labels", 2, {HB, HP}, H5T_NATIVE_INT, lab},
        {"lengths", 1, {HB}, H5T_NATIVE_INT, len},
        {"queries", 3, {HB, HQ, D}, H5T_NATIVE_FLOAT, qx},
        {"query_labels", 2, {HB, HQ}, H5T_NATIVE_INT, qlab},
    };
    fs_error err = {{0}};
    fs_kv_batch_inputs in;
    /* sequences split into context + query: the last real pair of each row is its query */
    write_h5_sets(file, sets, 3);
    cr_assert_eq(fs_kv_batch_inputs_load_h5(file, &cfg, &in, &err), 0, "%s", err.msg);
    cr_assert_eq(in.rows, HB);
    for (int b = 0; b < HB; b++) {
        cr_expect_eq(in.contexts[b].pairs, len[b] - 1, "row %d", b);
        cr_expect_eq(in.queries[b].count, 1);
        cr_expect_eq(in.queries[b].labels[0], lab[b * HP + len[b] - 1]);
        cr_expect_eq(memcmp(in.queries[b].examples, ex + ((size_t)b * HP + len[b] - 1) * D, sizeof(float) * D), 0);
        cr_expect_eq(memcmp(in.contexts[b].examples, ex + (size_t)b * HP * D, sizeof(float) * (len[b] - 1) * D), 0);
    }
    fs_kv_batch_inputs_free(&in);
    /* a separate queries dataset: every real pair is context */
    write_h5_sets(file, sets, 5);
    cr_assert_eq(fs_kv_batch_inputs_load_h5(file, &cfg, &in, &err), 0, "%s", err.msg);
    for (int b = 0; b < HB; b++) {
        cr_expect_eq(in.contexts[b].pairs, len[b]);
        cr_expect_eq(in.queries[b].count, (size_t)HQ);
        cr_expect(in.queries[b].labels[1] == qlab[b * HQ + 1]);
        cr_expect_eq(memcmp(in.queries[b].examples, qx + (size_t)b * HQ * D, sizeof(float) * HQ * D), 0);
    }
    fs_kv_batch_inputs_free(&in);
    /* no lengths: every row has all P pairs */
    h5_dset no_len[] = {sets[0], sets[1], sets[3]};
    write_h5_sets(file, no_len, 3);
    cr_assert_eq(fs_kv_batch_inputs_load_h5(file, &cfg, &in, &err), 0, "%s", err.msg);
    cr_expect(in.contexts[1].pairs == HP && in.queries[1].labels == NULL);
    fs_kv_batch_inputs_free(&in);

    /* bad files */
    int zero[HB] = {4, 0, 3}, over[HB] = {4, 5, 3}, one[HB] = {4, 1, 3}, bad_lab[HB * HP] = {0, 1, 2, 7};
    int bad_qlab[HB * HQ] = {0, 1, 2, 3, 0, 4};
    struct {
        h5_dset sets[5];
        int n;
        const char *want1, *want2;
    } bad[] = {
        {{sets[0], sets[1], {"lengths", 1, {HB}, H5T_NATIVE_INT, zero}}, 3, "lengths[1] = 0", "hides every token"},
        {{sets[0], sets[1], {"lengths", 1, {HB}, H5T_NATIVE_INT, over}}, 3, "lengths[1] = 5", "1..4"},
        {{sets[0], sets[1], {"lengths", 1, {HB}, H5T_NATIVE_INT, one}}, 3, "row 1", "no context pair"},
        {{sets[0], sets[1], {"lengths", 1, {2}, H5T_NATIVE_INT, len}}, 3, "lengths", "B = 3"},
        {{sets[0], {"labels", 2, {HB, HP}, H5T_NATIVE_INT, bad_lab}}, 2, "label 7", "[0, 4)"},
        {{sets[0], sets[1], sets[3], {"query_labels", 2, {HB, HQ}, H5T_NATIVE_INT, bad_qlab}}, 4, "query_labels[2][1]",
         "[0, 4)"},
        {{sets[0], sets[1], sets[4]}, 3, "query_labels needs a queries dataset", NULL},
        {{sets[0], sets[1], {"queries", 3, {HB, HQ, 4}, H5T_NATIVE_FLOAT, qx}}, 3, "queries", "input_dim 24"},
        {{{"examples", 3, {HB, HP * D / 8, 8}, H5T_NATIVE_FLOAT, ex}, sets[1]}, 2, "input_dim = 24", NULL},
        {{{"examples", 3, {0, HP, D}, H5T_NATIVE_FLOAT, ex}, {"labels", 2, {0, HP}, H5T_NATIVE_INT, lab}}, 2,
         "dimension 0 has size 0", NULL},
        {{sets[1]}, 1, "no dataset \"examples\"", NULL},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        write_h5_sets(file, bad[i].sets, bad[i].n);
        expect_error(fs_kv_batch_inputs_load_h5(file, &cfg, &in, &err), &err, file, bad[i].want1);
        if (bad[i].want2)
            cr_expect(strstr(err.msg, bad[i].want2), "case %zu: '%s' should mention '%s'", i, err.msg, bad[i].want2);
        cr_expect(in.rows == 0 && in.contexts == NULL, "nothing is kept on error");
    }
    const char *json = th_path(dir, "ctx.json");
    th_write_text(json, "{}");
    expect_error(fs_kv_batch_inputs_load_h5(json, &cfg, &in, &err), &err, "not an HDF5 file", "examples [B][P][24]");
    free(ex), free(qx);
    th_rmtree(dir);
}

/* An evaluator's sequences split into context + query: many rows of 1-3 queries. Their
 * queries share step chunks (each lane at its own row's position, attending to its own
 * row's cache); the logits stay bit-identical to one-context caches and do not depend
 * on the thread count. */
Test(kvbatch, few_query_rows_share_chunks)
{
    for (int v = 0; v < SMALL_VARIANTS; v += 3) {
        fs_model_config cfg = small_config(v);
        fs_model m;
        random_model(&m, &cfg, 870 + v);
        enum { ROWS = 45 };
        int D = cfg.input_dim, C = cfg.num_classes, max_pairs = cfg.pos_embedding == FS_POS_APE ? 15 : 64;
        fs_kv_context ctx[ROWS];
        fs_kv_queries q[ROWS];
        size_t total = 0;
        for (int r = 0; r < ROWS; r++) {
            int k = 1 + (r * 37) % max_pairs;
            size_t n = 1 + (size_t)(r % 3);
            ctx[r] = (fs_kv_context){k, D, random_rows((size_t)k, D, 3000 + r), random_labels(k, C, 3000 + r)};
            q[r] = (fs_kv_queries){n, D, random_rows(n, D, 4000 + r), NULL};
            total += n;
        }
        float *one = malloc(sizeof(float) * total * C), *two = malloc(sizeof(float) * total * C), want[3 * 9];
        fs_error err = {{0}};
        fs_kv_batch b;
        cr_assert_eq(fs_kv_build_batch(&b, &m, ctx, ROWS, &err), 0, "%s", err.msg);
        fs_kv_batch_freeze(&b);
        cr_assert_eq(fs_kv_classify_batch(&b, q, one, 1, &err), 0, "%s", err.msg);
        cr_assert_eq(fs_kv_classify_batch(&b, q, two, 2, &err), 0, "%s", err.msg);
        cr_expect_eq(memcmp(one, two, sizeof(float) * total * C), 0, "1 and 2 threads differ");
        size_t q0 = 0;
        for (int r = 0; r < ROWS; r++) {
            frozen_logits(&m, ctx[r].examples, ctx[r].labels, ctx[r].pairs, q[r].examples, (int)q[r].count, 1, want);
            cr_expect_eq(memcmp(one + q0 * C, want, sizeof(float) * q[r].count * C), 0,
                         "variant %d row %d (%d pairs): packed vs one-context logits differ (max %g)", v, r,
                         ctx[r].pairs, max_abs_diff(one + q0 * C, want, q[r].count * C));
            q0 += q[r].count;
        }
        fs_kv_batch_free(&b);
        for (int r = 0; r < ROWS; r++)
            fs_kv_context_free(&ctx[r]), fs_kv_queries_free(&q[r]);
        free(one), free(two);
        fs_model_free(&m);
    }
}

/* `fewshot classify --contexts`: an evaluator's sequences written by `fewshot cache
 * --sample --names examples,labels` are a --contexts file (last pair = query); each row's
 * correctness equals `fewshot eval --input --per-sequence` (the full forward) on the same
 * sequences; --kv-stats adds tokens and bytes per row; bad files and flags are errors. */
Test(kvbatch, classify_contexts_command)
{
    char dir[128];
    th_tmpdir(dir, sizeof dir, "kvbc");
    const char *cfg = th_path(dir, "run.json"), *model = th_path(dir, "m.safetensors"), *h5 = th_path(dir, "ctx.h5");
    /* a tiny model on synth_small.h5's 64-dim features (the model file carries the config) */
    th_write_text(cfg, "{\"model\": {\"input_dim\": 64, \"num_classes\": 5, \"d_model\": 16, \"num_heads\": 2, "
                       "\"depth\": 2, \"mlp_ratio\": 2, \"init_seed\": 5},\n \"data\": {\"file\": "
                       "\"datasets/synth_small.h5\", \"class_split\": [100, 50, 50], \"exemplar_split\": [3, 2, 0], "
                       "\"fs_relabel\": 5, \"fs_relabel_split\": [8, 2, 0]},\n \"train\": {\"train_context_len\": 2},\n"
                       " \"eval\": {\"eval_seed\": 1, \"evaluators\": [{\"name\": \"fsl_train\"}]}}\n");
    th_run_result r;
    th_run_ok("init --config %s -o %s", cfg, model);
    th_run_ok("cache --config %s --model %s --sample 40 --evaluator fsl_train --names examples,labels -o %s", cfg, model, h5);

    th_run(&r, "classify --model %s --contexts %s --json --threads 2", model, h5);
    cr_assert(r.exited && r.code == 0, "%s", th_describe(&r));
    cJSON *doc = cJSON_Parse(r.out);
    cr_assert_not_null(doc, "%s", r.out);
    th_run_free(&r);
    th_run(&r, "eval --model %s --input %s --per-sequence", model, h5);
    cr_assert(r.exited && r.code == 0, "%s", th_describe(&r));
    cJSON *ev = cJSON_Parse(r.out);
    th_run_free(&r);
    const cJSON *acc = cJSON_GetObjectItem(cJSON_GetObjectItem(ev, "metrics"), "acc");
    const cJSON *rows = cJSON_GetObjectItem(doc, "rows");
    cr_assert_eq(cJSON_GetArraySize(rows), 40);
    cr_assert_eq(cJSON_GetArraySize(acc), 40, "eval --per-sequence: one accuracy per sequence");
    double correct = 0;
    for (int b = 0; b < 40; b++) {
        const cJSON *row = cJSON_GetArrayItem(rows, b);
        cr_expect_eq(cJSON_GetObjectItem(row, "pairs")->valueint, 2, "row %d: P - 1 context pairs", b);
        cr_expect_eq(cJSON_GetObjectItem(row, "tokens")->valueint, 4);
        cr_expect_eq(cJSON_GetObjectItem(row, "bytes")->valuedouble, 2 * 2 * (2 * 4 * 8 * 4.0));
        cr_expect_eq(cJSON_GetArraySize(cJSON_GetObjectItem(row, "predictions")), 1);
        double a = cJSON_GetObjectItem(row, "accuracy")->valuedouble;
        cr_expect_eq(a, cJSON_GetArrayItem(acc, b)->valuedouble, "row %d: batched cache vs full forward", b);
        correct += a;
    }
    const cJSON *overall = cJSON_GetObjectItem(doc, "overall");
    cr_expect_eq(cJSON_GetObjectItem(overall, "queries")->valueint, 40);
    cr_expect_float_eq(cJSON_GetObjectItem(overall, "accuracy")->valuedouble, correct / 40, 1e-12);
    cJSON_Delete(doc), cJSON_Delete(ev);

    th_run(&r, "classify --model %s --contexts %s --kv-stats --kv-keep 0.5", model, h5);
    cr_assert(r.exited && r.code == 0, "%s", th_describe(&r));
    cr_expect(strstr(r.out, "tokens") && strstr(r.out, "4 -> 2") && strstr(r.out, "overall") &&
                  strstr(r.out, "160 -> 80"),
              "%s", r.out);
    cr_expect(strstr(r.err, "queries/s"), "%s", r.err);
    th_run_free(&r);

    /* bad input: every error names the file and exits 1 without output */
    const char *bad = th_path(dir, "bad.h5");
    float ex[2 * 3 * 3] = {0};
    int lab[2 * 3] = {0}, len[2] = {3, 0};
    h5_dset narrow[] = {{"examples", 3, {2, 3, 3}, H5T_NATIVE_FLOAT, ex}, {"labels", 2, {2, 3}, H5T_NATIVE_INT, lab}};
    write_h5_sets(bad, narrow, 2);
    th_run(&r, "classify --model %s --contexts %s", model, bad);
    cr_expect(r.exited && r.code == 1 && strstr(r.err, bad) && strstr(r.err, "input_dim = 64"), "%s", th_describe(&r));
    cr_expect_eq(r.out[0], 0);
    th_run_free(&r);
    float *wide = calloc(2 * 3 * 64, sizeof(float));
    h5_dset hidden[] = {{"examples", 3, {2, 3, 64}, H5T_NATIVE_FLOAT, wide},
                        {"labels", 2, {2, 3}, H5T_NATIVE_INT, lab},
                        {"lengths", 1, {2}, H5T_NATIVE_INT, len}};
    write_h5_sets(bad, hidden, 3);
    free(wide);
    th_run(&r, "classify --model %s --contexts %s --json", model, bad);
    cr_expect(r.exited && r.code == 1 && strstr(r.err, "lengths[1] = 0 hides every token"), "%s", th_describe(&r));
    cr_expect_eq(r.out[0], 0);
    th_run_free(&r);
    struct {
        const char *args, *want;
    } flags[] = {
        {"--context datasets/examples/classify_context.json", "drop --context"},
        {"--kv-sweep", "--kv-sweep"},
        {"--kv-keep 9", "row 0"},
    };
    for (size_t i = 0; i < sizeof flags / sizeof *flags; i++) {
        th_run(&r, "classify --model %s --contexts %s %s", model, h5, flags[i].args);
        cr_expect(r.exited && r.code == 1 && strstr(r.err, flags[i].want), "%s: %s", flags[i].args, th_describe(&r));
        cr_expect_eq(r.out[0], 0);
        th_run_free(&r);
    }
    th_run(&r, "classify --model %s --contexts %s", model, cfg);
    cr_expect(r.exited && r.code == 1 && strstr(r.err, "not an HDF5 file"), "%s", th_describe(&r));
    th_run_free(&r);
    th_run(&r, "classify --help");
    cr_expect(strstr(r.out, "--contexts") && strstr(r.out, "lengths [B]"), "%s", r.out);
    th_run_free(&r);
    th_rmtree(dir);
}
