/* Named interventions -> clamps: per-sequence value/mask buffers for every leaf an
 * intervention writes, allocated once and refilled for each batch (interventions.h). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fewshot/forward.h"
#include "fewshot/interventions.h"
#include "interp/passes.h"
#include "model/leaves.h"

#define NEG_BIG (-1e9f) /* the reference's "forbidden" pre-softmax score */

static const fs_head_list *all_lists(const fs_interventions *iv, int i)
{
    const fs_head_list *lists[] = {&iv->ablate_heads,      &iv->induction_heads,
                                   &iv->match_heads,       &iv->prev_token_heads,
                                   &iv->disallow_prev_token_heads, &iv->silence_non_label_heads,
                                   &iv->head_temperature};
    return i < (int)(sizeof lists / sizeof lists[0]) ? lists[i] : NULL;
}

static void mark_heads(uint8_t *touched, const fs_head_list *l, int which)
{
    for (int i = 0; i < l->n; i++)
        touched[fs_block_leaf_id(l->h[i].layer, which)] = 1;
}

/* Leaves the constant interventions write in the final pass (the computed ones are feeds). */
static void mark_touched(const fs_interventions *iv, uint8_t *t)
{
    if (iv->ablate_embedding)
        t[L_TOK_EMBEDDING] = 1;
    mark_heads(t, &iv->ablate_heads, B_V);
    mark_heads(t, &iv->induction_heads, B_ATTN_SCORES);
    mark_heads(t, &iv->match_heads, B_ATTN_SCORES);
    mark_heads(t, &iv->prev_token_heads, B_ATTN_SCORES);
    mark_heads(t, &iv->disallow_prev_token_heads, B_ATTN_PRE_SOFTMAX);
    mark_heads(t, &iv->silence_non_label_heads, B_ATTN_PRE_SOFTMAX);
}

/* ---- passes and feeds: clamp values computed by other passes of the same step ---- */

typedef enum {
    F_COPY,       /* the whole leaf */
    F_SCALE_HEAD, /* head h's block of an attention leaf, times `scale` */
    F_SHIFT_ROWS, /* [N][d] rows: row i takes row i-1, row 0 and the query row their own */
    F_COPY_SCORES /* out[query row]: pre-softmax query row of head h at the label tokens */
} feed_kind;

typedef struct {
    feed_kind kind;
    int dst_pass, dst_leaf, src_pass, src_leaf, head;
    float scale;
} feed;

enum { MAX_PASSES = 3 }; /* the final pass and up to two before it */

typedef struct {
    fs_acts acts;          /* passes before the final one: their own arena */
    fs_clamp_set own;      /* their clamps */
    fs_clamp_set *cs;      /* own, or the final pass's (hc->clamps) */
    uint8_t *touched;      /* [count]: leaves whose clamp this pass writes */
    uint8_t **from;        /* [count] per leaf [B][numel], when gradients go through */
    float **capture, **inject;
    fs_leaf_link *link;
    fs_grad_links gl;
} pass;

struct fs_held_passes {
    int n;            /* passes before the final one, which is p[n] */
    pass p[MAX_PASSES];
    int nfeed;
    feed *f;
    bool through;     /* clamp_gradients "through" */
    bool grads;       /* the gradient buffers exist (fs_held_grads) */
};

static void add_feed(struct fs_held_passes *ps, feed f) { ps->f[ps->nfeed++] = f; }

