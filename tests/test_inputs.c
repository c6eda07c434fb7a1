/* Malformed inputs through the fewshot binary (docs/formats.md): every one must exit
 * non-zero (1 or 2, never a signal or a sanitizer report) with a message on stderr
 * that names the file and the field. The binary is FEWSHOT_BIN or ./fewshot. */
#include <criterion/criterion.h>

#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fewshot/model.h"
#include "fewshot/safetensors.h"
#include "fewshot/version.h"
#include "helpers.h"

#define DOC_CONFIG TH_GOLDEN "/doc/config.json"
#define DOC_PARAMS TH_GOLDEN "/doc/params.safetensors"
#define DOC_INPUT TH_GOLDEN "/doc/forward_0.json"

/* Fixture: a temp dir with a tiny model (input_dim 4, 3 classes), its config and a
 * valid input of 3 pairs. */
static char g_dir[128];
static const char *g_cfg, *g_model, *g_good;
static char g_cfg_buf[256], g_model_buf[256], g_good_buf[256];

static const char *tiny_model_json = "{\"model\": {\"input_dim\": 4, \"num_classes\": 3, \"d_model\": 8, "
                                     "\"num_heads\": 2, \"depth\": 1, \"mlp_ratio\": 2}}\n";

static void tiny_config(fs_model_config *m)
{
    th_tiny_config(m);
    m->input_dim = 4;
}

static void setup(void)
{
    th_tmpdir(g_dir, sizeof g_dir, "inputs");
    snprintf(g_cfg_buf, sizeof g_cfg_buf, "%s/tiny.json", g_dir);
    snprintf(g_model_buf, sizeof g_model_buf, "%s/tiny.safetensors", g_dir);
    snprintf(g_good_buf, sizeof g_good_buf, "%s/good.json", g_dir);
    g_cfg = g_cfg_buf, g_model = g_model_buf, g_good = g_good_buf;
    th_write_text(g_cfg, tiny_model_json);
    fs_model_config mc;
    tiny_config(&mc);
    fs_model m;
    th_random_model(&m, &mc, 1, 0.1);
    fs_error err = {{0}};
    cr_assert_eq(fs_model_save(&m, g_model, &err), 0, "%s", err.msg);
    fs_model_free(&m);
    th_write_text(g_good, "{\"examples\": [[0.1, 0.2, 0.3, 0.4], [1, 0, -1, 0.5], [0.3, 0.3, 0.3, 0.3]],\n"
                          " \"labels\": [0, 2, 1]}\n");
}

static void teardown(void) { th_rmtree(g_dir); }

TestSuite(inputs, .init = setup, .fini = teardown, .timeout = 60);

/* ---------------------------------------------------------------- expectations */

static void check_failure(const th_run_result *r, const char *cmdline, const char *const *fragments)
{
    cr_assert(r->exited, "%s: crashed: %s", cmdline, th_describe(r));
    cr_assert(!th_sanitizer_report(r), "%s: sanitizer report: %s", cmdline, th_describe(r));
    cr_assert(r->code == 1 || r->code == 2, "%s: expected exit code 1 or 2: %s", cmdline, th_describe(r));
    cr_assert(strlen(r->err) > 0, "%s: no message on stderr", cmdline);
    for (int i = 0; fragments[i]; i++)
        cr_assert(strstr(r->err, fragments[i]), "%s: stderr lacks \"%s\": %s", cmdline, fragments[i], r->err);
}

/* Run a command line (printf-style args already formatted) that must fail. */
static void expect_fail_line(const char *cmdline, const char *const *fragments)
{
    th_run_result r;
    th_run(&r, "%s", cmdline);
    check_failure(&r, cmdline, fragments);
    th_run_free(&r);
}

#define EXPECT_FAIL(cmdline, ...) expect_fail_line(cmdline, (const char *const[]){__VA_ARGS__, NULL})

static void expect_ok_line(const char *cmdline)
{
    th_run_result r;
    th_run(&r, "%s", cmdline);
    cr_assert(r.exited && r.code == 0 && !th_sanitizer_report(&r), "%s: %s", cmdline, th_describe(&r));
    th_run_free(&r);
}

