//! The protocols a guest needs through port security and security groups, as OpenStack's
//! security groups handle them: IPv6 neighbour discovery whatever the rules (with spoof checks
//! for bound ports), the RA guard, DHCP replies from the uplink only, ARP probes, and VLAN 0
//! priority tags on access ports. Through `Worker::process_burst`, as the dataplane calls it,
//! and through the trace, which must name the check that failed.

use flowtable::compiler::eui64_link_local;
use flowtable::frames::{self, L4};
use flowtable::parse::parse;
use flowtable::switch::{Switch, SwitchConfig};
use flowtable::verdict::{BurstResult, DropReason, VlanEdit};
use flowtable::wire::ethernet::ethertype;
use flowtable::worker::Worker;
use model::{Mac, Model};
use std::net::{Ipv4Addr, Ipv6Addr};

const MODEL: &str = r#"
[[uplinks]]
name = "uplink0"

[[port_groups]]
name = "bound"
type = "access"
vlan = 100
ip_mac_binding = true

[[port_groups]]
name = "open"
type = "access"
vlan = 100

# No rule at all: only what port security lets through implicitly passes.
[[security_groups]]
name = "locked"

[[security_groups]]
name = "routers"
allow_router_advertisements = true

[[ports]]
name = "a"
mac = "02:00:00:00:00:01"
ips = ["10.0.0.1", "2001:db8::1"]
port_group = "bound"
security_group = "locked"

[[ports]]
name = "b"
mac = "02:00:00:00:00:02"
ips = ["10.0.0.2", "2001:db8::2"]
port_group = "bound"
security_group = "locked"

# A guest without a security group (so without the DHCP server guard of its own).
[[ports]]
name = "c"
mac = "02:00:00:00:00:03"
port_group = "open"

[[ports]]
name = "d"
mac = "02:00:00:00:00:04"
port_group = "open"
security_group = "locked"

[[ports]]
name = "e"
mac = "02:00:00:00:00:06"
port_group = "open"

[[ports]]
name = "r"
mac = "02:00:00:00:00:05"
port_group = "open"
security_group = "routers"
"#;

fn mac(n: u8) -> Mac {
    Mac([2, 0, 0, 0, 0, n])
}
fn global(n: u16) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, n)
}
fn ll(n: u8) -> Ipv6Addr {
    eui64_link_local(mac(n))
}
fn solicited_node(a: Ipv6Addr) -> (Mac, Ipv6Addr) {
    let o = a.octets();
    (
        Mac([0x33, 0x33, 0xff, o[13], o[14], o[15]]),
        Ipv6Addr::new(
            0xff02,
            0,
            0,
            0,
            0,
            1,
            0xff00 | o[13] as u16,
            u16::from_be_bytes([o[14], o[15]]),
        ),
    )
}
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
const ALL_NODES_MAC: Mac = Mac([0x33, 0x33, 0, 0, 0, 1]);

struct Bench {
    sw: Switch,
    w: Worker,
    out: BurstResult,
    now: u64,
}

impl Bench {
    fn new() -> Bench {
        let m: Model = toml::from_str(MODEL).unwrap();
        let sw = Switch::new(SwitchConfig::default(), m).unwrap();
        let w = sw.worker();
        Bench {
            sw,
            w,
            out: BurstResult::default(),
            now: 1_000_000_000,
        }
    }
    /// Sends one frame in on `port`: the ports its copies go to (sorted) with their VLAN edit,
    /// or the drop.
    fn send(&mut self, port: &str, frame: &[u8]) -> Result<Vec<(String, VlanEdit)>, DropReason> {
        self.now += 1000;
        let id = self.sw.port_id(port).unwrap();
        self.w.process_burst(id, &[frame], self.now, &mut self.out);
        if let Some(r) = self.out.packets[0].drop {
            return Err(r);
        }
        let pl = self.sw.pipeline();
        let mut v: Vec<_> = self
            .out
            .emits_of(0)
            .iter()
            .map(|e| (pl.port_name(e.port), e.vlan))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(v)
    }
    fn reaches(&mut self, port: &str, frame: &[u8]) -> Result<Vec<String>, DropReason> {
        self.send(port, frame)
            .map(|v| v.into_iter().map(|(n, _)| n).collect())
    }
    /// The trace's verdict, and every step, as one text.
    fn trace(&self, port: &str, frame: &[u8]) -> (Option<DropReason>, String) {
        let t = self.sw.trace(port, frame, self.now).unwrap();
        let steps: Vec<String> = t.steps.iter().map(|s| s.text.clone()).collect();
        (t.drop, format!("{}\n{}", t.verdict, steps.join("\n")))
    }
}