/* The passes and feeds of the interventions (pass indices: ps->n is the final one). */
static void plan(struct fs_held_passes *ps, const fs_interventions *iv, const fs_model_config *c)
{
    int fin;
    if (iv->perfect_prev_token_input) {
        ps->n = 2, fin = 2; /* A, B */
        int out0 = fs_block_leaf_id(0, B_OUT);
        add_feed(ps, (feed){F_SHIFT_ROWS, 1, out0, 0, L_EMBEDDING, 0, 1.f});
        add_feed(ps, (feed){F_COPY, fin, out0, 0, L_EMBEDDING, 0, 1.f});
        if (!iv->perfect_copy)
            add_feed(ps, (feed){F_COPY, fin, fs_block_leaf_id(1, B_ATTN_SCORES), 1, fs_block_leaf_id(1, B_ATTN_SCORES),
                                0, 1.f});
    } else {
        ps->n = 1, fin = 1; /* the clean pass */
    }
    int src = ps->n - 1;
    const bool on[4] = {iv->preserve_patterns, iv->preserve_values, iv->preserve_queries, iv->preserve_keys};
    const int which[4] = {B_ATTN_SCORES, B_V, B_Q, B_K};
    for (int l = iv->preserve_from_layer; l < c->depth; l++)
        for (int w = 0; w < 4; w++)
            if (on[w])
                add_feed(ps, (feed){F_COPY, fin, fs_block_leaf_id(l, which[w]), src, fs_block_leaf_id(l, which[w]), 0,
                                    1.f});
    for (int i = 0; i < iv->head_temperature.n; i++) {
        const fs_head_ref *r = &iv->head_temperature.h[i];
        int id = fs_block_leaf_id(r->layer, B_ATTN_PRE_SOFTMAX);
        add_feed(ps, (feed){F_SCALE_HEAD, fin, id, src, id, r->head, (float)(1.0 / r->temperature)});
    }
    if (iv->perfect_copy)
        add_feed(ps, (feed){F_COPY_SCORES, fin, fs_top_after(c, L_OUT), src,
                            fs_block_leaf_id(iv->perfect_copy_head.layer, B_ATTN_PRE_SOFTMAX),
                            iv->perfect_copy_head.head, 1.f});
}

static void free_pass(pass *p, int count, bool final)
{
    for (int i = 0; i < count; i++) {
        if (p->from)
            free(p->from[i]);
        if (p->capture)
            free(p->capture[i]);
        if (p->inject)
            free(p->inject[i]);
    }
    free(p->from);
    free(p->capture);
    free(p->inject);
    free(p->link);
    if (!final) {
        free(p->touched);
        fs_clamp_set_free(&p->own);
        fs_acts_free(&p->acts);
    }
}

static void free_passes(fs_held_clamps *hc)
{
    struct fs_held_passes *ps = hc->passes;
    if (!ps)
        return;
    for (int k = 0; k <= ps->n; k++)
        free_pass(&ps->p[k], hc->count, k == ps->n);
    free(ps->f);
    free(ps);
    hc->passes = NULL;
}

void fs_held_unbind(fs_held_clamps *hc)
{
    free_passes(hc);
    fs_grafts_unbind(hc);
    fs_clamp_set_free(&hc->clamps);
    free(hc->touched);
    memset(hc, 0, sizeof *hc);
}

/* The held clamp files if they were built for this layout (clamp files are per length). */
static const fs_clamp_set *files_for(const fs_held *h, int P, int count)
{
    return h->files.leaf && h->files.P == P && h->files.count == count ? &h->files : NULL;
}

bool fs_held_bound(const fs_held_clamps *hc, const fs_held *h)
{
    if (hc->has_iv != h->has_iv || (h->has_iv && memcmp(&hc->iv, &h->iv, sizeof h->iv) != 0) ||
        hc->graft[0] != h->graft[0] || hc->graft[1] != h->graft[1])
        return false;
    return hc->files == files_for(h, hc->P, hc->count);
}

static int alloc_clamp(fs_clamp_set *cs, const fs_acts *a, int i)
{
    size_t n = a->leaves[i].numel * (size_t)a->B;
    cs->leaf[i].value = calloc(n + 1, sizeof(float));
    cs->leaf[i].mask = calloc(n + 1, 1);
    cs->leaf[i].batch = a->B;
    cs->active++;
    return cs->leaf[i].value && cs->leaf[i].mask ? 0 : -1;
}

