"""The Python API: shapes for several configs, argument checking (wrong dtype, shape or
order is a ValueError; the library's errors are FewshotError with its message), names
filters, clamps, interventions, patching, the KV classifier, models' lifetimes, and the
1,000-sequence attention-only cache with the binding's overhead."""
import gc
import re
import resource
import time

import numpy as np
import pytest

import fewshot
from conftest import ROOT
from fewshot._ffi import CDEF, ffi, lib


def rand_seqs(model, B, P, seed=0):
    rng = np.random.default_rng(seed)
    c = model.config
    ex = rng.standard_normal((B, P, c["input_dim"])).astype(np.float32) / np.sqrt(c["input_dim"])
    lab = rng.integers(0, c["num_classes"], (B, P))
    return ex, lab


def expected_shapes(c, P):
    """Per-sequence leaf shapes, written from docs/cache.md's table."""
    N, d, H, C, D = 2 * P - 1, c["d_model"], c["num_heads"], c["num_classes"], c["input_dim"]
    hd = d // H
    s = {"examples": (P, D), "labels": (P,), "example_embedding": (P, d), "onehot_labels": (P, C),
         "label_embedding": (P, d), "tok_embedding": (N, d), "embedding": (N, d), "transformer_output.x": (N, d),
         "transformer_output.pre_unembed": (N, d), "transformer_output.out": (N, d), "unembedding": (N, C),
         "out": (P, C)}
    if c["pos_embedding"] != "rope":
        s["pos_embedding"] = (N, d)
    for i in range(c["depth"]):
        b = f"transformer_output.block_outputs.{i}."
        for k in ["x", "norm_inp", "residual_post_attn", "norm_residual_post_attn", "mlp", "out"]:
            s[b + k] = (N, d)
        a = b + "attn_output."
        s[a + "qkv"] = (3, H, N, hd)
        for k in ["pre_rope_q", "pre_rope_k", "v", "q", "k"]:
            s[a + k] = (1, H, N, hd)
        for k in ["attn_pre_softmax", "attn_scores", "attn_post_drop"]:
            s[a + k] = (1, H, N, N)
        for k in ["x", "values_pre_proj", "values_post_proj", "out"]:
            s[a + k] = (N, d)
    return s


CONFIGS = [
    {},
    {"input_dim": 6, "num_classes": 3, "d_model": 8, "num_heads": 2, "depth": 1, "mlp_ratio": 2},
    {"input_dim": 16, "d_model": 32, "num_heads": 4, "depth": 3, "mlp_ratio": 0},
    {"input_dim": 10, "d_model": 16, "num_heads": 2, "pos_embedding": "ape", "qkv_bias": True},
    {"input_dim": 10, "num_classes": 7, "d_model": 24, "num_heads": 3, "pos_embedding": "sinusoidal"},
]


@pytest.mark.parametrize("cfg", CONFIGS)
@pytest.mark.parametrize("P", [1, 3, 7])
def test_shapes(cfg, P):
    m = fewshot.Model.init(cfg, seed=1)
    c = m.config
    B = 2
    ex, lab = rand_seqs(m, B, P)
    logits, cache = m.run_with_cache(ex, lab)
    assert logits.shape == (B, P, c["num_classes"]) and logits.dtype == np.float32
    want = expected_shapes(c, P)
    assert {k: v.shape[1:] for k, v in cache.items()} == want
    assert all(v.shape[0] == B for v in cache.values())
    assert cache["labels"].dtype == np.int32 and np.array_equal(cache["labels"], lab)
    assert np.array_equal(cache["out"], logits)
    # one sequence without the batch dimension: a batch of one
    l1, c1 = m.run_with_cache(ex[0], lab[0], names="out")
    assert np.allclose(l1[0], logits[0], rtol=1e-5, atol=1e-6) and list(c1) == ["out"]


def test_params_config_save_load(tmp_path):
    m = fewshot.Model.init({"input_dim": 6, "num_classes": 3, "d_model": 8, "num_heads": 2}, seed=3)
    p = m.params
    assert p["example_embed.weight"].shape == (8, 6) and p["unembed.weight"].shape == (3, 8)
    assert p["transformer.blocks.1.mlp.fc1.weight"].shape == (32, 8)
    assert m.config["init_seed"] == 3
    path = tmp_path / "m.safetensors"
    m.save(path)
    m2 = fewshot.Model.load(path)
    assert m2.config == m.config
    assert all(np.array_equal(p[k], v) for k, v in m2.params.items())
    ex, lab = rand_seqs(m, 3, 4)
    assert np.array_equal(m.run(ex, lab), m2.run(ex, lab))
    p["unembed.bias"][:] = 5  # params are copies
    assert not np.any(m.params["unembed.bias"] == 5)


