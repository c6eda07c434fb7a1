/* fewshot classify: many queries against one context with a frozen key-value cache
 * (docs/formats.md). */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/numfmt.h"
#include "base/ostream.h"
#include "cli/cli.h"
#include "base/json.h"
#include "fewshot/kvcache.h"
#include "fewshot/seqio.h"
#include <cjson/cJSON.h>

static const fs_opt opts[] = {
    {"--config", "FILE", "config JSON with a \"model\" section (optional if the model file carries it)"},
    {"--model", "FILE", "model parameters (.safetensors)"},
    {"--context", "FILE", "context JSON: {\"examples\": [k][D], \"labels\": [k]}, k >= 1 pairs"},
    {"--queries", "FILE", "queries: JSON {\"examples\": [Q][D]} or an HDF5 file (with --queries-path)"},
    {"--queries-path", "PATH", "dataset in the HDF5 queries file: a 2-D [Q, D] float32 array"},
    {"--contexts", "FILE", "instead of --context/--queries: B contexts, each with its own queries, in one HDF5 file "
                           "(examples [B][P][D], labels [B][P], optional lengths [B], queries [B][Q][D], "
                           "query_labels [B][Q]; without queries each row's last real pair is its query; "
                           "docs/formats.md); prints a table per row and overall"},
    {"--threads", "T", "threads across queries (default: all cores)"},
    {"--kv-stats", NULL, "print the cache's tokens before -> after compression, per-layer shape, bytes and "
                         "key/value ranges (stderr with --queries); with labelled queries also accuracy and "
                         "agreement with the uncompressed cache; with --contexts: tokens and bytes per row"},
    {"--kv-keep", "F", "compress the cache: keep a fraction F in (0, 1] of the context tokens, or a count > 1 "
                       "(default 1)"},
    {"--kv-policy", "P", "which tokens compression keeps: recent (default), sinks+recent, attention, labels-only, "
                         "exemplars-only, drop-pairs, drop-pairs:N"},
    {"--kv-sweep", NULL, "classify the queries at keep 1, 0.75, 0.5, 0.25 under every policy; print one table "
                         "(tokens, bytes, accuracy with labelled queries, agreement with keep 1, queries/s)"},
    {"--json", NULL, "--kv-sweep, --contexts: print the table as JSON (with --contexts: every row's predictions, "
                     "probabilities, accuracy, tokens and bytes, and the overall accuracy)"},
    {"--set", "S.K=V", "override a config value, e.g. --set model.depth=3"},
    {"-o", "FILE", "write the predictions (or the --contexts table) here (atomically) instead of stdout"},
    {NULL, NULL, NULL},
};

static const char about[] =
    "Classify query exemplars against one context of exemplar-label pairs. The context's keys\n"
    "and values are computed once per layer and frozen; each query then runs as the single\n"
    "token after the context. Prints one JSON line per query: {\"label\": L, \"probs\": [C floats]}.\n"
    "Queries may carry \"labels\": [Q] (JSON) for accuracy. --kv-keep/--kv-policy evict context tokens\n"
    "(positions keep their RoPE phases; the query stays at position 2k); --kv-sweep compares policies.\n"
    "--contexts FILE.h5 holds B contexts of different lengths in one batched cache: each row's queries\n"
    "run at that row's own position and attend only to its own tokens; prints one table row per context.";

static int load_queries(const fs_args *a, int input_dim, fs_kv_queries *q, fs_error *err)
{
    const char *path = fs_arg(a, "--queries"), *dataset = fs_arg(a, "--queries-path");
    if (dataset || fs_file_is_hdf5(path))
        return fs_kv_queries_load_h5(path, dataset, input_dim, q, err);
    return fs_kv_queries_load_json(path, input_dim, q, err);
}

