/* The flat C API (include/fewshot/api.h): opaque handles over the model, the cache
 * layout, clamp sets, the frozen KV cache and training runs, for language bindings. */
#include "fewshot/api.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fewshot/cache.h"
#include "fewshot/config.h"
#include "fewshot/forward.h"
#include "fewshot/interventions.h"
#include "fewshot/kvcache.h"
#include "fewshot/model.h"
#include "fewshot/seqio.h"
#include "fewshot/train.h"
#include "fewshot/version.h"
#include "train/optim.h"
#include "train/trainer.h"

struct fs_api_model {
    fs_model model;
};

struct fs_api_layout {
    fs_acts acts;     /* one sequence: the leaf table for the config and P */
    int count;        /* visible leaves */
    int *leaf;        /* [count]: index into acts.leaves */
    char (*name)[128];
};

struct fs_api_clamps {
    const fs_api_layout *layout;
    fs_clamp_set set;
    int batch;        /* sequences of the per-sequence clamps, 0 if none */
};

struct fs_api_kv {
    fs_kv_cache cache;
};

const char *fs_api_version(void) { return FEWSHOT_VERSION; }

void fs_api_free(void *p) { free(p); }

/* ---- models ---- */

/* Defaults, then the JSON object's sections (a bare model section is not accepted: the
 * caller wraps it as {"model": ...}). */
static int config_from_json(const char *json, const char *origin, fs_run_config *cfg, fs_error *err)
{
    fs_run_config_default(cfg);
    if (!json)
        return 0;
    cJSON *root = cJSON_Parse(json);
    if (!root)
        return fs_fail(err, "%s: not valid JSON", origin);
    int rc = fs_run_config_apply(root, origin, cfg, err);
    cJSON_Delete(root);
    return rc;
}

static fs_api_model *model_alloc(fs_error *err)
{
    fs_api_model *h = calloc(1, sizeof *h);
    if (!h)
        fs_fail(err, "out of memory");
    return h;
}

int fs_api_model_init(const char *config_json, int64_t seed, fs_api_model **out, fs_error *err)
{
    *out = NULL;
    fs_run_config cfg;
    if (config_from_json(config_json, "config", &cfg, err))
        return -1;
    if (seed >= 0)
        cfg.model.init_seed = seed;
    fs_run_config_free(&cfg);
    if (fs_model_config_validate(&cfg.model, "config", err))
        return -1;
    fs_api_model *h = model_alloc(err);
    if (!h)
        return -1;
    if (fs_model_create(&h->model, &cfg.model, err)) {
        fs_model_free(&h->model);
        free(h);
        return -1;
    }
    fs_model_init_params(&h->model);
    *out = h;
    return 0;
}

int fs_api_model_load(const char *path, const char *config_json, fs_api_model **out, fs_error *err)
{
    *out = NULL;
    fs_run_config cfg;
    if (config_from_json(config_json, "config", &cfg, err))
        return -1;
    fs_run_config_free(&cfg);
    fs_model_config stored;
    int has = fs_model_config_from_file(path, &stored, err);
    if (has < 0)
        return -1;
    if (!config_json || !cfg.has_model) {
        if (!has)
            return fs_fail(err, "%s carries no model config in its metadata; pass a config with a \"model\" section",
                           path);
        cfg.model = stored;
    } else if (has && !fs_model_config_equal(&stored, &cfg.model)) {
        return fs_fail(err, "%s: the given model config disagrees with the one stored in the model file", path);
    }
    if (fs_model_config_validate(&cfg.model, path, err))
        return -1;
    fs_api_model *h = model_alloc(err);
    if (!h)
        return -1;
    if (fs_model_load(&h->model, &cfg.model, path, err)) {
        fs_model_free(&h->model);
        free(h);
        return -1;
    }
    *out = h;
    return 0;
}

int fs_api_model_save(const fs_api_model *m, const char *path, fs_error *err)
{
    return fs_model_save(&m->model, path, err);
}

void fs_api_model_free(fs_api_model *m)
{
    if (!m)
        return;
    fs_model_free(&m->model);
    free(m);
}

