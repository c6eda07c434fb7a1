/* fewshot report through the binary: the data it inlines (curves, seed bands, phase change,
 * progress measures, attention patterns, run facts), bad input (a missing or half-written
 * run, a truncated metrics line, mixed evaluator sets, no Chart.js), --svg, and the run.json
 * that fewshot train writes. Chart.js is replaced by a stub (FEWSHOT_CHARTJS) so these run
 * without the optional package; make test-report checks the real page in Chromium. */
#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "helpers.h"

static char dir[128];

static void setup(void)
{
    th_tmpdir(dir, sizeof dir, "report");
    th_write_text(th_path(dir, "chart.js"), "window.Chart = function () {};\n");
    setenv("FEWSHOT_CHARTJS", th_path(dir, "chart.js"), 1);
}

static void teardown(void) { th_rmtree(dir); }

/* A run directory with a config and the given metrics lines (no checkpoints). */
static const char *fake_run(const char *name, const char *metrics)
{
    const char *run = th_path(dir, name);
    cr_assert_eq(mkdir(run, 0755), 0);
    th_write_text(th_path(run, "config.json"), th_tiny_run_config);
    if (metrics)
        th_write_text(th_path(run, "metrics.jsonl"), metrics);
    return run;
}

static const char *eval_line(char *buf, size_t n, int iter, double acc, double loss)
{
    snprintf(buf, n,
             "{\"type\":\"eval\",\"iter\":%d,\"step\":%d,\"evals\":{\"fsl_train\":{\"loss\":%.17g,\"acc\":%g},"
             "\"fsl_val_rl\":{\"loss\":1.5,\"acc\":0.25}}}\n",
             iter, iter / 16, loss, acc);
    return buf;
}

/* The data inlined in the report DIR/out.html. */
static cJSON *page_data(void)
{
    char *html = th_read_file(th_path(dir, "out.html"), NULL);
    cr_assert_not_null(html);
    cr_assert_not_null(strstr(html, "window.Chart = function"), "Chart.js is inlined");
    const char *start = strstr(html, "id=\"fewshot-data\">");
    cr_assert_not_null(start);
    start += strlen("id=\"fewshot-data\">");
    const char *end = strstr(start, "</script>");
    cr_assert_not_null(end);
    cJSON *data = cJSON_ParseWithLength(start, (size_t)(end - start));
    cr_assert_not_null(data, "the inlined data is JSON");
    free(html);
    return data;
}

/* Run `report ARGS -o DIR/out.html --no-attention`, expect success, return the page's data. */
static cJSON *report_data(const char *args, th_run_result *r)
{
    th_run(r, "report %s -o %s --no-attention", args, th_path(dir, "out.html"));
    cr_assert(r->exited && r->code == 0, "%s", th_describe(r));
    return page_data();
}

static bool has_note(const cJSON *data, const char *needle)
{
    const cJSON *n;
    cJSON_ArrayForEach(n, cJSON_GetObjectItem(data, "notes"))
    {
        if (strstr(n->valuestring, needle))
            return true;
    }
    return false;
}

static const cJSON *chart(const cJSON *data, int i) { return cJSON_GetArrayItem(cJSON_GetObjectItem(data, "charts"), i); }

