/* Lane-major kernels (kernels/lanes.h) on the build's vector type: activations are
 * [features][FS_LANES], LANE_VECS vectors per feature row. */
#include "kernels/lanes.h"

#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/fileio.h"
#include "simd/vmath.h"

enum {
    LANE_VECS = FS_LANES / FS_VL,
    KEY_BLOCK = 4,              /* context keys scored at once */
    DIM_BLOCK = FS_NREGS / 4,   /* value dims accumulated at once */
};

#define FOR_VECS for (int v = 0; v < LANE_VECS; v++)

/* ---- packed Linear layers ---- */

int fs_lane_linear_pack(fs_lane_linear *l, const float *w, const float *bias, int n, int k, int block)
{
    size_t blocks = (size_t)(n + block - 1) / block;
    l->n = n;
    l->k = k;
    l->block = block;
    l->w = fs_alloc(sizeof(float) * blocks * (size_t)k * block);
    l->bias = fs_alloc(sizeof(float) * (size_t)n);
    if (!l->w || !l->bias) {
        fs_lane_linear_free(l);
        return -1;
    }
    for (int r = 0; r < n; r++)
        for (int i = 0; i < k; i++)
            l->w[((size_t)(r / block) * k + i) * block + r % block] = w[(size_t)r * k + i];
    if (bias)
        memcpy(l->bias, bias, sizeof(float) * (size_t)n);
    return 0;
}

void fs_lane_linear_free(fs_lane_linear *l)
{
    free(l->w);
    free(l->bias);
    memset(l, 0, sizeof *l);
}

/* ---- matmuls ---- */

/* What a matmul does with W in + b before storing it. */
typedef enum { EPI_STORE, EPI_GELU, EPI_ADD_TO } epilogue;

/* One block of FS_LANE_ROWS outputs, feature-major: acc[r] = sum_i w[i][r] * in[i] over
 * all lanes, y = acc + bias, then out = y, gelu(y) or out + y. */
static inline void matmul_block(float *out, const float *in, const float *wb, const float *bias, int k, int rows,
                                epilogue epi)
{
    fs_vf acc[FS_LANE_ROWS][LANE_VECS];
    for (int r = 0; r < FS_LANE_ROWS; r++)
        FOR_VECS acc[r][v] = vzero();
    for (int i = 0; i < k; i++) {
        fs_vf x[LANE_VECS];
        FOR_VECS x[v] = vload(in + (size_t)i * FS_LANES + FS_VL * v);
        const float *wi = wb + (size_t)i * FS_LANE_ROWS;
        for (int r = 0; r < FS_LANE_ROWS; r++) {
            fs_vf wr = vset1(wi[r]);
            FOR_VECS acc[r][v] = vfma(wr, x[v], acc[r][v]);
        }
    }
    for (int r = 0; r < rows; r++)
        FOR_VECS {
            float *o = out + (size_t)r * FS_LANES + FS_VL * v;
            fs_vf y = vadd(acc[r][v], vset1(bias[r]));
            vstore(o, epi == EPI_GELU ? vgelu(y) : epi == EPI_ADD_TO ? vadd(vload(o), y) : y);
        }
}

static void matmul(float *out, const float *in, const fs_lane_linear *l, epilogue epi)
{
    assert(l->block == FS_LANE_ROWS);
    for (int r0 = 0; r0 < l->n; r0 += FS_LANE_ROWS) {
        int rows = l->n - r0 < FS_LANE_ROWS ? l->n - r0 : FS_LANE_ROWS;
        matmul_block(out + (size_t)r0 * FS_LANES, in, l->w + (size_t)r0 * l->k, l->bias + r0, l->k, rows, epi);
    }
}

void fs_lanes_matmul(float *out, const float *in, const fs_lane_linear *l) { matmul(out, in, l, EPI_STORE); }
void fs_lanes_matmul_gelu(float *out, const float *in, const fs_lane_linear *l) { matmul(out, in, l, EPI_GELU); }
void fs_lanes_matmul_add_to(float *out, const float *in, const fs_lane_linear *l) { matmul(out, in, l, EPI_ADD_TO); }

enum { T = FS_LANE_TILE };

size_t fs_lanes_staged_floats(int k) { return (size_t)FS_LANES * (size_t)((k + T - 1) / T * T); }