/* The passes' arenas, clamps and gradient buffers, allocated once. */
#define OOM fs_fail(err, "interventions: out of memory")
static int bind_passes(fs_held_clamps *hc, const fs_acts *a, fs_error *err)
{
    struct fs_held_passes *ps = calloc(1, sizeof *ps);
    int count = a->count;
    if (!ps)
        return OOM;
    hc->passes = ps;
    ps->f = calloc((size_t)4 * a->cfg.depth + FS_IV_MAX_HEADS + 4, sizeof *ps->f);
    if (!ps->f)
        return OOM;
    ps->through = !hc->iv.clamp_gradients_stop;
    plan(ps, &hc->iv, &a->cfg);
    for (int k = 0; k <= ps->n; k++) {
        pass *p = &ps->p[k];
        if (k < ps->n) {
            if (fs_acts_create(&p->acts, &a->cfg, a->P, a->B, err))
                return -1;
            fs_clamp_set_init(&p->own, a);
            p->cs = &p->own;
            p->touched = calloc((size_t)count, 1);
            if (!p->own.leaf || !p->touched)
                return OOM;
        } else {
            p->cs = &hc->clamps;
            p->touched = hc->touched;
        }
        p->from = calloc((size_t)count, sizeof *p->from);
        p->capture = calloc((size_t)count, sizeof *p->capture);
        p->inject = calloc((size_t)count, sizeof *p->inject);
        p->link = calloc((size_t)count, sizeof *p->link);
        if (!p->from || !p->capture || !p->inject || !p->link)
            return OOM;
        p->gl = (fs_grad_links){p->link, k < ps->n};
    }
    for (int j = 0; j < ps->nfeed; j++)
        ps->p[ps->f[j].dst_pass].touched[ps->f[j].dst_leaf] = 1;
    for (int k = 0; k < ps->n; k++)
        for (int i = 0; i < count; i++)
            if (ps->p[k].touched[i] && alloc_clamp(ps->p[k].cs, a, i))
                return OOM;
    return 0;
}

static int passes_grads(fs_held_clamps *hc, fs_error *err)
{
    struct fs_held_passes *ps = hc->passes;
    if (!ps || !ps->through || ps->grads)
        return 0;
    const fs_acts *a = &ps->p[0].acts;
    for (int j = 0; j < ps->nfeed; j++) {
        const feed *f = &ps->f[j];
        pass *dst = &ps->p[f->dst_pass], *src = &ps->p[f->src_pass];
        size_t nd = a->leaves[f->dst_leaf].numel * (size_t)a->B, ns = a->leaves[f->src_leaf].numel * (size_t)a->B;
        if (!dst->from[f->dst_leaf] && (!(dst->from[f->dst_leaf] = calloc(nd, 1)) ||
                                        !(dst->capture[f->dst_leaf] = calloc(nd, sizeof(float)))))
            return OOM;
        if (!src->inject[f->src_leaf] && !(src->inject[f->src_leaf] = calloc(ns, sizeof(float))))
            return OOM;
    }
    for (int k = 0; k <= ps->n; k++)
        for (int i = 0; i < a->count; i++)
            ps->p[k].link[i] = (fs_leaf_link){ps->p[k].from[i], ps->p[k].capture[i], ps->p[k].inject[i]};
    ps->grads = true;
    return 0;
}
#undef OOM

int fs_held_grads(fs_held_clamps *hc, int threads, fs_error *err)
{
    if (passes_grads(hc, err) || fs_grafts_grads(hc, threads, err))
        return -1;
    int id;
    const float *in = fs_grafts_inject(hc, &id);
    if (in && hc->passes && hc->passes->grads) /* graft_out's gradient enters the final pass */
        hc->passes->p[hc->passes->n].link[id].inject = in;
    return 0;
}

