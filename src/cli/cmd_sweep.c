/* fewshot sweep: grids of training runs (issue 16). Every grid point runs as a
 * `fewshot train` subprocess of this same binary, so run-directory locking, resume and
 * signal handling are the train command's; this file owns the process pool, forwarding
 * Ctrl-C/SIGTERM, the SLURM job array and the summary table. */
#include <cjson/cJSON.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "base/fileio.h"
#include "cli/cli.h"
#include "cli/progress.h"
#include "train/sweep.h"

/* ---- shared pieces ---- */

static volatile sig_atomic_t stop_signal;

static void on_stop_signal(int sig) { stop_signal = sig; }

static void catch_stop_signals(struct sigaction *old_int, struct sigaction *old_term)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    stop_signal = 0;
    sigaction(SIGINT, &sa, old_int);
    sigaction(SIGTERM, &sa, old_term);
}

static void restore_signals(const struct sigaction *old_int, const struct sigaction *old_term)
{
    sigaction(SIGINT, old_int, NULL);
    sigaction(SIGTERM, old_term, NULL);
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL); /* a signal cuts it short: fine */
}

/* The path of this binary, so children are the same build. */
static int self_exe(char *out, size_t n)
{
    ssize_t k = readlink("/proc/self/exe", out, n - 1);
    if (k <= 0 || (size_t)k >= n - 1)
        return fs_cli_error("cannot read /proc/self/exe (the sweep runs its points with this same binary)");
    out[k] = 0;
    return 0;
}

/* DIR/<name>/checkpoints holds a checkpoint: the run resumes. */
static bool has_checkpoint(const char *dir, const char *name)
{
    char path[2200];
    snprintf(path, sizeof path, "%s/%s/checkpoints", dir, name);
    DIR *d = opendir(path);
    if (!d)
        return false;
    bool found = false;
    for (struct dirent *e; !found && (e = readdir(d));) {
        size_t n = strlen(e->d_name);
        found = !strncmp(e->d_name, "step_", 5) && n > 12 && !strcmp(e->d_name + n - 12, ".safetensors");
    }
    closedir(d);
    return found;
}

/* Sequences seen so far by a run: the last "iter" in its metrics.jsonl (0 if none). */
static long long run_iter(const char *dir, const char *name)
{
    char path[2200];
    snprintf(path, sizeof path, "%s/%s/metrics.jsonl", dir, name);
    FILE *f = fopen(path, "rb");
    if (!f)
        return 0;
    char buf[4096];
    long size = fseek(f, 0, SEEK_END) == 0 ? ftell(f) : 0;
    long from = size > (long)sizeof buf - 1 ? size - (long)sizeof buf + 1 : 0;
    fseek(f, from, SEEK_SET);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    long long iter = 0;
    for (char *p = buf; (p = strstr(p, "\"iter\":")); p += 7)
        iter = strtoll(p + 7, NULL, 10);
    return iter;
}

/* The run's failure message: the last "error:" line of its log, else its last line. */
static void failure_message(const char *log, int status, char *out, size_t n)
{
    if (WIFSIGNALED(status))
        snprintf(out, n, "fewshot train was killed by signal %d", WTERMSIG(status));
    else
        snprintf(out, n, "fewshot train exited with status %d", WEXITSTATUS(status));
    fs_error ignored;
    char *text = fs_read_file(log, NULL, &ignored);
    if (!text)
        return;
    char *best = NULL, *last = NULL;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        if (strstr(line, "error:"))
            best = line;
        if (line[strspn(line, " \r\t")])
            last = line;
    }
    if (best || last) {
        char tail[600];
        snprintf(tail, sizeof tail, "%s", best ? best : last);
        size_t used = strlen(out);
        snprintf(out + used, n - used, ": %s", tail);
    }
    free(text);
}

/* Start `fewshot train` for run `name` of sweep DIR, output appended to DIR/logs/<name>.log. */
static pid_t spawn_train(const char *self, const char *dir, const char *name, int threads, long long log_every,
                         char *log, size_t log_n)
{
    char config[2200], out[2200], threads_s[32], every_s[32], logs[2100];
    snprintf(config, sizeof config, "%s/configs/%s.json", dir, name);
    snprintf(out, sizeof out, "%s/%s", dir, name);
    snprintf(logs, sizeof logs, "%s/logs", dir);
    snprintf(log, log_n, "%s/logs/%s.log", dir, name);
    snprintf(threads_s, sizeof threads_s, "%d", threads);
    snprintf(every_s, sizeof every_s, "%lld", log_every);
    mkdir(logs, 0755);
    bool resume = has_checkpoint(dir, name);
    const char *argv[] = {self, "train", "--config", config, "--out", out, "--threads", threads_s,
                          "--log-every", every_s, resume ? "--resume" : NULL, NULL};
    int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0)
        return -1;
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        dup2(fd, 1);
        dup2(fd, 2);
        int nul = open("/dev/null", O_RDONLY);
        if (nul >= 0)
            dup2(nul, 0);
        execv(self, (char *const *)argv);
        dprintf(2, "fewshot: error: cannot run %s (%s)\n", self, strerror(errno));
        _exit(127);
    }
    close(fd);
    return pid;
}