fn ns(from: u8, sip: Ipv6Addr, target: Ipv6Addr, sll: Option<Mac>) -> Vec<u8> {
    let (dmac, dip) = solicited_node(target);
    frames::neighbour(mac(from), dmac, sip, dip, false, target, sll)
}
fn na(
    from: u8,
    to: u8,
    sip: Ipv6Addr,
    dip: Ipv6Addr,
    target: Ipv6Addr,
    tll: Option<Mac>,
) -> Vec<u8> {
    frames::neighbour(mac(from), mac(to), sip, dip, true, target, tll)
}

#[test]
fn the_key_of_a_neighbour_message_carries_its_target_and_link_layer_address() {
    let f = ns(1, ll(1), global(2), Some(mac(1)));
    let k = parse(1, &f);
    assert!(k.is_nd() && !k.is_invalid(), "{k:?}");
    assert_eq!(k.ip_dst(), u128::from(global(2)));
    assert_eq!(k.arp_sha(), mac(1));
    // An advertisement's target link-layer option; a source option in an NA is not it.
    let f = na(2, 1, global(2), global(1), global(2), Some(mac(2)));
    assert_eq!(parse(1, &f).arp_sha(), mac(2));
    let mut body = vec![0x60, 0, 0, 0];
    body.extend_from_slice(&global(2).octets());
    body.extend_from_slice(&[1, 1, 2, 0, 0, 0, 0, 9]);
    let f = frames::icmpv6(mac(2), mac(1), global(2), global(1), 136, &body);
    assert_eq!(parse(1, &f).arp_sha(), Mac::ZERO);
    // Too short for a target, and an option of length 0: malformed, as RFC 4861 has receivers
    // discard them.
    let f = frames::icmpv6(mac(1), mac(2), ll(1), global(2), 135, &[0; 8]);
    assert!(parse(1, &f).is_invalid());
    let mut body = vec![0; 4];
    body.extend_from_slice(&global(2).octets());
    body.extend_from_slice(&[1, 0, 2, 0, 0, 0, 0, 1]);
    let f = frames::icmpv6(mac(1), mac(2), ll(1), global(2), 135, &body);
    assert!(parse(1, &f).is_invalid());
    assert_eq!(parse_reference_flags(&f), parse(1, &f).flags());
}

fn parse_reference_flags(f: &[u8]) -> u8 {
    flowtable::parse::parse_reference(1, f).flags()
}

#[test]
fn neighbour_discovery_passes_a_security_group_without_rules() {
    let mut b = Bench::new();
    // a resolves b: the solicitation reaches b (and the rest of the VLAN) although the group
    // allows nothing, and so does b's advertisement back.
    let to = b
        .reaches("a", &ns(1, ll(1), global(2), Some(mac(1))))
        .unwrap();
    assert!(
        to.contains(&"b".to_string()) && to.contains(&"uplink0".to_string()),
        "{to:?}"
    );
    let back = na(2, 1, global(2), global(1), global(2), Some(mac(2)));
    assert_eq!(b.reaches("b", &back).unwrap(), ["a"]);
    let (drop, text) = b.trace("b", &back);
    assert_eq!(drop, None);
    assert!(
        text.contains("neighbour advertisement for 2001:db8::2, an address of port b"),
        "{text}"
    );
    assert!(
        text.contains("neighbour discovery (ICMPv6 type 136) is allowed by port security"),
        "{text}"
    );
    // Duplicate address detection of its own addresses, and its link-local one.
    for t in [global(1), ll(1)] {
        assert!(
            b.send("a", &ns(1, Ipv6Addr::UNSPECIFIED, t, None)).is_ok(),
            "DAD {t}"
        );
    }
    // Anything else IPv6 still needs a rule: an echo request from a has none.
    let echo = frames::ipv6(
        mac(1),
        mac(2),
        None,
        global(1),
        global(2),
        L4::Echo {
            id: 1,
            reply: false,
        },
        0,
    );
    assert_eq!(b.send("a", &echo), Err(DropReason::SgEgressDenied));
}

