/* Every kernel against a double-precision reference, driven by one table (kernels x
 * shapes x tolerances, in the spirit of ggml's test-backend-ops):
 *  - forward: the float kernel's output vs the reference, |got - want| <= tol * max|want|;
 *  - backward (kernels that have one): the kernel's input gradients of L = sum(g * out),
 *    g random, vs the reference gradient -- the op's analytic double gradient when it has
 *    one (checked in turn against central differences of the reference), else central
 *    differences of the reference directly.
 * Shapes hit every vector width, tile edge and tail (1, 7, 8, 9, 15, 16, 17, 31, 33, 64,
 * 65). The lane-major kernels of the key-value cache step are in the table too. */
#include <criterion/criterion.h>

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"
#include "kernels/kernels.h"
#include "kernels/lanes.h"

enum { MAX_IN = 5, FD_ALL = 400, FD_SAMPLE = 160 };

typedef struct {
    int a, b, c, d; /* meaning per op, see each op's comment */
} dims;

/* shapes list only the dimensions their op uses (the rest are 0) */
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

typedef struct {
    const char *name;
    int n_in;
    size_t (*in_size)(dims s, int i);
    size_t (*out_size)(dims s);
    double in_scale[MAX_IN]; /* inputs uniform in [-scale, scale) (+ in_offset) */
    double in_offset[MAX_IN];
    void (*prep)(dims s, float *const *in); /* optional: masks and special rows */
    void (*fwd)(dims s, float *const *in, float *out);
    void (*ref)(dims s, const double *const *in, double *out);
    /* gin[i] (zeroed, NULL where !diff[i]) = d sum(g * out) / d in[i] */
    void (*bwd)(dims s, float *const *in, const float *out, const float *g, float *const *gin);
    /* the same in double from the reference formula (optional) */
    void (*ref_bwd)(dims s, const double *const *in, const double *g, double *const *gin);
    bool diff[MAX_IN];
    double fwd_tol, bwd_tol, fd_tol;
    const dims *shapes;
    int nshapes;
} op;

#define SHAPES(...) .shapes = (const dims[]){__VA_ARGS__}, .nshapes = sizeof((const dims[]){__VA_ARGS__}) / sizeof(dims)

/* ---------------------------------------------------------------- helpers */

static double max_abs(const double *x, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++)
        m = fmax(m, fabs(x[i]));
    return m;
}

static void check_scaled(const char *op_name, const char *what, dims s, const float *got, const double *want,
                         size_t n, double tol)
{
    double scale = fmax(max_abs(want, n), 1e-30);
    for (size_t i = 0; i < n; i++)
        cr_assert(fabs(got[i] - want[i]) <= tol * scale, "%s %s (%d %d %d %d) [%zu]: %.9g vs %.9g", op_name, what,
                  s.a, s.b, s.c, s.d, i, got[i], want[i]);
}

/* L(x) = sum(g * ref(x)) in double */
static double ref_loss(const op *o, dims s, double *const *in, const double *g, double *out)
{
    o->ref(s, (const double *const *)in, out);
    size_t n = o->out_size(s);
    double l = 0;
    for (size_t i = 0; i < n; i++)
        l += g[i] * out[i];
    return l;
}

/* Central differences of the reference loss at the elements of input k: every element
 * of small inputs, else an even spread plus the last ones (the tails). */
static void check_fd(const op *o, dims s, double *const *in, const double *g, int k, const double *grad, double tol)
{
    size_t n = o->in_size(s, k);
    double *out = malloc(sizeof(double) * (o->out_size(s) + 1));
    double scale = fmax(max_abs(grad, n), 1e-30);
    size_t count = n <= FD_ALL ? n : FD_SAMPLE;
    for (size_t c = 0; c < count; c++) {
        size_t i = n <= FD_ALL ? c : c < FD_SAMPLE / 2 ? c * n / (FD_SAMPLE / 2) : n - (FD_SAMPLE - c);
        double x0 = in[k][i], h = 1e-6 * fmax(1.0, fabs(x0));
        in[k][i] = x0 + h;
        double lp = ref_loss(o, s, in, g, out);
        in[k][i] = x0 - h;
        double lm = ref_loss(o, s, in, g, out);
        in[k][i] = x0;
        double fd = (lp - lm) / (2 * h);
        cr_assert(fabs(grad[i] - fd) <= tol * scale + 1e-4 * fabs(fd),
                  "%s input %d (%d %d %d %d) [%zu]: gradient %.9g vs finite difference %.9g", o->name, k, s.a, s.b,
                  s.c, s.d, i, grad[i], fd);
    }
    free(out);
}

