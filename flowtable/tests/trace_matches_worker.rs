//! A trace must tell what forwarding does. For random models (access and trunk groups with their
//! options, security groups with rules and remote groups, an uplink) and random traffic (IPv4,
//! IPv6, ARP, TCP connections, broadcasts, garbage), each frame is first traced and then forwarded
//! from the same state; the trace's verdict (the ports it delivers to with their VLAN edits, or its
//! drop reason) must be what `Worker::process_burst` does. Forwarding then moves the state on (MACs
//! learned, connections committed), so later frames are traced against learned MACs and
//! established connections.
//!
//! The one designed difference is that a trace changes nothing: it learns no MAC, commits no
//! connection and charges no meter. The test keeps clear of what only those effects could change
//! within one frame: a frame whose source MAC is its own unicast destination (forwarding learns
//! the source before it looks the destination up) is forwarded but not compared; meters never run
//! dry (rates far above the test's traffic), nor do the MAC limit and the connection table.

use flowtable::frames::{self, L4};
use flowtable::switch::{Switch, SwitchConfig};
use flowtable::verdict::{BurstResult, DropReason, VlanEdit};
use model::{
    Cidr, Direction, EtherType, Mac, Model, Port, PortGroup, Priority, Protocol, Remote,
    SecurityGroup, SgRule, Shaping, Uplink, VlanRange,
};
use proptest::prelude::*;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

const VLANS: [u16; 3] = [10, 20, 30];

#[derive(Debug, Clone)]
struct GroupSpec {
    trunk: bool,
    /// Bit i: VLANS[i] (trunks; at least one is set).
    vlans: u8,
    /// Index into VLANS (the access VLAN, or a trunk's native VLAN when `native` is set).
    vlan: usize,
    native: bool,
    dhcp_isolation: bool,
    ip_mac_binding: bool,
    tcp_checksum_fill: bool,
    shaping: bool,
}

#[derive(Debug, Clone)]
enum RemoteSpec {
    Any,
    /// 10.0.0.0/30 or 2001:db8::/126: some ports are in it, some are not.
    Cidr,
    Group(usize),
}

#[derive(Debug, Clone)]
struct RuleSpec {
    ingress: bool,
    v6: bool,
    /// 0 any, 1 tcp, 2 udp, 3 icmp.
    proto: u8,
    ports: Option<(u16, u16)>,
    icmp_type: Option<u8>,
    remote: RemoteSpec,
}

#[derive(Debug, Clone)]
struct PortSpec {
    group: usize,
    sg: Option<usize>,
    v6: bool,
}

#[derive(Debug, Clone)]
struct ModelSpec {
    groups: Vec<GroupSpec>,
    sgs: Vec<Vec<RuleSpec>>,
    ports: Vec<PortSpec>,
    /// None: no uplink; Some(0): it carries every VLAN in use; else a VLANS bit set.
    uplink: Option<u8>,
}

fn group() -> impl Strategy<Value = GroupSpec> {
    (
        any::<bool>(),
        1u8..8,
        0usize..3,
        any::<bool>(),
        (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()),
    )
        .prop_map(
            |(trunk, vlans, vlan, native, (dhcp, binding, csum, shaping))| GroupSpec {
                trunk,
                vlans,
                vlan,
                native,
                dhcp_isolation: dhcp,
                ip_mac_binding: binding,
                tcp_checksum_fill: csum,
                shaping,
            },
        )
}

