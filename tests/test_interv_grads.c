/* Gradients through computed clamps (issue 20): the whole intervened loss -- its other
 * passes included -- against finite differences, the reference's "done when" zeros of
 * perfect_copy_from_head_pattern, and "stop" reproducing the golden file-clamp gradients. */
#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/fileio.h"
#include "base/rng.h"
#include "fewshot/forward.h"
#include "fewshot/interventions.h"
#include "fewshot/seqio.h"
#include "golden_util.h"
#include "helpers.h"
#include "model/leaves.h"
#include "train/held_open.h"
#include "train/trainer.h"

enum { D_IN = 6, C = 3, DM = 16, H = 4, HD = DM / H, B = 3 };

/* A small sharp model, a batch, the interventions held on it and a trainer through them. */
typedef struct {
    fs_model m;
    int P;
    fs_held held;
    fs_held_clamps hc;
    fs_trainer t;
} fx;

static void fx_config(fs_model_config *c, double mlp_ratio, int seed)
{
    fs_model_config_default(c);
    c->input_dim = D_IN, c->num_classes = C, c->d_model = DM, c->num_heads = H, c->depth = 2;
    c->mlp_ratio = mlp_ratio, c->init_seed = seed, c->init_rescale = 3.0;
}

static void fx_open(fx *f, const char *json, int P, const int *labels, double mlp_ratio)
{
    fs_error err = {{0}};
    memset(f, 0, sizeof *f);
    fs_model_config c;
    fx_config(&c, mlp_ratio, 11);
    cr_assert_eq(fs_model_create(&f->m, &c, &err), 0, "%s", err.msg);
    fs_model_init_params(&f->m);
    f->P = P;
    float x[B * 8 * D_IN];
    int y[B * 8];
    fs_rng_stream r;
    fs_rng_stream_init(&r, 7, 1);
    for (int i = 0; i < B * P * D_IN; i++)
        x[i] = 2.f * fs_rng_next_float(&r) - 1.f;
    for (int i = 0; i < B * P; i++)
        y[i] = labels ? labels[i] : (int)(fs_rng_next_u32(&r) % C);
    fs_train_config tc = {0};
    fs_optim_config oc = fs_optim_config_from_train(&tc);
    oc.weight_decay = 0;
    cr_assert_eq(fs_trainer_init(&f->t, &f->m, P, B, 1, &oc, &err), 0, "%s", err.msg);
    fs_acts_set_inputs(&f->t.acts, x, y, 0, B);
    fs_held_source src = {.intervene = json};
    cr_assert_eq(fs_held_open(&f->held, &src, &c, P, B, &err), 0, "%s", err.msg);
    cr_assert_eq(fs_held_bind(&f->hc, &f->held, &f->t.acts, &err), 0, "%s", err.msg);
    cr_assert_eq(fs_trainer_hold(&f->t, &f->hc, &err), 0, "%s", err.msg);
    f->t.clamps = fs_held_update(&f->hc, &f->m, &f->t.acts, B);
}

static void fx_close(fx *f)
{
    fs_trainer_free(&f->t);
    fs_held_unbind(&f->hc);
    fs_held_free(&f->held);
    fs_model_free(&f->m);
}

/* The intervened loss at the current parameters: every pass recomputed. */
static double loss_now(fx *f)
{
    fs_held_forward(&f->hc, &f->m, &f->t.acts, B);
    return fs_query_loss_range(&f->t.acts, 0, B, B);
}

/* Central differences at the largest gradient entry of every tensor and at a few more
 * of each block's query/key weights; returns how many entries were compared. */
static int fd_compare(fx *f, const double *g)
{
    int checked = 0;
    for (int k = 0; k < f->m.layout.count; k++) {
        const fs_param_desc *d = &f->m.layout.tensors[k];
        size_t pick[4] = {0}, np = 1;
        for (size_t i = 1; i < d->numel; i++)
            if (fabs(g[d->offset + i]) > fabs(g[d->offset + pick[0]]))
                pick[0] = i;
        if (strstr(d->name, "qkv.weight"))
            for (int j = 1; j < 4; j++)
                pick[np++] = (size_t)j * 37 % (2 * DM * DM); /* query and key rows */
        for (size_t j = 0; j < np; j++) {
            size_t i = d->offset + pick[j];
            if (fabs(g[i]) < 1e-3)
                continue;
            float *p = &f->m.params[i], keep = *p, eps = 1e-3f;
            *p = keep + eps;
            double up = loss_now(f);
            *p = keep - eps;
            double down = loss_now(f);
            *p = keep;
            double fd = (up - down) / (2.0 * eps);
            cr_assert(fabs(fd - g[i]) <= 1e-3 + 3e-2 * fabs(g[i]), "%s[%zu]: analytic %g, finite difference %g",
                      d->name, pick[j], g[i], fd);
            checked++;
        }
    }
    return checked;
}

/* The gradient against finite differences; with `zero` (a "|"-separated list of name
 * substrings), also: the parameter tensors named there have exactly zero gradient, every
 * other tensor a non-zero one. */