static void run_case(const op *o, dims s, th_rng *rng)
{
    float *in[MAX_IN] = {0}, *gin[MAX_IN] = {0};
    double *din[MAX_IN] = {0}, *rgin[MAX_IN] = {0};
    size_t nout = o->out_size(s);
    for (int k = 0; k < o->n_in; k++) {
        size_t n = o->in_size(s, k);
        in[k] = malloc(sizeof(float) * (n + FS_VL));
        din[k] = malloc(sizeof(double) * (n + 1));
        for (size_t i = 0; i < n; i++)
            in[k][i] = (float)(o->in_offset[k] + th_rng_sym(rng, o->in_scale[k]));
    }
    if (o->prep)
        o->prep(s, in);
    for (int k = 0; k < o->n_in; k++)
        for (size_t i = 0; i < o->in_size(s, k); i++)
            din[k][i] = in[k][i];
    float *out = malloc(sizeof(float) * (nout + FS_VL)), *g = malloc(sizeof(float) * (nout + 1));
    double *want = malloc(sizeof(double) * (nout + 1)), *gd = malloc(sizeof(double) * (nout + 1));
    for (size_t i = 0; i < nout; i++)
        g[i] = (float)th_rng_sym(rng, 1), gd[i] = g[i];

    o->fwd(s, in, out);
    o->ref(s, (const double *const *)din, want);
    check_scaled(o->name, "forward", s, out, want, nout, o->fwd_tol);

    if (o->bwd) {
        for (int k = 0; k < o->n_in; k++)
            if (o->diff[k]) {
                size_t n = o->in_size(s, k);
                gin[k] = calloc(n + FS_VL, sizeof(float));
                rgin[k] = calloc(n + 1, sizeof(double));
            }
        o->bwd(s, in, out, g, gin);
        if (o->ref_bwd)
            o->ref_bwd(s, (const double *const *)din, gd, rgin);
        for (int k = 0; k < o->n_in; k++) {
            if (!o->diff[k])
                continue;
            size_t n = o->in_size(s, k);
            if (o->ref_bwd) {
                char what[32];
                snprintf(what, sizeof what, "gradient of input %d", k);
                check_scaled(o->name, what, s, gin[k], rgin[k], n, o->bwd_tol);
                check_fd(o, s, din, gd, k, rgin[k], o->fd_tol); /* the reference gradient itself */
            } else {
                double *gk = rgin[k];
                for (size_t i = 0; i < n; i++)
                    gk[i] = gin[k][i];
                check_fd(o, s, din, gd, k, gk, o->bwd_tol);
            }
        }
    }
    for (int k = 0; k < o->n_in; k++)
        free(in[k]), free(din[k]), free(gin[k]), free(rgin[k]);
    free(out), free(g), free(want), free(gd);
}

static void run_op(const op *o, uint64_t seed)
{
    th_rng rng = {seed};
    for (int i = 0; i < o->nshapes; i++)
        run_case(o, o->shapes[i], &rng);
}

/* ---------------------------------------------------------------- matmul: a = M, b = K, c = N
 * inputs: in [M][K], w [N][K], bias [N] */

static size_t mm_in(dims s, int i) { return i == 0 ? (size_t)s.a * s.b : i == 1 ? (size_t)s.c * s.b : (size_t)s.c; }
static size_t mm_out(dims s) { return (size_t)s.a * s.c; }

static void mm_fwd(dims s, float *const *in, float *out) { fs_matmul_forward(out, in[0], in[1], in[2], s.a, s.b, s.c); }

static void mm_packed_fwd(dims s, float *const *in, float *out)
{
    float *wt = malloc(sizeof(float) * ((size_t)s.b * s.c + FS_VL));
    fs_transpose(wt, in[1], s.c, s.b);
    fs_matmul_forward_packed(out, in[0], wt, in[2], s.a, s.b, s.c);
    free(wt);
}

static void mm_ref(dims s, const double *const *in, double *out)
{
    for (int m = 0; m < s.a; m++)
        for (int n = 0; n < s.c; n++) {
            double acc = in[2][n];
            for (int k = 0; k < s.b; k++)
                acc += in[0][m * s.b + k] * in[1][n * s.b + k];
            out[m * s.c + n] = acc;
        }
}

static void mm_bwd(dims s, float *const *in, const float *out, const float *g, float *const *gin)
{
    fs_matmul_backward(gin[0], gin[1], gin[2], g, in[0], in[1], s.a, s.b, s.c);
}

static void mm_ref_bwd(dims s, const double *const *in, const double *g, double *const *gin)
{
    for (int m = 0; m < s.a; m++)
        for (int n = 0; n < s.c; n++) {
            double gv = g[m * s.c + n];
            gin[2][n] += gv;
            for (int k = 0; k < s.b; k++) {
                gin[0][m * s.b + k] += gv * in[1][n * s.b + k];
                gin[1][n * s.b + k] += gv * in[0][m * s.b + k];
            }
        }
}

#define MM_SHAPES                                                                                                   \
    SHAPES({1, 1, 1}, {3, 21, 10}, {1, 7, 65}, {7, 8, 9}, {8, 9, 16}, {9, 15, 17}, {15, 16, 31}, {17, 33, 8},   \
           {31, 64, 33}, {33, 65, 64}, {65, 17, 65}, {2, 64, 1}, {64, 3, 7})

