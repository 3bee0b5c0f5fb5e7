//! The protocols guests need, through port security and security groups of the real `evsd`:
//! IPv6 (neighbour discovery, ping, TCP) between two ports whose group has no rule for neighbour
//! discovery, neighbour-advertisement spoofing refused and counted, and a DHCP exchange with a
//! `dnsmasq` server behind the uplink through a port's group (ARP probe included), while a
//! guest answering as a DHCP server does not reach it.
//!
//! ```text
//!  ns evrP-a  eth0 ─veth─ evrPa ┐                                ns evrP-tor          ns evrP-srv
//!  ns evrP-b  eth0 ─veth─ evrPb ├─ evsd ── evrPu ─veth─ trunk [nstool tor] srv ─veth─ eth0 dnsmasq
//!  ns evrP-c  eth0 ─veth─ evrPc │   uplink: VLAN 100 tagged   (VLAN 100)  (pvid 100)     10.2.0.100
//!  ns evrP-d  eth0 ─veth─ evrPd ┘
//! ```
//!
//! | guest | port group | security group | addresses |
//! |---|---|---|---|
//! | a | bound (IP–MAC binding) | v6 | 10.2.0.1, 2001:db8:2::1 |
//! | b | bound | v6 | 10.2.0.2, 2001:db8:2::2 |
//! | c | open | none | 10.2.0.3, 2001:db8:2::3 (the neighbour a tries to fool, and a rogue DHCP server) |
//! | d | bound | v6 | 10.2.0.5 from DHCP (no address configured) |
//!
//! Group v6 allows ICMPv6 and TCP 8080 in over IPv6, everything out: nothing for neighbour
//! discovery or DHCP, which port security lets through on its own. This kernel has no 8021q
//! module, so the top-of-rack switch is `nstool.py tor` (as in `policy_netns.rs`).

use evs_e2e::lab::{have, last_json, python, sh, sh_quiet, tool_path};
use evs_e2e::{skip_reason, unique, wait_for, Evsd, Proc};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(30);

const MAC_A: &str = "02:00:00:00:02:0a";
const MAC_B: &str = "02:00:00:00:02:0b";
const MAC_C: &str = "02:00:00:00:02:0c";
const MAC_D: &str = "02:00:00:00:02:0d";
const IP6_A: &str = "2001:db8:2::1";
const IP6_B: &str = "2001:db8:2::2";
const IP6_C: &str = "2001:db8:2::3";
const IP_D: &str = "10.2.0.5";
const IP_SRV: &str = "10.2.0.100";

/// (port, MAC, IPv4 configured, IPv6 configured): d gets its IPv4 address by DHCP.
const GUESTS: &[(&str, &str, &str, &str)] = &[
    ("a", MAC_A, "10.2.0.1", IP6_A),
    ("b", MAC_B, "10.2.0.2", IP6_B),
    ("c", MAC_C, "10.2.0.3", IP6_C),
    ("d", MAC_D, "", ""),
];

const MODEL: &str = r#"
[[uplinks]]
name = "uplink"
vlans = ["100"]

[[port_groups]]
name = "bound"
type = "access"
vlan = 100
ip_mac_binding = true

[[port_groups]]
name = "open"
type = "access"
vlan = 100

[[security_groups]]
name = "v6"
rules = [
  { direction = "ingress", ethertype = "IPv6", protocol = "icmp" },
  { direction = "ingress", ethertype = "IPv6", protocol = "tcp", port_min = 8080, port_max = 8080 },
  { direction = "egress", ethertype = "IPv6" },
  { direction = "egress", ethertype = "IPv4" },
]

[[ports]]
name = "a"
mac = "02:00:00:00:02:0a"
ips = ["10.2.0.1", "2001:db8:2::1"]
port_group = "bound"
security_group = "v6"

[[ports]]
name = "b"
mac = "02:00:00:00:02:0b"
ips = ["10.2.0.2", "2001:db8:2::2"]
port_group = "bound"
security_group = "v6"

[[ports]]
name = "c"
mac = "02:00:00:00:02:0c"
ips = ["10.2.0.3", "2001:db8:2::3"]
port_group = "open"

[[ports]]
name = "d"
mac = "02:00:00:00:02:0d"
ips = ["10.2.0.5"]
port_group = "bound"
security_group = "v6"
"#;

struct Ran {
    ok: bool,
    json: Value,
    text: String,
}

