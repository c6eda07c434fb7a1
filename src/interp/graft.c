/* The graft models' passes (interventions.h: graft_in, graft_out). The graft model G is
 * frozen: its passes run in their own arena with its own interventions bound to it.
 *   graft_in   G runs in fs_held_update; block L's out of the final pass is clamped to
 *              G's (a constant: nothing of G depends on this model's parameters).
 *   graft_out  after the final pass's forward G runs with its block L out clamped to the
 *              final pass's; the final pass's `out` is clamped to G's out (it is the result).
 *              Backward: G's (its parameter gradients into a discarded buffer) captures
 *              the gradient at its block L out, which the final pass's backward adds at its
 *              own block L out (inject); its `out` clamp stops the gradient above. */
#include <stdlib.h>
#include <string.h>

#include "base/fileio.h"
#include "fewshot/forward.h"
#include "fewshot/interventions.h"
#include "interp/passes.h"
#include "model/leaves.h"
#include "model/forward_gemm.h"

typedef struct {
    const fs_graft *g;     /* NULL: not used */
    int id;                /* block L's out: the same leaf index in both layouts */
    fs_acts acts;          /* G's activations, the final pass's capacity */
    fs_held_clamps hc;     /* G's own interventions */
    /* graft_out */
    fs_clamp_set cs;       /* G's clamps (borrowed) + block L out <- the final pass's */
    uint8_t *ones;         /* [B][numel]: that clamp's mask */
    float *capture;        /* [B][numel]: the loss's gradient at G's block L out */
    fs_leaf_link *link;    /* [G's leaves] */
    fs_grad_links gl;
    float *scratch;        /* G's backward scratch */
    int threads;
    float **pgrads;        /* [threads] G's parameter gradients, discarded */
    fs_param_ptrs *pptrs;
} graft_pass;

struct fs_held_grafts {
    graft_pass p[2];       /* graft_in, graft_out */
    int out_leaf;          /* the final pass's `out` */
    fs_leaf_link *own;     /* the final pass's links when no other pass made them */
    fs_grad_links own_gl;
};

#define OOM fs_fail(err, "grafts: out of memory")

void fs_grafts_unbind(fs_held_clamps *hc)
{
    struct fs_held_grafts *gs = hc->grafts;
    if (!gs)
        return;
    for (int k = 0; k < 2; k++) {
        graft_pass *p = &gs->p[k];
        fs_held_unbind(&p->hc);
        fs_acts_free(&p->acts);
        free(p->cs.leaf); /* its clamps are borrowed */
        free(p->ones);
        free(p->capture);
        free(p->link);
        free(p->scratch);
        for (int t = 0; p->pgrads && t < p->threads; t++)
            free(p->pgrads[t]);
        free(p->pgrads);
        free(p->pptrs);
    }
    free(gs->own);
    free(gs);
    hc->grafts = NULL;
}

int fs_grafts_bind(fs_held_clamps *hc, const fs_held *h, const fs_acts *a, fs_error *err)
{
    const fs_graft_spec *spec[2] = {&hc->iv.graft_in, &hc->iv.graft_out};
    if (!spec[0]->on && !spec[1]->on)
        return 0;
    struct fs_held_grafts *gs = calloc(1, sizeof *gs);
    if (!gs)
        return OOM;
    hc->grafts = gs;
    gs->out_leaf = fs_top_after(&a->cfg, L_OUT);
    for (int k = 0; k < 2; k++) {
        const char *name = k ? "graft_out" : "graft_in";
        graft_pass *p = &gs->p[k];
        const fs_graft *g = h->graft[k];
        if (!spec[k]->on)
            continue;
        if (!g)
            return fs_fail(err, "%s: its model (%s) is not loaded", name, spec[k]->model);
        if (spec[k]->layer >= a->cfg.depth || spec[k]->layer >= g->model.cfg.depth ||
            g->model.cfg.d_model != a->cfg.d_model)
            return fs_fail(err, "%s: %s does not fit this model", name, g->origin);
        p->g = g;
        p->id = fs_block_leaf_id(spec[k]->layer, B_OUT);
        if (fs_acts_create(&p->acts, &g->model.cfg, a->P, a->B, err) || fs_held_bind(&p->hc, &g->held, &p->acts, err))
            return -1;
        hc->touched[k ? gs->out_leaf : p->id] = 1;
        if (k == 1) {
            size_t n = a->leaves[p->id].numel * (size_t)a->B;
            fs_clamp_set_init(&p->cs, &p->acts);
            if (!p->cs.leaf || !(p->ones = malloc(n)))
                return OOM;
            memset(p->ones, 1, n);
        }
    }
    return 0;
}

