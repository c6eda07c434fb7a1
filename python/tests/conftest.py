"""Shared helpers: golden files (tests/golden) and numpy conversions. Run from anywhere:
paths are relative to the repository root."""
import json
import struct
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden"


def load_json(path):
    with open(path) as f:
        return json.load(f)


def read_safetensors(path):
    """{name: float32 array} of an F32 safetensors file."""
    data = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        assert t["dtype"] == "F32"
        a, b = t["data_offsets"]
        out[name] = np.frombuffer(data[8 + n + a:8 + n + b], np.float32).reshape(t["shape"])
    return out


def is_leaf(v):
    """A JSON leaf: a number, a bool, or a (nested) list of them."""
    while isinstance(v, list) and v:
        v = v[0]
    return not isinstance(v, (dict, list)) or v == []


def flatten_json(tree, prefix=""):
    """A golden cache tree as {dotted name: array} (None for null leaves); {} blocks skipped."""
    out = {}
    items = tree.items() if isinstance(tree, dict) else enumerate(tree)
    for k, v in items:
        name = f"{prefix}.{k}" if prefix else str(k)
        if v is None:
            out[name] = None
        elif isinstance(v, (dict, list)) and not (isinstance(v, list) and is_leaf(v)):
            out.update(flatten_json(v, name))
        else:
            a = np.array(v)
            out[name] = a.astype(bool) if a.dtype == bool else a.astype(np.float32)
    return out


def close(got, want, rtol=1e-4, atol=1e-4):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return got.shape == want.shape and bool(np.all(np.abs(got - want) <= atol + rtol * np.maximum(np.abs(got), np.abs(want))))


def sequences(path):
    d = load_json(path)
    return np.array(d["examples"], np.float32), np.array(d["labels"], np.int64)


@pytest.fixture
def doc_batch():
    return sequences(ROOT / "datasets" / "examples" / "batch_doc.json")
