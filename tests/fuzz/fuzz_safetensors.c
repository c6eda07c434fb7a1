/* safetensors header + metadata: fs_st_read, the model config in the metadata, and a
 * model load against the config found there (shapes checked before allocating). */
#include "fuzz_common.h"

#include "fewshot/model.h"
#include "fewshot/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_file("st", data, size);
    fs_error err;
    fs_st_file f;
    if (fs_st_read(path, &f, &err) == 0)
        fs_st_free(&f);
    fs_model_config cfg;
    if (fs_model_config_from_file(path, &cfg, &err) == 1) {
        fs_model m;
        if (fs_model_load(&m, &cfg, path, &err) == 0)
            fs_model_free(&m);
    }
    unlink(path);
    return 0;
}