Test(report, curves_and_phase_change_of_a_run, .init = setup, .fini = teardown)
{
    char a[256], b[256], c[256], d[256], text[1200];
    /* acc 0.3, 0.5, 0.8, 0.9: final 0.9, half way from 0.5 is 0.7, first reached at 2400 */
    snprintf(text, sizeof text, "%s%s{\"type\":\"train\",\"iter\":1600,\"step\":100,\"loss\":1.25,\"grad_norm\":2}\n%s%s",
             eval_line(a, sizeof a, 0, 0.3, 2), eval_line(b, sizeof b, 1600, 0.5, 1.5),
             eval_line(c, sizeof c, 2400, 0.8, 0.123456789), eval_line(d, sizeof d, 3200, 0.9, 0.1));
    const char *run = fake_run("r1", text);
    th_run_result r;
    cJSON *data = report_data(run, &r);
    cr_assert_not_null(strstr(r.err, "KB"), "the size is reported: %s", r.err);
    cr_assert_eq(cJSON_GetArraySize(cJSON_GetObjectItem(data, "charts")), 2, "one run: accuracy and loss charts");
    const cJSON *acc = chart(data, 0), *loss = chart(data, 1);
    cr_assert_str_eq(cJSON_GetObjectItem(acc, "metric")->valuestring, "acc");
    cr_assert_eq(cJSON_GetArraySize(cJSON_GetObjectItem(acc, "lines")), 2, "a line per evaluator");
    cr_assert_eq(cJSON_GetArraySize(cJSON_GetObjectItem(loss, "lines")), 3, "a line per evaluator and training");
    const cJSON *line = cJSON_GetArrayItem(cJSON_GetObjectItem(acc, "lines"), 0);
    cr_assert_str_eq(cJSON_GetObjectItem(line, "label")->valuestring, "fsl_train");
    cr_assert_eq(cJSON_GetObjectItem(line, "phase")->valuedouble, 2400);
    cr_assert_eq(cJSON_GetArrayItem(cJSON_GetObjectItem(line, "y"), 3)->valuedouble, 0.9);
    const cJSON *lline = cJSON_GetArrayItem(cJSON_GetObjectItem(loss, "lines"), 0);
    cr_assert_eq(cJSON_GetArrayItem(cJSON_GetObjectItem(lline, "y"), 2)->valuedouble, 0.123457, "6 digits");
    const cJSON *train = cJSON_GetArrayItem(cJSON_GetObjectItem(loss, "lines"), 2);
    cr_assert_eq(cJSON_GetArrayItem(cJSON_GetObjectItem(train, "y"), 0)->valuedouble, 1.25);
    const cJSON *run0 = cJSON_GetArrayItem(cJSON_GetObjectItem(data, "runs"), 0);
    cr_assert_eq(cJSON_GetObjectItem(run0, "phase")->valuedouble, 2400);
    cr_assert_str_eq(cJSON_GetObjectItem(run0, "status")->valuestring, "unknown", "no run.json: unknown");
    cr_assert_eq(cJSON_GetObjectItem(run0, "config")->valueint, 0);
    cr_assert(cJSON_IsObject(cJSON_GetArrayItem(cJSON_GetObjectItem(data, "configs"), 0)), "the resolved config");
    cr_assert_eq(cJSON_GetArraySize(cJSON_GetObjectItem(data, "notes")), 0);
    cJSON_Delete(data);
    th_run_free(&r);
}

/* A run with two eval lines (acc 0.3, then `acc`), the second cut after 60 bytes if `cut`. */
static cJSON *two_evals(double acc, bool cut, th_run_result *r)
{
    char a[256], b[256], text[600];
    snprintf(text, sizeof text, cut ? "%s%.60s" : "%s%s", eval_line(a, sizeof a, 0, 0.3, 2),
             eval_line(b, sizeof b, 800, acc, 1));
    return report_data(fake_run("r1", text), r);
}

Test(report, no_phase_change_below_chance_half, .init = setup, .fini = teardown)
{
    th_run_result r;
    cJSON *data = two_evals(0.45, false, &r);
    const cJSON *run0 = cJSON_GetArrayItem(cJSON_GetObjectItem(data, "runs"), 0);
    cr_assert(cJSON_IsNull(cJSON_GetObjectItem(run0, "phase")), "final accuracy <= 0.5: no phase change");
    cJSON_Delete(data);
    th_run_free(&r);
}

