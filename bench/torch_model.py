#!/usr/bin/python3
"""The fewshot SequenceClassifier (docs/model.md) in PyTorch.

Parameter names match the safetensors names of docs/model.md, so `model.state_dict()` keys
are exactly the tensor names in params.safetensors / grads.safetensors.
Batched: examples [B, P, D] float, labels [B, P] int -> out [B, P, C].
"""
import json
import math
import struct

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

DEFAULT_CONFIG = dict(input_dim=512, num_classes=5, d_model=64, num_heads=8, depth=2,
                      mlp_ratio=4, pos_embedding="rope", rope_base=10000.0, qkv_bias=False)
APE_MAX_TOKENS = 32


# ---------------------------------------------------------------- safetensors
def load_safetensors(path):
    """Return ({name: float32 torch.Tensor}, metadata dict). F32 only."""
    with open(path, "rb") as f:
        blob = f.read()
    (hlen,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + hlen])
    base = 8 + hlen
    meta = header.pop("__metadata__", {}) or {}
    tensors = {}
    for name, info in header.items():
        if info["dtype"] != "F32":
            raise ValueError(f"{path}: tensor {name}: dtype {info['dtype']} (only F32)")
        start, end = info["data_offsets"]
        arr = np.frombuffer(blob, dtype="<f4", count=(end - start) // 4, offset=base + start)
        tensors[name] = torch.from_numpy(arr.reshape(info["shape"]).copy())
    return tensors, meta


# ---------------------------------------------------------------- model
def rope(x, base):
    """Interleaved-pair RoPE on [..., N, hd]: pair i = dims (2i, 2i+1) at position p."""
    n, hd = x.shape[-2], x.shape[-1]
    pos = torch.arange(n, dtype=torch.float32, device=x.device)
    inv = base ** (-torch.arange(0, hd, 2, dtype=torch.float32, device=x.device) / hd)
    theta = pos[:, None] * inv[None, :]                      # [N, hd/2]
    cos, sin = theta.cos(), theta.sin()
    x0, x1 = x[..., 0::2], x[..., 1::2]
    return torch.stack((x0 * cos - x1 * sin, x1 * cos + x0 * sin), dim=-1).flatten(-2)


class Attention(nn.Module):
    def __init__(self, d, h, use_rope, rope_base, qkv_bias):
        super().__init__()
        self.h, self.use_rope, self.rope_base = h, use_rope, rope_base
        self.qkv = nn.Linear(d, 3 * d, bias=qkv_bias)
        self.proj = nn.Linear(d, d, bias=False)

    def forward(self, x):                                     # x [B, N, d]
        b, n, d = x.shape
        hd = d // self.h
        qkv = self.qkv(x).view(b, n, 3, self.h, hd).permute(2, 0, 3, 1, 4)  # [3,B,H,N,hd]
        q, k, v = qkv[0], qkv[1], qkv[2]
        if self.use_rope:
            q, k = rope(q, self.rope_base), rope(k, self.rope_base)
        s = (q @ k.transpose(-1, -2)) * hd ** -0.5           # [B, H, N, N]
        future = torch.ones(n, n, dtype=torch.bool, device=x.device).triu(1)
        s = s.masked_fill(future, -1e20)
        a = torch.softmax(s, dim=-1)
        vals = (a @ v).transpose(1, 2).reshape(b, n, d)      # heads concatenated head-major
        return self.proj(vals)


class MLP(nn.Module):
    def __init__(self, d, hidden):
        super().__init__()
        self.fc1 = nn.Linear(d, hidden)
        self.fc2 = nn.Linear(hidden, d)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d = cfg["d_model"]
        self.norm1 = nn.LayerNorm(d, eps=1e-5)
        self.attn = Attention(d, cfg["num_heads"], cfg["pos_embedding"] == "rope",
                              cfg["rope_base"], cfg["qkv_bias"])
        r = cfg["mlp_ratio"] or 0
        self.has_mlp = r > 0
        if self.has_mlp:
            self.norm2 = nn.LayerNorm(d, eps=1e-5)
            self.mlp = MLP(d, int(r * d))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))                      # residual_post_attn
        if self.has_mlp:
            x = x + self.mlp(self.norm2(x))
        return x


class Transformer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg["depth"]))
        self.norm = nn.LayerNorm(cfg["d_model"], eps=1e-5)

    def forward(self, x):
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)


class SequenceClassifier(nn.Module):
    def __init__(self, **overrides):
        super().__init__()
        cfg = dict(DEFAULT_CONFIG, **overrides)
        self.cfg = cfg
        d, c = cfg["d_model"], cfg["num_classes"]
        self.example_embed = nn.Linear(cfg["input_dim"], d)
        self.label_embed = nn.Linear(c, d, bias=False)
        if cfg["pos_embedding"] == "ape":
            self.pos_embed = nn.Linear(APE_MAX_TOKENS, d, bias=False)  # weight [d, 32]
        elif cfg["pos_embedding"] not in ("rope", "sinusoidal"):
            raise ValueError(f"pos_embedding {cfg['pos_embedding']!r}")
        self.transformer = Transformer(cfg)
        self.unembed = nn.Linear(d, c)

    def pos_embedding(self, n, device):
        kind, d = self.cfg["pos_embedding"], self.cfg["d_model"]
        if kind == "ape":
            return self.pos_embed.weight[:, :n].t()
        if kind == "sinusoidal":
            pos = torch.arange(n, dtype=torch.float32, device=device)[:, None]
            inv = self.cfg["rope_base"] ** (-torch.arange(0, d, 2, dtype=torch.float32,
                                                           device=device) / d)
            return torch.stack(((pos * inv).sin(), (pos * inv).cos()), dim=-1).flatten(-2)
        return None

    def forward(self, examples, labels):                      # [B,P,D], [B,P] -> [B,P,C]
        b, p, _ = examples.shape
        c = self.cfg["num_classes"]
        ex = self.example_embed(examples)                     # [B, P, d]
        # one_hot; a label >= C gives an all-zero row (the reference's behaviour)
        onehot = (labels[..., None] == torch.arange(c, device=labels.device)).float()
        lab = self.label_embed(onehot)                        # [B, P, d]
        # interleave e1 l1 e2 l2 ... e_P  (N = 2P-1)
        tok = torch.stack((ex, lab), dim=2).reshape(b, 2 * p, -1)[:, :-1]
        pe = self.pos_embedding(2 * p - 1, examples.device)
        x = tok if pe is None else tok + pe
        return self.unembed(self.transformer(x))[:, 0::2]

    def load_safetensors(self, path):
        tensors, _ = load_safetensors(path)
        self.load_state_dict(tensors, strict=True)
        return self


def query_loss(out, labels):
    """Mean cross-entropy of the query (last exemplar) logits; an out-of-range label
    (all-zero one-hot) contributes 0."""
    z, y = out[:, -1], labels[:, -1]
    onehot = (y[:, None] == torch.arange(z.shape[-1], device=z.device)).float()
    return -(onehot * torch.log_softmax(z, dim=-1)).sum(-1).mean()


def model_from_config_json(path):
    with open(path) as f:
        m = json.load(f)["model"]
    keys = set(DEFAULT_CONFIG)
    return SequenceClassifier(**{k: v for k, v in m.items() if k in keys})
