/* Config loading: one table of keys per section (docs/formats.md). */
#include "fewshot/config.h"
#include "base/fileio.h"

#include <cjson/cJSON.h>
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum {
    K_INT, K_I64, K_DBL, K_BOOL, K_STR, K_INT3, K_DBL3, K_MLP_RATIO,
    K_POS, K_DATA_TYPE, K_OPTIMIZER, K_SPLIT, K_RELABEL, K_SAMPLERS, K_EVALUATORS,
    K_SCHED, K_MEASURE_SET
} key_kind;

typedef struct {
    const char *name;
    const char *alias; /* the reference's option name, accepted too */
    key_kind kind;
    size_t offset;
    size_t size; /* for strings */
    double min, max;
} key_desc;

#define NOLIM -1e300, 1e300
#define KEY(...) KEY_(__VA_ARGS__)
#define KEY_(s, name, alias, kind, field, lo, hi) {name, alias, kind, offsetof(s, field), sizeof(((s *)0)->field), lo, hi}

static const key_desc model_keys[] = {
    KEY(fs_model_config, "input_dim", NULL, K_INT, input_dim, 1, 1 << 20),
    KEY(fs_model_config, "num_classes", "model_output_classes", K_INT, num_classes, 1, 1 << 20),
    KEY(fs_model_config, "d_model", NULL, K_INT, d_model, 2, 1 << 16),
    KEY(fs_model_config, "num_heads", NULL, K_INT, num_heads, 1, 1 << 12),
    KEY(fs_model_config, "depth", NULL, K_INT, depth, 1, FS_MAX_DEPTH),
    KEY(fs_model_config, "mlp_ratio", NULL, K_MLP_RATIO, mlp_ratio, 0, 1024),
    KEY(fs_model_config, "pos_embedding", "pos_embedding_type", K_POS, pos_embedding, NOLIM),
    KEY(fs_model_config, "rope_base", "sin_time", K_DBL, rope_base, 1e-6, 1e30),
    KEY(fs_model_config, "init_seed", NULL, K_I64, init_seed, 0, 9.0e18),
    KEY(fs_model_config, "init_rescale", NULL, K_DBL, init_rescale, NOLIM),
    KEY(fs_model_config, "qkv_bias", NULL, K_BOOL, qkv_bias, NOLIM),
    KEY(fs_model_config, "no_norm", NULL, K_BOOL, no_norm, NOLIM),
    {0},
};

static const key_desc data_keys[] = {
    KEY(fs_data_config, "file", "data_file", K_STR, file, NOLIM),
    KEY(fs_data_config, "path", "data_path_in_file", K_STR, path, NOLIM),
    KEY(fs_data_config, "type", "data_type", K_DATA_TYPE, type, NOLIM),
    KEY(fs_data_config, "onehot_classes", NULL, K_INT, onehot_classes, 0, 1 << 20),
    KEY(fs_data_config, "class_split", NULL, K_INT3, class_split, 0, 1 << 30),
    KEY(fs_data_config, "exemplar_split", NULL, K_INT3, exemplar_split, 0, 1 << 30),
    KEY(fs_data_config, "fs_relabel", NULL, K_INT, fs_relabel, 0, 1 << 16),
    KEY(fs_data_config, "fs_relabel_split", NULL, K_DBL3, fs_relabel_split, 0, 1e9),
    KEY(fs_data_config, "fs_relabel_split_seed", NULL, K_I64, fs_relabel_split_seed, 0, 9.0e18),
    KEY(fs_data_config, "noise_scale", "noise_scale_train", K_DBL, noise_scale, 0, 1e9),
    KEY(fs_data_config, "zipf_alpha", NULL, K_DBL, zipf_alpha, 0, 1e3),
    KEY(fs_data_config, "match_query_and_distractors", NULL, K_BOOL, match_query_and_distractors, NOLIM),
    KEY(fs_data_config, "assign_query_label_random", NULL, K_BOOL, assign_query_label_random, NOLIM),
    {0},
};

