/* Finite-difference gradient checks (docs/model.md, docs/cache.md).
 *
 * Kernels: every backward kernel is checked against central differences in the kernel
 * table (test_kernel_table.c).
 *
 * Whole model: the analytic gradient of the mean query cross-entropy (fs_trainer_grad,
 * threads and all) against 4th-order central differences of the float forward's loss
 * (fs_forward_range + fs_query_loss_range, loss accumulated in double), on tiny configs
 * covering every position embedding, attention-only and MLP blocks, depth, heads,
 * qkv_bias, no_norm, P = 1, 2, 4, clamps (stop-gradient) and weight decay. */
#include <criterion/criterion.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fewshot/cache.h"
#include "fewshot/forward.h"
#include "model/leaves.h"
#include "kernels/kernels.h"
#include "train/optim.h"
#include "fewshot/seqio.h"
#include "train/trainer.h"
#include "helpers.h"
#include "base/fileio.h"

/* ================================================================ whole-model checks */

typedef struct {
    const char *name;
    fs_pos_kind pos;
    double mlp_ratio;
    int depth, heads;
    bool qkv_bias, no_norm;
    int P, B, threads;
    double rope_base;
} model_case;

/* One model, inputs and an evaluator of the loss by finite differences. */
typedef struct {
    fs_model m;
    fs_acts eval;            /* forward for finite differences */
    const fs_clamp_set *clamps;
    int B;
    double wd;
} fd_model;

/* wd * sum of Frobenius norms, in double (docs/model.md). */
static double wd_term(const fs_model *m, double wd)
{
    if (wd == 0)
        return 0;
    double total = 0;
    for (int i = 0; i < m->layout.count; i++) {
        const fs_param_desc *t = &m->layout.tensors[i];
        double ss = 0;
        for (size_t j = 0; j < t->numel; j++)
            ss += (double)m->params[t->offset + j] * m->params[t->offset + j];
        total += sqrt(ss);
    }
    return wd * total;
}

static double model_loss(fd_model *f)
{
    fs_forward_range(&f->m, &f->eval, f->clamps, 0, f->B);
    return fs_query_loss_range(&f->eval, 0, f->B, f->B) + wd_term(&f->m, f->wd);
}

/* 4th-order central difference of the loss with respect to params[i]. */
static double model_fd(fd_model *f, size_t i, double h)
{
    float *p = &f->m.params[i], p0 = *p;
    double l[4];
    static const double k[4] = {-2, -1, 1, 2};
    for (int s = 0; s < 4; s++) {
        *p = (float)(p0 + k[s] * h);
        l[s] = model_loss(f);
    }
    *p = p0;
    return (8 * (l[2] - l[1]) - (l[3] - l[0])) / (12 * h);
}

/* When one step size disagrees, a step-size sweep: the float forward's rounding noise
 * (~1e-7 of the activations, divided by h) dominates small steps, curvature (O(h^4))
 * large ones. Take the adjacent pair of steps that agree best; their mean is the
 * estimate and their difference its error. A wrong gradient (sign, factor, missing
 * term) disagrees with every step size by far more than that error. */
static double model_fd_sweep(fd_model *f, size_t i, double *err_est)
{
    static const double hs[] = {1.6e-2, 8e-3, 4e-3, 2e-3, 1e-3};
    double fd[5], best = 0;
    *err_est = INFINITY;
    for (int k = 0; k < 5; k++) {
        fd[k] = model_fd(f, i, hs[k]);
        if (k > 0 && fabs(fd[k] - fd[k - 1]) < *err_est) {
            *err_est = fabs(fd[k] - fd[k - 1]);
            best = 0.5 * (fd[k] + fd[k - 1]);
        }
    }
    return best;
}

