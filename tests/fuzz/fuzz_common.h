/* Shared by the libFuzzer targets (tests/fuzz/README.md): a per-process scratch file for
 * parsers that read paths, and the small model configs the targets parse against. */
#ifndef FEWSHOT_FUZZ_COMMON_H
#define FEWSHOT_FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fewshot/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Write the input to /tmp/fewshot_fuzz_<tag>_<pid> and return that path (static buffer). */
static inline const char *fuzz_file(const char *tag, const uint8_t *data, size_t size)
{
    static char path[2][128];
    static int next;
    char *p = path[next++ % 2];
    snprintf(p, sizeof path[0], "/tmp/fewshot_fuzz_%s_%ld", tag, (long)getpid());
    FILE *f = fopen(p, "wb");
    if (!f)
        abort();
    if (size && fwrite(data, 1, size, f) != size)
        abort();
    fclose(f);
    return p;
}

/* The input as a NUL-terminated string (caller frees). */
static inline char *fuzz_text(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (!s)
        abort();
    memcpy(s, data, size);
    s[size] = 0;
    return s;
}

/* tests/golden/attn_only's model: input_dim 512, 5 classes, d_model 64, 8 heads, depth 2. */
static inline void fuzz_attn_only_config(fs_model_config *c)
{
    fs_model_config_default(c);
    c->mlp_ratio = 0;
    c->init_seed = 3;
}

/* A tiny model for checkpoints: input_dim 4, 3 classes, d_model 8, 2 heads, depth 1, MLP x2. */
static inline void fuzz_tiny_config(fs_model_config *c)
{
    fs_model_config_default(c);
    c->input_dim = 4, c->num_classes = 3, c->d_model = 8, c->num_heads = 2, c->depth = 1, c->mlp_ratio = 2;
}

#endif
