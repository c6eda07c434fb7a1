/* Progress measures (issue 15): each measure against a direct computation from the
 * dumped cache (`fewshot cache`) and from `fewshot eval --intervene` on hand-built
 * sequences; the probe set's construction and determinism; the config keys; the
 * evaluation schedule. Resume with measures: tests/test_train.c. */
#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fewshot/forward.h"
#include "train/measures.h"
#include "fewshot/seqio.h"
#include "train/run.h"
#include "helpers.h"
#include "model/leaves.h"
#include "train/schedule.h"

static char g_dir[128];
static void setup_dir(void) { th_tmpdir(g_dir, sizeof g_dir, "measures"); }
static void teardown_dir(void) { th_rmtree(g_dir); }

enum { NSEQ = 48, D_IN = 6, C = 4, HEADS = 2, DEPTH = 2 };

/* A small random model saved in g_dir/model.safetensors. */
static const char *save_model(void)
{
    fs_model_config c;
    th_tiny_config(&c);
    c.num_classes = C, c.depth = DEPTH, c.num_heads = HEADS;
    c.d_model = 16; /* the widths for which the query-only forward is bit-identical (test_kernels) */
    fs_model m;
    th_random_model(&m, &c, 42, 0.5);
    const char *path = th_path(g_dir, "model.safetensors");
    fs_error err = {{0}};
    cr_assert_eq(fs_model_save(&m, path, &err), 0, "%s", err.msg);
    fs_model_free(&m);
    return path;
}

/* NSEQ sequences of P pairs: random examples, labels from `pattern` (cycled per sequence,
 * P labels each, the last one the query's), written as an input file. */
static const char *write_input(const char *name, int P, const int *pattern, int npatterns, int *labels)
{
    th_rng rng = {7};
    cJSON *root = cJSON_CreateObject(), *ex = cJSON_AddArrayToObject(root, "examples"),
          *lab = cJSON_AddArrayToObject(root, "labels");
    for (int b = 0; b < NSEQ; b++) {
        cJSON *seq = cJSON_CreateArray();
        for (int i = 0; i < P; i++) {
            float x[D_IN];
            for (int t = 0; t < D_IN; t++)
                x[t] = (float)th_rng_sym(&rng, 1.0);
            cJSON_AddItemToArray(seq, cJSON_CreateFloatArray(x, D_IN));
            labels[b * P + i] = pattern[(b % npatterns) * P + i];
        }
        cJSON_AddItemToArray(ex, seq);
        cJSON_AddItemToArray(lab, cJSON_CreateIntArray(labels + b * P, P));
    }
    char *text = cJSON_PrintUnformatted(root);
    const char *path = th_path(g_dir, name);
    th_write_text(path, text);
    free(text);
    cJSON_Delete(root);
    return path;
}

static cJSON *run_json(const char *fmt, const char *model, const char *input, const char *extra)
{
    th_run_result r;
    th_run(&r, fmt, model, input, extra);
    cr_assert(r.exited && r.code == 0, "%s", th_describe(&r));
    cJSON *j = cJSON_Parse(r.out);
    cr_assert_not_null(j, "not JSON: %.200s", r.out);
    th_run_free(&r);
    return j;
}

static double at(const cJSON *measures, const char *name, int l, int h)
{
    const cJSON *v = cJSON_GetArrayItem(cJSON_GetArrayItem(cJSON_GetObjectItem(measures, name), l), h);
    cr_assert(cJSON_IsNumber(v), "%s[%d][%d] missing", name, l, h);
    return v->valuedouble;
}

