/* The activation cache (docs/cache.md). The activation buffers ARE the cache: one
 * table describes every leaf (its path in the cache tree, its per-sequence shape for
 * the config and P pairs, its offset in the arena). A leaf of a batch of B sequences
 * holds [B][numel] floats contiguously, so all tokens of a batch feed one matmul.
 * The forward writes each leaf into its slot and then applies its clamp, if any; the
 * JSON dump, the shape dump, clamp loading and the backward's stop-gradient all walk
 * this same table. Hidden leaves are backward scratch, not part of the tree. */
#ifndef FEWSHOT_CACHE_H
#define FEWSHOT_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fewshot/config.h"
#include "fewshot/error.h"

typedef enum { FS_SCOPE_TOP, FS_SCOPE_TRANSFORMER, FS_SCOPE_BLOCK, FS_SCOPE_ATTN } fs_scope;

typedef struct {
    char path[112];   /* "transformer_output.block_outputs[1].attn_output.v" */
    const char *key;  /* last component, "v" */
    fs_scope scope;
    int layer;        /* block index, -1 outside blocks */
    int ndim;
    int shape[4];     /* per sequence */
    size_t numel;     /* per sequence (0 for a null leaf) */
    size_t offset;    /* in floats; the leaf holds [B][numel] */
    bool hidden;      /* backward scratch, not in the cache tree */
    bool is_null;     /* pos_embedding under RoPE */
    bool is_int;      /* labels */
} fs_leaf;

typedef struct {
    fs_model_config cfg;
    int P;            /* pairs per sequence (last = query) */
    int N;            /* tokens = 2P - 1 */
    int B;            /* capacity in sequences */
    int count;        /* number of leaves */
    fs_leaf *leaves;
    size_t arena_floats; /* total floats in the arena */
    float *arena;
} fs_acts;

int fs_acts_create(fs_acts *a, const fs_model_config *cfg, int P, int B, fs_error *err);
void fs_acts_free(fs_acts *a);
/* Pointer to sequence b of leaf number `leaf` (fs_leaf_find gives it from a path). */
static inline float *fs_leaf_ptr(const fs_acts *a, int leaf, int b)
{
    return a->arena + a->leaves[leaf].offset + (size_t)b * a->leaves[leaf].numel;
}
int fs_leaf_find(const fs_acts *a, const char *path); /* -1 if none */
/* Dotted name of a leaf: its path with indices as components,
 * "transformer_output.block_outputs.1.attn_output.attn_scores". */
void fs_leaf_dotted(const fs_leaf *l, char *out, size_t n);
/* TransformerLens' names_filter: sel[i] (for every leaf of the table) = leaf i is visible
 * and its dotted name matches one of the comma-separated glob patterns ('*' matches any
 * characters, dots included; "[1]" may be written for ".1"). NULL or "" selects every
 * visible leaf. A pattern matching nothing is an error listing the nearest names.
 * Returns the number of selected leaves, or -1. */
int fs_leaf_select(const fs_acts *a, const char *patterns, bool *sel, fs_error *err);

/* Clamps: for each leaf, an optional value and mask ([numel] applied to every
 * sequence, or [B][numel] per sequence). Built from cache/mask JSON trees. */
typedef struct {
    float *value;
    uint8_t *mask;
    int batch;        /* 0 = one clamp for all sequences, else number of sequences */
} fs_clamp;

typedef struct {
    int count;        /* = number of leaves of the layout it was built for */
    int P;
    fs_clamp *leaf;   /* [count] */
    int active;       /* number of leaves with a clamp */
} fs_clamp_set;

void fs_clamp_set_init(fs_clamp_set *c, const fs_acts *a);
void fs_clamp_set_free(fs_clamp_set *c);
/* Parse `cache` and `mask` trees (cJSON objects) into c; errors name the path. */
int fs_clamp_set_from_json(fs_clamp_set *c, const fs_acts *a, const cJSON *cache_json, const cJSON *mask_json,
                           const char *cache_origin, const char *mask_origin, fs_error *err);
int fs_clamp_set_load(fs_clamp_set *c, const fs_acts *a, const char *cache_path, const char *mask_path,
                      fs_error *err);
/* Set a leaf's clamp directly (numel or batch*numel values); copies the data. -1 when
 * out of memory (or the set's table could not be allocated). */
int fs_clamp_set_leaf(fs_clamp_set *c, const fs_acts *a, int leaf, const float *value, const uint8_t *mask,
                       int batch);

/* Whether any leaf's clamp is per sequence (values indexed by the sequence's slot, so a
 * batch processed in chunks must keep them in one chunk). */
bool fs_clamp_set_per_sequence(const fs_clamp_set *c);
/* A per-sequence clamp must have exactly nseq sequences. */
int fs_clamp_check_batch(const fs_clamp_set *c, const fs_acts *a, int nseq, const char *origin, fs_error *err);
/* Apply a leaf's clamp to sequences [b0, b1) (no-op when it has none). */
void fs_clamp_apply(const fs_clamp_set *c, fs_acts *a, int leaf, int b0, int b1);

/* Shapes of the leaves (those with sel[i], every one if sel is NULL) for nseq sequences:
 * batched = leaves get a leading B. Returns a cJSON*. The values themselves are written
 * by fewshot/cachefile.h. */
void *fs_cache_shapes_json(const fs_acts *a, int nseq, bool batched, const bool *sel);
/* Print a cJSON tree with keys sorted and tab indentation, like the README's shape listing. */
char *fs_json_print_sorted(const void *json);

#endif
