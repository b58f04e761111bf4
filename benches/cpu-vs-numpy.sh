#!/usr/bin/env bash
# tigel's CPU backend against numpy (OpenBLAS) on fp32 matmul, side by side.
#
#   bash benches/cpu-vs-numpy.sh [OUT_DIR] [-- extra args for `tigel bench kernels`, e.g. --quick]
#
# Runs `tigel bench kernels --backend cpu --json OUT_DIR/tigel-cpu.json`, then the numpy reference twice:
# with the environment as it is, and with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset (either can pin
# OpenBLAS to a slower kernel). The fair comparison is against the faster numpy run, marked "best".
# Needs python3 with numpy (`pip install numpy`). Build with the release profile; CARGO_TARGET_DIR is honoured.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/bench}
shift || true
[ "${1:-}" = "--" ] && shift
mkdir -p "$out"
python3 -c 'import numpy' 2>/dev/null || { echo "error: numpy is missing: pip install numpy" >&2; exit 1; }

echo "== tigel bench kernels --backend cpu $*"
cargo run --release --quiet -- bench kernels --backend cpu --json "$out/tigel-cpu.json" "$@"
echo
echo "== numpy, environment as is"
python3 benches/reference/numpy_matmul.py "$out/numpy-env.json" --label "(environment as is)"
echo
echo "== numpy, OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset"
env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE \
    python3 benches/reference/numpy_matmul.py "$out/numpy-unset.json" --label "(OPENBLAS_CORETYPE, OPENBLAS_L2_SIZE unset)"
echo

python3 - "$out/tigel-cpu.json" "$out/numpy-env.json" "$out/numpy-unset.json" <<'PY'
import json, sys
tigel, np_env, np_unset = (json.load(open(p)) for p in sys.argv[1:])

def square(report):
    """(median, min) seconds of the square matmuls, by size"""
    out = {}
    for r in report["results"]:
        m, n, k = (r["shape"].split("x") + [None, None])[:3]
        if r["family"] == "matmul" and m == n == k and m.isdigit():
            out[int(m)] = (r["median_s"], r["min_s"])
    return out

t, e, u = square(tigel), square(np_env), square(np_unset)
print("fp32 matmul: median ms / min ms (GFLOP/s at the median); ratio = tigel time / numpy time (> 1: tigel slower)")
print("numpy best = the faster of the two numpy runs at each size; min-based ratios are less sensitive to load")
print(f"tigel {tigel['git_commit']} on {tigel['cpu_threads']} threads, {tigel['date']}")
hdr = (f"{'N':>5} | {'tigel cpu':>24} | {'numpy (env as is)':>24} | {'numpy (vars unset)':>24} | "
       f"{'tigel/best median':>17} | {'tigel/best min':>14}")
print(hdr)
print("-" * len(hdr))
def cell(x, n):
    return f"{x[0] * 1e3:7.2f} / {x[1] * 1e3:7.2f} ({2 * n**3 / x[0] / 1e9:5.1f})" if x else f"{'-':>24}"
for n in sorted(set(t) | set(e) | set(u)):
    ts, es, us = t.get(n), e.get(n), u.get(n)
    runs = [x for x in (es, us) if x]
    best_med = min(x[0] for x in runs) if runs else None
    best_min = min(x[1] for x in runs) if runs else None
    r_med = f"{ts[0] / best_med:.2f}" if ts and best_med else "-"
    r_min = f"{ts[1] / best_min:.2f}" if ts and best_min else "-"
    print(f"{n:>5} | {cell(ts, n)} | {cell(es, n)} | {cell(us, n)} | {r_med:>17} | {r_min:>14}")
PY