/* The outcome of a finished child: "done", "pending" (stopped by a signal; resumable) or
 * "failed" with a message. */
static const char *outcome(int status, const char *log, char *msg, size_t n)
{
    msg[0] = 0;
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return "done";
    if (WIFEXITED(status) && (WEXITSTATUS(status) == 128 + SIGINT || WEXITSTATUS(status) == 128 + SIGTERM))
        return "pending";
    failure_message(log, status, msg, n);
    return "failed";
}

/* `fewshot sweep SUB POS... [options]`: the positional arguments, then the options.
 * Returns 0 when parsed, else 1 with *code the exit status (0 after --help, 2 on misuse). */
static int parse_sub(int argc, char **argv, int npos, const char **pos, fs_args *args, const char *sub,
                     const char *synopsis, const char *about, const fs_opt *opts, int *code)
{
    char cmd[64];
    snprintf(cmd, sizeof cmd, "sweep %s", sub);
    int have = 0;
    while (have < npos && have < argc && argv[have][0] != '-') {
        pos[have] = argv[have];
        have++;
    }
    int rc = fs_cli_parse(args, argc - have, argv + have, cmd, synopsis, about, opts);
    if (rc) {
        *code = rc > 0 ? 0 : 2;
        return 1;
    }
    if (have < npos) {
        fprintf(stderr, "fewshot %s: usage: fewshot %s %s (see --help)\n", cmd, cmd, synopsis);
        *code = 2;
        return 1;
    }
    return 0;
}

static int status_index(const char *s)
{
    static const char *const names[] = {"pending", "running", "done", "failed"};
    for (int i = 0; i < 4; i++)
        if (!strcmp(s, names[i]))
            return i;
    return 0;
}

/* ---- plan ---- */

static const fs_opt plan_opts[] = {{NULL, NULL, NULL}};

static int cmd_plan(int argc, char **argv)
{
    const char *pos[1];
    fs_args args;
    int code;
    if (parse_sub(argc, argv, 1, pos, &args, "plan", "FILE",
                  "Expand and validate a sweep file (README \"Sweeps\"); print each run's index, name and\n"
                  "overrides, then the count. Nothing runs.",
                  plan_opts, &code))
        return code;
    fs_sweep s;
    fs_error err = {{0}};
    if (fs_sweep_load(&s, pos[0], &err))
        return fs_cli_error(err.msg);
    long long seqs = 0;
    for (int i = 0; i < s.n; i++) {
        char *ov = cJSON_PrintUnformatted(s.points[i].overrides);
        printf("%4d  %-40s %s\n", i, s.points[i].name, ov);
        free(ov);
        seqs += s.points[i].train_iters;
    }
    printf("%d runs, %lld training sequences in all\n", s.n, seqs);
    for (const cJSON *k = s.skipped->child; k; k = k->next)
        printf("skipped: %s (%s)\n", cJSON_GetObjectItemCaseSensitive(k, "name")->valuestring,
               cJSON_GetObjectItemCaseSensitive(k, "reason")->valuestring);
    fs_sweep_free(&s);
    return 0;
}

/* ---- run (local pool) ---- */

static const fs_opt run_opts[] = {
    {"--out", "DIR", "sweep directory: DIR/<run>/ (as fewshot train makes), DIR/sweep.json, DIR/logs/"},
    {"-j", "N", "runs at a time (default: cores / threads-per-run, at least 1)"},
    {"--threads-per-run", "T", "threads of each run (default 1; results depend on it, so keep it fixed)"},
    {"--no-progress", NULL, "no progress output"},
    {"--log-every", "SECONDS", "when stderr is not a terminal: a plain progress line every SECONDS (default 30)"},
    {NULL, NULL, NULL},
};

typedef struct {
    pid_t pid;
    int index;
    double started;
    long long base_iter;
    char log[2200];
} child;

/* Threads of each run unless told: the measured best split on 2 cores (README "Sweeps"). */
enum { DEFAULT_THREADS_PER_RUN = 1 };