char *fs_api_model_config(const fs_api_model *m)
{
    cJSON *j = fs_model_config_to_json(&m->model.cfg);
    char *text = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    return text;
}

int fs_api_param_count(const fs_api_model *m) { return m->model.layout.count; }

const char *fs_api_param_info(const fs_api_model *m, int i, int *ndim, int64_t shape[2])
{
    const fs_param_desc *t = &m->model.layout.tensors[i];
    *ndim = t->ndim;
    shape[0] = t->shape[0];
    shape[1] = t->ndim > 1 ? t->shape[1] : 0;
    return t->name;
}

void fs_api_param_copy(const fs_api_model *m, int i, float *out)
{
    const fs_param_desc *t = &m->model.layout.tensors[i];
    memcpy(out, m->model.params + t->offset, t->numel * sizeof(float));
}

/* ---- layouts ---- */

int fs_api_layout_create(const fs_api_model *m, int P, fs_api_layout **out, fs_error *err)
{
    *out = NULL;
    fs_api_layout *l = calloc(1, sizeof *l);
    if (!l)
        return fs_fail(err, "out of memory");
    if (fs_acts_create(&l->acts, &m->model.cfg, P, 1, err)) {
        free(l);
        return -1;
    }
    l->leaf = malloc(sizeof *l->leaf * (size_t)l->acts.count);
    l->name = malloc(sizeof *l->name * (size_t)l->acts.count);
    if (!l->leaf || !l->name) {
        fs_api_layout_free(l);
        return fs_fail(err, "out of memory");
    }
    for (int i = 0; i < l->acts.count; i++)
        if (!l->acts.leaves[i].hidden) {
            l->leaf[l->count] = i;
            fs_leaf_dotted(&l->acts.leaves[i], l->name[l->count], sizeof l->name[0]);
            l->count++;
        }
    *out = l;
    return 0;
}

void fs_api_layout_free(fs_api_layout *l)
{
    if (!l)
        return;
    fs_acts_free(&l->acts);
    free(l->leaf);
    free(l->name);
    free(l);
}

int fs_api_layout_count(const fs_api_layout *l) { return l->count; }

const char *fs_api_layout_name(const fs_api_layout *l, int i) { return l->name[i]; }

int fs_api_layout_shape(const fs_api_layout *l, int i, int64_t shape[4])
{
    const fs_leaf *f = &l->acts.leaves[l->leaf[i]];
    if (f->is_null)
        return -1;
    for (int k = 0; k < f->ndim; k++)
        shape[k] = f->shape[k];
    return f->ndim;
}

/* ---- clamps ---- */

int fs_api_clamps_create(const fs_api_layout *l, fs_api_clamps **out, fs_error *err)
{
    *out = calloc(1, sizeof **out);
    if (!*out)
        return fs_fail(err, "out of memory");
    (*out)->layout = l;
    fs_clamp_set_init(&(*out)->set, &l->acts);
    return 0;
}

void fs_api_clamps_free(fs_api_clamps *c)
{
    if (!c)
        return;
    fs_clamp_set_free(&c->set);
    free(c);
}

int fs_api_clamps_set(fs_api_clamps *c, int i, const float *value, const uint8_t *mask, int64_t batch, fs_error *err)
{
    const fs_api_layout *l = c->layout;
    if (i < 0 || i >= l->count)
        return fs_fail(err, "clamps: leaf index %d out of range (%d leaves)", i, l->count);
    const fs_leaf *f = &l->acts.leaves[l->leaf[i]];
    if (f->is_null)
        return fs_fail(err, "clamps: %s: this leaf is null for this model and cannot be clamped", l->name[i]);
    if (batch < 0 || batch > (1 << 30))
        return fs_fail(err, "clamps: %s: batch %lld out of range", l->name[i], (long long)batch);
    if (batch && c->batch && batch != c->batch)
        return fs_fail(err, "clamps: %s: per-sequence values for %lld sequences, another leaf has %d", l->name[i],
                       (long long)batch, c->batch);
    size_t n = f->numel * (size_t)(batch ? batch : 1);
    for (size_t k = 0; k < n; k++)
        if (mask[k] > 1)
            return fs_fail(err, "clamps: %s: mask values must be 0 or 1 (element %zu is %d)", l->name[i], k, mask[k]);
    if (fs_clamp_set_leaf(&c->set, &l->acts, l->leaf[i], value, mask, (int)batch))
        return fs_fail(err, "clamps: %s: out of memory for %zu values", l->name[i], n);
    if (batch)
        c->batch = (int)batch;
    return 0;
}

