#!/usr/bin/env bash
# The side-by-side benchmark in one command: evsd vs Open vSwitch with DPDK vs dpdk-testpmd
# io-forwarding (the vhost-user ceiling), same cores (switch on CPU 1, evs-pktgen on CPU 0).
#
#   benches/run.sh [--quick] [--only P1,P3] [--switches evsd,ovs,testpmd] [--rounds N]
#                  [--window S] [--wait-idle S] [--max-load L]
#
# --quick: 1 round of 2 s windows (the smoke test, ~3 min); default: 3 rounds of 5 s windows,
# after waiting (up to 2 min) for the machine to be idle. Results: benches/results/<ts>.json,
# benches/results/latest.md, benches/results/latest.svg. See docs/benchmarks.md.
#
# Builds in release mode (CARGO_TARGET_DIR, default the workspace target/; BENCH_JOBS, default 1 so a
# build never overlaps a measurement on a shared machine; BENCH_PROFILE=dev uses the test build's
# profile instead, as the smoke run does: its figures are then not the product's, and the results
# say so), installs what is
# missing (dpdk, openvswitch-switch-dpdk, without starting any service), adds the hugepages it
# needs and mounts a private hugetlbfs; on exit (also on error or Ctrl-C) every child is stopped,
# the mount removed and exactly the added pages given back.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
JOBS=${BENCH_JOBS:-1}
PROFILE=${BENCH_PROFILE:-release}
case "$PROFILE" in
    release) BIN=release ;;
    dev) BIN=debug ;;
    *) echo "run.sh: BENCH_PROFILE is release or dev, not '$PROFILE'" >&2; exit 2 ;;
esac
PAGES=${BENCH_HUGEPAGES:-1024}          # 2 MiB pages to add: switch 512 MiB + generator 256 MiB
NR=/proc/sys/vm/nr_hugepages

[ "$(id -u)" = 0 ] || { echo "run.sh: run as root (DPDK, hugepages, OVS)" >&2; exit 1; }

# --- packages ---------------------------------------------------------------------------------
missing=""
for p in dpdk openvswitch-switch-dpdk; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "run.sh: installing$missing" >&2
    # Do not let the packages start system-wide daemons: a policy-rc.d that refuses, unless the
    # machine already has one (then it is left exactly as it was).
    created_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        created_policy=1
    fi
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q $missing >/dev/null
    [ "$created_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
fi

# --- build ------------------------------------------------------------------------------------
echo "run.sh: building ($PROFILE, -j$JOBS, $CARGO_TARGET_DIR)" >&2
(cd "$ROOT" && cargo build -q -j"$JOBS" --profile "$PROFILE" -p evsd -p evs-pktgen)

# --- hugepages and a private hugetlbfs --------------------------------------------------------
WORK=$(mktemp -d /tmp/evs-bench.XXXXXX)
HUGE_DIR=$WORK/huge
added=0
mounted=0
cleanup() {
    rc=$?
    trap - EXIT INT TERM
    [ -n "${PYPID:-}" ] && kill "$PYPID" 2>/dev/null && wait "$PYPID" 2>/dev/null
    if [ "$mounted" = 1 ]; then umount "$HUGE_DIR" || umount -l "$HUGE_DIR" || true; fi
    if [ "$added" -gt 0 ]; then
        now=$(cat $NR)
        echo $((now - added)) >$NR || true
        echo "run.sh: gave back $added hugepages (nr_hugepages $now -> $(cat $NR))" >&2
    fi
    if [ -n "${KEEP:-}" ]; then echo "run.sh: logs kept in $WORK" >&2; else rm -rf "$WORK"; fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

before=$(cat $NR)
echo $((before + PAGES)) >$NR
added=$(( $(cat $NR) - before ))
if [ "$added" -lt "$PAGES" ]; then
    echo "run.sh: only $added of $PAGES hugepages could be reserved (memory fragmented?)" >&2
    [ "$added" -ge 512 ] || exit 1
fi
mkdir -p "$HUGE_DIR"
mount -t hugetlbfs -o pagesize=2M nodev "$HUGE_DIR"
mounted=1

# --- run --------------------------------------------------------------------------------------
export EVSD=$CARGO_TARGET_DIR/$BIN/evsd PKTGEN=$CARGO_TARGET_DIR/$BIN/evs-pktgen BENCH_PROFILE=$PROFILE
export HUGE_DIR WORK RESULTS=$ROOT/benches/results
python3 "$ROOT/benches/harness/bench.py" "$@" &
PYPID=$!
wait "$PYPID"