static char *fmt(const char *f, ...) __attribute__((format(printf, 1, 2)));
static char *fmt(const char *f, ...)
{
    static char ring[8][2048];
    static int next;
    char *buf = ring[next++ % 8];
    va_list ap;
    va_start(ap, f);
    vsnprintf(buf, sizeof ring[0], f, ap);
    va_end(ap);
    return buf;
}

/* `fewshot cache` of the tiny model on an input file with this content. */
static const char *input_file(const char *name, const char *content)
{
    const char *path = th_path(g_dir, name);
    th_write_text(path, content);
    return path;
}

static void cache_input_fails(const char *name, const char *content, const char *const *fragments)
{
    const char *path = input_file(name, content);
    const char *line = fmt("cache --config %s --model %s --input %s", g_cfg, g_model, path);
    th_run_result r;
    th_run(&r, "%s", line);
    check_failure(&r, line, fragments);
    cr_assert(strstr(r.err, path), "%s: the message does not name the input file %s: %s", line, path, r.err);
    th_run_free(&r);
}

#define INPUT_FAILS(name, content, ...) cache_input_fails(name, content, (const char *const[]){__VA_ARGS__, NULL})

/* ---------------------------------------------------------------- the valid cases work */

Test(inputs, valid_inputs_are_accepted)
{
    /* so that the failures below are about the malformation, not the set-up */
    th_run_result r;
    th_run(&r, "cache --config %s --model %s --input %s", g_cfg, g_model, g_good);
    cr_assert(r.exited && r.code == 0, "%s", th_describe(&r));
    cJSON *j = cJSON_Parse(r.out);
    cr_assert_not_null(j, "stdout is not JSON");
    cr_assert_not_null(cJSON_GetObjectItemCaseSensitive(j, "transformer_output"));
    cJSON_Delete(j);
    th_run_free(&r);
    /* the model file carries its config: --config may be omitted */
    expect_ok_line(fmt("cache --model %s --input %s", g_model, g_good));
    /* a batch, extra keys ignored */
    const char *batch = input_file("batch.json", "{\"examples\": [[[0,0,0,1],[1,0,0,0]], [[0,1,0,0],[0,0,1,0]]],"
                                                 " \"labels\": [[0,1],[2,2]], \"comment\": \"ignored\"}");
    expect_ok_line(fmt("cache --config %s --model %s --input %s", g_cfg, g_model, batch));
    /* the documented model on a golden file (a cache dump is a valid input) */
    expect_ok_line(fmt("cache --config %s --model %s --input %s --shapes", DOC_CONFIG, DOC_PARAMS, DOC_INPUT));
    /* a model written by fewshot init */
    const char *init = th_path(g_dir, "init.safetensors");
    expect_ok_line(fmt("init --config %s -o %s", g_cfg, init));
    expect_ok_line(fmt("cache --model %s --input %s", init, g_good));
}

/* ---------------------------------------------------------------- model files */

Test(inputs, truncated_model_file)
{
    size_t n;
    char *data = th_read_file(DOC_PARAMS, &n);
    cr_assert_not_null(data, "cannot read %s", DOC_PARAMS);
    uint64_t header = 0;
    memcpy(&header, data, 8); /* little-endian host */
    const size_t cuts[] = {0, 1, 7, 8, 9, 100, 8 + header - 1, 8 + header, 8 + header + 1, 8 + header + 1000,
                           n / 2, n - 4, n - 1};
    const char *path = th_path(g_dir, "truncated.safetensors");
    for (size_t i = 0; i < sizeof cuts / sizeof *cuts; i++) {
        th_write_file(path, data, cuts[i]);
        EXPECT_FAIL(fmt("cache --config %s --model %s --input %s", DOC_CONFIG, path, DOC_INPUT), path);
    }
    /* and one byte too many is also an error (data section not covered by the tensors) */
    char *longer = malloc(n + 1);
    memcpy(longer, data, n);
    longer[n] = 0;
    th_write_file(path, longer, n + 1);
    EXPECT_FAIL(fmt("cache --config %s --model %s --input %s", DOC_CONFIG, path, DOC_INPUT), path);
    free(longer);
    free(data);
}

