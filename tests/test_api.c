/* The flat C API (include/fewshot/api.h), also under AddressSanitizer (make asan-test):
 * selected leaves and logits equal the cache forward's, chunked runs equal one-sequence
 * runs, per-sequence clamps and interventions, gradients, the KV classifier, training with
 * a stop flag, and errors as messages. The Python module's tests cover the rest. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fewshot/api.h"
#include "fewshot/version.h"
#include "helpers.h"

static const char *small_cfg =
    "{\"model\": {\"input_dim\": 6, \"num_classes\": 3, \"d_model\": 16, \"num_heads\": 2, \"depth\": 2}}";

static fs_api_model *small_model(int64_t seed)
{
    fs_api_model *m;
    fs_error err = {{0}};
    cr_assert_eq(fs_api_model_init(small_cfg, seed, &m, &err), 0, "%s", err.msg);
    return m;
}

static void random_inputs(int64_t B, int P, int D, int C, uint64_t seed, float **ex, int32_t **lab)
{
    th_rng r = {seed};
    *ex = malloc(sizeof(float) * (size_t)(B * P * D));
    *lab = malloc(sizeof(int32_t) * (size_t)(B * P));
    for (int64_t i = 0; i < B * P * D; i++)
        (*ex)[i] = (float)th_rng_sym(&r, 1.0);
    for (int64_t i = 0; i < B * P; i++)
        (*lab)[i] = th_rng_int(&r, C);
}

static int leaf_index(const fs_api_layout *l, const char *name)
{
    for (int i = 0; i < fs_api_layout_count(l); i++)
        if (!strcmp(fs_api_layout_name(l, i), name))
            return i;
    cr_assert_fail("no leaf %s", name);
    return -1;
}

static size_t leaf_numel(const fs_api_layout *l, int i)
{
    int64_t shape[4];
    int rank = fs_api_layout_shape(l, i, shape);
    size_t n = 1;
    for (int k = 0; k < rank; k++)
        n *= (size_t)shape[k];
    return n;
}

Test(api, version_and_layout)
{
    cr_assert_str_eq(fs_api_version(), FEWSHOT_VERSION);
    fs_api_model *m = small_model(1);
    fs_api_layout *l;
    fs_error err = {{0}};
    cr_assert_eq(fs_api_layout_create(m, 3, &l, &err), 0, "%s", err.msg);
    int64_t shape[4];
    int i = leaf_index(l, "transformer_output.block_outputs.1.attn_output.attn_scores");
    cr_assert_eq(fs_api_layout_shape(l, i, shape), 4);
    cr_assert(shape[0] == 1 && shape[1] == 2 && shape[2] == 5 && shape[3] == 5);
    cr_assert_eq(fs_api_layout_shape(l, leaf_index(l, "pos_embedding"), shape), -1, "null under RoPE");
    char *cfg = fs_api_model_config(m);
    cr_assert(strstr(cfg, "\"d_model\":16") && strstr(cfg, "\"init_seed\":1"), "%s", cfg);
    fs_api_free(cfg);
    fs_api_layout_free(l);
    fs_api_model_free(m);
}

/* Equal up to the last bits: the matrix kernels' rounding depends on how many rows go
 * through at once (the batch's share per thread), not on the values' positions. */
static bool same(const float *a, const float *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!th_close(a[i], b[i], 1e-5, 1e-6))
            return false;
    return true;
}

/* A batch large enough to go through the forward in several chunks gives each sequence
 * the leaves and logits of a run of that sequence alone (each chunk's rows land at their
 * sequences' offsets). */
