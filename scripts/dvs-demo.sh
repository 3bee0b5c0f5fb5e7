#!/usr/bin/env bash
# The DVS demo (README's first command): one distributed virtual switch over three hosts, defined
# with dvsctl only, run by the host agent inside each host's evsd.
#
#   scripts/dvs-demo.sh                 install what is missing (scripts/setup.sh), build, run, clean up
#   scripts/dvs-demo.sh --keep          ... and leave everything running until Ctrl-C, to try dvsctl
#   scripts/dvs-demo.sh --bin-dir DIR   use evsd, dvs-controller and dvsctl from DIR (no setup, no build)
#
# What it builds, all in network namespaces named dvsdemo-* (nothing is added to the root
# namespace, so it cannot disturb the machine's own network):
#
#                         dvsdemo-mgmt: bridge br0 192.168.77.1/24, dvs-controller :9660, dvsctl
#              ┌───────────────────────┼───────────────────────┐   (management network)
#          mgmt0 .11               mgmt0 .12               mgmt0 .13
#   dvsdemo-h1: evsd+agent   dvsdemo-h2: evsd+agent   dvsdemo-h3: evsd+agent
#     web1 10.0.0.11 (web)     web2 10.0.0.21 (web)     web3 10.0.0.31 (web)
#     db1  10.0.0.12 (db)                               db3  10.0.0.32 (db)
#          up0                     up0                     up0      (net_af_packet uplinks)
#              └───────────────────────┼───────────────────────┘
#                         dvsdemo-tor: bridge br0, trunk ports h1 h2 h3, VLANs 100 and 200 only
#
# * The ToR is the physical network: VLAN-aware (bridge vlan_filtering, or where the kernel has
#   none, a plain bridge plus nftables rules dropping untagged frames and other VLANs, as
#   tests/src/lab.rs does), so frames cross hosts only tagged, in the DVS's VLANs.
# * The management network is separate from the data network, as on real hypervisors: the
#   controller runs in its own namespace on a bridge every host namespace has a veth into. dvsctl
#   runs there too (the operator's workstation).
# * Guests are namespaces whose eth0 is a veth; its host end is a net_af_packet ethdev port of
#   that host's evsd (the DVS port record carries the devargs: `dvsctl port add --ethdev`).
# * Every evsd starts from a bare config (EAL, dataplane, control socket, state dir): all it
#   forwards with comes from the controller.
# * All guests share one IPv4 subnet: what keeps web from db is the VLAN, not routing. The "web"
#   security group admits ICMP only from members of "web" (a remote group: each host gets the
#   addresses of the members placed on other hosts); removing that rule is the policy change.
#
# Every wait is a bounded poll of an observable condition. Each check prints PASS or FAIL; the
# exit status is 0 only if all passed. On exit (also Ctrl-C or failure) every process and
# namespace is removed; a run that was killed outright is cleaned up by the next one.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

KEEP=0
BIN=
while [ $# -gt 0 ]; do
    case "$1" in
        --keep) KEEP=1; shift ;;
        --bin-dir) BIN=$(cd "$2" && pwd); shift 2 ;;
        -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
        *) echo "usage: dvs-demo.sh [--keep] [--bin-dir DIR]" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" = 0 ] || { echo "dvs-demo.sh: run as root (namespaces and DPDK need it)" >&2; exit 1; }

P=dvsdemo                      # prefix of every namespace and DPDK file prefix
TOR=$P-tor
MGMT=$P-mgmt
HOSTS=(h1 h2 h3)
CTRL_IP=192.168.77.1
CTRL_URL=http://$CTRL_IP:9660
VLANS=100,200                  # what the DVS and the ToR's trunk ports carry
# name host mac ip port-group
GUESTS=(
    "web1 h1 02:00:00:00:01:01 10.0.0.11 web"
    "db1  h1 02:00:00:00:01:02 10.0.0.12 db"
    "web2 h2 02:00:00:00:02:01 10.0.0.21 web"
    "web3 h3 02:00:00:00:03:01 10.0.0.31 web"
    "db3  h3 02:00:00:00:03:02 10.0.0.32 db"
)