static void fd_check_zeros(const char *json, int P, const int *labels, double mlp_ratio, const char *zero,
                           int at_least)
{
    fx f;
    fx_open(&f, json, P, labels, mlp_ratio);
    fs_trainer_grad(&f.t, B);
    size_t n = f.m.layout.total;
    double *g = malloc(n * sizeof *g);
    cr_assert_not_null(g);
    for (size_t i = 0; i < n; i++)
        g[i] = f.t.grads[i];
    for (int k = 0; zero && k < f.m.layout.count; k++) {
        const fs_param_desc *d = &f.m.layout.tensors[k];
        double s = 0;
        for (size_t i = 0; i < d->numel; i++)
            s += fabs(g[d->offset + i]);
        bool want_zero = false;
        char list[256];
        snprintf(list, sizeof list, "%s", zero);
        for (char *save, *t = strtok_r(list, "|", &save); t; t = strtok_r(NULL, "|", &save))
            want_zero |= strstr(d->name, t) != NULL;
        cr_assert(want_zero ? s == 0 : s > 0, "%s: %s: |grad| %g", json, d->name, s);
    }
    int checked = fd_compare(&f, g);
    cr_assert_geq(checked, at_least, "%s: only %d entries compared", json, checked);
    free(g);
    fx_close(&f);
}

static void fd_check(const char *json, int P, const int *labels, double mlp_ratio, int at_least)
{
    fd_check_zeros(json, P, labels, mlp_ratio, NULL, at_least);
}

/* Sum of |grad| over rows [r0, r1) of a [rows][cols] tensor. */
static double rows_abs(const float *w, int r0, int r1, int cols)
{
    double s = 0;
    for (int r = r0; r < r1; r++)
        for (int c = 0; c < cols; c++)
            s += fabsf(w[(size_t)r * cols + c]);
    return s;
}

Test(interv_grads, preserve_matches_finite_differences)
{
    fd_check("{\"preserve\": [\"patterns\"]}", 4, NULL, 2.0, 10);
    fd_check("{\"preserve\": [\"patterns\"], \"ablate_heads\": [\"1:3\", \"0:1\"]}", 4, NULL, 2.0, 10);
    fd_check("{\"preserve\": [\"values\"], \"ablate_heads\": [\"0:2\"]}", 4, NULL, 2.0, 10);
    fd_check("{\"preserve\": [\"queries\", \"keys\"], \"ablate_heads\": [\"0:0\"], \"preserve_from_layer\": 1}", 4,
             NULL, 0.0, 10);
    fd_check("{\"preserve\": [\"patterns\", \"values\", \"queries\", \"keys\"], \"induction_heads\": [\"1:2\"]}", 3,
             NULL, 2.0, 8);
}

Test(interv_grads, head_temperature_matches_finite_differences)
{
    fd_check("{\"head_temperature\": {\"1:2\": 3.0, \"0:1\": 0.5}}", 4, NULL, 2.0, 10);
    fd_check("{\"head_temperature\": {\"1:2\": 2.0}, \"ablate_heads\": [\"1:0\"]}", 4, NULL, 0.0, 10);
    fd_check("{\"head_temperature\": [\"0:3:4.0\"], \"preserve\": [\"values\"], \"ablate_heads\": [\"0:1\", \"1:1\"]}", 4,
             NULL, 2.0, 10);
}

/* every query label appears in its context (else its logit is -1e9 and the loss ~1e9) */
static const int copy_labels[B * 3] = {0, 1, 1, 2, 0, 2, 1, 1, 1};

Test(interv_grads, perfect_copy_matches_finite_differences)
{
    fd_check("{\"perfect_copy_from_head_pattern\": \"1:3\"}", 3, copy_labels, 2.0, 6);
    fd_check("{\"perfect_copy_from_head_pattern\": \"0:2\", \"ablate_heads\": [\"0:1\"]}", 3, copy_labels, 0.0, 4);
}

Test(interv_grads, perfect_prev_token_input_matches_finite_differences)
{
    fd_check("{\"perfect_prev_token_input\": true}", 4, NULL, 2.0, 8);
    fd_check("{\"perfect_prev_token_input\": true, \"ablate_heads\": [\"1:1\", \"1:2\"]}", 4, NULL, 0.0, 8);
    fd_check("{\"perfect_prev_token_input\": true, \"perfect_copy_from_head_pattern\": \"1:3\"}", 3, copy_labels, 2.0,
             4);
}

/* The forwards by hand: clean pass, perfect copy's out row; passes A and B of the perfect
 * previous-token input, and the final pass's out. */
static void clamp_whole(fs_clamp_set *cs, const fs_acts *a, int leaf, const float *v)
{
    size_t n = a->leaves[leaf].numel * B;
    uint8_t *mask = malloc(n);
    cr_assert_not_null(mask);
    memset(mask, 1, n);
    fs_clamp_set_leaf(cs, a, leaf, v, mask, B);
    free(mask);
}

