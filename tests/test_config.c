/* Config loader (src/config.c, docs/model.md, docs/formats.md): defaults, every documented key
 * and the reference's aliases, rejection of unknown keys/sections and wrong types with
 * messages naming the file and the key, mlp_ratio null, JSON round trip, --set. */
#include <criterion/criterion.h>

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fewshot/config.h"
#include "helpers.h"

static char g_dir[128];

static void setup(void) { th_tmpdir(g_dir, sizeof g_dir, "config"); }
static void teardown(void) { th_rmtree(g_dir); }

TestSuite(config, .init = setup, .fini = teardown);

/* Load `text` as a config file over the defaults; returns the loader's result. */
static int load_text(const char *text, fs_run_config *c, fs_error *err, const char **path_out)
{
    const char *path = th_path(g_dir, "c.json");
    th_write_text(path, text);
    if (path_out)
        *path_out = path;
    fs_run_config_default(c);
    memset(err, 0, sizeof *err);
    return fs_run_config_load(path, c, err);
}

/* The config must be rejected and the message must hold every given fragment. */
static void expect_reject(const char *text, const char *const *fragments)
{
    fs_run_config c;
    fs_error err;
    const char *path;
    int rc = load_text(text, &c, &err, &path);
    cr_assert_eq(rc, -1, "accepted a bad config: %s", text);
    cr_assert(strstr(err.msg, path), "message does not name the file %s: %s", path, err.msg);
    for (int i = 0; fragments[i]; i++)
        cr_assert(strstr(err.msg, fragments[i]), "message lacks \"%s\": %s (config %s)", fragments[i], err.msg, text);
    fs_run_config_free(&c);
}

#define REJECT(text, ...) expect_reject(text, (const char *const[]){__VA_ARGS__, NULL})

/* ---------------------------------------------------------------- defaults */

Test(config, defaults_are_the_documented_model)
{
    fs_model_config m;
    fs_model_config_default(&m);
    cr_assert_eq(m.input_dim, 512);
    cr_assert_eq(m.num_classes, 5);
    cr_assert_eq(m.d_model, 64);
    cr_assert_eq(m.num_heads, 8);
    cr_assert_eq(m.depth, 2);
    cr_assert_eq(m.mlp_ratio, 4.0);
    cr_assert_eq(fs_mlp_hidden(&m), 256);
    cr_assert_eq(m.pos_embedding, FS_POS_ROPE);
    cr_assert_eq(m.rope_base, 10000.0);
    cr_assert_eq(m.init_rescale, 1.0);
    cr_assert(!m.qkv_bias);
    cr_assert(!m.no_norm);
    fs_error err = {{0}};
    cr_assert_eq(fs_model_config_validate(&m, "defaults", &err), 0, "%s", err.msg);

    /* the run defaults carry the same model, and golden/doc's config changes nothing in it */
    fs_run_config c;
    fs_run_config_default(&c);
    cr_assert(fs_model_config_equal(&c.model, &m));
    cr_assert_eq(fs_run_config_load(TH_GOLDEN "/doc/config.json", &c, &err), 0, "%s", err.msg);
    cr_assert(fs_model_config_equal(&c.model, &m), "golden/doc/config.json differs from the defaults");
    cr_assert(c.has_model && !c.has_train && !c.has_data && !c.has_eval);
    cr_assert_eq(fs_run_config_validate(&c, "defaults", &err), 0, "%s", err.msg);
    fs_run_config_free(&c);
}

Test(config, run_defaults_are_the_reference_main_run)
{
    /* reference/ih_main_run.md settings that are not per-run choices */
    fs_run_config c;
    fs_run_config_default(&c);
    cr_assert_eq(c.train.train_bs, 32);
    cr_assert_eq(c.train.train_iters, 1000000);
    cr_assert_eq(c.train.train_context_len, 2);
    cr_assert_eq(c.train.optimizer, FS_OPT_ADAM);
    cr_assert_eq(c.train.lr, 1e-5);
    cr_assert_eq(c.train.warmup_steps, 4000);
    cr_assert_eq(c.train.decay_steps, 1000000);
    cr_assert_neq(c.train.train_seed, c.eval.eval_seed);
    cr_assert_eq(c.eval.eval_iters, 1000);
    cr_assert_eq(c.data.fs_relabel, 5);
    cr_assert_eq(c.data.class_split[0], 50);
    cr_assert_eq(c.data.class_split[1], 1473);
    cr_assert_eq(c.data.class_split[2], 100);
    cr_assert_str_eq(c.data.path, "resnet18/224/feat");
    cr_assert_eq(c.eval.num_evaluators, 4);
    cr_assert_str_eq(c.eval.evaluators[0].name, "fsl_train");
    cr_assert_str_eq(c.eval.evaluators[3].name, "fsl_test_class");
    fs_run_config_free(&c);
}

