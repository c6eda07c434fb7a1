/* Hardening (issue 13): every example of the issue as a regression test, at the CLI where
 * the user sees it -- output targets, run-directory locks, stale temp files, SIGTERM,
 * size overflows, damaged HDF5, capped reads and allocations, memory before validation,
 * divergence, non-finite outputs, cross-field config checks, checkpoint metadata. */
#include <criterion/criterion.h>

#include <cjson/cJSON.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/fileio.h"
#include "base/json.h"
#include "fewshot/model.h"
#include "fewshot/safetensors.h"
#include "helpers.h"

static char dir[128];

static void setup(void) { th_tmpdir(dir, sizeof dir, "harden"); }
static void teardown(void) { th_rmtree(dir); }

static const char *tiny(void)
{
    const char *p = th_path(dir, "tiny.json");
    th_write_text(p, th_tiny_run_config);
    return p;
}

static void expect_error(const th_run_result *r, const char *n1, const char *n2)
{
    cr_expect(r->exited && r->code == 1, "expected exit 1: %s", th_describe(r));
    cr_expect(!th_sanitizer_report(r), "%s", r->err);
    cr_expect(strstr(r->err, n1) != NULL, "stderr should mention '%s': %s", n1, r->err);
    if (n2)
        cr_expect(strstr(r->err, n2) != NULL, "stderr should mention '%s': %s", n2, r->err);
}

static bool exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

/* ---------------------------------------------------------------- 1. output targets */

Test(harden, output_symlink_is_followed_and_kept, .init = setup, .fini = teardown)
{
    const char *real = th_path(dir, "real.safetensors"), *link = th_path(dir, "link.safetensors");
    th_write_text(real, "old");
    cr_assert_eq(symlink("real.safetensors", link), 0);
    th_run_ok("init -o %s", link);
    struct stat st;
    cr_assert_eq(lstat(link, &st), 0);
    cr_expect(S_ISLNK(st.st_mode), "the symlink itself must survive");
    fs_st_file f;
    fs_error err;
    cr_expect_eq(fs_st_read(real, &f, &err), 0, "the link's target holds the model: %s", err.msg);
    fs_st_free(&f);
}

/* The streamed writers (cache dumps in every format, eval --per-sequence, classify -o) go
 * through the same output file as the others: a symlink is followed and kept. */
Test(harden, streamed_outputs_follow_and_keep_symlinks, .init = setup, .fini = teardown)
{
    const char *formats[] = {"json", "h5", "safetensors"};
    for (int i = 0; i < 3; i++) {
        char real[64], link[256];
        snprintf(real, sizeof real, "real.%s", formats[i]);
        snprintf(link, sizeof link, "%s/link.%s", dir, formats[i]);
        th_write_text(th_path(dir, real), "old");
        cr_assert_eq(symlink(real, link), 0);
        th_run_ok("cache --config " TH_GOLDEN "/doc/config.json --model " TH_GOLDEN "/doc/params.safetensors"
               " --input " TH_GOLDEN "/doc/forward_0.json --names out -o %s", link);
        struct stat st;
        cr_assert_eq(lstat(link, &st), 0);
        cr_expect(S_ISLNK(st.st_mode), "%s: the symlink itself must survive", formats[i]);
        cr_assert_eq(stat(th_path(dir, real), &st), 0);
        cr_expect_gt(st.st_size, 3, "%s: the link's target holds the dump", formats[i]);
    }
}

Test(harden, output_dangling_symlink_directory_are_refused, .init = setup, .fini = teardown)
{
    const char *link = th_path(dir, "dangling");
    cr_assert_eq(symlink("missing/nowhere.safetensors", link), 0);
    th_run_result r;
    th_run(&r, "init -o %s", link);
    expect_error(&r, link, "symbolic link");
    th_run_free(&r);
    th_run(&r, "init -o %s", dir);
    expect_error(&r, "is a directory", NULL);
    th_run_free(&r);
}

/* `-o /dev/null` writes through: the device node is never replaced (it was, as root). */
Test(harden, output_character_device_is_written_through)
{
    struct stat before, after;
    cr_assert_eq(stat("/dev/null", &before), 0);
    th_run_ok("init -o /dev/null");
    cr_assert_eq(stat("/dev/null", &after), 0);
    cr_expect(S_ISCHR(after.st_mode) && after.st_ino == before.st_ino && after.st_rdev == before.st_rdev,
              "/dev/null must stay the same character device");
}