Test(interv_grads, forwards_are_the_references)
{
    fx f;
    fx_open(&f, "{\"perfect_prev_token_input\": true, \"ablate_heads\": [\"1:2\"]}", 3, copy_labels, 2.0);
    fs_error err = {{0}};
    fs_acts *run = &f.t.acts, pa, pb, fin;
    const fs_model_config *c = &f.m.cfg;
    fs_forward(&f.m, run, f.t.clamps, B);
    fs_acts *all[3] = {&pa, &pb, &fin};
    for (int k = 0; k < 3; k++) {
        cr_assert_eq(fs_acts_create(all[k], c, 3, B, &err), 0, "%s", err.msg);
        memcpy(fs_leaf_ptr(all[k], L_EXAMPLES, 0), fs_leaf_ptr(run, L_EXAMPLES, 0),
               sizeof(float) * B * run->leaves[L_EXAMPLES].numel);
        memcpy(fs_leaf_ptr(all[k], L_LABELS, 0), fs_leaf_ptr(run, L_LABELS, 0),
               sizeof(float) * B * run->leaves[L_LABELS].numel);
    }
    fs_forward(&f.m, &pa, NULL, B);
    int N = run->N, out0 = fs_block_leaf_id(0, B_OUT), sc1 = fs_block_leaf_id(1, B_ATTN_SCORES);
    float shifted[B * 5 * DM];
    for (int b = 0; b < B; b++)
        for (int i = 0; i < N; i++)
            memcpy(shifted + ((size_t)b * N + i) * DM,
                   fs_leaf_ptr(&pa, L_EMBEDDING, b) + (size_t)(i == 0 || i == N - 1 ? i : i - 1) * DM,
                   sizeof(float) * DM);
    fs_clamp_set cb, cf;
    fs_clamp_set_init(&cb, &pb);
    clamp_whole(&cb, &pb, out0, shifted);
    fs_forward(&f.m, &pb, &cb, B);
    fs_clamp_set_init(&cf, &fin);
    clamp_whole(&cf, &fin, out0, fs_leaf_ptr(&pa, L_EMBEDDING, 0));
    clamp_whole(&cf, &fin, sc1, fs_leaf_ptr(&pb, sc1, 0));
    float *v1 = calloc(fin.leaves[fs_block_leaf_id(1, B_V)].numel * B, sizeof(float));
    uint8_t *m1 = calloc(fin.leaves[fs_block_leaf_id(1, B_V)].numel * B, 1);
    size_t per = fin.leaves[fs_block_leaf_id(1, B_V)].numel, ph = per / H;
    for (int b = 0; b < B; b++)
        memset(m1 + b * per + 2 * ph, 1, ph); /* head 2's values = 0 */
    fs_clamp_set_leaf(&cf, &fin, fs_block_leaf_id(1, B_V), v1, m1, B);
    fs_forward(&f.m, &fin, &cf, B);
    int id_out = fs_top_after(c, L_OUT);
    for (size_t i = 0; i < run->leaves[id_out].numel * B; i++)
        cr_assert_eq(fs_leaf_ptr(run, id_out, 0)[i], fs_leaf_ptr(&fin, id_out, 0)[i], "out[%zu]", i);
    free(v1);
    free(m1);
    fs_clamp_set_free(&cb);
    fs_clamp_set_free(&cf);
    fx_close(&f);

    /* perfect copy: the query's out row from the clean pass's pre-softmax scores (pa is
     * that clean pass: the same model and inputs) */
    fx_open(&f, "{\"perfect_copy_from_head_pattern\": \"1:3\"}", 3, copy_labels, 2.0);
    fs_forward(&f.m, &f.t.acts, f.t.clamps, B);
    int pre = fs_block_leaf_id(1, B_ATTN_PRE_SOFTMAX);
    for (int b = 0; b < B; b++) {
        const float *z = fs_leaf_ptr(&f.t.acts, id_out, b) + 2 * C;
        const float *q = fs_leaf_ptr(&pa, pre, b) + ((size_t)3 * N + N - 1) * N;
        int y0 = copy_labels[b * 3], y1 = copy_labels[b * 3 + 1];
        for (int cl = 0; cl < C; cl++) {
            float want = cl == y1 ? q[3] : cl == y0 ? q[1] : -1e9f;
            cr_assert_eq(z[cl], want, "seq %d class %d: %g, expected %g", b, cl, z[cl], want);
        }
    }
    fx_close(&f);
    for (int k = 0; k < 3; k++)
        fs_acts_free(all[k]);
}

/* The example: q/k gradients of both layers non-zero under preserve patterns
 * (through the clean pass), exactly zero with "stop". */
Test(interv_grads, preserve_patterns_reaches_queries_and_keys)
{
    for (int stop = 0; stop < 2; stop++) {
        fx f;
        fx_open(&f,
                stop ? "{\"preserve\": [\"patterns\"], \"ablate_heads\": [\"1:3\"], \"clamp_gradients\": \"stop\"}"
                     : "{\"preserve\": [\"patterns\"], \"ablate_heads\": [\"1:3\"]}",
                4, NULL, 2.0);
        fs_trainer_grad(&f.t, B);
        fs_param_ptrs g = fs_param_bind(&f.m.cfg, &f.m.layout, f.t.grads);
        for (int l = 0; l < 2; l++) {
            double qk = rows_abs(g.blocks[l].qkv_w, 0, 2 * DM, DM);
            cr_assert(stop ? qk == 0 : qk > 0, "stop %d layer %d: q/k |grad| %g", stop, l, qk);
        }
        fx_close(&f);
    }
}

