/* Named interventions (issue 5) checked against their definitions on a small random
 * model, against the golden clamps they reproduce, and the clamp-file validation errors. */
#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fewshot/forward.h"
#include "model/leaves.h"
#include "fewshot/interventions.h"
#include "base/rng.h"
#include "fewshot/seqio.h"
#include "train/trainer.h"
#include "golden_util.h"
#include "base/fileio.h"

enum { D_IN = 6, C = 3, DM = 16, H = 4, HD = DM / H, DEPTH = 2 };

static fs_model_config small_cfg(double mlp_ratio)
{
    fs_model_config c;
    fs_model_config_default(&c);
    c.input_dim = D_IN;
    c.num_classes = C;
    c.d_model = DM;
    c.num_heads = H;
    c.depth = DEPTH;
    c.mlp_ratio = mlp_ratio;
    c.init_seed = 11;
    c.init_rescale = 3.0; /* sharper attention than the default init */
    return c;
}

/* A model, a batch, its clean forward (`clean`) and an intervened forward (`run`). */
typedef struct {
    fs_model m;
    int B, P, N;
    float *x;
    int *y;
    fs_acts clean, run;
    fs_held held;
    fs_held_clamps ic;
} fx;

/* Hold the interventions `json` (on top of `files`, may be NULL: moved into h) on the
 * layout of `a` and fill them for its first nseq sequences. */
static void hold(fs_held *h, fs_held_clamps *hc, const char *json, fs_clamp_set *files, const fs_model *m,
                 fs_acts *a, int nseq)
{
    fs_error err = {{0}};
    fs_held_source src = {.intervene = json};
    cr_assert_eq(fs_held_load(h, &src, &m->cfg, a->P, nseq, &err), 0, "%s", err.msg);
    if (files) {
        h->files = *files;
        memset(files, 0, sizeof *files);
    }
    cr_assert_eq(fs_held_bind(hc, h, a, &err), 0, "%s", err.msg);
    cr_assert_eq(fs_held_update(hc, m, a, nseq), &hc->clamps);
}

static void unhold(fs_held *h, fs_held_clamps *hc)
{
    fs_held_unbind(hc);
    fs_held_free(h);
}

static void fx_open(fx *f, int B, int P, const int *labels, double mlp_ratio)
{
    fs_error err = {{0}};
    memset(f, 0, sizeof *f);
    fs_model_config cfg = small_cfg(mlp_ratio);
    cr_assert_eq(fs_model_create(&f->m, &cfg, &err), 0, "%s", err.msg);
    fs_model_init_params(&f->m);
    f->B = B, f->P = P, f->N = 2 * P - 1;
    f->x = malloc(sizeof(float) * B * P * D_IN);
    f->y = malloc(sizeof(int) * B * P);
    fs_rng_stream r;
    fs_rng_stream_init(&r, 5, 1);
    for (int i = 0; i < B * P * D_IN; i++)
        f->x[i] = 2.f * fs_rng_next_float(&r) - 1.f;
    for (int i = 0; i < B * P; i++)
        f->y[i] = labels ? labels[i] : (int)(fs_rng_next_u32(&r) % C);
    cr_assert_eq(fs_acts_create(&f->clean, &cfg, P, B, &err), 0, "%s", err.msg);
    cr_assert_eq(fs_acts_create(&f->run, &cfg, P, B, &err), 0, "%s", err.msg);
    fs_acts_set_inputs(&f->clean, f->x, f->y, 0, B);
    fs_acts_set_inputs(&f->run, f->x, f->y, 0, B);
    fs_forward(&f->m, &f->clean, NULL, B);
}

static void fx_intervene(fx *f, const char *json)
{
    hold(&f->held, &f->ic, json, NULL, &f->m, &f->run, f->B);
    fs_forward(&f->m, &f->run, &f->ic.clamps, f->B);
}

static void fx_close(fx *f)
{
    unhold(&f->held, &f->ic);
    fs_acts_free(&f->clean);
    fs_acts_free(&f->run);
    fs_model_free(&f->m);
    free(f->x);
    free(f->y);
}

static const float *leaf(const fs_acts *a, int layer, int which, int b)
{
    return fs_leaf_ptr(a, fs_block_leaf_id(layer, which), b);
}

/* Attention matrix element of head h (attn_scores / attn_pre_softmax). */
static float att(const fx *f, const fs_acts *a, int layer, int which, int b, int h, int i, int j)
{
    return leaf(a, layer, which, b)[((size_t)h * f->N + i) * f->N + j];
}

static float row_sum(const fx *f, const fs_acts *a, int layer, int b, int h, int i)
{
    float s = 0;
    for (int j = 0; j < f->N; j++)
        s += att(f, a, layer, B_ATTN_SCORES, b, h, i, j);
    return s;
}

static bool leaf_equal(const fx *f, int layer, int which, float tol)
{
    int id = fs_block_leaf_id(layer, which);
    size_t n = f->clean.leaves[id].numel * (size_t)f->B;
    const float *p = fs_leaf_ptr(&f->clean, id, 0), *q = fs_leaf_ptr(&f->run, id, 0);
    for (size_t i = 0; i < n; i++)
        if (fabsf(p[i] - q[i]) > tol)
            return false;
    return true;
}

#define NEAR(a, b, tol) cr_assert(fabsf((float)(a) - (float)(b)) <= (tol), "%s = %g, expected %g", #a, (double)(a), (double)(b))

/* ---- ablation ---- */

