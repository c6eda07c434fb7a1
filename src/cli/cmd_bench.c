/* fewshot bench: end-to-end training throughput (sampling, forward, backward, Adam),
 * forward-only evaluation throughput and peak memory, for the documented model or a
 * --config. Training samples every batch from the data exactly as a run does. */
#include <math.h>
#include <omp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli/bench_cache.h"
#include "cli/cli.h"
#include "cli/progress.h"
#include "fewshot/data.h"
#include "fewshot/forward.h"
#include "fewshot/kvcache.h"
#include "train/sampler.h"
#include "fewshot/seqio.h"
#include "kernels/kernels.h"
#include "train/batch.h"
#include "train/trainer.h"

static const fs_opt bench_opts[] = {
    {"--config", "FILE", "run config JSON (default: the documented model and the main run's data/train settings)"},
    {"--set", "S.K=V", "override a config value"},
    {"--threads", "T", "worker threads (default: train.threads, 0 = all cores)"},
    {"--seconds", "S", "measuring time per phase (default 2)"},
    {"--json", NULL, "print one JSON object instead of text"},
    {"--sizes", NULL, "training only, on a ladder of model sizes (d_model/depth/pairs 64/2/3, 128/2/9, 256/4/17, 64/12/3; 8 heads)"},
    {"--load", "N", "run N busy competitor processes while measuring (and report training's quiet figure too)"},
    {"--repeat", "R", "measure every phase in R windows of --seconds and report the fastest, with the median (default 1)"},
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
    fs_run_config cfg;
    fs_dataset data;
    fs_task task;
    fs_seq_mix mix;
    fs_model model;
    fs_trainer trainer;
    fs_eval_set eval;
    fs_batch_sampler batch;
    float *logits;
    fs_query_ws *qws;
    bool has_data, has_task, has_model, has_trainer, has_eval;
} bench_state;

static void bench_free(bench_state *s)
{
    fs_query_ws_free(s->qws);
    fs_batch_sampler_free(&s->batch);
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

static int bench_setup(bench_state *s, const char *origin, int threads, bool with_eval, char *source, size_t source_n,
                       fs_error *err)
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
    if (fs_batch_sampler_init(&s->batch, &s->task, &s->mix, (uint64_t)c->train.train_seed, B,
                              c->train.train_context_len, threads, err))
        return -1;
    if (with_eval && c->eval.num_evaluators > 0) {
        if (fs_eval_set_build(&s->eval, &s->task, &c->eval, 0, c->train.train_context_len, origin, err))
            return -1;
        s->has_eval = true;
        s->logits = malloc(sizeof(float) * (size_t)s->eval.n * c->model.num_classes);
        s->qws = fs_query_ws_create(&c->model, s->eval.P, threads);
    }
    if (s->has_eval && (!s->logits || !s->qws))
        return fs_fail(err, "bench: out of memory");
    return 0;
}

/* ---- multiply-adds per unit of work (matrix products and attention) ---- */

/* One sequence through the cache-writing forward: embeddings, per layer qkv, causal
 * scores and values, projection and MLP, and the unembedding of every token. */
static double forward_madds(const fs_model_config *c, int P)
{
    double N = 2.0 * P - 1, d = c->d_model, F = fs_mlp_hidden(c);
    double layer = N * 3 * d * d + N * (N + 1) * d + N * d * d + 2 * N * d * F;
    return P * (double)c->input_dim * d + P * (double)c->num_classes * d + c->depth * layer + N * d * c->num_classes;
}

/* A training step: forward, and a backward of twice its products, for B sequences. */
static double train_madds(const fs_model_config *c, int P, int B) { return 3.0 * B * forward_madds(c, P); }

/* The query-only forward (fs_forward_query_logits) of one sequence: every layer but the
 * last on all tokens, the last one's keys/values on all tokens and the rest on the query. */
static double eval_madds(const fs_model_config *c, int P)
{
    double N = 2.0 * P - 1, d = c->d_model, F = fs_mlp_hidden(c);
    double full = N * 3 * d * d + N * (N + 1) * d + N * d * d + 2 * N * d * F;
    double last = N * 2 * d * d + d * d + 2 * N * d + d * d + 2 * d * F;
    return P * (double)c->input_dim * d + (c->depth - 1) * full + last + d * c->num_classes;
}