fn rule() -> impl Strategy<Value = RuleSpec> {
    let remote = prop_oneof![
        3 => Just(RemoteSpec::Any),
        1 => Just(RemoteSpec::Cidr),
        1 => (0usize..3).prop_map(RemoteSpec::Group),
    ];
    let ports = prop_oneof![
        Just(None),
        Just(Some((80, 80))),
        Just(Some((53, 80))),
        Just(Some((1000, 65535))),
    ];
    (
        any::<bool>(),
        prop::bool::weighted(0.2),
        0u8..4,
        ports,
        prop_oneof![Just(None), Just(Some(8u8)), Just(Some(128u8))],
        remote,
    )
        .prop_map(|(ingress, v6, proto, ports, icmp_type, remote)| RuleSpec {
            ingress,
            v6,
            proto,
            // The model takes port ranges for TCP/UDP only, ICMP types for ICMP only.
            ports: ports.filter(|_| proto == 1 || proto == 2),
            icmp_type: icmp_type.filter(|_| proto == 3),
            remote,
        })
}

fn model_spec() -> impl Strategy<Value = ModelSpec> {
    (
        prop::collection::vec(group(), 1..4),
        prop::collection::vec(
            (
                prop::collection::vec(rule(), 0..5),
                any::<bool>(),
                any::<bool>(),
            )
                .prop_map(|(mut rules, out, inn)| {
                    // Rules that let connections open, so established traffic gets traced too.
                    for (on, ingress) in [(out, false), (inn, true)] {
                        if on {
                            rules.push(RuleSpec {
                                ingress,
                                v6: false,
                                proto: 0,
                                ports: None,
                                icmp_type: None,
                                remote: RemoteSpec::Any,
                            });
                        }
                    }
                    rules
                }),
            0..3,
        ),
        prop::collection::vec((0usize..4, 0usize..4, prop::bool::weighted(0.3)), 2..6),
        prop_oneof![Just(None), Just(Some(0u8)), (1u8..8).prop_map(Some)],
    )
        .prop_map(|(groups, sgs, ports, uplink)| {
            let ports = ports
                .into_iter()
                .map(|(g, s, v6)| PortSpec {
                    group: g % groups.len(),
                    // Index len (or more) means no security group.
                    sg: (s < sgs.len()).then_some(s),
                    v6,
                })
                .collect();
            ModelSpec {
                groups,
                sgs,
                ports,
                uplink,
            }
        })
}

fn vlan_ranges(bits: u8) -> Vec<VlanRange> {
    (0..3)
        .filter(|i| bits & (1 << i) != 0)
        .map(|i| VlanRange {
            first: VLANS[i],
            last: VLANS[i],
        })
        .collect()
}

fn port_name(i: usize) -> String {
    format!("vm{i}")
}
fn mac(n: u8) -> Mac {
    Mac([2, 0, 0, 0, 0, n])
}
fn ip4(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 0, n)
}
fn ip6(n: u8) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, n as u16)
}

