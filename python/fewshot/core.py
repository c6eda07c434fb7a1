"""Models, activation caches, clamps and the frozen KV classifier over the C library."""
import fnmatch
import json
import os
import re

import numpy as np

from ._ffi import ffi, lib


class FewshotError(RuntimeError):
    """An error reported by the C library; the message names the field and what was expected."""


def _call(fn, *args):
    """Call a fallible C function with a fresh fs_error as its last argument."""
    err = ffi.new("fs_error *")
    if fn(*args, err) != 0:
        raise FewshotError(ffi.string(err.msg).decode("utf-8", "replace"))


def _ptr(ctype, a):
    return ffi.cast(ctype, a.ctypes.data)


def _json_or_none(obj, what):
    if obj is None:
        return ffi.NULL
    if not isinstance(obj, dict):
        raise ValueError(f"{what}: expected a dict, got {type(obj).__name__}")
    return json.dumps(obj).encode()


def _array(a, name, dtype, ndims, last=None):
    """A numpy array of exactly `dtype`, C-contiguous, with a rank in `ndims` (no copies:
    anything else is a ValueError naming the argument)."""
    if not isinstance(a, np.ndarray):
        raise ValueError(f"{name}: expected a numpy array, got {type(a).__name__}")
    if a.dtype != dtype:
        raise ValueError(f"{name}: expected dtype {np.dtype(dtype).name}, got {a.dtype.name} "
                         f"(convert with .astype(np.{np.dtype(dtype).name}))")
    if a.ndim not in ndims:
        want = " or ".join(f"{n}-d" for n in ndims)
        raise ValueError(f"{name}: expected a {want} array, got shape {a.shape}")
    if last is not None and a.shape[-1] != last:
        raise ValueError(f"{name}: the last dimension must be {last} (the model's input_dim), got shape "
                         f"{a.shape}; see docs/formats.md, inputs for a model of another size")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name}: expected a C-contiguous array (use np.ascontiguousarray)")
    return a


def _labels(labels, name="labels"):
    """Integer labels as int32 (any integer dtype is accepted; floats are a ValueError)."""
    if not isinstance(labels, np.ndarray):
        raise ValueError(f"{name}: expected a numpy array of integers, got {type(labels).__name__}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{name}: expected an integer dtype, got {labels.dtype.name}")
    if labels.dtype != np.int32:
        if labels.size and (labels.min() < np.iinfo(np.int32).min or labels.max() > np.iinfo(np.int32).max):
            raise ValueError(f"{name}: values outside the int32 range")
        labels = labels.astype(np.int32)
    return np.ascontiguousarray(labels)


def _sequences(model, examples, labels):
    """(examples [B,P,D] float32, labels [B,P] int32, B, P); single sequences get B = 1."""
    D = model.config["input_dim"]
    ex = _array(examples, "examples", np.float32, (2, 3), last=D)
    lab = _labels(labels)
    if ex.ndim == 2:
        ex = ex[None]
    if lab.ndim == 1:
        lab = lab[None]
    if lab.ndim != 2 or lab.shape != ex.shape[:2]:
        raise ValueError(f"labels: expected shape {ex.shape[:2]} (or {ex.shape[1:2]} for one sequence) "
                         f"matching examples {examples.shape}, got {labels.shape}")
    return ex, lab, ex.shape[0], ex.shape[1]


_INDEX = re.compile(r"\[(\d+)\]")


def _dotted(name):
    """Accept the JSON-path spelling too: block_outputs[1] -> block_outputs.1."""
    return _INDEX.sub(r".\1", name)