Test(harden, output_fifo_is_written_through, .init = setup, .fini = teardown)
{
    const char *fifo = th_path(dir, "pipe"), *copy = th_path(dir, "copy.safetensors");
    cr_assert_eq(mkfifo(fifo, 0600), 0);
    pid_t reader = fork();
    if (reader == 0) { /* cat pipe > copy */
        FILE *in = fopen(fifo, "rb"), *out = fopen(copy, "wb");
        char buf[4096];
        size_t n;
        while (in && out && (n = fread(buf, 1, sizeof buf, in)) > 0)
            fwrite(buf, 1, n, out);
        _exit(in && out && fclose(out) == 0 ? 0 : 1);
    }
    th_run_ok("init -o %s", fifo);
    int status;
    waitpid(reader, &status, 0);
    struct stat st;
    cr_assert_eq(lstat(fifo, &st), 0);
    cr_expect(S_ISFIFO(st.st_mode), "the FIFO must stay a FIFO");
    fs_st_file f;
    fs_error err;
    cr_expect_eq(fs_st_read(copy, &f, &err), 0, "the reader got the whole model: %s", err.msg);
    fs_st_free(&f);
}

/* ---------------------------------------------------------------- 2. run-directory lock */

Test(harden, run_directory_is_locked, .init = setup, .fini = teardown, .timeout = 60)
{
    const char *out = th_path(dir, "run");
    cr_assert_eq(mkdir(out, 0755), 0);
    int fd;
    fs_error err;
    cr_assert_eq(fs_dir_lock(out, &fd, &err), 0, "%s", err.msg); /* another run holds it */
    th_run_result r;
    th_run(&r, "train --config %s --out %s --no-progress", tiny(), out);
    char pid[32];
    snprintf(pid, sizeof pid, "pid %ld", (long)getpid());
    expect_error(&r, "in use by another fewshot run", pid);
    th_run_free(&r);
    cr_expect(!exists(th_path(out, "config.json")), "the locked run directory is left alone");
    fs_dir_unlock(fd);
    th_run(&r, "train --config %s --out %s --no-progress --stop-after 320", tiny(), out);
    cr_expect(r.exited && r.code == 0, "free again once the holder is gone: %s", th_describe(&r));
    th_run_free(&r);
}

/* ---------------------------------------------------------------- 4. stale temp files */

Test(harden, stale_temp_files_are_removed_on_resume, .init = setup, .fini = teardown, .timeout = 60)
{
    const char *out = th_path(dir, "run");
    th_run_ok("train --config %s --out %s --no-progress --stop-after 320", tiny(), out);
    const char *stale1 = th_path(out, "metrics.jsonl.tmp.4242");
    char stale2[1024], keep[1024];
    snprintf(stale2, sizeof stale2, "%s/checkpoints/step_00000030.safetensors.tmp.99", out);
    snprintf(keep, sizeof keep, "%s/notes.tmp.txt", out);
    th_write_text(stale1, "partial");
    th_write_text(stale2, "partial");
    th_write_text(keep, "not ours");
    th_run_ok("train --config %s --out %s --no-progress --resume --stop-after 640", tiny(), out);
    cr_expect(!exists(stale1) && !exists(stale2), "interrupted writes' temp files are removed");
    cr_expect(exists(keep), "other files are kept");
}

/* ---------------------------------------------------------------- 5. SIGTERM */

