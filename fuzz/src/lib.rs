//! Shared by the fuzz targets: one realistic switch (built once), the input format, and the
//! invariants every packet's result must satisfy.
//!
//! Input format of `parse_classify` and `trace`: 2 bytes (big endian) select the input port, the rest
//! is the Ethernet frame. A selector below 0x8000 picks one of [`PORTS`] (modulo their number); with
//! the top bit set, the low 15 bits are used as a raw port id (unknown ports, ids ≥ `MAX_PORTS`).

use flowtable::switch::{Switch, SwitchConfig};
use flowtable::worker::Worker;
use model::Model;
use flowtable::verdict::{BurstResult, VlanEdit};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

/// Access ports with DHCP isolation, IP–MAC binding, shaping and a security group (`vm1`, `vm2`),
/// a plain access port in another VLAN (`vm3`), one with the default group (`vm4`), a trunk with a
/// native VLAN (`rtr`) and an uplink.
pub const MODEL_JSON: &str = r#"{
  "uplinks": [ { "name": "uplink0", "vlans": ["100-200"] } ],
  "port_groups": [
    { "name": "web", "type": "access", "vlan": 100, "dhcp_isolation": true, "ip_mac_binding": true,
      "tcp_checksum_fill": true,
      "shaping": { "average_mbps": 100, "peak_mbps": 200, "burst_mbit": 10, "priority": "high" } },
    { "name": "db", "type": "access", "vlan": 200 },
    { "name": "router", "type": "trunk", "vlans": ["100", "150-160"], "native_vlan": 150,
      "dhcp_isolation": true }
  ],
  "security_groups": [
    { "name": "default", "rules": [ { "direction": "egress" }, { "direction": "egress", "ethertype": "IPv6" } ] },
    { "name": "websg", "rules": [
      { "direction": "egress" },
      { "direction": "egress", "ethertype": "IPv6" },
      { "direction": "ingress", "protocol": "tcp", "port_min": 80, "port_max": 80 },
      { "direction": "ingress", "protocol": "tcp", "port_min": 1000, "port_max": 1999,
        "remote": { "cidr": "10.0.0.0/24" } },
      { "direction": "ingress", "protocol": "udp", "port_min": 53, "port_max": 53 },
      { "direction": "ingress", "protocol": "icmp", "icmp_type": 8, "remote": { "group": "default" } },
      { "direction": "ingress", "ethertype": "IPv6", "protocol": "icmp" },
      { "direction": "ingress", "ethertype": "IPv6", "protocol": "tcp", "port_min": 443,
        "remote": { "cidr": "2001:db8::/32" } },
      { "direction": "ingress", "protocol": 47 }
    ] }
  ],
  "ports": [
    { "name": "vm1", "mac": "02:00:00:00:00:01", "ips": ["10.0.0.1", "2001:db8::1"],
      "port_group": "web", "security_group": "websg" },
    { "name": "vm2", "mac": "02:00:00:00:00:02", "ips": ["10.0.0.2"], "port_group": "web",
      "security_group": "websg" },
    { "name": "vm3", "mac": "02:00:00:00:00:03", "ips": ["10.0.0.3"], "port_group": "db" },
    { "name": "vm4", "mac": "02:00:00:00:00:04", "ips": ["10.0.1.4"], "port_group": "db",
      "security_group": "default" },
    { "name": "rtr", "mac": "02:00:00:00:00:05", "port_group": "router", "security_group": "default" }
  ]
}"#;

/// The ports a selector picks from, in selector order.
pub const PORTS: [&str; 6] = ["vm1", "vm2", "vm3", "vm4", "rtr", "uplink0"];

pub fn model() -> Model {
    serde_json::from_str(MODEL_JSON).expect("fuzz model parses")
}

pub struct Fixture {
    pub sw: Switch,
    pub worker: Mutex<(Worker, BurstResult)>,
    pub ids: Vec<u32>,
    pub now: AtomicU64,
}

