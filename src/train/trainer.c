/* The training step in one OpenMP parallel region per step:
 *   1. forward + loss + backward of its own sequences into its own gradient buffer (the
 *      forward's matrix kernel reads the weights as stored: nothing to refresh); barrier
 *   2. each thread sums the thread gradients over its slice of the parameters, in thread
 *      order (deterministic for a fixed thread count), and the squares of that slice,
 *      and applies the optimizer to the slice -- in the same pass unless the update needs
 *      the global norm or whole tensors (then with a barrier in between).
 * Nothing is allocated after fs_trainer_init. The optimizer arithmetic is exactly
 * fs_optim_update's (fs_adam_update), so a step equals grad + fs_optim_update bit for bit
 * except the double sum of squares behind the reported grad norm (slice order). */
#include "train/trainer.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "fewshot/forward.h"
#include "kernels/kernels.h"
#include "base/fileio.h"
#include "interp/passes.h"
#include "model/forward_gemm.h"

int fs_trainer_init(fs_trainer *t, fs_model *m, int P, int B, int threads, const fs_optim_config *oc,
                    fs_error *err)
{
    memset(t, 0, sizeof *t);
    t->model = m;
    if (fs_acts_create(&t->acts, &m->cfg, P, B, err))
        return -1;
    t->grad_acts = fs_alloc(fs_backward_scratch_floats(&t->acts) * sizeof(float));
    size_t gelu_floats = fs_gelu_grad_floats(&t->acts);
    if (gelu_floats && !(t->gelu_grad = fs_alloc(gelu_floats * sizeof(float)))) {
        fs_trainer_free(t);
        return fs_fail_alloc(err, "GELU derivatives", gelu_floats * sizeof(float));
    }
    t->threads = threads > 0 ? threads : omp_get_max_threads();
    if (t->threads > B)
        t->threads = B;
    if (t->threads < 1)
        t->threads = 1;
    t->thread_grads = calloc((size_t)t->threads, sizeof *t->thread_grads);
    t->thread_ptrs = calloc((size_t)t->threads, sizeof *t->thread_ptrs);
    t->thread_sums = fs_alloc((size_t)t->threads * sizeof *t->thread_sums);
    if (!t->grad_acts || !t->thread_sums || !t->thread_grads || !t->thread_ptrs) {
        size_t bytes = fs_backward_scratch_floats(&t->acts) * sizeof(float);
        fs_trainer_free(t);
        return fs_fail_alloc(err, "trainer scratch", bytes);
    }
    for (int i = 0; i < t->threads; i++) {
        t->thread_grads[i] = fs_alloc(m->layout.total * sizeof(float));
        if (!t->thread_grads[i]) {
            fs_trainer_free(t);
            return fs_fail_alloc(err, "per-thread gradients", m->layout.total * sizeof(float));
        }
        t->thread_ptrs[i] = fs_param_bind(&m->cfg, &m->layout, t->thread_grads[i]);
    }
    t->grads = fs_alloc(m->layout.total * sizeof(float));
    t->optim = *oc;
    if (!t->grads) {
        fs_trainer_free(t);
        return fs_fail_alloc(err, "gradients", m->layout.total * sizeof(float));
    }
    if (fs_optim_state_init(&t->state, m, err)) {
        fs_trainer_free(t);
        return -1;
    }
    return 0;
}

static void free_spares(fs_trainer *t)
{
    for (int i = 0; t->spare_grads && i < t->threads; i++)
        free(t->spare_grads[i]);
    free(t->spare_grads);
    free(t->spare_ptrs);
    t->spare_grads = NULL;
    t->spare_ptrs = NULL;
}

