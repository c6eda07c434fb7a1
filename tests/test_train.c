/* Training runs through the binary: resume determinism, Ctrl-C, metrics format, and a
 * short run of the default config that learns (docs/model.md, docs/formats.md). */
#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fewshot/config.h"
#include "fewshot/seqio.h"
#include "base/fileio.h"
#include "helpers.h"

static const char *bin(void) { return getenv("FEWSHOT_BIN") ? getenv("FEWSHOT_BIN") : "./fewshot"; }

static char dir[64];

static void make_dir(void)
{
    snprintf(dir, sizeof dir, "/tmp/fewshot_train_XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    char path[128];
    snprintf(path, sizeof path, "%s/tiny.json", dir);
    FILE *f = fopen(path, "w");
    fputs(th_tiny_run_config, f);
    fclose(f);
}

static void remove_dir(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}

static int run(const char *fmt, const char *a, const char *b)
{
    char args[512], cmd[1024];
    snprintf(args, sizeof args, fmt, a, b);
    snprintf(cmd, sizeof cmd, "%s %s --no-progress 2>>%s/stderr.txt", bin(), args, dir);
    int rc = system(cmd);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static char *slurp(const char *fmt, const char *a)
{
    char path[256];
    snprintf(path, sizeof path, fmt, a);
    fs_error err = {{0}};
    char *text = fs_read_file(path, NULL, &err);
    cr_assert_not_null(text, "%s", err.msg);
    return text;
}

/* Runs a and b (200 steps each) wrote the same metrics and, byte for byte, the same final
 * checkpoint (parameters and moments). */
static void assert_same_run(const char *a, const char *b, const char *what)
{
    char *m1 = slurp("%s/metrics.jsonl", a), *m2 = slurp("%s/metrics.jsonl", b);
    cr_assert_str_eq(m1, m2, "metrics of %s differ from the uninterrupted run", what);
    free(m1);
    free(m2);
    char cmp[512];
    snprintf(cmp, sizeof cmp, "cmp -s %s/checkpoints/step_00000200.safetensors %s/checkpoints/step_00000200.safetensors",
             a, b);
    cr_assert_eq(system(cmp), 0, "final checkpoints of %s differ", what);
}

Test(train, resume_continues_identically, .init = make_dir, .fini = remove_dir, .timeout = 120)
{
    char cfg[128], a[128], b[128];
    snprintf(cfg, sizeof cfg, "%s/tiny.json", dir);
    snprintf(a, sizeof a, "%s/straight", dir);
    snprintf(b, sizeof b, "%s/resumed", dir);
    /* with progress measures, log-spaced evals and model snapshots on both sides of the stop */
#define MEASURED " --set measures.enable=true --set measures.probe_size=64 --set train.eval_log_points=6" \
                 " --set 'train.ckpt_sched=[1000,2000]'"
    cr_assert_eq(run("train --config %s --out %s" MEASURED, cfg, a), 0);
    cr_assert_eq(run("train --config %s --out %s --stop-after 1000" MEASURED, cfg, b), 0,
                 "--stop-after is a planned stop: exit 0");
    cr_assert_eq(run("train --config %s --out %s" MEASURED, cfg, b), 1, "an existing run without --resume is an error");
    cr_assert_eq(run("train --config %s --out %s --resume" MEASURED, cfg, b), 0);
    char *m1 = slurp("%s/metrics.jsonl", a), *m2 = slurp("%s/metrics.jsonl", b);
    cr_assert_str_eq(m1, m2, "metrics of the resumed run differ from the uninterrupted run");
    cr_assert_not_null(strstr(m1, "\"measures\":{\"induction_strength\":[["), "eval lines carry the measures");
    free(m1);
    free(m2);
    for (int i = 0; i < 2; i++) { /* snapshots before (1008) and after (2000) the stop at 1008 */
        char cmp_snap[512];
        const char *name = i ? "ckpt_2000" : "ckpt_1008";
        snprintf(cmp_snap, sizeof cmp_snap, "cmp -s %s/%s.safetensors %s/%s.safetensors", a, name, b, name);
        cr_assert_eq(system(cmp_snap), 0, "%s differs (or is missing)", name);
    }
#undef MEASURED
    assert_same_run(a, b, "the resumed run");
}

/* Resuming with a larger train.train_iters extends a finished run: the result equals a run
 * started with the larger value (1600 is a multiple of log/eval/ckpt_every, so even the
 * metrics lines agree); a smaller value or another change is refused. */
Test(train, resume_extends_a_finished_run, .init = make_dir, .fini = remove_dir, .timeout = 120)
{
    char cfg[128], a[128], b[128];
    snprintf(cfg, sizeof cfg, "%s/tiny.json", dir);
    snprintf(a, sizeof a, "%s/straight", dir);
    snprintf(b, sizeof b, "%s/extended", dir);
    cr_assert_eq(run("train --config %s --out %s", cfg, a), 0);
    cr_assert_eq(run("train --config %s --out %s --set train.train_iters=1600", cfg, b), 0);
    cr_assert_eq(run("train --config %s --out %s --resume --set train.lr=0.002", cfg, b), 1,
                 "a resumed run with another lr is refused");
    cr_assert_eq(run("train --config %s --out %s --resume", cfg, b), 0, "3200 sequences extend the 1600-sequence run");
    assert_same_run(a, b, "the extended run");
    char *c1 = slurp("%s/config.json", a), *c2 = slurp("%s/config.json", b);
    cr_assert_str_eq(c1, c2, "config.json records the new train_iters");
    free(c1);
    free(c2);
    cr_assert_eq(run("train --config %s --out %s --resume --set train.train_iters=800", cfg, b), 1,
                 "shortening below the sequences already seen is refused");
    char *err = slurp("%s/stderr.txt", dir);
    cr_assert_not_null(strstr(err, "only train.train_iters may change"), "%s", err);
    cr_assert_not_null(strstr(err, "can be extended, not shortened"), "%s", err);
    free(err);
}

Test(train, metrics_and_run_directory_format, .init = make_dir, .fini = remove_dir, .timeout = 120)
{
    char cfg[128], out[128];
    snprintf(cfg, sizeof cfg, "%s/tiny.json", dir);
    snprintf(out, sizeof out, "%s/run", dir);
    cr_assert_eq(run("train --config %s --out %s", cfg, out), 0);
    char *text = slurp("%s/metrics.jsonl", out);
    int train_lines = 0, eval_lines = 0;
    long long last_train_iter = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        cJSON *j = cJSON_Parse(line);
        cr_assert_not_null(j, "not JSON: %s", line);
        const char *type = cJSON_GetObjectItem(j, "type")->valuestring;
        long long iter = (long long)cJSON_GetObjectItem(j, "iter")->valuedouble;
        cr_assert(cJSON_IsNumber(cJSON_GetObjectItem(j, "step")));
        if (!strcmp(type, "train")) {
            train_lines++;
            cr_assert_eq(iter - last_train_iter, 320, "train lines every log_every sequences");
            last_train_iter = iter;
            cr_assert(cJSON_IsNumber(cJSON_GetObjectItem(j, "loss")) && cJSON_IsNumber(cJSON_GetObjectItem(j, "grad_norm")));
        } else {
            cr_assert_str_eq(type, "eval");
            cr_assert_eq(iter, 800LL * eval_lines, "eval at 0 and every eval_every sequences");
            eval_lines++;
            const cJSON *evals = cJSON_GetObjectItem(j, "evals");
            cr_assert_eq(cJSON_GetArraySize(evals), 2);
            static const char *const names[] = {"loss", "acc", "in_context_acc", "out_context_acc", "prob",
                                                "in_context_prob", "out_context_prob", "use_context_prob"};
            for (const cJSON *e = evals->child; e; e = e->next)
                for (int k = 0; k < 8; k++)
                    cr_assert(cJSON_IsNumber(cJSON_GetObjectItem(e, names[k])), "%s lacks %s", e->string, names[k]);
        }
        cJSON_Delete(j);
    }
    free(text);
    cr_assert_eq(train_lines, 10);
    cr_assert_eq(eval_lines, 5);
    /* the resolved config is itself a valid config */
    char path[256];
    snprintf(path, sizeof path, "%s/config.json", out);
    fs_run_config c;
    fs_run_config_default(&c);
    fs_error err = {{0}};
    cr_assert_eq(fs_run_config_load(path, &c, &err), 0, "%s", err.msg);
    cr_assert_eq(c.model.d_model, 16);
    cr_assert_eq(c.model.input_dim, 64, "input_dim resolved from the data");
    cr_assert_eq(c.model.num_classes, 5, "num_classes resolved to fs_relabel");
    fs_run_config_free(&c);
    struct stat st;
    snprintf(path, sizeof path, "%s/checkpoints/step_00000100.safetensors", out);
    cr_assert_eq(stat(path, &st), 0, "checkpoint at ckpt_every");
}

Test(train, ctrl_c_writes_checkpoint_and_resumes, .init = make_dir, .fini = remove_dir, .timeout = 120)
{
    char cfg[128], out[128];
    snprintf(cfg, sizeof cfg, "%s/tiny.json", dir);
    snprintf(out, sizeof out, "%s/run", dir);
    pid_t pid = fork();
    if (pid == 0) {
        freopen("/dev/null", "w", stderr);
        execl(bin(), bin(), "train", "--config", cfg, "--out", out, "--set", "train.train_iters=100000000",
              "--no-progress", (char *)NULL);
        _exit(127);
    }
    char metrics[256];
    snprintf(metrics, sizeof metrics, "%s/metrics.jsonl", out);
    struct stat st;
    for (int i = 0; i < 600 && (stat(metrics, &st) != 0 || st.st_size < 2000); i++)
        usleep(50000);
    kill(pid, SIGINT);
    int status;
    waitpid(pid, &status, 0);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 130, "Ctrl-C exits cleanly with 130 (status %d)", status);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "ls %s/checkpoints/step_*.safetensors >/dev/null 2>&1", out);
    cr_assert_eq(system(cmd), 0, "a checkpoint was written on Ctrl-C");
}