/* Query accuracy from the logits (`out`) of `fewshot cache` with the interventions `iv`. */
static double clamped_acc(const char *model, const char *input, const char *iv, const int *labels, int P)
{
    cJSON *cache = run_json("cache --model %s --input %s%s", model, input, iv);
    const cJSON *out = cJSON_GetObjectItem(cache, "out");
    cr_assert_eq(cJSON_GetArraySize(out), NSEQ);
    int right = 0;
    for (int b = 0; b < NSEQ; b++) {
        const cJSON *z = cJSON_GetArrayItem(cJSON_GetArrayItem(out, b), P - 1);
        int best = 0;
        for (int c = 1; c < C; c++)
            if (cJSON_GetArrayItem(z, c)->valuedouble > cJSON_GetArrayItem(z, best)->valuedouble)
                best = c;
        right += best == labels[b * P + P - 1];
    }
    cJSON_Delete(cache);
    return (double)right / NSEQ;
}

static void check_against_cache_and_eval(int P, const int *pattern, int npatterns)
{
    const char *model = save_model();
    int labels[NSEQ * 8];
    const char *input = write_input("seq.json", P, pattern, npatterns, labels);
    cJSON *ms = run_json("measure --model %s --input %s%s", model, input, "");
    cJSON *cache = run_json("cache --model %s --input %s%s", model, input, "");
    const cJSON *blocks = cJSON_GetObjectItem(cJSON_GetObjectItem(cache, "transformer_output"), "block_outputs");
    cr_assert_eq(cJSON_GetArraySize(blocks), DEPTH);
    int N = 2 * P - 1, q = N - 1;
    for (int l = 0; l < DEPTH; l++) {
        const cJSON *scores = cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetArrayItem(blocks, l), "attn_output"),
                                                  "attn_scores");
        cr_assert_eq(cJSON_GetArraySize(scores), NSEQ, "batched dump: [B][1][H][N][N]");
        for (int h = 0; h < HEADS; h++) {
            double ind = 0, lab = 0, prev = 0;
            for (int b = 0; b < NSEQ; b++) {
                const cJSON *A = cJSON_GetArrayItem(cJSON_GetArrayItem(cJSON_GetArrayItem(scores, b), 0), h);
#define ATT(i, j) cJSON_GetArrayItem(cJSON_GetArrayItem(A, i), j)->valuedouble
                for (int j = 0; j < P - 1; j++) { /* context pair j: tokens 2j (example), 2j+1 (label) */
                    bool match = labels[b * P + j] == labels[b * P + P - 1];
                    ind += match ? ATT(q, 2 * j + 1) : -ATT(q, 2 * j + 1);
                    lab += match ? ATT(q, 2 * j + 1) : 0;
                    prev += ATT(2 * j + 1, 2 * j);
                }
#undef ATT
            }
            /* the dump prints floats to ~7 significant digits */
            cr_assert(th_close(at(ms, "induction_strength", l, h), ind / NSEQ, 1e-5, 1e-6), "induction %d:%d: %g vs %g",
                      l, h, at(ms, "induction_strength", l, h), ind / NSEQ);
            cr_assert(th_close(at(ms, "label_attention", l, h), lab / NSEQ, 1e-5, 1e-6), "label attention %d:%d", l, h);
            cr_assert(th_close(at(ms, "prev_token_strength", l, h), prev / (NSEQ * (P - 1)), 1e-5, 1e-6),
                      "prev-token %d:%d", l, h);
            /* ablations: the accuracy of the clamped forward (`fewshot cache --intervene`) with the
             * same heads ablated, which `fewshot eval --intervene` reports too */
            for (int only = 0; only < 2; only++) {
                char iv[128];
                snprintf(iv, sizeof iv, " --intervene {\"ablate_heads\":[\"%d:%d\"]}", l, only ? 1 - h : h);
                double want = clamped_acc(model, input, iv, labels, P);
                double got = at(ms, only ? "only_head_acc" : "ablate_head_acc", l, h);
                cr_assert_eq(got, want, "%s %d:%d: %g vs %g", only ? "only" : "ablate", l, h, got, want);
                cJSON *e = run_json("eval --model %s --input %s%s", model, input, iv);
                cr_assert_eq(cJSON_GetObjectItem(e, "acc")->valuedouble, want);
                cJSON_Delete(e);
            }
        }
    }
    cJSON_Delete(cache);
    cJSON_Delete(ms);
}