#[test]
fn a_bound_port_may_only_claim_its_own_addresses_in_neighbour_discovery() {
    let mut b = Bench::new();
    let cases = [
        // a advertises b's address: the poisoning attempt.
        (
            na(1, 2, global(1), global(2), global(2), Some(mac(1))),
            DropReason::NdSpoofedTarget,
            "neighbour advertisement for an address not bound to port a",
        ),
        // ... or its own address with another MAC.
        (
            na(1, 2, global(1), global(2), global(1), Some(mac(9))),
            DropReason::NdSpoofedLladdr,
            "neighbour advertisement with a link-layer address other than port a's",
        ),
        // ... or its own address from a source it may not use.
        (
            na(1, 2, global(0x99), global(2), global(1), Some(mac(1))),
            DropReason::SpoofedIp,
            "neighbour advertisement from a source address not bound to port a",
        ),
        // A solicitation that announces another MAC for a's address.
        (
            ns(1, global(1), global(2), Some(mac(9))),
            DropReason::NdSpoofedLladdr,
            "neighbour solicitation with a link-layer address other than port a's",
        ),
        // ... or comes from b's address.
        (
            ns(1, global(2), global(3), Some(mac(1))),
            DropReason::SpoofedIp,
            "neighbour solicitation from a source address not bound to port a",
        ),
        // Duplicate address detection for b's address, which would keep b from using it.
        (
            ns(1, Ipv6Addr::UNSPECIFIED, global(2), None),
            DropReason::NdSpoofedTarget,
            "duplicate address detection for an address not bound to port a",
        ),
        // A link-local address a's MAC does not derive.
        (
            na(1, 2, ll(1), ll(2), ll(2), Some(mac(1))),
            DropReason::NdSpoofedTarget,
            "neighbour advertisement for an address not bound to port a",
        ),
    ];
    for (i, (f, reason, why)) in cases.iter().enumerate() {
        assert_eq!(b.send("a", f), Err(*reason), "case {i}");
        let (drop, text) = b.trace("a", f);
        assert_eq!(drop, Some(*reason), "case {i}: {text}");
        assert!(text.contains(why), "case {i}: {text}");
        assert!(
            text.contains(&format!("drop({})", reason.name())),
            "case {i}: {text}"
        );
    }
    // What a may say: its own addresses, from its link-local or global address, with or
    // without the option.
    for f in [
        na(1, 2, ll(1), ll(2), ll(1), Some(mac(1))),
        na(1, 2, global(1), global(2), global(1), None),
        frames::neighbour(
            mac(1),
            ALL_NODES_MAC,
            ll(1),
            ALL_NODES,
            true,
            global(1),
            Some(mac(1)),
        ),
        ns(1, ll(1), global(2), None),
    ] {
        assert!(b.send("a", &f).is_ok(), "{:?}", parse(0, &f));
    }
    // A port without IP–MAC binding is not checked.
    assert!(b
        .send("d", &na(4, 2, ll(4), global(2), global(2), Some(mac(4))))
        .is_ok());
}

fn router_advert(from: u8) -> Vec<u8> {
    let mut body = vec![64, 0, 0x07, 0x08, 0, 0, 0, 0, 0, 0, 0, 0];
    body.extend_from_slice(&[1, 1]);
    body.extend_from_slice(&mac(from).0);
    frames::icmpv6(mac(from), ALL_NODES_MAC, ll(from), ALL_NODES, 134, &body)
}

#[test]
fn router_advertisements_from_guests_need_their_groups_leave() {
    let mut b = Bench::new();
    let ra = router_advert(4);
    assert_eq!(b.send("d", &ra), Err(DropReason::RaGuard));
    let (drop, text) = b.trace("d", &ra);
    assert_eq!(drop, Some(DropReason::RaGuard));
    assert!(text.contains("RA guard: port d may not send router advertisements (security group locked does not allow them)"), "{text}");
    // The group of r allows them; they reach guests whose groups have no rule for them.
    let to = b.reaches("r", &router_advert(5)).unwrap();
    for p in ["a", "b", "d", "uplink0"] {
        assert!(to.contains(&p.to_string()), "{p} in {to:?}");
    }
    // A router solicitation from a guest goes out; it reaches the router.
    let rs = frames::icmpv6(
        mac(4),
        Mac([0x33, 0x33, 0, 0, 0, 2]),
        ll(4),
        "ff02::2".parse().unwrap(),
        133,
        &[0; 4],
    );
    let to = b.reaches("d", &rs).unwrap();
    assert!(
        to.contains(&"r".to_string()) && to.contains(&"uplink0".to_string()),
        "{to:?}"
    );
    // From the physical network, advertisements reach the guests.
    let mut up = router_advert(9);
    frames::push_tag(&mut up, ethertype::VLAN, 100);
    let to = b.reaches("uplink0", &up).unwrap();
    assert!(
        to.contains(&"a".to_string()) && to.contains(&"d".to_string()),
        "{to:?}"
    );
}