/* The shipped default config, shortened, lifts query accuracy well above chance (0.2). */
Test(train, default_config_learns, .init = make_dir, .fini = remove_dir, .timeout = 600)
{
    char out[128];
    snprintf(out, sizeof out, "%s/default", dir);
    cr_assert_eq(run("train --config configs/default.json --out %s --set train.train_iters=48000 --set eval.eval_iters=300%s",
                     out, ""),
                 0);
    char *text = slurp("%s/metrics.jsonl", out);
    /* the final eval (48000 sequences) is the last line */
    size_t n = strlen(text);
    while (n > 0 && text[n - 1] == '\n')
        text[--n] = 0;
    char *line = strrchr(text, '\n') ? strrchr(text, '\n') + 1 : text;
    cJSON *j = cJSON_Parse(line);
    cr_assert_not_null(j, "last line: %s", line);
    cr_assert_eq(cJSON_GetObjectItem(j, "iter")->valuedouble, 48000);
    double acc = cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "evals"), "fsl_train"), "acc")->valuedouble;
    cr_assert_gt(acc, 0.6, "fsl_train accuracy %.3f after 48000 sequences", acc);
    cJSON_Delete(j);
    free(text);
}

/* Interventions held on during training are recorded in the run's config. */
Test(train, intervene_held_on_and_recorded, .init = make_dir, .fini = remove_dir, .timeout = 120)
{
    char cfg[128], out[128];
    snprintf(cfg, sizeof cfg, "%s/tiny.json", dir);
    snprintf(out, sizeof out, "%s/run", dir);
    cr_assert_eq(run("train --config %s --out %s --set train.train_iters=320 --intervene "
                     "'{\"ablate_heads\": [\"1:0\", \"1:1\"]}'",
                     cfg, out),
                 0);
    char *text = slurp("%s/config.json", out);
    cr_assert_not_null(strstr(text, "\"ablate_heads\""), "%s", text);
    free(text);
    cr_assert_eq(run("train --config %s --out %s/other --cache /nonexistent.json", cfg, out), 1,
                 "--cache without --mask is an error");
    cr_assert_eq(run("train --config %s --out %s/bad --intervene '{\"ablate_heads\": [\"5:0\"]}'", cfg, out), 1,
                 "a layer out of range is an error");
}