static const op op_matmul = {
    .name = "matmul", .n_in = 3, .in_size = mm_in, .out_size = mm_out, .in_scale = {1, 1, 1},
    .fwd = mm_fwd, .ref = mm_ref, .bwd = mm_bwd, .ref_bwd = mm_ref_bwd, .diff = {true, true, true},
    .fwd_tol = 1e-5, .bwd_tol = 1e-5, .fd_tol = 1e-6, MM_SHAPES,
};

static const op op_matmul_packed = {
    .name = "matmul_packed", .n_in = 3, .in_size = mm_in, .out_size = mm_out, .in_scale = {1, 1, 1},
    .fwd = mm_packed_fwd, .ref = mm_ref, .fwd_tol = 1e-5, MM_SHAPES,
};

/* ---------------------------------------------------------------- row kernels: a = rows, b = C
 * layernorm inputs: x [M][C], w [C], b [C] */

static size_t ln_in(dims s, int i) { return i == 0 ? (size_t)s.a * s.b : (size_t)s.b; }
static size_t rows_out(dims s) { return (size_t)s.a * s.b; }

static void ln_prep(dims s, float *const *in)
{
    if (s.a > 1) /* a row with a small variance and an offset */
        for (int i = 0; i < s.b; i++)
            in[0][i] = 3.0f + 0.05f * (float)i;
}

static void ln_fwd(dims s, float *const *in, float *out)
{
    float mean[64], rstd[64];
    fs_layernorm_forward(out, mean, rstd, in[0], in[1], in[2], s.a, s.b);
}

static void ln_ref(dims s, const double *const *in, double *out)
{
    for (int m = 0; m < s.a; m++) {
        const double *x = in[0] + (size_t)m * s.b;
        double mu = 0, var = 0;
        for (int i = 0; i < s.b; i++)
            mu += x[i];
        mu /= s.b;
        for (int i = 0; i < s.b; i++)
            var += (x[i] - mu) * (x[i] - mu);
        var /= s.b; /* biased variance, eps 1e-5 (docs/model.md) */
        for (int i = 0; i < s.b; i++)
            out[(size_t)m * s.b + i] = (x[i] - mu) / sqrt(var + 1e-5) * in[1][i] + in[2][i];
    }
}

static void ln_bwd(dims s, float *const *in, const float *out, const float *g, float *const *gin)
{
    float mean[64], rstd[64], *y = malloc(sizeof(float) * ((size_t)s.a * s.b + FS_VL));
    fs_layernorm_forward(y, mean, rstd, in[0], in[1], in[2], s.a, s.b);
    fs_layernorm_backward(gin[0], gin[1], gin[2], g, in[0], in[1], mean, rstd, s.a, s.b);
    free(y);
}

/* dx = rstd * (gw - mean(gw) - xhat * mean(gw * xhat)) */
static void ln_ref_bwd(dims s, const double *const *in, const double *g, double *const *gin)
{
    int C = s.b;
    for (int m = 0; m < s.a; m++) {
        const double *x = in[0] + (size_t)m * C, *gr = g + (size_t)m * C;
        double mu = 0, var = 0, sg = 0, sgx = 0;
        for (int i = 0; i < C; i++)
            mu += x[i];
        mu /= C;
        for (int i = 0; i < C; i++)
            var += (x[i] - mu) * (x[i] - mu);
        double rs = 1 / sqrt(var / C + 1e-5);
        for (int i = 0; i < C; i++) {
            double xh = (x[i] - mu) * rs, gw = gr[i] * in[1][i];
            sg += gw, sgx += gw * xh;
            gin[1][i] += gr[i] * xh;
            gin[2][i] += gr[i];
        }
        for (int i = 0; i < C; i++) {
            double xh = (x[i] - mu) * rs;
            gin[0][(size_t)m * C + i] = rs * (gr[i] * in[1][i] - sg / C - xh * sgx / C);
        }
    }
}

/* C > 2: a normalised row of 1 or 2 elements is constant, its gradient ~0 */
static const op op_layernorm = {
    .name = "layernorm", .n_in = 3, .in_size = ln_in, .out_size = rows_out, .in_scale = {2, 0.5, 0.5},
    .in_offset = {0, 1, 0}, .prep = ln_prep, .fwd = ln_fwd, .ref = ln_ref, .bwd = ln_bwd, .ref_bwd = ln_ref_bwd,
    .diff = {true, true, true}, .fwd_tol = 1e-5, .bwd_tol = 1e-4, .fd_tol = 1e-6,
    SHAPES({4, 7}, {3, 7}, {3, 8}, {3, 9}, {3, 16}, {3, 17}, {3, 33}, {3, 64}, {3, 65}, {1, 3}),
};

/* gelu: a = n elements on [-6, 6] */
static size_t n_in(dims s, int i) { return (size_t)s.a; }
static size_t n_out(dims s) { return (size_t)s.a; }

