/* Run configuration: the `model`, `data`, `train`, `eval` and `clamps` sections of
 * a config JSON (docs/formats.md). Keys reuse the reference's option names; unknown
 * keys are an error naming the key. */
#ifndef FEWSHOT_CONFIG_H
#define FEWSHOT_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

#include "fewshot/error.h"

typedef struct cJSON cJSON;

typedef enum { FS_POS_ROPE = 0, FS_POS_APE = 1, FS_POS_SINUSOIDAL = 2 } fs_pos_kind;

enum { FS_APE_MAX_TOKENS = 32, FS_MAX_DEPTH = 64, FS_MAX_SAMPLERS = 16, FS_MAX_EVALUATORS = 16, FS_MAX_SCHED = 4096 };

/* An increasing list of sequence counts (the reference's eval_sched / ckpt_sched). */
typedef struct {
    int n;
    int64_t at[FS_MAX_SCHED];
} fs_sched;

typedef struct {
    int input_dim;       /* D */
    int num_classes;     /* C */
    int d_model;         /* d */
    int num_heads;       /* H, head_dim = d / H */
    int depth;           /* number of blocks */
    double mlp_ratio;    /* hidden = (int)(d * mlp_ratio); 0 = attention-only */
    fs_pos_kind pos_embedding;
    double rope_base;    /* RoPE / sinusoidal base ("sin_time") */
    int64_t init_seed;
    double init_rescale; /* multiplies every Linear weight at init */
    bool qkv_bias;
    bool no_norm;        /* LayerNorms become the identity (no norm parameters) */
} fs_model_config;

typedef enum { FS_DATA_FILE = 0, FS_DATA_ONEHOT = 1 } fs_data_type;

typedef struct {
    char file[1024];          /* HDF5 features file (type "file") */
    char path[256];           /* dataset path inside the file */
    fs_data_type type;
    int onehot_classes;       /* type "onehot": number of classes (one exemplar each) */
    int class_split[3];       /* train, val, test class counts */
    int exemplar_split[3];    /* train, val, test exemplar counts */
    int fs_relabel;           /* L > 0: few-shot relabelling onto L labels */
    double fs_relabel_split[3];
    int64_t fs_relabel_split_seed;
    double noise_scale;       /* Gaussian noise added to training examples */
    double zipf_alpha;        /* 0 = uniform class distribution */
    bool match_query_and_distractors;
    bool assign_query_label_random;
} fs_data_config;

typedef enum { FS_OPT_ADAM = 0, FS_OPT_SGD, FS_OPT_WARMUP_DECAY, FS_OPT_COSINE } fs_optimizer_kind;

typedef struct {
    double mixing_coeff;
    int burstiness;
    bool distract;
    bool no_support;
    bool unique_rest;
} fs_sampler_config;

typedef struct {
    int64_t train_iters;      /* sequences, not steps */
    int train_bs;
    int train_context_len;    /* context pairs; sequences hold context_len + 1 pairs */
    double lr;
    fs_optimizer_kind optimizer;
    double weight_decay;
    int64_t warmup_steps;
    int64_t decay_steps;
    int64_t train_seed;
    int num_samplers;
    fs_sampler_config samplers[FS_MAX_SAMPLERS];
    int64_t eval_every;       /* sequences; 0 = only at start and end */
    int64_t ckpt_every;       /* sequences; 0 = only at the end */
    int64_t log_every;        /* sequences */
    int threads;              /* 0 = number of cores */
    fs_sched eval_sched;      /* also evaluate when crossing these sequence counts */
    int eval_log_points;      /* also evaluate at N log-spaced counts from train_bs to train_iters */
    fs_sched ckpt_sched;      /* write the model as ckpt_<iter>.safetensors when crossing these */
} fs_train_config;

/* Class/exemplar splits; relabel schemes also take NONE (no relabelling). */
typedef enum { FS_SPLIT_TRAIN = 0, FS_SPLIT_VAL = 1, FS_SPLIT_TEST = 2, FS_SPLIT_ALL = 3, FS_SPLIT_NONE = 4 } fs_split;

