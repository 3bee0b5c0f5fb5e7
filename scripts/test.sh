#!/usr/bin/env bash
# The whole test suite: the README's second command, and what CI runs (.ci/run).
# Installs what the tests need (DPDK, hugepages) through scripts/setup.sh, then runs every test of
# the workspace: flowtable unit/property tests, and the end-to-end tests that start evsd with real
# dpdk-testpmd guests.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -x scripts/setup.sh ]; then
    scripts/setup.sh
fi
cargo test --workspace 2>&1