static void copy_inputs(fs_acts *dst, const fs_acts *src, int nseq)
{
    static const int inputs[2] = {L_EXAMPLES, L_LABELS};
    for (int j = 0; j < 2; j++)
        memcpy(fs_leaf_ptr(dst, inputs[j], 0), fs_leaf_ptr(src, inputs[j], 0),
               sizeof(float) * src->leaves[inputs[j]].numel * (size_t)nseq);
}

void fs_grafts_update(fs_held_clamps *hc, const fs_acts *a, int nseq)
{
    struct fs_held_grafts *gs = hc->grafts;
    if (!gs)
        return;
    for (int k = 0; k < 2; k++) {
        graft_pass *p = &gs->p[k];
        if (!p->g)
            continue;
        const fs_model *gm = &p->g->model;
        copy_inputs(&p->acts, a, nseq);
        const fs_clamp_set *own = fs_held_update(&p->hc, gm, &p->acts, nseq);
        if (k == 0) {
            fs_forward(gm, &p->acts, own, nseq);
            continue;
        }
        /* graft_out: its own clamps and, over them, block L out <- the final pass's */
        int active = 0;
        for (int i = 0; i < p->cs.count; i++) {
            p->cs.leaf[i] = own && own->leaf ? own->leaf[i] : (fs_clamp){0};
            active += p->cs.leaf[i].mask != NULL;
        }
        p->cs.leaf[p->id] = (fs_clamp){fs_leaf_ptr(a, p->id, 0), p->ones, a->B};
        p->cs.active = active + !(own && own->leaf && own->leaf[p->id].mask);
        p->cs.P = a->P;
    }
}

void fs_grafts_fill(const fs_held_clamps *hc, const fs_acts *a, int b)
{
    const struct fs_held_grafts *gs = hc->grafts;
    if (!gs)
        return;
    const graft_pass *in = &gs->p[0];
    if (in->g) { /* block L's out <- G's */
        size_t n = a->leaves[in->id].numel, at = (size_t)b * n;
        memcpy(hc->clamps.leaf[in->id].value + at, fs_leaf_ptr(&in->acts, in->id, b), n * sizeof(float));
        memset(hc->clamps.leaf[in->id].mask + at, 1, n);
    }
    if (gs->p[1].g) { /* `out` <- G's, which fs_grafts_forward_range writes */
        size_t n = a->leaves[gs->out_leaf].numel;
        memset(hc->clamps.leaf[gs->out_leaf].mask + (size_t)b * n, 1, n);
    }
}

/* The final pass's `out` (and its clamp) <- G's for sequences [b0, b1). */
static void take_out(const fs_held_clamps *hc, fs_acts *a, int b0, int b1)
{
    const struct fs_held_grafts *gs = hc->grafts;
    const graft_pass *p = &gs->p[1];
    size_t n = a->leaves[gs->out_leaf].numel * (size_t)(b1 - b0);
    float *dst = fs_leaf_ptr(a, gs->out_leaf, b0);
    memcpy(dst, fs_leaf_ptr(&p->acts, fs_top_after(&p->g->model.cfg, L_OUT), b0), n * sizeof(float));
    memcpy(hc->clamps.leaf[gs->out_leaf].value + (size_t)b0 * a->leaves[gs->out_leaf].numel, dst, n * sizeof(float));
}

