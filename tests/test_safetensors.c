/* Tests for the safetensors reader/writer (src/safetensors.c). */
#include <criterion/criterion.h>

#include <dirent.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fewshot/safetensors.h"

#define GOLDEN_DIR "tests/golden"

/* ---------------------------------------------------------------- fixture: a temp dir */

static char g_dir[64];

static void make_tmp_dir(void)
{
    strcpy(g_dir, "/tmp/fs_st_test_XXXXXX");
    cr_assert_not_null(mkdtemp(g_dir), "mkdtemp failed");
}

static void remove_tmp_dir(void)
{
    DIR *d = opendir(g_dir);
    if (!d)
        return;
    struct dirent *e;
    char p[512];
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(p, sizeof p, "%s/%s", g_dir, e->d_name);
        unlink(p);
    }
    closedir(d);
    rmdir(g_dir);
}

TestSuite(safetensors, .init = make_tmp_dir, .fini = remove_tmp_dir);

/* ---------------------------------------------------------------- helpers */

static const char *tmp_path(char buf[256], const char *name)
{
    snprintf(buf, 256, "%s/%s", g_dir, name);
    return buf;
}

static int count_dir_entries(void)
{
    DIR *d = opendir(g_dir);
    cr_assert_not_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    closedir(d);
    return n;
}

static unsigned char *slurp(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    cr_assert_not_null(fp, "cannot open %s", path);
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    unsigned char *buf = malloc((size_t)n + 1);
    cr_assert_eq(fread(buf, 1, (size_t)n, fp), (size_t)n);
    fclose(fp);
    *len = (size_t)n;
    return buf;
}

static void write_bytes(const char *path, const void *bytes, size_t len)
{
    FILE *fp = fopen(path, "wb");
    cr_assert_not_null(fp, "cannot create %s", path);
    cr_assert_eq(fwrite(bytes, 1, len, fp), len);
    fclose(fp);
}

/* A hand-made safetensors file: given header length field, header text and data. */
static void write_raw_with_len(const char *path, uint64_t hlen, const char *header, const void *data,
                               size_t data_len)
{
    FILE *fp = fopen(path, "wb");
    cr_assert_not_null(fp);
    unsigned char len_bytes[8];
    for (int i = 0; i < 8; i++)
        len_bytes[i] = (unsigned char)(hlen >> (8 * i));
    fwrite(len_bytes, 1, 8, fp);
    fwrite(header, 1, strlen(header), fp);
    if (data_len)
        fwrite(data, 1, data_len, fp);
    fclose(fp);
}

static void write_raw(const char *path, const char *header, const void *data, size_t data_len)
{
    write_raw_with_len(path, strlen(header), header, data, data_len);
}

/* Reading `path` must fail, leave the output empty and mention the path and `needle`. */
static void expect_read_error(const char *path, const char *needle)
{
    fs_st_file f;
    fs_error err = {{0}};
    int rc = fs_st_read(path, &f, &err);
    cr_assert_eq(rc, -1, "reading %s should fail (expected error mentioning \"%s\")", path, needle);
    cr_assert_not_null(strstr(err.msg, needle), "error \"%s\" should mention \"%s\"", err.msg, needle);
    cr_assert_not_null(strstr(err.msg, path), "error \"%s\" should name the file", err.msg);
    cr_assert(f.tensors == NULL && f.count == 0 && f.meta_count == 0, "output should be left empty");
    fs_st_free(&f);
}

static fs_st_tensor make_tensor(const char *name, int ndim, const int64_t *shape, float *data)
{
    fs_st_tensor t = {.ndim = ndim, .numel = 1, .data = data};
    snprintf(t.name, sizeof t.name, "%s", name);
    for (int i = 0; i < ndim; i++) {
        t.shape[i] = shape[i];
        t.numel *= (size_t)shape[i];
    }
    return t;
}

