/* fewshot dataset synth: Gaussian-cluster features (docs/formats.md) as HDF5. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "fewshot/data.h"

static const fs_opt opts[] = {
    {"--classes", "K", "number of classes (default 1623, Omniglot-shaped)"},
    {"--exemplars", "E", "exemplars per class (default 5)"},
    {"--dim", "D", "feature dimension (default 512)"},
    {"--eps", "X", "within-class spread: x = (mu + eps*eta)/sqrt(1+eps^2) (default 0.5)"},
    {"--seed", "S", "random seed (default 0)"},
    {"--path", "P", "dataset path inside the file (default resnet18/224/feat)"},
    {"-o", "FILE", "output .h5 file (written atomically)"},
    {NULL, NULL, NULL},
};

int fs_cmd_dataset(int argc, char **argv)
{
    if (argc < 1 || strcmp(argv[0], "synth") != 0) {
        if (argc >= 1 && (!strcmp(argv[0], "--help") || !strcmp(argv[0], "-h"))) {
            printf("usage: fewshot dataset synth -o FILE.h5 [--classes K] [--exemplars E] [--dim D] [--eps X] [--seed S] [--path P]\n\n"
                   "Dataset tools. `synth` writes synthetic features (docs/formats.md): class means mu and\n"
                   "noise eta ~ N(0, I/D), x = (mu_class + eps * eta) / sqrt(1 + eps^2).\n");
            return 0;
        }
        fprintf(stderr, "fewshot dataset: expected a tool name: synth (see fewshot dataset --help)\n");
        return 2;
    }
    fs_args args;
    int rc = fs_cli_parse(&args, argc - 1, argv + 1, "dataset synth", "-o FILE.h5 [--classes K] [--exemplars E] [--dim D] [--eps X] [--seed S] [--path P]",
                          "Write Gaussian-cluster features [classes, exemplars, dim] (float32) to an HDF5 file\n"
                          "(docs/formats.md), seeded and reproducible.",
                          opts);
    if (rc)
        return rc > 0 ? 0 : 2;
    const char *out = fs_arg(&args, "-o");
    if (!out)
        return fs_cli_error("-o FILE.h5 is required");
    long long k, e, d, seed;
    if (fs_arg_int(&args, "--classes", 1623, 1, 1 << 24, &k) || fs_arg_int(&args, "--exemplars", 5, 1, 1 << 20, &e) ||
        fs_arg_int(&args, "--dim", 512, 1, 1 << 20, &d) || fs_arg_int(&args, "--seed", 0, 0, (1LL << 62), &seed))
        return 1;
    double eps = 0.5;
    if (fs_arg(&args, "--eps")) {
        char *end;
        eps = strtod(fs_arg(&args, "--eps"), &end);
        if (*end || !(eps >= 0))
            return fs_cli_error("--eps: expected a non-negative number");
    }
    fs_error err = {{0}};
    fs_dataset ds;
    if (fs_dataset_synth(&ds, (int)k, (int)e, (int)d, eps, (uint64_t)seed, &err))
        return fs_cli_error(err.msg);
    rc = fs_dataset_save_h5(&ds, out, fs_arg(&args, "--path"), &err) ? fs_cli_error(err.msg) : 0;
    fs_dataset_free(&ds);
    if (!rc)
        fprintf(stderr, "wrote %s: %lld x %lld x %lld\n", out, k, e, d);
    return rc;
}
