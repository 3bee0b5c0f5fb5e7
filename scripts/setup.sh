#!/usr/bin/env bash
# Prepares a fresh Debian 12 machine for evsd: packages, hugepages, a private hugetlbfs mount.
# Idempotent; run as root. Hugepages are optional (evsd and its tests also run with --no-huge).
#
#   scripts/setup.sh [--hugepages N] [--huge-dir DIR] [--no-hugepages]
#
# Hugepages are ADDED to what the machine already has (other processes may use theirs) and the
# number added is recorded so scripts/teardown.sh gives back exactly that.
set -euo pipefail

PAGES=512                     # 2 MiB pages: 1 GiB
HUGE_DIR=/mnt/evs-huge
WANT_HUGE=1
STATE_DIR=/var/lib/evs
STATE=$STATE_DIR/hugepages.added

while [ $# -gt 0 ]; do
    case "$1" in
        --hugepages) PAGES=$2; shift 2 ;;
        --huge-dir) HUGE_DIR=$2; shift 2 ;;
        --no-hugepages) WANT_HUGE=0; shift ;;
        -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
        *) echo "setup.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done

if [ "$(id -u)" != 0 ]; then
    echo "setup.sh: must run as root" >&2
    exit 1
fi

# --- packages -------------------------------------------------------------------------------
PKGS="dpdk dpdk-dev libdpdk-dev clang libclang-dev pkg-config iproute2 coreutils build-essential"
# The real Linux guests of tests/tests/qemu_guests.rs (scripts/guest-image.sh builds their kernel
# and initramfs); without Recommends, which would pull in QEMU's GUI and firmware packages.
GUEST_PKGS="qemu-system-x86 busybox-static"
# The controller's distributed store: etcd (tests start their own members on loopback; the
# packaged service is disabled) and protoc, which the etcd client's build script runs.
PKGS="$PKGS etcd-server protobuf-compiler"
# The namespace tests: ethtool turns veth offloads off (policy_netns and the multi-host lab skip
# without it); nftables makes the lab's top-of-rack bridge VLAN-aware where the kernel has no
# bridge VLAN filtering (tests/src/lab.rs).
PKGS="$PKGS ethtool nftables"
# The namespace guests' traffic (tests/scripts/nstool.py, standard library only: the lab tests and
# scripts/dvs-demo.sh); minimal images lack python3.
PKGS="$PKGS python3"
# The DHCP server behind the uplink in tests/tests/protocols_netns.rs (the binary only: no service).
PKGS="$PKGS dnsmasq-base"
# `evsd ctl capture` files read back with `tcpdump -r` in tests/tests/capture.rs (skips without it).
PKGS="$PKGS tcpdump"
missing_of() {
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || echo -n " $p"
    done
}
missing=$(missing_of $PKGS)
guest_missing=$(missing_of $GUEST_PKGS)
if [ -n "$missing$guest_missing" ]; then
    echo "setup.sh: installing$missing$guest_missing"
    apt-get update -q
    [ -z "$missing" ] || DEBIAN_FRONTEND=noninteractive apt-get install -y -q $missing
    [ -z "$guest_missing" ] || DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends $guest_missing
else
    echo "setup.sh: packages present"
fi
# Debian starts the packaged etcd on install; nothing of ours uses it (tests run their own).
if [ -n "$missing" ] && echo "$missing" | grep -q etcd-server; then
    systemctl disable --now etcd >/dev/null 2>&1 || true
    pkill -x etcd 2>/dev/null || true
fi
pkg-config --modversion libdpdk >/dev/null || { echo "setup.sh: libdpdk not found by pkg-config" >&2; exit 1; }

# --- hugepages ------------------------------------------------------------------------------
if [ "$WANT_HUGE" = 1 ]; then
    NR=/proc/sys/vm/nr_hugepages
    mkdir -p "$STATE_DIR"
    if [ -s "$STATE" ] && [ "$(cat $NR)" -lt "$(cat "$STATE")" ]; then
        echo "setup.sh: recorded pages are gone (reboot?); reserving again"
        rm -f "$STATE"
    fi
    if [ -s "$STATE" ]; then
        echo "setup.sh: hugepages already added by a previous run ($(cat "$STATE") pages)"
    else
        before=$(cat $NR)
        echo $((before + PAGES)) > $NR || true
        after=$(cat $NR)
        added=$((after - before))
        if [ "$added" -le 0 ]; then
            echo "setup.sh: WARNING: the kernel gave no hugepages (memory fragmented?);" \
                 "evsd still runs with [eal] no_huge = true" >&2
        else
            echo "$added" > "$STATE"
            echo "setup.sh: added $added hugepages of 2 MiB ($before -> $after)"
            [ "$added" -lt "$PAGES" ] && echo "setup.sh: WARNING: asked for $PAGES, got $added" >&2
        fi
    fi
    mkdir -p "$HUGE_DIR"
    if ! mountpoint -q "$HUGE_DIR"; then
        mount -t hugetlbfs -o pagesize=2M nodev "$HUGE_DIR"
        echo "$HUGE_DIR" > "$STATE_DIR/mounted"
        echo "setup.sh: mounted hugetlbfs on $HUGE_DIR"
    fi
    grep -E 'HugePages_(Total|Free)' /proc/meminfo
    echo "setup.sh: use [eal] huge_dir = \"$HUGE_DIR\" in the evsd config"
fi
echo "setup.sh: done"
