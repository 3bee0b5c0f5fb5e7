//! Storm control through `Worker::process_burst`, as the dataplane calls it: per-port limits
//! on broadcast, multicast and unknown unicast, with known unicast never limited, cached paths
//! still charged, and the trace saying when a frame would be dropped.

use flowtable::frames::{self, L4};
use flowtable::switch::{Switch, SwitchConfig};
use flowtable::verdict::{BurstResult, DropReason};
use flowtable::worker::Worker;
use model::{Mac, Model};
use std::net::Ipv4Addr;

const MODEL: &str = r#"
[[uplinks]]
name = "uplink0"
storm_control = { broadcast = { pps = 10, burst = 5 } }

[[port_groups]]
name = "limited"
type = "access"
vlan = 100
storm_control.broadcast = { pps = 1000, burst = 50 }
storm_control.multicast = { pps = 1000, burst = 20 }
storm_control.unknown_unicast = { pps = 100, burst = 10 }

[[port_groups]]
name = "open"
type = "access"
vlan = 100

[[ports]]
name = "a"
mac = "02:00:00:00:00:01"
port_group = "limited"

[[ports]]
name = "b"
mac = "02:00:00:00:00:02"
port_group = "limited"
# Its own replaces the group's: no limit at all.
storm_control = {}

[[ports]]
name = "c"
mac = "02:00:00:00:00:03"
port_group = "open"
"#;

const MS: u64 = 1_000_000;

fn mac(n: u8) -> Mac {
    Mac([2, 0, 0, 0, 0, n])
}

fn udp(src: Mac, dst: Mac, sport: u16) -> Vec<u8> {
    frames::ipv4(
        src,
        dst,
        None,
        Ipv4Addr::new(10, 0, 0, 1),
        Ipv4Addr::new(10, 0, 0, 2),
        L4::Udp { src: sport, dst: 9 },
        18,
    )
}

struct Bench {
    sw: Switch,
    w: Worker,
    out: BurstResult,
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
        }
    }

    /// `n` copies of `frame` from `port` at `now`, in bursts of 32: (packets with a copy out,
    /// drops by `reason`).
    fn burst(&mut self, port: &str, frame: &[u8], n: usize, now: u64) -> (usize, usize) {
        let id = self.sw.port_id(port).unwrap();
        let (mut out, mut dropped) = (0, 0);
        let mut left = n;
        while left > 0 {
            let k = left.min(32);
            let views = vec![frame; k];
            self.w.process_burst(id, &views, now, &mut self.out);
            for p in &self.out.packets {
                match p.drop {
                    None => out += 1,
                    Some(r) if r == storm_reason(frame) => dropped += 1,
                    Some(r) => panic!("unexpected drop {r:?}"),
                }
            }
            left -= k;
        }
        (out, dropped)
    }

    fn rx_drops(&self, port: &str, r: DropReason) -> u64 {
        let id = self.sw.port_id(port).unwrap() as usize;
        self.w.stats().ports[id].rx_drops[r as usize]
    }
}

fn storm_reason(frame: &[u8]) -> DropReason {
    let dst = Mac(frame[..6].try_into().unwrap());
    if dst == Mac::BROADCAST {
        DropReason::StormBroadcast
    } else if dst.is_multicast() {
        DropReason::StormMulticast
    } else {
        DropReason::StormUnknownUnicast
    }
}

/// A burst of N broadcasts at one instant passes exactly the burst; the rate refills it; the
/// identical frames hit the exact-match cache after the first, and are charged all the same.
#[test]
fn broadcast_burst_then_rate() {
    let mut b = Bench::new();
    let t0 = 1_000 * MS;
    let bc = udp(mac(1), Mac::BROADCAST, 1);
    assert_eq!(b.burst("a", &bc, 500, t0), (50, 450));
    assert_eq!(b.rx_drops("a", DropReason::StormBroadcast), 450);
    // 1000 pps: 20 ms earn 20.
    assert_eq!(b.burst("a", &bc, 500, t0 + 20 * MS), (20, 480));
    // A quiet second refills to the burst, not beyond.
    assert_eq!(b.burst("a", &bc, 500, t0 + 2_000 * MS), (50, 450));
    // One second of overload, a burst every millisecond: the rate.
    let mut passed = 0;
    for i in 1..=1000 {
        passed += b.burst("a", &bc, 10, t0 + 2_000 * MS + i * MS).0;
    }
    assert_eq!(passed, 1000);
    // Port b's own (empty) storm control replaces the group's; c's group has none.
    assert_eq!(
        b.burst("b", &udp(mac(2), Mac::BROADCAST, 1), 500, t0),
        (500, 0)
    );
    assert_eq!(
        b.burst("c", &udp(mac(3), Mac::BROADCAST, 1), 500, t0),
        (500, 0)
    );
    // From the network, the uplink's own limit.
    let from_net = frames::ipv4(
        mac(0x99),
        Mac::BROADCAST,
        Some(100),
        Ipv4Addr::new(10, 0, 0, 99),
        Ipv4Addr::BROADCAST,
        L4::Udp { src: 1, dst: 9 },
        18,
    );
    assert_eq!(b.burst("uplink0", &from_net, 100, t0), (5, 95));
}

