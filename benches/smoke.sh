#!/usr/bin/env bash
# Smoke run of the side-by-side harness (a couple of seconds per scenario), part of the test suite
# so the harness cannot rot: every scenario runs against evsd, OVS-DPDK and the testpmd ceiling,
# and the run fails unless each of them forwarded.
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH_JOBS=${BENCH_JOBS:-2} benches/run.sh --quick
python3 benches/harness/check_smoke.py
