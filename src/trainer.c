#include "fewshot/trainer.h"

#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "fewshot/forward.h"

int fs_trainer_init(fs_trainer *t, fs_model *m, int P, int B, int threads, const fs_optim_config *oc,
                    fs_error *err)
{
    memset(t, 0, sizeof *t);
    t->model = m;
    if (fs_acts_create(&t->acts, &m->cfg, P, B, err))
        return -1;
    t->grad_acts = fs_alloc(t->acts.arena_floats * sizeof(float));
    t->threads = threads > 0 ? threads : omp_get_max_threads();
    if (t->threads > B)
        t->threads = B;
    t->thread_grads = calloc((size_t)t->threads, sizeof *t->thread_grads);
    t->thread_ptrs = calloc((size_t)t->threads, sizeof *t->thread_ptrs);
    for (int i = 0; i < t->threads; i++) {
        t->thread_grads[i] = fs_alloc(m->layout.total * sizeof(float));
        t->thread_ptrs[i] = fs_param_bind(&m->cfg, &m->layout, t->thread_grads[i]);
    }
    t->grads = fs_alloc(m->layout.total * sizeof(float));
    t->optim = *oc;
    fs_optim_state_init(&t->state, m);
    return 0;
}

void fs_trainer_free(fs_trainer *t)
{
    if (!t->model)
        return;
    for (int i = 0; i < t->threads; i++)
        free(t->thread_grads[i]);
    free(t->thread_grads);
    free(t->thread_ptrs);
    free(t->grads);
    free(t->grad_acts);
    fs_optim_state_free(&t->state);
    fs_acts_free(&t->acts);
    memset(t, 0, sizeof *t);
}

double fs_trainer_grad(fs_trainer *t, int nseq)
{
    const fs_model *m = t->model;
    size_t total = m->layout.total;
    int nt = t->threads < nseq ? t->threads : nseq;
    double loss = 0;
#pragma omp parallel num_threads(nt) reduction(+ : loss)
    {
        int id = omp_get_thread_num(), n = omp_get_num_threads();
        int b0 = (int)((long)nseq * id / n), b1 = (int)((long)nseq * (id + 1) / n);
        memset(t->thread_grads[id], 0, total * sizeof(float));
        fs_forward_range(m, &t->acts, t->clamps, b0, b1);
        loss += fs_query_loss_range(&t->acts, b0, b1, nseq);
        fs_backward_range(m, &t->acts, t->clamps, t->grad_acts, &t->thread_ptrs[id], b0, b1, nseq);
#pragma omp barrier
        /* reduce in thread order, each thread a slice of the parameters */
        size_t lo = total * (size_t)id / (size_t)n, hi = total * (size_t)(id + 1) / (size_t)n;
        for (size_t i = lo; i < hi; i++) {
            float s = t->thread_grads[0][i];
            for (int k = 1; k < n; k++)
                s += t->thread_grads[k][i];
            t->grads[i] = s;
        }
    }
    loss += fs_weight_decay(m, t->grads, t->optim.weight_decay);
    return loss;
}

double fs_trainer_step(fs_trainer *t, int nseq, double *grad_norm)
{
    double loss = fs_trainer_grad(t, nseq);
    double g = fs_optim_update(&t->optim, &t->state, t->model, t->grads);
    if (grad_norm)
        *grad_norm = g;
    return loss;
}
