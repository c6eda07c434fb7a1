#!/usr/bin/env bash
# Run the main commands under valgrind (memcheck, leaks). Built without AVX-512,
# which valgrind cannot decode; SIMDe maps the kernels onto AVX2.
set -euo pipefail
bin=${1:-build-valgrind/fewshot}
G=tests/golden/doc
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# OMP_WAIT_POLICY set: fewshot would otherwise re-exec itself (src/cli/main.c) outside valgrind.
vg() { OMP_WAIT_POLICY=passive OMP_NUM_THREADS=2 valgrind --error-exitcode=9 --leak-check=full --errors-for-leak-kinds=definite -q "$bin" "$@"; }
vg init -o "$tmp/m.safetensors" 2>/dev/null
vg cache --model "$tmp/m.safetensors" --input datasets/examples/batch_doc.json -o "$tmp/c.json"
vg cache --config $G/config.json --model $G/params.safetensors --input $G/clamp_zero_query_token.json \
    --cache $G/clamp_zero_query_token.json --mask $G/clamp_zero_query_token.json -o "$tmp/k.json"
vg grad --config $G/config.json --model $G/params.safetensors --input $G/grad.json -o "$tmp/g.safetensors" >/dev/null
vg steps --model "$tmp/m.safetensors" --input datasets/examples/batch_doc.json --steps 2 -o "$tmp/s.safetensors" >/dev/null
vg cache --model "$tmp/m.safetensors" --input datasets/examples/seq_doc.json --intervene '{"ablate_heads":["1:2"],"preserve":["patterns"]}' -o "$tmp/i.json"
vg classify --model "$tmp/m.safetensors" --context datasets/examples/classify_context.json \
    --queries datasets/examples/classify_queries.json -o "$tmp/q.jsonl"
vg train --config configs/default.json --out "$tmp/run" --set train.train_iters=640 --set eval.eval_iters=50 \
    --no-progress 2>/dev/null
vg eval --config "$tmp/run/config.json" --model "$tmp/run/checkpoints/step_00000020.safetensors" -o "$tmp/e.json"
vg cache --config "$tmp/run/config.json" --model "$tmp/run/checkpoints/step_00000020.safetensors" --sample 6 \
    --evaluator fsl_train --names examples,labels -o "$tmp/ctx.h5"
vg classify --model "$tmp/run/checkpoints/step_00000020.safetensors" --contexts "$tmp/ctx.h5" --kv-stats --kv-keep 0.5 \
    --kv-policy recent >/dev/null
vg grad --config $G/config.json --model $G/params.safetensors --input $G/grad.json -o "$tmp/gg.safetensors" \
    --intervene '{"graft_out": {"model": "'$G'/params.safetensors", "config": "'$G'/config.json", "from_layer": 0}, "ablate_heads": ["1:2"]}' >/dev/null
vg sweep plan configs/sweeps/ih_paper.json >/dev/null
vg sweep run configs/sweeps/smoke.json --out "$tmp/sweep" -j 2 --no-progress 2>/dev/null
vg sweep summarize "$tmp/sweep" --csv >/dev/null
if vg cache --model "$tmp/m.safetensors" --input $G/grad.json --cache /nonexistent --mask /nonexistent 2>/dev/null; then
    echo "expected an error"; exit 1
fi
echo "valgrind: clean"