static void gelu_prep(dims s, float *const *in)
{
    for (int i = 0; i < s.a; i++)
        in[0][i] = (float)(-6.0 + 12.0 * i / (s.a > 1 ? s.a - 1 : 1)) + in[0][i];
}

static void gelu_fwd(dims s, float *const *in, float *out) { fs_gelu_forward(out, in[0], (size_t)s.a); }

static void gelu_ref(dims s, const double *const *in, double *out)
{
    for (int i = 0; i < s.a; i++) {
        double x = in[0][i];
        out[i] = 0.5 * x * (1 + tanh(sqrt(2 / M_PI) * (x + 0.044715 * x * x * x)));
    }
}

static void gelu_bwd(dims s, float *const *in, const float *out, const float *g, float *const *gin)
{
    fs_gelu_backward(gin[0], in[0], g, (size_t)s.a);
}

static void gelu_ref_bwd(dims s, const double *const *in, const double *g, double *const *gin)
{
    for (int i = 0; i < s.a; i++) {
        double x = in[0][i], k = sqrt(2 / M_PI), t = tanh(k * (x + 0.044715 * x * x * x));
        gin[0][i] = g[i] * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * k * (1 + 3 * 0.044715 * x * x));
    }
}

static const op op_gelu = {
    .name = "gelu", .n_in = 1, .in_size = n_in, .out_size = n_out, .in_scale = {0.05}, .prep = gelu_prep,
    .fwd = gelu_fwd, .ref = gelu_ref, .bwd = gelu_bwd, .ref_bwd = gelu_ref_bwd, .diff = {true},
    .fwd_tol = 1e-5, .bwd_tol = 1e-5, .fd_tol = 1e-6,
    SHAPES({41}, {2}, {3}, {7}, {8}, {9}, {16}, {17}, {33}, {64}, {65}, {195}),
};

/* softmax: a = rows, b = n; causally masked entries (-1e20) give exactly 0 */
static void sm_prep(dims s, float *const *in)
{
    for (int m = 0; m < s.a; m++)
        for (int i = 0; i < s.b; i++) {
            in[0][(size_t)m * s.b + i] *= 3;
            if (i > m * s.b / 2 + 1)
                in[0][(size_t)m * s.b + i] = -1e20f;
            else if (m == 2)
                in[0][(size_t)m * s.b + i] += 50; /* large logits: the max must be subtracted */
        }
}

static void sm_fwd(dims s, float *const *in, float *out)
{
    fs_softmax_forward(out, in[0], s.a, s.b);
    for (size_t i = 0; i < (size_t)s.a * s.b; i++)
        if (in[0][i] == -1e20f)
            cr_assert_eq(out[i], 0.0f, "softmax: masked entries get exactly 0");
}

static void sm_ref(dims s, const double *const *in, double *out)
{
    for (int m = 0; m < s.a; m++) {
        const double *x = in[0] + (size_t)m * s.b;
        double mx = x[0], z = 0;
        for (int i = 1; i < s.b; i++)
            mx = fmax(mx, x[i]);
        for (int i = 0; i < s.b; i++)
            z += exp(x[i] - mx);
        for (int i = 0; i < s.b; i++)
            out[(size_t)m * s.b + i] = exp(x[i] - mx) / z;
    }
}

static void sm_bwd(dims s, float *const *in, const float *out, const float *g, float *const *gin)
{
    fs_softmax_backward(gin[0], out, g, s.a, s.b);
}

static void sm_ref_bwd(dims s, const double *const *in, const double *g, double *const *gin)
{
    double *p = malloc(sizeof(double) * (size_t)s.a * s.b);
    sm_ref(s, in, p);
    for (int m = 0; m < s.a; m++) {
        double acc = 0;
        for (int i = 0; i < s.b; i++)
            acc += p[(size_t)m * s.b + i] * g[(size_t)m * s.b + i];
        for (int i = 0; i < s.b; i++)
            gin[0][(size_t)m * s.b + i] = p[(size_t)m * s.b + i] * (g[(size_t)m * s.b + i] - acc);
    }
    free(p);
}

static const op op_softmax = {
    .name = "softmax", .n_in = 1, .in_size = ln_in, .out_size = rows_out, .in_scale = {1}, .prep = sm_prep,
    .fwd = sm_fwd, .ref = sm_ref, .bwd = sm_bwd, .ref_bwd = sm_ref_bwd, .diff = {true},
    .fwd_tol = 1e-5, .bwd_tol = 1e-5, .fd_tol = 1e-6,
    SHAPES({4, 6}, {3, 1}, {3, 2}, {3, 7}, {3, 8}, {3, 9}, {3, 16}, {3, 17}, {3, 33}, {3, 64}, {3, 65}),
};

/* ---------------------------------------------------------------- RoPE: a = H, b = N, c = hd, d = base
 * (1 = 10000, 2 = 3: every pair rotates a lot); input [H][N][hd] */

