#!/usr/bin/env bash
# Gives back what scripts/setup.sh took: the hugepages it added and its hugetlbfs mount.
# Never writes 0 to nr_hugepages: other processes may hold pages of their own. Packages stay.
set -euo pipefail
STATE_DIR=/var/lib/evs
STATE=$STATE_DIR/hugepages.added

if [ "$(id -u)" != 0 ]; then
    echo "teardown.sh: must run as root" >&2
    exit 1
fi
if [ -s "$STATE_DIR/mounted" ]; then
    dir=$(cat "$STATE_DIR/mounted")
    if mountpoint -q "$dir"; then
        umount "$dir" && echo "teardown.sh: unmounted $dir" || echo "teardown.sh: $dir busy, left mounted" >&2
    fi
    rm -f "$STATE_DIR/mounted"
fi
if [ -s "$STATE" ]; then
    added=$(cat "$STATE")
    NR=/proc/sys/vm/nr_hugepages
    cur=$(cat $NR)
    target=$((cur - added))
    [ "$target" -lt 0 ] && target=0
    echo "$target" > $NR
    echo "teardown.sh: gave back $added hugepages ($cur -> $(cat $NR))"
    rm -f "$STATE"
else
    echo "teardown.sh: no hugepages recorded as added"
fi