struct Bg {
    proc: Proc,
}

impl Bg {
    fn finish(mut self, timeout: Duration) -> Ran {
        let name = self.proc.name.clone();
        let st = wait_for(&format!("{name} to finish"), timeout, || self.proc.exited());
        let text = self.proc.log_text();
        Ran {
            ok: st.success(),
            json: last_json(&text),
            text,
        }
    }
}

struct Topo {
    pid: String,
    dir: tempfile::TempDir,
    evsd: Option<Evsd>,
    bg: Vec<Proc>,
    namespaces: Vec<String>,
    host_ifs: Vec<String>,
    py: String,
    tool: PathBuf,
    seq: std::cell::Cell<u32>,
}

/// Deletes what runs of this test killed before they could clean up left behind.
fn remove_stale() {
    let alive = |pid: &str| Path::new("/proc").join(pid).exists();
    let pid_of = |name: &str| -> Option<String> {
        let digits: String = name
            .strip_prefix("evr")?
            .chars()
            .take_while(|c| c.is_ascii_digit())
            .collect();
        (!digits.is_empty()).then_some(digits)
    };
    let me = std::process::id().to_string();
    let list = |args: &[&str]| {
        Command::new("ip")
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .unwrap_or_default()
    };
    for l in list(&["netns", "list"]).lines() {
        let name = l.split_whitespace().next().unwrap_or("");
        if pid_of(name).is_some_and(|p| p != me && !alive(&p)) {
            sh_quiet(&format!("ip netns pids {name} | xargs -r kill -9"));
            sh_quiet(&format!("ip netns del {name}"));
        }
    }
    for l in list(&["-o", "link", "show"]).lines() {
        let name = l
            .split(": ")
            .nth(1)
            .unwrap_or("")
            .split('@')
            .next()
            .unwrap_or("");
        if pid_of(name).is_some_and(|p| p != me && !alive(&p)) {
            sh_quiet(&format!("ip link del {name}"));
        }
    }
}

impl Topo {
    fn ns(&self, guest: &str) -> String {
        format!("evr{}-{guest}", self.pid)
    }
    fn host_if(&self, guest: &str) -> String {
        format!("evr{}{guest}", self.pid)
    }

    /// A namespace; IPv6 only where asked (elsewhere its router solicitations and MLD reports
    /// are noise).
    fn new_ns(&mut self, name: &str, ipv6: bool) -> String {
        let ns = self.ns(name);
        sh(&format!("ip netns add {ns}"));
        self.namespaces.push(ns.clone());
        let e = |c: &str| sh(&format!("ip netns exec {ns} {c}"));
        let off = if ipv6 { 0 } else { 1 };
        e(&format!("sysctl -qw net.ipv6.conf.all.disable_ipv6={off}"));
        e(&format!(
            "sysctl -qw net.ipv6.conf.default.disable_ipv6={off}"
        ));
        // Link-local addresses from the MAC (EUI-64), which port security knows without being
        // told (a guest using stable-privacy addresses lists its link-local in `ips`).
        e("sysctl -qw net.ipv6.conf.default.addr_gen_mode=0");
        e("ip link set lo up");
        ns
    }

    /// Offloads off (partial checksums would reach the other guest unfinished) and, unless
    /// `ipv6`, IPv6 off: the host ends are evsd's ports and must not speak themselves.
    fn quiet_if(ns: Option<&str>, dev: &str, ipv6: bool) {
        let pre = ns
            .map(|n| format!("ip netns exec {n} "))
            .unwrap_or_default();
        sh(&format!(
            "{pre}ethtool -K {dev} tx off rx off tso off gso off gro off >/dev/null 2>&1 || \
             {pre}ethtool -K {dev} tx off rx off tso off gso off"
        ));
        if !ipv6 {
            sh_quiet(&format!(
                "{pre}sysctl -qw net.ipv6.conf.{dev}.disable_ipv6=1"
            ));
        }
    }

