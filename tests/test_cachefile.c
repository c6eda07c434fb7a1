/* Cache files at scale (issue 14): the %.9g formatter, the streamed JSON dump (byte for
 * byte the cJSON-built dump it replaces, one chunk or many), the --names filter, the HDF5
 * and safetensors files (leaf by leaf equal to the JSON), HDF5 and sampled inputs, and
 * clean failures (unknown format, unwritable path, full disk) that leave no file. */
#include <criterion/criterion.h>

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <float.h>
#include <hdf5.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/fileio.h"
#include "base/numfmt.h"
#include "fewshot/cachefile.h"
#include "train/eval.h"
#include "fewshot/forward.h"
#include "fewshot/interventions.h"
#include "fewshot/safetensors.h"
#include "fewshot/seqio.h"
#include "golden_util.h"
#include "helpers.h"
#include "model/leaves.h"
#include "model/path.h"

#define DOC TH_GOLDEN "/doc"
#define DOC_ARGS "--config " DOC "/config.json --model " DOC "/params.safetensors"

/* ---------------------------------------------------------------- %.9g */

static void expect_g9(float x)
{
    char ours[FS_G9_MAX], want[64];
    int n = fs_format_g9(ours, x);
    snprintf(want, sizeof want, "%.9g", (double)x);
    unsigned bits;
    memcpy(&bits, &x, sizeof bits);
    cr_assert_str_eq(ours, want, "bits 0x%08x", bits);
    cr_assert_eq(n, (int)strlen(want));
}

Test(cachefile, format_g9_is_printf)
{
    const float edges[] = {0.0f, -0.0f, 1.0f, -1.0f, 0.1f, 1e-4f, 9.99999e-5f, 1e-5f, 123456789.0f, 1e9f, 999999999.0f,
                           1e10f, FLT_MAX, -FLT_MAX, FLT_MIN, 1e-45f, -1e-45f, 0.5f, 2.5f, 1e20f, -1e20f, 3.0e38f};
    for (size_t i = 0; i < sizeof edges / sizeof edges[0]; i++)
        expect_g9(edges[i]);
    for (int e = -45; e <= 38; e++) /* around every power of ten */
        for (int d = -3; d <= 3; d++)
            expect_g9(nextafterf((float)pow(10, e), d > 0 ? INFINITY : 0) * (d == 0 ? 1 : 1));
    th_rng r = {12345};
    for (int i = 0; i < 2000000; i++) {
        unsigned bits = (unsigned)th_rng_u64(&r);
        float x;
        memcpy(&x, &bits, 4);
        if (i % 2)
            x = (float)th_rng_sym(&r, 4.0);
        if (isfinite(x))
            expect_g9(x);
    }
}

/* ---------------------------------------------------------------- JSON bytes */

/* The dump as it was built before streaming: a cJSON tree, cJSON_Print, a newline. */
static cJSON *ref_array(const float *x, const int *shape, int nd, bool is_int)
{
    cJSON *arr = cJSON_CreateArray();
    size_t stride = 1;
    for (int i = 1; i < nd; i++)
        stride *= (size_t)shape[i];
    for (int i = 0; i < shape[0]; i++) {
        if (nd > 1) {
            cJSON_AddItemToArray(arr, ref_array(x + (size_t)i * stride, shape + 1, nd - 1, is_int));
            continue;
        }
        char buf[40];
        if (is_int)
            snprintf(buf, sizeof buf, "%d", (int)x[i]);
        else if (isfinite(x[i]))
            snprintf(buf, sizeof buf, "%.9g", (double)x[i]);
        else
            snprintf(buf, sizeof buf, "%s", isnan(x[i]) ? "NaN" : x[i] > 0 ? "Infinity" : "-Infinity");
        cJSON_AddItemToArray(arr, cJSON_CreateRaw(buf));
    }
    return arr;
}

static char *reference_dump(const fs_acts *a, int B, bool batched)
{
    cJSON *root = cJSON_CreateObject();
    for (int i = 0; i < a->count; i++) {
        const fs_leaf *l = &a->leaves[i];
        if (l->hidden)
            continue;
        int shape[5], nd = 0;
        if (batched)
            shape[nd++] = B;
        for (int d = 0; d < l->ndim; d++)
            shape[nd++] = l->shape[d];
        cJSON *item = l->is_null ? cJSON_CreateNull() : ref_array(fs_leaf_ptr(a, i, 0), shape, nd, l->is_int);
        fs_path_part parts[8];
        int n = fs_path_split(l->path, parts, 8);
        cJSON *node = root;
        for (int k = 0; k < n - 1; k++) {
            if (parts[k].key[0]) {
                cJSON *child = cJSON_GetObjectItemCaseSensitive(node, parts[k].key);
                if (!child) {
                    child = parts[k + 1].key[0] ? cJSON_CreateObject() : cJSON_CreateArray();
                    cJSON_AddItemToObject(node, parts[k].key, child);
                }
                node = child;
            } else {
                while (cJSON_GetArraySize(node) <= parts[k].index)
                    cJSON_AddItemToArray(node, cJSON_CreateObject());
                node = cJSON_GetArrayItem(node, parts[k].index);
            }
        }
        cJSON_AddItemToObject(node, parts[n - 1].key, item);
    }
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    size_t len = strlen(text);
    text = realloc(text, len + 2);
    text[len] = '\n', text[len + 1] = 0;
    return text;
}

