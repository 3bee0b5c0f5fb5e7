use super::*;
use crate::classifier::{Action, Match};
use crate::key::FlowKey;
use model::{
    Direction, EtherType, PortGroup, Protocol, Remote, SecurityGroup, SgRule, Shaping, Uplink,
};
use proptest::prelude::*;
use std::net::{IpAddr, Ipv4Addr};

/// One rule as the snapshot compares it: id, priority, match, actions, note.
type RuleView = (u64, u32, Match, Vec<Action>, String);

fn snapshot(c: &Compiler) -> Vec<Vec<RuleView>> {
    c.pipeline
        .tables
        .iter()
        .map(|t| {
            t.rules()
                .map(|r| {
                    (
                        r.id,
                        r.priority,
                        r.m,
                        r.actions.to_vec(),
                        r.note.to_string(),
                    )
                })
                .collect()
        })
        .collect()
}

fn base() -> Model {
    let mut m = Model::default();
    m.uplinks.push(Uplink {
        storm_control: None,
        name: "up".into(),
        vlans: vec![],
    });
    m.port_groups.push(PortGroup::access("a100", 100));
    m.port_groups.push(PortGroup {
        dhcp_isolation: true,
        ip_mac_binding: true,
        ..PortGroup::access("b200", 200)
    });
    m.port_groups.push(PortGroup::trunk(
        "t",
        vec!["100-110".parse().unwrap()],
        Some(300),
    ));
    m.security_groups
        .push(SecurityGroup::default_group("default"));
    m.security_groups.push(SecurityGroup {
        name: "web".into(),
        rules: vec![],
        allow_router_advertisements: false,
    });
    m
}

#[derive(Debug, Clone)]
enum ModelOp {
    AddPort {
        n: u8,
        pg: u8,
        sg: u8,
    },
    RemovePort(u8),
    MovePort {
        n: u8,
        pg: u8,
    },
    SetSg {
        n: u8,
        sg: u8,
    },
    AddRule {
        port: u16,
        remote_group: bool,
        ingress: bool,
    },
    RemoveRule(u8),
    SetVlan(u16),
    Shape(u8),
    TogglePg(u8),
}

fn op() -> impl Strategy<Value = ModelOp> {
    prop_oneof![
        (0u8..6, 0u8..3, 0u8..3).prop_map(|(n, pg, sg)| ModelOp::AddPort { n, pg, sg }),
        (0u8..6).prop_map(ModelOp::RemovePort),
        (0u8..6, 0u8..3).prop_map(|(n, pg)| ModelOp::MovePort { n, pg }),
        (0u8..6, 0u8..3).prop_map(|(n, sg)| ModelOp::SetSg { n, sg }),
        (1u16..2000, any::<bool>(), any::<bool>()).prop_map(|(port, remote_group, ingress)| {
            ModelOp::AddRule {
                port,
                remote_group,
                ingress,
            }
        }),
        (0u8..4).prop_map(ModelOp::RemoveRule),
        (1u16..20).prop_map(ModelOp::SetVlan),
        (0u8..3).prop_map(ModelOp::Shape),
        (0u8..3).prop_map(ModelOp::TogglePg),
    ]
}