/// The switch, built on first use (the fuzzers run in one process; its MAC table and connection
/// table keep state from one input to the next, like a real switch).
pub fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let sw = Switch::new(SwitchConfig::default(), model()).expect("fuzz model is valid");
        let ids = PORTS.iter().map(|p| sw.port_id(p).expect("port")).collect();
        let w = sw.worker();
        Fixture {
            sw,
            worker: Mutex::new((w, BurstResult::default())),
            ids,
            now: AtomicU64::new(1_000_000_000),
        }
    })
}

/// Splits an input into (input port id, port name if known, frame).
pub fn split(data: &[u8]) -> Option<(u32, Option<&'static str>, &[u8])> {
    if data.len() < 2 {
        return None;
    }
    let sel = u16::from_be_bytes([data[0], data[1]]);
    let f = fixture();
    let (id, name) = if sel & 0x8000 == 0 {
        let i = sel as usize % PORTS.len();
        (f.ids[i], Some(PORTS[i]))
    } else {
        let id = (sel & 0x7fff) as u32;
        let name = f.ids.iter().position(|&x| x == id).map(|i| PORTS[i]);
        (id, name)
    };
    Some((id, name, &data[2..]))
}

/// The input for a frame sent on port `PORTS[i]`.
pub fn input(i: usize, frame: &[u8]) -> Vec<u8> {
    let mut v = (i as u16).to_be_bytes().to_vec();
    v.extend_from_slice(frame);
    v
}

/// Checks what every packet result must satisfy; panics (a fuzzer crash) otherwise.
pub fn check(out: &BurstResult, frames: usize, in_port: u32, n_ports: usize, known: &[u32]) {
    assert_eq!(out.packets.len(), frames, "one result per frame");
    for (i, p) in out.packets.iter().enumerate() {
        let emits = out.emits_of(i);
        assert_eq!(emits.len(), p.emit_len as usize);
        assert!(
            emits.is_empty() != p.drop.is_none(),
            "packet {i}: must either be emitted or carry a drop reason: {p:?} emits {emits:?}"
        );
        assert!(
            emits.len() <= n_ports,
            "packet {i}: {} copies for {n_ports} ports",
            emits.len()
        );
        for (j, e) in emits.iter().enumerate() {
            assert_ne!(
                e.port, in_port,
                "packet {i}: sent back to its input port: {e:?}"
            );
            assert!(
                known.contains(&e.port),
                "packet {i}: unknown output port {e:?}"
            );
            assert!(
                !emits[..j].iter().any(|x| x.port == e.port),
                "packet {i}: two copies to port {}: {emits:?}",
                e.port
            );
            if let VlanEdit::Set(v) = e.vlan {
                assert!(
                    (1..=4094).contains(&v),
                    "packet {i}: tagged with VLAN {v}: {e:?}"
                );
            }
        }
    }
}

/// Advances the fuzzing clock by 1 ms per call (so meters refill and nothing expires too soon).
pub fn tick() -> u64 {
    fixture().now.fetch_add(1_000_000, Ordering::Relaxed)
}