/* Stream sequences [0, B) of `full` into a JSON file, `chunk` sequences per put (copied
 * into a smaller arena, as the chunked command does), and return the text. */
static char *streamed_dump(const fs_acts *full, int B, bool batched, int chunk, const bool *sel_or_null)
{
    char dir[128];
    th_tmpdir(dir, sizeof dir, "cachefile_stream");
    const char *path = th_path(dir, "dump.json");
    fs_error err = {{0}};
    fs_acts part;
    cr_assert_eq(fs_acts_create(&part, &full->cfg, full->P, chunk, &err), 0, "%s", err.msg);
    bool *all = calloc((size_t)full->count, sizeof *all);
    cr_assert_geq(fs_leaf_select(full, NULL, all, &err), 1);
    fs_cache_file_opts opts = {.format = FS_CACHE_JSON, .batched = batched};
    fs_cache_writer *w;
    cr_assert_eq(fs_cache_writer_open(&w, path, &part, sel_or_null ? sel_or_null : all, B, &opts, &err), 0, "%s",
                 err.msg);
    for (int b0 = 0; b0 < B; b0 += chunk) {
        int n = B - b0 < chunk ? B - b0 : chunk;
        for (int i = 0; i < full->count; i++)
            memcpy(fs_leaf_ptr(&part, i, 0), fs_leaf_ptr(full, i, b0), sizeof(float) * full->leaves[i].numel * n);
        cr_assert_eq(fs_cache_writer_put(w, &part, n, &err), 0, "%s", err.msg);
    }
    cr_assert_eq(fs_cache_writer_close(w, &err), 0, "%s", err.msg);
    char *text = th_read_file(path, NULL);
    cr_assert_not_null(text);
    th_rmtree(dir);
    free(all);
    fs_acts_free(&part);
    return text;
}

/* Forward a golden input (with its clamp when it has one) into a fresh arena. */
static void forward_file(const char *model_name, const char *file, fs_model *m, fs_acts *acts, fs_seq_batch *batch)
{
    golden_load_model(model_name, m);
    fs_error err = {{0}};
    cJSON *doc = fs_json_load(file, &err);
    cr_assert_not_null(doc, "%s", err.msg);
    cr_assert_eq(fs_seq_batch_from_json(doc, file, m->cfg.input_dim, m->cfg.num_classes, batch, &err), 0, "%s", err.msg);
    cr_assert_eq(fs_acts_create(acts, &m->cfg, batch->P, batch->B, &err), 0, "%s", err.msg);
    fs_clamp_set clamps;
    fs_clamp_set_init(&clamps, acts);
    if (cJSON_GetObjectItem(doc, "cache_mask"))
        cr_assert_eq(fs_clamp_set_from_json(&clamps, acts, cJSON_GetObjectItem(doc, "cache"),
                                            cJSON_GetObjectItem(doc, "cache_mask"), file, file, &err),
                     0, "%s", err.msg);
    fs_acts_set_inputs(acts, batch->examples, batch->labels, 0, batch->B);
    fs_forward(m, acts, &clamps, batch->B);
    fs_clamp_set_free(&clamps);
    cJSON_Delete(doc);
}

Test(cachefile, json_stream_is_byte_identical_to_the_cjson_dump, .timeout = 120)
{
    const char *models[] = {"doc", "attn_only", "ape", "sinusoidal"};
    const char *files[] = {"forward_0.json", "forward_1.json", "grad.json", "clamp_clamp_attn_row.json",
                           "clamp_preserve_patterns_ablate.json"};
    int compared = 0;
    for (int mi = 0; mi < 4; mi++) {
        for (int fi = 0; fi < 5; fi++) {
            char file[256];
            snprintf(file, sizeof file, TH_GOLDEN "/%s/%s", models[mi], files[fi]);
            if (access(file, R_OK) != 0)
                continue;
            fs_model m;
            fs_acts acts;
            fs_seq_batch batch;
            forward_file(models[mi], file, &m, &acts, &batch);
            char *want = reference_dump(&acts, batch.B, batch.batched);
            for (int chunk = batch.B; chunk >= 1; chunk = chunk > 3 ? 3 : chunk - 1) { /* one chunk, then spooled */
                char *got = streamed_dump(&acts, batch.B, batch.batched, chunk, NULL);
                cr_assert(strcmp(got, want) == 0, "%s: streamed dump (chunks of %d) differs from the cJSON dump",
                          file, chunk);
                free(got);
                compared++;
            }
            free(want);
            fs_acts_free(&acts);
            fs_seq_batch_free(&batch);
            fs_model_free(&m);
        }
    }
    cr_assert_geq(compared, 4 * 3 + 4 * 2 * 2, "only %d dumps compared", compared);
}

