//! The port-group and security-group semantics of SPEC.md, checked through the same entry point
//! the dataplane uses (`Worker::process_burst`), with frames built byte by byte.

use flowtable::frames::{self, ACK, L4, SYN};
use flowtable::switch::{Switch, SwitchConfig};
use flowtable::verdict::{BurstResult, DropReason, VlanEdit};
use flowtable::wire::ethernet::ethertype;
use flowtable::worker::Worker;
use model::Mac;
use model::*;
use std::net::Ipv4Addr;

const MODEL: &str = r#"
[[uplinks]]
name = "uplink0"

[[port_groups]]
name = "web"
type = "access"
vlan = 100

[[port_groups]]
name = "db"
type = "access"
vlan = 200

[[port_groups]]
name = "secure"
type = "access"
vlan = 100
dhcp_isolation = true
ip_mac_binding = true

[[port_groups]]
name = "router"
type = "trunk"
vlans = ["100", "200-210"]

[[security_groups]]
name = "default"
rules = [ { direction = "egress" } ]

[[security_groups]]
name = "websg"
rules = [
  { direction = "egress" },
  { direction = "ingress", protocol = "tcp", port_min = 80, port_max = 80 },
  { direction = "ingress", protocol = "icmp", remote = { group = "default" } },
]

[[ports]]
name = "vm1"
mac = "02:00:00:00:00:01"
ips = ["10.0.0.1"]
port_group = "web"

[[ports]]
name = "vm2"
mac = "02:00:00:00:00:02"
ips = ["10.0.0.2"]
port_group = "web"

[[ports]]
name = "vm3"
mac = "02:00:00:00:00:03"
ips = ["10.0.0.3"]
port_group = "db"

[[ports]]
name = "sec"
mac = "02:00:00:00:00:04"
ips = ["10.0.0.4"]
port_group = "secure"

[[ports]]
name = "rtr"
mac = "02:00:00:00:00:05"
port_group = "router"
"#;

fn mac(n: u8) -> Mac {
    Mac([2, 0, 0, 0, 0, n])
}
fn ip(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 0, n)
}

struct Bench {
    sw: Switch,
    w: Worker,
    out: BurstResult,
    now: u64,
}

impl Bench {
    fn new(model: &str) -> Bench {
        let m: Model = toml::from_str(model).unwrap();
        Bench::with_switch(Switch::new(SwitchConfig::default(), m).unwrap())
    }
    fn with_switch(sw: Switch) -> Bench {
        let w = sw.worker();
        Bench {
            sw,
            w,
            out: BurstResult::default(),
            now: 1_000_000_000,
        }
    }
    fn id(&self, name: &str) -> u32 {
        self.sw.port_id(name).unwrap()
    }
    /// Sends one frame in on `port`; returns (port name, VLAN edit) of every copy, or the drop.
    fn send(&mut self, port: &str, frame: &[u8]) -> Result<Vec<(String, VlanEdit)>, DropReason> {
        self.now += 1000;
        let id = self.id(port);
        self.w.process_burst(id, &[frame], self.now, &mut self.out);
        let p = self.out.packets[0];
        if let Some(r) = p.drop {
            return Err(r);
        }
        let pl = self.sw.pipeline();
        let mut v: Vec<(String, VlanEdit)> = self
            .out
            .emits_of(0)
            .iter()
            .map(|e| (pl.port_name(e.port), e.vlan))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(v)
    }
    fn names(&mut self, port: &str, frame: &[u8]) -> Result<Vec<String>, DropReason> {
        self.send(port, frame)
            .map(|v| v.into_iter().map(|(n, _)| n).collect())
    }
    fn apply(&mut self, f: impl FnOnce(&mut Model)) {
        let mut m = self.sw.model();
        f(&mut m);
        self.sw.apply(m).unwrap();
    }
}

fn udp(from: u8, to: u8, vlan: Option<u16>) -> Vec<u8> {
    frames::ipv4(
        mac(from),
        mac(to),
        vlan,
        ip(from),
        ip(to),
        L4::Udp {
            src: 1000,
            dst: 2000,
        },
        18,
    )
}