fn dhcp(src_mac: Mac, dst_mac: Mac, sip: Ipv4Addr, dip: Ipv4Addr, server: bool) -> Vec<u8> {
    let l4 = if server {
        L4::Udp { src: 67, dst: 68 }
    } else {
        L4::Udp { src: 68, dst: 67 }
    };
    frames::ipv4(src_mac, dst_mac, None, sip, dip, l4, 240)
}

#[test]
fn dhcp_replies_reach_a_security_group_port_from_the_uplink_only() {
    let mut b = Bench::new();
    // a's discover goes out although its group has no egress rule.
    let discover = dhcp(
        mac(1),
        Mac::BROADCAST,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::BROADCAST,
        false,
    );
    assert!(b
        .reaches("a", &discover)
        .unwrap()
        .contains(&"uplink0".to_string()));
    // The server behind the uplink answers, broadcast and unicast: it reaches a through its
    // group (no rule, no connection: the reply's addresses are not the request's).
    let server = Mac([2, 0, 0, 0, 0, 0x99]);
    let sip = Ipv4Addr::new(10, 0, 0, 254);
    let mut offer = dhcp(server, Mac::BROADCAST, sip, Ipv4Addr::BROADCAST, true);
    frames::push_tag(&mut offer, ethertype::VLAN, 100);
    let to = b.reaches("uplink0", &offer).unwrap();
    for p in ["a", "b", "d", "c"] {
        assert!(to.contains(&p.to_string()), "{p} in {to:?}");
    }
    let mut ack = dhcp(server, mac(1), sip, Ipv4Addr::new(10, 0, 0, 1), true);
    frames::push_tag(&mut ack, ethertype::VLAN, 100);
    assert_eq!(b.reaches("uplink0", &ack).unwrap(), ["a"]);
    // A guest without a group answering as a server does not reach a guest with one.
    let rogue = dhcp(
        mac(3),
        mac(1),
        Ipv4Addr::new(10, 0, 0, 3),
        Ipv4Addr::new(10, 0, 0, 1),
        true,
    );
    assert_eq!(b.send("c", &rogue), Err(DropReason::DhcpServerSpoof));
    let (drop, text) = b.trace("c", &rogue);
    assert_eq!(drop, Some(DropReason::DhcpServerSpoof));
    assert!(
        text.contains(
            "DHCP server replies are only accepted from an uplink, not from another guest"
        ),
        "{text}"
    );
    // Broadcast, its copies towards guests with groups are dropped; the rest go out.
    let rogue = dhcp(
        mac(3),
        Mac::BROADCAST,
        Ipv4Addr::new(10, 0, 0, 3),
        Ipv4Addr::BROADCAST,
        true,
    );
    let to = b.reaches("c", &rogue).unwrap();
    assert_eq!(
        to,
        ["e", "uplink0"],
        "only the uplink and guests without a group get it"
    );
    // A guest with a group may not answer as a server at all.
    let rogue = dhcp(
        mac(4),
        mac(1),
        Ipv4Addr::new(10, 0, 0, 4),
        Ipv4Addr::new(10, 0, 0, 1),
        true,
    );
    assert_eq!(b.send("d", &rogue), Err(DropReason::DhcpServer));
    // DHCPv6 likewise.
    let mut reply6 = frames::ipv6(
        server,
        mac(1),
        None,
        "fe80::99".parse().unwrap(),
        ll(1),
        L4::Udp { src: 547, dst: 546 },
        40,
    );
    frames::push_tag(&mut reply6, ethertype::VLAN, 100);
    assert_eq!(b.reaches("uplink0", &reply6).unwrap(), ["a"]);
    let rogue6 = frames::ipv6(
        mac(3),
        mac(1),
        None,
        ll(3),
        ll(1),
        L4::Udp { src: 547, dst: 546 },
        40,
    );
    assert_eq!(b.send("c", &rogue6), Err(DropReason::DhcpServerSpoof));
}