fn build(s: &ModelSpec) -> Model {
    let mut m = Model::default();
    for (i, g) in s.groups.iter().enumerate() {
        let name = format!("pg{i}");
        let mut pg = if g.trunk {
            PortGroup::trunk(
                &name,
                vlan_ranges(g.vlans),
                g.native.then_some(VLANS[g.vlan]),
            )
        } else {
            PortGroup::access(&name, VLANS[g.vlan])
        };
        pg.dhcp_isolation = g.dhcp_isolation;
        pg.ip_mac_binding = g.ip_mac_binding;
        pg.tcp_checksum_fill = g.tcp_checksum_fill;
        // Far above what the test sends: a meter never runs dry (a trace does not charge it).
        pg.shaping = g.shaping.then_some(Shaping {
            average_mbps: 10_000.0,
            peak_mbps: Some(20_000.0),
            burst_mbit: 100.0,
            priority: Priority::High,
        });
        m.port_groups.push(pg);
    }
    for (i, rules) in s.sgs.iter().enumerate() {
        let rules = rules
            .iter()
            .map(|r| {
                let ethertype = if r.v6 {
                    EtherType::IPv6
                } else {
                    EtherType::IPv4
                };
                SgRule {
                    direction: if r.ingress {
                        Direction::Ingress
                    } else {
                        Direction::Egress
                    },
                    ethertype,
                    protocol: [Protocol::Any, Protocol::Tcp, Protocol::Udp, Protocol::Icmp]
                        [r.proto as usize],
                    port_min: r.ports.map(|p| p.0),
                    port_max: r.ports.map(|p| p.1),
                    icmp_type: r.icmp_type,
                    icmp_code: None,
                    remote: match r.remote {
                        RemoteSpec::Any => None,
                        RemoteSpec::Cidr if r.v6 => Some(Remote::Cidr(Cidr {
                            addr: IpAddr::V6(ip6(0)),
                            len: 126,
                        })),
                        RemoteSpec::Cidr => Some(Remote::Cidr(Cidr {
                            addr: IpAddr::V4(ip4(0)),
                            len: 30,
                        })),
                        RemoteSpec::Group(g) => {
                            Some(Remote::Group(format!("sg{}", g % s.sgs.len())))
                        }
                    },
                }
            })
            .collect();
        m.security_groups.push(SecurityGroup {
            name: format!("sg{i}"),
            rules,
            allow_router_advertisements: false,
        });
    }
    for (i, p) in s.ports.iter().enumerate() {
        let n = i as u8 + 1;
        let mut ips = vec![IpAddr::V4(ip4(n))];
        if p.v6 {
            ips.push(IpAddr::V6(ip6(n)));
        }
        m.ports.push(Port {
            storm_control: None,
            name: port_name(i),
            mac: mac(n),
            ips,
            port_group: format!("pg{}", p.group),
            security_group: p.sg.map(|g| format!("sg{g}")),
        });
    }
    if let Some(bits) = s.uplink {
        m.uplinks.push(Uplink {
            storm_control: None,
            name: "uplink".into(),
            vlans: vlan_ranges(bits),
        });
    }
    m
}

#[derive(Debug, Clone)]
enum Payload {
    Udp(u16, u16),
    Tcp(u16, u16, u8),
    Echo(u16, bool),
    Arp(u16),
}

#[derive(Debug, Clone, Copy)]
enum Tag {
    /// What the input port expects: untagged on access ports and native VLANs, else tagged with
    /// one of its VLANs.
    Auto,
    Untagged,
    Vlan(u16),
}

#[derive(Debug, Clone)]
enum FrameSpec {
    Built {
        /// MAC/IP host number: 1..=6 are (or may be) ports, 7 is unknown, 0 is broadcast.
        src: u8,
        dst: u8,
        vlan: Tag,
        v6: bool,
        payload: Payload,
        /// Cut the frame to this many bytes (a truncated frame).
        cut: Option<usize>,
    },
    Bytes(Vec<u8>),
}

fn frame_spec() -> impl Strategy<Value = FrameSpec> {
    let port = prop_oneof![
        Just(53u16),
        Just(67),
        Just(68),
        Just(80),
        Just(546),
        Just(547),
        Just(5000)
    ];
    let flags = prop_oneof![
        4 => Just(frames::SYN),
        1 => Just(frames::SYN | frames::ACK),
        1 => Just(frames::ACK),
        1 => Just(frames::FIN | frames::ACK),
        1 => Just(frames::RST),
    ];
    let payload = prop_oneof![
        3 => (port.clone(), port.clone()).prop_map(|(a, b)| Payload::Udp(a, b)),
        4 => (port.clone(), port, flags).prop_map(|(a, b, f)| Payload::Tcp(a, b, f)),
        1 => (0u16..3, any::<bool>()).prop_map(|(id, r)| Payload::Echo(id, r)),
        1 => (1u16..3).prop_map(Payload::Arp),
    ];
    let vlan = prop_oneof![
        8 => Just(Tag::Auto),
        2 => Just(Tag::Untagged),
        1 => Just(Tag::Vlan(10)),
        1 => Just(Tag::Vlan(20)),
        1 => Just(Tag::Vlan(30)),
        1 => Just(Tag::Vlan(40)),
    ];
    prop_oneof![
        20 => (0u8..8, 0u8..8, vlan, prop::bool::weighted(0.2), payload,
               prop_oneof![9 => Just(None), 1 => (0usize..60).prop_map(Some)])
            .prop_map(|(src, dst, vlan, v6, payload, cut)| FrameSpec::Built {
                src, dst, vlan, v6, payload, cut
            }),
        1 => prop::collection::vec(any::<u8>(), 0..80).prop_map(FrameSpec::Bytes),
    ]
}