void fs_held_finish_range(const fs_held_clamps *hc, fs_acts *a, int b0, int b1)
{
    struct fs_held_grafts *gs = hc ? hc->grafts : NULL;
    if (!gs || !gs->p[1].g || b1 <= b0)
        return;
    graft_pass *p = &gs->p[1];
    fs_forward_range_gemm(&p->g->model, &p->acts, &p->cs, b0, b1, true, NULL);
    take_out(hc, a, b0, b1);
}

void fs_grafts_after_forward(fs_held_clamps *hc, fs_acts *a, int nseq)
{
    struct fs_held_grafts *gs = hc->grafts;
    if (!gs || !gs->p[1].g || nseq <= 0)
        return;
    graft_pass *p = &gs->p[1];
    fs_forward(&p->g->model, &p->acts, &p->cs, nseq);
    take_out(hc, a, 0, nseq);
}

/* Per-thread parameter gradients of G (discarded) for up to `threads` threads. */
static int grow_threads(graft_pass *p, int threads, fs_error *err)
{
    if (threads <= p->threads)
        return 0;
    const fs_model *gm = &p->g->model;
    float **pg = realloc(p->pgrads, (size_t)threads * sizeof *pg);
    if (pg)
        p->pgrads = pg;
    fs_param_ptrs *pp = pg ? realloc(p->pptrs, (size_t)threads * sizeof *pp) : NULL;
    if (!pp)
        return OOM;
    p->pptrs = pp;
    for (; p->threads < threads; p->threads++) {
        if (!(p->pgrads[p->threads] = fs_alloc(gm->layout.total * sizeof(float))))
            return OOM;
        p->pptrs[p->threads] = fs_param_bind(&gm->cfg, &gm->layout, p->pgrads[p->threads]);
    }
    return 0;
}

int fs_grafts_grads(fs_held_clamps *hc, int threads, fs_error *err)
{
    struct fs_held_grafts *gs = hc->grafts;
    graft_pass *p = gs ? &gs->p[1] : NULL;
    if (!p || !p->g || hc->iv.clamp_gradients_stop)
        return 0;
    if (p->capture) /* again, maybe for more threads */
        return grow_threads(p, threads, err);
    size_t n = p->acts.leaves[p->id].numel * (size_t)p->acts.B;
    p->capture = calloc(n, sizeof(float));
    p->link = calloc((size_t)p->acts.count, sizeof *p->link);
    p->scratch = fs_alloc(fs_backward_scratch_floats(&p->acts) * sizeof(float));
    gs->own = calloc((size_t)hc->count, sizeof *gs->own);
    if (!p->capture || !p->link || !p->scratch || !gs->own)
        return OOM;
    p->link[p->id] = (fs_leaf_link){p->ones, p->capture, NULL};
    p->gl = (fs_grad_links){p->link, false};
    gs->own[p->id].inject = p->capture;
    gs->own_gl = (fs_grad_links){gs->own, false};
    return grow_threads(p, threads > 0 ? threads : 1, err);
}

const float *fs_grafts_inject(const fs_held_clamps *hc, int *leaf)
{
    const struct fs_held_grafts *gs = hc->grafts;
    if (!gs || !gs->p[1].capture)
        return NULL;
    *leaf = gs->p[1].id;
    return gs->p[1].capture;
}

const fs_grad_links *fs_grafts_links(const fs_held_clamps *hc)
{
    return hc->grafts && hc->grafts->own ? &hc->grafts->own_gl : NULL;
}

void fs_held_backward_later(const fs_held_clamps *hc, int b0, int b1, double denom, int thread)
{
    struct fs_held_grafts *gs = hc ? hc->grafts : NULL;
    graft_pass *p = gs ? &gs->p[1] : NULL;
    if (!p || !p->capture || b1 <= b0 || thread < 0 || thread >= p->threads)
        return;
    fs_backward_range_links(&p->g->model, &p->acts, &p->cs, &p->gl, p->scratch, NULL, &p->pptrs[thread], b0, b1,
                            denom);
}