/* Write a safetensors file for `cfg`'s layout by hand, `dtype` for the tensor named
 * `odd` (with a data size matching that dtype), F32 for the others, no metadata. */
static void write_model_with_dtype(const char *path, const fs_model_config *cfg, const char *odd, const char *dtype,
                                  size_t bytes_per_elem)
{
    fs_param_layout l;
    fs_error err = {{0}};
    cr_assert_eq(fs_param_layout_build(cfg, &l, &err), 0, "%s", err.msg);
    cJSON *h = cJSON_CreateObject();
    size_t off = 0;
    for (int i = 0; i < l.count; i++) {
        const fs_param_desc *t = &l.tensors[i];
        bool is_odd = !strcmp(t->name, odd);
        size_t bytes = t->numel * (is_odd ? bytes_per_elem : 4);
        cJSON *e = cJSON_AddObjectToObject(h, t->name);
        cJSON_AddStringToObject(e, "dtype", is_odd ? dtype : "F32");
        cJSON_AddItemToObject(e, "shape", cJSON_CreateIntArray(t->shape, t->ndim));
        double offs[2] = {(double)off, (double)(off + bytes)};
        cJSON_AddItemToObject(e, "data_offsets", cJSON_CreateDoubleArray(offs, 2));
        off += bytes;
    }
    char *text = cJSON_PrintUnformatted(h);
    size_t hl = (strlen(text) + 7) / 8 * 8;
    size_t total = 8 + hl + off;
    char *buf = calloc(1, total);
    uint64_t hl64 = hl;
    memcpy(buf, &hl64, 8);
    memset(buf + 8, ' ', hl);
    memcpy(buf + 8, text, strlen(text));
    th_write_file(path, buf, total);
    free(buf);
    free(text);
    cJSON_Delete(h);
    fs_param_layout_free(&l);
}

Test(inputs, wrong_dtype_is_named)
{
    fs_model_config mc;
    tiny_config(&mc);
    const char *path = th_path(g_dir, "f16.safetensors");
    /* sanity: the same hand-written file with every tensor F32 loads */
    write_model_with_dtype(path, &mc, "none", "F32", 4);
    expect_ok_line(fmt("cache --config %s --model %s --input %s", g_cfg, path, g_good));
    write_model_with_dtype(path, &mc, "transformer.blocks.0.attn.qkv.weight", "F16", 2);
    EXPECT_FAIL(fmt("cache --config %s --model %s --input %s", g_cfg, path, g_good), path,
                "transformer.blocks.0.attn.qkv.weight", "F16");
    write_model_with_dtype(path, &mc, "unembed.bias", "F64", 8);
    EXPECT_FAIL(fmt("cache --config %s --model %s --input %s", g_cfg, path, g_good), path, "unembed.bias", "F64");
}

