#include "golden_util.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fewshot/config.h"
#include "fewshot/safetensors.h"

static bool is_subtree(const cJSON *v) { return cJSON_IsObject(v) || (cJSON_IsArray(v) && cJSON_IsObject(v->child)); }

/* 0 when equal within tolerance; counts leaves (non-subtree values under objects). */
static int compare(const cJSON *ours, const cJSON *golden, const char *path, char *why, size_t why_len, int *leaves)
{
    if (cJSON_IsNull(golden))
        return cJSON_IsNull(ours) ? 0 : (snprintf(why, why_len, "%s: expected null", path), -1);
    if (cJSON_IsNumber(golden)) {
        double o;
        if (cJSON_IsNumber(ours))
            o = ours->valuedouble;
        else if (cJSON_IsRaw(ours)) /* our dumps print floats as raw %.9g text */
            o = strtod(ours->valuestring, NULL);
        else
            return snprintf(why, why_len, "%s: expected a number", path), -1;
        double g = golden->valuedouble;
        /* float32 rounding of the -1e20 masks is covered by the relative term */
        if (!(fabs(o - g) <= 1e-4 + 1e-4 * fabs(g)))
            return snprintf(why, why_len, "%s: ours %.9g vs golden %.9g", path, o, g), -1;
        return 0;
    }
    if (cJSON_IsArray(golden)) {
        if (!cJSON_IsArray(ours) || cJSON_GetArraySize(ours) != cJSON_GetArraySize(golden))
            return snprintf(why, why_len, "%s: array length differs (ours %d, golden %d)", path,
                            cJSON_IsArray(ours) ? cJSON_GetArraySize(ours) : -1, cJSON_GetArraySize(golden)),
                   -1;
        int i = 0;
        const cJSON *o = ours->child;
        for (const cJSON *g = golden->child; g; g = g->next, o = o->next, i++) {
            char sub[256];
            snprintf(sub, sizeof sub, "%s[%d]", path, i);
            if (compare(o, g, sub, why, why_len, leaves))
                return -1;
        }
        return 0;
    }
    if (cJSON_IsObject(golden)) {
        if (!cJSON_IsObject(ours))
            return snprintf(why, why_len, "%s: expected an object", path), -1;
        for (const cJSON *o = ours->child; o; o = o->next)
            if (!cJSON_GetObjectItemCaseSensitive(golden, o->string))
                return snprintf(why, why_len, "%s.%s: extra leaf (not in the golden tree)", path, o->string), -1;
        for (const cJSON *g = golden->child; g; g = g->next) {
            char sub[256];
            snprintf(sub, sizeof sub, "%s.%s", path, g->string);
            const cJSON *o = cJSON_GetObjectItemCaseSensitive(ours, g->string);
            if (!o)
                return snprintf(why, why_len, "%s: missing leaf", sub), -1;
            if (compare(o, g, sub, why, why_len, leaves))
                return -1;
            if (!is_subtree(g))
                (*leaves)++;
        }
        return 0;
    }
    return snprintf(why, why_len, "%s: unexpected JSON type in golden tree", path), -1;
}

int golden_compare_tree(const cJSON *ours, const cJSON *golden, const char *path, char *why, size_t why_len)
{
    int leaves = 0;
    return compare(ours, golden, path, why, why_len, &leaves) ? -1 : leaves;
}

int golden_compare_buffer(const fs_model *m, const float *buffer, const char *golden_path, char *why, size_t why_len)
{
    fs_st_file f;
    fs_error err = {{0}};
    if (fs_st_read(golden_path, &f, &err))
        return snprintf(why, why_len, "%s", err.msg), -1;
    int rc = 0;
    if (f.count != m->layout.count) {
        snprintf(why, why_len, "%s holds %d tensors, the model has %d", golden_path, f.count, m->layout.count);
        rc = -1;
    }
    for (int i = 0; i < m->layout.count && rc == 0; i++) {
        const fs_param_desc *t = &m->layout.tensors[i];
        const fs_st_tensor *g = fs_st_find(&f, t->name);
        if (!g || g->numel != t->numel) {
            snprintf(why, why_len, "%s: tensor %s missing or of another size", golden_path, t->name);
            rc = -1;
            break;
        }
        double mx = 0, worst = 0;
        for (size_t j = 0; j < t->numel; j++)
            mx = fmax(mx, fabs(g->data[j]));
        for (size_t j = 0; j < t->numel; j++)
            worst = fmax(worst, fabs((double)buffer[t->offset + j] - g->data[j]));
        if (worst > 1e-4 * (mx > 0 ? mx : 1)) {
            snprintf(why, why_len, "%s: tensor %s differs by %.3g (max magnitude %.3g)", golden_path, t->name, worst, mx);
            rc = -1;
        }
    }
    fs_st_free(&f);
    return rc;
}

void golden_load_model(const char *name, fs_model *m)
{
    char path[512];
    fs_run_config cfg;
    fs_run_config_default(&cfg);
    fs_error err = {{0}};
    snprintf(path, sizeof path, GOLDEN_DIR "/%s/config.json", name);
    cr_assert_eq(fs_run_config_load(path, &cfg, &err), 0, "%s", err.msg);
    snprintf(path, sizeof path, GOLDEN_DIR "/%s/params.safetensors", name);
    cr_assert_eq(fs_model_load(m, &cfg.model, path, &err), 0, "%s", err.msg);
    fs_run_config_free(&cfg);
}

void golden_held_open(golden_held *g, const char *name, const char *input, const fs_held_source *src, int threads)
{
    fs_error err = {{0}};
    char path[512];
    memset(g, 0, sizeof *g);
    golden_load_model(name, &g->m);
    snprintf(path, sizeof path, GOLDEN_DIR "/%s/%s", name, input);
    cr_assert_eq(fs_seq_batch_load(path, g->m.cfg.input_dim, g->m.cfg.num_classes, &g->batch, &err), 0, "%s", err.msg);
    fs_train_config tc = {0};
    fs_optim_config oc = fs_optim_config_from_train(&tc);
    oc.weight_decay = 0;
    cr_assert_eq(fs_trainer_init(&g->t, &g->m, g->batch.P, g->batch.B, threads, &oc, &err), 0, "%s", err.msg);
    fs_acts_set_inputs(&g->t.acts, g->batch.examples, g->batch.labels, 0, g->batch.B);
    cr_assert_eq(fs_held_load(&g->held, src, &g->m.cfg, g->batch.P, g->batch.B, &err), 0, "%s", err.msg);
    cr_assert_eq(fs_held_bind(&g->hc, &g->held, &g->t.acts, &err), 0, "%s", err.msg);
    cr_assert_eq(fs_trainer_hold(&g->t, &g->hc, &err), 0, "%s", err.msg);
    g->t.clamps = fs_held_update(&g->hc, &g->m, &g->t.acts, g->batch.B);
}

void golden_held_close(golden_held *g)
{
    fs_held_unbind(&g->hc);
    fs_held_free(&g->held);
    fs_trainer_free(&g->t);
    fs_seq_batch_free(&g->batch);
    fs_model_free(&g->m);
}
