#!/usr/bin/env bash
# make test-report: build reports of a short training run (progress measures on) and of the
# smoke sweep (a seed axis), open
# them in headless Chromium (tests/report_browser.py) and check them from the browser. A
# tampered copy (a network request, a console error) must fail the same check. Artefacts
# (reports, screenshots, SVG figures) stay in build/report-test/.
set -euo pipefail
bin="${FEWSHOT_BIN:-./fewshot}"
out="${REPORT_TEST_DIR:-build/report-test}"
rm -rf "$out"
mkdir -p "$out"
short=(--no-progress --set train.eval_every=4000 --set train.log_every=1600 --set eval.eval_iters=200)

echo "== a short training run with progress measures"
"$bin" train --config configs/default.json --out "$out/run" "${short[@]}" \
    --set train.train_iters=32000 --set train.ckpt_every=8000 \
    --set measures.enable=true --set measures.probe_size=128 2>/dev/null

echo "== the smoke sweep (fewshot sweep run configs/sweeps/smoke.json: 2 variants x 2 seeds)"
"$bin" sweep run configs/sweeps/smoke.json --out "$out/sweep" -j 2 2>/dev/null

echo "== reports"
t0=$(date +%s%N)
"$bin" report "$out/run" -o "$out/run.html" --svg "$out/svg"
t1=$(date +%s%N)
"$bin" report "$out/sweep" -o "$out/sweep.html"
t2=$(date +%s%N)
echo "report of the run: $(( (t1 - t0) / 1000000 )) ms; of the sweep: $(( (t2 - t1) / 1000000 )) ms"

echo "== the run's report in Chromium"
# one run: accuracy and loss; 5 measures x 2 layers; 2 layers x 8 heads
python3 tests/report_browser.py "$out/run.html" --charts 2 --measure-charts 10 --heatmaps 16 \
    --metrics "$out/run/metrics.jsonl" --evaluator fsl_train --screenshot "$out/run.png"
echo "== the sweep's report in Chromium"
# 2 evaluators x (accuracy, loss) + the training loss; 2 layers x 2 heads
python3 tests/report_browser.py "$out/sweep.html" --charts 5 --heatmaps 4 --screenshot "$out/sweep.png"

echo "== a tampered report must fail the same check"
sed 's|<h2>Learning curves</h2>|<img src="http://127.0.0.1:9/x.png"><script>console.error("tampered")</script>&|' \
    "$out/run.html" > "$out/tampered.html"
if python3 tests/report_browser.py "$out/tampered.html" --charts 2 --measure-charts 10 --heatmaps 16 \
        --screenshot "$out/tampered.png" > "$out/tampered.log" 2>&1; then
    echo "FAIL: the tampered report passed the browser check"; exit 1
fi
grep -q "FAIL  no network request" "$out/tampered.log" && grep -q "FAIL  no console errors" "$out/tampered.log" || {
    cat "$out/tampered.log"; echo "FAIL: the tampered report's failures were not both caught"; exit 1; }
echo "ok    the tampered report fails (network request and console error caught)"
echo "test-report: 3 passed, 0 failed"