Test(inputs, model_of_another_config)
{
    /* a file from `fewshot init` with d_model 32 carries its config: the doc config disagrees */
    const char *wide = th_path(g_dir, "wide.safetensors");
    expect_ok_line(fmt("init --config %s --set model.d_model=32 -o %s", DOC_CONFIG, wide));
    EXPECT_FAIL(fmt("cache --config %s --model %s --input %s", DOC_CONFIG, wide, DOC_INPUT), wide, DOC_CONFIG);

    /* the same tensors without metadata: the shape check names the tensor */
    fs_model_config mc;
    fs_model_config_default(&mc);
    mc.d_model = 32;
    fs_model m;
    fs_error err = {{0}};
    cr_assert_eq(fs_model_create(&m, &mc, &err), 0, "%s", err.msg);
    fs_model_init_params(&m);
    fs_st_tensor *ts = calloc((size_t)m.layout.count, sizeof *ts);
    for (int i = 0; i < m.layout.count; i++) {
        const fs_param_desc *t = &m.layout.tensors[i];
        snprintf(ts[i].name, sizeof ts[i].name, "%s", t->name);
        ts[i].ndim = t->ndim;
        ts[i].shape[0] = t->shape[0];
        ts[i].shape[1] = t->shape[1];
        ts[i].numel = t->numel;
        ts[i].data = m.params + t->offset;
    }
    const char *bare = th_path(g_dir, "bare.safetensors");
    cr_assert_eq(fs_st_write(bare, ts, m.layout.count, NULL, NULL, 0, &err), 0, "%s", err.msg);
    free(ts);
    fs_model_free(&m);
    EXPECT_FAIL(fmt("cache --config %s --model %s --input %s", DOC_CONFIG, bare, DOC_INPUT), bare, "shape", "32");
    /* and without --config there is no model config at all */
    EXPECT_FAIL(fmt("cache --model %s --input %s", bare, DOC_INPUT), bare, "config");

    /* tensors of another config with the right shapes but different names (qkv_bias) */
    fs_model_config tiny;
    tiny_config(&tiny);
    tiny.qkv_bias = true;
    fs_model mb;
    th_random_model(&mb, &tiny, 2, 0.1);
    const char *biased = th_path(g_dir, "biased.safetensors");
    cr_assert_eq(fs_model_save(&mb, biased, &err), 0, "%s", err.msg);
    fs_model_free(&mb);
    EXPECT_FAIL(fmt("cache --config %s --model %s --input %s", g_cfg, biased, g_good), biased);
}

Test(inputs, missing_files)
{
    const char *nope = th_path(g_dir, "nope.safetensors");
    EXPECT_FAIL(fmt("cache --config %s --model %s --input %s", g_cfg, nope, g_good), nope);
    const char *nope_in = th_path(g_dir, "nope.json");
    EXPECT_FAIL(fmt("cache --config %s --model %s --input %s", g_cfg, g_model, nope_in), nope_in);
    const char *nope_cfg = th_path(g_dir, "nope_config.json");
    EXPECT_FAIL(fmt("cache --config %s --model %s --input %s", nope_cfg, g_model, g_good), nope_cfg);
    EXPECT_FAIL(fmt("cache --config %s --model %s --input %s", g_cfg, g_dir, g_good), g_dir); /* a directory */
    /* required options */
    EXPECT_FAIL(fmt("cache --config %s --input %s", g_cfg, g_good), "--model");
    EXPECT_FAIL(fmt("cache --config %s --model %s", g_cfg, g_model), "--input");
}

/* ---------------------------------------------------------------- sequence inputs */

Test(inputs, malformed_json)
{
    INPUT_FAILS("trunc.json", "{\"examples\": [[0.1, 0.2, 0.3, 0.4]], \"labels\": [0", "JSON");
    INPUT_FAILS("garbage.json", "examples: 1, 2, 3", "JSON");
    INPUT_FAILS("empty.json", "", "JSON");
    INPUT_FAILS("two.json", "{\"examples\": [[1,2,3,4]], \"labels\": [0]} {}", "JSON");
    /* NaN and Infinity are not JSON */
    INPUT_FAILS("nan.json", "{\"examples\": [[NaN, 0, 0, 0]], \"labels\": [0]}", "JSON");
    INPUT_FAILS("inf.json", "{\"examples\": [[Infinity, 0, 0, 0]], \"labels\": [0]}", "JSON");
}

Test(inputs, non_finite_examples)
{
    /* numbers beyond float range */
    INPUT_FAILS("big.json", "{\"examples\": [[0, 1e39, 0, 0], [0, 0, 0, 0]], \"labels\": [0, 1]}", "examples");
    INPUT_FAILS("negbig.json", "{\"examples\": [[0, 0, 0, 0], [0, 0, 0, -3.5e38]], \"labels\": [0, 1]}", "examples");
    INPUT_FAILS("huge.json", "{\"examples\": [[1e400, 0, 0, 0]], \"labels\": [0]}", "examples");
}