#[test]
fn same_vlan_floods_then_learns_and_vlans_are_isolated() {
    let mut b = Bench::new(MODEL);
    // Unknown destination: flood within VLAN 100 only (vm2, secure port, router trunk, uplink).
    let copies = b.send("vm1", &udp(1, 2, None)).unwrap();
    assert_eq!(
        copies,
        vec![
            ("rtr".into(), VlanEdit::Set(100)),
            ("sec".into(), VlanEdit::Strip),
            ("uplink0".into(), VlanEdit::Set(100)),
            ("vm2".into(), VlanEdit::Strip),
        ]
    );
    // vm2 answers: vm1 was learned, so the answer is unicast.
    assert_eq!(b.names("vm2", &udp(2, 1, None)).unwrap(), vec!["vm1"]);
    // And now vm2 is known too.
    assert_eq!(b.names("vm1", &udp(1, 2, None)).unwrap(), vec!["vm2"]);
    // vm3 is in VLAN 200: its broadcast reaches the trunk and the uplink, never VLAN 100 ports.
    let bcast = frames::ipv4(
        mac(3),
        Mac::BROADCAST,
        None,
        ip(3),
        Ipv4Addr::BROADCAST,
        L4::Udp { src: 1, dst: 2 },
        0,
    );
    assert_eq!(b.names("vm3", &bcast).unwrap(), vec!["rtr", "uplink0"]);
    // A frame to vm1's MAC from VLAN 200 does not find vm1 (per-VLAN MAC tables): it floods in 200.
    assert_eq!(
        b.names("vm3", &udp(3, 1, None)).unwrap(),
        vec!["rtr", "uplink0"]
    );
}

#[test]
fn access_ports_drop_tagged_frames_and_trunks_pass_allowed_tags_only() {
    let mut b = Bench::new(MODEL);
    assert_eq!(
        b.send("vm1", &udp(1, 2, Some(100))),
        Err(DropReason::TaggedOnAccess)
    );
    // Trunk, VLAN 205 allowed: goes to VLAN-200 domain members... of VLAN 205 (only the uplink).
    assert_eq!(
        b.send("rtr", &udp(5, 9, Some(205))).unwrap(),
        vec![("uplink0".into(), VlanEdit::Set(205))]
    );
    // VLAN 100 from the trunk reaches the access ports untagged.
    let c = b.names("rtr", &udp(5, 1, Some(100))).unwrap();
    assert_eq!(c, vec!["sec", "uplink0", "vm1", "vm2"]);
    assert_eq!(
        b.send("rtr", &udp(5, 1, Some(20))),
        Err(DropReason::VlanNotAllowed)
    );
    assert_eq!(
        b.send("rtr", &udp(5, 1, None)),
        Err(DropReason::VlanNotAllowed)
    );
    let t = b.sw.trace("rtr", &udp(5, 1, Some(20)), b.now).unwrap();
    assert!(
        t.verdict.contains("VLAN 20") && t.verdict.contains("not allowed on trunk port rtr"),
        "{}",
        t.verdict
    );
    // Uplink: carries every port-group VLAN (100, 200-210), tagged; untagged dropped.
    assert_eq!(
        b.names("uplink0", &udp(9, 3, Some(200))).unwrap(),
        vec!["rtr", "vm3"]
    );
    assert_eq!(
        b.send("uplink0", &udp(9, 3, Some(300))),
        Err(DropReason::VlanNotAllowed)
    );
    assert_eq!(
        b.send("uplink0", &udp(9, 3, None)),
        Err(DropReason::VlanNotAllowed)
    );
}

