/* The key-value cache step: FS_LANES independent tokens at one position run through
 * the blocks of docs/model.md, each attending to the cached tokens and to itself.
 * Used for queries (many lanes, logits) and for appending context tokens (one lane,
 * keys/values kept). */
#include "kv/kv_internal.h"
#include "base/fileio.h"
#include "kernels/kernels.h"
#include "model/position.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

static float *lanes(int rows) { return fs_alloc(sizeof(float) * (size_t)(rows > 0 ? rows : 1) * FS_LANES); }

/* Rows with at most this many lanes in a shared chunk attend lane by lane
 * (fs_lanes_attend_lane); above it all lanes against the row's cache cost less. */
enum { KV_LANE_BY_LANE = FS_LANES / 4 };

struct fs_kv_weights *kv_weights_create(const fs_model *m)
{
    const fs_model_config *c = &m->cfg;
    int d = c->d_model, F = fs_mlp_hidden(c);
    struct fs_kv_weights *w = fs_alloc(sizeof *w); /* zeroed: a partial one frees cleanly */
    if (!w)
        return NULL;
    int rc = fs_lane_linear_pack(&w->embed, m->p.example_w, m->p.example_b, d, c->input_dim, FS_LANE_TILE) |
             fs_lane_linear_pack(&w->unembed, m->p.unembed_w, m->p.unembed_b, c->num_classes, d, FS_LANE_ROWS);
    for (int l = 0; l < c->depth && rc == 0; l++) {
        const fs_block_params *bp = &m->p.blocks[l];
        rc |= fs_lane_linear_pack(&w->layer[l].qkv, bp->qkv_w, bp->qkv_b, 3 * d, d, FS_LANE_ROWS);
        rc |= fs_lane_linear_pack(&w->layer[l].proj, bp->proj_w, NULL, d, d, FS_LANE_ROWS);
        if (F > 0) {
            rc |= fs_lane_linear_pack(&w->layer[l].fc1, bp->fc1_w, bp->fc1_b, F, d, FS_LANE_ROWS);
            rc |= fs_lane_linear_pack(&w->layer[l].fc2, bp->fc2_w, bp->fc2_b, d, F, FS_LANE_ROWS);
        }
    }
    if (rc) {
        kv_weights_free(w, c->depth);
        return NULL;
    }
    return w;
}

void kv_weights_free(struct fs_kv_weights *w, int depth)
{
    if (!w)
        return;
    fs_lane_linear_free(&w->embed);
    fs_lane_linear_free(&w->unembed);
    for (int l = 0; l < depth; l++) {
        fs_lane_linear_free(&w->layer[l].qkv);
        fs_lane_linear_free(&w->layer[l].proj);
        fs_lane_linear_free(&w->layer[l].fc1);
        fs_lane_linear_free(&w->layer[l].fc2);
    }
    free(w);
}

int kv_scratch_init(kv_scratch *s, const fs_model_config *cfg, int max_keys)
{
    int d = cfg->d_model, hd = d / cfg->num_heads;
    s->staged = fs_alloc(sizeof(float) * fs_lanes_staged_floats(cfg->input_dim));
    s->gathered = lanes(cfg->input_dim);
    s->x = lanes(d);
    s->norm = lanes(d);
    s->qkv = lanes(3 * d);
    s->vals = lanes(d);
    s->group_vals = lanes(d);
    s->hidden = lanes(fs_mlp_hidden(cfg));
    s->scores = lanes(max_keys);
    s->logits = lanes(cfg->num_classes);
    s->rope_cos = lanes(hd / 2);
    s->rope_sin = lanes(hd / 2);
    s->pos_add = lanes(d);
    s->stage = fs_alloc(sizeof(float) * fs_lanes_head_stage_floats(max_keys, hd));
    if (s->stage && s->staged && s->gathered && s->x && s->norm && s->qkv && s->vals && s->group_vals && s->hidden && s->scores &&
        s->logits && s->rope_cos && s->rope_sin && s->pos_add)
        return 0;
    kv_scratch_free(s);
    return -1;
}

