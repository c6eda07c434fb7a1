/* The safetensors header writer, for writers that stream the data section themselves. */
#ifndef FEWSHOT_IO_ST_HEADER_H
#define FEWSHOT_IO_ST_HEADER_H

#include "fewshot/safetensors.h"

/* JSON header for tensors laid out contiguously in `order` (data unused), padded so that
 * 8 + *len is a multiple of 8; *text is malloc'ed. */
int fs_st_header(const char *path, const fs_st_tensor *const *order, int count, const char *const *meta_keys,
                 const char *const *meta_values, int meta_count, char **text, size_t *len, fs_error *err);

#endif