static const key_desc train_keys[] = {
    KEY(fs_train_config, "train_iters", NULL, K_I64, train_iters, 0, 9.0e18),
    KEY(fs_train_config, "train_bs", NULL, K_INT, train_bs, 1, 1 << 20),
    KEY(fs_train_config, "train_context_len", NULL, K_INT, train_context_len, 0, 4096),
    KEY(fs_train_config, "lr", NULL, K_DBL, lr, 0, 1e6),
    KEY(fs_train_config, "optimizer", NULL, K_OPTIMIZER, optimizer, NOLIM),
    KEY(fs_train_config, "weight_decay", NULL, K_DBL, weight_decay, 0, 1e6),
    KEY(fs_train_config, "warmup_steps", NULL, K_I64, warmup_steps, 0, 9.0e18),
    KEY(fs_train_config, "decay_steps", NULL, K_I64, decay_steps, 0, 9.0e18),
    KEY(fs_train_config, "train_seed", NULL, K_I64, train_seed, 0, 9.0e18),
    KEY(fs_train_config, "samplers", NULL, K_SAMPLERS, samplers, NOLIM),
    KEY(fs_train_config, "eval_every", NULL, K_I64, eval_every, 0, 9.0e18),
    KEY(fs_train_config, "ckpt_every", NULL, K_I64, ckpt_every, 0, 9.0e18),
    KEY(fs_train_config, "log_every", NULL, K_I64, log_every, 1, 9.0e18),
    KEY(fs_train_config, "threads", NULL, K_INT, threads, 0, 1024),
    KEY(fs_train_config, "eval_sched", NULL, K_SCHED, eval_sched, 0, 9.0e18),
    KEY(fs_train_config, "eval_log_points", NULL, K_INT, eval_log_points, 0, 100000),
    KEY(fs_train_config, "ckpt_sched", NULL, K_SCHED, ckpt_sched, 0, 9.0e18),
    {0},
};

static const key_desc sampler_keys[] = {
    KEY(fs_sampler_config, "mixing_coeff", NULL, K_DBL, mixing_coeff, 0, 1e9),
    KEY(fs_sampler_config, "burstiness", NULL, K_INT, burstiness, 0, 4096),
    KEY(fs_sampler_config, "distract", NULL, K_BOOL, distract, NOLIM),
    KEY(fs_sampler_config, "no_support", NULL, K_BOOL, no_support, NOLIM),
    KEY(fs_sampler_config, "unique_rest", NULL, K_BOOL, unique_rest, NOLIM),
    {0},
};

static const key_desc eval_keys[] = {
    KEY(fs_eval_config, "eval_seed", NULL, K_I64, eval_seed, 0, 9.0e18),
    KEY(fs_eval_config, "eval_iters", NULL, K_INT, eval_iters, 1, 1 << 30),
    KEY(fs_eval_config, "eval_bs", NULL, K_INT, eval_bs, 1, 1 << 20),
    KEY(fs_eval_config, "evaluators", NULL, K_EVALUATORS, evaluators, NOLIM),
    {0},
};

static const key_desc evaluator_keys[] = {
    KEY(fs_evaluator_config, "name", NULL, K_STR, name, NOLIM),
    KEY(fs_evaluator_config, "classes", NULL, K_SPLIT, classes, NOLIM),
    KEY(fs_evaluator_config, "exemplars", NULL, K_SPLIT, exemplars, NOLIM),
    KEY(fs_evaluator_config, "burstiness", NULL, K_INT, burstiness, 0, 4096),
    KEY(fs_evaluator_config, "fs_relabel_scheme", NULL, K_RELABEL, fs_relabel_scheme, NOLIM),
    KEY(fs_evaluator_config, "context_len", NULL, K_INT, context_len, 0, 4096),
    KEY(fs_evaluator_config, "distract", NULL, K_BOOL, distract, NOLIM),
    KEY(fs_evaluator_config, "no_support", NULL, K_BOOL, no_support, NOLIM),
    KEY(fs_evaluator_config, "unique_rest", NULL, K_BOOL, unique_rest, NOLIM),
    KEY(fs_evaluator_config, "noise_scale", NULL, K_DBL, noise_scale, -1, 1e9),
    KEY(fs_evaluator_config, "assign_query_label_random", NULL, K_BOOL, assign_query_label_random, NOLIM),
    {0},
};

static const key_desc measures_keys[] = {
    KEY(fs_measures_config, "enable", NULL, K_BOOL, enable, NOLIM),
    KEY(fs_measures_config, "probe_size", NULL, K_INT, probe_size, 1, 1 << 20),
    KEY(fs_measures_config, "probe_seed", NULL, K_I64, probe_seed, 0, 9.0e18),
    KEY(fs_measures_config, "which", NULL, K_MEASURE_SET, which, NOLIM),
    {0},
};

const char *const fs_measure_names[FS_NUM_MEASURES] = {"induction_strength", "prev_token_strength",
                                                       "label_attention", "ablate_head_acc", "only_head_acc"};

static const char *const pos_names[] = {"rope", "ape", "sinusoidal", NULL};
static const char *const data_type_names[] = {"file", "onehot", NULL};
static const char *const optimizer_names[] = {"adam", "sgd", "warmup_decay", "cosine", NULL};
static const char *const split_names[] = {"train", "val", "test", "all", NULL};
static const char *const relabel_names[] = {"train", "val", "test", "all", "none", NULL};

