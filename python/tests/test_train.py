"""fewshot.train in-process: the same run as the CLI, progress, stop_after and resume,
Ctrl-C, errors; read_metrics."""
import json
import os
import signal
import subprocess
import sys
import types

import pytest

import fewshot
from conftest import ROOT

TINY = {
    "model": {"d_model": 16, "num_heads": 2, "depth": 2, "mlp_ratio": 2, "init_seed": 5},
    "data": {"file": str(ROOT / "datasets" / "synth_small.h5"), "class_split": [100, 50, 50],
             "exemplar_split": [3, 2, 0], "fs_relabel": 5, "fs_relabel_split": [8, 2, 0]},
    "train": {"train_iters": 3200, "train_bs": 16, "train_context_len": 2, "lr": 0.001, "train_seed": 0,
              "eval_every": 800, "log_every": 320, "ckpt_every": 1600, "threads": 2},
    "eval": {"eval_seed": 1, "eval_iters": 100,
             "evaluators": [{"name": "fsl_train"}, {"name": "fsl_val_rl", "fs_relabel_scheme": "val"}]},
}


def fewshot_bin():
    return os.environ.get("FEWSHOT_BIN", str(ROOT / "fewshot"))


def test_same_run_as_the_cli(tmp_path):
    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps(TINY))
    seen = []
    out = fewshot.train(TINY, out=tmp_path / "py", progress=seen.append)
    assert out == str(tmp_path / "py")
    assert seen[-1]["step"] == seen[-1]["total_steps"] == 200 and seen[-1]["iter"] == 3200
    assert seen[-1]["eval_name"] == "fsl_train" and 0 <= seen[-1]["eval_acc"] <= 1
    subprocess.run([fewshot_bin(), "train", "--config", str(cfg), "--out", str(tmp_path / "cli"), "--no-progress"],
                   check=True, capture_output=True)
    py, cli = (tmp_path / "py" / "metrics.jsonl").read_text(), (tmp_path / "cli" / "metrics.jsonl").read_text()
    assert py == cli
    rows = fewshot.read_metrics(tmp_path / "py", as_frame=False)
    assert rows[0] == {**rows[0], "type": "eval", "iter": 0}
    assert {r["type"] for r in rows} == {"train", "eval"} and rows[-1]["iter"] == 3200
    assert set(rows[-1]["evals"]) == {"fsl_train", "fsl_val_rl"}
    # a path works too, with the default progress line on stderr
    fewshot.train(cfg, out=tmp_path / "path", progress=True, stop_after=320)
    assert (tmp_path / "path" / "checkpoints" / "step_00000020.safetensors").exists()


def test_stop_after_then_resume_equals_one_run(tmp_path):
    fewshot.train(TINY, out=tmp_path / "a", progress=False)
    fewshot.train(TINY, out=tmp_path / "b", progress=False, stop_after=1000)
    with pytest.raises(fewshot.FewshotError, match="already holds checkpoints"):
        fewshot.train(TINY, out=tmp_path / "b", progress=False)
    fewshot.train(TINY, out=tmp_path / "b", progress=False, resume=True)
    assert (tmp_path / "a" / "metrics.jsonl").read_text() == (tmp_path / "b" / "metrics.jsonl").read_text()
    a = fewshot.Model.load(tmp_path / "a" / "checkpoints" / "step_00000200.safetensors")
    b = fewshot.Model.load(tmp_path / "b" / "checkpoints" / "step_00000200.safetensors")
    assert all((a.params[k] == v).all() for k, v in b.params.items())


def test_errors(tmp_path):
    with pytest.raises(ValueError, match="out"):
        fewshot.train(TINY)
    with pytest.raises(fewshot.FewshotError, match="train.lr"):
        fewshot.train({**TINY, "train": {**TINY["train"], "lr": "fast"}}, out=tmp_path / "x", progress=False)
    with pytest.raises(fewshot.FewshotError, match="no_such.h5"):
        fewshot.train({**TINY, "data": {**TINY["data"], "file": "no_such.h5"}}, out=tmp_path / "y", progress=False)

    def boom(p):
        if p["step"] == 30:
            raise RuntimeError("callback failed")
    with pytest.raises(RuntimeError, match="callback failed"):
        fewshot.train(TINY, out=tmp_path / "z", progress=boom)
    assert list((tmp_path / "z" / "checkpoints").glob("step_*.safetensors")), "stopped with a checkpoint"


def test_ctrl_c_checkpoints_and_raises(tmp_path):
    def interrupt(p):
        if p["step"] == 40:
            os.kill(os.getpid(), signal.SIGINT)
    with pytest.raises(KeyboardInterrupt, match="resume=True"):
        fewshot.train(TINY, out=tmp_path / "r", progress=interrupt)
    ckpts = sorted((tmp_path / "r" / "checkpoints").glob("step_*.safetensors"))
    # the signal arrives in the callback after step 40; the run stops after the step under way
    assert ckpts and ckpts[-1].name == "step_00000041.safetensors"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    fewshot.train(TINY, out=tmp_path / "r", progress=False, resume=True)
    assert fewshot.read_metrics(tmp_path / "r", as_frame=False)[-1]["iter"] == 3200


def test_read_metrics_frame_with_pandas(tmp_path, monkeypatch):
    (tmp_path / "metrics.jsonl").write_text('{"type":"train","iter":32,"loss":1.5}\n')
    fake = types.SimpleNamespace(json_normalize=lambda rows: ("frame", rows))
    monkeypatch.setitem(sys.modules, "pandas", fake)
    assert fewshot.read_metrics(tmp_path) == ("frame", [{"type": "train", "iter": 32, "loss": 1.5}])
    monkeypatch.setitem(sys.modules, "pandas", None)  # not importable
    assert fewshot.read_metrics(tmp_path) == [{"type": "train", "iter": 32, "loss": 1.5}]
    (tmp_path / "metrics.jsonl").write_text("{not json\n")
    with pytest.raises(ValueError, match="metrics.jsonl:1"):
        fewshot.read_metrics(tmp_path, as_frame=False)
