/* fewshot report: the data the page draws, as one JSON object (see template.html). */
#include "cli/report.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
    CURVE_DIGITS = 6,      /* significant digits of accuracies and losses */
    MEASURE_DIGITS = 3,    /* of progress measures */
    MEASURE_BUDGET = 80000 /* measure values in one report before eval points are thinned */
};

static cJSON *numbers(const double *v, size_t n, int digits)
{
    cJSON *a = cJSON_CreateArray();
    for (size_t i = 0; i < n; i++)
        cJSON_AddItemToArray(a, cJSON_CreateNumber(rp_round(v[i], digits))); /* NaN prints as null */
    return a;
}

static cJSON *line_json(const rp_line *l)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "label", l->label);
    cJSON_AddNumberToObject(o, "run", l->first_run);
    cJSON_AddNumberToObject(o, "n", l->num_runs);
    cJSON_AddItemToObject(o, "x", numbers(l->mean.x, l->mean.n, 17));
    cJSON_AddItemToObject(o, "y", numbers(l->mean.y, l->mean.n, CURVE_DIGITS));
    if (l->lo.n) {
        cJSON_AddItemToObject(o, "lo", numbers(l->lo.y, l->lo.n, CURVE_DIGITS));
        cJSON_AddItemToObject(o, "hi", numbers(l->hi.y, l->hi.n, CURVE_DIGITS));
    }
    cJSON_AddItemToObject(o, "phase", cJSON_CreateNumber(l->phase));
    return o;
}

/* Values of a measure at one eval point: a [layers][heads] array (or one flat array). */
static void measure_shape(const cJSON *v, int *layers, int *heads)
{
    *layers = *heads = 0;
    if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) == 0)
        return;
    const cJSON *first = cJSON_GetArrayItem(v, 0);
    if (cJSON_IsArray(first)) {
        *layers = cJSON_GetArraySize(v);
        *heads = cJSON_GetArraySize(first);
    } else {
        *layers = 1;
        *heads = cJSON_GetArraySize(v);
    }
}

static double measure_at(const cJSON *v, int l, int h)
{
    const cJSON *row = cJSON_IsArray(cJSON_GetArrayItem(v, 0)) ? cJSON_GetArrayItem(v, l) : v;
    const cJSON *x = cJSON_GetArrayItem(row, h);
    return cJSON_IsNumber(x) ? x->valuedouble : NAN;
}

static size_t measure_values(const cJSON *points)
{
    size_t total = 0;
    const cJSON *p, *m;
    cJSON_ArrayForEach(p, points)
    {
        cJSON_ArrayForEach(m, cJSON_GetObjectItemCaseSensitive(p, "m"))
        {
            int layers, heads;
            measure_shape(m, &layers, &heads);
            total += (size_t)layers * (size_t)heads;
        }
    }
    return total;
}

/* {"iter": [...], "series": {name: [layer][head][point]}} keeping every stride-th point
 * (and the last). */
static cJSON *measures_json(const cJSON *points, int stride)
{
    int n = cJSON_GetArraySize(points);
    cJSON *o = cJSON_CreateObject(), *iters = cJSON_AddArrayToObject(o, "iter");
    cJSON *series = cJSON_AddObjectToObject(o, "series");
    const cJSON *p, *m;
    int i = 0;
    cJSON_ArrayForEach(p, points)
    {
        if (i % stride == 0 || i == n - 1)
            cJSON_AddItemToArray(iters, cJSON_CreateNumber(cJSON_GetObjectItemCaseSensitive(p, "iter")->valuedouble));
        i++;
    }
    /* each measure named at any point, in order of first appearance */
    cJSON_ArrayForEach(p, points)
    {
        cJSON_ArrayForEach(m, cJSON_GetObjectItemCaseSensitive(p, "m"))
        {
            if (cJSON_GetObjectItemCaseSensitive(series, m->string))
                continue;
            int layers, heads;
            measure_shape(m, &layers, &heads);
            if (!layers || !heads)
                continue;
            cJSON *by_layer = cJSON_AddArrayToObject(series, m->string);
            for (int l = 0; l < layers; l++) {
                cJSON *by_head = cJSON_CreateArray();
                cJSON_AddItemToArray(by_layer, by_head);
                for (int h = 0; h < heads; h++) {
                    cJSON *vals = cJSON_CreateArray();
                    cJSON_AddItemToArray(by_head, vals);
                    const cJSON *q;
                    int j = 0;
                    cJSON_ArrayForEach(q, points)
                    {
                        if (j % stride == 0 || j == n - 1) {
                            const cJSON *v = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(q, "m"),
                                                                              m->string);
                            int ql, qh;
                            measure_shape(v, &ql, &qh);
                            double x = ql == layers && qh == heads ? measure_at(v, l, h) : NAN;
                            cJSON_AddItemToArray(vals, cJSON_CreateNumber(rp_round(x, MEASURE_DIGITS)));
                        }
                        j++;
                    }
                }
            }
        }
    }
    return o;
}

