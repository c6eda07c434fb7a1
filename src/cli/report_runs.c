/* fewshot report: reading run directories (config.json, run.json, metrics.jsonl) and
 * sweep directories (sweep.json + one run directory per grid point) into curves; lines
 * grouped over seeds; the phase-change time. */
#include "cli/report.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/fileio.h"
#include "cli/cli.h"

const char *const rp_metric_names[RP_METRICS] = {"acc", "loss"};

void rp_note(rp_report *r, const char *fmt, ...)
{
    char msg[1600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (!r->notes)
        r->notes = cJSON_CreateArray();
    cJSON_AddItemToArray(r->notes, cJSON_CreateString(msg));
    fprintf(stderr, "fewshot report: note: %s\n", msg);
}

void *rp_grow(void *p, size_t bytes)
{
    void *q = realloc(p, bytes ? bytes : 1);
    if (!q) {
        fprintf(stderr, "fewshot: error: out of memory\n");
        exit(1);
    }
    return q;
}

double rp_round(double v, int digits)
{
    if (!isfinite(v) || v == 0)
        return v;
    char buf[40];
    snprintf(buf, sizeof buf, "%.*g", digits, v);
    return strtod(buf, NULL);
}

static void series_push(rp_series *s, double x, double y)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 64;
        s->x = rp_grow(s->x, s->cap * sizeof *s->x);
        s->y = rp_grow(s->y, s->cap * sizeof *s->y);
    }
    s->x[s->n] = x;
    s->y[s->n] = y;
    s->n++;
}

static void series_free(rp_series *s)
{
    free(s->x);
    free(s->y);
    memset(s, 0, sizeof *s);
}

