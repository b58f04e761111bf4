#!/usr/bin/env python3
"""PyTorch reference for `tigel bench`: the same kernel cases and the same GPT training step, written in
the schema of `tigel bench all --json`, so that `tigel bench compare tigel.json torch.json` puts them side
by side.

Usage: torch_bench.py OUT.json [--quick] [--device cuda|cpu] [--no-train]

Without PyTorch, a run by hand (in a terminal, $CI unset) installs it into a virtual environment first
(`ensure_torch`); CI and benches/gpu-suite.sh never install it.

Cases, names, shapes and FLOP/byte counts are those of src/bench/mod.rs and src/bench/families.rs on a
hardware GPU (non-quick: "Full"; --quick: "Quick"):
  matmul      "matmul" | "matmul_at" (A stored [K, M]) | "matmul_bt" (B stored [N, K]); shape "MxNxK" or
              "Bx(MxNxK)"; FLOP 2·B·M·N·K; bytes 4·B·(M·K + K·N + M·N)
  attention   "causal_fwd" | "causal_fwd_bwd"; shape "b{B} t{T} h{H} d{D}"; qkv uniform in [-1.5, 1.5);
              scaled_dot_product_attention(is_causal=True); FLOP 2·B·H·T²·D forward, 3.5 times that for
              forward + backward
  conv2d      "fwd" | "bwd_input" | "bwd_weight"; shape "x[N,Ci,H,W] w[Co,Ci,K,K] s{S} p{P}"; FLOP 2·N·Co·Ho·Wo·Ci·K²
  optim       "adamw" "[n]": one fused AdamW step (lr 1e-3, betas 0.9/0.999, eps 1e-8, wd 0.1); bytes 28·n
  elementwise "add" "[n]" (12·n bytes, n FLOP), "exp" "[n]" (8·n bytes, n FLOP)
Timing: median, min and max over repeats after 2 warm-up calls (CUDA events on a GPU, perf_counter after
a synchronize on the CPU). TF32 is switched off so that fp32 products are fp32 as in tigel.
Validation: matmul against a float64 product of a few rows (a mismatch aborts); the other families are
PyTorch's own kernels and are recorded as "validation": "none".

train: the GPT of src/bench/train.rs (2 layers, 4 heads, width 128, context 128, batch 8, pre-norm,
no biases, tied embeddings, GELU tanh form, AdamW with clipping at 1.0), on random bytes (throughput
does not depend on the text), tokens per second.

The JSON writer is `report()`; tests/bench.rs checks that `tigel bench compare` accepts a minimal file of
this shape (tests/fixtures/torch_schema.json).
"""
import datetime
import json
import math
import os
import statistics
import subprocess
import sys
import time


def ensure_torch():
    """Imports torch, else re-runs this script with the Python of a virtual environment that has it:
    $TIGEL_TORCH_VENV (default ~/.cache/tigel/torch-venv), made and filled with `pip install torch numpy`
    (about 5 GB) only when run by hand (a terminal, $CI unset). Never installs in CI or from the GPU suite
    (which checks `import torch` first and skips the reference without it)."""
    try:
        import torch  # noqa: F401
        return
    except ImportError:
        pass
    venv = os.environ.get("TIGEL_TORCH_VENV", os.path.expanduser("~/.cache/tigel/torch-venv"))
    py = os.path.join(venv, "bin", "python")
    here = os.path.realpath(sys.prefix) == os.path.realpath(venv)
    if os.path.exists(py) and not here:
        os.execv(py, [py] + sys.argv)
    if os.environ.get("CI") or not sys.stdin.isatty():
        sys.exit(f"torch_bench.py: PyTorch is not installed (pip install torch, or run this by hand in a terminal "
                 f"to install it into {venv})")
    print(f"torch_bench.py: PyTorch is not installed; installing torch and numpy into {venv} (about 5 GB)")
    if not os.path.exists(py):
        subprocess.check_call([sys.executable, "-m", "venv", venv])
    subprocess.check_call([py, "-m", "pip", "install", "torch", "numpy"])
    os.execv(py, [py] + sys.argv)


ensure_torch()
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

M = 1 << 20