/* ---- runs ---- */

/* Inputs: B >= 1 sequences of P >= 1 pairs, finite examples, labels in [0, C). */
static int check_inputs(const fs_model_config *cfg, const float *examples, const int32_t *labels, int64_t B, int P,
                        fs_error *err)
{
    if (B < 1 || B > (1 << 30))
        return fs_fail(err, "expected 1 or more sequences (up to 2^30), got %lld", (long long)B);
    if (P < 1)
        return fs_fail(err, "expected 1 or more pairs per sequence, got %d", P);
    size_t n = (size_t)B * (size_t)P;
    for (size_t i = 0; i < n; i++)
        if (labels[i] < 0 || labels[i] >= cfg->num_classes)
            return fs_fail(err, "labels[%lld][%d] = %d is out of range: expected an integer in [0, %d) (num_classes)",
                           (long long)(i / (size_t)P), (int)(i % (size_t)P), labels[i], cfg->num_classes);
    size_t ne = n * (size_t)cfg->input_dim;
    for (size_t i = 0; i < ne; i++)
        if (!isfinite(examples[i]))
            return fs_fail(err, "examples[%lld][%d][%d] is not a finite number", (long long)(i / ((size_t)P * cfg->input_dim)),
                           (int)(i / cfg->input_dim % (size_t)P), (int)(i % (size_t)cfg->input_dim));
    return 0;
}

static int check_clamps(const fs_api_model *m, const fs_api_clamps *c, int64_t B, int P, fs_error *err)
{
    if (!c)
        return 0;
    if (c->layout->acts.P != P || !fs_model_config_equal(&c->layout->acts.cfg, &m->model.cfg))
        return fs_fail(err, "clamps: made for sequences of %d pairs of another model or length (this run: %d pairs)",
                       c->layout->acts.P, P);
    if (c->batch && c->batch != B)
        return fs_fail(err, "clamps: per-sequence values for %d sequences but the input has %lld", c->batch,
                       (long long)B);
    return 0;
}

/* What a run holds on: the clamp set (borrowed, may be NULL) and the named interventions
 * of a JSON object text (may be NULL). Heap-allocated (the interventions are large); free
 * with free(): the clamp set stays the caller's. */
static int held_make(const fs_api_model *m, const fs_api_clamps *clamps, const char *json, fs_held **out,
                     fs_error *err)
{
    fs_held *h = calloc(1, sizeof *h);
    if (!h)
        return fs_fail(err, "out of memory");
    if (clamps)
        h->files = clamps->set;
    if (json) {
        cJSON *root = cJSON_Parse(json);
        int rc = root ? fs_interventions_from_json(&h->iv, root, &m->model.cfg, "interventions", err)
                      : fs_fail(err, "interventions: not valid JSON");
        cJSON_Delete(root);
        if (rc) {
            free(h);
            return -1;
        }
        h->has_iv = fs_interventions_any(&h->iv);
    }
    *out = h;
    return 0;
}

enum { RUN_CHUNK_BYTES = 64 << 20 };