/* ---------------------------------------------------------------- --names */

Test(cachefile, names_filter_globs_dotted_paths)
{
    fs_model_config c;
    th_tiny_config(&c);
    c.depth = 2;
    fs_acts a;
    fs_error err = {{0}};
    cr_assert_eq(fs_acts_create(&a, &c, 3, 1, &err), 0, "%s", err.msg);
    bool *sel = calloc((size_t)a.count, sizeof *sel);
    cr_assert_eq(fs_leaf_select(&a, "transformer_output.block_outputs.*.attn_output.attn_scores", sel, &err), 2, "%s",
                 err.msg);
    cr_assert(sel[fs_block_leaf_id(0, B_ATTN_SCORES)] && sel[fs_block_leaf_id(1, B_ATTN_SCORES)]);
    cr_assert_eq(fs_leaf_select(&a, "out", sel, &err), 1);
    cr_assert(sel[fs_top_after(&c, L_OUT)]);
    /* "*.q" crosses dots; the bracket spelling selects the same leaf */
    cr_assert_eq(fs_leaf_select(&a, "*.q", sel, &err), 2);
    cr_assert_eq(fs_leaf_select(&a, "transformer_output.block_outputs[1].attn_output.q,out", sel, &err), 2);
    cr_assert(sel[fs_block_leaf_id(1, B_Q)] && !sel[fs_block_leaf_id(0, B_Q)]);
    /* a character class still works as a glob */
    cr_assert_eq(fs_leaf_select(&a, "*.block_outputs.[0-1].out", sel, &err), 2);
    /* hidden leaves are never selected; NULL selects every visible leaf */
    cr_assert_eq(fs_leaf_select(&a, "*", sel, &err), fs_leaf_select(&a, NULL, sel, &err));
    cr_assert(!sel[fs_block_leaf_id(0, B_LN1_MEAN)]);
    /* a pattern matching nothing names itself and the nearest leaves */
    cr_assert_eq(fs_leaf_select(&a, "out,attn_score", sel, &err), -1);
    cr_assert(strstr(err.msg, "'attn_score'") && strstr(err.msg, "attn_output.attn_scores"), "%s", err.msg);
    cr_assert_eq(fs_leaf_select(&a, "out,,q", sel, &err), -1);
    cr_assert(strstr(err.msg, "--names"), "%s", err.msg);
    free(sel);
    fs_acts_free(&a);
}

/* The streamed dump of a selection equals the full dump's tree restricted to it. */
Test(cachefile, names_filter_in_the_json_dump)
{
    fs_model m;
    fs_acts acts;
    fs_seq_batch batch;
    forward_file("doc", DOC "/grad.json", &m, &acts, &batch);
    bool *sel = calloc((size_t)acts.count, sizeof *sel);
    fs_error err = {{0}};
    cr_assert_eq(fs_leaf_select(&acts, "*.block_outputs.1.attn_output.attn_scores,labels", sel, &err), 2);
    for (int chunk = batch.B; chunk >= 3; chunk -= batch.B - 3) {
        char *text = streamed_dump(&acts, batch.B, true, chunk, sel);
        cJSON *got = cJSON_Parse(text), *full = cJSON_Parse(reference_dump(&acts, batch.B, true));
        cr_assert_not_null(got, "the filtered dump is not JSON: %.200s", text);
        cr_assert_eq(cJSON_GetArraySize(got), 2);
        cJSON *blocks = cJSON_GetObjectItem(cJSON_GetObjectItem(got, "transformer_output"), "block_outputs");
        cr_assert_eq(cJSON_GetArraySize(blocks), 2, "block 1 keeps its index");
        cr_assert_eq(cJSON_GetArraySize(cJSON_GetArrayItem(blocks, 0)), 0);
        cJSON *want_blocks = cJSON_GetObjectItem(cJSON_GetObjectItem(full, "transformer_output"), "block_outputs");
        cJSON *want = cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetArrayItem(want_blocks, 1), "attn_output"),
                                          "attn_scores");
        cJSON *have = cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetArrayItem(blocks, 1), "attn_output"),
                                          "attn_scores");
        cr_assert(cJSON_Compare(have, want, true));
        cr_assert(cJSON_Compare(cJSON_GetObjectItem(got, "labels"), cJSON_GetObjectItem(full, "labels"), true));
        cJSON_Delete(got);
        cJSON_Delete(full);
        free(text);
    }
    free(sel);
    fs_acts_free(&acts);
    fs_seq_batch_free(&batch);
    fs_model_free(&m);
}

/* ---------------------------------------------------------------- formats agree */