const char *fs_split_name(fs_split s) { return (s >= 0 && s <= FS_SPLIT_NONE) ? relabel_names[s] : "?"; }

int fs_mlp_hidden(const fs_model_config *m) { return m->mlp_ratio > 0 ? (int)(m->d_model * m->mlp_ratio) : 0; }

void fs_model_config_default(fs_model_config *m)
{
    *m = (fs_model_config){
        .input_dim = 512, .num_classes = 5, .d_model = 64, .num_heads = 8, .depth = 2, .mlp_ratio = 4.0,
        .pos_embedding = FS_POS_ROPE, .rope_base = 10000.0, .init_seed = 0, .init_rescale = 1.0,
        .qkv_bias = false, .no_norm = false,
    };
}

static fs_sampler_config default_sampler(void)
{
    return (fs_sampler_config){.mixing_coeff = 1.0, .burstiness = 1, .distract = true};
}

static fs_evaluator_config default_evaluator(void)
{
    return (fs_evaluator_config){.name = "eval", .classes = FS_SPLIT_TRAIN, .exemplars = FS_SPLIT_TRAIN,
                                 .burstiness = 1, .fs_relabel_scheme = FS_SPLIT_TRAIN, .distract = true,
                                 .noise_scale = -1};
}

static void set_evaluator(fs_evaluator_config *e, const char *name, fs_split classes, fs_split exemplars,
                          fs_split relabel)
{
    *e = default_evaluator();
    snprintf(e->name, sizeof e->name, "%s", name);
    e->classes = classes;
    e->exemplars = exemplars;
    e->fs_relabel_scheme = relabel;
}

/* Defaults: the reference's main induction-head run (reference/ih_main_run.md). */
void fs_run_config_default(fs_run_config *c)
{
    memset(c, 0, sizeof *c);
    fs_model_config_default(&c->model);
    fs_data_config *d = &c->data;
    snprintf(d->path, sizeof d->path, "resnet18/224/feat");
    d->type = FS_DATA_FILE;
    d->onehot_classes = 0;
    d->class_split[0] = 50, d->class_split[1] = 1473, d->class_split[2] = 100;
    d->exemplar_split[0] = 1, d->exemplar_split[1] = 4, d->exemplar_split[2] = 0;
    d->fs_relabel = 5;
    d->fs_relabel_split[0] = 8, d->fs_relabel_split[1] = 2, d->fs_relabel_split[2] = 0;
    d->fs_relabel_split_seed = 20;
    fs_train_config *t = &c->train;
    t->train_iters = 1000000;
    t->train_bs = 32;
    t->train_context_len = 2;
    t->lr = 1e-5;
    t->optimizer = FS_OPT_ADAM;
    t->warmup_steps = 4000;
    t->decay_steps = 1000000;
    t->train_seed = 0;
    t->num_samplers = 1;
    t->samplers[0] = default_sampler();
    t->eval_every = 25000;
    t->ckpt_every = 0;
    t->log_every = 3200;
    fs_eval_config *e = &c->eval;
    e->eval_seed = 1;
    e->eval_iters = 1000;
    e->eval_bs = 1000;
    c->measures = (fs_measures_config){.enable = false, .probe_size = 512, .probe_seed = 2,
                                       .which = (1u << FS_NUM_MEASURES) - 1};
    e->num_evaluators = 4;
    set_evaluator(&e->evaluators[0], "fsl_train", FS_SPLIT_TRAIN, FS_SPLIT_TRAIN, FS_SPLIT_TRAIN);
    set_evaluator(&e->evaluators[1], "fsl_val_rl", FS_SPLIT_TRAIN, FS_SPLIT_TRAIN, FS_SPLIT_VAL);
    set_evaluator(&e->evaluators[2], "fsl_train_valex", FS_SPLIT_TRAIN, FS_SPLIT_VAL, FS_SPLIT_TRAIN);
    set_evaluator(&e->evaluators[3], "fsl_test_class", FS_SPLIT_TEST, FS_SPLIT_ALL, FS_SPLIT_TRAIN);
}

void fs_run_config_free(fs_run_config *c)
{
    if (c && c->clamps.named) {
        cJSON_Delete(c->clamps.named);
        c->clamps.named = NULL;
    }
}

static int parse_enum(const cJSON *v, const char *const *names, int *out)
{
    if (!cJSON_IsString(v))
        return -1;
    for (int i = 0; names[i]; i++)
        if (strcmp(v->valuestring, names[i]) == 0) {
            *out = i;
            return 0;
        }
    return -1;
}

