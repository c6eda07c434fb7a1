#!/usr/bin/env bash
# make install into a temporary prefix (and a DESTDIR staging tree), then build and run a
# tiny C program against the installed library via pkg-config, dynamically and
# statically; make uninstall must remove every installed file.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix
make -s install PREFIX="$prefix" >/dev/null
for f in bin/fewshot lib/libfewshot.a lib/libfewshot.so lib/pkgconfig/fewshot.pc include/fewshot/api.h \
         include/fewshot/version.h; do
    [ -e "$prefix/$f" ] || { echo "test-install: $prefix/$f not installed"; exit 1; }
done
soname=$(objdump -p "$prefix/lib/libfewshot.so" | awk '/SONAME/ {print $2}')
[ -n "$soname" ] && [ -e "$prefix/lib/$soname" ] || { echo "test-install: bad soname '$soname'"; exit 1; }
"$prefix/bin/fewshot" --version
export PKG_CONFIG_PATH=$prefix/lib/pkgconfig
echo "pkg-config --cflags --libs fewshot: $(pkg-config --cflags --libs fewshot)"
cc -std=c11 tests/install/hello.c $(pkg-config --cflags --libs fewshot) -o "$tmp/hello"
LD_LIBRARY_PATH=$prefix/lib "$tmp/hello"
LD_LIBRARY_PATH=$prefix/lib ldd "$tmp/hello" | grep -q "$prefix/lib/$soname" || \
    { echo "test-install: the program is not linked to the installed $soname"; exit 1; }
cc -std=c11 tests/install/hello.c $(pkg-config --cflags fewshot) "$prefix/lib/libfewshot.a" \
    $(pkg-config --static --libs fewshot | sed 's/-lfewshot//') -o "$tmp/hello_static"
"$tmp/hello_static" >/dev/null
echo "static link: ok"
# DESTDIR stages the same tree under another root, with paths for the final prefix
make -s install DESTDIR="$tmp/stage" PREFIX=/opt/fewshot >/dev/null
grep -qx 'prefix=/opt/fewshot' "$tmp/stage/opt/fewshot/lib/pkgconfig/fewshot.pc"
[ -x "$tmp/stage/opt/fewshot/bin/fewshot" ]
make -s uninstall DESTDIR="$tmp/stage" PREFIX=/opt/fewshot
make -s uninstall PREFIX="$prefix"
left=$(find "$prefix" "$tmp/stage" -type f -o -type l)
[ -z "$left" ] || { echo "test-install: uninstall left files behind:"; echo "$left"; exit 1; }
echo "test-install: ok"
