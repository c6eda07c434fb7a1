/* The model: its parameter layout (docs/model.md) and flat parameter memory.
 * Parameters, gradients and optimizer moments share one layout: a table of named
 * tensors at offsets into a flat float buffer, laid out once. */
#ifndef FEWSHOT_MODEL_H
#define FEWSHOT_MODEL_H

#include <stddef.h>

#include "fewshot/config.h"
#include "fewshot/error.h"

typedef enum { FS_INIT_ZERO, FS_INIT_ONE, FS_INIT_LECUN, FS_INIT_LABEL_EMBED, FS_INIT_APE } fs_init_kind;

typedef struct {
    char name[96];     /* e.g. "transformer.blocks.1.attn.qkv.weight" */
    int ndim;
    int shape[2];
    size_t numel;
    size_t offset;     /* in floats, into the flat buffer */
    fs_init_kind init;
    int fan_in;        /* for lecun-normal */
} fs_param_desc;

/* Pointers of one block's parameters into a flat buffer (NULL when absent). */
typedef struct {
    float *norm1_w, *norm1_b;
    float *qkv_w, *qkv_b;  /* [3d, d], [3d] */
    float *proj_w;         /* [d, d] */
    float *norm2_w, *norm2_b;
    float *fc1_w, *fc1_b;  /* [F, d], [F] */
    float *fc2_w, *fc2_b;  /* [d, F], [d] */
} fs_block_params;

typedef struct {
    float *example_w, *example_b; /* [d, D], [d] */
    float *label_w;               /* [d, C] */
    float *pos_w;                 /* [d, 32] (APE only) */
    fs_block_params blocks[FS_MAX_DEPTH];
    float *norm_w, *norm_b;       /* final LayerNorm */
    float *unembed_w, *unembed_b; /* [C, d], [C] */
} fs_param_ptrs;

typedef struct {
    fs_param_desc *tensors;
    int count;
    size_t total; /* floats */
} fs_param_layout;

int fs_param_layout_build(const fs_model_config *cfg, fs_param_layout *layout, fs_error *err);
void fs_param_layout_free(fs_param_layout *layout);
const fs_param_desc *fs_param_find(const fs_param_layout *layout, const char *name);
/* Resolve every tensor's pointer inside `base` (a buffer of layout->total floats). */
fs_param_ptrs fs_param_bind(const fs_model_config *cfg, const fs_param_layout *layout, float *base);

typedef struct {
    fs_model_config cfg;
    fs_param_layout layout;
    float *params;     /* layout.total floats, 64-byte aligned */
    fs_param_ptrs p;
} fs_model;

int fs_model_create(fs_model *m, const fs_model_config *cfg, fs_error *err); /* zero parameters */
void fs_model_free(fs_model *m);
/* docs/model.md initialisation, seeded by cfg.init_seed (reproducible). */
void fs_model_init_params(fs_model *m);

/* safetensors I/O. Loading checks every tensor's presence and shape against the
 * config; extra tensors are an error. The saved file carries the config in metadata. */
int fs_model_load(fs_model *m, const fs_model_config *cfg, const char *path, fs_error *err);
int fs_model_save(const fs_model *m, const char *path, fs_error *err);
/* Read the model config stored in a fewshot safetensors file's metadata (returns 1 if
 * present, 0 if absent, -1 on error). */
int fs_model_config_from_file(const char *path, fs_model_config *cfg, fs_error *err);
/* Load a parameter file as --model does: with has_cfg, *cfg (from config_origin, which
 * names it in errors) must agree with the file's stored config; without, the stored one
 * is taken (an error if there is none). The config is validated before loading. */
int fs_model_open(fs_model *m, fs_model_config *cfg, bool has_cfg, const char *path, const char *config_origin,
                  fs_error *err);
/* Write a flat buffer with the model's layout (gradients, Adam moments) as safetensors. */
int fs_buffer_save(const fs_model *m, const float *buffer, const char *path, fs_error *err);
/* Load tensors with the model's layout into `buffer` (every tensor required). */
int fs_buffer_load(const fs_model *m, float *buffer, const char *path, fs_error *err);


#endif