class _Layout:
    """The cache leaves of a model for sequences of P pairs (names, shapes)."""

    def __init__(self, model, P):
        out = ffi.new("fs_api_layout **")
        _call(lib.fs_api_layout_create, model._h, P, out)
        self._h = ffi.gc(out[0], lib.fs_api_layout_free)  # holds its own copy of the config
        self.P = P
        self.names = []
        self.shapes = []
        shape = ffi.new("int64_t[4]")
        for i in range(lib.fs_api_layout_count(self._h)):
            self.names.append(ffi.string(lib.fs_api_layout_name(self._h, i)).decode())
            rank = lib.fs_api_layout_shape(self._h, i, shape)
            self.shapes.append(None if rank < 0 else tuple(shape[k] for k in range(rank)))
        self.index = {n: i for i, n in enumerate(self.names)}

    def select(self, names):
        """Indices of the non-null leaves that `names` selects: None (all), a glob or a list
        of globs over the dotted names, or a callable name -> bool."""
        if names is None:
            keep = lambda n: True  # noqa: E731
        elif callable(names):
            keep = names
        else:
            pats = [names] if isinstance(names, str) else list(names)
            if not all(isinstance(p, str) for p in pats):
                raise ValueError("names: expected a glob, a list of globs or a callable")
            pats = [_dotted(p) for p in pats]
            for p in pats:
                if not any(fnmatch.fnmatchcase(n, p) for n in self.names):
                    raise ValueError(f"names: '{p}' matches no cache leaf (e.g. "
                                     f"'transformer_output.block_outputs.*.attn_output.attn_scores')")
            keep = lambda n: any(fnmatch.fnmatchcase(n, p) for p in pats)  # noqa: E731
        return [i for i, n in enumerate(self.names) if self.shapes[i] is not None and keep(n)]


class Cache(dict):
    """Activations by dotted leaf path, each a float32 array with the batch leading
    (`labels` as int32); `tree()` gives the nested form of `fewshot cache`'s JSON dump."""

    def tree(self):
        root = {}
        for name, value in self.items():
            parts = name.split(".")
            node = root
            for p in parts[:-1]:
                node = node.setdefault(p, {})
            node[parts[-1]] = value
        return _lists(root)


def _lists(node):
    """Dicts keyed "0", "1", ... become lists (block_outputs); missing blocks become {}."""
    if not isinstance(node, dict):
        return node
    node = {k: _lists(v) for k, v in node.items()}
    if node and all(k.isdigit() for k in node):
        out = [{} for _ in range(max(int(k) for k in node) + 1)]
        for k, v in node.items():
            out[int(k)] = v
        return out
    return node


def _flatten(tree, prefix=""):
    """A dict of dotted names -> values, from a flat dict or a nested cache tree."""
    out = {}
    if isinstance(tree, dict):
        items = tree.items()
    elif isinstance(tree, (list, tuple)):
        items = ((str(i), v) for i, v in enumerate(tree))
    else:
        return {prefix: tree}
    for k, v in items:
        name = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, (dict, list, tuple)):
            out.update(_flatten(v, name))
        else:
            out[_dotted(name)] = v
    return out


