#include "base/json.h"

#include <cjson/cJSON.h>
#include <math.h>
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

const char *fs_nonfinite_name(double x) { return isnan(x) ? "NaN" : x > 0 ? "Infinity" : "-Infinity"; }

cJSON *fs_json_float(double x) { return isfinite(x) ? cJSON_CreateNumber(x) : cJSON_CreateString(fs_nonfinite_name(x)); }

int fs_json_get_float(const cJSON *v, double *out)
{
    if (cJSON_IsNumber(v)) {
        *out = v->valuedouble;
        return 0;
    }
    if (!cJSON_IsString(v))
        return -1;
    if (!strcmp(v->valuestring, "NaN"))
        *out = NAN;
    else if (!strcmp(v->valuestring, "Infinity"))
        *out = INFINITY;
    else if (!strcmp(v->valuestring, "-Infinity"))
        *out = -INFINITY;
    else
        return -1;
    return 0;
}