#[test]
fn qinq_and_malformed_frames_are_dropped_with_reasons() {
    let mut b = Bench::new(MODEL);
    let mut f = udp(5, 1, Some(100));
    f.truncate(30);
    assert_eq!(b.send("rtr", &f), Err(DropReason::Malformed));
    assert_eq!(b.send("rtr", &[0u8; 5]), Err(DropReason::Malformed));
    // A second tag, the same as the first.
    let mut q = udp(5, 1, Some(100));
    frames::push_tag(&mut q, ethertype::VLAN, 100);
    assert_eq!(b.send("rtr", &q), Err(DropReason::StackedVlan));
}

#[test]
fn dhcp_isolation_drops_server_replies_but_not_client_requests() {
    let mut b = Bench::new(MODEL);
    let offer = frames::ipv4(
        mac(4),
        Mac::BROADCAST,
        None,
        ip(4),
        Ipv4Addr::BROADCAST,
        L4::Udp { src: 67, dst: 68 },
        240,
    );
    assert_eq!(b.send("sec", &offer), Err(DropReason::DhcpServer));
    let t = b.sw.trace("sec", &offer, b.now).unwrap();
    assert!(t.verdict.contains("DHCP isolation"), "{}", t.verdict);
    let discover = frames::ipv4(
        mac(4),
        Mac::BROADCAST,
        None,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::BROADCAST,
        L4::Udp { src: 68, dst: 67 },
        240,
    );
    assert!(b.send("sec", &discover).is_ok());
    // A port without DHCP isolation may send offers.
    let offer1 = frames::ipv4(
        mac(1),
        Mac::BROADCAST,
        None,
        ip(1),
        Ipv4Addr::BROADCAST,
        L4::Udp { src: 67, dst: 68 },
        240,
    );
    assert!(b.send("vm1", &offer1).is_ok());
}

#[test]
fn ip_mac_binding_drops_spoofed_sources() {
    let mut b = Bench::new(MODEL);
    assert!(b.send("sec", &udp(4, 1, None)).is_ok());
    // Spoofed MAC.
    let f = frames::ipv4(
        mac(9),
        mac(1),
        None,
        ip(4),
        ip(1),
        L4::Udp { src: 1, dst: 2 },
        0,
    );
    assert_eq!(b.send("sec", &f), Err(DropReason::SpoofedMac));
    // Right MAC, spoofed IP.
    let f = frames::ipv4(
        mac(4),
        mac(1),
        None,
        Ipv4Addr::new(10, 0, 0, 9),
        ip(1),
        L4::Udp { src: 1, dst: 2 },
        0,
    );
    assert_eq!(b.send("sec", &f), Err(DropReason::SpoofedIp));
    let t = b.sw.trace("sec", &f, b.now).unwrap();
    assert_eq!(
        t.verdict,
        "dropped: IPv4 source address not bound to port sec (bound: 10.0.0.4)"
    );
    // ARP with a spoofed sender address, and a good one.
    let bad = frames::arp(
        mac(4),
        Mac::BROADCAST,
        None,
        1,
        mac(4),
        Ipv4Addr::new(10, 0, 0, 1),
        Mac::ZERO,
        ip(2),
    );
    assert_eq!(b.send("sec", &bad), Err(DropReason::SpoofedIp));
    let good = frames::arp(
        mac(4),
        Mac::BROADCAST,
        None,
        1,
        mac(4),
        ip(4),
        Mac::ZERO,
        ip(2),
    );
    assert!(b.send("sec", &good).is_ok());
    // ARP whose Ethernet source is right but whose sender hardware address lies.
    let lie = frames::arp(
        mac(4),
        Mac::BROADCAST,
        None,
        1,
        mac(1),
        ip(4),
        Mac::ZERO,
        ip(2),
    );
    assert_eq!(b.send("sec", &lie), Err(DropReason::ArpSpoofedMac));
    // Another port claiming the bound MAC cannot steal it: the static entry keeps pointing at sec.
    let steal = frames::ipv4(
        mac(4),
        mac(2),
        None,
        ip(1),
        ip(2),
        L4::Udp { src: 1, dst: 2 },
        0,
    );
    let _ = b.send("vm1", &steal);
    assert_eq!(b.names("vm2", &udp(2, 4, None)).unwrap(), vec!["sec"]);
}