/* ---------------------------------------------------------------- every key */

/* Every config key (docs/formats.md), with the reference's aliases where it has them. */
static const char *all_keys_aliases =
    "{\"model\": {\"input_dim\": 12, \"model_output_classes\": 7, \"d_model\": 24, \"num_heads\": 3, \"depth\": 3,\n"
    "            \"mlp_ratio\": 2.5, \"pos_embedding\": \"sinusoidal\", \"sin_time\": 500.0, \"init_seed\": 11,\n"
    "            \"init_rescale\": 0.5, \"qkv_bias\": true, \"no_norm\": true},\n"
    " \"data\": {\"file\": \"feats.h5\", \"data_path_in_file\": \"a/b/c\", \"type\": \"onehot\",\n"
    "          \"class_split\": [10, 20, 30], \"exemplar_split\": [2, 3, 4], \"fs_relabel\": 4,\n"
    "          \"fs_relabel_split\": [4, 1, 1], \"fs_relabel_split_seed\": 21, \"noise_scale_train\": 0.25,\n"
    "          \"zipf_alpha\": 1.5, \"match_query_and_distractors\": true, \"assign_query_label_random\": true},\n"
    " \"train\": {\"train_iters\": 64000, \"train_bs\": 16, \"train_context_len\": 4, \"lr\": 0.0003,\n"
    "           \"optimizer\": \"warmup_decay\", \"weight_decay\": 0.01, \"warmup_steps\": 100, \"decay_steps\": 900,\n"
    "           \"train_seed\": 7, \"samplers\": [{\"mixing_coeff\": 0.75, \"burstiness\": 2, \"distract\": false,\n"
    "             \"no_support\": true, \"unique_rest\": false},\n"
    "             {\"mixing_coeff\": 0.25, \"burstiness\": 0, \"distract\": true, \"no_support\": false,\n"
    "             \"unique_rest\": true}],\n"
    "           \"eval_every\": 3200, \"ckpt_every\": 6400, \"log_every\": 320, \"threads\": 2},\n"
    " \"eval\": {\"eval_seed\": 9, \"eval_iters\": 50, \"eval_bs\": 25,\n"
    "          \"evaluators\": [{\"name\": \"a\", \"classes\": \"val\", \"exemplars\": \"test\", \"burstiness\": 2,\n"
    "             \"fs_relabel_scheme\": \"val\", \"context_len\": 3, \"distract\": false, \"no_support\": true,\n"
    "             \"unique_rest\": true, \"noise_scale\": 0.5, \"assign_query_label_random\": true},\n"
    "             {\"name\": \"b\", \"classes\": \"test\", \"exemplars\": \"all\", \"fs_relabel_scheme\": \"all\"}]}}\n";

