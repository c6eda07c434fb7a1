/* Cache files for many sequences (issue 14): the activation cache of a batch written leaf
 * by leaf as it is computed, chunk of sequences after chunk, so memory is bounded by the
 * chunk. Three formats, each holding the selected leaves (fs_leaf_select) with a leading
 * batch dimension B:
 *   json         the cache tree as `fewshot cache` has always printed it (cJSON layout,
 *                %.9g floats); byte-identical to the tree-built dump
 *   h5           HDF5: groups mirroring the tree (/transformer_output/block_outputs/1/
 *                attn_output/attn_scores), float32 datasets [B, ...] chunked along B,
 *                optionally gzip-compressed; root attributes "config" (model config
 *                JSON), "input" and "num_sequences"
 *   safetensors  one F32 tensor [B, ...] per leaf named by its dotted path; metadata
 *                "config", "input", "num_sequences"
 * Null leaves (pos_embedding under RoPE) appear only in JSON. Files are written
 * atomically: a failed write (full disk, unwritable path) leaves no file under the name. */
#ifndef FEWSHOT_CACHEFILE_H
#define FEWSHOT_CACHEFILE_H

#include <stdbool.h>

#include "fewshot/cache.h"
#include "fewshot/error.h"

typedef enum { FS_CACHE_JSON, FS_CACHE_H5, FS_CACHE_SAFETENSORS } fs_cache_format;

/* `name` ("json", "h5", "safetensors") or, when NULL, the extension of `path` (.h5/.hdf5,
 * .safetensors, anything else JSON). */
int fs_cache_format_parse(const char *name, const char *path, fs_cache_format *out, fs_error *err);

typedef struct {
    fs_cache_format format;
    bool batched;            /* json: leaves get the leading B (false only for B = 1 inputs without it) */
    int compress;            /* h5: gzip level 1..9, 0 = none */
    const char *config_json; /* recorded in h5/safetensors (may be NULL) */
    const char *input;       /* where the sequences came from (may be NULL) */
} fs_cache_file_opts;

typedef struct fs_cache_writer fs_cache_writer;

/* Start a file at `path` (NULL = stdout, json only) for B sequences of `layout`'s leaf
 * table (its P and config; its capacity may be smaller than B), writing leaves with sel[i]. */
int fs_cache_writer_open(fs_cache_writer **w, const char *path, const fs_acts *layout, const bool *sel, int B,
                         const fs_cache_file_opts *opts, fs_error *err);
/* Append the next n sequences, held in slots [0, n) of `a` (same layout). */
int fs_cache_writer_put(fs_cache_writer *w, const fs_acts *a, int n, fs_error *err);
/* Finish after all B sequences: write what remains, sync, move into place. Frees w. */
int fs_cache_writer_close(fs_cache_writer *w, fs_error *err);
/* Drop a file being written (no file is left). Frees w; NULL is a no-op. */
void fs_cache_writer_abort(fs_cache_writer *w);

#endif