/* Values of a JSON subtree in row-major order. */
static void flatten(const cJSON *v, float *out, size_t *n)
{
    if (cJSON_IsArray(v)) {
        for (const cJSON *c = v->child; c; c = c->next)
            flatten(c, out, n);
    } else {
        out[(*n)++] = (float)v->valuedouble;
    }
}

static const cJSON *json_leaf(const cJSON *root, const char *path)
{
    fs_path_part parts[8];
    int n = fs_path_split(path, parts, 8);
    const cJSON *v = root;
    for (int i = 0; i < n && v; i++)
        v = parts[i].key[0] ? cJSON_GetObjectItemCaseSensitive(v, parts[i].key) : cJSON_GetArrayItem(v, parts[i].index);
    return v;
}

static float *h5_read(const char *file, const char *name, int *rank, hsize_t *dims)
{
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    hid_t f = H5Fopen(file, H5F_ACC_RDONLY, H5P_DEFAULT);
    cr_assert_geq(f, 0, "%s", file);
    hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
    cr_assert_geq(d, 0, "%s: no dataset %s", file, name);
    hid_t s = H5Dget_space(d);
    *rank = H5Sget_simple_extent_ndims(s);
    H5Sget_simple_extent_dims(s, dims, NULL);
    size_t n = 1;
    for (int i = 0; i < *rank; i++)
        n *= dims[i];
    float *x = malloc(n * sizeof *x);
    cr_assert_geq(H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, x), 0);
    H5Sclose(s), H5Dclose(d), H5Fclose(f);
    return x;
}

/* A dataset's layout: chunked along B (chunk dims [k, full per-sequence shape]) and, in
 * files written with --compress, shuffled and deflated. */
static void h5_expect_layout(const char *file, const char *name, int rank, bool compressed)
{
    hid_t f = H5Fopen(file, H5F_ACC_RDONLY, H5P_DEFAULT), d = H5Dopen2(f, name, H5P_DEFAULT);
    hid_t dcpl = H5Dget_create_plist(d), space = H5Dget_space(d);
    cr_assert_eq(H5Pget_layout(dcpl), H5D_CHUNKED, "%s", name);
    hsize_t chunk[6], dims[6];
    cr_assert_eq(H5Pget_chunk(dcpl, 6, chunk), rank);
    H5Sget_simple_extent_dims(space, dims, NULL);
    cr_assert(chunk[0] >= 1 && chunk[0] <= dims[0]);
    for (int i = 1; i < rank; i++)
        cr_assert_eq(chunk[i], dims[i], "%s: chunks hold whole sequences", name);
    cr_assert_eq(H5Pget_nfilters(dcpl), compressed ? 2 : 0, "%s", name);
    H5Sclose(space), H5Pclose(dcpl), H5Dclose(d), H5Fclose(f);
}

