/* fewshot report: attention patterns (attn_scores of every head of every layer) of a
 * run's initial model, its checkpoints and its final model on a few probe sequences:
 * the run's first training sequences (its training sampler, train_seed, sequence
 * indices 0..n-1), through the library's forward with what the run held on (its clamps
 * section: clamp files and named interventions). */
#include "train/held_open.h"
#include "cli/report.h"

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fewshot/cache.h"
#include "fewshot/forward.h"
#include "fewshot/interventions.h"
#include "train/run.h"
#include "fewshot/seqio.h"
#include "model/leaves.h"

enum { SCORE_DIGITS = 3 };

typedef struct {
    long long iter, step; /* step -1 for a model snapshot */
    char path[1500];
} ckpt;

static int by_iter(const void *a, const void *b)
{
    long long x = ((const ckpt *)a)->iter, y = ((const ckpt *)b)->iter;
    return (x > y) - (x < y);
}

/* Models saved by a run, by sequences seen: training checkpoints (dir/checkpoints/
 * step_N.safetensors, N steps of batch B) and model snapshots (dir/ckpt_<iter>.safetensors,
 * the ckpt_sched of issue 15); a snapshot at a checkpoint's count is left out. */
static ckpt *list_models(const char *dir, long long batch, int *n)
{
    *n = 0;
    ckpt *list = NULL;
    int cap = 0;
    for (int where = 0; where < 2; where++) {
        char path[1200];
        snprintf(path, sizeof path, where == 0 ? "%s/checkpoints" : "%s", dir);
        DIR *d = opendir(path);
        if (!d)
            continue;
        struct dirent *e;
        while ((e = readdir(d))) {
            long long k;
            char tail[32];
            if (sscanf(e->d_name, where == 0 ? "step_%lld.%31s" : "ckpt_%lld.%31s", &k, tail) != 2 ||
                strcmp(tail, "safetensors"))
                continue;
            if (*n == cap) {
                cap = cap ? 2 * cap : 16;
                list = rp_grow(list, (size_t)cap * sizeof *list);
            }
            list[*n].step = where == 0 ? k : -1;
            list[*n].iter = where == 0 ? k * batch : k;
            snprintf(list[*n].path, sizeof list[*n].path, "%s/%s", path, e->d_name);
            (*n)++;
        }
        closedir(d);
    }
    if (*n)
        qsort(list, (size_t)*n, sizeof *list, by_iter);
    int kept = 0;
    for (int i = 0; i < *n; i++)
        if (kept == 0 || list[i].iter != list[kept - 1].iter)
            list[kept++] = list[i];
        else if (list[i].step >= 0)
            list[kept - 1] = list[i];
    *n = kept;
    return list;
}

/* Forward the probes through m (with what is held on) and append their attn_scores,
 * [probe][layer][head][N][N]. */
static void attention_of(const fs_model *m, fs_acts *a, fs_held_clamps *hc, const float *examples, const int *labels,
                         int n, cJSON *out)
{
    fs_acts_set_inputs(a, examples, labels, 0, n);
    fs_held_forward(hc, m, a, n);
    for (int b = 0; b < n; b++)
        for (int l = 0; l < m->cfg.depth; l++) {
            int leaf = fs_block_leaf_id(l, B_ATTN_SCORES);
            const float *s = fs_leaf_ptr(a, leaf, b);
            for (size_t i = 0; i < a->leaves[leaf].numel; i++)
                cJSON_AddItemToArray(out, cJSON_CreateNumber(rp_round(s[i], SCORE_DIGITS)));
        }
}

static cJSON *probe_json(const int *labels, int P)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddItemToObject(o, "labels", cJSON_CreateIntArray(labels, P));
    int match = -1;
    for (int i = 0; i + 1 < P; i++)
        if (labels[i] == labels[P - 1] && match < 0)
            match = i;
    cJSON_AddNumberToObject(o, "match", match); /* context pair with the query's label, -1 if none */
    return o;
}

