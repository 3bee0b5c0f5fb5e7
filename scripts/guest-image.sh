#!/usr/bin/env bash
# Builds the small Linux guest that tests/tests/qemu_guests.rs boots under QEMU (TCG): Debian's
# cloud kernel and a busybox-static initramfs whose /init brings up virtio-net and then takes
# commands (ping, TCP listen/send) on its second serial port, answering with marker lines such as
# `EVS-READY`, `EVS-PING-OK` or `EVS-TCP-RECEIVED` on its console. See the /init below.
#
#   scripts/guest-image.sh            # idempotent: does nothing when the cache is up to date
#   EVS_GUEST_CACHE=/some/dir scripts/guest-image.sh
#   EVS_GUEST_REFRESH=1 scripts/guest-image.sh    # download the current kernel again
#
# Output in the cache directory (default /var/cache/evs/guest): `vmlinuz`, `initrd.img` and a
# `stamp` naming what they were built from. Installs qemu-system-x86 and busybox-static when
# missing (root). Needs Debian's mirrors only for the first build (or a refresh); the kernel is
# unpacked with `dpkg -x`, never installed on the host.
set -euo pipefail

CACHE=${EVS_GUEST_CACHE:-/var/cache/evs/guest}
SELF=$(readlink -f "$0")
log() { echo "guest-image.sh: $*" >&2; }
die() { log "$*"; exit 1; }

# --- host packages ------------------------------------------------------------------------------
missing=""
for p in qemu-system-x86 busybox-static; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done
if [ -n "$missing" ]; then
    [ "$(id -u)" = 0 ] || die "missing packages:$missing (run as root to install them)"
    log "installing$missing"
    apt-get update -q >&2
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing >&2
fi
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 not found"
BUSYBOX=/bin/busybox
[ -x "$BUSYBOX" ] || die "$BUSYBOX not found (busybox-static)"

mkdir -p "$CACHE"
TMPS=()
trap 'rm -rf "${TMPS[@]}"' EXIT
exec 9>"$CACHE/.lock"
flock -w 600 9 || die "cannot lock $CACHE/.lock"

# --- kernel: Debian's cloud kernel, unpacked ------------------------------------------------------
# The modules /init loads, in this order (docs: ../shared/NOTES-guests.md).
MODULES="virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci failover net_failover virtio_net"

kernel_ok() {
    [ -s "$CACHE/vmlinuz" ] && [ -s "$CACHE/kernel.version" ] || return 1
    for m in $MODULES; do [ -s "$CACHE/modules/$m.ko" ] || return 1; done
}

apt_download() { # package...: into the current directory
    apt-get -q -o APT::Sandbox::User=root download "$@" >&2
}

fetch_kernel() {
    local tmp meta dep
    tmp=$(mktemp -d "$CACHE/.kernel.XXXXXX")
    TMPS+=("$tmp")
    cd "$tmp"
    if ! apt_download linux-image-cloud-amd64; then
        log "apt-get download failed; updating the package lists and retrying"
        apt-get update -q >&2
        apt_download linux-image-cloud-amd64
    fi
    meta=$(ls linux-image-cloud-amd64_*.deb)
    # The metapackage depends on the real image, e.g. linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2).
    dep=$(dpkg-deb -f "$meta" Depends | tr ',|' '\n\n' | sed -n 's/^ *\(linux-image-[^ ]*-cloud-amd64\).*/\1/p' | head -1)
    [ -n "$dep" ] || die "no linux-image-*-cloud-amd64 dependency in $meta"
    log "downloading $dep"
    apt_download "$dep"
    dpkg -x "$(ls "$dep"_*.deb)" unpacked
    local kver
    kver=$(ls unpacked/lib/modules)
    mkdir -p new/modules
    cp unpacked/boot/vmlinuz-"$kver" new/vmlinuz
    for m in $MODULES; do
        local f
        f=$(find unpacked/lib/modules/"$kver" -name "$m.ko" | head -1)
        [ -n "$f" ] || die "module $m.ko not in $dep"
        cp "$f" new/modules/
    done
    echo "$kver $(dpkg-deb -f "$(ls "$dep"_*.deb)" Version)" > new/kernel.version
    rm -rf "$CACHE/modules"
    mv new/modules "$CACHE/modules"
    mv new/vmlinuz "$CACHE/vmlinuz"
    mv new/kernel.version "$CACHE/kernel.version"
    cd / && rm -rf "$tmp"
    log "kernel $(cat "$CACHE/kernel.version") cached in $CACHE"
}