void kv_scratch_free(kv_scratch *s)
{
    float *bufs[] = {s->staged, s->gathered, s->x,      s->norm,     s->qkv,     s->vals,   s->group_vals,
                     s->hidden, s->scores,   s->logits, s->rope_cos, s->rope_sin, s->pos_add, s->stage};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++)
        free(bufs[i]);
    memset(s, 0, sizeof *s);
}

/* Position terms of the full forward (fs_rope_angle, fs_position_embedding). */
int kv_position_init(kv_position *p, const fs_model *m, int pos)
{
    const fs_model_config *c = &m->cfg;
    int d = c->d_model, hd = d / c->num_heads;
    memset(p, 0, sizeof *p);
    p->pos = pos;
    if (c->pos_embedding == FS_POS_ROPE) {
        p->rope_cos = fs_alloc(sizeof(float) * (size_t)(hd / 2 + 1));
        p->rope_sin = fs_alloc(sizeof(float) * (size_t)(hd / 2 + 1));
        if (!p->rope_cos || !p->rope_sin) {
            kv_position_free(p);
            return -1;
        }
        for (int i = 0; i < hd / 2; i++)
            fs_rope_angle(pos, i, hd, c->rope_base, &p->rope_sin[i], &p->rope_cos[i]);
        return 0;
    }
    p->add = fs_alloc(sizeof(float) * (size_t)d);
    if (!p->add)
        return -1;
    fs_position_embedding(m, pos, 1, p->add);
    return 0;
}

void kv_position_free(kv_position *p)
{
    free(p->rope_cos);
    free(p->rope_sin);
    free(p->add);
    memset(p, 0, sizeof *p);
}

void kv_lanes_at(kv_scratch *s, const fs_model_config *cfg, const kv_position *p, int lane0, int lanes)
{
    int d = cfg->d_model, hd = d / cfg->num_heads;
    for (int l = lane0; l < lane0 + lanes; l++) {
        for (int i = 0; p->rope_cos && i < hd / 2; i++) {
            s->rope_cos[(size_t)i * FS_LANES + l] = p->rope_cos[i];
            s->rope_sin[(size_t)i * FS_LANES + l] = p->rope_sin[i];
        }
        for (int i = 0; p->add && i < d; i++)
            s->pos_add[(size_t)i * FS_LANES + l] = p->add[i];
    }
}

/* embedding = tok_embedding + pos_embedding (APE, sinusoidal) */
static void add_position(const fs_model_config *cfg, const kv_scratch *s)
{
    if (cfg->pos_embedding == FS_POS_ROPE)
        return;
    for (size_t i = 0; i < (size_t)cfg->d_model * FS_LANES; i++)
        s->x[i] += s->pos_add[i];
}

void kv_embed_examples(const fs_kv_cache *c, kv_scratch *s, const float *examples, int rows)
{
    fs_lanes_stage_rows(s->staged, examples, rows, c->model->cfg.input_dim);
    fs_lanes_matmul_rows(s->x, s->staged, &c->weights->embed);
    add_position(&c->model->cfg, s);
}

/* label_embedding = one_hot(label) @ Wl^T = column `label` of label_w [d, C], in lane 0. */
void kv_embed_label(const fs_kv_cache *c, kv_scratch *s, int label)
{
    const fs_model_config *cfg = &c->model->cfg;
    memset(s->x, 0, sizeof(float) * (size_t)cfg->d_model * FS_LANES);
    for (int i = 0; i < cfg->d_model; i++)
        s->x[(size_t)i * FS_LANES] = c->model->p.label_w[(size_t)i * cfg->num_classes + label];
    add_position(cfg, s);
}

/* LayerNorm, or the identity under no_norm. */
static void norm(const fs_model *m, float *out, const float *in, const float *w, const float *b)
{
    int d = m->cfg.d_model;
    if (m->cfg.no_norm)
        memcpy(out, in, sizeof(float) * (size_t)d * FS_LANES);
    else
        fs_lanes_layernorm(out, in, w, b, d);
}