Test(report, truncated_last_line_is_skipped_with_a_note, .init = setup, .fini = teardown)
{
    th_run_result r;
    cJSON *data = two_evals(0.6, true, &r);
    cr_assert(has_note(data, "line 2 is incomplete"), "%s", r.err);
    const cJSON *line = cJSON_GetArrayItem(cJSON_GetObjectItem(chart(data, 0), "lines"), 0);
    cr_assert_eq(cJSON_GetArraySize(cJSON_GetObjectItem(line, "x")), 1, "the complete line is drawn");
    cJSON_Delete(data);
    th_run_free(&r);
}

/* Report runs r1 and r2 with these metrics (NULL: no metrics.jsonl). */
static cJSON *two_runs(const char *m1, const char *m2, th_run_result *r)
{
    char args[300];
    const char *r1 = fake_run("r1", m1);
    snprintf(args, sizeof args, "%s %s", r1, fake_run("r2", m2));
    return report_data(args, r);
}

Test(report, half_written_run_and_garbage_lines_get_notes, .init = setup, .fini = teardown)
{
    char a[256], text[600];
    snprintf(text, sizeof text, "%snot json\n{\"type\":\"other\"}\n", eval_line(a, sizeof a, 0, 0.3, 2));
    th_run_result r;
    cJSON *data = two_runs(text, NULL, &r); /* r2 started: config only */
    cr_assert(has_note(data, "2 lines are not a train or eval metrics line (first: line 2)"), "%s", r.err);
    cr_assert(has_note(data, "no metrics.jsonl yet"), "%s", r.err);
    cr_assert_eq(cJSON_GetArraySize(cJSON_GetObjectItem(data, "runs")), 2);
    cr_assert_eq(cJSON_GetArraySize(cJSON_GetObjectItem(data, "configs")), 1, "equal configs are stored once");
    cJSON_Delete(data);
    th_run_free(&r);
}

Test(report, mixed_evaluator_sets_get_a_note, .init = setup, .fini = teardown)
{
    char a[256];
    th_run_result r;
    cJSON *data = two_runs(eval_line(a, sizeof a, 0, 0.3, 2),
                           "{\"type\":\"eval\",\"iter\":0,\"step\":0,\"evals\":{\"other\":{\"loss\":1,\"acc\":0.5}}}\n", &r);
    cr_assert(has_note(data, "evaluator other is logged by 1 of the 2 runs"), "%s", r.err);
    cr_assert(has_note(data, "evaluator fsl_train is logged by 1 of the 2 runs"), "%s", r.err);
    /* two runs: a chart per evaluator and metric, plus the training loss */
    cr_assert_eq(cJSON_GetArraySize(cJSON_GetObjectItem(data, "charts")), 3 * 2 + 1);
    cJSON_Delete(data);
    th_run_free(&r);
}

Test(report, bad_paths_and_missing_chartjs_are_clear_errors, .init = setup, .fini = teardown)
{
    th_run_result r;
    th_run(&r, "report %s -o %s", th_path(dir, "nope"), th_path(dir, "out.html"));
    cr_assert(r.exited && r.code == 1 && strstr(r.err, "nope: no such directory"), "%s", th_describe(&r));
    th_run_free(&r);
    th_run(&r, "report %s -o %s", dir, th_path(dir, "out.html"));
    cr_assert(r.exited && r.code == 1 && strstr(r.err, "not a run directory"), "%s", th_describe(&r));
    th_run_free(&r);
    th_run(&r, "report %s", dir);
    cr_assert(r.exited && r.code == 2 && strstr(r.err, "-o report.html is required"), "%s", th_describe(&r));
    th_run_free(&r);
    char a[256];
    const char *run = fake_run("r1", eval_line(a, sizeof a, 0, 0.3, 2));
    setenv("FEWSHOT_CHARTJS", th_path(dir, "missing.js"), 1);
    th_run(&r, "report %s -o %s", run, th_path(dir, "out.html"));
    cr_assert(r.exited && r.code == 1 && strstr(r.err, "libjs-chart.js") && strstr(r.err, "make deps-report"), "%s",
              th_describe(&r));
    th_run_free(&r);
    struct stat st;
    cr_assert_neq(stat(th_path(dir, "out.html"), &st), 0, "no partial report");
}

