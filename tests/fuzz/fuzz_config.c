/* Run configs: config JSON (fs_run_config_apply), then after a line "--" one --set
 * assignment per line; then the cross-field validation and the JSON round trip. */
#include "fuzz_common.h"

#include <cjson/cJSON.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = fuzz_text(data, size);
    char *nl = strstr(text, "\n--\n");
    if (nl) {
        *nl = 0;
        nl += 3;
    }
    fs_run_config c;
    fs_run_config_default(&c);
    fs_error err;
    cJSON *root = cJSON_Parse(text);
    int rc = root ? fs_run_config_apply(root, "fuzz", &c, &err) : 0;
    cJSON_Delete(root);
    for (char *line = nl ? nl + 1 : NULL; rc == 0 && line && *line;) {
        char *next = strchr(line, '\n');
        if (next)
            *next = 0;
        rc = fs_run_config_set(&c, line, &err);
        line = next ? next + 1 : NULL;
    }
    if (rc == 0 && fs_run_config_validate(&c, "fuzz", &err) == 0) {
        cJSON *j = fs_run_config_to_json(&c);
        fs_run_config again;
        fs_run_config_default(&again);
        if (fs_run_config_apply(j, "round trip", &again, &err) != 0)
            abort(); /* what we write we must read back */
        fs_run_config_free(&again);
        cJSON_Delete(j);
    }
    fs_run_config_free(&c);
    free(text);
    return 0;
}