# One demo at a time: its namespaces have fixed names (a second run would tear down the first).
# The daemons do not inherit the lock (9>&- where they start), so the leftovers of a killed run
# do not hold it; its short commands (a ping) end within seconds, hence the wait.
exec 9>/run/dvs-demo.lock
flock -w 5 9 || { echo "dvs-demo.sh: another dvs-demo.sh is running" >&2; exit 1; }

# Leftovers of an earlier run that was killed (SIGKILL, a closed terminal): its evsd and the
# controller keep running inside their namespaces, which only they hold.
remove_leftovers() {
    local ns
    for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^$P-" || true); do
        ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
        ip netns del "$ns" 2>/dev/null || true
    done
    rm -rf /var/run/dpdk/"$P"-* /tmp/dvs-demo.*
}
remove_leftovers

if [ -z "$BIN" ]; then
    scripts/setup.sh
    cargo build --release -p evsd -p dvs-controller -p dvsctl
    BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
fi
EVSD=$BIN/evsd
for b in evsd dvs-controller dvsctl; do
    [ -x "$BIN/$b" ] || { echo "dvs-demo.sh: no $BIN/$b" >&2; exit 1; }
done
# The guests' traffic: the tests' tool (standard library only; this needs neither ping nor nc).
NSTOOL=$ROOT/tests/scripts/nstool.py
if [ -x /usr/bin/python3 ]; then PY=/usr/bin/python3; else PY=$(command -v python3 || true); fi
[ -n "$PY" ] || { echo "dvs-demo.sh: python3 is needed for the guests' traffic (apt-get install python3)" >&2; exit 1; }
for b in ethtool nft; do
    command -v "$b" >/dev/null || { echo "dvs-demo.sh: $b missing (scripts/setup.sh installs it)" >&2; exit 1; }
done

T0=$(date +%s%N)
WORK=$(mktemp -d /tmp/dvs-demo.XXXXXX)
declare -A EVSD_PID=()
CTRL_PID=
FAILED=()
PASSED=()