static size_t rope_in(dims s, int i) { return (size_t)s.a * s.b * s.c; }
static size_t rope_out(dims s) { return (size_t)s.a * s.b * s.c; }
static double rope_base(dims s) { return s.d == 2 ? 3.0 : 10000.0; }

static void rope_fwd(dims s, float *const *in, float *out) { fs_rope_forward(out, in[0], s.a, s.b, s.c, rope_base(s)); }

static void rope_table_fwd(dims s, float *const *in, float *out)
{
    float *cs = malloc(sizeof(float) * 2 * (size_t)s.b * s.c);
    fs_rope_table(cs, s.b, s.c, rope_base(s));
    fs_rope_forward_table(out, in[0], s.a, s.b, s.c, cs);
    free(cs);
}

/* the table form in place (out = in), as the query path runs it */
static void rope_table_inplace_fwd(dims s, float *const *in, float *out)
{
    float *cs = malloc(sizeof(float) * 2 * (size_t)s.b * s.c);
    memcpy(out, in[0], sizeof(float) * rope_out(s));
    fs_rope_table(cs, s.b, s.c, rope_base(s));
    fs_rope_forward_table(out, out, s.a, s.b, s.c, cs);
    free(cs);
}

/* docs/model.md: pair i at position p, theta = p / base^(2i/hd), interleaved pairs. */
static void rope_ref(dims s, const double *const *in, double *out)
{
    for (int h = 0; h < s.a; h++)
        for (int p = 0; p < s.b; p++)
            for (int i = 0; i < s.c / 2; i++) {
                const double *x = in[0] + ((size_t)h * s.b + p) * s.c;
                double *y = out + ((size_t)h * s.b + p) * s.c;
                double th = p / pow(rope_base(s), 2.0 * i / s.c);
                y[2 * i] = x[2 * i] * cos(th) - x[2 * i + 1] * sin(th);
                y[2 * i + 1] = x[2 * i + 1] * cos(th) + x[2 * i] * sin(th);
            }
}

static void rope_bwd(dims s, float *const *in, const float *out, const float *g, float *const *gin)
{
    fs_rope_backward(gin[0], g, s.a, s.b, s.c, rope_base(s));
}

static void rope_table_bwd(dims s, float *const *in, const float *out, const float *g, float *const *gin)
{
    float *cs = malloc(sizeof(float) * 2 * (size_t)s.b * s.c);
    fs_rope_table(cs, s.b, s.c, rope_base(s));
    fs_rope_backward_table(gin[0], g, s.a, s.b, s.c, cs);
    free(cs);
}

#define ROPE_SHAPES                                                                                                 \
    SHAPES({2, 5, 6, 1}, {2, 5, 6, 2}, {8, 5, 8, 1}, {3, 5, 12, 2}, {1, 1, 2, 1}, {4, 17, 16, 1}, {2, 9, 64, 2},  \
           {3, 3, 10, 1})

static const op op_rope = {
    .name = "rope", .n_in = 1, .in_size = rope_in, .out_size = rope_out, .in_scale = {1}, .fwd = rope_fwd,
    .ref = rope_ref, .bwd = rope_bwd, .diff = {true}, .fwd_tol = 1e-5, .bwd_tol = 1e-5, ROPE_SHAPES,
};

static const op op_rope_table = {
    .name = "rope_table", .n_in = 1, .in_size = rope_in, .out_size = rope_out, .in_scale = {1},
    .fwd = rope_table_fwd, .ref = rope_ref, .bwd = rope_table_bwd, .diff = {true}, .fwd_tol = 1e-5,
    .bwd_tol = 1e-5, ROPE_SHAPES,
};

static const op op_rope_table_inplace = {
    .name = "rope_table_inplace", .n_in = 1, .in_size = rope_in, .out_size = rope_out, .in_scale = {1},
    .fwd = rope_table_inplace_fwd, .ref = rope_ref, .fwd_tol = 1e-5, ROPE_SHAPES,
};

/* ---------------------------------------------------------------- attention: a = H, b = N, c = hd
 * scores: inputs q, k [H][N][hd] -> causal softmax probs [H][N][N] (scale 1/sqrt(hd));
 * values: inputs probs [H][N][N] (rows summing to anything), v [H][N][hd] -> [N][H*hd] */

static size_t qk_in(dims s, int i) { return (size_t)s.a * s.b * s.c; }
static size_t probs_out(dims s) { return (size_t)s.a * s.b * s.b; }
static float attn_scale(dims s) { return 1.0f / sqrtf((float)s.c); }

static void scores_fwd(dims s, float *const *in, float *out)
{
    float *pre = malloc(sizeof(float) * (probs_out(s) + FS_VL));
    fs_attn_scores(pre, out, in[0], in[1], s.a, s.b, s.c, attn_scale(s));
    free(pre);
}

