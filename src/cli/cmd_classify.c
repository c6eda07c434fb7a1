/* fewshot classify: many queries against one context with a frozen key-value cache
 * (docs/formats.md). */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "base/fileio.h"
#include "base/json.h"
#include "fewshot/kvcache.h"

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

/* An HDF5 file starts with the signature \211HDF\r\n\032\n. */
static bool is_hdf5(const char *path)
{
    unsigned char sig[8] = {0};
    FILE *f = fopen(path, "rb");
    if (!f)
        return false;
    size_t n = fread(sig, 1, sizeof sig, f);
    fclose(f);
    return n == 8 && !memcmp(sig, "\211HDF\r\n\032\n", 8);
}

static int load_queries(const fs_args *a, int input_dim, fs_kv_queries *q, fs_error *err)
{
    const char *path = fs_arg(a, "--queries"), *dataset = fs_arg(a, "--queries-path");
    if (dataset || is_hdf5(path))
        return fs_kv_queries_load_h5(path, dataset, input_dim, q, err);
    return fs_kv_queries_load_json(path, input_dim, q, err);
}

/* Lines [q0, q1): {"label": argmax, "probs": softmax(logits)} (%.9g round-trips float32). */
static char *format_lines(const float *logits, size_t q0, size_t q1, int C, size_t *len)
{
    size_t cap = (q1 - q0) * (size_t)(32 + 18 * C) + 1, n = 0;
    char *text = malloc(cap);
    float *probs = malloc(sizeof(float) * (size_t)C);
    *len = 0;
    if (!text || !probs) {
        free(text);
        free(probs);
        return NULL;
    }
    text[0] = 0;
    for (size_t i = q0; i < q1; i++) {
        int label = fs_kv_probs(logits + i * C, C, probs);
        n += (size_t)snprintf(text + n, cap - n, "{\"label\": %d, \"probs\": [", label);
        for (int k = 0; k < C; k++)
            n += (size_t)snprintf(text + n, cap - n, "%s%.9g", k ? ", " : "", probs[k]);
        n += (size_t)snprintf(text + n, cap - n, "]}\n");
    }
    free(probs);
    *len = n;
    return text;
}

/* One line per query, formatted in parallel blocks and joined in order (NULL: out of memory). */
static char *format_predictions(const float *logits, size_t nq, int C, int threads)
{
    enum { BLOCK = 4096 };
    size_t blocks = (nq + BLOCK - 1) / BLOCK, total = 0;
    char **parts = calloc(blocks ? blocks : 1, sizeof *parts);
    size_t *lens = calloc(blocks ? blocks : 1, sizeof *lens);
    if (!parts || !lens) {
        free(parts);
        free(lens);
        return NULL;
    }
#pragma omp parallel for schedule(dynamic) num_threads(threads > 0 ? threads : omp_get_max_threads())
    for (size_t b = 0; b < blocks; b++)
        parts[b] = format_lines(logits, b * BLOCK, b * BLOCK + BLOCK < nq ? b * BLOCK + BLOCK : nq, C, &lens[b]);
    bool complete = true;
    for (size_t b = 0; b < blocks; b++)
        total += lens[b], complete = complete && parts[b];
    char *text = complete ? malloc(total + 1) : NULL, *at = text;
    for (size_t b = 0; b < blocks; b++) {
        if (text) {
            memcpy(at, parts[b], lens[b]);
            at += lens[b];
        }
        free(parts[b]);
    }
    if (text)
        *at = 0;
    free(parts);
    free(lens);
    return text;
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
    if (!logits) {
        fs_kv_queries_free(&q);
        return fs_cli_error("out of memory for the logits");
    }
    double t0 = omp_get_wtime();
    int rc = fs_kv_classify(c, q.examples, q.count, logits, threads, &err);
    double seconds = omp_get_wtime() - t0;
    /* probabilities from non-finite logits are meaningless: an error, never "-nan" on stdout */
    for (size_t i = 0; rc == 0 && i < q.count * (size_t)C; i++)
        if (!isfinite(logits[i]))
            rc = fs_fail(&err, "%s: query %zu: the model's logits are %s (inputs too large for float32?); no "
                         "predictions written", fs_arg(a, "--queries"), i / (size_t)C, fs_nonfinite_name(logits[i]));
    if (rc == 0) {
        fprintf(stderr, "classified %zu queries against %d context pairs in %.3f s (%.0f queries/s)\n", q.count,
                fs_kv_pairs(c), seconds, q.count / (seconds > 0 ? seconds : 1e-9));
        char *text = format_predictions(logits, q.count, C, threads);
        rc = text ? fs_cli_output(a, text) : fs_cli_error("out of memory formatting the predictions");
        free(text);
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
        if (!table) {
            fs_kv_free(&c);
            return fs_cli_error("out of memory for the --kv-stats table");
        }
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
