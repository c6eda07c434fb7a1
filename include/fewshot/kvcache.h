/* A frozen key-value cache: classify many queries against one context (issue 7).
 *
 * The model is causal (docs/model.md), so the keys and values of the context tokens
 * e1 l1 ... ek lk (positions 0..2k-1) do not depend on what follows. They are computed
 * once, per layer, laid out [batch=1, kv_heads=H, seq=2k, head_dim] with keys after
 * RoPE, then frozen; a query exemplar is then the single token at position 2k, run
 * through the layers attending to the frozen keys/values and to itself. Its logits equal
 * the full forward's out[P-1] for the sequence (context pairs + query pair).
 *
 * The design follows TransformerLens' HookedTransformerKeyValueCache: one entry per
 * layer holding past keys and values, `append` adds new tokens' keys/values (computed by
 * running those tokens attending to the entries so far), `freeze` makes further
 * forwards read the cache without changing it, `unfreeze` undoes that. */
#ifndef FEWSHOT_KVCACHE_H
#define FEWSHOT_KVCACHE_H

#include <stdbool.h>
#include <stddef.h>

#include "fewshot/error.h"
#include "fewshot/model.h"

/* One layer's entry: keys (after RoPE) and values [1, H, capacity, hd]; positions
 * [0, seq) of every head are filled. A frozen cache has capacity == seq, so each is
 * exactly [1, H, seq, hd] contiguous. */
typedef struct {
    float *keys;
    float *values;
    int *positions;         /* [capacity]: each cached token's position in the context */
} fs_kv_entry;

typedef struct fs_kv_weights fs_kv_weights; /* the model's weights packed for the step */

typedef struct {
    const fs_model *model;  /* borrowed: must outlive the cache */
    int heads, head_dim, depth;
    int seq;                /* tokens cached per layer (2 per context pair until compressed) */
    int pos;                /* position of the next token = context tokens seen (> seq once compressed) */
    int capacity;           /* tokens allocated per head */
    bool frozen;
    fs_kv_entry *layer;     /* [depth] */
    fs_kv_weights *weights;
    float *ctx_examples;    /* [pos/2][D]: the context, kept for the attention policy until compressed */
    int *ctx_labels;        /* [pos/2] */
} fs_kv_cache;

/* An empty cache for `m` (packs the weights once). */
int fs_kv_init(fs_kv_cache *c, const fs_model *m, fs_error *err);
void fs_kv_free(fs_kv_cache *c);

/* Build an empty cache's entries from a whole context: examples [pairs][D], labels
 * [pairs]. Runs the full forward (fs_forward_range) over the context plus a dummy query
 * pair and keeps the keys/values of the first 2*pairs tokens (causality makes them
 * independent of the query). */
int fs_kv_build(fs_kv_cache *c, const float *examples, const int *labels, int pairs, fs_error *err);
/* Append one pair (two tokens: the exemplar, then its label) by running them through the
 * layers attending to the cache; gives the same cache as fs_kv_build. Fails when frozen. */
int fs_kv_append(fs_kv_cache *c, const float *example, int label, fs_error *err);
/* Freeze: trims the entries to exactly [1, H, seq, hd]; classify needs a frozen cache. */
void fs_kv_freeze(fs_kv_cache *c);
void fs_kv_unfreeze(fs_kv_cache *c);
/* Context pairs seen (compression evicts tokens but not pairs from this count). */
static inline int fs_kv_pairs(const fs_kv_cache *c) { return c->pos / 2; }

/* Compression (issue 19): evict context tokens, per layer, keeping `keep` of them: a
 * fraction in (0, 1] (floor(keep * seq) tokens, at least 1) or, above 1, a whole count
 * <= seq. The kept rows of each layer's keys/values are compacted into entries of
 * exactly [1, H, kept, hd] (the old ones are freed) and each keeps its position: keys
 * are stored after RoPE and APE/sinusoidal terms are added before the layers, so a kept
 * token's position phase is baked into its key/value and positions are never
 * renumbered; a query still runs at position `pos` (the full context's length), as if
 * the evicted tokens had been masked out of its attention. Policies (a ranking; the
 * top `kept` tokens stay, ties go to the more recent):
 *   recent          the last tokens
 *   sinks+recent    the first pair's two tokens (attention sinks), then the last
 *   attention       largest attention mass received from the context's last 8 tokens
 *                   (the observation window), averaged over its rows that see the token
 *                   and summed over heads, per layer (SnapKV-style); needs an
 *                   uncompressed cache (it re-runs the stored context's forward)
 *   labels-only     label tokens first (the most recent first), then exemplars
 *   exemplars-only  exemplar tokens first, then labels
 *   drop-pairs:N    evict both tokens of the oldest N pairs, then the oldest tokens
 *                   while over budget; `drop-pairs` (no N) evicts whole oldest pairs
 *                   until at most `kept` tokens remain (never the newest pair: a budget
 *                   below 2 tokens then keeps its label)
 * keep = 1 keeps every token (logits identical to the uncompressed cache) for every
 * policy but drop-pairs:N with N > 0. Works frozen or not; append continues at `pos`. */
int fs_kv_compress(fs_kv_cache *c, double keep, const char *policy, fs_error *err);
/* The policy names, NULL-terminated (drop-pairs without its :N). */
extern const char *const fs_kv_policies[];