static void assert_tensors_equal(const fs_st_tensor *got, const fs_st_tensor *want)
{
    cr_assert_str_eq(got->name, want->name);
    cr_assert_eq(got->ndim, want->ndim, "'%s': ndim %d, expected %d", want->name, got->ndim, want->ndim);
    for (int i = 0; i < want->ndim; i++)
        cr_assert_eq(got->shape[i], want->shape[i], "'%s': shape[%d]", want->name, i);
    cr_assert_eq(got->numel, want->numel, "'%s': numel", want->name);
    cr_assert_not_null(got->data);
    cr_assert_eq((uintptr_t)got->data % 64, 0, "'%s': data not 64-byte aligned", want->name);
    if (want->numel)
        cr_assert_eq(memcmp(got->data, want->data, want->numel * 4), 0, "'%s': data differs", want->name);
}

static uint32_t float_bits(float x)
{
    uint32_t b;
    memcpy(&b, &x, 4);
    return b;
}

/* A small valid file with two tensors and metadata; returns its size. */
static size_t write_sample_file(const char *path)
{
    static float w[6] = {1, 2, 3, 4, 5, 6}, b[2] = {-1, 0.5f};
    const int64_t ws[] = {2, 3}, bs[] = {2};
    fs_st_tensor t[2] = {make_tensor("w", 2, ws, w), make_tensor("b", 1, bs, b)};
    const char *keys[] = {"k"}, *vals[] = {"v"};
    fs_error err = {{0}};
    cr_assert_eq(fs_st_write(path, t, 2, keys, vals, 1, &err), 0, "%s", err.msg);
    size_t len;
    free(slurp(path, &len));
    return len;
}

/* ---------------------------------------------------------------- round trips */

Test(safetensors, round_trip_is_bit_exact)
{
    float big[3 * 4], scalar = 3.5f, vec[7], four_d[2 * 1 * 2 * 3];
    for (int i = 0; i < 12; i++)
        big[i] = (float)i * 0.25f - 1.0f;
    big[0] = -0.0f;
    big[1] = FLT_MIN / 8; /* subnormal */
    big[2] = FLT_MAX;
    big[3] = -FLT_MAX;
    for (int i = 0; i < 7; i++)
        vec[i] = 1.0f / (float)(i + 3);
    for (int i = 0; i < 12; i++)
        four_d[i] = (float)(i * i) - 7.25f;
    const int64_t s_big[] = {3, 4}, s_vec[] = {7}, s_4d[] = {2, 1, 2, 3}, s_empty[] = {0, 5};
    fs_st_tensor in[] = {
        make_tensor("transformer.blocks.0.attn.qkv.weight", 2, s_big, big),
        make_tensor("a.scalar", 0, NULL, &scalar),
        make_tensor("z.empty", 2, s_empty, NULL),
        make_tensor("odd \"name\"\\with\nescapes", 1, s_vec, vec),
        make_tensor("m.four_d", 4, s_4d, four_d),
    };
    const int n = (int)(sizeof in / sizeof in[0]);
    const char *keys[] = {"config", "step", "empty"};
    const char *vals[] = {"{\"d_model\": 64, \"name\": \"a\\tb\"}\n", "12", ""};
    char path[256];
    tmp_path(path, "rt.safetensors");
    fs_error err = {{0}};
    cr_assert_eq(fs_st_write(path, in, n, keys, vals, 3, &err), 0, "%s", err.msg);
    cr_assert_eq(count_dir_entries(), 1, "temporary file left behind");

    fs_st_file f;
    cr_assert_eq(fs_st_read(path, &f, &err), 0, "%s", err.msg);
    cr_assert_eq(f.count, n);
    for (int i = 1; i < f.count; i++)
        cr_assert_lt(strcmp(f.tensors[i - 1].name, f.tensors[i].name), 0, "tensors not sorted by name");
    for (int i = 0; i < n; i++) {
        const fs_st_tensor *t = fs_st_find(&f, in[i].name);
        cr_assert_not_null(t, "tensor '%s' missing after round trip", in[i].name);
        assert_tensors_equal(t, &in[i]);
    }
    cr_assert_eq(float_bits(fs_st_find(&f, "transformer.blocks.0.attn.qkv.weight")->data[0]), 0x80000000u);
    cr_assert_eq(fs_st_find(&f, "a.scalar")->data[0], 3.5f);
    cr_assert_null(fs_st_find(&f, "nope"));
    cr_assert_eq(f.meta_count, 3);
    for (int i = 0; i < 3; i++)
        cr_assert_str_eq(fs_st_meta(&f, keys[i]), vals[i]);
    cr_assert_null(fs_st_meta(&f, "absent"));
    fs_st_free(&f);
    fs_st_free(&f); /* idempotent */
}