Test(interventions, ablate_head_contributes_nothing)
{
    fx f;
    fx_open(&f, 3, 4, NULL, 2.0);
    fx_intervene(&f, "{\"ablate_heads\": [\"1:2\"]}");
    for (int b = 0; b < f.B; b++) {
        const float *vc = leaf(&f.clean, 1, B_VALUES_PRE_PROJ, b), *vr = leaf(&f.run, 1, B_VALUES_PRE_PROJ, b);
        for (int n = 0; n < f.N; n++)
            for (int c = 0; c < DM; c++) {
                if (c / HD == 2)
                    cr_assert_eq(vr[n * DM + c], 0.f, "ablated head's slice must be 0");
                else
                    NEAR(vr[n * DM + c], vc[n * DM + c], 1e-6f);
            }
    }
    cr_assert(leaf_equal(&f, 0, B_OUT, 0), "layer 0 is upstream of the ablation");
    cr_assert(leaf_equal(&f, 1, B_ATTN_SCORES, 0), "patterns of the ablated layer are unchanged");
    cr_assert(!leaf_equal(&f, 1, B_OUT, 1e-6f));
    fx_close(&f);
}

Test(interventions, ablate_embedding)
{
    fx f;
    fx_open(&f, 2, 3, NULL, 2.0);
    fx_intervene(&f, "{\"ablate_embedding\": true}");
    const fs_leaf *l = &f.run.leaves[L_TOK_EMBEDDING];
    for (int b = 0; b < f.B; b++)
        for (size_t i = 0; i < l->numel; i++)
            cr_assert_eq(fs_leaf_ptr(&f.run, L_TOK_EMBEDDING, b)[i], 0.f);
    fx_close(&f);
}

/* ---- patterns ---- */

Test(interventions, induction_reference_case)
{
    /* 2 context pairs, the first matches the query's label: s on label 1, 1 - s on label 2 */
    int labels[] = {2, 1, 2, 0, 1, 1};
    fx f;
    fx_open(&f, 2, 3, labels, 2.0);
    fx_intervene(&f, "{\"induction_heads\": [\"1:0\", \"-1:3\"], \"induction_strength\": 0.8}");
    const float want[2][5] = {{0, 0.8f, 0, 0.2f, 0}, {0, 0.2f, 0, 0.8f, 0}};
    for (int b = 0; b < 2; b++)
        for (int h = 0; h < H; h += 3) {
            for (int j = 0; j < 5; j++)
                NEAR(att(&f, &f.run, 1, B_ATTN_SCORES, b, h, 4, j), want[b][j], 1e-7f);
            /* other rows are computed as usual */
            for (int i = 0; i < 4; i++)
                for (int j = 0; j < 5; j++)
                    NEAR(att(&f, &f.run, 1, B_ATTN_SCORES, b, h, i, j), att(&f, &f.clean, 1, B_ATTN_SCORES, b, h, i, j),
                         1e-6f);
        }
    fx_close(&f);
}

Test(interventions, induction_general_rows_sum_to_one)
{
    /* 4 context pairs: two match (s/2 each, 1-s over the other two); all match; none match */
    int labels[] = {0, 1, 0, 2, 0, /**/ 1, 1, 1, 1, 1, /**/ 0, 0, 1, 1, 2};
    fx f;
    fx_open(&f, 3, 5, labels, 0);
    fx_intervene(&f, "{\"induction_heads\": [\"0:1\"], \"induction_strength\": 0.9}");
    const float want[3][9] = {{0, .45f, 0, .05f, 0, .45f, 0, .05f, 0},
                              {0, .25f, 0, .25f, 0, .25f, 0, .25f, 0},
                              {0, .25f, 0, .25f, 0, .25f, 0, .25f, 0}};
    for (int b = 0; b < 3; b++) {
        for (int j = 0; j < f.N; j++)
            NEAR(att(&f, &f.run, 0, B_ATTN_SCORES, b, 1, f.N - 1, j), want[b][j], 1e-7f);
        NEAR(row_sum(&f, &f.run, 0, b, 1, f.N - 1), 1.f, 1e-6f);
    }
    fx_close(&f);
}

Test(interventions, prev_token_pattern)
{
    fx f;
    fx_open(&f, 2, 4, NULL, 2.0);
    fx_intervene(&f, "{\"prev_token_heads\": [\"0:2\"], \"prev_token_strength\": 0.7}");
    for (int b = 0; b < f.B; b++)
        for (int i = 0; i < f.N; i++) {
            for (int j = 0; j < f.N; j++) {
                float w = i == 0 ? (j == 0) : j == i ? 0.3f : j == i - 1 ? 0.7f : 0.f;
                NEAR(att(&f, &f.run, 0, B_ATTN_SCORES, b, 2, i, j), w, 1e-7f);
            }
            NEAR(row_sum(&f, &f.run, 0, b, 2, i), 1.f, 1e-6f);
        }
    fx_close(&f);
}

Test(interventions, prev_token_only_label_rows)
{
    fx f;
    fx_open(&f, 2, 4, NULL, 2.0);
    fx_intervene(&f, "{\"prev_token_heads\": [\"0:2\"], \"prev_token_only_label\": true}");
    for (int b = 0; b < f.B; b++)
        for (int i = 0; i < f.N; i++)
            for (int j = 0; j < f.N; j++) {
                float clean = att(&f, &f.clean, 0, B_ATTN_SCORES, b, 2, i, j);
                NEAR(att(&f, &f.run, 0, B_ATTN_SCORES, b, 2, i, j), i % 2 ? (float)(j == i - 1) : clean, 1e-7f);
            }
    fx_close(&f);
}

