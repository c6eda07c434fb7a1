/* fewshot bench: end-to-end training throughput (sampling, forward, backward, Adam),
 * forward-only evaluation throughput and peak memory, for the documented model or a
 * --config. Training samples every batch from the data exactly as a run does. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "fewshot/data.h"
#include "fewshot/forward.h"
#include "fewshot/kvcache.h"
#include "train/sampler.h"
#include "fewshot/seqio.h"
#include "train/trainer.h"

static const fs_opt bench_opts[] = {
    {"--config", "FILE", "run config JSON (default: the documented model and the main run's data/train settings)"},
    {"--set", "S.K=V", "override a config value"},
    {"--threads", "T", "worker threads (default: train.threads, 0 = all cores)"},
    {"--seconds", "S", "measuring time per phase (default 2)"},
    {"--json", NULL, "print one JSON object instead of text"},
    {NULL, NULL, NULL},
};

#define SYNTH_S0 "datasets/synth_s0.h5"
enum { CLASSIFY_QUERIES = 4096 };

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* "model name" from /proc/cpuinfo, or "unknown". */
static void cpu_name(char *out, size_t n)
{
    snprintf(out, n, "unknown");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f)
        return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "model name", 10))
            continue;
        const char *v = strchr(line, ':');
        if (!v)
            break;
        v++;
        while (*v == ' ' || *v == '\t')
            v++;
        snprintf(out, n, "%s", v);
        out[strcspn(out, "\n")] = 0;
        break;
    }
    fclose(f);
}

static double peak_rss_mb(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru))
        return 0;
    return (double)ru.ru_maxrss / 1024.0; /* ru_maxrss is in KiB on Linux */
}

/* The config's data file; else datasets/synth_s0.h5 if present; else the same
 * Omniglot-shaped clusters generated in memory. `source` describes the choice. */
static int bench_dataset(const fs_run_config *cfg, fs_dataset *ds, char *source, size_t n, fs_error *err)
{
    if (cfg->data.type == FS_DATA_ONEHOT || cfg->data.file[0]) {
        snprintf(source, n, "%s", cfg->data.type == FS_DATA_ONEHOT ? "onehot" : cfg->data.file);
        return fs_dataset_load(ds, &cfg->data, err);
    }
    if (access(SYNTH_S0, R_OK) == 0) {
        snprintf(source, n, "%s", SYNTH_S0);
        return fs_dataset_load_h5(ds, SYNTH_S0, cfg->data.path, err);
    }
    snprintf(source, n, "synthetic 1623x5x512 (in memory)");
    return fs_dataset_synth(ds, 1623, 5, 512, 0.5, 0, err);
}

typedef struct {
    double train_steps_per_s, train_seqs_per_s, eval_seqs_per_s, peak_rss_mb, classify_queries_per_s;
    long train_steps, eval_seqs;
    double train_seconds, eval_seconds, final_loss;
} bench_result;

typedef struct {
    fs_run_config cfg;
    fs_dataset data;
    fs_task task;
    fs_seq_mix mix;
    fs_model model;
    fs_trainer trainer;
    fs_eval_set eval;
    int *labels;
    void **scratch; /* per-thread sampler scratch */
    int nscratch;
    float *logits;
    fs_query_ws *qws;
    bool has_data, has_task, has_model, has_trainer, has_eval;
} bench_state;

static void bench_free(bench_state *s)
{
    fs_query_ws_free(s->qws);
    for (int i = 0; i < s->nscratch; i++)
        free(s->scratch[i]);
    free(s->scratch);
    free(s->labels);
    free(s->logits);
    if (s->has_eval)
        fs_eval_set_free(&s->eval);
    if (s->has_trainer)
        fs_trainer_free(&s->trainer);
    if (s->has_model)
        fs_model_free(&s->model);
    if (s->has_task)
        fs_task_free(&s->task);
    if (s->has_data)
        fs_dataset_free(&s->data);
    fs_run_config_free(&s->cfg);
}

