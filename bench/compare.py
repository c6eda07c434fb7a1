#!/usr/bin/python3
"""Run `fewshot bench --json` and bench/torch_bench.py back to back on this machine and
print both with the ratios fewshot/pytorch.

usage: python3 bench/compare.py [--threads T] [--seconds S] [--sizes] [--json]
--sizes: training steps/s on fewshot's size ladder (`fewshot bench --sizes`), PyTorch
timed on the same shapes, with fewshot's fraction of the machine's FMA peak.
The fewshot binary is $FEWSHOT_BIN (default ./fewshot). PyTorch runs with the thread
count fewshot reports, unless --threads is given (then both get it).
"""
import argparse
import importlib.util
import json
import os
import subprocess
import sys

SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's python3-torch lives here
HERE = os.path.dirname(os.path.abspath(__file__))
FEWSHOT_KEYS = ("train_steps_per_s", "train_seqs_per_s", "eval_seqs_per_s",
                "peak_rss_mb", "threads", "cpu")
ROWS = ("train_steps_per_s", "train_seqs_per_s", "eval_seqs_per_s", "peak_rss_mb", "threads")


def die(msg):
    print(f"compare.py: error: {msg}", file=sys.stderr)
    sys.exit(1)


def ensure_torch_interpreter():
    if importlib.util.find_spec("torch") is not None:
        return
    if os.path.realpath(sys.executable) != os.path.realpath(SYSTEM_PYTHON) \
            and os.access(SYSTEM_PYTHON, os.X_OK):
        os.execv(SYSTEM_PYTHON, [SYSTEM_PYTHON, os.path.abspath(__file__)] + sys.argv[1:])
    die(f"PyTorch is not importable by {sys.executable} "
        "(install it: apt-get install -y python3-torch)")


def parse_json_object(text, who):
    """The whole stdout as one JSON object, else its last line that is one."""
    candidates = [text] + text.strip().splitlines()[::-1]
    for c in candidates:
        try:
            obj = json.loads(c)
        except ValueError:
            continue
        if isinstance(obj, dict):
            return obj
    die(f"{who}: stdout is not a JSON object:\n{text.strip()[:2000]}")


# PyTorch picks its kernels' vector width from the CPU, not from how fewshot was built.
# To compare like with like, it gets the width fewshot's build uses: ATEN_CPU_CAPABILITY
# for ATen's own kernels, OPENBLAS_CORETYPE for OpenBLAS's matrix products.
TORCH_WIDTH_ENV = {
    "AVX-512": {},
    "AVX2+FMA": {"ATEN_CPU_CAPABILITY": "avx2", "OPENBLAS_CORETYPE": "Haswell"},
    "portable (SIMDe)": {"ATEN_CPU_CAPABILITY": "default", "OPENBLAS_CORETYPE": "Prescott"},
}


def torch_env(simd):
    """Environment for torch_bench.py matching fewshot's vector width, and its description."""
    extra = TORCH_WIDTH_ENV.get(simd, {})
    env = dict(os.environ)
    env.update(extra)
    desc = ", ".join(f"{k}={v}" for k, v in extra.items()) or "its own CPU detection"
    return env, desc


def run(cmd, who, env=None):
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    except OSError as e:
        die(f"{who}: cannot run {' '.join(cmd)}: {e}")
    if p.returncode != 0:
        die(f"{who}: `{' '.join(cmd)}` exited with status {p.returncode}\n"
            f"{p.stderr.strip()[-2000:]}")
    return parse_json_object(p.stdout, who)


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "?"


def fmt(v):
    if isinstance(v, float):
        return f"{v:,.1f}" if abs(v) >= 100 else f"{v:.2f}"
    return str(v)