typedef struct {
    char name[64];
    fs_split classes;
    fs_split exemplars;
    int burstiness;
    fs_split fs_relabel_scheme; /* relabel pair set: train/val/test/all pairs, or none */
    int context_len;            /* 0 = train_context_len */
    bool distract;
    bool no_support;
    bool unique_rest;
    double noise_scale;         /* -1 = data.noise_scale (the reference's default) */
    bool assign_query_label_random;
} fs_evaluator_config;

typedef struct {
    int64_t eval_seed;
    int eval_iters;            /* sequences per evaluator */
    int eval_bs;
    int num_evaluators;
    fs_evaluator_config evaluators[FS_MAX_EVALUATORS];
} fs_eval_config;

/* Named interventions and clamp files applied during a run (docs/cache.md). */
typedef struct {
    char cache_file[1024];     /* clamp cache JSON ("" = none) */
    char mask_file[1024];      /* clamp mask JSON */
    cJSON *named;              /* the section as given, for the interventions module */
} fs_clamps_config;

/* Progress measures computed at every eval point (the `measures` section). */
typedef enum {
    FS_MEASURE_INDUCTION, FS_MEASURE_PREV_TOKEN, FS_MEASURE_LABEL_ATTENTION, FS_MEASURE_ABLATE_ACC,
    FS_MEASURE_ONLY_ACC, FS_NUM_MEASURES
} fs_measure_kind;
/* Their names in configs and in metrics.jsonl: "induction_strength", ... */
extern const char *const fs_measure_names[FS_NUM_MEASURES];

typedef struct {
    bool enable;
    int probe_size;           /* probe sequences (default 512) */
    int64_t probe_seed;
    unsigned which;           /* bit (1u << fs_measure_kind) per measure; default all */
} fs_measures_config;

typedef struct {
    fs_model_config model;
    fs_data_config data;
    fs_train_config train;
    fs_eval_config eval;
    fs_clamps_config clamps;
    fs_measures_config measures;
    bool has_model, has_data, has_train, has_eval, has_clamps;
    /* Whether the config set these; if not, a training run takes them from the data
     * (input_dim = the features' dim; num_classes = L when relabelling, else the
     * number of train classes; docs/sampling.md). */
    bool input_dim_given, num_classes_given;
} fs_run_config;

/* Defaults: the documented model and the reference's main run settings. */
void fs_model_config_default(fs_model_config *m);
void fs_run_config_default(fs_run_config *c);
void fs_run_config_free(fs_run_config *c);

/* Load a JSON config file into `c` (which holds defaults beforehand).
 * Unknown sections or keys, wrong types and out-of-range values are errors naming
 * the file and the key. */
int fs_run_config_load(const char *path, fs_run_config *c, fs_error *err);
/* Apply a parsed JSON object (same schema) on top of `c`; `origin` names it in errors. */
int fs_run_config_apply(const cJSON *root, const char *origin, fs_run_config *c, fs_error *err);
/* `--set section.key=value`; value parsed as JSON, else as a bare string. */
int fs_run_config_set(fs_run_config *c, const char *assignment, fs_error *err);
/* Cross-field checks (heads divide d_model, APE length, seeds differ, ...). */
int fs_model_config_validate(const fs_model_config *m, const char *origin, fs_error *err);
int fs_run_config_validate(const fs_run_config *c, const char *origin, fs_error *err);

/* Serialise (fully resolved) to a new cJSON object; caller frees. */
cJSON *fs_model_config_to_json(const fs_model_config *m);
cJSON *fs_run_config_to_json(const fs_run_config *c);
/* Parse just a `model` object (e.g. from safetensors metadata). */
int fs_model_config_from_json(const cJSON *model, const char *origin, fs_model_config *m, fs_error *err);
/* 1 if equal in every field that changes the parameter layout or the function. */
int fs_model_config_equal(const fs_model_config *a, const fs_model_config *b);

int fs_mlp_hidden(const fs_model_config *m); /* (int)(d * mlp_ratio), 0 when attention-only */

const char *fs_split_name(fs_split s);

#endif
