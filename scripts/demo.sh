#!/usr/bin/env bash
# The main job (README's first command): install what is missing, build, start evsd with two
# vhost-user ports in one port group, attach two dpdk-testpmd "guests" (virtio_user), let guest A
# send to guest B for a few seconds, print the port statistics of both sides, and stop cleanly.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

[ "$(id -u)" = 0 ] || { echo "demo.sh: run as root (DPDK needs it)" >&2; exit 1; }
scripts/setup.sh
cargo build --release -p dataplane --bin evsd
EVSD=$ROOT/target/release/evsd

WORK=$(mktemp -d /tmp/evs-demo.XXXXXX)
PIDS=()
cleanup() {
    set +e
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    [ -S "$WORK/evsd.sock" ] && "$EVSD" ctl -s "$WORK/evsd.sock" shutdown >/dev/null 2>&1
    sleep 0.5
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
    rm -rf "$WORK" /var/run/dpdk/evs-demo-*
}
trap cleanup EXIT INT TERM

cat > "$WORK/evsd.toml" <<TOML
[eal]
cores = "0"
no_huge = true
memory_mb = 512
file_prefix = "evs-demo-switch"
args = ["--no-pci"]

[dataplane]
cores = [1]
idle_sleep_us = 20
control_socket = "$WORK/evsd.sock"
metrics_listen = "127.0.0.1:9651"

[[port_groups]]
name = "web"
type = "access"
vlan = 100

[[ports]]
name = "vm-a"
mac = "02:00:00:00:00:0a"
ips = ["10.0.0.10"]
port_group = "web"

[[ports]]
name = "vm-b"
mac = "02:00:00:00:00:0b"
ips = ["10.0.0.11"]
port_group = "web"

[[attach]]
port = "vm-a"
vhost = { socket = "$WORK/vm-a.sock", role = "server" }

[[attach]]
port = "vm-b"
vhost = { socket = "$WORK/vm-b.sock", role = "server" }
TOML

echo "== starting evsd (config: $WORK/evsd.toml)"
"$EVSD" run -c "$WORK/evsd.toml" > "$WORK/evsd.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 60); do
    "$EVSD" ctl -s "$WORK/evsd.sock" show threads >/dev/null 2>&1 && break
    sleep 0.5
done
"$EVSD" ctl -s "$WORK/evsd.sock" show threads >/dev/null || { cat "$WORK/evsd.log"; exit 1; }

guest() { # name socket mode
    stdbuf -oL dpdk-testpmd -l 0,1 --no-huge -m 256 --no-pci --file-prefix "evs-demo-$1" \
        --log-level=lib.eal:notice --vdev="virtio_user0,path=$2,queues=1,mac=$4" -- \
        --nb-cores=1 --total-num-mbufs=8192 --stats-period=1 --forward-mode="$3" \
        --eth-peer=0,02:00:00:00:00:0b > "$WORK/$1.log" 2>&1 &
    PIDS+=($!)
}
echo "== guest B (rxonly) and guest A (txonly, 64-byte UDP to B's MAC)"
guest vm-b "$WORK/vm-b.sock" rxonly 02:00:00:00:00:0b
guest vm-a "$WORK/vm-a.sock" txonly 02:00:00:00:00:0a

rx_of_b() { grep -a "RX-packets" "$WORK/vm-b.log" | tail -1 | awk '{print $2}'; }
for _ in $(seq 1 60); do
    n=$(rx_of_b || true)
    [ -n "$n" ] && [ "$n" -gt 100000 ] && break
    sleep 0.5
done
sleep 3
echo "== evsd port statistics"
"$EVSD" ctl -s "$WORK/evsd.sock" show ports
echo "== evsd forwarding thread"
"$EVSD" ctl -s "$WORK/evsd.sock" show threads
echo "== guest B received $(rx_of_b) packets from guest A through evsd"
[ "$(rx_of_b || echo 0)" -gt 0 ] || { echo "demo failed: guest B received nothing"; tail -20 "$WORK/evsd.log"; exit 1; }
echo "== stopping"
