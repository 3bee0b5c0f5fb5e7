//! Shared helpers for the benchmarks: models (built through the real policy types, so the tables
//! are what `evsd` would compile), frame generators and a small driver around a [`Worker`].

#![forbid(unsafe_code)]

use flowtable::frames::{self, L4};
use flowtable::switch::{Switch, SwitchConfig};
use flowtable::verdict::{BurstResult, DropReason};
use flowtable::worker::Worker;
use model::Mac;
use model::*;
use std::net::{IpAddr, Ipv4Addr};

/// Frames per burst, as a DPDK `rx_burst` would hand them over.
pub const BURST: usize = 32;

/// A locally administered unicast MAC for guest number `n`.
pub fn mac(n: u32) -> Mac {
    let b = n.to_be_bytes();
    Mac([0x02, 0x00, b[0], b[1], b[2], b[3]])
}

/// The address of guest number `n` (10.0.0.0/8).
pub fn guest_ip(n: u32) -> Ipv4Addr {
    Ipv4Addr::from(0x0a00_0000 | (n & 0x00ff_ffff))
}

fn port(n: u32, group: &str, sg: Option<&str>) -> Port {
    Port {
        storm_control: None,
        name: format!("vm{n}"),
        mac: mac(n),
        ips: vec![IpAddr::V4(guest_ip(n))],
        port_group: group.into(),
        security_group: sg.map(str::to_string),
    }
}

/// One uplink and `n_ports` access ports (≥ 2) spread over ten access groups (VLANs 100–109); no
/// security group. Ports `vm0` (sender) and `vm1` (receiver) are both in VLAN 100. Every port
/// compiles to 7 rules, so the table size grows linearly with `n_ports`.
pub fn ports_model(n_ports: usize) -> Model {
    assert!(n_ports >= 2);
    let groups: Vec<PortGroup> = (0..10)
        .map(|i| PortGroup::access(&format!("pg{i}"), 100 + i))
        .collect();
    let ports = (0..n_ports as u32)
        .map(|n| {
            let g = if n < 2 { 0 } else { n % 10 };
            port(n, &format!("pg{g}"), None)
        })
        .collect();
    Model {
        uplinks: vec![Uplink {
            storm_control: None,
            name: "uplink0".into(),
            vlans: vec![],
        }],
        port_groups: groups,
        security_groups: vec![],
        ports,
        remote_members: vec![],
    }
}

/// The number of ports [`ports_model`] needs for about `rules` rules in total.
pub fn ports_for_rules(rules: usize) -> usize {
    ((rules.saturating_sub(9)) / 7).max(2)
}

/// `n` ingress rules, all different, none allowing UDP 53 or TCP 80: TCP port ranges (which expand
/// into several prefixes), single UDP ports with remote /24s, TCP single ports from remote /16s.
/// Variants 0 and 1 share no rule.
pub fn filler_sg_rules(n: usize, variant: u16) -> Vec<SgRule> {
    let base = SgRule {
        direction: Direction::Ingress,
        ethertype: EtherType::IPv4,
        protocol: Protocol::Tcp,
        port_min: None,
        port_max: None,
        icmp_type: None,
        icmp_code: None,
        remote: None,
    };
    (0..n)
        .map(|i| {
            // variant 0: ports 1024..31024, variant 1: 33000..63000 (for n ≤ 10 000)
            let p = if variant.is_multiple_of(2) {
                1024
            } else {
                33000
            } + 3 * (i as u16 % 10_000);
            match i % 3 {
                // a 2-port range: [p, p+1] (1 or 2 prefixes)
                0 => SgRule {
                    port_min: Some(p),
                    port_max: Some(p.saturating_add(1)),
                    ..base.clone()
                },
                1 => SgRule {
                    protocol: Protocol::Udp,
                    port_min: Some(p),
                    port_max: Some(p),
                    remote: Some(Remote::Cidr(Cidr {
                        addr: IpAddr::V4(Ipv4Addr::new(
                            172,
                            16 + (i % 16) as u8,
                            (i / 16) as u8,
                            0,
                        )),
                        len: 24,
                    })),
                    ..base.clone()
                },
                _ => SgRule {
                    port_min: Some(p),
                    port_max: Some(p),
                    remote: Some(Remote::Cidr(Cidr {
                        addr: IpAddr::V4(Ipv4Addr::new(192, (i % 256) as u8, 0, 0)),
                        len: 16,
                    })),
                    ..base.clone()
                },
            }
        })
        .collect()
}

