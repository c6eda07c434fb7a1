/* What is held on (interventions.h): the one loader of clamp files and named
 * interventions from a config's clamps section and the command line. */
#include <cjson/cJSON.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fewshot/interventions.h"
#include "base/fileio.h"
#include "interp/held.h"

cJSON *fs_json_arg(const char *json_or_file, const char *what, const char **origin, fs_error *err)
{
    const char *s = json_or_file;
    while (isspace((unsigned char)*s))
        s++;
    if (*s != '{') {
        *origin = json_or_file;
        return fs_json_load(json_or_file, err);
    }
    *origin = what;
    cJSON *root = cJSON_Parse(s);
    if (!root)
        fs_fail(err, "%s: malformed JSON near \"%.40s\"", what, cJSON_GetErrorPtr() ? cJSON_GetErrorPtr() : s);
    return root;
}

static void graft_free(fs_graft *g)
{
    if (!g)
        return;
    fs_held_free(&g->held);
    fs_model_free(&g->model);
    free(g);
}

void fs_held_free(fs_held *h)
{
    fs_clamp_set_free(&h->files);
    for (int k = 0; k < 2; k++) {
        graft_free(h->graft[k]);
        h->graft[k] = NULL;
    }
    h->has_iv = false;
}

int fs_held_set_graft(fs_held *h, int which, fs_graft *g, const fs_model_config *cfg, fs_error *err)
{
    const fs_graft_spec *s = which ? &h->iv.graft_out : &h->iv.graft_in;
    const char *name = which ? "graft_out" : "graft_in", *lname = which ? "from_layer" : "till_layer";
    const fs_model_config *gc = &g->model.cfg;
    const struct {
        const char *field;
        int mine, theirs;
    } same[] = {{"d_model", cfg->d_model, gc->d_model},
                {"num_heads", cfg->num_heads, gc->num_heads},
                {"input_dim", cfg->input_dim, gc->input_dim},
                {"num_classes", cfg->num_classes, gc->num_classes}};
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < sizeof same / sizeof same[0]; i++)
        if (same[i].mine != same[i].theirs)
            rc = fs_fail(err, "%s: %s: model.%s is %d, this model's is %d (they must match)", name, g->origin,
                         same[i].field, same[i].theirs, same[i].mine);
    if (rc == 0 && (!s->on || which < 0 || which > 1))
        rc = fs_fail(err, "%s: not among the interventions held on", name);
    if (rc == 0 && s->layer >= gc->depth)
        rc = fs_fail(err, "%s: %s: %s %d out of range (that model has %d layers: 0..%d)", name, g->origin, lname,
                     s->layer, gc->depth, gc->depth - 1);
    if (rc == 0 && (g->held.iv.graft_in.on || g->held.iv.graft_out.on))
        rc = fs_fail(err, "%s: %s: a graft model cannot graft models itself (its clamps section has %s)", name,
                     g->origin, g->held.iv.graft_in.on ? "graft_in" : "graft_out");
    if (rc) {
        graft_free(g);
        return rc;
    }
    graft_free(h->graft[which]);
    h->graft[which] = g;
    return 0;
}

/* The clamp files in force: --cache/--mask, else the section's. */
static int held_files(const fs_held_source *src, const char **cache, const char **mask, fs_error *err)
{
    *cache = src->cache;
    *mask = src->mask;
    if ((*cache != NULL) != (*mask != NULL))
        return fs_fail(err, "--cache and --mask go together");
    const fs_clamps_config *sec = src->config;
    if (*cache || !sec || (!sec->cache_file[0] && !sec->mask_file[0]))
        return 0;
    if (!sec->cache_file[0] || !sec->mask_file[0])
        return fs_fail(err, "%s: clamps: \"cache\" and \"mask\" go together", src->origin ? src->origin : "config");
    *cache = sec->cache_file;
    *mask = sec->mask_file;
    return 0;
}

static int load_files(fs_held *h, const char *cache, const char *mask, const fs_model_config *cfg, int P, int nseq,
                      fs_error *err)
{
    fs_acts layout;
    if (fs_acts_create(&layout, cfg, P, 1, err))
        return -1;
    fs_clamp_set_init(&h->files, &layout);
    int rc = fs_clamp_set_load(&h->files, &layout, cache, mask, err);
    for (int i = 0; rc == 0 && nseq == 0 && i < h->files.count; i++)
        if (h->files.leaf[i].mask && h->files.leaf[i].batch)
            rc = fs_fail(err, "%s: %s: per-sequence (batched) clamps cannot be held on sampled sequences (training, "
                              "evaluators)", cache, layout.leaves[i].path);
    if (rc == 0 && nseq > 0)
        rc = fs_clamp_check_batch(&h->files, &layout, nseq, cache, err);
    fs_acts_free(&layout);
    if (rc == 0 && h->files.active == 0)
        fs_clamp_set_free(&h->files); /* nothing to hold on */
    return rc;
}

int fs_held_load(fs_held *h, const fs_held_source *src, const fs_model_config *cfg, int P, int nseq,
                 fs_error *err)
{
    memset(h, 0, sizeof *h);
    fs_interventions_default(&h->iv);
    const char *cache, *mask;
    if (held_files(src, &cache, &mask, err))
        return -1;
    int rc = 0;
    if (src->intervene)
        rc = fs_interventions_from_arg(&h->iv, src->intervene, cfg, err);
    else if (src->config && src->config->named)
        rc = fs_interventions_from_json(&h->iv, src->config->named, cfg,
                                        src->origin ? src->origin : "config clamps", err);
    h->has_iv = rc == 0 && fs_interventions_any(&h->iv);
    if (rc == 0 && cache)
        rc = load_files(h, cache, mask, cfg, P, nseq, err);
    if (rc)
        fs_held_free(h);
    return rc;
}

int fs_held_record(fs_run_config *cfg, const fs_held_source *src, fs_error *err)
{
    if ((src->cache != NULL) != (src->mask != NULL))
        return fs_fail(err, "--cache and --mask go together");
    if (!src->cache && !src->intervene)
        return 0;
    cJSON *section;
    if (src->intervene) {
        const char *origin;
        section = fs_json_arg(src->intervene, "--intervene", &origin, err);
        if (!section)
            return -1;
        if (!cJSON_IsObject(section)) {
            cJSON_Delete(section);
            return fs_fail(err, "%s: expected a JSON object of named interventions", origin);
        }
        cJSON_DeleteItemFromObject(section, "cache"); /* ignored in --intervene, as by fs_held_load */
        cJSON_DeleteItemFromObject(section, "mask");
    } else {
        section = cfg->clamps.named ? cJSON_Duplicate(cfg->clamps.named, 1) : cJSON_CreateObject();
    }
    if (src->cache) {
        cJSON_DeleteItemFromObject(section, "cache");
        cJSON_DeleteItemFromObject(section, "mask");
        cJSON_AddStringToObject(section, "cache", src->cache);
        cJSON_AddStringToObject(section, "mask", src->mask);
    }
    cJSON *root = cJSON_CreateObject();
    cJSON_AddItemToObject(root, "clamps", section);
    int rc = fs_run_config_apply(root, "--cache/--mask/--intervene", cfg, err);
    cJSON_Delete(root);
    return rc;
}
