/* fewshot bench's reports (issue 12): every phase against the machine's measured FMA
 * peak, the vector width in use, and the spread of the peak probes. Only the format and
 * the consistency of the figures are checked, never a speed. */
#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "helpers.h"

TestSuite(bench, .timeout = 300);

static double number(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItem(o, key);
    cr_assert(cJSON_IsNumber(v), "no number %s in %s", key, cJSON_PrintUnformatted(o));
    return v->valuedouble;
}

/* The peak is the best probe, the worst probe is at most that, and each phase's
 * fraction is its multiply-adds over the best probe. */
static void assert_peaks(const cJSON *o, const char *best_key)
{
    double best = number(o, best_key), worst = number(o, "fma_peak_min_madds_per_s");
    cr_assert(best > 0 && worst > 0 && worst <= best, "probes: best %g, worst %g", best, worst);
}

static void assert_phase(const cJSON *o, const char *phase, double peak)
{
    char k[64];
    snprintf(k, sizeof k, "%s_madds_per_s", phase);
    double madds = number(o, k);
    snprintf(k, sizeof k, "%s_peak_fraction", phase);
    double f = number(o, k);
    cr_assert(madds > 0 && f > 0, "%s: %g multiply-adds/s, fraction %g", phase, madds, f);
    cr_assert(fabs(f - madds / peak) <= 1e-3 * f + 1e-4, "%s: fraction %g is not %g / %g", phase, f, madds, peak);
}

/* `fewshot bench ARGS --json`, parsed. */
static cJSON *bench_json(const char *args)
{
    th_run_result r;
    th_run(&r, "bench %s --json", args);
    cr_assert(r.exited && r.code == 0, "%s", th_describe(&r));
    cJSON *o = cJSON_Parse(r.out);
    cr_assert_not_null(o, "not JSON: %s", r.out);
    th_run_free(&r);
    return o;
}

Test(bench, json_reports_each_phase_against_the_best_peak_probe)
{
    cJSON *o = bench_json("--seconds 0.05");
    const cJSON *simd = cJSON_GetObjectItem(o, "simd");
    cr_assert(cJSON_IsString(simd) && simd->valuestring[0], "%s", cJSON_PrintUnformatted(o));
    int width = (int)number(o, "simd_width");
    cr_assert(width == 4 || width == 8 || width == 16, "simd_width %d", width);
    assert_peaks(o, "fma_peak_madds_per_s");
    double peak = number(o, "fma_peak_madds_per_s");
    assert_phase(o, "train", peak);
    assert_phase(o, "eval", peak);
    assert_phase(o, "classify", peak);
    cJSON_Delete(o);
}

Test(bench, sizes_json_gives_each_row_and_the_probes)
{
    cJSON *o = bench_json("--sizes --seconds 0.02");
    assert_peaks(o, "fma_peak_best_madds_per_s");
    const cJSON *rows = cJSON_GetObjectItem(o, "sizes");
    cr_assert_eq(cJSON_GetArraySize(rows), 4, "%s", cJSON_PrintUnformatted(o));
    static const int want[4][3] = {{64, 2, 3}, {128, 2, 9}, {256, 4, 17}, {64, 12, 3}};
    for (int i = 0; i < 4; i++) {
        const cJSON *row = cJSON_GetArrayItem(rows, i);
        cr_assert(number(row, "d_model") == want[i][0] && number(row, "depth") == want[i][1] &&
                      number(row, "pairs") == want[i][2],
                  "row %d: %s", i, cJSON_PrintUnformatted(row));
        double f = number(row, "train_peak_fraction");
        cr_assert(number(row, "train_steps_per_s") > 0 && f > 0, "row %d: %s", i, cJSON_PrintUnformatted(row));
        /* every row against the best probe of the whole run, not of the run so far */
        double best = number(o, "fma_peak_best_madds_per_s"), madds = number(row, "train_madds_per_s");
        cr_assert(fabs(f - madds / best) <= 1e-3 * f + 1e-4, "row %d: fraction %g is not %g / %g", i, f, madds, best);
    }
    cJSON_Delete(o);
}

/* A phase's median window is at most its fastest, and its fraction of the peak scales
 * with it (the multiply-adds per step are fixed). */
static void assert_median(const cJSON *o, const char *rate_key, const char *phase)
{
    char k[96];
    snprintf(k, sizeof k, "%s_median", rate_key);
    double best = number(o, rate_key), median = number(o, k);
    snprintf(k, sizeof k, "%s_peak_fraction", phase);
    double f = number(o, k);
    snprintf(k, sizeof k, "%s_peak_fraction_median", phase);
    double fm = number(o, k);
    cr_assert(median > 0 && median <= best, "%s: median %g, fastest %g", rate_key, median, best);
    cr_assert(fabs(fm - f * median / best) <= 2e-3 * f + 1e-4, "%s: median fraction %g is not %g x %g / %g", phase, fm,
              f, median, best);
}

Test(bench, repeat_reports_the_fastest_window_with_the_median_beside_it)
{
    cJSON *o = bench_json("--seconds 0.02 --repeat 3");
    cr_assert_eq(number(o, "windows"), 3, "%s", cJSON_PrintUnformatted(o));
    assert_median(o, "train_steps_per_s", "train");
    assert_median(o, "eval_seqs_per_s", "eval");
    assert_median(o, "classify_queries_per_s", "classify");
    cJSON_Delete(o);
    o = bench_json("--sizes --seconds 0.02 --repeat 2");
    cr_assert_eq(number(o, "windows"), 2, "%s", cJSON_PrintUnformatted(o));
    const cJSON *rows = cJSON_GetObjectItem(o, "sizes");
    for (int i = 0; i < cJSON_GetArraySize(rows); i++)
        assert_median(cJSON_GetArrayItem(rows, i), "train_steps_per_s", "train");
    cJSON_Delete(o);
}

Test(bench, one_window_by_default_whose_median_is_itself)
{
    cJSON *o = bench_json("--sizes --seconds 0.02");
    cr_assert_eq(number(o, "windows"), 1, "%s", cJSON_PrintUnformatted(o));
    const cJSON *row = cJSON_GetArrayItem(cJSON_GetObjectItem(o, "sizes"), 1);
    cr_assert_eq(number(row, "train_steps_per_s_median"), number(row, "train_steps_per_s"), "%s",
                 cJSON_PrintUnformatted(row));
    cJSON_Delete(o);
}

Test(bench, repeat_outside_one_to_a_hundred_is_refused)
{
    const char *bad[] = {"0", "101", "two", "-1"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        th_run_result r;
        th_run(&r, "bench --repeat %s --seconds 0.01", bad[i]);
        cr_assert(r.exited && r.code == 2 && strstr(r.err, "--repeat"), "--repeat %s: %s", bad[i], th_describe(&r));
        th_run_free(&r);
    }
}