/* Tile-major staging of FS_LANES token rows: element (q, i) of the [L][k] rows lands at
 * tile (q / T, i / T), offset (q % T) * T + i % T, so the kernel addresses T tokens
 * with constant offsets. Rows >= `rows` and columns >= k are 0. */
void fs_lanes_stage_rows(float *staged, const float *src, int rows, int k)
{
    int tiles = (k + T - 1) / T;
    for (int q = 0; q < FS_LANES; q++)
        for (int t = 0; t < tiles; t++) {
            float *dst = staged + (((size_t)(q / T) * tiles + t) * T + q % T) * T;
            int cols = k - T * t < T ? k - T * t : T;
            if (q < rows && cols == T) {
                vstore(dst, vload(src + (size_t)q * k + T * t));
            } else {
                memset(dst, 0, sizeof(float) * T);
                if (q < rows)
                    memcpy(dst, src + (size_t)q * k + T * t, sizeof(float) * cols);
            }
        }
}

/* T staged tokens x T outputs: acc[q] = sum_i in[q][i] * w[i][:], transposed in
 * registers to feature-major rows of T lanes, + bias. */
static void matmul_rows_block(float *out, const float *staged, const float *wb, const float *bias, int k, int outputs)
{
    fs_vf acc[T];
    for (int q = 0; q < T; q++)
        acc[q] = vzero();
    for (int i0 = 0; i0 < k; i0 += T) {
        const float *tile = staged + (size_t)i0 * T;
        int cols = k - i0 < T ? k - i0 : T;
        for (int j = 0; j < cols; j++) {
            fs_vf w = vload(wb + (size_t)(i0 + j) * T);
            for (int q = 0; q < T; q++)
                acc[q] = vfma(vset1(tile[q * T + j]), w, acc[q]);
        }
    }
    vtranspose(acc);
    for (int j = 0; j < outputs; j++)
        vstore(out + (size_t)j * FS_LANES, vadd(acc[j], vset1(bias[j])));
}

void fs_lanes_matmul_rows(float *out, const float *staged, const fs_lane_linear *l)
{
    assert(l->block == T);
    size_t part = (size_t)T * ((l->k + T - 1) / T * T);
    for (int q0 = 0; q0 < FS_LANES; q0 += T)
        for (int r0 = 0; r0 < l->n; r0 += T)
            matmul_rows_block(out + (size_t)r0 * FS_LANES + q0, staged + (q0 / T) * part, l->w + (size_t)r0 * l->k,
                              l->bias + r0, l->k, l->n - r0 < T ? l->n - r0 : T);
}

/* ---- element-wise layers ---- */

void fs_lanes_layernorm(float *out, const float *in, const float *w, const float *b, int dim)
{
    fs_vf n = vset1((float)dim), one = vset1(1.f), eps = vset1(1e-5f);
    FOR_VECS {
        const float *x = in + FS_VL * v;
        float *y = out + FS_VL * v;
        fs_vf mu = vzero();
        for (int i = 0; i < dim; i++)
            mu = vadd(mu, vload(x + (size_t)i * FS_LANES));
        mu = vdiv(mu, n);
        fs_vf var = vzero();
        for (int i = 0; i < dim; i++) {
            fs_vf c = vsub(vload(x + (size_t)i * FS_LANES), mu);
            var = vadd(var, vmul(c, c));
        }
        var = vdiv(var, n);
        fs_vf rstd = vdiv(one, vsqrt(vadd(var, eps)));
        for (int i = 0; i < dim; i++) {
            fs_vf c = vmul(vsub(vload(x + (size_t)i * FS_LANES), mu), rstd);
            vstore(y + (size_t)i * FS_LANES, vadd(vmul(c, vset1(w[i])), vset1(b[i])));
        }
    }
}

/* (x0, x1) -> (x0 cos - x1 sin, x1 cos + x0 sin) (docs/model.md, interleaved pairs), per lane. */
void fs_lanes_rope(float *rows, const float *cs, const float *sn, int heads, int hd)
{
    for (int h = 0; h < heads; h++)
        for (int i = 0; i < hd / 2; i++) {
            float *r0 = rows + (size_t)(h * hd + 2 * i) * FS_LANES, *r1 = r0 + FS_LANES;
            FOR_VECS {
                fs_vf c = vload(cs + (size_t)i * FS_LANES + FS_VL * v), s = vload(sn + (size_t)i * FS_LANES + FS_VL * v);
                fs_vf x0 = vload(r0 + FS_VL * v), x1 = vload(r1 + FS_VL * v);
                vstore(r0 + FS_VL * v, vsub(vmul(x0, c), vmul(x1, s)));
                vstore(r1 + FS_VL * v, vadd(vmul(x1, c), vmul(x0, s)));
            }
        }
}