class Model:
    """A fewshot model (docs/model.md). Create with Model.init or Model.load; the memory is
    released when the object is garbage-collected."""

    def __init__(self, handle):
        self._h = ffi.gc(handle, lib.fs_api_model_free)
        text = lib.fs_api_model_config(self._h)
        try:
            self._config = json.loads(ffi.string(text).decode())
        finally:
            lib.fs_api_free(text)
        self._layouts = {}

    @staticmethod
    def _config_json(config):
        if config is None:
            return ffi.NULL
        if not isinstance(config, dict):
            raise ValueError(f"config: expected a dict, got {type(config).__name__}")
        sections = {"model", "data", "train", "eval", "clamps"}
        if not set(config) <= sections:  # a bare model section
            config = {"model": config}
        return json.dumps(config).encode()

    @classmethod
    def init(cls, config=None, seed=0):
        """A freshly initialised model: config is a model section (or a run config with a
        "model" section), None for the documented model; seed replaces model.init_seed."""
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed: expected an integer >= 0, got {seed!r}")
        out = ffi.new("fs_api_model **")
        _call(lib.fs_api_model_init, cls._config_json(config), int(seed), out)
        return cls(out[0])

    @classmethod
    def load(cls, path, config=None):
        """A model or training checkpoint (.safetensors); config only for files without one."""
        out = ffi.new("fs_api_model **")
        _call(lib.fs_api_model_load, os.fsencode(path), cls._config_json(config), out)
        return cls(out[0])

    def save(self, path):
        _call(lib.fs_api_model_save, self._h, os.fsencode(path))

    @property
    def config(self):
        """The model config (a copy, as a dict)."""
        return dict(self._config)

    @property
    def params(self):
        """Every parameter tensor by its safetensors name, as new float32 arrays."""
        out = {}
        ndim, shape = ffi.new("int *"), ffi.new("int64_t[2]")
        for i in range(lib.fs_api_param_count(self._h)):
            name = ffi.string(lib.fs_api_param_info(self._h, i, ndim, shape)).decode()
            a = np.empty(tuple(shape[k] for k in range(ndim[0])), np.float32)
            lib.fs_api_param_copy(self._h, i, _ptr("float *", a))
            out[name] = a
        return out

    def _layout(self, P):
        if P not in self._layouts:
            self._layouts[P] = _Layout(self, P)
        return self._layouts[P]

    def _clamps(self, layout, B, cache, mask):
        """An fs_api_clamps from cache (and mask) trees or dicts; None when cache is None."""
        if cache is None:
            if mask is not None:
                raise ValueError("mask given without cache")
            return None
        values = _flatten(cache)
        masks = _flatten(mask) if mask is not None else {}
        unknown = set(masks) - set(values)
        if unknown:
            raise ValueError(f"mask: {sorted(unknown)[0]}: no value for this leaf in cache")
        out = ffi.new("fs_api_clamps **")
        _call(lib.fs_api_clamps_create, layout._h, out)
        handle = ffi.gc(out[0], lib.fs_api_clamps_free)
        for name, v in values.items():
            if name not in layout.index:
                raise ValueError(f"cache: {name}: no such leaf (names look like "
                                 "'transformer_output.block_outputs.0.attn_output.v')")
            i = layout.index[name]
            shape = layout.shapes[i]
            if shape is None:
                raise ValueError(f"cache: {name}: this leaf is null for this model")
            v = _array(v, f"cache[{name!r}]", np.float32, (len(shape), len(shape) + 1))
            batched = v.ndim == len(shape) + 1
            if v.shape[batched:] != shape:
                raise ValueError(f"cache[{name!r}]: expected shape {shape} or (B,) + {shape}, got {v.shape}")
            m = masks.get(name, True)
            if isinstance(m, (bool, np.bool_)):
                m = np.full(v.shape, bool(m))
            m = _array(m, f"mask[{name!r}]", np.bool_, (v.ndim,))
            if m.shape != v.shape:
                raise ValueError(f"mask[{name!r}]: expected the shape of its value {v.shape}, got {m.shape}")
            _call(lib.fs_api_clamps_set, handle, i, _ptr("float *", v), _ptr("uint8_t *", m.view(np.uint8)),
                  v.shape[0] if batched else 0)
        return handle

    def _run(self, examples, labels, names, cache=None, mask=None, interventions=None):
        ex, lab, B, P = _sequences(self, examples, labels)
        layout = self._layout(P)
        sel = layout.select(names) if names is not None else []
        clamps = self._clamps(layout, B, cache, mask)
        C = self._config["num_classes"]
        logits = np.empty((B, P, C), np.float32)
        outs = [np.empty((B,) + layout.shapes[i], np.float32) for i in sel]
        sel_c = ffi.new("int[]", sel or [0])
        outs_c = ffi.new("float *[]", [_ptr("float *", a) for a in outs] or [ffi.NULL])
        _call(lib.fs_api_run, self._h, _ptr("float *", ex), _ptr("int32_t *", lab), B, P,
              clamps if clamps is not None else ffi.NULL, _json_or_none(interventions, "interventions"),
              sel_c, len(sel), outs_c, _ptr("float *", logits))
        result = Cache()
        for i, a in zip(sel, outs):
            result[layout.names[i]] = a.astype(np.int32) if layout.names[i] == "labels" else a
        return logits, result

    def run(self, examples, labels):
        """Logits `out` [B, P, C] (out[:, -1] are the query's)."""
        return self._run(examples, labels, None)[0]

    def run_with_cache(self, examples, labels, names=None):
        """(logits [B, P, C], Cache) for examples [B, P, D] (or [P, D]) float32 and integer
        labels [B, P] (or [P]). names: None for every leaf, a glob or list of globs over the
        dotted leaf names, or a callable name -> bool (like TransformerLens' names_filter)."""
        return self._run(examples, labels, names if names is not None else (lambda n: True))

    def run_with_clamps(self, examples, labels, cache, mask=None, names=None):
        """Logits with clamped activations (docs/cache.md): cache maps leaves (dotted names,
        or a nested tree) to float32 values of the leaf's shape, or (B,) + shape for
        per-sequence values; mask maps the same leaves to bool arrays (default: the whole
        leaf). With names, returns (logits, Cache) of the clamped run."""
        logits, c = self._run(examples, labels, names, cache=cache, mask=mask)
        return (logits, c) if names is not None else logits

    def run_with_interventions(self, examples, labels, interventions, cache=None, mask=None, names=None):
        """Logits with named interventions held on, e.g. {"ablate_heads": ["1:7"]} (README
        "Named interventions"), on top of optional clamps. With names: (logits, Cache)."""
        if not isinstance(interventions, dict):
            raise ValueError("interventions: expected a dict such as {'ablate_heads': ['1:7']}")
        logits, c = self._run(examples, labels, names, cache=cache, mask=mask, interventions=interventions)
        return (logits, c) if names is not None else logits

    def patch(self, clean, corrupted, names):
        """Activation patching: for each leaf `names` selects, the corrupted run with that
        whole leaf replaced by the clean run's values (sequence by sequence). clean and
        corrupted are (examples, labels) pairs of the same shapes. Returns {leaf: logits}."""
        ex_c, lab_c = clean
        ex_x, lab_x = corrupted
        if np.shape(ex_c) != np.shape(ex_x) or np.shape(lab_c) != np.shape(lab_x):
            raise ValueError(f"patch: clean {np.shape(ex_c)} and corrupted {np.shape(ex_x)} inputs differ in shape")
        _, cache = self.run_with_cache(ex_c, lab_c, names)
        out = {}
        for name, value in cache.items():
            v = value.astype(np.float32) if value.dtype != np.float32 else value
            out[name] = self.run_with_clamps(ex_x, lab_x, {name: v})
        return out

    def loss_and_grads(self, examples, labels, weight_decay=0.0, cache=None, mask=None, interventions=None):
        """(loss, {parameter name: gradient}) of the mean query cross-entropy (plus
        weight_decay x the sum of the parameters' Frobenius norms); clamped elements and
        intervened values get no gradient (docs/cache.md)."""
        ex, lab, B, P = _sequences(self, examples, labels)
        layout = self._layout(P)
        clamps = self._clamps(layout, B, cache, mask)
        params = self.params
        grads = {k: np.empty_like(v) for k, v in params.items()}
        ptrs = ffi.new("float *[]", [_ptr("float *", g) for g in grads.values()])
        loss = ffi.new("double *")
        _call(lib.fs_api_loss_and_grads, self._h, _ptr("float *", ex), _ptr("int32_t *", lab), B, P,
              clamps if clamps is not None else ffi.NULL, _json_or_none(interventions, "interventions"),
              float(weight_decay), loss, ptrs)
        return loss[0], grads


