/* The training loop (docs/model.md, docs/formats.md). The batch at step t is sequences
 * t*B .. t*B+B-1 of the counter-based sampler, so a resumed run sees exactly the
 * batches an uninterrupted one would. */
#include "train/held_open.h"
#include "fewshot/train.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "train/batch.h"
#include "train/checkpoint.h"
#include "train/schedule.h"
#include "train/measures.h"
#include "train/run.h"
#include "fewshot/seqio.h"
#include "train/trainer.h"
#include "base/fileio.h"
#include "base/json.h"

typedef struct {
    fs_run_config *cfg;
    const char *origin;
    const fs_train_options *opt;
    fs_run_data rd;
    fs_seq_mix mix;
    fs_model model;
    fs_trainer trainer;
    fs_held held;                   /* the clamps section: clamp files, named interventions */
    fs_held_clamps hc;              /* held on the trainer's batch, refilled per batch */
    fs_eval_ws ws[FS_MAX_EVALUATORS];
    fs_batch_sampler batch;
    FILE *metrics;
    char dir[1024], ckpt_dir[1100], metrics_path[1100];
    int lock_fd;            /* the run directory's lock, held for the run's life */
    fs_run_position pos;    /* sequences seen, current train-log window */
    double last_eval_acc;
    char last_eval_name[64];
    fs_schedule eval_at, snapshot_at; /* evaluations; ckpt_<iter>.safetensors model snapshots */
    fs_probe_set probe;               /* measures section: the probe set and its workspace */
    fs_measures_ws mws;
} run;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void metrics_line(run *r, cJSON *line)
{
    char *text = cJSON_PrintUnformatted(line);
    fprintf(r->metrics, "%s\n", text);
    fflush(r->metrics); /* whole lines for readers (sweep progress, tail -f) */
    free(text);
    cJSON_Delete(line);
}

/* The measures of the model (alone: clamps held on in training are not applied) on the probe set. */
static int add_measures(run *r, cJSON *line, fs_error *err)
{
    fs_measures ms;
    if (fs_measures_compute(&r->model, r->probe.examples, r->probe.labels, r->probe.n, r->probe.P,
                            r->cfg->measures.which, &r->mws, &ms, err))
        return -1;
    cJSON_AddItemToObject(line, "measures", fs_measures_json(&ms));
    fs_measures_free(&ms);
    return 0;
}

/* A model-only snapshot (ckpt_sched), written atomically. */
static int snapshot(run *r, fs_error *err)
{
    char path[1200];
    snprintf(path, sizeof path, "%s/ckpt_%lld.safetensors", r->dir, (long long)r->pos.iter);
    return fs_model_save(&r->model, path, err);
}

static int evaluate(run *r, int64_t step, fs_error *err)
{
    fs_metrics ms[FS_MAX_EVALUATORS];
    if (fs_run_evaluate(&r->model, &r->rd, &r->held, r->ws, ms, err))
        return -1;
    cJSON *line = cJSON_CreateObject();
    cJSON_AddStringToObject(line, "type", "eval");
    cJSON_AddNumberToObject(line, "iter", (double)r->pos.iter);
    cJSON_AddNumberToObject(line, "step", (double)step);
    cJSON_AddItemToObject(line, "evals", fs_metrics_json(&r->rd, ms));
    if (r->cfg->measures.enable && add_measures(r, line, err)) {
        cJSON_Delete(line);
        return -1;
    }
    metrics_line(r, line);
    fflush(r->metrics);
    if (r->rd.num_sets > 0) {
        r->last_eval_acc = ms[0].acc;
        snprintf(r->last_eval_name, sizeof r->last_eval_name, "%s", r->rd.sets[0].name);
    }
    return 0;
}

static int checkpoint(run *r, fs_error *err)
{
    char path[1200];
    snprintf(path, sizeof path, "%s/step_%08lld.safetensors", r->ckpt_dir, (long long)r->trainer.state.step);
    fflush(r->metrics);
    fsync(fileno(r->metrics));
    return fs_checkpoint_write(path, &r->model, &r->trainer.state, &r->pos, err);
}

