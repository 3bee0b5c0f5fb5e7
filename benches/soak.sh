#!/usr/bin/env bash
# Soak: evsd forwarding at full rate between two dpdk-testpmd/virtio_user guests for a long time
# while guest B leaves and reconnects every CYCLE seconds and a model is applied every second
# (`evsd ctl apply`, alternating between two models that keep a and b in one VLAN). Not in CI.
#
#   benches/soak.sh                      (as root; one hour)
#   benches/soak.sh --duration 5m --cycle 20
#   EVSD=/path/to/evsd KEEP=1 benches/soak.sh --duration 30m
#
# Guest A (txonly, 64-byte UDP towards B's MAC) runs the whole time; guest B (rxonly) runs in
# sessions of CYCLE seconds. Samples evsd's RSS, open fds and mbufs in use (`evs_mbufs_in_use`
# from `evsd ctl metrics`) five seconds into the first and into the last session of B (both with
# traffic flowing), and mbufs in use with no guest connected, before and after. Prints a table,
# the packets A sent, B received and evsd's account of the difference (its drops by reason), and
# fails if RSS grew more than RSS_KB (8192), fds more than FDS (2), mbufs in use with traffic more
# than MBUFS (1024, what rings in flight hold differs from one moment to the next) or without
# traffic more than IDLE_MBUFS (32).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TGT=${CARGO_TARGET_DIR:-$ROOT/target}
EVSD=${EVSD:-$TGT/release/evsd}
HUGE_DIR=${HUGE_DIR:-/mnt/evs-huge}
RSS_KB=${RSS_KB:-8192}
FDS=${FDS:-2}
MBUFS=${MBUFS:-1024}
IDLE_MBUFS=${IDLE_MBUFS:-32}
DURATION=3600
CYCLE=30

die() { echo "soak.sh: $*" >&2; exit 1; }
# 90, 90s, 15m, 1h -> seconds
secs() {
    case "$1" in
        *h) echo $(( ${1%h} * 3600 )) ;;
        *m) echo $(( ${1%m} * 60 )) ;;
        *s) echo "${1%s}" ;;
        *[!0-9]*|'') die "not a duration: '$1' (examples: 300, 90s, 5m, 1h)" ;;
        *) echo "$1" ;;
    esac
}
while [ $# -gt 0 ]; do
    case "$1" in
        --duration) DURATION=$(secs "${2:?--duration needs a value}"); shift 2 ;;
        --cycle) CYCLE=$(secs "${2:?--cycle needs a value}"); shift 2 ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) die "unknown argument '$1' (--duration D, --cycle D)" ;;
    esac
done
[ "$CYCLE" -ge 10 ] || die "--cycle must be at least 10 s (samples are taken 5 s into a session)"
[ "$DURATION" -ge $(( 2 * CYCLE )) ] || die "--duration must be at least two cycles ($(( 2 * CYCLE )) s)"
[ "$(id -u)" = 0 ] || die "run as root"
[ -x "$EVSD" ] || die "$EVSD missing: cargo build --release -p evsd"
command -v dpdk-testpmd >/dev/null || die "dpdk-testpmd missing (scripts/setup.sh)"
command -v python3 >/dev/null || die "python3 missing"

free_pages=$(awk '/HugePages_Free/ {print $2}' /proc/meminfo)
if mountpoint -q "$HUGE_DIR" && [ "${free_pages:-0}" -ge 600 ]; then
    # Hugepages are not in RSS: what RSS shows is evsd's own heap.
    MEM="hugepages"
    GEN_MEM=(--in-memory --single-file-segments --huge-dir "$HUGE_DIR" -m 256)
    EVSD_EAL="no_huge = false
memory_mb = 256
huge_dir = \"$HUGE_DIR\""
else
    # The pool is then ordinary memory that RSS counts as it is touched: the start sample comes
    # after warm-up traffic, but expect more RSS noise.
    MEM="no-huge"
    GEN_MEM=(--no-huge -m 256)
    EVSD_EAL="no_huge = true
memory_mb = 256"
fi

WORK=$(mktemp -d /tmp/evs-soak.XXXXXX)
P_EVSD="evs-soak-$$-evsd"
P_A="evs-soak-$$-a"
P_B="evs-soak-$$-b"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$p" 2>/dev/null || true
    done
    rm -rf "/var/run/dpdk/$P_EVSD" "/var/run/dpdk/$P_A" "/var/run/dpdk/$P_B"
    if [ -n "${KEEP:-}" ]; then echo "soak.sh: logs kept in $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

