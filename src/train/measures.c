/* Progress measures (issue 15): the probe set, attention measures from the cache of one
 * forward pass, head ablations through the ablate_heads intervention. See measures.h. */
#include "train/measures.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "train/eval.h"
#include "fewshot/forward.h"
#include "fewshot/interventions.h"
#include "fewshot/seqio.h"
#include "model/leaves.h"
#include "base/json.h"

/* The probe's RNG stream (evaluators use FS_STREAM_EVAL + index, at most 16 of them). */
#define PROBE_STREAM UINT64_C(0x70726f6265)
/* Sequences per forward for the attention measures (keeps the arena small). */
enum { ATTN_CHUNK = 64, PROBE_MAX_DRAWS_PER_SEQ = 1000 };

void fs_probe_set_free(fs_probe_set *p)
{
    free(p->examples);
    free(p->labels);
    memset(p, 0, sizeof *p);
}

/* Exactly the bursty pair carries the query's label (relabelling leaves the other
 * pairs of longer contexts their class index, which may collide with it). */
static bool probe_ok(const int *labels, const int *types, int P)
{
    for (int i = 0; i + 1 < P; i++)
        if ((labels[i] == labels[P - 1]) != (types[i] == FS_ITEM_BURSTY))
            return false;
    return true;
}

int fs_probe_set_build(fs_probe_set *p, const fs_task *t, const fs_run_config *cfg, const char *origin,
                       fs_error *err)
{
    memset(p, 0, sizeof *p);
    const int ctx = cfg->train.train_context_len;
    if (ctx < 2)
        return fs_fail(err, "%s: measures: the probe set needs train.train_context_len >= 2 (one pair of the "
                            "query's class and one of another), got %d", origin, ctx);
    fs_evaluator_config ev = {.name = "probe", .classes = FS_SPLIT_TRAIN, .exemplars = FS_SPLIT_TRAIN,
                              .burstiness = 1, .fs_relabel_scheme = FS_SPLIT_TRAIN, .distract = true,
                              .unique_rest = true, .noise_scale = -1};
    fs_seq_spec spec;
    if (fs_seq_spec_from_evaluator(&spec, t, &ev, ctx, origin, err))
        return -1;
    const int n = cfg->measures.probe_size, P = ctx + 1, D = t->data->dim;
    p->examples = malloc(sizeof(float) * (size_t)n * P * D);
    p->labels = malloc(sizeof(int) * (size_t)n * P);
    int *types = malloc(sizeof(int) * (size_t)P);
    void *scratch = malloc(fs_seq_scratch_bytes(ctx));
    int rc = 0;
    if (!p->examples || !p->labels || !types || !scratch) {
        rc = fs_fail(err, "%s: measures: out of memory for a probe set of %d sequences", origin, n);
    } else {
        p->n = n, p->P = P, p->D = D;
        uint64_t draw = 0, max_draws = (uint64_t)n * PROBE_MAX_DRAWS_PER_SEQ;
        for (int i = 0; i < n && rc == 0; draw++) {
            if (draw == max_draws) {
                rc = fs_fail(err, "%s: measures: found only %d of %d probe sequences in which exactly one context "
                                  "pair has the query's label (data.fs_relabel too small for the context length?)",
                             origin, i, n);
                break;
            }
            float *x = p->examples + (size_t)i * P * D;
            int *y = p->labels + (size_t)i * P;
            fs_sample_sequence(t, &spec, (uint64_t)cfg->measures.probe_seed, PROBE_STREAM, draw, x, y, types, scratch);
            if (probe_ok(y, types, P))
                i++;
        }
    }
    free(types);
    free(scratch);
    if (rc)
        fs_probe_set_free(p);
    return rc;
}

void fs_measures_ws_free(fs_measures_ws *ws)
{
    if (ws->ready)
        fs_acts_free(&ws->acts);
    free(ws->resid);
    fs_model_free(&ws->ablated);
    if (ws->qws)
        fs_query_ws_free(ws->qws);
    free(ws->logits);
    memset(ws, 0, sizeof *ws);
}

/* Grow *buf to hold n floats. */
static int reserve(float **buf, size_t *cap, size_t n, fs_error *err)
{
    if (*cap >= n)
        return 0;
    float *p = realloc(*buf, sizeof(float) * n);
    if (!p)
        return fs_fail(err, "measures: out of memory");
    *buf = p, *cap = n;
    return 0;
}