/* Write the tiny config with a clamps section naming clamp files (the query's token
 * embedding held at zero) into dir/clamped.json. */
static void write_clamped_config(void)
{
    char path[128];
    const char *names[2] = {"cache", "mask"};
    for (int k = 0; k < 2; k++) {
        snprintf(path, sizeof path, "%s/%s.json", dir, names[k]);
        FILE *f = fopen(path, "w");
        cr_assert_not_null(f);
        fputs("{\"tok_embedding\": [", f);
        for (int n = 0; n < 5; n++)
            for (int c = 0; c < 16; c++)
                fprintf(f, "%s%s%s%s", c ? "" : n ? ", [" : "[", k == 0 ? "0" : n == 4 ? "true" : "false",
                        c < 15 ? ", " : "]", "");
        fputs("]}\n", f);
        fclose(f);
    }
    char *text = strdup(th_tiny_run_config);
    char *end = strrchr(text, '}');
    *end = 0;
    snprintf(path, sizeof path, "%s/clamped.json", dir);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fprintf(f, "%s,\n \"clamps\": {\"cache\": \"%s/cache.json\", \"mask\": \"%s/mask.json\"}}\n", text, dir, dir);
    fclose(f);
    free(text);
}

/* The last eval line of a run's metrics.jsonl: its "evals" object. */
static cJSON *last_evals(const char *out)
{
    char *text = slurp("%s/metrics.jsonl", out);
    cJSON *evals = NULL;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        cJSON *j = cJSON_Parse(line);
        cr_assert_not_null(j, "%s", line);
        if (strcmp(cJSON_GetObjectItem(j, "type")->valuestring, "eval") == 0) {
            cJSON_Delete(evals);
            evals = cJSON_DetachItemFromObject(j, "evals");
        }
        cJSON_Delete(j);
    }
    free(text);
    cr_assert_not_null(evals);
    return evals;
}