/// A client/server model: `vm0` (client, no security group) and `vm1` (server, security group
/// `srv`) in VLAN 100, and an uplink. Group `srv` allows every egress, ingress TCP 80 and UDP 53,
/// plus `filler` other ingress rules ([`filler_sg_rules`] of `variant`).
pub fn sg_model(filler: usize, variant: u16) -> Model {
    let mut sg = SecurityGroup::default_group("srv");
    let allow = |protocol, p| SgRule {
        direction: Direction::Ingress,
        ethertype: EtherType::IPv4,
        protocol,
        port_min: Some(p),
        port_max: Some(p),
        icmp_type: None,
        icmp_code: None,
        remote: None,
    };
    sg.rules.push(allow(Protocol::Tcp, 80));
    sg.rules.push(allow(Protocol::Udp, 53));
    sg.rules.extend(filler_sg_rules(filler, variant));
    Model {
        uplinks: vec![Uplink {
            storm_control: None,
            name: "uplink0".into(),
            vlans: vec![],
        }],
        port_groups: vec![PortGroup::access("pg0", 100)],
        security_groups: vec![sg],
        ports: vec![port(0, "pg0", None), port(1, "pg0", Some("srv"))],
        remote_members: vec![],
    }
}

/// Total rules over all tables, and the per-table counts as `name=count` for the non-empty ones.
pub fn table_sizes(sw: &Switch) -> (usize, String) {
    let pl = sw.pipeline();
    let mut total = 0;
    let mut parts = vec![];
    for (i, t) in pl.tables.iter().enumerate() {
        total += t.len();
        if !t.is_empty() {
            let name = pl.table_names.get(i).copied().unwrap_or("?");
            parts.push(format!("{name}={}/{}m", t.len(), t.subtable_count()));
        }
    }
    (total, parts.join(" "))
}

/// UDP frame number `i` from guest `from` to guest `to` (VLAN-untagged): flows differ by source
/// address and both ports, so any `i < 2^24` gives a distinct 5-tuple.
pub fn udp_frame(from: u32, to: u32, i: u32, dport: u16) -> Vec<u8> {
    frames::ipv4(
        mac(from),
        mac(to),
        None,
        Ipv4Addr::from(0x0a00_0000 | (from & 0xff) << 16 | (i >> 12) & 0xffff),
        guest_ip(to),
        L4::Udp {
            src: 1024 + (i & 0xfff) as u16,
            dst: dport,
        },
        18,
    )
}

/// TCP segment of connection `i` (client `from` → server `to` port 80), or its reply.
pub fn tcp_frame(from: u32, to: u32, i: u32, reply: bool, flags: u8) -> Vec<u8> {
    let cip = Ipv4Addr::from(0x0a00_0000 | (from & 0xff) << 16 | (i >> 14) & 0xffff);
    let cport = 1024 + (i & 0x3fff) as u16;
    if reply {
        frames::ipv4(
            mac(to),
            mac(from),
            None,
            guest_ip(to),
            cip,
            L4::Tcp {
                src: 80,
                dst: cport,
                flags,
            },
            0,
        )
    } else {
        frames::ipv4(
            mac(from),
            mac(to),
            None,
            cip,
            guest_ip(to),
            L4::Tcp {
                src: cport,
                dst: 80,
                flags,
            },
            0,
        )
    }
}

/// Bursts of [`BURST`] frames cycling through `frames` (so `n` flows give `ceil(n/32)` bursts).
pub fn bursts(frames: &[Vec<u8>]) -> Vec<Vec<&[u8]>> {
    let n = frames.len().div_ceil(BURST).max(1);
    (0..n)
        .map(|b| {
            (0..BURST)
                .map(|j| frames[(b * BURST + j) % frames.len()].as_slice())
                .collect()
        })
        .collect()
}

/// A switch and one worker, with a monotonic clock that advances 1 µs per burst.
pub struct Driver {
    pub sw: Switch,
    pub w: Worker,
    pub out: BurstResult,
    pub now: u64,
}

impl Driver {
    pub fn new(cfg: SwitchConfig, model: Model) -> Driver {
        let sw = Switch::new(cfg, model).expect("model is valid");
        let w = sw.worker();
        Driver {
            sw,
            w,
            out: BurstResult::with_capacity(BURST),
            now: 1_000_000_000,
        }
    }
    pub fn id(&self, name: &str) -> u32 {
        self.sw.port_id(name).expect("port exists")
    }
    #[inline]
    pub fn burst(&mut self, in_port: u32, frames: &[&[u8]]) {
        self.now += 1_000;
        self.w
            .process_burst(in_port, frames, self.now, &mut self.out);
    }
    /// Sends `frames` (in bursts) and panics unless every one was delivered to exactly one port.
    pub fn expect_delivered(&mut self, in_port: u32, frames: &[Vec<u8>]) {
        for chunk in frames.chunks(BURST) {
            let refs: Vec<&[u8]> = chunk.iter().map(|f| f.as_slice()).collect();
            self.burst(in_port, &refs);
            self.check_delivered();
        }
    }
    pub fn check_delivered(&self) {
        for (i, p) in self.out.packets.iter().enumerate() {
            assert_eq!(
                (p.drop, p.emit_len),
                (None, 1),
                "packet {i} was not delivered to exactly one port"
            );
        }
    }
    pub fn drops(&self) -> Vec<Option<DropReason>> {
        self.out.packets.iter().map(|p| p.drop).collect()
    }
}