static int cmd_run(int argc, char **argv)
{
    const char *pos[1];
    fs_args args;
    int code;
    if (parse_sub(argc, argv, 1, pos, &args, "run",
                          "FILE --out DIR [-j N] [--threads-per-run T] [--no-progress] [--log-every S]",
                          "Run every point of a sweep file, N at a time, each as `fewshot train` in DIR/<run>/.\n"
                          "Re-running the same command resumes: finished runs are skipped, interrupted ones continue\n"
                          "from their checkpoint. Ctrl-C/SIGTERM stops the runs (each writes a checkpoint). A failed\n"
                          "run is recorded in DIR/sweep.json with its error (log in DIR/logs/<run>.log); the others\n"
                          "go on. Exit status: 0 if every run is done, 1 if some failed, 128+signal when stopped.",
                          run_opts, &code))
        return code;
    const char *dir = fs_arg(&args, "--out");
    if (!dir)
        return fs_cli_error("sweep run: --out DIR is required");
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    long long tpr, jobs, log_every;
    if (fs_arg_int(&args, "--threads-per-run", DEFAULT_THREADS_PER_RUN, 1, 1024, &tpr) ||
        fs_arg_int(&args, "--log-every", 30, 0, 86400, &log_every))
        return 2;
    long long jdef = cores > tpr ? cores / tpr : 1;
    if (fs_arg_int(&args, "-j", jdef, 1, 1024, &jobs))
        return 2;
    char self[1024];
    if (self_exe(self, sizeof self))
        return 1;
    fs_sweep s;
    fs_error err = {{0}};
    if (fs_sweep_load(&s, pos[0], &err))
        return fs_cli_error(err.msg);
    if (fs_sweep_prepare(&s, dir, &err)) {
        fs_sweep_free(&s);
        return fs_cli_error(err.msg);
    }
    cJSON *m = fs_sweep_manifest_load(dir, &err);
    if (!m) {
        fs_sweep_free(&s);
        return fs_cli_error(err.msg);
    }
    int n = s.n, *state = calloc((size_t)n, sizeof *state); /* 0 pending 1 running 2 done 3 failed */
    long long *iter_now = calloc((size_t)n, sizeof *iter_now);
    child *kids = calloc((size_t)jobs, sizeof *kids);
    const cJSON *runs = cJSON_GetObjectItemCaseSensitive(m, "runs");
    for (int i = 0; i < n; i++) {
        state[i] = status_index(cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(runs, i), "status")->valuestring);
        if (state[i] == 3)
            state[i] = 0; /* a failed run is tried again */
        iter_now[i] = state[i] == 2 ? s.points[i].train_iters : run_iter(dir, s.points[i].name);
    }
    cJSON_Delete(m);
    fprintf(stderr, "sweep: %d runs in %s, %lld at a time x %lld thread(s)\n", n, dir, jobs, tpr);
    struct sigaction old_int, old_term;
    catch_stop_signals(&old_int, &old_term);
    fs_progress bar;
    fs_progress_start(&bar, !fs_flag(&args, "--no-progress"), (double)log_every);
    double t0 = fs_progress_seconds();
    long long processed_done = 0; /* sequences trained by this process in finished children */
    int running = 0, next = 0, manifest_errors = 0;
    bool stopping = false;
    for (;;) {
        if (stop_signal && !stopping) {
            stopping = true;
            for (int k = 0; k < jobs; k++)
                if (kids[k].pid > 0)
                    kill(kids[k].pid, SIGTERM);
        }
        while (!stopping && running < jobs) {
            while (next < n && state[next] != 0)
                next++;
            if (next >= n)
                break;
            int k = 0;
            while (kids[k].pid > 0)
                k++;
            child *c = &kids[k];
            c->index = next;
            c->base_iter = run_iter(dir, s.points[next].name);
            c->started = fs_progress_seconds();
            c->pid = spawn_train(self, dir, s.points[next].name, (int)tpr, log_every, c->log, sizeof c->log);
            if (c->pid < 0) {
                c->pid = 0;
                state[next] = 3;
                char msg[2400];
                snprintf(msg, sizeof msg, "cannot start fewshot train (log %s: %s)", c->log, strerror(errno));
                manifest_errors += fs_sweep_manifest_update(dir, next, "failed", msg, -1, &err) != 0;
            } else {
                state[next] = 1;
                running++;
                manifest_errors += fs_sweep_manifest_update(dir, next, "running", NULL, -1, &err) != 0;
            }
            next++;
        }
        if (running == 0)
            break;
        int status;
        pid_t pid = waitpid(-1, &status, WNOHANG);
        if (pid > 0) {
            int k = 0;
            while (k < jobs && kids[k].pid != pid)
                k++;
            if (k < jobs) {
                child *c = &kids[k];
                char msg[1400];
                const char *st = outcome(status, c->log, msg, sizeof msg);
                double wall = fs_progress_seconds() - c->started;
                iter_now[c->index] = run_iter(dir, s.points[c->index].name);
                processed_done += iter_now[c->index] - c->base_iter;
                state[c->index] = status_index(st);
                manifest_errors +=
                    fs_sweep_manifest_update(dir, c->index, st, msg[0] ? msg : NULL, wall, &err) != 0;
                if (state[c->index] == 3) {
                    if (bar.tty && bar.enabled)
                        fputc('\n', stderr);
                    fprintf(stderr, "sweep: run %s failed: %s\n", s.points[c->index].name, msg);
                }
                c->pid = 0;
                running--;
            }
            continue;
        }
        if (pid < 0 && errno != EINTR)
            break;
        long long processed = processed_done, remaining = 0;
        int ndone = 0, nfailed = 0;
        for (int k = 0; k < jobs; k++)
            if (kids[k].pid > 0) {
                iter_now[kids[k].index] = run_iter(dir, s.points[kids[k].index].name);
                processed += iter_now[kids[k].index] - kids[k].base_iter;
            }
        for (int i = 0; i < n; i++) {
            ndone += state[i] == 2;
            nfailed += state[i] == 3;
            if (state[i] < 2)
                remaining += s.points[i].train_iters - iter_now[i];
        }
        double el = fs_progress_seconds() - t0, rate = (double)processed / (el + 1e-9);
        char eta[32];
        fs_progress_duration(rate > 0 ? (double)remaining / rate : 0, eta, sizeof eta);
        fs_progress_line(&bar, false, "sweep: %d/%d done, %d running, %d failed  %.0f seq/s  ETA %s%s", ndone, n,
                         running, nfailed, rate, rate > 0 ? eta : "?", stopping ? "  (stopping)" : "");
        sleep_ms(200);
    }
    restore_signals(&old_int, &old_term);
    int ndone = 0, nfailed = 0;
    for (int i = 0; i < n; i++) {
        ndone += state[i] == 2;
        nfailed += state[i] == 3;
    }
    double el = fs_progress_seconds() - t0;
    fs_progress_finish(&bar);
    fprintf(stderr, "sweep: %d/%d runs done, %d failed, %.1f s wall, %lld sequences trained (%.0f seq/s); %s/sweep.json\n",
            ndone, n, nfailed, el, processed_done, (double)processed_done / (el + 1e-9), dir);
    if (manifest_errors)
        fs_cli_error(err.msg);
    free(state);
    free(iter_now);
    free(kids);
    fs_sweep_free(&s);
    if (stop_signal) {
        fprintf(stderr, "sweep: stopped; run the same command again to continue.\n");
        return 128 + stop_signal;
    }
    return nfailed || manifest_errors ? 1 : 0;
}