/* `fewshot ARGS` (a command without --no-progress); its exit status. */
static int run_cmd(const char *args)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s %s 2>>%s/stderr.txt", bin(), args, dir);
    int rc = system(cmd);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

/* `fewshot eval` from the run's recorded config and final checkpoint. */
static cJSON *eval_recorded(const char *out)
{
    char args[600];
    snprintf(args, sizeof args, "eval --config %s/config.json --model %s/checkpoints/step_00000020.safetensors -o %s/eval.json",
             out, out, out);
    cr_assert_eq(run_cmd(args), 0, "%s", args);
    char *text = slurp("%s/eval.json", out);
    cJSON *j = cJSON_Parse(text);
    cr_assert_not_null(j, "%s", text);
    free(text);
    return j;
}

/* Clamp files of the config's clamps section plus named interventions from the command
 * line: the recorded config keeps both, so evaluating from it repeats the run's last
 * eval line exactly (and differs from the run without the clamp files). */
Test(train, recorded_config_keeps_every_clamp_source, .init = make_dir, .fini = remove_dir, .timeout = 180)
{
    write_clamped_config();
    char cfg[128], out[128];
    snprintf(cfg, sizeof cfg, "%s/clamped.json", dir);
    const char *extra[2] = {"--intervene '{\"ablate_heads\": [\"1:0\"]}'", "--set 'clamps.ablate_heads=[\"1:0\"]'"};
    cJSON *first = NULL;
    for (int k = 0; k < 2; k++) {
        snprintf(out, sizeof out, "%s/run%d", dir, k);
        char args[512];
        snprintf(args, sizeof args, "train --config %s --out %s --set train.train_iters=320 %s", cfg, out, extra[k]);
        cr_assert_eq(run("%s%s", args, ""), 0, "%s", args);
        char *text = slurp("%s/config.json", out);
        cr_assert_not_null(strstr(text, "\"ablate_heads\""), "%s", text);
        cr_assert_not_null(strstr(text, "/cache.json\""), "%s", text);
        cr_assert_not_null(strstr(text, "/mask.json\""), "%s", text);
        free(text);
        cJSON *logged = last_evals(out), *again = eval_recorded(out);
        cr_assert(cJSON_Compare(logged, again, true), "run %d: the last eval line and eval from the recorded config differ",
                  k);
        if (k == 0)
            first = logged;
        else
            cr_assert(cJSON_Compare(first, logged, true), "--intervene and --set clamps.* hold on the same");
        if (k == 1)
            cJSON_Delete(logged);
        cJSON_Delete(again);
    }
    /* without the clamp files the numbers differ: the test sees a dropped source */
    snprintf(out, sizeof out, "%s/run0", dir);
    char *recorded = slurp("%s/config.json", out);
    cJSON *c = cJSON_Parse(recorded);
    free(recorded);
    cJSON_DeleteItemFromObject(c, "clamps");
    char path[160];
    snprintf(path, sizeof path, "%s/no_files.json", dir);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    char *no_clamps = cJSON_Print(c);
    fputs(no_clamps, f);
    fclose(f);
    free(no_clamps);
    cJSON_Delete(c);
    char args[800];
    snprintf(args, sizeof args,
             "eval --config %s --model %s/checkpoints/step_00000020.safetensors --intervene "
             "'{\"ablate_heads\": [\"1:0\"]}' -o %s/eval_no_files.json",
             path, out, out);
    cr_assert_eq(run_cmd(args), 0, "%s", args);
    char *text = slurp("%s/eval_no_files.json", out);
    cJSON *no_files = cJSON_Parse(text);
    free(text);
    cr_assert(!cJSON_Compare(first, no_files, true), "the clamp files change nothing: the test cannot fail");
    cJSON_Delete(no_files);
    cJSON_Delete(first);
}
