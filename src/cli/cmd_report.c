/* fewshot report: one self-contained HTML file of learning curves, progress measures,
 * attention patterns and run facts for run directories and sweeps. The page is the
 * template src/cli/report/template.html (compiled into the binary by the Makefile as
 * fs_report_template) with Chart.js (Debian's libjs-chart.js, read at report time) and
 * the data inlined, so it opens offline and makes no network request. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/fileio.h"
#include "cli/cli.h"
#include "cli/report.h"

extern const char fs_report_template[]; /* generated from src/cli/report/template.html */

#define CHARTJS_DEFAULT "/usr/share/javascript/chart.js/chart.min.js"

static const fs_opt opts[] = {
    {"-o", "FILE", "write the HTML report here (required)"},
    {"--svg", "DIR", "also write the curves as static SVG figures into DIR (one file per chart)"},
    {"--logx", NULL, "start with a logarithmic sequences axis (the page has a toggle; also for --svg)"},
    {"--attention", "RUN", "draw the attention patterns of this run (its name; default: the first run)"},
    {"--no-attention", NULL, "leave the attention patterns out (no data file needed)"},
    {"--probes", "N", "probe sequences for the attention patterns: the run's first N training sequences (default 4)"},
    {"--max-checkpoints", "N", "at most N models on the attention slider (default 12; the last is kept)"},
    {"--title", "TEXT", "page title (default: the paths)"},
    {NULL, NULL, NULL},
};

static char *read_chartjs(fs_error *err)
{
    const char *path = getenv("FEWSHOT_CHARTJS");
    if (!path || !*path)
        path = CHARTJS_DEFAULT;
    size_t len;
    fs_error read_err = {{0}};
    char *js = fs_read_file(path, &len, &read_err);
    if (!js) {
        fs_fail(err, "Chart.js: %s; install Debian's libjs-chart.js with `make deps-report` (or point "
                     "FEWSHOT_CHARTJS at chart.min.js)", read_err.msg);
        return NULL;
    }
    if (strlen(js) != len || strstr(js, "</script") || strstr(js, "</SCRIPT")) {
        free(js);
        fs_fail(err, "%s: not a script that can be inlined (NUL byte or </script> inside)", path);
        return NULL;
    }
    return js;
}

typedef struct {
    char *buf;
    size_t len, cap;
} strbuf;

static void sb_add(strbuf *s, const char *text, size_t n)
{
    if (s->len + n + 1 > s->cap) {
        s->cap = (s->len + n + 1) * 2;
        s->buf = rp_grow(s->buf, s->cap);
    }
    memcpy(s->buf + s->len, text, n);
    s->len += n;
    s->buf[s->len] = 0;
}

/* JSON inside <script type="application/json">: "</" and "<!--" must not appear. */
static void sb_add_json(strbuf *s, const char *json)
{
    for (const char *p = json; *p; p++) {
        if (*p == '<')
            sb_add(s, "\\u003c", 6);
        else
            sb_add(s, p, 1);
    }
}

/* The template with each placeholder replaced. */
static char *fill_template(const char *chartjs, const char *data_json, const char *title)
{
    strbuf out = {0};
    const char *p = fs_report_template;
    while (*p) {
        const char *at = strstr(p, "@@");
        if (!at) {
            sb_add(&out, p, strlen(p));
            break;
        }
        sb_add(&out, p, (size_t)(at - p));
        if (!strncmp(at, "@@CHARTJS@@", 11)) {
            sb_add(&out, chartjs, strlen(chartjs));
            p = at + 11;
        } else if (!strncmp(at, "@@DATA@@", 8)) {
            sb_add_json(&out, data_json);
            p = at + 8;
        } else if (!strncmp(at, "@@TITLE@@", 9)) {
            for (const char *t = title; *t; t++) {
                const char *esc = *t == '<' ? "&lt;" : *t == '>' ? "&gt;" : *t == '&' ? "&amp;" : NULL;
                sb_add(&out, esc ? esc : t, esc ? strlen(esc) : 1);
            }
            p = at + 9;
        } else {
            sb_add(&out, at, 2);
            p = at + 2;
        }
    }
    return out.buf;
}

/* Split argv into options (for fs_cli_parse) and PATH arguments. */
static void split_args(int argc, char **argv, char **opt_argv, int *nopt, const char **paths, int *npaths)
{
    *nopt = *npaths = 0;
    for (int i = 0; i < argc; i++) {
        if (argv[i][0] == '-' && argv[i][1]) {
            opt_argv[(*nopt)++] = argv[i];
            for (const fs_opt *o = opts; o->name; o++)
                if (o->arg && !strcmp(o->name, argv[i]) && i + 1 < argc)
                    opt_argv[(*nopt)++] = argv[++i];
        } else {
            paths[(*npaths)++] = argv[i];
        }
    }
}

static int run_index(const rp_report *r, const char *name)
{
    for (int k = 0; k < r->num_runs; k++)
        if (!strcmp(r->runs[k].name, name))
            return k;
    return -1;
}