/* Issue 20's "done when" on the documented model and the golden batch. */
Test(interv_grads, perfect_copy_trains_only_the_heads_scores)
{
    golden_held gh;
    fs_held_source src = {.intervene = "{\"perfect_copy_from_head_pattern\": \"1:3\"}"};
    golden_held_open(&gh, "doc", "grad.json", &src, 2);
    fs_trainer_grad(&gh.t, gh.batch.B);
    const fs_model *m = &gh.m;
    fs_param_ptrs g = fs_param_bind(&m->cfg, &m->layout, gh.t.grads);
    int d = m->cfg.d_model, hd = d / m->cfg.num_heads, F = fs_mlp_hidden(&m->cfg);
    const fs_block_params *b1 = &g.blocks[1];
    cr_assert_eq(rows_abs(b1->qkv_w, 2 * d, 3 * d, d), 0.0, "layer 1 value rows");
    cr_assert_eq(rows_abs(b1->proj_w, 0, d, d), 0.0, "layer 1 projection");
    cr_assert_eq(rows_abs(b1->fc1_w, 0, F, d) + rows_abs(b1->fc1_b, 0, 1, F), 0.0, "layer 1 fc1");
    cr_assert_eq(rows_abs(b1->fc2_w, 0, d, F) + rows_abs(b1->fc2_b, 0, 1, d), 0.0, "layer 1 fc2");
    cr_assert_eq(rows_abs(b1->norm2_w, 0, 1, d) + rows_abs(b1->norm2_b, 0, 1, d), 0.0, "layer 1 norm2");
    cr_assert_eq(rows_abs(g.norm_w, 0, 1, d) + rows_abs(g.norm_b, 0, 1, d), 0.0, "final norm");
    cr_assert_eq(rows_abs(g.unembed_w, 0, m->cfg.num_classes, d) + rows_abs(g.unembed_b, 0, 1, m->cfg.num_classes),
                 0.0, "unembedding");
    for (int h = 0; h < m->cfg.num_heads; h++) {
        double q = rows_abs(b1->qkv_w, h * hd, (h + 1) * hd, d), k = rows_abs(b1->qkv_w, d + h * hd, d + (h + 1) * hd, d);
        cr_assert(h == 3 ? q > 0 && k > 0 : q == 0 && k == 0, "head %d: query |grad| %g, key |grad| %g", h, q, k);
    }
    golden_held_close(&gh);
}

/* The golden preserve_patterns_ablate gradients (test_golden.c) were made with a clamp
 * file: constants (docs/cache.md). The named intervention with clamp_gradients "stop" gives the
 * file's gradients on the file's sequence; the reference's default ("through") does not. */
Test(interv_grads, golden_preserve_patterns_ablate_is_stop)
{
    static const char *const models[] = {"doc", "attn_only"};
    static const char *const file = "clamp_preserve_patterns_ablate.json";
    static const char *const stop = "{\"ablate_heads\": [\"0:1\"], \"preserve\": [\"patterns\"], "
                                    "\"preserve_from_layer\": -1, \"clamp_gradients\": \"stop\"}";
    static const char *const through = "{\"ablate_heads\": [\"0:1\"], \"preserve\": [\"patterns\"], "
                                       "\"preserve_from_layer\": -1}";
    for (int k = 0; k < 2; k++) {
        char path[256];
        snprintf(path, sizeof path, GOLDEN_DIR "/%s/%s", models[k], file);
        fs_held_source srcs[3] = {{.cache = path, .mask = path}, {.intervene = stop}, {.intervene = through}};
        golden_held g[3];
        double loss[3];
        for (int j = 0; j < 3; j++) {
            golden_held_open(&g[j], models[k], file, &srcs[j], 1);
            loss[j] = fs_trainer_grad(&g[j].t, g[j].batch.B);
        }
        cr_assert(fabs(loss[0] - loss[1]) <= 1e-6 * fabs(loss[0]) && fabs(loss[0] - loss[2]) <= 1e-6 * fabs(loss[0]),
                  "%s: losses %g %g %g", models[k], loss[0], loss[1], loss[2]);
        double mx = 0, ds = 0, dt = 0;
        for (size_t i = 0; i < g[0].m.layout.total; i++) {
            float gf = g[0].t.grads[i];
            mx = fmax(mx, fabsf(gf));
            ds = fmax(ds, fabsf(gf - g[1].t.grads[i]));
            dt = fmax(dt, fabsf(gf - g[2].t.grads[i]));
        }
        cr_assert(ds <= 1e-4 * mx, "%s: stop differs from the clamp file by %g (max %g)", models[k], ds, mx);
        cr_assert(dt > 1e-3 * mx, "%s: through equals the clamp file (%g)", models[k], dt);
        for (int j = 0; j < 3; j++)
            golden_held_close(&g[j]);
    }
}