Test(harden, sigterm_checkpoints_and_resume_matches, .init = setup, .fini = teardown, .timeout = 240)
{
    const char *cfg = tiny(), *a = th_path(dir, "straight"), *b = th_path(dir, "killed");
    const char *longer = "train.train_iters=16000";
    th_run_ok("train --config %s --out %s --set %s --set train.eval_every=4000 --no-progress", cfg, a, longer);
    pid_t pid = fork();
    if (pid == 0) {
        freopen("/dev/null", "w", stderr);
        execl(th_bin(), th_bin(), "train", "--config", cfg, "--out", b, "--set", longer, "--set",
              "train.eval_every=4000", "--no-progress", (char *)NULL);
        _exit(127);
    }
    char metrics[1024];
    snprintf(metrics, sizeof metrics, "%s/metrics.jsonl", b);
    for (int i = 0; i < 6000; i++) { /* until the first train line */
        char *text = th_read_file(metrics, NULL);
        bool started = text && strstr(text, "\"train\"");
        free(text);
        if (started)
            break;
        usleep(10000);
    }
    kill(pid, SIGTERM);
    int status;
    waitpid(pid, &status, 0);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 143, "SIGTERM exits with 128 + 15 (status %d)", status);
    th_run_ok("train --config %s --out %s --set %s --set train.eval_every=4000 --no-progress --resume", cfg, b,
           longer);
    char *m1 = th_read_file(th_path(a, "metrics.jsonl"), NULL), *m2 = th_read_file(metrics, NULL);
    cr_assert(m1 && m2);
    cr_expect_str_eq(m1, m2, "the resumed run's metrics equal the uninterrupted run's");
    free(m1);
    free(m2);
}

/* ---------------------------------------------------------------- 6. size overflow */

Test(harden, dataset_synth_size_overflow_is_an_error, .init = setup, .fini = teardown)
{
    const char *out = th_path(dir, "x.h5");
    th_run_result r;
    th_run(&r, "dataset synth -o %s --classes 16777216 --exemplars 1048576 --dim 1048576", out);
    expect_error(&r, "16777216 x 1048576 x 1048576", "overflow");
    th_run_free(&r);
    cr_expect(!exists(out), "no output file");
}

/* ---------------------------------------------------------------- 7. damaged HDF5 */

Test(harden, damaged_hdf5_is_an_error_not_a_crash, .init = setup, .fini = teardown, .timeout = 60)
{
    const char *bad = th_path(dir, "bad.h5");
    size_t n;
    char *data = th_read_file("datasets/synth_small.h5", &n);
    cr_assert(data && n > 1864);
    memset(data + 1856, 0xff, 8); /* the example: SIGSEGV in H5Lexists */
    th_write_file(bad, data, n);
    free(data);
    th_run_result r;
    th_run(&r, "train --config %s --out %s --set data.file=%s --no-progress", tiny(), th_path(dir, "run"), bad);
    cr_expect(r.exited && r.code == 1, "%s", th_describe(&r));
    cr_expect(strstr(r.err, bad) != NULL, "the error names the file: %s", r.err);
    th_run_free(&r);
}

/* ---------------------------------------------------------------- 8. unbounded reads, allocation */

Test(harden, input_reads_are_capped, .init = setup, .fini = teardown)
{
    cr_assert_eq(setenv("FEWSHOT_MAX_INPUT_MB", "1", 1), 0);
    const char *model = th_path(dir, "m.safetensors");
    th_run_result r;
    th_run_ok("init -o %s", model);
    th_run(&r, "cache --model %s --input /dev/zero", model);
    expect_error(&r, "/dev/zero", "larger than 1 MB");
    th_run_free(&r);
}

Test(harden, allocation_failure_is_an_error_not_abort)
{
    cr_assert_eq(setenv("FEWSHOT_MAX_MEMORY_MB", "1", 1), 0);
    cr_expect_null(fs_alloc((size_t)2 << 20), "over the limit: NULL, not abort()");
    void *p = fs_alloc(1000);
    cr_expect_not_null(p);
    free(p);
    fs_error err;
    cr_expect_eq(fs_fail_alloc(&err, "thing", (size_t)2 << 20), -1);
    cr_expect(strstr(err.msg, "thing: needs 2.0 MB") != NULL, "%s", err.msg);
}

/* ---------------------------------------------------------------- 9. memory before validation */

Test(harden, init_huge_model_is_a_clear_error)
{
    cr_assert_eq(setenv("FEWSHOT_MAX_MEMORY_MB", "4096", 1), 0);
    th_run_result r;
    th_run(&r, "init --set model.d_model=16384 -o /dev/null");
    expect_error(&r, "d_model 16384", "needs 24609.9 MB");
    th_run_free(&r);
}