/* ---- task (one point; a SLURM array task) ---- */

static const fs_opt task_opts[] = {
    {"--threads-per-run", "T", "threads of the run (default 1; keep it the same as in `sweep run` to reproduce it)"},
    {"--log-every", "SECONDS", "plain progress line period of the run when not on a terminal (default 30)"},
    {NULL, NULL, NULL},
};

static int cmd_task(int argc, char **argv)
{
    const char *pos[2];
    fs_args args;
    int code;
    if (parse_sub(argc, argv, 2, pos, &args, "task",
                          "DIR INDEX [--threads-per-run T] [--log-every S]",
                          "Run point INDEX of the sweep prepared in DIR (by `sweep run` or `sweep slurm`) in the\n"
                          "foreground, as one SLURM array task does: skipped when done, resumed from its checkpoint\n"
                          "when interrupted; SIGTERM (scancel, time limit) makes the run checkpoint and stop. The\n"
                          "status goes into DIR/sweep.json. Exit status as fewshot train's.",
                          task_opts, &code))
        return code;
    const char *dir = pos[0];
    char *end;
    long index = strtol(pos[1], &end, 10);
    long long tpr, log_every;
    if (fs_arg_int(&args, "--threads-per-run", DEFAULT_THREADS_PER_RUN, 1, 1024, &tpr) ||
        fs_arg_int(&args, "--log-every", 30, 0, 86400, &log_every))
        return 2;
    fs_error err = {{0}};
    cJSON *m = fs_sweep_manifest_load(dir, &err);
    if (!m)
        return fs_cli_error(err.msg);
    int n = fs_sweep_run_count(m);
    if (*pos[1] == 0 || *end || index < 0 || index >= n) {
        cJSON_Delete(m);
        char msg[200];
        snprintf(msg, sizeof msg, "sweep task: INDEX: expected an integer in [0, %d], got '%s'", n - 1, pos[1]);
        return fs_cli_error(msg);
    }
    char name[256];
    snprintf(name, sizeof name, "%s", fs_sweep_run_name(m, (int)index));
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(m, "runs"),
                                                                          (int)index), "status");
    bool done = !strcmp(st->valuestring, "done");
    cJSON_Delete(m);
    if (done) {
        fprintf(stderr, "sweep task %ld: %s is already done\n", index, name);
        return 0;
    }
    char self[1024], log[2200];
    if (self_exe(self, sizeof self))
        return 1;
    struct sigaction old_int, old_term;
    catch_stop_signals(&old_int, &old_term);
    double t0 = fs_progress_seconds();
    if (fs_sweep_manifest_update(dir, (int)index, "running", NULL, -1, &err))
        return fs_cli_error(err.msg);
    fprintf(stderr, "sweep task %ld: %s (log %s/logs/%s.log)\n", index, name, dir, name);
    pid_t pid = spawn_train(self, dir, name, (int)tpr, log_every, log, sizeof log);
    int status = 0;
    bool forwarded = false;
    while (pid > 0) {
        if (stop_signal && !forwarded) {
            kill(pid, SIGTERM);
            forwarded = true;
        }
        pid_t w = waitpid(pid, &status, 0);
        if (w == pid)
            break;
        if (w < 0 && errno != EINTR) {
            pid = -1;
            break;
        }
    }
    restore_signals(&old_int, &old_term);
    char msg[1400];
    const char *result = pid > 0 ? outcome(status, log, msg, sizeof msg) : "failed";
    if (pid <= 0)
        snprintf(msg, sizeof msg, "cannot start fewshot train (%s)", strerror(errno));
    if (fs_sweep_manifest_update(dir, (int)index, result, msg[0] ? msg : NULL, fs_progress_seconds() - t0, &err))
        return fs_cli_error(err.msg);
    fprintf(stderr, "sweep task %ld: %s %s%s%s\n", index, name, result, msg[0] ? ": " : "", msg);
    if (!strcmp(result, "done"))
        return 0;
    if (!strcmp(result, "pending"))
        return WEXITSTATUS(status);
    return 1;
}