/* Lines [q0, q1): {"label": argmax, "probs": softmax(logits)} (%.9g round-trips float32). */
static char *format_lines(const float *logits, size_t q0, size_t q1, int C, size_t *len)
{
    size_t cap = (q1 - q0) * (size_t)(32 + (FS_G9_MAX + 2) * C) + 1, n = 0;
    char *text = malloc(cap);
    float *probs = malloc(sizeof(float) * (size_t)C);
    if (!text || !probs) {
        free(text);
        free(probs);
        return NULL;
    }
    for (size_t i = q0; i < q1; i++) {
        int label = fs_kv_probs(logits + i * C, C, probs);
        n += (size_t)snprintf(text + n, cap - n, "{\"label\": %d, \"probs\": [", label);
        for (int k = 0; k < C; k++) {
            if (k) {
                text[n++] = ',';
                text[n++] = ' ';
            }
            n += (size_t)fs_format_g9(text + n, probs[k]);
        }
        n += (size_t)snprintf(text + n, cap - n, "]}\n");
    }
    free(probs);
    *len = n;
    return text;
}

/* One line per query, formatted in parallel blocks and streamed to the output in order
 * (memory: one group of blocks). */
static int write_predictions(const fs_args *a, const float *logits, size_t nq, int C, int threads, fs_error *err)
{
    enum { BLOCK = 4096, GROUP = 16 };
    fs_ostream o;
    if (fs_ostream_open(&o, fs_arg(a, "-o"), err))
        return -1;
    char *parts[GROUP];
    size_t lens[GROUP];
    bool ok = true;
    for (size_t g0 = 0; g0 < nq && ok; g0 += (size_t)BLOCK * GROUP) {
        size_t blocks = (nq - g0 + BLOCK - 1) / BLOCK;
        blocks = blocks < GROUP ? blocks : GROUP;
#pragma omp parallel for schedule(dynamic) num_threads(threads > 0 ? threads : omp_get_max_threads())
        for (size_t b = 0; b < blocks; b++) {
            size_t q0 = g0 + b * BLOCK, q1 = q0 + BLOCK < nq ? q0 + BLOCK : nq;
            parts[b] = format_lines(logits, q0, q1, C, &lens[b]);
        }
        for (size_t b = 0; b < blocks; b++) {
            ok = ok && parts[b];
            if (ok)
                fs_ostream_write(&o, parts[b], lens[b]);
            free(parts[b]);
        }
    }
    if (!ok) {
        fs_ostream_abort(&o);
        return fs_fail(err, "out of memory formatting the predictions");
    }
    return fs_ostream_close(&o, err);
}

static int load_checked_queries(const fs_args *a, const fs_model *m, fs_kv_queries *q)
{
    fs_error err = {{0}};
    if (load_queries(a, m->cfg.input_dim, q, &err))
        return fs_cli_error(err.msg);
    for (size_t i = 0; q->labels && i < q->count; i++)
        if (q->labels[i] >= m->cfg.num_classes) {
            char msg[1200];
            snprintf(msg, sizeof msg, "%s: labels[%zu]: label %d is out of range: expected [0, %d) (num_classes)",
                     fs_arg(a, "--queries"), i, q->labels[i], m->cfg.num_classes);
            fs_kv_queries_free(q);
            return fs_cli_error(msg);
        }
    return 0;
}

/* Argmax of each logits row. */
static int *predictions(const float *logits, size_t nq, int C)
{
    int *pred = malloc(sizeof(int) * (nq ? nq : 1));
    float *probs = malloc(sizeof(float) * (size_t)C);
    if (!pred || !probs) {
        free(pred), free(probs);
        return NULL;
    }
    for (size_t i = 0; i < nq; i++)
        pred[i] = fs_kv_probs(logits + i * C, C, probs);
    free(probs);
    return pred;
}

static double matching(const int *x, const int *y, size_t n)
{
    size_t same = 0;
    for (size_t i = 0; i < n; i++)
        same += x[i] == y[i];
    return n ? (double)same / n : 0;
}

