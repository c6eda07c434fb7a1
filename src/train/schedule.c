#include "train/schedule.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static int cmp_i64(const void *x, const void *y)
{
    int64_t a = *(const int64_t *)x, b = *(const int64_t *)y;
    return (a > b) - (a < b);
}

int fs_schedule_init(fs_schedule *s, int64_t every, const fs_sched *list, int log_points, int64_t first,
                     int64_t last, fs_error *err)
{
    memset(s, 0, sizeof *s);
    s->every = every;
    int cap = (list ? list->n : 0) + (log_points > 0 ? log_points : 0);
    if (cap == 0)
        return 0;
    s->at = malloc(sizeof(int64_t) * (size_t)cap);
    if (!s->at)
        return fs_fail(err, "schedule: out of memory for %d points", cap);
    for (int i = 0; list && i < list->n; i++)
        s->at[s->n++] = list->at[i];
    if (first < 1)
        first = 1;
    for (int k = 0; k < log_points && last >= first; k++) {
        double f = log_points == 1 ? 1.0 : (double)k / (log_points - 1);
        s->at[s->n++] = llround(exp(log((double)first) + f * (log((double)last) - log((double)first))));
    }
    qsort(s->at, (size_t)s->n, sizeof *s->at, cmp_i64);
    int m = 0;
    for (int i = 0; i < s->n; i++)
        if (m == 0 || s->at[i] != s->at[m - 1])
            s->at[m++] = s->at[i];
    s->n = m;
    return 0;
}

void fs_schedule_free(fs_schedule *s)
{
    free(s->at);
    memset(s, 0, sizeof *s);
}

bool fs_schedule_due(const fs_schedule *s, int64_t a, int64_t b)
{
    if (s->every > 0 && b / s->every > a / s->every)
        return true;
    int lo = 0, hi = s->n; /* first listed count > a */
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (s->at[mid] > a)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo < s->n && s->at[lo] <= b;
}
