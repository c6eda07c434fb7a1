/* Baseline query path: the cache-writing forward in chunks. */
#include <stdlib.h>
#include <string.h>
#include "fewshot/forward.h"
#include "fewshot/seqio.h"
struct fs_query_ws {
    fs_acts acts;
    int chunk;
};
fs_query_ws *fs_query_ws_create(const fs_model_config *cfg, int P, int threads)
{
    fs_query_ws *ws = calloc(1, sizeof *ws);
    fs_error err;
    ws->chunk = 256;
    if (fs_acts_create(&ws->acts, cfg, P, ws->chunk, &err)) {
        free(ws);
        return NULL;
    }
    return ws;
}
void fs_query_ws_free(fs_query_ws *ws)
{
    if (!ws)
        return;
    fs_acts_free(&ws->acts);
    free(ws);
}
void fs_forward_query_logits(const fs_model *m, fs_query_ws *ws, const float *examples, const int *labels, int nseq,
                             float *logits)
{
    int P = ws->acts.P, D = m->cfg.input_dim, C = m->cfg.num_classes;
    for (int s0 = 0; s0 < nseq; s0 += ws->chunk) {
        int n = nseq - s0 < ws->chunk ? nseq - s0 : ws->chunk;
        fs_acts_set_inputs(&ws->acts, examples + (size_t)s0 * P * D, labels + (size_t)s0 * P, 0, n);
        fs_forward(m, &ws->acts, NULL, n);
        for (int b = 0; b < n; b++)
            memcpy(logits + (size_t)(s0 + b) * C, fs_leaf_ptr(&ws->acts, fs_top_after(&m->cfg, L_OUT), b) + (size_t)(P - 1) * C,
                   sizeof(float) * C);
    }
}