int fs_cmd_report(int argc, char **argv)
{
    char **opt_argv = calloc((size_t)argc + 1, sizeof *opt_argv);
    const char **paths = calloc((size_t)argc + 1, sizeof *paths);
    if (!opt_argv || !paths)
        return fs_cli_error("out of memory");
    int nopt, npaths;
    split_args(argc, argv, opt_argv, &nopt, paths, &npaths);
    fs_args args;
    int rc = fs_cli_parse(&args, nopt, opt_argv, "report", "PATH... -o report.html [--svg DIR]",
                          "Draw runs as one self-contained HTML file (opens offline; no network request): learning\n"
                          "curves of every evaluator against sequences seen (runs overlaid; a sweep with a seed axis\n"
                          "as mean with a min-max band per grid point; the phase change marked), progress measures\n"
                          "when the runs logged them, attention patterns per head and layer of the final model and\n"
                          "its checkpoints on probe sequences, and run facts. PATH is a run directory (fewshot train\n"
                          "--out), a sweep directory (fewshot sweep run --out) or several of them to overlay.\n"
                          "Chart.js is read from " CHARTJS_DEFAULT " (make deps-report;\n"
                          "FEWSHOT_CHARTJS overrides). Data file paths in a run's config are relative to the\n"
                          "directory the run was trained in: run the report from there for attention patterns.",
                          opts);
    int status = 1;
    rp_report r = {0};
    char *chartjs = NULL, *html = NULL;
    if (rc) {
        status = rc > 0 ? 0 : 2;
        goto done;
    }
    const char *out = fs_arg(&args, "-o");
    long long probes, max_ck;
    if (!out || npaths == 0) {
        fs_cli_error(!out ? "-o report.html is required" : "give at least one run or sweep directory");
        status = 2;
        goto done;
    }
    if (fs_arg_int(&args, "--probes", 4, 1, 64, &probes) || fs_arg_int(&args, "--max-checkpoints", 12, 2, 1000, &max_ck))
        goto done;
    fs_error err = {{0}};
    if (!(chartjs = read_chartjs(&err))) {
        fs_cli_error(err.msg);
        goto done;
    }
    for (int i = 0; i < npaths; i++)
        if (rp_add_path(&r, paths[i], &err)) {
            fs_cli_error(err.msg);
            goto done;
        }
    rp_finish(&r);

    cJSON *attention = NULL;
    if (!fs_flag(&args, "--no-attention") && r.num_runs > 0) {
        const char *want = fs_arg(&args, "--attention");
        int k = want ? run_index(&r, want) : 0;
        if (k < 0) {
            char msg[600];
            snprintf(msg, sizeof msg, "--attention %s: no run of that name in the report", want);
            fs_cli_error(msg);
            goto done;
        }
        attention = rp_attention_json(&r, k, (int)probes, (int)max_ck);
    }
    cJSON *data = rp_data_json(&r);
    cJSON_AddItemToObject(data, "attention", attention ? attention : cJSON_CreateNull());
    cJSON_AddBoolToObject(data, "logx", fs_flag(&args, "--logx"));
    char stamp[32];
    time_t now = time(NULL);
    strftime(stamp, sizeof stamp, "%Y-%m-%d %H:%M UTC", gmtime(&now));
    cJSON_AddStringToObject(data, "generated", stamp);
    char title[1024] = "";
    if (fs_arg(&args, "--title"))
        snprintf(title, sizeof title, "%s", fs_arg(&args, "--title"));
    else
        for (int i = 0; i < npaths; i++) {
            size_t at = strlen(title);
            snprintf(title + at, sizeof title - at, "%s%s", i ? ", " : "fewshot report: ", paths[i]);
        }
    char *data_text = cJSON_PrintUnformatted(data);
    cJSON_Delete(data);
    html = fill_template(chartjs, data_text, title);
    size_t data_len = strlen(data_text);
    free(data_text);
    if (fs_write_file_atomic(out, html, &err)) {
        fs_cli_error(err.msg);
        goto done;
    }
    fprintf(stderr, "wrote %s: %.1f KB (Chart.js %.1f KB, data %.1f KB), %d run%s\n", out, strlen(html) / 1024.0,
            strlen(chartjs) / 1024.0, data_len / 1024.0, r.num_runs, r.num_runs == 1 ? "" : "s");
    const char *svg = fs_arg(&args, "--svg");
    if (svg) {
        int n = rp_write_svgs(&r, svg, fs_flag(&args, "--logx"), &err);
        if (n < 0) {
            fs_cli_error(err.msg);
            goto done;
        }
        fprintf(stderr, "wrote %d SVG figure%s into %s\n", n, n == 1 ? "" : "s", svg);
    }
    status = 0;
done:
    free(html);
    free(chartjs);
    rp_free(&r);
    free(opt_argv);
    free(paths);
    return status;
}