static void random_inputs(th_rng *r, const fs_model_config *cfg, int P, int B, float **ex, int **lab)
{
    *ex = malloc(sizeof(float) * (size_t)B * P * cfg->input_dim);
    *lab = malloc(sizeof(int) * (size_t)B * P);
    for (int i = 0; i < B * P * cfg->input_dim; i++)
        (*ex)[i] = (float)th_rng_sym(r, 1.0);
    for (int i = 0; i < B * P; i++)
        (*lab)[i] = th_rng_int(r, cfg->num_classes);
}

static fs_model_config case_config(const model_case *c)
{
    fs_model_config cfg;
    th_tiny_config(&cfg);
    cfg.pos_embedding = c->pos;
    cfg.mlp_ratio = c->mlp_ratio;
    cfg.depth = c->depth;
    cfg.num_heads = c->heads;
    cfg.qkv_bias = c->qkv_bias;
    cfg.no_norm = c->no_norm;
    if (c->rope_base > 0)
        cfg.rope_base = c->rope_base;
    return cfg;
}

/* Clamp builder: called with the trainer's acts after one unclamped forward. */
typedef void (*clamp_setup)(fs_clamp_set *cs, const fs_acts *a, th_rng *r, int B);

typedef struct {
    int checked, tensors, swept; /* swept: elements that needed the step-size sweep */
    double max_err;        /* max |analytic - fd| / tolerance (<= 1 passes) */
    float *grads;          /* analytic gradient (layout.total), caller frees */
} fd_report;

/* The full check. Every tensor gets up to `per_tensor` random elements checked. */
static fd_report run_model_check(const model_case *c, uint64_t seed, double wd, clamp_setup setup, int per_tensor)
{
    fs_model_config cfg = case_config(c);
    th_rng rng = {seed};
    fd_model f = {.B = c->B, .wd = wd};
    th_random_model(&f.m, &cfg, seed, 0.2);
    float *ex;
    int *lab;
    random_inputs(&rng, &cfg, c->P, c->B, &ex, &lab);

    fs_error err = {{0}};
    fs_trainer t;
    fs_optim_config oc = {.kind = FS_OPT_ADAM, .lr = 1e-3, .b1 = 0.9, .b2 = 0.999, .eps = 1e-8, .weight_decay = wd};
    cr_assert_eq(fs_trainer_init(&t, &f.m, c->P, c->B, c->threads, &oc, &err), 0, "%s", err.msg);
    fs_acts_set_inputs(&t.acts, ex, lab, 0, c->B);
    cr_assert_eq(fs_acts_create(&f.eval, &cfg, c->P, c->B, &err), 0, "%s", err.msg);
    fs_acts_set_inputs(&f.eval, ex, lab, 0, c->B);

    fs_clamp_set cs = {0};
    if (setup) {
        fs_forward_range(&f.m, &f.eval, NULL, 0, c->B);
        fs_clamp_set_init(&cs, &f.eval);
        setup(&cs, &f.eval, &rng, c->B);
        t.clamps = &cs;
        f.clamps = &cs;
    }

    double loss = fs_trainer_grad(&t, c->B);
    double loss_fd_path = model_loss(&f);
    cr_assert(th_close(loss, loss_fd_path, 1e-6, 1e-6), "%s: trainer loss %.9g vs forward loss %.9g", c->name, loss,
              loss_fd_path);
    cr_assert(isfinite(loss) && loss > 0, "%s: loss %g", c->name, loss);

    fd_report rep = {0};
    rep.grads = malloc(sizeof(float) * f.m.layout.total);
    memcpy(rep.grads, t.grads, sizeof(float) * f.m.layout.total);
    double scale = 0;
    for (size_t i = 0; i < f.m.layout.total; i++)
        scale = fmax(scale, fabs(rep.grads[i]));
    cr_assert_gt(scale, 1e-4, "%s: gradient vanishes (max %g); the check would be vacuous", c->name, scale);

    /* Loss noise of the float forward (~1e-7) over h gives ~1e-4; truncation is O(h^4).
     * A wrong factor (x2, sign, a missing term) is off by 10-100% and fails. */
    const double h = 4e-3, rtol = 2e-3, atol = 1e-4 + 1e-4 * scale;
    for (int ti = 0; ti < f.m.layout.count; ti++) {
        const fs_param_desc *pd = &f.m.layout.tensors[ti];
        int n = (int)pd->numel < per_tensor ? (int)pd->numel : per_tensor;
        rep.tensors++;
        for (int s = 0; s < n; s++) {
            size_t j = (int)pd->numel <= per_tensor ? (size_t)s : (size_t)th_rng_int(&rng, (int)pd->numel);
            size_t at = pd->offset + j;
            double fd = model_fd(&f, at, h), an = rep.grads[at], fd_err = 0;
            if (!th_close(an, fd, rtol, atol)) {
                fd = model_fd_sweep(&f, at, &fd_err);
                rep.swept++;
            }
            double tol = atol + 2 * fd_err + rtol * fmax(fabs(an), fabs(fd));
            rep.max_err = fmax(rep.max_err, fabs(an - fd) / tol);
            rep.checked++;
            cr_assert(fabs(an - fd) <= tol,
                      "%s: %s[%zu]: analytic %.7g vs finite difference %.7g +- %.2g (loss %.6g, grad scale %.3g)",
                      c->name, pd->name, j, an, fd, fd_err, loss, scale);
        }
    }
    fs_clamp_set_free(&cs);
    fs_acts_free(&f.eval);
    fs_trainer_free(&t);
    fs_model_free(&f.m);
    free(ex);
    free(lab);
    return rep;
}