Test(api, run_equals_the_cache_forward_and_chunks_do_not_matter, .timeout = 120)
{
    fs_api_model *m = small_model(2);
    const int P = 24, D = 6, C = 3;
    const int64_t B = 300; /* P 24: ~0.9 MB of activations per sequence, so several chunks */
    float *ex;
    int32_t *lab;
    random_inputs(B, P, D, C, 7, &ex, &lab);
    fs_api_layout *l;
    fs_error err = {{0}};
    cr_assert_eq(fs_api_layout_create(m, P, &l, &err), 0, "%s", err.msg);
    int sel[2] = {leaf_index(l, "transformer_output.block_outputs.0.attn_output.attn_scores"),
                  leaf_index(l, "transformer_output.block_outputs.1.mlp")};
    size_t n0 = leaf_numel(l, sel[0]), n1 = leaf_numel(l, sel[1]);
    float *out0 = malloc(sizeof(float) * n0 * B), *out1 = malloc(sizeof(float) * n1 * B);
    float *logits = malloc(sizeof(float) * (size_t)(B * P * C));
    float *outs[2] = {out0, out1};
    cr_assert_eq(fs_api_run(m, ex, lab, B, P, NULL, NULL, sel, 2, outs, logits, &err), 0, "%s", err.msg);
    float one0[8192], one1[8192], one_logits[128];
    cr_assert(n0 <= 8192 && n1 <= 8192 && P * C <= 128);
    float *one[2] = {one0, one1};
    for (int64_t b = 0; b < B; b += 37) {
        cr_assert_eq(fs_api_run(m, ex + b * P * D, lab + b * P, 1, P, NULL, NULL, sel, 2, one, one_logits, &err), 0);
        cr_assert(same(one0, out0 + b * n0, n0), "sequence %lld, attn_scores", (long long)b);
        cr_assert(same(one1, out1 + b * n1, n1), "sequence %lld, mlp", (long long)b);
        cr_assert(same(one_logits, logits + b * P * C, (size_t)(P * C)), "sequence %lld, logits", (long long)b);
    }
    free(out0);
    free(out1);
    free(logits);
    free(ex);
    free(lab);
    fs_api_layout_free(l);
    fs_api_model_free(m);
}

/* A per-sequence clamp zeroing one head's values equals the named intervention; with
 * interventions on top of a shared clamp nothing crashes and the clamp holds. */
Test(api, clamps_and_interventions)
{
    fs_api_model *m = small_model(3);
    const int P = 3, D = 6, C = 3;
    const int64_t B = 5;
    float *ex;
    int32_t *lab;
    random_inputs(B, P, D, C, 9, &ex, &lab);
    fs_error err = {{0}};
    fs_api_layout *l;
    cr_assert_eq(fs_api_layout_create(m, P, &l, &err), 0, "%s", err.msg);
    int v = leaf_index(l, "transformer_output.block_outputs.1.attn_output.v");
    size_t nv = leaf_numel(l, v); /* [1, 2, 5, 8] */
    float *zero = calloc(nv * B, sizeof(float));
    uint8_t *mask = calloc(nv * B, 1);
    for (int64_t b = 0; b < B; b++)
        memset(mask + b * nv + nv / 2, 1, nv / 2); /* head 1 of every sequence */
    fs_api_clamps *c;
    cr_assert_eq(fs_api_clamps_create(l, &c, &err), 0);
    cr_assert_eq(fs_api_clamps_set(c, v, zero, mask, B, &err), 0, "%s", err.msg);
    float a[45], b[45];
    cr_assert_eq(fs_api_run(m, ex, lab, B, P, c, NULL, NULL, 0, NULL, a, &err), 0, "%s", err.msg);
    cr_assert_eq(fs_api_run(m, ex, lab, B, P, NULL, "{\"ablate_heads\": [\"1:1\"]}", NULL, 0, NULL, b, &err), 0,
                 "%s", err.msg);
    cr_assert_eq(memcmp(a, b, sizeof a), 0, "clamping head 1's values to 0 = ablate_heads 1:1");
    /* a per-sequence clamp needs exactly its number of sequences */
    cr_assert_eq(fs_api_run(m, ex, lab, B - 1, P, c, NULL, NULL, 0, NULL, a, &err), -1);
    cr_assert(strstr(err.msg, "per-sequence values for 5 sequences but the input has 4"), "%s", err.msg);
    /* a clamp set of another length */
    fs_api_layout *l4;
    fs_api_clamps *c4;
    cr_assert_eq(fs_api_layout_create(m, 4, &l4, &err), 0);
    cr_assert_eq(fs_api_clamps_create(l4, &c4, &err), 0);
    cr_assert_eq(fs_api_run(m, ex, lab, B, P, c4, NULL, NULL, 0, NULL, a, &err), -1);
    cr_assert(strstr(err.msg, "made for sequences of 4 pairs"), "%s", err.msg);
    /* bad masks and interventions are errors */
    mask[3] = 2;
    cr_assert_eq(fs_api_clamps_set(c, v, zero, mask, B, &err), -1);
    cr_assert(strstr(err.msg, "0 or 1"), "%s", err.msg);
    cr_assert_eq(fs_api_run(m, ex, lab, B, P, NULL, "{\"ablate_heads\": [\"1:9\"]}", NULL, 0, NULL, a, &err), -1);
    cr_assert(strstr(err.msg, "ablate_heads"), "%s", err.msg);
    cr_assert_eq(fs_api_run(m, ex, lab, B, P, NULL, "{not json", NULL, 0, NULL, a, &err), -1);
    cr_assert(strstr(err.msg, "not valid JSON"), "%s", err.msg);
    fs_api_clamps_free(c4);
    fs_api_layout_free(l4);
    fs_api_clamps_free(c);
    free(zero);
    free(mask);
    free(ex);
    free(lab);
    fs_api_layout_free(l);
    fs_api_model_free(m);
}