Test(inputs, bad_labels)
{
    INPUT_FAILS("big_label.json", "{\"examples\": [[0,0,0,0],[1,1,1,1]], \"labels\": [0, 3]}", "labels", "3");
    INPUT_FAILS("neg_label.json", "{\"examples\": [[0,0,0,0],[1,1,1,1]], \"labels\": [-1, 0]}", "labels");
    INPUT_FAILS("frac_label.json", "{\"examples\": [[0,0,0,0],[1,1,1,1]], \"labels\": [0.5, 1]}", "labels");
    INPUT_FAILS("str_label.json", "{\"examples\": [[0,0,0,0],[1,1,1,1]], \"labels\": [\"1\", 1]}", "labels");
    INPUT_FAILS("bool_label.json", "{\"examples\": [[0,0,0,0],[1,1,1,1]], \"labels\": [true, 1]}", "labels");
    INPUT_FAILS("huge_label.json", "{\"examples\": [[0,0,0,0],[1,1,1,1]], \"labels\": [1e30, 1]}", "labels");
    INPUT_FAILS("batched_label.json", "{\"examples\": [[[0,0,0,0]],[[1,1,1,1]]], \"labels\": [[0],[7]]}", "labels");
}

Test(inputs, bad_shapes)
{
    INPUT_FAILS("empty_ex.json", "{\"examples\": [], \"labels\": []}", "examples");
    INPUT_FAILS("empty_row.json", "{\"examples\": [[]], \"labels\": [0]}", "examples");
    INPUT_FAILS("empty_batch.json", "{\"examples\": [[]], \"labels\": [[]]}", "examples");
    INPUT_FAILS("empty_labels.json", "{\"examples\": [[0,0,0,0]], \"labels\": []}", "labels");
    INPUT_FAILS("ragged.json", "{\"examples\": [[0,0,0,0],[1,1,1]], \"labels\": [0, 1]}", "examples");
    INPUT_FAILS("ragged3.json", "{\"examples\": [[[0,0,0,0]],[[1,1,1,1],[2,2,2,2]]], \"labels\": [[0],[1,2]]}",
                "examples");
    INPUT_FAILS("ragged_deep.json", "{\"examples\": [[0,0,0,[0]],[1,1,1,1]], \"labels\": [0, 1]}", "examples");
    INPUT_FAILS("str_example.json", "{\"examples\": [[0,0,\"0\",0]], \"labels\": [0]}", "examples");
    INPUT_FAILS("dim.json", "{\"examples\": [[0,0,0],[1,1,1]], \"labels\": [0, 1]}", "examples", "4");
    INPUT_FAILS("dim5.json", "{\"examples\": [[0,0,0,0,0]], \"labels\": [0]}", "examples", "4");
    INPUT_FAILS("scalar.json", "{\"examples\": 3, \"labels\": [0]}", "examples");
    INPUT_FAILS("flat.json", "{\"examples\": [0,0,0,0], \"labels\": [0]}", "examples");
    INPUT_FAILS("deep.json", "{\"examples\": [[[[0,0,0,0]]]], \"labels\": [[[0]]]}", "examples");
    INPUT_FAILS("fewer_labels.json", "{\"examples\": [[0,0,0,0],[1,1,1,1],[2,2,2,2]], \"labels\": [0, 1]}",
                "labels");
    INPUT_FAILS("more_labels.json", "{\"examples\": [[0,0,0,0]], \"labels\": [0, 1]}", "labels");
    INPUT_FAILS("batch_mismatch.json", "{\"examples\": [[[0,0,0,0]],[[1,1,1,1]]], \"labels\": [[0]]}", "labels");
    INPUT_FAILS("label_dims.json", "{\"examples\": [[0,0,0,0],[1,1,1,1]], \"labels\": [[0, 1]]}", "labels");
    INPUT_FAILS("no_labels.json", "{\"examples\": [[0,0,0,0]]}", "labels");
    INPUT_FAILS("no_examples.json", "{\"labels\": [0]}", "examples");
    INPUT_FAILS("array_root.json", "[[0,0,0,0]]", "examples");
    INPUT_FAILS("null_ex.json", "{\"examples\": null, \"labels\": [0]}", "examples");
}