static void model_check(const model_case *c, uint64_t seed)
{
    fd_report r = run_model_check(c, seed, 0, NULL, 24);
    cr_log_info("fdcheck %s: %d elements of %d tensors (%d swept), max error/tolerance %.2f", c->name, r.checked,
                r.tensors, r.swept, r.max_err);
    free(r.grads);
}

/* A seed from the test's name (FNV-1a), stable under edits of this file. */
static uint64_t name_seed(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    while (*s)
        h = (h ^ (unsigned char)*s++) * 1099511628211ULL;
    return h % 1000003;
}

#define MODEL_TEST(tname, ...)                                 \
    Test(fdcheck, model_##tname)                               \
    {                                                          \
        model_case c = {.name = #tname, __VA_ARGS__};          \
        model_check(&c, name_seed(#tname));                    \
    }

/* position embeddings x mlp_ratio x depth x heads x P */
MODEL_TEST(rope_mlp_d1_h2_p4, .pos = FS_POS_ROPE, .mlp_ratio = 2, .depth = 1, .heads = 2, .P = 4, .B = 2, .threads = 1)
MODEL_TEST(rope_attn_d1_h1_p2, .pos = FS_POS_ROPE, .mlp_ratio = 0, .depth = 1, .heads = 1, .P = 2, .B = 2, .threads = 1)
MODEL_TEST(rope_mlp_d3_h2_p4_threads, .pos = FS_POS_ROPE, .mlp_ratio = 2, .depth = 3, .heads = 2, .P = 4, .B = 3,
           .threads = 2)
MODEL_TEST(rope_attn_d3_h2_p4, .pos = FS_POS_ROPE, .mlp_ratio = 0, .depth = 3, .heads = 2, .P = 4, .B = 2, .threads = 1)
MODEL_TEST(rope_base10_mlp_d1_h1_p4, .pos = FS_POS_ROPE, .mlp_ratio = 2, .depth = 1, .heads = 1, .P = 4, .B = 2,
           .threads = 1, .rope_base = 10)
MODEL_TEST(rope_p1, .pos = FS_POS_ROPE, .mlp_ratio = 2, .depth = 2, .heads = 2, .P = 1, .B = 2, .threads = 1)
MODEL_TEST(ape_mlp_d1_h2_p4, .pos = FS_POS_APE, .mlp_ratio = 2, .depth = 1, .heads = 2, .P = 4, .B = 2, .threads = 1)
MODEL_TEST(ape_attn_d3_h1_p2, .pos = FS_POS_APE, .mlp_ratio = 0, .depth = 3, .heads = 1, .P = 2, .B = 2, .threads = 1)
MODEL_TEST(ape_mlp_d3_h2_p4_threads, .pos = FS_POS_APE, .mlp_ratio = 2, .depth = 3, .heads = 2, .P = 4, .B = 4,
           .threads = 2)
MODEL_TEST(ape_p1, .pos = FS_POS_APE, .mlp_ratio = 0, .depth = 1, .heads = 2, .P = 1, .B = 3, .threads = 1)
MODEL_TEST(sin_mlp_d1_h2_p4, .pos = FS_POS_SINUSOIDAL, .mlp_ratio = 2, .depth = 1, .heads = 2, .P = 4, .B = 2,
           .threads = 1)
MODEL_TEST(sin_attn_d3_h2_p2, .pos = FS_POS_SINUSOIDAL, .mlp_ratio = 0, .depth = 3, .heads = 2, .P = 2, .B = 2,
           .threads = 1)
MODEL_TEST(sin_mlp_d3_h1_p1, .pos = FS_POS_SINUSOIDAL, .mlp_ratio = 2, .depth = 3, .heads = 1, .P = 1, .B = 2,
           .threads = 1)
/* qkv_bias, no_norm and a non-integer mlp_ratio (hidden = (int)(8 * 1.5) = 12) */
MODEL_TEST(qkv_bias_rope_d2_p4, .pos = FS_POS_ROPE, .mlp_ratio = 2, .depth = 2, .heads = 2, .qkv_bias = true, .P = 4,
           .B = 2, .threads = 1)
MODEL_TEST(qkv_bias_ape_attn_d1_p2, .pos = FS_POS_APE, .mlp_ratio = 0, .depth = 1, .heads = 2, .qkv_bias = true,
           .P = 2, .B = 2, .threads = 1)
MODEL_TEST(no_norm_rope_d2_p4, .pos = FS_POS_ROPE, .mlp_ratio = 2, .depth = 2, .heads = 2, .no_norm = true, .P = 4,
           .B = 2, .threads = 1)
MODEL_TEST(no_norm_sin_attn_d3_p2, .pos = FS_POS_SINUSOIDAL, .mlp_ratio = 0, .depth = 3, .heads = 1, .no_norm = true,
           .P = 2, .B = 2, .threads = 1)
MODEL_TEST(no_norm_qkv_bias_ape_p4, .pos = FS_POS_APE, .mlp_ratio = 2, .depth = 1, .heads = 2, .no_norm = true,
           .qkv_bias = true, .P = 4, .B = 2, .threads = 1)
MODEL_TEST(mlp_ratio_1_5_rope_p4, .pos = FS_POS_ROPE, .mlp_ratio = 1.5, .depth = 2, .heads = 2, .P = 4, .B = 2,
           .threads = 1)

/* ---------------------------------------------------------------- clamps (stop-gradient, docs/cache.md) */

/* Random mask of density `dens` with the leaf's current values + noise as clamp values. */
static void clamp_random(fs_clamp_set *cs, const fs_acts *a, th_rng *r, int leaf, int batch, double dens, double noise)
{
    size_t n = a->leaves[leaf].numel * (size_t)(batch ? batch : 1);
    float *v = malloc(sizeof(float) * n);
    uint8_t *mk = malloc(n);
    const float *cur = fs_leaf_ptr(a, leaf, 0);
    for (size_t i = 0; i < n; i++) {
        v[i] = cur[i] + (float)th_rng_sym(r, noise);
        mk[i] = th_rng_uniform(r) < dens;
    }
    fs_clamp_set_leaf(cs, a, leaf, v, mk, batch);
    free(v);
    free(mk);
}

static void setup_attn_scores(fs_clamp_set *cs, const fs_acts *a, th_rng *r, int B)
{
    /* one clamp for every sequence; causal rows keep summing to anything: still smooth */
    clamp_random(cs, a, r, fs_block_leaf_id(0, B_ATTN_SCORES), 0, 0.4, 0.2);
}

static void setup_v(fs_clamp_set *cs, const fs_acts *a, th_rng *r, int B)
{
    clamp_random(cs, a, r, fs_block_leaf_id(1, B_V), B, 0.5, 0.5); /* per-sequence values */
}

/* Partial clamps at many points of the tree at once, shared and per-sequence. */
static void setup_many(fs_clamp_set *cs, const fs_acts *a, th_rng *r, int B)
{
    const fs_model_config *c = &a->cfg;
    static const int block_leaves[] = {B_X, B_NORM_INP, B_ATTN_X, B_QKV, B_PRE_ROPE_Q, B_PRE_ROPE_K, B_Q, B_K,
                                       B_ATTN_PRE_SOFTMAX, B_ATTN_POST_DROP, B_VALUES_PRE_PROJ, B_VALUES_POST_PROJ,
                                       B_ATTN_OUT, B_RESIDUAL_POST_ATTN, B_NORM_RESIDUAL_POST_ATTN, B_MLP, B_OUT};
    for (size_t i = 0; i < sizeof block_leaves / sizeof *block_leaves; i++)
        clamp_random(cs, a, r, fs_block_leaf_id((int)i % c->depth, block_leaves[i]), (i % 2) ? B : 0, 0.15, 0.3);
    static const int top[] = {L_EXAMPLE_EMBEDDING, L_ONEHOT_LABELS, L_LABEL_EMBEDDING, L_TOK_EMBEDDING,
                              L_POS_EMBEDDING, L_EMBEDDING, L_TRANSFORMER_X};
    for (size_t i = 0; i < sizeof top / sizeof *top; i++)
        if (!a->leaves[top[i]].is_null)
            clamp_random(cs, a, r, top[i], (i % 2) ? B : 0, 0.15, 0.3);
    static const int after[] = {L_PRE_UNEMBED, L_TRANSFORMER_OUT};
    for (size_t i = 0; i < sizeof after / sizeof *after; i++)
        clamp_random(cs, a, r, fs_top_after(c, after[i]), (i % 2) ? B : 0, 0.1, 0.3);
    /* logits: only the query's row carries a loss gradient; clamp one of its logits */
    static const int logits[] = {L_UNEMBEDDING, L_OUT};
    for (int i = 0; i < 2; i++) {
        int leaf = fs_top_after(c, logits[i]);
        size_t n = a->leaves[leaf].numel * (size_t)B;
        size_t query_row = (size_t)(logits[i] == L_OUT ? a->P - 1 : 2 * (a->P - 1)) * c->num_classes;
        float *v = malloc(sizeof(float) * n);
        uint8_t *mk = calloc(n, 1);
        memcpy(v, fs_leaf_ptr(a, leaf, 0), sizeof(float) * n);
        for (int b = 0; b < B; b++) {
            size_t at = (size_t)b * a->leaves[leaf].numel + query_row + (size_t)((b + i) % c->num_classes);
            mk[at] = 1;
            v[at] += 0.5f;
        }
        fs_clamp_set_leaf(cs, a, leaf, v, mk, B);
        free(v);
        free(mk);
    }
}

/* The query's logits stay free (else the loss is constant), everything before the
 * final block is frozen: only the last block and the head can get gradients. */
static void setup_full_block_input(fs_clamp_set *cs, const fs_acts *a, th_rng *r, int B)
{
    clamp_random(cs, a, r, fs_block_leaf_id(a->cfg.depth - 1, B_X), 0, 2.0, 0.3); /* density 2: all */
}

static fd_report clamp_check(const model_case *c, clamp_setup setup, uint64_t seed)
{
    fd_report r = run_model_check(c, seed, 0, setup, 16);
    cr_log_info("fdcheck %s: %d elements (%d swept), max error/tolerance %.2f", c->name, r.checked, r.swept, r.max_err);
    /* the clamp must change the gradient (else this tests nothing) */
    fd_report free_run = run_model_check(c, seed, 0, NULL, 0);
    fs_model_config cfg = case_config(c);
    fs_model m;
    th_random_model(&m, &cfg, seed, 0.2);
    double diff = 0;
    for (size_t i = 0; i < m.layout.total; i++)
        diff = fmax(diff, fabs(r.grads[i] - free_run.grads[i]));
    cr_assert_gt(diff, 1e-5, "%s: the clamp did not change the gradient", c->name);
    fs_model_free(&m);
    free(free_run.grads);
    return r;
}

Test(fdcheck, clamp_attn_scores)
{
    model_case c = {.name = "clamp_attn_scores", .pos = FS_POS_ROPE, .mlp_ratio = 2, .depth = 2, .heads = 2, .P = 4,
                    .B = 2, .threads = 1};
    free(clamp_check(&c, setup_attn_scores, 101).grads);
}

Test(fdcheck, clamp_v_per_sequence)
{
    model_case c = {.name = "clamp_v", .pos = FS_POS_ROPE, .mlp_ratio = 0, .depth = 2, .heads = 2, .P = 3, .B = 3,
                    .threads = 2};
    free(clamp_check(&c, setup_v, 102).grads);
}

Test(fdcheck, clamp_many_leaves_rope)
{
    model_case c = {.name = "clamp_many_rope", .pos = FS_POS_ROPE, .mlp_ratio = 2, .depth = 2, .heads = 2, .P = 4,
                    .B = 2, .threads = 1};
    free(clamp_check(&c, setup_many, 103).grads);
}

Test(fdcheck, clamp_many_leaves_ape_attn_only)
{
    model_case c = {.name = "clamp_many_ape", .pos = FS_POS_APE, .mlp_ratio = 0, .depth = 2, .heads = 2, .P = 3,
                    .B = 2, .threads = 1};
    free(clamp_check(&c, setup_many, 104).grads);
}

Test(fdcheck, clamp_whole_leaf_blocks_upstream)
{
    model_case c = {.name = "clamp_block_input", .pos = FS_POS_SINUSOIDAL, .mlp_ratio = 2, .depth = 2, .heads = 2,
                    .P = 3, .B = 2, .threads = 1};
    fd_report r = run_model_check(&c, 105, 0, setup_full_block_input, 8);
    fs_model_config cfg = case_config(&c);
    fs_model m;
    th_random_model(&m, &cfg, 105, 0.2);
    /* everything upstream of the clamped input of the last block gets exactly zero */
    static const char *const upstream[] = {"example_embed.weight", "example_embed.bias", "label_embed.weight",
                                           "transformer.blocks.0.attn.qkv.weight", "transformer.blocks.0.mlp.fc2.bias"};
    for (size_t i = 0; i < sizeof upstream / sizeof *upstream; i++) {
        const fs_param_desc *pd = fs_param_find(&m.layout, upstream[i]);
        cr_assert_not_null(pd, "%s", upstream[i]);
        for (size_t j = 0; j < pd->numel; j++)
            cr_assert_eq(r.grads[pd->offset + j], 0.0f, "%s[%zu] should get no gradient through the clamp",
                         upstream[i], j);
    }
    const fs_param_desc *last = fs_param_find(&m.layout, "transformer.blocks.1.attn.qkv.weight");
    double mx = 0;
    for (size_t j = 0; j < last->numel; j++)
        mx = fmax(mx, fabs(r.grads[last->offset + j]));
    cr_assert_gt(mx, 0, "the last block still gets a gradient");
    fs_model_free(&m);
    free(r.grads);
}

/* ---------------------------------------------------------------- weight decay (docs/model.md) */

typedef struct {
    fs_model *m;
    double wd;
} wd_ctx;

Test(fdcheck, weight_decay_term)
{
    fs_model_config cfg;
    th_tiny_config(&cfg);
    cfg.depth = 2;
    fs_model m;
    th_random_model(&m, &cfg, 7, 0.2);
    /* a zero tensor: its norm is 0 and it contributes no gradient */
    const fs_param_desc *zero_t = fs_param_find(&m.layout, "transformer.blocks.1.mlp.fc1.bias");
    cr_assert_not_null(zero_t);
    memset(m.params + zero_t->offset, 0, sizeof(float) * zero_t->numel);

    const double wd = 0.3;
    float *g = fs_alloc(sizeof(float) * m.layout.total);
    for (size_t i = 0; i < m.layout.total; i++)
        g[i] = 0.125f; /* accumulates into existing gradients */
    double term = fs_weight_decay(&m, g, wd);
    cr_assert(th_close(term, wd_term(&m, wd), 1e-9, 1e-12), "wd term %.12g vs %.12g", term, wd_term(&m, wd));
    for (size_t i = 0; i < m.layout.total; i++)
        g[i] -= 0.125f;
    for (size_t j = 0; j < zero_t->numel; j++)
        cr_assert_eq(g[zero_t->offset + j], 0.0f, "zero tensor gets no weight-decay gradient");

    th_rng rng = {8};
    for (int ti = 0; ti < m.layout.count; ti++) {
        const fs_param_desc *pd = &m.layout.tensors[ti];
        for (int s = 0; s < 6; s++) {
            size_t at = pd->offset + (size_t)th_rng_int(&rng, (int)pd->numel);
            float p0 = m.params[at];
            double h = 1e-3;
            m.params[at] = (float)(p0 + h);
            double hp = (double)m.params[at] - p0, lp = wd_term(&m, wd);
            m.params[at] = (float)(p0 - h);
            double hm = p0 - (double)m.params[at], lm = wd_term(&m, wd);
            m.params[at] = p0;
            double fd = (lp - lm) / (hp + hm);
            cr_assert(th_close(g[at], fd, 1e-3, 1e-6), "%s: wd gradient %.9g vs finite difference %.9g", pd->name,
                      g[at], fd);
        }
    }
    cr_assert_eq(fs_weight_decay(&m, g, 0.0), 0.0, "wd = 0 contributes nothing");
    free(g);
    fs_model_free(&m);
}

Test(fdcheck, model_with_weight_decay)
{
    model_case c = {.name = "weight_decay", .pos = FS_POS_APE, .mlp_ratio = 2, .depth = 2, .heads = 2, .P = 3, .B = 3,
                    .threads = 2};
    fd_report with = run_model_check(&c, 201, 0.05, NULL, 16);
    fd_report without = run_model_check(&c, 201, 0, NULL, 0);
    /* the weight-decay part is exactly fs_weight_decay's gradient */
    fs_model_config cfg = case_config(&c);
    fs_model m;
    th_random_model(&m, &cfg, 201, 0.2);
    float *g = fs_alloc(sizeof(float) * m.layout.total);
    fs_weight_decay(&m, g, 0.05);
    for (size_t i = 0; i < m.layout.total; i++)
        cr_assert(th_close(with.grads[i] - without.grads[i], g[i], 1e-3, 1e-6), "param %zu: wd part %.9g vs %.9g", i,
                  with.grads[i] - without.grads[i], g[i]);
    free(g);
    fs_model_free(&m);
    free(with.grads);
    free(without.grads);
}

/* ================================================================ overfitting (suite "train") */

#include <cjson/cJSON.h>

/* A tiny model trained with `fewshot steps` (Adam, lr 1e-2) on one batch drives the
 * query loss below 0.01: the whole pipeline (CLI, trainer, backward, Adam) learns. */
Test(train, overfit_one_batch_with_fewshot_steps)
{
    char dir[128];
    th_tmpdir(dir, sizeof dir, "overfit");
    const char *cfg = th_path(dir, "config.json"), *model = th_path(dir, "init.safetensors");
    const char *batch = th_path(dir, "batch.json"), *out = th_path(dir, "trained.safetensors");
    th_write_text(cfg, "{\"model\": {\"input_dim\": 6, \"num_classes\": 3, \"d_model\": 16, \"num_heads\": 2,\n"
                       "           \"depth\": 1, \"mlp_ratio\": 2, \"pos_embedding\": \"rope\", \"init_seed\": 3},\n"
                       " \"train\": {\"optimizer\": \"adam\", \"lr\": 0.01, \"weight_decay\": 0}}\n");
    th_run_result r;
    th_run_ok("init --config %s -o %s", cfg, model);

    /* 4 sequences of 3 pairs with random examples and labels */
    th_rng rng = {42};
    cJSON *root = cJSON_CreateObject(), *ex = cJSON_AddArrayToObject(root, "examples"),
          *lab = cJSON_AddArrayToObject(root, "labels");
    for (int b = 0; b < 4; b++) {
        cJSON *seq = cJSON_CreateArray(), *ls = cJSON_CreateArray();
        for (int p = 0; p < 3; p++) {
            double v[6];
            for (int i = 0; i < 6; i++)
                v[i] = th_rng_sym(&rng, 1.0);
            cJSON_AddItemToArray(seq, cJSON_CreateDoubleArray(v, 6));
            cJSON_AddItemToArray(ls, cJSON_CreateNumber(th_rng_int(&rng, 3)));
        }
        cJSON_AddItemToArray(ex, seq);
        cJSON_AddItemToArray(lab, ls);
    }
    char *text = cJSON_Print(root);
    th_write_text(batch, text);
    free(text);
    cJSON_Delete(root);

    const int steps = 300;
    th_run(&r, "steps --config %s --model %s --input %s --steps %d --threads 2 -o %s", cfg, model, batch, steps, out);
    cr_assert(r.exited && r.code == 0, "fewshot steps: %s", th_describe(&r));
    cJSON *res = cJSON_Parse(r.out);
    cr_assert_not_null(res, "stdout is not JSON: %.200s", r.out);
    const cJSON *losses = cJSON_GetObjectItemCaseSensitive(res, "losses");
    cr_assert(cJSON_IsArray(losses) && cJSON_GetArraySize(losses) == steps, "expected %d losses: %.200s", steps,
              r.out);
    double first = cJSON_GetArrayItem(losses, 0)->valuedouble;
    double last = cJSON_GetArrayItem(losses, steps - 1)->valuedouble;
    cr_assert_gt(first, 0.3, "an untrained model should not already fit (first loss %g)", first);
    cr_assert_lt(last, 0.01, "loss after %d Adam steps: %g (first %g)", steps, last, first);
    cJSON_Delete(res);
    th_run_free(&r);

    /* the saved parameters are the trained ones: their loss is below the last reported one */
    th_run(&r, "grad --config %s --model %s --input %s -o %s", cfg, out, batch, th_path(dir, "g.safetensors"));
    cr_assert(r.exited && r.code == 0, "fewshot grad: %s", th_describe(&r));
    res = cJSON_Parse(r.out);
    const cJSON *loss = cJSON_GetObjectItemCaseSensitive(res, "loss");
    cr_assert(cJSON_IsNumber(loss) && loss->valuedouble < 0.01, "loss of the saved model: %.200s", r.out);
    cJSON_Delete(res);
    th_run_free(&r);
    th_rmtree(dir);
}
