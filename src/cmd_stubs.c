/* Subcommands not written yet. */
#include <stdio.h>

#include "cli.h"

#define STUB(fn, name)                                                   \
    int fn(int argc, char **argv)                                        \
    {                                                                    \
        (void)argc;                                                      \
        (void)argv;                                                      \
        fprintf(stderr, "fewshot " name ": not implemented yet\n");      \
        return 2;                                                        \
    }