Test(interventions, disallow_prev_token_renormalises)
{
    fx f;
    fx_open(&f, 2, 4, NULL, 2.0);
    fx_intervene(&f, "{\"disallow_prev_token_heads\": [\"0:1\"]}");
    for (int b = 0; b < f.B; b++)
        for (int i = 0; i < f.N; i++) {
            /* the softmax of the clean scores over the allowed keys j <= i, j != i - 1 */
            double mx = -1e30, e[16] = {0}, sum = 0;
            for (int j = 0; j <= i; j++)
                if (j != i - 1)
                    mx = fmax(mx, att(&f, &f.clean, 0, B_ATTN_PRE_SOFTMAX, b, 1, i, j));
            for (int j = 0; j <= i; j++)
                if (j != i - 1)
                    sum += e[j] = exp(att(&f, &f.clean, 0, B_ATTN_PRE_SOFTMAX, b, 1, i, j) - mx);
            for (int j = 0; j < f.N; j++)
                NEAR(att(&f, &f.run, 0, B_ATTN_SCORES, b, 1, i, j), e[j] / sum, 1e-6f);
            if (i)
                cr_assert_eq(att(&f, &f.run, 0, B_ATTN_PRE_SOFTMAX, b, 1, i, i - 1), -1e9f);
            NEAR(row_sum(&f, &f.run, 0, b, 1, i), 1.f, 1e-6f);
        }
    fx_close(&f);
}

Test(interventions, disallow_prev_token_only_label)
{
    fx f;
    fx_open(&f, 1, 4, NULL, 2.0);
    fx_intervene(&f, "{\"disallow_prev_token_heads\": [\"0:1\"], \"disallow_prev_token_only_label\": true}");
    for (int i = 1; i < f.N; i++) {
        float s = att(&f, &f.run, 0, B_ATTN_SCORES, 0, 1, i, i - 1);
        if (i % 2)
            cr_assert_eq(s, 0.f);
        else
            NEAR(s, att(&f, &f.clean, 0, B_ATTN_SCORES, 0, 1, i, i - 1), 1e-7f);
    }
    fx_close(&f);
}

Test(interventions, silence_non_label_attention)
{
    fx f;
    fx_open(&f, 2, 4, NULL, 2.0);
    fx_intervene(&f, "{\"silence_non_label_heads\": [\"1:3\"]}");
    int q = f.N - 1;
    for (int b = 0; b < f.B; b++) {
        /* the softmax of the clean scores over the label tokens only */
        double mx = -1e30, e[16] = {0}, sum = 0;
        for (int j = 1; j < f.N; j += 2)
            mx = fmax(mx, att(&f, &f.clean, 1, B_ATTN_PRE_SOFTMAX, b, 3, q, j));
        for (int j = 1; j < f.N; j += 2)
            sum += e[j] = exp(att(&f, &f.clean, 1, B_ATTN_PRE_SOFTMAX, b, 3, q, j) - mx);
        for (int j = 0; j < f.N; j++)
            NEAR(att(&f, &f.run, 1, B_ATTN_SCORES, b, 3, q, j), e[j] / sum, 1e-6f);
    }
    fx_close(&f);
}

Test(interventions, match_heads)
{
    fx f;
    fx_open(&f, 1, 4, NULL, 0);
    /* the query example equals context example 1: the hardmax puts everything on label 1 */
    memcpy(f.x + 3 * D_IN, f.x + 1 * D_IN, sizeof(float) * D_IN);
    fs_acts_set_inputs(&f.run, f.x, f.y, 0, 1);
    fx_intervene(&f, "{\"match_heads\": [\"1:1\", \"1:2\"]}");
    for (int h = 1; h <= 2; h++)
        for (int j = 0; j < f.N; j++)
            NEAR(att(&f, &f.run, 1, B_ATTN_SCORES, 0, h, 6, j), j == 3, 0);
    unhold(&f.held, &f.ic);
    fx_intervene(&f, "{\"match_heads\": [\"1:1\"], \"match_temperature\": 0.5}");
    double cs[3], sum = 0;
    const float *xq = f.x + 3 * D_IN;
    for (int j = 0; j < 3; j++) {
        double xx = 0, xy = 0, qq = 0;
        for (int t = 0; t < D_IN; t++)
            xx += f.x[j * D_IN + t] * f.x[j * D_IN + t], xy += f.x[j * D_IN + t] * xq[t], qq += xq[t] * xq[t];
        cs[j] = exp(xy / sqrt(xx * qq) / 0.5);
        sum += cs[j];
    }
    for (int j = 0; j < 3; j++) {
        NEAR(att(&f, &f.run, 1, B_ATTN_SCORES, 0, 1, 6, 2 * j + 1), cs[j] / sum, 1e-6f);
        cr_assert_eq(att(&f, &f.run, 1, B_ATTN_SCORES, 0, 1, 6, 2 * j), 0.f);
    }
    NEAR(row_sum(&f, &f.run, 1, 0, 1, 6), 1.f, 1e-6f);
    fx_close(&f);
}

/* ---- two-pass interventions ---- */

Test(interventions, preserve_patterns_while_ablating)
{
    fx f;
    fx_open(&f, 3, 4, NULL, 2.0);
    fx_intervene(&f, "{\"ablate_heads\": [\"0:1\"], \"preserve\": [\"patterns\"], \"preserve_from_layer\": 1}");
    cr_assert(leaf_equal(&f, 1, B_ATTN_SCORES, 0), "layer 1 patterns are the clean run's");
    cr_assert(!leaf_equal(&f, 1, B_ATTN_PRE_SOFTMAX, 1e-6f), "the computed scores did change");
    cr_assert(!leaf_equal(&f, 1, B_V, 1e-6f), "layer 1 values follow the ablation");
    fx_close(&f);

    fx_open(&f, 3, 4, NULL, 2.0);
    fx_intervene(&f, "{\"ablate_heads\": [\"0:1\"], \"preserve\": [\"values\", \"queries\", \"keys\"]}");
    for (int w = 0; w < 3; w++)
        cr_assert(leaf_equal(&f, 1, (int[]){B_V, B_Q, B_K}[w], 0));
    cr_assert(leaf_equal(&f, 1, B_ATTN_SCORES, 1e-6f), "queries and keys preserved: same patterns");
    cr_assert(!leaf_equal(&f, 1, B_OUT, 1e-6f), "the residual stream still carries the ablation");
    fx_close(&f);
}