static char *h5_attr(const char *file, const char *name)
{
    hid_t f = H5Fopen(file, H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t a = H5Aopen(f, name, H5P_DEFAULT);
    cr_assert_geq(a, 0, "%s: no attribute %s", file, name);
    hid_t t = H5Aget_type(a);
    size_t n = H5Tget_size(t);
    char *s = calloc(n + 1, 1);
    cr_assert_geq(H5Aread(a, t, s), 0);
    H5Tclose(t), H5Aclose(a), H5Fclose(f);
    return s;
}

/* Every leaf of the h5 and safetensors files equals the JSON dump's, chunked (3) or not. */
static void check_formats(const char *names, const char *chunk)
{
    char dir[128];
    th_tmpdir(dir, sizeof dir, "cachefile_formats");
    const char *json = th_path(dir, "c.json"), *h5 = th_path(dir, "c.h5"), *st = th_path(dir, "c.safetensors");
    char extra[256];
    snprintf(extra, sizeof extra, "%s%s --chunk %s", names ? "--names " : "", names ? names : "", chunk);
    th_run_ok("cache " DOC_ARGS " --input " DOC "/grad.json %s -o %s", extra, json);
    th_run_ok("cache " DOC_ARGS " --input " DOC "/grad.json %s -o %s --compress 4", extra, h5);
    th_run_ok("cache " DOC_ARGS " --input " DOC "/grad.json %s --format safetensors -o %s", extra, st);
    fs_error err = {{0}};
    cJSON *tree = fs_json_load(json, &err);
    cr_assert_not_null(tree, "%s", err.msg);
    fs_st_file sf;
    cr_assert_eq(fs_st_read(st, &sf, &err), 0, "%s", err.msg);
    cr_assert_str_eq(fs_st_meta(&sf, "num_sequences"), "8");
    cr_assert(strstr(fs_st_meta(&sf, "config"), "\"d_model\":64"));
    char *cfg_attr = h5_attr(h5, "config"), *input_attr = h5_attr(h5, "input");
    cr_assert_str_eq(cfg_attr, fs_st_meta(&sf, "config"));
    cr_assert_str_eq(input_attr, DOC "/grad.json");
    fs_model m;
    golden_load_model("doc", &m);
    fs_acts layout;
    cr_assert_eq(fs_acts_create(&layout, &m.cfg, 3, 1, &err), 0);
    bool *sel = calloc((size_t)layout.count, sizeof *sel);
    cr_assert_geq(fs_leaf_select(&layout, names, sel, &err), 1);
    int leaves = 0;
    for (int i = 0; i < layout.count; i++) {
        const fs_leaf *l = &layout.leaves[i];
        const cJSON *jv = json_leaf(tree, l->path);
        if (!sel[i]) {
            cr_assert(!jv || !names, "%s is in the JSON but not selected", l->path);
            continue;
        }
        cr_assert_not_null(jv, "%s missing from the JSON", l->path);
        char dotted[160], slashed[170];
        fs_leaf_dotted(l, dotted, sizeof dotted);
        snprintf(slashed, sizeof slashed, "/%s", dotted);
        for (char *c = slashed; *c; c++)
            *c = *c == '.' ? '/' : *c;
        const fs_st_tensor *t = fs_st_find(&sf, dotted);
        if (l->is_null) {
            cr_assert(cJSON_IsNull(jv) && !t);
            continue;
        }
        size_t n = 8 * l->numel, got = 0;
        float *want = malloc(n * sizeof *want);
        flatten(jv, want, &got);
        cr_assert_eq(got, n, "%s: %zu values in the JSON", l->path, got);
        cr_assert_not_null(t, "%s missing from the safetensors file", dotted);
        cr_assert_eq(t->ndim, l->ndim + 1);
        cr_assert_eq(t->shape[0], 8);
        int rank;
        hsize_t dims[6];
        float *hv = h5_read(h5, slashed, &rank, dims);
        h5_expect_layout(h5, slashed, rank, true);
        cr_assert_eq(rank, l->ndim + 1);
        cr_assert_eq(dims[0], 8);
        for (int d = 0; d < l->ndim; d++)
            cr_assert(dims[d + 1] == (hsize_t)l->shape[d] && t->shape[d + 1] == l->shape[d]);
        for (size_t k = 0; k < n; k++) {
            cr_assert(want[k] == t->data[k], "%s[%zu]: json %.9g safetensors %.9g", dotted, k, want[k], t->data[k]);
            cr_assert(want[k] == hv[k], "%s[%zu]: json %.9g h5 %.9g", dotted, k, want[k], hv[k]);
        }
        free(hv);
        free(want);
        leaves++;
    }
    cr_assert_eq(leaves, sf.count, "every tensor of the safetensors file was compared");
    cr_assert_geq(leaves, names ? 2 : 40);
    free(sel);
    free(cfg_attr);
    free(input_attr);
    fs_acts_free(&layout);
    fs_model_free(&m);
    fs_st_free(&sf);
    cJSON_Delete(tree);
    th_rmtree(dir);
}

Test(cachefile, formats_equal_the_json_leaf_by_leaf, .timeout = 120)
{
    check_formats(NULL, "8");
    check_formats(NULL, "3");
    check_formats("transformer_output.block_outputs.*.attn_output.attn_scores,out", "3");
}

/* ---------------------------------------------------------------- failures */

/* No file named `name` nor any temporary beside it is left in dir. */
static void expect_no_output(const char *dir, const char *name)
{
    DIR *d = opendir(dir);
    if (!d && errno == ENOENT)
        return; /* a missing directory holds nothing */
    cr_assert_not_null(d);
    struct dirent *e;
    while ((e = readdir(d)))
        cr_assert(strncmp(e->d_name, name, strlen(name)) != 0 && strncmp(e->d_name, ".fewshot", 8) != 0,
                  "%s/%s was left behind", dir, e->d_name);
    closedir(d);
}

static void expect_fail(const char *dir, const char *name, const char *args, const char *needle)
{
    th_run_result r;
    th_run(&r, "cache " DOC_ARGS " --input " DOC "/grad.json %s -o %s", args, th_path(dir, name));
    cr_assert(r.exited && r.code == 1, "%s %s: %s", args, name, th_describe(&r));
    cr_assert(strstr(r.err, needle), "%s %s: message '%s' should mention '%s'", args, name, r.err, needle);
    th_run_free(&r);
    expect_no_output(dir, name);
}

Test(cachefile, bad_format_and_unwritable_path)
{
    char dir[128];
    th_tmpdir(dir, sizeof dir, "cachefile_bad");
    expect_fail(dir, "c.json", "--format xml", "unknown format 'xml'");
    expect_fail(dir, "c.json", "--compress 11", "--compress");
    expect_fail(dir, "c.json", "--compress 3", "h5 format only");
    expect_fail(dir, "c.json", "--names nothing_like_this", "nearest names");
    char sub[200];
    snprintf(sub, sizeof sub, "%s/missing", dir);
    expect_fail(sub, "c.h5", "", "cannot create");
    expect_fail(sub, "c.safetensors", "", "cannot create");
    expect_fail(sub, "c.json", "", "cannot create");
    th_run_result r;
    th_run(&r, "cache " DOC_ARGS " --input " DOC "/grad.json --format h5");
    cr_assert(r.exited && r.code == 1 && strstr(r.err, "-o FILE"), "%s", th_describe(&r));
    th_run_free(&r);
    th_rmtree(dir);
}

/* A full disk, simulated by a file size limit (SIGXFSZ ignored, so writes fail with
 * EFBIG as on a full file system): a clear error and no file, for every format, one
 * chunk or several (the JSON spool). */
Test(cachefile, full_disk_leaves_no_file, .timeout = 60)
{
    char dir[128];
    th_tmpdir(dir, sizeof dir, "cachefile_full");
    struct rlimit old, small = {64 << 10, 64 << 10};
    getrlimit(RLIMIT_FSIZE, &old);
    signal(SIGXFSZ, SIG_IGN);
    cr_assert_eq(setrlimit(RLIMIT_FSIZE, &small), 0);
    const char *names[] = {"c.json", "c.h5", "c.safetensors"};
    for (int i = 0; i < 3; i++) {
        th_run_result r;
        for (int chunked = 0; chunked < 2; chunked++) {
            th_run(&r, "cache " DOC_ARGS " --input " DOC "/grad.json --chunk %d -o %s", chunked ? 3 : 8,
                   th_path(dir, names[i]));
            cr_assert(r.exited && r.code == 1, "%s: %s", names[i], th_describe(&r));
            cr_assert(strstr(r.err, names[i]) && (strstr(r.err, "too large") || strstr(r.err, "disk full")),
                      "%s: %s", names[i], r.err);
            th_run_free(&r);
            expect_no_output(dir, names[i]);
        }
    }
    setrlimit(RLIMIT_FSIZE, &old);
    th_rmtree(dir);
}

/* ---------------------------------------------------------------- inputs */

/* A batch as an HDF5 input file (labels stored as `label_type`). */
static void write_h5_input(const char *path, const fs_seq_batch *b, hid_t label_type)
{
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    hsize_t ed[3] = {(hsize_t)b->B, (hsize_t)b->P, (hsize_t)b->D}, ld[2] = {(hsize_t)b->B, (hsize_t)b->P};
    hid_t es = H5Screate_simple(3, ed, NULL), ls = H5Screate_simple(2, ld, NULL);
    hid_t e = H5Dcreate2(f, "examples", H5T_IEEE_F32LE, es, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    hid_t l = H5Dcreate2(f, "labels", label_type, ls, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    cr_assert_geq(H5Dwrite(e, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, b->examples), 0);
    cr_assert_geq(H5Dwrite(l, H5T_NATIVE_INT, H5S_ALL, H5S_ALL, H5P_DEFAULT, b->labels), 0);
    H5Dclose(e), H5Dclose(l), H5Sclose(es), H5Sclose(ls), H5Fclose(f);
}

/* The golden batch as an HDF5 input gives the same dump as the JSON input. */
Test(cachefile, hdf5_input_equals_json_input)
{
    char dir[128];
    th_tmpdir(dir, sizeof dir, "cachefile_h5in");
    fs_error err = {{0}};
    fs_seq_batch b;
    cr_assert_eq(fs_seq_batch_load(DOC "/grad.json", 512, 5, &b, &err), 0, "%s", err.msg);
    const char *in = th_path(dir, "in.h5");
    write_h5_input(in, &b, H5T_STD_I64LE);
    const char *a = th_path(dir, "a.json"), *c = th_path(dir, "c.json");
    for (int chunk = 8; chunk >= 3; chunk -= 5) {
        char cs[8];
        snprintf(cs, sizeof cs, "%d", chunk);
        th_run_ok("cache " DOC_ARGS " --input " DOC "/grad.json --chunk %s -o %s", cs, a);
        th_run_ok("cache " DOC_ARGS " --input %s --chunk %s -o %s", in, cs, c);
        char *ta = th_read_file(a, NULL), *tc = th_read_file(c, NULL);
        cr_assert(ta && tc && strcmp(ta, tc) == 0, "HDF5 input dump differs from the JSON input dump");
        free(ta);
        free(tc);
    }
    /* a labels dataset of the wrong shape is an error naming the file and dataset */
    hid_t f = H5Fopen(in, H5F_ACC_RDWR, H5P_DEFAULT);
    H5Ldelete(f, "labels", H5P_DEFAULT);
    hsize_t bad[2] = {(hsize_t)b.B, 2};
    hid_t ls = H5Screate_simple(2, bad, NULL);
    hid_t l = H5Dcreate2(f, "labels", H5T_STD_I32LE, ls, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dclose(l), H5Sclose(ls), H5Fclose(f);
    th_run_result r;
    th_run(&r, "cache " DOC_ARGS " --input %s", in);
    cr_assert(r.exited && r.code == 1 && strstr(r.err, in) && strstr(r.err, "labels"), "%s", th_describe(&r));
    th_run_free(&r);
    fs_seq_batch_free(&b);
    th_rmtree(dir);
}

/* --sample: N sequences from the config's samplers, reproducible from the seed. */
Test(cachefile, sample_is_seeded, .timeout = 60)
{
    char dir[128];
    th_tmpdir(dir, sizeof dir, "cachefile_sample");
    const char *cfg = th_path(dir, "run.json"), *model = th_path(dir, "m.safetensors");
    th_write_text(cfg, "{\"model\": {\"input_dim\": 64, \"num_classes\": 100, \"d_model\": 16, \"num_heads\": 2, \"depth\": 2, \"mlp_ratio\": 2},\n"
                       " \"data\": {\"file\": \"datasets/synth_small.h5\", \"class_split\": [100, 50, 50],"
                       " \"exemplar_split\": [3, 2, 0]},\n"
                       " \"train\": {\"train_context_len\": 2},\n"
                       " \"eval\": {\"eval_iters\": 4, \"evaluators\": [{\"name\": \"test_cls\", \"classes\": \"test\","
                       " \"exemplars\": \"all\", \"context_len\": 4}]}}\n");
    th_run_ok("init --config %s -o %s", cfg, model);
    const char *x = th_path(dir, "x.json"), *y = th_path(dir, "y.json"), *z = th_path(dir, "z.json");
    th_run_ok("cache --config %s --model %s --sample 5 --seed 7 --names labels,examples -o %s", cfg, model, x);
    th_run_ok("cache --config %s --model %s --sample 5 --seed 7 --names labels,examples --chunk 2 -o %s", cfg, model, y);
    th_run_ok("cache --config %s --model %s --sample 5 --seed 8 --names labels,examples -o %s", cfg, model, z);
    char *tx = th_read_file(x, NULL), *ty = th_read_file(y, NULL), *tz = th_read_file(z, NULL);
    cr_assert(tx && ty && tz);
    cr_assert_str_eq(tx, ty, "same seed, same sequences");
    cr_assert(strcmp(tx, tz) != 0, "another seed draws other sequences");
    cJSON *j = cJSON_Parse(tx);
    cr_assert_eq(cJSON_GetArraySize(cJSON_GetObjectItem(j, "labels")), 5);
    cr_assert_eq(cJSON_GetArraySize(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "labels"), 0)), 3, "P = 2 + 1");
    cJSON_Delete(j);
    th_run_ok("cache --config %s --model %s --sample 3 --evaluator test_cls --names labels -o %s", cfg, model, x);
    free(tx);
    tx = th_read_file(x, NULL);
    j = cJSON_Parse(tx);
    cr_assert_eq(cJSON_GetArraySize(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "labels"), 0)), 5, "P = 4 + 1");
    cJSON_Delete(j);
    th_run_result r;
    th_run(&r, "cache --config %s --model %s --sample 3 --evaluator nope", cfg, model);
    cr_assert(r.exited && r.code == 1 && strstr(r.err, "nope") && strstr(r.err, "test_cls"), "%s", th_describe(&r));
    th_run_free(&r);
    th_run(&r, "cache --config %s --model %s --sample 3 --input %s", cfg, model, x);
    cr_assert(r.exited && r.code == 1 && strstr(r.err, "--sample"), "%s", th_describe(&r));
    th_run_free(&r);
    free(tx);
    free(ty);
    free(tz);
    th_rmtree(dir);
}

