#include "train/optim.h"

#include "kernels/kernels.h"
#include "base/fileio.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

fs_optim_config fs_optim_config_from_train(const fs_train_config *t)
{
    return (fs_optim_config){.kind = t->optimizer, .lr = t->lr, .b1 = 0.9, .b2 = 0.999, .eps = 1e-8,
                             .weight_decay = t->weight_decay, .warmup_steps = t->warmup_steps,
                             .decay_steps = t->decay_steps};
}

int fs_optim_state_init(fs_optim_state *s, const fs_model *m, fs_error *err)
{
    s->m = fs_alloc(m->layout.total * sizeof(float));
    s->v = fs_alloc(m->layout.total * sizeof(float));
    s->step = 0;
    if (!s->m || !s->v) {
        fs_optim_state_free(s);
        return fs_fail_alloc(err, "optimizer moments", 2 * m->layout.total * sizeof(float));
    }
    return 0;
}

void fs_optim_state_free(fs_optim_state *s)
{
    free(s->m);
    free(s->v);
    memset(s, 0, sizeof *s);
}

/* optax.polynomial_schedule: (init - end) * (1 - min(t, T)/T)^power + end */
static double polynomial(double init, double end, double power, int64_t T, int64_t t)
{
    if (T <= 0)
        return end;
    double frac = 1.0 - (double)(t < T ? t : T) / (double)T;
    return (init - end) * pow(frac, power) + end;
}

double fs_optim_lr(const fs_optim_config *c, int64_t step)
{
    switch (c->kind) {
    case FS_OPT_ADAM:
    case FS_OPT_SGD: return c->lr;
    case FS_OPT_WARMUP_DECAY:
        if (step < c->warmup_steps)
            return polynomial(1e-5, c->lr, 1.0, c->warmup_steps, step);
        return polynomial(c->lr, 1e-5, 0.5, c->decay_steps, step - c->warmup_steps);
    case FS_OPT_COSINE: {
        /* optax.warmup_cosine_decay_schedule(init 1e-6, peak lr, warmup, decay_steps, end 0) */
        if (step < c->warmup_steps)
            return polynomial(1e-6, c->lr, 1.0, c->warmup_steps, step);
        int64_t T = c->decay_steps - c->warmup_steps, t = step - c->warmup_steps;
        if (T <= 0)
            return 0.0;
        double frac = (double)(t < T ? t : T) / (double)T;
        return c->lr * 0.5 * (1.0 + cos(M_PI * frac));
    }
    }
    return c->lr;
}

double fs_weight_decay(const fs_model *m, float *grads, double wd)
{
    if (wd == 0)
        return 0;
    double total = 0;
    for (int i = 0; i < m->layout.count; i++) {
        const fs_param_desc *t = &m->layout.tensors[i];
        const float *x = m->params + t->offset;
        double ss = 0;
        for (size_t j = 0; j < t->numel; j++)
            ss += (double)x[j] * x[j];
        double norm = sqrt(ss);
        total += norm;
        if (norm > 0) /* d||W||/dW = W / ||W|| */
            for (size_t j = 0; j < t->numel; j++)
                grads[t->offset + j] += (float)(wd * x[j] / norm);
    }
    return wd * total;
}

double fs_optim_update(const fs_optim_config *c, fs_optim_state *s, fs_model *m, float *grads)
{
    size_t n = m->layout.total;
    double ss = 0;
    for (size_t i = 0; i < n; i++)
        ss += (double)grads[i] * grads[i];
    double gnorm = sqrt(ss);
    double lr = fs_optim_lr(c, s->step);
    float *p = m->params;
    if (c->kind == FS_OPT_SGD) {
        for (size_t i = 0; i < n; i++)
            p[i] -= (float)lr * grads[i];
        s->step++;
        return gnorm;
    }
    float clip = 1.f;
    if (c->kind == FS_OPT_WARMUP_DECAY && gnorm > 5.0) /* optax.clip_by_global_norm(5) */
        clip = (float)(5.0 / gnorm);
    int64_t t = s->step + 1;
    float bc1 = (float)(1.0 - pow(c->b1, (double)t)), bc2 = (float)(1.0 - pow(c->b2, (double)t));
    fs_adam_update(p, s->m, s->v, grads, n, (float)c->b1, (float)c->b2, (float)c->eps, bc1, bc2, (float)lr, clip);
    s->step++;
    return gnorm;
}
