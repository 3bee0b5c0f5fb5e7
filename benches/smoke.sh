#!/usr/bin/env bash
# Smoke run of the side-by-side harness (a couple of seconds per scenario), part of the test suite
# so the harness cannot rot: every scenario runs against evsd, OVS-DPDK and the testpmd ceiling,
# and the run fails unless each of them forwarded.
set -euo pipefail
cd "$(dirname "$0")/.."
# The test build's profile (optimised, `[profile.dev]`): the smoke checks that the harness works,
# not the figures, and a release build (thin LTO, one codegen unit) would add minutes to CI.
BENCH_PROFILE=${BENCH_PROFILE:-dev} BENCH_JOBS=${BENCH_JOBS:-2} benches/run.sh --quick
python3 benches/harness/check_smoke.py