int fs_trainer_hold(fs_trainer *t, fs_held_clamps *hc, fs_error *err)
{
    t->held = hc;
    if (hc && fs_held_grads(hc, t->threads, err)) {
        t->held = NULL;
        return -1;
    }
    if (!hc || !fs_held_has_backward(hc) || t->spare_grads)
        return 0;
    t->spare_grads = calloc((size_t)t->threads, sizeof *t->spare_grads);
    t->spare_ptrs = calloc((size_t)t->threads, sizeof *t->spare_ptrs);
    for (int i = 0; t->spare_grads && t->spare_ptrs && i < t->threads; i++) {
        if (!(t->spare_grads[i] = fs_alloc(t->model->layout.total * sizeof(float))))
            break;
        t->spare_ptrs[i] = fs_param_bind(&t->model->cfg, &t->model->layout, t->spare_grads[i]);
    }
    if (!t->spare_grads || !t->spare_ptrs || !t->spare_grads[t->threads - 1]) {
        free_spares(t);
        t->held = NULL;
        return fs_fail(err, "trainer: out of memory");
    }
    return 0;
}

void fs_trainer_free(fs_trainer *t)
{
    if (!t->model)
        return;
    free_spares(t);
    for (int i = 0; t->thread_grads && i < t->threads; i++)
        free(t->thread_grads[i]);
    free(t->thread_grads);
    free(t->thread_ptrs);
    free(t->thread_sums);
    free(t->grads);
    free(t->grad_acts);
    free(t->gelu_grad);
    fs_optim_state_free(&t->state);
    fs_acts_free(&t->acts);
    memset(t, 0, sizeof *t);
}

/* Floats per block of the fused reduce + update pass (stays in L1). */
enum { FUSE_BLOCK = 2048 };

/* [lo, hi) of part `id` of n, in whole 16-float (64-byte) blocks */
static void slice(size_t total, int id, int n, size_t *lo, size_t *hi)
{
    size_t blocks = (total + 15) / 16;
    *lo = blocks * (size_t)id / (size_t)n * 16;
    *hi = blocks * (size_t)(id + 1) / (size_t)n * 16;
    if (*hi > total)
        *hi = total;
    if (*lo > *hi)
        *lo = *hi;
}

/* grads[lo, hi) = sum over threads (in thread order) */
static void reduce_slice(fs_trainer *t, int n, size_t lo, size_t hi)
{
    fs_sum_rows(t->grads + lo, (const float *const *)t->thread_grads, n, lo, hi - lo);
}

/* The scalars of fs_optim_update for this step. */
typedef struct {
    bool sgd;
    float lr, b1, b2, eps, bc1, bc2;
} update_params;

static update_params update_for_step(const fs_optim_config *c, int64_t done)
{
    double lr = fs_optim_lr(c, done);
    int64_t step = done + 1;
    return (update_params){.sgd = c->kind == FS_OPT_SGD, .lr = (float)lr, .b1 = (float)c->b1, .b2 = (float)c->b2,
                           .eps = (float)c->eps, .bc1 = (float)(1.0 - pow(c->b1, (double)step)),
                           .bc2 = (float)(1.0 - pow(c->b2, (double)step))};
}

/* fs_optim_update's arithmetic on [lo, hi) (clip: warmup_decay's global-norm factor). */
static void optimizer_slice(fs_trainer *t, const update_params *u, size_t lo, size_t hi, float clip)
{
    float *p = t->model->params, *g = t->grads;
    if (u->sgd) {
        for (size_t i = lo; i < hi; i++)
            p[i] -= u->lr * g[i];
        return;
    }
    fs_adam_update(p + lo, t->state.m + lo, t->state.v + lo, g + lo, hi - lo, u->b1, u->b2, u->eps, u->bc1, u->bc2,
                   u->lr, clip);
}

/* Forward, backward and reduction; with `update`, also the optimizer step. Returns the
 * loss; *gnorm gets the gradient norm when updating. */
