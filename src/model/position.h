/* Additive position terms (docs/model.md), one home for the cache forward, the
 * query-only forward and the key-value cache step. RoPE's angles are fs_rope_angle. */
#ifndef FEWSHOT_MODEL_POSITION_H
#define FEWSHOT_MODEL_POSITION_H

#include "fewshot/model.h"

/* pos[n][d] = the position embedding of positions p0 .. p0 + n - 1: APE = columns of
 * pos_embed.weight, sinusoidal = sin / cos of p / base^(2 (i/2) / d) at even / odd i.
 * Not for RoPE models (they rotate q and k instead). */
void fs_position_embedding(const fs_model *m, int p0, int n, float *pos);

#endif