fn sg_model() -> String {
    let mut m = MODEL.to_string();
    m = m.replace(
        "port_group = \"web\"\n",
        "port_group = \"web\"\nsecurity_group = \"websg\"\n",
    );
    m = m.replace(
        "port_group = \"db\"\n",
        "port_group = \"db\"\nsecurity_group = \"default\"\n",
    );
    m
}

fn tcp(from: u8, to: u8, sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    frames::ipv4(
        mac(from),
        mac(to),
        None,
        ip(from),
        ip(to),
        L4::Tcp {
            src: sport,
            dst: dport,
            flags,
        },
        0,
    )
}

#[test]
fn security_group_allows_listed_ingress_and_return_traffic() {
    let mut b = Bench::new(&sg_model());
    // Make vm1 and vm2 known so frames are unicast.
    b.send("vm1", &udp(1, 2, None)).ok();
    b.send("vm2", &udp(2, 1, None)).ok();
    // vm1 → vm2:80 allowed by websg's ingress rule; the reply is return traffic.
    assert_eq!(
        b.names("vm1", &tcp(1, 2, 40000, 80, SYN)).unwrap(),
        vec!["vm2"]
    );
    assert_eq!(
        b.names("vm2", &tcp(2, 1, 80, 40000, SYN | ACK)).unwrap(),
        vec!["vm1"]
    );
    assert_eq!(
        b.names("vm1", &tcp(1, 2, 40000, 80, ACK)).unwrap(),
        vec!["vm2"]
    );
    // vm1 → vm2:22 is not allowed at vm2's ingress.
    assert_eq!(
        b.send("vm1", &tcp(1, 2, 40001, 22, SYN)),
        Err(DropReason::SgIngressDenied)
    );
    let t =
        b.sw.trace("vm1", &tcp(1, 2, 40001, 22, SYN), b.now)
            .unwrap();
    assert_eq!(
        t.verdict,
        "dropped: ingress rule missing in security group websg"
    );
    // A TCP FIN/RST that belongs to no connection is invalid.
    assert_eq!(
        b.send("vm1", &tcp(1, 2, 40002, 80, frames::FIN | ACK)),
        Err(DropReason::CtInvalid)
    );
}

/// `tcp_loose` (the default): a mid-stream segment without a connection, as after a restart of
/// the switch, is judged as a new connection in its own direction; picked up where the rules
/// allow that, refused where they do not.
#[test]
fn mid_stream_segments_are_picked_up_only_where_rules_allow_new() {
    let mut b = Bench::new(&sg_model());
    b.send("vm1", &udp(1, 2, None)).ok();
    b.send("vm2", &udp(2, 1, None)).ok();
    let trace =
        b.sw.trace("vm1", &tcp(1, 2, 40002, 80, ACK), b.now)
            .unwrap();
    let text = trace.to_string();
    assert!(
        text.contains("(would commit: picked up in mid-stream, tcp_loose)"),
        "{text}"
    );
    assert_eq!(trace.verdict, "delivered to vm2", "{text}");
    // vm2 (the server) sends first after the restart: its egress allows it as new, vm1's
    // ingress does not (vm2:80 → vm1:40002 is not an allowed new connection)...
    assert_eq!(
        b.send("vm2", &tcp(2, 1, 80, 40002, ACK)),
        Err(DropReason::SgIngressDenied)
    );
    // ...while vm1's segment to vm2:80 is allowed as new, so picked up in both zones...
    assert_eq!(
        b.names("vm1", &tcp(1, 2, 40002, 80, ACK)).unwrap(),
        vec!["vm2"]
    );
    // ...and then vm2's answers are return traffic.
    assert_eq!(
        b.names("vm2", &tcp(2, 1, 80, 40002, ACK)).unwrap(),
        vec!["vm1"]
    );
    assert!(b.sw.shared().ct.stats().picked_up >= 2);
    // Towards a port the rules do not open, a mid-stream segment is refused as a SYN would be,
    // even when the server's segment came first and was picked up as vm2's egress: vm1 → vm2:22
    // is still judged as new by vm2's ingress.
    assert_eq!(
        b.send("vm2", &tcp(2, 1, 22, 40003, ACK)),
        Err(DropReason::SgIngressDenied)
    );
    assert_eq!(
        b.send("vm1", &tcp(1, 2, 40003, 22, ACK)),
        Err(DropReason::SgIngressDenied)
    );

    // Without tcp_loose, a mid-stream segment without a connection is invalid.
    let m: Model = toml::from_str(&sg_model()).unwrap();
    let sw = Switch::new(
        SwitchConfig {
            tcp_loose: false,
            ..Default::default()
        },
        m,
    )
    .unwrap();
    let mut b = Bench::with_switch(sw);
    b.send("vm1", &udp(1, 2, None)).ok();
    b.send("vm2", &udp(2, 1, None)).ok();
    assert_eq!(
        b.send("vm1", &tcp(1, 2, 40002, 80, ACK)),
        Err(DropReason::CtInvalid)
    );
    assert_eq!(b.sw.shared().ct.stats().picked_up, 0);
}