impl FrameSpec {
    /// The frame; `auto` is the tag [`Tag::Auto`] stands for.
    fn bytes(&self, auto: Option<u16>) -> Vec<u8> {
        let (src, dst, vlan, v6, payload, cut) = match self {
            FrameSpec::Bytes(b) => return b.clone(),
            FrameSpec::Built {
                src,
                dst,
                vlan,
                v6,
                payload,
                cut,
            } => (*src, *dst, *vlan, *v6, payload, *cut),
        };
        let m = |n: u8| if n == 0 { Mac::BROADCAST } else { mac(n) };
        let vlan = match vlan {
            Tag::Auto => auto,
            Tag::Untagged => None,
            Tag::Vlan(v) => Some(v),
        };
        let ip = |l4: L4| {
            if v6 {
                frames::ipv6(m(src), m(dst), vlan, ip6(src), ip6(dst), l4, 4)
            } else {
                frames::ipv4(m(src), m(dst), vlan, ip4(src), ip4(dst), l4, 4)
            }
        };
        let mut f = match *payload {
            Payload::Udp(src, dst) => ip(L4::Udp { src, dst }),
            Payload::Tcp(src, dst, flags) => ip(L4::Tcp { src, dst, flags }),
            Payload::Echo(id, reply) => ip(L4::Echo { id, reply }),
            Payload::Arp(op) => frames::arp(
                m(src),
                m(dst),
                vlan,
                op,
                mac(src),
                ip4(src),
                m(dst),
                ip4(dst),
            ),
        };
        if let Some(n) = cut {
            f.truncate(n);
        }
        f
    }

    /// Forwarding learns the source before it looks up the destination; a trace learns nothing.
    fn to_itself(&self) -> bool {
        let f = self.bytes(None);
        f.len() >= 12 && f[0..6] == f[6..12] && f[0] & 1 == 0
    }
}

/// One step of the traffic.
#[derive(Debug, Clone)]
enum Traffic {
    /// A frame in on port `port`, or (None) on the port whose MAC is the frame's source.
    Send {
        port: Option<usize>,
        frame: FrameSpec,
    },
    /// The answer to the frame sent `back` steps earlier: addresses and L4 ports swapped, sent
    /// by its destination, with TCP flags `flags` (so connections get established).
    Reply { back: usize, flags: u8 },
}

fn traffic() -> impl Strategy<Value = Traffic> {
    let flags = prop_oneof![
        Just(frames::SYN | frames::ACK),
        Just(frames::ACK),
        Just(frames::FIN | frames::ACK),
    ];
    prop_oneof![
        3 => (prop_oneof![2 => Just(None), 1 => (0usize..8).prop_map(Some)], frame_spec())
            .prop_map(|(port, frame)| Traffic::Send { port, frame }),
        2 => (1usize..4, flags).prop_map(|(back, flags)| Traffic::Reply { back, flags }),
    ]
}

