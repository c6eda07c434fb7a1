/* Named interventions (the reference's opto.py "standard" call, issue 5), built on the
 * clamp mechanism of docs/cache.md. Each one sets part of a cache leaf (value + mask)
 * for every sequence, computed from that sequence's inputs and, for `preserve` and
 * `head_temperature`, from a clean forward pass (no clamps) of the same sequence:
 *
 *   ablate_heads       v[0, h] = 0                                   (values of head h)
 *   ablate_embedding   tok_embedding = 0
 *   induction_heads    attn_scores[0, h, query row]: the query attends to the context
 *                      labels; `induction_strength` s split equally over the labels equal
 *                      to the query's label, 1 - s over the others (reference: 2 context
 *                      pairs, s and 1 - s); uniform over the labels if all or none match
 *   match_heads        attn_scores[0, h, query row] at the label tokens: cosine similarity
 *                      of the query example with each context example, softmax with
 *                      `match_temperature` (0 = hardmax, ties share equally)
 *   prev_token_heads   attn_scores[0, h] = previous-token pattern (s on i-1, 1 - s on i,
 *                      row 0 on itself); only label rows with `prev_token_only_label`
 *   disallow_prev_token_heads  attn_pre_softmax[0, h, i, i-1] = -1e9 (label rows only with
 *                      `disallow_prev_token_only_label`); the softmax renormalises the row
 *   silence_non_label_heads    attn_pre_softmax[0, h, query row, exemplar tokens] = -1e9
 *                      (the reference's opto_final_layer_silence_non_label_attn, any layer)
 *   preserve           clean-pass attn_scores / v / q / k ("patterns" / "values" /
 *                      "queries" / "keys") of every layer >= `preserve_from_layer`
 *   head_temperature   attn_pre_softmax[0, h] = clean-pass attn_pre_softmax[0, h] / T
 *   perfect_copy_from_head_pattern "L:H" (3-pair sequences: 2 context pairs + query)
 *                      out[query row] = -1e9 except at the two context labels: the clean
 *                      pass's attn_pre_softmax[0, H, query row, 1] (first pair's label) and
 *                      [.., 3] (second pair's label, which wins if they are equal)
 *   perfect_prev_token_input   (2-layer models) pass A: plain forward, embedding e; pass B:
 *                      layer 0's out = e shifted down one token (row 0 and the query row
 *                      keep theirs); the final pass: layer 0's out = e, layer 1's
 *                      attn_scores = pass B's (or, with perfect_copy_from_head_pattern,
 *                      the query's out row from pass B's pre-softmax scores); only
 *                      ablate_heads in layer 1 may be added
 *   graft_in {model, config, till_layer L}   another model G (frozen; its own interventions
 *                      from its config's clamps section) runs on the same inputs first;
 *                      block L's out = G's block L out (a constant: G's parameters do not
 *                      train and nothing of it depends on this model)
 *   graft_out {model, config, from_layer L}  after this model's forward, G runs on the same
 *                      inputs with its block L out clamped to this model's; `out` = G's out
 *                      (the result and the loss). The gradient flows through G's blocks
 *                      L+1.. (its parameter gradients discarded) into this model's block L
 *                      out, and from there down; this model's blocks after L, final norm and
 *                      unembedding get exactly zero gradients (they no longer count)
 *
 * Clamps are composed in the reference's order (preserve, temperature, embedding,
 * ablation, previous-token, induction, match, disallow, silence: later ones win where
 * they overlap), on top of the clamp files held on with them (fs_held). A clamped element
 * whose value another pass computes passes its gradient back into that pass, as the
 * reference's where(mask, cached, computed) does (clamp_gradients "through", the default);
 * with "stop", and for constants (files, ablations, fixed patterns), it gets none
 * (docs/cache.md). */
#ifndef FEWSHOT_INTERVENTIONS_H
#define FEWSHOT_INTERVENTIONS_H

#include <stdbool.h>
#include <stdint.h>

