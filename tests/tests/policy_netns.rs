//! Port-group and security-group policy of the real `evsd`, end to end, with kernel network
//! namespaces playing the guests.
//!
//! Topology (one per test process; names carry the pid so runs never collide):
//!
//! ```text
//!  ns evpP-a  eth0 ─veth─ evpPa ┐                                   ns evpP-tor
//!  ns evpP-b  eth0 ─veth─ evpPb │                                ┌───────────────────────────┐
//!  ns evpP-c  eth0 ─veth─ evpPc ├─ evsd (net_af_packet vdevs) ── evpPu ─veth─ trunk  [ToR]  rem ─veth─ eth0  ns evpP-rem
//!  ns evpP-t  eth0 ─veth─ evpPt │      uplink: VLANs 100,200 tagged    (VLANs 100,200)  (pvid 100)   10.1.0.100
//!  ns evpP-d  eth0 ─veth─ evpPd │                                └───────────────────────────┘
//!  ns evpP-s  eth0 ─veth─ evpPs ┘
//! ```
//!
//! | guest | port group | VLAN | extra |
//! |---|---|---|---|
//! | a 10.1.0.1 | web (access) | 100 | no security group |
//! | b 10.1.0.2 | web (access) | 100 | security group: ingress TCP 8080 + ICMP, egress any |
//! | c 10.1.0.3 | db (access) | 200 | |
//! | t 10.1.0.4 | router (trunk) | 100, 150-160 | tagged frames sent by the tool (see below) |
//! | d 10.1.0.5 | guarded (access) | 100 | DHCP isolation + IP–MAC binding |
//! | s 10.1.0.6 | shaped (access) | 100 | transmit shaping 20 Mbit/s average = peak, no burst |
//!
//! This kernel (like many CI kernels) has neither 8021q VLAN devices nor bridge VLAN filtering,
//! and the machine has no ping/nc: the traffic is made by `tests/scripts/nstool.py` (standard
//! library only: raw AF_PACKET/ICMP/TCP/UDP sockets). The trunk guest's "VLAN subinterfaces" are
//! the tool sending and answering 802.1Q-tagged ARP/ICMP itself, and the top-of-rack switch is the
//! tool's minimal VLAN-aware bridge (trunk port with VLANs 100 and 200 tagged, the remote host on
//! an access port with pvid 100), which also counts the VLAN ids it sees on the wire.
//!
//! Absence checks avoid fixed sleeps where they can: a forbidden frame is followed by an allowed
//! "marker" frame from the same port; the switch handles a port's frames in order, so once the
//! sniffer has the marker, the forbidden frame would have arrived before it.
//!
//! One `#[test]` builds the topology once (a few seconds) and runs the behaviours as named steps;
//! every step runs even if an earlier one failed, and the test fails listing the failed steps.
//! `POLICY_NETNS_STEPS=trunk,shaping` runs a subset.

use evs_e2e::lab::{have, last_json, python, sh, sh_quiet, tool_path};
use evs_e2e::{skip_reason, unique, wait_for, Evsd, Proc};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(30);

const MAC_A: &str = "02:00:00:00:00:0a";
const MAC_B: &str = "02:00:00:00:00:0b";
const MAC_C: &str = "02:00:00:00:00:0c";
const MAC_T: &str = "02:00:00:00:00:0e";
const MAC_D: &str = "02:00:00:00:00:0d";
const MAC_S: &str = "02:00:00:00:00:06";
const MAC_REM: &str = "02:00:00:00:01:00";
const IP_A: &str = "10.1.0.1";
const IP_B: &str = "10.1.0.2";
const IP_C: &str = "10.1.0.3";
const IP_T: &str = "10.1.0.4";
const IP_D: &str = "10.1.0.5";
const IP_S: &str = "10.1.0.6";
const IP_REM: &str = "10.1.0.100";

/// The guests: (port name, MAC, IPv4 or "" for none).
const GUESTS: &[(&str, &str, &str)] = &[
    ("a", MAC_A, IP_A),
    ("b", MAC_B, IP_B),
    ("c", MAC_C, IP_C),
    ("t", MAC_T, ""),
    ("d", MAC_D, IP_D),
    ("s", MAC_S, IP_S),
];

const SHAPING_MBPS: f64 = 20.0;
/// Peak above the average: the instantaneous cap stays, and short pauses of the poll loop or the
/// sender do not cost the average.
const SHAPING_PEAK_MBPS: f64 = 2.0 * SHAPING_MBPS;