static const char *const *enum_names(key_kind kind)
{
    switch (kind) {
    case K_POS: return pos_names;
    case K_DATA_TYPE: return data_type_names;
    case K_OPTIMIZER: return optimizer_names;
    case K_SPLIT: return split_names;
    case K_RELABEL: return relabel_names;
    default: return NULL;
    }
}

static void join_names(const char *const *names, char *buf, size_t n)
{
    buf[0] = 0;
    for (int i = 0; names[i]; i++)
        snprintf(buf + strlen(buf), n - strlen(buf), "%s\"%s\"", i ? ", " : "", names[i]);
}

static int get_number(const cJSON *v, const char *origin, const char *where, const key_desc *k, double *out,
                      bool integer, fs_error *err)
{
    if (!cJSON_IsNumber(v))
        return fs_fail(err, "%s: %s: expected a number, got %s", origin, where,
                       cJSON_IsString(v) ? "a string" : cJSON_IsBool(v) ? "a boolean" : cJSON_IsNull(v) ? "null" : "another type");
    double x = v->valuedouble;
    if (!isfinite(x))
        return fs_fail(err, "%s: %s: expected a finite number", origin, where);
    if (integer && x != floor(x))
        return fs_fail(err, "%s: %s: expected an integer, got %g", origin, where, x);
    if (x < k->min || x > k->max)
        return fs_fail(err, "%s: %s: %g is out of range [%g, %g]", origin, where, x, k->min, k->max);
    *out = x;
    return 0;
}

static int apply_section(const cJSON *obj, const key_desc *keys, void *base, const char *origin,
                         const char *section, fs_error *err);

static int apply_list(const cJSON *v, const key_desc *item_keys, void *items, size_t item_size, int max_items,
                      int *count, void (*init_item)(void *), const char *origin, const char *where, fs_error *err)
{
    if (!cJSON_IsArray(v))
        return fs_fail(err, "%s: %s: expected a list of objects", origin, where);
    int n = cJSON_GetArraySize(v);
    if (n < 1 || n > max_items)
        return fs_fail(err, "%s: %s: expected 1 to %d entries, got %d", origin, where, max_items, n);
    for (int i = 0; i < n; i++) {
        char sub[256];
        snprintf(sub, sizeof sub, "%s[%d]", where, i);
        void *item = (char *)items + (size_t)i * item_size;
        init_item(item);
        if (apply_section(cJSON_GetArrayItem(v, i), item_keys, item, origin, sub, err))
            return -1;
    }
    *count = n;
    return 0;
}

/* An increasing list of sequence counts. */
static int apply_sched(const cJSON *v, const key_desc *k, fs_sched *s, const char *origin, const char *where,
                       fs_error *err)
{
    if (!cJSON_IsArray(v))
        return fs_fail(err, "%s: %s: expected a list of sequence counts, e.g. [1000, 5000, 20000]", origin, where);
    int n = cJSON_GetArraySize(v);
    if (n > FS_MAX_SCHED)
        return fs_fail(err, "%s: %s: expected at most %d entries, got %d", origin, where, FS_MAX_SCHED, n);
    for (int i = 0; i < n; i++) {
        char sub[256];
        double x;
        snprintf(sub, sizeof sub, "%s[%d]", where, i);
        if (get_number(cJSON_GetArrayItem(v, i), origin, sub, k, &x, true, err))
            return -1;
        s->at[i] = (int64_t)x;
        if (i > 0 && s->at[i] <= s->at[i - 1])
            return fs_fail(err, "%s: %s: %lld is not greater than the entry before it (%lld); expected an "
                                "increasing list", origin, sub, (long long)s->at[i], (long long)s->at[i - 1]);
    }
    s->n = n;
    return 0;
}

/* A list of measure names -> bit set. */
static int apply_measure_set(const cJSON *v, unsigned *out, const char *origin, const char *where, fs_error *err)
{
    char names[300] = "";
    for (int m = 0; m < FS_NUM_MEASURES; m++)
        snprintf(names + strlen(names), sizeof names - strlen(names), "%s\"%s\"", m ? ", " : "", fs_measure_names[m]);
    if (!cJSON_IsArray(v))
        return fs_fail(err, "%s: %s: expected a list of measure names (%s)", origin, where, names);
    unsigned set = 0;
    int i = 0;
    for (const cJSON *it = v->child; it; it = it->next, i++) {
        int m = 0;
        while (m < FS_NUM_MEASURES && !(cJSON_IsString(it) && !strcmp(it->valuestring, fs_measure_names[m])))
            m++;
        if (m == FS_NUM_MEASURES)
            return fs_fail(err, "%s: %s[%d]: expected one of %s", origin, where, i, names);
        set |= 1u << m;
    }
    *out = set;
    return 0;
}