/* Probabilities from non-finite logits are meaningless: an error, never "-nan" on stdout. */
static int check_finite(const float *logits, size_t nq, int C)
{
    for (size_t i = 0; i < nq * (size_t)C; i++)
        if (!isfinite(logits[i])) {
            fs_error err;
            fs_fail(&err, "query %zu: the model's logits are %s (inputs too large for float32?); no predictions "
                    "written", i / (size_t)C, fs_nonfinite_name(logits[i]));
            return fs_cli_error(err.msg);
        }
    return 0;
}

/* Logits [nq][C] of the queries against a frozen cache, with the time taken. */
static float *run_queries(const fs_kv_cache *c, const fs_kv_queries *q, int threads, double *seconds)
{
    fs_error err = {{0}};
    float *logits = malloc(sizeof(float) * q->count * (size_t)c->model->cfg.num_classes);
    if (!logits) {
        fs_cli_error("out of memory for the logits");
        return NULL;
    }
    double t0 = omp_get_wtime();
    if (fs_kv_classify(c, q->examples, q->count, logits, threads, &err)) {
        fs_cli_error(err.msg);
        free(logits);
        return NULL;
    }
    *seconds = omp_get_wtime() - t0;
    if (check_finite(logits, q->count, c->model->cfg.num_classes)) {
        free(logits);
        return NULL;
    }
    return logits;
}

/* Build, freeze and compress (keep < 1 or a policy) the cache of a loaded context. */
static int build_cache(const fs_args *a, const fs_model *m, const fs_kv_context *ctx, double keep,
                       const char *policy, fs_kv_cache *c)
{
    fs_error err = {{0}};
    int rc = fs_kv_init(c, m, &err) || fs_kv_build(c, ctx->examples, ctx->labels, ctx->pairs, &err);
    if (rc == 0) {
        fs_kv_freeze(c);
        if (policy && fs_kv_compress(c, keep, policy, &err))
            rc = 1;
    }
    if (rc) {
        char msg[1100];
        snprintf(msg, sizeof msg, "%s: %s", fs_arg(a, "--context"), err.msg);
        fs_kv_free(c);
        return fs_cli_error(msg);
    }
    return 0;
}

/* Accuracy (labelled queries) and agreement with the uncompressed cache, on stderr. */
static void report_quality(const fs_kv_queries *q, const int *pred, const int *full)
{
    if (q->labels && full)
        fprintf(stderr, "accuracy %.4f (uncompressed cache %.4f), agreement with the uncompressed cache %.4f\n",
                matching(pred, q->labels, q->count), matching(full, q->labels, q->count),
                matching(pred, full, q->count));
    else if (q->labels)
        fprintf(stderr, "accuracy %.4f\n", matching(pred, q->labels, q->count));
    else if (full)
        fprintf(stderr, "agreement with the uncompressed cache %.4f\n", matching(pred, full, q->count));
}

/* Classify the queries (compressed when asked) and write the predictions; the stats,
 * timing, accuracy and agreement go to stderr. */
static int classify(const fs_args *a, const fs_model *m, const fs_kv_context *ctx, double keep, const char *policy,
                    bool stats, int threads)
{
    fs_kv_queries q;
    if (load_checked_queries(a, m, &q))
        return 1;
    int C = m->cfg.num_classes, rc = 1, *full = NULL, *pred = NULL;
    float *logits = NULL;
    double seconds = 0;
    fs_kv_cache c;
    if (policy && (stats || q.labels)) { /* the uncompressed cache's predictions, to compare */
        if (build_cache(a, m, ctx, 1, NULL, &c))
            goto done;
        logits = run_queries(&c, &q, threads, &seconds);
        fs_kv_free(&c);
        if (!logits || !(full = predictions(logits, q.count, C)))
            goto done;
        free(logits);
        logits = NULL;
    }
    if (build_cache(a, m, ctx, keep, policy, &c))
        goto done;
    if (stats) {
        char *table = fs_kv_stats_table(&c);
        fputs(table, stderr);
        free(table);
    }
    logits = run_queries(&c, &q, threads, &seconds);
    if (logits) {
        fprintf(stderr, "classified %zu queries against %d context pairs (%d tokens kept) in %.3f s (%.0f queries/s)\n",
                q.count, fs_kv_pairs(&c), c.seq, seconds, q.count / (seconds > 0 ? seconds : 1e-9));
        if ((stats || q.labels) && (pred = predictions(logits, q.count, C)))
            report_quality(&q, pred, full);
        fs_error err = {{0}};
        rc = write_predictions(a, logits, q.count, C, threads, &err) ? fs_cli_error(err.msg) : 0;
    }
    fs_kv_free(&c);
done:
    free(logits), free(full), free(pred);
    fs_kv_queries_free(&q);
    return rc;
}