/// Unknown unicast is limited; once the destination is learned the same flow is unicast and
/// never limited, however fast.
#[test]
fn unknown_unicast_limited_known_unicast_not() {
    let mut b = Bench::new();
    let t0 = 1_000 * MS;
    let to_c = udp(mac(1), mac(3), 7);
    assert_eq!(b.burst("a", &to_c, 100, t0), (10, 90));
    assert_eq!(b.rx_drops("a", DropReason::StormUnknownUnicast), 90);
    // c speaks: its MAC is learned.
    assert_eq!(b.burst("c", &udp(mac(3), mac(1), 7), 1, t0).0, 1);
    assert_eq!(b.burst("a", &to_c, 10_000, t0 + MS), (10_000, 0));
    // Broadcast has its own bucket, untouched by all that.
    assert_eq!(
        b.burst("a", &udp(mac(1), Mac::BROADCAST, 1), 100, t0 + MS),
        (50, 50)
    );
}

/// Multicast has its own bucket, separate from broadcast's.
#[test]
fn multicast_separate() {
    let mut b = Bench::new();
    let t0 = 1_000 * MS;
    let mc = udp(mac(1), Mac([0x01, 0x00, 0x5e, 0, 0, 0xfb]), 5353);
    assert_eq!(b.burst("a", &mc, 100, t0), (20, 80));
    assert_eq!(b.rx_drops("a", DropReason::StormMulticast), 80);
    assert_eq!(b.rx_drops("a", DropReason::StormBroadcast), 0);
    assert_eq!(
        b.burst("a", &udp(mac(1), Mac::BROADCAST, 1), 100, t0),
        (50, 50)
    );
    assert_eq!(b.burst("a", &mc, 100, t0 + 10 * MS), (10, 90));
}

/// An update that does not touch a port's storm control keeps its buckets (no fresh burst for a
/// storming guest); a changed limit starts from full buckets of the new size.
#[test]
fn updates_keep_or_reset_buckets() {
    let mut b = Bench::new();
    let t0 = 1_000 * MS;
    let bc = udp(mac(1), Mac::BROADCAST, 1);
    assert_eq!(b.burst("a", &bc, 100, t0).0, 50);
    let mut m: Model = toml::from_str(MODEL).unwrap();
    m.ports[2].ips = vec!["10.0.0.3".parse().unwrap()];
    b.sw.apply(m.clone()).unwrap();
    assert_eq!(b.burst("a", &bc, 100, t0).0, 0, "kept: still empty");
    let sc = m.port_groups[0].storm_control.as_mut().unwrap();
    sc.broadcast.as_mut().unwrap().burst = Some(7);
    b.sw.apply(m).unwrap();
    assert_eq!(b.burst("a", &bc, 100, t0).0, 7, "new limit, full bucket");
}

/// The trace charges nothing: within the limit it says so and passes; while the port is
/// storming it says the frame would be dropped, with the drop reason.
#[test]
fn trace_says_when_storm_control_drops() {
    let mut b = Bench::new();
    let t0 = 1_000 * MS;
    let bc = udp(mac(1), Mac::BROADCAST, 1);
    let t = b.sw.trace("a", &bc, t0).unwrap();
    assert_eq!(t.drop, None, "{t}");
    let text = t.to_string();
    assert!(
        text.contains("storm control of a: broadcast within its limit"),
        "{text}"
    );
    assert_eq!(b.burst("a", &bc, 100, t0), (50, 50));
    let t = b.sw.trace("a", &bc, t0 + MS).unwrap();
    assert_eq!(t.drop, Some(DropReason::StormBroadcast), "{t}");
    let text = t.to_string();
    assert!(text.contains("would be dropped"), "{text}");
    assert!(text.contains("drop (storm_broadcast)"), "{text}");
    // A second later, quiet: within again. Unicast to a learned MAC never mentions it.
    let t = b.sw.trace("a", &bc, t0 + 2_000 * MS).unwrap();
    assert_eq!(t.drop, None, "{t}");
    b.burst("c", &udp(mac(3), mac(1), 7), 1, t0);
    let t = b.sw.trace("a", &udp(mac(1), mac(3), 7), t0 + MS).unwrap();
    assert!(!t.to_string().contains("storm"), "{t}");
}
