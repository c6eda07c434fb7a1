/* Golden conformance (tests/golden/README.md): forward caches, clamps, gradients, Adam steps
 * for every model under tests/golden, leaf by leaf and tensor by tensor. */
#include <criterion/criterion.h>
#include <glob.h>
#include <math.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "train/eval.h"
#include "fewshot/forward.h"
#include "fewshot/seqio.h"
#include "train/trainer.h"
#include "golden_util.h"
#include "base/fileio.h"

static const char *const models[] = {"doc", "attn_only", "ape", "sinusoidal"};

/* Forward `input` (a golden JSON holding examples/labels), optionally clamped by its
 * cache/cache_mask, and compare with its `cache` or `result` tree. Returns leaves. */
static int check_forward_file(const char *model_name, const char *file, bool clamp)
{
    fs_model m;
    golden_load_model(model_name, &m);
    fs_error err = {{0}};
    cJSON *doc = fs_json_load(file, &err);
    cr_assert_not_null(doc, "%s", err.msg);
    fs_seq_batch batch;
    cr_assert_eq(fs_seq_batch_from_json(doc, file, m.cfg.input_dim, m.cfg.num_classes, &batch, &err), 0, "%s", err.msg);
    fs_acts acts;
    cr_assert_eq(fs_acts_create(&acts, &m.cfg, batch.P, batch.B, &err), 0, "%s", err.msg);
    fs_clamp_set clamps;
    fs_clamp_set_init(&clamps, &acts);
    if (clamp) {
        cr_assert_eq(fs_clamp_set_from_json(&clamps, &acts, cJSON_GetObjectItem(doc, "cache"),
                                            cJSON_GetObjectItem(doc, "cache_mask"), file, file, &err),
                     0, "%s", err.msg);
        cr_assert_gt(clamps.active, 0, "%s: no clamp was loaded", file);
    }
    fs_acts_set_inputs(&acts, batch.examples, batch.labels, 0, batch.B);
    fs_forward(&m, &acts, &clamps, batch.B);
    cJSON *ours = golden_cache_tree(&acts, batch.B, batch.batched);
    char why[512] = "";
    const cJSON *want = cJSON_GetObjectItem(doc, clamp ? "result" : "cache");
    cr_assert_not_null(want, "%s has no expected cache", file);
    int leaves = golden_compare_tree(ours, want, "", why, sizeof why);
    cr_assert_geq(leaves, 0, "%s: %s", file, why);
    cJSON_Delete(ours);
    fs_clamp_set_free(&clamps);
    fs_acts_free(&acts);
    fs_seq_batch_free(&batch);
    cJSON_Delete(doc);
    fs_model_free(&m);
    return leaves;
}

static int for_each_file(const char *model_name, const char *pattern, bool clamp, int *files)
{
    char pat[512];
    snprintf(pat, sizeof pat, GOLDEN_DIR "/%s/%s", model_name, pattern);
    glob_t g;
    int total = 0;
    if (glob(pat, 0, NULL, &g) == 0) {
        for (size_t i = 0; i < g.gl_pathc; i++) {
            if (strstr(g.gl_pathv[i], "clamp_grads_"))
                continue;
            total += check_forward_file(model_name, g.gl_pathv[i], clamp);
            (*files)++;
        }
        globfree(&g);
    }
    return total;
}

Test(golden, forward_caches_all_models)
{
    for (size_t k = 0; k < sizeof models / sizeof *models; k++) {
        int files = 0;
        int leaves = for_each_file(models[k], "forward_*.json", false, &files);
        cr_assert_geq(files, 2, "%s: expected golden forward files", models[k]);
        /* 10 top-level leaves + transformer x, pre_unembed, out + 19 per block (depth 2), per file */
        cr_assert_eq(leaves, files * (10 + 3 + 2 * 19), "%s: %d leaves compared", models[k], leaves);
    }
}

