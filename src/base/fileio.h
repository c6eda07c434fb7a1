/* Small file and memory helpers used by every layer above base. */
#ifndef FEWSHOT_BASE_FILEIO_H
#define FEWSHOT_BASE_FILEIO_H

#include <stddef.h>

#include "fewshot/error.h"

/* 64-byte aligned, zeroed memory; aborts on failure (to become an error: issue 13). */
void *fs_alloc(size_t bytes);
/* Read a whole file / parse JSON from a file, with errors naming the file. */
char *fs_read_file(const char *path, size_t *len, fs_error *err);
void *fs_json_load(const char *path, fs_error *err); /* cJSON* */
/* mkdir -p (existing directories are fine). */
int fs_mkdir_p(const char *path, fs_error *err);
/* Write text atomically (temp file + rename). */
int fs_write_file_atomic(const char *path, const char *text, fs_error *err);

#endif