static void scores_ref(dims s, const double *const *in, double *out)
{
    double sc = 1.0 / sqrt((double)s.c);
    for (int h = 0; h < s.a; h++)
        for (int i = 0; i < s.b; i++) {
            double *row = out + ((size_t)h * s.b + i) * s.b, mx = -INFINITY, z = 0;
            for (int j = 0; j <= i; j++) {
                double acc = 0;
                for (int t = 0; t < s.c; t++)
                    acc += in[0][((size_t)h * s.b + i) * s.c + t] * in[1][((size_t)h * s.b + j) * s.c + t];
                row[j] = acc * sc;
                mx = fmax(mx, row[j]);
            }
            for (int j = 0; j <= i; j++)
                z += row[j] = exp(row[j] - mx);
            for (int j = 0; j < s.b; j++)
                row[j] = j <= i ? row[j] / z : 0;
        }
}

/* through the probs: softmax backward, then the scores' backward */
static void scores_bwd(dims s, float *const *in, const float *out, const float *g, float *const *gin)
{
    float *gpre = calloc(probs_out(s) + FS_VL, sizeof(float));
    fs_softmax_backward(gpre, out, g, s.a * s.b, s.b);
    fs_attn_scores_backward(gin[0], gin[1], gpre, in[0], in[1], s.a, s.b, s.c, attn_scale(s));
    free(gpre);
}

static size_t values_in(dims s, int i) { return i == 0 ? probs_out(s) : (size_t)s.a * s.b * s.c; }
static size_t values_out(dims s) { return (size_t)s.a * s.b * s.c; }

static void values_fwd(dims s, float *const *in, float *out) { fs_attn_values(out, in[0], in[1], s.a, s.b, s.c); }

static void values_ref(dims s, const double *const *in, double *out)
{
    int d = s.a * s.c;
    for (int i = 0; i < s.b; i++)
        for (int h = 0; h < s.a; h++)
            for (int t = 0; t < s.c; t++) {
                double acc = 0;
                for (int j = 0; j < s.b; j++)
                    acc += in[0][((size_t)h * s.b + i) * s.b + j] * in[1][((size_t)h * s.b + j) * s.c + t];
                out[(size_t)i * d + h * s.c + t] = acc;
            }
}

static void values_bwd(dims s, float *const *in, const float *out, const float *g, float *const *gin)
{
    fs_attn_values_backward(gin[0], gin[1], g, in[0], in[1], s.a, s.b, s.c);
}

#define ATTN_SHAPES                                                                                                 \
    SHAPES({8, 5, 8}, {8, 8, 8}, {2, 1, 8}, {3, 7, 8}, {2, 9, 8}, {2, 16, 8}, {2, 17, 8}, {2, 5, 16}, {3, 6, 12},  \
           {1, 33, 4}, {2, 4, 64}, {1, 3, 66})

static const op op_attn_scores = {
    .name = "attn_scores", .n_in = 2, .in_size = qk_in, .out_size = probs_out, .in_scale = {1, 1},
    .fwd = scores_fwd, .ref = scores_ref, .bwd = scores_bwd, .diff = {true, true}, .fwd_tol = 1e-5,
    .bwd_tol = 1e-5, ATTN_SHAPES,
};

static const op op_attn_values = {
    .name = "attn_values", .n_in = 2, .in_size = values_in, .out_size = values_out, .in_scale = {1, 1},
    .fwd = values_fwd, .ref = values_ref, .bwd = values_bwd, .diff = {true, true}, .fwd_tol = 1e-5,
    .bwd_tol = 1e-5, ATTN_SHAPES,
};

/* ---------------------------------------------------------------- lane-major kernels (KV step)
 * Activations [features][FS_LANES]. */

/* layernorm: a = dim; inputs x [dim][L], w [dim], b [dim]; reference = row LayerNorm per lane */
static size_t lln_in(dims s, int i) { return i == 0 ? (size_t)s.a * FS_LANES : (size_t)s.a; }
static size_t lln_out(dims s) { return (size_t)s.a * FS_LANES; }

static void lln_fwd(dims s, float *const *in, float *out) { fs_lanes_layernorm(out, in[0], in[1], in[2], s.a); }

static void lln_ref(dims s, const double *const *in, double *out)
{
    for (int l = 0; l < FS_LANES; l++) {
        double mu = 0, var = 0;
        for (int i = 0; i < s.a; i++)
            mu += in[0][(size_t)i * FS_LANES + l];
        mu /= s.a;
        for (int i = 0; i < s.a; i++)
            var += (in[0][(size_t)i * FS_LANES + l] - mu) * (in[0][(size_t)i * FS_LANES + l] - mu);
        var /= s.a;
        for (int i = 0; i < s.a; i++)
            out[(size_t)i * FS_LANES + l] = (in[0][(size_t)i * FS_LANES + l] - mu) / sqrt(var + 1e-5) * in[1][i] +
                                            in[2][i];
    }
}