Test(interventions, head_temperature)
{
    fx f;
    fx_open(&f, 2, 4, NULL, 2.0);
    fx_intervene(&f, "{\"head_temperature\": {\"1:2\": 2.0}}");
    for (int b = 0; b < f.B; b++)
        for (int h = 0; h < H; h++)
            for (int i = 0; i < f.N; i++) {
                double mx = -1e30, e[16], sum = 0;
                for (int j = 0; j <= i; j++)
                    mx = fmax(mx, att(&f, &f.clean, 1, B_ATTN_PRE_SOFTMAX, b, h, i, j) / 2.0);
                for (int j = 0; j <= i; j++)
                    sum += e[j] = exp(att(&f, &f.clean, 1, B_ATTN_PRE_SOFTMAX, b, h, i, j) / 2.0 - mx);
                for (int j = 0; j < f.N; j++) {
                    float want = h != 2 ? att(&f, &f.clean, 1, B_ATTN_SCORES, b, h, i, j) : j <= i ? e[j] / sum : 0.f;
                    NEAR(att(&f, &f.run, 1, B_ATTN_SCORES, b, h, i, j), want, 1e-6f);
                }
            }
    fx_close(&f);
    /* the reference's list form */
    fx_open(&f, 1, 3, NULL, 2.0);
    fx_intervene(&f, "{\"head_temperature\": [\"1:2:0.5\"]}");
    NEAR(att(&f, &f.run, 1, B_ATTN_PRE_SOFTMAX, 0, 2, 4, 1), att(&f, &f.clean, 1, B_ATTN_PRE_SOFTMAX, 0, 2, 4, 1) / 0.5f,
         1e-6f);
    fx_close(&f);
}

Test(interventions, later_interventions_override_preserve)
{
    /* as the reference: preserved patterns are overwritten by the induction pattern */
    int labels[] = {2, 1, 2};
    fx f;
    fx_open(&f, 1, 3, labels, 0);
    fx_intervene(&f, "{\"preserve\": [\"patterns\"], \"induction_heads\": [\"1:0\"]}");
    NEAR(att(&f, &f.run, 1, B_ATTN_SCORES, 0, 0, 4, 1), 1.f, 0);
    NEAR(att(&f, &f.run, 1, B_ATTN_SCORES, 0, 1, 4, 1), att(&f, &f.clean, 1, B_ATTN_SCORES, 0, 1, 4, 1), 0);
    fx_close(&f);
}

/* ---- per-batch updates ---- */

Test(interventions, update_per_batch_reuses_buffers)
{
    int labels[] = {2, 1, 2, 0, 1, 1, 0, 0, 1, 2, 2, 1};
    fx f;
    fx_open(&f, 4, 3, labels, 2.0);
    fx_intervene(&f, "{\"induction_heads\": [\"1:0\"], \"preserve\": [\"values\"]}");
    int id = fs_block_leaf_id(1, B_ATTN_SCORES);
    float *buf = f.ic.clamps.leaf[id].value;
    /* next batch: 2 sequences with other labels */
    int next[] = {1, 0, 0, 0, 1, 1};
    fs_acts_set_inputs(&f.run, f.x, next, 0, 2);
    fs_held_update(&f.ic, &f.m, &f.run, 2);
    fs_forward(&f.m, &f.run, &f.ic.clamps, 2);
    cr_assert_eq(f.ic.clamps.leaf[id].value, buf);
    NEAR(att(&f, &f.run, 1, B_ATTN_SCORES, 0, 0, 4, 1), 0.f, 0);
    NEAR(att(&f, &f.run, 1, B_ATTN_SCORES, 0, 0, 4, 3), 1.f, 0);
    NEAR(att(&f, &f.run, 1, B_ATTN_SCORES, 1, 0, 4, 3), 1.f, 0);
    fx_close(&f);
}

Test(interventions, on_top_of_clamp_files)
{
    fx f;
    fx_open(&f, 2, 3, NULL, 2.0);
    fs_clamp_set base;
    fs_clamp_set_init(&base, &f.run);
    float zeros[DM * 5] = {0};
    uint8_t mask[DM * 5] = {0};
    memset(mask + 4 * DM, 1, DM); /* zero the query's token embedding */
    fs_clamp_set_leaf(&base, &f.run, L_TOK_EMBEDDING, zeros, mask, 0);
    hold(&f.held, &f.ic, "{\"ablate_heads\": [\"1:0\"]}", &base, &f.m, &f.run, 2);
    fs_forward(&f.m, &f.run, &f.ic.clamps, 2);
    for (int b = 0; b < 2; b++) {
        for (int c = 0; c < DM; c++)
            cr_assert_eq(fs_leaf_ptr(&f.run, L_TOK_EMBEDDING, b)[4 * DM + c], 0.f);
        for (int n = 0; n < f.N; n++)
            cr_assert_eq(leaf(&f.run, 1, B_VALUES_PRE_PROJ, b)[n * DM], 0.f);
    }
    fs_clamp_set_free(&base);
    fx_close(&f);
}

/* ---- gradients ---- */

static void trainer_open(fs_trainer *t, fx *f, const char *json)
{
    fs_error err = {{0}};
    fs_train_config tc = {0};
    fs_optim_config oc = fs_optim_config_from_train(&tc);
    oc.weight_decay = 0;
    cr_assert_eq(fs_trainer_init(t, &f->m, f->P, f->B, 1, &oc, &err), 0, "%s", err.msg);
    fs_acts_set_inputs(&t->acts, f->x, f->y, 0, f->B);
    hold(&f->held, &f->ic, json, NULL, &f->m, &t->acts, f->B);
    cr_assert_eq(fs_trainer_hold(t, &f->ic, &err), 0, "%s", err.msg);
    t->clamps = fs_held_update(&f->ic, &f->m, &t->acts, f->B); /* again, now marking computed elements */
}

