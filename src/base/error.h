/* Error helpers for library code (the public part is fewshot/error.h). */
#ifndef FEWSHOT_BASE_ERROR_H
#define FEWSHOT_BASE_ERROR_H

#include "fewshot/error.h"

/* Put a printf-style context in front of err's message ("CONTEXT: message"); returns -1. */
int fs_fail_prefix(fs_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