int fs_held_bind(fs_held_clamps *hc, const fs_held *h, const fs_acts *a, fs_error *err)
{
    memset(hc, 0, sizeof *hc);
    hc->iv = h->iv;
    hc->has_iv = h->has_iv;
    hc->P = a->P;
    hc->count = a->count;
    hc->files = files_for(h, a->P, a->count);
    hc->graft[0] = h->graft[0];
    hc->graft[1] = h->graft[1];
    if (!h->has_iv)
        return 0;
    const fs_interventions *iv = &hc->iv;
    const fs_model_config *c = &a->cfg;
    for (int k = 0; all_lists(iv, k); k++)
        for (int i = 0; i < all_lists(iv, k)->n; i++) {
            const fs_head_ref *r = &all_lists(iv, k)->h[i];
            if (r->layer < 0 || r->layer >= c->depth || r->head < 0 || r->head >= c->num_heads)
                return fs_fail(err, "interventions: head %d:%d does not exist in this model (%d layers, %d heads)",
                               r->layer, r->head, c->depth, c->num_heads);
        }
    if (iv->preserve_from_layer < 0 || iv->preserve_from_layer >= c->depth)
        return fs_fail(err, "interventions: preserve_from_layer %d out of range (%d layers)", iv->preserve_from_layer,
                       c->depth);
    if (iv->perfect_copy && a->P != 3)
        return fs_fail(err, "perfect_copy_from_head_pattern: needs contexts of exactly 2 pairs (sequences of 3 pairs "
                            "with the query), got %d context pairs",
                       a->P - 1);
    if (iv->perfect_prev_token_input && c->depth != 2)
        return fs_fail(err, "perfect_prev_token_input: needs a 2-layer model (this one has %d)", c->depth);
    fs_clamp_set_init(&hc->clamps, a);
    hc->touched = calloc((size_t)a->count, 1);
    if (!hc->clamps.leaf || !hc->touched) {
        fs_held_unbind(hc);
        return fs_fail(err, "interventions: out of memory");
    }
    mark_touched(iv, hc->touched);
    if ((fs_interventions_need_clean_pass(iv) && bind_passes(hc, a, err)) || fs_grafts_bind(hc, h, a, err)) {
        fs_held_unbind(hc);
        return -1;
    }
    for (int i = 0; i < a->count; i++) {
        const fs_clamp *k = hc->files ? &hc->files->leaf[i] : NULL;
        bool has_base = k && k->mask;
        if (has_base && k->batch && k->batch != a->B) {
            fs_held_unbind(hc);
            return fs_fail(err, "%s: per-sequence clamp holds %d sequences but the batch has %d", a->leaves[i].path,
                           k->batch, a->B);
        }
        if (hc->touched[i]) {
            if (alloc_clamp(&hc->clamps, a, i)) {
                fs_held_unbind(hc);
                return fs_fail(err, "interventions: out of memory");
            }
        } else if (has_base && fs_clamp_set_leaf(&hc->clamps, a, i, k->value, k->mask, k->batch)) {
            fs_held_unbind(hc);
            return fs_fail(err, "interventions: out of memory");
        }
    }
    return 0;
}

/* ---- filling one sequence ---- */

typedef struct {
    float *v;
    uint8_t *m, *f; /* f: the computed-element mask, or NULL */
} slot;

static slot pass_slot(const pass *p, const fs_acts *a, int leaf, int b)
{
    size_t at = (size_t)b * a->leaves[leaf].numel;
    const fs_clamp *k = &p->cs->leaf[leaf];
    return (slot){k->value + at, k->mask + at, p->from && p->from[leaf] ? p->from[leaf] + at : NULL};
}

static slot leaf_slot(const fs_held_clamps *ic, const fs_acts *a, int leaf, int b)
{
    if (ic->passes)
        return pass_slot(&ic->passes->p[ic->passes->n], a, leaf, b);
    size_t at = (size_t)b * a->leaves[leaf].numel;
    return (slot){ic->clamps.leaf[leaf].value + at, ic->clamps.leaf[leaf].mask + at, NULL};
}

static slot offset_slot(slot s, size_t off) { return (slot){s.v + off, s.m + off, s.f ? s.f + off : NULL}; }

/* Slot of head h of an attention leaf ([1,H,N,N] or [1,H,N,hd]) for sequence b. */
static slot head_slot(const fs_held_clamps *ic, const fs_acts *a, int layer, int which, int h, int b)
{
    int id = fs_block_leaf_id(layer, which);
    return offset_slot(leaf_slot(ic, a, id, b), (size_t)h * (a->leaves[id].numel / (size_t)a->cfg.num_heads));
}