    fn add_guest(&mut self, name: &str, mac: &str, ip: &str, ip6: &str) {
        let ns = self.new_ns(name, !ip6.is_empty());
        let host = self.host_if(name);
        let tmp = format!("{host}g");
        sh(&format!("ip link add {host} type veth peer name {tmp}"));
        self.host_ifs.push(host.clone());
        sh(&format!("ip link set {tmp} netns {ns}"));
        Self::quiet_if(None, &host, false);
        sh(&format!("ip link set {host} up"));
        let e = |c: &str| sh(&format!("ip netns exec {ns} {c}"));
        e(&format!("ip link set {tmp} name eth0"));
        e(&format!("ip link set eth0 address {mac}"));
        Self::quiet_if(Some(&ns), "eth0", !ip6.is_empty());
        e("ip link set eth0 up");
        if !ip.is_empty() {
            e(&format!("ip addr add {ip}/24 dev eth0"));
        }
        if !ip6.is_empty() {
            // Duplicate address detection runs for real, through the switch.
            e(&format!("ip -6 addr add {ip6}/64 dev eth0"));
        }
    }

    /// The top-of-rack switch and the DHCP server's namespace behind it.
    fn add_tor(&mut self) {
        let tor = self.new_ns("tor", false);
        let srv = self.new_ns("srv", false);
        let up = self.host_if("u");
        let (x, y, z) = (format!("{up}x"), self.host_if("sa"), self.host_if("sb"));
        sh(&format!("ip link add {up} type veth peer name {x}"));
        self.host_ifs.push(up.clone());
        sh(&format!("ip link set {x} netns {tor}"));
        sh(&format!("ip link add {y} type veth peer name {z}"));
        sh(&format!("ip link set {y} netns {tor}"));
        sh(&format!("ip link set {z} netns {srv}"));
        Self::quiet_if(None, &up, false);
        sh(&format!("ip link set {up} up"));
        let t = |c: &str| sh(&format!("ip netns exec {tor} {c}"));
        t(&format!("ip link set {x} name trunk"));
        t(&format!("ip link set {y} name srv"));
        for d in ["trunk", "srv"] {
            Self::quiet_if(Some(&tor), d, false);
            t(&format!("ip link set {d} up"));
        }
        let s = |c: &str| sh(&format!("ip netns exec {srv} {c}"));
        s(&format!("ip link set {z} name eth0"));
        s("ip link set eth0 address 02:00:00:00:02:99");
        Self::quiet_if(Some(&srv), "eth0", false);
        s("ip link set eth0 up");
        s(&format!("ip addr add {IP_SRV}/24 dev eth0"));
        let stats = self.dir.path().join("tor.json");
        let stats = stats.to_str().unwrap().to_string();
        let p = self.spawn_tool(
            "tor",
            &[
                "tor",
                "--trunk",
                "trunk=100",
                "--access",
                "srv=100",
                "--stats",
                &stats,
            ],
        );
        self.bg.push(p.proc);
    }

    fn config(&self) -> String {
        let dir = self.dir.path().display();
        let mut c = format!(
            r#"
[eal]
no_huge = true
memory_mb = 256
file_prefix = "{prefix}"
args = ["--no-pci", "--log-level=lib.eal:notice", "--log-level=pmd.net.af_packet:warning"]

[dataplane]
cores = [1]
idle_sleep_us = 50
mbufs = 8191
control_socket = "{dir}/evsd.sock"
state_dir = "{dir}/state"
"#,
            prefix = unique("evs-proto-")
        );
        c += MODEL;
        let ports = GUESTS.iter().map(|g| g.0).chain(["u"]);
        for (i, g) in ports.enumerate() {
            let port = if g == "u" { "uplink" } else { g };
            c += &format!(
                "\n[[attach]]\nport = \"{port}\"\nethdev = {{ devargs = \"net_af_packet{i},iface={},qpairs=1\" }}\n",
                self.host_if(g)
            );
        }
        c
    }

    fn build() -> Topo {
        remove_stale();
        let mut t = Topo {
            pid: std::process::id().to_string(),
            dir: tempfile::Builder::new()
                .prefix("evs-proto-")
                .tempdir()
                .unwrap(),
            evsd: None,
            bg: vec![],
            namespaces: vec![],
            host_ifs: vec![],
            py: python(),
            tool: tool_path(),
            seq: std::cell::Cell::new(0),
        };
        for (g, mac, ip, ip6) in GUESTS {
            t.add_guest(g, mac, ip, ip6);
        }
        t.add_tor();
        let evsd = Evsd::start(t.dir.path(), "evsd", &t.config());
        for (g, ..) in GUESTS {
            evsd.wait_state(g, "up", T);
        }
        evsd.wait_state("uplink", "up", T);
        t.evsd = Some(evsd);
        let tor = t.bg.last().unwrap();
        wait_for("the ToR's sockets", T, || {
            tor.log_text()
                .lines()
                .any(|l| l.trim() == "READY")
                .then_some(())
        });
        t
    }