void fs_measures_free(fs_measures *ms)
{
    for (int k = 0; k < FS_NUM_MEASURES; k++)
        free(ms->v[k]);
    memset(ms, 0, sizeof *ms);
}

static bool want(unsigned which, int k) { return (which >> k) & 1u; }

/* Sums of one sequence's attention measures into ind/prev/lab ([depth][heads]). */
static void attention_sums(const fs_acts *a, int b, const int *labels, double *ind, double *prev, double *lab)
{
    const int P = a->P, N = a->N, H = a->cfg.num_heads, q = N - 1;
    for (int l = 0; l < a->cfg.depth; l++) {
        const float *scores = fs_leaf_ptr(a, fs_block_leaf_id(l, B_ATTN_SCORES), b);
        for (int h = 0; h < H; h++) {
            const float *A = scores + (size_t)h * N * N;
            double match = 0, other = 0, pt = 0;
            for (int j = 0; j + 1 < P; j++) {
                double to_label = A[(size_t)q * N + 2 * j + 1];
                if (labels[j] == labels[P - 1])
                    match += to_label;
                else
                    other += to_label;
                pt += A[(size_t)(2 * j + 1) * N + 2 * j];
            }
            ind[l * H + h] += match - other;
            lab[l * H + h] += match;
            prev[l * H + h] += pt;
        }
    }
}

/* One forward of the sequences with the cache: the attention measures, and the residual
 * stream entering every block for the ablations. */
static int clean_pass(const fs_model *m, const float *examples, const int *labels, int n, int P, fs_measures_ws *ws,
                      fs_measures *out, fs_error *err)
{
    const int D = m->cfg.input_dim, LH = m->cfg.depth * m->cfg.num_heads;
    const size_t per_layer = (size_t)n * (2 * P - 1) * m->cfg.d_model;
    if (reserve(&ws->resid, &ws->resid_floats, per_layer * m->cfg.depth, err))
        return -1;
    if (!ws->ready || ws->acts.P != P || !fs_model_config_equal(&ws->acts.cfg, &m->cfg)) {
        if (ws->ready)
            fs_acts_free(&ws->acts);
        ws->ready = false;
        if (fs_acts_create(&ws->acts, &m->cfg, P, ATTN_CHUNK, err))
            return -1;
        ws->ready = true;
    }
    double *sum[3];
    for (int k = 0; k < 3; k++)
        sum[k] = calloc((size_t)LH, sizeof(double));
    if (!sum[0] || !sum[1] || !sum[2]) {
        for (int k = 0; k < 3; k++)
            free(sum[k]);
        return fs_fail(err, "measures: out of memory");
    }
    for (int first = 0; first < n; first += ATTN_CHUNK) {
        int count = n - first < ATTN_CHUNK ? n - first : ATTN_CHUNK;
        fs_acts_set_inputs(&ws->acts, examples + (size_t)first * P * D, labels + (size_t)first * P, 0, count);
        fs_forward(m, &ws->acts, NULL, count);
        for (int b = 0; b < count; b++) /* in sequence order: the sums do not depend on threads */
            attention_sums(&ws->acts, b, labels + (size_t)(first + b) * P, sum[0], sum[1], sum[2]);
        for (int l = 1; l < m->cfg.depth; l++) {
            int id = fs_block_leaf_id(l, B_X);
            memcpy(ws->resid + l * per_layer + (size_t)first * ws->acts.leaves[id].numel, fs_leaf_ptr(&ws->acts, id, 0),
                   sizeof(float) * ws->acts.leaves[id].numel * count);
        }
    }
    const int kinds[3] = {FS_MEASURE_INDUCTION, FS_MEASURE_PREV_TOKEN, FS_MEASURE_LABEL_ATTENTION};
    const double denom[3] = {n, (double)n * (P - 1), n};
    for (int k = 0; k < 3; k++) {
        if (out->v[kinds[k]])
            for (int i = 0; i < LH; i++)
                out->v[kinds[k]][i] = sum[k][i] / denom[k];
        free(sum[k]);
    }
    return 0;
}

/* Query accuracy with head `head` of `layer` zeroed (only: every other head of the
 * layer zeroed instead): the ablate_heads intervention as zeroed value weights, through
 * the query-only forward from the clean residual stream entering the layer. */
