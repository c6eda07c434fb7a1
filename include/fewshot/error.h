/* Error reporting: every fallible function fills an fs_error and returns -1. */
#ifndef FEWSHOT_ERROR_H
#define FEWSHOT_ERROR_H

#include <stdarg.h>

typedef struct {
    char msg[1024];
} fs_error;

/* printf-style; always returns -1 so callers can `return fs_fail(err, ...)`. */
int fs_fail(fs_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