def test_two_models_and_release():
    a = fewshot.Model.init(seed=1)
    b = fewshot.Model.init(seed=2)
    ex, lab = rand_seqs(a, 2, 3)
    la, lb = a.run(ex, lab), b.run(ex, lab)
    assert not np.array_equal(la, lb)
    assert np.array_equal(la, fewshot.Model.init(seed=1).run(ex, lab))
    # create and release many models (with layouts, clamps and KV caches): memory stays flat
    def churn(n):
        for i in range(n):
            m = fewshot.Model.init(seed=i)
            m.run_with_clamps(ex, lab, cache={"embedding": np.zeros((5, 64), np.float32)})
            fewshot.KVClassifier(m, ex[0], lab[0]).classify(ex[1])
            del m
        gc.collect()
    churn(20)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    churn(300)  # 300 models of 0.5 MB of parameters each
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 20, f"peak RSS grew by {grown_mb:.1f} MB over 300 create/free cycles"


def test_wrong_arrays_are_value_errors(doc_batch):
    m = fewshot.Model.init()
    ex, lab = doc_batch
    cases = [
        (ex.astype(np.float64), lab, "dtype float32"),
        (ex.tolist(), lab, "numpy array"),
        (ex[..., :100], lab, "last dimension must be 512"),
        (np.asfortranarray(ex[0]), lab[0], "C-contiguous"),
        (ex[:, ::2], lab[:, ::2], "C-contiguous"),
        (ex[0, 0], lab[0, 0:1], "2-d or 3-d"),
        (ex, lab.astype(np.float32), "integer dtype"),
        (ex, lab[:, :2], "labels: expected shape"),
        (ex, lab[:3], "labels: expected shape"),
    ]
    for e, l, msg in cases:
        with pytest.raises(ValueError, match=msg):
            m.run_with_cache(e, l)
    with pytest.raises(ValueError, match="matches no cache leaf"):
        m.run_with_cache(ex, lab, names=["*attn_scorez"])
    with pytest.raises(ValueError, match="no such leaf"):
        m.run_with_clamps(ex, lab, cache={"embeding": np.zeros((5, 64), np.float32)})
    with pytest.raises(ValueError, match=r"expected shape \(5, 64\)"):
        m.run_with_clamps(ex, lab, cache={"embedding": np.zeros((5, 63), np.float32)})
    with pytest.raises(ValueError, match="dtype float32"):
        m.run_with_clamps(ex, lab, cache={"embedding": np.zeros((5, 64))})
    with pytest.raises(ValueError, match="dtype bool"):
        m.run_with_clamps(ex, lab, cache={"embedding": np.zeros((5, 64), np.float32)},
                          mask={"embedding": np.ones((5, 64), np.float32)})
    with pytest.raises(ValueError, match="seed"):
        fewshot.Model.init(seed=-1)
    with pytest.raises(ValueError, match="queries"):
        fewshot.KVClassifier(m, ex[0], lab[0]).classify(ex[0].astype(np.float64))


def test_library_errors_are_exceptions_with_its_message(doc_batch, tmp_path):
    m = fewshot.Model.init()
    ex, lab = doc_batch
    bad = lab.copy()
    bad[1, 2] = 5
    with pytest.raises(fewshot.FewshotError, match=r"labels\[1\]\[2\] = 5 is out of range"):
        m.run(ex, bad)
    nan = ex.copy()
    nan[0, 1, 7] = np.nan
    with pytest.raises(fewshot.FewshotError, match=r"examples\[0\]\[1\]\[7\] is not a finite number"):
        m.run(nan, lab)
    with pytest.raises(fewshot.FewshotError, match=r"ablate_heads\[0\]: layer 2 out of range"):
        m.run_with_interventions(ex, lab, {"ablate_heads": ["2:0"]})
    with pytest.raises(fewshot.FewshotError, match="unknown key"):
        m.run_with_interventions(ex, lab, {"ablate_head": ["1:0"]})
    with pytest.raises(fewshot.FewshotError, match="num_heads"):
        fewshot.Model.init({"d_model": 64, "num_heads": 7})
    with pytest.raises(fewshot.FewshotError, match="cannot open|No such file"):
        fewshot.Model.load(tmp_path / "missing.safetensors")
    per_seq = {"embedding": np.zeros((3, 5, 64), np.float32)}
    with pytest.raises(fewshot.FewshotError, match="3 sequences but the input has 4"):
        m.run_with_clamps(ex, lab, cache=per_seq)