#[test]
fn default_group_denies_ingress_allows_egress_and_replies() {
    let mut b = Bench::new(&sg_model());
    // vm3 (default group) is reachable from nobody; it can reach out, and gets replies.
    let to3 = frames::ipv4(
        mac(9),
        mac(3),
        Some(200),
        Ipv4Addr::new(10, 0, 0, 9),
        ip(3),
        L4::Udp { src: 5, dst: 53 },
        0,
    );
    // Unknown destination: flooded in VLAN 200; vm3's copy is denied, the trunk's goes out.
    assert_eq!(b.names("uplink0", &to3).unwrap(), vec!["rtr"]);
    b.send("vm3", &udp(3, 9, None)).ok(); // vm3 is now known (and opened a UDP flow to .9:2000)
    assert_eq!(b.send("uplink0", &to3), Err(DropReason::SgIngressDenied));
    let from3 = frames::ipv4(
        mac(3),
        mac(9),
        None,
        ip(3),
        Ipv4Addr::new(10, 0, 0, 9),
        L4::Udp { src: 53, dst: 5 },
        0,
    );
    // .9 was learned on the uplink: unicast.
    assert_eq!(b.names("vm3", &from3).unwrap(), vec!["uplink0"]);
    // Now the same packet towards vm3 is a reply of vm3's connection: allowed.
    assert_eq!(b.names("uplink0", &to3).unwrap(), vec!["vm3"]);
}

#[test]
fn remote_group_rule_follows_membership() {
    let mut b = Bench::new(&sg_model());
    b.send("vm2", &udp(2, 1, None)).ok();
    // vm3 is in "default", which websg lets ping vm2... but vm3 is in VLAN 200, so use the trunk
    // in VLAN 100 with vm3's address: not a member address → denied.
    let ping = |src: u8, id: u16| {
        frames::ipv4(
            mac(src),
            mac(2),
            Some(100),
            ip(src),
            ip(2),
            L4::Echo { id, reply: false },
            8,
        )
    };
    assert_eq!(b.send("rtr", &ping(7, 1)), Err(DropReason::SgIngressDenied));
    // Make 10.0.0.7 a member of "default" (a new port holding it): now allowed.
    b.apply(|m| {
        m.ports.push(Port {
            storm_control: None,
            name: "vm7".into(),
            mac: mac(7),
            ips: vec!["10.0.0.7".parse().unwrap()],
            port_group: "db".into(),
            security_group: Some("default".into()),
        })
    });
    assert_eq!(b.names("rtr", &ping(7, 2)).unwrap(), vec!["vm2"]);
}

