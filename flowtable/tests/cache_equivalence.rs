//! The per-thread caches (exact-match entries with their chains of follow-on segments, and the
//! megaflow cache) must never change a decision. Two switches with the same model see the same
//! random traffic: one with the normal caches, one whose exact-match cache is tiny (so entries
//! and chains are evicted all the time) and whose megaflow cache is off. Every packet must get the
//! same copies, tags and drop reasons from both, through MAC learning and moves, TCP connections
//! opening and closing through stateful security groups, floods, and a rule change in the middle.

use flowtable::frames::{self, ACK, FIN, L4, RST, SYN};
use flowtable::switch::{Switch, SwitchConfig};
use flowtable::verdict::{BurstResult, DropReason, VlanEdit};
use flowtable::worker::Worker;
use model::Mac;
use model::Model;
use proptest::prelude::*;
use std::net::Ipv4Addr;

const MODEL: &str = r#"
[[uplinks]]
name = "uplink0"

[[port_groups]]
name = "web"
type = "access"
vlan = 100

[[port_groups]]
name = "router"
type = "trunk"
vlans = ["100", "200"]

[[security_groups]]
name = "websg"
rules = [
  { direction = "egress" },
  { direction = "ingress", protocol = "tcp", port_min = 80, port_max = 81 },
]

[[ports]]
name = "vm1"
mac = "02:00:00:00:00:01"
port_group = "web"
security_group = "websg"

[[ports]]
name = "vm2"
mac = "02:00:00:00:00:02"
port_group = "web"

[[ports]]
name = "vm3"
mac = "02:00:00:00:00:03"
port_group = "web"
security_group = "websg"

[[ports]]
name = "rtr"
mac = "02:00:00:00:00:05"
port_group = "router"
"#;

const PORTS: [&str; 5] = ["vm1", "vm2", "vm3", "rtr", "uplink0"];

#[derive(Debug, Clone)]
enum Step {
    /// A frame in on port `port` from MAC/IP `src` to `dst` (5: broadcast).
    Frame {
        port: usize,
        src: u8,
        dst: u8,
        tcp: Option<(u16, u16, u8)>,
    },
    /// Flip the TCP 80-81 ingress rule of `websg` (remove it, or put it back).
    ToggleRule,
}

fn step() -> impl Strategy<Value = Step> {
    let flags = prop_oneof![
        Just(SYN),
        Just(SYN | ACK),
        Just(ACK),
        Just(FIN | ACK),
        Just(RST)
    ];
    let tcp = prop_oneof![
        1 => Just(None),
        4 => (prop_oneof![Just(80u16), Just(81), Just(5000)],
              prop_oneof![Just(80u16), Just(81), Just(5000)], flags)
            .prop_map(Some),
    ];
    prop_oneof![
        30 => (0usize..5, 1u8..5, 1u8..6, tcp)
            .prop_map(|(port, src, dst, tcp)| Step::Frame { port, src, dst, tcp }),
        1 => Just(Step::ToggleRule),
    ]
}

fn frame(port: usize, src: u8, dst: u8, tcp: Option<(u16, u16, u8)>) -> Vec<u8> {
    let mac = |n: u8| {
        if n == 5 {
            Mac::BROADCAST
        } else {
            Mac([2, 0, 0, 0, 0, n])
        }
    };
    let ip = |n: u8| Ipv4Addr::new(10, 0, 0, n);
    // The trunk and the uplink carry VLAN 100 tagged.
    let vlan = (PORTS[port] == "rtr" || PORTS[port] == "uplink0").then_some(100);
    let l4 = match tcp {
        Some((sp, dp, flags)) => L4::Tcp {
            src: sp,
            dst: dp,
            flags,
        },
        None => L4::Udp { src: 7, dst: 9 },
    };
    frames::ipv4(mac(src), mac(dst), vlan, ip(src), ip(dst), l4, 0)
}

type Outcome = Result<Vec<(u32, VlanEdit)>, DropReason>;

fn send(w: &mut Worker, out: &mut BurstResult, port: u32, f: &[u8], now: u64) -> Outcome {
    w.process_burst(port, &[f], now, out);
    if let Some(r) = out.packets[0].drop {
        return Err(r);
    }
    let mut v: Vec<(u32, VlanEdit)> = out.emits_of(0).iter().map(|e| (e.port, e.vlan)).collect();
    v.sort_by_key(|e| e.0);
    Ok(v)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn caches_never_change_a_decision(steps in proptest::collection::vec(step(), 1..300)) {
        let model: Model = toml::from_str(MODEL).unwrap();
        let cached = Switch::new(SwitchConfig::default(), model.clone()).unwrap();
        let bare = Switch::new(
            SwitchConfig { emc_entries: 2, megaflow_entries: 0, ..Default::default() },
            model,
        )
        .unwrap();
        let (mut wc, mut wb) = (cached.worker(), bare.worker());
        let (mut oc, mut ob) = (BurstResult::default(), BurstResult::default());
        let mut rule_on = true;
        let mut now = 1_000_000_000u64;
        for (i, s) in steps.iter().enumerate() {
            now += 1_000;
            match s {
                Step::Frame { port, src, dst, tcp } => {
                    let f = frame(*port, *src, *dst, *tcp);
                    let p = cached.port_id(PORTS[*port]).unwrap();
                    prop_assert_eq!(bare.port_id(PORTS[*port]), Some(p));
                    // Twice: the second time the cached switch answers from its caches.
                    for _ in 0..2 {
                        let a = send(&mut wc, &mut oc, p, &f, now);
                        let b = send(&mut wb, &mut ob, p, &f, now);
                        prop_assert_eq!(a, b, "step {}: {:?}", i, s);
                    }
                }
                Step::ToggleRule => {
                    rule_on = !rule_on;
                    for sw in [&cached, &bare] {
                        let mut m = sw.model();
                        let rules = &mut m.security_groups[0].rules;
                        if rule_on {
                            let mut r = rules[0].clone();
                            r.direction = model::Direction::Ingress;
                            r.protocol = model::Protocol::Tcp;
                            r.port_min = Some(80);
                            r.port_max = Some(81);
                            rules.push(r);
                        } else {
                            rules.truncate(1);
                        }
                        sw.apply(m).unwrap();
                    }
                }
            }
        }
    }
}