/* a constant */
static void set(slot s, size_t i, float v)
{
    s.v[i] = v;
    s.m[i] = 1;
    if (s.f)
        s.f[i] = 0;
}

/* a value computed by another pass */
static void put(slot s, size_t i, float v)
{
    s.v[i] = v;
    s.m[i] = 1;
    if (s.f)
        s.f[i] = 1;
}

/* Every touched leaf starts from the base clamp (or nothing), as the reference's setdefault. */
static void reset(const uint8_t *touched, const fs_clamp_set *files, const pass *p, const fs_held_clamps *ic,
                  const fs_acts *a, int b)
{
    for (int i = 0; i < a->count; i++) {
        if (!touched[i])
            continue;
        size_t n = a->leaves[i].numel;
        slot s = p ? pass_slot(p, a, i, b) : leaf_slot(ic, a, i, b);
        const fs_clamp *k = files ? &files->leaf[i] : NULL;
        if (k && k->mask) {
            size_t at = k->batch ? (size_t)b * n : 0;
            memcpy(s.v, k->value + at, n * sizeof(float));
            memcpy(s.m, k->mask + at, n);
        } else {
            memset(s.v, 0, n * sizeof(float));
            memset(s.m, 0, n);
        }
        if (s.f)
            memset(s.f, 0, n);
    }
}

/* Query row of out: -1e9 but at the labels of the two context pairs, which take the
 * source head's pre-softmax scores of the query at their label tokens (1 and 3); the
 * second pair's wins when both have the same label. */
static int label_at(const fs_acts *a, int b, int p)
{
    int y = (int)fs_leaf_ptr(a, L_LABELS, b)[p];
    return y >= 0 && y < a->cfg.num_classes ? y : -1;
}

/* F_SHIFT_ROWS: the source row of row i of N */
static int shifted(int i, int N) { return i == 0 || i == N - 1 ? i : i - 1; }

/* The feeds into pass `dst` for sequence b (a: the layout). */
static void fill_feeds(const struct fs_held_passes *ps, int dst, const fs_acts *a, int b)
{
    int N = a->N, C = a->cfg.num_classes, P = a->P;
    for (int j = 0; j < ps->nfeed; j++) {
        const feed *f = &ps->f[j];
        if (f->dst_pass != dst)
            continue;
        slot s = pass_slot(&ps->p[dst], a, f->dst_leaf, b);
        const float *src = fs_leaf_ptr(&ps->p[f->src_pass].acts, f->src_leaf, b);
        size_t n = a->leaves[f->dst_leaf].numel;
        switch (f->kind) {
        case F_COPY:
            for (size_t i = 0; i < n; i++)
                put(s, i, src[i]);
            break;
        case F_SCALE_HEAD: {
            size_t per = n / (size_t)a->cfg.num_heads, at = (size_t)f->head * per;
            for (size_t i = at; i < at + per; i++)
                put(s, i, src[i] * f->scale);
            break;
        }
        case F_SHIFT_ROWS: {
            size_t d = n / (size_t)N;
            for (int i = 0; i < N; i++) {
                for (size_t t = 0; t < d; t++)
                    put(s, (size_t)i * d + t, src[(size_t)shifted(i, N) * d + t]);
            }
            break;
        }
        case F_COPY_SCORES: {
            size_t row = (size_t)(P - 1) * C;
            const float *q = src + ((size_t)f->head * N + N - 1) * N;
            for (int c = 0; c < C; c++)
                set(s, row + c, NEG_BIG);
            for (int p = 0; p < 2; p++)
                if (label_at(a, b, p) >= 0)
                    put(s, row + label_at(a, b, p), q[2 * p + 1]);
            break;
        }
        }
    }
}

/* The adjoint of the feeds out of pass `dst`: the gradient captured at their computed
 * elements is added to their sources' injected gradient. */