static void check_all_keys(const fs_run_config *c)
{
    const fs_model_config *m = &c->model;
    cr_assert_eq(m->input_dim, 12);
    cr_assert_eq(m->num_classes, 7);
    cr_assert_eq(m->d_model, 24);
    cr_assert_eq(m->num_heads, 3);
    cr_assert_eq(m->depth, 3);
    cr_assert_eq(m->mlp_ratio, 2.5);
    cr_assert_eq(fs_mlp_hidden(m), 60);
    cr_assert_eq(m->pos_embedding, FS_POS_SINUSOIDAL);
    cr_assert_eq(m->rope_base, 500.0);
    cr_assert_eq(m->init_seed, 11);
    cr_assert_eq(m->init_rescale, 0.5);
    cr_assert(m->qkv_bias && m->no_norm);

    const fs_data_config *d = &c->data;
    cr_assert_str_eq(d->file, "feats.h5");
    cr_assert_str_eq(d->path, "a/b/c");
    cr_assert_eq(d->type, FS_DATA_ONEHOT);
    cr_assert(d->class_split[0] == 10 && d->class_split[1] == 20 && d->class_split[2] == 30);
    cr_assert(d->exemplar_split[0] == 2 && d->exemplar_split[1] == 3 && d->exemplar_split[2] == 4);
    cr_assert_eq(d->fs_relabel, 4);
    cr_assert(d->fs_relabel_split[0] == 4 && d->fs_relabel_split[1] == 1 && d->fs_relabel_split[2] == 1);
    cr_assert_eq(d->fs_relabel_split_seed, 21);
    cr_assert_eq(d->noise_scale, 0.25);
    cr_assert_eq(d->zipf_alpha, 1.5);
    cr_assert(d->match_query_and_distractors && d->assign_query_label_random);

    const fs_train_config *t = &c->train;
    cr_assert_eq(t->train_iters, 64000);
    cr_assert_eq(t->train_bs, 16);
    cr_assert_eq(t->train_context_len, 4);
    cr_assert_eq(t->lr, 0.0003);
    cr_assert_eq(t->optimizer, FS_OPT_WARMUP_DECAY);
    cr_assert_eq(t->weight_decay, 0.01);
    cr_assert_eq(t->warmup_steps, 100);
    cr_assert_eq(t->decay_steps, 900);
    cr_assert_eq(t->train_seed, 7);
    cr_assert_eq(t->num_samplers, 2);
    cr_assert_eq(t->samplers[0].mixing_coeff, 0.75);
    cr_assert_eq(t->samplers[0].burstiness, 2);
    cr_assert(!t->samplers[0].distract && t->samplers[0].no_support && !t->samplers[0].unique_rest);
    cr_assert_eq(t->samplers[1].mixing_coeff, 0.25);
    cr_assert_eq(t->samplers[1].burstiness, 0);
    cr_assert(t->samplers[1].distract && !t->samplers[1].no_support && t->samplers[1].unique_rest);
    cr_assert_eq(t->eval_every, 3200);
    cr_assert_eq(t->ckpt_every, 6400);
    cr_assert_eq(t->log_every, 320);
    cr_assert_eq(t->threads, 2);

    const fs_eval_config *e = &c->eval;
    cr_assert_eq(e->eval_seed, 9);
    cr_assert_eq(e->eval_iters, 50);
    cr_assert_eq(e->eval_bs, 25);
    cr_assert_eq(e->num_evaluators, 2);
    const fs_evaluator_config *a = &e->evaluators[0], *b = &e->evaluators[1];
    cr_assert_str_eq(a->name, "a");
    cr_assert_eq(a->classes, FS_SPLIT_VAL);
    cr_assert_eq(a->exemplars, FS_SPLIT_TEST);
    cr_assert_eq(a->burstiness, 2);
    cr_assert_eq(a->fs_relabel_scheme, FS_SPLIT_VAL);
    cr_assert_eq(a->context_len, 3);
    cr_assert(!a->distract && a->no_support && a->unique_rest && a->assign_query_label_random);
    cr_assert_eq(a->noise_scale, 0.5);
    /* keys an evaluator leaves out take the evaluator defaults, not the previous entry's */
    cr_assert_str_eq(b->name, "b");
    cr_assert_eq(b->classes, FS_SPLIT_TEST);
    cr_assert_eq(b->exemplars, FS_SPLIT_ALL);
    cr_assert_eq(b->fs_relabel_scheme, FS_SPLIT_ALL);
    cr_assert_eq(b->burstiness, 1);
    cr_assert(b->distract && !b->no_support && !b->unique_rest && !b->assign_query_label_random);
    cr_assert_eq(b->context_len, 0);
    cr_assert(c->has_model && c->has_data && c->has_train && c->has_eval);
}

Test(config, every_documented_key_with_reference_aliases)
{
    fs_run_config c;
    fs_error err;
    cr_assert_eq(load_text(all_keys_aliases, &c, &err, NULL), 0, "%s", err.msg);
    check_all_keys(&c);
    fs_run_config_free(&c);
}

/* A copy of `text` with the first occurrence of `from` replaced by `to`. */
static char *replace(const char *text, const char *from, const char *to)
{
    const char *at = strstr(text, from);
    cr_assert_not_null(at, "%s not found", from);
    size_t n = strlen(text) - strlen(from) + strlen(to) + 1;
    char *out = malloc(n);
    snprintf(out, n, "%.*s%s%s", (int)(at - text), text, to, at + strlen(from));
    return out;
}