Test(interv_grads, errors)
{
    fs_model_config c;
    fs_model_config_default(&c);
    fs_interventions iv;
    fs_error err = {{0}};
    cr_assert_eq(fs_interventions_from_arg(&iv, "{\"clamp_gradients\": \"none\"}", &c, &err), -1);
    cr_assert(strstr(err.msg, "clamp_gradients") && strstr(err.msg, "\"stop\""), "%s", err.msg);
    cr_assert_eq(fs_interventions_from_arg(&iv, "{\"perfect_copy_from_head_pattern\": [\"1:3\"]}", &c, &err), -1);
    cr_assert(strstr(err.msg, "perfect_copy_from_head_pattern"), "%s", err.msg);
    cr_assert_eq(fs_interventions_from_arg(&iv, "{\"perfect_prev_token_input\": true, \"ablate_heads\": [\"0:1\"]}", &c,
                                           &err),
                 -1);
    cr_assert(strstr(err.msg, "layer 1"), "%s", err.msg);
    cr_assert_eq(fs_interventions_from_arg(&iv, "{\"perfect_prev_token_input\": true, \"preserve\": [\"values\"]}", &c,
                                           &err),
                 -1);
    cr_assert(strstr(err.msg, "combines only"), "%s", err.msg);
    c.depth = 3;
    cr_assert_eq(fs_interventions_from_arg(&iv, "{\"perfect_prev_token_input\": true}", &c, &err), -1);
    cr_assert(strstr(err.msg, "2-layer"), "%s", err.msg);

    /* perfect copy refuses other context lengths at bind time */
    c.depth = 2;
    fs_acts a;
    cr_assert_eq(fs_acts_create(&a, &c, 5, 1, &err), 0, "%s", err.msg);
    fs_held held;
    fs_held_clamps hc;
    fs_held_source src = {.intervene = "{\"perfect_copy_from_head_pattern\": \"1:3\"}"};
    cr_assert_eq(fs_held_load(&held, &src, &c, 5, 0, &err), 0, "%s", err.msg);
    cr_assert_eq(fs_held_bind(&hc, &held, &a, &err), -1);
    cr_assert(strstr(err.msg, "exactly 2 pairs") && strstr(err.msg, "got 4"), "%s", err.msg);
    fs_held_free(&held);
    fs_acts_free(&a);
}

/* ---- grafting (graft_in, graft_out) ---- */

static char gdir[64];
static void graft_dir(void) { th_tmpdir(gdir, sizeof gdir, "graft"); }
static void graft_dir_rm(void) { th_rmtree(gdir); }

/* A graft model with the fixture's dims (init seed `seed`), saved with its config; its path. */
static const char *graft_model(const char *name, int seed, double mlp_ratio)
{
    fs_error err = {{0}};
    fs_model_config c;
    fx_config(&c, mlp_ratio, seed);
    fs_model g;
    cr_assert_eq(fs_model_create(&g, &c, &err), 0, "%s", err.msg);
    fs_model_init_params(&g);
    const char *path = th_path(gdir, name);
    cr_assert_eq(fs_model_save(&g, path, &err), 0, "%s", err.msg);
    fs_model_free(&g);
    return path;
}

/* What graft_in till layer 0 leaves trainable: layer 1 and the head (layer 0 and the
 * embeddings are replaced); graft_out from layer 0: layer 0 and the embeddings. */
#define EMBED "example_embed|label_embed"
#define UPPER "blocks.1.|transformer.norm|unembed"

Test(interv_grads, graft_in_matches_finite_differences, .init = graft_dir, .fini = graft_dir_rm)
{
    const char *g = graft_model("g.safetensors", 23, 1.0);
    char json[512];
    snprintf(json, sizeof json, "{\"graft_in\": {\"model\": \"%s\", \"till_layer\": 0}, \"ablate_heads\": [\"1:3\"]}", g);
    fd_check_zeros(json, 4, NULL, 2.0, "blocks.0.|" EMBED, 8);
    /* preserve's clean pass is this model's own: layer 0 learns through it */
    snprintf(json, sizeof json, "{\"graft_in\": {\"model\": \"%s\", \"till_layer\": -2}, \"preserve\": [\"patterns\"]}",
             g);
    fd_check_zeros(json, 4, NULL, 2.0, "", 8);
}

Test(interv_grads, graft_out_matches_finite_differences, .init = graft_dir, .fini = graft_dir_rm)
{
    const char *g = graft_model("g.safetensors", 23, 1.0);
    /* the graft model's own interventions: ablation and a clean pass of its own */
    const char *gcfg = th_path(gdir, "g.json");
    th_write_text(gcfg, "{\"clamps\": {\"ablate_heads\": [\"1:2\"], \"preserve\": [\"values\"]}}");
    char json[1024];
    snprintf(json, sizeof json, "{\"graft_out\": {\"model\": \"%s\", \"from_layer\": 0}, \"ablate_heads\": [\"0:1\"]}", g);
    fd_check_zeros(json, 4, NULL, 2.0, UPPER, 8);
    snprintf(json, sizeof json,
             "{\"graft_out\": {\"model\": \"%s\", \"config\": \"%s\", \"from_layer\": 0}, \"preserve\": [\"patterns\"]}",
             g, gcfg);
    fd_check_zeros(json, 4, NULL, 2.0, UPPER, 8);
    /* both: this model supplies block 1 only */
    const char *g2 = graft_model("g2.safetensors", 29, 2.0);
    snprintf(json, sizeof json,
             "{\"graft_in\": {\"model\": \"%s\", \"till_layer\": 0}, \"graft_out\": {\"model\": \"%s\", \"config\": "
             "\"%s\", \"from_layer\": 1}, \"ablate_heads\": [\"1:0\"]}",
             g2, g, gcfg);
    fd_check_zeros(json, 4, NULL, 2.0, "blocks.0.|" EMBED "|transformer.norm|unembed", 6);
}

/* Grafting a model onto itself changes nothing: graft_in till the last layer and
 * graft_out from any layer give the plain forward's logits bit for bit; graft_out's
 * gradients are the plain ones up to its layer (bit for bit) and zero above. */