/// A valid installation of the controller, as the objects an operator creates: DVS `prod`
/// (VLANs 100–199), hosts `a` and `b` with an uplink group each, port groups `web` (access 100)
/// and `trunk` (100, 150–160), security groups `web` and `db` (db admits tcp/5432 from web's
/// members), and ports on both hosts. `dvs_objects` applies its transactions to it.
pub const CLUSTER_JSON: &str = r#"[
  { "kind": "dvs", "name": "prod", "vlans": ["100-199"] },
  { "kind": "host", "name": "a" },
  { "kind": "host", "name": "b", "vhost_dir": "/run/evs/b" },
  { "kind": "security-group", "name": "web", "rules": [ { "direction": "egress" },
      { "direction": "ingress", "protocol": "tcp", "port_min": 80, "port_max": 80 } ] },
  { "kind": "security-group", "name": "db", "rules": [ { "direction": "egress" },
      { "direction": "ingress", "protocol": "tcp", "port_min": 5432, "port_max": 5432,
        "remote": { "group": "web" } } ] },
  { "kind": "port-group", "dvs": "prod", "name": "web", "type": "access", "vlan": 100,
    "dhcp_isolation": true, "ip_mac_binding": true },
  { "kind": "port-group", "dvs": "prod", "name": "trunk", "type": "trunk",
    "vlans": ["100", "150-160"], "native_vlan": 150 },
  { "kind": "uplink", "name": "up", "dvs": "prod", "host": "a",
    "members": ["net_af_packet0,iface=a-up"] },
  { "kind": "uplink", "name": "up", "dvs": "prod", "host": "b",
    "members": ["net_af_packet0,iface=b-up"], "bond_mode": "balance-slb" },
  { "kind": "port", "dvs": "prod", "name": "web1", "mac": "02:00:00:00:00:01",
    "ips": ["10.0.0.1"], "port_group": "web", "security_group": "web", "host": "a" },
  { "kind": "port", "dvs": "prod", "name": "web2", "mac": "02:00:00:00:00:02",
    "ips": ["10.0.0.2"], "port_group": "web", "security_group": "web", "host": "b" },
  { "kind": "port", "dvs": "prod", "name": "db1", "mac": "02:00:00:00:00:03",
    "ips": ["10.0.0.3", "2001:db8::3"], "port_group": "web", "security_group": "db", "host": "b",
    "vhost": { "socket": "/tmp/db1.sock", "role": "client" } },
  { "kind": "port", "dvs": "prod", "name": "rtr", "mac": "02:00:00:00:00:04",
    "port_group": "trunk", "host": "a", "ethdev": { "devargs": "net_af_packet1,iface=rtr" } },
  { "kind": "port", "dvs": "prod", "name": "spare", "mac": "02:00:00:00:00:05",
    "port_group": "web" }
]"#;

/// [`CLUSTER_JSON`] as a cluster (valid: checked by the seed example and by `dvs_objects`).
pub fn cluster() -> model::Cluster {
    let objects: Vec<model::Object> =
        serde_json::from_str(CLUSTER_JSON).expect("fuzz cluster parses");
    let mut c = model::Cluster::default();
    for o in objects {
        c.insert(o);
    }
    c
}

/// A rejection must say what is wrong: a non-empty message (`what` names the input).
pub fn check_message(what: &str, msg: &str) {
    assert!(!msg.trim().is_empty(), "{what}: rejected with an empty message");
}

/// A model the validation accepts must compile into a switch, and one it refuses must be refused
/// by the compiler too, with a message; returns the switch of an accepted model.
pub fn check_compiles(cfg: SwitchConfig, m: &Model) -> Option<Switch> {
    let valid = m.validate();
    match Switch::new(cfg, m.clone()) {
        Ok(sw) => {
            assert!(valid.is_ok(), "the switch compiled a model validate refuses: {valid:?}");
            Some(sw)
        }
        Err(e) => {
            let v = valid.expect_err("validate accepts a model the switch refuses");
            assert_eq!(v.to_string(), e.to_string());
            check_message("model", &e.to_string());
            None
        }
    }
}

/// A model written out (as `evsd ctl show model` and the state file do) reads back the same.
pub fn check_round_trip(m: &Model) {
    let text = serde_json::to_string(m).expect("a model serializes");
    let back: Model = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("a serialized model does not parse back: {e}: {text}"));
    assert_eq!(&back, m, "model changed through serialization: {text}");
}

/// Small tables, so that building a switch per input stays cheap.
pub fn small_config() -> SwitchConfig {
    SwitchConfig {
        mac_capacity: 256,
        ct_max_entries: 256,
        emc_entries: 64,
        megaflow_entries: 64,
        ..SwitchConfig::default()
    }
}
