/* Components of a leaf path (internal; the cache tree's writers and clamp loading). */
#ifndef FEWSHOT_MODEL_PATH_H
#define FEWSHOT_MODEL_PATH_H

typedef struct {
    char key[48]; /* "" for an index component */
    int index;
} fs_path_part;

/* Split "a.b[2].c" into components; an index component has key "" and index >= 0. */
int fs_path_split(const char *path, fs_path_part *parts, int max);

#endif