def compare_sizes(args):
    fewshot_bin = os.environ.get("FEWSHOT_BIN", "./fewshot")
    if not (os.path.isfile(fewshot_bin) and os.access(fewshot_bin, os.X_OK)):
        die(f"{fewshot_bin}: no such executable (build it with `make`, or set FEWSHOT_BIN)")
    cmd = [fewshot_bin, "bench", "--sizes", "--json"]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    print(f"running {' '.join(cmd)} ...", file=sys.stderr)
    c = run(cmd, "fewshot bench --sizes")
    if not isinstance(c.get("sizes"), list) or not c["sizes"]:
        die(f"fewshot bench --sizes: JSON lacks a `sizes` list: {json.dumps(c)}")
    threads = args.threads or int(c["threads"])
    env, width = torch_env(c["simd"])
    print(f"\nmachine: {os.cpu_count()} CPUs, {cpu_model()}; fewshot {c['simd']} "
          f"({c['simd_width']} floats), FMA peak {c['fma_peak_madds_per_s'] / 1e9:.1f} G multiply-adds/s, "
          f"{threads} threads; 8 heads, batch {c['sizes'][0].get('batch')}; PyTorch with {width}\n")
    print(f"{'d_model/depth/pairs':<22}{'fewshot steps/s':>16}{'% of peak':>11}{'pytorch steps/s':>17}{'ratio':>8}")
    rows = []
    for r in c["sizes"]:
        tcmd = [sys.executable, os.path.join(HERE, "torch_bench.py"), "--threads", str(threads),
                "--seconds", str(args.seconds), "--train-only", "--d-model", str(r["d_model"]),
                "--depth", str(r["depth"]), "--pairs", str(r["pairs"]), "--train-bs", str(r.get("batch", 32))]
        print(f"running {' '.join(tcmd)} ...", file=sys.stderr)
        t = run(tcmd, "torch_bench.py", env)
        a, b = r["train_steps_per_s"], t["train_steps_per_s"]
        shape = f"{r['d_model']}/{r['depth']}/{r['pairs']}"
        print(f"{shape:<22}{fmt(a):>16}{100 * r['train_peak_fraction']:>10.1f}%{fmt(b):>17}"
              f"{(f'{a / b:.2f}x' if b else '-'):>8}")
        rows.append({"fewshot": r, "pytorch": t})
    if args.json:
        print(json.dumps({"simd": c["simd"], "fma_peak_madds_per_s": c["fma_peak_madds_per_s"], "rows": rows}))


def main():
    ap = argparse.ArgumentParser(description="fewshot vs PyTorch throughput")
    ap.add_argument("--threads", type=int, help="threads for both (default: fewshot's own)")
    ap.add_argument("--seconds", type=float, default=3.0, help="PyTorch timed seconds per phase")
    ap.add_argument("--json", action="store_true", help="also print both results as JSON")
    ap.add_argument("--sizes", action="store_true", help="the model-size ladder (training only)")
    args = ap.parse_args()
    ensure_torch_interpreter()
    if args.sizes:
        return compare_sizes(args)

    fewshot_bin = os.environ.get("FEWSHOT_BIN", "./fewshot")
    if not (os.path.isfile(fewshot_bin) and os.access(fewshot_bin, os.X_OK)):
        die(f"{fewshot_bin}: no such executable (build it with `make`, or set FEWSHOT_BIN)")
    cmd = [fewshot_bin, "bench", "--json"]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    print(f"running {' '.join(cmd)} ...", file=sys.stderr)
    c = run(cmd, "fewshot bench")
    missing = [k for k in FEWSHOT_KEYS if k not in c]
    if missing:
        die(f"fewshot bench: JSON lacks key(s) {', '.join(missing)}: {json.dumps(c)}")
    for k in ROWS:
        if not isinstance(c[k], (int, float)) or isinstance(c[k], bool):
            die(f"fewshot bench: {k} is not a number: {c[k]!r}")

    threads = args.threads or int(c["threads"])
    tcmd = [sys.executable, os.path.join(HERE, "torch_bench.py"),
            "--threads", str(threads), "--seconds", str(args.seconds)]
    env, width = torch_env(c.get("simd", ""))
    print(f"running {' '.join(tcmd)} ({width}) ...", file=sys.stderr)
    t = run(tcmd, "torch_bench.py", env)

    print(f"\nmachine: {os.cpu_count()} CPUs, {cpu_model()} (fewshot reports: {c['cpu']}); "
          f"fewshot {c.get('simd', '?')}, PyTorch with {width}")
    print(f"model: input_dim 512, 5 classes, d 64, 8 heads, depth 2, mlp 4, RoPE; "
          f"train batch 32 x 3 pairs, eval batch {t.get('eval_bs', '?')}")
    print(f"pytorch {t.get('torch_version')} ({t.get('mode')}, BLAS {t.get('blas')})\n")
    w = 18
    print(f"{'metric':<20}{'fewshot':>{w}}{'pytorch':>{w}}{'fewshot/pytorch':>{w}}")
    for k in ROWS:
        a, b = c[k], t.get(k)
        ratio = f"{a / b:.2f}x" if k != "threads" and isinstance(b, (int, float)) and b else "-"
        print(f"{k:<20}{fmt(a):>{w}}{fmt(b):>{w}}{ratio:>{w}}")
    print("(throughput: ratio > 1 means fewshot is faster; peak_rss_mb: lower is better)")
    if args.json:
        print(json.dumps({"fewshot": c, "pytorch": t}))


if __name__ == "__main__":
    main()