/* Copy lane `lane` of `rows` feature rows into a dense vector. */
static void take_lane(float *dst, const float *rows, int n, int lane)
{
    for (int i = 0; i < n; i++)
        dst[i] = rows[(size_t)i * FS_LANES + lane];
}

static void attention(const kv_group *g, int ngroups, int layer, kv_scratch *s, float *new_k, float *new_v,
                      int lane)
{
    const fs_kv_cache *c = g[0].cache;
    const fs_model_config *cfg = &c->model->cfg;
    int d = cfg->d_model, H = c->heads, hd = c->head_dim;
    float *q = s->qkv, *k = s->qkv + (size_t)d * FS_LANES, *v = s->qkv + (size_t)2 * d * FS_LANES;
    fs_lanes_matmul(s->qkv, s->norm, &c->weights->layer[layer].qkv);
    if (cfg->pos_embedding == FS_POS_ROPE) {
        fs_lanes_rope(q, s->rope_cos, s->rope_sin, H, hd);
        fs_lanes_rope(k, s->rope_cos, s->rope_sin, H, hd);
    }
    if (new_k) {
        take_lane(new_k + (size_t)layer * d, k, d, lane);
        take_lane(new_v + (size_t)layer * d, v, d, lane);
    }
    /* one row: every lane attends to its cache. Several: a row with many lanes runs all
     * lanes against its cache and keeps its own; a row with few runs lane by lane. */
    for (int gi = 0; gi < ngroups; gi++) {
        const fs_kv_cache *gc = g[gi].cache;
        const fs_kv_entry *e = &gc->layer[layer];
        bool by_lane = ngroups > 1 && g[gi].lanes <= KV_LANE_BY_LANE;
        float *out = ngroups == 1 ? s->vals : s->group_vals;
        for (int h = 0; h < H; h++) {
            size_t row = (size_t)h * hd * FS_LANES, head = (size_t)h * gc->capacity * hd;
            if (!by_lane) {
                fs_lanes_attend_head(out + row, q + row, k + row, v + row, e->keys + head, e->values + head, gc->seq,
                                     hd, s->scores);
                continue;
            }
            fs_lanes_stage_head(s->stage, e->keys + head, e->values + head, gc->seq, hd);
            for (int l = g[gi].lane0; l < g[gi].lane0 + g[gi].lanes; l++)
                fs_lanes_attend_lane(s->vals + row, q + row, k + row, v + row, s->stage, gc->seq, hd, l, s->scores);
        }
        for (int i = 0; ngroups > 1 && !by_lane && i < d; i++)
            memcpy(s->vals + (size_t)i * FS_LANES + g[gi].lane0, out + (size_t)i * FS_LANES + g[gi].lane0,
                   sizeof(float) * (size_t)g[gi].lanes);
    }
    fs_lanes_matmul_add_to(s->x, s->vals, &c->weights->layer[layer].proj); /* residual_post_attn = x + attn out */
}

void kv_step(const kv_group *g, int ngroups, kv_scratch *s, float *new_k, float *new_v, int lane, int logits)
{
    const fs_kv_cache *c = g[0].cache;
    const fs_model *m = c->model;
    int F = fs_mlp_hidden(&m->cfg);
    for (int l = 0; l < c->depth; l++) {
        const fs_block_params *bp = &m->p.blocks[l];
        norm(m, s->norm, s->x, bp->norm1_w, bp->norm1_b);
        attention(g, ngroups, l, s, new_k, new_v, lane);
        if (F > 0) {
            norm(m, s->norm, s->x, bp->norm2_w, bp->norm2_b);
            fs_lanes_matmul_gelu(s->hidden, s->norm, &c->weights->layer[l].fc1);
            fs_lanes_matmul_add_to(s->x, s->hidden, &c->weights->layer[l].fc2); /* out = residual_post_attn + mlp */
        }
    }
    if (logits) {
        norm(m, s->norm, s->x, m->p.norm_w, m->p.norm_b);
        fs_lanes_matmul(s->logits, s->norm, &c->weights->unembed);
    }
}
