/* Shared test helpers (see helpers.h). */
#include "helpers.h"

#include <criterion/criterion.h>

#include <dirent.h>
#include <fcntl.h>
#include <math.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

/* ---------------------------------------------------------------- files */

void th_tmpdir(char *dir, size_t n, const char *tag)
{
    snprintf(dir, n, "/tmp/fewshot_test_%s_XXXXXX", tag);
    cr_assert_not_null(mkdtemp(dir), "mkdtemp(%s) failed", dir);
}

void th_rmtree(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        char p[4096];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat st;
        if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode))
            th_rmtree(p);
        else
            unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

const char *th_path(const char *dir, const char *name)
{
    static char ring[16][1024];
    static int next;
    char *buf = ring[next++ % 16];
    snprintf(buf, sizeof ring[0], "%s/%s", dir, name);
    return buf;
}

void th_write_file(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f, "cannot create %s", path);
    cr_assert_eq(fwrite(data, 1, n, f), n, "short write to %s", path);
    cr_assert_eq(fclose(f), 0);
}

void th_write_text(const char *path, const char *text) { th_write_file(path, text, strlen(text)); }

void th_write_textf(const char *path, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *text = NULL;
    int n = vasprintf(&text, fmt, ap);
    va_end(ap);
    cr_assert_geq(n, 0);
    th_write_text(path, text);
    free(text);
}

char *th_read_file(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 4096, len = 0, got;
    char *buf = malloc(cap);
    while ((got = fread(buf + len, 1, cap - len - 1, f)) > 0) {
        len += got;
        if (cap - len - 1 == 0)
            buf = realloc(buf, cap *= 2);
    }
    fclose(f);
    buf[len] = 0;
    if (n)
        *n = len;
    return buf;
}

void th_copy_file(const char *src, const char *dst)
{
    size_t n = 0;
    char *data = th_read_file(src, &n);
    cr_assert_not_null(data, "cannot read %s", src);
    th_write_file(dst, data, n);
    free(data);
}

/* ---------------------------------------------------------------- running the binary */

const char *th_bin(void)
{
    const char *b = getenv("FEWSHOT_BIN");
    return b && *b ? b : "./fewshot";
}

void th_run_argv(th_run_result *r, const char *const *args)
{
    memset(r, 0, sizeof *r);
    char out_path[] = "/tmp/fewshot_test_out_XXXXXX", err_path[] = "/tmp/fewshot_test_err_XXXXXX";
    int fo = mkstemp(out_path), fe = mkstemp(err_path);
    cr_assert(fo >= 0 && fe >= 0, "mkstemp failed");
    close(fo);
    close(fe);

    int n = 0;
    while (args[n])
        n++;
    char **argv = calloc((size_t)n + 2, sizeof *argv);
    argv[0] = (char *)th_bin();
    for (int i = 0; i < n; i++)
        argv[i + 1] = (char *)args[i];

    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, out_path, O_WRONLY | O_TRUNC, 0);
    posix_spawn_file_actions_addopen(&fa, 2, err_path, O_WRONLY | O_TRUNC, 0);
    pid_t pid;
    int rc = posix_spawn(&pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    free(argv);
    cr_assert_eq(rc, 0, "cannot run %s (%s); build it with `make fewshot` or set FEWSHOT_BIN", th_bin(),
                 strerror(rc));
    int status;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    r->exited = WIFEXITED(status);
    r->code = r->exited ? WEXITSTATUS(status) : -1;
    r->signal = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
    r->out = th_read_file(out_path, NULL);
    r->err = th_read_file(err_path, NULL);
    unlink(out_path);
    unlink(err_path);
    if (!r->out)
        r->out = calloc(1, 1);
    if (!r->err)
        r->err = calloc(1, 1);
}

/* The command line of th_run, formatted (caller frees). */
static char *command_line(const char *fmt, va_list ap)
{
    char *line = NULL;
    int len = vasprintf(&line, fmt, ap);
    cr_assert_geq(len, 0);
    return line;
}