Test(measures, equal_direct_computation_two_pairs, .init = setup_dir, .fini = teardown_dir, .timeout = 120)
{
    /* the probe's construction (one matching pair, either position), plus a query whose
     * label is not in context (induction = -sum, label attention 0) */
    const int pattern[] = {0, 1, 0, 2, 3, 3, 1, 2, 1, 3, 0, 2};
    check_against_cache_and_eval(3, pattern, 4);
}

Test(measures, equal_direct_computation_longer_contexts, .init = setup_dir, .fini = teardown_dir, .timeout = 120)
{
    /* P > 2 context pairs: sums over matching / other pairs, two matches included */
    const int pattern[] = {0, 1, 2, 3, 2, 1, 1, 3, 0, 1, 2, 2, 0, 3, 0, 0, 1, 0, 1, 2};
    check_against_cache_and_eval(5, pattern, 4);
}

static void open_default(fs_run_config *cfg, fs_run_data *rd)
{
    fs_error err = {{0}};
    fs_run_config_default(cfg);
    cr_assert_eq(fs_run_config_load("configs/default.json", cfg, &err), 0, "%s", err.msg);
    cr_assert_eq(fs_run_data_open(rd, cfg, "default.json", false, &err), 0, "%s", err.msg);
}

/* Class of a probe example: the dataset row it copies (no noise in default.json). */
static int class_of(const fs_dataset *d, const float *x)
{
    for (int c = 0; c < d->num_classes; c++)
        for (int e = 0; e < d->num_exemplars; e++)
            if (!memcmp(fs_dataset_row(d, c, e), x, sizeof(float) * (size_t)d->dim))
                return c;
    return -1;
}

static void check_probe(int ctx)
{
    fs_run_config cfg;
    fs_run_data rd;
    open_default(&cfg, &rd);
    cfg.train.train_context_len = ctx;
    cfg.measures.probe_size = 64;
    fs_error err = {{0}};
    fs_probe_set a, b, c;
    cr_assert_eq(fs_probe_set_build(&a, &rd.task, &cfg, "t", &err), 0, "%s", err.msg);
    cr_assert_eq(fs_probe_set_build(&b, &rd.task, &cfg, "t", &err), 0, "%s", err.msg);
    cfg.measures.probe_seed++;
    cr_assert_eq(fs_probe_set_build(&c, &rd.task, &cfg, "t", &err), 0, "%s", err.msg);
    int P = ctx + 1, D = a.D;
    cr_assert_eq(a.P, P);
    cr_assert_eq(a.n, 64);
    size_t xs = sizeof(float) * (size_t)a.n * P * D, ys = sizeof(int) * (size_t)a.n * P;
    cr_assert(!memcmp(a.examples, b.examples, xs) && !memcmp(a.labels, b.labels, ys), "same seed, same probe set");
    cr_assert(memcmp(a.examples, c.examples, xs) || memcmp(a.labels, c.labels, ys), "another seed, another set");
    const fs_range train = rd.task.classes[FS_SPLIT_TRAIN];
    for (int s = 0; s < a.n; s++) {
        const int *y = a.labels + (size_t)s * P;
        int cls[16], matches = 0, same_class = 0;
        for (int i = 0; i < P; i++) {
            cls[i] = class_of(&rd.data, a.examples + ((size_t)s * P + i) * D);
            cr_assert(cls[i] >= train.start && cls[i] < train.start + train.count, "a training class");
        }
        cr_assert(y[P - 1] >= 0 && y[P - 1] < cfg.data.fs_relabel, "the query's label is a relabelled one");
        for (int i = 0; i + 1 < P; i++) {
            matches += y[i] == y[P - 1];
            same_class += cls[i] == cls[P - 1];
            cr_assert_eq(y[i] == y[P - 1], cls[i] == cls[P - 1], "the matching pair is the query's class");
        }
        cr_assert_eq(matches, 1, "exactly one pair has the query's label");
        cr_assert_eq(same_class, 1, "exactly one pair has the query's class");
    }
    fs_probe_set_free(&a);
    fs_probe_set_free(&b);
    fs_probe_set_free(&c);
    fs_run_data_close(&rd);
    fs_run_config_free(&cfg);
}