Test(interv_grads, graft_of_itself_is_the_plain_model, .init = graft_dir, .fini = graft_dir_rm)
{
    fx plain;
    fx_open(&plain, "{}", 4, NULL, 2.0);
    fs_forward(&plain.m, &plain.t.acts, NULL, B);
    int id_out = fs_top_after(&plain.m.cfg, L_OUT);
    size_t nout = plain.t.acts.leaves[id_out].numel * B;
    float want[B * 4 * C];
    memcpy(want, fs_leaf_ptr(&plain.t.acts, id_out, 0), sizeof(float) * nout);
    fs_trainer_grad(&plain.t, B); /* its forward packs the weights: other bits than fs_forward's */
    float want_t[B * 4 * C];
    memcpy(want_t, fs_leaf_ptr(&plain.t.acts, id_out, 0), sizeof(float) * nout);
    fs_error err = {{0}};
    const char *self = th_path(gdir, "self.safetensors");
    cr_assert_eq(fs_model_save(&plain.m, self, &err), 0, "%s", err.msg);
    for (int k = 0; k < 3; k++) {
        char json[512];
        if (k == 0)
            snprintf(json, sizeof json, "{\"graft_in\": {\"model\": \"%s\", \"till_layer\": 1}}", self);
        else
            snprintf(json, sizeof json, "{\"graft_out\": {\"model\": \"%s\", \"from_layer\": %d}}", self, k - 1);
        fx f;
        fx_open(&f, json, 4, NULL, 2.0);
        fs_held_forward(&f.hc, &f.m, &f.t.acts, B);
        cr_assert_eq(memcmp(fs_leaf_ptr(&f.t.acts, id_out, 0), want, sizeof(float) * nout), 0, "%s: logits", json);
        fs_trainer_grad(&f.t, B);
        if (k == 0) { /* the graft's pass is not packed for 3 sequences, the trainer's forward is */
            fx_close(&f);
            continue;
        }
        cr_assert_eq(memcmp(fs_leaf_ptr(&f.t.acts, id_out, 0), want_t, sizeof(float) * nout), 0,
                     "%s: trainer logits", json);
        int L = k - 1;
        for (int t = 0; t < f.m.layout.count; t++) {
            const fs_param_desc *d = &f.m.layout.tensors[t];
            char b[32];
            bool above = !strstr(d->name, "_embed");
            for (int l = 0; l <= L; l++) {
                snprintf(b, sizeof b, "blocks.%d.", l);
                above &= !strstr(d->name, b);
            }
            for (size_t i = 0; i < d->numel; i++) {
                float gv = f.t.grads[d->offset + i], pv = plain.t.grads[d->offset + i];
                cr_assert(above ? gv == 0 : gv == pv, "%s: %s[%zu]: %g, plain %g", json, d->name, i, gv, pv);
            }
        }
        fx_close(&f);
    }
    fx_close(&plain);
}

Test(interv_grads, graft_errors, .init = graft_dir, .fini = graft_dir_rm)
{
    fs_model_config c;
    fx_config(&c, 2.0, 11);
    fs_held h;
    fs_error err = {{0}};
    char json[1024];
    const char *ok = graft_model("ok.safetensors", 3, 2.0);
    struct {
        const char *json_fmt, *arg, *want1, *want2;
    } cases[] = {
        {"{\"graft_in\": {\"till_layer\": 0}}", "", "\"model\" is required", ""},
        {"{\"graft_in\": {\"model\": \"%s\"}}", ok, "\"till_layer\" is required", ""},
        {"{\"graft_out\": {\"model\": \"%s\", \"till_layer\": 0}}", ok, "graft_out.till_layer", "from_layer"},
        {"{\"graft_in\": {\"model\": \"%s\", \"till_layer\": 2}}", ok, "till_layer", "out of range"},
        {"{\"graft_in\": \"%s\"}", ok, "graft_in", "expected {"},
        {"{\"graft_in\": {\"model\": \"%s/none.safetensors\", \"till_layer\": 0}}", gdir, "graft_in", "none.safetensors"},
        {"{\"graft_out\": {\"model\": \"%s\", \"from_layer\": 0}, \"perfect_copy_from_head_pattern\": \"1:3\"}", ok,
         "graft_out", "perfect_copy"},
        {"{\"graft_in\": {\"model\": \"%s\", \"till_layer\": 0}, \"perfect_prev_token_input\": true}", ok,
         "combines only", ""},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        snprintf(json, sizeof json, cases[k].json_fmt, cases[k].arg);
        fs_held_source src = {.intervene = json};
        cr_assert_eq(fs_held_open(&h, &src, &c, 4, 0, &err), -1, "%s", json);
        cr_assert(strstr(err.msg, cases[k].want1) && strstr(err.msg, cases[k].want2), "%s: %s", json, err.msg);
    }
    /* a graft model that does not fit: the file and the field are named */
    fs_model_config wide;
    fx_config(&wide, 2.0, 3);
    wide.d_model = 2 * DM;
    fs_model g;
    cr_assert_eq(fs_model_create(&g, &wide, &err), 0, "%s", err.msg);
    const char *wpath = th_path(gdir, "wide.safetensors");
    cr_assert_eq(fs_model_save(&g, wpath, &err), 0, "%s", err.msg);
    fs_model_free(&g);
    snprintf(json, sizeof json, "{\"graft_out\": {\"model\": \"%s\", \"from_layer\": 0}}", wpath);
    fs_held_source src = {.intervene = json};
    cr_assert_eq(fs_held_open(&h, &src, &c, 4, 0, &err), -1);
    cr_assert(strstr(err.msg, "graft_out") && strstr(err.msg, wpath) && strstr(err.msg, "model.d_model is 32") &&
                  strstr(err.msg, "this model's is 16"),
              "%s", err.msg);
    /* its config must agree with its file; a graft model grafting again is refused */
    const char *cfg = th_path(gdir, "bad.json");
    th_write_text(cfg, "{\"model\": {\"d_model\": 16, \"num_heads\": 2, \"input_dim\": 6, \"num_classes\": 3}}");
    snprintf(json, sizeof json, "{\"graft_in\": {\"model\": \"%s\", \"config\": \"%s\", \"till_layer\": 0}}", ok, cfg);
    src.intervene = json;
    cr_assert_eq(fs_held_open(&h, &src, &c, 4, 0, &err), -1);
    cr_assert(strstr(err.msg, "graft_in") && strstr(err.msg, "disagrees") && strstr(err.msg, cfg), "%s", err.msg);
    const char *nest = th_path(gdir, "nest.json");
    th_write_textf(nest, "{\"clamps\": {\"graft_in\": {\"model\": \"%s\", \"till_layer\": 0}}}", ok);
    snprintf(json, sizeof json, "{\"graft_in\": {\"model\": \"%s\", \"config\": \"%s\", \"till_layer\": 0}}", ok, nest);
    cr_assert_eq(fs_held_open(&h, &src, &c, 4, 0, &err), -1);
    cr_assert(strstr(err.msg, "cannot graft models itself"), "%s", err.msg);
    /* parsed but not loaded (fs_held_load alone): bind says so */
    snprintf(json, sizeof json, "{\"graft_in\": {\"model\": \"%s\", \"till_layer\": 0}}", ok);
    cr_assert_eq(fs_held_load(&h, &src, &c, 4, 0, &err), 0, "%s", err.msg);
    fs_acts a;
    fs_held_clamps hc;
    cr_assert_eq(fs_acts_create(&a, &c, 4, 1, &err), 0, "%s", err.msg);
    cr_assert_eq(fs_held_bind(&hc, &h, &a, &err), -1);
    cr_assert(strstr(err.msg, "not loaded"), "%s", err.msg);
    fs_acts_free(&a);
    fs_held_free(&h);
}

