/* Fast number formatting for large text outputs (cache dumps, per-sequence metrics). */
#ifndef FEWSHOT_BASE_NUMFMT_H
#define FEWSHOT_BASE_NUMFMT_H

enum { FS_G9_MAX = 24 }; /* bytes fs_format_g9 may write, NUL included */

/* The text printf("%.9g", (double)x) writes for a finite x (9 significant digits: the
 * float round-trips), byte for byte, without going through printf in all but rare
 * near-tie cases. Returns the length; out gets a NUL-terminated string. */
int fs_format_g9(char *out, float x);

#endif
