/* Training checkpoints: parameters, Adam moments (optim.m.* / optim.v.*), step and
 * sequences seen, in one safetensors file written atomically (docs/formats.md). */
#include "train/checkpoint.h"

#include <cjson/cJSON.h>
#include <dirent.h>
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

int fs_checkpoint_read(const char *path, fs_model *m, fs_optim_state *s, fs_run_position *pos, fs_error *err)
{
    fs_st_file f;
    if (fs_st_read(path, &f, err))
        return -1;
    int rc = load_prefixed(&f, path, m, "", m->params, err) || load_prefixed(&f, path, m, "optim.m.", s->m, err) ||
                     load_prefixed(&f, path, m, "optim.v.", s->v, err)
                 ? -1
                 : 0;
    const char *step = fs_st_meta(&f, "step"), *seqs = fs_st_meta(&f, "iter");
    const char *loss = fs_st_meta(&f, "log_loss_sum"), *gnorm = fs_st_meta(&f, "log_grad_norm_sum");
    const char *window = fs_st_meta(&f, "log_steps");
    if (!rc && (!step || !seqs || !loss || !gnorm || !window))
        rc = fs_fail(err, "%s: not a training checkpoint (metadata step/iter/log_* missing)", path);
    if (!rc) {
        s->step = atoll(step);
        pos->iter = atoll(seqs);
        pos->loss_sum = strtod(loss, NULL);
        pos->grad_norm_sum = strtod(gnorm, NULL);
        pos->window_steps = atoll(window);
    }
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
