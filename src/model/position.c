/* Additive position embeddings (model/position.h). */
#include "model/position.h"

#include <math.h>

void fs_position_embedding(const fs_model *m, int p0, int n, float *pos)
{
    int d = m->cfg.d_model;
    for (int r = 0; r < n; r++) {
        int p = p0 + r;
        for (int i = 0; i < d; i++) {
            float *o = pos + (size_t)r * d + i;
            if (m->cfg.pos_embedding == FS_POS_APE) {
                *o = m->p.pos_w[(size_t)i * FS_APE_MAX_TOKENS + p];
            } else {
                float inv = (float)(1.0 / pow(m->cfg.rope_base, (double)(2 * (i / 2)) / d));
                float angle = (float)p * inv;
                *o = (i % 2 == 0) ? sinf(angle) : cosf(angle);
            }
        }
    }
}