SA=$WORK/a.sock
SB=$WORK/b.sock
CTL=$WORK/evsd.sock
ctl() { "$EVSD" ctl -s "$CTL" "$@"; }

# Two models with a and b in VLAN 100: the second adds an unattached port c and puts a and b in
# an open security group (so each apply recompiles their tables and conntrack zones).
cat >"$WORK/model-1.json" <<'M'
{ "port_groups": [ { "name": "pg", "type": "access", "vlan": 100 } ],
  "ports": [ { "name": "a", "mac": "02:00:00:00:00:01", "port_group": "pg" },
             { "name": "b", "mac": "02:00:00:00:00:02", "port_group": "pg" } ] }
M
cat >"$WORK/model-2.json" <<'M'
{ "port_groups": [ { "name": "pg", "type": "access", "vlan": 100 } ],
  "security_groups": [ { "name": "open", "rules": [ { "direction": "egress" },
      { "direction": "ingress" } ] } ],
  "ports": [ { "name": "a", "mac": "02:00:00:00:00:01", "port_group": "pg", "security_group": "open" },
             { "name": "b", "mac": "02:00:00:00:00:02", "port_group": "pg", "security_group": "open" },
             { "name": "c", "mac": "02:00:00:00:00:03", "port_group": "pg" } ] }
M

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
control_socket = "$CTL"
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
EVSD_PID=$!
PIDS+=("$EVSD_PID")
for _ in $(seq 200); do ctl show threads >/dev/null 2>&1 && break; sleep 0.1; done
ctl show threads >/dev/null || { cat "$WORK/evsd.log" >&2; die "evsd did not come up"; }

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$EVSD_PID/status"; }
fds() { find "/proc/$EVSD_PID/fd" -mindepth 1 -maxdepth 1 | wc -l; }
mbufs_in_use() { ctl metrics | awk '$1 == "evs_mbufs_in_use" {print $2}'; }
link_up() { ctl --json show ports | python3 -c "import json,sys; print(any(p['name'] == '$1' and p['state'] == 'up' for p in json.load(sys.stdin)))"; }
wait_link() {  # $1 port, $2 True|False
    for _ in $(seq 100); do [ "$(link_up "$1")" = "$2" ] && return 0; sleep 0.1; done
    die "port $1 did not become up=$2"
}

IDLE_START=$(mbufs_in_use)

# A guest: testpmd interactive with one virtio_user port, its commands written to a FIFO so the
# loop below decides when it starts, stops and quits; `show port stats all` before `quit` prints
# its totals, parsed from its log.
start_guest() {  # $1 name, $2 socket, $3 mac, $4 forward mode, $5 file prefix
    rm -f "$WORK/$1.in"
    mkfifo "$WORK/$1.in"
    stdbuf -oL dpdk-testpmd --lcores 0@0,1@0 "${GEN_MEM[@]}" --no-pci --file-prefix "$5" \
        --log-level=lib.eal:notice \
        --vdev "virtio_user0,path=$2,queues=1,mac=$3" -- \
        -i --forward-mode="$4" --eth-peer=0,02:00:00:00:00:02 --txpkts=64 \
        --nb-cores=1 --total-num-mbufs=8192 <"$WORK/$1.in" >"$WORK/$1.log" 2>&1 &
    echo "$!" >"$WORK/$1.pid"
    PIDS+=("$!")
}
# Ends guest $1 (its FIFO writer is this shell's fd $2) and prints its $3-packets total.
quit_guest() {
    local pid
    pid=$(cat "$WORK/$1.pid")
    printf 'show port stats all\nquit\n' >&"$2"
    for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && die "guest $1 did not quit (see $WORK/$1.log)"
    grep -o "$3-packets: *[0-9]*" "$WORK/$1.log" | tail -1 | grep -o '[0-9]*$' || echo 0
}

START=$(date +%s)
END=$(( START + DURATION ))
start_guest a "$SA" 02:00:00:00:00:01 txonly "$P_A"
exec {A_FD}>"$WORK/a.in"
wait_link a True
echo start >&"$A_FD"

