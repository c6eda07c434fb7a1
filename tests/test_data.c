/* Datasets: HDF5 loading and its errors, one-hot, the synthetic generator and writer. */
#include <criterion/criterion.h>
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fewshot/data.h"

#define SYNTH_S0 "datasets/synth_s0.h5"
#define SHIPPED_SYNTH "datasets/synth_small.h5"

static void tmp_name(char *buf, size_t n, const char *tag)
{
    snprintf(buf, n, "/tmp/fewshot_test_data_%ld_%s.h5", (long)getpid(), tag);
}

/* Write an arbitrary dataset with libhdf5 directly (for malformed inputs). */
static void write_raw(const char *file, const char *path, int rank, const hsize_t *dims, hid_t file_type,
                      hid_t mem_type, const void *data)
{
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    hid_t f = H5Fcreate(file, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    cr_assert_geq(f, 0);
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    H5Pset_create_intermediate_group(lcpl, 1);
    hid_t space = H5Screate_simple(rank, dims, NULL);
    hid_t d = H5Dcreate2(f, path, file_type, space, lcpl, H5P_DEFAULT, H5P_DEFAULT);
    cr_assert_geq(d, 0);
    cr_assert_geq(H5Dwrite(d, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data), 0);
    H5Dclose(d), H5Sclose(space), H5Pclose(lcpl), H5Fclose(f);
}

/* Load must fail with -1, leave the dataset empty and mention every `needles`. */
static void expect_load_error(const char *file, const char *path, const char *n1, const char *n2)
{
    fs_dataset d;
    fs_error err = {{0}};
    cr_assert_eq(fs_dataset_load_h5(&d, file, path, &err), -1, "loading %s should fail", file);
    cr_expect_null(d.feat);
    cr_expect(strstr(err.msg, n1) != NULL, "message '%s' should mention '%s'", err.msg, n1);
    if (n2)
        cr_expect(strstr(err.msg, n2) != NULL, "message '%s' should mention '%s'", err.msg, n2);
}

typedef struct {
    double var;        /* mean over elements of x^2 (zero-mean data) */
    double within;     /* mean unbiased within-class variance per coordinate */
    double class_mean; /* mean squared class-mean coordinate */
} cluster_stats;

static cluster_stats stats(const fs_dataset *d)
{
    cluster_stats s = {0};
    int K = d->num_classes, E = d->num_exemplars, D = d->dim;
    for (int k = 0; k < K; k++)
        for (int j = 0; j < D; j++) {
            double m = 0, q = 0;
            for (int e = 0; e < E; e++) {
                double x = fs_dataset_row(d, k, e)[j];
                m += x, q += x * x;
            }
            s.var += q;
            s.class_mean += (m / E) * (m / E);
            s.within += (q - m * m / E) / (E - 1);
        }
    s.var /= (double)K * E * D;
    s.class_mean /= (double)K * D;
    s.within /= (double)K * D;
    return s;
}

/* docs/sampling.md: x = (mu + eps eta)/sqrt(1+eps^2), mu, eta ~ N(0, I/D). */
static void expect_cluster_stats(const fs_dataset *d, double eps, double rel_tol)
{
    cluster_stats s = stats(d);
    double D = d->dim, E = d->num_exemplars, n = 1 + eps * eps;
    double want_var = 1 / D, want_within = eps * eps / n / D, want_mean = (1 + eps * eps / E) / n / D;
    cr_expect(fabs(s.var / want_var - 1) < rel_tol, "variance %g, expected %g", s.var, want_var);
    cr_expect(fabs(s.within / want_within - 1) < rel_tol, "within-class %g, expected %g", s.within, want_within);
    cr_expect(fabs(s.class_mean / want_mean - 1) < rel_tol, "class-mean %g, expected %g", s.class_mean, want_mean);
}

Test(data, shipped_synth_s0_loads_with_spec_statistics)
{
    fs_dataset d;
    fs_error err = {{0}};
    cr_assert_eq(fs_dataset_load_h5(&d, SYNTH_S0, NULL, &err), 0, "%s", err.msg);
    cr_expect_eq(d.num_classes, 1623);
    cr_expect_eq(d.num_exemplars, 5);
    cr_expect_eq(d.dim, 512);
    expect_cluster_stats(&d, 0.5, 0.02);
    fs_dataset_free(&d);
}

Test(data, synth_generator_statistics_and_determinism)
{
    fs_dataset a, b, c;
    fs_error err = {{0}};
    cr_assert_eq(fs_dataset_synth(&a, 400, 5, 64, 0.5, 7, &err), 0, "%s", err.msg);
    cr_assert_eq(fs_dataset_synth(&b, 400, 5, 64, 0.5, 7, &err), 0, "%s", err.msg);
    cr_assert_eq(fs_dataset_synth(&c, 400, 5, 64, 0.5, 8, &err), 0, "%s", err.msg);
    size_t n = (size_t)400 * 5 * 64;
    cr_expect_eq(memcmp(a.feat, b.feat, n * sizeof(float)), 0, "same seed, same data");
    cr_expect_neq(memcmp(a.feat, c.feat, n * sizeof(float)), 0, "different seed, different data");
    expect_cluster_stats(&a, 0.5, 0.03);
    fs_dataset_free(&a), fs_dataset_free(&b), fs_dataset_free(&c);

    fs_dataset w;
    cr_assert_eq(fs_dataset_synth(&w, 300, 4, 128, 2.0, 1, &err), 0, "%s", err.msg);
    expect_cluster_stats(&w, 2.0, 0.03);
    fs_dataset_free(&w);
    cr_expect_eq(fs_dataset_synth(&w, 0, 4, 8, 0.5, 1, &err), -1);
    cr_expect_eq(fs_dataset_synth(&w, 3, 4, 8, -1, 1, &err), -1);
}

Test(data, save_then_load_round_trip_atomically)
{
    char file[256];
    tmp_name(file, sizeof file, "roundtrip");
    fs_dataset a, b;
    fs_error err = {{0}};
    cr_assert_eq(fs_dataset_synth(&a, 11, 3, 5, 0.5, 3, &err), 0, "%s", err.msg);
    cr_assert_eq(fs_dataset_save_h5(&a, file, NULL, &err), 0, "%s", err.msg);
    char tmp[300];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", file, (long)getpid());
    cr_expect_neq(access(tmp, F_OK), 0, "temporary file left behind");
    cr_assert_eq(fs_dataset_load_h5(&b, file, "resnet18/224/feat", &err), 0, "%s", err.msg);
    cr_expect_eq(b.num_classes, 11);
    cr_expect_eq(b.num_exemplars, 3);
    cr_expect_eq(b.dim, 5);
    cr_expect_eq(memcmp(a.feat, b.feat, 11 * 3 * 5 * sizeof(float)), 0);
    fs_dataset_free(&b);
    /* A custom path, overwriting the same file. */
    cr_assert_eq(fs_dataset_save_h5(&a, file, "x/y", &err), 0, "%s", err.msg);
    cr_assert_eq(fs_dataset_load_h5(&b, file, "/x/y", &err), 0, "%s", err.msg);
    fs_dataset_free(&b);
    expect_load_error(file, "resnet18/224/feat", "resnet18", file);
    fs_dataset_free(&a);
    unlink(file);
}

Test(data, shipped_small_dataset_loads)
{
    fs_dataset d, want;
    fs_error err = {{0}};
    struct stat st;
    cr_assert_eq(stat(SHIPPED_SYNTH, &st), 0, "missing %s", SHIPPED_SYNTH);
    cr_expect_lt(st.st_size, 1 << 20, "shipped dataset should stay under 1 MB");
    cr_assert_eq(fs_dataset_load_h5(&d, SHIPPED_SYNTH, NULL, &err), 0, "%s", err.msg);
    cr_expect_eq(d.num_classes, 200);
    cr_expect_eq(d.num_exemplars, 5);
    cr_expect_eq(d.dim, 64);
    /* It is exactly what our generator makes (datasets/README.md). */
    cr_assert_eq(fs_dataset_synth(&want, 200, 5, 64, 0.5, 0, &err), 0, "%s", err.msg);
    cr_expect_eq(memcmp(d.feat, want.feat, (size_t)200 * 5 * 64 * sizeof(float)), 0);
    fs_dataset_free(&d), fs_dataset_free(&want);
}

Test(data, onehot_is_identity)
{
    fs_dataset d;
    fs_error err = {{0}};
    cr_assert_eq(fs_dataset_onehot(&d, 6, &err), 0, "%s", err.msg);
    cr_expect_eq(d.num_classes, 6);
    cr_expect_eq(d.num_exemplars, 1);
    cr_expect_eq(d.dim, 6);
    for (int k = 0; k < 6; k++)
        for (int j = 0; j < 6; j++)
            cr_expect_eq(fs_dataset_row(&d, k, 0)[j], k == j ? 1.0f : 0.0f);
    fs_dataset_free(&d);

    fs_data_config cfg = {.type = FS_DATA_ONEHOT, .class_split = {3, 2, 1}};
    cr_assert_eq(fs_dataset_load(&d, &cfg, &err), 0, "%s", err.msg);
    cr_expect_eq(d.num_classes, 6);
    fs_dataset_free(&d);
    cfg.onehot_classes = 9;
    cr_assert_eq(fs_dataset_load(&d, &cfg, &err), 0, "%s", err.msg);
    cr_expect_eq(d.num_classes, 9);
    fs_dataset_free(&d);
    cfg = (fs_data_config){.type = FS_DATA_ONEHOT};
    cr_expect_eq(fs_dataset_load(&d, &cfg, &err), -1);
    cr_expect(strstr(err.msg, "onehot_classes") != NULL, "%s", err.msg);
}

Test(data, load_via_config)
{
    fs_data_config cfg = {.type = FS_DATA_FILE};
    snprintf(cfg.file, sizeof cfg.file, "%s", SHIPPED_SYNTH);
    fs_dataset d;
    fs_error err = {{0}};
    cr_assert_eq(fs_dataset_load(&d, &cfg, &err), 0, "%s", err.msg); /* empty path = default */
    cr_expect_eq(d.num_classes, 200);
    fs_dataset_free(&d);
    cfg.file[0] = '\0';
    cr_expect_eq(fs_dataset_load(&d, &cfg, &err), -1);
    cr_expect(strstr(err.msg, "data.file") != NULL, "%s", err.msg);
}

Test(data, missing_file_is_an_error)
{
    expect_load_error("/tmp/fewshot_definitely_missing.h5", NULL, "/tmp/fewshot_definitely_missing.h5",
                      "missing");
}

Test(data, missing_path_is_an_error)
{
    char file[256];
    tmp_name(file, sizeof file, "path");
    const hsize_t dims[3] = {2, 2, 2};
    const float v[8] = {0};
    write_raw(file, "resnet18/224/other", 3, dims, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, v);
    expect_load_error(file, "resnet18/224/feat", "resnet18/224/feat", file);
    expect_load_error(file, "nope/224/feat", "'nope'", NULL);
    expect_load_error(file, "resnet18/224", "not a dataset", NULL); /* a group */
    unlink(file);
}

Test(data, wrong_rank_is_an_error)
{
    char file[256];
    tmp_name(file, sizeof file, "rank");
    const hsize_t dims[2] = {4, 3};
    const float v[12] = {0};
    write_raw(file, "resnet18/224/feat", 2, dims, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, v);
    expect_load_error(file, NULL, "rank 3", "found rank 2");
    unlink(file);
}

Test(data, wrong_type_is_an_error_float64_is_converted)
{
    char file[256];
    tmp_name(file, sizeof file, "type");
    const hsize_t dims[3] = {2, 1, 3};
    const int iv[6] = {1, 2, 3, 4, 5, 6};
    write_raw(file, "resnet18/224/feat", 3, dims, H5T_STD_I32LE, H5T_NATIVE_INT, iv);
    expect_load_error(file, NULL, "float32", "integer");

    const double dv[6] = {1.5, 2, 3, 4, 5, -6.25};
    write_raw(file, "resnet18/224/feat", 3, dims, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, dv);
    fs_dataset d;
    fs_error err = {{0}};
    cr_assert_eq(fs_dataset_load_h5(&d, file, NULL, &err), 0, "%s", err.msg);
    cr_expect_eq(d.feat[0], 1.5f);
    cr_expect_eq(d.feat[5], -6.25f);
    fs_dataset_free(&d);
    unlink(file);
}

Test(data, non_finite_values_are_an_error)
{
    char file[256];
    tmp_name(file, sizeof file, "nan");
    const hsize_t dims[3] = {2, 2, 2};
    float v[8] = {0};
    v[6] = NAN; /* [1][1][0] */
    write_raw(file, "resnet18/224/feat", 3, dims, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, v);
    expect_load_error(file, NULL, "non-finite", "[1][1][0]");
    v[6] = INFINITY;
    write_raw(file, "resnet18/224/feat", 3, dims, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, v);
    expect_load_error(file, NULL, "non-finite", NULL);
    unlink(file);
}

Test(data, truncated_or_garbage_file_is_an_error)
{
    char file[256];
    tmp_name(file, sizeof file, "trunc");
    fs_dataset a;
    fs_error err = {{0}};
    cr_assert_eq(fs_dataset_synth(&a, 50, 5, 64, 0.5, 1, &err), 0, "%s", err.msg);
    cr_assert_eq(fs_dataset_save_h5(&a, file, NULL, &err), 0, "%s", err.msg);
    fs_dataset_free(&a);
    struct stat st;
    cr_assert_eq(stat(file, &st), 0);
    cr_assert_eq(truncate(file, st.st_size / 2), 0);
    expect_load_error(file, NULL, file, NULL);
    cr_assert_eq(truncate(file, 100), 0);
    expect_load_error(file, NULL, file, NULL);

    FILE *f = fopen(file, "w");
    cr_assert_not_null(f);
    fputs("this is not an HDF5 file\n", f);
    fclose(f);
    expect_load_error(file, NULL, "not a readable HDF5 file", NULL);
    unlink(file);
}

Test(data, unwritable_destination_is_an_error)
{
    fs_dataset a;
    fs_error err = {{0}};
    cr_assert_eq(fs_dataset_onehot(&a, 3, &err), 0, "%s", err.msg);
    cr_expect_eq(fs_dataset_save_h5(&a, "/nonexistent_dir_fewshot/x.h5", NULL, &err), -1);
    cr_expect(strstr(err.msg, "/nonexistent_dir_fewshot/x.h5") != NULL, "%s", err.msg);
    fs_dataset_free(&a);
}
