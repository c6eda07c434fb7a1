/* Loading the graft models of the interventions held on (held_open.h). */
#include "train/held_open.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "fewshot/config.h"
#include "fewshot/model.h"

static int load_graft(fs_held *h, int which, const fs_model_config *cfg, int P, int nseq, fs_error *err)
{
    const fs_graft_spec *s = which ? &h->iv.graft_out : &h->iv.graft_in;
    fs_graft *g = calloc(1, sizeof *g);
    if (!g)
        return fs_fail(err, "out of memory");
    snprintf(g->origin, sizeof g->origin, "%s", s->model);
    fs_run_config rc;
    fs_run_config_default(&rc);
    int r = s->config[0] ? fs_run_config_load(s->config, &rc, err) : 0;
    if (r == 0)
        r = fs_model_open(&g->model, &rc.model, s->config[0] && rc.has_model, s->model, s->config, err);
    if (r == 0) {
        fs_held_source src = {.config = &rc.clamps, .origin = s->config[0] ? s->config : s->model};
        r = fs_held_load(&g->held, &src, &g->model.cfg, P, nseq, err);
    }
    fs_run_config_free(&rc);
    if (r) {
        fs_held_free(&g->held);
        fs_model_free(&g->model);
        free(g);
        return -1;
    }
    return fs_held_set_graft(h, which, g, cfg, err);
}

int fs_held_open(fs_held *h, const fs_held_source *src, const fs_model_config *cfg, int P, int nseq, fs_error *err)
{
    if (fs_held_load(h, src, cfg, P, nseq, err))
        return -1;
    const bool on[2] = {h->iv.graft_in.on, h->iv.graft_out.on};
    for (int k = 0; k < 2; k++)
        if (on[k] && load_graft(h, k, cfg, P, nseq, err)) {
            if (strncmp(err->msg, "graft_", 6) != 0) /* name the intervention */
                fs_fail_prefix(err, "%s", k ? "graft_out" : "graft_in");
            fs_held_free(h);
            return -1;
        }
    return 0;
}