static const op op_lanes_layernorm = {
    .name = "lanes_layernorm", .n_in = 3, .in_size = lln_in, .out_size = lln_out, .in_scale = {2, 0.5, 0.5},
    .in_offset = {0, 1, 0}, .fwd = lln_fwd, .ref = lln_ref, .fwd_tol = 1e-5, SHAPES({3}, {8}, {17}, {64}, {65}),
};

/* matmul: a = n outputs, b = k inputs, c = epilogue (0 store, 1 gelu, 2 add to, 3 staged
 * rows); inputs x [k][L] (or token rows [L][k] for staged), W [n][k], bias [n], out0 [n][L] */
static size_t lmm_in(dims s, int i)
{
    return i == 0 ? (size_t)s.b * FS_LANES : i == 1 ? (size_t)s.a * s.b : i == 2 ? (size_t)s.a : (size_t)s.a * FS_LANES;
}
static size_t lmm_out(dims s) { return (size_t)s.a * FS_LANES; }

static void lmm_fwd(dims s, float *const *in, float *out)
{
    fs_lane_linear l;
    fs_lane_linear_pack(&l, in[1], in[2], s.a, s.b, s.c == 3 ? FS_LANE_TILE : FS_LANE_ROWS);
    if (s.c == 3) {
        float *staged = malloc(sizeof(float) * fs_lanes_staged_floats(s.b));
        fs_lanes_stage_rows(staged, in[0], FS_LANES - 1, s.b); /* the last lane missing: zeros */
        fs_lanes_matmul_rows(out, staged, &l);
        free(staged);
    } else if (s.c == 2) {
        memcpy(out, in[3], sizeof(float) * lmm_out(s));
        fs_lanes_matmul_add_to(out, in[0], &l);
    } else if (s.c == 1) {
        fs_lanes_matmul_gelu(out, in[0], &l);
    } else {
        fs_lanes_matmul(out, in[0], &l);
    }
    fs_lane_linear_free(&l);
}

static void lmm_ref(dims s, const double *const *in, double *out)
{
    for (int r = 0; r < s.a; r++)
        for (int q = 0; q < FS_LANES; q++) {
            double acc = in[2][r];
            for (int i = 0; i < s.b; i++) {
                double x = s.c == 3 ? (q < FS_LANES - 1 ? in[0][(size_t)q * s.b + i] : 0) : in[0][(size_t)i * FS_LANES + q];
                acc += in[1][(size_t)r * s.b + i] * x;
            }
            if (s.c == 1)
                acc = 0.5 * acc * (1 + tanh(sqrt(2 / M_PI) * (acc + 0.044715 * acc * acc * acc)));
            if (s.c == 2)
                acc += in[3][(size_t)r * FS_LANES + q];
            out[(size_t)r * FS_LANES + q] = acc;
        }
}

static const op op_lanes_matmul = {
    .name = "lanes_matmul", .n_in = 4, .in_size = lmm_in, .out_size = lmm_out, .in_scale = {1, 1, 1, 1},
    .fwd = lmm_fwd, .ref = lmm_ref, .fwd_tol = 1e-5,
    SHAPES({1, 1, 0}, {7, 9, 0}, {8, 64, 0}, {17, 33, 0}, {192, 64, 0}, {256, 64, 1}, {6, 5, 1}, {64, 256, 2},
           {13, 7, 2}, {64, 512, 3}, {5, 7, 3}, {17, 33, 3}, {16, 16, 3}),
};

/* rope: a = heads, b = hd, c = position of lane 0 (lane l at c + l); input [heads*hd][L] */
static size_t lrope_out(dims s) { return (size_t)s.a * s.b * FS_LANES; }
static size_t lrope_in(dims s, int i) { return lrope_out(s); }

static void lrope_fwd(dims s, float *const *in, float *out)
{
    float cs[32 * FS_LANES], sn[32 * FS_LANES]; /* lane l at position c + l */
    for (int i = 0; i < s.b / 2; i++)
        for (int l = 0; l < FS_LANES; l++)
            fs_rope_angle(s.c + l, i, s.b, 10000.0, &sn[i * FS_LANES + l], &cs[i * FS_LANES + l]);
    memcpy(out, in[0], sizeof(float) * lrope_in(s, 0));
    fs_lanes_rope(out, cs, sn, s.a, s.b);
}

static void lrope_ref(dims s, const double *const *in, double *out)
{
    for (int h = 0; h < s.a; h++)
        for (int i = 0; i < s.b / 2; i++) {
            for (int l = 0; l < FS_LANES; l++) {
                double th = (s.c + l) / pow(10000.0, 2.0 * i / s.b);
                size_t r0 = (size_t)(h * s.b + 2 * i) * FS_LANES + l, r1 = r0 + FS_LANES;
                out[r0] = in[0][r0] * cos(th) - in[0][r1] * sin(th);
                out[r1] = in[0][r1] * cos(th) + in[0][r0] * sin(th);
            }
        }
}

