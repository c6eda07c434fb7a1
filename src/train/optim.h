/* Optimizers as the reference (docs/model.md): adam (optax.adam), sgd, warmup_decay
 * (global-norm clip 5, Adam, linear warm-up from 1e-5 to lr then sqrt decay to 1e-5)
 * and cosine (Adam, warm-up from 1e-6 to lr then cosine decay to 0). Weight decay adds
 * wd * sum of the parameter tensors' Frobenius norms to the loss. */
#ifndef FEWSHOT_TRAIN_OPTIM_H
#define FEWSHOT_TRAIN_OPTIM_H

#include <stdint.h>

#include "fewshot/config.h"
#include "fewshot/model.h"

typedef struct {
    fs_optimizer_kind kind;
    double lr, b1, b2, eps;
    double weight_decay;
    int64_t warmup_steps, decay_steps;
} fs_optim_config;

typedef struct {
    float *m, *v;   /* Adam moments, the model's parameter layout */
    int64_t step;   /* updates applied so far */
} fs_optim_state;

fs_optim_config fs_optim_config_from_train(const fs_train_config *t);
int fs_optim_state_init(fs_optim_state *s, const fs_model *m, fs_error *err);
void fs_optim_state_free(fs_optim_state *s);

/* Learning rate used for update number `step` (0-based). */
double fs_optim_lr(const fs_optim_config *c, int64_t step);

/* Weight-decay term of the loss (wd * sum of Frobenius norms); adds its gradient. */
double fs_weight_decay(const fs_model *m, float *grads, double wd);

/* One update of m->params from grads (may rescale grads when clipping). Returns the
 * global gradient norm before clipping. */
double fs_optim_update(const fs_optim_config *c, fs_optim_state *s, fs_model *m, float *grads);

#endif