Test(interventions, clamped_elements_get_no_gradient)
{
    fx f;
    fx_open(&f, 3, 4, NULL, 2.0);
    fs_trainer t;
    trainer_open(&t, &f, "{\"ablate_heads\": [\"1:2\"]}");
    fs_trainer_grad(&t, f.B);
    fs_param_ptrs g = fs_param_bind(&f.m.cfg, &f.m.layout, t.grads);
    /* qkv rows 2d + h*hd .. : head h's values. Only the ablated head's get nothing. */
    for (int h = 0; h < H; h++) {
        double s = 0;
        for (int r = 2 * DM + h * HD; r < 2 * DM + (h + 1) * HD; r++)
            for (int c = 0; c < DM; c++)
                s += fabsf(g.blocks[1].qkv_w[r * DM + c]);
        cr_assert(h == 2 ? s == 0 : s > 0, "head %d value weights: |grad| %g", h, s);
    }
    unhold(&f.held, &f.ic);
    fs_trainer_free(&t);

    /* with clamp_gradients "stop", preserved patterns are constants: no gradient reaches
     * any query or key (the reference's gradient goes through the clean pass: see
     * test_interv_grads.c) */
    trainer_open(&t, &f, "{\"ablate_heads\": [\"0:1\"], \"preserve\": [\"patterns\"], \"clamp_gradients\": \"stop\"}");
    fs_trainer_grad(&t, f.B);
    g = fs_param_bind(&f.m.cfg, &f.m.layout, t.grads);
    for (int l = 0; l < DEPTH; l++)
        for (int i = 0; i < 2 * DM * DM; i++)
            cr_assert_eq(g.blocks[l].qkv_w[i], 0.f);
    unhold(&f.held, &f.ic);
    fs_trainer_free(&t);

    /* temperature, "stop": the head's scores are clamped, the other heads' queries still learn */
    trainer_open(&t, &f, "{\"head_temperature\": {\"1:2\": 3.0}, \"clamp_gradients\": \"stop\"}");
    fs_trainer_grad(&t, f.B);
    g = fs_param_bind(&f.m.cfg, &f.m.layout, t.grads);
    for (int h = 0; h < H; h++) {
        double s = 0;
        for (int r = h * HD; r < (h + 1) * HD; r++)
            for (int c = 0; c < DM; c++)
                s += fabsf(g.blocks[1].qkv_w[r * DM + c]);
        cr_assert(h == 2 ? s == 0 : s > 0, "head %d query weights: |grad| %g", h, s);
    }
    unhold(&f.held, &f.ic);
    fs_trainer_free(&t);
    fx_close(&f);
}

static double loss_at(fx *f, fs_acts *a)
{
    fs_forward(&f->m, a, &f->ic.clamps, f->B);
    return fs_query_loss_range(a, 0, f->B, f->B);
}

Test(interventions, gradient_matches_finite_differences)
{
    fx f;
    fx_open(&f, 3, 4, NULL, 2.0);
    fs_trainer t;
    trainer_open(&t, &f,
                 "{\"ablate_heads\": [\"0:3\"], \"induction_heads\": [\"1:0\"], \"prev_token_heads\": [\"0:2\"], "
                 "\"prev_token_strength\": 0.8, \"disallow_prev_token_heads\": [\"0:1\"], "
                 "\"silence_non_label_heads\": [\"1:1\"]}");
    fs_trainer_grad(&t, f.B);
    /* the largest gradient entries of every tensor */
    int checked = 0;
    for (int k = 0; k < f.m.layout.count; k++) {
        const fs_param_desc *d = &f.m.layout.tensors[k];
        size_t best = 0;
        for (size_t i = 1; i < d->numel; i++)
            if (fabsf(t.grads[d->offset + i]) > fabsf(t.grads[d->offset + best]))
                best = i;
        float *p = &f.m.params[d->offset + best], g = t.grads[d->offset + best], keep = *p, eps = 1e-3f;
        if (fabsf(g) < 1e-3f)
            continue;
        *p = keep + eps;
        double up = loss_at(&f, &t.acts);
        *p = keep - eps;
        double down = loss_at(&f, &t.acts);
        *p = keep;
        double fd = (up - down) / (2 * eps);
        cr_assert(fabs(fd - g) <= 1e-3 + 3e-2 * fabs(g), "%s[%zu]: analytic %g, finite difference %g", d->name, best,
                  g, fd);
        checked++;
    }
    cr_assert_geq(checked, 8);
    unhold(&f.held, &f.ic);
    fs_trainer_free(&t);
    fx_close(&f);
}

/* ---- golden clamps reproduced by named interventions ---- */

static void golden_forward(const char *clamp_file, const char *json)
{
    fs_model m;
    golden_load_model("doc", &m);
    char path[256];
    snprintf(path, sizeof path, GOLDEN_DIR "/doc/%s", clamp_file);
    fs_error err = {{0}};
    cJSON *doc = fs_json_load(path, &err);
    cr_assert_not_null(doc, "%s", err.msg);
    fs_seq_batch batch;
    cr_assert_eq(fs_seq_batch_from_json(doc, path, m.cfg.input_dim, m.cfg.num_classes, &batch, &err), 0, "%s", err.msg);
    fs_acts acts;
    cr_assert_eq(fs_acts_create(&acts, &m.cfg, batch.P, batch.B, &err), 0, "%s", err.msg);
    fs_acts_set_inputs(&acts, batch.examples, batch.labels, 0, batch.B);
    fs_held held;
    fs_held_clamps ic;
    hold(&held, &ic, json, NULL, &m, &acts, batch.B);
    fs_forward(&m, &acts, &ic.clamps, batch.B);
    cJSON *ours = fs_cache_to_json(&acts, batch.B, batch.batched);
    char why[512] = "";
    cr_assert_geq(golden_compare_tree(ours, cJSON_GetObjectItem(doc, "result"), "", why, sizeof why), 0, "%s: %s",
                  clamp_file, why);
    cJSON_Delete(ours);
    unhold(&held, &ic);
    fs_acts_free(&acts);
    fs_seq_batch_free(&batch);
    cJSON_Delete(doc);
    fs_model_free(&m);
}

