#include "train/eval.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "fewshot/forward.h"
#include "fewshot/seqio.h"
#include "model/leaves.h"
#include "base/fileio.h"
#include "base/json.h"

const char *const fs_metric_names[FS_NUM_METRICS] = {"loss", "acc", "in_context_acc", "out_context_acc",
                                                     "prob", "in_context_prob", "out_context_prob",
                                                     "use_context_prob"};

double *fs_metric_field(fs_metrics *m, int i)
{
    double *fields[FS_NUM_METRICS] = {&m->loss, &m->acc, &m->in_context_acc, &m->out_context_acc,
                                      &m->prob, &m->in_context_prob, &m->out_context_prob, &m->use_context_prob};
    return fields[i];
}

cJSON *fs_metrics_object(const fs_metrics *m)
{
    cJSON *o = cJSON_CreateObject();
    fs_metrics copy = *m;
    for (int k = 0; k < FS_NUM_METRICS; k++)
        cJSON_AddItemToObject(o, fs_metric_names[k], fs_json_float(*fs_metric_field(&copy, k)));
    return o;
}

enum { LOGITS_PLAIN, LOGITS_IN_CONTEXT, LOGITS_OUT_OF_CONTEXT };

static bool in_context(const int *labels, int P, int c)
{
    for (int i = 0; i + 1 < P; i++)
        if (labels[i] == c)
            return true;
    return false;
}

/* z_in = m*z - (1-m)*1e20, z_out = (1-m)*z - m*1e20 (docs/metrics.md), in float */
static float logit(const float *z, const int *labels, int P, int c, int mode)
{
    float m = in_context(labels, P, c) ? 1.f : 0.f;
    if (mode == LOGITS_IN_CONTEXT)
        return m * z[c] - (1 - m) * 1e20f;
    if (mode == LOGITS_OUT_OF_CONTEXT)
        return (1 - m) * z[c] - m * 1e20f;
    return z[c];
}

typedef struct {
    int argmax;
    float max, sum; /* softmax(x)[c] = exp(x[c] - max) / sum */
} softmax_stats;

static softmax_stats stats(const float *z, const int *labels, int P, int C, int mode)
{
    softmax_stats s = {0, logit(z, labels, P, 0, mode), 0};
    for (int c = 1; c < C; c++) {
        float x = logit(z, labels, P, c, mode);
        if (x > s.max) /* first maximum wins, like argmax */
            s.max = x, s.argmax = c;
    }
    for (int c = 0; c < C; c++)
        s.sum += expf(logit(z, labels, P, c, mode) - s.max);
    return s;
}

static float prob(const softmax_stats *s, const float *z, const int *labels, int P, int c, int mode)
{
    return expf(logit(z, labels, P, c, mode) - s->max) / s->sum;
}

void fs_metrics_of_sequence(const float *z, int C, const int *labels, int P, fs_metrics *out)
{
    int y = labels[P - 1];
    bool valid = y >= 0 && y < C; /* an out-of-range label: all-zero one-hot, no loss */
    softmax_stats plain = stats(z, labels, P, C, LOGITS_PLAIN);
    softmax_stats in = stats(z, labels, P, C, LOGITS_IN_CONTEXT);
    softmax_stats outc = stats(z, labels, P, C, LOGITS_OUT_OF_CONTEXT);
    double lse = 0;
    for (int c = 0; c < C; c++)
        lse += exp((double)z[c] - plain.max);
    out->loss = valid ? log(lse) + plain.max - z[y] : 0;
    out->acc = plain.argmax == y;
    out->in_context_acc = in.argmax == y;
    out->out_context_acc = outc.argmax == y;
    out->prob = valid ? prob(&plain, z, labels, P, y, LOGITS_PLAIN) : 0;
    out->in_context_prob = valid ? prob(&in, z, labels, P, y, LOGITS_IN_CONTEXT) : 0;
    out->out_context_prob = valid ? prob(&outc, z, labels, P, y, LOGITS_OUT_OF_CONTEXT) : 0;
    double use = 0;
    for (int c = 0; c < C; c++)
        if (in_context(labels, P, c))
            use += prob(&plain, z, labels, P, c, LOGITS_PLAIN);
    out->use_context_prob = use;
}

void fs_eval_ws_free(fs_eval_ws *ws)
{
    if (ws->qws)
        fs_query_ws_free(ws->qws);
    free(ws->logits);
    if (ws->hc_ready)
        fs_held_unbind(&ws->hc);
    if (ws->ready)
        fs_acts_free(&ws->acts);
    memset(ws, 0, sizeof *ws);
}