Test(config, every_documented_key_with_canonical_names)
{
    /* the same file with our names instead of the reference's aliases */
    static const char *const swaps[][2] = {{"\"model_output_classes\"", "\"num_classes\""},
                                           {"\"sin_time\"", "\"rope_base\""},
                                           {"\"data_path_in_file\"", "\"path\""},
                                           {"\"noise_scale_train\"", "\"noise_scale\""}};
    char *text = strdup(all_keys_aliases);
    for (size_t i = 0; i < sizeof swaps / sizeof *swaps; i++) {
        char *next = replace(text, swaps[i][0], swaps[i][1]);
        free(text);
        text = next;
    }
    fs_run_config c;
    fs_error err;
    int rc = load_text(text, &c, &err, NULL);
    free(text);
    cr_assert_eq(rc, 0, "%s", err.msg);
    check_all_keys(&c);
    fs_run_config_free(&c);
}

Test(config, other_reference_aliases)
{
    fs_run_config c;
    fs_error err;
    cr_assert_eq(load_text("{\"model\": {\"pos_embedding_type\": \"ape\"},"
                           " \"data\": {\"data_file\": \"x.h5\", \"data_type\": \"file\"}}",
                           &c, &err, NULL),
                 0, "%s", err.msg);
    cr_assert_eq(c.model.pos_embedding, FS_POS_APE);
    cr_assert_str_eq(c.data.file, "x.h5");
    cr_assert_eq(c.data.type, FS_DATA_FILE);
    fs_run_config_free(&c);
}

Test(config, every_enum_value)
{
    static const char *const pos[] = {"rope", "ape", "sinusoidal"};
    static const char *const opt[] = {"adam", "sgd", "warmup_decay", "cosine"};
    static const char *const split[] = {"train", "val", "test", "all"};
    char text[512];
    fs_run_config c;
    fs_error err;
    for (int i = 0; i < 3; i++) {
        snprintf(text, sizeof text, "{\"model\": {\"pos_embedding\": \"%s\"}}", pos[i]);
        cr_assert_eq(load_text(text, &c, &err, NULL), 0, "%s", err.msg);
        cr_assert_eq((int)c.model.pos_embedding, i);
        fs_run_config_free(&c);
    }
    for (int i = 0; i < 4; i++) {
        snprintf(text, sizeof text, "{\"train\": {\"optimizer\": \"%s\"}}", opt[i]);
        cr_assert_eq(load_text(text, &c, &err, NULL), 0, "%s", err.msg);
        cr_assert_eq((int)c.train.optimizer, i);
        fs_run_config_free(&c);
        snprintf(text, sizeof text, "{\"eval\": {\"evaluators\": [{\"classes\": \"%s\"}]}}", split[i]);
        cr_assert_eq(load_text(text, &c, &err, NULL), 0, "%s", err.msg);
        cr_assert_eq((int)c.eval.evaluators[0].classes, i);
        cr_assert_str_eq(fs_split_name((fs_split)i), split[i]);
        fs_run_config_free(&c);
    }
}

/* ---------------------------------------------------------------- rejections */

Test(config, unknown_keys_are_named)
{
    REJECT("{\"model\": {\"d_model\": 8, \"dmodel\": 8}}", "dmodel", "model");
    REJECT("{\"data\": {\"fil\": \"x.h5\"}}", "fil");
    REJECT("{\"train\": {\"learning_rate\": 0.1}}", "learning_rate");
    REJECT("{\"eval\": {\"eval_sed\": 3}}", "eval_sed");
    REJECT("{\"train\": {\"samplers\": [{\"burstiness\": 1}, {\"burstyness\": 2}]}}", "burstyness", "samplers[1]");
    REJECT("{\"eval\": {\"evaluators\": [{\"name\": \"x\", \"clases\": \"train\"}]}}", "clases", "evaluators[0]");
    /* a key of another section is unknown here */
    REJECT("{\"model\": {\"lr\": 0.1}}", "lr");
    /* reference options the loader does not implement are not silently ignored */
    REJECT("{\"train\": {\"train_microbs\": 32}}", "train_microbs");
}

Test(config, unknown_sections_are_named)
{
    REJECT("{\"modle\": {\"d_model\": 8}}", "modle");
    REJECT("{\"model\": {}, \"optimizer\": {}}", "optimizer");
    /* a flat (reference-style) config has no sections: its first key is named */
    REJECT("{\"depth\": 2}", "depth");
}

