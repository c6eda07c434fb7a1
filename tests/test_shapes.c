/* Shape regression (docs/cache.md): the documented model's cache tree for 3 pairs
 * equals the seed document's listing byte for byte (its comments removed), and for
 * other configs every leaf has the shape docs/cache.md gives; the forward's and the
 * backward's per-layer views name the table's leaves. */
#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fewshot/cache.h"
#include "model/leaves.h"

/* The seed document's "Example cache" listing (documented model, 3 pairs), as data. */
static const char seed_listing[] =
    "{\n"
    "\t\"embedding\": [5, 64], \n"
    "\t\"example_embedding\": [3, 64], \n"
    "\t\"examples\": [3, 512], \n"
    "\t\"label_embedding\": [3, 64], \n"
    "\t\"labels\": [3], \n"
    "\t\"onehot_labels\": [3, 5], \n"
    "\t\"out\": [3, 5], \n"
    "\t\"pos_embedding\": null, \n"
    "\t\"tok_embedding\": [5, 64], \n"
    "\t\"transformer_output\": {\n"
    "\t\t\"block_outputs\": [\n"
    "\t\t\t{\n"
    "\t\t\t\t\"attn_output\": {\n"
    "\t\t\t\t\t\"attn_post_drop\": [1, 8, 5, 5], \n"
    "\t\t\t\t\t\"attn_pre_softmax\": [1, 8, 5, 5], \n"
    "\t\t\t\t\t\"attn_scores\": [1, 8, 5, 5], \n"
    "\t\t\t\t\t\"k\": [1, 8, 5, 8], \n"
    "\t\t\t\t\t\"out\": [5, 64], \n"
    "\t\t\t\t\t\"pre_rope_k\": [1, 8, 5, 8], \n"
    "\t\t\t\t\t\"pre_rope_q\": [1, 8, 5, 8], \n"
    "\t\t\t\t\t\"q\": [1, 8, 5, 8], \n"
    "\t\t\t\t\t\"qkv\": [3, 8, 5, 8], \n"
    "\t\t\t\t\t\"v\": [1, 8, 5, 8], \n"
    "\t\t\t\t\t\"values_post_proj\": [5, 64], \n"
    "\t\t\t\t\t\"values_pre_proj\": [5, 64], \n"
    "\t\t\t\t\t\"x\": [5, 64]\n"
    "\t\t\t\t}, \n"
    "\t\t\t\t\"mlp\": [5, 64], \n"
    "\t\t\t\t\"norm_inp\": [5, 64], \n"
    "\t\t\t\t\"norm_residual_post_attn\": [5, 64], \n"
    "\t\t\t\t\"out\": [5, 64], \n"
    "\t\t\t\t\"residual_post_attn\": [5, 64], \n"
    "\t\t\t\t\"x\": [5, 64]\n"
    "\t\t\t}, \n"
    "\t\t\t{\n"
    "\t\t\t\t\"attn_output\": {\n"
    "\t\t\t\t\t\"attn_post_drop\": [1, 8, 5, 5], \n"
    "\t\t\t\t\t\"attn_pre_softmax\": [1, 8, 5, 5], \n"
    "\t\t\t\t\t\"attn_scores\": [1, 8, 5, 5], \n"
    "\t\t\t\t\t\"k\": [1, 8, 5, 8], \n"
    "\t\t\t\t\t\"out\": [5, 64], \n"
    "\t\t\t\t\t\"pre_rope_k\": [1, 8, 5, 8], \n"
    "\t\t\t\t\t\"pre_rope_q\": [1, 8, 5, 8], \n"
    "\t\t\t\t\t\"q\": [1, 8, 5, 8], \n"
    "\t\t\t\t\t\"qkv\": [3, 8, 5, 8], \n"
    "\t\t\t\t\t\"v\": [1, 8, 5, 8], \n"
    "\t\t\t\t\t\"values_post_proj\": [5, 64], \n"
    "\t\t\t\t\t\"values_pre_proj\": [5, 64], \n"
    "\t\t\t\t\t\"x\": [5, 64]\n"
    "\t\t\t\t}, \n"
    "\t\t\t\t\"mlp\": [5, 64], \n"
    "\t\t\t\t\"norm_inp\": [5, 64], \n"
    "\t\t\t\t\"norm_residual_post_attn\": [5, 64], \n"
    "\t\t\t\t\"out\": [5, 64], \n"
    "\t\t\t\t\"residual_post_attn\": [5, 64], \n"
    "\t\t\t\t\"x\": [5, 64]\n"
    "\t\t\t}\n"
    "\t\t], \n"
    "\t\t\"out\": [5, 64], \n"
    "\t\t\"pre_unembed\": [5, 64], \n"
    "\t\t\"x\": [5, 64]\n"
    "\t}, \n"
    "\t\"unembedding\": [5, 5]\n"
    "}\n";

static char *shapes_text(const fs_model_config *cfg, int P, int B, bool batched)
{
    fs_acts a;
    fs_error err = {{0}};
    cr_assert_eq(fs_acts_create(&a, cfg, P, B, &err), 0, "%s", err.msg);
    cJSON *tree = fs_cache_shapes_json(&a, B, batched, NULL);
    char *text = fs_json_print_sorted(tree);
    cJSON_Delete(tree);
    fs_acts_free(&a);
    return text;
}

