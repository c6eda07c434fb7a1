/* Lane-major ("feature-major") kernels: FS_LANES independent tokens at once, every
 * activation [features][FS_LANES], so one vector holds one feature of FS_VL tokens.
 * LayerNorm, RoPE, attention and GELU are then plain vector code across tokens, and a
 * matmul is a packed weight block times rows of lanes. The key-value cache step
 * (src/kv) is built from these. Element-wise arithmetic follows the order of the row
 * kernels (kernels.h) so that results agree with the full forward to float rounding
 * of the matmul sums. Internal to the library. */
#ifndef FEWSHOT_KERNELS_LANES_H
#define FEWSHOT_KERNELS_LANES_H

#include <stddef.h>

#include "simd/vec.h"

enum {
    FS_LANES = 2 * FS_VL,                  /* tokens per step chunk: two vectors */
    FS_LANE_ROWS = FS_NREGS == 32 ? 8 : 6, /* output rows per packed block of fs_lanes_matmul */
    FS_LANE_TILE = FS_VL,                  /* tokens x inputs per tile of fs_lanes_matmul_rows */
};

/* A Linear layer packed for the lane matmuls: W [n, k] ([out, in]) regrouped into
 * blocks of `block` output rows, block b = [k][block] (rows past n zero), plus a bias
 * [n] (zeros when the layer has none). fs_lanes_matmul* take FS_LANE_ROWS blocks,
 * fs_lanes_matmul_rows FS_LANE_TILE. */
typedef struct {
    float *w;
    float *bias;
    int n, k, block;
} fs_lane_linear;

/* -1 (nothing held) when out of memory. */
int fs_lane_linear_pack(fs_lane_linear *l, const float *w, const float *bias, int n, int k, int block);
void fs_lane_linear_free(fs_lane_linear *l);

void fs_lanes_matmul(float *out, const float *in, const fs_lane_linear *l);        /* out[n][L] = W in[k][L] + b */
void fs_lanes_matmul_gelu(float *out, const float *in, const fs_lane_linear *l);   /* gelu(W in + b) */
void fs_lanes_matmul_add_to(float *out, const float *in, const fs_lane_linear *l); /* out += W in + b */
/* Floats of the staging buffer for FS_LANES token rows of k inputs. */
size_t fs_lanes_staged_floats(int k);
/* Token rows src [rows <= L][k] -> staged tiles for fs_lanes_matmul_rows (missing rows 0). */
void fs_lanes_stage_rows(float *staged, const float *src, int rows, int k);
/* out[n][L] = W x + b for FS_LANES staged token rows (block FS_LANE_TILE packing). */
void fs_lanes_matmul_rows(float *out, const float *staged, const fs_lane_linear *l);
/* LayerNorm over the feature axis (biased variance, eps 1e-5), as fs_layernorm_forward. */
void fs_lanes_layernorm(float *out, const float *in, const float *w, const float *b, int dim);
/* RoPE on [heads*hd][L] in place, every lane at its own position: pair i of every head
 * rotated in lane l by (cs[i][l], sn[i][l]) (cs, sn [hd/2][L], from fs_rope_angle). */
void fs_lanes_rope(float *rows, const float *cs, const float *sn, int heads, int hd);
/* One head: q, k, v = [hd][L] rows of the step's tokens; ctx_k, ctx_v = [seq][hd] cached
 * keys/values; each token attends to the seq cached tokens and to itself. scores has
 * room for (seq + 1) x L floats. */
void fs_lanes_attend_head(float *vals, const float *q, const float *k, const float *v, const float *ctx_k,
                          const float *ctx_v, int seq, int hd, float *scores);

/* One lane attending to its own cache, for a step chunk whose lanes belong to several
 * caches (a batch's rows): cost O(seq * hd) for that lane instead of for all FS_LANES.
 * fs_lanes_stage_head lays one head's ctx_k, ctx_v ([seq][hd]) out in `stage`
 * (fs_lanes_head_stage_floats(seq, hd) floats, zeroed before first use): keys transposed
 * [hd][ld], ld = seq + 1 rounded up to FS_VL, then values [seq + 1][hd rounded up]. Then
 * fs_lanes_attend_lane writes vals[t][lane] for lane `lane` of q, k, v ([hd][L] rows);
 * the values equal fs_lanes_attend_head's for that lane bit for bit (same operations in
 * the same order). scores: room for ld floats. */
size_t fs_lanes_head_stage_floats(int seq, int hd);
void fs_lanes_stage_head(float *stage, const float *ctx_k, const float *ctx_v, int seq, int hd);
void fs_lanes_attend_lane(float *vals, const float *q, const float *k, const float *v, float *stage, int seq, int hd,
                          int lane, float *scores);

#endif
