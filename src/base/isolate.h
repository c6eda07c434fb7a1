/* Running a fragile reader (a third-party library parsing untrusted bytes) in a child
 * process, so that a crash inside it becomes an error instead of killing the caller. */
#ifndef FEWSHOT_BASE_ISOLATE_H
#define FEWSHOT_BASE_ISOLATE_H

#include <stddef.h>

#include "fewshot/error.h"

/* fn runs in a forked child: it returns 0 and a malloc'ed result (*out, *len) or -1 with
 * err filled. The parent receives the result bytes through a pipe (caller frees *out).
 * If the child dies (signal, abort inside the library), the error names `what` and the
 * signal. The child ends with _exit and touches nothing of the parent; fn must not use
 * OpenMP. Note: the parent waits for the child with waitpid. */
typedef int (*fs_isolated_fn)(void *arg, void **out, size_t *len, fs_error *err);
int fs_run_isolated(fs_isolated_fn fn, void *arg, const char *what, void **out, size_t *len, fs_error *err);

#endif