Test(safetensors, header_layout_matches_python_library)
{
    float a[3] = {1, 2, 3}, b[1] = {4};
    const int64_t sa[] = {3}, sb[] = {1};
    fs_st_tensor in[] = {make_tensor("b", 1, sb, b), make_tensor("a", 1, sa, a)};
    const char *keys[] = {"x"}, *vals[] = {"y"};
    char path[256];
    fs_error err = {{0}};
    cr_assert_eq(fs_st_write(tmp_path(path, "layout.safetensors"), in, 2, keys, vals, 1, &err), 0, "%s",
                 err.msg);
    size_t len;
    unsigned char *bytes = slurp(path, &len);
    const char *want = "{\"__metadata__\":{\"x\":\"y\"},"
                       "\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,12]},"
                       "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[12,16]}}";
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = (hlen << 8) | bytes[i];
    cr_assert_eq(hlen % 8, 0, "header length %llu not padded to 8", (unsigned long long)hlen);
    cr_assert_eq(len, 8 + hlen + 16);
    cr_assert_eq(memcmp(bytes + 8, want, strlen(want)), 0, "header: %.*s", (int)hlen, (char *)bytes + 8);
    for (size_t i = strlen(want); i < hlen; i++)
        cr_assert_eq(bytes[8 + i], ' ', "padding must be spaces");
    float data[4];
    memcpy(data, bytes + 8 + hlen, 16);
    cr_assert(data[0] == 1 && data[1] == 2 && data[2] == 3 && data[3] == 4, "data order a then b");
    free(bytes);
}

Test(safetensors, overwrite_replaces_file_atomically)
{
    char path[256];
    tmp_path(path, "over.safetensors");
    float one = 1, two = 2;
    fs_st_tensor t = make_tensor("x", 0, NULL, &one);
    fs_error err = {{0}};
    cr_assert_eq(fs_st_write(path, &t, 1, NULL, NULL, 0, &err), 0, "%s", err.msg);
    t.data = &two;
    cr_assert_eq(fs_st_write(path, &t, 1, NULL, NULL, 0, &err), 0, "%s", err.msg);
    cr_assert_eq(count_dir_entries(), 1);
    fs_st_file f;
    cr_assert_eq(fs_st_read(path, &f, &err), 0, "%s", err.msg);
    cr_assert_eq(f.count, 1);
    cr_assert_eq(f.tensors[0].data[0], 2.0f);
    cr_assert_eq(f.meta_count, 0);
    fs_st_free(&f);
}

Test(safetensors, empty_file_without_tensors)
{
    char path[256];
    fs_error err = {{0}};
    const char *keys[] = {"only"}, *vals[] = {"meta"};
    cr_assert_eq(fs_st_write(tmp_path(path, "none.safetensors"), NULL, 0, keys, vals, 1, &err), 0, "%s",
                 err.msg);
    fs_st_file f;
    cr_assert_eq(fs_st_read(path, &f, &err), 0, "%s", err.msg);
    cr_assert_eq(f.count, 0);
    cr_assert_str_eq(fs_st_meta(&f, "only"), "meta");
    fs_st_free(&f);
}

/* ---------------------------------------------------------------- golden files */