def timer(dev, fn, quick):
    """Median, min, max seconds of fn() over repeats, after 2 warm-up calls."""
    min_reps, max_reps, budget = (3, 10, 0.25) if quick else (5, 50, 1.0)
    for _ in range(2):
        fn()
    sync(dev)
    times = []
    start = time.perf_counter()
    while len(times) < min_reps or (len(times) < max_reps and time.perf_counter() - start < budget):
        if dev.type == "cuda":
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    times.sort()
    return statistics.median(times), times[0], times[-1], len(times)


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def result(family, name, shape, flop, nbytes, timing, validation="none", max_abs_err=None):
    med, lo, hi, n = timing
    return {
        "family": family,
        "name": name,
        "kernel": None,
        "shape": shape,
        "flop": flop,
        "bytes": nbytes,
        "dispatches": None,
        "repeats": n,
        "median_s": med,
        "min_s": lo,
        "max_s": hi,
        "gflops": flop / med / 1e9 if flop > 0 else None,
        "gbps": nbytes / med / 1e9,
        "encode_us_per_dispatch": None,
        "validated": validation != "none",
        "validation": validation,
        "max_abs_err": max_abs_err,
    }


def uniform(dev, shape, lo=-1.0, hi=1.0, grad=False):
    t = torch.empty(shape, device=dev, dtype=torch.float32).uniform_(lo, hi)
    return t.requires_grad_(grad)


def matmul(dev, batch, m, n, k, ta, tb, quick):
    a_shape = [k, m] if ta else [m, k]
    b_shape = [n, k] if tb else [k, n]
    if batch > 1:
        a_shape, b_shape = [batch] + a_shape, [batch] + b_shape
    a, b = uniform(dev, a_shape), uniform(dev, b_shape)

    def op():
        aa = a.transpose(-1, -2) if ta else a
        bb = b.transpose(-1, -2) if tb else b
        return torch.matmul(aa, bb)

    c = op()
    # A few rows against float64, as tigel checks its CPU backend.
    aa = (a.transpose(-1, -2) if ta else a).double().cpu()
    bb = (b.transpose(-1, -2) if tb else b).double().cpu()
    rows = list(range(min(8, m))) + ([m - 1] if m > 8 else [])
    want = aa[..., rows, :] @ bb
    mag = aa[..., rows, :].abs() @ bb.abs()
    err = (c[..., rows, :].double().cpu() - want).abs()
    if not bool((err <= 1e-6 * (1 + math.sqrt(k)) * mag).all()):
        sys.exit(f"torch matmul {m}x{n}x{k}: result differs from the float64 product by {err.max().item()}")
    name = {(False, False): "matmul", (True, False): "matmul_at", (False, True): "matmul_bt"}[(ta, tb)]
    shape = f"{batch}x({m}x{n}x{k})" if batch > 1 else f"{m}x{n}x{k}"
    return result("matmul", name, shape, 2 * batch * m * n * k, 4 * batch * (m * k + k * n + m * n),
                  timer(dev, op, quick), "host-f64-rows", err.max().item())


def attention(dev, b, t, h, d, backward, quick):
    c = h * d
    qkv = uniform(dev, [b, t, 3 * c], -1.5, 1.5, grad=backward)
    dout = uniform(dev, [b, t, c])

    def fwd():
        q, k, v = qkv.view(b, t, 3, h, d).permute(2, 0, 3, 1, 4)  # each [b, h, t, d]
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return o.transpose(1, 2).reshape(b, t, c)

    def fwd_bwd():
        qkv.grad = None
        fwd().backward(dout)

    fwd_flop = 2 * b * h * t * t * d
    fwd_bytes = 4 * (3 * b * t * c + b * t * c + b * h * t)
    bwd_bytes = 4 * (3 * b * t * c + 2 * b * t * c + b * h * t + 3 * b * t * c)
    shape = f"b{b} t{t} h{h} d{d}"
    if backward:
        return result("attention", "causal_fwd_bwd", shape, fwd_flop * 7 // 2, fwd_bytes + bwd_bytes,
                      timer(dev, fwd_bwd, quick))
    with torch.no_grad():
        return result("attention", "causal_fwd", shape, fwd_flop, fwd_bytes, timer(dev, fwd, quick))