Test(config, wrong_types_and_ranges_are_named)
{
    REJECT("{\"model\": {\"d_model\": \"64\"}}", "model.d_model", "number");
    REJECT("{\"model\": {\"depth\": 2.5}}", "model.depth", "integer");
    REJECT("{\"model\": {\"depth\": 0}}", "model.depth");
    REJECT("{\"model\": {\"depth\": 1000}}", "model.depth");
    REJECT("{\"model\": {\"num_heads\": -2}}", "model.num_heads");
    REJECT("{\"model\": {\"qkv_bias\": 1}}", "model.qkv_bias");
    REJECT("{\"model\": {\"no_norm\": \"false\"}}", "model.no_norm");
    REJECT("{\"model\": {\"pos_embedding\": \"alibi\"}}", "model.pos_embedding", "rope");
    REJECT("{\"model\": {\"pos_embedding\": 1}}", "model.pos_embedding");
    REJECT("{\"model\": {\"mlp_ratio\": \"4\"}}", "model.mlp_ratio");
    REJECT("{\"model\": {\"mlp_ratio\": -1}}", "model.mlp_ratio");
    REJECT("{\"model\": {\"input_dim\": null}}", "model.input_dim");
    REJECT("{\"model\": [1, 2]}", "model");
    REJECT("{\"data\": {\"class_split\": [1, 2]}}", "data.class_split");
    REJECT("{\"data\": {\"class_split\": [1, 2, \"3\"]}}", "data.class_split[2]");
    REJECT("{\"data\": {\"type\": \"hdf5\"}}", "data.type");
    REJECT("{\"data\": {\"file\": 3}}", "data.file");
    REJECT("{\"train\": {\"optimizer\": \"adamw\"}}", "train.optimizer");
    REJECT("{\"train\": {\"lr\": -0.1}}", "train.lr");
    REJECT("{\"train\": {\"train_bs\": 0}}", "train.train_bs");
    REJECT("{\"train\": {\"samplers\": {\"burstiness\": 1}}}", "train.samplers");
    REJECT("{\"train\": {\"samplers\": []}}", "train.samplers");
    REJECT("{\"train\": {\"samplers\": [3]}}", "train.samplers[0]");
    REJECT("{\"eval\": {\"evaluators\": [{\"classes\": \"training\"}]}}", "evaluators[0].classes");
    REJECT("[1, 2, 3]", "model");
}

Test(config, malformed_and_missing_files)
{
    REJECT("{\"model\": {\"d_model\": 8,}}", "JSON");
    REJECT("", "JSON");
    REJECT("{\"model\": {}} trailing", "JSON");
    fs_run_config c;
    fs_run_config_default(&c);
    fs_error err = {{0}};
    const char *missing = th_path(g_dir, "no_such_config.json");
    cr_assert_eq(fs_run_config_load(missing, &c, &err), -1);
    cr_assert(strstr(err.msg, missing), "%s", err.msg);
    fs_run_config_free(&c);
}

Test(config, cross_field_validation)
{
    fs_error err = {{0}};
    fs_model_config m;
    fs_model_config_default(&m);
    m.num_heads = 5; /* does not divide 64 */
    cr_assert_eq(fs_model_config_validate(&m, "cfg.json", &err), -1);
    cr_assert(strstr(err.msg, "num_heads") && strstr(err.msg, "cfg.json"), "%s", err.msg);
    fs_model_config_default(&m);
    m.d_model = 6, m.num_heads = 2; /* odd head dim under RoPE */
    cr_assert_eq(fs_model_config_validate(&m, "cfg.json", &err), -1, "odd RoPE head dim accepted");
    m.pos_embedding = FS_POS_APE;
    cr_assert_eq(fs_model_config_validate(&m, "cfg.json", &err), 0, "%s", err.msg);
    fs_run_config c;
    fs_run_config_default(&c);
    c.train.train_seed = c.eval.eval_seed = 4; /* seeds must differ (docs/formats.md) */
    cr_assert_eq(fs_run_config_validate(&c, "cfg.json", &err), -1);
    cr_assert(strstr(err.msg, "seed"), "%s", err.msg);
    fs_run_config_free(&c);
}

/* ---------------------------------------------------------------- mlp_ratio null */