static void route_feeds(const struct fs_held_passes *ps, int dst, const fs_acts *a, int b)
{
    int N = a->N, C = a->cfg.num_classes, P = a->P;
    for (int j = 0; j < ps->nfeed; j++) {
        const feed *f = &ps->f[j];
        if (f->dst_pass != dst)
            continue;
        size_t n = a->leaves[f->dst_leaf].numel;
        const float *cap = ps->p[dst].capture[f->dst_leaf] + (size_t)b * n;
        const uint8_t *from = ps->p[dst].from[f->dst_leaf] + (size_t)b * n;
        float *in = ps->p[f->src_pass].inject[f->src_leaf] + (size_t)b * a->leaves[f->src_leaf].numel;
        switch (f->kind) {
        case F_COPY:
            for (size_t i = 0; i < n; i++)
                in[i] += cap[i];
            break;
        case F_SCALE_HEAD: {
            size_t per = n / (size_t)a->cfg.num_heads, at = (size_t)f->head * per;
            for (size_t i = at; i < at + per; i++)
                in[i] += cap[i] * f->scale;
            break;
        }
        case F_SHIFT_ROWS: {
            size_t d = n / (size_t)N;
            for (int i = 0; i < N; i++) {
                for (size_t t = 0; t < d; t++)
                    in[(size_t)shifted(i, N) * d + t] += cap[(size_t)i * d + t];
            }
            break;
        }
        case F_COPY_SCORES: {
            size_t row = (size_t)(P - 1) * C;
            float *q = in + ((size_t)f->head * N + N - 1) * N;
            int y0 = label_at(a, b, 0), y1 = label_at(a, b, 1);
            if (y0 >= 0 && y0 != y1 && from[row + y0])
                q[1] += cap[row + y0];
            if (y1 >= 0 && from[row + y1])
                q[3] += cap[row + y1];
            break;
        }
        }
    }
}

static void ablate(const fs_held_clamps *ic, const fs_acts *a, int b)
{
    const fs_interventions *iv = &ic->iv;
    if (iv->ablate_embedding) {
        int id = L_TOK_EMBEDDING;
        slot s = leaf_slot(ic, a, id, b);
        for (size_t j = 0; j < a->leaves[id].numel; j++)
            set(s, j, 0.f);
    }
    size_t per_head = (size_t)a->N * (a->cfg.d_model / a->cfg.num_heads);
    for (int i = 0; i < iv->ablate_heads.n; i++) {
        slot s = head_slot(ic, a, iv->ablate_heads.h[i].layer, B_V, iv->ablate_heads.h[i].head, b);
        for (size_t j = 0; j < per_head; j++)
            set(s, j, 0.f);
    }
}

/* s on the previous token, 1 - s on itself, token 0 on itself; label rows only if asked. */
static void prev_token(const fs_held_clamps *ic, const fs_acts *a, int b)
{
    const fs_interventions *iv = &ic->iv;
    int N = a->N;
    float st = (float)iv->prev_token_strength;
    for (int k = 0; k < iv->prev_token_heads.n; k++) {
        slot s = head_slot(ic, a, iv->prev_token_heads.h[k].layer, B_ATTN_SCORES, iv->prev_token_heads.h[k].head, b);
        for (int i = iv->prev_token_only_label ? 1 : 0; i < N; i += iv->prev_token_only_label ? 2 : 1)
            for (int j = 0; j < N; j++)
                set(s, (size_t)i * N + j, i == 0 ? (j == 0 ? 1.f : 0.f) : j == i ? 1.f - st : j == i - 1 ? st : 0.f);
    }
}

/* Query row (token N-1) of the induction pattern from the sequence's labels. */
static void induction(const fs_held_clamps *ic, const fs_acts *a, int b)
{
    const fs_interventions *iv = &ic->iv;
    int P = a->P, N = a->N, n = P - 1;
    if (!iv->induction_heads.n || n == 0)
        return; /* no context: nothing to attend to */
    const float *lab = fs_leaf_ptr(a, L_LABELS, b);
    int match = 0;
    for (int j = 0; j < n; j++)
        match += lab[j] == lab[P - 1];
    double s = iv->induction_strength;
    float w_match = match ? (float)((match == n ? 1.0 : s) / match) : 0.f;
    float w_other = match < n ? (float)((match ? 1.0 - s : 1.0) / (n - match)) : 0.f;
    for (int k = 0; k < iv->induction_heads.n; k++) {
        slot s = head_slot(ic, a, iv->induction_heads.h[k].layer, B_ATTN_SCORES, iv->induction_heads.h[k].head, b);
        size_t row = (size_t)(N - 1) * N;
        for (int j = 0; j < N; j++)
            set(s, row + j, j % 2 == 0 ? 0.f : lab[j / 2] == lab[P - 1] ? w_match : w_other);
    }
}