stop_pid() { # pid: SIGTERM, then SIGKILL if it is still there after 5 s
    kill "$1" 2>/dev/null || return 0
    for _ in $(seq 1 50); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
    kill -9 "$1" 2>/dev/null || true
}
cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    # A failure (not Ctrl-C or SIGTERM, 128+n) shows what the daemons said before they go.
    if [ "$rc" != 0 ] && [ "$rc" -lt 128 ] && [ -d "$WORK" ]; then
        echo "== logs (the run failed)"
        for f in "$WORK"/*.log; do [ -f "$f" ] && { echo "-- $f"; tail -15 "$f"; }; done
    fi
    echo "== cleaning up"
    # The three evsd stop in parallel (each gives back its DPDK ports and memory).
    local stoppers=()
    for h in "${!EVSD_PID[@]}"; do stop_pid "${EVSD_PID[$h]}" & stoppers+=($!); done
    [ "${#stoppers[@]}" = 0 ] || wait "${stoppers[@]}"
    [ -n "$CTRL_PID" ] && stop_pid "$CTRL_PID"
    remove_leftovers
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

say() { printf '\n== %s\n' "$*"; }
die() { echo "dvs-demo.sh: $*" >&2; exit 1; }
check() { # description command...: runs the command, records and prints PASS or FAIL
    local what=$1; shift
    if "$@"; then echo "PASS  $what"; PASSED+=("$what")
    else echo "FAIL  $what"; FAILED+=("$what"); fi
}
wait_until() { # seconds command...: polls every 0.2 s
    local end=$(($(date +%s) + $1)); shift
    until "$@"; do [ "$(date +%s)" -lt "$end" ] || return 1; sleep 0.2; done
}
in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
# dvsctl from the management namespace with the operator's token; `dvsctl` also shows the command.
dvsctl_q() { in_ns "$MGMT" "$BIN/dvsctl" --controller "$CTRL_URL" --token-file "$WORK/operator.token" "$@"; }
dvsctl() { echo "\$ dvsctl $*"; dvsctl_q "$@"; }
ctl() { local h=$1; shift; "$EVSD" ctl --socket "$WORK/$h/evsd.sock" "$@"; }
json() { # python-expression: evaluated with j = the JSON on stdin, printed
    "$PY" -c 'import json, sys; j = json.load(sys.stdin); print(eval(sys.argv[1]))' "$1"
}

# Checksum/segmentation offloads off (a partial checksum would reach the other guest through
# the af_packet ports still partial), IPv6 off (router solicitations and DAD would be traffic of
# their own on every uplink): the same as the lab's quiet_if.
quiet_if() { # ns dev
    in_ns "$1" ethtool -K "$2" tx off rx off tso off gso off gro off >/dev/null 2>&1 ||
        in_ns "$1" ethtool -K "$2" tx off rx off tso off gso off >/dev/null
    in_ns "$1" sysctl -qw "net.ipv6.conf.$2.disable_ipv6=1" || true
}
new_ns() {
    ip netns add "$1"
    in_ns "$1" sysctl -qw net.ipv6.conf.all.disable_ipv6=1
    in_ns "$1" sysctl -qw net.ipv6.conf.default.disable_ipv6=1
    in_ns "$1" ip link set lo up
}

# ---------------------------------------------------------------------------------- the network
say "network: ToR $TOR, management $MGMT, hosts ${HOSTS[*]} (namespaces)"
new_ns "$TOR"
if in_ns "$TOR" ip link add br0 type bridge vlan_filtering 1 vlan_default_pvid 0 2>/dev/null; then
    TOR_MODE=vlan_filtering     # no default PVID: untagged frames belong to no VLAN, dropped
else
    TOR_MODE=nftables           # this kernel: no CONFIG_BRIDGE_VLAN_FILTERING
    in_ns "$TOR" ip link add br0 type bridge
fi
in_ns "$TOR" ip link set br0 up
quiet_if "$TOR" br0
new_ns "$MGMT"
in_ns "$MGMT" ip link add br0 type bridge
in_ns "$MGMT" ip addr add "$CTRL_IP/24" dev br0
in_ns "$MGMT" ip link set br0 up
n=0
for h in "${HOSTS[@]}"; do
    n=$((n + 1))
    ns=$P-$h
    new_ns "$ns"
    mkdir -p "$WORK/$h/state"
    # The uplink: up0 in the host, its peer (named after the host) a trunk port of the ToR.
    ip -n "$ns" link add up0 type veth peer name "$h" netns "$TOR"
    quiet_if "$ns" up0
    quiet_if "$TOR" "$h"
    in_ns "$TOR" ip link set "$h" master br0
    in_ns "$TOR" ip link set "$h" up
    ip -n "$ns" link set up0 up
    if [ "$TOR_MODE" = vlan_filtering ]; then
        for v in ${VLANS//,/ }; do in_ns "$TOR" bridge vlan add dev "$h" vid "$v"; done
    fi
    # The management link: mgmt0 in the host, its peer a port of the management bridge.
    ip -n "$ns" link add mgmt0 type veth peer name "$h" netns "$MGMT"
    in_ns "$MGMT" ip link set "$h" master br0
    in_ns "$MGMT" ip link set "$h" up
    ip -n "$ns" addr add "192.168.77.1$n/24" dev mgmt0
    ip -n "$ns" link set mgmt0 up
done
if [ "$TOR_MODE" = nftables ]; then
    # Trunk ports only: untagged frames never cross; tagged ones only in the DVS's VLANs.
    {
        echo "table bridge tor {"
        echo "  chain ports {"
        echo "    type filter hook forward priority 0; policy accept;"
        echo "    ether type != 8021q counter drop"
        for h in "${HOSTS[@]}"; do
            echo "    iifname \"$h\" vlan id != { ${VLANS//,/, } } counter drop"
            echo "    oifname \"$h\" vlan id != { ${VLANS//,/, } } counter drop"
        done
        echo "  }"
        echo "}"
    } > "$WORK/tor.nft"
    in_ns "$TOR" nft -f "$WORK/tor.nft"
fi
echo "ToR VLAN filtering: $TOR_MODE, trunk ports carry VLANs $VLANS tagged"

# Guests: namespace dvsdemo-<host>-<name>, eth0 there, g-<name> in the host (an evsd port).
declare -A G_HOST G_MAC G_IP G_PG G_NS G_DEV
declare -A NEXT_VDEV=([h1]=0 [h2]=0 [h3]=0)
NAMES=()
for g in "${GUESTS[@]}"; do
    read -r name h mac ip pg <<< "$g"
    NAMES+=("$name")
    gns=$P-$h-$name
    new_ns "$gns"
    ip -n "$P-$h" link add "g-$name" type veth peer name eth0 netns "$gns"
    quiet_if "$P-$h" "g-$name"
    ip -n "$P-$h" link set "g-$name" up
    quiet_if "$gns" eth0
    in_ns "$gns" ip link set eth0 address "$mac"
    in_ns "$gns" ip addr add "$ip/24" dev eth0
    in_ns "$gns" ip link set eth0 up
    G_HOST[$name]=$h G_MAC[$name]=$mac G_IP[$name]=$ip G_PG[$name]=$pg G_NS[$name]=$gns
    G_DEV[$name]="net_af_packet${NEXT_VDEV[$h]},iface=g-$name,qpairs=1"
    NEXT_VDEV[$h]=$((NEXT_VDEV[$h] + 1))
    echo "guest $name on $h: $ip $mac, port group $pg"
done

# --------------------------------------------------------------------------------- controller
say "dvs-controller on its embedded store ($WORK/controller.redb), listening on $CTRL_URL"
head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$WORK/operator.token"
chmod 600 "$WORK/operator.token"
# Started by `ip netns exec` itself, not through a shell function: $! is then the daemon's pid
# (ip execs it), so SIGTERM reaches the daemon, which stops cleanly.
ip netns exec "$MGMT" "$BIN/dvs-controller" --listen "$CTRL_IP:9660" --db "$WORK/controller.redb" \
    --operator-token-file "$WORK/operator.token" > "$WORK/controller.log" 2>&1 9>&- &
CTRL_PID=$!
wait_until 20 dvsctl_q status >/dev/null 2>&1 || die "the controller does not answer"

# ------------------------------------------------------------------------------ the DVS, by dvsctl
say "defining the DVS with dvsctl"
dvsctl dvs add prod --vlans "$VLANS"
for h in "${HOSTS[@]}"; do
    dvsctl host add "$h" --token-file "$WORK/$h/token"
    dvsctl uplink add prod "$h" up0 --member net_af_packet_up,iface=up0,qpairs=1
done
dvsctl pg add prod web --vlan 100
dvsctl pg add prod db --vlan 200
# web: every egress, and ingress ICMP from web's own members, wherever they are placed.
dvsctl sg add web --default-rules
dvsctl sg rule-add web --direction ingress --protocol icmp --remote-group web
dvsctl sg rule-list web
for name in "${NAMES[@]}"; do
    sg=()
    [ "${G_PG[$name]}" = web ] && sg=(--sg web)
    dvsctl port add "$name" --dvs prod --pg "${G_PG[$name]}" --mac "${G_MAC[$name]}" \
        --ip "${G_IP[$name]}" "${sg[@]}" --host "${G_HOST[$name]}" --ethdev "${G_DEV[$name]}"
done

# ------------------------------------------------------------------------------------ the hosts
say "evsd with its host agent in each host namespace (bare config: all else from the controller)"
n=0
for h in "${HOSTS[@]}"; do
    # EAL main lcore and forwarding CPU spread over two CPUs; idle sleep: three switches share them.
    cat > "$WORK/$h/evsd.toml" <<TOML
[eal]
cores = "$((n % 2))"
no_huge = true
memory_mb = 256
file_prefix = "$P-$h"
args = ["--no-pci", "--log-level=lib.eal:notice", "--log-level=pmd.net.af_packet:warning"]

[dataplane]
cores = [$(((n + 1) % 2))]
idle_sleep_us = 200
mbufs = 4095
control_socket = "$WORK/$h/evsd.sock"
state_dir = "$WORK/$h/state"
TOML
    echo "\$ ip netns exec $P-$h evsd run -c $WORK/$h/evsd.toml --controller $CTRL_URL --host $h --token-file $WORK/$h/token"
    # `ip netns exec` execs evsd: the pid is evsd's, so SIGTERM reaches it.
    ip netns exec "$P-$h" "$EVSD" run -c "$WORK/$h/evsd.toml" --controller "$CTRL_URL" --host "$h" \
        --token-file "$WORK/$h/token" > "$WORK/$h.evsd.log" 2>&1 9>&- &
    EVSD_PID[$h]=$!
    n=$((n + 1))
done
# Every host alive (lease held), in sync (runs its current slice), no error, every port reported
# attached with its link up.
all_in_sync() {
    dvsctl_q --json status 2>/dev/null | json '
all(h["alive"] and h["in_sync"] and h.get("status") and not h["status"].get("error")
    and h["status"]["ports"]
    and all(p["attached"] and p["link"] == "up" for p in h["status"]["ports"])
    for h in j["hosts"]) and len(j["hosts"]) == 3' | grep -qx True
}
evsd_running() {
    local h
    for h in "${HOSTS[@]}"; do kill -0 "${EVSD_PID[$h]}" 2>/dev/null || die "evsd of $h exited"; done
}
synced() {
    local t rc=0
    t=$(date +%s%N)
    wait_until 60 eval 'evsd_running && all_in_sync' || rc=$?
    echo "      $((($(date +%s%N) - t) / 1000000)) ms after the start of the three evsd"
    return "$rc"
}
check "every host alive, in sync, all ports attached and up" synced
dvsctl status
dvsctl port list
[ "${#FAILED[@]}" = 0 ] || die "the hosts did not come up"

# ------------------------------------------------------------------------------------- traffic
uplink_counts() { # host: "rx tx" of its uplink
    ctl "$1" --json show ports | json '
" ".join(str(p[k]) for p in j if p["name"] == "prod/up0" for k in ("rx_packets", "tx_packets"))'
}
declare -A UP_BEFORE
for h in "${HOSTS[@]}"; do UP_BEFORE[$h]=$(uplink_counts "$h"); done

received() { # from to count: how many of COUNT echoes came back (one every 0.2 s, 1 s timeout)
    in_ns "${G_NS[$1]}" "$PY" "$NSTOOL" ping "${G_IP[$2]}" --count "$3" --interval 0.2 \
        --timeout 1 2>/dev/null | sed -n 's/.*"received": \([0-9]*\).*/\1/p' || true
}
# The first echo may wait for ARP and MAC learning: up to 10 tries of one, then 3 of 3.
answered() { [ "$(received "$1" "$2" 1)" = 1 ]; }
reaches() { # from to
    local first=yes
    wait_until 10 answered "$1" "$2" || first=no
    local got; got=$(received "$1" "$2" 3)
    echo "      $1 (${G_HOST[$1]}) -> $2 ${G_IP[$2]} (${G_HOST[$2]}): ${got:-0}/3 echo replies"
    [ "$first" = yes ] && [ "$got" = 3 ]
}
blocked() { # from to
    local got; got=$(received "$1" "$2" 3)
    echo "      $1 (${G_HOST[$1]}) -> $2 ${G_IP[$2]} (${G_HOST[$2]}): ${got:-0}/3 echo replies"
    [ "${got:-0}" = 0 ]
}

