/* fewshot classify: many queries against one context with a frozen key-value cache
 * (docs/formats.md). */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/numfmt.h"
#include "base/ostream.h"
#include "cli/cli.h"
#include "fewshot/kvcache.h"
#include "fewshot/seqio.h"

static const fs_opt opts[] = {
    {"--config", "FILE", "config JSON with a \"model\" section (optional if the model file carries it)"},
    {"--model", "FILE", "model parameters (.safetensors)"},
    {"--context", "FILE", "context JSON: {\"examples\": [k][D], \"labels\": [k]}, k >= 1 pairs"},
    {"--queries", "FILE", "queries: JSON {\"examples\": [Q][D]} or an HDF5 file (with --queries-path)"},
    {"--queries-path", "PATH", "dataset in the HDF5 queries file: a 2-D [Q, D] float32 array"},
    {"--threads", "T", "threads across queries (default: all cores)"},
    {"--kv-stats", NULL, "print the cache's per-layer shape, bytes and key/value ranges (stderr with --queries)"},
    {"--set", "S.K=V", "override a config value, e.g. --set model.depth=3"},
    {"-o", "FILE", "write the predictions here (atomically) instead of stdout"},
    {NULL, NULL, NULL},
};

static const char about[] =
    "Classify query exemplars against one context of exemplar-label pairs. The context's keys\n"
    "and values are computed once per layer and frozen; each query then runs as the single\n"
    "token after the context. Prints one JSON line per query: {\"label\": L, \"probs\": [C floats]}.";

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

/* Classify the queries and write the predictions; progress goes to stderr. */
static int classify(const fs_args *a, const fs_kv_cache *c, int threads)
{
    fs_error err = {{0}};
    fs_kv_queries q;
    if (load_queries(a, c->model->cfg.input_dim, &q, &err))
        return fs_cli_error(err.msg);
    int C = c->model->cfg.num_classes;
    float *logits = malloc(sizeof(float) * q.count * (size_t)C);
    double t0 = omp_get_wtime();
    int rc = fs_kv_classify(c, q.examples, q.count, logits, threads, &err);
    double seconds = omp_get_wtime() - t0;
    if (rc == 0) {
        fprintf(stderr, "classified %zu queries against %d context pairs in %.3f s (%.0f queries/s)\n", q.count,
                fs_kv_pairs(c), seconds, q.count / (seconds > 0 ? seconds : 1e-9));
        if (write_predictions(a, logits, q.count, C, threads, &err))
            rc = fs_cli_error(err.msg);
    } else {
        rc = fs_cli_error(err.msg);
    }
    free(logits);
    fs_kv_queries_free(&q);
    return rc;
}

/* Build and freeze the cache from --context. */
static int build_cache(const fs_args *a, const fs_model *m, fs_kv_cache *c)
{
    fs_error err = {{0}};
    fs_kv_context ctx;
    if (fs_kv_context_load(fs_arg(a, "--context"), &m->cfg, &ctx, &err))
        return fs_cli_error(err.msg);
    int rc = fs_kv_init(c, m, &err) || fs_kv_build(c, ctx.examples, ctx.labels, ctx.pairs, &err);
    fs_kv_context_free(&ctx);
    if (rc) {
        char msg[1100];
        snprintf(msg, sizeof msg, "%s: %s", fs_arg(a, "--context"), err.msg);
        return fs_cli_error(msg);
    }
    fs_kv_freeze(c);
    return 0;
}

static int run(const fs_args *a, const fs_model *m)
{
    bool stats = fs_flag(a, "--kv-stats"), queries = fs_arg(a, "--queries") != NULL;
    if (!fs_arg(a, "--context"))
        return fs_cli_error("--context FILE is required: {\"examples\": [k][D], \"labels\": [k]}");
    if (!queries && !stats)
        return fs_cli_error("--queries FILE is required (or --kv-stats to inspect the cache only)");
    if (fs_arg(a, "--queries-path") && !queries)
        return fs_cli_error("--queries-path needs --queries FILE.h5");
    long long threads;
    if (fs_arg_int(a, "--threads", 0, 0, 4096, &threads))
        return 1;
    fs_kv_cache c;
    if (build_cache(a, m, &c))
        return 1;
    int rc = 0;
    if (stats) {
        char *table = fs_kv_stats_table(&c);
        if (queries)
            fputs(table, stderr);
        else
            rc = fs_cli_output(a, table);
        free(table);
    }
    if (queries && rc == 0)
        rc = classify(a, &c, (int)threads);
    fs_kv_free(&c);
    return rc;
}

int fs_cmd_classify(int argc, char **argv)
{
    fs_args args;
    int rc = fs_cli_parse(&args, argc, argv, "classify",
                          "[--config C.json] --model M.safetensors --context CTX.json\n"
                          "       (--queries Q.json | --queries Q.h5 --queries-path PATH | --kv-stats)\n"
                          "       [--threads T] [--kv-stats] [--set S.K=V ...] [-o OUT.jsonl]", about,
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
