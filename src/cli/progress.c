#include "cli/progress.h"

#include <stdarg.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

double fs_progress_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void fs_progress_duration(double s, char *out, int n)
{
    long t = s > 0 && s < 1e9 ? (long)(s + 0.5) : 0;
    if (t >= 3600)
        snprintf(out, (size_t)n, "%ldh%02ldm", t / 3600, t / 60 % 60);
    else if (t >= 60)
        snprintf(out, (size_t)n, "%ldm%02lds", t / 60, t % 60);
    else
        snprintf(out, (size_t)n, "%lds", t);
}

void fs_progress_start(fs_progress *p, bool enabled, double log_every)
{
    p->tty = isatty(2);
    p->log_every = log_every > 0 ? log_every : 0;
    p->enabled = enabled && (p->tty || p->log_every > 0);
    p->total = 0;
    p->first_step = -1;
    p->started = fs_progress_seconds();
    p->last_draw = p->tty ? 0 : p->started; /* the first plain line after one period */
}

void fs_progress_line(fs_progress *p, bool force, const char *fmt, ...)
{
    if (!p->enabled)
        return;
    double t = fs_progress_seconds();
    if (!force && t - p->last_draw < (p->tty ? 0.1 : p->log_every))
        return;
    p->last_draw = t;
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (p->tty) {
        fprintf(stderr, "\r%s   ", line);
    } else {
        char el[32];
        fs_progress_duration(t - p->started, el, sizeof el);
        fprintf(stderr, "[%s] %s\n", el, line);
    }
}

void fs_progress_update(fs_progress *p, int64_t step, int64_t total, int64_t first_step, double seqs_per_s,
                        double loss, const char *eval_name, double eval_acc)
{
    if (!p->enabled)
        return;
    if (p->first_step < 0) { /* the first update: where this process started */
        p->first_step = first_step;
        p->started = fs_progress_seconds();
    }
    p->total = total;
    double t = fs_progress_seconds();
    double rate = (double)(step - p->first_step) / (t - p->started + 1e-9);
    char eta[32];
    fs_progress_duration(rate > 0 ? (double)(p->total - step) / rate : 0, eta, sizeof eta);
    const char *ev = eval_name && eval_name[0] ? eval_name : "eval";
    if (p->tty) {
        int width = 24, filled = p->total ? (int)(width * step / p->total) : width;
        char bar[32];
        for (int i = 0; i < width; i++)
            bar[i] = i < filled ? '#' : '.';
        bar[width] = 0;
        fs_progress_line(p, step >= p->total, "[%s] step %lld/%lld  %.0f seq/s  loss %.4f  %s acc %.3f  ETA %s", bar,
                         (long long)step, (long long)p->total, seqs_per_s, loss, ev, eval_acc, eta);
    } else {
        fs_progress_line(p, step >= p->total, "step %lld/%lld (%.0f%%)  %.0f seq/s  loss %.4f  %s acc %.3f  ETA %s",
                         (long long)step, (long long)p->total, p->total ? 100.0 * (double)step / (double)p->total : 100.0,
                         seqs_per_s, loss, ev, eval_acc, eta);
    }
}

void fs_progress_finish(fs_progress *p)
{
    if (p->enabled && p->tty)
        fputc('\n', stderr);
}
