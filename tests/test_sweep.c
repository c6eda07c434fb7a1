/* Sweeps through the binary (issue 16): sweep-file expansion and validation, the local
 * pool (run directories, manifest, skip/resume, failures, SIGTERM), bit-identical runs
 * alone / in the pool / as a task, the summary table and plain progress lines. */
#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "helpers.h"

static char dir[128];

static void setup(void) { th_tmpdir(dir, sizeof dir, "sweep"); }
static void teardown(void) { th_rmtree(dir); }

TestSuite(sweep, .init = setup, .fini = teardown, .timeout = 600);

/* A sweep file in the temp dir: the smoke sweep's base with `rest` (the file's other keys). */
static const char *sweep_file(const char *name, const char *rest)
{
    static char path[256]; /* th_path's buffers are reused */
    snprintf(path, sizeof path, "%s", th_path(dir, name));
    th_write_textf(path,
                   "{\"base\": {\"model\": {\"d_model\": 16, \"num_heads\": 2, \"depth\": 2, \"mlp_ratio\": 2},\n"
                   "  \"data\": {\"file\": \"datasets/synth_small.h5\", \"class_split\": [100, 50, 50],\n"
                   "           \"exemplar_split\": [3, 2, 0], \"fs_relabel\": 5, \"fs_relabel_split\": [8, 2, 0]},\n"
                   "  \"train\": {\"train_iters\": 1600, \"train_bs\": 16, \"lr\": 0.001, \"eval_every\": 800,\n"
                   "            \"log_every\": 320, \"ckpt_every\": 800},\n"
                   "  \"eval\": {\"eval_iters\": 50, \"evaluators\": [{\"name\": \"fsl_train\"}]}}%s%s}\n",
                   rest[0] ? ",\n" : "", rest);
    return path;
}

static cJSON *manifest(const char *sweep_dir)
{
    char *text = th_read_file(th_path(sweep_dir, "sweep.json"), NULL);
    cr_assert_not_null(text, "no sweep.json in %s", sweep_dir);
    cJSON *m = cJSON_Parse(text);
    free(text);
    cr_assert_not_null(m);
    return m;
}

static const char *run_field(const cJSON *m, int i, const char *key)
{
    const cJSON *v = cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(m, "runs"), i), key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static char *metrics(const char *sweep_dir, const char *name)
{
    char rel[256];
    snprintf(rel, sizeof rel, "%s/metrics.jsonl", name);
    char *text = th_read_file(th_path(sweep_dir, rel), NULL);
    cr_assert_not_null(text, "no metrics in %s/%s", sweep_dir, rel);
    return text;
}

Test(sweep, plan_expands_variants_and_axes)
{
    th_run_result r;
    th_run(&r, "sweep plan configs/sweeps/smoke.json");
    cr_assert(r.exited && r.code == 0, "%s", th_describe(&r));
    cr_assert(strstr(r.out, "main_seed=5") && strstr(r.out, "main_seed=6") && strstr(r.out, "only_l1h1_seed=6"),
              "%s", r.out);
    cr_assert(strstr(r.out, "4 runs"), "%s", r.out);
    th_run_free(&r);
    th_run(&r, "sweep plan configs/sweeps/ih_paper.json");
    cr_assert(r.exited && r.code == 0, "%s", th_describe(&r));
    /* only layer-2 head 3: every other head of layer 1 ablated */
    cr_assert(strstr(r.out, "only_l1h3_seed=5") &&
                  strstr(r.out, "{\"clamps.ablate_heads\":[\"1:0\",\"1:1\",\"1:2\",\"1:4\",\"1:5\",\"1:6\",\"1:7\"],"
                                "\"seed\":5}"),
              "%s", r.out);
    cr_assert(strstr(r.out, "32 runs"), "%s", r.out);
    cr_assert(strstr(r.out, "clamp_perfect_copy_seed=5") && strstr(r.out, "l1copy_c50_rl15_seed=5") && !strstr(r.out, "skipped"),
              "%s", r.out);
    th_run_free(&r);
}