/* One cell of --kv-sweep. */
typedef struct {
    const char *policy;
    double keep;
    int tokens;
    size_t bytes;
    double accuracy, agreement, queries_per_s;
} sweep_row;

static char *sweep_text(const sweep_row *rows, int n, const fs_kv_cache *full, size_t nq, bool labelled)
{
    size_t cap = 512 + (size_t)n * 160, len = 0;
    char *text = malloc(cap);
    if (!text)
        return NULL;
    len += (size_t)snprintf(text + len, cap - len,
                            "kv sweep: %d context pairs = %d tokens, %zu queries, %d layers, bytes = keys + values "
                            "of every layer\n%-15s %5s %7s %10s %9s %10s %12s\n",
                            fs_kv_pairs(full), full->pos, nq, full->depth, "policy", "keep", "tokens", "bytes",
                            "accuracy", "agreement", "queries/s");
    for (int i = 0; i < n; i++) {
        char acc[32] = "-";
        if (labelled)
            snprintf(acc, sizeof acc, "%.4f", rows[i].accuracy);
        len += (size_t)snprintf(text + len, cap - len, "%-15s %5.2f %7d %10zu %9s %10.4f %12.0f\n", rows[i].policy,
                                rows[i].keep, rows[i].tokens, rows[i].bytes, acc, rows[i].agreement,
                                rows[i].queries_per_s);
    }
    return text;
}

static char *sweep_json(const sweep_row *rows, int n, const fs_kv_cache *full, size_t nq, bool labelled)
{
    cJSON *root = cJSON_CreateObject(), *list = cJSON_AddArrayToObject(root, "rows");
    cJSON_AddNumberToObject(root, "context_pairs", fs_kv_pairs(full));
    cJSON_AddNumberToObject(root, "context_tokens", full->pos);
    cJSON_AddNumberToObject(root, "queries", (double)nq);
    for (int i = 0; i < n; i++) {
        cJSON *r = cJSON_CreateObject();
        cJSON_AddStringToObject(r, "policy", rows[i].policy);
        cJSON_AddNumberToObject(r, "keep", rows[i].keep);
        cJSON_AddNumberToObject(r, "tokens", rows[i].tokens);
        cJSON_AddNumberToObject(r, "bytes", (double)rows[i].bytes);
        if (labelled)
            cJSON_AddNumberToObject(r, "accuracy", rows[i].accuracy);
        else
            cJSON_AddNullToObject(r, "accuracy");
        cJSON_AddNumberToObject(r, "agreement", rows[i].agreement);
        cJSON_AddNumberToObject(r, "queries_per_s", rows[i].queries_per_s);
        cJSON_AddItemToArray(list, r);
    }
    char *text = fs_json_text(root);
    cJSON_Delete(root);
    return text;
}

