#include "cli/cli.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fewshot/seqio.h"
#include "base/fileio.h"

int fs_cli_error(const char *msg)
{
    fprintf(stderr, "fewshot: error: %s\n", msg);
    return 1;
}

static void print_help(const char *cmd, const char *synopsis, const char *about, const fs_opt *opts)
{
    printf("usage: fewshot %s %s\n\n%s\n\noptions:\n", cmd, synopsis, about);
    for (const fs_opt *o = opts; o->name; o++) {
        char left[64];
        snprintf(left, sizeof left, "%s%s%s", o->name, o->arg ? " " : "", o->arg ? o->arg : "");
        printf("  %-24s %s\n", left, o->help);
    }
    printf("  %-24s %s\n", "-h, --help", "show this help");
}

int fs_cli_parse(fs_args *a, int argc, char **argv, const char *cmd, const char *synopsis, const char *about,
                 const fs_opt *opts)
{
    memset(a, 0, sizeof *a);
    a->opts = opts;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            print_help(cmd, synopsis, about, opts);
            return 1;
        }
        const char *name = argv[i], *inline_val = NULL;
        char buf[64];
        const char *eq = strchr(name, '=');
        if (!strncmp(name, "--", 2) && eq && (size_t)(eq - name) < sizeof buf) {
            snprintf(buf, sizeof buf, "%.*s", (int)(eq - name), name);
            inline_val = eq + 1;
            name = buf;
        }
        int k = -1;
        for (int j = 0; opts[j].name; j++)
            if (!strcmp(opts[j].name, name))
                k = j;
        if (k < 0) {
            fprintf(stderr, "fewshot %s: unknown option '%s' (see fewshot %s --help)\n", cmd, argv[i], cmd);
            return -1;
        }
        const char *val = NULL;
        if (opts[k].arg) {
            if (inline_val)
                val = inline_val;
            else if (i + 1 < argc)
                val = argv[++i];
            else {
                fprintf(stderr, "fewshot %s: option %s needs a value %s\n", cmd, name, opts[k].arg);
                return -1;
            }
        }
        if (!strcmp(name, "--set")) {
            if (a->num_sets == FS_CLI_MAX_SETS) {
                fprintf(stderr, "fewshot %s: too many --set options\n", cmd);
                return -1;
            }
            a->sets[a->num_sets++] = val;
        }
        a->given[k] = true;
        a->value[k] = val;
    }
    return 0;
}

static int find_opt(const fs_args *a, const char *name)
{
    for (int j = 0; a->opts[j].name; j++)
        if (!strcmp(a->opts[j].name, name))
            return j;
    return -1;
}

const char *fs_arg(const fs_args *a, const char *name)
{
    int k = find_opt(a, name);
    return k >= 0 && a->given[k] ? a->value[k] : NULL;
}

bool fs_flag(const fs_args *a, const char *name)
{
    int k = find_opt(a, name);
    return k >= 0 && a->given[k];
}

int fs_arg_int(const fs_args *a, const char *name, long long def, long long lo, long long hi, long long *out)
{
    const char *v = fs_arg(a, name);
    if (!v) {
        *out = def;
        return 0;
    }
    char *end;
    long long x = strtoll(v, &end, 10);
    if (*v == 0 || *end != 0 || x < lo || x > hi) {
        fprintf(stderr, "fewshot: error: %s: expected an integer in [%lld, %lld], got '%s'\n", name, lo, hi, v);
        return -1;
    }
    *out = x;
    return 0;
}

int fs_cli_run_config(const fs_args *a, fs_run_config *cfg, bool require_config)
{
    fs_error err = {{0}};
    fs_run_config_default(cfg);
    const char *path = fs_arg(a, "--config");
    if (!path && require_config)
        return fs_cli_error("--config FILE is required");
    if (path && fs_run_config_load(path, cfg, &err))
        return fs_cli_error(err.msg);
    for (int i = 0; i < a->num_sets; i++)
        if (fs_run_config_set(cfg, a->sets[i], &err))
            return fs_cli_error(err.msg);
    return 0;
}

int fs_cli_load_model(const fs_args *a, fs_run_config *cfg, fs_model *m)
{
    fs_error err = {{0}};
    const char *model_path = fs_arg(a, "--model");
    memset(cfg, 0, sizeof *cfg); /* freeable (fs_run_config_free) on every return */
    if (!model_path)
        return fs_cli_error("--model FILE.safetensors is required");
    if (fs_cli_run_config(a, cfg, false))
        return 1;
    char origin[1100];
    snprintf(origin, sizeof origin, "--config %s", fs_arg(a, "--config") ? fs_arg(a, "--config") : "(--set)");
    if (fs_model_open(m, &cfg->model, cfg->has_model, model_path, origin, &err))
        return fs_cli_error(err.msg);
    return 0;
}

fs_held_source fs_cli_held(const fs_args *a, const fs_clamps_config *config, const char *origin)
{
    return (fs_held_source){.config = config, .origin = origin, .cache = fs_arg(a, "--cache"),
                            .mask = fs_arg(a, "--mask"), .intervene = fs_arg(a, "--intervene")};
}

int fs_cli_output(const fs_args *a, const char *text)
{
    const char *out = fs_arg(a, "-o");
    if (!out) {
        fputs(text, stdout);
        return 0;
    }
    fs_error err = {{0}};
    if (fs_write_file_atomic(out, text, &err))
        return fs_cli_error(err.msg);
    return 0;
}

double fs_phase_change(const double *iter, const double *acc, size_t n)
{
    double final = NAN;
    for (size_t i = n; i-- > 0 && isnan(final);)
        final = acc[i];
    if (!(final > 0.5))
        return NAN;
    double threshold = 0.5 + (final - 0.5) / 2;
    for (size_t i = 0; i < n; i++)
        if (acc[i] >= threshold)
            return iter[i];
    return NAN;
}
