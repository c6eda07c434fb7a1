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
 *
 * Clamps are composed in the reference's order (preserve, temperature, embedding,
 * ablation, previous-token, induction, match, disallow, silence: later ones win where
 * they overlap), on top of any clamp files given as `base`. Clamped elements are
 * constants for the backward (docs/cache.md), including the clean-pass values. */
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
/* preserve or head_temperature: the update runs a clean forward pass first. */
bool fs_interventions_need_clean_pass(const fs_interventions *iv);

/* A clamp set holding `base` (may be NULL; not owned, must outlive this) plus the
 * interventions, with per-sequence buffers for acts->B sequences allocated once. */
typedef struct {
    fs_interventions spec;
    fs_clamp_set clamps;        /* pass &clamps to fs_forward / fs_trainer.clamps */
    const fs_clamp_set *base;
    uint8_t *touched;           /* [leaf count]: leaves the interventions write */
    int capacity;               /* sequences */
} fs_intervention_clamps;

int fs_interventions_init(fs_intervention_clamps *ic, const fs_interventions *iv, const fs_acts *a,
                          const fs_clamp_set *base, fs_error *err);
/* Recompute the clamps for sequences [0, nseq) whose inputs are in `a` (call once per
 * batch, and again after the parameters change when a clean pass is needed). Runs the
 * clean pass in `a` itself when needed, so run the clamped forward afterwards. No
 * allocation. The range form does the same for [b0, b1) on the calling thread. */
void fs_interventions_update(fs_intervention_clamps *ic, const fs_model *m, fs_acts *a, int nseq);
void fs_interventions_update_range(fs_intervention_clamps *ic, const fs_model *m, fs_acts *a, int b0, int b1);
void fs_interventions_free(fs_intervention_clamps *ic);

/* For commands: parse `json_or_file`, init on top of `base` and update for [0, nseq). */
int fs_interventions_build(fs_intervention_clamps *ic, const char *json_or_file, const fs_clamp_set *base,
                           const fs_model *m, fs_acts *a, int nseq, fs_error *err);

#endif
