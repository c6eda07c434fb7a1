#!/usr/bin/python3
"""Throughput of the PyTorch SequenceClassifier on this machine (CPU).

train: forward + backward + torch.optim.Adam step (lr 1e-3), batch 32 of 3 pairs.
eval:  forward only under torch.no_grad, batch 1000, query logits.
Inputs are gaussian examples and uniform labels in [0, C), pre-generated (data
generation is not timed). Prints one JSON object.
"""
import argparse
import json
import os
import resource
import sys
import time

torch = None  # imported in main() after OPENBLAS_NUM_THREADS is set


def make_batches(n, bs, pairs, cfg, gen):
    return [(torch.randn(bs, pairs, cfg["input_dim"], generator=gen),
             torch.randint(0, cfg["num_classes"], (bs, pairs), generator=gen))
            for _ in range(n)]


def timed(fn, batches, warmup, seconds):
    """Run fn over the batches (cycling) for `warmup` calls, then for >= seconds.
    Returns calls per second."""
    for i in range(warmup):
        fn(*batches[i % len(batches)])
    n, t0 = 0, time.perf_counter()
    while True:
        fn(*batches[n % len(batches)])
        n += 1
        dt = time.perf_counter() - t0
        if dt >= seconds:
            return n / dt


def blas_library():
    """The BLAS shared library mapped into this process (Debian torch uses libblas.so.3)."""
    with open("/proc/self/maps") as f:
        libs = {line.split()[-1] for line in f if "blas" in line.split()[-1]}
    return os.path.realpath(sorted(libs)[0]) if libs else None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--seconds", type=float, default=3.0, help="timed seconds per phase")
    ap.add_argument("--train-bs", type=int, default=32)
    ap.add_argument("--eval-bs", type=int, default=1000)
    ap.add_argument("--pairs", type=int, default=3, help="exemplars per sequence (incl. query)")
    ap.add_argument("--mlp-ratio", type=float, default=4, help="0 = attention-only")
    ap.add_argument("--d-model", type=int, default=64)
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--train-only", action="store_true", help="skip the eval phase")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    # Debian's torch calls whatever libblas.so.3 is installed (BLAS_INFO=generic) and
    # does not tell it how many threads to use. A multi-threaded OpenBLAS inside torch's
    # OpenMP regions oversubscribes the cores (3-4x slower training here), so BLAS runs
    # single-threaded unless OPENBLAS_NUM_THREADS says otherwise; torch's own OpenMP
    # parallelism uses --threads.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    global torch, SequenceClassifier, query_loss
    import torch
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from torch_model import SequenceClassifier, query_loss

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = SequenceClassifier(mlp_ratio=args.mlp_ratio, d_model=args.d_model, depth=args.depth,
                               num_heads=args.heads)
    cfg = model.cfg
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(args.seed)

    # torch.compile needs torch >= 2.0; use it only if present and it compiles quickly.
    fwd, mode = model, "eager"
    if hasattr(torch, "compile") and os.environ.get("TORCH_BENCH_COMPILE", "1") != "0":
        try:
            compiled = torch.compile(model)
            ex, lab = make_batches(1, args.train_bs, args.pairs, cfg, gen)[0]
            t0 = time.perf_counter()
            query_loss(compiled(ex, lab), lab).backward()
            opt.zero_grad()
            if time.perf_counter() - t0 < 60:
                fwd, mode = compiled, "torch.compile"
        except Exception as e:  # no compiler toolchain, offline, ...
            print(f"torch.compile unavailable, using eager: {e}", file=sys.stderr)

    def train_step(ex, lab):
        opt.zero_grad(set_to_none=True)
        query_loss(fwd(ex, lab), lab).backward()
        opt.step()

    def eval_step(ex, lab):
        with torch.no_grad():
            return fwd(ex, lab)[:, -1]

    train_batches = make_batches(64, args.train_bs, args.pairs, cfg, gen)
    eval_batches = make_batches(4, args.eval_bs, args.pairs, cfg, gen)
    steps = timed(train_step, train_batches, warmup=50, seconds=args.seconds)
    evals = 0.0 if args.train_only else timed(eval_step, eval_batches, warmup=5, seconds=args.seconds)

    print(json.dumps({
        "impl": "pytorch",
        "torch_version": torch.__version__,
        "mode": mode,
        "threads": torch.get_num_threads(),
        "blas": blas_library(),
        "blas_threads": int(os.environ["OPENBLAS_NUM_THREADS"]),
        "mlp_ratio": args.mlp_ratio,
        "train_bs": args.train_bs,
        "eval_bs": args.eval_bs,
        "pairs": args.pairs,
        "d_model": args.d_model,
        "depth": args.depth,
        "heads": args.heads,
        "train_steps_per_s": round(steps, 2),
        "train_seqs_per_s": round(steps * args.train_bs, 1),
        "eval_seqs_per_s": round(evals * args.eval_bs, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }))


if __name__ == "__main__":
    main()