/* One query against a frozen cache of `pairs` exemplar-label pairs (2 * pairs tokens). */
static double classify_madds(const fs_model_config *c, int pairs)
{
    double d = c->d_model, F = fs_mlp_hidden(c), keys = 2.0 * pairs + 1;
    double layer = 3 * d * d + 2 * keys * d + d * d + 2 * d * F;
    return (double)c->input_dim * d + c->depth * layer + d * c->num_classes;
}

/* ---- the phases ---- */

enum { MAX_REPEAT = 100 };

/* A phase's figures are those of its fastest window (--repeat): other work on the cores
 * only ever slows a window down, so the fastest is the closest to the machine's speed;
 * every window's rate is kept for the median. */
typedef struct {
    double per_s;  /* steps, sequences or queries per second */
    double madds;  /* multiply-adds per second */
    double peak;   /* the FMA peak: the best probe of the run (shared cores vary) */
    long count;
    double seconds;
    int windows;
    double window_per_s[MAX_REPEAT];
} phase_rate;

typedef struct {
    phase_rate train, train_quiet, eval, classify;
    double final_loss, peak_rss_mb;
    double peak, peak_min; /* the best and the worst of the probes before and after each phase */
} bench_result;

static const double PEAK_SECONDS = 0.25;

static void add_window(phase_rate *p, const phase_rate *w)
{
    int n = p->windows;
    if (n == 0 || w->per_s > p->per_s) {
        p->per_s = w->per_s;
        p->madds = w->madds;
        p->count = w->count;
        p->seconds = w->seconds;
    }
    p->window_per_s[n] = w->per_s;
    p->windows = n + 1;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median_per_s(const phase_rate *p)
{
    if (p->windows <= 1)
        return p->per_s;
    double v[MAX_REPEAT];
    memcpy(v, p->window_per_s, sizeof(double) * (size_t)p->windows);
    qsort(v, (size_t)p->windows, sizeof *v, cmp_double);
    int n = p->windows;
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Keep the best and the worst FMA-peak probe of the run (probes run before and after
 * every phase): the best is the machine's peak, the worst shows how much other work
 * took of it meanwhile. */
static void probe_peak(double *best, double *worst, int threads)
{
    double peak = fs_fma_peak(threads, PEAK_SECONDS);
    if (peak > *best)
        *best = peak;
    if (*worst <= 0 || peak < *worst)
        *worst = peak;
}

/* Probes this far apart mean other work shared the cores while measuring. */
static bool peak_varied(double best, double worst) { return worst < 0.85 * best; }

static void print_peak_note(double best, double worst)
{
    if (peak_varied(best, worst))
        printf("note: the FMA peak probes ranged from %.0f to %.0f G multiply-adds/s: other work shared the cores, "
               "so these figures are low and vary from run to run; compare builds by alternating runs\n",
               worst * 1e-9, best * 1e-9);
}

/* One training step as `fewshot train` takes it (the run loop's call): the batch
 * sampled inside the step, forward, backward and the optimizer. */
static double train_step(bench_state *s, long step) { return fs_batch_train_step(&s->batch, &s->trainer, step, NULL); }

/* One window of `seconds`; `warm_up` first takes 20 untimed steps (caches, page faults,
 * the thread pool): a phase's first window needs them, the windows after it do not. */
static phase_rate time_train(bench_state *s, double seconds, bool warm_up, long *next_step, double *loss)
{
    phase_rate r = {0};
    for (int i = 0; warm_up && i < 20; i++)
        *loss = train_step(s, (*next_step)++);
    double t0 = now_s(), el;
    do {
        for (int k = 0; k < 10; k++, r.count++)
            *loss = train_step(s, (*next_step)++);
        el = now_s() - t0;
    } while (el < seconds);
    r.seconds = el;
    r.per_s = (double)r.count / el;
    r.madds = r.per_s * train_madds(&s->cfg.model, s->trainer.acts.P, s->cfg.train.train_bs);
    return r;
}

static phase_rate time_eval(bench_state *s, double seconds)
{
    phase_rate r = {0};
    const fs_eval_set *e = &s->eval;
    if (fs_forward_query_logits(&s->model, s->qws, e->examples, e->labels, e->n, s->logits)) { /* made for s->model */
        fs_cli_error("bench: the eval workspace does not fit the model");
        return r;
    }
    double t0 = now_s(), el;
    do {
        fs_forward_query_logits(&s->model, s->qws, e->examples, e->labels, e->n, s->logits);
        r.count += e->n;
        el = now_s() - t0;
    } while (el < seconds);
    r.seconds = el;
    r.per_s = (double)r.count / el;
    r.madds = r.per_s * eval_madds(&s->cfg.model, e->P);
    return r;
}

/* queries against a frozen key-value cache of a training-length context */
static phase_rate time_classify(bench_state *s)
{
    phase_rate r = {0};
    int pairs = s->cfg.train.train_context_len;
    r.per_s = fs_kv_bench_queries_per_s(&s->model, pairs, CLASSIFY_QUERIES, s->trainer.threads);
    r.madds = r.per_s > 0 ? r.per_s * classify_madds(&s->cfg.model, pairs) : 0;
    return r;
}

/* ---- competitor load: N child processes spinning on the cores ---- */

typedef struct {
    pid_t pid[64];
    int n;
} busy_load;

static void load_start(busy_load *l, int n)
{
    l->n = 0;
    pid_t parent = getpid();
    for (int i = 0; i < n; i++) {
        pid_t p = fork();
        if (p == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive the bench (Ctrl-C, a crash) */
            if (getppid() != parent)
                _exit(0);
            volatile double x = 1;
            for (;;)
                x = x * 1.0000001 + 1e-9;
        }
        if (p > 0)
            l->pid[l->n++] = p;
    }
}

static void load_stop(busy_load *l)
{
    for (int i = 0; i < l->n; i++)
        kill(l->pid[i], SIGKILL);
    for (int i = 0; i < l->n; i++)
        waitpid(l->pid[i], NULL, 0);
    l->n = 0;
}

/* `repeat` rounds of the phases, each phase one window per round; the peak is probed
 * between rounds unless competitors are running (it would measure them). */
static int run_bench(bench_state *s, double seconds, int load, int repeat, bench_result *r)
{
    memset(r, 0, sizeof *r);
    long step = 0;
    int threads = s->trainer.threads;
    busy_load busy = {.n = 0};
    probe_peak(&r->peak, &r->peak_min, threads);
    if (load > 0) {
        for (int k = 0; k < repeat; k++) {
            phase_rate w = time_train(s, seconds, k == 0, &step, &r->final_loss);
            add_window(&r->train_quiet, &w);
            probe_peak(&r->peak, &r->peak_min, threads);
        }
        load_start(&busy, load);
        if (busy.n < load) {
            load_stop(&busy);
            return -1;
        }
    }
    for (int k = 0; k < repeat; k++) {
        if (k > 0 && load == 0)
            probe_peak(&r->peak, &r->peak_min, threads);
        phase_rate w = time_train(s, seconds, k == 0, &step, &r->final_loss);
        add_window(&r->train, &w);
        if (s->has_eval) {
            w = time_eval(s, seconds);
            add_window(&r->eval, &w);
        }
        if (k == 0) /* of training and evaluation, before classify's first window */
            r->peak_rss_mb = peak_rss_mb();
        w = time_classify(s);
        add_window(&r->classify, &w);
    }
    load_stop(&busy);
    probe_peak(&r->peak, &r->peak_min, threads);
    phase_rate *phases[] = {&r->train_quiet, &r->train, &r->eval, &r->classify};
    for (size_t i = 0; i < sizeof phases / sizeof *phases; i++)
        phases[i]->peak = r->peak;
    return 0;
}

/* ---- output ---- */

static double fraction(const phase_rate *p) { return p->peak > 0 ? p->madds / p->peak : 0; }

/* the median window's fraction of the peak (multiply-adds per unit of work are fixed) */
static double median_fraction(const phase_rate *p)
{
    return p->per_s > 0 ? fraction(p) * median_per_s(p) / p->per_s : 0;
}

static void print_phase_json(const char *name, const phase_rate *p)
{
    printf(", \"%s_madds_per_s\": %.4g, \"%s_peak_fraction\": %.4f, \"%s_peak_fraction_median\": %.4f", name,
           p->madds, name, fraction(p), name, median_fraction(p));
}

static void print_phase_text(const phase_rate *p)
{
    printf("  [%.2f G multiply-adds/s, %.1f%% of peak", p->madds * 1e-9, 100 * fraction(p));
    if (p->windows > 1)
        printf("; fastest of %d windows, median %.1f%%", p->windows, 100 * median_fraction(p));
    printf("]\n");
}

static void print_result(const bench_state *s, const bench_result *r, const fs_bench_cache_result *cache, int threads,
                         int cores, int load, const char *source, bool json)
{
    char cpu[256];
    cpu_name(cpu, sizeof cpu);
    const fs_model_config *mc = &s->cfg.model;
    int B = s->cfg.train.train_bs, P = s->cfg.train.train_context_len + 1;
    if (json) {
        printf("{\"train_steps_per_s\": %.6g, \"train_seqs_per_s\": %.6g, \"eval_seqs_per_s\": %.6g, "
               "\"peak_rss_mb\": %.1f, \"threads\": %d, \"cores\": %d, \"cpu\": \"%s\", \"batch\": %d, "
               "\"pairs\": %d, \"d_model\": %d, \"depth\": %d, \"mlp_ratio\": %g, \"data\": \"%s\"",
               r->train.per_s, r->train.per_s * B, r->eval.per_s, r->peak_rss_mb, threads, cores, cpu, B, P,
               mc->d_model, mc->depth, mc->mlp_ratio, source);
        printf(", \"windows\": %d, \"train_steps_per_s_median\": %.6g, \"eval_seqs_per_s_median\": %.6g",
               r->train.windows, median_per_s(&r->train), median_per_s(&r->eval));
        if (r->classify.per_s >= 0)
            printf(", \"classify_queries_per_s\": %.6g, \"classify_queries_per_s_median\": %.6g", r->classify.per_s,
                   median_per_s(&r->classify));
        printf(", \"simd\": \"%s\", \"simd_width\": %d, \"fma_peak_madds_per_s\": %.4g, "
               "\"fma_peak_min_madds_per_s\": %.4g",
               fs_simd_name(), fs_simd_width(), r->peak, r->peak_min);
        print_phase_json("train", &r->train);
        if (s->has_eval)
            print_phase_json("eval", &r->eval);
        if (r->classify.per_s > 0)
            print_phase_json("classify", &r->classify);
        if (load > 0)
            printf(", \"load\": %d, \"train_quiet_steps_per_s\": %.6g, \"train_loaded_fraction\": %.3f", load,
                   r->train_quiet.per_s, r->train_quiet.per_s > 0 ? r->train.per_s / r->train_quiet.per_s : 0);
        if (cache)
            fs_bench_cache_print(cache, true);
        printf("}\n");
        return;
    }
    printf("fewshot bench: %s, %d thread%s (%d cores)\n", cpu, threads, threads == 1 ? "" : "s", cores);
    printf("simd: %s, %d floats per vector; fp32 FMA peak %.1f G multiply-adds/s on %d thread%s\n", fs_simd_name(),
           fs_simd_width(), r->peak * 1e-9, threads, threads == 1 ? "" : "s");
    printf("model: d_model %d, %d heads, depth %d, mlp_ratio %g, input_dim %d, %d classes; batch %d x %d pairs\n",
           mc->d_model, mc->num_heads, mc->depth, mc->mlp_ratio, mc->input_dim, mc->num_classes, B, P);
    printf("data: %s\n", source);
    if (load > 0) {
        printf("load: %d busy competitor process%s while measuring\n", load, load == 1 ? "" : "es");
        printf("train (quiet): %.1f steps/s", r->train_quiet.per_s);
        print_phase_text(&r->train_quiet);
    }
    printf("train: %.1f steps/s, %.0f sequences/s (%ld steps in %.2f s, end to end, loss %.4f)", r->train.per_s,
           r->train.per_s * B, r->train.count, r->train.seconds, r->final_loss);
    print_phase_text(&r->train);
    if (load > 0 && r->train_quiet.per_s > 0)
        printf("train under load: %.0f%% of the quiet figure\n", 100 * r->train.per_s / r->train_quiet.per_s);
    if (s->has_eval) {
        printf("eval:  %.0f sequences/s (forward-only query logits, %ld sequences in %.2f s)", r->eval.per_s,
               r->eval.count, r->eval.seconds);
        print_phase_text(&r->eval);
    }
    if (r->classify.per_s >= 0) {
        printf("classify: %.0f queries/s", r->classify.per_s);
        print_phase_text(&r->classify);
    }
    if (cache)
        fs_bench_cache_print(cache, false);
    printf("peak RSS: %.1f MiB\n", r->peak_rss_mb);
    print_peak_note(r->peak, r->peak_min);
}

/* ---- the size ladder ---- */

static const struct {
    int d_model, depth, pairs;
} ladder[] = {{64, 2, 3}, {128, 2, 9}, {256, 4, 17}, {64, 12, 3}};

/* Training throughput of each ladder row: the run config with d_model, depth and
 * train_context_len = pairs - 1 replaced (8 heads). */
static int run_sizes(const fs_args *args, const char *origin, int threads, double seconds, int repeat, bool json,
                     fs_error *err)
{
    enum { ROWS = (int)(sizeof ladder / sizeof *ladder) };
    phase_rate rate[ROWS];
    int batch[ROWS];
    memset(rate, 0, sizeof rate);
    double peak = 0, peak_min = 0;
    probe_peak(&peak, &peak_min, threads);
    fs_progress prog;
    fs_progress_start(&prog, true, 30);
    for (int i = 0; i < ROWS; i++) {
        bench_state s;
        memset(&s, 0, sizeof s);
        if (fs_cli_run_config(args, &s.cfg, false))
            return fs_fail(err, "bench --sizes: cannot read the run config");
        s.cfg.model.d_model = ladder[i].d_model;
        s.cfg.model.num_heads = 8;
        s.cfg.model.depth = ladder[i].depth;
        s.cfg.train.train_context_len = ladder[i].pairs - 1;
        batch[i] = s.cfg.train.train_bs;
        char source[1100];
        long step = 0;
        double loss;
        if (bench_setup(&s, origin, threads, false, source, sizeof source, err)) {
            bench_free(&s);
            return -1;
        }
        for (int k = 0; k < repeat; k++) {
            fs_progress_line(&prog, false, "bench --sizes: row %d of %d (d_model %d, depth %d, pairs %d), window %d of %d",
                             i + 1, ROWS, ladder[i].d_model, ladder[i].depth, ladder[i].pairs, k + 1, repeat);
            phase_rate w = time_train(&s, seconds, k == 0, &step, &loss);
            add_window(&rate[i], &w);
            probe_peak(&peak, &peak_min, threads);
        }
        bench_free(&s);
    }
    fs_progress_finish(&prog);
    /* every row against the best probe of the whole run */
    if (json)
        printf("{\"simd\": \"%s\", \"simd_width\": %d, \"threads\": %d, \"windows\": %d, "
               "\"fma_peak_madds_per_s\": %.4g, \"sizes\": [",
               fs_simd_name(), fs_simd_width(), threads, repeat, peak);
    else
        printf("simd: %s, %d floats per vector; fp32 FMA peak %.1f G multiply-adds/s on %d threads\n"
               "%-8s %-6s %-6s %12s %14s %8s%s\n",
               fs_simd_name(), fs_simd_width(), peak * 1e-9, threads, "d_model", "depth", "pairs", "steps/s",
               "G madds/s", "% peak", repeat > 1 ? "   median steps/s  median % peak" : "");
    for (int i = 0; i < ROWS; i++) {
        phase_rate *r = &rate[i];
        r->peak = peak;
        if (json)
            printf("%s{\"d_model\": %d, \"depth\": %d, \"pairs\": %d, \"batch\": %d, \"train_steps_per_s\": %.6g, "
                   "\"train_madds_per_s\": %.4g, \"train_peak_fraction\": %.4f, \"train_steps_per_s_median\": %.6g, "
                   "\"train_peak_fraction_median\": %.4f}",
                   i ? ", " : "", ladder[i].d_model, ladder[i].depth, ladder[i].pairs, batch[i], r->per_s, r->madds,
                   fraction(r), median_per_s(r), median_fraction(r));
        else if (repeat > 1)
            printf("%-8d %-6d %-6d %12.2f %14.2f %7.1f%% %18.2f %13.1f%%\n", ladder[i].d_model, ladder[i].depth,
                   ladder[i].pairs, r->per_s, r->madds * 1e-9, 100 * fraction(r), median_per_s(r),
                   100 * median_fraction(r));
        else
            printf("%-8d %-6d %-6d %12.2f %14.2f %7.1f%%\n", ladder[i].d_model, ladder[i].depth, ladder[i].pairs,
                   r->per_s, r->madds * 1e-9, 100 * fraction(r));
    }
    if (json)
        printf("], \"fma_peak_best_madds_per_s\": %.4g, \"fma_peak_min_madds_per_s\": %.4g}\n", peak, peak_min);
    else {
        if (repeat > 1)
            printf("each row: the fastest of %d windows of %g s, and the median window\n", repeat, seconds);
        print_peak_note(peak, peak_min);
    }
    return 0;
}

int fs_cmd_bench(int argc, char **argv)
{
    fs_args args;
    int rc = fs_cli_parse(&args, argc, argv, "bench",
                          "[--config C.json] [--set S.K=V ...] [--threads T] [--seconds S] [--repeat R] [--sizes] [--load N] [--json]",
                          "Measure end-to-end training throughput (sampling, forward, backward and the\n"
                          "optimizer, batch train.train_bs of train_context_len+1 pairs), forward-only\n"
                          "evaluation throughput (query logits of the first evaluator's sequences),\n"
                          "classify throughput (queries against a frozen key-value cache of a\n"
                          "train_context_len-pair context) and the peak resident memory. Each phase is\n"
                          "also given as multiply-adds/s and as a fraction of this machine's measured\n"
                          "fp32 FMA peak for the build's vector width (AVX-512, AVX2+FMA or portable):\n"
                          "the best of probes before and after the phases; a note says when they\n"
                          "differ by more than 15% (other work on the cores: figures low and unsteady).\n"
                          "With --repeat R every phase is measured in R windows (interleaved, the peak\n"
                          "probed between them) and reported by its fastest window, the median beside\n"
                          "it: other work only ever slows a window down.\n"
                          "Data: the config's data.file, else " SYNTH_S0 "\n"
                          "if present, else the same synthetic clusters generated in memory.",
                          bench_opts);
    if (rc)
        return rc > 0 ? 0 : 2;
    bench_state s;
    memset(&s, 0, sizeof s);
    if (fs_cli_run_config(&args, &s.cfg, false))
        return 1;
    long long threads, load, repeat;
    if (fs_arg_int(&args, "--threads", s.cfg.train.threads, 0, 1024, &threads) ||
        fs_arg_int(&args, "--load", 0, 0, 64, &load) || fs_arg_int(&args, "--repeat", 1, 1, MAX_REPEAT, &repeat)) {
        fs_run_config_free(&s.cfg);
        return 2;
    }
    double seconds = 2.0;
    const char *sec = fs_arg(&args, "--seconds");
    if (sec) {
        char *end;
        seconds = strtod(sec, &end);
        if (*sec == 0 || *end || !(seconds > 0) || seconds > 3600) {
            fs_run_config_free(&s.cfg);
            return fs_cli_error("--seconds: expected a number of seconds in (0, 3600]");
        }
    }
    int cores = (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (threads <= 0)
        threads = cores > 0 ? cores : 1;
    omp_set_num_threads((int)threads); /* the sampler's parallel loops too */
    bool json = fs_flag(&args, "--json");

    const char *origin = fs_arg(&args, "--config") ? fs_arg(&args, "--config") : "bench defaults";
    fs_error err = {{0}};
    if (fs_flag(&args, "--sizes")) {
        rc = run_sizes(&args, origin, (int)threads, seconds, (int)repeat, json, &err) ? fs_cli_error(err.msg) : 0;
        fs_run_config_free(&s.cfg);
        return rc;
    }
    char source[1100];
    bench_result r;
    if (bench_setup(&s, origin, (int)threads, true, source, sizeof source, &err)) {
        rc = fs_cli_error(err.msg);
        bench_free(&s);
        return rc;
    }
    if (run_bench(&s, seconds, (int)load, (int)repeat, &r)) {
        bench_free(&s);
        return fs_cli_error("--load: cannot start the competitor processes");
    }
    fs_bench_cache_result cache_r; /* cache dumps of the evaluator's sequences (issue 14) */
    if (s.has_eval && fs_bench_cache(&s.model, s.eval.examples, s.eval.labels, s.eval.n, s.eval.P, seconds, &cache_r, &err)) {
        rc = fs_cli_error(err.msg);
        bench_free(&s);
        return rc;
    }
    print_result(&s, &r, s.has_eval ? &cache_r : NULL, (int)threads, cores, (int)load, source, json);
    bench_free(&s);
    return 0;
}
