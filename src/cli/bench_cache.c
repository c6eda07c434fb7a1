/* Cache-dump throughput per format for fewshot bench. */
#include "cli/bench_cache.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fewshot/cachefile.h"
#include "fewshot/forward.h"
#include "fewshot/seqio.h"

static const char *const format_names[3] = {"json", "h5", "safetensors"};

static double seconds_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* One file of the n sequences, chunk by chunk as `fewshot cache` writes it; *bytes = its size. */
static int dump_once(const fs_model *m, fs_acts *acts, const bool *sel, const float *examples, const int *labels,
                     int n, fs_cache_format fmt, const char *path, double *bytes, fs_error *err)
{
    fs_cache_file_opts opts = {.format = fmt, .batched = true, .input = "bench"};
    fs_cache_writer *w;
    if (fs_cache_writer_open(&w, path, acts, sel, n, &opts, err))
        return -1;
    size_t per = (size_t)acts->P * m->cfg.input_dim;
    for (int b0 = 0; b0 < n; b0 += acts->B) {
        int k = n - b0 < acts->B ? n - b0 : acts->B;
        fs_acts_set_inputs(acts, examples + (size_t)b0 * per, labels + (size_t)b0 * acts->P, 0, k);
        fs_forward(m, acts, NULL, k);
        if (fs_cache_writer_put(w, acts, k, err)) {
            fs_cache_writer_abort(w);
            return -1;
        }
    }
    if (fs_cache_writer_close(w, err))
        return -1;
    struct stat st;
    *bytes = stat(path, &st) == 0 ? (double)st.st_size : 0;
    unlink(path);
    return 0;
}

int fs_bench_cache(const fs_model *m, const float *examples, const int *labels, int n, int P, double seconds,
                   fs_bench_cache_result *r, fs_error *err)
{
    memset(r, 0, sizeof *r);
    const char *tmp = getenv("TMPDIR") && *getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/fewshot-bench-cache-XXXXXX", tmp);
    if (!mkdtemp(dir))
        return fs_fail(err, "bench: cannot create a temporary directory in %s (%s)", tmp, strerror(errno));
    fs_acts acts;
    int chunk = n < 256 ? n : 256;
    if (fs_acts_create(&acts, &m->cfg, P, chunk, err)) {
        rmdir(dir);
        return -1;
    }
    bool *sel = calloc((size_t)acts.count, sizeof *sel);
    int rc = sel ? 0 : fs_fail(err, "out of memory");
    if (rc == 0 && fs_leaf_select(&acts, NULL, sel, err) < 0)
        rc = -1;
    for (int f = 0; f < 3 && rc == 0; f++) {
        char path[1100];
        snprintf(path, sizeof path, "%s/cache.%s", dir, format_names[f]);
        double t0 = seconds_now(), el = 0, bytes = 0, total = 0;
        do {
            rc = dump_once(m, &acts, sel, examples, labels, n, (fs_cache_format)f, path, &bytes, err);
            total += bytes;
            r->seqs[f] += n;
            el = seconds_now() - t0;
        } while (rc == 0 && el < seconds);
        r->seqs_per_s[f] = r->seqs[f] / el;
        r->mb_per_s[f] = total / 1e6 / el;
        r->mb[f] = bytes / 1e6;
    }
    free(sel);
    fs_acts_free(&acts);
    rmdir(dir);
    return rc;
}

void fs_bench_cache_print(const fs_bench_cache_result *r, bool json)
{
    for (int f = 0; f < 3; f++) {
        if (json)
            printf(", \"cache_%s_seqs_per_s\": %.0f, \"cache_%s_mb_per_s\": %.1f", format_names[f], r->seqs_per_s[f],
                   format_names[f], r->mb_per_s[f]);
        else
            printf("cache %-11s %8.0f sequences/s, %7.1f MB/s (full cache, %.1f MB per file)\n", format_names[f],
                   r->seqs_per_s[f], r->mb_per_s[f], r->mb[f]);
    }
}
