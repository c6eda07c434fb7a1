#!/usr/bin/env python3
"""KV cache compression study (issue 19): accuracy vs keep fraction per policy.

Draws fsl_train-like sequences from the main run's data (train classes 0..49 of
class_split [50, 1473, 100], the train exemplar 0 of exemplar_split [1, 4, 0], two
distinct labels of fs_relabel 5, a context of 2 pairs = the query's class and one
distractor class in random order), runs `fewshot classify --kv-sweep --json` on each
context with both classes' exemplars as labelled queries, and prints the pooled table.

usage: bench/kv_study.py MODEL.safetensors [--contexts N] [--seed S] [--out DIR]
Only the standard library and h5dump (hdf5-tools) are needed.
"""
import argparse
import array
import collections
import json
import os
import random
import subprocess
import sys
import tempfile

CLASSES, EXEMPLARS, DIM = 1623, 5, 512
TRAIN_CLASSES, LABELS = 50, 5


def features(h5, tmp):
    out = os.path.join(tmp, "feat.bin")
    subprocess.run(["h5dump", "-d", "/resnet18/224/feat", "-b", "LE", "-o", out, h5], check=True,
                   stdout=subprocess.DEVNULL)
    x = array.array("f")
    with open(out, "rb") as f:
        x.frombytes(f.read())
    if len(x) != CLASSES * EXEMPLARS * DIM:
        sys.exit(f"{h5}: expected {CLASSES}x{EXEMPLARS}x{DIM} float32 features, got {len(x)} numbers")
    return x


def row(x, k, e):
    at = (k * EXEMPLARS + e) * DIM
    return [round(v, 7) for v in x[at:at + DIM]]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--data", default="datasets/synth_s0.h5")
    ap.add_argument("--contexts", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="write the pooled JSON table here")
    ap.add_argument("--fewshot", default="./fewshot")
    a = ap.parse_args()
    rng = random.Random(a.seed)
    pooled = collections.OrderedDict()
    with tempfile.TemporaryDirectory() as tmp:
        x = features(a.data, tmp)
        ctx_path, q_path = os.path.join(tmp, "ctx.json"), os.path.join(tmp, "q.json")
        for _ in range(a.contexts):
            ca, cb = rng.sample(range(TRAIN_CLASSES), 2)
            la, lb = rng.sample(range(LABELS), 2)
            pairs = [(ca, la), (cb, lb)]
            rng.shuffle(pairs)
            with open(ctx_path, "w") as f:
                json.dump({"examples": [row(x, k, 0) for k, _ in pairs], "labels": [l for _, l in pairs]}, f)
            with open(q_path, "w") as f:
                json.dump({"examples": [row(x, ca, 0), row(x, cb, 0)], "labels": [la, lb]}, f)
            res = subprocess.run([a.fewshot, "classify", "--model", a.model, "--context", ctx_path, "--queries",
                                  q_path, "--kv-sweep", "--json", "--threads", "1"], check=True,
                                 capture_output=True, text=True)
            for r in json.loads(res.stdout)["rows"]:
                key = (r["policy"], r["keep"])
                p = pooled.setdefault(key, {"tokens": r["tokens"], "bytes": r["bytes"], "n": 0, "acc": 0.0,
                                            "agree": 0.0})
                p["n"] += 1
                p["acc"] += r["accuracy"]
                p["agree"] += r["agreement"]
    rows = [{"policy": k[0], "keep": k[1], "tokens": v["tokens"], "bytes": v["bytes"], "accuracy": v["acc"] / v["n"],
             "agreement": v["agree"] / v["n"]} for k, v in pooled.items()]
    print(f"{a.contexts} contexts x 2 labelled queries, model {a.model}")
    print(f"{'policy':15} {'keep':>5} {'tokens':>6} {'bytes':>6} {'accuracy':>9} {'agreement':>10}")
    for r in rows:
        print(f"{r['policy']:15} {r['keep']:5.2f} {r['tokens']:6d} {r['bytes']:6d} {r['accuracy']:9.4f} "
              f"{r['agreement']:10.4f}")
    if a.out:
        os.makedirs(a.out, exist_ok=True)
        with open(os.path.join(a.out, "kv_study.json"), "w") as f:
            json.dump({"contexts": a.contexts, "seed": a.seed, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