fn apply_op(m: &mut Model, op: &ModelOp) {
    let pgs = ["a100", "b200", "t"];
    let sg = |i: u8| match i {
        0 => None,
        1 => Some("default".to_string()),
        _ => Some("web".to_string()),
    };
    let name = |n: u8| format!("vm{n}");
    match op {
        ModelOp::AddPort { n, pg, sg: s } => {
            if !m.ports.iter().any(|p| p.name == name(*n)) {
                m.ports.push(Port {
                    storm_control: None,
                    name: name(*n),
                    mac: Mac([2, 0, 0, 0, 1, *n]),
                    ips: vec![IpAddr::V4(Ipv4Addr::new(10, 0, 0, *n + 1))],
                    port_group: pgs[*pg as usize].into(),
                    security_group: sg(*s),
                })
            }
        }
        ModelOp::RemovePort(n) => m.ports.retain(|p| p.name != name(*n)),
        ModelOp::MovePort { n, pg } => m
            .ports
            .iter_mut()
            .filter(|p| p.name == name(*n))
            .for_each(|p| p.port_group = pgs[*pg as usize].into()),
        ModelOp::SetSg { n, sg: s } => m
            .ports
            .iter_mut()
            .filter(|p| p.name == name(*n))
            .for_each(|p| p.security_group = sg(*s)),
        ModelOp::AddRule {
            port,
            remote_group,
            ingress,
        } => m.security_groups[1].rules.push(SgRule {
            direction: if *ingress {
                Direction::Ingress
            } else {
                Direction::Egress
            },
            ethertype: EtherType::IPv4,
            protocol: Protocol::Tcp,
            port_min: Some(*port),
            port_max: Some(*port + 10),
            icmp_type: None,
            icmp_code: None,
            remote: remote_group.then(|| Remote::Group("default".into())),
        }),
        ModelOp::RemoveRule(i) => {
            let rules = &mut m.security_groups[1].rules;
            if (*i as usize) < rules.len() {
                rules.remove(*i as usize);
            }
        }
        ModelOp::SetVlan(v) => m.port_groups[0].vlan = Some(*v),
        ModelOp::Shape(i) => {
            let pg = &mut m.port_groups[*i as usize];
            pg.shaping = match pg.shaping {
                Some(_) => None,
                None => Some(Shaping {
                    average_mbps: 10.0,
                    peak_mbps: None,
                    burst_mbit: 0.0,
                    priority: Default::default(),
                }),
            }
        }
        ModelOp::TogglePg(i) => {
            let pg = &mut m.port_groups[*i as usize];
            pg.ip_mac_binding = !pg.ip_mac_binding;
            pg.tcp_checksum_fill = !pg.tcp_checksum_fill;
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn incremental_equals_from_scratch(ops in proptest::collection::vec(op(), 1..25)) {
        let mut inc = Compiler::new();
        let mut m = base();
        inc.update(&m).unwrap();
        for o in &ops {
            apply_op(&mut m, o);
            inc.update(&m).unwrap();
            let mut scratch = Compiler::with_ids(inc.ids().clone());
            scratch.update(&m).unwrap();
            prop_assert_eq!(snapshot(&inc), snapshot(&scratch));
            prop_assert_eq!(&inc.pipeline.flood, &scratch.pipeline.flood);
            prop_assert_eq!(&inc.pipeline.meters, &scratch.pipeline.meters);
        }
    }
}

/// Keys that look like the switch's traffic: the ports' MACs and IPs, the stages where
/// segments start, tagged or not, TCP/UDP ports near the rules' ranges.
fn traffic_key() -> impl Strategy<Value = FlowKey> {
    (
        (
            0u32..8,
            prop_oneof![Just(0u8), Just(3), Just(5), Just(10), Just(12)],
        ),
        (
            0u8..8,
            0u8..8,
            prop_oneof![Just(None), (1u16..20).prop_map(Some)],
        ),
        (
            prop_oneof![Just(6u8), Just(17), Just(1)],
            0u16..2100,
            0u16..2100,
        ),
        (0u8..64, 0u32..8, 0u32..300),
    )
        .prop_map(
            |((in_port, stage), (src, dst, vlan), (proto, sp, dp), (cts, out, reg0))| {
                let mut k = FlowKey::ZERO;
                k.set_in_port(in_port);
                k.set_stage(stage);
                k.set_eth_src(Mac([2, 0, 0, 0, 1, src]));
                k.set_eth_dst(Mac([2, 0, 0, 0, 1, dst]));
                if let Some(v) = vlan {
                    k.set_vlan_tci(crate::key::VLAN_PRESENT | v);
                }
                k.set_eth_type(crate::key::ETH_TYPE_IPV4);
                k.set_ip_src(u32::from(Ipv4Addr::new(10, 0, 0, src + 1)) as u128);
                k.set_ip_dst(u32::from(Ipv4Addr::new(10, 0, 0, dst + 1)) as u128);
                k.set_ip_proto(proto);
                k.set_tp_src(sp);
                k.set_tp_dst(dp);
                k.set_ct_state(cts);
                k.set_out_port(out);
                k.set_reg0(reg0);
                k
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// On compiled port-group pipelines: any key that agrees with a walked key on the bits
    /// `walk_wc` reported walks to the same segment (megaflow cache entries are exact).
    #[test]
    fn megaflow_wildcards_are_exact(
        ops in proptest::collection::vec(op(), 1..15),
        probes in proptest::collection::vec((traffic_key(), traffic_key()), 1..40),
    ) {
        let mut c = Compiler::new();
        let mut m = base();
        for o in &ops {
            apply_op(&mut m, o);
        }
        c.update(&m).unwrap();
        let pl = &c.pipeline;
        for (k, noise) in probes {
            let mut wc = FlowKey::ZERO;
            let seg = pl.walk_wc(&k, &mut wc);
            prop_assert_eq!(seg, pl.walk(&k, None));
            let mut k2 = k;
            for i in 0..crate::key::KEY_WORDS {
                k2.0[i] = (k.0[i] & wc.0[i]) | (noise.0[i] & !wc.0[i]);
            }
            prop_assert_eq!(pl.walk(&k2, None), seg, "key {:?} wc {:?}", k, wc);
        }
    }
}

#[test]
fn one_port_change_recompiles_one_owner() {
    let mut c = Compiler::new();
    let mut m = base();
    for n in 0..5 {
        apply_op(&mut m, &ModelOp::AddPort { n, pg: 0, sg: 0 });
    }
    c.update(&m).unwrap();
    apply_op(&mut m, &ModelOp::MovePort { n: 3, pg: 1 });
    let r = c.update(&m).unwrap();
    assert_eq!(r.owners_recompiled, 1, "{r:?}");
    // Unchanged model: nothing recompiled, nothing touched.
    let r = c.update(&m).unwrap();
    assert_eq!(
        (r.owners_recompiled, r.rules_added, r.rules_removed),
        (0, 0, 0)
    );
    // A rule in a group used by nobody changes nothing in the tables.
    apply_op(
        &mut m,
        &ModelOp::AddRule {
            port: 80,
            remote_group: false,
            ingress: true,
        },
    );
    let r = c.update(&m).unwrap();
    assert_eq!(r.rules_added + r.rules_removed, 0, "{r:?}");
}

#[test]
fn invalid_model_changes_nothing() {
    let mut c = Compiler::new();
    let m = base();
    c.update(&m).unwrap();
    let before = snapshot(&c);
    let mut bad = m.clone();
    bad.port_groups[0].vlan = Some(0);
    assert!(c.update(&bad).is_err());
    assert_eq!(snapshot(&c), before);
    assert_eq!(c.model(), &m);
}

#[test]
fn resuming_continues_the_generation_and_keeps_ids() {
    let mut c = Compiler::new();
    let mut m = base();
    for n in 0..4 {
        apply_op(&mut m, &ModelOp::AddPort { n, pg: 0, sg: 0 });
    }
    c.update(&m).unwrap();
    // A removal leaves a hole a compilation from scratch would fill differently.
    m.ports.remove(1);
    c.update(&m).unwrap();
    c.update(&m).unwrap();
    let mut r = Compiler::resuming(c.ids().clone(), c.pipeline.version);
    r.update(&m).unwrap();
    assert_eq!(r.pipeline.version, c.pipeline.version);
    assert_eq!(r.ids(), c.ids());
    assert_eq!(snapshot(&r), snapshot(&c));
    r.update(&m).unwrap();
    assert_eq!(r.pipeline.version, c.pipeline.version + 1);
}