Test(report, sweep_with_a_seed_axis_draws_mean_and_band, .init = setup, .fini = teardown)
{
    const char *sweep = th_path(dir, "sweep");
    cr_assert_eq(mkdir(sweep, 0755), 0);
    char run[200], line[1200], a[256];
    const double lr[2] = {1e-3, 3e-3};
    for (int i = 0; i < 4; i++) {
        snprintf(run, sizeof run, "%s/run%d", sweep, i);
        cr_assert_eq(mkdir(run, 0755), 0);
        th_write_text(th_path(run, "config.json"), th_tiny_run_config);
        snprintf(line, sizeof line, "%s", eval_line(a, sizeof a, 800, 0.5 + 0.1 * i, 1));
        th_write_text(th_path(run, "metrics.jsonl"), line);
    }
    th_write_textf(th_path(sweep, "sweep.json"),
                   "{\"sweep_file\": \"s.json\", \"axes\": {\"train.lr\": [%g, %g], \"seed\": [1, 2]}, \"variants\": [],"
                   " \"runs\": [", lr[0], lr[1]);
    FILE *f = fopen(th_path(sweep, "sweep.json"), "a");
    for (int i = 0; i < 5; i++)
        fprintf(f, "%s{\"index\": %d, \"name\": \"run%d\", \"dir\": \"run%d\", \"overrides\": {\"train.lr\": %g, "
                   "\"seed\": %d}, \"variant\": null, \"status\": \"%s\", \"error\": %s, \"wall_s\": %s}",
                i ? "," : "", i, i, i, lr[i / 2 % 2], 1 + i % 2, i == 4 ? "failed" : "done",
                i == 4 ? "\"out of memory\"" : "null", i == 4 ? "null" : "2.5");
    fputs("]}\n", f);
    fclose(f);
    th_run_result r;
    cJSON *data = report_data(sweep, &r);
    cr_assert(cJSON_IsTrue(cJSON_GetObjectItem(data, "grouped")));
    cr_assert(has_note(data, "run4 failed: out of memory"), "%s", r.err);
    cr_assert(has_note(data, "no run directory yet"), "%s", r.err);
    const cJSON *lines = cJSON_GetObjectItem(chart(data, 0), "lines");
    cr_assert_eq(cJSON_GetArraySize(lines), 2, "a line per learning rate (run4 with no data is its own)");
    const cJSON *g = cJSON_GetArrayItem(lines, 1);
    cr_assert_str_eq(cJSON_GetObjectItem(g, "label")->valuestring, "train.lr=0.003 (2 seeds)");
    cr_assert(th_close(cJSON_GetArrayItem(cJSON_GetObjectItem(g, "y"), 0)->valuedouble, 0.75, 0, 1e-9));
    cr_assert(th_close(cJSON_GetArrayItem(cJSON_GetObjectItem(g, "lo"), 0)->valuedouble, 0.7, 0, 1e-9));
    cr_assert(th_close(cJSON_GetArrayItem(cJSON_GetObjectItem(g, "hi"), 0)->valuedouble, 0.8, 0, 1e-9));
    const cJSON *run0 = cJSON_GetArrayItem(cJSON_GetObjectItem(data, "runs"), 0);
    cr_assert_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(run0, "facts"), "wall_s")->valuedouble, 2.5);
    cJSON_Delete(data);
    th_run_free(&r);
}