Test(measures, probe_set_deterministic_two_pairs) { check_probe(2); }
Test(measures, probe_set_deterministic_four_pairs) { check_probe(4); }

Test(measures, probe_set_needs_two_pairs)
{
    fs_run_config cfg;
    fs_run_data rd;
    open_default(&cfg, &rd);
    cfg.train.train_context_len = 1;
    fs_probe_set p;
    fs_error err = {{0}};
    cr_assert_eq(fs_probe_set_build(&p, &rd.task, &cfg, "t.json", &err), -1);
    cr_assert(strstr(err.msg, "train_context_len >= 2"), "%s", err.msg);
    fs_run_data_close(&rd);
    fs_run_config_free(&cfg);
}

static int load_text(const char *text, fs_run_config *c, fs_error *err)
{
    cJSON *j = cJSON_Parse(text);
    cr_assert_not_null(j);
    fs_run_config_default(c);
    int rc = fs_run_config_apply(j, "c.json", c, err);
    cJSON_Delete(j);
    return rc;
}

Test(measures, config_keys_and_errors)
{
    fs_run_config c;
    fs_error err = {{0}};
    cr_assert_eq(load_text("{}", &c, &err), 0);
    cr_assert(!c.measures.enable);
    cr_assert_eq(c.measures.probe_size, 512);
    cr_assert_eq(c.measures.which, (1u << FS_NUM_MEASURES) - 1, "all measures by default");
    cr_assert_eq(load_text("{\"measures\": {\"enable\": true, \"probe_size\": 100, \"probe_seed\": 9, \"which\": "
                           "[\"only_head_acc\", \"induction_strength\"]}, \"train\": {\"eval_sched\": [0, 10, 300], "
                           "\"ckpt_sched\": [5], \"eval_log_points\": 7}}",
                           &c, &err),
                 0, "%s", err.msg);
    cr_assert(c.measures.enable);
    cr_assert_eq(c.measures.probe_size, 100);
    cr_assert_eq(c.measures.probe_seed, 9);
    cr_assert_eq(c.measures.which, (1u << FS_MEASURE_ONLY_ACC) | (1u << FS_MEASURE_INDUCTION));
    cr_assert_eq(c.train.eval_sched.n, 3);
    cr_assert_eq(c.train.eval_sched.at[2], 300);
    cr_assert_eq(c.train.ckpt_sched.n, 1);
    cr_assert_eq(c.train.eval_log_points, 7);
    /* round trip through the resolved config */
    cJSON *j = fs_run_config_to_json(&c);
    fs_run_config back;
    fs_run_config_default(&back);
    cr_assert_eq(fs_run_config_apply(j, "back", &back, &err), 0, "%s", err.msg);
    cJSON_Delete(j);
    cr_assert_eq(back.measures.which, c.measures.which);
    cr_assert_eq(back.train.eval_sched.at[1], 10);
    const struct {
        const char *text, *want;
    } bad[] = {
        {"{\"measures\": {\"which\": [\"induction\"]}}", "measures.which[0]: expected one of \"induction_strength\""},
        {"{\"measures\": {\"probe_size\": 0}}", "measures.probe_size: 0 is out of range"},
        {"{\"measures\": {\"probes\": 3}}", "unknown key \"measures.probes\""},
        {"{\"train\": {\"eval_sched\": [10, 10]}}", "train.eval_sched[1]: 10 is not greater than"},
        {"{\"train\": {\"ckpt_sched\": [1.5]}}", "train.ckpt_sched[0]: expected an integer"},
        {"{\"train\": {\"ckpt_sched\": 100}}", "train.ckpt_sched: expected a list of sequence counts"},
        {"{\"train\": {\"eval_log_points\": -1}}", "train.eval_log_points: -1 is out of range"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        cr_assert_eq(load_text(bad[i].text, &c, &err), -1, "%s accepted", bad[i].text);
        cr_assert(strstr(err.msg, bad[i].want), "%s: got \"%s\"", bad[i].text, err.msg);
    }
    fs_run_config_free(&c);
    fs_run_config_free(&back);
}

Test(measures, schedule_log_points_and_crossings)
{
    fs_sched list = {.n = 2, .at = {500, 1000}};
    fs_schedule s;
    fs_error err = {{0}};
    cr_assert_eq(fs_schedule_init(&s, 0, &list, 5, 10, 100000, &err), 0);
    /* 10 * 10^(4k/4): 10, 100, 1000 (also listed), 10000, 100000 */
    const int64_t want[] = {10, 100, 500, 1000, 10000, 100000};
    cr_assert_eq(s.n, 6);
    for (int i = 0; i < 6; i++)
        cr_assert_eq(s.at[i], want[i]);
    cr_assert(fs_schedule_due(&s, 0, 10) && fs_schedule_due(&s, 96, 128) && fs_schedule_due(&s, 480, 512));
    cr_assert(!fs_schedule_due(&s, 10, 99) && !fs_schedule_due(&s, 100000, 200000));
    fs_schedule_free(&s);
    cr_assert_eq(fs_schedule_init(&s, 300, NULL, 0, 10, 1000, &err), 0);
    cr_assert(fs_schedule_due(&s, 299, 300) && !fs_schedule_due(&s, 300, 599) && fs_schedule_due(&s, 590, 620));
    fs_schedule_free(&s);
}

Test(measures, measure_command_errors, .init = setup_dir, .fini = teardown_dir)
{
    const char *model = save_model();
    th_run_result r;
    th_run(&r, "measure --model %s", model);
    cr_assert(r.exited && r.code == 1 && strstr(r.err, "--config FILE is required"), "%s", th_describe(&r));
    th_run_free(&r);
    th_run(&r, "measure --model %s", th_path(g_dir, "missing.safetensors"));
    cr_assert(r.exited && r.code == 1 && strstr(r.err, "missing.safetensors"), "%s", th_describe(&r));
    th_run_free(&r);
}

/* ablate_heads as zeroed value weights (and biases), through the query-only forward: the
 * same logits, bit for bit, as the forward with the ablate_heads clamps. */
Test(measures, head_ablation_on_weights_equals_clamped_forward)
{
    fs_model_config c;
    th_tiny_config(&c);
    c.num_classes = C, c.depth = DEPTH, c.num_heads = HEADS, c.qkv_bias = true, c.d_model = 16;
    fs_model m;
    th_random_model(&m, &c, 3, 0.5);
    enum { P = 3, N_SEQ = 40 };
    float ex[N_SEQ * P * D_IN];
    int lab[N_SEQ * P];
    th_rng rng = {11};
    for (int i = 0; i < N_SEQ * P * D_IN; i++)
        ex[i] = (float)th_rng_sym(&rng, 1.0);
    for (int i = 0; i < N_SEQ * P; i++)
        lab[i] = th_rng_int(&rng, C);
    fs_held held;
    memset(&held, 0, sizeof held);
    fs_interventions_default(&held.iv);
    held.iv.ablate_heads.n = 2;
    held.iv.ablate_heads.h[0] = (fs_head_ref){0, 1, 1.0};
    held.iv.ablate_heads.h[1] = (fs_head_ref){1, 0, 1.0};
    held.has_iv = true;
    fs_error err = {{0}};
    fs_model ablated = {0};
    cr_assert_eq(fs_interventions_ablated_model(&held.iv, &m, &ablated, &err), 0, "%s", err.msg);
    fs_query_ws *ws = fs_query_ws_create(&c, P, 0);
    float got[N_SEQ * C], clean[N_SEQ * C];
    fs_forward_query_logits(&ablated, ws, ex, lab, N_SEQ, got);
    fs_forward_query_logits(&m, ws, ex, lab, N_SEQ, clean);
    cr_assert(memcmp(got, clean, sizeof got) != 0, "the ablation changes the model's output");
    fs_acts a;
    cr_assert_eq(fs_acts_create(&a, &c, P, N_SEQ, &err), 0, "%s", err.msg);
    fs_acts_set_inputs(&a, ex, lab, 0, N_SEQ);
    fs_held_clamps hc;
    cr_assert_eq(fs_held_bind(&hc, &held, &a, &err), 0, "%s", err.msg);
    fs_forward(&m, &a, fs_held_update(&hc, &m, &a, N_SEQ), N_SEQ);
    for (int b = 0; b < N_SEQ; b++)
        for (int k = 0; k < C; k++) {
            float want = fs_leaf_ptr(&a, fs_top_after(&c, L_OUT), b)[(P - 1) * C + k];
            cr_assert(got[b * C + k] == want, "sequence %d class %d: %.9g vs %.9g", b, k, got[b * C + k], want);
        }
    fs_held_unbind(&hc);
    fs_acts_free(&a);
    fs_query_ws_free(ws);
    fs_model_free(&ablated);
    fs_model_free(&m);
}

/* fs_forward_query_logits_from, fed the cache's residual stream entering a block, gives
 * the logits of the whole query-only path bit for bit (what the ablations rely on). */
Test(measures, query_logits_from_a_layer_equal_whole_path)
{
    for (int variant = 0; variant < 3; variant++) {
        fs_model_config c;
        fs_model_config_default(&c);
        c.input_dim = 12, c.num_classes = 5, c.d_model = 32, c.num_heads = 4, c.depth = 3;
        int P = variant == 1 ? 5 : 3;
        if (variant == 2)
            c.pos_embedding = FS_POS_APE, c.qkv_bias = true, c.mlp_ratio = 0;
        fs_model m;
        th_random_model(&m, &c, 20 + variant, 0.3);
        enum { NS = 45 };
        float *ex = malloc(sizeof(float) * NS * P * c.input_dim);
        int *lab = malloc(sizeof(int) * NS * P);
        th_rng rng = {5 + variant};
        for (int i = 0; i < NS * P * c.input_dim; i++)
            ex[i] = (float)th_rng_sym(&rng, 1.0);
        for (int i = 0; i < NS * P; i++)
            lab[i] = th_rng_int(&rng, c.num_classes);
        fs_error err = {{0}};
        fs_acts a;
        cr_assert_eq(fs_acts_create(&a, &c, P, NS, &err), 0, "%s", err.msg);
        fs_acts_set_inputs(&a, ex, lab, 0, NS);
        fs_forward(&m, &a, NULL, NS);
        fs_query_ws *ws = fs_query_ws_create(&c, P, 0);
        float whole[NS * 5], from[NS * 5];
        fs_forward_query_logits(&m, ws, ex, lab, NS, whole);
        for (int layer = 1; layer < c.depth; layer++) {
            fs_forward_query_logits_from(&m, ws, layer, fs_leaf_ptr(&a, fs_block_leaf_id(layer, B_X), 0), NS, from);
            for (int i = 0; i < NS * c.num_classes; i++)
                cr_assert(from[i] == whole[i], "variant %d layer %d logit %d: %.9g vs %.9g", variant, layer, i,
                          from[i], whole[i]);
        }
        fs_query_ws_free(ws);
        fs_acts_free(&a);
        fs_model_free(&m);
        free(ex);
        free(lab);
    }
}