static void init_sampler(void *p) { *(fs_sampler_config *)p = default_sampler(); }
static void init_evaluator(void *p) { *(fs_evaluator_config *)p = default_evaluator(); }

static int apply_key(const cJSON *v, const key_desc *k, void *base, const char *origin, const char *where,
                     fs_error *err)
{
    char *field = (char *)base + k->offset;
    double x;
    switch (k->kind) {
    case K_INT:
        if (get_number(v, origin, where, k, &x, true, err))
            return -1;
        *(int *)field = (int)x;
        return 0;
    case K_I64:
        if (get_number(v, origin, where, k, &x, true, err))
            return -1;
        *(int64_t *)field = (int64_t)x;
        return 0;
    case K_DBL:
        if (get_number(v, origin, where, k, &x, false, err))
            return -1;
        *(double *)field = x;
        return 0;
    case K_MLP_RATIO: /* null or 0 = attention-only */
        if (cJSON_IsNull(v)) {
            *(double *)field = 0;
            return 0;
        }
        if (get_number(v, origin, where, k, &x, false, err))
            return -1;
        *(double *)field = x;
        return 0;
    case K_BOOL:
        if (!cJSON_IsBool(v))
            return fs_fail(err, "%s: %s: expected true or false", origin, where);
        *(bool *)field = cJSON_IsTrue(v);
        return 0;
    case K_STR:
        if (!cJSON_IsString(v))
            return fs_fail(err, "%s: %s: expected a string", origin, where);
        if (strlen(v->valuestring) >= k->size)
            return fs_fail(err, "%s: %s: string longer than %zu characters", origin, where, k->size - 1);
        snprintf(field, k->size, "%s", v->valuestring);
        return 0;
    case K_INT3:
    case K_DBL3: {
        if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) != 3)
            return fs_fail(err, "%s: %s: expected a list of 3 numbers [train, val, test]", origin, where);
        for (int i = 0; i < 3; i++) {
            char sub[256];
            snprintf(sub, sizeof sub, "%s[%d]", where, i);
            if (get_number(cJSON_GetArrayItem(v, i), origin, sub, k, &x, k->kind == K_INT3, err))
                return -1;
            if (k->kind == K_INT3)
                ((int *)field)[i] = (int)x;
            else
                ((double *)field)[i] = x;
        }
        return 0;
    }
    case K_POS:
    case K_DATA_TYPE:
    case K_OPTIMIZER:
    case K_SPLIT:
    case K_RELABEL: {
        int idx;
        if (parse_enum(v, enum_names(k->kind), &idx)) {
            char names[200];
            join_names(enum_names(k->kind), names, sizeof names);
            return fs_fail(err, "%s: %s: expected one of %s", origin, where, names);
        }
        *(int *)field = idx;
        return 0;
    }
    case K_SAMPLERS: {
        fs_train_config *t = (fs_train_config *)base;
        return apply_list(v, sampler_keys, t->samplers, sizeof t->samplers[0], FS_MAX_SAMPLERS, &t->num_samplers,
                          init_sampler, origin, where, err);
    }
    case K_SCHED:
        return apply_sched(v, k, (fs_sched *)field, origin, where, err);
    case K_MEASURE_SET:
        return apply_measure_set(v, (unsigned *)field, origin, where, err);
    case K_EVALUATORS: {
        fs_eval_config *e = (fs_eval_config *)base;
        return apply_list(v, evaluator_keys, e->evaluators, sizeof e->evaluators[0], FS_MAX_EVALUATORS,
                          &e->num_evaluators, init_evaluator, origin, where, err);
    }
    }
    return fs_fail(err, "%s: %s: internal error (unknown key kind)", origin, where);
}

static const key_desc *find_key(const key_desc *keys, const char *name)
{
    for (const key_desc *k = keys; k->name; k++)
        if (strcmp(k->name, name) == 0 || (k->alias && strcmp(k->alias, name) == 0))
            return k;
    return NULL;
}

static int apply_section(const cJSON *obj, const key_desc *keys, void *base, const char *origin,
                         const char *section, fs_error *err)
{
    if (!cJSON_IsObject(obj))
        return fs_fail(err, "%s: %s: expected an object", origin, section);
    for (const cJSON *v = obj->child; v; v = v->next) {
        char where[200];
        snprintf(where, sizeof where, "%s.%s", section, v->string);
        const key_desc *k = find_key(keys, v->string);
        if (!k) {
            char known[1024] = "";
            for (const key_desc *q = keys; q->name; q++)
                snprintf(known + strlen(known), sizeof known - strlen(known), "%s%s", q == keys ? "" : ", ", q->name);
            return fs_fail(err, "%s: unknown key \"%s\" (known keys: %s)", origin, where, known);
        }
        if (apply_key(v, k, base, origin, where, err))
            return -1;
    }
    return 0;
}

