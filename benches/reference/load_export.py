#!/usr/bin/env python3
"""Loads a GPT exported by `tigel export` into a nanoGPT-style PyTorch model and scores held-out text in
bits per character, the way `tigel eval gpt` does, so the two figures can be compared.

Usage: load_export.py EXPORT.safetensors [--data TEXT] [--threads N]

--data: the text whose last 10% is scored (default: the file the checkpoint was trained on, from the
export's `tigel_config` metadata; a model trained on tigel's built-in text needs --data).
Prints one JSON line: {"val_bits_per_char": ..., "held_out_bytes": ..., "torch_version": ...}.

The model is nanoGPT's (Karpathy, model.py) with the facts of tigel's GPT (docs/checkpoints.md):
- Linear layers have no bias ("bias": false) but every LayerNorm has one (eps 1e-5);
- GELU is the tanh form;
- the output projection is tied to the token embedding (lm_head.weight is transformer.wte.weight)
  unless "tied_lm_head" is false;
and the options the config names (each off for a model without it):
- "rope": rotary positions instead of wpe, on q and k, pairs (x_j, x_{j+D/2}) of each head turned by
  position · rope_base^(-2j/D) (rotate-half form);
- "qk_norm": a LayerNorm over each head's values of q (attn.q_ln) and of k (attn.k_ln), before the rotation;
- "gated_mlp": c_proj(SiLU(c_fc(x)) ⊙ c_up(x)) with hidden width "mlp_hidden".
Attention: causal, softmax(q·kᵀ/√head_dim), q|k|v packed in c_attn's rows, heads contiguous within each.

Scoring (src/models/gpt/eval.rs, src/data/text.rs): the held-out part is the last round(0.1·len) bytes;
it is cut into consecutive windows of block_size bytes, each predicting its next bytes (the last window
may be shorter), so every byte after the first is scored once; the mean cross-entropy in nats times
log2(e) is bits per character. Requires torch, numpy and safetensors (never installed by tests or CI).
"""
import json
import math
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file


class LayerNorm(nn.Module):
    def __init__(self, n, eps):
        super().__init__()
        self.weight, self.bias, self.eps = nn.Parameter(torch.ones(n)), nn.Parameter(torch.zeros(n)), eps

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)


def rope_tables(block_size, head_dim, base):
    """(cos, sin) [block_size, head_dim / 2] of position · base^(-2j/head_dim), in float64 then rounded."""
    j = torch.arange(head_dim // 2, dtype=torch.float64)
    angle = torch.arange(block_size, dtype=torch.float64)[:, None] * base ** (-2.0 * j / head_dim)
    return angle.cos().float(), angle.sin().float()


def rotate(x, cos, sin):
    """x [B, heads, T, D]: each pair (x_j, x_{j+D/2}) turned by its position's angle."""
    t, half = x.shape[2], x.shape[3] // 2
    c, s = cos[:t], sin[:t]
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat((x1 * c - x2 * s, x2 * c + x1 * s), dim=-1)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        c, self.n_head = cfg["n_embd"], cfg["n_head"]
        hd = c // self.n_head
        self.c_attn = nn.Linear(c, 3 * c, bias=cfg["bias"])
        self.c_proj = nn.Linear(c, c, bias=cfg["bias"])
        if cfg.get("qk_norm"):
            self.q_ln, self.k_ln = LayerNorm(hd, cfg["ln_eps"]), LayerNorm(hd, cfg["ln_eps"])
        self.rope = None
        if cfg.get("rope"):
            self.rope = rope_tables(cfg["block_size"], hd, cfg.get("rope_base", 10000.0))

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.c_attn(x).split(c, dim=2)
        q, k, v = (z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for z in (q, k, v))
        if hasattr(self, "q_ln"):
            q, k = self.q_ln(q), self.k_ln(k)
        if self.rope is not None:
            q, k = rotate(q, *self.rope), rotate(k, *self.rope)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).contiguous().view(b, t, c))


class MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        c = cfg["n_embd"]
        h = cfg.get("mlp_hidden") or 4 * c
        self.c_fc = nn.Linear(c, h, bias=cfg["bias"])
        self.c_proj = nn.Linear(h, c, bias=cfg["bias"])
        self.gated = bool(cfg.get("gated_mlp"))
        if self.gated:
            self.c_up = nn.Linear(c, h, bias=cfg["bias"])
        self.gelu = cfg.get("gelu", "tanh")

    def forward(self, x):
        if self.gated:
            return self.c_proj(F.silu(self.c_fc(x)) * self.c_up(x))
        return self.c_proj(F.gelu(self.c_fc(x), approximate=self.gelu))


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.ln_1, self.attn = LayerNorm(cfg["n_embd"], cfg["ln_eps"]), CausalSelfAttention(cfg)
        self.ln_2, self.mlp = LayerNorm(cfg["n_embd"], cfg["ln_eps"]), MLP(cfg)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        c = cfg["n_embd"]
        parts = dict(
            wte=nn.Embedding(cfg["vocab_size"], c),
            h=nn.ModuleList(Block(cfg) for _ in range(cfg["n_layer"])),
            ln_f=LayerNorm(c, cfg["ln_eps"]),
        )
        if not cfg.get("rope"):
            parts["wpe"] = nn.Embedding(cfg["block_size"], c)
        self.transformer = nn.ModuleDict(parts)
        self.lm_head = nn.Linear(c, cfg["vocab_size"], bias=False)
        if cfg.get("tied_lm_head", True):
            self.lm_head.weight = self.transformer.wte.weight  # tied

    def forward(self, idx):
        t = idx.shape[1]
        x = self.transformer.wte(idx)
        if "wpe" in self.transformer:
            x = x + self.transformer.wpe(torch.arange(t, device=idx.device))
        for block in self.transformer.h:
            x = block(x)
        return self.lm_head(self.transformer.ln_f(x))


def load(path):
    """The model of an export, its weights loaded strictly, and the export's metadata."""
    with safe_open(path, "pt") as f:
        meta = f.metadata()
    if meta.get("kind") != "gpt":
        sys.exit(f"{path}: not an exported GPT (metadata kind {meta.get('kind')!r})")
    cfg = json.loads(meta["config"])
    model = GPT(cfg)
    model.load_state_dict(load_file(path), strict=True)
    return model.eval(), cfg, meta


@torch.no_grad()
def bits_per_char(model, data, block_size, batch=32):
    """Mean bits per byte over the held-out last 10% of `data` (bytes), scored as `tigel eval gpt` does."""
    held = math.floor(len(data) * 0.1 + 0.5)  # Rust's f64::round: halves away from zero
    start, end = len(data) - held, len(data)
    windows, o = [], start
    while o + 1 < end:
        n = min(block_size, end - 1 - o)
        windows.append((o, n))
        o += n
    buf = torch.tensor(list(data), dtype=torch.long)
    nats, count = 0.0, 0
    for full in (True, False):  # full-length windows in batches, then the shorter last one
        group = [w for w in windows if (w[1] == block_size) == full]
        for i in range(0, len(group), batch):
            chunk = group[i:i + batch]
            n = chunk[0][1]
            ids = torch.stack([buf[o:o + n] for o, _ in chunk])
            tgt = torch.stack([buf[o + 1:o + n + 1] for o, _ in chunk])
            logits = model(ids)
            ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1), reduction="none")
            nats += ce.double().sum().item()
            count += ce.numel()
    return nats / max(count, 1) * math.log2(math.e), held


def main():
    args = sys.argv[1:]
    if not args or args[0].startswith("-"):
        sys.exit(__doc__.split("\n\n")[1])
    path, data_path, threads = args[0], None, None
    rest = args[1:]
    while rest:
        flag = rest.pop(0)
        if flag in ("--data", "--threads") and rest:
            if flag == "--data":
                data_path = rest.pop(0)
            else:
                threads = int(rest.pop(0))
        else:
            sys.exit(f"unknown or incomplete option {flag}")
    if threads:
        torch.set_num_threads(threads)
    model, cfg, meta = load(path)
    if data_path is None:
        data_path = json.loads(meta.get("tigel_config", "{}")).get("data")
        if data_path in (None, "<embedded>"):
            sys.exit("the model was trained on tigel's built-in text: pass --data FILE")
    with open(data_path, "rb") as f:
        data = f.read()
    bpc, held = bits_per_char(model, data, cfg["block_size"])
    print(json.dumps({"val_bits_per_char": bpc, "held_out_bytes": held, "data": data_path,
                      "torch_version": torch.__version__, "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