say "traffic across hosts: port group web (VLAN 100), db (VLAN 200)"
check "web1 (h1) pings web2 (h2)" reaches web1 web2
check "web2 (h2) pings web3 (h3)" reaches web2 web3
check "web3 (h3) pings web1 (h1)" reaches web3 web1
check "db1 (h1) pings db3 (h3), VLAN 200" reaches db1 db3

say "VLAN isolation: same subnet, other port group"
check "web1 (h1) cannot reach db3 (h3)" blocked web1 db3
check "web1 cannot reach db1 (both on h1)" blocked web1 db1

say "per-host evsd ports (the uplink carried the cross-host traffic)"
grew() { # host: the uplink both received and sent since the traffic began
    local b a
    read -r -a b <<< "${UP_BEFORE[$1]}"
    read -r -a a <<< "$(uplink_counts "$1")"
    echo "      $1 uplink prod/up0: rx ${b[0]} -> ${a[0]}, tx ${b[1]} -> ${a[1]}"
    [ "${a[0]}" -gt "${b[0]}" ] && [ "${a[1]}" -gt "${b[1]}" ]
}
for h in "${HOSTS[@]}"; do
    echo "-- $h: evsd ctl show ports"
    ctl "$h" show ports
done
for h in "${HOSTS[@]}"; do check "$h's uplink counters grew (rx and tx)" grew "$h"; done

