/* HDF5 feature files as `train`/`eval` read them (fs_dataset_load_h5) and 2-D query files
 * (fs_kv_queries_load_h5). libhdf5 runs in a child process (fs_run_isolated): crashes
 * inside it become errors, so this target checks the signature check, the reply
 * protocol and the shape/type/finiteness checks around the library. */
#include "fuzz_common.h"

#include "fewshot/data.h"
#include "fewshot/kvcache.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_file("h5", data, size);
    fs_error err;
    fs_dataset d;
    if (fs_dataset_load_h5(&d, path, NULL, &err) == 0)
        fs_dataset_free(&d);
    fs_kv_queries q;
    if (fs_kv_queries_load_h5(path, "resnet18/224/feat", 64, &q, &err) == 0)
        fs_kv_queries_free(&q);
    unlink(path);
    return 0;
}
