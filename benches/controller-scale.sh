#!/usr/bin/env bash
# dvs-controller at scale (benches/controller-scale): simulated host agents (the real dvs-agent
# with a simulated switch that compiles each slice with flowtable) against the real
# dvs-controller, on the embedded store and on a 3-member etcd cluster on loopback.
#
#   benches/controller-scale.sh [--quick] [--stores "embedded etcd"] [--sizes "100x100 1000x100"]
#                               [--huge "10000x10"] [--changes N]
#
# --quick: one run, 100 hosts × 100 ports on the embedded store, 10 changes (the smoke run, well
# under a minute once built). Default: every store × every size, then the --huge size (the
# 10,000-host attempt; "" to skip). Every run is appended to
# benches/results/controller-<date>.json and its table printed; the agents' and the
# controller's logs go to a temporary directory named at the end.
#
# Builds in release (CARGO_TARGET_DIR, default the workspace target/; BENCH_JOBS, default 1, so
# a build never overlaps a measurement on a shared machine). etcd runs need `etcd` (Debian's
# etcd-server; installed here if missing, without starting its service).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
JOBS=${BENCH_JOBS:-1}
QUICK=0
STORES="embedded etcd"
SIZES="100x100 1000x100"
HUGE="10000x10"
CHANGES=30
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --stores) STORES=$2; shift ;;
        --sizes) SIZES=$2; shift ;;
        --huge) HUGE=$2; shift ;;
        --changes) CHANGES=$2; shift ;;
        *) echo "controller-scale.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done

echo "controller-scale.sh: building (release, -j$JOBS, $CARGO_TARGET_DIR)" >&2
(cd "$ROOT" && cargo build -q -j"$JOBS" --release -p dvs-controller -p evs-controller-bench)
BIN=$CARGO_TARGET_DIR/release/evs-controller-bench

case " $STORES " in
    *" etcd "*)
        if [ "$QUICK" = 0 ] && ! command -v etcd >/dev/null; then
            echo "controller-scale.sh: installing etcd-server (its service is not started)" >&2
            created_policy=0
            if [ ! -e /usr/sbin/policy-rc.d ]; then
                printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
                chmod 755 /usr/sbin/policy-rc.d
                created_policy=1
            fi
            apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q etcd-server >/dev/null || true
            [ "$created_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
            command -v etcd >/dev/null || { echo "controller-scale.sh: no etcd: skipping the etcd runs" >&2; STORES=${STORES//etcd/}; }
        fi ;;
esac

# Two sockets per agent on each side (its watch stream and its status connection): as many
# descriptors as the hard limit allows.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
OUT=$ROOT/benches/results/controller-$(date -u +%Y%m%d).json
LOGS=$(mktemp -d /tmp/controller-scale-logs.XXXXXX)

run() { # store hosts ports extra-args...
    local store=$1 hosts=$2 ports=$3
    shift 3
    local log=$LOGS/$store-${hosts}x$ports.log
    echo "controller-scale.sh: $store, $hosts hosts × $ports ports (log $log)" >&2
    # The benchmark stops everything it started; a run that fails is reported, not fatal, so
    # that the size where the machine breaks is on record along with the ones that held.
    if ! "$BIN" --store "$store" --hosts "$hosts" --ports "$ports" --out "$OUT" "$@" 2>"$log" \
        | grep -v '^# .* change [0-9]*:'; then
        echo "controller-scale.sh: $store ${hosts}x$ports FAILED; last lines of $log:" >&2
        tail -5 "$log" >&2
    fi
}

if [ "$QUICK" = 1 ]; then
    run embedded 100 100 --changes 10 --sparse-changes 5 --resync-ports 20000 --timeout-s 30
else
    for store in $STORES; do
        for size in $SIZES; do
            h=${size%x*}
            p=${size#*x}
            extra=()
            # Past 100 hosts the simulated switches compile on a sample: 1,000 hosts' compiles
            # on this machine's 2 cores would measure those cores, not the controller (each
            # host has its own CPU in reality). The sample's apply times are in the results.
            [ "$h" -gt 100 ] && extra=(--compile-sample 50)
            run "$store" "$h" "$p" --changes "$CHANGES" "${extra[@]}"
        done
    done
    if [ -n "$HUGE" ]; then
        for store in $STORES; do
            run "$store" "${HUGE%x*}" "${HUGE#*x}" --changes 10 --sparse-changes 5 --resync-ports 0 \
                --compile-sample 50 --stack-kib 256 --timeout-s 300
        done
    fi
fi
echo "controller-scale.sh: results appended to $OUT; logs in $LOGS" >&2
