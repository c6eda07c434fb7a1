/* fewshot cache: forward pass and dump of the activation cache (docs/cache.md; file layouts
 * docs/cache-files.md). The input is processed in chunks of sequences; each chunk's leaves
 * go straight to the output file (JSON, HDF5 or safetensors), so memory is bounded by the
 * chunk. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "train/held_open.h"
#include "cli/cli.h"
#include "fewshot/cache.h"
#include "fewshot/cachefile.h"
#include "fewshot/forward.h"
#include "fewshot/interventions.h"
#include "train/run.h"
#include "fewshot/seqio.h"

static const fs_opt opts[] = {
    {"--config", "FILE", "config JSON with a \"model\" section (optional if the model file carries it)"},
    {"--model", "FILE", "model parameters (.safetensors)"},
    {"--input", "FILE", "sequences: JSON {\"examples\": [P][D] or [B][P][D], \"labels\": [P] or [B][P]}, or HDF5 "
                        "with datasets examples [B][P][D] and labels [B][P]"},
    {"--sample", "N", "instead of --input: draw N sequences from the --config's data and training samplers"},
    {"--evaluator", "NAME", "with --sample: draw from this evaluator of the config instead"},
    {"--seed", "S", "with --sample: sampling seed (default: train.train_seed, or eval.eval_seed with --evaluator)"},
    {"--names", "PATTERNS", "keep only leaves whose dotted name matches a comma-separated glob, e.g. "
                            "'transformer_output.block_outputs.*.attn_output.attn_scores,out'"},
    {"--format", "FMT", "json, h5 or safetensors (default: from the -o extension, else json)"},
    {"--compress", "LEVEL", "h5: gzip level 1..9 for the datasets (default 0: none)"},
    {"--chunk", "N", "sequences per forward chunk (default: as many as fit in 64 MB of activations)"},
    {"--cache", "FILE", "clamp values: a cache tree holding the leaves to clamp"},
    {"--mask", "FILE", "clamp mask: the same tree with booleans (true = clamp)"},
    {"--intervene", "JSON|FILE", "named interventions, e.g. '{\"ablate_heads\": [\"1:7\"]}' (on top of --cache/--mask)"},
    {"--shapes", NULL, "print only the shape of every leaf (keys sorted, as in docs/cache.md)"},
    {"--pairs", "P", "with --shapes and no --input: number of pairs per sequence (default 3)"},
    {"--set", "S.K=V", "override a config value, e.g. --set model.depth=3"},
    {"-o", "FILE", "write here (atomically: no file on error) instead of stdout"},
    {NULL, NULL, NULL},
};

enum { CHUNK_BYTES = 64 << 20 };

/* An option error fs_arg_int has already printed: fail with an empty message. */
static int reported(fs_error *err)
{
    err->msg[0] = 0;
    return -1;
}

/* Where the sequences come from: a JSON batch (loaded whole), an HDF5 file or a sampler
 * (both read chunk by chunk). */
typedef struct {
    int B, P;
    bool batched;
    fs_seq_batch json;
    fs_seq_h5 *h5;
    bool sampling;
    fs_run_data rd;
    fs_seq_mix mix;
    uint64_t seed, stream;
    float *ex;  /* chunk buffers (h5, sampler) */
    int *lab;
    char desc[1200];
} seq_source;

static void source_free(seq_source *s)
{
    fs_seq_batch_free(&s->json);
    fs_seq_h5_close(s->h5);
    if (s->sampling)
        fs_run_data_close(&s->rd);
    free(s->ex);
    free(s->lab);
}

static int open_sampler(seq_source *s, const fs_args *args, fs_run_config *cfg, long long n, fs_error *err)
{
    const char *origin = fs_arg(args, "--config"), *evaluator = fs_arg(args, "--evaluator");
    if (!origin)
        return fs_fail(err, "--sample needs --config FILE with the data (and eval) sections to sample from");
    cfg->input_dim_given = cfg->num_classes_given = true; /* the model fixes them */
    if (fs_run_data_open(&s->rd, cfg, origin, evaluator != NULL, err))
        return -1;
    s->sampling = true;
    long long seed;
    if (evaluator) {
        int k = -1;
        char names[600] = "";
        for (int i = 0; i < s->rd.num_sets; i++) {
            if (!strcmp(s->rd.sets[i].name, evaluator))
                k = i;
            snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s", i ? ", " : "", s->rd.sets[i].name);
        }
        if (k < 0)
            return fs_fail(err, "--evaluator: %s has no evaluator named '%s' (it has: %s)", origin, evaluator,
                           names[0] ? names : "none");
        fs_seq_mix_single(&s->mix, &s->rd.sets[k].spec);
        s->P = s->rd.sets[k].P;
        s->stream = FS_STREAM_EVAL + (uint64_t)k;
        seed = cfg->eval.eval_seed;
    } else {
        if (fs_seq_mix_from_train(&s->mix, &s->rd.task, &cfg->train, origin, err))
            return -1;
        s->P = s->mix.specs[0].context_len + 1;
        s->stream = FS_STREAM_TRAIN;
        seed = cfg->train.train_seed;
    }
    if (fs_arg_int(args, "--seed", seed, 0, INT64_MAX, &seed))
        return reported(err);
    s->seed = (uint64_t)seed;
    s->B = (int)n;
    s->batched = true;
    snprintf(s->desc, sizeof s->desc, "sample of %lld sequences from %s (%s%s, seed %lld)", n, origin,
             evaluator ? "evaluator " : "training samplers", evaluator ? evaluator : "", seed);
    return 0;
}