Test(golden, clamp_results)
{
    for (int k = 0; k < 2; k++) {
        int files = 0;
        for_each_file(models[k], "clamp_*.json", true, &files);
        cr_assert_eq(files, 4, "%s: expected 4 golden clamp files", models[k]);
    }
}

typedef struct {
    fs_model m;
    fs_seq_batch batch;
    fs_trainer t;
    fs_clamp_set clamps;
    cJSON *doc;
} grad_fixture;

static void grad_setup(grad_fixture *f, const char *model_name, const fs_optim_config *oc)
{
    golden_load_model(model_name, &f->m);
    char path[512];
    snprintf(path, sizeof path, GOLDEN_DIR "/%s/grad.json", model_name);
    fs_error err = {{0}};
    f->doc = fs_json_load(path, &err);
    cr_assert_not_null(f->doc, "%s", err.msg);
    cr_assert_eq(fs_seq_batch_from_json(f->doc, path, f->m.cfg.input_dim, f->m.cfg.num_classes, &f->batch, &err), 0,
                 "%s", err.msg);
    fs_optim_config def = {.kind = FS_OPT_ADAM, .lr = 1e-3, .b1 = 0.9, .b2 = 0.999, .eps = 1e-8};
    cr_assert_eq(fs_trainer_init(&f->t, &f->m, f->batch.P, f->batch.B, 2, oc ? oc : &def, &err), 0, "%s", err.msg);
    fs_acts_set_inputs(&f->t.acts, f->batch.examples, f->batch.labels, 0, f->batch.B);
    fs_clamp_set_init(&f->clamps, &f->t.acts);
    f->t.clamps = &f->clamps;
}

static void grad_teardown(grad_fixture *f)
{
    fs_clamp_set_free(&f->clamps);
    fs_trainer_free(&f->t);
    fs_seq_batch_free(&f->batch);
    cJSON_Delete(f->doc);
    fs_model_free(&f->m);
}

static double json_number(const char *path, const char *key)
{
    fs_error err = {{0}};
    cJSON *doc = fs_json_load(path, &err);
    cr_assert_not_null(doc, "%s", err.msg);
    const cJSON *v = cJSON_GetObjectItem(doc, key);
    cr_assert(cJSON_IsNumber(v), "%s: no number %s", path, key);
    double x = v->valuedouble;
    cJSON_Delete(doc);
    return x;
}

Test(golden, loss_and_gradients_all_models)
{
    for (size_t k = 0; k < sizeof models / sizeof *models; k++) {
        grad_fixture f;
        grad_setup(&f, models[k], NULL);
        double loss = fs_trainer_grad(&f.t, f.batch.B);
        double want = cJSON_GetObjectItem(f.doc, "loss")->valuedouble;
        cr_assert(fabs(loss - want) <= 1e-5 * fmax(1, fabs(want)), "%s: loss %.9g vs golden %.9g", models[k], loss, want);
        char path[512], why[512] = "";
        snprintf(path, sizeof path, GOLDEN_DIR "/%s/grads.safetensors", models[k]);
        cr_assert_eq(golden_compare_buffer(&f.m, f.t.grads, path, why, sizeof why), 0, "%s", why);
        grad_teardown(&f);
    }
}

/* The trainer's forward keeps GELU's derivatives for its backward: the gradients are
 * those of a backward that recomputes them, bit for bit (each layer's and each thread's
 * range in its place). */
Test(golden, kept_gelu_derivatives_give_the_same_gradients)
{
    for (size_t k = 0; k < sizeof models / sizeof *models; k++) {
        grad_fixture f;
        grad_setup(&f, models[k], NULL);
        cr_assert(fs_mlp_hidden(&f.m.cfg) == 0 || f.t.gelu_grad, "%s: the trainer keeps no derivatives", models[k]);
        double kept = fs_trainer_grad(&f.t, f.batch.B);
        size_t n = f.m.layout.total;
        float *want = malloc(sizeof(float) * n);
        memcpy(want, f.t.grads, sizeof(float) * n);
        float *buf = f.t.gelu_grad;
        f.t.gelu_grad = NULL; /* the backward computes them itself */
        double recomputed = fs_trainer_grad(&f.t, f.batch.B);
        f.t.gelu_grad = buf;
        cr_assert_eq(kept, recomputed, "%s: loss differs", models[k]);
        for (size_t i = 0; i < n; i++)
            cr_assert_eq(f.t.grads[i], want[i], "%s: gradient %zu: %.9g recomputed vs %.9g kept", models[k], i,
                         f.t.grads[i], want[i]);
        free(want);
        grad_teardown(&f);
    }
}