/* ---- slurm ---- */

static const fs_opt slurm_opts[] = {
    {"--out", "DIR", "sweep directory (as for sweep run); DIR/sweep.sbatch is written there"},
    {"--partition", "P", "SLURM partition (default: the cluster's default)"},
    {"--time", "T", "time limit per task, e.g. 1:00:00 (default: the partition's)"},
    {"--cpus-per-task", "C", "CPUs per task = threads of each run (default 1)"},
    {"--mem", "M", "memory per task, e.g. 2G (default: the partition's)"},
    {"--max-parallel", "K", "at most K tasks at a time (--array=0-N%K; default: no limit)"},
    {"--submit", NULL, "submit with sbatch and print the job id"},
    {NULL, NULL, NULL},
};

static bool shell_safe(const char *s)
{
    for (; *s; s++)
        if (*s == '\'' || *s == '\n')
            return false;
    return true;
}

static bool slurm_value_ok(const char *v)
{
    for (; *v; v++)
        if (!(isalnum((unsigned char)*v) || strchr(":-_.,+", *v)))
            return false;
    return true;
}

/* Run `sbatch --parsable FILE`, job id into out. */
static int submit(const char *script, char *out, size_t n)
{
    int fds[2];
    if (pipe(fds))
        return fs_cli_error("cannot create a pipe for sbatch");
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fds[1], 1);
        close(fds[0]);
        close(fds[1]);
        execlp("sbatch", "sbatch", "--parsable", script, (char *)NULL);
        dprintf(2, "fewshot: error: cannot run sbatch (%s); is SLURM installed and on PATH?\n", strerror(errno));
        _exit(127);
    }
    close(fds[1]);
    size_t used = 0;
    ssize_t k;
    while (used + 1 < n && (k = read(fds[0], out + used, n - 1 - used)) != 0) {
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            break;
        used += (size_t)k;
    }
    out[used] = 0;
    close(fds[0]);
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    out[strcspn(out, ";\n")] = 0; /* --parsable: "jobid[;cluster]" */
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || !out[0])
        return fs_cli_error("sbatch failed (its message is above)");
    return 0;
}

static int cmd_slurm(int argc, char **argv)
{
    const char *pos[1];
    fs_args args;
    int code;
    if (parse_sub(argc, argv, 1, pos, &args, "slurm",
                          "FILE --out DIR [--partition P --time T --cpus-per-task C --mem M --max-parallel K] [--submit]",
                          "Prepare DIR as `sweep run` does and write DIR/sweep.sbatch: a SLURM job array whose task i\n"
                          "runs `fewshot sweep task DIR i` with C threads (same run directories, same resume). Submit\n"
                          "it with `sbatch DIR/sweep.sbatch` (or --submit); re-run one task with\n"
                          "`sbatch --array=i DIR/sweep.sbatch`. Task logs: DIR/logs/slurm_<job>_<task>.out.",
                          slurm_opts, &code))
        return code;
    const char *dir = fs_arg(&args, "--out");
    if (!dir)
        return fs_cli_error("sweep slurm: --out DIR is required");
    long long cpus, maxpar;
    if (fs_arg_int(&args, "--cpus-per-task", 1, 1, 1024, &cpus) ||
        fs_arg_int(&args, "--max-parallel", 0, 1, 1000000, &maxpar))
        return 2;
    const char *extra[] = {"--partition", "--time", "--mem"};
    for (int i = 0; i < 3; i++)
        if (fs_arg(&args, extra[i]) && !slurm_value_ok(fs_arg(&args, extra[i]))) {
            char msg[300];
            snprintf(msg, sizeof msg, "sweep slurm: %s '%s': expected letters, digits and :-_.,+ only", extra[i],
                     fs_arg(&args, extra[i]));
            return fs_cli_error(msg);
        }
    char self[1024], cwd[1024], absdir[2200];
    if (self_exe(self, sizeof self))
        return 1;
    if (!getcwd(cwd, sizeof cwd))
        return fs_cli_error("cannot read the working directory");
    fs_sweep s;
    fs_error err = {{0}};
    if (fs_sweep_load(&s, pos[0], &err))
        return fs_cli_error(err.msg);
    int n = s.n;
    int rc = fs_sweep_prepare(&s, dir, &err);
    fs_sweep_free(&s);
    if (rc)
        return fs_cli_error(err.msg);
    if (dir[0] == '/')
        snprintf(absdir, sizeof absdir, "%s", dir);
    else
        snprintf(absdir, sizeof absdir, "%s/%s", cwd, dir);
    if (!shell_safe(self) || !shell_safe(cwd) || !shell_safe(absdir))
        return fs_cli_error("sweep slurm: paths with a single quote or a newline cannot go into the batch script");
    char logs[2300], script[2300];
    snprintf(logs, sizeof logs, "%s/logs", absdir);
    mkdir(logs, 0755);
    char text[12000];
    int used = snprintf(text, sizeof text,
                        "#!/bin/bash\n"
                        "# Written by `fewshot sweep slurm %s`: %d runs, task i = grid point i.\n"
                        "# Re-run one task: sbatch --array=i %s/sweep.sbatch\n"
                        "#SBATCH --job-name=fewshot-sweep\n"
                        "#SBATCH --array=0-%d",
                        pos[0], n, absdir, n - 1);
    if (fs_arg(&args, "--max-parallel"))
        used += snprintf(text + used, sizeof text - (size_t)used, "%%%lld", maxpar);
    used += snprintf(text + used, sizeof text - (size_t)used,
                     "\n#SBATCH --cpus-per-task=%lld\n#SBATCH --ntasks=1\n#SBATCH --chdir=%s\n"
                     "#SBATCH --output=%s/slurm_%%A_%%a.out\n",
                     cpus, cwd, logs);
    const char *flags[] = {"partition", "time", "mem"};
    for (int i = 0; i < 3; i++)
        if (fs_arg(&args, extra[i]))
            used += snprintf(text + used, sizeof text - (size_t)used, "#SBATCH --%s=%s\n", flags[i],
                             fs_arg(&args, extra[i]));
    used += snprintf(text + used, sizeof text - (size_t)used,
                     "exec '%s' sweep task '%s' \"$SLURM_ARRAY_TASK_ID\" --threads-per-run %lld\n", self, absdir, cpus);
    if (used >= (int)sizeof text)
        return fs_cli_error("sweep slurm: batch script too long");
    snprintf(script, sizeof script, "%s/sweep.sbatch", absdir);
    if (fs_write_file_atomic(script, text, &err))
        return fs_cli_error(err.msg);
    chmod(script, 0755);
    fprintf(stderr, "sweep: %d runs; wrote %s\n", n, script);
    if (!fs_flag(&args, "--submit")) {
        printf("%s\n", script);
        return 0;
    }
    char job[128];
    if (submit(script, job, sizeof job))
        return 1;
    printf("%s\n", job);
    return 0;
}

