#!/usr/bin/env bash
# tigel's benchmarks and the PyTorch reference on one GPU, in one go, within 8 minutes:
#
#   bash benches/gpu-suite.sh OUT_DIR [--quick]
#
# Writes OUT_DIR/tigel.json (`tigel bench all --json`), OUT_DIR/torch.json (benches/reference/torch_bench.py,
# the same cases and the same GPT step in the same schema) and OUT_DIR/compare.txt (`tigel bench compare`).
# PyTorch missing: says so and skips it (tigel's results are still written).
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
echo "== $tigel info"
timeout 60 "$tigel" info || echo "(tigel info failed: see above)"
echo
# Budget: tigel 5 minutes, torch 2.5 minutes, compare a few seconds: 8 minutes in all.
echo "== tigel bench all ${quick[*]} --json $out/tigel.json"
timeout 300 "$tigel" bench all "${quick[@]}" --json "$out/tigel.json" || { echo "error: tigel bench failed or timed out (exit $?)" >&2; status=1; }
echo
if python3 -c 'import torch' 2>/dev/null; then
  echo "== torch_bench.py ${quick[*]}"
  timeout 150 python3 benches/reference/torch_bench.py "$out/torch.json" "${quick[@]}" || { echo "error: torch_bench.py failed or timed out (exit $?)" >&2; status=1; }
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