/// The operator's model (what `evsd ctl apply` takes). `b_web_rule`: whether B's security group
/// allows TCP 8080 in.
fn model(b_web_rule: bool) -> String {
    let web_rule = if b_web_rule {
        "{ direction = \"ingress\", protocol = \"tcp\", port_min = 8080, port_max = 8080 },"
    } else {
        ""
    };
    format!(
        r#"
[[uplinks]]
name = "uplink"
vlans = ["100", "200"]

[[port_groups]]
name = "web"
type = "access"
vlan = 100

[[port_groups]]
name = "db"
type = "access"
vlan = 200

[[port_groups]]
name = "router"
type = "trunk"
vlans = ["100", "150-160"]

[[port_groups]]
name = "guarded"
type = "access"
vlan = 100
dhcp_isolation = true
ip_mac_binding = true

[[port_groups]]
name = "shaped"
type = "access"
vlan = 100
shaping = {{ average_mbps = {SHAPING_MBPS}, peak_mbps = {SHAPING_PEAK_MBPS}, burst_mbit = 0 }}

[[security_groups]]
name = "b-sg"
rules = [
  {web_rule}
  {{ direction = "ingress", protocol = "icmp" }},
  {{ direction = "egress" }},
]

[[ports]]
name = "a"
mac = "{MAC_A}"
ips = ["{IP_A}"]
port_group = "web"

[[ports]]
name = "b"
mac = "{MAC_B}"
ips = ["{IP_B}"]
port_group = "web"
security_group = "b-sg"

[[ports]]
name = "c"
mac = "{MAC_C}"
ips = ["{IP_C}"]
port_group = "db"

[[ports]]
name = "t"
mac = "{MAC_T}"
ips = ["{IP_T}"]
port_group = "router"

[[ports]]
name = "d"
mac = "{MAC_D}"
ips = ["{IP_D}"]
port_group = "guarded"

[[ports]]
name = "s"
mac = "{MAC_S}"
ips = ["{IP_S}"]
port_group = "shaped"
"#
    )
}

// ------------------------------------------------------------------------------------------------
// Shell and namespace helpers

/// Deletes namespaces and host veths left by earlier runs whose process is gone (a run killed
/// by SIGKILL cannot clean up after itself).
fn remove_stale() {
    let alive = |pid: &str| Path::new("/proc").join(pid).exists();
    let pid_of = |name: &str| -> Option<String> {
        let rest = name.strip_prefix("evp")?;
        let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        (!digits.is_empty()).then_some(digits)
    };
    let me = std::process::id().to_string();
    if let Ok(o) = Command::new("ip").args(["netns", "list"]).output() {
        for l in String::from_utf8_lossy(&o.stdout).lines() {
            let name = l.split_whitespace().next().unwrap_or("");
            if let Some(pid) = pid_of(name) {
                if pid != me && !alive(&pid) {
                    sh_quiet(&format!("ip netns del {name}"));
                }
            }
        }
    }
    if let Ok(o) = Command::new("ip").args(["-o", "link", "show"]).output() {
        for l in String::from_utf8_lossy(&o.stdout).lines() {
            let Some(name) = l.split(": ").nth(1) else {
                continue;
            };
            let name = name.split('@').next().unwrap_or("");
            if let Some(pid) = pid_of(name) {
                if pid != me && !alive(&pid) {
                    sh_quiet(&format!("ip link del {name}"));
                }
            }
        }
    }
}

/// A tool run that has finished.
struct Ran {
    ok: bool,
    json: Value,
    text: String,
}

/// A background tool run (sniffer, server, blaster): stopped when dropped.
struct Bg {
    proc: Proc,
}

impl Bg {
    /// Waits for the process to exit (bounded) and returns what it printed last.
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
    tor: Option<Proc>,
    namespaces: Vec<String>,
    host_ifs: Vec<String>,
    py: String,
    tool: PathBuf,
    seq: std::cell::Cell<u32>,
}

impl Topo {
    fn ns(&self, guest: &str) -> String {
        format!("evp{}-{guest}", self.pid)
    }

    fn host_if(&self, guest: &str) -> String {
        format!("evp{}{guest}", self.pid)
    }

    fn new_ns(&mut self, name: &str) -> String {
        let ns = self.ns(name);
        sh(&format!("ip netns add {ns}"));
        self.namespaces.push(ns.clone());
        let e = |c: &str| sh(&format!("ip netns exec {ns} {c}"));
        e("sysctl -qw net.ipv6.conf.all.disable_ipv6=1");
        e("sysctl -qw net.ipv6.conf.default.disable_ipv6=1");
        e("ip link set lo up");
        ns
    }

    /// Offloads off (TCP with partial checksums would reach the other guest with a bad one) and
    /// no IPv6 noise (router solicitations from a host end would look like spoofing).
    fn quiet_if(ns: Option<&str>, dev: &str) {
        let pre = ns
            .map(|n| format!("ip netns exec {n} "))
            .unwrap_or_default();
        sh(&format!(
            "{pre}ethtool -K {dev} tx off rx off tso off gso off gro off >/dev/null 2>&1 || \
             {pre}ethtool -K {dev} tx off rx off tso off gso off"
        ));
        sh_quiet(&format!(
            "{pre}sysctl -qw net.ipv6.conf.{}.disable_ipv6=1",
            dev.replace('.', "/")
        ));
    }