/* ---- summarize ---- */

static const fs_opt sum_opts[] = {
    {"--csv", NULL, "CSV (kind,name,...; kind = run, mean or sd) instead of a Markdown table"},
    {"--metric", "M", "the evaluator metric in the table (default acc)"},
    {NULL, NULL, NULL},
};

enum { MAX_COLS = 40 };

typedef struct {
    int ncols;
    char cols[MAX_COLS][64];   /* evaluator names */
    const char *phase_eval;    /* fsl_train, else the first evaluator */
} columns;

typedef struct {
    double v[MAX_COLS + 2];    /* per evaluator, then phase change, then sequences */
    bool has[MAX_COLS + 2];
} row;

/* Final metric of every evaluator and the phase-change time from DIR/<name>/metrics.jsonl. */
static void read_run(const char *dir, const char *name, const char *metric, columns *c, row *r)
{
    memset(r, 0, sizeof *r);
    char path[2200];
    snprintf(path, sizeof path, "%s/%s/metrics.jsonl", dir, name);
    fs_error ignored;
    char *text = fs_read_file(path, NULL, &ignored);
    if (!text)
        return;
    cJSON *last = NULL;
    int cap = 0, k = 0;
    double *it = NULL, *acc = NULL;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        cJSON *j = cJSON_Parse(line);
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(j, "type");
        const cJSON *evals = cJSON_GetObjectItemCaseSensitive(j, "evals");
        if (!cJSON_IsString(type) || strcmp(type->valuestring, "eval") || !cJSON_IsObject(evals)) {
            cJSON_Delete(j);
            continue;
        }
        for (const cJSON *e = evals->child; e; e = e->next) {
            int col = 0;
            while (col < c->ncols && strcmp(c->cols[col], e->string))
                col++;
            if (col == c->ncols && c->ncols < MAX_COLS)
                snprintf(c->cols[c->ncols++], sizeof c->cols[0], "%s", e->string);
        }
        if (!c->phase_eval)
            c->phase_eval = cJSON_GetObjectItemCaseSensitive(evals, "fsl_train") ? "fsl_train" : c->cols[0];
        const cJSON *pe = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(evals, c->phase_eval), "acc");
        if (cJSON_IsNumber(pe)) {
            if (k == cap) {
                cap = cap ? 2 * cap : 256;
                it = realloc(it, (size_t)cap * sizeof *it);
                acc = realloc(acc, (size_t)cap * sizeof *acc);
            }
            it[k] = cJSON_GetObjectItemCaseSensitive(j, "iter")->valuedouble;
            acc[k++] = pe->valuedouble;
        }
        cJSON_Delete(last);
        last = j;
    }
    free(text);
    if (last) {
        const cJSON *evals = cJSON_GetObjectItemCaseSensitive(last, "evals");
        for (int col = 0; col < c->ncols; col++) {
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(evals, c->cols[col]), metric);
            if (cJSON_IsNumber(v)) {
                r->v[col] = v->valuedouble;
                r->has[col] = true;
            }
        }
        const cJSON *iter = cJSON_GetObjectItemCaseSensitive(last, "iter");
        r->v[MAX_COLS + 1] = cJSON_IsNumber(iter) ? iter->valuedouble : 0;
        r->has[MAX_COLS + 1] = true;
    }
    r->v[MAX_COLS] = fs_phase_change(it, acc, (size_t)k);
    r->has[MAX_COLS] = !isnan(r->v[MAX_COLS]);
    free(it);
    free(acc);
    cJSON_Delete(last);
}