Test(interventions, golden_ablate_value_head)
{
    golden_forward("clamp_ablate_value_head.json", "{\"ablate_heads\": [\"1:7\"]}");
}

Test(interventions, golden_preserve_patterns_ablate)
{
    golden_forward("clamp_preserve_patterns_ablate.json", "{\"ablate_heads\": [\"0:1\"], \"preserve\": [\"patterns\"]}");
    golden_forward("clamp_preserve_patterns_ablate.json",
                   "{\"ablate_heads\": [\"0:1\"], \"preserve\": [\"patterns\"], \"preserve_from_layer\": 1}");
}

Test(interventions, golden_ablate_value_head_gradients)
{
    golden_held g;
    fs_held_source src = {.intervene = "{\"ablate_heads\": [\"1:7\"]}"};
    golden_held_open(&g, "doc", "grad.json", &src, 2);
    double loss = fs_trainer_grad(&g.t, g.batch.B);
    fs_error err = {{0}};
    cJSON *want = fs_json_load(GOLDEN_DIR "/doc/clamp_grads_ablate_value_head.json", &err);
    cr_assert_not_null(want, "%s", err.msg);
    double wl = cJSON_GetObjectItem(want, "loss")->valuedouble;
    cr_assert(fabs(loss - wl) <= 1e-4 * fabs(wl), "loss %g, golden %g", loss, wl);
    char why[512] = "";
    cr_assert_eq(golden_compare_buffer(&g.m, g.t.grads, GOLDEN_DIR "/doc/clamp_grads_ablate_value_head.safetensors", why,
                                       sizeof why),
                 0, "%s", why);
    cJSON_Delete(want);
    golden_held_close(&g);
}

/* ---- spec errors ---- */

static void expect_error(const char *json, const char *needle, const char *needle2)
{
    fs_model_config cfg = small_cfg(2.0);
    fs_interventions iv;
    fs_error err = {{0}};
    cr_assert_eq(fs_interventions_from_arg(&iv, json, &cfg, &err), -1, "accepted %s", json);
    cr_assert(strstr(err.msg, needle), "message \"%s\" lacks \"%s\"", err.msg, needle);
    if (needle2)
        cr_assert(strstr(err.msg, needle2), "message \"%s\" lacks \"%s\"", err.msg, needle2);
}

Test(interventions, spec_errors)
{
    expect_error("{\"ablate_heads\": [\"0:1\", \"2:0\"]}", "ablate_heads[1]", "layer 2 out of range");
    expect_error("{\"ablate_heads\": [\"-3:0\"]}", "ablate_heads[0]", "layer -3 out of range");
    expect_error("{\"induction_heads\": [\"1:4\"]}", "induction_heads[0]", "head 4 out of range");
    expect_error("{\"prev_token_heads\": [\"1-4\"]}", "prev_token_heads[0]", "expected \"layer:head\"");
    expect_error("{\"prev_token_heads\": [\"1:2x\"]}", "prev_token_heads[0]", "expected \"layer:head\"");
    expect_error("{\"ablate_heads\": \"1:2\"}", "ablate_heads", "expected a list");
    expect_error("{\"ablate_head\": [\"1:2\"]}", "unknown key \"ablate_head\"", "ablate_heads");
    expect_error("{\"induction_strength\": 1.5}", "induction_strength", "[0, 1]");
    expect_error("{\"prev_token_only_label\": 1}", "prev_token_only_label", "true or false");
    expect_error("{\"preserve\": [\"patterns\", \"scores\"]}", "preserve[1]", "\"patterns\"");
    expect_error("{\"preserve_from_layer\": 2}", "preserve_from_layer", "layer 2 out of range");
    expect_error("{\"head_temperature\": {\"1:0\": 0}}", "head_temperature.1:0", "temperature 0 out of range");
    expect_error("{\"head_temperature\": {\"9:0\": 2}}", "head_temperature.9:0", "layer 9 out of range");
    expect_error("{\"head_temperature\": [\"1:0\"]}", "head_temperature[0]", "layer:head:temperature");
    expect_error("{\"induction_heads\": [\"1:0\"], \"prev_token_heads\": [\"1:0\"]}", "1:0", "induction_heads");
    expect_error("{\"disallow_prev_token_heads\": [\"0:0\"], \"prev_token_heads\": [\"0:0\"]}", "0:0",
                 "disallow_prev_token_heads");
    expect_error("{\"ablate_heads\": [", "--intervene", "malformed JSON");
    expect_error("/nonexistent/iv.json", "/nonexistent/iv.json", NULL);
    expect_error("[1]", "[1]", NULL);
}

Test(interventions, spec_parsing)
{
    fs_model_config cfg = small_cfg(2.0);
    fs_interventions iv;
    fs_error err = {{0}};
    /* a config `clamps` section: file names are ignored here */
    cr_assert_eq(fs_interventions_from_arg(&iv,
                                           "{\"cache\": \"c.json\", \"mask\": \"m.json\", \"ablate_heads\": [\"-1:3\", "
                                           "\"1:3\"], \"preserve\": [\"keys\"], \"preserve_from_layer\": -1}",
                                           &cfg, &err),
                 0, "%s", err.msg);
    cr_assert_eq(iv.ablate_heads.n, 1);
    cr_assert_eq(iv.ablate_heads.h[0].layer, 1);
    cr_assert_eq(iv.ablate_heads.h[0].head, 3);
    cr_assert(iv.preserve_keys && !iv.preserve_patterns);
    cr_assert_eq(iv.preserve_from_layer, 1);
    cr_assert(fs_interventions_need_clean_pass(&iv));
    cr_assert_eq(fs_interventions_from_arg(&iv, "{}", &cfg, &err), 0, "%s", err.msg);
    cr_assert(!fs_interventions_any(&iv));
    /* from a file */
    char path[] = "/tmp/fewshot_iv_XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    FILE *f = fdopen(fd, "w");
    fputs("{\"induction_heads\": [\"1:1\"], \"induction_strength\": 0.75}\n", f);
    fclose(f);
    cr_assert_eq(fs_interventions_from_arg(&iv, path, &cfg, &err), 0, "%s", err.msg);
    cr_assert_eq(iv.induction_heads.n, 1);
    cr_assert_eq(iv.induction_strength, 0.75);
    remove(path);
}

