/* Batches of contexts (issue 19, include/fewshot/kvcache.h): B one-context caches of
 * different lengths sharing one copy of the packed weights; the mask is each row's
 * length, so only real tokens are stored and attended. */
#include "kv/kv_internal.h"

#include "base/error.h"

#include <stdlib.h>
#include <string.h>

void fs_kv_batch_free(fs_kv_batch *b)
{
    for (int r = b->rows - 1; b->row && r >= 0; r--) {
        if (r > 0)
            b->row[r].weights = NULL; /* borrowed from row 0 */
        fs_kv_free(&b->row[r]);
    }
    free(b->row);
    memset(b, 0, sizeof *b);
}

/* Prefix a row's error with the row index. */
static int row_error(fs_error *err, int row) { return fs_fail_prefix(err, "kv batch: row %d", row); }

int fs_kv_build_batch(fs_kv_batch *b, const fs_model *m, const fs_kv_context *contexts, int rows, fs_error *err)
{
    memset(b, 0, sizeof *b);
    if (rows < 1)
        return fs_fail(err, "kv batch: no contexts (B = %d): expected at least one row", rows);
    for (int r = 0; r < rows; r++) {
        if (contexts[r].pairs < 1)
            return fs_fail(err, "kv batch: row %d: its mask hides every token (%d pairs): each row needs at least "
                                "one exemplar-label pair",
                           r, contexts[r].pairs);
        if (contexts[r].dim != m->cfg.input_dim)
            return fs_fail(err, "kv batch: row %d: exemplars have %d features, expected the model's input_dim %d", r,
                           contexts[r].dim, m->cfg.input_dim);
    }
    b->row = calloc((size_t)rows, sizeof *b->row);
    if (!b->row)
        return fs_fail(err, "kv batch: out of memory for %d rows", rows);
    for (int r = 0; r < rows; r++) {
        if (kv_cache_init(&b->row[r], m, r ? b->row[0].weights : NULL, err)) {
            fs_kv_batch_free(b);
            return -1;
        }
        b->rows = r + 1;
        if (fs_kv_build(&b->row[r], contexts[r].examples, contexts[r].labels, contexts[r].pairs, err)) {
            row_error(err, r);
            fs_kv_batch_free(b);
            return -1;
        }
    }
    return 0;
}

int fs_kv_append_row(fs_kv_batch *b, int row, const float *example, int label, fs_error *err)
{
    if (row < 0 || row >= b->rows)
        return fs_fail(err, "kv batch: row %d is out of range: the batch has %d rows", row, b->rows);
    if (b->row[row].frozen)
        return fs_fail(err, "kv batch: cannot append to row %d: the batch is frozen (fs_kv_batch_unfreeze first)",
                       row);
    return fs_kv_append(&b->row[row], example, label, err) ? row_error(err, row) : 0;
}

void fs_kv_batch_freeze(fs_kv_batch *b)
{
    for (int r = 0; r < b->rows; r++)
        fs_kv_freeze(&b->row[r]);
}

void fs_kv_batch_unfreeze(fs_kv_batch *b)
{
    for (int r = 0; r < b->rows; r++)
        fs_kv_unfreeze(&b->row[r]);
}

int fs_kv_classify_batch(const fs_kv_batch *b, const fs_kv_queries *queries, float *logits, int threads,
                         fs_error *err)
{
    if (b->rows < 1)
        return fs_fail(err, "kv batch: the batch is empty (no rows)");
    int D = b->row[0].model->cfg.input_dim, C = b->row[0].model->cfg.num_classes;
    for (int r = 0; r < b->rows; r++) {
        if (!b->row[r].frozen)
            return fs_fail(err, "kv batch: classify needs a frozen batch (fs_kv_batch_freeze)");
        if (queries[r].count > 0 && queries[r].dim != D)
            return fs_fail(err, "kv batch: row %d: queries have %d features, expected the model's input_dim %d", r,
                           queries[r].dim, D);
    }
    kv_job *jobs = malloc(sizeof *jobs * (size_t)b->rows);
    if (!jobs)
        return fs_fail(err, "kv batch: out of memory");
    size_t done = 0;
    for (int r = 0; r < b->rows; r++) {
        jobs[r] = (kv_job){&b->row[r], queries[r].examples, queries[r].count, logits + done * C};
        done += queries[r].count;
    }
    int rc = kv_classify_jobs(jobs, b->rows, threads, err);
    free(jobs);
    return rc;
}