/* keep in {1, 0.75, 0.5, 0.25} x every policy against one context. */
static int sweep(const fs_args *a, const fs_model *m, const fs_kv_context *ctx, int threads)
{
    static const double keeps[] = {1, 0.75, 0.5, 0.25};
    enum { NKEEP = sizeof keeps / sizeof *keeps };
    int npol = 0;
    while (fs_kv_policies[npol])
        npol++;
    fs_kv_queries q;
    if (load_checked_queries(a, m, &q))
        return 1;
    int C = m->cfg.num_classes, rc = 1, n = 0, *full = NULL;
    sweep_row *rows = calloc((size_t)npol * NKEEP, sizeof *rows);
    fs_kv_cache ref;
    double seconds;
    if (!rows || build_cache(a, m, ctx, 1, NULL, &ref))
        goto done;
    float *logits = run_queries(&ref, &q, threads, &seconds);
    full = logits ? predictions(logits, q.count, C) : NULL;
    free(logits);
    for (int p = 0; full && p < npol; p++)
        for (int k = 0; k < NKEEP; k++) {
            fs_kv_cache c;
            if (build_cache(a, m, ctx, keeps[k], fs_kv_policies[p], &c))
                goto free_ref;
            logits = run_queries(&c, &q, threads, &seconds);
            int *pred = logits ? predictions(logits, q.count, C) : NULL;
            if (pred) {
                rows[n] = (sweep_row){fs_kv_policies[p], keeps[k], c.seq, fs_kv_bytes(&c),
                                      q.labels ? matching(pred, q.labels, q.count) : 0, matching(pred, full, q.count),
                                      q.count / (seconds > 0 ? seconds : 1e-9)};
                n++;
            }
            free(logits), free(pred);
            fs_kv_free(&c);
            if (!pred)
                goto free_ref;
        }
    if (full) {
        char *text = fs_flag(a, "--json") ? sweep_json(rows, n, &ref, q.count, q.labels != NULL)
                                          : sweep_text(rows, n, &ref, q.count, q.labels != NULL);
        rc = text ? fs_cli_output(a, text) : fs_cli_error("out of memory for the sweep table");
        free(text);
    }
free_ref:
    fs_kv_free(&ref);
done:
    free(rows), free(full);
    fs_kv_queries_free(&q);
    return rc;
}

/* ---- --contexts: B contexts in one batched cache ---- */

/* One row's results, and the sums over rows. */
typedef struct {
    size_t q0, count, correct;
    bool labelled;
} row_result;

static void row_results(const fs_kv_batch_inputs *in, const int *pred, row_result *rows, row_result *all)
{
    *all = (row_result){0, 0, 0, in->queries[0].labels != NULL};
    for (int r = 0; r < in->rows; r++) {
        const fs_kv_queries *q = &in->queries[r];
        rows[r] = (row_result){all->count, q->count, 0, q->labels != NULL};
        for (size_t i = 0; q->labels && i < q->count; i++)
            rows[r].correct += pred[rows[r].q0 + i] == q->labels[i];
        all->count += q->count;
        all->correct += rows[r].correct;
    }
}

static double accuracy(const row_result *r) { return r->count ? (double)r->correct / r->count : 0; }

/* The per-row table: pairs, [tokens before -> kept, bytes,] queries, accuracy, predictions. */
static int contexts_text(const fs_args *a, const fs_kv_batch *b, const row_result *rows, const row_result *all,
                         const int *pred, bool stats, fs_error *err)
{
    fs_ostream o;
    if (fs_ostream_open(&o, fs_arg(a, "-o"), err))
        return -1;
    fs_ostream_printf(&o, "%s: %d contexts, %zu queries%s\n", fs_arg(a, "--contexts"), b->rows, all->count,
                      stats ? "; tokens = context tokens -> cached (compression), bytes = keys + values of every "
                              "layer"
                            : "");
    fs_ostream_printf(&o, "%-7s %6s%s %8s %9s  %s\n", "row", "pairs", stats ? "      tokens      bytes" : "",
                      "queries", "accuracy", "predictions");
    size_t tokens = 0, kept = 0, bytes = 0;
    for (int r = 0; r < b->rows; r++) {
        const fs_kv_cache *c = &b->row[r];
        char acc[32] = "-", tok[32];
        if (rows[r].labelled)
            snprintf(acc, sizeof acc, "%.4f", accuracy(&rows[r]));
        snprintf(tok, sizeof tok, "%d -> %d", c->pos, c->seq);
        fs_ostream_printf(&o, "%-7d %6d", r, fs_kv_pairs(c));
        if (stats)
            fs_ostream_printf(&o, " %11s %10zu", tok, fs_kv_bytes(c));
        fs_ostream_printf(&o, " %8zu %9s  ", rows[r].count, acc);
        for (size_t i = 0; i < rows[r].count; i++)
            fs_ostream_printf(&o, "%s%d", i ? "," : "", pred[rows[r].q0 + i]);
        fs_ostream_puts(&o, "\n");
        tokens += (size_t)c->pos, kept += (size_t)c->seq, bytes += fs_kv_bytes(c);
    }
    char acc[32] = "-", tok[48];
    if (all->labelled)
        snprintf(acc, sizeof acc, "%.4f", accuracy(all));
    snprintf(tok, sizeof tok, "%zu -> %zu", tokens, kept);
    fs_ostream_printf(&o, "%-7s %6s", "overall", "");
    if (stats)
        fs_ostream_printf(&o, " %11s %10zu", tok, bytes);
    fs_ostream_printf(&o, " %8zu %9s\n", all->count, acc);
    return fs_ostream_close(&o, err);
}