Test(shapes, documented_model_matches_seed_listing)
{
    fs_model_config cfg;
    fs_model_config_default(&cfg);
    char *text = shapes_text(&cfg, 3, 1, false);
    cr_assert_str_eq(text, seed_listing);
    free(text);
}

/* Is `key` one of the space-separated words of `list`? */
static bool one_of(const char *list, const char *key)
{
    size_t n = strlen(key);
    for (const char *p = list; (p = strstr(p, key)); p += n)
        if ((p == list || p[-1] == ' ') && (p[n] == ' ' || p[n] == 0))
            return true;
    return false;
}

/* Expected per-sequence shape of a leaf, written from docs/model.md, docs/cache.md. */
static int expected_shape(const char *key, const char *scope, const fs_model_config *c, int P, int *s)
{
    int N = 2 * P - 1, d = c->d_model, H = c->num_heads, hd = d / H, C = c->num_classes;
    if (!strcmp(scope, "top")) {
        if (!strcmp(key, "examples")) return s[0] = P, s[1] = c->input_dim, 2;
        if (!strcmp(key, "labels")) return s[0] = P, 1;
        if (!strcmp(key, "example_embedding") || !strcmp(key, "label_embedding")) return s[0] = P, s[1] = d, 2;
        if (!strcmp(key, "onehot_labels") || !strcmp(key, "out")) return s[0] = P, s[1] = C, 2;
        if (!strcmp(key, "unembedding")) return s[0] = N, s[1] = C, 2;
        if (!strcmp(key, "tok_embedding") || !strcmp(key, "embedding") || !strcmp(key, "pos_embedding"))
            return s[0] = N, s[1] = d, 2;
        return -1;
    }
    if (!strcmp(scope, "attn")) {
        if (!strcmp(key, "qkv")) return s[0] = 3, s[1] = H, s[2] = N, s[3] = hd, 4;
        if (one_of("pre_rope_q pre_rope_k v q k", key)) return s[0] = 1, s[1] = H, s[2] = N, s[3] = hd, 4;
        if (one_of("attn_pre_softmax attn_scores attn_post_drop", key)) return s[0] = 1, s[1] = H, s[2] = N, s[3] = N, 4;
        if (one_of("values_pre_proj values_post_proj out x", key)) return s[0] = N, s[1] = d, 2;
        return -1;
    }
    if (one_of("x norm_inp residual_post_attn norm_residual_post_attn mlp out pre_unembed", key))
        return s[0] = N, s[1] = d, 2;
    return -1;
}

static const char *const top_keys[] = {"examples", "labels", "example_embedding", "onehot_labels", "label_embedding",
                                       "tok_embedding", "pos_embedding", "embedding", "unembedding", "out", NULL};
static const char *const block_keys[] = {"x", "norm_inp", "residual_post_attn", "norm_residual_post_attn", "mlp",
                                         "out", NULL};
static const char *const attn_keys[] = {"x", "qkv", "pre_rope_q", "pre_rope_k", "v", "q", "k", "attn_pre_softmax",
                                        "attn_scores", "attn_post_drop", "values_pre_proj", "values_post_proj", "out",
                                        NULL};
static const char *const transformer_keys[] = {"x", "pre_unembed", "out", NULL};

static void check_leaf(const cJSON *obj, const char *key, const char *scope, const fs_model_config *c, int P, int B,
                       bool batched)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    cr_assert_not_null(v, "missing leaf %s (%s)", key, scope);
    if (!strcmp(key, "pos_embedding") && c->pos_embedding == FS_POS_ROPE) {
        cr_assert(cJSON_IsNull(v), "pos_embedding must be null under RoPE");
        return;
    }
    int s[5], want[5], nd = 0;
    if (batched)
        want[nd++] = B;
    int k = expected_shape(key, scope, c, P, s);
    cr_assert_gt(k, 0, "no expected shape for %s", key);
    for (int i = 0; i < k; i++)
        want[nd++] = s[i];
    cr_assert_eq(cJSON_GetArraySize(v), nd, "%s.%s: rank", scope, key);
    for (int i = 0; i < nd; i++)
        cr_assert_eq(cJSON_GetArrayItem(v, i)->valueint, want[i], "%s.%s: dim %d is %d, want %d", scope, key, i,
                     cJSON_GetArrayItem(v, i)->valueint, want[i]);
}

static int count_keys(const cJSON *o) { return cJSON_GetArraySize(o); }