/* ---- generic clamp-file validation: errors name the path ---- */

/* A nested JSON array of `shape` filled with `fill`. */
static void arr_text(char *buf, size_t cap, const int *shape, int nd, const char *fill)
{
    if (nd == 0) {
        snprintf(buf + strlen(buf), cap - strlen(buf), "%s", fill);
        return;
    }
    snprintf(buf + strlen(buf), cap - strlen(buf), "[");
    for (int i = 0; i < shape[0]; i++) {
        if (i)
            snprintf(buf + strlen(buf), cap - strlen(buf), ",");
        arr_text(buf, cap, shape + 1, nd - 1, fill);
    }
    snprintf(buf + strlen(buf), cap - strlen(buf), "]");
}

/* A template holds one %s for the leaf array, or none (used as is). */
static void expect_clamp_error(const char *cache_tmpl, const char *mask_tmpl, const int *shape, int nd,
                               const char *needle, const char *needle2)
{
    fs_model_config cfg = small_cfg(2.0);
    fs_acts a;
    fs_error err = {{0}};
    cr_assert_eq(fs_acts_create(&a, &cfg, 3, 1, &err), 0, "%s", err.msg);
    static char vals[8192], mask[8192], ctext[16384], mtext[16384];
    vals[0] = mask[0] = 0;
    arr_text(vals, sizeof vals, shape, nd, "0");
    arr_text(mask, sizeof mask, shape, nd, "true");
    snprintf(ctext, sizeof ctext, strstr(cache_tmpl, "%s") ? cache_tmpl : "%s", strstr(cache_tmpl, "%s") ? vals : cache_tmpl);
    snprintf(mtext, sizeof mtext, strstr(mask_tmpl, "%s") ? mask_tmpl : "%s", strstr(mask_tmpl, "%s") ? mask : mask_tmpl);
    cJSON *c = cJSON_Parse(ctext), *m = cJSON_Parse(mtext);
    cr_assert(c && m, "test JSON is malformed: %s / %s", ctext, mtext);
    fs_clamp_set cs;
    fs_clamp_set_init(&cs, &a);
    cr_assert_eq(fs_clamp_set_from_json(&cs, &a, c, m, "cache.json", "mask.json", &err), -1, "accepted %s", ctext);
    cr_assert(strstr(err.msg, needle), "message \"%s\" lacks \"%s\"", err.msg, needle);
    if (needle2)
        cr_assert(strstr(err.msg, needle2), "message \"%s\" lacks \"%s\"", err.msg, needle2);
    fs_clamp_set_free(&cs);
    cJSON_Delete(c);
    cJSON_Delete(m);
    fs_acts_free(&a);
}

#define BLOCK1(key) "{\"transformer_output\": {\"block_outputs\": [{}, {\"attn_output\": {\"" key "\": %s}}]}}"

Test(interventions, clamp_file_validation_errors)
{
    const int v[] = {1, H, 5, HD}, bad[] = {1, H, 5, HD + 1};
    const char *path = "transformer_output.block_outputs[1].attn_output.v";
    /* the well-formed clamp loads */
    {
        fs_model_config cfg = small_cfg(2.0);
        fs_acts a;
        fs_error err = {{0}};
        cr_assert_eq(fs_acts_create(&a, &cfg, 3, 1, &err), 0, "%s", err.msg);
        static char vals[4096], mask[4096], ct[8192], mt[8192];
        vals[0] = mask[0] = 0;
        arr_text(vals, sizeof vals, v, 4, "0");
        arr_text(mask, sizeof mask, v, 4, "true");
        snprintf(ct, sizeof ct, BLOCK1("v"), vals);
        snprintf(mt, sizeof mt, BLOCK1("v"), mask);
        cJSON *c = cJSON_Parse(ct), *m = cJSON_Parse(mt);
        fs_clamp_set cs;
        fs_clamp_set_init(&cs, &a);
        cr_assert_eq(fs_clamp_set_from_json(&cs, &a, c, m, "cache.json", "mask.json", &err), 0, "%s", err.msg);
        cr_assert_eq(cs.active, 1);
        fs_clamp_set_free(&cs);
        cJSON_Delete(c);
        cJSON_Delete(m);
        fs_acts_free(&a);
    }
    expect_clamp_error(BLOCK1("vv"), BLOCK1("vv"), v, 4, "transformer_output.block_outputs[1].attn_output.vv",
                       "unknown key");
    expect_clamp_error("{\"transformer_outptu\": {\"x\": %s}}", "{}", v, 4, "transformer_outptu", "unknown key");
    expect_clamp_error(BLOCK1("v"), BLOCK1("v"), bad, 4, path, "[1, 4, 5, 4]");
    expect_clamp_error(BLOCK1("v"), BLOCK1("v"), v, 3, path, "expected shape");
    expect_clamp_error("{\"transformer_output\": {\"block_outputs\": [{}, {}, {\"attn_output\": {\"v\": %s}}]}}",
                       "{\"transformer_output\": {\"block_outputs\": [{}, {}, {\"attn_output\": {\"v\": %s}}]}}", v, 4,
                       "transformer_output.block_outputs[2]", "out of range");
    expect_clamp_error("{}", BLOCK1("v"), v, 4, path, "the clamp cache has no value");
    expect_clamp_error(BLOCK1("v"), "{}", v, 4, path, "the mask (mask.json) has no entry");
}