#include "fewshot/cache.h"
#include "fewshot/config.h"
#include "fewshot/error.h"
#include "fewshot/model.h"

enum { FS_IV_MAX_HEADS = 256 };

typedef struct {
    int layer, head;
    double temperature; /* head_temperature only */
} fs_head_ref;

typedef struct {
    int n;
    fs_head_ref h[FS_IV_MAX_HEADS];
} fs_head_list;

/* graft_in / graft_out: another model (frozen) and the block whose `out` is handed over. */
typedef struct {
    bool on;
    int layer;          /* graft_in: till_layer (the other model supplies blocks 0..layer);
                           graft_out: from_layer (this model's blocks 0..layer, the other's after) */
    char model[1024];   /* its parameters (.safetensors, as --model takes) */
    char config[1024];  /* its run config ("": the model file's metadata); its clamps section
                           holds its own interventions */
} fs_graft_spec;

typedef struct {
    fs_head_list ablate_heads;
    bool ablate_embedding;
    fs_head_list induction_heads;
    double induction_strength;          /* [0, 1], default 1 */
    fs_head_list match_heads;
    double match_temperature;           /* >= 0, default 0 (hardmax) */
    fs_head_list prev_token_heads;
    double prev_token_strength;         /* [0, 1], default 1 */
    bool prev_token_only_label;
    fs_head_list disallow_prev_token_heads;
    bool disallow_prev_token_only_label;
    fs_head_list silence_non_label_heads;
    bool preserve_patterns, preserve_values, preserve_queries, preserve_keys;
    int preserve_from_layer;            /* default 0: every layer, as the reference */
    fs_head_list head_temperature;      /* with .temperature */
    bool perfect_copy;                  /* perfect_copy_from_head_pattern given */
    fs_head_ref perfect_copy_head;
    bool perfect_prev_token_input;
    fs_graft_spec graft_in, graft_out;
    bool clamp_gradients_stop;          /* "clamp_gradients": "stop" */
} fs_interventions;

void fs_interventions_default(fs_interventions *iv);
/* Parse a JSON object (the run config's `clamps` section: its "cache"/"mask" keys are
 * ignored; any other unknown key is an error naming it). Heads are "layer:head" strings
 * (negative layers count from the end), checked against cfg. */
int fs_interventions_from_json(fs_interventions *iv, const cJSON *obj, const fs_model_config *cfg,
                               const char *origin, fs_error *err);
/* `--intervene` argument: inline JSON (starts with '{') or a JSON file name. */
int fs_interventions_from_arg(fs_interventions *iv, const char *json_or_file, const fs_model_config *cfg,
                              fs_error *err);
bool fs_interventions_any(const fs_interventions *iv);
/* ablate_heads as weights: m = src with the value weights (and value biases) of iv's
 * ablated heads zeroed, which computes what src computes with the ablate_heads clamps
 * (v = 0 exactly, for finite inputs), so a forward without clamps can evaluate them. The
 * other interventions are not applied. m (zero-initialise it before first use; free with
 * fs_model_free) is created for src's config when needed. */
int fs_interventions_ablated_model(const fs_interventions *iv, const fs_model *src, fs_model *m, fs_error *err);
/* preserve, head_temperature, perfect copy or prev-token input: the update runs other
 * forward passes first (their clamp values are computed from the model). */
bool fs_interventions_need_clean_pass(const fs_interventions *iv);

/* What is held on during a forward (docs/cache.md): clamp files (a cache tree and its
 * mask) and named interventions, composed as above. One loader builds it from a config's
 * `clamps` section, overridden by the command line's --cache/--mask and --intervene. */
typedef struct fs_graft fs_graft;
typedef struct {
    fs_clamp_set files;  /* the clamp files, for sequences of files.P pairs (files.leaf NULL: none) */
    fs_interventions iv; /* named interventions */
    bool has_iv;         /* fs_interventions_any(&iv) */
    fs_graft *graft[2];  /* the models of graft_in ([0]) and graft_out ([1]), owned; loaded once
                            per run by fs_held_open (src/train), NULL until then */
} fs_held;

