#!/usr/bin/env bash
# The transformer acceptance run: the GPT with its default settings on the King James Bible (Debian's
# bible-kjv package, verse numbers stripped), last 10% held out, on the CPU backend. Writes the text to
# DIR.txt and the run to DIR (default runs/kjv), then scores the held-out part with `tigel eval gpt`.
#   bash benches/kjv.sh [DIR] [extra `tigel train gpt` flags...]
set -euo pipefail
dir=${1:-runs/kjv}
shift || true
if ! command -v bible >/dev/null; then
    echo "benches/kjv.sh needs the bible command from Debian's bible-kjv package (apt-get install bible-kjv)" >&2
    exit 1
fi
mkdir -p "$(dirname "$dir")"
bible -l10000 gen1:1-rev22:21 | sed -E 's/^ +[0-9]+ //' > "$dir.txt"
echo "$dir.txt: $(wc -c < "$dir.txt") bytes" >&2
cargo build --release --quiet
./target/release/tigel --backend cpu train gpt --data "$dir.txt" --out "$dir" --json "$@" | tail -1 | tee "$dir.train.json"
./target/release/tigel --backend cpu eval gpt --checkpoint "$dir" --data "$dir.txt" --json | tee "$dir.eval.json"