    fn evsd(&self) -> &Evsd {
        self.evsd.as_ref().expect("evsd running")
    }

    fn spawn(&self, guest: &str, what: &str, cmd: &mut Command) -> Bg {
        let n = self.seq.get();
        self.seq.set(n + 1);
        let name = format!("{guest}-{what}-{n}");
        let log = self.dir.path().join(format!("{name}.log"));
        Bg {
            proc: Proc::spawn(&name, cmd, log),
        }
    }

    fn spawn_tool(&self, guest: &str, args: &[&str]) -> Bg {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns(guest), &self.py])
            .arg(&self.tool)
            .args(args);
        self.spawn(guest, args[0], &mut c)
    }

    fn run(&self, guest: &str, args: &[&str]) -> Ran {
        self.spawn_tool(guest, args).finish(T)
    }

    /// Starts a tool run that prints READY once listening, and waits for that.
    fn start(&self, guest: &str, args: &[&str]) -> Bg {
        let b = self.spawn_tool(guest, args);
        let name = b.proc.name.clone();
        wait_for(&format!("{name} ready"), T, || {
            let t = b.proc.log_text();
            assert!(!t.contains("Traceback"), "{name} failed:\n{t}");
            t.lines().any(|l| l.trim() == "READY").then_some(())
        });
        b
    }

    fn in_ns(&self, guest: &str, cmd: &str) -> String {
        sh(&format!("ip netns exec {} {cmd}", self.ns(guest)))
    }

    fn drops(&self, port: &str, field: &str, reason: &str) -> u64 {
        self.evsd().port(port)[field][reason].as_u64().unwrap_or(0)
    }

    /// Polls until the drop counter `field` (`drops` or `egress_drops`) of `reason` on `port`
    /// exceeds `before`.
    fn wait_drops(&self, port: &str, field: &str, reason: &str, before: u64) -> u64 {
        wait_for(
            &format!("{field} {reason} of port {port} to grow beyond {before}"),
            Duration::from_secs(10),
            || {
                let n = self.drops(port, field, reason);
                (n > before).then_some(n)
            },
        )
    }

    fn ports(&self) -> String {
        self.evsd
            .as_ref()
            .and_then(|e| e.try_ctl(&serde_json::json!({"cmd": "show_ports"})).ok())
            .map(|v| v["result"].to_string())
            .unwrap_or_default()
    }
}

impl Drop for Topo {
    fn drop(&mut self) {
        self.evsd.take();
        self.bg.clear();
        for ns in &self.namespaces {
            sh_quiet(&format!("ip netns pids {ns} | xargs -r kill -9"));
            sh_quiet(&format!("ip netns del {ns}"));
        }
        for i in &self.host_ifs {
            sh_quiet(&format!("ip link del {i} 2>/dev/null"));
        }
    }
}

/// IPv6 between a and b, whose group has no rule for neighbour discovery: duplicate address
/// detection completes, ping resolves the neighbour and is answered, a TCP connection carries
/// data.
fn ipv6_between_group_ports(t: &Topo) {
    for g in ["a", "b", "c"] {
        wait_for(
            &format!("{g}'s IPv6 addresses to leave tentative"),
            T,
            || {
                let s = t.in_ns(g, "ip -6 addr show dev eth0");
                (s.contains("inet6 fe80") && !s.contains("tentative")).then_some(())
            },
        );
        let s = t.in_ns(g, "ip -6 addr show dev eth0");
        assert!(!s.contains("dadfailed"), "{g}: {s}");
    }
    let r = t.run("a", &["ping", IP6_B, "--count", "3", "--timeout", "2"]);
    assert!(r.ok, "a cannot ping b over IPv6: {}", r.text);
    let neigh = t.in_ns("a", &format!("ip -6 neigh show {IP6_B} dev eth0"));
    assert!(neigh.contains(MAC_B), "a's neighbour entry for b: {neigh}");
    let _srv = t.start("b", &["serve-tcp", "8080", "--v6", "--seconds", "60"]);
    let r = t.run(
        "a",
        &[
            "connect",
            IP6_B,
            "8080",
            "--timeout",
            "3",
            "--payload",
            "evs-over-ipv6",
        ],
    );
    assert!(
        r.ok && r.json["echoed"] == true,
        "TCP a -> b over IPv6: {}",
        r.text
    );
    // b's group allows TCP 8080 only: 8081 gets no answer, counted on b.
    let before = t.drops("b", "egress_drops", "sg_ingress_denied");
    let r = t.run("a", &["connect", IP6_B, "8081", "--timeout", "1"]);
    assert!(!r.ok, "TCP to 8081 should be refused: {}", r.text);
    t.wait_drops("b", "egress_drops", "sg_ingress_denied", before);
}