Test(inputs, grad_and_steps_check_inputs_too)
{
    const char *bad = input_file("grad_bad.json", "{\"examples\": [[0,0,0,0],[1,1,1,1]], \"labels\": [0, 5]}");
    const char *out = th_path(g_dir, "g.safetensors");
    EXPECT_FAIL(fmt("grad --config %s --model %s --input %s -o %s", g_cfg, g_model, bad, out), bad, "labels");
    EXPECT_FAIL(fmt("steps --config %s --model %s --input %s --steps 2 -o %s", g_cfg, g_model, bad, out), bad,
                "labels");
    EXPECT_FAIL(fmt("steps --config %s --model %s --input %s --steps -1 -o %s", g_cfg, g_model, g_good, out),
                "--steps");
    EXPECT_FAIL(fmt("steps --config %s --model %s --input %s --steps many -o %s", g_cfg, g_model, g_good, out),
                "--steps");
    EXPECT_FAIL(fmt("grad --config %s --model %s --input %s", g_cfg, g_model, g_good), "-o");
    struct stat st;
    cr_assert_neq(stat(out, &st), 0, "a failed command must not write its output");
}

/* ---------------------------------------------------------------- configs on the command line */

Test(inputs, config_errors_name_file_and_key)
{
    const char *bad = th_path(g_dir, "badkey.json");
    th_write_text(bad, "{\"model\": {\"input_dim\": 4, \"num_classes\": 3, \"d_model\": 8, \"num_heads\": 2,"
                       " \"depth\": 1, \"mlp_ration\": 2}}");
    EXPECT_FAIL(fmt("cache --config %s --model %s --input %s", bad, g_model, g_good), bad, "mlp_ration");
    EXPECT_FAIL(fmt("init --config %s -o %s", bad, th_path(g_dir, "x.safetensors")), bad, "mlp_ration");

    const char *type = th_path(g_dir, "badtype.json");
    th_write_text(type, "{\"model\": {\"input_dim\": \"four\"}}");
    EXPECT_FAIL(fmt("cache --config %s --model %s --input %s", type, g_model, g_good), type, "model.input_dim");

    const char *section = th_path(g_dir, "badsection.json");
    th_write_text(section, "{\"modell\": {\"input_dim\": 4}}");
    EXPECT_FAIL(fmt("cache --config %s --model %s --input %s", section, g_model, g_good), section, "modell");

    const char *malformed = th_path(g_dir, "malformed.json");
    th_write_text(malformed, "{\"model\": {\"input_dim\": 4,,}}");
    EXPECT_FAIL(fmt("cache --config %s --model %s --input %s", malformed, g_model, g_good), malformed);

    EXPECT_FAIL(fmt("cache --config %s --model %s --input %s --set model.dmodel=8", g_cfg, g_model, g_good),
                "dmodel");
    EXPECT_FAIL(fmt("cache --config %s --model %s --input %s --set model.depth=two", g_cfg, g_model, g_good),
                "model.depth");
    EXPECT_FAIL(fmt("init --config %s --set nosuch.key=1 -o %s", g_cfg, th_path(g_dir, "y.safetensors")), "nosuch");
    EXPECT_FAIL(fmt("init --config %s --set depth=1 -o %s", g_cfg, th_path(g_dir, "y.safetensors")), "depth");
    /* a config that disagrees with the model file's metadata */
    EXPECT_FAIL(fmt("cache --config %s --model %s --input %s --set model.depth=2", g_cfg, g_model, g_good),
                g_model);
    /* invalid combinations are caught before any work */
    EXPECT_FAIL(fmt("init --config %s --set model.num_heads=3 -o %s", g_cfg, th_path(g_dir, "z.safetensors")),
                "num_heads");
}

Test(inputs, clamp_options_go_together)
{
    EXPECT_FAIL(fmt("cache --config %s --model %s --input %s --cache %s", g_cfg, g_model, g_good, g_good), "--mask");
    EXPECT_FAIL(fmt("cache --config %s --model %s --input %s --mask %s", g_cfg, g_model, g_good, g_good), "--cache");
    const char *out = th_path(g_dir, "g.safetensors");
    EXPECT_FAIL(fmt("grad --config %s --model %s --input %s --cache %s -o %s", g_cfg, g_model, g_good, g_good, out),
                "--mask");
    /* a clamp file naming a leaf that does not exist */
    const char *cache = input_file("clamp.json", "{\"transformer_output\": {\"nonsense\": [1]}}");
    const char *mask = input_file("mask.json", "{\"transformer_output\": {\"nonsense\": [true]}}");
    EXPECT_FAIL(fmt("cache --config %s --model %s --input %s --cache %s --mask %s", g_cfg, g_model, g_good, cache,
                    mask),
                "nonsense");
}