Test(safetensors, reads_golden_params)
{
    const char *path = GOLDEN_DIR "/doc/params.safetensors";
    fs_st_file f;
    fs_error err = {{0}};
    cr_assert_eq(fs_st_read(path, &f, &err), 0, "%s", err.msg);
    cr_assert_eq(f.count, 27);
    cr_assert_eq(f.meta_count, 0);
    const int64_t emb_shape[] = {64, 512};
    const fs_st_tensor *emb = fs_st_get(&f, path, "example_embed.weight", 2, emb_shape, &err);
    cr_assert_not_null(emb, "%s", err.msg);
    cr_assert_eq(emb->numel, 64 * 512);
    /* Bit patterns read from the file with Python's struct module. */
    cr_assert_eq(float_bits(emb->data[0]), 0xbce0a2e9u, "got %a", (double)emb->data[0]);
    cr_assert_eq(float_bits(emb->data[64 * 512 - 1]), 0xbd33028fu, "got %a", (double)emb->data[64 * 512 - 1]);
    const fs_st_tensor *norm = fs_st_find(&f, "transformer.norm.weight");
    cr_assert_not_null(norm);
    for (size_t i = 0; i < norm->numel; i++)
        cr_assert_eq(norm->data[i], 1.0f);
    const int64_t unembed_shape[] = {5, 64};
    cr_assert_not_null(fs_st_get(&f, path, "unembed.weight", 2, unembed_shape, &err), "%s", err.msg);
    fs_st_free(&f);
}

Test(safetensors, rewriting_golden_params_is_byte_identical)
{
    const char *golden = GOLDEN_DIR "/doc/params.safetensors";
    fs_st_file f;
    fs_error err = {{0}};
    cr_assert_eq(fs_st_read(golden, &f, &err), 0, "%s", err.msg);
    char path[256];
    cr_assert_eq(fs_st_write(tmp_path(path, "copy.safetensors"), f.tensors, f.count, NULL, NULL, 0, &err), 0,
                 "%s", err.msg);
    fs_st_free(&f);
    size_t a_len, b_len;
    unsigned char *a = slurp(golden, &a_len), *b = slurp(path, &b_len);
    cr_assert_eq(a_len, b_len, "sizes differ: %zu vs %zu", a_len, b_len);
    cr_assert_eq(memcmp(a, b, a_len), 0, "rewritten file differs from the golden file");
    free(a);
    free(b);
}

Test(safetensors, reads_every_golden_safetensors_file)
{
    const char *models[] = {"doc", "attn_only", "ape", "sinusoidal"};
    const char *files[] = {"params", "grads", "adam_params"};
    const int counts[] = {27, 15, 28, 27};
    int read = 0;
    for (int m = 0; m < 4; m++) {
        for (int k = 0; k < 3; k++) {
            char path[256];
            snprintf(path, sizeof path, GOLDEN_DIR "/%s/%s.safetensors", models[m], files[k]);
            if (access(path, R_OK) != 0)
                continue;
            fs_st_file f;
            fs_error err = {{0}};
            cr_assert_eq(fs_st_read(path, &f, &err), 0, "%s", err.msg);
            cr_assert_eq(f.count, counts[m], "%s: %d tensors", path, f.count);
            fs_st_free(&f);
            read++;
        }
    }
    cr_assert_geq(read, 10, "expected the golden files to be present");
}

Test(safetensors, get_reports_missing_and_wrong_shape)
{
    float x[2] = {1, 2};
    const int64_t s[] = {2}, wrong[] = {1, 2};
    fs_st_tensor t = make_tensor("x", 1, s, x);
    fs_st_file f = {.tensors = &t, .count = 1};
    fs_error err = {{0}};
    cr_assert_null(fs_st_get(&f, "ckpt", "x", 2, wrong, &err));
    cr_assert_not_null(strstr(err.msg, "ckpt: tensor 'x' has shape [2], expected [1, 2]"), "%s", err.msg);
    cr_assert_null(fs_st_get(&f, "ckpt", "y", 1, s, &err));
    cr_assert_not_null(strstr(err.msg, "'y' is missing"), "%s", err.msg);
    cr_assert_eq(fs_st_get(&f, "ckpt", "x", 1, s, &err), &t);
}

/* ---------------------------------------------------------------- malformed files */

Test(safetensors, missing_file)
{
    char path[256];
    expect_read_error(tmp_path(path, "does_not_exist.safetensors"), "No such file");
    expect_read_error(path, "cannot open");
}

