/* Leaf names: path components, dotted names and the glob filter on them (names_filter). */
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fewshot/cache.h"
#include "model/path.h"

int fs_path_split(const char *path, fs_path_part *parts, int max)
{
    int n = 0;
    const char *s = path;
    while (*s && n < max) {
        if (*s == '.') {
            s++;
            continue;
        }
        if (*s == '[') {
            parts[n].key[0] = 0;
            parts[n].index = atoi(s + 1);
            n++;
            s = strchr(s, ']');
            if (!s)
                break;
            s++;
            continue;
        }
        size_t len = strcspn(s, ".[");
        snprintf(parts[n].key, sizeof parts[n].key, "%.*s", (int)len, s);
        parts[n].index = -1;
        n++;
        s += len;
    }
    return n;
}

/* "a.b[2].c" -> "a.b.2.c" (also applied to patterns, so both spellings select; a bracket
 * that is not "[digits]" stays, as a glob character class). */
static void dotted(const char *path, char *out, size_t n)
{
    size_t j = 0;
    for (const char *s = path; *s && j + 2 < n; s++) {
        size_t digits = *s == '[' ? strspn(s + 1, "0123456789") : 0;
        if (digits && s[1 + digits] == ']') {
            if (j && out[j - 1] != '.')
                out[j++] = '.';
            for (size_t k = 0; k < digits && j + 2 < n; k++)
                out[j++] = s[1 + k];
            s += digits + 1;
        } else {
            out[j++] = *s;
        }
    }
    out[j] = 0;
}

void fs_leaf_dotted(const fs_leaf *l, char *out, size_t n) { dotted(l->path, out, n); }

/* Edit distance, for suggesting names near a pattern that matched nothing. */
static int edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 200 || lb > 200)
        return 1000;
    int row[201];
    for (size_t j = 0; j <= lb; j++)
        row[j] = (int)j;
    for (size_t i = 1; i <= la; i++) {
        int diag = row[0];
        row[0] = (int)i;
        for (size_t j = 1; j <= lb; j++) {
            int up = row[j];
            int best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best)
                best = up + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

/* Distance of a pattern (wildcards dropped) to a dotted name or any of its dotted suffixes. */
static int name_distance(const char *pattern, const char *name)
{
    char bare[160];
    size_t j = 0;
    for (const char *s = pattern; *s && j + 1 < sizeof bare; s++)
        if (*s != '*' && *s != '?')
            bare[j++] = *s;
    bare[j] = 0;
    const char *b = bare[0] == '.' ? bare + 1 : bare;
    int best = edit_distance(b, name);
    for (const char *s = strchr(name, '.'); s; s = strchr(s + 1, '.')) {
        int d = edit_distance(b, s + 1);
        if (d < best)
            best = d;
    }
    return best;
}

static int no_match_error(const fs_acts *a, const char *pattern, fs_error *err)
{
    enum { SHOW = 5 };
    int best[SHOW], dist[SHOW], n = 0;
    for (int i = 0; i < a->count; i++) {
        if (a->leaves[i].hidden)
            continue;
        char name[160];
        fs_leaf_dotted(&a->leaves[i], name, sizeof name);
        int d = name_distance(pattern, name), at = n < SHOW ? n++ : SHOW;
        while (at > 0 && dist[at - 1] > d) {
            if (at < SHOW)
                best[at] = best[at - 1], dist[at] = dist[at - 1];
            at--;
        }
        if (at < SHOW)
            best[at] = i, dist[at] = d;
    }
    char list[800] = "";
    for (int k = 0; k < n; k++) {
        char name[160];
        fs_leaf_dotted(&a->leaves[best[k]], name, sizeof name);
        snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", k ? ", " : "", name);
    }
    return fs_fail(err, "--names: pattern '%s' matches no leaf of the cache; nearest names: %s "
                        "(names are dotted paths, '*' matches any characters including dots)",
                   pattern, list);
}

int fs_leaf_select(const fs_acts *a, const char *patterns, bool *sel, fs_error *err)
{
    int selected = 0;
    bool all = !patterns || !*patterns;
    for (int i = 0; i < a->count; i++) {
        sel[i] = all && !a->leaves[i].hidden;
        selected += sel[i];
    }
    if (all)
        return selected;
    const char *s = patterns;
    while (*s) {
        size_t len = strcspn(s, ",");
        char raw[160], pat[160];
        if (len == 0 || len >= sizeof raw)
            return fs_fail(err, "--names: expected comma-separated glob patterns of 1..%zu characters, got '%s'",
                           sizeof raw - 1, patterns);
        snprintf(raw, sizeof raw, "%.*s", (int)len, s);
        dotted(raw, pat, sizeof pat);
        int hits = 0;
        for (int i = 0; i < a->count; i++) {
            char name[160];
            if (a->leaves[i].hidden)
                continue;
            fs_leaf_dotted(&a->leaves[i], name, sizeof name);
            if (fnmatch(pat, name, 0) == 0) {
                hits++;
                selected += !sel[i];
                sel[i] = true;
            }
        }
        if (!hits)
            return no_match_error(a, raw, err);
        s += len;
        if (*s == ',')
            s++;
    }
    return selected;
}