#[test]
fn arp_probes_pass_and_gratuitous_arp_for_another_address_does_not() {
    let mut b = Bench::new();
    let arp = |spa: Ipv4Addr, sha: Mac, tpa: Ipv4Addr| {
        frames::arp(mac(1), Mac::BROADCAST, None, 1, sha, spa, Mac::ZERO, tpa)
    };
    let probe = arp(Ipv4Addr::UNSPECIFIED, mac(1), Ipv4Addr::new(10, 0, 0, 1));
    assert!(b.reaches("a", &probe).unwrap().contains(&"b".to_string()));
    let (_, text) = b.trace("a", &probe);
    assert!(
        text.contains("ARP probe (RFC 5227, sender 0.0.0.0)"),
        "{text}"
    );
    // Its own gratuitous ARP announces it.
    let own = Ipv4Addr::new(10, 0, 0, 1);
    assert!(b.send("a", &arp(own, mac(1), own)).is_ok());
    // One for b's address is refused, and so is a probe with another sender MAC.
    let other = Ipv4Addr::new(10, 0, 0, 2);
    let garp = arp(other, mac(1), other);
    assert_eq!(b.send("a", &garp), Err(DropReason::SpoofedIp));
    let (_, text) = b.trace("a", &garp);
    assert!(
        text.contains("a gratuitous ARP or reply claiming another address"),
        "{text}"
    );
    let probe = arp(Ipv4Addr::UNSPECIFIED, mac(9), own);
    assert_eq!(b.send("a", &probe), Err(DropReason::ArpSpoofedMac));
}

#[test]
fn priority_tagged_frames_are_untagged_frames_on_access_ports() {
    let mut b = Bench::new();
    let mut f = frames::ipv4(
        mac(3),
        Mac::BROADCAST,
        None,
        Ipv4Addr::new(10, 0, 0, 3),
        Ipv4Addr::new(10, 0, 0, 9),
        L4::Udp { src: 1, dst: 2 },
        0,
    );
    // PCP 5, VLAN 0.
    frames::push_tag(&mut f, ethertype::VLAN, 5 << 13);
    let out = b.send("c", &f).unwrap();
    // Out of the uplink tagged with the port's VLAN (the dataplane rewrites the VLAN id and keeps
    // the priority bits), out of access ports untagged.
    assert!(
        out.contains(&("uplink0".to_string(), VlanEdit::Set(100))),
        "{out:?}"
    );
    assert!(out.contains(&("e".to_string(), VlanEdit::Strip)), "{out:?}");
    let (_, text) = b.trace("c", &f);
    assert!(
        text.contains(
            "priority-tagged frame (VLAN 0) on access port of group open in VLAN 100, as untagged"
        ),
        "{text}"
    );
    // A real tag is still refused.
    let mut g = frames::ipv4(
        mac(3),
        Mac::BROADCAST,
        None,
        Ipv4Addr::new(10, 0, 0, 3),
        Ipv4Addr::new(10, 0, 0, 9),
        L4::Udp { src: 1, dst: 2 },
        0,
    );
    frames::push_tag(&mut g, ethertype::VLAN, 100);
    assert_eq!(b.send("c", &g), Err(DropReason::TaggedOnAccess));
}

#[test]
fn allowing_router_advertisements_at_run_time_lets_them_through() {
    let mut b = Bench::new();
    assert_eq!(b.send("d", &router_advert(4)), Err(DropReason::RaGuard));
    let mut m = b.sw.model();
    m.security_groups
        .iter_mut()
        .find(|g| g.name == "locked")
        .unwrap()
        .allow_router_advertisements = true;
    b.sw.apply(m).unwrap();
    let to = b.reaches("d", &router_advert(4)).unwrap();
    assert!(to.contains(&"a".to_string()), "{to:?}");
}

#[test]
fn priority_tagged_frames_go_to_a_trunks_native_vlan() {
    let m = MODEL.to_string()
        + r#"
[[port_groups]]
name = "trunk"
type = "trunk"
vlans = ["200"]
native_vlan = 100

[[ports]]
name = "t"
mac = "02:00:00:00:00:07"
port_group = "trunk"
"#;
    let sw = Switch::new(SwitchConfig::default(), toml::from_str(&m).unwrap()).unwrap();
    let mut f = frames::ipv4(
        mac(7),
        Mac::BROADCAST,
        None,
        Ipv4Addr::new(10, 0, 0, 7),
        Ipv4Addr::new(10, 0, 0, 9),
        L4::Udp { src: 1, dst: 2 },
        0,
    );
    frames::push_tag(&mut f, ethertype::VLAN, 3 << 13);
    let t = sw.trace("t", &f, 1).unwrap();
    assert_eq!(t.drop, None, "{}", t.verdict);
    assert!(
        t.emits
            .iter()
            .any(|e| e.port == "uplink0" && e.vlan == VlanEdit::Set(100)),
        "{:?}",
        t.emits
    );
}