static int bench_setup(bench_state *s, const char *origin, int threads, char *source, size_t source_n, fs_error *err)
{
    fs_run_config *c = &s->cfg;
    if (bench_dataset(c, &s->data, source, source_n, err))
        return -1;
    s->has_data = true;
    if (fs_task_init(&s->task, &s->data, &c->data, origin, err))
        return -1;
    s->has_task = true;
    if (!c->input_dim_given)
        c->model.input_dim = s->data.dim;
    if (!c->num_classes_given)
        c->model.num_classes = s->task.num_classes;
    if (fs_model_config_validate(&c->model, origin, err) || fs_run_config_validate(c, origin, err))
        return -1;
    if (fs_seq_mix_from_train(&s->mix, &s->task, &c->train, origin, err))
        return -1;
    if (fs_model_create(&s->model, &c->model, err))
        return -1;
    s->has_model = true;
    fs_model_init_params(&s->model);
    int P = c->train.train_context_len + 1, B = c->train.train_bs;
    fs_optim_config oc = fs_optim_config_from_train(&c->train);
    if (fs_trainer_init(&s->trainer, &s->model, P, B, threads, &oc, err))
        return -1;
    s->has_trainer = true;
    s->labels = malloc(sizeof(int) * (size_t)B * P);
    s->nscratch = threads;
    s->scratch = calloc((size_t)threads, sizeof *s->scratch);
    for (int i = 0; s->scratch && i < threads; i++)
        if (!(s->scratch[i] = malloc(fs_seq_scratch_bytes(c->train.train_context_len))))
            return fs_fail(err, "bench: out of memory");
    if (c->eval.num_evaluators > 0) {
        if (fs_eval_set_build(&s->eval, &s->task, &c->eval, 0, c->train.train_context_len, origin, err))
            return -1;
        s->has_eval = true;
        s->logits = malloc(sizeof(float) * (size_t)s->eval.n * c->model.num_classes);
        s->qws = fs_query_ws_create(&c->model, s->eval.P, threads);
    }
    if (!s->scratch || !s->labels || (s->has_eval && (!s->logits || !s->qws)))
        return fs_fail(err, "bench: out of memory");
    return 0;
}

/* One training step as `fewshot train` takes it: sample the batch straight into the
 * input leaves (threads over sequences, scratch allocated once), then forward, backward
 * and the optimizer. */
static int train_step(bench_state *s, long step, double *loss, fs_error *err)
{
    const fs_train_config *t = &s->cfg.train;
    fs_acts *a = &s->trainer.acts;
    int B = t->train_bs, P = a->P, D = a->cfg.input_dim;
    float *examples = fs_leaf_ptr(a, L_EXAMPLES, 0), *labels = fs_leaf_ptr(a, L_LABELS, 0);
    uint64_t first = (uint64_t)step * (uint64_t)B;
#pragma omp parallel num_threads(s->nscratch)
    {
        void *scratch = s->scratch[omp_get_thread_num()];
#pragma omp for schedule(static)
        for (int b = 0; b < B; b++)
            fs_sample_mixed(&s->task, &s->mix, (uint64_t)t->train_seed, FS_STREAM_TRAIN, first + (uint64_t)b,
                            examples + (size_t)b * P * D, s->labels + (size_t)b * P, NULL, scratch);
    }
    for (int i = 0; i < B * P; i++)
        labels[i] = (float)s->labels[i];
    *loss = fs_trainer_step(&s->trainer, B, NULL);
    (void)err;
    return 0;
}

static int run_bench(bench_state *s, double seconds, bench_result *r, fs_error *err)
{
    memset(r, 0, sizeof *r);
    double loss = 0;
    for (long i = 0; i < 20; i++) /* warm-up: caches, page faults, thread pool */
        if (train_step(s, i, &loss, err))
            return -1;
    long steps = 0;
    double t0 = now_s(), el = 0;
    do {
        for (int k = 0; k < 50; k++, steps++)
            if (train_step(s, 20 + steps, &loss, err))
                return -1;
        el = now_s() - t0;
    } while (el < seconds);
    r->train_steps = steps;
    r->train_seconds = el;
    r->train_steps_per_s = (double)steps / el;
    r->train_seqs_per_s = r->train_steps_per_s * s->cfg.train.train_bs;
    r->final_loss = loss;

    if (s->has_eval) {
        const fs_eval_set *e = &s->eval;
        fs_forward_query_logits(&s->model, s->qws, e->examples, e->labels, e->n, s->logits);
        long seqs = 0;
        t0 = now_s();
        do {
            fs_forward_query_logits(&s->model, s->qws, e->examples, e->labels, e->n, s->logits);
            seqs += e->n;
            el = now_s() - t0;
        } while (el < seconds);
        r->eval_seqs = seqs;
        r->eval_seconds = el;
        r->eval_seqs_per_s = (double)seqs / el;
    }
    r->peak_rss_mb = peak_rss_mb(); /* of training and evaluation */
    /* classify: queries against a frozen key-value cache of a training-length context */
    r->classify_queries_per_s = fs_kv_bench_queries_per_s(&s->model, s->cfg.train.train_context_len,
                                                          CLASSIFY_QUERIES, s->trainer.threads);
    return 0;
}