/* Each bad sweep file: exit 1 before anything runs, the message names what is wrong. */
Test(sweep, plan_rejects_bad_files)
{
    static const struct {
        const char *rest, *expect;
    } cases[] = {
        {"\"axis\": {}", "unknown key \"axis\""},
        {"\"axes\": {\"train.lrr\": [1e-3]}", "lrr"},
        {"\"axes\": {\"lr\": [1e-3]}", "expected \"section.key\""},
        {"\"axes\": {\"train.lr\": []}", "non-empty list"},
        {"\"variants\": [{\"name\": \"a{x}\"}]", "unknown variable {x}"},
        {"\"variants\": [{\"name\": \"a\", \"sett\": {}}]", "unknown key \"sett\""},
        {"\"variants\": [{\"name\": \"a\", \"set\": {\"clamps.ablate_heads\": [\"1:9\"]}}]", "1:9"},
        {"\"variants\": [{\"name\": \"a\", \"set\": {\"clamps.ablate_heads\": [\"1:{0..1}\", \"!1:5\"]}}]",
         "removes nothing"},
        {"\"variants\": [{\"name\": \"a\"}, {\"name\": \"a\"}]", "both named \"a\""},
        {"\"variants\": [{\"name\": \"a\", \"set\": {\"train.train_seed\": 1}}]", "must differ"},
        {"\"axes\": {\"seed\": [1]}, \"variants\": [{\"name\": \"a\", \"set\": {\"seed\": 2}}]", "also an axis"},
        {"\"variants\": [{\"name\": \"a\", \"set\": {\"clamps.ablate_heads\": [\"1:{0..x}\"]}}]", "unknown variable"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const char *f = sweep_file("bad.json", cases[i].rest);
        th_run_result r;
        th_run(&r, "sweep plan %s", f);
        cr_assert(r.exited && r.code == 1, "case %zu: %s", i, th_describe(&r));
        cr_assert(strstr(r.err, cases[i].expect) && strstr(r.err, "bad.json"), "case %zu: %s", i, r.err);
        th_run_free(&r);
    }
}

/* The same grid point gives byte-identical metrics alone, in the pool and as a task; a
 * second `sweep run` skips finished runs. */
Test(sweep, pool_task_and_alone_agree)
{
    char pool[256], tasks[256], alone[256];
    snprintf(pool, sizeof pool, "%s/pool", dir);
    snprintf(tasks, sizeof tasks, "%s/tasks", dir);
    snprintf(alone, sizeof alone, "%s/alone", dir);
    th_run_result r;
    th_run_ok("sweep run configs/sweeps/smoke.json --out %s -j 2 --threads-per-run 1", pool);
    cJSON *m = manifest(pool);
    cr_assert_eq(cJSON_GetArraySize(cJSON_GetObjectItem(m, "runs")), 4);
    for (int i = 0; i < 4; i++) {
        cr_assert_str_eq(run_field(m, i, "status"), "done");
        cr_assert_str_eq(run_field(m, i, "dir"), run_field(m, i, "name"));
        const cJSON *run = cJSON_GetArrayItem(cJSON_GetObjectItem(m, "runs"), i);
        cr_assert(cJSON_IsNumber(cJSON_GetObjectItem(run, "wall_s")));
        cr_assert(cJSON_IsNull(cJSON_GetObjectItem(run, "error")));
        cr_assert_eq(cJSON_GetObjectItem(run, "index")->valueint, i);
    }
    cr_assert_str_eq(run_field(m, 2, "variant"), "only_l1h1");
    cJSON_Delete(m);
    /* the run directory is what fewshot train makes */
    char *cfg = th_read_file(th_path(pool, "only_l1h1_seed=6/config.json"), NULL);
    cr_assert(cfg && strstr(cfg, "\"ablate_heads\"") && strstr(cfg, "\"init_seed\":\t6"), "%s", cfg);
    free(cfg);

    /* as SLURM tasks: prepare with `sweep slurm` (no submit), run task 3 by hand */
    th_run_ok("sweep slurm configs/sweeps/smoke.json --out %s --cpus-per-task 1 --max-parallel 2", tasks);
    char *sb = th_read_file(th_path(tasks, "sweep.sbatch"), NULL);
    cr_assert(sb && strstr(sb, "#SBATCH --array=0-3%2") && strstr(sb, "#SBATCH --cpus-per-task=1") &&
                  strstr(sb, "sweep task") && strstr(sb, "\"$SLURM_ARRAY_TASK_ID\" --threads-per-run 1"),
              "%s", sb);
    free(sb);
    th_run_ok("sweep task %s 3 --threads-per-run 1", tasks);
    m = manifest(tasks);
    cr_assert_str_eq(run_field(m, 3, "status"), "done");
    cr_assert_str_eq(run_field(m, 0, "status"), "pending");
    cJSON_Delete(m);

    /* alone: fewshot train on the point's config */
    th_run_ok("train --config %s/configs/only_l1h1_seed=6.json --out %s --threads 1 --no-progress", pool, alone);
    char *a = metrics(pool, "only_l1h1_seed=6"), *b = metrics(tasks, "only_l1h1_seed=6");
    char *c = th_read_file(th_path(alone, "metrics.jsonl"), NULL);
    cr_assert(c);
    cr_assert_str_eq(a, b, "pool and task metrics differ");
    cr_assert_str_eq(a, c, "pool and alone metrics differ");
    free(a), free(b), free(c);

    /* a finished sweep is skipped: nothing trained, metrics untouched */
    struct stat before, after;
    cr_assert_eq(stat(th_path(pool, "main_seed=5/metrics.jsonl"), &before), 0);
    th_run(&r, "sweep run configs/sweeps/smoke.json --out %s -j 2 --threads-per-run 1", pool);
    cr_assert(r.exited && r.code == 0, "%s", th_describe(&r));
    cr_assert(strstr(r.err, "4/4 runs done") && strstr(r.err, " 0 sequences trained"), "%s", r.err);
    th_run_free(&r);
    cr_assert_eq(stat(th_path(pool, "main_seed=5/metrics.jsonl"), &after), 0);
    cr_assert_eq(before.st_mtim.tv_sec, after.st_mtim.tv_sec);
    cr_assert_eq(before.st_mtim.tv_nsec, after.st_mtim.tv_nsec);

    /* another sweep file in the same directory is refused */
    const char *other = sweep_file("other.json", "\"axes\": {\"seed\": [1, 2, 3, 4]}");
    th_run(&r, "sweep run %s --out %s", other, pool);
    cr_assert(r.exited && r.code == 1 && strstr(r.err, "use another --out"), "%s", th_describe(&r));
    th_run_free(&r);
}

/* An interrupted run (checkpoint, no final step) resumes to the metrics of an uninterrupted one. */
Test(sweep, interrupted_run_resumes)
{
    const char *f = sweep_file("s.json", "\"axes\": {\"seed\": [5, 6]}");
    char sw[256], alone[256];
    snprintf(sw, sizeof sw, "%s/sw", dir);
    snprintf(alone, sizeof alone, "%s/alone", dir);
    th_run_ok("sweep slurm %s --out %s", f, sw); /* prepares the directory */
    th_run_ok("train --config %s/configs/seed=5.json --out %s/seed=5 --threads 1 --stop-after 800 --no-progress", sw, sw);
    th_run_ok("sweep run %s --out %s -j 2 --threads-per-run 1", f, sw);
    char *log = th_read_file(th_path(sw, "logs/seed=5.log"), NULL);
    cr_assert(log && strstr(log, "resumed at step"), "%s", log);
    free(log);
    th_run_ok("train --config %s/configs/seed=5.json --out %s --threads 1 --no-progress", sw, alone);
    char *a = metrics(sw, "seed=5"), *b = th_read_file(th_path(alone, "metrics.jsonl"), NULL);
    cr_assert(b);
    cr_assert_str_eq(a, b);
    free(a), free(b);
}

/* A run that fails is recorded with its error; the others finish; exit status 1. */
Test(sweep, failed_run_is_recorded)
{
    const char *f = sweep_file("s.json", "\"variants\": [{\"name\": \"ok\"},\n"
                                         " {\"name\": \"broken\", \"set\": {\"data.file\": \"datasets/missing.h5\"}}]");
    char sw[256];
    snprintf(sw, sizeof sw, "%s/sw", dir);
    th_run_result r;
    th_run(&r, "sweep run %s --out %s -j 2", f, sw);
    cr_assert(r.exited && r.code == 1, "%s", th_describe(&r));
    cr_assert(strstr(r.err, "run broken failed") && strstr(r.err, "missing.h5"), "%s", r.err);
    th_run_free(&r);
    cJSON *m = manifest(sw);
    cr_assert_str_eq(run_field(m, 0, "status"), "done");
    cr_assert_str_eq(run_field(m, 1, "status"), "failed");
    cr_assert(strstr(run_field(m, 1, "error"), "missing.h5"), "%s", run_field(m, 1, "error"));
    cJSON_Delete(m);
}

/* Start `sweep run FILE --out DIR -j 2` in the background, wait until `ready` is in both
 * runs' files (`rel` is a format taking the seed, 5 and 6), send SIGTERM, return the status. */
static int run_then_term(const char *f, const char *sw, const char *rel, const char *ready)
{
    pid_t pid = fork();
    if (pid == 0) {
        int nul = open("/dev/null", O_WRONLY);
        dup2(nul, 2);
        execl(th_bin(), th_bin(), "sweep", "run", f, "--out", sw, "-j", "2", (char *)NULL);
        _exit(127);
    }
    bool started = false;
    for (int i = 0; i < 600 && !started; i++) {
        struct timespec ts = {0, 100000000};
        nanosleep(&ts, NULL);
        char pa[300], pb[300];
        snprintf(pa, sizeof pa, rel, 5);
        snprintf(pb, sizeof pb, rel, 6);
        char *a = th_read_file(th_path(sw, pa), NULL), *b = th_read_file(th_path(sw, pb), NULL);
        started = a && b && strstr(a, ready) && strstr(b, ready);
        free(a), free(b);
    }
    kill(pid, SIGTERM);
    int status;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(started, "no \"%s\" in both runs' %s within 60 s", ready, rel);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* SIGTERM stops the pool: children checkpoint, runs go back to pending, exit 143; the same
 * command resumes them from their checkpoints. (Runs far too long to finish meanwhile.) */
Test(sweep, sigterm_stops_and_resumes)
{
    const char *f = sweep_file("s.json", "\"set\": {\"train.train_iters\": 100000000, \"train.ckpt_every\": 0,"
                                         " \"train.eval_every\": 0}, \"axes\": {\"seed\": [5, 6]}");
    char sw[256];
    snprintf(sw, sizeof sw, "%s/sw", dir);
    cr_assert_eq(run_then_term(f, sw, "seed=%d/metrics.jsonl", "\"train\""), 128 + SIGTERM);
    for (int round = 0; round < 2; round++) {
        cJSON *m = manifest(sw);
        for (int i = 0; i < 2; i++)
            cr_assert_str_eq(run_field(m, i, "status"), "pending", "round %d run %d", round, i);
        cJSON_Delete(m);
        char *log = th_read_file(th_path(sw, "logs/seed=5.log"), NULL);
        cr_assert(log && strstr(log, "stopped by SIGTERM"), "%s", log);
        free(log);
        if (round == 0) /* again: both resume from their checkpoints */
            cr_assert_eq(run_then_term(f, sw, "logs/seed=%d.log", "resumed at step"), 128 + SIGTERM);
    }
    char *log = th_read_file(th_path(sw, "logs/seed=6.log"), NULL);
    cr_assert(log && strstr(log, "resumed at step"), "%s", log);
    free(log);
}

/* summarize: final metrics and the phase-change time on a hand-made sweep directory. */
Test(sweep, summarize_phase_change_and_seeds)
{
    th_write_textf(th_path(dir, "sweep.json"),
                   "{\"sweep_file\": \"x.json\", \"axes\": {\"seed\": [1, 2]}, \"variants\": [], \"runs\": [\n"
                   " {\"index\": 0, \"name\": \"seed=1\", \"dir\": \"seed=1\", \"overrides\": {\"seed\": 1},"
                   "  \"variant\": null, \"status\": \"done\", \"error\": null, \"wall_s\": 1},\n"
                   " {\"index\": 1, \"name\": \"seed=2\", \"dir\": \"seed=2\", \"overrides\": {\"seed\": 2},"
                   "  \"variant\": null, \"status\": \"done\", \"error\": null, \"wall_s\": 1}]}\n");
    mkdir(th_path(dir, "seed=1"), 0755);
    mkdir(th_path(dir, "seed=2"), 0755);
    /* run 1: final 0.9, threshold 0.7, first reached at 300; run 2: final 0.7 -> 0.6 at 200 */
    const double acc1[] = {0.2, 0.5, 0.69, 0.8, 0.75, 0.9}, acc2[] = {0.2, 0.55, 0.6, 0.4, 0.7, 0.7};
    for (int run = 0; run < 2; run++) {
        FILE *f = fopen(th_path(dir, run ? "seed=2/metrics.jsonl" : "seed=1/metrics.jsonl"), "w");
        for (int i = 0; i < 6; i++) {
            fprintf(f, "{\"type\":\"train\",\"iter\":%d,\"step\":%d,\"loss\":1,\"grad_norm\":1}\n", i * 100, i);
            fprintf(f, "{\"type\":\"eval\",\"iter\":%d,\"step\":%d,\"evals\":{\"fsl_train\":{\"acc\":%g},"
                       "\"other\":{\"acc\":0.25}}}\n",
                    i * 100, i, run ? acc2[i] : acc1[i]);
        }
        fclose(f);
    }
    th_run_result r;
    th_run(&r, "sweep summarize %s --csv", dir);
    cr_assert(r.exited && r.code == 0, "%s", th_describe(&r));
    cr_assert(strstr(r.out, "kind,name,status,seed,fsl_train_acc,other_acc,phase_change,sequences\n"), "%s", r.out);
    cr_assert(strstr(r.out, "run,seed=1,done,1,0.900,0.250,300,500\n"), "%s", r.out);
    cr_assert(strstr(r.out, "run,seed=2,done,2,0.700,0.250,200,500\n"), "%s", r.out);
    cr_assert(strstr(r.out, "mean,run,,,0.8000,0.2500,250,2\n"), "%s", r.out);
    cr_assert(strstr(r.out, "sd,run,,,0.1414,0.0000,71,2\n"), "%s", r.out);
    th_run_free(&r);
    th_run(&r, "sweep summarize %s", dir);
    cr_assert(r.exited && r.code == 0, "%s", th_describe(&r));
    cr_assert(strstr(r.out, "| seed=1 | done | 1 | 0.900 | 0.250 | 300 | 500 |"), "%s", r.out);
    cr_assert(strstr(r.out, "0.800 +- 0.141"), "%s", r.out);
    th_run_free(&r);
}

/* With stderr not a terminal, train prints plain progress lines (at least the last one). */
Test(sweep, train_plain_progress_lines)
{
    const char *f = sweep_file("s.json", "");
    th_run_result r;
    th_run_ok("sweep slurm %s --out %s/sw", f, dir);
    th_run(&r, "train --config %s/sw/configs/run.json --out %s/alone --log-every 1", dir, dir);
    cr_assert(r.exited && r.code == 0, "%s", th_describe(&r));
    cr_assert(strstr(r.err, "] step 100/100 (100%)") && strstr(r.err, "seq/s") && !strchr(r.err, '\r'), "%s", r.err);
    th_run_free(&r);
    th_run(&r, "train --config %s/sw/configs/run.json --out %s/quiet --log-every 0", dir, dir);
    cr_assert(r.exited && r.code == 0 && !strstr(r.err, "step "), "%s", th_describe(&r));
    th_run_free(&r);
}