Test(golden, clamp_gradients)
{
    static const char *const clamps[] = {"ablate_value_head", "clamp_attn_row", "preserve_patterns_ablate",
                                         "zero_query_token"};
    for (int k = 0; k < 2; k++)
        for (int c = 0; c < 4; c++) {
            grad_fixture f;
            grad_setup(&f, models[k], NULL);
            char path[512], why[512] = "";
            fs_error err = {{0}};
            snprintf(path, sizeof path, GOLDEN_DIR "/%s/clamp_%s.json", models[k], clamps[c]);
            cr_assert_eq(fs_clamp_set_load(&f.clamps, &f.t.acts, path, path, &err), 0, "%s", err.msg);
            double loss = fs_trainer_grad(&f.t, f.batch.B);
            snprintf(path, sizeof path, GOLDEN_DIR "/%s/clamp_grads_%s.json", models[k], clamps[c]);
            double want = json_number(path, "loss");
            cr_assert(fabs(loss - want) <= 1e-5 * fmax(1, fabs(want)), "%s: loss %.9g vs %.9g", path, loss, want);
            snprintf(path, sizeof path, GOLDEN_DIR "/%s/clamp_grads_%s.safetensors", models[k], clamps[c]);
            cr_assert_eq(golden_compare_buffer(&f.m, f.t.grads, path, why, sizeof why), 0, "%s", why);
            grad_teardown(&f);
        }
}

Test(golden, adam_steps)
{
    for (int k = 0; k < 2; k++) {
        char path[512], why[512] = "";
        snprintf(path, sizeof path, GOLDEN_DIR "/%s/adam.json", models[k]);
        fs_error err = {{0}};
        cJSON *adam = fs_json_load(path, &err);
        cr_assert_not_null(adam, "%s", err.msg);
        fs_optim_config oc = {.kind = FS_OPT_ADAM,
                              .lr = cJSON_GetObjectItem(adam, "lr")->valuedouble,
                              .b1 = cJSON_GetObjectItem(adam, "b1")->valuedouble,
                              .b2 = cJSON_GetObjectItem(adam, "b2")->valuedouble,
                              .eps = cJSON_GetObjectItem(adam, "eps")->valuedouble};
        int steps = cJSON_GetObjectItem(adam, "steps")->valueint;
        const cJSON *losses = cJSON_GetObjectItem(adam, "losses_before_each_step");
        cr_assert_eq(cJSON_GetArraySize(losses), steps);
        grad_fixture f;
        grad_setup(&f, models[k], &oc);
        for (int s = 0; s < steps; s++) {
            double loss = fs_trainer_step(&f.t, f.batch.B, NULL);
            double want = cJSON_GetArrayItem(losses, s)->valuedouble;
            cr_assert(fabs(loss - want) <= 1e-4 * fmax(1, fabs(want)), "%s step %d: loss %.9g vs %.9g", models[k], s,
                      loss, want);
        }
        snprintf(path, sizeof path, GOLDEN_DIR "/%s/adam_params.safetensors", models[k]);
        cr_assert_eq(golden_compare_buffer(&f.m, f.m.params, path, why, sizeof why), 0, "%s", why);
        grad_teardown(&f);
        cJSON_Delete(adam);
    }
}