def test_names_filters(doc_batch):
    m = fewshot.Model.init()
    ex, lab = doc_batch
    _, all_leaves = m.run_with_cache(ex, lab)
    _, c1 = m.run_with_cache(ex, lab, names="*.attn_output.attn_scores")
    _, c2 = m.run_with_cache(ex, lab, names=lambda n: n.endswith("attn_scores"))
    _, c3 = m.run_with_cache(ex, lab, names=["transformer_output.block_outputs[1].attn_output.attn_scores",
                                             "transformer_output.block_outputs.0.attn_output.attn_scores"])
    assert list(c1) == list(c2) == list(c3) == [f"transformer_output.block_outputs.{i}.attn_output.attn_scores"
                                               for i in range(2)]
    for k in c1:
        assert np.array_equal(c1[k], all_leaves[k])
    tree = all_leaves.tree()
    assert tree["pos_embedding" if "pos_embedding" in tree else "embedding"] is not None
    assert np.array_equal(tree["transformer_output"]["block_outputs"][1]["attn_output"]["v"],
                          all_leaves["transformer_output.block_outputs.1.attn_output.v"])
    assert c1.tree()["transformer_output"]["block_outputs"][0]["attn_output"].keys() == {"attn_scores"}


def test_clamps_shared_and_per_sequence(doc_batch):
    m = fewshot.Model.init()
    ex, lab = doc_batch
    name = "transformer_output.block_outputs.1.attn_output.v"
    base, cache = m.run_with_cache(ex, lab, names=name)
    zero = np.zeros((1, 8, 5, 8), np.float32)
    mask = np.zeros((1, 8, 5, 8), bool)
    mask[0, 7] = True
    ablated = m.run_with_clamps(ex, lab, cache={name: zero}, mask={name: mask})
    assert np.array_equal(ablated, m.run_with_interventions(ex, lab, {"ablate_heads": ["1:7"]}))
    assert not np.array_equal(ablated, base)
    # per sequence: sequence b's own values clamp nothing away
    same = m.run_with_clamps(ex, lab, cache={name: cache[name]})
    assert np.array_equal(same, base)
    # per-sequence clamp of sequence 0's values everywhere else: the leaf equals it
    vals = np.repeat(cache[name][:1], 4, axis=0)
    _, c = m.run_with_clamps(ex, lab, cache={name: vals}, names=name)
    assert np.array_equal(c[name], vals)


def test_patch(doc_batch):
    m = fewshot.Model.init()
    ex, lab = doc_batch
    rng = np.random.default_rng(3)
    ex2 = (ex + 0.5 * rng.standard_normal(ex.shape)).astype(np.float32)
    clean, corrupted = m.run(ex, lab), m.run(ex2, lab)
    out = m.patch((ex, lab), (ex2, lab), ["embedding", "transformer_output.block_outputs.1.attn_output.v"])
    assert set(out) == {"embedding", "transformer_output.block_outputs.1.attn_output.v"}
    assert np.array_equal(out["embedding"], clean)  # everything downstream of the embedding is clean
    patched_v = out["transformer_output.block_outputs.1.attn_output.v"]
    assert not np.array_equal(patched_v, clean) and not np.array_equal(patched_v, corrupted)


def test_loss_and_grads_match_finite_differences():
    m = fewshot.Model.init({"input_dim": 6, "num_classes": 3, "d_model": 8, "num_heads": 2, "depth": 1}, seed=4)
    ex, lab = rand_seqs(m, 3, 3, seed=5)
    loss, g = m.loss_and_grads(ex, lab, weight_decay=0.01)
    loss0, g0 = m.loss_and_grads(ex, lab)
    assert loss > loss0 and set(g) == set(m.params)
    assert np.abs(g["unembed.bias"]).max() > 0
    assert not np.array_equal(g["unembed.weight"], g0["unembed.weight"])  # weight decay term
    # the unembedding bias enters the logits directly: its gradient is mean(softmax - onehot)
    z = m.run(ex, lab)[:, -1].astype(np.float64)
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    want = (p - np.eye(3)[lab[:, -1]]).mean(0)
    assert np.allclose(g0["unembed.bias"], want, atol=1e-6)


