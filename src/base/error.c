#include "base/error.h"

#include <stdio.h>
#include <string.h>

int fs_fail(fs_error *err, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return -1;
}

int fs_fail_prefix(fs_error *err, const char *fmt, ...)
{
    if (!err)
        return -1;
    char msg[sizeof err->msg];
    memcpy(msg, err->msg, sizeof msg);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    if (n >= 0 && (size_t)n < sizeof err->msg)
        snprintf(err->msg + n, sizeof err->msg - (size_t)n, ": %s", msg);
    return -1;
}
