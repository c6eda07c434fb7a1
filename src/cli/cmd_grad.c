/* fewshot grad / fewshot steps: loss, gradients and optimizer steps on one batch. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "train/held_open.h"
#include "cli/cli.h"
#include "fewshot/interventions.h"
#include "fewshot/seqio.h"
#include "train/trainer.h"

static const fs_opt grad_opts[] = {
    {"--config", "FILE", "config JSON (\"model\" section; \"train\" for weight_decay)"},
    {"--model", "FILE", "model parameters (.safetensors)"},
    {"--input", "FILE", "batch: {\"examples\": [B][P][D], \"labels\": [B][P]} (or one sequence)"},
    {"--cache", "FILE", "clamp values (cache tree); clamped elements get no gradient"},
    {"--mask", "FILE", "clamp mask (same tree, booleans)"},
    {"--intervene", "JSON|FILE", "named interventions (JSON or file), e.g. '{\"ablate_heads\": [\"1:7\"]}'"},
    {"--threads", "T", "worker threads (default: all cores)"},
    {"--set", "S.K=V", "override a config value"},
    {"-o", "FILE", "write the gradients here (.safetensors, parameter names)"},
    {NULL, NULL, NULL},
};

static const fs_opt steps_opts[] = {
    {"--config", "FILE", "config JSON (\"model\"; \"train\": optimizer, lr, weight_decay, ...)"},
    {"--model", "FILE", "initial model parameters (.safetensors)"},
    {"--input", "FILE", "batch: {\"examples\": [B][P][D], \"labels\": [B][P]}"},
    {"--steps", "N", "number of optimizer steps on this batch"},
    {"--cache", "FILE", "clamp values held on during the steps"},
    {"--mask", "FILE", "clamp mask"},
    {"--intervene", "JSON|FILE", "named interventions held on during the steps (recomputed each step)"},
    {"--threads", "T", "worker threads (default: all cores)"},
    {"--set", "S.K=V", "override a config value, e.g. --set train.lr=0.001"},
    {"-o", "FILE", "write the final parameters here (.safetensors)"},
    {NULL, NULL, NULL},
};

/* Shared set-up: model, batch, trainer (+ clamps). Returns 0 or an exit code. */
typedef struct {
    fs_run_config cfg;
    fs_model model;
    fs_seq_batch batch;
    fs_trainer trainer;
    fs_held held;
    fs_held_clamps hc;
} session;

static void session_free(session *s)
{
    fs_held_unbind(&s->hc);
    fs_held_free(&s->held);
    fs_trainer_free(&s->trainer);
    fs_seq_batch_free(&s->batch);
    fs_model_free(&s->model);
    fs_run_config_free(&s->cfg);
}

static int session_open(session *s, const fs_args *args)
{
    fs_error err = {{0}};
    memset(s, 0, sizeof *s);
    if (fs_cli_load_model(args, &s->cfg, &s->model))
        return 1;
    const char *input = fs_arg(args, "--input");
    if (!input)
        return fs_cli_error("--input FILE is required");
    if (!fs_arg(args, "-o"))
        return fs_cli_error("-o FILE.safetensors is required");
    if (fs_seq_batch_load(input, s->cfg.model.input_dim, s->cfg.model.num_classes, &s->batch, &err))
        return fs_cli_error(err.msg);
    long long threads;
    if (fs_arg_int(args, "--threads", s->cfg.train.threads, 0, 1024, &threads))
        return 1;
    fs_optim_config oc = fs_optim_config_from_train(&s->cfg.train);
    if (fs_trainer_init(&s->trainer, &s->model, s->batch.P, s->batch.B, (int)threads, &oc, &err))
        return fs_cli_error(err.msg);
    fs_acts_set_inputs(&s->trainer.acts, s->batch.examples, s->batch.labels, 0, s->batch.B);
    fs_held_source src = fs_cli_held(args, NULL, NULL);
    if (fs_held_open(&s->held, &src, &s->cfg.model, s->batch.P, s->batch.B, &err) ||
        fs_held_bind(&s->hc, &s->held, &s->trainer.acts, &err) || fs_trainer_hold(&s->trainer, &s->hc, &err))
        return fs_cli_error(err.msg);
    s->trainer.clamps = fs_held_update(&s->hc, &s->model, &s->trainer.acts, s->batch.B);
    return 0;
}

int fs_cmd_grad(int argc, char **argv)
{
    fs_args args;
    int rc = fs_cli_parse(&args, argc, argv, "grad", "[--config C.json] --model M.safetensors --input BATCH.json [--cache CACHE.json --mask MASK.json]\n"
                          "       [--intervene JSON|FILE] [--threads T] [--set S.K=V ...] -o G.safetensors",
                          "Compute the mean query cross-entropy of a batch (plus weight decay, if configured) and its\n"
                          "gradient with respect to every parameter. Prints {\"loss\": x} to stdout.",
                          grad_opts);
    if (rc)
        return rc > 0 ? 0 : 2;
    session s;
    if ((rc = session_open(&s, &args))) {
        session_free(&s);
        return rc;
    }
    double loss = fs_trainer_grad(&s.trainer, s.batch.B);
    fs_error err = {{0}};
    if (fs_buffer_save(&s.model, s.trainer.grads, fs_arg(&args, "-o"), &err))
        rc = fs_cli_error(err.msg);
    else
        printf("{\"loss\": %.9g}\n", loss);
    session_free(&s);
    return rc;
}

int fs_cmd_steps(int argc, char **argv)
{
    fs_args args;
    int rc = fs_cli_parse(&args, argc, argv, "steps",
                          "[--config C.json] --model M.safetensors --input BATCH.json --steps N\n"
                          "       [--cache CACHE.json --mask MASK.json] [--intervene JSON|FILE] [--threads T] [--set S.K=V ...]\n"
                          "       -o OUT.safetensors",
                          "Run N optimizer steps (the config's train section) on one batch. Prints\n"
                          "{\"losses\": [...], \"grad_norms\": [...]} with the loss before each step.",
                          steps_opts);
    if (rc)
        return rc > 0 ? 0 : 2;
    long long steps;
    if (!fs_arg(&args, "--steps"))
        return fs_cli_error("--steps N is required");
    if (fs_arg_int(&args, "--steps", 1, 0, 100000000, &steps))
        return 1;
    session s;
    if ((rc = session_open(&s, &args))) {
        session_free(&s);
        return rc;
    }
    double *losses = calloc((size_t)steps + 1, sizeof *losses), *norms = calloc((size_t)steps + 1, sizeof *norms);
    for (long long i = 0; i < steps; i++) {
        if (i > 0 && fs_interventions_need_clean_pass(&s.held.iv)) /* clean pass: new parameters */
            fs_held_update(&s.hc, &s.model, &s.trainer.acts, s.batch.B);
        losses[i] = fs_trainer_step(&s.trainer, s.batch.B, &norms[i]);
    }
    fs_error err = {{0}};
    if (fs_model_save(&s.model, fs_arg(&args, "-o"), &err)) {
        rc = fs_cli_error(err.msg);
    } else {
        printf("{\"losses\": [");
        for (long long i = 0; i < steps; i++)
            printf("%s%.9g", i ? ", " : "", losses[i]);
        printf("], \"grad_norms\": [");
        for (long long i = 0; i < steps; i++)
            printf("%s%.9g", i ? ", " : "", norms[i]);
        printf("]}\n");
    }
    free(losses);
    free(norms);
    session_free(&s);
    return rc;
}