static void check_tree(const fs_model_config *c, int P, int B, bool batched)
{
    fs_acts a;
    fs_error err = {{0}};
    cr_assert_eq(fs_acts_create(&a, c, P, B, &err), 0, "%s", err.msg);
    cJSON *t = fs_cache_shapes_json(&a, B, batched, NULL);
    for (int i = 0; top_keys[i]; i++)
        check_leaf(t, top_keys[i], "top", c, P, B, batched);
    const cJSON *tr = cJSON_GetObjectItem(t, "transformer_output");
    cr_assert_eq(count_keys(t), 11, "top level holds 10 leaves and transformer_output");
    for (int i = 0; transformer_keys[i]; i++)
        check_leaf(tr, transformer_keys[i], "transformer", c, P, B, batched);
    const cJSON *blocks = cJSON_GetObjectItem(tr, "block_outputs");
    cr_assert_eq(count_keys(tr), 4);
    cr_assert_eq(cJSON_GetArraySize(blocks), c->depth);
    for (const cJSON *b = blocks->child; b; b = b->next) {
        cr_assert_eq(count_keys(b), 7);
        for (int i = 0; block_keys[i]; i++)
            check_leaf(b, block_keys[i], "block", c, P, B, batched);
        const cJSON *at = cJSON_GetObjectItem(b, "attn_output");
        cr_assert_eq(count_keys(at), 13);
        for (int i = 0; attn_keys[i]; i++)
            check_leaf(at, attn_keys[i], "attn", c, P, B, batched);
    }
    cJSON_Delete(t);
    fs_acts_free(&a);
}

Test(shapes, derived_for_other_pairs_depths_widths)
{
    static const int pairs[] = {1, 2, 3, 7, 16};
    static const int depths[] = {1, 2, 4};
    static const int widths[][2] = {{64, 8}, {32, 4}, {48, 3}, {16, 1}};
    for (int ip = 0; ip < 5; ip++)
        for (int id = 0; id < 3; id++)
            for (int iw = 0; iw < 4; iw++)
                for (int pos = 0; pos < 3; pos++) {
                    fs_model_config c;
                    fs_model_config_default(&c);
                    c.depth = depths[id];
                    c.d_model = widths[iw][0];
                    c.num_heads = widths[iw][1];
                    c.pos_embedding = (fs_pos_kind)pos;
                    c.mlp_ratio = iw % 2 ? 0 : 4;
                    c.num_classes = 3 + iw;
                    c.input_dim = 10 + ip;
                    if (pos == FS_POS_ROPE && (c.d_model / c.num_heads) % 2)
                        continue;
                    check_tree(&c, pairs[ip], 1, false);
                    check_tree(&c, pairs[ip], 4, true);
                }
}

Test(shapes, batched_leaves_gain_leading_B)
{
    fs_model_config cfg;
    fs_model_config_default(&cfg);
    char *text = shapes_text(&cfg, 3, 8, true);
    cr_assert_not_null(strstr(text, "\"attn_scores\": [8, 1, 8, 5, 5]"), "%s", text);
    cr_assert_not_null(strstr(text, "\"examples\": [8, 3, 512]"));
    free(text);
}

/* The views' fields are declared in the table's order, so walked as arrays they must be
 * the table's leaves one after the other: pointer at sequence b0, stride, id. */
static void check_view(const fs_acts *a, const fs_leaf_at *v, int count, int first, int b0)
{
    for (int i = 0; i < count; i++) {
        int id = first + i;
        cr_assert_eq(v[i].id, id, "view field %d names leaf %d, expected %d (%s)", i, v[i].id, id, a->leaves[id].path);
        cr_assert_eq(v[i].p, fs_leaf_ptr(a, id, b0), "%s", a->leaves[id].path);
        cr_assert_eq(v[i].numel, a->leaves[id].numel, "%s", a->leaves[id].path);
        cr_assert_eq(fs_leaf_seq(&v[i], 2), fs_leaf_ptr(a, id, b0 + 2), "%s", a->leaves[id].path);
    }
}

Test(shapes, layer_views_name_the_table_leaves)
{
    cr_assert_eq(sizeof(fs_embed_acts), L_TOP_BEFORE_BLOCKS_COUNT * sizeof(fs_leaf_at));
    cr_assert_eq(sizeof(fs_block_acts), B_COUNT * sizeof(fs_leaf_at));
    cr_assert_eq(sizeof(fs_head_acts), L_TOP_AFTER_BLOCKS_COUNT * sizeof(fs_leaf_at));
    for (int pos = 0; pos < 3; pos++) {
        fs_model_config c;
        fs_model_config_default(&c);
        c.depth = 3;
        c.pos_embedding = (fs_pos_kind)pos;
        fs_acts a;
        fs_error err;
        cr_assert_eq(fs_acts_create(&a, &c, 4, 5, &err), 0, "%s", err.msg);
        fs_embed_acts e;
        fs_embed_acts_at(&e, &a, 1);
        check_view(&a, (const fs_leaf_at *)&e, L_TOP_BEFORE_BLOCKS_COUNT, 0, 1);
        for (int layer = 0; layer < c.depth; layer++) {
            fs_block_acts k;
            fs_block_acts_at(&k, &a, layer, 1);
            check_view(&a, (const fs_leaf_at *)&k, B_COUNT, fs_block_leaf_id(layer, 0), 1);
        }
        fs_head_acts h;
        fs_head_acts_at(&h, &a, 1);
        check_view(&a, (const fs_leaf_at *)&h, L_TOP_AFTER_BLOCKS_COUNT, fs_top_after(&c, 0), 1);
        fs_acts_free(&a);
    }
}
