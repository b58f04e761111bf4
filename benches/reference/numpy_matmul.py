#!/usr/bin/env python3
"""Reference timings for tigel's CPU matmul: np.matmul in fp32 at the square sizes of
`tigel bench kernels` (256..2048), median of repeats after a warm-up.

Usage: numpy_matmul.py [OUT.json] [--label TEXT] [--sizes 256,512,...]

Prints a table and, given OUT.json, writes the results in the schema of `tigel bench kernels --json`
(backend "numpy", family "matmul", shape "MxNxK"), plus the BLAS environment variables in effect.
"""
import datetime
import json
import os
import statistics
import sys
import time

import numpy as np


def time_matmul(n, budget_s=1.0, min_reps=5, max_reps=50):
    rng = np.random.default_rng(n)
    a = rng.uniform(-1.0, 1.0, (n, n)).astype(np.float32)
    b = rng.uniform(-1.0, 1.0, (n, n)).astype(np.float32)
    out = np.empty((n, n), dtype=np.float32)
    # Validation: a few rows against a float64 product, as tigel checks its CPU backend.
    c = np.matmul(a, b, out=out)
    rows = list(range(min(8, n))) + [n - 1]
    want = a[rows].astype(np.float64) @ b.astype(np.float64)
    mag = np.abs(a[rows]).astype(np.float64) @ np.abs(b).astype(np.float64)
    err = np.abs(c[rows] - want)
    tol = 1e-6 * (1 + np.sqrt(n)) * mag
    if not np.all(err <= tol):
        raise SystemExit(f"np.matmul {n}: result differs from the float64 product by {err.max()}")
    for _ in range(2):
        np.matmul(a, b, out=out)
    times = []
    start = time.perf_counter()
    while len(times) < min_reps or (len(times) < max_reps and time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        np.matmul(a, b, out=out)
        times.append(time.perf_counter() - t0)
    return times, float(err.max())


def main():
    args = sys.argv[1:]
    out_path, label, sizes = None, "", [256, 512, 1024, 2048]
    i = 0
    while i < len(args):
        if args[i] == "--label":
            label, i = args[i + 1], i + 2
        elif args[i] == "--sizes":
            sizes, i = [int(s) for s in args[i + 1].split(",")], i + 2
        else:
            out_path, i = args[i], i + 1

    env = {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")}
    print(f"numpy {np.__version__} matmul fp32 {label}".rstrip())
    set_vars = ", ".join(f"{k}={v}" for k, v in env.items() if v is not None)
    print(f"  env: {set_vars or '(no BLAS variables set)'}")
    print(f"{'family':<12} {'name':<18} {'shape':<16} {'median ms':>10} {'min ms':>10} {'rate':>16}")
    results = []
    for n in sizes:
        times, err = time_matmul(n)
        med, lo, hi = statistics.median(times), min(times), max(times)
        flop, nbytes = 2 * n**3, 4 * 3 * n * n
        results.append({
            "family": "matmul", "name": "np.matmul", "shape": f"{n}x{n}x{n}", "flop": flop, "bytes": nbytes,
            "dispatches": 1, "repeats": len(times), "median_s": med, "min_s": lo, "max_s": hi,
            "gflops": flop / med / 1e9, "gbps": nbytes / med / 1e9, "encode_us_per_dispatch": None,
            "validated": True, "validation": "host-f64-rows", "max_abs_err": err,
        })
        print(f"{'matmul':<12} {'np.matmul':<18} {f'{n}x{n}x{n}':<16} {med * 1e3:>10.3f} {lo * 1e3:>10.3f} "
              f"{flop / med / 1e9:>9.2f} GFLOP/s", flush=True)
    if out_path:
        report = {
            "tigel_version": None,
            "git_commit": None,
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "backend": "numpy",
            "adapter": None,
            "cpu_threads": os.cpu_count(),
            "timer": "wall-clock",
            "quick": False,
            "numpy_version": np.__version__,
            "label": label,
            "env": env,
            "results": results,
        }
        os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
        with open(out_path, "w") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
        print(f"wrote {out_path}", file=sys.stderr)


if __name__ == "__main__":
    main()