/* Keep the metrics lines of sequences <= iter (those written before the checkpoint). */
static int truncate_metrics(const char *path, int64_t iter, fs_error *err)
{
    size_t len;
    char *text = fs_read_file(path, &len, err);
    if (!text)
        return -1;
    size_t cap = len + 1, used = 0;
    char *keep = malloc(cap);
    if (!keep) {
        free(text);
        return fs_fail(err, "%s: out of memory", path);
    }
    keep[0] = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        cJSON *j = cJSON_Parse(line);
        const cJSON *it = j ? cJSON_GetObjectItem(j, "iter") : NULL;
        if (cJSON_IsNumber(it) && it->valuedouble <= (double)iter)
            used += (size_t)snprintf(keep + used, cap - used, "%s\n", line);
        cJSON_Delete(j);
    }
    int rc = fs_write_file_atomic(path, keep, err);
    free(keep);
    free(text);
    return rc;
}

/* Text of the resolved config as config.json holds it (with a final newline); caller frees. */
static char *config_text(const fs_run_config *cfg)
{
    cJSON *j = fs_run_config_to_json(cfg);
    char *text = fs_json_text(j);
    cJSON_Delete(j);
    return text;
}

/* A new run writes config.json. A resumed run must have been started with the same
 * config, except that train.train_iters may differ: a larger value extends the run, and
 * config.json is rewritten with it (the caller checks it is not below the checkpoint). */
static int save_config(run *r, bool resume, fs_error *err)
{
    char path[1100];
    snprintf(path, sizeof path, "%s/config.json", r->dir);
    char *text = config_text(r->cfg);
    if (!text)
        return fs_fail(err, "%s: out of memory", path);
    int rc = 0;
    if (resume) {
        size_t n;
        char *old = fs_read_file(path, &n, err);
        if (!old) {
            rc = -1;
        } else if (strcmp(old, text) != 0) {
            cJSON *oj = cJSON_Parse(old);
            const cJSON *it = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(oj, "train"),
                                                               "train_iters");
            fs_run_config same = *r->cfg;
            bool known = cJSON_IsNumber(it) && it->valuedouble >= 0 && it->valuedouble <= 9.0e18; /* cast is defined */
            if (known)
                same.train.train_iters = (int64_t)it->valuedouble;
            char *as_old = known ? config_text(&same) : NULL;
            if (as_old && strcmp(old, as_old) == 0)
                rc = fs_write_file_atomic(path, text, err); /* only train_iters changed: extend */
            else
                rc = fs_fail(err, "%s: the run was started with a different config; resume with the same config "
                                  "(only train.train_iters may change, to extend the run) or use another --out",
                             path);
            free(as_old);
            cJSON_Delete(oj);
        }
        free(old);
    } else {
        rc = fs_write_file_atomic(path, text, err);
    }
    free(text);
    return rc;
}

static int setup(run *r, fs_error *err)
{
    fs_run_config *cfg = r->cfg;
    if (fs_run_data_open(&r->rd, cfg, r->origin, true, err))
        return -1;
    if (fs_run_config_validate(cfg, r->origin, err))
        return -1;
    if (fs_seq_mix_from_train(&r->mix, &r->rd.task, &cfg->train, r->origin, err))
        return -1;
    if (fs_model_create(&r->model, &cfg->model, err))
        return -1;
    fs_model_init_params(&r->model);
    int P = cfg->train.train_context_len + 1, B = cfg->train.train_bs;
    fs_optim_config oc = fs_optim_config_from_train(&cfg->train);
    if (fs_trainer_init(&r->trainer, &r->model, P, B, cfg->train.threads, &oc, err))
        return -1;
    fs_held_source src = {.config = &cfg->clamps, .origin = r->origin};
    if (fs_held_open(&r->held, &src, &cfg->model, P, 0, err) || fs_held_bind(&r->hc, &r->held, &r->trainer.acts, err) ||
        fs_trainer_hold(&r->trainer, &r->hc, err))
        return -1;
    if (fs_schedule_init(&r->eval_at, cfg->train.eval_every, &cfg->train.eval_sched, cfg->train.eval_log_points, B,
                         cfg->train.train_iters, err) ||
        fs_schedule_init(&r->snapshot_at, 0, &cfg->train.ckpt_sched, 0, B, cfg->train.train_iters, err))
        return -1;
    if (cfg->measures.enable && fs_probe_set_build(&r->probe, &r->rd.task, cfg, r->origin, err))
        return -1;
    return fs_batch_sampler_init(&r->batch, &r->rd.task, &r->mix, (uint64_t)cfg->train.train_seed, B,
                                 cfg->train.train_context_len,
                                 r->trainer.threads > omp_get_max_threads() ? r->trainer.threads : omp_get_max_threads(),
                                 err);
}

