"""fewshot from Python: the C library's models, activation caches, clamps, interventions,
gradients, frozen-KV classification and training runs, numpy float32 in and out.

    import numpy as np, fewshot
    m = fewshot.Model.load("runs/default/checkpoints/step_00003000.safetensors")
    logits, cache = m.run_with_cache(examples, labels, names="*attn_scores")
"""
from ._ffi import ffi as _ffi, lib as _lib
from .core import Cache, FewshotError, KVClassifier, Model
from .runs import read_metrics, train

__version__ = _ffi.string(_lib.fs_api_version()).decode()

__all__ = ["Cache", "FewshotError", "KVClassifier", "Model", "read_metrics", "train", "__version__"]
