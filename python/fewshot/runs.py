"""Training runs in-process and reading their metrics."""
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

from ._ffi import ffi, lib
from .core import FewshotError


def _progress_printer():
    """A compact progress line on stderr, at most twice a second."""
    state = {"t": 0.0}

    def show(p):
        now = time.monotonic()
        if now - state["t"] < 0.5 and p["step"] != p["total_steps"]:
            return
        state["t"] = now
        ev = f"  {p['eval_name']} acc {p['eval_acc']:.3f}" if p["eval_name"] else ""
        sys.stderr.write(f"\rstep {p['step']}/{p['total_steps']}  {p['iter']} seqs  "
                         f"{p['seqs_per_s']:.0f} seq/s  loss {p['loss']:.4f}{ev}   ")
        if p["step"] == p["total_steps"]:
            sys.stderr.write("\n")
        sys.stderr.flush()
    return show


def train(config, out=None, progress=True, resume=False, stop_after=0, threads=None):
    """Run a training run in this process (as `fewshot train`): config is a path to a
    config JSON or a dict of sections; out the run directory (default runs/<config file
    name>; required for a dict). progress: True (a line on stderr), False, or a callable
    receiving a dict (step, total_steps, iter, seqs_per_s, loss, eval_name, eval_acc).
    Ctrl-C writes a checkpoint, then raises KeyboardInterrupt (continue with resume=True).
    Returns the run directory."""
    if isinstance(config, dict):
        text, is_path = json.dumps(config).encode(), 0
        if out is None:
            raise ValueError("out: a run directory is required when the config is a dict")
    elif isinstance(config, (str, os.PathLike)):
        text, is_path = os.fsencode(config), 1
        if out is None:
            out = os.path.join("runs", Path(config).stem)
    else:
        raise ValueError(f"config: expected a path or a dict, got {type(config).__name__}")
    if threads is not None and (not isinstance(threads, int) or threads < 0):
        raise ValueError(f"threads: expected an integer >= 0 (0 = all cores), got {threads!r}")
    show = _progress_printer() if progress is True else progress if callable(progress) else None
    stop = ffi.new("int *")
    failure = []
    interrupted = []

    @ffi.callback("void(void *, int64_t, int64_t, int64_t, double, double, const char *, double)")
    def on_step(ctx, step, total, it, sps, loss, eval_name, eval_acc):
        # Runs between steps on this thread: Python signal handlers run here too.
        if show is None or failure:
            return
        try:
            show({"step": step, "total_steps": total, "iter": it, "seqs_per_s": sps, "loss": loss,
                  "eval_name": ffi.string(eval_name).decode() if eval_name else "", "eval_acc": eval_acc})
        except BaseException as e:  # stop the run cleanly, re-raise afterwards
            failure.append(e)
            stop[0] = 1

    def on_sigint(signum, frame):
        interrupted.append(signum)
        stop[0] = 1

    main = threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGINT, on_sigint) if main else None
    err = ffi.new("fs_error *")
    try:
        rc = lib.fs_api_train(text, is_path, os.fsencode(out), int(bool(resume)), int(stop_after),
                              -1 if threads is None else threads, stop, on_step, ffi.NULL, err)
    finally:
        if main:
            signal.signal(signal.SIGINT, old)
    if rc < 0:
        raise FewshotError(ffi.string(err.msg).decode("utf-8", "replace"))
    if failure:
        raise failure[0]
    if interrupted:
        raise KeyboardInterrupt(f"training stopped; checkpoint written in {out}/checkpoints "
                                "(continue with resume=True)")
    return str(out)


def read_metrics(run_dir, as_frame=None):
    """The lines of run_dir/metrics.jsonl as dicts (docs/formats.md). as_frame: True for a
    pandas DataFrame with the nested evals flattened ("evals.fsl_train.acc"), False for
    the list, None for a DataFrame when pandas is importable."""
    path = Path(run_dir) / "metrics.jsonl"
    rows = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{n}: not a JSON line ({e})") from None
    if as_frame is False:
        return rows
    try:
        import pandas
    except ImportError:
        if as_frame:
            raise
        return rows
    return pandas.json_normalize(rows)
