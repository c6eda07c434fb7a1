"""The golden files of the reference implementation (tests/golden), through the Python
API: every cache leaf, clamp results, gradients and clamped gradients, with the C tests'
tolerances (1e-4 abs + 1e-4 rel on caches; 1e-4 of each tensor's max magnitude on
gradients)."""
import numpy as np
import pytest

import fewshot
from conftest import GOLDEN, close, flatten_json, load_json, read_safetensors, sequences

MODELS = ["doc", "attn_only", "ape", "sinusoidal"]
CLAMPS = ["ablate_value_head", "clamp_attn_row", "preserve_patterns_ablate", "zero_query_token"]


def golden_model(name):
    return fewshot.Model.load(GOLDEN / name / "params.safetensors", config=load_json(GOLDEN / name / "config.json"))


def check_cache(cache, want_tree, what):
    want = {k: v for k, v in flatten_json(want_tree).items() if v is not None}
    assert set(cache) == set(want), f"{what}: leaves differ: {sorted(set(cache) ^ set(want))[:5]}"
    for name, w in want.items():
        got = cache[name][0]
        assert close(got, w), f"{what}: {name}: max |diff| {np.max(np.abs(got - w)):.3g}"
    return len(want)


@pytest.mark.parametrize("name", MODELS)
def test_forward_caches(name):
    m = golden_model(name)
    files = sorted((GOLDEN / name).glob("forward_*.json"))
    assert len(files) >= 2
    for f in files:
        d = load_json(f)
        ex, lab = np.array(d["examples"], np.float32), np.array(d["labels"])
        logits, cache = m.run_with_cache(ex, lab)
        n = check_cache(cache, d["cache"], f.name)
        assert n >= 50, f"{f.name}: only {n} leaves compared"
        assert close(logits[0], np.array(d["cache"]["out"], np.float32))


@pytest.mark.parametrize("name", ["doc", "attn_only"])
@pytest.mark.parametrize("clamp", CLAMPS)
def test_clamp_results(name, clamp):
    m = golden_model(name)
    d = load_json(GOLDEN / name / f"clamp_{clamp}.json")
    ex, lab = np.array(d["examples"], np.float32), np.array(d["labels"])
    values = {k: v for k, v in flatten_json(d["cache"]).items() if v is not None}
    masks = {k: v for k, v in flatten_json(d["cache_mask"]).items() if v is not None}
    assert values and set(values) == set(masks)
    logits, cache = m.run_with_clamps(ex, lab, cache=values, mask=masks, names=lambda n: True)
    check_cache(cache, d["result"], f"clamp_{clamp}")
    # the nested trees work as well as the flat dicts
    logits2 = m.run_with_clamps(ex, lab, cache=_arrays(d["cache"]), mask=_arrays(d["cache_mask"], bool))
    assert np.array_equal(logits, logits2)


def _arrays(tree, dtype=np.float32):
    if isinstance(tree, dict):
        return {k: _arrays(v, dtype) for k, v in tree.items()}
    if isinstance(tree, list) and tree and isinstance(tree[0], dict):
        return [_arrays(v, dtype) for v in tree]
    return np.array(tree, dtype)


def check_grads(grads, path):
    want = read_safetensors(path)
    assert set(grads) == set(want)
    for k, w in want.items():
        scale = max(float(np.max(np.abs(w))), 1e-30)
        assert np.max(np.abs(grads[k] - w)) <= 1e-4 * scale, f"{path.name}: {k}"


@pytest.mark.parametrize("name", MODELS)
def test_grads(name):
    m = golden_model(name)
    ex, lab = sequences(GOLDEN / name / "grad.json")
    loss, grads = m.loss_and_grads(ex, lab)
    want = load_json(GOLDEN / name / "grad.json")["loss"]
    assert abs(loss - want) <= 1e-5 * max(1, abs(want))
    check_grads(grads, GOLDEN / name / "grads.safetensors")


@pytest.mark.parametrize("name", ["doc", "attn_only"])
@pytest.mark.parametrize("clamp", CLAMPS)
def test_clamp_grads(name, clamp):
    m = golden_model(name)
    ex, lab = sequences(GOLDEN / name / "grad.json")
    d = load_json(GOLDEN / name / f"clamp_{clamp}.json")
    values = {k: v for k, v in flatten_json(d["cache"]).items() if v is not None}
    masks = {k: v for k, v in flatten_json(d["cache_mask"]).items() if v is not None}
    loss, grads = m.loss_and_grads(ex, lab, cache=values, mask=masks)
    want = load_json(GOLDEN / name / f"clamp_grads_{clamp}.json")["loss"]
    assert abs(loss - want) <= 1e-5 * max(1, abs(want))
    check_grads(grads, GOLDEN / name / f"clamp_grads_{clamp}.safetensors")
