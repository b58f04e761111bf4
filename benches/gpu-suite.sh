#!/usr/bin/env bash
# tigel's benchmarks and the PyTorch reference on one GPU, in one go, within 8 minutes:
#
#   bash benches/gpu-suite.sh OUT_DIR [--quick]
#
# In order, each step under its own time limit (the limits add up to 8 minutes):
#   1. `tigel info`: the adapter, its features and limits, the kernel variants it can run.
#   2. `tigel tune --quick`: times the variants (tile shapes, workgroup sizes, subgroups) on this GPU and
#      keeps the fastest in a tuning cache private to OUT_DIR (OUT_DIR/tune.json), printing the choices.
#   3. `bench all` with those choices (TIGEL_TUNE=cached) -> OUT_DIR/tigel.json.
#   4. `bench kernels --quick` with the defaults (TIGEL_TUNE=off) -> OUT_DIR/tigel-default.json, and
#      OUT_DIR/tuned-vs-default.txt (`bench compare`: what tuning gained on this GPU).
#   5. `bench train` with per-kernel dispatch counts (TIGEL_BENCH_KERNELS=1): every model's step, the
#      default GPT at f32 and at mixed precision (`gpt-default-mixed`) -> OUT_DIR/train.json.
#   6. benches/reference/torch_bench.py (the same cases and GPT step, same schema) -> OUT_DIR/torch.json,
#      and OUT_DIR/compare.txt (`bench compare` of tigel.json against it).
# PyTorch missing: says so and skips it (tigel's results are still written). Every step's output also
# goes to OUT_DIR/log.txt.
#
# The tigel executable: $TIGEL, else .gpubin/tigel (the lent GPU machine has no Rust toolchain: build here
# with ../shared/gpu/build-for-gpu.sh tigel and carry .gpubin and .gl, see ../shared/gpu/README.md), else
# target/release/tigel. Where .gl/ holds the Vulkan loader packages and libvulkan is not installed, they are
# unpacked first (root only), as that README says.
set -uo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: benches/gpu-suite.sh OUT_DIR [--quick]" >&2; exit 2; }
out=$1
shift
quick=()
[ "${1:-}" = "--quick" ] && quick=(--quick)
mkdir -p "$out" || { echo "error: cannot create $out" >&2; exit 1; }

tigel=${TIGEL:-}
if [ -z "$tigel" ]; then
  for c in .gpubin/tigel "${CARGO_TARGET_DIR:-target}/release/tigel" target/release/tigel; do
    [ -x "$c" ] && { tigel=$c; break; }
  done
fi
[ -n "$tigel" ] && [ -x "$tigel" ] || { echo "error: no tigel executable (set TIGEL, or build one)" >&2; exit 1; }

if [ -d .gl ] && ! ldconfig -p 2>/dev/null | grep -q libvulkan.so.1 && [ "$(id -u)" = 0 ]; then
  for f in .gl/*.deb; do dpkg -x "$f" /; done
  ldconfig
fi
nv_icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
[ -z "${VK_DRIVER_FILES:-}" ] && [ -f "$nv_icd" ] && export VK_DRIVER_FILES=$nv_icd

start=$(date +%s)
status=0
export TIGEL_TUNE_CACHE="$out/tune.json"
exec > >(tee -a "$out/log.txt") 2>&1

# step LIMIT_S NAME COMMAND...: runs one step under its time limit; a failure is reported, not fatal.
step() {
  local limit=$1 name=$2
  shift 2
  echo "== $name"
  timeout "$limit" "$@"
  local rc=$?
  [ $rc -eq 0 ] || { echo "error: $name failed or timed out (exit $rc)" >&2; status=1; }
  echo
  return $rc
}

step 30 "tigel info" "$tigel" info
step 60 "tigel tune --quick (cache: $TIGEL_TUNE_CACHE)" "$tigel" tune --quick
step 150 "tigel bench all ${quick[*]}, tuned" env TIGEL_TUNE=cached "$tigel" bench all "${quick[@]}" --json "$out/tigel.json"
if step 75 "tigel bench kernels --quick, default variants" env TIGEL_TUNE=off "$tigel" bench kernels --quick --json "$out/tigel-default.json" && [ -f "$out/tigel.json" ]; then
  echo "== tuned (A) against default (B) variants: B/A > 1 where tuning helped"
  "$tigel" bench compare "$out/tigel.json" "$out/tigel-default.json" | tee "$out/tuned-vs-default.txt" || status=1
  echo
fi
step 30 "tigel bench train --quick (dispatches by kernel)" env TIGEL_TUNE=cached TIGEL_BENCH_KERNELS=1 "$tigel" bench train --quick --out "$out/train.json"
if python3 -c 'import torch' 2>/dev/null; then
  step 120 "torch_bench.py ${quick[*]}" python3 benches/reference/torch_bench.py "$out/torch.json" "${quick[@]}"
else
  echo "PyTorch is not installed here (python3 -c 'import torch' fails): skipping the PyTorch reference."
fi
echo
if [ -f "$out/tigel.json" ] && [ -f "$out/torch.json" ]; then
  echo "== tigel bench compare (A = tigel, B = PyTorch; B/A > 1: PyTorch faster)"
  "$tigel" bench compare "$out/tigel.json" "$out/torch.json" | tee "$out/compare.txt" || status=1
fi
echo "suite took $(( $(date +%s) - start )) s; results in $out"
exit $status