Test(api, inputs_are_checked)
{
    fs_api_model *m = small_model(4);
    float ex[18] = {0}, logits[9];
    int32_t lab[3] = {0, 1, 3};
    fs_error err = {{0}};
    cr_assert_eq(fs_api_run(m, ex, lab, 1, 3, NULL, NULL, NULL, 0, NULL, logits, &err), -1);
    cr_assert(strstr(err.msg, "labels[0][2] = 3 is out of range"), "%s", err.msg);
    lab[2] = 1;
    ex[13] = NAN;
    cr_assert_eq(fs_api_run(m, ex, lab, 1, 3, NULL, NULL, NULL, 0, NULL, logits, &err), -1);
    cr_assert(strstr(err.msg, "examples[0][2][1] is not a finite number"), "%s", err.msg);
    cr_assert_eq(fs_api_run(m, ex, lab, 0, 3, NULL, NULL, NULL, 0, NULL, logits, &err), -1);
    fs_api_model *bad;
    cr_assert_eq(fs_api_model_init("{\"model\": {\"d_model\": 10, \"num_heads\": 3}}", 0, &bad, &err), -1);
    cr_assert_null(bad);
    cr_assert_eq(fs_api_model_load("/nonexistent/m.safetensors", NULL, &bad, &err), -1);
    cr_assert(strstr(err.msg, "/nonexistent/m.safetensors"), "%s", err.msg);
    fs_api_model_free(m);
}

/* Gradients equal the C trainer's (through fs_api: same numbers as `fewshot grad`), the KV
 * classifier equals the forward's query logits. */