def conv(dev, n, ci, hw, co, k, s, p, quick):
    x, w = uniform(dev, [n, ci, hw, hw]), uniform(dev, [co, ci, k, k])
    ho = (hw + 2 * p - k) // s + 1
    dy = uniform(dev, [n, co, ho, ho])
    flop = 2 * n * co * ho * ho * ci * k * k
    xb, wb, yb = 4 * n * ci * hw * hw, 4 * co * ci * k * k, 4 * n * co * ho * ho
    shape = f"x[{n},{ci},{hw},{hw}] w[{co},{ci},{k},{k}] s{s} p{p}"
    g = torch.nn.grad
    with torch.no_grad():
        return [
            result("conv2d", "fwd", shape, flop, xb + wb + yb,
                   timer(dev, lambda: F.conv2d(x, w, stride=s, padding=p), quick)),
            result("conv2d", "bwd_input", shape, flop, yb + wb + xb,
                   timer(dev, lambda: g.conv2d_input(x.shape, w, dy, stride=s, padding=p), quick)),
            result("conv2d", "bwd_weight", shape, flop, xb + yb + wb,
                   timer(dev, lambda: g.conv2d_weight(x, w.shape, dy, stride=s, padding=p), quick)),
        ]


def adamw(dev, n, quick):
    p = torch.nn.Parameter(uniform(dev, [n]))
    p.grad = uniform(dev, [n])
    opt = torch.optim.AdamW([p], lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1,
                            fused=dev.type == "cuda")
    return result("optim", "adamw", f"[{n}]", 0, 28 * n, timer(dev, opt.step, quick))


def elementwise(dev, n, quick):
    a, b = uniform(dev, [n]), uniform(dev, [n])
    e = uniform(dev, [n], -4.0, 4.0)
    return [
        result("elementwise", "add", f"[{n}]", n, 12 * n, timer(dev, lambda: torch.add(a, b), quick)),
        result("elementwise", "exp", f"[{n}]", n, 8 * n, timer(dev, lambda: torch.exp(e), quick)),
    ]


def kernel_cases(dev, quick):
    out = []
    if quick:
        out.append(matmul(dev, 1, 512, 512, 512, False, False, quick))
        out.append(matmul(dev, 1, 2048, 384, 128, False, False, quick))
        out.append(matmul(dev, 1, 128, 384, 2048, True, False, quick))
        out.append(attention(dev, 16, 128, 4, 32, False, quick))
        out.append(attention(dev, 16, 128, 4, 32, True, quick))
        out += conv(dev, 16, 64, 14, 128, 4, 2, 1, quick)
        out.append(adamw(dev, M, quick))
        out += elementwise(dev, M, quick)
        return out
    for s in [256, 512, 1024, 2048, 4096]:
        out.append(matmul(dev, 1, s, s, s, False, False, quick))
    tokens = 2048
    for n, k in [(384, 128), (128, 128), (512, 128), (128, 512), (256, 128)]:
        out.append(matmul(dev, 1, tokens, n, k, False, False, quick))
    for n, k in [(128, 384), (128, 512), (512, 128)]:
        out.append(matmul(dev, 1, tokens, n, k, False, True, quick))
    for m, n in [(128, 384), (128, 512), (512, 128)]:
        out.append(matmul(dev, 1, m, n, tokens, True, False, quick))
    out.append(matmul(dev, 12, 64, 64, 32, False, False, quick))
    for t in [64, 128, 256]:
        for d in [32, 64]:
            for backward in [False, True]:
                out.append(attention(dev, tokens // t, t, 4, d, backward, quick))
    out += conv(dev, 64, 64, 14, 128, 4, 2, 1, quick)
    out += conv(dev, 64, 64, 16, 64, 3, 1, 1, quick)
    out.append(adamw(dev, M, quick))
    for n in [M, 16 * M]:
        out += elementwise(dev, n, quick)
    return out


class Block(torch.nn.Module):
    def __init__(self, c, heads):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = torch.nn.LayerNorm(c), torch.nn.LayerNorm(c)
        self.qkv = torch.nn.Linear(c, 3 * c, bias=False)
        self.proj = torch.nn.Linear(c, c, bias=False)
        self.fc = torch.nn.Linear(c, 4 * c, bias=False)
        self.out = torch.nn.Linear(4 * c, c, bias=False)

    def forward(self, x):
        b, t, c = x.shape
        h, d = self.heads, c // self.heads
        q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, h, d).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, c)
        x = x + self.proj(a)
        return x + self.out(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))