Test(safetensors, truncated_file_at_many_points)
{
    char path[256], cut_path[256];
    size_t len = write_sample_file(tmp_path(path, "full.safetensors"));
    unsigned char *bytes = slurp(path, &len);
    size_t hlen = bytes[0] | (size_t)bytes[1] << 8;
    size_t cuts[] = {0, 1, 7, 8, 9, 8 + hlen / 2, 8 + hlen - 1, 8 + hlen, 8 + hlen + 3, len - 4, len - 1};
    tmp_path(cut_path, "cut.safetensors");
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        write_bytes(cut_path, bytes, cuts[i]);
        expect_read_error(cut_path, "truncated");
    }
    free(bytes);
}

Test(safetensors, header_length_too_large)
{
    char path[256];
    tmp_path(path, "hlen.safetensors");
    write_raw_with_len(path, 200u * 1000 * 1000, "{}", NULL, 0);
    expect_read_error(path, "absurd");
    write_raw_with_len(path, 1000, "{}", NULL, 0);
    expect_read_error(path, "header length 1000 exceeds");
    write_raw_with_len(path, UINT64_MAX, "{}", NULL, 0);
    expect_read_error(path, "absurd");
}

Test(safetensors, bad_json_header)
{
    char path[256];
    tmp_path(path, "json.safetensors");
    write_raw(path, "{\"w\": ", NULL, 0);
    expect_read_error(path, "not valid JSON");
    write_raw(path, "{} trailing", NULL, 0);
    expect_read_error(path, "not valid JSON");
    write_raw(path, "[1, 2]  ", NULL, 0);
    expect_read_error(path, "not a JSON object");
    write_raw(path, "", NULL, 0);
    expect_read_error(path, "header is empty");
    const char with_nul[] = "{}\0     ";
    write_raw_with_len(path, 8, "", NULL, 0);
    FILE *fp = fopen(path, "ab");
    fwrite(with_nul, 1, 8, fp);
    fclose(fp);
    expect_read_error(path, "NUL byte");
}

Test(safetensors, wrong_dtype_is_named)
{
    char path[256];
    float d[1] = {1};
    write_raw(tmp_path(path, "f16.safetensors"), "{\"w\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4]}}",
              d, 4);
    expect_read_error(path, "tensor 'w': dtype \"F16\" is not supported");
}

Test(safetensors, shape_and_offset_errors)
{
    static const struct {
        const char *header;
        const char *needle;
    } cases[] = {
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,20]}}", "needs 24 bytes"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,20]}}", "shape[0] is not a non-negative"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[5,1.5],\"data_offsets\":[0,20]}}", "shape[1] is not"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,5],\"data_offsets\":[0,20]}}", "9 dims"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":\"5\",\"data_offsets\":[0,20]}}", "\"shape\" is not an array"},
        {"{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,20]}}", "missing \"shape\""},
        {"{\"w\":{\"shape\":[5],\"data_offsets\":[0,20]}}", "missing \"dtype\""},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[5]}}", "missing \"data_offsets\""},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[5],\"data_offsets\":[0]}}", "[begin, end]"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[5],\"data_offsets\":[0,\"20\"]}}", "[begin, end]"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[20,0]}}", "begin > end"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[10],\"data_offsets\":[0,40]}}", "extend past the end"},
        {"{\"w\":7}", "tensor 'w': entry is not an object"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,12]},"
         "\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[12,20]}}", "duplicate tensor name 'w'"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
         "\"b\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[8,20]}}", "hole of 4 unused bytes"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", "12 trailing bytes"},
        {"{\"__metadata__\":3}", "\"__metadata__\" is not an object"},
        {"{\"__metadata__\":{\"a\":\"x\",\"n\":1}}", "\"__metadata__\" entry 'n' is not a string"},
    };
    char path[256];
    tmp_path(path, "bad.safetensors");
    float data[5] = {1, 2, 3, 4, 5};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        write_raw(path, cases[i].header, data, 20);
        expect_read_error(path, cases[i].needle);
    }
}

