#!/usr/bin/env bash
# The whole test suite: the README's second command, and what CI runs (.ci/run).
# Installs what the tests need (DPDK, hugepages) through scripts/setup.sh, then runs every test of
# the workspace (flowtable unit/property tests; end-to-end tests that start evsd with dpdk-testpmd
# guests and with network-namespace guests), then a smoke run of the benchmark harness against
# OVS-DPDK and the testpmd ceiling (benches/smoke.sh; skip it with EVS_SKIP_BENCH_SMOKE=1), and
# 30 s of every fuzz target (scripts/fuzz-smoke.sh; skip it with EVS_SKIP_FUZZ_SMOKE=1).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -x scripts/setup.sh ]; then
    scripts/setup.sh
fi
# Lints first (workspace lints in Cargo.toml: undocumented unsafe blocks denied, ...).
cargo clippy --workspace --all-targets -- -D warnings 2>&1
# The store suite must really run against etcd (setup.sh installed it), not skip.
# EVS_PACKAGE_PREBUILT: tests/tests/package.rs packages the binaries this build made.
DVS_STORE_REQUIRE_ETCD=1 EVS_PACKAGE_PREBUILT=1 cargo test --workspace 2>&1
if [ "${EVS_SKIP_FUZZ_SMOKE:-0}" != 1 ]; then
    # 15 s per target in CI (FUZZ_SECS overrides): with the cold build, about 10 minutes.
    FUZZ_SECS=${FUZZ_SECS:-15} scripts/fuzz-smoke.sh
fi
if [ "${EVS_SKIP_BENCH_SMOKE:-0}" != 1 ]; then
    benches/smoke.sh
fi
