#!/usr/bin/env bash
# Instructions per packet of the flowtable hot path (cache hits, one flow), counted by callgrind:
# exact and repeatable whatever else the machine is doing. Usage: benches/callgrind.sh [flows [sg]]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p evs-benches --example hotpath
out=$(mktemp)
valgrind --tool=callgrind --callgrind-out-file="$out" --collect-atstart=no \
    --toggle-collect='*hotpath*measured*' "${CARGO_TARGET_DIR:-target}"/release/examples/hotpath "${1:-1}" ${2:-} > "$out.stdout" 2>/dev/null
packets=$(sed -n 's/^packets=//p' "$out.stdout")
total=$(callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
echo "flowtable hot path: $((total / packets)) instructions/packet ($total instructions, $packets packets)"
if [ "${VERBOSE:-0}" = 1 ]; then callgrind_annotate --inclusive=yes "$out" | head -40; fi
rm -f "$out" "$out.stdout"
