#!/usr/bin/env bash
# First sanity throughput figure: 64-byte frames between two vhost-user ports, forwarded on one
# core (CPU 1) by (a) evsd and (b) dpdk-testpmd io-forwarding between two net_vhost ports (the
# ceiling), with a dpdk-testpmd generator (two virtio_user ports, mac-forwarding loop primed with
# `start tx_first`) on the other core. Windows alternate between the two forwarders.
#
#   benches/sanity.sh            (as root; hugepages from scripts/setup.sh if present, else --no-huge)
#   WINDOW=10 ROUNDS=3 EVSD=/path/to/evsd benches/sanity.sh
#
# Prints Mpps through the forwarder (both directions summed), evsd's cycles per packet (busy
# iterations only) and how busy its forwarding thread was: below ~95% busy the generator, not evsd,
# set the rate. "on CPU" is the share of the window the forwarding thread really ran (from
# /proc/PID/task/TID/schedstat): well below 100% means another tenant took the core and the
# window is not comparable. The machine is shared: compare only figures of the same run.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TGT=${CARGO_TARGET_DIR:-$ROOT/target}
EVSD=${EVSD:-$TGT/release/evsd}
WINDOW=${WINDOW:-5}
ROUNDS=${ROUNDS:-2}
WARMUP=${WARMUP:-3}
HUGE_DIR=${HUGE_DIR:-/mnt/evs-huge}

[ "$(id -u)" = 0 ] || { echo "sanity.sh: run as root" >&2; exit 1; }
[ -x "$EVSD" ] || { echo "sanity.sh: $EVSD missing: cargo build --release -p evsd" >&2; exit 1; }
command -v dpdk-testpmd >/dev/null || { echo "sanity.sh: dpdk-testpmd missing (scripts/setup.sh)" >&2; exit 1; }

free_pages=$(awk '/HugePages_Free/ {print $2}' /proc/meminfo)
if mountpoint -q "$HUGE_DIR" && [ "${free_pages:-0}" -ge 400 ]; then
    MEM="hugepages"
    FWD_MEM=(--in-memory --huge-dir "$HUGE_DIR" -m 256)
    # vhost-user shares at most 8 memory regions: one file for all segments.
    GEN_MEM=(--in-memory --single-file-segments --huge-dir "$HUGE_DIR" -m 256)
    EVSD_EAL="no_huge = false
memory_mb = 256
huge_dir = \"$HUGE_DIR\""
else
    MEM="no-huge (expect ~35% less; run scripts/setup.sh for hugepages)"
    FWD_MEM=(--no-huge -m 256)
    GEN_MEM=(--no-huge -m 256)
    EVSD_EAL="no_huge = true
memory_mb = 256"
fi