enum { EVAL_QUERY_CHUNK = 1024 };

static void accumulate(const float *z, int C, const int *labels, int P, double *sums, fs_metrics *one_out)
{
    fs_metrics one;
    fs_metrics_of_sequence(z, C, labels, P, &one);
    for (int k = 0; k < FS_NUM_METRICS; k++)
        sums[k] += *fs_metric_field(&one, k);
    if (one_out)
        *one_out = one;
}

static int ws_prepare(fs_eval_ws *ws, const fs_model *m, int P, fs_error *err)
{
    if (ws->ready && ws->acts.P == P && fs_model_config_equal(&ws->acts.cfg, &m->cfg))
        return 0;
    if (ws->hc_ready)
        fs_held_unbind(&ws->hc);
    ws->hc_ready = false;
    if (ws->ready)
        fs_acts_free(&ws->acts);
    ws->ready = false;
    /* chunks small enough to keep the arena (and peak memory) small */
    ws->chunk = 128;
    if (fs_acts_create(&ws->acts, &m->cfg, P, ws->chunk, err))
        return -1;
    ws->ready = true;
    return 0;
}

int fs_eval_sequences(const fs_model *m, const float *examples, const int *labels, int n, int P,
                      const fs_held *held, fs_eval_ws *ws, fs_metrics *mean, fs_metrics *per_seq,
                      fs_error *err)
{
    int C = m->cfg.num_classes, D = m->cfg.input_dim;
    double sums[FS_NUM_METRICS] = {0};
    bool files = held && held->files.leaf && held->files.P == P;
    bool clamped = files || (held && held->has_iv);
    if (clamped && ws_prepare(ws, m, P, err)) /* the cache-writing forward's arena */
        return -1;
    if (clamped && ws->hc_ready && !fs_held_bound(&ws->hc, held)) { /* held on something else: rebind */
        fs_held_unbind(&ws->hc);
        ws->hc_ready = false;
    }
    if (clamped && !ws->hc_ready) {
        if (fs_held_bind(&ws->hc, held, &ws->acts, err))
            return -1;
        ws->hc_ready = true;
    }
    if (!clamped) { /* nothing held on: the forward-only query path */
        if (!ws->qws || ws->qws_P != P) {
            if (ws->qws)
                fs_query_ws_free(ws->qws);
            ws->qws = fs_query_ws_create(&m->cfg, P, 0);
            ws->qws_P = P;
            if (!ws->qws)
                return fs_fail(err, "evaluation: out of memory");
        }
        if (!ws->logits && !(ws->logits = fs_alloc(sizeof(float) * (size_t)EVAL_QUERY_CHUNK * C)))
            return fs_fail_alloc(err, "evaluation logits", sizeof(float) * (size_t)EVAL_QUERY_CHUNK * C);
        for (int first = 0; first < n; first += EVAL_QUERY_CHUNK) {
            int count = n - first < EVAL_QUERY_CHUNK ? n - first : EVAL_QUERY_CHUNK;
            if (fs_forward_query_logits(m, ws->qws, examples + (size_t)first * P * D, labels + (size_t)first * P,
                                        count, ws->logits))
                return fs_fail(err, "evaluation: its workspace was made for another model config");
            for (int b = 0; b < count; b++)
                accumulate(ws->logits + (size_t)b * C, C, labels + (size_t)(first + b) * P, P, sums,
                           per_seq ? &per_seq[first + b] : NULL);
        }
        for (int k = 0; k < FS_NUM_METRICS; k++)
            *fs_metric_field(mean, k) = n ? sums[k] / n : 0;
        return 0;
    }
    int id_out = fs_top_after(&m->cfg, L_OUT);
    for (int first = 0; first < n; first += ws->chunk) {
        int count = n - first < ws->chunk ? n - first : ws->chunk;
        fs_acts_set_inputs(&ws->acts, examples + (size_t)first * P * D, labels + (size_t)first * P, 0, count);
        fs_held_forward(&ws->hc, m, &ws->acts, count);
        for (int b = 0; b < count; b++)
            accumulate(fs_leaf_ptr(&ws->acts, id_out, b) + (size_t)(P - 1) * C, C, labels + (size_t)(first + b) * P,
                       P, sums, per_seq ? &per_seq[first + b] : NULL);
    }
    for (int k = 0; k < FS_NUM_METRICS; k++)
        *fs_metric_field(mean, k) = n ? sums[k] / n : 0;
    return 0;
}