if [ "${EVS_GUEST_REFRESH:-0}" = 1 ] || ! kernel_ok; then
    fetch_kernel
fi

# --- initramfs ------------------------------------------------------------------------------------
# Rebuilt when this script, the kernel or busybox changes.
want="$(sha256sum "$SELF" | cut -d' ' -f1) $(cat "$CACHE/kernel.version") busybox=$(dpkg-query -W -f='${Version}' busybox-static)"
if [ -s "$CACHE/initrd.img" ] && [ "$(cat "$CACHE/stamp" 2>/dev/null)" = "$want" ]; then
    log "up to date in $CACHE ($(cat "$CACHE/kernel.version"))"
    echo "$CACHE"
    exit 0
fi

tree=$(mktemp -d "$CACHE/.initramfs.XXXXXX")
TMPS+=("$tree")
mkdir -p "$tree"/{bin,dev,proc,sys,tmp,lib/modules}
cp "$BUSYBOX" "$tree/bin/busybox"
for a in $("$BUSYBOX" --list); do
    [ "$a" = busybox ] || ln -s busybox "$tree/bin/$a"
done
cp "$CACHE"/modules/*.ko "$tree/lib/modules/"
echo "$MODULES" > "$tree/lib/modules/order"

cat > "$tree/init" <<'INIT'
#!/bin/sh
# /init of the evsd test guest (scripts/guest-image.sh). Kernel command line: evs.name=NAME
# evs.ip=ADDR/LEN. Brings eth0 (virtio-net) up, prints `EVS-READY ...` on the console (ttyS0), then
# runs the commands that arrive one per line on the second serial port (ttyS1); each answers with
# a marker line on the console. ID is the caller's tag, repeated in the answer:
#   ID ping IP COUNT        -> EVS-PING-OK id=ID IP received=N sent=COUNT rtt_ms=min/avg/max
#                              (or EVS-PING-FAIL ...)
#   ID listen PORT          -> EVS-LISTENING id=ID port=PORT once the socket listens; when the
#                              peer has closed: EVS-TCP-RECEIVED id=ID rc=RC bytes=N md5=HEX <tcp stats>
#   ID send IP PORT BYTES   -> EVS-TCP-SENT id=ID rc=RC bytes=N md5=HEX ms=T <tcp stats> err=...
#                              (random data; connect timeout 5 s)
#   ID poweroff             -> EVS-POWEROFF id=ID, then the guest powers off
export PATH=/bin
mount -t devtmpfs dev /dev
exec </dev/console >/dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sys /sys

ms() { read -r u _ </proc/uptime; echo $(( ${u%.*} * 1000 + 1${u#*.} * 10 - 1000 )); }
# Tcp counters from /proc/net/snmp as name=value (retransmissions, checksum errors...).
tcp_stats() {
    awk '/^Tcp:/ { n++; if (n == 1) split($0, h); else for (i = 2; i <= NF; i++)
         if (h[i] ~ /^(InSegs|OutSegs|RetransSegs|InErrs|InCsumErrors)$/) printf "%s=%s ", h[i], $i }' /proc/net/snmp
}

for w in $(cat /proc/cmdline); do
    case "$w" in
        evs.name=*) NAME=${w#evs.name=} ;;
        evs.ip=*) IP=${w#evs.ip=} ;;
    esac
done
for m in $(cat /lib/modules/order); do
    insmod /lib/modules/$m.ko || echo "EVS-ERROR insmod $m failed"
done
n=0
while [ ! -e /sys/class/net/eth0 ]; do
    n=$((n + 1)); [ $n -gt 500 ] && { echo "EVS-ERROR no eth0"; poweroff -f; }
    usleep 10000
done
ip link set lo up
ip addr add "$IP" dev eth0
ip link set eth0 up
n=0
until [ "$(cat /sys/class/net/eth0/carrier 2>/dev/null)" = 1 ] || [ $n -gt 500 ]; do
    n=$((n + 1)); usleep 10000
done
# The command port is opened (which resets the UART's FIFO) before EVS-READY invites commands.
# The host keeps its end connected: QEMU drops what it has not yet handed to the UART when the
# connection closes.
if ! exec 3</dev/ttyS1; then
    echo "EVS-ERROR no command port"
    poweroff -f
fi
stty -F /dev/ttyS1 -echo
echo "EVS-READY name=$NAME ip=$IP mac=$(cat /sys/class/net/eth0/address) carrier=$(cat /sys/class/net/eth0/carrier) uptime_ms=$(ms)"

do_ping() { # id ip count
    out=$(ping -c "$3" -i 0.2 -W 5 "$2" 2>&1)
    rx=$(echo "$out" | sed -n 's/.*, \([0-9]*\) packets received.*/\1/p')
    rtt=$(echo "$out" | sed -n 's/.*= \([0-9./]*\) ms.*/\1/p')
    if [ "${rx:-0}" -gt 0 ]; then
        echo "EVS-PING-OK id=$1 $2 received=$rx sent=$3 rtt_ms=$rtt"
    else
        echo "EVS-PING-FAIL id=$1 $2 received=${rx:-0} sent=$3 out=$(echo "$out" | tr '\n' ' ')"
    fi
}