static bool is_file(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static bool is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* The report's index of an evaluator, added on first sight (-1 past the maximum). */
static int evaluator_index(rp_report *r, const char *name)
{
    for (int i = 0; i < r->num_evaluators; i++)
        if (!strcmp(r->evaluators[i], name))
            return i;
    if (r->num_evaluators == FS_MAX_EVALUATORS)
        return -1;
    snprintf(r->evaluators[r->num_evaluators], sizeof r->evaluators[0], "%s", name);
    return r->num_evaluators++;
}

static double num(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

/* One metrics.jsonl line; returns false when it is not a metrics line. */
static bool read_line(rp_report *r, rp_run *run, const cJSON *line)
{
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(line, "type");
    double iter = num(line, "iter");
    if (!cJSON_IsString(type) || !isfinite(iter))
        return false;
    if (!strcmp(type->valuestring, "train")) {
        series_push(&run->train_loss, iter, num(line, "loss"));
        return true;
    }
    if (strcmp(type->valuestring, "eval"))
        return false;
    const cJSON *evals = cJSON_GetObjectItemCaseSensitive(line, "evals"), *ev;
    cJSON_ArrayForEach(ev, evals)
    {
        int k = evaluator_index(r, ev->string);
        if (k < 0)
            continue;
        for (int m = 0; m < RP_METRICS; m++)
            series_push(&run->eval[k][m], iter, num(ev, rp_metric_names[m]));
    }
    const cJSON *measures = cJSON_GetObjectItemCaseSensitive(line, "measures");
    if (cJSON_IsObject(measures)) {
        if (!run->measures)
            run->measures = cJSON_CreateArray();
        cJSON *point = cJSON_CreateObject();
        cJSON_AddNumberToObject(point, "iter", iter);
        cJSON_AddItemToObject(point, "m", cJSON_Duplicate(measures, 1));
        cJSON_AddItemToArray(run->measures, point);
    }
    return true;
}

static void read_metrics(rp_report *r, rp_run *run)
{
    char path[1200];
    snprintf(path, sizeof path, "%s/metrics.jsonl", run->dir);
    if (!is_file(path)) {
        rp_note(r, "%s: no metrics.jsonl yet (the run has not started): nothing to draw for %s", run->dir, run->name);
        return;
    }
    fs_error err = {{0}};
    size_t len;
    char *text = fs_read_file(path, &len, &err);
    if (!text) {
        rp_note(r, "%s", err.msg);
        return;
    }
    int lineno = 0, bad = 0, first_bad = 0;
    for (char *line = text, *next; line < text + len; line = next) {
        char *nl = memchr(line, '\n', (size_t)(text + len - line));
        bool complete = nl != NULL;
        next = complete ? nl + 1 : text + len;
        if (complete)
            *nl = 0;
        lineno++;
        if (!*line)
            continue;
        cJSON *j = cJSON_Parse(line);
        bool ok = j && read_line(r, run, j);
        cJSON_Delete(j);
        if (ok)
            continue;
        if (!complete) {
            rp_note(r, "%s: line %d is incomplete (the run is still writing it?); skipped", path, lineno);
        } else if (!bad++) {
            first_bad = lineno;
        }
    }
    if (bad)
        rp_note(r, "%s: %d line%s not a train or eval metrics line (first: line %d); skipped", path, bad,
                bad > 1 ? "s are" : " is", first_bad);
    free(text);
}

static rp_run *new_run(rp_report *r)
{
    if (r->num_runs == r->cap_runs) {
        r->cap_runs = r->cap_runs ? 2 * r->cap_runs : 8;
        r->runs = rp_grow(r->runs, (size_t)r->cap_runs * sizeof *r->runs);
    }
    rp_run *run = &r->runs[r->num_runs++];
    memset(run, 0, sizeof *run);
    run->phase = NAN;
    return run;
}

/* One run directory; `entry` is its record in a sweep manifest and `axes` the sweep's axes
 * (or NULL). */
static void add_run(rp_report *r, const char *dir, const char *name, const cJSON *entry, const cJSON *axes)
{
    rp_run *run = new_run(r);
    snprintf(run->dir, sizeof run->dir, "%s", dir);
    snprintf(run->name, sizeof run->name, "%s", name);
    snprintf(run->status, sizeof run->status, "unknown");
    char path[1200];
    fs_error err = {{0}};
    snprintf(path, sizeof path, "%s/config.json", dir);
    if (is_file(path)) {
        run->config = fs_json_load(path, &err);
        if (!run->config)
            rp_note(r, "%s", err.msg);
    } else if (is_dir(dir)) {
        rp_note(r, "%s: no config.json", dir);
    }
    snprintf(path, sizeof path, "%s/run.json", dir);
    if (is_file(path)) {
        run->facts = fs_json_load(path, &err);
        if (!run->facts)
            rp_note(r, "%s", err.msg);
        const cJSON *ended = cJSON_GetObjectItemCaseSensitive(run->facts, "ended_by");
        if (cJSON_IsString(ended))
            snprintf(run->status, sizeof run->status, "%s", !strcmp(ended->valuestring, "done") ? "done" : "stopped");
    }
    if (entry) {
        const cJSON *status = cJSON_GetObjectItemCaseSensitive(entry, "status");
        if (cJSON_IsString(status))
            snprintf(run->status, sizeof run->status, "%s", status->valuestring);
        const cJSON *error = cJSON_GetObjectItemCaseSensitive(entry, "error");
        if (cJSON_IsString(error))
            rp_note(r, "%s failed: %s", name, error->valuestring);
        if (!run->facts)
            run->facts = cJSON_CreateObject();
        double wall = num(entry, "wall_s");
        if (isfinite(wall) && !cJSON_GetObjectItemCaseSensitive(run->facts, "wall_s"))
            cJSON_AddNumberToObject(run->facts, "wall_s", wall);
        const cJSON *ov = cJSON_GetObjectItemCaseSensitive(entry, "overrides");
        if (cJSON_IsObject(ov)) {
            run->overrides = cJSON_Duplicate(ov, 1);
            /* the grid point without its seed: the variant and the other axes' values */
            const cJSON *variant = cJSON_GetObjectItemCaseSensitive(entry, "variant"), *axis;
            size_t used = (size_t)snprintf(run->group_key, sizeof run->group_key, "%s",
                                           cJSON_IsString(variant) ? variant->valuestring : "");
            cJSON_ArrayForEach(axis, axes)
            {
                const cJSON *v = cJSON_GetObjectItemCaseSensitive(ov, axis->string);
                if (!strcmp(axis->string, "seed") || !v || used >= sizeof run->group_key)
                    continue;
                char *text = cJSON_PrintUnformatted(v);
                used += (size_t)snprintf(run->group_key + used, sizeof run->group_key - used, "%s%s=%s",
                                         used ? ", " : "", axis->string, text);
                free(text);
            }
            if (!run->group_key[0])
                snprintf(run->group_key, sizeof run->group_key, "all");
        }
    }
    if (!is_dir(dir)) {
        rp_note(r, "%s: no run directory yet (status %s): nothing to draw for %s", dir, run->status, name);
        return;
    }
    read_metrics(r, run);
}

static int add_sweep(rp_report *r, const char *path, const char *manifest, fs_error *err)
{
    cJSON *sweep = fs_json_load(manifest, err);
    if (!sweep)
        return -1;
    const cJSON *runs = cJSON_GetObjectItemCaseSensitive(sweep, "runs"), *entry;
    if (!cJSON_IsArray(runs)) {
        cJSON_Delete(sweep);
        return fs_fail(err, "%s: field \"runs\": expected an array of runs", manifest);
    }
    const cJSON *axes = cJSON_GetObjectItemCaseSensitive(sweep, "axes");
    const cJSON *seeds = cJSON_GetObjectItemCaseSensitive(axes, "seed");
    if (cJSON_GetArraySize(seeds) > 1)
        r->seed_axis = true;
    int i = 0;
    cJSON_ArrayForEach(entry, runs)
    {
        const cJSON *dir = cJSON_GetObjectItemCaseSensitive(entry, "dir");
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(entry, "name");
        if (!cJSON_IsString(dir) || !dir->valuestring[0] || strstr(dir->valuestring, "..")) {
            cJSON_Delete(sweep);
            return fs_fail(err, "%s: runs[%d].dir: expected the run's directory name inside %s", manifest, i, path);
        }
        char run_dir[1100];
        snprintf(run_dir, sizeof run_dir, "%s/%s", path, dir->valuestring);
        add_run(r, run_dir, cJSON_IsString(name) ? name->valuestring : dir->valuestring, entry, axes);
        i++;
    }
    cJSON_Delete(sweep);
    if (i == 0)
        rp_note(r, "%s: the sweep has no runs", manifest);
    return 0;
}

int rp_add_path(rp_report *r, const char *path, fs_error *err)
{
    char p[1100];
    snprintf(p, sizeof p, "%s", path);
    for (size_t n = strlen(p); n > 1 && p[n - 1] == '/'; n--)
        p[n - 1] = 0;
    if (!is_dir(p))
        return fs_fail(err, "%s: no such directory (expected a run directory or a sweep directory)", path);
    char file[1200];
    snprintf(file, sizeof file, "%s/sweep.json", p);
    if (is_file(file))
        return add_sweep(r, p, file, err);
    char config[1200], metrics[1200];
    snprintf(config, sizeof config, "%s/config.json", p);
    snprintf(metrics, sizeof metrics, "%s/metrics.jsonl", p);
    if (!is_file(config) && !is_file(metrics))
        return fs_fail(err, "%s: not a run directory (no config.json, no metrics.jsonl) nor a sweep directory "
                            "(no sweep.json)", path);
    const char *base = strrchr(p, '/');
    add_run(r, p, base && base[1] ? base + 1 : p, NULL, NULL);
    return 0;
}

static double phase_change(const rp_series *acc) { return fs_phase_change(acc->x, acc->y, acc->n); }

void rp_finish(rp_report *r)
{
    r->phase_evaluator = r->num_evaluators ? 0 : -1;
    for (int i = 0; i < r->num_evaluators; i++)
        if (!strcmp(r->evaluators[i], "fsl_train"))
            r->phase_evaluator = i;
    int with_evals = 0;
    for (int k = 0; k < r->num_runs; k++) {
        rp_run *run = &r->runs[k];
        bool any = false;
        for (int e = 0; e < r->num_evaluators; e++)
            any = any || run->eval[e][RP_ACC].n > 0;
        with_evals += any;
        if (r->phase_evaluator >= 0)
            run->phase = phase_change(&run->eval[r->phase_evaluator][RP_ACC]);
    }
    for (int e = 0; e < r->num_evaluators; e++) {
        int have = 0;
        for (int k = 0; k < r->num_runs; k++)
            have += r->runs[k].eval[e][RP_ACC].n > 0;
        if (have < with_evals)
            rp_note(r, "evaluator %s is logged by %d of the %d runs with evaluations (mixed evaluator sets)",
                    r->evaluators[e], have, with_evals);
    }
    if (r->num_runs == 0)
        rp_note(r, "no runs to draw");
}

void rp_free(rp_report *r)
{
    for (int k = 0; k < r->num_runs; k++) {
        rp_run *run = &r->runs[k];
        cJSON_Delete(run->config);
        cJSON_Delete(run->facts);
        cJSON_Delete(run->overrides);
        cJSON_Delete(run->measures);
        series_free(&run->train_loss);
        for (int e = 0; e < FS_MAX_EVALUATORS; e++)
            for (int m = 0; m < RP_METRICS; m++)
                series_free(&run->eval[e][m]);
    }
    free(r->runs);
    cJSON_Delete(r->notes);
    memset(r, 0, sizeof *r);
}

static const rp_series *run_series(const rp_run *run, int evaluator, int metric)
{
    return evaluator < 0 ? &run->train_loss : &run->eval[evaluator][metric];
}

/* Mean, min and max over runs[0..n) at the sequence counts all of them logged. */
static void group_series(const rp_report *r, const int *runs, int n, int evaluator, int metric, rp_line *line)
{
    const rp_series *first = run_series(&r->runs[runs[0]], evaluator, metric);
    size_t *pos = rp_grow(NULL, (size_t)n * sizeof *pos);
    memset(pos, 0, (size_t)n * sizeof *pos);
    for (size_t i = 0; i < first->n; i++) {
        double x = first->x[i], sum = 0, lo = INFINITY, hi = -INFINITY;
        bool all = true;
        for (int k = 0; k < n && all; k++) {
            const rp_series *s = run_series(&r->runs[runs[k]], evaluator, metric);
            while (pos[k] < s->n && s->x[pos[k]] < x)
                pos[k]++;
            all = pos[k] < s->n && s->x[pos[k]] == x && isfinite(s->y[pos[k]]);
            if (all) {
                double y = s->y[pos[k]];
                sum += y;
                lo = fmin(lo, y);
                hi = fmax(hi, y);
            }
        }
        if (!all)
            continue;
        series_push(&line->mean, x, sum / n);
        if (n > 1) {
            series_push(&line->lo, x, lo);
            series_push(&line->hi, x, hi);
        }
    }
    free(pos);
}

static void line_free(rp_line *line)
{
    series_free(&line->mean);
    series_free(&line->lo);
    series_free(&line->hi);
}

static int lines_of(const rp_report *r, int evaluator, int metric, rp_line **out)
{
    size_t runs = (size_t)(r->num_runs ? r->num_runs : 1);
    rp_line *lines = rp_grow(NULL, runs * sizeof *lines);
    int *members = rp_grow(NULL, runs * sizeof *members);
    bool *used = rp_grow(NULL, runs * sizeof *used);
    memset(lines, 0, runs * sizeof *lines);
    memset(used, 0, runs * sizeof *used);
    int count = 0;
    for (int k = 0; k < r->num_runs; k++) {
        if (used[k])
            continue;
        int n = 0;
        for (int j = k; j < r->num_runs; j++)
            if (!used[j] && (j == k || (r->seed_axis && r->runs[k].group_key[0] &&
                                        !strcmp(r->runs[j].group_key, r->runs[k].group_key)))) {
                /* a run that logged nothing yet would empty the group's intersection */
                if (j != k && run_series(&r->runs[j], evaluator, metric)->n == 0)
                    continue;
                used[j] = true;
                members[n++] = j;
            }
        rp_line *line = &lines[count++];
        line->first_run = k;
        line->num_runs = n;
        line->phase = r->runs[k].phase;
        if (r->seed_axis && r->runs[k].group_key[0])
            snprintf(line->label, sizeof line->label, "%s (%d seed%s)", r->runs[k].group_key, n, n == 1 ? "" : "s");
        else
            snprintf(line->label, sizeof line->label, "%s", r->runs[k].name);
        group_series(r, members, n, evaluator, metric, line);
        if (line->mean.n == 0) { /* nothing logged (yet): no line */
            line_free(line);
            count--;
            continue;
        }
        if (n > 1 && r->phase_evaluator >= 0) {
            rp_line acc;
            memset(&acc, 0, sizeof acc);
            group_series(r, members, n, r->phase_evaluator, RP_ACC, &acc);
            line->phase = phase_change(&acc.mean);
            line_free(&acc);
        }
    }
    free(members);
    free(used);
    *out = lines;
    return count;
}

static void lines_free(rp_line *lines, int n)
{
    for (int i = 0; i < n; i++)
        line_free(&lines[i]);
    free(lines);
}

static rp_chart *add_chart(rp_chart **charts, int *n, int metric, const char *title)
{
    rp_chart *c = rp_grow(*charts, (size_t)(*n + 1) * sizeof *c);
    *charts = c;
    c = &c[(*n)++];
    memset(c, 0, sizeof *c);
    c->metric = metric;
    snprintf(c->title, sizeof c->title, "%s", title);
    return c;
}

/* Move the line of a one-run report (if it has one) into a chart under a new label. */
static void take_line(rp_chart *c, rp_line *lines, int n, const char *label)
{
    if (n == 0) {
        free(lines);
        return;
    }
    rp_line *l = rp_grow(c->lines, (size_t)(c->num_lines + 1) * sizeof *l);
    c->lines = l;
    l[c->num_lines] = lines[0];
    snprintf(l[c->num_lines].label, sizeof l->label, "%s", label);
    c->num_lines++;
    free(lines);
}

static const char *metric_title[RP_METRICS] = {"query accuracy", "query loss"};

int rp_charts(const rp_report *r, rp_chart **out)
{
    rp_chart *charts = NULL;
    int n = 0;
    if (r->num_runs == 1) {
        for (int m = 0; m < RP_METRICS; m++) {
            char title[160];
            snprintf(title, sizeof title, "%s%s", m == RP_ACC ? "Query accuracy" : "Loss",
                     m == RP_LOSS ? " (evaluators' query loss, training batch loss)" : " per evaluator");
            rp_chart *c = add_chart(&charts, &n, m, title);
            for (int e = 0; e < r->num_evaluators; e++) {
                rp_line *lines;
                int k = lines_of(r, e, m, &lines);
                take_line(c, lines, k, r->evaluators[e]);
            }
            if (m == RP_LOSS) {
                rp_line *lines;
                int k = lines_of(r, -1, m, &lines);
                take_line(c, lines, k, "training (window mean)");
            }
        }
    } else {
        for (int e = 0; e < r->num_evaluators; e++)
            for (int m = 0; m < RP_METRICS; m++) {
                char title[160];
                snprintf(title, sizeof title, "%s: %s", r->evaluators[e], metric_title[m]);
                rp_chart *c = add_chart(&charts, &n, m, title);
                c->num_lines = lines_of(r, e, m, &c->lines);
            }
        if (r->num_runs > 1) {
            rp_chart *c = add_chart(&charts, &n, RP_LOSS, "Training loss (mean over each logging window)");
            c->num_lines = lines_of(r, -1, RP_LOSS, &c->lines);
        }
    }
    *out = charts;
    return n;
}

void rp_charts_free(rp_chart *charts, int n)
{
    for (int i = 0; i < n; i++)
        lines_free(charts[i].lines, charts[i].num_lines);
    free(charts);
}