static int open_source(seq_source *s, const fs_args *args, fs_run_config *cfg, fs_error *err)
{
    const char *input = fs_arg(args, "--input");
    long long n;
    if (fs_arg_int(args, "--sample", 0, 1, 1LL << 30, &n))
        return reported(err);
    if (input && n)
        return fs_fail(err, "--input and --sample exclude each other");
    if ((fs_arg(args, "--evaluator") || fs_arg(args, "--seed")) && !n)
        return fs_fail(err, "--evaluator and --seed go with --sample N");
    if (n)
        return open_sampler(s, args, cfg, n, err);
    snprintf(s->desc, sizeof s->desc, "%s", input);
    if (fs_file_is_hdf5(input)) {
        s->batched = true;
        return fs_seq_h5_open(&s->h5, input, cfg->model.input_dim, cfg->model.num_classes, &s->B, &s->P, err);
    }
    if (fs_seq_batch_load(input, cfg->model.input_dim, cfg->model.num_classes, &s->json, err))
        return -1;
    s->B = s->json.B, s->P = s->json.P, s->batched = s->json.batched;
    return 0;
}

/* Sequences [b0, b0 + n) into the arena's input leaves. */
static int fill_chunk(seq_source *s, fs_acts *a, int b0, int n, fs_error *err)
{
    size_t per = (size_t)s->P * a->cfg.input_dim;
    if (!s->h5 && !s->sampling) {
        fs_acts_set_inputs(a, s->json.examples + (size_t)b0 * per, s->json.labels + (size_t)b0 * s->P, 0, n);
        return 0;
    }
    if (!s->ex) {
        s->ex = malloc(sizeof(float) * per * (size_t)a->B);
        s->lab = malloc(sizeof(int) * (size_t)s->P * (size_t)a->B);
        if (!s->ex || !s->lab)
            return fs_fail(err, "out of memory for a chunk of %d sequences", a->B);
    }
    int rc = s->h5 ? fs_seq_h5_read(s->h5, b0, n, s->ex, s->lab, err)
                   : fs_sample_batch(&s->rd.task, &s->mix, s->seed, s->stream, (uint64_t)b0, n, s->ex, s->lab, NULL,
                                     err);
    if (rc == 0)
        fs_acts_set_inputs(a, s->ex, s->lab, 0, n);
    return rc;
}

static int chunk_size(const fs_args *args, const fs_model_config *cfg, int P, int B, int *chunk, fs_error *err)
{
    long long n;
    if (fs_arg_int(args, "--chunk", 0, 1, 1 << 30, &n))
        return reported(err);
    if (!n) {
        fs_acts one;
        if (fs_acts_create(&one, cfg, P, 1, err))
            return -1;
        n = (long long)(CHUNK_BYTES / (one.arena_floats * sizeof(float)));
        fs_acts_free(&one);
    }
    *chunk = (int)(n < 1 ? 1 : n > B ? B : n);
    return 0;
}

/* Forward chunk after chunk into the writer, with what --cache/--mask/--intervene hold on. */
static int dump(const fs_args *args, fs_run_config *cfg, const fs_model *model, seq_source *src, fs_error *err)
{
    int chunk = 1;
    if (chunk_size(args, &cfg->model, src->P, src->B, &chunk, err))
        return -1;
    fs_held_source hs = fs_cli_held(args, NULL, NULL);
    fs_held held;
    if (fs_held_open(&held, &hs, &cfg->model, src->P, src->B, err))
        return -1;
    if (fs_clamp_set_per_sequence(&held.files))
        chunk = src->B; /* per-sequence clamp values are indexed by sequence: one chunk holds them all */
    fs_acts acts;
    if (fs_acts_create(&acts, &cfg->model, src->P, chunk, err)) {
        fs_held_free(&held);
        return -1;
    }
    bool *sel = calloc((size_t)acts.count, sizeof *sel);
    fs_held_clamps hc;
    bool bound = false;
    fs_cache_writer *w = NULL;
    long long level;
    int rc = -1;
    fs_cache_file_opts fo = {.batched = src->batched, .input = src->desc};
    cJSON *cj = fs_model_config_to_json(&cfg->model);
    char *config_text = cj ? cJSON_PrintUnformatted(cj) : NULL;
    cJSON_Delete(cj);
    fo.config_json = config_text;
    if (!sel || !config_text) {
        fs_fail(err, "out of memory");
        goto done;
    }
    if (fs_leaf_select(&acts, fs_arg(args, "--names"), sel, err) < 0 ||
        fs_cache_format_parse(fs_arg(args, "--format"), fs_arg(args, "-o"), &fo.format, err))
        goto done;
    if (fs_arg_int(args, "--compress", 0, 0, 9, &level)) {
        reported(err);
        goto done;
    }
    fo.compress = (int)level;
    if (fo.compress && fo.format != FS_CACHE_H5) {
        fs_fail(err, "--compress applies to the h5 format only (this output is %s)",
                fo.format == FS_CACHE_JSON ? "json" : "safetensors");
        goto done;
    }
    if (fs_held_bind(&hc, &held, &acts, err))
        goto done;
    bound = true;
    if (fs_cache_writer_open(&w, fs_arg(args, "-o"), &acts, sel, src->B, &fo, err))
        goto done;
    for (int b0 = 0; b0 < src->B; b0 += chunk) {
        int n = src->B - b0 < chunk ? src->B - b0 : chunk;
        if (fill_chunk(src, &acts, b0, n, err))
            goto done;
        fs_held_forward(&hc, model, &acts, n);
        if (fs_cache_writer_put(w, &acts, n, err))
            goto done;
    }
    rc = fs_cache_writer_close(w, err);
    w = NULL;
done:
    fs_cache_writer_abort(w);
    if (bound)
        fs_held_unbind(&hc);
    fs_held_free(&held);
    fs_acts_free(&acts);
    free(sel);
    free(config_text);
    return rc;
}