do_listen() { # id port
    hold=/tmp/hold.$1
    mkfifo "$hold"
    # stdin: a FIFO nobody writes (opened read-write, so the open does not block): nc must not
    # see EOF on stdin, or it would half-close the connection before the data arrived.
    ( nc -l -p "$2" <>"$hold" >/tmp/rx.$1 2>/tmp/rx.$1.err; rc=$?
      echo "EVS-TCP-RECEIVED id=$1 rc=$rc bytes=$(wc -c </tmp/rx.$1) md5=$(md5sum </tmp/rx.$1 | cut -d' ' -f1) $(tcp_stats)err=$(tr '\n' ' ' </tmp/rx.$1.err)"
      rm -f /tmp/rx.$1 /tmp/rx.$1.err "$hold" ) &
    hex=$(printf '%04X' "$2")
    n=0
    # nc listens on an IPv6 socket (v4-mapped) when the kernel has IPv6: look in both tables.
    until grep -qs ":$hex [0-9A-F]*:0000 0A" /proc/net/tcp /proc/net/tcp6; do
        n=$((n + 1)); [ $n -gt 500 ] && { echo "EVS-ERROR id=$1 nothing listens on $2"; return; }
        usleep 10000
    done
    echo "EVS-LISTENING id=$1 port=$2"
}

do_send() { # id ip port bytes
    f=/tmp/tx.$1
    dd if=/dev/urandom of="$f" bs=4096 count=$(( ($4 + 4095) / 4096 )) 2>/dev/null
    md5=$(md5sum <"$f" | cut -d' ' -f1)
    t0=$(ms)
    nc -w 5 "$2" "$3" <"$f" >/dev/null 2>"$f.err"; rc=$?
    t1=$(ms)
    echo "EVS-TCP-SENT id=$1 rc=$rc bytes=$(wc -c <"$f") md5=$md5 ms=$((t1 - t0)) $(tcp_stats)err=$(tr '\n' ' ' <"$f.err")"
    rm -f "$f" "$f.err"
}

while read -r id cmd a b c <&3; do
    case "$cmd" in
        ping) do_ping "$id" "$a" "$b" & ;;
        listen) do_listen "$id" "$a" & ;;
        send) do_send "$id" "$a" "$b" "$c" & ;;
        poweroff) echo "EVS-POWEROFF id=$id"; poweroff -f ;;
        "") ;;
        *) echo "EVS-ERROR id=$id unknown command: $cmd" ;;
    esac
done
echo "EVS-ERROR command port closed"
poweroff -f
INIT
chmod 755 "$tree/init"

(cd "$tree" && find . | LC_ALL=C sort | "$BUSYBOX" cpio -o -H newc 2>/dev/null) | gzip -9 > "$CACHE/.initrd.img.new"
mv "$CACHE/.initrd.img.new" "$CACHE/initrd.img"
echo "$want" > "$CACHE/stamp"
log "built $CACHE/initrd.img ($(du -k "$CACHE/initrd.img" | cut -f1) KiB) for kernel $(cat "$CACHE/kernel.version")"
echo "$CACHE"
