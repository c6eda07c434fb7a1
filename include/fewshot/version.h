/* The library's version. FEWSHOT_VERSION is the version of the headers you compiled
 * against; fs_version() that of the library you run with. The shared library's soname
 * carries the major version (libfewshot.so.MAJOR). */
#ifndef FEWSHOT_VERSION_H
#define FEWSHOT_VERSION_H

#define FEWSHOT_VERSION_MAJOR 0
#define FEWSHOT_VERSION_MINOR 3
#define FEWSHOT_VERSION_PATCH 0
#define FEWSHOT_VERSION "0.3.0"

#endif