static const op op_lanes_rope = {
    .name = "lanes_rope", .n_in = 1, .in_size = lrope_in, .out_size = lrope_out, .in_scale = {1},
    .fwd = lrope_fwd, .ref = lrope_ref, .fwd_tol = 1e-5, SHAPES({8, 8, 5}, {1, 2, 0}, {3, 12, 17}, {2, 64, 31}),
};

/* attention of one head: a = seq cached keys, b = hd; inputs q, k, v [hd][L], ctx_k,
 * ctx_v [seq][hd]; each lane attends to the seq cached tokens and to itself */
static size_t latt_in(dims s, int i) { return i < 3 ? (size_t)s.b * FS_LANES : (size_t)s.a * s.b; }
static size_t latt_out(dims s) { return (size_t)s.b * FS_LANES; }

static void latt_fwd(dims s, float *const *in, float *out)
{
    float *scores = malloc(sizeof(float) * (size_t)(s.a + 1) * FS_LANES);
    fs_lanes_attend_head(out, in[0], in[1], in[2], in[3], in[4], s.a, s.b, scores);
    free(scores);
}

static void latt_ref(dims s, const double *const *in, double *out)
{
    const double *q = in[0], *k = in[1], *v = in[2], *ck = in[3], *cv = in[4];
    double sc = 1.0 / sqrt((double)s.b);
    double *p = malloc(sizeof(double) * (size_t)(s.a + 1));
    for (int l = 0; l < FS_LANES; l++) {
        double mx = -INFINITY, z = 0;
        for (int j = 0; j <= s.a; j++) {
            double acc = 0;
            for (int t = 0; t < s.b; t++)
                acc += q[(size_t)t * FS_LANES + l] * (j < s.a ? ck[(size_t)j * s.b + t] : k[(size_t)t * FS_LANES + l]);
            p[j] = acc * sc;
            mx = fmax(mx, p[j]);
        }
        for (int j = 0; j <= s.a; j++)
            z += p[j] = exp(p[j] - mx);
        for (int t = 0; t < s.b; t++) {
            double acc = 0;
            for (int j = 0; j <= s.a; j++)
                acc += p[j] / z * (j < s.a ? cv[(size_t)j * s.b + t] : v[(size_t)t * FS_LANES + l]);
            out[(size_t)t * FS_LANES + l] = acc;
        }
    }
    free(p);
}

static const op op_lanes_attend = {
    .name = "lanes_attend_head", .n_in = 5, .in_size = latt_in, .out_size = latt_out, .in_scale = {1, 1, 1, 1, 1},
    .fwd = latt_fwd, .ref = latt_ref, .fwd_tol = 1e-5,
    SHAPES({4, 8}, {0, 8}, {1, 8}, {3, 8}, {5, 8}, {9, 4}, {33, 12}, {2, 64}, {7, 6}),
};

/* ---------------------------------------------------------------- the table */

static const op *const table[] = {
    &op_matmul,     &op_matmul_packed,      &op_layernorm,      &op_gelu,           &op_softmax,
    &op_rope,       &op_rope_table,         &op_rope_table_inplace, &op_attn_scores, &op_attn_values,
    &op_lanes_layernorm, &op_lanes_matmul, &op_lanes_rope,      &op_lanes_attend,
};

static const op *find(const char *name)
{
    for (size_t i = 0; i < sizeof table / sizeof *table; i++)
        if (!strcmp(table[i]->name, name))
            return table[i];
    cr_assert_fail("no kernel %s in the table", name);
    return NULL;
}

Test(kernel_table, matmul_matches_reference_and_gradients) { run_op(find("matmul"), 101); }
Test(kernel_table, packed_matmul_matches_reference) { run_op(find("matmul_packed"), 102); }
Test(kernel_table, layernorm_matches_reference_and_gradients) { run_op(find("layernorm"), 103); }
Test(kernel_table, gelu_matches_reference_and_gradient) { run_op(find("gelu"), 104); }
Test(kernel_table, softmax_masks_and_matches_reference_and_gradient) { run_op(find("softmax"), 105); }
Test(kernel_table, rope_matches_reference_and_gradient) { run_op(find("rope"), 106); }
Test(kernel_table, rope_table_form_matches_reference_and_gradient) { run_op(find("rope_table"), 107); }
Test(kernel_table, rope_table_form_works_in_place) { run_op(find("rope_table_inplace"), 108); }
Test(kernel_table, attention_probs_match_reference_and_gradients) { run_op(find("attn_scores"), 109); }
Test(kernel_table, attention_values_match_reference_and_gradients) { run_op(find("attn_values"), 110); }
Test(kernel_table, lane_layernorm_matches_reference) { run_op(find("lanes_layernorm"), 111); }
Test(kernel_table, lane_matmuls_match_reference_for_every_epilogue) { run_op(find("lanes_matmul"), 112); }
Test(kernel_table, lane_rope_matches_reference) { run_op(find("lanes_rope"), 113); }
Test(kernel_table, lane_attention_matches_reference) { run_op(find("lanes_attend_head"), 114); }