/* ---- attention of one head: context keys [0, seq) then the token itself ---- */

/* scores[j] = (q . ctx_k[j]) * scale for n <= KEY_BLOCK context keys (sum over t ascending). */
static inline void context_scores(float *scores, const float *q, const float *ctx_k, int n, int hd, fs_vf scale)
{
    fs_vf acc[KEY_BLOCK][LANE_VECS];
    for (int j = 0; j < n; j++)
        FOR_VECS acc[j][v] = vzero();
    for (int t = 0; t < hd; t++) {
        fs_vf qt[LANE_VECS];
        FOR_VECS qt[v] = vload(q + (size_t)t * FS_LANES + FS_VL * v);
        for (int j = 0; j < n; j++)
            FOR_VECS acc[j][v] = vfma(qt[v], vset1(ctx_k[(size_t)j * hd + t]), acc[j][v]);
    }
    for (int j = 0; j < n; j++)
        FOR_VECS vstore(scores + (size_t)j * FS_LANES + FS_VL * v, vmul(acc[j][v], scale));
}

/* Scores of the seq context keys, then of the token's own key at index seq. */
static void head_scores(float *scores, const float *q, const float *k, const float *ctx_k, int seq, int hd)
{
    fs_vf scale = vset1(1.0f / sqrtf((float)hd));
    int j = 0;
    for (; j + KEY_BLOCK <= seq; j += KEY_BLOCK)
        context_scores(scores + (size_t)j * FS_LANES, q, ctx_k + (size_t)j * hd, KEY_BLOCK, hd, scale);
    for (; j < seq; j++)
        context_scores(scores + (size_t)j * FS_LANES, q, ctx_k + (size_t)j * hd, 1, hd, scale);
    FOR_VECS {
        fs_vf acc = vzero();
        for (int t = 0; t < hd; t++)
            acc = vfma(vload(q + (size_t)t * FS_LANES + FS_VL * v), vload(k + (size_t)t * FS_LANES + FS_VL * v), acc);
        vstore(scores + (size_t)seq * FS_LANES + FS_VL * v, vmul(acc, scale));
    }
}

/* Softmax over the seq + 1 keys of every lane, in place (as fs_softmax_forward). */
static void head_softmax(float *scores, int keys)
{
    FOR_VECS {
        float *s = scores + FS_VL * v;
        fs_vf mx = vload(s);
        for (int j = 1; j < keys; j++)
            mx = vmax(mx, vload(s + (size_t)j * FS_LANES));
        fs_vf sum = vzero();
        for (int j = 0; j < keys; j++) {
            fs_vf e = vexp(vsub(vload(s + (size_t)j * FS_LANES), mx));
            vstore(s + (size_t)j * FS_LANES, e);
            sum = vadd(sum, e);
        }
        fs_vf inv = vdiv(vset1(1.f), sum);
        for (int j = 0; j < keys; j++)
            vstore(s + (size_t)j * FS_LANES, vmul(vload(s + (size_t)j * FS_LANES), inv));
    }
}

/* vals[t] = sum_j p_j ctx_v[j][t] + p_self v[t] for n <= DIM_BLOCK dims t0.. (j ascending). */
static inline void head_values(float *vals, const float *probs, const float *ctx_v, const float *v_rows, int seq,
                               int t0, int n, int hd)
{
    fs_vf acc[DIM_BLOCK][LANE_VECS];
    for (int t = 0; t < n; t++)
        FOR_VECS acc[t][v] = vzero();
    for (int j = 0; j < seq; j++) {
        fs_vf p[LANE_VECS];
        FOR_VECS p[v] = vload(probs + (size_t)j * FS_LANES + FS_VL * v);
        for (int t = 0; t < n; t++)
            FOR_VECS acc[t][v] = vfma(p[v], vset1(ctx_v[(size_t)j * hd + t0 + t]), acc[t][v]);
    }
    for (int t = 0; t < n; t++)
        FOR_VECS {
            fs_vf self = vfma(vload(probs + (size_t)seq * FS_LANES + FS_VL * v),
                              vload(v_rows + (size_t)(t0 + t) * FS_LANES + FS_VL * v), acc[t][v]);
            vstore(vals + (size_t)(t0 + t) * FS_LANES + FS_VL * v, self);
        }
}