#[test]
fn removing_a_rule_stops_new_and_existing_connections() {
    let mut b = Bench::new(&sg_model());
    b.send("vm1", &udp(1, 2, None)).ok();
    b.send("vm2", &udp(2, 1, None)).ok();
    assert!(b.send("vm1", &tcp(1, 2, 40000, 80, SYN)).is_ok());
    assert!(b.send("vm2", &tcp(2, 1, 80, 40000, SYN | ACK)).is_ok());
    assert!(b.send("vm1", &tcp(1, 2, 40000, 80, ACK)).is_ok());
    b.apply(|m| {
        m.security_groups[1]
            .rules
            .retain(|r| r.port_min != Some(80))
    });
    // The established connection is cut (documented choice) and new ones are denied.
    assert!(b.send("vm1", &tcp(1, 2, 40000, 80, ACK)).is_err());
    assert_eq!(
        b.send("vm1", &tcp(1, 2, 40003, 80, SYN)),
        Err(DropReason::SgIngressDenied)
    );
    // Putting the rule back takes effect without restarting anything.
    b.apply(|m| {
        m.security_groups[1].rules.push(SgRule {
            direction: Direction::Ingress,
            ethertype: EtherType::IPv4,
            protocol: Protocol::Tcp,
            port_min: Some(80),
            port_max: Some(80),
            icmp_type: None,
            icmp_code: None,
            remote: None,
        })
    });
    assert!(b.send("vm1", &tcp(1, 2, 40004, 80, SYN)).is_ok());
}

#[test]
fn cache_is_never_stale_after_an_update() {
    let mut b = Bench::new(MODEL);
    b.send("vm2", &udp(2, 1, None)).ok();
    let f = udp(1, 2, None);
    assert_eq!(b.names("vm1", &f).unwrap(), vec!["vm2"]);
    assert_eq!(b.names("vm1", &f).unwrap(), vec!["vm2"]); // now from the cache
                                                          // Move vm1 to VLAN 200 (the db group): the same frame, cached before, must now not reach vm2.
    b.apply(|m| m.ports[0].port_group = "db".into());
    assert_eq!(b.names("vm1", &f).unwrap(), vec!["rtr", "uplink0", "vm3"]);
    b.apply(|m| m.port_groups[0].vlan = Some(200)); // web now in 200 too: vm2 back with vm1
    assert_eq!(
        b.names("vm1", &f).unwrap(),
        vec!["rtr", "uplink0", "vm2", "vm3"]
    );
}

/// A switch whose group "web" (vm1's) is shaped at high priority, a worker, vm1's id, and a
/// 1000-byte-payload broadcast frame from vm1.
fn shaped_vm1(average: f64, peak: f64, burst: f64) -> (Switch, Worker, u32, Vec<u8>) {
    let mut m: Model = toml::from_str(MODEL).unwrap();
    m.port_groups[0].shaping = Some(Shaping {
        average_mbps: average,
        peak_mbps: Some(peak),
        burst_mbit: burst,
        priority: Priority::High,
    });
    let sw = Switch::new(SwitchConfig::default(), m).unwrap();
    let w = sw.worker();
    let id = sw.port_id("vm1").unwrap();
    let f = frames::ipv4(
        mac(1),
        Mac::BROADCAST,
        None,
        ip(1),
        ip(2),
        L4::Udp { src: 1, dst: 2 },
        1000,
    );
    (sw, w, id, f)
}

#[test]
fn shaping_holds_a_port_near_its_average_rate() {
    let (_sw, mut w, id, f) = shaped_vm1(10.0, 20.0, 0.0);
    let mut out = BurstResult::default();
    // Offer 100 Mbit/s for 2 simulated seconds, in bursts of 32.
    let bits_per_burst = (f.len() * 8 * 32) as u64;
    let burst_ns = bits_per_burst * 1_000_000_000 / 100_000_000;
    let (mut passed, mut t) = (0u64, 0u64);
    while t < 2_000_000_000 {
        let frames: Vec<&[u8]> = (0..32).map(|_| f.as_slice()).collect();
        w.process_burst(id, &frames, t, &mut out);
        passed += out.packets.iter().filter(|p| p.drop.is_none()).count() as u64;
        assert!(out
            .packets
            .iter()
            .all(|p| p.drop.is_none() || p.drop == Some(DropReason::Meter)));
        t += burst_ns;
    }
    let mbps = (passed * f.len() as u64 * 8) as f64 / 2.0 / 1e6;
    assert!(
        (9.0..=11.0).contains(&mbps),
        "delivered {mbps} Mbit/s for a 10 Mbit/s average"
    );
}

