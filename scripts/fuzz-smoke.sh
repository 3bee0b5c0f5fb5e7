#!/usr/bin/env bash
# A short run of every fuzz target (CI, from scripts/test.sh): FUZZ_SECS seconds each (30),
# one at a time, starting from the seeds in fuzz/seeds (made by fuzz/examples/seed_corpus.rs) and
# whatever corpus earlier runs left in fuzz/corpus. Fails on the first crash, leak or timeout; the input that
# caused it is in fuzz/artifacts/TARGET/ (replay: fuzz/target/x86_64-unknown-linux-gnu/release/
# TARGET fuzz/artifacts/TARGET/crash-...).
#
#   scripts/fuzz-smoke.sh                 every target, 30 s each
#   FUZZ_SECS=5 scripts/fuzz-smoke.sh model_json config_toml
#
# Built as the long runs are (README "## Fuzzing"): no sanitizer (the fuzzed crates forbid
# `unsafe`), debug assertions and overflow checks on. The build lives in fuzz/target, apart from
# the workspace's: only the first run pays for it.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
SECS=${FUZZ_SECS:-30}
ALL=(parse_classify trace control_request config_toml model_json dvs_objects)
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=("${ALL[@]}")
for t in "${TARGETS[@]}"; do
    [[ " ${ALL[*]} " == *" $t "* ]] || { echo "fuzz-smoke.sh: unknown target '$t' (${ALL[*]})" >&2; exit 2; }
done
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
t0=$(date +%s)
# The machine's toolchain is stable; cargo-fuzz needs nightly flags (-Zsanitizer...).
export RUSTC_BOOTSTRAP=1
blog=$(mktemp)
if ! cargo fuzz build -s none -a >"$blog" 2>&1; then
    grep -v '^ *Compiling' "$blog" >&2
    echo "fuzz-smoke.sh: build failed" >&2
    exit 1
fi
rm -f "$blog"
BIN=target/x86_64-unknown-linux-gnu/release
echo "fuzz-smoke.sh: built in $(( $(date +%s) - t0 )) s"
for t in "${TARGETS[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    log=$(mktemp)
    dict=()
    case $t in parse_classify|trace) ;; *) dict=(-dict=dicts/text.dict) ;; esac
    if ! "$BIN/$t" -max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 "${dict[@]}" \
        -artifact_prefix="artifacts/$t/" -print_final_stats=1 "corpus/$t" "seeds/$t" >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        echo "fuzz-smoke.sh: $t FAILED (input in fuzz/artifacts/$t/)" >&2
        rm -f "$log"
        exit 1
    fi
    runs=$(awk '/stat::number_of_executed_units:/ {print $2}' "$log")
    rate=$(awk '/stat::average_exec_per_sec:/ {print $2}' "$log")
    echo "fuzz-smoke.sh: $t: ${runs:-?} executions in ${SECS} s (${rate:-?}/s), no crash"
    rm -f "$log"
done
echo "fuzz-smoke.sh: done in $(( $(date +%s) - t0 )) s"
