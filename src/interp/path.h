/* Internal helpers shared between source files (not public API). */
#ifndef FEWSHOT_SRC_INTERNAL_H
#define FEWSHOT_SRC_INTERNAL_H

typedef struct {
    char key[48]; /* "" for an index component */
    int index;
} fs_path_part;

int fs_path_split(const char *path, fs_path_part *parts, int max);

#endif