static cJSON *final_metrics(const rp_report *r, const rp_run *run)
{
    cJSON *o = cJSON_CreateObject();
    for (int e = 0; e < r->num_evaluators; e++) {
        if (!run->eval[e][RP_ACC].n)
            continue;
        cJSON *ev = cJSON_AddObjectToObject(o, r->evaluators[e]);
        for (int m = 0; m < RP_METRICS; m++) {
            const rp_series *s = &run->eval[e][m];
            cJSON_AddItemToObject(ev, rp_metric_names[m], cJSON_CreateNumber(rp_round(s->y[s->n - 1], CURVE_DIGITS)));
        }
    }
    return o;
}

cJSON *rp_data_json(const rp_report *r)
{
    cJSON *root = cJSON_CreateObject();
    cJSON *evs = cJSON_AddArrayToObject(root, "evaluators");
    for (int e = 0; e < r->num_evaluators; e++)
        cJSON_AddItemToArray(evs, cJSON_CreateString(r->evaluators[e]));
    if (r->phase_evaluator >= 0)
        cJSON_AddStringToObject(root, "phase_evaluator", r->evaluators[r->phase_evaluator]);
    cJSON_AddBoolToObject(root, "grouped", r->seed_axis);

    rp_chart *charts;
    int nc = rp_charts(r, &charts);
    cJSON *cs = cJSON_AddArrayToObject(root, "charts");
    for (int c = 0; c < nc; c++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "title", charts[c].title);
        cJSON_AddStringToObject(o, "metric", rp_metric_names[charts[c].metric]);
        cJSON *ls = cJSON_AddArrayToObject(o, "lines");
        for (int l = 0; l < charts[c].num_lines; l++)
            cJSON_AddItemToArray(ls, line_json(&charts[c].lines[l]));
        cJSON_AddItemToArray(cs, o);
    }
    rp_charts_free(charts, nc);

    size_t total = 0;
    for (int k = 0; k < r->num_runs; k++)
        total += measure_values(r->runs[k].measures);
    int stride = total > MEASURE_BUDGET ? (int)((total + MEASURE_BUDGET - 1) / MEASURE_BUDGET) : 1;
    if (stride > 1)
        fprintf(stderr, "fewshot report: note: %zu progress-measure values: drawing one eval point in %d\n", total,
                stride);

    /* the runs of a sweep share most of their config: each distinct one is stored once */
    cJSON *configs = cJSON_AddArrayToObject(root, "configs");
    cJSON *runs = cJSON_AddArrayToObject(root, "runs");
    for (int k = 0; k < r->num_runs; k++) {
        const rp_run *run = &r->runs[k];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", run->name);
        cJSON_AddStringToObject(o, "dir", run->dir);
        cJSON_AddStringToObject(o, "status", run->status);
        cJSON_AddItemToObject(o, "phase", cJSON_CreateNumber(run->phase));
        cJSON_AddItemToObject(o, "final", final_metrics(r, run));
        cJSON_AddItemToObject(o, "facts", run->facts ? cJSON_Duplicate(run->facts, 1) : cJSON_CreateNull());
        cJSON_AddItemToObject(o, "overrides", run->overrides ? cJSON_Duplicate(run->overrides, 1) : cJSON_CreateNull());
        int config = -1;
        if (run->config) {
            for (int c = 0; c < cJSON_GetArraySize(configs) && config < 0; c++)
                if (cJSON_Compare(cJSON_GetArrayItem(configs, c), run->config, true))
                    config = c;
            if (config < 0) {
                config = cJSON_GetArraySize(configs);
                cJSON_AddItemToArray(configs, cJSON_Duplicate(run->config, 1));
            }
        }
        cJSON_AddItemToObject(o, "config", config < 0 ? cJSON_CreateNull() : cJSON_CreateNumber(config));
        cJSON_AddItemToObject(o, "measures",
                              run->measures ? measures_json(run->measures, stride) : cJSON_CreateNull());
        cJSON_AddItemToArray(runs, o);
    }
    cJSON_AddItemToObject(root, "notes", r->notes ? cJSON_Duplicate(r->notes, 1) : cJSON_CreateArray());
    if (stride > 1) {
        char msg[200];
        snprintf(msg, sizeof msg, "progress measures: one eval point in %d is drawn (to keep the file small)", stride);
        cJSON_AddItemToArray(cJSON_GetObjectItemCaseSensitive(root, "notes"), cJSON_CreateString(msg));
    }
    return root;
}
