/* Clamp and intervention trees: a JSON object whose "cache" and "cache_mask" (or "mask")
 * trees are clamps for tests/golden/attn_only's model (P from "examples", else 3) and
 * whose "interventions" object (or the whole object) is a named-interventions section,
 * bound to the activations (fs_held_bind). */
#include "fuzz_common.h"

#include <cjson/cJSON.h>

#include "fewshot/cache.h"
#include "fewshot/interventions.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = fuzz_text(data, size);
    cJSON *root = cJSON_Parse(text);
    free(text);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return 0;
    }
    fs_model_config cfg;
    fuzz_attn_only_config(&cfg);
    fs_error err;
    const cJSON *ex = cJSON_GetObjectItemCaseSensitive(root, "examples");
    int P = cJSON_IsArray(ex) && cJSON_GetArraySize(ex) > 0 && cJSON_GetArraySize(ex) <= 64 ? cJSON_GetArraySize(ex) : 3;
    fs_acts a;
    if (fs_acts_create(&a, &cfg, P, 1, &err) == 0) {
        const cJSON *cache = cJSON_GetObjectItemCaseSensitive(root, "cache");
        const cJSON *mask = cJSON_GetObjectItemCaseSensitive(root, "cache_mask");
        if (!mask)
            mask = cJSON_GetObjectItemCaseSensitive(root, "mask");
        if (cache && mask) {
            fs_clamp_set c;
            fs_clamp_set_init(&c, &a);
            if (fs_clamp_set_from_json(&c, &a, cache, mask, "cache", "mask", &err) == 0)
                fs_clamp_check_batch(&c, &a, 1, "cache", &err);
            fs_clamp_set_free(&c);
        }
        const cJSON *named = cJSON_GetObjectItemCaseSensitive(root, "interventions");
        fs_held held = {0};
        fs_interventions_default(&held.iv);
        if (fs_interventions_from_json(&held.iv, named ? named : root, &cfg, "fuzz", &err) == 0 &&
            (held.has_iv = fs_interventions_any(&held.iv))) {
            fs_held_clamps hc;
            if (fs_held_bind(&hc, &held, &a, &err) == 0)
                fs_held_unbind(&hc);
        }
        fs_acts_free(&a);
    }
    cJSON_Delete(root);
    return 0;
}