Test(api, grads_and_kv)
{
    fs_api_model *m = small_model(5);
    const int P = 3, D = 6, C = 3;
    float *ex;
    int32_t *lab;
    random_inputs(4, P, D, C, 11, &ex, &lab);
    fs_error err = {{0}};
    int n = fs_api_param_count(m);
    float **g = calloc((size_t)n, sizeof *g);
    int ub = -1;
    for (int i = 0; i < n; i++) {
        int nd;
        int64_t shape[2];
        const char *name = fs_api_param_info(m, i, &nd, shape);
        g[i] = malloc(sizeof(float) * (size_t)(shape[0] * (nd > 1 ? shape[1] : 1)));
        if (!strcmp(name, "unembed.bias"))
            ub = i;
    }
    double loss;
    cr_assert_eq(fs_api_loss_and_grads(m, ex, lab, 4, P, NULL, NULL, 0, &loss, g, &err), 0, "%s", err.msg);
    /* d loss / d unembed.bias = mean over the batch of softmax(z) - onehot(y) */
    float logits[36];
    cr_assert_eq(fs_api_run(m, ex, lab, 4, P, NULL, NULL, NULL, 0, NULL, logits, &err), 0);
    double want[3] = {0}, ce = 0;
    for (int b = 0; b < 4; b++) {
        const float *z = logits + (b * P + P - 1) * C;
        double mx = fmax(z[0], fmax(z[1], z[2])), s = 0;
        for (int c = 0; c < C; c++)
            s += exp(z[c] - mx);
        for (int c = 0; c < C; c++)
            want[c] += (exp(z[c] - mx) / s - (c == lab[b * P + P - 1])) / 4;
        ce += (log(s) + mx - z[lab[b * P + P - 1]]) / 4;
    }
    cr_assert(fabs(loss - ce) < 1e-5, "loss %g vs %g", loss, ce);
    for (int c = 0; c < C; c++)
        cr_assert(fabs(g[ub][c] - want[c]) < 1e-5, "unembed.bias[%d]: %g vs %g", c, g[ub][c], want[c]);
    /* the KV classifier: context = the first two pairs of sequence 0, queries = every
     * sequence's last exemplar */
    fs_api_kv *kv;
    cr_assert_eq(fs_api_kv_create(m, ex, lab, 2, &kv, &err), 0, "%s", err.msg);
    float q[4 * 6], ql[4 * 3];
    for (int b = 0; b < 4; b++)
        memcpy(q + b * D, ex + (b * P + 2) * D, sizeof(float) * D);
    cr_assert_eq(fs_api_kv_classify(kv, q, 4, 1, ql, &err), 0, "%s", err.msg);
    for (int b = 0; b < 4; b++) {
        float seq[18], out[9];
        int32_t sl[3] = {lab[0], lab[1], 0};
        memcpy(seq, ex, sizeof(float) * 2 * D);
        memcpy(seq + 2 * D, q + b * D, sizeof(float) * D);
        cr_assert_eq(fs_api_run(m, seq, sl, 1, 3, NULL, NULL, NULL, 0, NULL, out, &err), 0);
        for (int c = 0; c < C; c++)
            cr_assert(fabs(out[2 * C + c] - ql[b * C + c]) < 1e-5);
    }
    fs_api_kv_free(kv);
    for (int i = 0; i < n; i++)
        free(g[i]);
    free(g);
    free(ex);
    free(lab);
    fs_api_model_free(m);
}

typedef struct {
    volatile int *stop;
    int64_t last_step, calls;
} progress_log;

static void on_progress(void *ctx, int64_t step, int64_t total, int64_t iter, double sps, double loss,
                        const char *eval_name, double eval_acc)
{
    progress_log *p = ctx;
    p->calls++;
    p->last_step = step;
    if (step == 10)
        *p->stop = 1;
}

Test(api, train_stops_on_the_flag_with_a_checkpoint, .timeout = 120)
{
    char dir[64];
    th_tmpdir(dir, sizeof dir, "api_train");
    const char *cfg =
        "{\"model\": {\"d_model\": 16, \"num_heads\": 2, \"init_seed\": 5},"
        " \"data\": {\"file\": \"datasets/synth_small.h5\", \"class_split\": [100, 50, 50], \"exemplar_split\": [3, 2, 0]},"
        " \"train\": {\"train_iters\": 3200, \"train_bs\": 16, \"lr\": 0.001, \"threads\": 1},"
        " \"eval\": {\"eval_iters\": 50, \"evaluators\": [{\"name\": \"fsl_train\"}]}}";
    volatile int stop = 0;
    progress_log log = {&stop, 0, 0};
    fs_error err = {{0}};
    const char *out = th_path(dir, "run");
    int rc = fs_api_train(cfg, 0, out, 0, 0, -1, &stop, on_progress, &log, &err);
    cr_assert_eq(rc, 1, "stopped: %s", err.msg);
    cr_assert_eq(log.last_step, 11, "the step under way finishes, then the run stops");
    char *ck = th_read_file(th_path(dir, "run/checkpoints/step_00000011.safetensors"), NULL);
    cr_assert_not_null(ck, "a checkpoint at the stop");
    free(ck);
    stop = 0;
    cr_assert_eq(fs_api_train(cfg, 0, out, 1, 0, -1, &stop, NULL, NULL, &err), 0, "%s", err.msg);
    cr_assert_eq(fs_api_train("{\"train\": {\"lr\": \"fast\"}}", 0, th_path(dir, "bad"), 0, 0, -1, NULL, NULL, NULL,
                              &err),
                 -1);
    cr_assert(strstr(err.msg, "train.lr"), "%s", err.msg);
    th_rmtree(dir);
}