static void cell(char *out, size_t n, const row *r, int col, bool integer, bool csv)
{
    if (!r->has[col])
        snprintf(out, n, "%s", csv ? "" : "-");
    else if (integer)
        snprintf(out, n, "%.0f", r->v[col]);
    else
        snprintf(out, n, "%.3f", r->v[col]);
}

static int cmd_summarize(int argc, char **argv)
{
    const char *pos[1];
    fs_args args;
    int code;
    if (parse_sub(argc, argv, 1, pos, &args, "summarize",
                          "DIR [--csv] [--metric M]",
                          "One row per run of the sweep in DIR: status, overrides, the final value of each\n"
                          "evaluator's metric (acc by default), the phase-change time (the first evaluated sequence\n"
                          "count at which the fsl_train accuracy reaches 0.5 + (final - 0.5)/2; '-' when the final\n"
                          "accuracy is not above 0.5) and the sequences trained. When the sweep has a \"seed\" axis,\n"
                          "also mean +- sd (n - 1) over the seeds of every other point.",
                          sum_opts, &code))
        return code;
    const char *dir = pos[0], *metric = fs_arg(&args, "--metric") ? fs_arg(&args, "--metric") : "acc";
    bool csv = fs_flag(&args, "--csv");
    fs_error err = {{0}};
    cJSON *m = fs_sweep_manifest_load(dir, &err);
    if (!m)
        return fs_cli_error(err.msg);
    const cJSON *runs = cJSON_GetObjectItemCaseSensitive(m, "runs");
    int n = cJSON_GetArraySize(runs);
    columns c = {0};
    row *rows = calloc((size_t)n + 1, sizeof *rows);
    /* override keys: the union, in order of appearance */
    cJSON *keys = cJSON_CreateArray();
    for (int i = 0; i < n; i++) {
        const cJSON *r = cJSON_GetArrayItem(runs, i);
        read_run(dir, fs_sweep_run_name(m, i), metric, &c, &rows[i]);
        const cJSON *ov = cJSON_GetObjectItemCaseSensitive(r, "overrides");
        for (const cJSON *o = cJSON_IsObject(ov) ? ov->child : NULL; o; o = o->next) {
            bool seen = false;
            for (const cJSON *k = keys->child; k; k = k->next)
                seen |= !strcmp(k->valuestring, o->string);
            if (!seen && cJSON_GetArraySize(keys) < 16)
                cJSON_AddItemToArray(keys, cJSON_CreateString(o->string));
        }
    }
    bool has_seed = cJSON_HasObjectItem(cJSON_GetObjectItemCaseSensitive(m, "axes"), "seed");
    /* header */
    const char *sep = csv ? "," : " | ";
    printf("%s%s", csv ? "kind,name,status" : "| run | status", sep);
    for (const cJSON *k = keys->child; k; k = k->next)
        printf("%s%s", k->valuestring, sep);
    for (int col = 0; col < c.ncols; col++)
        printf("%s%s%s%s", c.cols[col], csv ? "_" : " ", metric, sep);
    printf("phase_change%ssequences%s\n", sep, csv ? "" : " |");
    if (!csv) {
        printf("|---|---|");
        for (int i = 0; i < cJSON_GetArraySize(keys) + c.ncols + 2; i++)
            printf("---|");
        printf("\n");
    }
    for (int i = 0; i < n; i++) {
        const cJSON *r = cJSON_GetArrayItem(runs, i);
        const cJSON *ov = cJSON_GetObjectItemCaseSensitive(r, "overrides");
        printf("%s%s%s%s", csv ? "run," : "| ", fs_sweep_run_name(m, i), sep,
               cJSON_GetObjectItemCaseSensitive(r, "status")->valuestring);
        for (const cJSON *k = keys->child; k; k = k->next) {
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(ov, k->valuestring);
            char *t = v ? cJSON_PrintUnformatted(v) : NULL;
            printf("%s", sep);
            if (t && csv && strpbrk(t, ",\"")) { /* CSV quoting: "..." with "" for a quote */
                putchar('"');
                for (const char *q = t; *q; q++)
                    fputs(*q == '"' ? "\"\"" : (char[]){*q, 0}, stdout);
                putchar('"');
            } else if (t) {
                fputs(t, stdout);
            }
            free(t);
        }
        char buf[64];
        for (int col = 0; col < c.ncols; col++) {
            cell(buf, sizeof buf, &rows[i], col, false, csv);
            printf("%s%s", sep, buf);
        }
        cell(buf, sizeof buf, &rows[i], MAX_COLS, true, csv);
        printf("%s%s", sep, buf);
        cell(buf, sizeof buf, &rows[i], MAX_COLS + 1, true, csv);
        printf("%s%s%s\n", sep, buf, csv ? "" : " |");
    }
    if (has_seed) {
        /* groups: runs whose overrides agree except for "seed" */
        int *group = calloc(n > 0 ? (size_t)n : 1, sizeof(int));
        for (int i = 0; i < n; i++) {
            group[i] = i;
            cJSON *a = cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(runs, i), "overrides"), 1);
            cJSON_DeleteItemFromObjectCaseSensitive(a, "seed");
            for (int j = 0; j < i && group[i] == i; j++) {
                cJSON *b = cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(runs, j), "overrides"), 1);
                cJSON_DeleteItemFromObjectCaseSensitive(b, "seed");
                if (cJSON_Compare(a, b, 1))
                    group[i] = group[j];
                cJSON_Delete(b);
            }
            cJSON_Delete(a);
        }
        if (!csv)
            printf("\nmean +- sd over seeds (n runs with a value):\n\n| point | n | %s%s", c.ncols ? "" : "",
                   "");
        if (!csv) {
            for (int col = 0; col < c.ncols; col++)
                printf("%s %s | ", c.cols[col], metric);
            printf("phase_change |\n|---|---|");
            for (int col = 0; col <= c.ncols; col++)
                printf("---|");
            printf("\n");
        }
        for (int g = 0; g < n; g++) {
            if (group[g] != g)
                continue;
            /* the point's label: its run name without the seed part */
            char label[256];
            snprintf(label, sizeof label, "%s", fs_sweep_run_name(m, g));
            char *sp = strstr(label, "seed=");
            if (sp) {
                char *e = sp + strcspn(sp, "_");
                memmove(sp > label && sp[-1] == '_' ? sp - 1 : sp, *e ? e + (sp == label) : e, strlen(e) + 1);
            }
            if (!label[0])
                snprintf(label, sizeof label, "run");
            int members = 0;
            for (int i = 0; i < n; i++)
                members += group[i] == g;
            double mean[MAX_COLS + 1], sd[MAX_COLS + 1];
            int cnt[MAX_COLS + 1];
            for (int col = 0; col <= MAX_COLS; col++) {
                double s1 = 0, s2 = 0;
                cnt[col] = 0;
                for (int i = 0; i < n; i++)
                    if (group[i] == g && rows[i].has[col]) {
                        s1 += rows[i].v[col];
                        cnt[col]++;
                    }
                mean[col] = cnt[col] ? s1 / cnt[col] : 0;
                for (int i = 0; i < n; i++)
                    if (group[i] == g && rows[i].has[col])
                        s2 += (rows[i].v[col] - mean[col]) * (rows[i].v[col] - mean[col]);
                sd[col] = cnt[col] > 1 ? sqrt(s2 / (cnt[col] - 1)) : 0;
            }
            if (csv) {
                for (int kind = 0; kind < 2; kind++) {
                    printf("%s,%s,", kind ? "sd" : "mean", label);
                    for (int k = 0; k < cJSON_GetArraySize(keys); k++)
                        printf(",");
                    for (int col = 0; col < c.ncols; col++)
                        cnt[col] ? printf(",%.4f", kind ? sd[col] : mean[col]) : printf(",");
                    cnt[MAX_COLS] ? printf(",%.0f", kind ? sd[MAX_COLS] : mean[MAX_COLS]) : printf(",");
                    printf(",%d\n", members);
                }
            } else {
                printf("| %s | %d", label, members);
                for (int col = 0; col < c.ncols; col++)
                    cnt[col] ? printf(" | %.3f +- %.3f", mean[col], sd[col]) : printf(" | -");
                if (cnt[MAX_COLS])
                    printf(" | %.0f +- %.0f (%d) |\n", mean[MAX_COLS], sd[MAX_COLS], cnt[MAX_COLS]);
                else
                    printf(" | - |\n");
            }
        }
        free(group);
    }
    cJSON_Delete(keys);
    free(rows);
    cJSON_Delete(m);
    return 0;
}

