/* JSON views of the cache tree: the shape dump, printed with sorted keys. It walks the
 * leaf table (docs/cache.md); values are streamed by fewshot/cachefile.h. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fewshot/cache.h"
#include "model/path.h"

/* Walk/create the container for a leaf path and attach `item` as its last component. */
static void tree_insert(cJSON *root, const char *path, cJSON *item)
{
    fs_path_part parts[8];
    int n = fs_path_split(path, parts, 8);
    cJSON *node = root;
    for (int i = 0; i < n - 1; i++) {
        bool next_is_index = parts[i + 1].key[0] == 0;
        if (parts[i].key[0]) {
            cJSON *child = cJSON_GetObjectItemCaseSensitive(node, parts[i].key);
            if (!child) {
                child = next_is_index ? cJSON_CreateArray() : cJSON_CreateObject();
                cJSON_AddItemToObject(node, parts[i].key, child);
            }
            node = child;
        } else {
            while (cJSON_GetArraySize(node) <= parts[i].index)
                cJSON_AddItemToArray(node, cJSON_CreateObject());
            node = cJSON_GetArrayItem(node, parts[i].index);
        }
    }
    cJSON_AddItemToObject(node, parts[n - 1].key, item);
}

/* Full shape of leaf l as dumped: [nseq] + per-sequence shape when batched. */
static int dump_shape(const fs_leaf *l, int nseq, bool batched, int *shape)
{
    int nd = 0;
    if (batched)
        shape[nd++] = nseq;
    for (int i = 0; i < l->ndim; i++)
        shape[nd++] = l->shape[i];
    return nd;
}

/* One walk over the leaf table builds both views: `leaf_json` makes a leaf's value. */
static cJSON *cache_tree(const fs_acts *a, int nseq, bool batched, const bool *sel,
                         cJSON *(*leaf_json)(const fs_acts *a, int leaf, const int *shape, int nd))
{
    cJSON *root = cJSON_CreateObject();
    for (int i = 0; i < a->count; i++) {
        const fs_leaf *l = &a->leaves[i];
        if (l->hidden || (sel && !sel[i]))
            continue;
        int shape[5];
        int nd = dump_shape(l, nseq, batched, shape);
        tree_insert(root, l->path, l->is_null ? cJSON_CreateNull() : leaf_json(a, i, shape, nd));
    }
    return root;
}

static cJSON *leaf_shape(const fs_acts *a, int leaf, const int *shape, int nd)
{
    (void)a, (void)leaf;
    return cJSON_CreateIntArray(shape, nd);
}

void *fs_cache_shapes_json(const fs_acts *a, int nseq, bool batched, const bool *sel)
{
    return cache_tree(a, nseq, batched, sel, leaf_shape);
}

/* --- printing with sorted keys (the README's shape listing layout) --- */

typedef struct {
    char *buf;
    size_t len, cap;
    bool failed; /* out of memory: the text is incomplete */
} strbuf;

static void sb_put(strbuf *s, const char *text)
{
    size_t n = strlen(text);
    if (s->failed)
        return;
    if (s->len + n + 1 > s->cap) {
        size_t cap = (s->len + n + 1) * 2;
        char *grown = realloc(s->buf, cap);
        if (!grown) {
            s->failed = true;
            return;
        }
        s->buf = grown;
        s->cap = cap;
    }
    memcpy(s->buf + s->len, text, n + 1);
    s->len += n;
}

static void sb_indent(strbuf *s, int depth)
{
    for (int i = 0; i < depth; i++)
        sb_put(s, "\t");
}

static int cmp_keys(const void *x, const void *y)
{
    return strcmp((*(cJSON *const *)x)->string, (*(cJSON *const *)y)->string);
}

static bool is_flat_array(const cJSON *v)
{
    for (const cJSON *c = v->child; c; c = c->next)
        if (cJSON_IsObject(c) || cJSON_IsArray(c))
            return false;
    return true;
}

static void print_sorted(strbuf *s, const cJSON *v, int depth)
{
    if (cJSON_IsObject(v)) {
        int n = cJSON_GetArraySize(v);
        if (n == 0) {
            sb_put(s, "{}");
            return;
        }
        cJSON **kids = malloc(sizeof *kids * (size_t)n);
        if (!kids) {
            s->failed = true;
            return;
        }
        int i = 0;
        for (cJSON *c = v->child; c; c = c->next)
            kids[i++] = c;
        qsort(kids, (size_t)n, sizeof *kids, cmp_keys);
        sb_put(s, "{\n");
        for (i = 0; i < n; i++) {
            sb_indent(s, depth + 1);
            sb_put(s, "\"");
            sb_put(s, kids[i]->string);
            sb_put(s, "\": ");
            print_sorted(s, kids[i], depth + 1);
            sb_put(s, i + 1 < n ? ", \n" : "\n"); /* the seed listing separates items with ", " */
        }
        sb_indent(s, depth);
        sb_put(s, "}");
        free(kids);
    } else if (cJSON_IsArray(v) && !is_flat_array(v)) {
        sb_put(s, "[\n");
        for (const cJSON *c = v->child; c; c = c->next) {
            sb_indent(s, depth + 1);
            print_sorted(s, c, depth + 1);
            sb_put(s, c->next ? ", \n" : "\n");
        }
        sb_indent(s, depth);
        sb_put(s, "]");
    } else if (cJSON_IsArray(v)) {
        sb_put(s, "[");
        for (const cJSON *c = v->child; c; c = c->next) {
            char *t = cJSON_PrintUnformatted(c);
            sb_put(s, t);
            free(t);
            if (c->next)
                sb_put(s, ", ");
        }
        sb_put(s, "]");
    } else {
        char *t = cJSON_PrintUnformatted(v);
        sb_put(s, t);
        free(t);
    }
}

char *fs_json_print_sorted(const void *json)
{
    strbuf s = {0};
    print_sorted(&s, json, 0);
    sb_put(&s, "\n");
    if (s.failed) {
        free(s.buf);
        return NULL;
    }
    return s.buf;
}