class KVClassifier:
    """Classify many queries against one context with a frozen key-value cache: the
    logits equal the full forward's query logits for (context pairs + query)."""

    def __init__(self, model, context_examples, context_labels):
        ex = _array(context_examples, "context_examples", np.float32, (2,), last=model.config["input_dim"])
        lab = _labels(context_labels, "context_labels")
        if lab.shape != ex.shape[:1]:
            raise ValueError(f"context_labels: expected shape {ex.shape[:1]}, got {lab.shape}")
        out = ffi.new("fs_api_kv **")
        _call(lib.fs_api_kv_create, model._h, _ptr("float *", ex), _ptr("int32_t *", lab), ex.shape[0], out)
        self._h = ffi.gc(out[0], lib.fs_api_kv_free)
        self._model = model  # the cache borrows the model
        self._C = model.config["num_classes"]
        self._D = model.config["input_dim"]

    def classify(self, queries, threads=0):
        """Logits [Q, C] of queries [Q, D] (float32)."""
        q = _array(queries, "queries", np.float32, (2,), last=self._D)
        logits = np.empty((q.shape[0], self._C), np.float32)
        _call(lib.fs_api_kv_classify, self._h, _ptr("float *", q), q.shape[0], int(threads), _ptr("float *", logits))
        return logits