/* The "done when" command, through the binary, for every golden model. */
Test(golden, cache_command_matches)
{
    const char *bin = getenv("FEWSHOT_BIN") ? getenv("FEWSHOT_BIN") : "./fewshot";
    char tmpl[] = "/tmp/fewshot_golden_XXXXXX";
    cr_assert_not_null(mkdtemp(tmpl));
    for (size_t k = 0; k < sizeof models / sizeof *models; k++) {
        char cmd[2048], out[600], in[512];
        snprintf(in, sizeof in, GOLDEN_DIR "/%s/forward_0.json", models[k]);
        snprintf(out, sizeof out, "%s/%s.json", tmpl, models[k]);
        snprintf(cmd, sizeof cmd,
                 "%s cache --config " GOLDEN_DIR "/%s/config.json --model " GOLDEN_DIR
                 "/%s/params.safetensors --input %s -o %s",
                 bin, models[k], models[k], in, out);
        cr_assert_eq(system(cmd), 0, "%s failed", cmd);
        fs_error err = {{0}};
        cJSON *ours = fs_json_load(out, &err), *gold = fs_json_load(in, &err);
        cr_assert(ours && gold, "%s", err.msg);
        char why[512] = "";
        cr_assert_gt(golden_compare_tree(ours, cJSON_GetObjectItem(gold, "cache"), "", why, sizeof why), 0, "%s", why);
        cJSON_Delete(ours);
        cJSON_Delete(gold);
        remove(out);
    }
    rmdir(tmpl);
}

/* The eight eval metrics per sequence (docs/metrics.md) against golden/doc/eval_metrics.json,
 * through the forward-only query path and through the cache-writing forward. */
Test(golden, eval_metrics_per_sequence)
{
    fs_model m;
    golden_load_model("doc", &m);
    fs_error err = {{0}};
    const char *path = GOLDEN_DIR "/doc/eval_metrics.json";
    cJSON *doc = fs_json_load(path, &err);
    cr_assert_not_null(doc, "%s", err.msg);
    fs_seq_batch batch;
    cr_assert_eq(fs_seq_batch_from_json(doc, path, m.cfg.input_dim, m.cfg.num_classes, &batch, &err), 0, "%s", err.msg);
    const cJSON *want = cJSON_GetObjectItem(doc, "metrics");
    fs_acts layout;
    cr_assert_eq(fs_acts_create(&layout, &m.cfg, batch.P, 1, &err), 0);
    fs_held via_cache = {0}; /* an empty clamp file: the cache-writing forward */
    fs_interventions_default(&via_cache.iv);
    fs_clamp_set_init(&via_cache.files, &layout);
    for (int pass = 0; pass < 2; pass++) {
        fs_metrics mean, *per = calloc((size_t)batch.B, sizeof *per);
        fs_eval_ws ws = {0};
        cr_assert_eq(fs_eval_sequences(&m, batch.examples, batch.labels, batch.B, batch.P, pass ? &via_cache : NULL,
                                       &ws, &mean, per, &err),
                     0, "%s", err.msg);
        for (int k = 0; k < FS_NUM_METRICS; k++) {
            const cJSON *arr = cJSON_GetObjectItem(want, fs_metric_names[k]);
            cr_assert_eq(cJSON_GetArraySize(arr), batch.B, "%s", fs_metric_names[k]);
            double sum = 0;
            for (int b = 0; b < batch.B; b++) {
                double g = cJSON_GetArrayItem(arr, b)->valuedouble, o = *fs_metric_field(&per[b], k);
                cr_assert(fabs(o - g) <= 1e-4 + 1e-4 * fabs(g), "pass %d: %s of sequence %d: %.9g vs golden %.9g", pass,
                          fs_metric_names[k], b, o, g);
                sum += o;
            }
            cr_assert(fabs(*fs_metric_field(&mean, k) - sum / batch.B) < 1e-12);
        }
        fs_eval_ws_free(&ws);
        free(per);
    }
    fs_held_free(&via_cache);
    fs_acts_free(&layout);
    fs_seq_batch_free(&batch);
    cJSON_Delete(doc);
    fs_model_free(&m);
}