int fs_model_config_from_json(const cJSON *model, const char *origin, fs_model_config *m, fs_error *err)
{
    return apply_section(model, model_keys, m, origin, "model", err);
}

int fs_run_config_apply(const cJSON *root, const char *origin, fs_run_config *c, fs_error *err)
{
    if (!cJSON_IsObject(root))
        return fs_fail(err, "%s: expected a JSON object with sections model, data, train, eval, measures, clamps", origin);
    for (const cJSON *s = root->child; s; s = s->next) {
        int rc;
        if (strcmp(s->string, "model") == 0) {
            rc = apply_section(s, model_keys, &c->model, origin, "model", err);
            c->has_model = true;
            c->input_dim_given |= cJSON_HasObjectItem(s, "input_dim");
            c->num_classes_given |= cJSON_HasObjectItem(s, "num_classes") || cJSON_HasObjectItem(s, "model_output_classes");
        } else if (strcmp(s->string, "data") == 0) {
            rc = apply_section(s, data_keys, &c->data, origin, "data", err);
            c->has_data = true;
        } else if (strcmp(s->string, "train") == 0) {
            rc = apply_section(s, train_keys, &c->train, origin, "train", err);
            c->has_train = true;
        } else if (strcmp(s->string, "eval") == 0) {
            rc = apply_section(s, eval_keys, &c->eval, origin, "eval", err);
            c->has_eval = true;
        } else if (strcmp(s->string, "measures") == 0) {
            rc = apply_section(s, measures_keys, &c->measures, origin, "measures", err);
        } else if (strcmp(s->string, "clamps") == 0) {
            if (!cJSON_IsObject(s))
                return fs_fail(err, "%s: clamps: expected an object", origin);
            rc = 0;
            const cJSON *cache = cJSON_GetObjectItemCaseSensitive(s, "cache");
            const cJSON *mask = cJSON_GetObjectItemCaseSensitive(s, "mask");
            if (cache && !cJSON_IsString(cache))
                return fs_fail(err, "%s: clamps.cache: expected a file name", origin);
            if (mask && !cJSON_IsString(mask))
                return fs_fail(err, "%s: clamps.mask: expected a file name", origin);
            const cJSON *too_long = cache && strlen(cache->valuestring) >= sizeof c->clamps.cache_file ? cache
                                    : mask && strlen(mask->valuestring) >= sizeof c->clamps.mask_file   ? mask
                                                                                                        : NULL;
            if (too_long) /* never cut a file name short */
                return fs_fail(err, "%s: clamps.%s: file name is %zu bytes, longer than the %zu allowed", origin,
                               too_long->string, strlen(too_long->valuestring), sizeof c->clamps.cache_file - 1);
            if (cache)
                snprintf(c->clamps.cache_file, sizeof c->clamps.cache_file, "%s", cache->valuestring);
            if (mask)
                snprintf(c->clamps.mask_file, sizeof c->clamps.mask_file, "%s", mask->valuestring);
            if (c->clamps.named)
                cJSON_Delete(c->clamps.named);
            c->clamps.named = cJSON_Duplicate(s, 1);
            c->has_clamps = true;
        } else {
            return fs_fail(err, "%s: unknown section \"%s\" (known: model, data, train, eval, measures, clamps)", origin,
                           s->string);
        }
        if (rc)
            return -1;
    }
    return 0;
}

int fs_run_config_load(const char *path, fs_run_config *c, fs_error *err)
{
    cJSON *root = fs_json_load(path, err);
    if (!root)
        return -1;
    int rc = fs_run_config_apply(root, path, c, err);
    cJSON_Delete(root);
    return rc;
}

