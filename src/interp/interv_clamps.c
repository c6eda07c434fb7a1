/* Named interventions -> clamps: per-sequence value/mask buffers for every leaf an
 * intervention writes, allocated once and refilled for each batch (interventions.h). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fewshot/forward.h"
#include "fewshot/interventions.h"
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

static void mark_touched(const fs_interventions *iv, const fs_model_config *c, uint8_t *t)
{
    if (iv->ablate_embedding)
        t[L_TOK_EMBEDDING] = 1;
    for (int l = iv->preserve_from_layer; l < c->depth; l++) {
        t[fs_block_leaf_id(l, B_ATTN_SCORES)] |= iv->preserve_patterns;
        t[fs_block_leaf_id(l, B_V)] |= iv->preserve_values;
        t[fs_block_leaf_id(l, B_Q)] |= iv->preserve_queries;
        t[fs_block_leaf_id(l, B_K)] |= iv->preserve_keys;
    }
    mark_heads(t, &iv->ablate_heads, B_V);
    mark_heads(t, &iv->induction_heads, B_ATTN_SCORES);
    mark_heads(t, &iv->match_heads, B_ATTN_SCORES);
    mark_heads(t, &iv->prev_token_heads, B_ATTN_SCORES);
    mark_heads(t, &iv->disallow_prev_token_heads, B_ATTN_PRE_SOFTMAX);
    mark_heads(t, &iv->silence_non_label_heads, B_ATTN_PRE_SOFTMAX);
    mark_heads(t, &iv->head_temperature, B_ATTN_PRE_SOFTMAX);
}

void fs_held_unbind(fs_held_clamps *hc)
{
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
    if (hc->has_iv != h->has_iv || (h->has_iv && memcmp(&hc->iv, &h->iv, sizeof h->iv) != 0))
        return false;
    return hc->files == files_for(h, hc->P, hc->count);
}

int fs_held_bind(fs_held_clamps *hc, const fs_held *h, const fs_acts *a, fs_error *err)
{
    memset(hc, 0, sizeof *hc);
    hc->iv = h->iv;
    hc->has_iv = h->has_iv;
    hc->P = a->P;
    hc->count = a->count;
    hc->files = files_for(h, a->P, a->count);
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
    fs_clamp_set_init(&hc->clamps, a);
    hc->touched = calloc((size_t)a->count, 1);
    if (!hc->clamps.leaf || !hc->touched) {
        fs_held_unbind(hc);
        return fs_fail(err, "interventions: out of memory");
    }
    mark_touched(iv, c, hc->touched);
    for (int i = 0; i < a->count; i++) {
        const fs_clamp *k = hc->files ? &hc->files->leaf[i] : NULL;
        bool has_base = k && k->mask;
        if (has_base && k->batch && k->batch != a->B) {
            fs_held_unbind(hc);
            return fs_fail(err, "%s: per-sequence clamp holds %d sequences but the batch has %d", a->leaves[i].path,
                           k->batch, a->B);
        }
        if (hc->touched[i]) {
            size_t n = a->leaves[i].numel * (size_t)a->B;
            hc->clamps.leaf[i].value = calloc(n + 1, sizeof(float));
            hc->clamps.leaf[i].mask = calloc(n + 1, 1);
            hc->clamps.leaf[i].batch = a->B;
            hc->clamps.active++;
            if (!hc->clamps.leaf[i].value || !hc->clamps.leaf[i].mask) {
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
    uint8_t *m;
} slot;

static slot leaf_slot(const fs_held_clamps *ic, const fs_acts *a, int leaf, int b)
{
    size_t at = (size_t)b * a->leaves[leaf].numel;
    return (slot){ic->clamps.leaf[leaf].value + at, ic->clamps.leaf[leaf].mask + at};
}

/* Slot of head h of an attention leaf ([1,H,N,N] or [1,H,N,hd]) for sequence b. */
static slot head_slot(const fs_held_clamps *ic, const fs_acts *a, int layer, int which, int h, int b)
{
    int id = fs_block_leaf_id(layer, which);
    size_t per_head = a->leaves[id].numel / (size_t)a->cfg.num_heads;
    slot s = leaf_slot(ic, a, id, b);
    return (slot){s.v + (size_t)h * per_head, s.m + (size_t)h * per_head};
}

static void set(slot s, size_t i, float v)
{
    s.v[i] = v;
    s.m[i] = 1;
}

/* Every touched leaf starts from the base clamp (or nothing), as the reference's setdefault. */
static void reset(const fs_held_clamps *ic, const fs_acts *a, int b)
{
    for (int i = 0; i < a->count; i++) {
        if (!ic->touched[i])
            continue;
        size_t n = a->leaves[i].numel;
        slot s = leaf_slot(ic, a, i, b);
        const fs_clamp *k = ic->files ? &ic->files->leaf[i] : NULL;
        if (k && k->mask) {
            size_t at = k->batch ? (size_t)b * n : 0;
            memcpy(s.v, k->value + at, n * sizeof(float));
            memcpy(s.m, k->mask + at, n);
        } else {
            memset(s.v, 0, n * sizeof(float));
            memset(s.m, 0, n);
        }
    }
}

static void preserve(const fs_held_clamps *ic, const fs_acts *a, int b)
{
    const fs_interventions *iv = &ic->iv;
    const bool on[4] = {iv->preserve_patterns, iv->preserve_values, iv->preserve_queries, iv->preserve_keys};
    const int which[4] = {B_ATTN_SCORES, B_V, B_Q, B_K};
    for (int l = iv->preserve_from_layer; l < a->cfg.depth; l++)
        for (int w = 0; w < 4; w++) {
            if (!on[w])
                continue;
            int id = fs_block_leaf_id(l, which[w]);
            slot s = leaf_slot(ic, a, id, b);
            memcpy(s.v, fs_leaf_ptr(a, id, b), a->leaves[id].numel * sizeof(float));
            memset(s.m, 1, a->leaves[id].numel);
        }
}

/* attn_pre_softmax of the head = clean pass's / T (the reference's opto_set_head_temperature). */
static void temperatures(const fs_held_clamps *ic, const fs_acts *a, int b)
{
    size_t NN = (size_t)a->N * a->N;
    for (int i = 0; i < ic->iv.head_temperature.n; i++) {
        const fs_head_ref *r = &ic->iv.head_temperature.h[i];
        slot s = head_slot(ic, a, r->layer, B_ATTN_PRE_SOFTMAX, r->head, b);
        const float *pre = fs_leaf_ptr(a, fs_block_leaf_id(r->layer, B_ATTN_PRE_SOFTMAX), b) + (size_t)r->head * NN;
        for (size_t j = 0; j < NN; j++)
            set(s, j, (float)(pre[j] / r->temperature));
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

/* The reference's order: later interventions overwrite earlier ones where they meet. */
static void fill_sequence(const fs_held_clamps *ic, const fs_acts *a, int b)
{
    reset(ic, a, b);
    preserve(ic, a, b);
    temperatures(ic, a, b);
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
    if (fs_interventions_need_clean_pass(&hc->iv))
        fs_forward(m, a, NULL, nseq);
#pragma omp parallel for schedule(static)
    for (int b = 0; b < nseq; b++)
        fill_sequence(hc, a, b);
    return &hc->clamps;
}