Test(cachefile, shapes_honour_names)
{
    th_run_result r;
    th_run(&r, "cache " DOC_ARGS " --input " DOC "/grad.json --shapes --names *.block_outputs.1.attn_output.attn_scores");
    cr_assert(r.exited && r.code == 0, "%s", th_describe(&r));
    cr_assert(strstr(r.out, "\"attn_scores\": [8, 1, 8, 5, 5]") && !strstr(r.out, "\"examples\""), "%s", r.out);
    th_run_free(&r);
}

/* ---------------------------------------------------------------- eval, classify */

/* eval --per-sequence streams the text cJSON_Print gave the metrics tree; an HDF5 copy
 * of the input gives the same text. */
Test(cachefile, eval_per_sequence_streams_the_cjson_text, .timeout = 60)
{
    fs_model m;
    golden_load_model("doc", &m);
    fs_error err = {{0}};
    fs_seq_batch b;
    const char *path = DOC "/eval_metrics.json";
    cr_assert_eq(fs_seq_batch_load(path, 512, 5, &b, &err), 0, "%s", err.msg);
    fs_metrics mean, *per = calloc((size_t)b.B, sizeof *per);
    fs_eval_ws ws = {0};
    cr_assert_eq(fs_eval_sequences(&m, b.examples, b.labels, b.B, b.P, NULL, &ws, &mean, per, &err), 0, "%s", err.msg);
    cJSON *out = cJSON_CreateObject(), *ms = cJSON_AddObjectToObject(out, "metrics");
    for (int k = 0; k < FS_NUM_METRICS; k++) {
        cJSON *arr = cJSON_AddArrayToObject(ms, fs_metric_names[k]);
        for (int i = 0; i < b.B; i++)
            cJSON_AddItemToArray(arr, cJSON_CreateNumber(*fs_metric_field(&per[i], k)));
    }
    char *want = cJSON_Print(out);
    char dir[128];
    th_tmpdir(dir, sizeof dir, "cachefile_eval");
    const char *o1 = th_path(dir, "a.json"), *o2 = th_path(dir, "b.json"), *h5 = th_path(dir, "in.h5");
    th_run_ok("eval " DOC_ARGS " --input %s --per-sequence -o %s", path, o1);
    char *got = th_read_file(o1, NULL);
    cr_assert_not_null(got);
    size_t n = strlen(want);
    cr_assert(strncmp(got, want, n) == 0 && !strcmp(got + n, "\n"), "streamed per-sequence metrics differ");
    write_h5_input(h5, &b, H5T_STD_I32LE);
    th_run_ok("eval " DOC_ARGS " --input %s --per-sequence -o %s", h5, o2);
    char *got2 = th_read_file(o2, NULL);
    cr_assert(got2 && !strcmp(got, got2), "HDF5 input: per-sequence metrics differ from the JSON input's");
    free(got2);
    free(got);
    free(want);
    cJSON_Delete(out);
    fs_eval_ws_free(&ws);
    free(per);
    fs_seq_batch_free(&b);
    fs_model_free(&m);
    th_rmtree(dir);
}

