#!/usr/bin/env bash
# Builds the page into web/dist/: the wasm module (tigel with its `web` feature) through wasm-bindgen
# (--target web), index.html and main.js. Needs the wasm32-unknown-unknown target and wasm-bindgen-cli
# of the version web/Cargo.toml pins (installed here when missing).
#
#   bash web/build.sh            # -> web/dist
#   bash web/build.sh --tools    # only install the target and wasm-bindgen-cli (CI does this first)
#   PROFILE=dev bash web/build.sh
#
# Shaders that need WGSL `enable` directives in a browser (`enable subgroups;`: Chromium's compiler
# requires it before subgroup builtins, naga 30 rejects it) need nothing here: build.rs records each
# module's directives in the registry, and on the browser's WebGPU the engine compiles
# `ShaderInfo::source_with_enables()`; `run=shaders` checks every family and variant in the browser.
set -euo pipefail
cd "$(dirname "$0")"
ver=$(sed -n 's/^wasm-bindgen = "=\(.*\)"/\1/p' Cargo.toml)
if ! command -v wasm-bindgen >/dev/null || [ "$(wasm-bindgen --version | cut -d' ' -f2)" != "$ver" ]; then
  echo "installing wasm-bindgen-cli $ver"
  cargo install wasm-bindgen-cli --version "$ver" --locked
fi
rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
[ "${1:-}" = "--tools" ] && exit 0
profile=${PROFILE:-release}
cargo build --target wasm32-unknown-unknown --profile "$profile"
target=${CARGO_TARGET_DIR:-target}
dir=$profile; [ "$profile" = dev ] && dir=debug
rm -rf dist && mkdir -p dist
wasm-bindgen --target web --no-typescript --out-dir dist "$target/wasm32-unknown-unknown/$dir/tigel_web.wasm"
cp index.html main.js dist/
echo "built web/dist ($(du -sh dist | cut -f1)); serve it with: python3 -m http.server -d web/dist"