int fs_run_config_set(fs_run_config *c, const char *assignment, fs_error *err)
{
    const char *eq = strchr(assignment, '=');
    const char *dot = strchr(assignment, '.');
    if (!eq || !dot || dot > eq)
        return fs_fail(err, "--set %s: expected section.key=value", assignment);
    char section[64], key[128];
    if ((size_t)(dot - assignment) >= sizeof section || (size_t)(eq - dot - 1) >= sizeof key)
        return fs_fail(err, "--set %.80s...: section or key name too long", assignment);
    snprintf(section, sizeof section, "%.*s", (int)(dot - assignment), assignment);
    snprintf(key, sizeof key, "%.*s", (int)(eq - dot - 1), dot + 1);
    cJSON *value = cJSON_Parse(eq + 1);
    if (!value)
        value = cJSON_CreateString(eq + 1);
    cJSON *root = cJSON_CreateObject();
    cJSON *sec = cJSON_AddObjectToObject(root, section);
    cJSON_AddItemToObject(sec, key, value);
    char origin[200];
    snprintf(origin, sizeof origin, "--set %s", assignment);
    int rc = fs_run_config_apply(root, origin, c, err);
    cJSON_Delete(root);
    return rc;
}

int fs_model_config_validate(const fs_model_config *m, const char *origin, fs_error *err)
{
    if (m->d_model % m->num_heads)
        return fs_fail(err, "%s: model.num_heads: %d does not divide model.d_model %d", origin, m->num_heads,
                       m->d_model);
    if (m->pos_embedding == FS_POS_ROPE && (m->d_model / m->num_heads) % 2)
        return fs_fail(err, "%s: model: RoPE needs an even head dimension, d_model/num_heads = %d", origin,
                       m->d_model / m->num_heads);
    if (m->pos_embedding == FS_POS_SINUSOIDAL && m->d_model % 2)
        return fs_fail(err, "%s: model: sinusoidal embeddings need an even d_model, got %d", origin, m->d_model);
    if (m->mlp_ratio > 0 && fs_mlp_hidden(m) < 1)
        return fs_fail(err, "%s: model.mlp_ratio: %g gives an empty MLP hidden layer", origin, m->mlp_ratio);
    return 0;
}

int fs_run_config_validate(const fs_run_config *c, const char *origin, fs_error *err)
{
    if (fs_model_config_validate(&c->model, origin, err))
        return -1;
    const fs_train_config *t = &c->train;
    if (t->train_seed == c->eval.eval_seed)
        return fs_fail(err, "%s: train.train_seed and eval.eval_seed must differ (both %lld)", origin,
                       (long long)t->train_seed);
    double mix = 0;
    for (int i = 0; i < t->num_samplers; i++)
        mix += t->samplers[i].mixing_coeff;
    if (!(mix > 0))
        return fs_fail(err, "%s: train.samplers: mixing coefficients must sum to a positive number", origin);
    /* cross-field constraints: settings that are each valid but make no sense together */
    if (t->optimizer == FS_OPT_COSINE && t->decay_steps <= t->warmup_steps)
        return fs_fail(err, "%s: train.decay_steps (%lld) must be greater than train.warmup_steps (%lld) with "
                       "optimizer \"cosine\" (the schedule decays over the steps between them; otherwise lr is 0 "
                       "after warmup)", origin, (long long)t->decay_steps, (long long)t->warmup_steps);
    if (t->optimizer == FS_OPT_WARMUP_DECAY && t->decay_steps < 1)
        return fs_fail(err, "%s: train.decay_steps must be >= 1 with optimizer \"warmup_decay\"", origin);
    size_t n;
    int P = t->train_context_len + 1;
    if (fs_size_mul(&n, INT_MAX, FS_DIMS((size_t)t->train_bs, (size_t)P, (size_t)c->model.input_dim)))
        return fs_fail(err, "%s: train.train_bs %d x (train_context_len + 1) %d x input_dim %d is too large a batch",
                       origin, t->train_bs, P, c->model.input_dim);
    for (int i = 0; i < c->eval.num_evaluators; i++) {
        int ctx = c->eval.evaluators[i].context_len ? c->eval.evaluators[i].context_len : t->train_context_len;
        if (fs_size_mul(&n, INT_MAX, FS_DIMS((size_t)c->eval.eval_iters, (size_t)ctx + 1)))
            return fs_fail(err, "%s: eval.eval_iters %d x (context_len + 1) %d of evaluator '%s' is too many tokens",
                           origin, c->eval.eval_iters, ctx + 1, c->eval.evaluators[i].name);
    }
    return 0;
}

static const char *enum_str(key_kind kind, int v) { return enum_names(kind)[v]; }

static void add_key(cJSON *obj, const key_desc *k, const void *base);

static cJSON *section_to_json(const key_desc *keys, const void *base)
{
    cJSON *obj = cJSON_CreateObject();
    for (const key_desc *k = keys; k->name; k++)
        add_key(obj, k, base);
    return obj;
}