class Gpt(torch.nn.Module):
    def __init__(self, layers, heads, width, context):
        super().__init__()
        self.wte = torch.nn.Parameter(torch.randn(256, width) * 0.02)
        self.wpe = torch.nn.Parameter(torch.randn(context, width) * 0.02)
        self.blocks = torch.nn.ModuleList(Block(width, heads) for _ in range(layers))
        self.ln_f = torch.nn.LayerNorm(width)

    def forward(self, ids):
        x = self.wte[ids] + self.wpe[: ids.shape[1]]
        for blk in self.blocks:
            x = blk(x)
        return self.ln_f(x) @ self.wte.t()


def gpt(dev, quick):
    layers, heads, width, context, batch = 2, 4, 128, 128, 8
    model = Gpt(layers, heads, width, context).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1,
                            fused=dev.type == "cuda")
    data = torch.randint(0, 256, (1 << 20,), device=dev)
    gen = torch.Generator(device=dev).manual_seed(1)

    def step():
        starts = torch.randint(0, data.numel() - context - 1, (batch,), device=dev, generator=gen)
        idx = starts[:, None] + torch.arange(context + 1, device=dev)
        win = data[idx]
        logits = model(win[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, 256), win[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    for _ in range(3):
        step()
    sync(dev)
    times = []
    for _ in range(5 if quick else 20):
        t0 = time.perf_counter()
        step()
        sync(dev)
        times.append(time.perf_counter() - t0)
    times.sort()
    med = statistics.median(times)
    tokens = batch * context
    params = sum(p.numel() for p in model.parameters())
    return {
        "model": "gpt",
        "config": {"model": {"layers": layers, "heads": heads, "width": width, "context": context, "dropout": 0.0},
                   "train": {"batch": batch, "weight_decay": 0.1, "clip": 1.0}, "params": params},
        "repeats": len(times),
        "step_s": med,
        "step_min_s": times[0],
        "step_max_s": times[-1],
        "steps_per_s": 1.0 / med,
        "unit": "tokens",
        "per_step": tokens,
        "samples_per_s": tokens / med,
        "dispatches": None,
        "encode_us_per_dispatch": None,
        "planned_peak_bytes": None,
        "allocated_bytes": torch.cuda.max_memory_allocated() if dev.type == "cuda" else None,
        "persistent_bytes": None,
    }


def report(dev, quick, results, train):
    """The document `tigel bench all --json` writes, with "implementation": "pytorch"."""
    adapter = None
    if dev.type == "cuda":
        adapter = {"name": torch.cuda.get_device_name(dev), "backend": "cuda", "device_type": "DiscreteGpu",
                   "driver": f"CUDA {torch.version.cuda}", "driver_info": ""}
    return {
        "implementation": "pytorch",
        "torch_version": torch.__version__,
        "tigel_version": None,
        "git_commit": "unknown",
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "backend": f"torch-{dev.type}",
        "adapter": adapter,
        "cpu_threads": torch.get_num_threads(),
        "timer": "cuda-events" if dev.type == "cuda" else "wall-clock",
        "quick": quick,
        "results": results,
        "train": train,
    }


def main():
    args = sys.argv[1:]
    out_path, quick, dev_name, do_train = None, False, None, True
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--quick":
            quick = True
        elif a == "--no-train":
            do_train = False
        elif a == "--device":
            i += 1
            if i >= len(args):
                sys.exit("--device needs a value (cuda or cpu)")
            dev_name = args[i]
        elif a.startswith("-"):
            sys.exit(f"unknown option {a}; usage: torch_bench.py OUT.json [--quick] [--device cuda|cpu] [--no-train]")
        else:
            out_path = a
        i += 1
    if out_path is None:
        sys.exit("usage: torch_bench.py OUT.json [--quick] [--device cuda|cpu] [--no-train]")
    dev = torch.device(dev_name or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    print(f"torch {torch.__version__} on {dev}" + (f" ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else ""))
    results = kernel_cases(dev, quick)
    for r in results:
        rate = f"{r['gflops']:.1f} GFLOP/s" if r["gflops"] else f"{r['gbps']:.1f} GB/s"
        print(f"{r['family']:<12} {r['name']:<16} {r['shape']:<36} {r['median_s'] * 1e3:9.3f} ms  {rate}")
    train = []
    if do_train:
        g = gpt(dev, quick)
        print(f"gpt {g['step_s'] * 1e3:.2f} ms/step {g['samples_per_s']:.0f} tokens/s")
        train.append(g)
    with open(out_path, "w") as f:
        json.dump(report(dev, quick, results, train), f, indent=2)
        f.write("\n")
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