/* A small file whose metadata claims d_model 8192: the shapes are checked first. */
Test(harden, small_model_file_claiming_a_big_model_allocates_nothing, .init = setup, .fini = teardown)
{
    cr_assert_eq(setenv("FEWSHOT_MAX_MEMORY_MB", "256", 1), 0); /* the claimed model needs ~1.6 GB */
    fs_st_tensor t = {.name = "example_embed.weight", .ndim = 2, .shape = {2, 2}, .numel = 4,
                      .data = (float[]){1, 2, 3, 4}};
    const char *keys[] = {"format", "model_config"};
    const char *vals[] = {"fewshot", "{\"input_dim\": 512, \"num_classes\": 5, \"d_model\": 8192, \"num_heads\": 8, "
                                     "\"depth\": 2, \"mlp_ratio\": 4}"};
    const char *model = th_path(dir, "liar.safetensors"), *ctx = "datasets/examples/classify_context.json";
    fs_error err;
    cr_assert_eq(fs_st_write(model, &t, 1, keys, vals, 2, &err), 0, "%s", err.msg);
    struct stat st;
    cr_assert_eq(stat(model, &st), 0);
    cr_assert_lt(st.st_size, 2600, "a small file");
    th_run_result r;
    th_run(&r, "classify --model %s --context %s --kv-stats", model, ctx);
    expect_error(&r, "example_embed.weight' has shape [2, 2], expected [8192, 512]", NULL);
    cr_expect(strstr(r.err, "MB") == NULL, "failed on the shapes, not on memory: %s", r.err);
    th_run_free(&r);
}

/* ---------------------------------------------------------------- 11. divergence */

Test(harden, divergence_stops_at_the_step_and_keeps_good_checkpoints, .init = setup, .fini = teardown,
     .timeout = 60)
{
    const char *out = th_path(dir, "run");
    th_run_result r;
    th_run(&r, "train --config %s --out %s --set train.optimizer=sgd --set train.lr=1000 --set train.ckpt_every=32 "
               "--no-progress", tiny(), out);
    expect_error(&r, "training diverged at step 8", "the last good checkpoint is");
    th_run_free(&r);
    char *metrics = th_read_file(th_path(out, "metrics.jsonl"), NULL);
    cr_assert_not_null(metrics);
    cr_expect(strstr(metrics, "null") == NULL && strstr(metrics, "NaN") == NULL, "no non-finite line: %s", metrics);
    free(metrics);
    char ckpt[1024];
    snprintf(ckpt, sizeof ckpt, "%s/checkpoints/step_00000006.safetensors", out);
    fs_st_file f;
    fs_error err;
    cr_expect_eq(fs_st_read(ckpt, &f, &err), 0, "the last good checkpoint is intact: %s", err.msg);
    fs_st_free(&f);
    snprintf(ckpt, sizeof ckpt, "%s/checkpoints/step_00000008.safetensors", out);
    cr_expect(!exists(ckpt), "nothing of the diverged step is saved");
}

/* ---------------------------------------------------------------- 12. non-finite outputs */

/* {"examples": [[3e38 x 512]]REST}: finite inputs whose activations overflow float32. */
static void write_huge_inputs(const char *path, const char *rest)
{
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs("{\"examples\": [[", f);
    for (int i = 0; i < 512; i++)
        fprintf(f, "%s3e38", i ? ", " : "");
    fprintf(f, "]]%s}", rest);
    fclose(f);
}

/* Inputs too large for float32 arithmetic: classify fails instead of printing -nan. */
Test(harden, classify_refuses_non_finite_probabilities, .init = setup, .fini = teardown)
{
    const char *model = th_path(dir, "m.safetensors"), *queries = th_path(dir, "q.json");
    th_run_result r;
    th_run_ok("init -o %s", model);
    write_huge_inputs(queries, "");
    th_run(&r, "classify --model %s --context datasets/examples/classify_context.json --queries %s", model, queries);
    expect_error(&r, "query 0", "logits are");
    cr_expect(strstr(r.out, "nan") == NULL, "no predictions: %s", r.out);
    th_run_free(&r);
}