cJSON *rp_attention_json(rp_report *r, int run_index, int probes, int max_checkpoints)
{
    const rp_run *run = &r->runs[run_index];
    char config_path[1200];
    snprintf(config_path, sizeof config_path, "%s/config.json", run->dir);
    fs_error err = {{0}};
    fs_run_config cfg;
    fs_run_config_default(&cfg);
    fs_run_data rd;
    memset(&rd, 0, sizeof rd);
    fs_seq_mix mix;
    cJSON *out = NULL;
    float *examples = NULL;
    int *labels = NULL, nck = 0;
    ckpt *cks = NULL;
    fs_acts acts = {0};
    fs_model model = {0};
    fs_held held = {0};
    fs_held_clamps hc = {0};
    bool bound = false;
    if (fs_run_config_load(config_path, &cfg, &err) || fs_run_data_open(&rd, &cfg, config_path, false, &err) ||
        fs_seq_mix_from_train(&mix, &rd.task, &cfg.train, config_path, &err) ||
        fs_model_config_validate(&cfg.model, config_path, &err))
        goto fail;
    int P = cfg.train.train_context_len + 1, D = cfg.model.input_dim, N = 2 * P - 1;
    examples = calloc((size_t)probes * P * D, sizeof *examples);
    labels = calloc((size_t)probes * P, sizeof *labels);
    if (!examples || !labels) {
        fs_fail(&err, "out of memory");
        goto fail;
    }
    fs_held_source src = {.config = &cfg.clamps, .origin = config_path};
    if (fs_sample_batch(&rd.task, &mix, (uint64_t)cfg.train.train_seed, FS_STREAM_TRAIN, 0, probes, examples, labels,
                        NULL, &err) ||
        fs_acts_create(&acts, &cfg.model, P, probes, &err) ||
        fs_held_open(&held, &src, &cfg.model, P, 0, &err) || fs_held_bind(&hc, &held, &acts, &err))
        goto fail;
    bound = true;
    cks = list_models(run->dir, cfg.train.train_bs, &nck);

    out = cJSON_CreateObject();
    cJSON_AddNumberToObject(out, "run", run_index);
    cJSON_AddNumberToObject(out, "layers", cfg.model.depth);
    cJSON_AddNumberToObject(out, "heads", cfg.model.num_heads);
    cJSON *tokens = cJSON_AddArrayToObject(out, "tokens");
    for (int t = 0; t < N; t++) {
        char name[16];
        if (t == N - 1)
            snprintf(name, sizeof name, "q");
        else
            snprintf(name, sizeof name, "%c%d", t % 2 ? 'l' : 'e', t / 2 + 1);
        cJSON_AddItemToArray(tokens, cJSON_CreateString(name));
    }
    cJSON *ps = cJSON_AddArrayToObject(out, "probes");
    for (int b = 0; b < probes; b++)
        cJSON_AddItemToArray(ps, probe_json(labels + (size_t)b * P, P));
    if (held.has_iv || held.files.leaf) {
        cJSON *section = cJSON_CreateObject();
        if (cfg.clamps.named)
            cJSON_AddItemToObject(section, "interventions", cJSON_Duplicate(cfg.clamps.named, 1));
        if (cfg.clamps.cache_file[0])
            cJSON_AddStringToObject(section, "cache", cfg.clamps.cache_file);
        char *text = cJSON_PrintUnformatted(section);
        cJSON_AddStringToObject(out, "interventions", text);
        free(text);
        cJSON_Delete(section);
    }
    cJSON *list = cJSON_AddArrayToObject(out, "checkpoints");
    /* the initial model (init_seed), then checkpoints evenly thinned to the maximum, the last kept */
    int keep = nck < max_checkpoints - 1 ? nck : max_checkpoints - 1;
    if (nck > keep)
        rp_note(r, "%s: %d checkpoints; the attention slider shows %d of them", run->name, nck, keep);
    for (int i = -1; i < keep; i++) {
        int c = i < 0 ? -1 : keep == 1 ? nck - 1 : (int)((long long)i * (nck - 1) / (keep - 1));
        fs_error lerr = {{0}};
        if (c < 0) {
            if (fs_model_create(&model, &cfg.model, &err))
                goto fail;
            fs_model_init_params(&model);
        } else if (fs_model_load(&model, &cfg.model, cks[c].path, &lerr)) {
            rp_note(r, "%s (skipped in the attention slider)", lerr.msg);
            continue;
        }
        cJSON *entry = cJSON_CreateObject();
        if (c < 0 || cks[c].step >= 0)
            cJSON_AddNumberToObject(entry, "step", c < 0 ? 0 : (double)cks[c].step);
        cJSON_AddNumberToObject(entry, "iter", c < 0 ? 0 : (double)cks[c].iter);
        cJSON_AddStringToObject(entry, "label", c < 0            ? "initial model"
                                                : c == nck - 1 ? (strcmp(run->status, "done") ? "latest model" : "final model")
                                                : cks[c].step < 0 ? "snapshot"
                                                                  : "checkpoint");
        cJSON *scores = cJSON_AddArrayToObject(entry, "scores");
        attention_of(&model, &acts, &hc, examples, labels, probes, scores);
        fs_model_free(&model);
        memset(&model, 0, sizeof model);
        cJSON_AddItemToArray(list, entry);
    }
    if (nck == 0)
        rp_note(r, "%s: no checkpoints yet; the attention patterns are those of the initial model", run->name);
    goto done;
fail:
    rp_note(r, "attention patterns of %s skipped: %s", run->name, err.msg);
    cJSON_Delete(out);
    out = NULL;
done:
    if (bound)
        fs_held_unbind(&hc);
    fs_held_free(&held);
    free(cks);
    fs_acts_free(&acts);
    free(examples);
    free(labels);
    fs_run_data_close(&rd);
    fs_run_config_free(&cfg);
    return out;
}