/* ---- grafting through the binary ---- */

#define DOC GOLDEN_DIR "/doc"
#define DOC_MODEL "--config " DOC "/config.json --model " DOC "/params.safetensors"

/* Run the binary; stdout (caller frees) when it succeeds, else the test fails. */
static char *run_ok(const char *cmd)
{
    th_run_result r;
    th_run(&r, "%s", cmd);
    cr_assert(r.exited && r.code == 0, "fewshot %s: %s", cmd, th_describe(&r));
    char *out = strdup(r.out);
    th_run_free(&r);
    return out;
}

Test(interv_grads, graft_grad_and_eval_cli, .init = graft_dir, .fini = graft_dir_rm, .timeout = 60)
{
    char cmd[1024], *plain[2], *self[2];
    const char *iv = th_path(gdir, "iv.json"), *g = th_path(gdir, "g.safetensors");
    for (int k = 0; k < 2; k++) {
        snprintf(cmd, sizeof cmd, "%s " DOC_MODEL " --input " DOC "/grad.json -o %s%s", k ? "eval" : "grad",
                 k ? "-" : g, k ? " --per-sequence" : "");
        plain[k] = run_ok(cmd);
    }
    /* the documented model grafted onto itself: the same loss, the same metrics */
    static const char *const self_ivs[2] = {
        "{\"graft_out\": {\"model\": \"" DOC "/params.safetensors\", \"config\": \"" DOC "/config.json\", "
        "\"from_layer\": 0}}",
        "{\"graft_in\": {\"model\": \"" DOC "/params.safetensors\", \"config\": \"" DOC "/config.json\", "
        "\"till_layer\": 1}, \"clamp_gradients\": \"stop\"}"};
    for (int j = 0; j < 2; j++) {
        th_write_text(iv, self_ivs[j]);
        for (int k = 0; k < 2; k++) {
            snprintf(cmd, sizeof cmd, "%s " DOC_MODEL " --input " DOC "/grad.json --intervene %s -o %s%s",
                     k ? "eval" : "grad", iv, k ? "-" : g, k ? " --per-sequence" : "");
            self[k] = run_ok(cmd);
            cr_assert_str_eq(self[k], plain[k], "%s", self_ivs[j]);
            free(self[k]);
        }
    }
    /* another model (the attention-only golden one: same width, heads, inputs and
     * classes) grafted on changes the result */
    th_write_text(iv, "{\"graft_in\": {\"model\": \"" GOLDEN_DIR "/attn_only/params.safetensors\", \"config\": \""
                      GOLDEN_DIR "/attn_only/config.json\", \"till_layer\": 0}}");
    snprintf(cmd, sizeof cmd, "grad " DOC_MODEL " --input " DOC "/grad.json --intervene %s -o %s", iv, g);
    char *other = run_ok(cmd);
    cr_assert_str_neq(other, plain[0]);
    free(other);
    /* a graft model that does not fit: exit 1, the file and field named */
    const char *narrow = th_path(gdir, "narrow.json"), *nm = th_path(gdir, "narrow.safetensors");
    th_write_text(narrow, "{\"model\": {\"input_dim\": 512, \"num_classes\": 5, \"d_model\": 32, \"num_heads\": 8}}");
    snprintf(cmd, sizeof cmd, "init --config %s -o %s", narrow, nm);
    free(run_ok(cmd));
    th_write_textf(iv, "{\"graft_out\": {\"model\": \"%s\", \"from_layer\": 0}}", nm);
    th_run_result r;
    th_run(&r, "grad " DOC_MODEL " --input " DOC "/grad.json --intervene %s -o %s", iv, g);
    cr_assert(r.exited && r.code == 1 && strstr(r.err, "graft_out") && strstr(r.err, nm) && strstr(r.err, "d_model"),
              "%s", th_describe(&r));
    th_run_free(&r);
    for (int k = 0; k < 2; k++)
        free(plain[k]);
}

