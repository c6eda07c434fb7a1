/* Training checkpoints: parameters, Adam moments (optim.m.* / optim.v.*), step and
 * sequences seen, in one safetensors file written atomically (docs/formats.md). */
#include "train/checkpoint.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fewshot/safetensors.h"

static void describe(fs_st_tensor *t, const fs_param_desc *d, const char *prefix, const float *buffer)
{
    snprintf(t->name, sizeof t->name, "%s%s", prefix, d->name);
    t->ndim = d->ndim;
    t->shape[0] = d->shape[0];
    t->shape[1] = d->shape[1];
    t->numel = d->numel;
    t->data = (float *)buffer + d->offset;
}

int fs_checkpoint_write(const char *path, const fs_model *m, const fs_optim_state *s, const fs_run_position *pos,
                        fs_error *err)
{
    int n = m->layout.count;
    fs_st_tensor *ts = calloc((size_t)n * 3, sizeof *ts);
    if (!ts)
        return fs_fail(err, "%s: out of memory", path);
    for (int i = 0; i < n; i++) {
        describe(&ts[i], &m->layout.tensors[i], "", m->params);
        describe(&ts[n + i], &m->layout.tensors[i], "optim.m.", s->m);
        describe(&ts[2 * n + i], &m->layout.tensors[i], "optim.v.", s->v);
    }
    cJSON *cj = fs_model_config_to_json(&m->cfg);
    char *cfg_text = cJSON_PrintUnformatted(cj);
    cJSON_Delete(cj);
    char step[32], seqs[32], loss[40], gnorm[40], window[32];
    snprintf(step, sizeof step, "%lld", (long long)s->step);
    snprintf(seqs, sizeof seqs, "%lld", (long long)pos->iter);
    snprintf(loss, sizeof loss, "%.17g", pos->loss_sum);
    snprintf(gnorm, sizeof gnorm, "%.17g", pos->grad_norm_sum);
    snprintf(window, sizeof window, "%lld", (long long)pos->window_steps);
    const char *keys[] = {"format", "model_config", "step", "iter", "log_loss_sum", "log_grad_norm_sum", "log_steps"};
    const char *vals[] = {"fewshot", cfg_text, step, seqs, loss, gnorm, window};
    int rc = fs_st_write(path, ts, 3 * n, keys, vals, 7, err);
    free(cfg_text);
    free(ts);
    return rc;
}

static int load_prefixed(const fs_st_file *f, const char *path, const fs_model *m, const char *prefix, float *buffer,
                         fs_error *err)
{
    for (int i = 0; i < m->layout.count; i++) {
        const fs_param_desc *d = &m->layout.tensors[i];
        char name[200];
        snprintf(name, sizeof name, "%s%s", prefix, d->name);
        int64_t shape[2] = {d->shape[0], d->shape[1]};
        const fs_st_tensor *t = fs_st_get(f, path, name, d->ndim, shape, err);
        if (!t)
            return -1;
        memcpy(buffer + d->offset, t->data, d->numel * sizeof(float));
    }
    return 0;
}

/* Metadata `key` as an integer in [lo, hi] / a finite double >= 0, the whole string. */
static int meta_int(const fs_st_file *f, const char *path, const char *key, int64_t lo, int64_t hi, int64_t *out,
                    fs_error *err)
{
    const char *v = fs_st_meta(f, key);
    if (!v)
        return fs_fail(err, "%s: not a training checkpoint (metadata \"%s\" missing)", path, key);
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (!*v || *end || errno || x < lo || x > hi)
        return fs_fail(err, "%s: checkpoint metadata %s = \"%.40s\": expected an integer in [%lld, %lld]", path, key, v,
                       (long long)lo, (long long)hi);
    *out = x;
    return 0;
}

static int meta_sum(const fs_st_file *f, const char *path, const char *key, double *out, fs_error *err)
{
    const char *v = fs_st_meta(f, key);
    if (!v)
        return fs_fail(err, "%s: not a training checkpoint (metadata \"%s\" missing)", path, key);
    char *end;
    double x = strtod(v, &end);
    if (!*v || *end || !isfinite(x) || x < 0)
        return fs_fail(err, "%s: checkpoint metadata %s = \"%.40s\": expected a finite number >= 0", path, key, v);
    *out = x;
    return 0;
}

/* step, iter and the log window must agree with each other and with the run's config:
 * iter = step * train_bs, the file's name gives the step, the window holds at most the
 * steps since the previous train line. */
static int read_position(const fs_st_file *f, const char *path, const fs_train_config *t, fs_optim_state *s,
                         fs_run_position *pos, fs_error *err)
{
    int64_t B = t->train_bs, step, iter, window;
    /* a resumed run may extend train_iters (the caller checks it is not shortened) */
    if (meta_int(f, path, "step", 1, INT64_MAX / B, &step, err))
        return -1;
    const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    long long named;
    char tail[16];
    if (sscanf(base, "step_%lld.%15s", &named, tail) == 2 && named != step)
        return fs_fail(err, "%s: checkpoint metadata says step %lld but the file is named for step %lld", path,
                       (long long)step, named);
    if (meta_int(f, path, "iter", 0, INT64_MAX, &iter, err) ||
        meta_int(f, path, "log_steps", 0, step, &window, err) ||
        meta_sum(f, path, "log_loss_sum", &pos->loss_sum, err) ||
        meta_sum(f, path, "log_grad_norm_sum", &pos->grad_norm_sum, err))
        return -1;
    if (iter != step * B)
        return fs_fail(err, "%s: checkpoint metadata: iter %lld does not match step %lld x train_bs %lld", path,
                       (long long)iter, (long long)step, (long long)B);
    int64_t max_window = t->log_every / B + 1; /* steps between two train lines */
    if (window > max_window || (window == 0 && (pos->loss_sum != 0 || pos->grad_norm_sum != 0)))
        return fs_fail(err, "%s: checkpoint metadata: a log window of %lld steps with sums %g, %g is inconsistent "
                       "with log_every %lld and train_bs %lld", path, (long long)window, pos->loss_sum,
                       pos->grad_norm_sum, (long long)t->log_every, (long long)B);
    s->step = step;
    pos->iter = iter;
    pos->window_steps = window;
    return 0;
}

int fs_checkpoint_read(const char *path, fs_model *m, fs_optim_state *s, fs_run_position *pos,
                       const fs_train_config *t, fs_error *err)
{
    fs_st_file f;
    if (fs_st_read(path, &f, err))
        return -1;
    int rc = load_prefixed(&f, path, m, "", m->params, err) || load_prefixed(&f, path, m, "optim.m.", s->m, err) ||
                     load_prefixed(&f, path, m, "optim.v.", s->v, err)
                 ? -1
                 : 0;
    if (!rc)
        rc = read_position(&f, path, t, s, pos, err);
    fs_st_free(&f);
    return rc;
}

int fs_checkpoint_latest(const char *dir, char *path, size_t len)
{
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    long long best = -1;
    struct dirent *e;
    while ((e = readdir(d))) {
        long long step;
        char tail[8];
        if (sscanf(e->d_name, "step_%lld.safetenso%7s", &step, tail) == 2 && !strcmp(tail, "rs") && step > best)
            best = step;
    }
    closedir(d);
    if (best < 0)
        return 0;
    snprintf(path, len, "%s/step_%08lld.safetensors", dir, best);
    return 1;
}
