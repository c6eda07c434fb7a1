/* Parameter layout (docs/model.md), initialisation (docs/model.md) and model files. */
#include "fewshot/model.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/rng.h"
#include "base/fileio.h"

static void add_tensor(fs_param_layout *l, int *cap, const char *name, int rows, int cols, fs_init_kind init)
{
    if (*cap < 0)
        return; /* an earlier allocation failed */
    if (l->count == *cap) {
        int grown = *cap ? *cap * 2 : 32;
        fs_param_desc *t = realloc(l->tensors, sizeof *l->tensors * (size_t)grown);
        if (!t) {
            *cap = -1;
            return;
        }
        l->tensors = t;
        *cap = grown;
    }
    fs_param_desc *t = &l->tensors[l->count++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->ndim = cols > 0 ? 2 : 1;
    t->shape[0] = rows;
    t->shape[1] = cols;
    t->numel = (size_t)rows * (size_t)(cols > 0 ? cols : 1);
    t->init = init;
    t->fan_in = cols;
    t->offset = l->total;
    l->total += (t->numel + 15) & ~(size_t)15; /* 64-byte aligned tensors */
}

int fs_param_layout_build(const fs_model_config *c, fs_param_layout *l, fs_error *err)
{
    memset(l, 0, sizeof *l);
    if (fs_model_config_validate(c, "model config", err))
        return -1;
    int cap = 0, d = c->d_model, F = fs_mlp_hidden(c);
    char name[96];
    add_tensor(l, &cap, "example_embed.weight", d, c->input_dim, FS_INIT_LECUN);
    add_tensor(l, &cap, "example_embed.bias", d, 0, FS_INIT_ZERO);
    add_tensor(l, &cap, "label_embed.weight", d, c->num_classes, FS_INIT_LABEL_EMBED);
    if (c->pos_embedding == FS_POS_APE)
        add_tensor(l, &cap, "pos_embed.weight", d, FS_APE_MAX_TOKENS, FS_INIT_APE);
    for (int i = 0; i < c->depth; i++) {
#define BLOCK_TENSOR(suffix, rows, cols, init)                                   \
    do {                                                                          \
        snprintf(name, sizeof name, "transformer.blocks.%d.%s", i, suffix);      \
        add_tensor(l, &cap, name, rows, cols, init);                              \
    } while (0)
        if (!c->no_norm) {
            BLOCK_TENSOR("norm1.weight", d, 0, FS_INIT_ONE);
            BLOCK_TENSOR("norm1.bias", d, 0, FS_INIT_ZERO);
        }
        BLOCK_TENSOR("attn.qkv.weight", 3 * d, d, FS_INIT_LECUN);
        if (c->qkv_bias)
            BLOCK_TENSOR("attn.qkv.bias", 3 * d, 0, FS_INIT_ZERO);
        BLOCK_TENSOR("attn.proj.weight", d, d, FS_INIT_LECUN);
        if (F > 0) {
            if (!c->no_norm) {
                BLOCK_TENSOR("norm2.weight", d, 0, FS_INIT_ONE);
                BLOCK_TENSOR("norm2.bias", d, 0, FS_INIT_ZERO);
            }
            BLOCK_TENSOR("mlp.fc1.weight", F, d, FS_INIT_LECUN);
            BLOCK_TENSOR("mlp.fc1.bias", F, 0, FS_INIT_ZERO);
            BLOCK_TENSOR("mlp.fc2.weight", d, F, FS_INIT_LECUN);
            BLOCK_TENSOR("mlp.fc2.bias", d, 0, FS_INIT_ZERO);
        }
#undef BLOCK_TENSOR
    }
    if (!c->no_norm) {
        add_tensor(l, &cap, "transformer.norm.weight", d, 0, FS_INIT_ONE);
        add_tensor(l, &cap, "transformer.norm.bias", d, 0, FS_INIT_ZERO);
    }
    add_tensor(l, &cap, "unembed.weight", c->num_classes, d, FS_INIT_LECUN);
    add_tensor(l, &cap, "unembed.bias", c->num_classes, 0, FS_INIT_ZERO);
    if (cap < 0) {
        fs_param_layout_free(l);
        return fs_fail(err, "model config: out of memory for the parameter table");
    }
    return 0;
}

void fs_param_layout_free(fs_param_layout *l)
{
    free(l->tensors);
    memset(l, 0, sizeof *l);
}

const fs_param_desc *fs_param_find(const fs_param_layout *l, const char *name)
{
    for (int i = 0; i < l->count; i++)
        if (strcmp(l->tensors[i].name, name) == 0)
            return &l->tensors[i];
    return NULL;
}

static float *ptr_of(const fs_param_layout *l, float *base, const char *name)
{
    const fs_param_desc *t = fs_param_find(l, name);
    return t ? base + t->offset : NULL;
}

fs_param_ptrs fs_param_bind(const fs_model_config *c, const fs_param_layout *l, float *base)
{
    fs_param_ptrs p;
    memset(&p, 0, sizeof p);
    p.example_w = ptr_of(l, base, "example_embed.weight");
    p.example_b = ptr_of(l, base, "example_embed.bias");
    p.label_w = ptr_of(l, base, "label_embed.weight");
    p.pos_w = ptr_of(l, base, "pos_embed.weight");
    char name[96];
    for (int i = 0; i < c->depth; i++) {
        fs_block_params *b = &p.blocks[i];
#define BIND(field, suffix)                                                  \
    snprintf(name, sizeof name, "transformer.blocks.%d.%s", i, suffix);     \
    b->field = ptr_of(l, base, name)
        BIND(norm1_w, "norm1.weight");
        BIND(norm1_b, "norm1.bias");
        BIND(qkv_w, "attn.qkv.weight");
        BIND(qkv_b, "attn.qkv.bias");
        BIND(proj_w, "attn.proj.weight");
        BIND(norm2_w, "norm2.weight");
        BIND(norm2_b, "norm2.bias");
        BIND(fc1_w, "mlp.fc1.weight");
        BIND(fc1_b, "mlp.fc1.bias");
        BIND(fc2_w, "mlp.fc2.weight");
        BIND(fc2_b, "mlp.fc2.bias");
#undef BIND
    }
    p.norm_w = ptr_of(l, base, "transformer.norm.weight");
    p.norm_b = ptr_of(l, base, "transformer.norm.bias");
    p.unembed_w = ptr_of(l, base, "unembed.weight");
    p.unembed_b = ptr_of(l, base, "unembed.bias");
    return p;
}

int fs_model_create(fs_model *m, const fs_model_config *cfg, fs_error *err)
{
    memset(m, 0, sizeof *m);
    if (fs_param_layout_build(cfg, &m->layout, err))
        return -1;
    m->cfg = *cfg;
    m->params = fs_alloc(m->layout.total * sizeof(float));
    if (!m->params) {
        char what[160];
        snprintf(what, sizeof what, "model parameters (%zu floats for d_model %d, depth %d, input_dim %d)",
                 m->layout.total, cfg->d_model, cfg->depth, cfg->input_dim);
        size_t bytes = m->layout.total * sizeof(float);
        fs_param_layout_free(&m->layout);
        return fs_fail_alloc(err, what, bytes);
    }
    m->p = fs_param_bind(cfg, &m->layout, m->params);
    return 0;
}

void fs_model_free(fs_model *m)
{
    fs_param_layout_free(&m->layout);
    free(m->params);
    memset(m, 0, sizeof *m);
}

/* docs/model.md: lecun-normal truncated at +-2 sd (sd = 1/sqrt(fan_in)/0.8796...),
 * label embedding 0.02 x truncated N(0,1), APE uniform +-1/sqrt(32), LayerNorm 1/0;
 * init_rescale multiplies every Linear weight (the APE table is a Linear too).
 * Each tensor draws from its own stream so adding a tensor does not shift others. */
void fs_model_init_params(fs_model *m)
{
    for (int i = 0; i < m->layout.count; i++) {
        const fs_param_desc *t = &m->layout.tensors[i];
        float *x = m->params + t->offset;
        fs_rng_stream s;
        fs_rng_stream_init(&s, (uint64_t)m->cfg.init_seed, 0x1000u + (uint64_t)i);
        for (size_t j = 0; j < t->numel; j++) {
            switch (t->init) {
            case FS_INIT_ZERO: x[j] = 0.f; break;
            case FS_INIT_ONE: x[j] = 1.f; break;
            case FS_INIT_LECUN: {
                double sd = 1.0 / sqrt((double)t->fan_in) / 0.87962566103423978;
                x[j] = (float)(fs_rng_next_trunc_normal(&s) * sd * m->cfg.init_rescale);
                break;
            }
            case FS_INIT_LABEL_EMBED:
                x[j] = (float)(0.02 * fs_rng_next_trunc_normal(&s) * m->cfg.init_rescale);
                break;
            case FS_INIT_APE: {
                double lim = 1.0 / sqrt((double)FS_APE_MAX_TOKENS);
                x[j] = (float)((2.0 * fs_rng_next_double(&s) - 1.0) * lim * m->cfg.init_rescale);
                break;
            }
            }
        }
    }
}

