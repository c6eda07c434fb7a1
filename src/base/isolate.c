/* fs_run_isolated: fork, run the reader in the child, pass the bytes back (see isolate.h). */
#include "base/isolate.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/fileio.h"

/* Reply from the child: status, error message, result length, then the result bytes. */
typedef struct {
    int32_t rc;
    uint64_t len;
    fs_error err;
} reply_head;

/* All n bytes through fd (write when `out`, else read); -1 on error or end of file. */
static int transfer(int fd, void *p, size_t n, bool out)
{
    char *c = p;
    while (n > 0) {
        ssize_t k = out ? write(fd, c, n) : read(fd, c, n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return -1;
        c += k, n -= (size_t)k;
    }
    return 0;
}

static void child(int fd, fs_isolated_fn fn, void *arg)
{
    reply_head h = {0};
    void *out = NULL;
    size_t len = 0;
    h.rc = fn(arg, &out, &len, &h.err) ? -1 : 0;
    h.len = h.rc == 0 ? len : 0;
    int ok = transfer(fd, &h, sizeof h, true) == 0 && (h.len == 0 || transfer(fd, out, len, true) == 0);
    _exit(ok ? 0 : 1);
}

int fs_run_isolated(fs_isolated_fn fn, void *arg, const char *what, void **out, size_t *len, fs_error *err)
{
    *out = NULL;
    *len = 0;
    int fds[2];
    if (pipe(fds) != 0)
        return fs_fail(err, "%s: cannot create a pipe for the isolated reader (%s)", what, strerror(errno));
    pid_t pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        return fs_fail(err, "%s: cannot fork the isolated reader (%s)", what, strerror(errno));
    }
    if (pid == 0) {
        close(fds[0]);
        child(fds[1], fn, arg);
    }
    close(fds[1]);
    reply_head h;
    int rc = 0;
    void *data = NULL;
    if (transfer(fds[0], &h, sizeof h, false) != 0)
        rc = -2; /* the child died before answering */
    else if (h.rc != 0) {
        h.err.msg[sizeof h.err.msg - 1] = 0;
        rc = fs_fail(err, "%s", h.err.msg);
    } else if (h.len > fs_memory_limit() || !(data = malloc(h.len ? (size_t)h.len : 1)))
        rc = fs_fail_alloc(err, what, (size_t)h.len);
    else if (transfer(fds[0], data, (size_t)h.len, false) != 0)
        rc = -2;
    close(fds[0]);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (rc == -2 || (rc == 0 && !(WIFEXITED(status) && WEXITSTATUS(status) == 0))) {
        free(data);
        if (WIFSIGNALED(status))
            return fs_fail(err, "%s: the reader crashed on this file (signal %d, %s); the file is damaged or not "
                           "what it claims to be", what, WTERMSIG(status), strsignal(WTERMSIG(status)));
        return fs_fail(err, "%s: the reader ended without an answer (exit status %d); the file is damaged?", what,
                       WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    }
    if (rc != 0) {
        free(data);
        return -1;
    }
    *out = data;
    *len = (size_t)h.len;
    return 0;
}