/* A run config's clamps section: a graft model trained first, then runs with it grafted
 * in and out; a run stopped half-way and resumed equals the straight one. */
Test(interv_grads, graft_train_config_resumes, .init = graft_dir, .fini = graft_dir_rm, .timeout = 120)
{
    char cmd[1024];
    const char *base = th_path(gdir, "tiny.json");
    th_write_textf(base, "%s", th_tiny_run_config);
    snprintf(cmd, sizeof cmd, "train --config %s --out %s --no-progress --set train.train_iters=1600", base,
             th_path(gdir, "g"));
    free(run_ok(cmd));
    const char *g = th_path(gdir, "g/checkpoints/step_00000100.safetensors");
    static const char *const specs[2] = {"\"graft_in\": {\"model\": \"%s\", \"till_layer\": 0}",
                                         "\"graft_out\": {\"model\": \"%s\", \"from_layer\": 0}"};
    for (int k = 0; k < 2; k++) {
        char spec[512], text[4096];
        snprintf(spec, sizeof spec, specs[k], g);
        size_t n = strlen(th_tiny_run_config) - 2; /* the closing "}\n" */
        snprintf(text, sizeof text, "%.*s, \"clamps\": {%s}}\n", (int)n, th_tiny_run_config, spec);
        const char *cfg = th_path(gdir, "run.json"), *a = th_path(gdir, k ? "out_a" : "in_a"),
                   *b = th_path(gdir, k ? "out_b" : "in_b");
        th_write_text(cfg, text);
        snprintf(cmd, sizeof cmd, "train --config %s --out %s --no-progress", cfg, a);
        free(run_ok(cmd));
        snprintf(cmd, sizeof cmd, "train --config %s --out %s --no-progress --set train.train_iters=1600", cfg, b);
        free(run_ok(cmd));
        snprintf(cmd, sizeof cmd, "train --config %s --out %s --no-progress --resume", cfg, b);
        free(run_ok(cmd));
        char *m1 = th_read_file(th_path(a, "metrics.jsonl"), NULL), *m2 = th_read_file(th_path(b, "metrics.jsonl"), NULL);
        cr_assert(m1 && m2 && !strcmp(m1, m2), "%s: the resumed run's metrics differ", spec);
        cr_assert_not_null(strstr(m1, "\"type\":\"eval\""));
        free(m1);
        free(m2);
        char *rec = th_read_file(th_path(a, "config.json"), NULL);
        cr_assert(rec && strstr(rec, k ? "graft_out" : "graft_in"), "the run's config records the graft");
        free(rec);
    }
}

/* graft_out's backward per thread (its own scratch per thread): 2 threads give the
 * 1-thread gradients, up to the order of the sums. */
Test(interv_grads, graft_out_threads, .init = graft_dir, .fini = graft_dir_rm)
{
    const char *g = graft_model("g.safetensors", 23, 1.0);
    char json[512];
    snprintf(json, sizeof json, "{\"graft_out\": {\"model\": \"%s\", \"from_layer\": 0}, \"preserve\": [\"keys\"]}", g);
    fx f;
    fx_open(&f, json, 4, NULL, 2.0);
    double l1 = fs_trainer_grad(&f.t, B);
    fs_trainer t2;
    fs_error err = {{0}};
    fs_optim_config oc = f.t.optim;
    cr_assert_eq(fs_trainer_init(&t2, &f.m, 4, B, 2, &oc, &err), 0, "%s", err.msg);
    cr_assert_eq(t2.threads, 2);
    memcpy(t2.acts.arena, f.t.acts.arena, sizeof(float) * f.t.acts.arena_floats);
    cr_assert_eq(fs_trainer_hold(&t2, &f.hc, &err), 0, "%s", err.msg);
    t2.clamps = fs_held_update(&f.hc, &f.m, &t2.acts, B);
    double l2 = fs_trainer_grad(&t2, B), mx = 0, diff = 0;
    for (size_t i = 0; i < f.m.layout.total; i++) {
        mx = fmax(mx, fabsf(f.t.grads[i]));
        diff = fmax(diff, fabsf(f.t.grads[i] - t2.grads[i]));
    }
    cr_assert(fabs(l1 - l2) <= 1e-6 * fabs(l1), "loss %g vs %g", l1, l2);
    cr_assert(mx > 0 && diff <= 1e-5 * mx, "gradients differ by %g (max %g)", diff, mx);
    fs_trainer_free(&t2);
    fx_close(&f);
}