/// a advertises b's address with its own MAC to c, which has b in its neighbour cache, and then
/// its own address with b's MAC: both refused with their reasons, c's entry for b unchanged and
/// c still reaches b.
fn nd_spoofing_refused(t: &Topo) {
    let r = t.run("c", &["ping", IP6_B, "--count", "2", "--timeout", "2"]);
    assert!(r.ok, "c cannot ping b: {}", r.text);
    let before = t.in_ns("c", &format!("ip -6 neigh show {IP6_B} dev eth0"));
    assert!(before.contains(MAC_B), "c's entry for b: {before}");
    let send = |target: &str, tll: &str| {
        let r = t.run(
            "a",
            &[
                "send",
                "eth0",
                "na",
                "--src-mac",
                MAC_A,
                "--dst-mac",
                MAC_C,
                "--src-ip",
                IP6_A,
                "--dst-ip",
                IP6_C,
                "--target",
                target,
                "--tll",
                tll,
                "--repeat",
                "3",
            ],
        );
        assert!(r.ok, "{}", r.text);
    };
    let n0 = t.drops("a", "drops", "nd_spoofed_target");
    send(IP6_B, MAC_A);
    let n1 = t.wait_drops("a", "drops", "nd_spoofed_target", n0);
    let l0 = t.drops("a", "drops", "nd_spoofed_lladdr");
    send(IP6_A, MAC_B);
    let l1 = t.wait_drops("a", "drops", "nd_spoofed_lladdr", l0);
    eprintln!("    nd_spoofed_target on a: {n0} -> {n1}, nd_spoofed_lladdr: {l0} -> {l1}");
    let after = t.in_ns("c", &format!("ip -6 neigh show {IP6_B} dev eth0"));
    assert!(
        after.contains(MAC_B) && !after.contains(MAC_A),
        "c's entry for b changed: {after}"
    );
    let r = t.run("c", &["ping", IP6_B, "--count", "1", "--timeout", "2"]);
    assert!(r.ok, "c cannot ping b after the spoofing: {}", r.text);
    // The trace names the check.
    let ctl = |args: &[&str]| {
        let out = Command::new(evs_e2e::evsd_bin())
            .arg("ctl")
            .arg("--socket")
            .arg(t.dir.path().join("evsd.sock"))
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
    };
    let stats = ctl(&["show", "ports"]);
    assert!(
        stats.contains("nd_spoofed_target") && stats.contains("nd_spoofed_lladdr"),
        "{stats}"
    );
}