/// A port spending burst credit (above its average, up to its peak) has those packets marked as
/// excess, so that a congested uplink serves every port's average first; packets within the
/// average are not marked.
#[test]
fn shaping_marks_traffic_above_the_average_as_excess() {
    let (_sw, mut w, id, f) = shaped_vm1(10.0, 100.0, 100.0);
    let mut out = BurstResult::default();
    // Bursts of 16 (the peak bucket holds 2 ms at 100 Mbit/s, about 24 such frames).
    let frames: Vec<&[u8]> = (0..16).map(|_| f.as_slice()).collect();
    let bits_per_burst = (f.len() * 8 * 16) as u64;
    // At 80 Mbit/s for half a second (within the peak, paid by the burst): about an eighth of
    // the packets are within the 10 Mbit/s average.
    let burst_ns = bits_per_burst * 1_000_000_000 / 80_000_000;
    let (mut within, mut excess, mut t) = (0u64, 0u64, 0u64);
    while t < 500_000_000 {
        w.process_burst(id, &frames, t, &mut out);
        for p in &out.packets {
            assert_eq!(p.drop, None, "within the burst and the peak");
            if p.excess {
                excess += 1;
            } else {
                within += 1;
            }
        }
        t += burst_ns;
    }
    let share = within as f64 / (within + excess) as f64;
    // 10 of 80 Mbit/s, plus the average bucket's initial depth (97 kB of 5 MB).
    assert!(
        (0.12..=0.16).contains(&share),
        "within-average share {share}"
    );
    // After a pause, at 5 Mbit/s (below the average), nothing is excess.
    t += 200_000_000;
    let burst_ns = bits_per_burst * 1_000_000_000 / 5_000_000;
    for _ in 0..100 {
        t += burst_ns;
        w.process_burst(id, &frames, t, &mut out);
        assert!(out.packets.iter().all(|p| p.drop.is_none() && !p.excess));
    }
}

#[test]
fn mac_limit_and_moves() {
    let mut m: Model = toml::from_str(MODEL).unwrap();
    m.ports.truncate(3);
    let sw = Switch::new(
        SwitchConfig {
            mac_limit_per_port: 2,
            ..Default::default()
        },
        m,
    )
    .unwrap();
    let mut w = sw.worker();
    let mut out = BurstResult::default();
    let id1 = sw.port_id("vm1").unwrap();
    let send = |w: &mut Worker, out: &mut BurstResult, src: u8| {
        let f = udp(src, 2, None);
        w.process_burst(id1, &[&f], 1, out);
        out.packets[0].drop
    };
    assert_eq!(send(&mut w, &mut out, 10), None);
    assert_eq!(send(&mut w, &mut out, 11), None);
    assert_eq!(send(&mut w, &mut out, 12), Some(DropReason::MacLimit));
    assert_eq!(send(&mut w, &mut out, 10), None); // known MACs keep working
}

/// The per-thread caches remember the egress towards the port a destination was last seen on;
/// when the destination moves, its frames follow it at once, with the new port's tagging.
#[test]
fn unicast_follows_a_moving_destination() {
    let mut b = Bench::new(MODEL);
    b.send("vm2", &udp(2, 1, None)).unwrap();
    for _ in 0..3 {
        assert_eq!(
            b.send("vm1", &udp(1, 2, None)).unwrap(),
            vec![("vm2".into(), VlanEdit::Strip)]
        );
    }
    // vm2's MAC now speaks from behind the router trunk, in VLAN 100.
    b.send("rtr", &udp(2, 1, Some(100))).unwrap();
    for _ in 0..3 {
        assert_eq!(
            b.send("vm1", &udp(1, 2, None)).unwrap(),
            vec![("rtr".into(), VlanEdit::Set(100))]
        );
    }
    // And back.
    b.send("vm2", &udp(2, 1, None)).unwrap();
    assert_eq!(
        b.send("vm1", &udp(1, 2, None)).unwrap(),
        vec![("vm2".into(), VlanEdit::Strip)]
    );
}

