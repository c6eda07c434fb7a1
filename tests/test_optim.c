/* Optimizers and schedules (docs/model.md) against their definitions (optax). */
#include <criterion/criterion.h>
#include <math.h>

#include "train/optim.h"
#include "base/fileio.h"

static fs_optim_config cfg(fs_optimizer_kind kind)
{
    return (fs_optim_config){.kind = kind, .lr = 1e-3, .b1 = 0.9, .b2 = 0.999, .eps = 1e-8,
                             .warmup_steps = 100, .decay_steps = 1000};
}

Test(optim, schedules)
{
    fs_optim_config c = cfg(FS_OPT_ADAM);
    cr_assert_float_eq(fs_optim_lr(&c, 0), 1e-3, 1e-15);
    cr_assert_float_eq(fs_optim_lr(&c, 5000), 1e-3, 1e-15);
    /* warmup_decay: linear 1e-5 -> lr over warmup, then (lr - 1e-5) sqrt(1 - t/T) + 1e-5 */
    c = cfg(FS_OPT_WARMUP_DECAY);
    cr_assert_float_eq(fs_optim_lr(&c, 0), 1e-5, 1e-15);
    cr_assert_float_eq(fs_optim_lr(&c, 50), 1e-5 + 0.5 * (1e-3 - 1e-5), 1e-15);
    cr_assert_float_eq(fs_optim_lr(&c, 100), 1e-3, 1e-15);
    cr_assert_float_eq(fs_optim_lr(&c, 100 + 750), (1e-3 - 1e-5) * sqrt(0.25) + 1e-5, 1e-15);
    cr_assert_float_eq(fs_optim_lr(&c, 100 + 5000), 1e-5, 1e-15);
    /* cosine: linear 1e-6 -> lr over warmup, then lr * (1 + cos(pi t / (decay - warmup))) / 2 */
    c = cfg(FS_OPT_COSINE);
    cr_assert_float_eq(fs_optim_lr(&c, 0), 1e-6, 1e-15);
    cr_assert_float_eq(fs_optim_lr(&c, 100), 1e-3, 1e-15);
    cr_assert_float_eq(fs_optim_lr(&c, 100 + 450), 0.5e-3, 1e-12);
    cr_assert_float_eq(fs_optim_lr(&c, 1000), 0.0, 1e-15);
}

static void one_param_model(fs_model *m)
{
    fs_model_config mc;
    fs_model_config_default(&mc);
    mc.input_dim = 2, mc.num_classes = 2, mc.d_model = 2, mc.num_heads = 1, mc.depth = 1, mc.mlp_ratio = 0;
    fs_error err = {{0}};
    cr_assert_eq(fs_model_create(m, &mc, &err), 0, "%s", err.msg);
}

Test(optim, sgd_adam_and_clipping)
{
    fs_model m;
    one_param_model(&m);
    size_t n = m.layout.total;
    float *g = fs_alloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++)
        m.params[i] = 1.0f, g[i] = 0.0f;
    g[0] = 3.0f, g[1] = -4.0f; /* global norm 5 */

    fs_optim_config c = cfg(FS_OPT_SGD);
    fs_optim_state s;
    cr_assert_eq(fs_optim_state_init(&s, &m, NULL), 0);
    double norm = fs_optim_update(&c, &s, &m, g);
    cr_assert_float_eq(norm, 5.0, 1e-9);
    cr_assert_float_eq(m.params[0], 1.0f - 1e-3f * 3.0f, 1e-7);
    cr_assert_float_eq(m.params[1], 1.0f + 1e-3f * 4.0f, 1e-7);
    fs_optim_state_free(&s);

    /* Adam's first step moves each parameter by -lr * g / (|g| + eps) */
    for (size_t i = 0; i < n; i++)
        m.params[i] = 1.0f;
    c = cfg(FS_OPT_ADAM);
    cr_assert_eq(fs_optim_state_init(&s, &m, NULL), 0);
    fs_optim_update(&c, &s, &m, g);
    cr_assert_float_eq(m.params[0], 1.0f - 1e-3f * 3.0f / (3.0f + 1e-8f), 1e-6);
    cr_assert_float_eq(m.params[1], 1.0f + 1e-3f, 1e-6);
    cr_assert_float_eq(m.params[2], 1.0f, 1e-9);
    cr_assert_eq(s.step, 1);
    fs_optim_state_free(&s);

    /* warmup_decay clips the global norm to 5: gradients of norm 10 are halved first, so
     * Adam's first-step direction is unchanged but its moments hold the clipped values */
    g[0] = 6.0f, g[1] = -8.0f;
    c = cfg(FS_OPT_WARMUP_DECAY);
    cr_assert_eq(fs_optim_state_init(&s, &m, NULL), 0);
    norm = fs_optim_update(&c, &s, &m, g);
    cr_assert_float_eq(norm, 10.0, 1e-9, "the reported norm is the one before clipping");
    cr_assert_float_eq(s.m[0], (1.0f - 0.9f) * 3.0f, 1e-6, "first moment of the clipped gradient");
    cr_assert_float_eq(s.v[1], (1.0f - 0.999f) * 16.0f, 1e-7, "v %.9g", s.v[1]);
    fs_optim_state_free(&s);
    free(g);
    fs_model_free(&m);
}

Test(optim, weight_decay_is_sum_of_frobenius_norms)
{
    fs_model m;
    one_param_model(&m);
    float *g = fs_alloc(m.layout.total * sizeof(float));
    double want = 0;
    for (int t = 0; t < m.layout.count; t++) {
        const fs_param_desc *d = &m.layout.tensors[t];
        double ss = 0;
        for (size_t i = 0; i < d->numel; i++) {
            m.params[d->offset + i] = (float)(0.1 * (t + 1) * (i % 3));
            ss += (double)m.params[d->offset + i] * m.params[d->offset + i];
        }
        want += sqrt(ss);
    }
    double term = fs_weight_decay(&m, g, 0.5);
    cr_assert_float_eq(term, 0.5 * want, 1e-6);
    fs_model_free(&m);
    free(g);
}
