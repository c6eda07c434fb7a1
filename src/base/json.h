/* JSON text as fewshot writes it to files and stdout. */
#ifndef FEWSHOT_BASE_JSON_H
#define FEWSHOT_BASE_JSON_H

typedef struct cJSON cJSON;

/* cJSON_Print's indented text plus a final newline; NULL when out of memory. */
char *fs_json_text(const cJSON *j);

#endif