int fs_api_run(const fs_api_model *m, const float *examples, const int32_t *labels, int64_t B, int P,
               const fs_api_clamps *clamps, const char *interventions_json, const int *sel, int nsel,
               float *const *outs, float *logits, fs_error *err)
{
    const fs_model_config *cfg = &m->model.cfg;
    if (check_inputs(cfg, examples, labels, B, P, err) || check_clamps(m, clamps, B, P, err))
        return -1;
    /* Sequences go through the forward in chunks of at most RUN_CHUNK_BYTES of activations
     * (per-sequence clamps: all at once); each selected leaf is copied out per chunk. */
    fs_acts acts;
    if (fs_acts_create(&acts, cfg, P, 1, err))
        return -1;
    size_t per_seq = acts.arena_floats * sizeof(float);
    fs_acts_free(&acts);
    int64_t chunk = (int64_t)(RUN_CHUNK_BYTES / (per_seq ? per_seq : 1));
    if (chunk < 1)
        chunk = 1;
    if (chunk > B || (clamps && clamps->batch))
        chunk = B;
    fs_held *held;
    if (held_make(m, clamps, interventions_json, &held, err))
        return -1;
    int rc = -1;
    int *leaf = malloc(sizeof *leaf * (size_t)(nsel > 0 ? nsel : 1));
    if (!leaf) {
        fs_fail(err, "out of memory");
        goto out_held;
    }
    if (fs_acts_create(&acts, cfg, P, (int)chunk, err))
        goto out_leaf;
    for (int k = 0; k < nsel; k++) {
        /* API leaf index -> table index: the visible leaves in table order */
        int seen = -1, id = -1;
        for (int i = 0; i < acts.count && id < 0; i++)
            if (!acts.leaves[i].hidden && ++seen == sel[k])
                id = i;
        if (id < 0) {
            fs_fail(err, "leaf index %d out of range", sel[k]);
            goto out_acts;
        }
        leaf[k] = id;
    }
    fs_held_clamps hc;
    if (fs_held_bind(&hc, held, &acts, err))
        goto out_acts;
    int id_out = fs_leaf_find(&acts, "out");
    for (int64_t b0 = 0; b0 < B; b0 += chunk) {
        int nb = (int)(B - b0 < chunk ? B - b0 : chunk);
        fs_acts_set_inputs(&acts, examples + (size_t)b0 * P * cfg->input_dim, labels + (size_t)b0 * P, 0, nb);
        fs_held_forward(&hc, &m->model, &acts, nb);
        for (int k = 0; k < nsel; k++) {
            size_t numel = acts.leaves[leaf[k]].numel;
            if (numel)
                memcpy(outs[k] + (size_t)b0 * numel, fs_leaf_ptr(&acts, leaf[k], 0), (size_t)nb * numel * sizeof(float));
        }
        if (logits)
            memcpy(logits + (size_t)b0 * acts.leaves[id_out].numel, fs_leaf_ptr(&acts, id_out, 0),
                   (size_t)nb * acts.leaves[id_out].numel * sizeof(float));
    }
    fs_held_unbind(&hc);
    rc = 0;
out_acts:
    fs_acts_free(&acts);
out_leaf:
    free(leaf);
out_held:
    free(held);
    return rc;
}

int fs_api_loss_and_grads(const fs_api_model *m, const float *examples, const int32_t *labels, int64_t B, int P,
                          const fs_api_clamps *clamps, const char *interventions_json, double weight_decay,
                          double *loss, float *const *grads, fs_error *err)
{
    const fs_model_config *cfg = &m->model.cfg;
    if (check_inputs(cfg, examples, labels, B, P, err) || check_clamps(m, clamps, B, P, err))
        return -1;
    if (!(weight_decay >= 0) || !isfinite(weight_decay))
        return fs_fail(err, "weight_decay: expected a finite value >= 0, got %g", weight_decay);
    fs_held *held;
    if (held_make(m, clamps, interventions_json, &held, err))
        return -1;
    fs_run_config rc_default;
    fs_run_config_default(&rc_default);
    rc_default.train.weight_decay = weight_decay;
    fs_optim_config oc = fs_optim_config_from_train(&rc_default.train);
    fs_trainer t;
    int rc = -1;
    /* the trainer only reads the parameters here (no optimizer step) */
    if (fs_trainer_init(&t, (fs_model *)&m->model, P, (int)B, 0, &oc, err))
        goto out_held;
    fs_acts_set_inputs(&t.acts, examples, labels, 0, (int)B);
    fs_held_clamps hc;
    if (fs_held_bind(&hc, held, &t.acts, err))
        goto out_trainer;
    if (fs_trainer_hold(&t, &hc, err)) {
        fs_held_unbind(&hc);
        goto out_trainer;
    }
    t.clamps = fs_held_update(&hc, &m->model, &t.acts, (int)B);
    *loss = fs_trainer_grad(&t, (int)B);
    for (int i = 0; i < m->model.layout.count; i++) {
        const fs_param_desc *d = &m->model.layout.tensors[i];
        memcpy(grads[i], t.grads + d->offset, d->numel * sizeof(float));
    }
    fs_held_unbind(&hc);
    rc = 0;
out_trainer:
    fs_trainer_free(&t);
out_held:
    free(held);
    return rc;
}