/* Query row: cosine similarity of the query example with each context example, at the
 * label tokens, through a softmax with match_temperature (0: hardmax, ties share). */
static void match(const fs_held_clamps *ic, const fs_acts *a, int b)
{
    const fs_interventions *iv = &ic->iv;
    int P = a->P, N = a->N, D = a->cfg.input_dim;
    if (!iv->match_heads.n || P == 1)
        return;
    const float *x = fs_leaf_ptr(a, L_EXAMPLES, b), *xq = x + (size_t)(P - 1) * D;
    slot first = {0};
    for (int k = 0; k < iv->match_heads.n; k++) {
        slot s = head_slot(ic, a, iv->match_heads.h[k].layer, B_ATTN_SCORES, iv->match_heads.h[k].head, b);
        float *row = s.v + (size_t)(N - 1) * N;
        memset(s.m + (size_t)(N - 1) * N, 1, (size_t)N);
        if (s.f) /* constants */
            memset(s.f + (size_t)(N - 1) * N, 0, (size_t)N);
        if (k > 0) { /* same row for every head */
            memcpy(row, first.v + (size_t)(N - 1) * N, (size_t)N * sizeof(float));
            continue;
        }
        first = s;
        double qq = 0, mx = -INFINITY, sum = 0;
        for (int t = 0; t < D; t++)
            qq += (double)xq[t] * xq[t];
        for (int j = 0; j < N; j++)
            row[j] = 0.f;
        for (int j = 0; j < P - 1; j++) {
            double xx = 0, xy = 0;
            for (int t = 0; t < D; t++) {
                xx += (double)x[(size_t)j * D + t] * x[(size_t)j * D + t];
                xy += (double)x[(size_t)j * D + t] * xq[t];
            }
            double cs = xx > 0 && qq > 0 ? xy / sqrt(xx * qq) : 0.0;
            row[2 * j + 1] = (float)cs;
            mx = cs > mx ? cs : mx;
        }
        for (int j = 0; j < P - 1; j++) {
            double r = row[2 * j + 1];
            double e = iv->match_temperature == 0 ? (r == (float)mx) : exp((r - mx) / iv->match_temperature);
            row[2 * j + 1] = (float)e;
            sum += e;
        }
        for (int j = 0; j < P - 1; j++)
            row[2 * j + 1] = (float)(row[2 * j + 1] / sum);
    }
}

/* Pre-softmax -1e9 on (i, i-1) (label rows only if asked): the softmax renormalises. */
static void disallow_prev(const fs_held_clamps *ic, const fs_acts *a, int b)
{
    const fs_interventions *iv = &ic->iv;
    int N = a->N, step = iv->disallow_prev_token_only_label ? 2 : 1;
    for (int k = 0; k < iv->disallow_prev_token_heads.n; k++) {
        const fs_head_ref *r = &iv->disallow_prev_token_heads.h[k];
        slot s = head_slot(ic, a, r->layer, B_ATTN_PRE_SOFTMAX, r->head, b);
        for (int i = 1; i < N; i += step)
            set(s, (size_t)i * N + i - 1, NEG_BIG);
    }
}

/* Query row: -1e9 pre-softmax on every exemplar token (the query included). */
static void silence_non_label(const fs_held_clamps *ic, const fs_acts *a, int b)
{
    const fs_interventions *iv = &ic->iv;
    int N = a->N;
    for (int k = 0; k < iv->silence_non_label_heads.n; k++) {
        const fs_head_ref *r = &iv->silence_non_label_heads.h[k];
        slot s = head_slot(ic, a, r->layer, B_ATTN_PRE_SOFTMAX, r->head, b);
        for (int j = 0; j < N; j += 2)
            set(s, (size_t)(N - 1) * N + j, NEG_BIG);
    }
}

