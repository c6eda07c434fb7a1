/* Progress on stderr: a one-line bar redrawn in place when stderr is a terminal, else
 * (a log file, SLURM, nohup) a plain line every `log_every` seconds. */
#ifndef FEWSHOT_PROGRESS_H
#define FEWSHOT_PROGRESS_H

#include <stdbool.h>
#include <stdint.h>

typedef struct {
    bool tty;          /* redraw in place */
    double log_every;  /* plain-line period in seconds; 0 = silent (non-terminal) */
    bool enabled;
    int64_t total, first_step;
    double started, last_draw;
} fs_progress;

/* enabled = false silences both forms; log_every <= 0 silences the plain lines. */
void fs_progress_start(fs_progress *p, bool enabled, double log_every);
/* Show a status line (printf-style); throttled to 10 redraws/s on a terminal and one line
 * per log_every seconds otherwise; `force` shows it regardless (the last one). */
void fs_progress_line(fs_progress *p, bool force, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* A training run's line: step, sequences/s, loss, latest eval accuracy, ETA. */
void fs_progress_update(fs_progress *p, int64_t step, int64_t total, int64_t first_step, double seqs_per_s,
                        double loss, const char *eval_name, double eval_acc);
void fs_progress_finish(fs_progress *p);
double fs_progress_seconds(void); /* monotonic clock */
/* "1h02m", "3m05s", "42s" */
void fs_progress_duration(double seconds, char *out, int n);

#endif