B_RX=0
SESSIONS=0
APPLIES=0
APPLY_ERRORS=0
model=1
declare -A S_RSS S_FDS S_MBUFS
sample() { S_RSS[$1]=$(rss_kb); S_FDS[$1]=$(fds); S_MBUFS[$1]=$(mbufs_in_use); }

echo "soak.sh: memory: $MEM; ${DURATION}s, guest B reconnects every ${CYCLE}s, a model every second; logs in $WORK"
while :; do
    left=$(( END - $(date +%s) ))
    len=$CYCLE
    last=0
    # The last session runs to the end: A stops sending in it, and the end sample is taken there.
    if [ "$left" -lt $(( 2 * CYCLE )) ]; then len=$left; last=1; fi
    start_guest b "$SB" 02:00:00:00:00:02 rxonly "$P_B"
    exec {B_FD}>"$WORK/b.in"
    wait_link b True
    echo start >&"$B_FD"
    SESSIONS=$(( SESSIONS + 1 ))
    for i in $(seq "$len"); do
        sleep 1
        if ctl apply "$WORK/model-$model.json" >>"$WORK/applies.log" 2>&1; then
            APPLIES=$(( APPLIES + 1 ))
        else
            APPLY_ERRORS=$(( APPLY_ERRORS + 1 ))
        fi
        model=$(( 3 - model ))
        if [ "$i" = 5 ]; then
            if [ "$SESSIONS" = 1 ]; then sample start; fi
            if [ "$last" = 1 ]; then sample end; fi
        fi
        # A stops 2 s before B leaves for the last time, so what it sent has arrived.
        [ "$last" = 1 ] && [ "$i" = $(( len - 2 )) ] && echo stop >&"$A_FD"
    done
    rx=$(quit_guest b "$B_FD" RX)
    exec {B_FD}>&-
    B_RX=$(( B_RX + rx ))
    cp "$WORK/b.log" "$WORK/b-$SESSIONS.log"
    wait_link b False
    [ "$last" = 1 ] && break
done

A_TX=$(quit_guest a "$A_FD" TX)
exec {A_FD}>&-
wait_link a False
IDLE_END=$(mbufs_in_use)
ctl --json show ports >"$WORK/ports.json"
RSS_END_IDLE=$(rss_kb)

python3 - "$WORK/ports.json" <<PY
import json, sys
ports = {p["name"]: p for p in json.load(open(sys.argv[1]))}
rows = [
    ("RSS (KiB)", ${S_RSS[start]:-0}, ${S_RSS[end]:-0}, $RSS_KB),
    ("open fds", ${S_FDS[start]:-0}, ${S_FDS[end]:-0}, $FDS),
    ("mbufs in use, traffic", ${S_MBUFS[start]:-0}, ${S_MBUFS[end]:-0}, $MBUFS),
    ("mbufs in use, no guest", $IDLE_START, $IDLE_END, $IDLE_MBUFS),
]
print(f"{'':24} {'start':>10} {'end':>10} {'growth':>8} {'bound':>8}")
bad = []
for name, a, b, bound in rows:
    print(f"{name:24} {a:>10} {b:>10} {b - a:>8} {bound:>8}")
    if b - a > bound:
        bad.append(name)
sent, recv = $A_TX, $B_RX
a, b = ports["a"], ports["b"]
print(f"duration ${DURATION}s; B sessions $SESSIONS; models applied $APPLIES (refused $APPLY_ERRORS); RSS idle at end $RSS_END_IDLE KiB")
print(f"packets: A sent {sent}, B received {recv}, lost {sent - recv} ({(sent - recv) * 100 / max(sent, 1):.3f}%)")
drops = {f"{n}.{r}": v for n, p in (("a", a), ("b", b)) for r, v in p["drops"].items()}
drops.update({f"{n}.egress.{r}": v for n, p in (("a", a), ("b", b)) for r, v in p["egress_drops"].items()})
print(f"  evsd: a rx {a['rx_packets']}, b tx {b['tx_packets']}, dropped {sum(drops.values())} {drops}")
if a.get("pmd"):
    print(f"  a's vhost ring missed {a['pmd'].get('imissed', 0)} (A sent faster than evsd took)")
if bad:
    print("soak.sh: FAIL: grew beyond the bound: " + ", ".join(bad))
    sys.exit(1)
if $APPLY_ERRORS:
    print("soak.sh: FAIL: evsd refused some applies (see applies.log)")
    sys.exit(1)
print("soak.sh: OK: flat")
PY