/* ---------------------------------------------------------------- options and --help */

static void help_exits_zero(const char *cmd)
{
    th_run_result r;
    th_run(&r, "%s --help", cmd);
    if (r.exited && r.code != 0 && strstr(r.err, "not implemented")) {
        th_run_free(&r);
        cr_skip_test("fewshot %s is not implemented yet", cmd);
    }
    cr_assert(r.exited && r.code == 0 && !th_sanitizer_report(&r), "fewshot %s --help: %s", cmd, th_describe(&r));
    cr_assert(strstr(r.out, "usage") || strstr(r.out, "Usage"), "fewshot %s --help prints no usage: %s", cmd, r.out);
    cr_assert(strstr(r.out, cmd), "fewshot %s --help does not name the command: %s", cmd, r.out);
    th_run_free(&r);
    th_run_ok("%s -h", cmd);
}

static void unknown_option_fails(const char *cmd)
{
    th_run_result r;
    /* `dataset` takes a tool name first */
    th_run(&r, "%s%s --definitely-not-an-option 1", cmd, strcmp(cmd, "dataset") ? "" : " synth");
    if (r.exited && r.code != 0 && strstr(r.err, "not implemented")) {
        th_run_free(&r);
        cr_skip_test("fewshot %s is not implemented yet", cmd);
    }
    check_failure(&r, cmd, (const char *const[]){"--definitely-not-an-option", NULL});
    th_run_free(&r);
}

