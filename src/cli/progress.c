#include "cli/progress.h"

#include <stdio.h>
#include <time.h>
#include <unistd.h>

static double seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void fs_progress_start(fs_progress *p, bool enabled)
{
    p->enabled = enabled && isatty(2);
    p->total = 0;
    p->first_step = -1;
    p->started = seconds();
    p->last_draw = 0;
}

void fs_progress_update(fs_progress *p, int64_t step, int64_t total, int64_t first_step, double seqs_per_s,
                        double loss, const char *eval_name, double eval_acc)
{
    if (!p->enabled)
        return;
    if (p->first_step < 0) { /* the first update: where this process started */
        p->first_step = first_step;
        p->started = seconds();
    }
    p->total = total;
    double t = seconds();
    if (t - p->last_draw < 0.1 && step < p->total)
        return;
    p->last_draw = t;
    int width = 24, filled = p->total ? (int)(width * step / p->total) : width;
    char bar[32];
    for (int i = 0; i < width; i++)
        bar[i] = i < filled ? '#' : '.';
    bar[width] = 0;
    double rate = (double)(step - p->first_step) / (t - p->started + 1e-9);
    double eta = rate > 0 ? (double)(p->total - step) / rate : 0;
    fprintf(stderr, "\r[%s] step %lld/%lld  %.0f seq/s  loss %.4f  %s acc %.3f  ETA %.0fs   ", bar, (long long)step,
            (long long)p->total, seqs_per_s, loss, eval_name && eval_name[0] ? eval_name : "eval", eval_acc, eta);
}

void fs_progress_finish(fs_progress *p)
{
    if (p->enabled)
        fputc('\n', stderr);
}