/* A graft model: its parameters, config and what it holds on itself. */
struct fs_graft {
    fs_model model;
    fs_held held;        /* its own interventions (no grafts of its own) */
    char origin[1100];   /* its file, for errors */
};

/* Where it comes from; every field may be NULL. --cache/--mask replace the section's
 * files, --intervene replaces its named interventions. */
typedef struct {
    const fs_clamps_config *config; /* a run config's clamps section */
    const char *origin;             /* names the config in errors */
    const char *cache, *mask;       /* --cache/--mask (given together) */
    const char *intervene;          /* --intervene: inline JSON or a JSON file */
} fs_held_source;

/* Load for sequences of P pairs. Per-sequence clamps ([B] + leaf shape) must hold exactly
 * nseq sequences; nseq = 0 refuses them (sampled sequences: training, evaluators). */
int fs_held_load(fs_held *h, const fs_held_source *src, const fs_model_config *cfg, int P, int nseq,
                 fs_error *err);
void fs_held_free(fs_held *h);
/* Hand the graft model g (heap-allocated, loaded for h->iv.graft_in (which 0) or graft_out
 * (1)) to h, which owns it from then on (freed on error too). Checks that it fits this
 * model (cfg): d_model, heads, input_dim and num_classes equal (it reads the same inputs
 * and labels), the hand-over layer within its depth, no grafts of its own. */
int fs_held_set_graft(fs_held *h, int which, fs_graft *g, const fs_model_config *cfg, fs_error *err);

/* Write --cache/--mask/--intervene into the config's clamps section (as fs_held_load
 * would resolve them), so that a run's recorded config reproduces what it held on. */
int fs_held_record(fs_run_config *cfg, const fs_held_source *src, fs_error *err);

/* What is held on, bound to one activation layout: the forward's clamp set, with
 * per-sequence buffers for the interventions (allocated once, refilled per batch).
 * Clamp files built for another sequence length are not applied. */
typedef struct {
    fs_interventions iv;        /* copied from the fs_held */
    bool has_iv;
    int P, count;               /* the layout: pairs per sequence, leaves */
    const fs_clamp_set *files;  /* its clamp files when they apply to this layout (borrowed), else NULL */
    fs_clamp_set clamps;        /* files + interventions, per sequence (when has_iv) */
    uint8_t *touched;           /* [leaf count]: leaves the interventions write */
    struct fs_held_passes *passes; /* the other passes of a step (interp/passes.h), or NULL */
    struct fs_held_grafts *grafts; /* the graft models' passes (interp/graft.c), or NULL */
    const fs_graft *graft[2];      /* the fs_held's graft models it was bound to */
} fs_held_clamps;

/* graft_in / graft_out need their models in h (fs_held_open), else an error. */
int fs_held_bind(fs_held_clamps *hc, const fs_held *h, const fs_acts *a, fs_error *err);
/* Whether hc was bound to what h holds now (same interventions, same clamp files). */
bool fs_held_bound(const fs_held_clamps *hc, const fs_held *h);
/* The clamp set for the forward of sequences [0, nseq) whose inputs are in `a` (NULL when
 * nothing is held on). Recomputes the interventions from the inputs; when they need other
 * passes (a clean pass, ...), runs them in their own arenas (allocated by fs_held_bind).
 * Call per batch and again after the parameters change. No allocation. */
const fs_clamp_set *fs_held_update(fs_held_clamps *hc, const fs_model *m, fs_acts *a, int nseq);
/* The intervened forward of sequences [0, nseq): fs_held_update, fs_forward and what runs
 * after it (graft_out's model, whose out becomes a's). Use it (not fs_forward with
 * fs_held_update's clamps) wherever a graft_out may be held on. */
void fs_held_forward(fs_held_clamps *hc, const fs_model *m, fs_acts *a, int nseq);
void fs_held_unbind(fs_held_clamps *hc);

#endif
