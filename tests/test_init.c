/* Parameter initialisation (docs/model.md): seeded, reproducible, right distributions. */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "fewshot/model.h"

static void make(fs_model *m, int64_t seed, fs_pos_kind pos)
{
    fs_model_config c;
    fs_model_config_default(&c);
    c.init_seed = seed;
    c.pos_embedding = pos;
    fs_error err = {{0}};
    cr_assert_eq(fs_model_create(m, &c, &err), 0, "%s", err.msg);
    fs_model_init_params(m);
}

Test(init, same_seed_same_parameters_other_seed_differs)
{
    fs_model a, b, c;
    make(&a, 3, FS_POS_ROPE);
    make(&b, 3, FS_POS_ROPE);
    make(&c, 4, FS_POS_ROPE);
    cr_assert_eq(memcmp(a.params, b.params, a.layout.total * sizeof(float)), 0);
    cr_assert_neq(memcmp(a.params, c.params, a.layout.total * sizeof(float)), 0);
    fs_model_free(&a);
    fs_model_free(&b);
    fs_model_free(&c);
}

/* sample mean / sd / max |x| of a tensor */
static void moments(const fs_model *m, const char *name, double *mean, double *sd, double *maxabs)
{
    const fs_param_desc *t = fs_param_find(&m->layout, name);
    cr_assert_not_null(t, "%s", name);
    const float *x = m->params + t->offset;
    double s = 0, ss = 0, mx = 0;
    for (size_t i = 0; i < t->numel; i++) {
        s += x[i];
        ss += (double)x[i] * x[i];
        mx = fmax(mx, fabs(x[i]));
    }
    *mean = s / t->numel;
    *sd = sqrt(ss / t->numel - *mean * *mean);
    *maxabs = mx;
}

Test(init, distributions_follow_the_spec)
{
    fs_model m;
    make(&m, 0, FS_POS_APE);
    double mean, sd, mx;
    /* lecun normal truncated at +-2 sd of the underlying normal: the truncated normal's
     * sd is 0.8796 of the untruncated one, so the result has sd 1/sqrt(fan_in). */
    static const struct { const char *name; int fan_in; } lecun[] = {
        {"example_embed.weight", 512}, {"transformer.blocks.0.attn.qkv.weight", 64},
        {"transformer.blocks.1.mlp.fc2.weight", 256}, {"unembed.weight", 64}};
    for (int i = 0; i < 4; i++) {
        moments(&m, lecun[i].name, &mean, &sd, &mx);
        double want = 1.0 / sqrt(lecun[i].fan_in);
        cr_assert(fabs(sd / want - 1) < 0.05, "%s: sd %.4g, want %.4g", lecun[i].name, sd, want);
        cr_assert(fabs(mean) < 0.1 * want, "%s: mean %.4g", lecun[i].name, mean);
        cr_assert(mx <= 2 * want / 0.87962566 * 1.0001, "%s: |x| %.4g beyond the truncation", lecun[i].name, mx);
    }
    moments(&m, "label_embed.weight", &mean, &sd, &mx);
    cr_assert(mx <= 0.04 * 1.0001 && sd > 0.01 && sd < 0.025, "label embedding: sd %.4g max %.4g", sd, mx);
    moments(&m, "pos_embed.weight", &mean, &sd, &mx);
    cr_assert(mx <= 1 / sqrt(32.0) && fabs(sd - 1 / sqrt(32.0) / sqrt(3.0)) < 0.02, "APE uniform: sd %.4g", sd);
    moments(&m, "transformer.norm.weight", &mean, &sd, &mx);
    cr_assert(mean == 1 && sd == 0, "LayerNorm weights are 1");
    moments(&m, "unembed.bias", &mean, &sd, &mx);
    cr_assert(mx == 0, "biases are 0");
    fs_model_free(&m);
}

Test(init, rescale_multiplies_linear_weights)
{
    fs_model_config c;
    fs_model_config_default(&c);
    fs_error err = {{0}};
    fs_model a, b;
    cr_assert_eq(fs_model_create(&a, &c, &err), 0);
    c.init_rescale = 0.5;
    cr_assert_eq(fs_model_create(&b, &c, &err), 0);
    fs_model_init_params(&a);
    fs_model_init_params(&b);
    const fs_param_desc *t = fs_param_find(&a.layout, "transformer.blocks.0.attn.proj.weight");
    for (size_t i = 0; i < t->numel; i++)
        cr_assert_float_eq(b.params[t->offset + i], 0.5f * a.params[t->offset + i], 1e-7);
    fs_model_free(&a);
    fs_model_free(&b);
}