Test(report, progress_measures_per_layer_and_head, .init = setup, .fini = teardown)
{
    const char *run = fake_run(
        "r1", "{\"type\":\"eval\",\"iter\":0,\"step\":0,\"evals\":{\"fsl_train\":{\"loss\":2,\"acc\":0.3}},"
              "\"measures\":{\"induction_strength\":[[0.1,0.2],[0.3,0.4]],\"label_attention\":[[1,2],[3,4]]}}\n"
              "{\"type\":\"eval\",\"iter\":800,\"step\":50,\"evals\":{\"fsl_train\":{\"loss\":1,\"acc\":0.8}},"
              "\"measures\":{\"induction_strength\":[[0.5,0.6],[0.7,0.81234]]}}\n");
    th_run_result r;
    cJSON *data = report_data(run, &r);
    const cJSON *m = cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(data, "runs"), 0), "measures");
    cr_assert_eq(cJSON_GetArraySize(cJSON_GetObjectItem(m, "iter")), 2);
    const cJSON *ind = cJSON_GetObjectItem(cJSON_GetObjectItem(m, "series"), "induction_strength");
    const cJSON *l1h1 = cJSON_GetArrayItem(cJSON_GetArrayItem(ind, 1), 1);
    cr_assert_eq(cJSON_GetArrayItem(l1h1, 0)->valuedouble, 0.4);
    cr_assert_eq(cJSON_GetArrayItem(l1h1, 1)->valuedouble, 0.812, "3 significant digits");
    const cJSON *la = cJSON_GetObjectItem(cJSON_GetObjectItem(m, "series"), "label_attention");
    cr_assert(cJSON_IsNull(cJSON_GetArrayItem(cJSON_GetArrayItem(cJSON_GetArrayItem(la, 0), 0), 1)),
              "a measure missing at an eval point is null");
    cJSON_Delete(data);
    th_run_free(&r);
}

Test(report, trained_run_facts_attention_and_svg, .init = setup, .fini = teardown, .timeout = 120)
{
    th_write_text(th_path(dir, "tiny.json"), th_tiny_run_config);
    const char *run = th_path(dir, "run");
    th_run_result r;
    th_run_ok("train --config %s --out %s --no-progress", th_path(dir, "tiny.json"), run);
    char *facts_text = th_read_file(th_path(run, "run.json"), NULL);
    cr_assert_not_null(facts_text, "fewshot train writes run.json");
    cJSON *facts = cJSON_Parse(facts_text);
    free(facts_text);
    cr_assert_str_eq(cJSON_GetArrayItem(cJSON_GetObjectItem(facts, "command"), 1)->valuestring, "train");
    cr_assert_str_eq(cJSON_GetObjectItem(facts, "ended_by")->valuestring, "done");
    cr_assert_eq(cJSON_GetObjectItem(facts, "sequences")->valuedouble, 3200);
    cr_assert_eq(cJSON_GetObjectItem(facts, "threads")->valuedouble, 2);
    cr_assert_gt(cJSON_GetObjectItem(facts, "wall_s")->valuedouble, 0);
    cr_assert_gt(cJSON_GetObjectItem(facts, "seqs_per_s")->valuedouble, 0);
    cJSON_Delete(facts);

    /* a model snapshot (issue 15's ckpt_sched) joins the slider at its sequence count */
    th_copy_file(th_path(run, "checkpoints/step_00000100.safetensors"), th_path(run, "ckpt_800.safetensors"));
    th_run(&r, "report %s -o %s --svg %s --probes 3", run, th_path(dir, "out.html"), th_path(dir, "svg"));
    cr_assert(r.exited && r.code == 0, "%s", th_describe(&r));
    cr_assert_not_null(strstr(r.err, "wrote 2 SVG figures"), "%s", r.err);
    th_run_free(&r);
    cJSON *data = page_data();
    const cJSON *att = cJSON_GetObjectItem(data, "attention");
    cr_assert(cJSON_IsObject(att));
    const char *tokens[] = {"e1", "l1", "e2", "l2", "q"};
    for (int t = 0; t < 5; t++)
        cr_assert_str_eq(cJSON_GetArrayItem(cJSON_GetObjectItem(att, "tokens"), t)->valuestring, tokens[t]);
    cr_assert_eq(cJSON_GetArraySize(cJSON_GetObjectItem(att, "probes")), 3);
    const cJSON *cks = cJSON_GetObjectItem(att, "checkpoints");
    cr_assert_eq(cJSON_GetArraySize(cks), 4, "the initial model, the snapshot and both checkpoints");
    const cJSON *snap = cJSON_GetArrayItem(cks, 1);
    cr_assert_str_eq(cJSON_GetObjectItem(snap, "label")->valuestring, "snapshot");
    cr_assert_eq(cJSON_GetObjectItem(snap, "iter")->valuedouble, 800);
    cr_assert_null(cJSON_GetObjectItem(snap, "step"));
    cr_assert_eq(cJSON_GetObjectItem(cJSON_GetArrayItem(cks, 2), "iter")->valuedouble, 1600);
    const cJSON *last = cJSON_GetArrayItem(cks, 3);
    cr_assert_str_eq(cJSON_GetObjectItem(last, "label")->valuestring, "final model");
    cr_assert_eq(cJSON_GetObjectItem(last, "iter")->valuedouble, 3200);
    const cJSON *scores = cJSON_GetObjectItem(last, "scores");
    cr_assert_eq(cJSON_GetArraySize(scores), 3 * 2 * 2 * 25, "[probe][layer][head][5][5]");
    /* every attention row sums to 1 and the causal mask holds */
    for (int row = 0; row < 3 * 2 * 2 * 5; row++) {
        double sum = 0;
        for (int j = 0; j < 5; j++) {
            double v = cJSON_GetArrayItem(scores, row * 5 + j)->valuedouble;
            sum += v;
            if (j > row % 5)
                cr_assert_eq(v, 0);
        }
        cr_assert(th_close(sum, 1, 0, 0.01), "row %d sums to %g", row, sum);
    }
    const cJSON *run0 = cJSON_GetArrayItem(cJSON_GetObjectItem(data, "runs"), 0);
    cr_assert_str_eq(cJSON_GetObjectItem(run0, "status")->valuestring, "done");
    cJSON_Delete(data);
    char *svg = th_read_file(th_path(dir, "svg/01_query_accuracy_per_evaluator.svg"), NULL);
    cr_assert_not_null(svg);
    cr_assert(!strncmp(svg, "<svg", 4) && strstr(svg, "fsl_val_rl") && strstr(svg, "</svg>"));
    free(svg);
}