/* ---- what is held on: one loader for a config's clamps section and the command line ---- */

/* dir/name = {"tok_embedding": value [batch?][5][DM]} (P = 3 pairs, 5 tokens). */
static void write_leaf_file(const char *dir, const char *name, int batch, const char *fill)
{
    static char text[1 << 16];
    int shape[3] = {batch, 5, DM};
    text[0] = 0;
    snprintf(text, sizeof text, "{\"tok_embedding\": ");
    arr_text(text, sizeof text, batch ? shape : shape + 1, batch ? 3 : 2, fill);
    snprintf(text + strlen(text), sizeof text - strlen(text), "}\n");
    char path[128];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
}

Test(interventions, held_on_resolves_config_and_command_line)
{
    char dir[] = "/tmp/fewshot_held_XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    write_leaf_file(dir, "c.json", 0, "0.5");
    write_leaf_file(dir, "m.json", 0, "true");
    write_leaf_file(dir, "cb.json", 2, "0.25");
    write_leaf_file(dir, "mb.json", 2, "true");
    char c[160], m[160], cb[160], mb[160];
    snprintf(c, sizeof c, "%s/c.json", dir);
    snprintf(m, sizeof m, "%s/m.json", dir);
    snprintf(cb, sizeof cb, "%s/cb.json", dir);
    snprintf(mb, sizeof mb, "%s/mb.json", dir);
    fs_model_config cfg = small_cfg(2.0);
    fs_clamps_config section = {0};
    snprintf(section.cache_file, sizeof section.cache_file, "%s", c);
    snprintf(section.mask_file, sizeof section.mask_file, "%s", m);
    section.named = cJSON_Parse("{\"ablate_heads\": [\"1:0\"]}");
    fs_error err = {{0}};
    fs_held h;

    /* the section alone: its files and its named interventions */
    fs_held_source src = {.config = &section, .origin = "run.json"};
    cr_assert_eq(fs_held_load(&h, &src, &cfg, 3, 0, &err), 0, "%s", err.msg);
    cr_assert_eq(h.files.active, 1);
    cr_assert(h.has_iv && h.iv.ablate_heads.n == 1);
    cr_assert_eq(h.files.leaf[L_TOK_EMBEDDING].value[0], 0.5f);
    fs_held_free(&h);

    /* --intervene replaces the named interventions, the files stay */
    src.intervene = "{\"induction_heads\": [\"1:1\"]}";
    cr_assert_eq(fs_held_load(&h, &src, &cfg, 3, 0, &err), 0, "%s", err.msg);
    cr_assert_eq(h.files.active, 1);
    cr_assert(h.iv.ablate_heads.n == 0 && h.iv.induction_heads.n == 1);
    fs_held_free(&h);

    /* --cache/--mask replace the files; per-sequence ones must match the input's count and
     * are refused on sampled sequences */
    src.intervene = NULL;
    src.cache = cb, src.mask = mb;
    cr_assert_eq(fs_held_load(&h, &src, &cfg, 3, 0, &err), -1);
    cr_assert(strstr(err.msg, "per-sequence") && strstr(err.msg, "tok_embedding"), "%s", err.msg);
    cr_assert_eq(fs_held_load(&h, &src, &cfg, 3, 4, &err), -1);
    cr_assert(strstr(err.msg, "holds 2 sequences but the input has 4"), "%s", err.msg);
    cr_assert_eq(fs_held_load(&h, &src, &cfg, 3, 2, &err), 0, "%s", err.msg);
    cr_assert_eq(h.files.leaf[L_TOK_EMBEDDING].batch, 2);
    cr_assert_eq(h.files.leaf[L_TOK_EMBEDDING].value[0], 0.25f);
    cr_assert(h.has_iv && h.iv.ablate_heads.n == 1, "the section's interventions stay");
    fs_held_free(&h);

    /* --cache without --mask, and a section with only one of the two */
    src.mask = NULL;
    cr_assert_eq(fs_held_load(&h, &src, &cfg, 3, 2, &err), -1);
    cr_assert(strstr(err.msg, "--cache and --mask go together"), "%s", err.msg);
    src.cache = NULL;
    section.mask_file[0] = 0;
    cr_assert_eq(fs_held_load(&h, &src, &cfg, 3, 0, &err), -1);
    cr_assert(strstr(err.msg, "run.json") && strstr(err.msg, "go together"), "%s", err.msg);

    /* bound to another sequence length, clamp files do not apply; nothing else held: NULL */
    cJSON_Delete(section.named);
    section.named = NULL;
    snprintf(section.mask_file, sizeof section.mask_file, "%s", m);
    cr_assert_eq(fs_held_load(&h, &src, &cfg, 3, 0, &err), 0, "%s", err.msg);
    cr_assert(!h.has_iv);
    fs_model model;
    cr_assert_eq(fs_model_create(&model, &cfg, &err), 0, "%s", err.msg);
    for (int P = 3; P <= 4; P++) {
        fs_acts a;
        cr_assert_eq(fs_acts_create(&a, &cfg, P, 2, &err), 0, "%s", err.msg);
        fs_held_clamps hc;
        cr_assert_eq(fs_held_bind(&hc, &h, &a, &err), 0, "%s", err.msg);
        cr_assert(fs_held_bound(&hc, &h));
        cr_assert_eq(fs_held_update(&hc, &model, &a, 2), P == 3 ? &h.files : NULL);
        fs_held_unbind(&hc);
        fs_acts_free(&a);
    }
    fs_model_free(&model);
    fs_held_free(&h);
    char cmd[64];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}
