#!/usr/bin/env bash
# The single-host demo (the README's first command is scripts/dvs-demo.sh, the distributed one):
# install what is missing, build, start evsd with two vhost-user ports in one port group, attach
# two dpdk-testpmd "guests" (virtio_user), let guest A send to guest B for a few seconds, print
# the port statistics of both sides, and stop cleanly.
#
#   scripts/demo.sh --qemu    the guests are two real Linux VMs under QEMU (TCG, so no hardware
#                             virtualization needed; image from scripts/guest-image.sh): A pings B
#                             and sends it 4 MiB over TCP, as tests/tests/qemu_guests.rs does.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
QEMU=0
case "${1:-}" in
    --qemu) QEMU=1 ;;
    "") ;;
    *) echo "usage: demo.sh [--qemu]" >&2; exit 2 ;;
esac

[ "$(id -u)" = 0 ] || { echo "demo.sh: run as root (DPDK needs it)" >&2; exit 1; }
scripts/setup.sh
cargo build --release -p evsd --bin evsd
EVSD=${CARGO_TARGET_DIR:-$ROOT/target}/release/evsd
if [ "$QEMU" = 1 ]; then
    GUEST=$(scripts/guest-image.sh | tail -1)
fi

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
state_dir = "$WORK/state"
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

if [ "$QEMU" = 1 ]; then
    # Each guest: console (its reports) in $WORK/NAME.console, commands through the FIFO
    # $WORK/NAME.cmd.in into its second serial port (see the /init in scripts/guest-image.sh).
    vm() { # name ip mac
        mkfifo "$WORK/$1.cmd.in" "$WORK/$1.cmd.out"
        qemu-system-x86_64 -accel tcg -cpu max -m 256 -smp 1 -nodefaults -no-user-config \
            -display none -no-reboot -kernel "$GUEST/vmlinuz" -initrd "$GUEST/initrd.img" \
            -append "console=ttyS0 loglevel=3 panic=-1 evs.name=$1 evs.ip=$2/24" \
            -object memory-backend-memfd,id=mem,size=256M,share=on -numa node,memdev=mem \
            -chardev socket,id=vhost0,path="$WORK/$1.sock" \
            -netdev vhost-user,id=net0,chardev=vhost0 \
            -device virtio-net-pci,netdev=net0,mac="$3",vectors=0 \
            -serial file:"$WORK/$1.console" \
            -chardev pipe,id=cmd0,path="$WORK/$1.cmd" -serial chardev:cmd0 \
            > "$WORK/$1.qemu.log" 2>&1 &
        PIDS+=($!)
    }
    report() { # name marker [seconds]: waits for the marker on the guest's console, prints it
        for _ in $(seq 1 $((${3:-60} * 10))); do
            l=$(grep -a -o "$2.*" "$WORK/$1.console" 2>/dev/null | head -1 | tr -d "\r" || true)
            [ -n "$l" ] && { echo "   $1: $l"; return 0; }
            sleep 0.1
        done
        echo "demo failed: no $2 from guest $1"; tail -20 "$WORK/$1.console" "$WORK/$1.qemu.log"
        exit 1
    }
    echo "== two Linux guests under QEMU (TCG): vm-a 10.0.0.10, vm-b 10.0.0.11"
    vm vm-a 10.0.0.10 02:00:00:00:00:0a
    vm vm-b 10.0.0.11 02:00:00:00:00:0b
    report vm-a EVS-READY 120
    report vm-b EVS-READY 120
    exec 5>"$WORK/vm-a.cmd.in" 6>"$WORK/vm-b.cmd.in"
    echo "== vm-a pings vm-b, then sends it 4 MiB over TCP"
    echo "1 listen 5001" >&6
    echo "1 ping 10.0.0.11 10" >&5
    report vm-a "EVS-PING-[A-Z]* id=1 "
    report vm-b "EVS-LISTENING id=1 "
    echo "2 send 10.0.0.11 5001 4194304" >&5
    report vm-a "EVS-TCP-SENT id=2 "
    report vm-b "EVS-TCP-RECEIVED id=1 "
    echo "== evsd port statistics"
    "$EVSD" ctl -s "$WORK/evsd.sock" show ports
    echo "== evsd MAC table"
    "$EVSD" ctl -s "$WORK/evsd.sock" show mac
    grep -q "EVS-PING-OK" "$WORK/vm-a.console" || { echo "demo failed: vm-a's pings unanswered"; exit 1; }
    sent=$(grep -a -o "EVS-TCP-SENT.*" "$WORK/vm-a.console" | grep -o "md5=[0-9a-f]*")
    got=$(grep -a -o "EVS-TCP-RECEIVED.*" "$WORK/vm-b.console" | grep -o "md5=[0-9a-f]*")
    [ "$sent" = "$got" ] || { echo "demo failed: vm-b received other data ($got, sent $sent)"; exit 1; }
    echo "== vm-b received what vm-a sent ($got)"
    echo "9 poweroff" >&5
    echo "9 poweroff" >&6
    exec 5>&- 6>&-
    echo "== stopping"
    exit 0
fi

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