/* ---- dispatch ---- */

int fs_cmd_sweep(int argc, char **argv)
{
    static const struct {
        const char *name;
        int (*run)(int, char **);
        const char *summary;
    } subs[] = {
        {"plan", cmd_plan, "expand and validate a sweep file, list its runs"},
        {"run", cmd_run, "run a sweep on this machine (a pool of processes), resumable"},
        {"task", cmd_task, "run one point of a prepared sweep (a SLURM array task)"},
        {"slurm", cmd_slurm, "write (and --submit) a SLURM job array for a sweep"},
        {"summarize", cmd_summarize, "table of a sweep's final metrics and phase-change times"},
    };
    int nsubs = (int)(sizeof subs / sizeof *subs);
    if (argc < 1 || !strcmp(argv[0], "-h") || !strcmp(argv[0], "--help")) {
        FILE *f = argc < 1 ? stderr : stdout;
        fprintf(f, "usage: fewshot sweep <plan|run|task|slurm|summarize> ... (each takes --help)\n\n"
                   "Grids of training runs from a sweep file (README \"Sweeps\").\n\n");
        for (int i = 0; i < nsubs; i++)
            fprintf(f, "  %-10s %s\n", subs[i].name, subs[i].summary);
        return argc < 1 ? 2 : 0;
    }
    for (int i = 0; i < nsubs; i++)
        if (!strcmp(argv[0], subs[i].name))
            return subs[i].run(argc - 1, argv + 1);
    fprintf(stderr, "fewshot sweep: unknown subcommand '%s' (plan, run, task, slurm, summarize)\n", argv[0]);
    return 2;
}