static char *contexts_json(const fs_args *a, const fs_kv_batch *b, const row_result *rows, const row_result *all,
                           const int *pred, const float *logits, double seconds)
{
    int C = b->row[0].model->cfg.num_classes;
    float *probs = malloc(sizeof(float) * (size_t)C);
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "contexts", fs_arg(a, "--contexts"));
    cJSON *list = cJSON_AddArrayToObject(root, "rows");
    size_t tokens = 0, kept = 0, bytes = 0;
    for (int r = 0; probs && r < b->rows; r++) {
        const fs_kv_cache *c = &b->row[r];
        cJSON *row = cJSON_CreateObject(), *labels = cJSON_CreateArray(), *p = cJSON_CreateArray();
        cJSON_AddNumberToObject(row, "row", r);
        cJSON_AddNumberToObject(row, "pairs", fs_kv_pairs(c));
        cJSON_AddNumberToObject(row, "context_tokens", c->pos);
        cJSON_AddNumberToObject(row, "tokens", c->seq);
        cJSON_AddNumberToObject(row, "bytes", (double)fs_kv_bytes(c));
        cJSON_AddNumberToObject(row, "queries", (double)rows[r].count);
        if (rows[r].labelled)
            cJSON_AddNumberToObject(row, "accuracy", accuracy(&rows[r]));
        else
            cJSON_AddNullToObject(row, "accuracy");
        for (size_t i = rows[r].q0; i < rows[r].q0 + rows[r].count; i++) {
            cJSON_AddItemToArray(labels, cJSON_CreateNumber(pred[i]));
            fs_kv_probs(logits + i * C, C, probs);
            cJSON_AddItemToArray(p, cJSON_CreateFloatArray(probs, C));
        }
        cJSON_AddItemToObject(row, "predictions", labels);
        cJSON_AddItemToObject(row, "probs", p);
        cJSON_AddItemToArray(list, row);
        tokens += (size_t)c->pos, kept += (size_t)c->seq, bytes += fs_kv_bytes(c);
    }
    cJSON *o = cJSON_AddObjectToObject(root, "overall");
    cJSON_AddNumberToObject(o, "rows", b->rows);
    cJSON_AddNumberToObject(o, "queries", (double)all->count);
    if (all->labelled)
        cJSON_AddNumberToObject(o, "accuracy", accuracy(all));
    else
        cJSON_AddNullToObject(o, "accuracy");
    cJSON_AddNumberToObject(o, "context_tokens", (double)tokens);
    cJSON_AddNumberToObject(o, "tokens", (double)kept);
    cJSON_AddNumberToObject(o, "bytes", (double)bytes);
    cJSON_AddNumberToObject(o, "seconds", seconds);
    cJSON_AddNumberToObject(o, "queries_per_s", all->count / (seconds > 0 ? seconds : 1e-9));
    char *text = probs ? fs_json_text(root) : NULL;
    cJSON_Delete(root);
    free(probs);
    return text;
}