/* ---- frozen KV cache ---- */

int fs_api_kv_create(const fs_api_model *m, const float *examples, const int32_t *labels, int pairs, fs_api_kv **out,
                     fs_error *err)
{
    *out = NULL;
    if (pairs < 1)
        return fs_fail(err, "context: need at least one exemplar-label pair, got %d", pairs);
    if (check_inputs(&m->model.cfg, examples, labels, 1, pairs, err))
        return -1;
    fs_api_kv *kv = calloc(1, sizeof *kv);
    if (!kv)
        return fs_fail(err, "out of memory");
    if (fs_kv_init(&kv->cache, &m->model, err)) {
        free(kv);
        return -1;
    }
    if (fs_kv_build(&kv->cache, examples, labels, pairs, err)) {
        fs_api_kv_free(kv);
        return -1;
    }
    fs_kv_freeze(&kv->cache);
    *out = kv;
    return 0;
}

void fs_api_kv_free(fs_api_kv *kv)
{
    if (!kv)
        return;
    fs_kv_free(&kv->cache);
    free(kv);
}

int fs_api_kv_classify(const fs_api_kv *kv, const float *queries, int64_t nq, int threads, float *logits,
                       fs_error *err)
{
    if (nq < 0)
        return fs_fail(err, "queries: expected 0 or more, got %lld", (long long)nq);
    int D = kv->cache.model->cfg.input_dim;
    for (size_t i = 0; i < (size_t)nq * D; i++)
        if (!isfinite(queries[i]))
            return fs_fail(err, "queries[%zu][%zu] is not a finite number", i / D, i % D);
    return fs_kv_classify(&kv->cache, queries, (size_t)nq, logits, threads, err);
}

/* ---- training runs ---- */

typedef struct {
    const volatile int *stop;
    volatile sig_atomic_t flag;
    fs_api_progress_fn progress;
    void *ctx;
} train_ctx;

static void on_progress(void *p, const fs_train_progress *s)
{
    train_ctx *t = p;
    if (t->progress)
        t->progress(t->ctx, s->step, s->total_steps, s->iter, s->seqs_per_s, s->loss, s->eval_name, s->eval_acc);
    if (t->stop && *t->stop)
        t->flag = 1;
}

int fs_api_train(const char *config, int is_path, const char *out_dir, int resume, int64_t stop_after, int threads,
                 const volatile int *stop, fs_api_progress_fn progress, void *ctx, fs_error *err)
{
    if (!config || !out_dir)
        return fs_fail(err, "train: a config and an output directory are required");
    fs_run_config cfg;
    fs_run_config_default(&cfg);
    int rc = is_path ? fs_run_config_load(config, &cfg, err) : config_from_json(config, "config", &cfg, err);
    if (!rc && threads >= 0)
        cfg.train.threads = threads;
    if (!rc && stop_after < 0)
        rc = fs_fail(err, "stop_after: expected 0 (off) or a number of sequences, got %lld", (long long)stop_after);
    if (!rc) {
        train_ctx t = {.stop = stop, .progress = progress, .ctx = ctx};
        if (stop && *stop)
            t.flag = 1;
        fs_train_options opt = {.out_dir = out_dir, .resume = resume != 0, .stop_after = stop_after,
                                .stop_flag = &t.flag, .on_progress = on_progress, .progress_ctx = &t};
        rc = fs_train_run(&cfg, is_path ? config : "config", &opt, err);
    }
    fs_run_config_free(&cfg);
    return rc;
}