static int ablated_acc(const fs_model *m, const float *examples, const int *labels, int n, int P, int layer,
                       int head, bool only, fs_measures_ws *ws, double *acc, fs_error *err)
{
    fs_interventions iv;
    fs_interventions_default(&iv);
    for (int h = 0; h < m->cfg.num_heads; h++)
        if ((h == head) != only)
            iv.ablate_heads.h[iv.ablate_heads.n++] = (fs_head_ref){layer, h, 1.0};
    if (fs_interventions_ablated_model(&iv, m, &ws->ablated, err))
        return -1;
    const int C = m->cfg.num_classes;
    int rc = layer > 0 ? fs_forward_query_logits_from(&ws->ablated, ws->qws, layer,
                                                      ws->resid + (size_t)layer * n * (2 * P - 1) * m->cfg.d_model, n,
                                                      ws->logits)
                       : fs_forward_query_logits(&ws->ablated, ws->qws, examples, labels, n, ws->logits);
    if (rc)
        return fs_fail(err, "measures: their workspace was made for another model config");
    double right = 0;
    for (int b = 0; b < n; b++) {
        fs_metrics one;
        fs_metrics_of_sequence(ws->logits + (size_t)b * C, C, labels + (size_t)b * P, P, &one);
        right += one.acc;
    }
    *acc = right / n;
    return 0;
}

int fs_measures_compute(const fs_model *m, const float *examples, const int *labels, int n, int P, unsigned which,
                        fs_measures_ws *ws, fs_measures *out, fs_error *err)
{
    memset(out, 0, sizeof *out);
    if (P < 2 || n < 1)
        return fs_fail(err, "measures: need at least one sequence with a context pair (got %d sequences of %d pairs)",
                       n, P);
    if ((want(which, FS_MEASURE_ABLATE_ACC) || want(which, FS_MEASURE_ONLY_ACC)) && m->cfg.num_heads > FS_IV_MAX_HEADS)
        return fs_fail(err, "measures: head ablations support at most %d heads per layer", FS_IV_MAX_HEADS);
    const int L = m->cfg.depth, H = m->cfg.num_heads;
    out->which = which & ((1u << FS_NUM_MEASURES) - 1);
    out->depth = L, out->heads = H;
    for (int k = 0; k < FS_NUM_MEASURES; k++)
        if (want(out->which, k) && !(out->v[k] = calloc((size_t)L * H, sizeof(double)))) {
            fs_measures_free(out);
            return fs_fail(err, "measures: out of memory");
        }
    int rc = clean_pass(m, examples, labels, n, P, ws, out, err);
    bool ablations = out->v[FS_MEASURE_ABLATE_ACC] || out->v[FS_MEASURE_ONLY_ACC];
    if (rc == 0 && ablations) {
        if (ws->qws && (ws->qws_P != P || !fs_model_config_equal(&ws->ablated.cfg, &m->cfg))) {
            fs_query_ws_free(ws->qws);
            ws->qws = NULL;
        }
        if (!ws->qws && !(ws->qws = fs_query_ws_create(&m->cfg, P, 0)))
            rc = fs_fail(err, "measures: out of memory");
        ws->qws_P = P;
        if (rc == 0)
            rc = reserve(&ws->logits, &ws->logits_floats, (size_t)n * m->cfg.num_classes, err);
    }
    for (int k = FS_MEASURE_ABLATE_ACC; k <= FS_MEASURE_ONLY_ACC && rc == 0; k++)
        for (int l = 0; l < L && rc == 0 && out->v[k]; l++)
            for (int h = 0; h < H && rc == 0; h++)
                rc = ablated_acc(m, examples, labels, n, P, l, h, k == FS_MEASURE_ONLY_ACC, ws, &out->v[k][l * H + h],
                                 err);
    if (rc)
        fs_measures_free(out);
    return rc;
}

void *fs_measures_json(const fs_measures *ms)
{
    cJSON *root = cJSON_CreateObject();
    for (int k = 0; k < FS_NUM_MEASURES; k++) {
        if (!ms->v[k])
            continue;
        cJSON *layers = cJSON_AddArrayToObject(root, fs_measure_names[k]);
        for (int l = 0; l < ms->depth; l++) {
            cJSON *row = cJSON_CreateArray(); /* non-finite values as README "Robustness" says */
            for (int h = 0; h < ms->heads; h++)
                cJSON_AddItemToArray(row, fs_json_float(ms->v[k][(size_t)l * ms->heads + h]));
            cJSON_AddItemToArray(layers, row);
        }
    }
    return root;
}