void fs_lanes_attend_head(float *vals, const float *q, const float *k, const float *v_rows, const float *ctx_k,
                          const float *ctx_v, int seq, int hd, float *scores)
{
    head_scores(scores, q, k, ctx_k, seq, hd);
    head_softmax(scores, seq + 1);
    int t = 0;
    for (; t + DIM_BLOCK <= hd; t += DIM_BLOCK)
        head_values(vals, scores, ctx_v, v_rows, seq, t, DIM_BLOCK, hd);
    for (; t < hd; t++)
        head_values(vals, scores, ctx_v, v_rows, seq, t, 1, hd);
}

/* ---- attention of one lane: its own cached keys, the keys along the vector ---- */

static int round_up(int n, int m) { return (n + m - 1) / m * m; }

size_t fs_lanes_head_stage_floats(int seq, int hd)
{
    return (size_t)hd * round_up(seq + 1, FS_VL) + (size_t)(seq + 1) * round_up(hd, FS_VL);
}

void fs_lanes_stage_head(float *stage, const float *ctx_k, const float *ctx_v, int seq, int hd)
{
    int ld = round_up(seq + 1, FS_VL), hdp = round_up(hd, FS_VL);
    float *kt = stage, *vp = stage + (size_t)hd * ld;
    for (int t = 0; t < hd; t++)
        for (int j = 0; j < seq; j++)
            kt[(size_t)t * ld + j] = ctx_k[(size_t)j * hd + t];
    for (int j = 0; j < seq; j++)
        memcpy(vp + (size_t)j * hdp, ctx_v + (size_t)j * hd, sizeof(float) * hd);
}

/* Each step below is, element for element, the operation fs_lanes_attend_head applies to
 * this lane (same operands, same order): fma chains over t for the scores, a running max,
 * exp, a sum over the keys in order, one division, fma chains over the keys for the values. */
void fs_lanes_attend_lane(float *vals, const float *q, const float *k, const float *v, float *stage, int seq, int hd,
                          int lane, float *scores)
{
    int ld = round_up(seq + 1, FS_VL), hdp = round_up(hd, FS_VL), n = seq + 1;
    float *kt = stage, *vp = stage + (size_t)hd * ld;
    for (int t = 0; t < hd; t++) {
        kt[(size_t)t * ld + seq] = k[(size_t)t * FS_LANES + lane];
        vp[(size_t)seq * hdp + t] = v[(size_t)t * FS_LANES + lane];
    }
    fs_vf scale = vset1(1.0f / sqrtf((float)hd));
    for (int j0 = 0; j0 < n; j0 += FS_VL) {
        fs_vf acc = vzero();
        for (int t = 0; t < hd; t++)
            acc = vfma(vset1(q[(size_t)t * FS_LANES + lane]), vload(kt + (size_t)t * ld + j0), acc);
        vstore(scores + j0, vmul(acc, scale));
    }
    for (int j = n; j < ld; j++)
        scores[j] = 0.f;
    float mx = scores[0];
    for (int j = 1; j < n; j++)
        mx = mx > scores[j] ? mx : scores[j];
    float sum = 0.f;
    for (int j0 = 0; j0 < n; j0 += FS_VL)
        vstore(scores + j0, vexp(vsub(vload(scores + j0), vset1(mx))));
    for (int j = 0; j < n; j++)
        sum += scores[j];
    fs_vf inv = vset1(1.f / sum);
    for (int j0 = 0; j0 < n; j0 += FS_VL)
        vstore(scores + j0, vmul(vload(scores + j0), inv));
    for (int t0 = 0; t0 < hd; t0 += FS_VL) {
        fs_vf acc = vzero();
        for (int j = 0; j < n; j++)
            acc = vfma(vset1(scores[j]), vload(vp + (size_t)j * hdp + t0), acc);
        float out[FS_VL];
        vstore(out, acc);
        for (int t = t0; t < hd && t < t0 + FS_VL; t++)
            vals[(size_t)t * FS_LANES + lane] = out[t - t0];
    }
}