# -------------------------------------------------------------------------------- policy change
say "policy change: web no longer admits ICMP from web (one rule, three hosts)"
policy() { # what dvsctl-args...: runs the change with --wait=hosts, checks all three applied it
    local what=$1; shift
    local out t rc=0
    t=$(date +%s%N)
    out=$(dvsctl --wait=hosts "$@") || rc=$?
    echo "$out"
    echo "      $what: dvsctl --wait=hosts returned after $((($(date +%s%N) - t) / 1000000)) ms (exit $rc)"
    [ "$rc" = 0 ] && echo "$out" | grep -q "3 applied, 0 down, 0 pending"
}
check "rule removed, applied by h1, h2, h3" \
    policy "rule-del" sg rule-del web --direction ingress --protocol icmp --remote-group web
check "web1 (h1) -> web2 (h2) now blocked" blocked web1 web2
check "web2 (h2) -> web3 (h3) now blocked" blocked web2 web3
check "web3 (h3) -> web1 (h1) now blocked" blocked web3 web1
check "db1 (h1) -> db3 (h3) unaffected (no security group)" reaches db1 db3
denied() { # host port: the echoes were dropped by evsd's security group, before that port
    local n
    n=$(ctl "$1" --json show ports | json "
sum(p['egress_drops'].get('sg_ingress_denied', 0) for p in j if p['name'] == '$2')")
    echo "      $1: $n frames to $2 dropped by its security group (sg_ingress_denied)"
    [ "$n" -gt 0 ]
}
for name in web1 web2 web3; do
    check "${G_HOST[$name]} counted the denied echoes to $name" denied "${G_HOST[$name]}" "$name"
done

say "and back: the rule again"
check "rule added, applied by h1, h2, h3" \
    policy "rule-add" sg rule-add web --direction ingress --protocol icmp --remote-group web
check "web1 (h1) -> web2 (h2) passes again" reaches web1 web2
check "web3 (h3) -> web1 (h1) passes again" reaches web3 web1
dvsctl status

# ------------------------------------------------------------------------------------- summary
secs=$((($(date +%s%N) - T0) / 1000000))
say "summary: ${#PASSED[@]} checks passed, ${#FAILED[@]} failed, $((secs / 1000)).$(printf %03d $((secs % 1000))) s (build excluded)"
for f in "${FAILED[@]}"; do echo "FAIL  $f"; done
if [ "$KEEP" = 1 ]; then
    echo "Everything keeps running; Ctrl-C stops it. Try:"
    echo "  ip netns exec $MGMT $BIN/dvsctl --controller $CTRL_URL --token-file $WORK/operator.token status --ports"
    echo "  $EVSD ctl --socket $WORK/h1/evsd.sock show mac"
    echo "  ip netns exec ${G_NS[web1]} $PY $NSTOOL ping ${G_IP[web2]} --count 3"
    while :; do sleep 1; done
fi
[ "${#FAILED[@]}" = 0 ]