static void teardown(run *r)
{
    if (r->metrics)
        fclose(r->metrics);
    fs_dir_unlock(r->lock_fd);
    fs_batch_sampler_free(&r->batch);
    for (int i = 0; i < FS_MAX_EVALUATORS; i++)
        fs_eval_ws_free(&r->ws[i]);
    fs_held_unbind(&r->hc);
    fs_held_free(&r->held);
    fs_schedule_free(&r->eval_at);
    fs_schedule_free(&r->snapshot_at);
    fs_probe_set_free(&r->probe);
    fs_measures_ws_free(&r->mws);
    fs_trainer_free(&r->trainer);
    fs_model_free(&r->model);
    fs_run_data_close(&r->rd);
}

/* Crossing a multiple of `every` between sequences a (exclusive) and b (inclusive). */
static bool due(int64_t every, int64_t a, int64_t b) { return every > 0 && b / every > a / every; }

/* A non-finite loss or gradient: stop before anything of this step is logged or saved,
 * so metrics.jsonl and the checkpoints keep only the steps before it. */
static int diverged(run *r, int64_t step, double loss, double gnorm, fs_error *err)
{
    char latest[1300];
    bool have = fs_checkpoint_latest(r->ckpt_dir, latest, sizeof latest);
    return fs_fail(err, "training diverged at step %lld (sequences %lld..%lld): the %s is %s (lr %g too high?); "
                   "nothing of this step was saved; %s%s", (long long)step, (long long)r->pos.iter + 1,
                   (long long)r->pos.iter + r->cfg->train.train_bs, isfinite(loss) ? "gradient norm" : "loss",
                   isnan(isfinite(loss) ? gnorm : loss) ? "NaN" : "infinite", r->cfg->train.lr,
                   have ? "the last good checkpoint is " : "no checkpoint was written before it", have ? latest : "");
}

static int loop(run *r, fs_error *err)
{
    const fs_train_config *t = &r->cfg->train;
    int B = t->train_bs;
    int64_t total_steps = (t->train_iters + B - 1) / B;
    int64_t step = r->trainer.state.step;
    int64_t first_step = step;
    double t0 = now();
    int rc = 0;
    while (step < total_steps) {
        double gnorm, loss;
        if (r->hc.has_iv) { /* per-sequence interventions follow this batch's inputs */
            fs_batch_sample(&r->batch, &r->trainer.acts, step);
            r->trainer.clamps = fs_held_update(&r->hc, &r->model, &r->trainer.acts, B);
            loss = fs_trainer_step(&r->trainer, B, &gnorm);
        } else { /* the clamp files (if any) do not depend on the batch: sample inside the step */
            r->trainer.clamps = fs_held_update(&r->hc, &r->model, &r->trainer.acts, B);
            loss = fs_batch_train_step(&r->batch, &r->trainer, step, &gnorm);
        }
        if (!isfinite(loss) || !isfinite(gnorm))
            return diverged(r, step + 1, loss, gnorm, err);
        int64_t before = r->pos.iter;
        r->pos.iter += B;
        step++;
        r->pos.loss_sum += loss;
        r->pos.grad_norm_sum += gnorm;
        r->pos.window_steps++;
        bool last = step == total_steps;
        if (due(t->log_every, before, r->pos.iter) || last) {
            cJSON *line = cJSON_CreateObject();
            cJSON_AddStringToObject(line, "type", "train");
            cJSON_AddNumberToObject(line, "iter", (double)r->pos.iter);
            cJSON_AddNumberToObject(line, "step", (double)step);
            /* means over the steps since the previous train line */
            cJSON_AddNumberToObject(line, "loss", r->pos.loss_sum / (double)r->pos.window_steps);
            cJSON_AddNumberToObject(line, "grad_norm", r->pos.grad_norm_sum / (double)r->pos.window_steps);
            metrics_line(r, line);
            r->pos.loss_sum = r->pos.grad_norm_sum = 0;
            r->pos.window_steps = 0;
        }
        if ((fs_schedule_due(&r->eval_at, before, r->pos.iter) || last) && evaluate(r, step, err))
            return -1;
        if (fs_schedule_due(&r->snapshot_at, before, r->pos.iter) && snapshot(r, err))
            return -1;
        bool stop = (r->opt->stop_flag && *r->opt->stop_flag) || (r->opt->stop_after > 0 && r->pos.iter >= r->opt->stop_after && !last);
        if (due(t->ckpt_every, before, r->pos.iter) || last || stop) {
            if (checkpoint(r, err))
                return -1;
        }
        if (r->opt->on_progress) {
            fs_train_progress p = {.step = step, .total_steps = total_steps, .first_step = first_step,
                                   .iter = r->pos.iter, .seqs_per_s = (double)(step - first_step) * B / (now() - t0 + 1e-9),
                                   .loss = loss, .eval_name = r->last_eval_name, .eval_acc = r->last_eval_acc};
            r->opt->on_progress(r->opt->progress_ctx, &p);
        }
        if (stop) {
            rc = 1;
            break;
        }
    }
    return rc;
}

