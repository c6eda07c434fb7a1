/* JSON text as fewshot writes it to files and stdout. */
#ifndef FEWSHOT_BASE_JSON_H
#define FEWSHOT_BASE_JSON_H

typedef struct cJSON cJSON;

/* cJSON_Print's indented text plus a final newline; NULL when out of memory. */
char *fs_json_text(const cJSON *j);

/* Non-finite numbers (README "Robustness and limits"): JSON has no NaN or infinity, so
 * fewshot writes them as the strings "NaN", "Infinity", "-Infinity", and its readers of
 * float values accept those strings back. */
const char *fs_nonfinite_name(double x); /* x non-finite */
cJSON *fs_json_float(double x);          /* a number, or the string for a non-finite x */
/* A number or one of the three strings into *out; -1 for anything else. */
int fs_json_get_float(const cJSON *item, double *out);

#endif