WORK=$(mktemp -d /tmp/evs-sanity.XXXXXX)
PIDS=()
PREFIXES=()
# Forwarders start inside command substitutions (subshells): their pids go to a file so the
# cleanup of the main shell can stop them whatever happened.
cleanup() {
    [ -f "$WORK/pids" ] && while read -r p; do PIDS+=("$p"); done <"$WORK/pids"
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$p" 2>/dev/null || true
    done
    for x in "${PREFIXES[@]}"; do rm -rf "/var/run/dpdk/$x"; done
    if [ -n "${KEEP:-}" ]; then echo "sanity.sh: logs kept in $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

SA=$WORK/a.sock
SB=$WORK/b.sock
# Prefixes are fixed per role (command substitutions run in subshells, so no counters there);
# every process uses --in-memory or is gone before the next one of its role starts.
P_GEN="evs-sanity-$$-gen"
P_EVSD="evs-sanity-$$-evsd"
P_CEIL="evs-sanity-$$-ceil"
PREFIXES+=("$P_GEN" "$P_EVSD" "$P_CEIL")

wait_sockets() {
    for _ in $(seq 100); do [ -S "$SA" ] && [ -S "$SB" ] && return 0; sleep 0.1; done
    echo "sanity.sh: forwarder did not create its sockets" >&2; return 1
}

# The thread id of the forwarding thread named $2 in process $1.
thread_of() {
    local t
    for t in /proc/"$1"/task/*; do
        [ "$(cat "$t/comm" 2>/dev/null)" = "$2" ] && { basename "$t"; return 0; }
    done
    return 1
}

# Nanoseconds the thread ran so far (first field of schedstat).
ran_ns() { cut -d' ' -f1 "/proc/$1/task/$2/schedstat" 2>/dev/null || echo 0; }

# Runs the generator for one window; prints the total Rx-pps it measured (both ports) and the
# share of the window the forwarding thread was really on its CPU (other tenants steal it).
# $1: forwarder pid, $2: its forwarding thread name, $3: optional evsd control socket (stats reset
# at window start, threads saved at the end).
generate() {
    local fpid=$1 fname=$2 ctl=${3:-}
    local log=$WORK/gen.log
    {
        sleep 1
        echo "start tx_first 8"
        sleep "$WARMUP"
        echo "show port stats all"
        [ -n "$ctl" ] && "$EVSD" ctl -s "$ctl" stats-reset >/dev/null
        local tid r0 t0
        tid=$(thread_of "$fpid" "$fname" || echo 0)
        r0=$(ran_ns "$fpid" "$tid")
        t0=$(date +%s%N)
        sleep "$WINDOW"
        echo "show port stats all"
        echo "$(( ($(ran_ns "$fpid" "$tid") - r0) * 100 / ($(date +%s%N) - t0) ))" >"$WORK/cpu_share"
        [ -n "$ctl" ] && "$EVSD" ctl -s "$ctl" --json show threads >"$WORK/threads.json"
        echo "stop"
        echo "quit"
    } | stdbuf -oL dpdk-testpmd --lcores 0@0,1@0 "${GEN_MEM[@]}" --no-pci --file-prefix "$P_GEN" \
        --log-level=lib.eal:notice \
        --vdev "virtio_user0,path=$SA,queues=1,mac=02:00:00:00:00:01" \
        --vdev "virtio_user1,path=$SB,queues=1,mac=02:00:00:00:00:02" -- \
        -i --forward-mode=mac --eth-peer=0,02:00:00:00:00:02 --eth-peer=1,02:00:00:00:00:01 \
        --nb-cores=1 --total-num-mbufs=32768 >"$log" 2>&1 || true
    # The second "show port stats all" covers the window: sum its two Rx-pps lines.
    grep 'Rx-pps:' "$log" | tail -2 | awk '{s += $2} END {printf "%.2f", s / 1e6}'
    printf ' %s%%\n' "$(cat "$WORK/cpu_share" 2>/dev/null || echo '?')"
}

run_evsd() {
    cat >"$WORK/evsd.toml" <<CFG
[eal]
cores = "0"
$EVSD_EAL
file_prefix = "$P_EVSD"
args = ["--no-pci", "--log-level=lib.eal:notice", "--log-level=lib.vhost.config:warning"]
[dataplane]
cores = [1]
idle_sleep_us = 0
mbufs = 16383
control_socket = "$WORK/evsd.sock"
state_dir = "$WORK/state"
[[port_groups]]
name = "pg"
vlan = 100
[[ports]]
name = "a"
mac = "02:00:00:00:00:01"
port_group = "pg"
[[ports]]
name = "b"
mac = "02:00:00:00:00:02"
port_group = "pg"
[[attach]]
port = "a"
vhost = { socket = "$SA" }
[[attach]]
port = "b"
vhost = { socket = "$SB" }
CFG
    "$EVSD" run -c "$WORK/evsd.toml" >"$WORK/evsd.log" 2>&1 &
    local pid=$!
    echo "$pid" >>"$WORK/pids"
    wait_sockets
    # Sockets exist once the ports are attached; the control socket answers once all are.
    for _ in $(seq 100); do
        "$EVSD" ctl -s "$WORK/evsd.sock" show threads >/dev/null 2>&1 && break
        sleep 0.1
    done
    local mpps share
    read -r mpps share < <(generate "$pid" evs-fwd0 "$WORK/evsd.sock")
    local cpp busy
    cpp=$(grep -o '"cycles_per_packet": [0-9.]*' "$WORK/threads.json" | awk '{printf "%.0f", $2}')
    busy=$(grep -o '"busy_pct": [0-9.]*' "$WORK/threads.json" | awk '{printf "%.0f%%", $2}')
    kill "$pid"; wait "$pid" 2>/dev/null || true
    cp "$WORK/gen.log" "$WORK/gen-evsd.log"
    cp "$WORK/evsd.log" "$WORK/evsd-last.log"
    echo "$mpps ${cpp:-?} ${busy:-?} $share"
}

run_ceiling() {
    stdbuf -oL dpdk-testpmd --lcores 0@0,1@1 "${FWD_MEM[@]}" --no-pci --file-prefix "$P_CEIL" \
        --log-level=lib.eal:notice --log-level=lib.vhost.config:warning \
        --vdev "net_vhost0,iface=$SA,queues=1" --vdev "net_vhost1,iface=$SB,queues=1" -- \
        --forward-mode=io --nb-cores=1 --total-num-mbufs=16384 --auto-start --stats-period 1000 \
        >"$WORK/ceil.log" 2>&1 &
    local pid=$!
    echo "$pid" >>"$WORK/pids"
    wait_sockets
    local out
    out=$(generate "$pid" rte-worker-1)
    kill "$pid"; wait "$pid" 2>/dev/null || true
    rm -f "$SA" "$SB"
    # Print last: the caller reads this line and goes on, so the forwarder must be gone by then.
    echo "$out"
}

echo "sanity.sh: memory: $MEM; window ${WINDOW}s x $ROUNDS rounds; 64-byte frames; forwarder on CPU 1"
echo "sanity.sh: steal before: $(awk '/^cpu /{print $9}' /proc/stat) (jiffies); load: $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq "$ROUNDS"); do
    read -r e cpp busy eshare < <(run_evsd)
    read -r c cshare < <(run_ceiling)
    printf 'round %d: evsd %6s Mpps (%s cycles/pkt, thread %s busy, on CPU %s)   testpmd-io ceiling %6s Mpps (on CPU %s)\n' \
        "$r" "$e" "$cpp" "$busy" "$eshare" "$c" "$cshare"
done