/// The worker remembers the MAC table's answer for the rest of a burst; what it learns itself
/// within the burst is still seen by the next frame. Here vm2's MAC moves behind the router in
/// the middle of a burst from the router (with a broadcast, which looks nothing up): the frame
/// after the move finds vm2's MAC on its own input port.
#[test]
fn a_move_within_a_burst_is_seen_by_the_next_frame() {
    let mut b = Bench::new(MODEL);
    b.send("vm2", &udp(2, 1, None)).unwrap();
    let (rtr, vm2) = (b.id("rtr"), b.id("vm2"));
    let to_vm2 = udp(9, 2, Some(100));
    let vm2_moves = frames::ipv4(
        mac(2),
        Mac::BROADCAST,
        Some(100),
        ip(2),
        Ipv4Addr::BROADCAST,
        L4::Udp { src: 1, dst: 2 },
        0,
    );
    b.now += 1000;
    b.w.process_burst(rtr, &[&to_vm2, &vm2_moves, &to_vm2], b.now, &mut b.out);
    assert_eq!(b.out.packets[0].drop, None);
    assert_eq!(b.out.emits_of(0)[0].port, vm2);
    assert_eq!(b.out.packets[2].drop, Some(DropReason::Loop));
    // Single frames agree.
    b.send("vm2", &udp(2, 1, None)).unwrap();
    assert_eq!(b.names("rtr", &to_vm2).unwrap(), vec!["vm2"]);
    b.send("rtr", &vm2_moves).unwrap();
    assert_eq!(b.send("rtr", &to_vm2), Err(DropReason::Loop));
}

/// A commit into a full connection table drops the packet (`CtFull`), wherever on its path the
/// commit is: vm1 → vm2 is tracked in vm1's group's zone (vm1's ingress path) and in vm2's
/// (its egress path), two entries. Connections already tracked go on.
#[test]
fn a_full_connection_table_drops_new_connections() {
    // The MACs learned from ARP, which takes no connection.
    let learn = |b: &mut Bench| {
        for (f, t) in [(1, 2), (2, 1)] {
            let reply = frames::arp(mac(f), mac(t), None, 2, mac(f), ip(f), mac(t), ip(t));
            b.send(if f == 1 { "vm1" } else { "vm2" }, &reply).unwrap();
        }
    };
    for max in [0, 1] {
        let mut b = Bench::with_switch(
            Switch::new(
                SwitchConfig {
                    ct_max_entries: max,
                    ..SwitchConfig::default()
                },
                toml::from_str(&sg_model()).unwrap(),
            )
            .unwrap(),
        );
        learn(&mut b);
        assert_eq!(
            b.send("vm1", &tcp(1, 2, 40000, 80, SYN)),
            Err(DropReason::CtFull),
            "room for {max}"
        );
    }
    let mut b = Bench::with_switch(
        Switch::new(
            SwitchConfig {
                ct_max_entries: 2,
                ..SwitchConfig::default()
            },
            toml::from_str(&sg_model()).unwrap(),
        )
        .unwrap(),
    );
    learn(&mut b);
    assert_eq!(
        b.names("vm1", &tcp(1, 2, 40000, 80, SYN)).unwrap(),
        vec!["vm2"]
    );
    assert_eq!(
        b.send("vm1", &tcp(1, 2, 40001, 80, SYN)),
        Err(DropReason::CtFull)
    );
    assert_eq!(
        b.names("vm2", &tcp(2, 1, 80, 40000, SYN | ACK)).unwrap(),
        vec!["vm1"]
    );
    assert_eq!(
        b.names("vm1", &tcp(1, 2, 40000, 80, ACK)).unwrap(),
        vec!["vm2"]
    );
}