/* Logits [nq][C] of query exemplars [nq][D], each the token after the frozen context.
 * Queries run in chunks of 32 on `threads` OpenMP threads (0 = all cores); the result
 * does not depend on the thread count. */
int fs_kv_classify(const fs_kv_cache *c, const float *queries, size_t nq, float *logits, int threads,
                   fs_error *err);
/* Softmax of one row of logits [C] into probs; returns the argmax (lowest on ties). */
int fs_kv_probs(const float *logits, int C, float *probs);

/* Memory and value statistics of one layer's entry (for --kv-stats). */
typedef struct {
    int shape[4];           /* [1, H, seq, hd] */
    size_t key_bytes, value_bytes;
    float key_min, key_max, key_mean;
    float value_min, value_max, value_mean;
} fs_kv_layer_stats;

void fs_kv_stats(const fs_kv_cache *c, int layer, fs_kv_layer_stats *s);
/* Keys + values of every layer in bytes: what a frozen cache allocates for them. */
size_t fs_kv_bytes(const fs_kv_cache *c);
/* The per-layer table with totals, as printed by `fewshot classify --kv-stats` (NULL when
 * out of memory). */
char *fs_kv_stats_table(const fs_kv_cache *c);

/* Inputs. Context JSON: {"examples": [k][D], "labels": [k]} with k >= 1 and labels in
 * [0, C). Queries: JSON {"examples": [Q][D]} (optionally "labels": [Q]), or a 2-D [Q, D] float dataset at `path` in
 * an HDF5 file. Errors name the file and the field. */
typedef struct {
    int pairs, dim;
    float *examples;   /* [pairs][dim] */
    int *labels;       /* [pairs] */
} fs_kv_context;

typedef struct {
    size_t count;
    int dim;
    float *examples;   /* [count][dim] */
    int *labels;       /* [count] true classes (JSON "labels", optional), or NULL */
} fs_kv_queries;

int fs_kv_context_load(const char *path, const fs_model_config *cfg, fs_kv_context *ctx, fs_error *err);
int fs_kv_context_from_json(const cJSON *json, const char *origin, const fs_model_config *cfg, fs_kv_context *ctx,
                            fs_error *err);
void fs_kv_context_free(fs_kv_context *ctx);
int fs_kv_queries_load_json(const char *path, int input_dim, fs_kv_queries *q, fs_error *err);
int fs_kv_queries_from_json(const cJSON *json, const char *origin, int input_dim, fs_kv_queries *q, fs_error *err);
int fs_kv_queries_load_h5(const char *path, const char *dataset, int input_dim, fs_kv_queries *q, fs_error *err);
void fs_kv_queries_free(fs_kv_queries *q);

/* ---- Batches of contexts (issue 19) ----
 * B contexts of different lengths in one cache, as TransformerLens' cache holds a batch
 * of prefixes with an attention mask (previous_attention_mask). Here the mask is each
 * row's length: row b stores exactly the 2*k_b tokens of its k_b context pairs, so
 * padded slots are never allocated and never attended, and the memory is that of the
 * real tokens. Row b's queries run at its own position 2*k_b, attending only to its own
 * tokens. Appending a pair to a row (append_attention_mask) extends that row alone.
 * Every row is a one-context cache (the rows share row 0's packed weights): build,
 * append, freeze, compression and stats are the one-context ones, and a row's logits
 * equal those of a one-context cache of its context, bit for bit. */
typedef struct {
    int rows;
    fs_kv_cache *row;  /* [rows]; row[0] owns the packed weights the others borrow */
} fs_kv_batch;

/* Build B = `rows` >= 1 rows from contexts[b] (each >= 1 pair of width input_dim, labels
 * in [0, C)); errors name the row. The batch is left unfrozen. */
int fs_kv_build_batch(fs_kv_batch *b, const fs_model *m, const fs_kv_context *contexts, int rows, fs_error *err);
/* Append one pair to row `row` only (as fs_kv_append); fails when frozen. */
int fs_kv_append_row(fs_kv_batch *b, int row, const float *example, int label, fs_error *err);
void fs_kv_batch_freeze(fs_kv_batch *b);
void fs_kv_batch_unfreeze(fs_kv_batch *b);
void fs_kv_batch_free(fs_kv_batch *b);
/* Logits of every row's queries, row after row: queries[b].count rows [C] for row b, so
 * `logits` holds sum_b queries[b].count rows. Needs a frozen batch. Chunks of 32 queries
 * of one row run on `threads` threads (0 = all cores); the result does not depend on it. */
int fs_kv_classify_batch(const fs_kv_batch *b, const fs_kv_queries *queries, float *logits, int threads,
                         fs_error *err);

/* `fewshot classify --contexts FILE.h5` (docs/formats.md): datasets examples [B, P, D]
 * and labels [B, P] (the sequence layout), optional lengths [B] (row b's real pairs,
 * 1..P; the rest is padding, never read into the cache), optional queries [B, Q, D] with
 * optional query_labels [B, Q]. Without queries, each row's last real pair is its query
 * (its label the query's true label) and the pairs before it its context. */
typedef struct {
    int rows;
    fs_kv_context *contexts;  /* [rows] */
    fs_kv_queries *queries;   /* [rows] */
} fs_kv_batch_inputs;

int fs_kv_batch_inputs_load_h5(const char *path, const fs_model_config *cfg, fs_kv_batch_inputs *in, fs_error *err);
void fs_kv_batch_inputs_free(fs_kv_batch_inputs *in);

#endif