/* Build, freeze and (keep < 1 or a policy) compress every row; errors name the file and row. */
static int build_batch(const fs_args *a, const fs_model *m, const fs_kv_batch_inputs *in, double keep,
                       const char *policy, fs_kv_batch *b)
{
    fs_error err = {{0}};
    const char *path = fs_arg(a, "--contexts");
    if (fs_kv_build_batch(b, m, in->contexts, in->rows, &err)) {
        fs_fail_prefix(&err, "%s", path);
        return fs_cli_error(err.msg);
    }
    fs_kv_batch_freeze(b);
    for (int r = 0; policy && r < b->rows; r++)
        if (fs_kv_compress(&b->row[r], keep, policy, &err)) {
            fs_fail_prefix(&err, "%s: row %d", path, r);
            fs_kv_batch_free(b);
            return fs_cli_error(err.msg);
        }
    return 0;
}

static int classify_contexts(const fs_args *a, const fs_model *m, double keep, const char *policy, bool stats,
                             int threads)
{
    fs_error err = {{0}};
    fs_kv_batch_inputs in;
    if (fs_kv_batch_inputs_load_h5(fs_arg(a, "--contexts"), &m->cfg, &in, &err))
        return fs_cli_error(err.msg);
    int C = m->cfg.num_classes, rc = 1, *pred = NULL;
    size_t total = 0;
    for (int r = 0; r < in.rows; r++)
        total += in.queries[r].count;
    float *logits = NULL;
    row_result *rows = malloc(sizeof *rows * (size_t)in.rows), all;
    fs_kv_batch b;
    if (!rows) {
        fs_cli_error("out of memory for the per-row results");
        goto done;
    }
    if (build_batch(a, m, &in, keep, policy, &b))
        goto done;
    logits = malloc(sizeof(float) * total * (size_t)C);
    double t0 = omp_get_wtime(), seconds = 0;
    if (!logits) {
        fs_cli_error("out of memory for the logits");
    } else if (fs_kv_classify_batch(&b, in.queries, logits, threads, &err)) {
        fs_cli_error(err.msg);
    } else if (!check_finite(logits, total, C) && (pred = predictions(logits, total, C))) {
        seconds = omp_get_wtime() - t0;
        fprintf(stderr, "classified %zu queries of %d contexts in %.6f s (%.0f queries/s)\n", total, in.rows, seconds,
                total / (seconds > 0 ? seconds : 1e-9));
        row_results(&in, pred, rows, &all);
        if (fs_flag(a, "--json")) {
            char *text = contexts_json(a, &b, rows, &all, pred, logits, seconds);
            rc = text ? fs_cli_output(a, text) : fs_cli_error("out of memory for the JSON output");
            free(text);
        } else {
            rc = contexts_text(a, &b, rows, &all, pred, stats, &err) ? fs_cli_error(err.msg) : 0;
        }
    }
    fs_kv_batch_free(&b);
done:
    free(logits), free(pred), free(rows);
    fs_kv_batch_inputs_free(&in);
    return rc;
}

/* --kv-keep: a number in (0, 1] or a whole count (checked by fs_kv_compress). */
static int parse_keep(const fs_args *a, double *keep)
{
    const char *text = fs_arg(a, "--kv-keep");
    *keep = 1;
    if (!text)
        return 0;
    char *end;
    *keep = strtod(text, &end);
    if (end == text || *end)
        return fs_cli_error("--kv-keep: expected a number: a fraction in (0, 1] or a token count");
    return 0;
}

/* --threads, --kv-keep and --kv-policy (recent when only --kv-keep is given). */
static int parse_common(const fs_args *a, int *threads, double *keep, const char **policy)
{
    long long t;
    if (fs_arg_int(a, "--threads", 0, 0, 4096, &t) || parse_keep(a, keep))
        return 1;
    *threads = (int)t;
    *policy = fs_arg(a, "--kv-policy");
    if (!*policy && fs_arg(a, "--kv-keep"))
        *policy = "recent";
    return 0;
}

