/* fewshot bench's cache-dump phase (issue 14): the full cache of a set of sequences
 * written to a file in each format, timed end to end (forward + formatting + writing). */
#ifndef FEWSHOT_CLI_BENCH_CACHE_H
#define FEWSHOT_CLI_BENCH_CACHE_H

#include <stdbool.h>

#include "fewshot/model.h"

typedef struct {
    double seqs_per_s[3], mb_per_s[3]; /* by fs_cache_format: json, h5, safetensors */
    long seqs[3];
    double mb[3];                      /* one file's size */
} fs_bench_cache_result;

/* Dump examples [n][P][D] / labels [n][P] repeatedly for about `seconds` per format, into
 * a temporary directory (removed afterwards). */
int fs_bench_cache(const fs_model *m, const float *examples, const int *labels, int n, int P, double seconds,
                   fs_bench_cache_result *r, fs_error *err);
/* Print the figures: text lines, or JSON members (", \"cache_json_seqs_per_s\": ..."). */
void fs_bench_cache_print(const fs_bench_cache_result *r, bool json);

#endif