/* Every leaf of a JSON tree set to 1 (a mask that holds everything). */
static void ones(cJSON *v)
{
    for (cJSON *c = v->child, *next; c; c = next) {
        next = c->next;
        if (cJSON_IsArray(c) || cJSON_IsObject(c))
            ones(c);
        else
            cJSON_ReplaceItemViaPointer(v, c, cJSON_CreateNumber(1));
    }
}

/* A cache dump holding NaN/Infinity writes them as strings and reads back as a clamp. */
Test(harden, cache_dump_with_non_finite_values_is_valid_input, .init = setup, .fini = teardown)
{
    const char *model = th_path(dir, "m.safetensors"), *input = th_path(dir, "in.json");
    const char *dump = th_path(dir, "dump.json"), *mask = th_path(dir, "mask.json");
    th_run_result r;
    th_run_ok("init -o %s", model);
    write_huge_inputs(input, ", \"labels\": [0]");
    th_run_ok("cache --model %s --input %s -o %s", model, input, dump);
    char *text = th_read_file(dump, NULL);
    cr_assert_not_null(text);
    cr_expect(strstr(text, "\"NaN\"") || strstr(text, "\"Infinity\"") || strstr(text, "\"-Infinity\""),
              "non-finite values are written as strings");
    cJSON *tree = cJSON_Parse(text);
    cr_expect_not_null(tree, "the dump is valid JSON");
    free(text);
    /* clamp the whole (partly non-finite) example embedding to its dumped value */
    const cJSON *emb = cJSON_GetObjectItem(tree, "example_embedding");
    cr_assert_not_null(emb, "the dump has example_embedding");
    cJSON *c = cJSON_CreateObject(), *m = cJSON_CreateObject(), *mv = cJSON_Duplicate(emb, 1);
    cJSON_AddItemToObject(c, "example_embedding", cJSON_Duplicate(emb, 1));
    ones(mv);
    cJSON_AddItemToObject(m, "example_embedding", mv);
    const char *held = th_path(dir, "held.json");
    char *ct = cJSON_Print(c), *mt = cJSON_Print(m);
    th_write_text(held, ct);
    th_write_text(mask, mt);
    free(ct);
    free(mt);
    cJSON_Delete(c);
    cJSON_Delete(m);
    cJSON_Delete(tree);
    th_run(&r, "cache --model %s --input %s --cache %s --mask %s", model, input, held, mask);
    cr_expect(r.exited && r.code == 0, "fewshot reads its own dump back: %s", th_describe(&r));
    th_run_free(&r);
}

/* ---------------------------------------------------------------- 13. config cross-field, truncation */

Test(harden, cosine_decay_not_after_warmup_is_rejected, .init = setup, .fini = teardown)
{
    th_run_result r;
    th_run(&r, "train --config %s --out %s --set train.optimizer=cosine --set train.warmup_steps=100 "
               "--set train.decay_steps=100 --no-progress", tiny(), th_path(dir, "run"));
    expect_error(&r, "train.decay_steps (100) must be greater than train.warmup_steps (100)", NULL);
    th_run_free(&r);
}

Test(harden, long_clamp_file_names_are_rejected_not_cut, .init = setup, .fini = teardown)
{
    char name[1200];
    memset(name, 'a', sizeof name - 1);
    name[sizeof name - 1] = 0;
    const char *cfg = th_path(dir, "long.json");
    th_write_textf(cfg, "{\"clamps\": {\"cache\": \"%s\", \"mask\": \"m.json\"}}", name);
    th_run_result r;
    th_run(&r, "eval --config %s --model tests/golden/attn_only/params.safetensors", cfg);
    expect_error(&r, "clamps.cache: file name is 1199 bytes", NULL);
    th_run_free(&r);
}

/* ---------------------------------------------------------------- 14. checkpoint metadata */

/* Rewrite one metadata value of a checkpoint. */
static void set_meta(const char *path, const char *key, const char *value)
{
    fs_st_file f;
    fs_error err;
    cr_assert_eq(fs_st_read(path, &f, &err), 0, "%s", err.msg);
    const char *vals[16];
    cr_assert_leq(f.meta_count, 16);
    for (int i = 0; i < f.meta_count; i++)
        vals[i] = strcmp(f.meta_keys[i], key) ? f.meta_values[i] : value;
    cr_assert_eq(fs_st_write(path, f.tensors, f.count, (const char *const *)f.meta_keys, vals, f.meta_count, &err), 0,
                 "%s", err.msg);
    fs_st_free(&f);
}