/* Split `line` (modified) on spaces and run it. */
static void run_line(th_run_result *r, char *line)
{
    const char *args[128];
    int n = 0;
    for (char *save = NULL, *tok = strtok_r(line, " ", &save); tok; tok = strtok_r(NULL, " ", &save)) {
        cr_assert_lt(n, 127, "too many arguments");
        args[n++] = tok;
    }
    args[n] = NULL;
    th_run_argv(r, args);
}

void th_run(th_run_result *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *line = command_line(fmt, ap);
    va_end(ap);
    run_line(r, line);
    free(line);
}

void th_run_ok(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *line = command_line(fmt, ap);
    va_end(ap);
    char *shown = strdup(line);
    th_run_result r;
    run_line(&r, line);
    cr_assert(r.exited && r.code == 0, "fewshot %s: %s", shown, th_describe(&r));
    th_run_free(&r);
    free(shown);
    free(line);
}

void th_run_free(th_run_result *r)
{
    free(r->out);
    free(r->err);
    memset(r, 0, sizeof *r);
}

bool th_sanitizer_report(const th_run_result *r)
{
    return strstr(r->err, "Sanitizer") || strstr(r->err, "runtime error:");
}

const char *th_describe(const th_run_result *r)
{
    static char buf[4096];
    if (r->exited)
        snprintf(buf, sizeof buf, "exit code %d, stderr: %.3900s", r->code, r->err);
    else
        snprintf(buf, sizeof buf, "killed by signal %d, stderr: %.3900s", r->signal, r->err);
    return buf;
}

/* ---------------------------------------------------------------- models */

void th_tiny_config(fs_model_config *c)
{
    fs_model_config_default(c);
    c->input_dim = 6;
    c->num_classes = 3;
    c->d_model = 8;
    c->num_heads = 2;
    c->depth = 1;
    c->mlp_ratio = 2;
    c->pos_embedding = FS_POS_ROPE;
}

void th_random_model(fs_model *m, const fs_model_config *cfg, uint64_t seed, double noise)
{
    fs_model_config c = *cfg;
    c.init_seed = (int64_t)(seed & 0x7fffffff);
    fs_error err = {{0}};
    cr_assert_eq(fs_model_create(m, &c, &err), 0, "fs_model_create: %s", err.msg);
    fs_model_init_params(m);
    th_rng r = {seed ^ 0x9e3779b97f4a7c15ULL};
    for (int i = 0; i < m->layout.count; i++) {
        const fs_param_desc *t = &m->layout.tensors[i];
        for (size_t j = 0; j < t->numel; j++)
            m->params[t->offset + j] += (float)th_rng_sym(&r, noise);
    }
}

/* ---------------------------------------------------------------- rng, tolerances */

uint64_t th_rng_u64(th_rng *r)
{
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

double th_rng_uniform(th_rng *r) { return (double)(th_rng_u64(r) >> 11) * 0x1.0p-53; }
double th_rng_sym(th_rng *r, double a) { return (2.0 * th_rng_uniform(r) - 1.0) * a; }
int th_rng_int(th_rng *r, int n) { return (int)(th_rng_uniform(r) * n); }

bool th_close(double a, double b, double rtol, double atol)
{
    double m = fabs(a) > fabs(b) ? fabs(a) : fabs(b);
    return fabs(a - b) <= atol + rtol * m;
}

const char th_tiny_run_config[] =
    "{\"model\": {\"d_model\": 16, \"num_heads\": 2, \"depth\": 2, \"mlp_ratio\": 2, \"init_seed\": 5},\n"
    " \"data\": {\"file\": \"datasets/synth_small.h5\", \"class_split\": [100, 50, 50], \"exemplar_split\": [3, 2, 0],\n"
    "          \"fs_relabel\": 5, \"fs_relabel_split\": [8, 2, 0]},\n"
    " \"train\": {\"train_iters\": 3200, \"train_bs\": 16, \"train_context_len\": 2, \"lr\": 0.001, \"train_seed\": 0,\n"
    "           \"eval_every\": 800, \"log_every\": 320, \"ckpt_every\": 1600, \"threads\": 2},\n"
    " \"eval\": {\"eval_seed\": 1, \"eval_iters\": 100, \"evaluators\": [{\"name\": \"fsl_train\"},\n"
    "          {\"name\": \"fsl_val_rl\", \"fs_relabel_scheme\": \"val\"}]}}\n";