int fs_train_run(fs_run_config *cfg, const char *origin, const fs_train_options *opt, fs_error *err)
{
    run r;
    memset(&r, 0, sizeof r);
    r.cfg = cfg;
    r.origin = origin;
    r.opt = opt;
    r.lock_fd = -1;
    if (strlen(opt->out_dir) >= sizeof r.dir)
        return fs_fail(err, "--out: the run directory name is %zu bytes (at most %zu)", strlen(opt->out_dir),
                       sizeof r.dir - 1);
    snprintf(r.dir, sizeof r.dir, "%s", opt->out_dir);
    snprintf(r.ckpt_dir, sizeof r.ckpt_dir, "%s/checkpoints", r.dir);
    snprintf(r.metrics_path, sizeof r.metrics_path, "%s/metrics.jsonl", r.dir);
    int rc = -1;
    /* one run per directory: the lock is held until teardown; then no other writer can
     * own the temp files that interrupted writes left behind */
    if (fs_mkdir_p(r.ckpt_dir, err) || fs_dir_lock(r.dir, &r.lock_fd, err))
        goto done;
    fs_remove_stale_tmp(r.dir);
    fs_remove_stale_tmp(r.ckpt_dir);
    if (setup(&r, err))
        goto done;
    char latest[1300];
    bool have = fs_checkpoint_latest(r.ckpt_dir, latest, sizeof latest);
    if (opt->resume) {
        if (!have) {
            fs_fail(err, "%s: no checkpoint to resume from", r.ckpt_dir);
            goto done;
        }
        if (fs_checkpoint_read(latest, &r.model, &r.trainer.state, &r.pos, &cfg->train, err))
            goto done;
        if (r.pos.iter > cfg->train.train_iters) {
            fs_fail(err, "%s: train.train_iters = %lld is below the %lld sequences this run has already trained on "
                         "(a resumed run can be extended, not shortened)",
                    latest, (long long)cfg->train.train_iters, (long long)r.pos.iter);
            goto done;
        }
        if (save_config(&r, true, err) || truncate_metrics(r.metrics_path, r.pos.iter, err))
            goto done;
        r.metrics = fopen(r.metrics_path, "a");
    } else {
        if (have) {
            fs_fail(err, "%s already holds checkpoints; pass --resume to continue that run or choose another --out",
                    r.dir);
            goto done;
        }
        if (save_config(&r, false, err))
            goto done;
        r.metrics = fopen(r.metrics_path, "w");
    }
    if (!r.metrics) {
        fs_fail(err, "%s: cannot open for writing (%s)", r.metrics_path, strerror(errno));
        goto done;
    }
    if (!opt->resume && evaluate(&r, 0, err)) /* the curve starts at 0 sequences */
        goto done;
    if (!opt->resume && fs_schedule_due(&r.snapshot_at, -1, 0) && snapshot(&r, err))
        goto done;
    rc = loop(&r, err);
done:
    teardown(&r);
    return rc;
}