static int run_contexts(const fs_args *a, const fs_model *m, bool stats)
{
    static const char *const single[] = {"--context", "--queries", "--queries-path"};
    for (size_t i = 0; i < sizeof single / sizeof *single; i++)
        if (fs_arg(a, single[i])) {
            char msg[160];
            snprintf(msg, sizeof msg, "--contexts holds every context and its queries: drop %s", single[i]);
            return fs_cli_error(msg);
        }
    if (fs_flag(a, "--kv-sweep"))
        return fs_cli_error("--kv-sweep runs on one --context; --contexts takes --kv-keep/--kv-policy per row");
    int threads;
    double keep;
    const char *policy;
    return parse_common(a, &threads, &keep, &policy) ? 1 : classify_contexts(a, m, keep, policy, stats, threads);
}

static int run(const fs_args *a, const fs_model *m)
{
    bool stats = fs_flag(a, "--kv-stats"), queries = fs_arg(a, "--queries") != NULL, sweeping = fs_flag(a, "--kv-sweep");
    if (fs_arg(a, "--contexts"))
        return run_contexts(a, m, stats);
    if (!fs_arg(a, "--context"))
        return fs_cli_error("--context FILE is required: {\"examples\": [k][D], \"labels\": [k]}");
    if (!queries && (!stats || sweeping))
        return fs_cli_error("--queries FILE is required (or --kv-stats to inspect the cache only)");
    if (fs_arg(a, "--queries-path") && !queries)
        return fs_cli_error("--queries-path needs --queries FILE.h5");
    if (sweeping && (fs_arg(a, "--kv-keep") || fs_arg(a, "--kv-policy") || stats))
        return fs_cli_error("--kv-sweep runs every keep and policy: drop --kv-keep, --kv-policy and --kv-stats");
    if (fs_flag(a, "--json") && !sweeping)
        return fs_cli_error("--json applies to --kv-sweep and --contexts (predictions are JSON lines already)");
    int threads;
    double keep;
    const char *policy;
    if (parse_common(a, &threads, &keep, &policy))
        return 1;
    fs_error err = {{0}};
    fs_kv_context ctx;
    if (fs_kv_context_load(fs_arg(a, "--context"), &m->cfg, &ctx, &err))
        return fs_cli_error(err.msg);
    int rc;
    if (sweeping) {
        rc = sweep(a, m, &ctx, threads);
    } else if (queries) {
        rc = classify(a, m, &ctx, keep, policy, stats, threads);
    } else {
        fs_kv_cache c;
        rc = build_cache(a, m, &ctx, keep, policy, &c);
        if (rc == 0) {
            char *table = fs_kv_stats_table(&c);
            rc = fs_cli_output(a, table);
            free(table);
            fs_kv_free(&c);
        }
    }
    fs_kv_context_free(&ctx);
    return rc;
}

int fs_cmd_classify(int argc, char **argv)
{
    fs_args args;
    int rc = fs_cli_parse(&args, argc, argv, "classify",
                          "[--config C.json] --model M.safetensors --context CTX.json\n"
                          "       (--queries Q.json | --queries Q.h5 --queries-path PATH | --kv-stats)\n"
                          "       [--threads T] [--kv-stats] [--kv-keep F] [--kv-policy P] [--kv-sweep [--json]]\n"
                          "       [--set S.K=V ...] [-o OUT.jsonl]\n"
                          "   or: fewshot classify [--config C.json] --model M.safetensors --contexts CONTEXTS.h5\n"
                          "       [--threads T] [--kv-stats] [--kv-keep F] [--kv-policy P] [--json] [-o OUT]", about,
                          opts);
    if (rc)
        return rc > 0 ? 0 : 2;
    fs_run_config cfg;
    fs_run_config_default(&cfg);
    fs_model model = {0};
    if (fs_cli_load_model(&args, &cfg, &model)) {
        fs_model_free(&model);
        fs_run_config_free(&cfg);
        return 1;
    }
    rc = run(&args, &model);
    fs_model_free(&model);
    fs_run_config_free(&cfg);
    return rc;
}
