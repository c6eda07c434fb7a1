/* The training step engine: one forward + backward over a batch, split across threads
 * by whole sequences (each thread owns its sequences' slice of every leaf and its own
 * gradient buffer), gradients summed in a fixed order (deterministic for a fixed thread
 * count), then one optimizer update, sliced across the same threads -- all in one
 * parallel region per step. All memory is allocated once in fs_trainer_init (and
 * fs_trainer_hold, for the gradients through computed clamps). */
#ifndef FEWSHOT_TRAINER_H
#define FEWSHOT_TRAINER_H

#include "fewshot/cache.h"
#include "fewshot/forward.h"
#include "fewshot/interventions.h"
#include "fewshot/model.h"
#include "train/optim.h"
#include "model/leaves.h" /* the input leaves a trainer's user fills */

typedef struct {
    fs_model *model;
    fs_acts acts;                 /* capacity B sequences of P pairs */
    float *grad_acts;             /* backward scratch (fs_backward_scratch_floats) */
    float *gelu_grad;             /* GELU derivatives from forward to backward (fs_gelu_grad_floats) */
    int threads;
    float **thread_grads;         /* [threads][layout.total] */
    fs_param_ptrs *thread_ptrs;   /* bound into thread_grads */
    float *grads;                 /* reduced gradient */
    fs_optim_config optim;
    fs_optim_state state;
    const fs_clamp_set *clamps;   /* may be NULL; not owned */
    const fs_held_clamps *held;   /* the interventions behind clamps (fs_trainer_hold), may be NULL */
    float **spare_grads;          /* [threads][layout.total] for the other passes' backward */
    fs_param_ptrs *spare_ptrs;
    /* Optional: fills the inputs of sequences [b0, b1) at the start of the step's parallel
     * region, each thread the sequences it then runs (no region of its own). */
    void (*fill)(void *ctx, fs_acts *a, int b0, int b1, int thread);
    void *fill_ctx;
    struct {
        double loss, sumsq, decay;
        char pad[40];             /* one cache line per thread */
    } *thread_sums;               /* [threads] per-thread partial results */
} fs_trainer;

/* threads <= 0: the number of cores (OpenMP's default). */
int fs_trainer_init(fs_trainer *t, fs_model *m, int P, int B, int threads, const fs_optim_config *oc,
                    fs_error *err);
void fs_trainer_free(fs_trainer *t);

/* Train through the interventions bound in hc (t->clamps must be what fs_held_update
 * returns for it; call this before the first update): clamps computed by other passes
 * pass their gradient into those passes (unless clamp_gradients is "stop"). Allocates
 * their gradient buffers once. NULL: none. A graft_out needs it for the forward too (its
 * model runs after this one's in the step). */
int fs_trainer_hold(fs_trainer *t, fs_held_clamps *hc, fs_error *err);

/* Inputs of sequences [0, nseq) must be in t->acts. Computes the mean query CE (plus
 * weight decay) and its gradient into t->grads. Returns the loss. */
double fs_trainer_grad(fs_trainer *t, int nseq);
/* fs_trainer_grad followed by one optimizer update; *grad_norm gets the global norm. */
double fs_trainer_step(fs_trainer *t, int nseq, double *grad_norm);

#endif