static double run_step(fs_trainer *t, int nseq, bool update, double *gnorm)
{
    fs_model *m = t->model;
    size_t total = m->layout.total;
    int nt = t->threads < nseq ? t->threads : nseq;
    if (nt < 1)
        nt = 1;
    double wd = t->optim.weight_decay;
    /* Adam's update of an element needs only its gradient, so the reduction, the norm
     * and the update go in one pass -- unless the update depends on the global norm
     * (warmup_decay clips) or weight decay needs whole tensors first. */
    bool fused = update && wd == 0 && t->optim.kind != FS_OPT_WARMUP_DECAY;
    update_params up = update_for_step(&t->optim, t->state.step);
    double norm = 0;
    for (int k = 0; k < nt; k++)
        t->thread_sums[k].sumsq = 0;
#pragma omp parallel num_threads(nt)
    {
        int id = omp_get_thread_num(), n = omp_get_num_threads();
        int b0 = (int)((long)nseq * id / n), b1 = (int)((long)nseq * (id + 1) / n);
        if (t->fill)
            t->fill(t->fill_ctx, &t->acts, b0, b1, id);
        fs_forward_range_gemm(m, &t->acts, t->clamps, b0, b1, true, t->gelu_grad);
        fs_held_finish_range(t->held, &t->acts, b0, b1);
        t->thread_sums[id].loss = fs_query_loss_range(&t->acts, b0, b1, nseq);
        const fs_grad_links *links = t->held ? fs_held_links(t->held) : NULL;
        fs_held_backward_later(t->held, b0, b1, nseq, id);
        fs_backward_range_links(m, &t->acts, t->clamps, links, t->grad_acts, t->gelu_grad, &t->thread_ptrs[id], b0, b1,
                                nseq);
        if (links && t->spare_grads)
            fs_held_backward_range(t->held, m, t->grad_acts, t->spare_grads[id], &t->spare_ptrs[id],
                                   t->thread_grads[id], total, b0, b1, nseq);
#pragma omp barrier
        size_t lo, hi;
        slice(total, id, n, &lo, &hi);
        if (fused) { /* Adam or cosine without weight decay: one pass, block by block */
            for (size_t c0 = lo; c0 < hi; c0 += FUSE_BLOCK) {
                size_t c1 = hi - c0 < FUSE_BLOCK ? hi : c0 + FUSE_BLOCK;
                reduce_slice(t, n, c0, c1);
                /* the norm is only reported here: float lanes are precise enough */
                t->thread_sums[id].sumsq += fs_sum_squares_blocks(t->grads + c0, c1 - c0);
                optimizer_slice(t, &up, c0, c1, 1.f);
            }
        } else {
            reduce_slice(t, n, lo, hi);
        }
        if (update && !fused) {
            if (wd != 0) { /* the weight-decay term needs every tensor whole */
#pragma omp barrier
#pragma omp single
                t->thread_sums[0].decay = fs_weight_decay(m, t->grads, wd);
            }
            t->thread_sums[id].sumsq = fs_sum_squares(t->grads + lo, hi - lo);
#pragma omp barrier
            double ss = 0;
            for (int k = 0; k < n; k++)
                ss += t->thread_sums[k].sumsq;
            float clip = 1.f;
            if (t->optim.kind == FS_OPT_WARMUP_DECAY && sqrt(ss) > 5.0) /* optax.clip_by_global_norm(5) */
                clip = (float)(5.0 / sqrt(ss));
            optimizer_slice(t, &up, lo, hi, clip);
        }
    }
    if (update) {
        double ss = 0;
        for (int k = 0; k < nt; k++)
            ss += t->thread_sums[k].sumsq;
        norm = sqrt(ss);
    }
    double loss = 0;
    for (int k = 0; k < nt; k++)
        loss += t->thread_sums[k].loss;
    if (update) {
        if (wd != 0)
            loss += t->thread_sums[0].decay;
        t->state.step++;
    } else {
        loss += fs_weight_decay(m, t->grads, wd);
    }
    if (gnorm)
        *gnorm = norm;
    return loss;
}

double fs_trainer_grad(fs_trainer *t, int nseq) { return run_step(t, nseq, false, NULL); }

double fs_trainer_step(fs_trainer *t, int nseq, double *grad_norm) { return run_step(t, nseq, true, grad_norm); }