/// The frames of `steps`, each with its input port (an index into the ports then the uplink).
fn resolve(steps: &[Traffic], n_ports: usize) -> Vec<(usize, FrameSpec)> {
    let n = n_ports.max(1);
    let own = |f: &FrameSpec, fallback: usize| match f {
        FrameSpec::Built { src, .. } if (1..=n_ports as u8).contains(src) => *src as usize - 1,
        _ => fallback % n,
    };
    let mut out: Vec<(usize, FrameSpec)> = vec![];
    for (i, s) in steps.iter().enumerate() {
        let next = match s {
            Traffic::Send {
                port: Some(p),
                frame,
            } => (*p % n, frame.clone()),
            Traffic::Send { port: None, frame } => (own(frame, i), frame.clone()),
            Traffic::Reply { back, flags } => {
                let Some((_, f)) = out.len().checked_sub(*back).map(|j| &out[j]) else {
                    continue;
                };
                let FrameSpec::Built {
                    src,
                    dst,
                    vlan,
                    v6,
                    payload,
                    ..
                } = f.clone()
                else {
                    continue;
                };
                let payload = match payload {
                    Payload::Udp(a, b) => Payload::Udp(b, a),
                    Payload::Tcp(a, b, _) => Payload::Tcp(b, a, *flags),
                    Payload::Echo(id, _) => Payload::Echo(id, true),
                    Payload::Arp(_) => Payload::Arp(2),
                };
                let f = FrameSpec::Built {
                    src: dst,
                    dst: src,
                    vlan,
                    v6,
                    payload,
                    cut: None,
                };
                (own(&f, i), f)
            }
        };
        out.push(next);
    }
    out
}

/// The tag a frame from port `name` carries when it is well-formed for that port.
fn auto_vlan(m: &Model, name: &str) -> Option<u16> {
    if let Some(u) = m.uplinks.iter().find(|u| u.name == name) {
        let first = u.vlans.first().map(|r| r.first);
        return first.or_else(|| {
            m.port_groups
                .iter()
                .find_map(|g| g.vlan.or(g.vlans.first().map(|r| r.first)))
        });
    }
    let p = m.ports.iter().find(|p| p.name == name)?;
    let g = m.port_group(&p.port_group)?;
    match g.mode() {
        model::PortMode::Access { .. } => None,
        model::PortMode::Trunk {
            native_vlan: Some(_),
            ..
        } => None,
        model::PortMode::Trunk { vlans, .. } => vlans.first().map(|r| r.first),
    }
}

type Outcome = Result<Vec<(u32, VlanEdit)>, DropReason>;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn trace_verdict_is_what_forwarding_does(
        spec in model_spec(),
        steps in prop::collection::vec(traffic(), 1..60),
    ) {
        let model = build(&spec);
        prop_assume!(model.validate().is_ok());
        let sw = Switch::new(SwitchConfig::default(), model.clone()).unwrap();
        let mut names: Vec<String> = model.ports.iter().map(|p| p.name.clone()).collect();
        names.extend(model.uplinks.iter().map(|u| u.name.clone()));
        let mut w = sw.worker();
        let mut out = BurstResult::default();
        let mut now = 1_000_000_000u64;
        for (i, (port, f)) in resolve(&steps, model.ports.len()).iter().enumerate() {
            now += 1_000;
            let name = &names[port % names.len()];
            let id = sw.port_id(name).unwrap();
            let bytes = f.bytes(auto_vlan(&model, name));
            let t = sw.trace(name, &bytes, now).unwrap();
            w.process_burst(id, &[&bytes], now, &mut out);
            if f.to_itself() {
                continue;
            }
            let forwarded: Outcome = match out.packets[0].drop {
                Some(r) => Err(r),
                None => {
                    let mut v: Vec<_> = out.emits_of(0).iter().map(|e| (e.port, e.vlan)).collect();
                    v.sort_by_key(|e| e.0);
                    Ok(v)
                }
            };
            let traced: Outcome = match t.drop {
                Some(r) => Err(r),
                None => {
                    let mut v: Vec<_> = t
                        .emits
                        .iter()
                        .map(|e| (sw.port_id(&e.port).unwrap(), e.vlan))
                        .collect();
                    v.sort_by_key(|e| e.0);
                    Ok(v)
                }
            };
            prop_assert_eq!(&traced, &forwarded, "frame {} on {}: {:?}\n{}", i, name, f, t);
        }
    }
}
