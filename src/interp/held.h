/* Internal helpers of the clamps and interventions code. */
#ifndef FEWSHOT_INTERP_HELD_H
#define FEWSHOT_INTERP_HELD_H

#include "fewshot/config.h"
#include "fewshot/error.h"

/* A command-line JSON argument: inline JSON when it starts with '{', else a JSON file.
 * *origin names it in errors (`what` for inline JSON, else the file name). */
cJSON *fs_json_arg(const char *json_or_file, const char *what, const char **origin, fs_error *err);

#endif
