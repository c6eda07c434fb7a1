/* Helpers for comparing our outputs with tests/golden (tests/golden/README.md). */
#ifndef FEWSHOT_TEST_GOLDEN_UTIL_H
#define FEWSHOT_TEST_GOLDEN_UTIL_H

#include <cjson/cJSON.h>
#include <stdbool.h>

#include "fewshot/interventions.h"
#include "fewshot/model.h"
#include "fewshot/seqio.h"
#include "train/trainer.h"

#define GOLDEN_DIR "tests/golden"

/* Compare trees: same keys, same list lengths, null where null, every number within
 * 1e-4 abs + 1e-4 rel. A missing or extra leaf fails. Returns the number of leaves
 * compared; on mismatch fills `why` and returns -1. */
int golden_compare_tree(const cJSON *ours, const cJSON *golden, const char *path, char *why, size_t why_len);

/* Every tensor of `buffer` (model layout) equals the file's tensor within 1e-4 of the
 * golden tensor's max magnitude; the file must hold exactly the model's tensors. */
int golden_compare_buffer(const fs_model *m, const float *buffer, const char *golden_path, char *why, size_t why_len);

/* Load golden/NAME/config.json's model and params into m. */
void golden_load_model(const char *name, fs_model *m);

/* golden/NAME's model, the batch of golden/NAME/INPUT, what `src` holds on (bound and
 * filled) and a trainer through it (weight decay 0). */
typedef struct {
    fs_model m;
    fs_seq_batch batch;
    fs_trainer t;
    fs_held held;
    fs_held_clamps hc;
} golden_held;

void golden_held_open(golden_held *g, const char *name, const char *input, const fs_held_source *src, int threads);
void golden_held_close(golden_held *g);

#endif