/* Every number of a tree becomes true (a mask clamping everything the tree sets). */
static void all_true(cJSON *v)
{
    for (cJSON *c = v->child; c; c = c->next) {
        if (cJSON_IsNumber(c)) {
            c->type = cJSON_True;
        } else {
            all_true(c);
        }
    }
}

/* Named interventions (including a clean pass) and per-sequence clamps hold on across
 * chunks: a chunked dump equals the one-chunk dump within the golden tolerance. */
Test(cachefile, interventions_and_clamps_across_chunks, .timeout = 60)
{
    char dir[128];
    th_tmpdir(dir, sizeof dir, "cachefile_iv");
    const char *iv = th_path(dir, "iv.json"), *one = th_path(dir, "one.json"), *many = th_path(dir, "many.json");
    th_write_text(iv, "{\"ablate_heads\": [\"0:1\"], \"preserve\": [\"patterns\"], \"preserve_from_layer\": 1,"
                      " \"head_temperature\": [\"1:2:0.5\"]}");
    const char *clamp = th_path(dir, "clamp.json"), *mask = th_path(dir, "mask.json");
    th_run_ok("cache " DOC_ARGS " --input " DOC "/grad.json --intervene %s -o %s", iv, one);
    th_run_ok("cache " DOC_ARGS " --input " DOC "/grad.json --intervene %s --chunk 3 -o %s", iv, many);
    fs_error err = {{0}};
    cJSON *a = fs_json_load(one, &err), *b = fs_json_load(many, &err);
    cr_assert(a && b, "%s", err.msg);
    char why[512] = "";
    cr_assert_geq(golden_compare_tree(b, a, "", why, sizeof why), 40, "%s", why);
    /* a per-sequence clamp (the one-chunk dump's values of v in layer 1, all masked) */
    const cJSON *v = json_leaf(a, "transformer_output.block_outputs[1].attn_output.v");
    cJSON *cache = cJSON_CreateObject(), *blocks = cJSON_AddArrayToObject(cJSON_AddObjectToObject(cache, "transformer_output"), "block_outputs");
    cJSON_AddItemToArray(blocks, cJSON_CreateObject());
    cJSON *blk = cJSON_CreateObject();
    cJSON_AddItemToArray(blocks, blk);
    cJSON_AddItemToObject(cJSON_AddObjectToObject(blk, "attn_output"), "v", cJSON_Duplicate(v, true));
    char *text = cJSON_Print(cache);
    th_write_text(clamp, text);
    free(text);
    cJSON *mtree = cJSON_Duplicate(cache, true);
    all_true(mtree);
    text = cJSON_Print(mtree);
    th_write_text(mask, text);
    free(text);
    cJSON_Delete(mtree);
    th_run_ok("cache " DOC_ARGS " --input " DOC "/grad.json --cache %s --mask %s --chunk 3 -o %s", clamp, mask, many);
    cJSON *c = fs_json_load(many, &err);
    cr_assert_not_null(c, "%s", err.msg);
    cr_assert(cJSON_Compare(json_leaf(c, "transformer_output.block_outputs[1].attn_output.v"), v, true),
              "the per-sequence clamp holds in every sequence");
    cJSON_Delete(c);
    cJSON_Delete(cache);
    cJSON_Delete(a);
    cJSON_Delete(b);
    th_rmtree(dir);
}