Test(report, attention_holds_the_runs_interventions_on, .init = setup, .fini = teardown, .timeout = 120)
{
    th_write_text(th_path(dir, "tiny.json"), th_tiny_run_config);
    const char *run = th_path(dir, "run");
    th_run_ok("train --config %s --out %s --no-progress --set train.train_iters=800 --intervene "
              "{\"prev_token_heads\":[\"0:1\"]}",
              th_path(dir, "tiny.json"), run);
    th_run_ok("report %s -o %s --probes 2", run, th_path(dir, "out.html"));
    cJSON *data = page_data();
    const cJSON *att = cJSON_GetObjectItem(data, "attention");
    cr_assert_not_null(strstr(cJSON_GetObjectItem(att, "interventions")->valuestring, "prev_token_heads"));
    const cJSON *cks = cJSON_GetObjectItem(att, "checkpoints");
    const cJSON *scores = cJSON_GetObjectItem(cJSON_GetArrayItem(cks, cJSON_GetArraySize(cks) - 1), "scores");
    /* layer 0, head 1 of each probe: every row i > 0 attends to token i - 1 only */
    for (int b = 0; b < 2; b++)
        for (int i = 1; i < 5; i++)
            for (int j = 0; j < 5; j++) {
                int at = ((b * 2 + 0) * 2 + 1) * 25 + i * 5 + j;
                cr_assert_eq(cJSON_GetArrayItem(scores, at)->valuedouble, j == i - 1 ? 1.0 : 0.0,
                             "probe %d row %d column %d", b, i, j);
            }
    cJSON_Delete(data);
}