/// d, with no address, runs a DHCP client against dnsmasq behind the uplink and gets its bound
/// address (checking it with an ARP probe from 0.0.0.0, seen by c), then reaches the server;
/// c answering as a DHCP server does not reach d.
fn dhcp_through_group(t: &Topo) {
    let dir = t.dir.path();
    let mut dnsmasq = Command::new("ip");
    dnsmasq
        .args(["netns", "exec", &t.ns("srv"), "dnsmasq"])
        .args([
            "--no-daemon",
            "--conf-file=/dev/null",
            "--port=0",
            "--interface=eth0",
            "--bind-interfaces",
            "--dhcp-authoritative",
            "--user=root",
            "--log-dhcp",
            "--log-facility=-",
            &format!("--dhcp-range={IP_D},{IP_D},255.255.255.0,10m"),
            &format!("--dhcp-host={MAC_D},{IP_D}"),
            &format!("--dhcp-leasefile={}", dir.join("leases").display()),
            &format!("--pid-file={}", dir.join("dnsmasq.pid").display()),
        ]);
    let server = t.spawn("srv", "dnsmasq", &mut dnsmasq);
    wait_for("dnsmasq to listen", T, || {
        let s = sh(&format!("ip netns exec {} cat /proc/net/udp", t.ns("srv")));
        // Port 67 (0x0043) bound.
        s.lines().any(|l| l.contains(":0043 ")).then_some(())
    });
    let probe = t.start(
        "c",
        &[
            "sniff",
            "eth0",
            "--match",
            "arp_spa=0.0.0.0",
            "--match",
            &format!("arp_tpa={IP_D}"),
            "--count",
            "1",
            "--timeout",
            "20",
        ],
    );
    let script = dir.join("udhcpc.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\ncase \"$1\" in bound|renew)\n  ip addr add \"$ip/${mask:-24}\" dev \"$interface\"\n  \
         echo \"EVS-LEASE $ip from $serverid\";;\nesac\nexit 0\n",
    )
    .unwrap();
    sh(&format!("chmod +x {}", script.display()));
    let mut client = Command::new("ip");
    client
        .args(["netns", "exec", &t.ns("d"), "busybox", "udhcpc"])
        .args([
            "-i", "eth0", "-f", "-q", "-n", "-a", "-t", "5", "-T", "2", "-s",
        ])
        .arg(&script);
    let r = t.spawn("d", "udhcpc", &mut client).finish(T);
    let server_log = server.proc.log_text();
    assert!(
        r.text.contains(&format!("EVS-LEASE {IP_D} from {IP_SRV}")),
        "no lease through d's security group:\n{}\ndnsmasq:\n{server_log}\nports: {}",
        r.text,
        t.ports()
    );
    let seen = probe.finish(T);
    assert!(
        seen.json["matched"].as_u64().unwrap_or(0) >= 1,
        "d's ARP probe (sender 0.0.0.0) did not reach c: {}",
        seen.text
    );
    let r = t.run("d", &["ping", IP_SRV, "--count", "2", "--timeout", "2"]);
    assert!(
        r.ok,
        "d cannot reach the DHCP server with its lease: {}",
        r.text
    );
    // A rogue server on a guest port: its offer reaches no guest with a group.
    let before = t.drops("d", "egress_drops", "dhcp_server_spoof");
    let r = t.run(
        "c",
        &[
            "send",
            "eth0",
            "dhcp-offer",
            "--src-mac",
            MAC_C,
            "--src-ip",
            "10.2.0.3",
            "--yiaddr",
            "10.2.0.77",
        ],
    );
    assert!(r.ok, "{}", r.text);
    let after = t.wait_drops("d", "egress_drops", "dhcp_server_spoof", before);
    eprintln!("    dhcp_server_spoof towards d: {before} -> {after}");
}

/// A named check run on the shared topology.
type Step = (&'static str, fn(&Topo));

const STEPS: &[Step] = &[
    ("ipv6_between_group_ports", ipv6_between_group_ports),
    ("nd_spoofing_refused", nd_spoofing_refused),
    ("dhcp_through_group", dhcp_through_group),
];

fn skip_reason_here() -> Option<String> {
    if let Some(r) = skip_reason() {
        return Some(r);
    }
    for b in ["ip", "ethtool", "busybox", "dnsmasq"] {
        if !have(b) && !Path::new("/usr/sbin").join(b).exists() {
            return Some(format!(
                "{b} is not installed (scripts/setup.sh installs it)"
            ));
        }
    }
    None
}

#[test]
fn protocols_through_security_groups() {
    evs_e2e::evsd_bin!();
    if let Some(r) = skip_reason_here() {
        eprintln!("\n*** SKIPPING protocols_netns: {r} ***\n");
        return;
    }
    let _g = evs_e2e::serial();
    let t0 = Instant::now();
    let topo = Topo::build();
    eprintln!(
        "topology up in {:.1} s (namespaces evr{}-*, logs in {})",
        t0.elapsed().as_secs_f64(),
        topo.pid,
        topo.dir.path().display()
    );
    let mut failed = vec![];
    for (name, f) in STEPS {
        let s = Instant::now();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&topo)));
        let secs = s.elapsed().as_secs_f64();
        match r {
            Ok(()) => eprintln!("PASS {name} ({secs:.1} s)"),
            Err(e) => {
                let msg = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                eprintln!("FAIL {name} ({secs:.1} s): {msg}\nports: {}", topo.ports());
                failed.push(name.to_string());
            }
        }
    }
    drop(topo);
    assert!(failed.is_empty(), "failed steps: {failed:?}");
}
