/* `classify` inputs: the context {"examples": [k][D], "labels": [k]} and the JSON queries
 * {"examples": [Q][D]}, D = 512 as in datasets/examples. */
#include "fuzz_common.h"

#include <cjson/cJSON.h>

#include "fewshot/kvcache.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = fuzz_text(data, size);
    cJSON *root = cJSON_Parse(text);
    free(text);
    fs_model_config cfg;
    fuzz_attn_only_config(&cfg);
    fs_error err;
    if (root) {
        fs_kv_context ctx;
        if (fs_kv_context_from_json(root, "fuzz", &cfg, &ctx, &err) == 0)
            fs_kv_context_free(&ctx);
        fs_kv_queries q;
        if (fs_kv_queries_from_json(root, "fuzz", cfg.input_dim, &q, &err) == 0)
            fs_kv_queries_free(&q);
    }
    cJSON_Delete(root);
    return 0;
}