Test(config, mlp_ratio_null_or_zero_is_attention_only)
{
    fs_run_config c;
    fs_error err;
    cr_assert_eq(load_text("{\"model\": {\"mlp_ratio\": null}}", &c, &err, NULL), 0, "%s", err.msg);
    cr_assert_eq(c.model.mlp_ratio, 0);
    cr_assert_eq(fs_mlp_hidden(&c.model), 0);
    fs_run_config_free(&c);
    cr_assert_eq(load_text("{\"model\": {\"mlp_ratio\": 0}}", &c, &err, NULL), 0, "%s", err.msg);
    cr_assert_eq(fs_mlp_hidden(&c.model), 0);
    cr_assert_eq(fs_model_config_validate(&c.model, "x", &err), 0, "%s", err.msg);
    fs_run_config_free(&c);
    /* golden/attn_only is such a model */
    fs_run_config_default(&c);
    cr_assert_eq(fs_run_config_load(TH_GOLDEN "/attn_only/config.json", &c, &err), 0, "%s", err.msg);
    cr_assert_eq(fs_mlp_hidden(&c.model), 0);
    fs_run_config_free(&c);
}

/* ---------------------------------------------------------------- round trip */

static char *config_text(const fs_run_config *c)
{
    cJSON *j = fs_run_config_to_json(c);
    char *text = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    return text;
}

static void round_trip(fs_run_config *c)
{
    char *text = config_text(c);
    cJSON *j = cJSON_Parse(text);
    cr_assert_not_null(j);
    fs_run_config back;
    fs_run_config_default(&back);
    fs_error err = {{0}};
    cr_assert_eq(fs_run_config_apply(j, "round trip", &back, &err), 0, "%s", err.msg);
    char *again = config_text(&back);
    cr_assert_str_eq(again, text, "the config changed in a round trip");
    cr_assert(fs_model_config_equal(&back.model, &c->model));
    cr_assert_eq(back.model.init_seed, c->model.init_seed);
    cr_assert_eq(back.model.init_rescale, c->model.init_rescale);
    cr_assert_eq(back.train.num_samplers, c->train.num_samplers);
    cr_assert_eq(back.eval.num_evaluators, c->eval.num_evaluators);
    /* the resolved JSON is also a valid config file */
    const char *path = th_path(g_dir, "resolved.json");
    th_write_text(path, text);
    fs_run_config from_file;
    fs_run_config_default(&from_file);
    cr_assert_eq(fs_run_config_load(path, &from_file, &err), 0, "%s", err.msg);
    char *third = config_text(&from_file);
    cr_assert_str_eq(third, text);
    free(third);
    free(again);
    free(text);
    cJSON_Delete(j);
    fs_run_config_free(&back);
    fs_run_config_free(&from_file);
}

Test(config, round_trip_defaults)
{
    fs_run_config c;
    fs_run_config_default(&c);
    round_trip(&c);
    fs_run_config_free(&c);
}

Test(config, round_trip_every_key)
{
    fs_run_config c;
    fs_error err;
    cr_assert_eq(load_text(all_keys_aliases, &c, &err, NULL), 0, "%s", err.msg);
    round_trip(&c);
    /* and the round-tripped values are still the ones loaded */
    char *text = config_text(&c);
    fs_run_config back;
    cr_assert_eq(load_text(text, &back, &err, NULL), 0, "%s", err.msg);
    check_all_keys(&back);
    free(text);
    fs_run_config_free(&back);
    fs_run_config_free(&c);
}

Test(config, round_trip_clamps_section)
{
    fs_run_config c;
    fs_error err;
    cr_assert_eq(load_text("{\"clamps\": {\"cache\": \"c.json\", \"mask\": \"m.json\"}}", &c, &err, NULL), 0, "%s",
                 err.msg);
    cr_assert_str_eq(c.clamps.cache_file, "c.json");
    cr_assert_str_eq(c.clamps.mask_file, "m.json");
    cr_assert(c.has_clamps);
    round_trip(&c);
    fs_run_config_free(&c);
}

Test(config, model_config_json_round_trip)
{
    fs_model_config m, back;
    th_tiny_config(&m);
    m.qkv_bias = true;
    m.pos_embedding = FS_POS_APE;
    m.init_seed = 123456789;
    cJSON *j = fs_model_config_to_json(&m);
    fs_model_config_default(&back);
    fs_error err = {{0}};
    cr_assert_eq(fs_model_config_from_json(j, "meta", &back, &err), 0, "%s", err.msg);
    cr_assert(fs_model_config_equal(&m, &back));
    cr_assert_eq(back.init_seed, m.init_seed);
    cJSON_Delete(j);
    back.depth = 2;
    cr_assert(!fs_model_config_equal(&m, &back), "depth matters");
}

