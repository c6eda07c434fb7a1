#!/usr/bin/env bash
# Fails on any #include in src/ or include/fewshot/ that points up or sideways through the
# layers (README "Code map"), and on any simde_ name outside src/simd/.
set -euo pipefail
cd "$(dirname "$0")/.."
# rank of a layer; layers of equal rank may not include each other.
rank() {
    case "$1" in
        base) echo 0 ;; simd) echo 1 ;; kernels) echo 2 ;; model) echo 3 ;;
        interp|io) echo 4 ;; train|kv) echo 5 ;; api) echo 6 ;; cli) echo 7 ;; *) echo -1 ;;
    esac
}
# public header -> the layer that implements it
public_layer() {
    case "$1" in
        error|version) echo base ;;
        config|model|cache|forward) echo model ;;
        interventions) echo interp ;;
        safetensors|data|seqio) echo io ;;
        train) echo train ;;
        kvcache) echo kv ;;
        api) echo api ;;
        *) echo unknown ;;
    esac
}
layer_of_include() { # "base/fileio.h" or "fewshot/model.h" -> layer
    local inc=$1
    case "$inc" in
        fewshot/*) local n=${inc#fewshot/}; public_layer "${n%.h}" ;;
        */*) echo "${inc%%/*}" ;;
        *) echo unknown ;;
    esac
}
bad=0
check_file() { # file, its layer
    local f=$1 me=$2 r
    r=$(rank "$me")
    while IFS= read -r inc; do
        local l; l=$(layer_of_include "$inc")
        local lr; lr=$(rank "$l")
        if [ "$l" = unknown ] || [ "$lr" -lt 0 ]; then
            echo "$f: #include \"$inc\": not a layered header (use fewshot/X.h or LAYER/X.h)"; bad=1
        elif [ "$l" != "$me" ] && [ "$lr" -ge "$r" ]; then
            echo "$f: #include \"$inc\": $me (rank $r) may not include $l (rank $lr)"; bad=1
        fi
    done < <(grep -ho '^#include "[^"]*"' "$f" | sed 's/#include "\(.*\)"/\1/')
}
for f in src/*/*.[ch]; do
    d=${f#src/}; check_file "$f" "${d%%/*}"
done
for f in include/fewshot/*.h; do
    n=$(basename "$f" .h); l=$(public_layer "$n")
    if [ "$l" = unknown ]; then echo "$f: public header with no layer in tests/check_layers.sh"; bad=1; continue; fi
    check_file "$f" "$l"
    if grep -q '#include "[a-z]*/' "$f" && grep -v 'fewshot/' "$f" | grep -q '^#include "'; then
        echo "$f: a public header includes an internal one"; bad=1
    fi
done
if grep -rln 'simde_\|SIMDE_\|<simde/' src include --include=*.c --include=*.h | grep -v '^src/simd/'; then
    echo "the files above name SIMDe outside src/simd/"; bad=1
fi
[ $bad = 0 ] && echo "check-layers: every include points downward"
exit $bad