static void add_key(cJSON *obj, const key_desc *k, const void *base)
{
    const char *field = (const char *)base + k->offset;
    switch (k->kind) {
    case K_INT: cJSON_AddNumberToObject(obj, k->name, *(const int *)field); break;
    case K_I64: cJSON_AddNumberToObject(obj, k->name, (double)*(const int64_t *)field); break;
    case K_DBL:
    case K_MLP_RATIO: cJSON_AddNumberToObject(obj, k->name, *(const double *)field); break;
    case K_BOOL: cJSON_AddBoolToObject(obj, k->name, *(const bool *)field); break;
    case K_STR: cJSON_AddStringToObject(obj, k->name, field); break;
    case K_INT3: cJSON_AddItemToObject(obj, k->name, cJSON_CreateIntArray((const int *)field, 3)); break;
    case K_DBL3: cJSON_AddItemToObject(obj, k->name, cJSON_CreateDoubleArray((const double *)field, 3)); break;
    case K_POS:
    case K_DATA_TYPE:
    case K_OPTIMIZER:
    case K_SPLIT:
    case K_RELABEL: cJSON_AddStringToObject(obj, k->name, enum_str(k->kind, *(const int *)field)); break;
    case K_SAMPLERS: {
        const fs_train_config *t = base;
        cJSON *arr = cJSON_AddArrayToObject(obj, k->name);
        for (int i = 0; i < t->num_samplers; i++)
            cJSON_AddItemToArray(arr, section_to_json(sampler_keys, &t->samplers[i]));
        break;
    }
    case K_SCHED: {
        const fs_sched *sc = (const fs_sched *)field;
        cJSON *arr = cJSON_AddArrayToObject(obj, k->name);
        for (int i = 0; i < sc->n; i++)
            cJSON_AddItemToArray(arr, cJSON_CreateNumber((double)sc->at[i]));
        break;
    }
    case K_MEASURE_SET: {
        cJSON *arr = cJSON_AddArrayToObject(obj, k->name);
        for (int m = 0; m < FS_NUM_MEASURES; m++)
            if (*(const unsigned *)field & (1u << m))
                cJSON_AddItemToArray(arr, cJSON_CreateString(fs_measure_names[m]));
        break;
    }
    case K_EVALUATORS: {
        const fs_eval_config *e = base;
        cJSON *arr = cJSON_AddArrayToObject(obj, k->name);
        for (int i = 0; i < e->num_evaluators; i++)
            cJSON_AddItemToArray(arr, section_to_json(evaluator_keys, &e->evaluators[i]));
        break;
    }
    }
}

cJSON *fs_model_config_to_json(const fs_model_config *m) { return section_to_json(model_keys, m); }

cJSON *fs_run_config_to_json(const fs_run_config *c)
{
    cJSON *root = cJSON_CreateObject();
    cJSON_AddItemToObject(root, "model", section_to_json(model_keys, &c->model));
    cJSON_AddItemToObject(root, "data", section_to_json(data_keys, &c->data));
    cJSON_AddItemToObject(root, "train", section_to_json(train_keys, &c->train));
    cJSON_AddItemToObject(root, "eval", section_to_json(eval_keys, &c->eval));
    cJSON_AddItemToObject(root, "measures", section_to_json(measures_keys, &c->measures));
    if (c->clamps.named || c->clamps.cache_file[0] || c->clamps.mask_file[0]) {
        /* the clamp files in force: the section may have been replaced since they were set */
        cJSON *sec = c->clamps.named ? cJSON_Duplicate(c->clamps.named, 1) : cJSON_CreateObject();
        const char *names[2] = {"cache", "mask"}, *files[2] = {c->clamps.cache_file, c->clamps.mask_file};
        for (int i = 0; i < 2; i++) {
            if (!files[i][0]) /* keys are case-sensitive ("caChe" is another, unknown key) */
                cJSON_DeleteItemFromObjectCaseSensitive(sec, names[i]);
            else if (cJSON_GetObjectItemCaseSensitive(sec, names[i]))
                cJSON_ReplaceItemInObjectCaseSensitive(sec, names[i], cJSON_CreateString(files[i]));
            else
                cJSON_AddStringToObject(sec, names[i], files[i]);
        }
        cJSON_AddItemToObject(root, "clamps", sec);
    }
    return root;
}

int fs_model_config_equal(const fs_model_config *a, const fs_model_config *b)
{
    return a->input_dim == b->input_dim && a->num_classes == b->num_classes && a->d_model == b->d_model &&
           a->num_heads == b->num_heads && a->depth == b->depth && fs_mlp_hidden(a) == fs_mlp_hidden(b) &&
           a->pos_embedding == b->pos_embedding && a->rope_base == b->rope_base && a->qkv_bias == b->qkv_bias &&
           a->no_norm == b->no_norm;
}
