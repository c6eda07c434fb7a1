#include "base/json.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

char *fs_json_text(const cJSON *j)
{
    char *text = cJSON_Print(j);
    if (!text)
        return NULL;
    size_t n = strlen(text);
    char *line = realloc(text, n + 2);
    if (!line) {
        free(text);
        return NULL;
    }
    line[n] = '\n';
    line[n + 1] = 0;
    return line;
}