/* The reference's order: later interventions overwrite earlier ones where they meet
 * (the computed ones, preserve and temperature, come first). */
static void fill_sequence(const fs_held_clamps *ic, const fs_acts *a, int b)
{
    reset(ic->touched, ic->files, NULL, ic, a, b);
    if (ic->passes)
        fill_feeds(ic->passes, ic->passes->n, a, b);
    fs_grafts_fill(ic, a, b);
    ablate(ic, a, b);
    prev_token(ic, a, b);
    induction(ic, a, b);
    match(ic, a, b);
    disallow_prev(ic, a, b);
    silence_non_label(ic, a, b);
}

const fs_clamp_set *fs_held_update(fs_held_clamps *hc, const fs_model *m, fs_acts *a, int nseq)
{
    if (!hc->has_iv)
        return hc->files;
    struct fs_held_passes *ps = hc->passes;
    for (int k = 0; ps && k < ps->n; k++) {
        pass *p = &ps->p[k];
        static const int inputs[2] = {L_EXAMPLES, L_LABELS};
        for (int j = 0, id; j < 2 && (id = inputs[j], 1); j++)
            memcpy(fs_leaf_ptr(&p->acts, id, 0), fs_leaf_ptr(a, id, 0),
                   sizeof(float) * a->leaves[id].numel * (size_t)nseq);
        bool clamped = p->cs->active > 0;
#pragma omp parallel for schedule(static) if (clamped)
        for (int b = 0; b < nseq; b++) {
            reset(p->touched, NULL, p, hc, a, b);
            fill_feeds(ps, k, a, b);
        }
        fs_forward(m, &p->acts, clamped ? p->cs : NULL, nseq);
    }
    fs_grafts_update(hc, a, nseq);
#pragma omp parallel for schedule(static)
    for (int b = 0; b < nseq; b++)
        fill_sequence(hc, a, b);
    return &hc->clamps;
}

void fs_held_forward(fs_held_clamps *hc, const fs_model *m, fs_acts *a, int nseq)
{
    fs_forward(m, a, fs_held_update(hc, m, a, nseq), nseq);
    fs_grafts_after_forward(hc, a, nseq);
}

const fs_grad_links *fs_held_links(const fs_held_clamps *hc)
{
    return hc->passes && hc->passes->grads ? &hc->passes->p[hc->passes->n].gl : fs_grafts_links(hc);
}

bool fs_held_has_backward(const fs_held_clamps *hc) { return hc->passes && hc->passes->grads; }

void fs_held_backward_range(const fs_held_clamps *hc, const fs_model *m, float *scratch, float *spare,
                            const fs_param_ptrs *spare_ptrs, float *grads, size_t total, int b0, int b1,
                            double denom)
{
    const struct fs_held_passes *ps = hc->passes;
    if (!fs_held_has_backward(hc) || b1 <= b0)
        return;
    const fs_acts *a = &ps->p[0].acts;
    for (int k = 0; k < ps->n; k++)
        for (int i = 0; i < a->count; i++)
            if (ps->p[k].inject[i]) {
                size_t n = a->leaves[i].numel;
                memset(ps->p[k].inject[i] + (size_t)b0 * n, 0, sizeof(float) * n * (size_t)(b1 - b0));
            }
    for (int b = b0; b < b1; b++)
        route_feeds(ps, ps->n, a, b);
    for (int k = ps->n - 1; k >= 0; k--) {
        const pass *p = &ps->p[k];
        fs_backward_range_links(m, &p->acts, p->cs->active ? p->cs : NULL, &p->gl, scratch, NULL, spare_ptrs, b0, b1,
                                denom);
        for (size_t i = 0; i < total; i++)
            grads[i] += spare[i];
        for (int b = b0; b < b1; b++)
            route_feeds(ps, k, a, b);
    }
}
