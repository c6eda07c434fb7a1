/* Model and parameter-shaped buffers as safetensors files (docs/formats.md). */
#include "fewshot/model.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fewshot/safetensors.h"

/* Every tensor of layout l must be in f with its shape (and nothing else but optim.*);
 * with a buffer, copy them into it. Checked before anything is allocated for the model. */
static int load_into(const fs_param_layout *l, float *buffer, const char *path, fs_st_file *f, fs_error *err)
{
    for (int i = 0; i < l->count; i++) {
        const fs_param_desc *t = &l->tensors[i];
        int64_t shape[2] = {t->shape[0], t->shape[1]};
        const fs_st_tensor *st = fs_st_get(f, path, t->name, t->ndim, shape, err);
        if (!st)
            return -1;
        if (buffer)
            memcpy(buffer + t->offset, st->data, t->numel * sizeof(float));
    }
    for (int i = 0; i < f->count; i++)
        if (!fs_param_find(l, f->tensors[i].name) && strncmp(f->tensors[i].name, "optim.", 6) != 0)
            return fs_fail(err, "%s: unexpected tensor '%s' for this model config (wrong config for this file?)",
                           path, f->tensors[i].name);
    return 0;
}

int fs_buffer_load(const fs_model *m, float *buffer, const char *path, fs_error *err)
{
    fs_st_file f;
    if (fs_st_read(path, &f, err))
        return -1;
    int rc = load_into(&m->layout, buffer, path, &f, err);
    fs_st_free(&f);
    return rc;
}

int fs_model_load(fs_model *m, const fs_model_config *cfg, const char *path, fs_error *err)
{
    memset(m, 0, sizeof *m);
    fs_st_file f;
    if (fs_st_read(path, &f, err))
        return -1;
    fs_param_layout l;
    int rc = fs_param_layout_build(cfg, &l, err);
    if (rc == 0) {
        rc = load_into(&l, NULL, path, &f, err); /* shapes first: a small file cannot demand a big model */
        fs_param_layout_free(&l);
    }
    if (rc == 0 && fs_model_create(m, cfg, err) == 0) {
        rc = load_into(&m->layout, m->params, path, &f, err);
        if (rc)
            fs_model_free(m);
    } else {
        rc = -1;
    }
    fs_st_free(&f);
    return rc;
}

int fs_buffer_save(const fs_model *m, const float *buffer, const char *path, fs_error *err)
{
    fs_st_tensor *ts = calloc((size_t)m->layout.count, sizeof *ts);
    if (!ts)
        return fs_fail(err, "%s: out of memory", path);
    for (int i = 0; i < m->layout.count; i++) {
        const fs_param_desc *t = &m->layout.tensors[i];
        snprintf(ts[i].name, sizeof ts[i].name, "%s", t->name);
        ts[i].ndim = t->ndim;
        ts[i].shape[0] = t->shape[0];
        ts[i].shape[1] = t->shape[1];
        ts[i].numel = t->numel;
        ts[i].data = (float *)buffer + t->offset;
    }
    cJSON *cj = fs_model_config_to_json(&m->cfg);
    char *cfg_text = cJSON_PrintUnformatted(cj);
    cJSON_Delete(cj);
    const char *keys[] = {"format", "model_config"};
    const char *vals[] = {"fewshot", cfg_text};
    int rc = fs_st_write(path, ts, m->layout.count, keys, vals, 2, err);
    free(cfg_text);
    free(ts);
    return rc;
}

int fs_model_save(const fs_model *m, const char *path, fs_error *err) { return fs_buffer_save(m, m->params, path, err); }

int fs_model_config_from_file(const char *path, fs_model_config *cfg, fs_error *err)
{
    fs_st_file f;
    if (fs_st_read(path, &f, err))
        return -1;
    const char *text = fs_st_meta(&f, "model_config");
    int rc = 0;
    if (text) {
        cJSON *j = cJSON_Parse(text);
        fs_model_config_default(cfg);
        char origin[1100];
        snprintf(origin, sizeof origin, "%s (metadata model_config)", path);
        rc = j ? (fs_model_config_from_json(j, origin, cfg, err) ? -1 : 1)
               : fs_fail(err, "%s: metadata model_config is not valid JSON", path);
        cJSON_Delete(j);
    }
    fs_st_free(&f);
    return rc;
}

int fs_model_open(fs_model *m, fs_model_config *cfg, bool has_cfg, const char *path, const char *config_origin,
                  fs_error *err)
{
    fs_model_config stored;
    int has = fs_model_config_from_file(path, &stored, err);
    if (has < 0)
        return -1;
    if (!has_cfg && !has)
        return fs_fail(err, "%s carries no model config in its metadata; pass a config with a \"model\" section", path);
    if (!has_cfg)
        *cfg = stored;
    else if (has && !fs_model_config_equal(&stored, cfg))
        return fs_fail(err, "%s: the model config in %s disagrees with the one stored in the model file", path,
                       config_origin);
    if (fs_model_config_validate(cfg, has_cfg ? config_origin : path, err))
        return -1;
    return fs_model_load(m, cfg, path, err);
}