def test_kv_classifier_matches_the_forward(doc_batch):
    m = fewshot.Model.init()
    ex, lab = doc_batch
    kv = fewshot.KVClassifier(m, ex[0, :2], lab[0, :2])
    queries = np.ascontiguousarray(ex[:, 2])
    logits = kv.classify(queries)
    for b in range(4):
        seq = np.concatenate([ex[0, :2], ex[b, 2:3]])
        full = m.run(seq, np.array([lab[0, 0], lab[0, 1], 0]))[0, -1]
        assert np.allclose(logits[b], full, atol=1e-5)
    with pytest.raises(fewshot.FewshotError, match="out of range"):
        fewshot.KVClassifier(m, ex[0, :2], np.array([0, 9]))


def test_cache_of_1000_sequences_attention_only_and_binding_overhead():
    m = fewshot.Model.init()
    ex, lab = rand_seqs(m, 1000, 3, seed=7)
    names = "*.attn_scores"
    logits, cache = m.run_with_cache(ex, lab, names=names)
    assert list(cache) == [f"transformer_output.block_outputs.{i}.attn_output.attn_scores" for i in range(2)]
    for a in cache.values():
        assert a.shape == (1000, 1, 8, 5, 5) and a.flags.owndata and a.base is None
        assert np.allclose(a.sum(-1), 1, atol=1e-5)
        assert np.all(np.triu(a[:, 0], 1) == 0)  # causal
    # each sequence's rows are its own: the last 10 sequences alone give the same values (up
    # to the last bits, which depend on how many rows the matrix kernels see at once)
    l10, c10 = m.run_with_cache(ex[-10:], lab[-10:], names=names)
    assert np.allclose(l10, logits[-10:], rtol=1e-5, atol=1e-6)
    assert all(np.allclose(c10[k], cache[k][-10:], rtol=1e-5, atol=1e-6) for k in cache)
    # overhead: the Python call against the bare C call doing the same work (same leaves)
    layout = m._layout(3)
    sel = layout.select(names)
    outs = [np.empty((1000,) + layout.shapes[i], np.float32) for i in sel]
    out_logits = np.empty_like(logits)
    sel_c = ffi.new("int[]", sel)
    outs_c = ffi.new("float *[]", [ffi.cast("float *", a.ctypes.data) for a in outs])
    lab32 = lab.astype(np.int32)
    err = ffi.new("fs_error *")

    def bare():
        assert lib.fs_api_run(m._h, ffi.cast("float *", ex.ctypes.data), ffi.cast("int32_t *", lab32.ctypes.data),
                              1000, 3, ffi.NULL, ffi.NULL, sel_c, len(sel), outs_c,
                              ffi.cast("float *", out_logits.ctypes.data), err) == 0

    # interleaved, best of many: the machine may be shared, and both sides see the same load
    t_c, t_py = float("inf"), float("inf")
    for _ in range(25):
        t = time.perf_counter()
        bare()
        t_c = min(t_c, time.perf_counter() - t)
        t = time.perf_counter()
        m.run_with_cache(ex, lab, names=names)
        t_py = min(t_py, time.perf_counter() - t)
    print(f"\n1000 sequences, attention scores only: C {t_c * 1e3:.2f} ms, Python API {t_py * 1e3:.2f} ms, "
          f"ratio {t_py / t_c:.2f}")
    assert t_py <= 2 * t_c + 2e-3, f"binding overhead: {t_py * 1e3:.2f} ms vs {t_c * 1e3:.2f} ms in C"


def test_every_api_function_is_bound():
    """The binding reads include/fewshot/api.h: every function declared there is callable."""
    names = set(re.findall(r"\b(fs_api_[a-z_]+)\(", (ROOT / "include" / "fewshot" / "api.h").read_text()))
    assert len(names) >= 20 and "fs_api_run" in CDEF
    for n in names:
        assert callable(getattr(lib, n)), n
