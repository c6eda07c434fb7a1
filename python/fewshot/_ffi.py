"""cffi (ABI mode) declarations of include/fewshot/api.h and the loaded library.

No compiler is needed: the declarations below are parsed at import time and the shared
library is opened with dlopen. tests/test_binding.py checks them against api.h.
"""
import os
from pathlib import Path

from cffi import FFI

CDEF = """
typedef struct { char msg[1024]; } fs_error;
const char *fs_api_version(void);
void fs_api_free(void *p);
typedef struct fs_api_model fs_api_model;
int fs_api_model_init(const char *config_json, int64_t seed, fs_api_model **out, fs_error *err);
int fs_api_model_load(const char *path, const char *config_json, fs_api_model **out, fs_error *err);
int fs_api_model_save(const fs_api_model *m, const char *path, fs_error *err);
void fs_api_model_free(fs_api_model *m);
char *fs_api_model_config(const fs_api_model *m);
int fs_api_param_count(const fs_api_model *m);
const char *fs_api_param_info(const fs_api_model *m, int i, int *ndim, int64_t shape[2]);
void fs_api_param_copy(const fs_api_model *m, int i, float *out);
typedef struct fs_api_layout fs_api_layout;
int fs_api_layout_create(const fs_api_model *m, int P, fs_api_layout **out, fs_error *err);
void fs_api_layout_free(fs_api_layout *l);
int fs_api_layout_count(const fs_api_layout *l);
const char *fs_api_layout_name(const fs_api_layout *l, int i);
int fs_api_layout_shape(const fs_api_layout *l, int i, int64_t shape[4]);
typedef struct fs_api_clamps fs_api_clamps;
int fs_api_clamps_create(const fs_api_layout *l, fs_api_clamps **out, fs_error *err);
void fs_api_clamps_free(fs_api_clamps *c);
int fs_api_clamps_set(fs_api_clamps *c, int i, const float *value, const uint8_t *mask, int64_t batch, fs_error *err);
int fs_api_run(const fs_api_model *m, const float *examples, const int32_t *labels, int64_t B, int P, const fs_api_clamps *clamps, const char *interventions_json, const int *sel, int nsel, float *const *outs, float *logits, fs_error *err);
int fs_api_loss_and_grads(const fs_api_model *m, const float *examples, const int32_t *labels, int64_t B, int P, const fs_api_clamps *clamps, const char *interventions_json, double weight_decay, double *loss, float *const *grads, fs_error *err);
typedef struct fs_api_kv fs_api_kv;
int fs_api_kv_create(const fs_api_model *m, const float *examples, const int32_t *labels, int pairs, fs_api_kv **out, fs_error *err);
void fs_api_kv_free(fs_api_kv *kv);
int fs_api_kv_classify(const fs_api_kv *kv, const float *queries, int64_t nq, int threads, float *logits, fs_error *err);
typedef void (*fs_api_progress_fn)(void *ctx, int64_t step, int64_t total_steps, int64_t iter, double seqs_per_s, double loss, const char *eval_name, double eval_acc);
int fs_api_train(const char *config, int is_path, const char *out_dir, int resume, int64_t stop_after, int threads, const volatile int *stop, fs_api_progress_fn progress, void *ctx, fs_error *err);
"""

ffi = FFI()
ffi.cdef(CDEF)


def _library_path():
    """FEWSHOT_LIB, else the build tree of the checkout this package sits in, else the
    installed library (found by the dynamic loader: make install puts it in PREFIX/lib)."""
    env = os.environ.get("FEWSHOT_LIB")
    if env:
        return env
    built = Path(__file__).resolve().parent.parent.parent / "build" / "libfewshot.so"
    if built.exists():
        return str(built)
    return "libfewshot.so.0"


try:
    lib = ffi.dlopen(_library_path())
except OSError as e:  # pragma: no cover - depends on the installation
    raise ImportError(
        f"fewshot: cannot load the shared library ({e}); build it with `make lib` in the "
        "repository, `make install` it, or set FEWSHOT_LIB to its path") from None