/* ---------------------------------------------------------------- --set */

static int set(fs_run_config *c, const char *assignment, fs_error *err)
{
    memset(err, 0, sizeof *err);
    return fs_run_config_set(c, assignment, err);
}

Test(config, set_overrides)
{
    fs_run_config c;
    fs_run_config_default(&c);
    fs_error err;
    cr_assert_eq(set(&c, "model.depth=3", &err), 0, "%s", err.msg);
    cr_assert_eq(c.model.depth, 3);
    cr_assert(c.has_model);
    cr_assert_eq(set(&c, "train.optimizer=sgd", &err), 0, "%s", err.msg); /* bare string */
    cr_assert_eq(c.train.optimizer, FS_OPT_SGD);
    cr_assert_eq(set(&c, "train.optimizer=\"cosine\"", &err), 0, "%s", err.msg); /* JSON string */
    cr_assert_eq(c.train.optimizer, FS_OPT_COSINE);
    cr_assert_eq(set(&c, "train.lr=1e-3", &err), 0, "%s", err.msg);
    cr_assert_eq(c.train.lr, 1e-3);
    cr_assert_eq(set(&c, "model.qkv_bias=true", &err), 0, "%s", err.msg);
    cr_assert(c.model.qkv_bias);
    cr_assert_eq(set(&c, "model.mlp_ratio=null", &err), 0, "%s", err.msg);
    cr_assert_eq(fs_mlp_hidden(&c.model), 0);
    cr_assert_eq(set(&c, "model.model_output_classes=9", &err), 0, "%s", err.msg); /* aliases too */
    cr_assert_eq(c.model.num_classes, 9);
    cr_assert_eq(set(&c, "data.class_split=[3,4,5]", &err), 0, "%s", err.msg);
    cr_assert(c.data.class_split[0] == 3 && c.data.class_split[1] == 4 && c.data.class_split[2] == 5);
    cr_assert_eq(set(&c, "data.file=/tmp/a=b.h5", &err), 0, "%s", err.msg); /* value split at the first '=' */
    cr_assert_str_eq(c.data.file, "/tmp/a=b.h5");
    cr_assert_eq(set(&c, "data.path=x.y/z", &err), 0, "%s", err.msg); /* dots in the value */
    cr_assert_str_eq(c.data.path, "x.y/z");
    cr_assert_eq(set(&c, "train.samplers=[{\"burstiness\":3},{\"mixing_coeff\":2}]", &err), 0, "%s", err.msg);
    cr_assert_eq(c.train.num_samplers, 2);
    cr_assert_eq(c.train.samplers[0].burstiness, 3);
    cr_assert_eq(c.train.samplers[1].mixing_coeff, 2);
    /* later --set wins, other keys of the section keep their values */
    cr_assert_eq(set(&c, "model.depth=1", &err), 0, "%s", err.msg);
    cr_assert_eq(c.model.depth, 1);
    cr_assert_eq(c.model.num_classes, 9);
    fs_run_config_free(&c);
}

static void set_rejects(const char *assignment, const char *const *fragments)
{
    fs_run_config c;
    fs_run_config_default(&c);
    fs_error err;
    cr_assert_eq(set(&c, assignment, &err), -1, "--set %s accepted", assignment);
    for (int i = 0; fragments[i]; i++)
        cr_assert(strstr(err.msg, fragments[i]), "--set %s: message lacks \"%s\": %s", assignment, fragments[i],
                  err.msg);
    fs_run_config_free(&c);
}

#define SET_REJECT(a, ...) set_rejects(a, (const char *const[]){__VA_ARGS__, NULL})

Test(config, set_rejections)
{
    SET_REJECT("model.dept=3", "dept", "--set");
    SET_REJECT("modle.depth=3", "modle");
    SET_REJECT("model.depth=three", "model.depth");
    SET_REJECT("model.depth=2.5", "model.depth");
    SET_REJECT("model.depth", "--set");
    SET_REJECT("depth=3", "--set");
    SET_REJECT("model.qkv_bias=yes", "model.qkv_bias");
    SET_REJECT("train.optimizer=adamw", "train.optimizer");
    SET_REJECT("data.class_split=[1,2]", "data.class_split");
}