Test(safetensors, overlapping_tensors)
{
    char path[256];
    float data[3] = {1, 2, 3};
    write_raw(tmp_path(path, "overlap.safetensors"),
              "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
              "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
              data, 12);
    expect_read_error(path, "tensors 'a' [0, 8] and 'b' [4, 12] overlap");
}

Test(safetensors, nan_and_inf_in_data)
{
    char path[256];
    tmp_path(path, "nan.safetensors");
    const char *header = "{\"good\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                         "\"bad.weight\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,24]}}";
    float data[6] = {1, 2, 3, 4, NAN, 6};
    write_raw(path, header, data, sizeof data);
    expect_read_error(path, "tensor 'bad.weight': element 2 of 4 is NaN");
    data[4] = -INFINITY;
    write_raw(path, header, data, sizeof data);
    expect_read_error(path, "tensor 'bad.weight': element 2 of 4 is Inf");
    data[4] = 5;
    write_raw(path, header, data, sizeof data);
    fs_st_file f;
    fs_error err = {{0}};
    cr_assert_eq(fs_st_read(path, &f, &err), 0, "control file should read: %s", err.msg);
    cr_assert_eq(fs_st_find(&f, "bad.weight")->data[2], 5.0f);
    fs_st_free(&f);
}

/* ---------------------------------------------------------------- writer validation */

static void expect_write_error(const fs_st_tensor *t, int count, const char *needle)
{
    char path[256];
    fs_error err = {{0}};
    cr_assert_eq(fs_st_write(tmp_path(path, "w.safetensors"), t, count, NULL, NULL, 0, &err), -1,
                 "write should fail with \"%s\"", needle);
    cr_assert_not_null(strstr(err.msg, needle), "error \"%s\" should mention \"%s\"", err.msg, needle);
    cr_assert_eq(count_dir_entries(), 0, "failed write left a file behind");
}

Test(safetensors, writer_rejects_bad_tensors)
{
    float x[3] = {1, NAN, 3};
    const int64_t s[] = {3}, neg[] = {-3};
    fs_st_tensor t[2] = {make_tensor("p", 1, s, x), make_tensor("p", 1, s, x)};
    expect_write_error(t, 1, "tensor 'p': element 1 of 3 is NaN");
    x[1] = 2;
    expect_write_error(t, 2, "duplicate tensor name 'p'");
    t[1].numel = 4;
    snprintf(t[1].name, sizeof t[1].name, "q");
    expect_write_error(t, 2, "tensor 'q': numel 4 does not match shape [3]");
    t[1] = make_tensor("q", 1, neg, x);
    expect_write_error(t, 2, "negative dimension");
    t[1] = make_tensor("", 1, s, x);
    expect_write_error(t, 2, "empty name");
    t[1] = make_tensor("__metadata__", 1, s, x);
    expect_write_error(t, 2, "reserved");
    t[1] = make_tensor("q", 1, s, NULL);
    expect_write_error(t, 2, "data is NULL");
}

Test(safetensors, writer_reports_unwritable_path)
{
    float x = 1;
    fs_st_tensor t = make_tensor("x", 0, NULL, &x);
    char path[256];
    snprintf(path, sizeof path, "%s/no/such/dir/x.safetensors", g_dir);
    fs_error err = {{0}};
    cr_assert_eq(fs_st_write(path, &t, 1, NULL, NULL, 0, &err), -1);
    cr_assert_not_null(strstr(err.msg, "cannot create temporary file"), "%s", err.msg);
    cr_assert_not_null(strstr(err.msg, path), "%s", err.msg);
}

Test(safetensors, writer_rejects_duplicate_metadata_keys)
{
    float x = 1;
    fs_st_tensor t = make_tensor("x", 0, NULL, &x);
    const char *keys[] = {"a", "a"}, *vals[] = {"1", "2"};
    char path[256];
    fs_error err = {{0}};
    cr_assert_eq(fs_st_write(tmp_path(path, "m.safetensors"), &t, 1, keys, vals, 2, &err), -1);
    cr_assert_not_null(strstr(err.msg, "duplicate metadata key 'a'"), "%s", err.msg);
}
