#ifndef FEWSHOT_CHECKPOINT_H
#define FEWSHOT_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "fewshot/config.h"
#include "fewshot/model.h"
#include "train/optim.h"

/* Run position saved with a checkpoint: sequences seen and the partial sums of the
 * current train-log window, so a resumed run logs exactly what an uninterrupted one would. */
typedef struct {
    int64_t iter;
    double loss_sum, grad_norm_sum;
    int64_t window_steps;
} fs_run_position;

int fs_checkpoint_write(const char *path, const fs_model *m, const fs_optim_state *s, const fs_run_position *pos,
                        fs_error *err);
/* m and s must be created with the checkpoint's config; fills params, moments, step and
 * the run position, after checking the metadata against each other and the run config t. */
int fs_checkpoint_read(const char *path, fs_model *m, fs_optim_state *s, fs_run_position *pos,
                       const fs_train_config *t, fs_error *err);
/* Latest "step_N.safetensors" in dir: 1 and its path, or 0 if none. */
int fs_checkpoint_latest(const char *dir, char *path, size_t len);

#endif
