/* classify_queries_per_s: throughput of the frozen-cache classifier on random inputs. */
#include <omp.h>
#include <stdlib.h>

#include "cli/cli.h"
#include "fewshot/kvcache.h"
#include "base/rng.h"

enum { KV_BENCH_SEED = 7 };

static float *random_rows(size_t rows, int dim, uint64_t stream)
{
    fs_rng_stream r;
    fs_rng_stream_init(&r, KV_BENCH_SEED, stream);
    float *x = malloc(sizeof(float) * rows * (size_t)dim);
    for (size_t i = 0; i < rows * (size_t)dim; i++)
        x[i] = 2.f * fs_rng_next_float(&r) - 1.f;
    return x;
}

/* Seconds per fs_kv_classify call, repeated for at least `min_seconds`. */
static double time_classify(const fs_kv_cache *c, const float *q, size_t nq, float *logits, int threads,
                            double min_seconds)
{
    int calls = 0;
    double t0 = omp_get_wtime(), t;
    do {
        fs_kv_classify(c, q, nq, logits, threads, NULL);
        calls++;
        t = omp_get_wtime() - t0;
    } while (t < min_seconds);
    return t / calls;
}

double fs_kv_bench_queries_per_s(const fs_model *m, int context_pairs, size_t nqueries, int threads)
{
    const fs_model_config *cfg = &m->cfg;
    if (context_pairs < 1 || nqueries < 1)
        return -1;
    fs_kv_cache c;
    if (fs_kv_init(&c, m, NULL))
        return -1;
    float *ctx = random_rows((size_t)context_pairs, cfg->input_dim, 1);
    int *labels = malloc(sizeof(int) * (size_t)context_pairs);
    for (int i = 0; i < context_pairs; i++)
        labels[i] = i % cfg->num_classes;
    float *queries = random_rows(nqueries, cfg->input_dim, 2);
    float *logits = malloc(sizeof(float) * nqueries * (size_t)cfg->num_classes);
    double qps = -1;
    if (fs_kv_build(&c, ctx, labels, context_pairs, NULL) == 0) {
        fs_kv_freeze(&c);
        time_classify(&c, queries, nqueries, logits, threads, 0.05); /* warm-up */
        qps = (double)nqueries / time_classify(&c, queries, nqueries, logits, threads, 0.5);
    }
    free(ctx);
    free(labels);
    free(queries);
    free(logits);
    fs_kv_free(&c);
    return qps;
}