    /// A guest namespace with `eth0` (MAC and IPv4 of its model port) whose peer `host` stays in
    /// the root namespace for evsd.
    fn add_guest(&mut self, name: &str, mac: &str, ip: &str) {
        let ns = self.new_ns(name);
        let host = self.host_if(name);
        let tmp = format!("{host}g");
        sh(&format!("ip link add {host} type veth peer name {tmp}"));
        self.host_ifs.push(host.clone());
        sh(&format!("ip link set {tmp} netns {ns}"));
        Self::quiet_if(None, &host);
        sh(&format!("ip link set {host} up"));
        let e = |c: &str| sh(&format!("ip netns exec {ns} {c}"));
        e(&format!("ip link set {tmp} name eth0"));
        e(&format!("ip link set eth0 address {mac}"));
        Self::quiet_if(Some(&ns), "eth0");
        e("ip link set eth0 up");
        if !ip.is_empty() {
            e(&format!("ip addr add {ip}/24 dev eth0"));
        }
    }

    /// The top-of-rack switch and the remote host behind it.
    fn add_tor(&mut self) {
        let tor = self.new_ns("tor");
        let rem = self.new_ns("rem");
        let up = self.host_if("u");
        let (x, y, z) = (format!("{up}x"), self.host_if("ra"), self.host_if("rb"));
        sh(&format!("ip link add {up} type veth peer name {x}"));
        self.host_ifs.push(up.clone());
        sh(&format!("ip link set {x} netns {tor}"));
        sh(&format!("ip link add {y} type veth peer name {z}"));
        sh(&format!("ip link set {y} netns {tor}"));
        sh(&format!("ip link set {z} netns {rem}"));
        Self::quiet_if(None, &up);
        sh(&format!("ip link set {up} up"));
        let t = |c: &str| sh(&format!("ip netns exec {tor} {c}"));
        t(&format!("ip link set {x} name trunk"));
        t(&format!("ip link set {y} name rem"));
        for d in ["trunk", "rem"] {
            Self::quiet_if(Some(&tor), d);
            t(&format!("ip link set {d} up"));
        }
        let r = |c: &str| sh(&format!("ip netns exec {rem} {c}"));
        r(&format!("ip link set {z} name eth0"));
        r(&format!("ip link set eth0 address {MAC_REM}"));
        Self::quiet_if(Some(&rem), "eth0");
        r("ip link set eth0 up");
        r(&format!("ip addr add {IP_REM}/24 dev eth0"));

        let stats = self.dir.path().join("tor.json");
        let p = self.spawn_tool(
            "tor",
            "tor",
            &[
                "tor",
                "--trunk",
                "trunk=100,200",
                "--access",
                "rem=100",
                "--stats",
                stats.to_str().unwrap(),
            ],
        );
        self.tor = Some(p.proc);
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
            prefix = unique("evs-netns-")
        );
        c += &model(true);
        let mut attach = |port: &str, iface: &str, i: usize| {
            c += &format!(
                "\n[[attach]]\nport = \"{port}\"\nethdev = {{ devargs = \"net_af_packet{i},iface={iface},qpairs=1\" }}\n"
            );
        };
        for (i, (g, _, _)) in GUESTS.iter().enumerate() {
            attach(g, &self.host_if(g), i);
        }
        attach("uplink", &self.host_if("u"), GUESTS.len());
        c
    }

    fn build() -> Topo {
        remove_stale();
        let mut t = Topo {
            pid: std::process::id().to_string(),
            dir: tempfile::Builder::new()
                .prefix("evs-netns-")
                .tempdir()
                .unwrap(),
            evsd: None,
            tor: None,
            namespaces: vec![],
            host_ifs: vec![],
            py: python(),
            tool: tool_path(),
            seq: std::cell::Cell::new(0),
        };
        for (g, mac, ip) in GUESTS {
            t.add_guest(g, mac, ip);
        }
        t.add_tor();
        let cfg = t.config();
        let evsd = Evsd::start(t.dir.path(), "evsd", &cfg);
        for (g, _, _) in GUESTS {
            evsd.wait_state(g, "up", T);
        }
        evsd.wait_state("uplink", "up", T);
        t.evsd = Some(evsd);
        // The ToR's sockets must be open before anything floods towards it.
        t.wait_ready(t.tor.as_ref().unwrap());
        t
    }

    fn evsd(&self) -> &Evsd {
        self.evsd.as_ref().expect("evsd running")
    }

    fn cmd(&self, guest: &str, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns(guest), &self.py])
            .arg(&self.tool)
            .args(args);
        c
    }

    /// Runs the tool in a guest's namespace to completion (bounded by its own timeouts and by
    /// a kill after 30 s).
    fn run(&self, guest: &str, args: &[&str]) -> Ran {
        let b = self.spawn_tool(guest, args[0], args);
        b.finish(T)
    }

    fn spawn_tool(&self, guest: &str, what: &str, args: &[&str]) -> Bg {
        let n = self.seq.get();
        self.seq.set(n + 1);
        let name = format!("{guest}-{what}-{n}");
        let log = self.dir.path().join(format!("{name}.log"));
        Bg {
            proc: Proc::spawn(&name, &mut self.cmd(guest, args), log),
        }
    }

    fn wait_ready(&self, p: &Proc) {
        let name = p.name.clone();
        wait_for(&format!("{name} ready"), T, || {
            let t = p.log_text();
            if t.lines().any(|l| l.trim() == "READY") {
                return Some(());
            }
            if t.contains("Traceback") {
                panic!("{name} failed:\n{t}");
            }
            None
        });
    }

    /// Starts a background tool run and waits until it printed READY.
    fn start(&self, guest: &str, args: &[&str]) -> Bg {
        let b = self.spawn_tool(guest, args[0], args);
        self.wait_ready(&b.proc);
        b
    }

    /// One ICMP echo from `guest` to `dst` with a 1 s timeout, tried up to `tries` times.
    fn ping(&self, guest: &str, dst: &str, tries: u32) -> bool {
        (0..tries).any(|_| self.run(guest, &["ping", dst, "--timeout", "1"]).ok)
    }

    fn connect(&self, guest: &str, dst: &str, port: u16, timeout: &str) -> Ran {
        self.run(
            guest,
            &["connect", dst, &port.to_string(), "--timeout", timeout],
        )
    }

    fn drops(&self, port: &str, reason: &str) -> u64 {
        self.evsd().port(port)["drops"][reason]
            .as_u64()
            .unwrap_or(0)
    }

    /// Polls until the drop counter of `reason` on `port` exceeds `before`.
    fn wait_drops(&self, port: &str, reason: &str, before: u64) -> u64 {
        wait_for(
            &format!("drop counter {reason} of port {port} to grow beyond {before}"),
            Duration::from_secs(10),
            || {
                let n = self.drops(port, reason);
                (n > before).then_some(n)
            },
        )
    }

    fn tor_stats(&self) -> Value {
        let p = self.dir.path().join("tor.json");
        serde_json::from_str(&std::fs::read_to_string(p).unwrap_or_default()).unwrap_or(Value::Null)
    }

    fn tor_count(&self, section: &str, vlan: u16) -> u64 {
        self.tor_stats()[section][vlan.to_string()]
            .as_u64()
            .unwrap_or(0)
    }

    fn port_dump(&self) -> String {
        self.evsd
            .as_ref()
            .and_then(|e| e.try_ctl(&json!({"cmd": "show_ports"})).ok())
            .map(|v| {
                v["result"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .iter()
                    .map(|p| {
                        format!(
                            "  {:<7} {:<5} rx {:>6} tx {:>6} drops {}",
                            p["name"].as_str().unwrap_or("?"),
                            p["state"].as_str().unwrap_or("?"),
                            p["rx_packets"],
                            p["tx_packets"],
                            p["drops"]
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .unwrap_or_default()
    }
}

impl Drop for Topo {
    fn drop(&mut self) {
        if let Some(e) = self.evsd.take() {
            drop(e); // SIGTERM, then SIGKILL after 5 s
        }
        self.tor.take();
        for ns in &self.namespaces {
            // Any process still in there (a tool run that outlived its guard) goes first.
            sh_quiet(&format!("ip netns pids {ns} | xargs -r kill -9"));
            sh_quiet(&format!("ip netns del {ns}"));
        }
        for i in &self.host_ifs {
            sh_quiet(&format!("ip link del {i} 2>/dev/null"));
        }
    }
}

// ------------------------------------------------------------------------------------------------
// The behaviours

/// 1. Guests A and B on the same access VLAN reach each other (ARP resolved through the switch,
///    MACs learned: the reply is unicast to A only).
fn same_vlan_delivery(t: &Topo) {
    assert!(
        t.ping("a", IP_B, 5),
        "A (web, VLAN 100) cannot ping B (web, VLAN 100)"
    );
    assert!(t.ping("b", IP_A, 3), "B cannot ping A back");
    let a = t.evsd().port("a");
    let b = t.evsd().port("b");
    assert!(
        a["rx_packets"].as_u64().unwrap() >= 2 && b["tx_packets"].as_u64().unwrap() >= 2,
        "the switch did not count the exchange: a={a} b={b}"
    );
    // A frame to B's MAC is now sent to B only: S (same VLAN) sees nothing of it.
    let sn = t.start(
        "s",
        &[
            "sniff",
            "eth0",
            "--match",
            &format!("dst_mac={MAC_B}"),
            "--until",
            "payload_has=MARKER-learn",
            "--timeout",
            "8",
        ],
    );
    assert!(t.ping("a", IP_B, 3), "A cannot ping B (second time)");
    t.run(
        "a",
        &[
            "send",
            "eth0",
            "udp",
            "--src-mac",
            MAC_A,
            "--src-ip",
            IP_A,
            "--dst-ip",
            IP_S,
            "--dst-mac",
            MAC_S,
            "--payload",
            "MARKER-learn",
        ],
    );
    let r = sn.finish(T);
    assert_eq!(
        r.json["marker"], true,
        "marker A→S not received: {}",
        r.text
    );
    assert_eq!(
        r.json["matched"], 0,
        "frames for B's learned MAC were flooded to S: {}",
        r.text
    );
}

/// 2. Guest C on VLAN 200 cannot reach A on VLAN 100: nothing of C arrives at A, while C's ARP
///    requests are flooded within VLAN 200 (the ToR sees them tagged 200).
fn vlan_isolation(t: &Topo) {
    let before200 = t.tor_count("from_trunk", 200);
    let sn = t.start(
        "a",
        &[
            "sniff",
            "eth0",
            "--match",
            &format!("src_mac={MAC_C}"),
            "--timeout",
            "3",
        ],
    );
    assert!(
        !t.ping("c", IP_A, 2),
        "C (db, VLAN 200) reached A (web, VLAN 100)"
    );
    wait_for("C's ARP flooded in VLAN 200 to the uplink", T, || {
        (t.tor_count("from_trunk", 200) > before200).then_some(())
    });
    let r = sn.finish(T);
    assert_eq!(
        r.json["matched"], 0,
        "A received frames from C across VLANs: {}",
        r.text
    );
}

/// 3. Trunk guest T (group router: VLANs 100, 150-160): tagged 100 reaches A (ARP and ICMP both
///    ways, tags added/stripped by the switch); tagged 20 is dropped as vlan_not_allowed and
///    nothing arrives at A.
fn trunk(t: &Topo) {
    let ok = t.run(
        "t",
        &[
            "vlan-ping",
            "eth0",
            "--vlan",
            "100",
            "--mac",
            MAC_T,
            "--ip",
            IP_T,
            "--dst-ip",
            IP_A,
            "--timeout",
            "4",
        ],
    );
    assert!(
        ok.ok,
        "trunk guest T could not ping A on VLAN 100: {}",
        ok.text
    );
    let before = t.drops("t", "vlan_not_allowed");
    let sn = t.start(
        "a",
        &[
            "sniff",
            "eth0",
            "--match",
            &format!("src_mac={MAC_T}"),
            "--until",
            "payload_has=MARKER-trunk",
            "--timeout",
            "8",
        ],
    );
    let bad = t.run(
        "t",
        &[
            "vlan-ping",
            "eth0",
            "--vlan",
            "20",
            "--mac",
            MAC_T,
            "--ip",
            IP_T,
            "--dst-ip",
            IP_A,
            "--timeout",
            "1",
        ],
    );
    assert!(!bad.ok, "T reached A over VLAN 20: {}", bad.text);
    t.run(
        "t",
        &[
            "send",
            "eth0",
            "udp",
            "--vlan",
            "100",
            "--src-mac",
            MAC_T,
            "--src-ip",
            IP_T,
            "--dst-ip",
            IP_A,
            "--dst-mac",
            MAC_A,
            "--payload",
            "MARKER-trunk",
        ],
    );
    let r = sn.finish(T);
    assert_eq!(
        r.json["marker"], true,
        "VLAN-100 marker T→A lost: {}",
        r.text
    );
    assert_eq!(
        r.json["matched"], 0,
        "frames T sent on VLAN 20 arrived at A: {}",
        r.text
    );
    let after = t.wait_drops("t", "vlan_not_allowed", before);
    eprintln!("    vlan_not_allowed on t: {before} -> {after}");
}

/// 4. Access port A sends a frame tagged 100: dropped as tagged_on_access; the same frame
///    untagged arrives.
fn access_drops_tagged(t: &Topo) {
    let before = t.drops("a", "tagged_on_access");
    let sn = t.start(
        "s",
        &[
            "sniff",
            "eth0",
            "--match",
            "payload_has=TAGGED-ON-ACCESS",
            "--until",
            "payload_has=MARKER-access",
            "--timeout",
            "8",
        ],
    );
    let send = |vlan: Option<&str>, payload: &str| {
        let mut args = vec![
            "send",
            "eth0",
            "udp",
            "--src-mac",
            MAC_A,
            "--src-ip",
            IP_A,
            "--dst-ip",
            IP_S,
            "--dst-mac",
            MAC_S,
            "--payload",
            payload,
        ];
        if let Some(v) = vlan {
            args.extend(["--vlan", v]);
        }
        t.run("a", &args);
    };
    send(Some("100"), "TAGGED-ON-ACCESS");
    send(None, "MARKER-access");
    let r = sn.finish(T);
    assert_eq!(
        r.json["marker"], true,
        "untagged marker A→S lost: {}",
        r.text
    );
    assert_eq!(
        r.json["matched"], 0,
        "a tagged frame from access port A was delivered: {}",
        r.text
    );
    let after = t.wait_drops("a", "tagged_on_access", before);
    eprintln!("    tagged_on_access on a: {before} -> {after}");
}

/// 5. A reaches the remote host behind the ToR over the uplink, tagged 100 on the wire; C
///    (VLAN 200) does not.
fn uplink(t: &Topo) {
    let (f100, t100) = (t.tor_count("from_trunk", 100), t.tor_count("to_trunk", 100));
    assert!(
        t.ping("a", IP_REM, 5),
        "A cannot ping the remote host {IP_REM} behind the uplink; ToR saw {}",
        t.tor_stats()
    );
    assert!(
        t.tor_count("from_trunk", 100) > f100 && t.tor_count("to_trunk", 100) > t100,
        "the ToR did not see the exchange tagged with VLAN 100 on the uplink wire: {}",
        t.tor_stats()
    );
    assert_eq!(
        t.tor_stats()["from_trunk_untagged"],
        0,
        "evsd sent untagged frames on the uplink: {}",
        t.tor_stats()
    );
    let f200 = t.tor_count("from_trunk", 200);
    let sn = t.start(
        "rem",
        &[
            "sniff",
            "eth0",
            "--match",
            &format!("src_mac={MAC_C}"),
            "--timeout",
            "3",
        ],
    );
    assert!(
        !t.ping("c", IP_REM, 2),
        "C (VLAN 200) reached the remote host on VLAN 100"
    );
    let r = sn.finish(T);
    assert_eq!(
        r.json["matched"], 0,
        "the remote host received C's frames: {}",
        r.text
    );
    assert!(
        t.tor_count("from_trunk", 200) > f200,
        "C's frames should leave on the uplink tagged 200: {}",
        t.tor_stats()
    );
}

/// 6. B's security group allows TCP 8080 (and ICMP) in: A→B:8080 connects and B's replies come
///    back (stateful return traffic); A→B:8081 is dropped (a listener exists, so only the switch
///    can make it time out); B→A:9000 works (egress allowed, replies allowed back in).
fn security_group(t: &Topo) {
    let _srv_b = t.start("b", &["serve-tcp", "8080", "8081", "--seconds", "60"]);
    let _srv_a = t.start("a", &["serve-tcp", "9000", "--seconds", "60"]);
    let r = t.connect("a", IP_B, 8080, "3");
    assert!(r.ok, "A→B:8080 (allowed by B's group) failed: {}", r.text);
    let before = t.drops("a", "sg_ingress_denied");
    let r = t.connect("a", IP_B, 8081, "1.5");
    assert!(!r.ok, "A→B:8081 (not allowed) connected: {}", r.text);
    let err = r.json["error"].as_str().unwrap_or("");
    assert!(
        err.contains("timed out"),
        "A→B:8081 must time out (SYN dropped by the switch), not be refused: {}",
        r.text
    );
    let after = t.wait_drops("a", "sg_ingress_denied", before);
    eprintln!("    sg_ingress_denied counted on the sender's port a: {before} -> {after}");
    let r = t.connect("b", IP_A, 9000, "3");
    assert!(
        r.ok,
        "B→A:9000 (egress allowed, replies are return traffic) failed: {}",
        r.text
    );
}

/// 6b. What an operator inspects after that traffic: the MAC table has A's MAC learned on port a
///     in VLAN 100, conntrack holds A→B:8080 in B's zone, and the table dump shows B's group rules.
fn inspect(t: &Topo) {
    let _srv_b = t.start("b", &["serve-tcp", "8080", "--seconds", "30"]);
    let r = t.connect("a", IP_B, 8080, "3");
    assert!(r.ok, "A→B:8080 failed: {}", r.text);
    let mac = t.evsd().ctl(json!({"cmd": "show_mac"}));
    let rows = mac.as_array().cloned().unwrap_or_default();
    assert!(
        rows.iter().any(|e| e["mac"] == json!(MAC_A)
            && e["port"] == json!("a")
            && e["vlan"] == json!(100)),
        "show mac lacks A's MAC on port a, VLAN 100: {mac}"
    );
    let conns = t.evsd().ctl(json!({"cmd": "show_connections"}));
    let rows = conns.as_array().cloned().unwrap_or_default();
    assert!(
        rows.iter().any(|r| r["port"] == json!("b")
            && r["connection"]["dst"] == json!(IP_B)
            && r["connection"]["dport"] == json!(8080)),
        "show connections lacks A→B:8080 in B's zone: {conns}"
    );
    let tables = t.evsd().ctl(json!({"cmd": "show_tables"}));
    let sg = tables["tables"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["id"] == json!(12) && t["name"] == json!("ingress_sg"));
    assert!(
        sg.is_some_and(|t| t["rules"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|r| r["note"]
                .as_str()
                .is_some_and(|n| n.contains("rule missing in security group")))),
        "show tables lacks the ingress security-group table: {}",
        &tables.to_string()[..tables.to_string().len().min(2000)]
    );
}

/// 7. A DHCP OFFER (UDP 67→68, broadcast) from D (group with DHCP isolation) is dropped
///    (dhcp_server); the same from S (no isolation) reaches A.
fn dhcp_isolation(t: &Topo) {
    let before = t.drops("d", "dhcp_server");
    let sn = t.start(
        "a",
        &[
            "sniff",
            "eth0",
            "--match",
            "dport=68",
            "--until",
            "payload_has=MARKER-dhcp",
            "--timeout",
            "8",
        ],
    );
    t.run(
        "d",
        &[
            "send",
            "eth0",
            "dhcp-offer",
            "--src-mac",
            MAC_D,
            "--src-ip",
            IP_D,
        ],
    );
    t.run(
        "d",
        &[
            "send",
            "eth0",
            "udp",
            "--src-mac",
            MAC_D,
            "--src-ip",
            IP_D,
            "--payload",
            "MARKER-dhcp",
        ],
    );
    let r = sn.finish(T);
    assert_eq!(
        r.json["marker"], true,
        "D's broadcast marker lost: {}",
        r.text
    );
    assert_eq!(
        r.json["matched"], 0,
        "a DHCP OFFER from isolated guest D was delivered: {}",
        r.text
    );
    let after = t.wait_drops("d", "dhcp_server", before);
    eprintln!("    dhcp_server on d: {before} -> {after}");

    let sn = t.start(
        "a",
        &[
            "sniff",
            "eth0",
            "--match",
            "dport=68",
            "--match",
            &format!("src_mac={MAC_S}"),
            "--count",
            "1",
            "--timeout",
            "8",
        ],
    );
    t.run(
        "s",
        &[
            "send",
            "eth0",
            "dhcp-offer",
            "--src-mac",
            MAC_S,
            "--src-ip",
            IP_S,
        ],
    );
    let r = sn.finish(T);
    assert_eq!(
        r.json["matched"], 1,
        "a DHCP OFFER from S (group without isolation) did not arrive: {}",
        r.text
    );
}

/// 8. IP–MAC binding on D: a frame with a spoofed source MAC and one with a spoofed source IP
///    are dropped (spoofed_mac, spoofed_ip); the correct one arrives.
fn ip_mac_binding(t: &Topo) {
    let (m0, i0) = (t.drops("d", "spoofed_mac"), t.drops("d", "spoofed_ip"));
    let sn = t.start(
        "a",
        &[
            "sniff",
            "eth0",
            "--match",
            "dport=7777",
            "--until",
            "payload_has=BIND-OK",
            "--timeout",
            "8",
        ],
    );
    let send = |mac: &str, ip: &str, payload: &str| {
        t.run(
            "d",
            &[
                "send",
                "eth0",
                "udp",
                "--src-mac",
                mac,
                "--src-ip",
                ip,
                "--dst-ip",
                IP_A,
                "--dst-mac",
                MAC_A,
                "--dport",
                "7777",
                "--payload",
                payload,
            ],
        );
    };
    send("02:00:00:00:00:99", IP_D, "BIND-SPOOFED-MAC");
    send(MAC_D, "10.1.0.99", "BIND-SPOOFED-IP");
    send(MAC_D, IP_D, "BIND-OK");
    let r = sn.finish(T);
    assert_eq!(
        r.json["marker"], true,
        "the correctly addressed frame from D did not arrive: {}",
        r.text
    );
    assert_eq!(
        r.json["matched"], 0,
        "spoofed frames from D were delivered: {}",
        r.text
    );
    let m1 = t.wait_drops("d", "spoofed_mac", m0);
    let i1 = t.wait_drops("d", "spoofed_ip", i0);
    eprintln!("    spoofed_mac on d: {m0} -> {m1}, spoofed_ip: {i0} -> {i1}");
}

/// 9. S's group shapes transmit to 20 Mbit/s (peak 20, no burst): a UDP stream offered at
///    ~100 Mbit/s for 3.5 s is delivered to A at 20 Mbit/s ± 10% (measured on evsd's counters
///    over the steady middle of the run).
fn shaping(t: &Topo) {
    let secs = 3.5;
    let sink = t.start("a", &["udp-sink", "5001", "--seconds", "6"]);
    let m0 = t.drops("s", "meter");
    let s_rx0 = t.evsd().counter("s", "rx_bytes");
    let blast = t.spawn_tool(
        "s",
        "udp-blast",
        &[
            "udp-blast",
            IP_A,
            "5001",
            "--seconds",
            &secs.to_string(),
            "--size",
            "1400",
            "--mbps",
            "100",
        ],
    );
    // Start the window once the stream flows and the meter has started dropping.
    wait_for("the UDP stream from S to reach evsd", T, || {
        (t.evsd().counter("s", "rx_bytes") > s_rx0 + 500_000).then_some(())
    });
    let snap = || {
        let s = t.evsd().port("s");
        let a = t.evsd().port("a");
        (
            Instant::now(),
            s["rx_bytes"].as_u64().unwrap(),
            a["tx_bytes"].as_u64().unwrap(),
        )
    };
    let (t0, srx0, atx0) = snap();
    wait_for("a 2 s measuring window", T, || {
        (t0.elapsed() >= Duration::from_secs(2)).then_some(())
    });
    let (t1, srx1, atx1) = snap();
    let b = blast.finish(T);
    let el = (t1 - t0).as_secs_f64();
    let offered = (srx1 - srx0) as f64 * 8.0 / el / 1e6;
    let delivered = (atx1 - atx0) as f64 * 8.0 / el / 1e6;
    let meter = t.drops("s", "meter") - m0;
    let sink_r = sink.finish(T);
    eprintln!(
        "    shaping: offered {offered:.1} Mbit/s into evsd (sender: {}), delivered to A \
         {delivered:.1} Mbit/s, meter drops {meter}, receiver counted {}",
        b.json, sink_r.json
    );
    assert!(
        offered > 2.0 * SHAPING_MBPS,
        "the sender could not offer well above {SHAPING_MBPS} Mbit/s (got {offered:.1}): \
         the test cannot judge the shaper"
    );
    assert!(meter > 0, "no meter drops while over the rate");
    assert!(
        (delivered - SHAPING_MBPS).abs() <= 0.1 * SHAPING_MBPS,
        "delivered {delivered:.2} Mbit/s, expected {SHAPING_MBPS} ± 10%"
    );
}

/// 10. `evsd ctl apply` with B's 8080 rule removed: A→B:8080 no longer connects and an
///     established 8080 connection stops too (SPEC's documented choice), without restarting
///     evsd or B's port; ICMP (rule kept) still works; re-applying the original model restores
///     new connections.
fn runtime_apply(t: &Topo) {
    let _srv_b = t.start("b", &["serve-tcp", "8080", "--seconds", "60"]);
    let r = t.connect("a", IP_B, 8080, "3");
    assert!(r.ok, "A→B:8080 before the change: {}", r.text);
    let pid = t.evsd().proc.pid();
    let connects = t.evsd().port("b")["connects"].clone();
    // An established connection A→B:8080, exchanging a line every 0.2 s.
    let session = t.start("a", &["session", IP_B, "8080", "--rounds", "150"]);

    let apply = |b_web_rule: bool| {
        let f = t.dir.path().join(format!("model-{b_web_rule}.toml"));
        std::fs::write(&f, model(b_web_rule)).unwrap();
        let o: Output = Command::new(evs_e2e::evsd_bin())
            .args(["ctl", "--socket"])
            .arg(&t.evsd().socket)
            .arg("apply")
            .arg(&f)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "evsd ctl apply {} failed: {}{}",
            f.display(),
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        eprintln!(
            "    evsd ctl apply (8080 rule {}): {}",
            if b_web_rule { "back" } else { "removed" },
            String::from_utf8_lossy(&o.stdout).trim()
        );
    };
    apply(false);
    let before = t.drops("a", "sg_ingress_denied");
    let r = t.connect("a", IP_B, 8080, "1.5");
    assert!(
        !r.ok,
        "A→B:8080 still connects after the rule was removed at run time: {}",
        r.text
    );
    t.wait_drops("a", "sg_ingress_denied", before);
    // SPEC: removing a rule also stops existing connections that only it allowed.
    wait_for(
        "the established A→B:8080 connection to stop getting echoes after the rule was removed",
        Duration::from_secs(10),
        || {
            session
                .proc
                .log_text()
                .contains("\"ok\": false")
                .then_some(())
        },
    );
    drop(session);
    assert!(t.ping("a", IP_B, 3), "ICMP (rule kept) stopped working");
    assert_eq!(t.evsd().proc.pid(), pid, "evsd was restarted");
    assert_eq!(
        t.evsd().port("b")["connects"],
        connects,
        "B's port was re-attached"
    );
    assert_eq!(t.evsd().port("b")["state"], "up");

    apply(true);
    let r = t.connect("a", IP_B, 8080, "3");
    assert!(r.ok, "A→B:8080 after the rule came back: {}", r.text);
}

type Step = (&'static str, fn(&Topo));

const STEPS: &[Step] = &[
    ("same_vlan", same_vlan_delivery),
    ("vlan_isolation", vlan_isolation),
    ("trunk", trunk),
    ("access_drops_tagged", access_drops_tagged),
    ("uplink", uplink),
    ("security_group", security_group),
    ("inspect", inspect),
    ("dhcp_isolation", dhcp_isolation),
    ("ip_mac_binding", ip_mac_binding),
    ("shaping", shaping),
    ("runtime_apply", runtime_apply),
];

fn skip_reason_netns() -> Option<String> {
    if let Some(r) = skip_reason() {
        return Some(r);
    }
    for b in ["ip", "ethtool", "sh"] {
        if !have(b) {
            return Some(format!(
                "{b} is not installed (apt-get install iproute2 ethtool)"
            ));
        }
    }
    if !Path::new("/usr/bin/python3").exists() && !have("python3") {
        return Some("python3 is not installed".into());
    }
    None
}

#[test]
fn port_group_policy_over_af_packet() {
    evs_e2e::evsd_bin!();
    if let Some(r) = skip_reason_netns() {
        eprintln!("\n*** SKIPPING policy_netns: {r} ***\n");
        return;
    }
    let _g = evs_e2e::serial();
    let only: Option<Vec<String>> = std::env::var("POLICY_NETNS_STEPS")
        .ok()
        .map(|s| s.split(',').map(|x| x.trim().to_string()).collect());
    let t0 = Instant::now();
    let topo = Topo::build();
    eprintln!(
        "topology up in {:.1} s (namespaces evp{}-*, evsd log {})",
        t0.elapsed().as_secs_f64(),
        topo.pid,
        topo.dir.path().join("evsd.log").display()
    );
    let mut failed = vec![];
    for (name, f) in STEPS {
        if let Some(o) = &only {
            if !o.iter().any(|x| x == name) {
                continue;
            }
        }
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
                eprintln!("FAIL {name} ({secs:.1} s): {msg}\n{}", topo.port_dump());
                failed.push(name.to_string());
            }
        }
    }
    eprintln!("policy_netns: total {:.1} s", t0.elapsed().as_secs_f64());
    if !failed.is_empty() {
        eprintln!("evsd ports at the end:\n{}", topo.port_dump());
    }
    drop(topo);
    assert!(failed.is_empty(), "failed steps: {failed:?}");
}