/* --shapes: the shape listing of the (selected) leaves, keys sorted. */
static int shapes(const fs_args *args, const fs_run_config *cfg, const seq_source *src, bool have_input)
{
    fs_error err = {{0}};
    long long pairs;
    if (fs_arg_int(args, "--pairs", 3, 1, 4096, &pairs))
        return 1;
    int B = have_input ? src->B : 1, P = have_input ? src->P : (int)pairs;
    fs_acts acts;
    if (fs_acts_create(&acts, &cfg->model, P, 1, &err))
        return fs_cli_error(err.msg);
    bool *sel = calloc((size_t)acts.count, sizeof *sel);
    int rc = 1;
    if (!sel)
        fs_cli_error("out of memory");
    else if (fs_leaf_select(&acts, fs_arg(args, "--names"), sel, &err) < 0)
        fs_cli_error(err.msg);
    else {
        cJSON *tree = fs_cache_shapes_json(&acts, B, have_input && src->batched, sel);
        char *text = fs_json_print_sorted(tree);
        cJSON_Delete(tree);
        rc = fs_cli_output(args, text);
        free(text);
    }
    free(sel);
    fs_acts_free(&acts);
    return rc;
}

int fs_cmd_cache(int argc, char **argv)
{
    fs_args args;
    int rc = fs_cli_parse(&args, argc, argv, "cache",
                          "[--config C.json] --model M.safetensors (--input SEQ.json|SEQ.h5 | --sample N [--evaluator NAME]\n"
                          "       [--seed S]) [--names PATTERNS] [--format json|h5|safetensors] [--compress LEVEL] [--chunk N]\n"
                          "       [--cache CACHE.json --mask MASK.json] [--intervene JSON|FILE] [--shapes] [--set S.K=V ...] [-o OUT]\n"
                          "   or: fewshot cache --config C.json --shapes [--pairs P] [--names PATTERNS]   (shapes without a model)",
                          "Run the forward pass on the input sequences and dump the activations of the cache tree\n"
                          "(JSON, HDF5 or safetensors; every leaf, or those --names selects), chunk by chunk. With\n"
                          "--cache/--mask, clamped activations replace computed ones where the mask is true and\n"
                          "everything downstream follows. --intervene adds named interventions (ablate_heads,\n"
                          "induction_heads, prev_token_heads, preserve, head_temperature, ...; see README).\n"
                          "File layouts: docs/cache-files.md.",
                          opts);
    if (rc)
        return rc > 0 ? 0 : 2;
    fs_error err = {{0}};
    fs_run_config cfg;
    fs_model model = {0};
    bool only_shapes = fs_flag(&args, "--shapes");
    bool have_input = fs_arg(&args, "--input") || fs_arg(&args, "--sample");
    if (only_shapes && !fs_arg(&args, "--model")) {
        if (fs_cli_run_config(&args, &cfg, true))
            return 1;
        if (fs_model_config_validate(&cfg.model, fs_arg(&args, "--config"), &err)) {
            fs_run_config_free(&cfg);
            return fs_cli_error(err.msg);
        }
    } else if (fs_cli_load_model(&args, &cfg, &model)) {
        fs_model_free(&model);
        fs_run_config_free(&cfg);
        return 1;
    }
    seq_source src = {0};
    if (!have_input && !only_shapes)
        rc = fs_cli_error("--input FILE or --sample N is required (or --shapes)");
    else if (have_input && open_source(&src, &args, &cfg, &err))
        rc = err.msg[0] ? fs_cli_error(err.msg) : 1;
    else if (only_shapes)
        rc = shapes(&args, &cfg, &src, have_input);
    else if (dump(&args, &cfg, &model, &src, &err))
        rc = err.msg[0] ? fs_cli_error(err.msg) : 1;
    source_free(&src);
    fs_model_free(&model);
    fs_run_config_free(&cfg);
    return rc;
}