int fs_cmd_bench(int argc, char **argv)
{
    fs_args args;
    int rc = fs_cli_parse(&args, argc, argv, "bench", "[--config C.json] [--set S.K=V ...] [--threads T] [--seconds S] [--json]",
                          "Measure end-to-end training throughput (sampling, forward, backward and the\n"
                          "optimizer, batch train.train_bs of train_context_len+1 pairs), forward-only\n"
                          "evaluation throughput (query logits of the first evaluator's sequences),\n"
                          "classify throughput (queries against a frozen key-value cache of a\n"
                          "train_context_len-pair context) and the peak resident memory. Data: the config's data.file, else " SYNTH_S0 "\n"
                          "if present, else the same synthetic clusters generated in memory.",
                          bench_opts);
    if (rc)
        return rc > 0 ? 0 : 2;
    bench_state s;
    memset(&s, 0, sizeof s);
    if (fs_cli_run_config(&args, &s.cfg, false))
        return 1;
    long long threads;
    if (fs_arg_int(&args, "--threads", s.cfg.train.threads, 0, 1024, &threads))
        return 2;
    double seconds = 2.0;
    const char *sec = fs_arg(&args, "--seconds");
    if (sec) {
        char *end;
        seconds = strtod(sec, &end);
        if (*sec == 0 || *end || !(seconds > 0) || seconds > 3600)
            return fs_cli_error("--seconds: expected a number of seconds in (0, 3600]");
    }
    int cores = (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (threads <= 0)
        threads = cores > 0 ? cores : 1;
    omp_set_num_threads((int)threads); /* the sampler's parallel loops too */

    const char *origin = fs_arg(&args, "--config") ? fs_arg(&args, "--config") : "bench defaults";
    char source[1100];
    fs_error err = {{0}};
    bench_result r;
    if (bench_setup(&s, origin, (int)threads, source, sizeof source, &err) || run_bench(&s, seconds, &r, &err)) {
        rc = fs_cli_error(err.msg);
        bench_free(&s);
        return rc;
    }
    char cpu[256];
    cpu_name(cpu, sizeof cpu);
    const fs_model_config *mc = &s.cfg.model;
    int B = s.cfg.train.train_bs, P = s.cfg.train.train_context_len + 1;
    if (fs_flag(&args, "--json")) {
        printf("{\"train_steps_per_s\": %.1f, \"train_seqs_per_s\": %.0f, \"eval_seqs_per_s\": %.0f, "
               "\"peak_rss_mb\": %.1f, \"threads\": %d, \"cores\": %d, \"cpu\": \"%s\", \"batch\": %d, "
               "\"pairs\": %d, \"d_model\": %d, \"depth\": %d, \"mlp_ratio\": %g, \"data\": \"%s\"",
               r.train_steps_per_s, r.train_seqs_per_s, r.eval_seqs_per_s, r.peak_rss_mb, (int)threads, cores, cpu,
               B, P, mc->d_model, mc->depth, mc->mlp_ratio, source);
        if (r.classify_queries_per_s >= 0)
            printf(", \"classify_queries_per_s\": %.0f", r.classify_queries_per_s);
        printf("}\n");
    } else {
        printf("fewshot bench: %s, %d thread%s (%d cores)\n", cpu, (int)threads, threads == 1 ? "" : "s", cores);
        printf("model: d_model %d, %d heads, depth %d, mlp_ratio %g, input_dim %d, %d classes; batch %d x %d pairs\n",
               mc->d_model, mc->num_heads, mc->depth, mc->mlp_ratio, mc->input_dim, mc->num_classes, B, P);
        printf("data: %s\n", source);
        printf("train: %.1f steps/s, %.0f sequences/s (%ld steps in %.2f s, end to end, loss %.4f)\n",
               r.train_steps_per_s, r.train_seqs_per_s, r.train_steps, r.train_seconds, r.final_loss);
        if (s.has_eval)
            printf("eval:  %.0f sequences/s (forward-only query logits, %ld sequences in %.2f s)\n", r.eval_seqs_per_s,
                   r.eval_seqs, r.eval_seconds);
        if (r.classify_queries_per_s >= 0)
            printf("classify: %.0f queries/s\n", r.classify_queries_per_s);
        printf("peak RSS: %.1f MiB\n", r.peak_rss_mb);
    }
    bench_free(&s);
    return 0;
}