#define CMD_TESTS(cmd)                                              \
    Test(inputs, help_##cmd) { help_exits_zero(#cmd); }             \
    Test(inputs, unknown_option_##cmd) { unknown_option_fails(#cmd); }

CMD_TESTS(init)
CMD_TESTS(cache)
CMD_TESTS(grad)
CMD_TESTS(steps)
CMD_TESTS(train)
CMD_TESTS(eval)
CMD_TESTS(classify)
CMD_TESTS(dataset)
CMD_TESTS(bench)

Test(inputs, top_level_usage)
{
    th_run_result r;
    th_run(&r, "--help");
    cr_assert(r.exited && r.code == 0, "fewshot --help: %s", th_describe(&r));
    cr_assert(strstr(r.out, "cache") && strstr(r.out, "train"), "%s", r.out);
    th_run_free(&r);
    th_run(&r, "frobnicate");
    check_failure(&r, "fewshot frobnicate", (const char *const[]){"frobnicate", NULL});
    th_run_free(&r);
    const char *none[] = {NULL};
    th_run_argv(&r, none);
    check_failure(&r, "fewshot", (const char *const[]){"usage", NULL});
    th_run_free(&r);
    /* an option missing its value */
    th_run(&r, "cache --config");
    check_failure(&r, "fewshot cache --config", (const char *const[]){"--config", NULL});
    th_run_free(&r);
}

Test(inputs, version)
{
    th_run_result r;
    th_run(&r, "--version");
    cr_assert(r.exited && r.code == 0, "fewshot --version: %s", th_describe(&r));
    cr_assert_str_eq(r.out, "fewshot " FEWSHOT_VERSION "\n");
    th_run_free(&r);
}

/* Every option of a command shows in its usage lines (the block before the first blank
 * line), and the optional ones in brackets. */
static void usage_lists_options(const char *cmd, const char *const *optional)
{
    th_run_result r;
    th_run(&r, "%s --help", cmd);
    cr_assert(r.exited && r.code == 0, "fewshot %s --help: %s", cmd, th_describe(&r));
    char *end = strstr(r.out, "\n\n");
    cr_assert_not_null(end, "%s", r.out);
    char *usage = strndup(r.out, (size_t)(end - r.out));
    const char *opts = strstr(r.out, "options:\n");
    cr_assert_not_null(opts, "%s", r.out);
    for (const char *line = strchr(opts, '\n'); line && line[1]; line = strchr(line + 1, '\n')) {
        char name[64];
        if (sscanf(line + 1, " %63s", name) != 1 || name[0] != '-' || !strcmp(name, "-h,"))
            continue;
        cr_assert_not_null(strstr(usage, name), "fewshot %s: the usage lines lack %s:\n%s", cmd, name, usage);
    }
    for (int i = 0; optional[i]; i++) {
        char bracketed[64];
        snprintf(bracketed, sizeof bracketed, "[%s", optional[i]);
        cr_assert_not_null(strstr(usage, bracketed), "fewshot %s: %s is optional but not in brackets:\n%s", cmd,
                           optional[i], usage);
    }
    free(usage);
    th_run_free(&r);
}

Test(inputs, usage_lines_show_optional_options)
{
    usage_lists_options("init", (const char *const[]){"--config", "--seed", "--set", NULL});
    usage_lists_options("cache", (const char *const[]){"--config", "--cache", "--intervene", "--shapes", "-o", NULL});
    usage_lists_options("grad", (const char *const[]){"--config", "--cache", "--intervene", "--threads", NULL});
    usage_lists_options("steps", (const char *const[]){"--config", "--cache", "--intervene", "--threads", NULL});
    usage_lists_options("train", (const char *const[]){"--set", "--out", "--resume", "--stop-after", "--cache", NULL});
    usage_lists_options("eval", (const char *const[]){"--config", "--input", "--per-sequence", "--cache", "-o", NULL});
    usage_lists_options("classify", (const char *const[]){"--config", "--threads", "--kv-stats", "-o", NULL});
    usage_lists_options("dataset synth", (const char *const[]){"--classes", "--dim", "--seed", "--path", NULL});
    usage_lists_options("bench", (const char *const[]){"--config", "--threads", "--seconds", "--repeat", "--json", NULL});
    usage_lists_options("sweep run", (const char *const[]){"-j", "--threads-per-run", "--no-progress", NULL});
    usage_lists_options("sweep task", (const char *const[]){"--threads-per-run", "--log-every", NULL});
    usage_lists_options("sweep slurm", (const char *const[]){"--submit", NULL});
    usage_lists_options("sweep summarize", (const char *const[]){"--csv", "--metric", NULL});
}

/* A model of another input size than the shipped 512-dim examples: the error says what
 * the model reads and where to look; the 64-dim examples fit it. */
Test(inputs, data_width_mismatch_names_both_widths)
{
    EXPECT_FAIL(fmt("train --config configs/ih_main.json --set model.input_dim=64 --out %s", th_path(g_dir, "w64")),
                "model.input_dim is 64", "datasets/synth_s0.h5 have dim 512");
}

Test(inputs, input_size_mismatch_hints_at_inputs_of_that_size)
{
    const char *m64 = th_path(g_dir, "d64.safetensors"), *m512 = th_path(g_dir, "d512.safetensors");
    expect_ok_line(fmt("init --set model.input_dim=64 -o %s", m64));
    expect_ok_line(fmt("init -o %s", m512));
    EXPECT_FAIL(fmt("cache --model %s --input datasets/examples/seq_doc.json --shapes", m64),
                "datasets/examples/seq_doc.json", "input_dim = 64", "got 512", "docs/formats.md",
                "datasets/examples/*_small.json");
    EXPECT_FAIL(fmt("cache --model %s --input datasets/examples/seq_small.json --shapes", m512), "input_dim = 512",
                "got 64", "docs/formats.md");
    EXPECT_FAIL(fmt("classify --model %s --context datasets/examples/seq_small.json --queries "
                    "datasets/examples/classify_queries.json", m64),
                "classify_queries.json", "docs/formats.md");
    expect_ok_line(fmt("cache --model %s --input datasets/examples/seq_small.json --shapes", m64));
    expect_ok_line(fmt("eval --model %s --input datasets/examples/batch_small.json", m64));
    expect_ok_line(fmt("cache --model %s --input datasets/examples/seq_doc.json --shapes", m512));
}