Test(harden, damaged_checkpoint_metadata_is_rejected, .init = setup, .fini = teardown, .timeout = 120)
{
    const char *out = th_path(dir, "run");
    th_run_result r;
    th_run_ok("train --config %s --out %s --no-progress --stop-after 320", tiny(), out);
    char ckpt[1024];
    snprintf(ckpt, sizeof ckpt, "%s/checkpoints/step_00000020.safetensors", out);
    static const struct {
        const char *key, *value, *needle;
    } cases[] = {
        {"step", "99999999999999999999", "step = \"99999999999999999999\": expected an integer"},
        {"step", "999999", "named for step 20"},
        {"step", "12abc", "expected an integer"},
        {"iter", "321", "iter 321 does not match step 20"},
        {"log_steps", "-1", "log_steps"},
        {"log_loss_sum", "nan", "log_loss_sum"},
        {"step", "19", "named for step 20"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char saved[1100];
        snprintf(saved, sizeof saved, "%s.orig", ckpt);
        th_copy_file(ckpt, saved);
        set_meta(ckpt, cases[i].key, cases[i].value);
        th_run(&r, "train --config %s --out %s --no-progress --resume", tiny(), out);
        expect_error(&r, ckpt, cases[i].needle);
        th_run_free(&r);
        th_copy_file(saved, ckpt);
    }
}

/* ---------------------------------------------------------------- the helpers themselves */

Test(harden, size_mul_checks_size_t_and_int_overflow)
{
    size_t n = 7;
    cr_expect_eq(fs_size_mul(&n, SIZE_MAX, FS_DIMS(16777216, 1048576, 1048576, sizeof(float))), -1, "2^66 bytes");
    cr_expect_eq(fs_size_mul(&n, INT_MAX, FS_DIMS(65536, 32768)), -1, "2^31 does not fit an int");
    cr_expect_eq(fs_size_mul(&n, INT_MAX, FS_DIMS(65536, 32767)), 0);
    cr_expect_eq(n, (size_t)65536 * 32767);
    cr_expect_eq(fs_size_mul(&n, 10, FS_DIMS(SIZE_MAX, 0)), 0, "a zero factor never overflows");
    cr_expect_eq(n, 0);
    cr_expect_eq(fs_size_mul(&n, SIZE_MAX, FS_DIMS((size_t)-1 /* a negative int */, 2)), -1);
}

Test(harden, non_finite_json_strings_round_trip)
{
    const double xs[] = {NAN, INFINITY, -INFINITY, 1.5};
    for (int i = 0; i < 4; i++) {
        cJSON *j = fs_json_float(xs[i]);
        double back = 0;
        cr_assert_eq(fs_json_get_float(j, &back), 0);
        cr_expect(isnan(xs[i]) ? isnan(back) : back == xs[i], "value %d", i);
        cr_expect_eq(cJSON_IsString(j), !isfinite(xs[i]));
        cJSON_Delete(j);
    }
    cJSON *bad = cJSON_CreateString("nan");
    double x;
    cr_expect_eq(fs_json_get_float(bad, &x), -1, "only the three exact spellings");
    cJSON_Delete(bad);
}

/* Found by fuzz_config: a clamps key differing from "cache" only in case made the recorded
 * config leak the file name and drop it (cJSON_HasObjectItem ignores case). */
Test(harden, recorded_clamp_files_survive_a_key_differing_in_case)
{
    fs_run_config c;
    fs_run_config_default(&c);
    fs_error err;
    cr_assert_eq(fs_run_config_set(&c, "clamps.cache=a.json", &err), 0, "%s", err.msg);
    cr_assert_eq(fs_run_config_set(&c, "clamps.caChe=x.json", &err), 0, "%s", err.msg);
    cJSON *j = fs_run_config_to_json(&c);
    const cJSON *cache = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItem(j, "clamps"), "cache");
    cr_expect(cJSON_IsString(cache) && !strcmp(cache->valuestring, "a.json"), "the clamp file in force is recorded");
    cJSON_Delete(j);
    fs_run_config_free(&c);
}
