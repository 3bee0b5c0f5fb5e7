//! Three hosts, each its own `evsd` with a static config, behind one top-of-rack bridge: the
//! physical network a distributed virtual switch will run on (`evs_e2e::lab`), proven without a
//! controller.
//!
//! ```text
//!                      ToR (bridge, trunk ports, VLANs 1-4094 tagged)
//!              h1 ─────────────────── h2 ─────────────────── h3
//!   evsd: uplink VLANs 100,200     uplink 100,200          uplink 100
//!         web1  10.0.0.11 (web)    web2 10.0.0.21 (web)    web3 10.0.0.31 (web)
//!         web1b 10.0.0.12 (web)    db2  10.0.0.121 (db)    pmd3 (testpmd icmpecho, web),
//!         db1   10.0.0.111 (db)                              answers for 10.0.0.39
//! ```
//!
//! Port group "web" is VLAN 100 (access) on every host, "db" VLAN 200 on h1 and h2. All guests
//! share one IPv4 subnet, so what keeps web from db is the VLAN, not routing. Everything is
//! judged by packets actually received (echo replies, TCP echoes, sniffed frames) and evsd's
//! counters:
//!
//! 1. `cross_host_ping`: web guests ping each other across hosts in both directions, and the
//!    frames reach the ToR tagged 100 (sniffed on the ToR's port from the sending host).
//! 2. `cross_host_tcp`: a TCP echo between web guests on different hosts.
//! 3. `vlan_isolation`: web1 cannot reach db2 nor db2 web1 (their ARP requests do reach the
//!    other host's uplink, and nothing is delivered to the other VLAN's port).
//! 4. `same_host_stays_local`: web1 ↔ web1b on h1 while h1's uplink transmits nothing.
//! 5. `db_cross_host`: db1 ↔ db2, tagged 200 on the wire.
//! 6. `tor_vlan_filter`: with VLAN 200 taken off the ToR's port towards h2, db1 no longer
//!    reaches db2 while web still does (the ToR really is VLAN-aware); then it is put back.
//! 7. `dpdk_guest`: a `dpdk-testpmd` guest on a vhost-user port of h3 answers web1's pings
//!    from h1 (skipped, loudly, without dpdk-testpmd).
//!
//! Steps run in this order (the testpmd guest answers ARP for any address, so it runs last),
//! each even when an earlier one failed; `MULTIHOST_STEPS=vlan_isolation,db_cross_host` runs
//! a subset.

use evs_e2e::lab::{self, EvsdOptions, Guest, Lab, LabSpec, PmdMode};
use std::time::{Duration, Instant};

const SEC: Duration = Duration::from_secs(1);

struct Net {
    lab: Lab,
    web1: Guest,
    web1b: Guest,
    db1: Guest,
    web2: Guest,
    db2: Guest,
    web3: Guest,
    /// The testpmd guest's port (when dpdk-testpmd is installed).
    pmd3: Option<Guest>,
}

/// The address the testpmd guest answers for (icmpecho answers ARP for any address: this one
/// belongs to nobody else).
const PMD_IP: &str = "10.0.0.39";

/// Host `h`'s static model: the port groups its guests use, an uplink carrying exactly their
/// VLANs, and its ports.
fn model(lab: &Lab, h: usize) -> String {
    let groups: &[(&str, u16)] = &[("web", 100), ("db", 200)];
    let local: Vec<&Guest> = lab.guests.iter().filter(|g| g.host == h).collect();
    let group_of = |g: &Guest| {
        if g.name.starts_with("db") {
            "db"
        } else {
            "web"
        }
    };
    let used: Vec<(&str, u16)> = groups
        .iter()
        .copied()
        .filter(|(n, _)| local.iter().any(|g| group_of(g) == *n))
        .collect();
    let vlans: Vec<String> = used.iter().map(|(_, v)| format!("\"{v}\"")).collect();
    let mut m = format!(
        "[[uplinks]]\nname = \"uplink\"\nvlans = [{}]\n",
        vlans.join(", ")
    );
    for (n, v) in &used {
        m += &format!("\n[[port_groups]]\nname = \"{n}\"\ntype = \"access\"\nvlan = {v}\n");
    }
    for g in local {
        let ips = if g.ip.is_empty() {
            String::new()
        } else {
            format!("ips = [\"{}\"]\n", g.ip)
        };
        m += &format!(
            "\n[[ports]]\nname = \"{}\"\nmac = \"{}\"\n{ips}port_group = \"{}\"\n",
            g.name,
            g.mac,
            group_of(g)
        );
    }
    m
}

fn build() -> Net {
    let mut lab = Lab::new(LabSpec::hosts(3));
    let web1 = lab.add_ns_guest(0, "web1", "02:00:00:00:01:01", "10.0.0.11/24");
    let web1b = lab.add_ns_guest(0, "web1b", "02:00:00:00:01:02", "10.0.0.12/24");
    let db1 = lab.add_ns_guest(0, "db1", "02:00:00:00:01:11", "10.0.0.111/24");
    let web2 = lab.add_ns_guest(1, "web2", "02:00:00:00:02:01", "10.0.0.21/24");
    let db2 = lab.add_ns_guest(1, "db2", "02:00:00:00:02:11", "10.0.0.121/24");
    let web3 = lab.add_ns_guest(2, "web3", "02:00:00:00:03:01", "10.0.0.31/24");
    let pmd3 = match lab::testpmd_missing() {
        None => Some(lab.add_vhost_port(2, "pmd3", "02:00:00:00:03:09", PMD_IP)),
        Some(r) => {
            eprintln!("\n*** multihost_static: no DPDK guest step: {r} ***\n");
            None
        }
    };
    let models: Vec<String> = (0..3).map(|h| model(&lab, h)).collect();
    lab.start_all(|h| EvsdOptions::full(&models[h], "uplink"));
    Net {
        lab,
        web1,
        web1b,
        db1,
        web2,
        db2,
        web3,
        pmd3,
    }
}

impl Net {
    fn tx(&self, host: usize, port: &str) -> u64 {
        self.lab.host(host).port(port).tx_packets
    }

    fn rx(&self, host: usize, port: &str) -> u64 {
        self.lab.host(host).port(port).rx_packets
    }

    /// The first echo may wait for ARP and MAC learning; then `n` of `n` must come back.
    fn ping_all(&self, from: &Guest, to: &Guest, n: u32) {
        assert!(
            self.lab.ping_until(from, &to.ip, 10 * SEC),
            "{} (h{}) never reached {} {} (h{})",
            from.name,
            from.host + 1,
            to.name,
            to.ip,
            to.host + 1
        );
        let got = self.lab.ping(from, &to.ip, n, SEC);
        assert_eq!(
            got, n,
            "{} → {}: {got}/{n} echo replies",
            from.name, to.name
        );
    }

    /// Host `host`'s evsd learned `g`'s MAC on its uplink in VLAN `vlan`: it classified the
    /// frames arriving from the ToR by their tag.
    fn assert_learned_on_uplink(&self, host: usize, g: &Guest, vlan: u32) {
        let table = self.lab.host(host).mac_table();
        assert!(
            table
                .iter()
                .any(|e| e.mac.to_string() == g.mac && e.port == "uplink" && e.vlan == vlan),
            "h{}'s MAC table lacks {} ({}) on the uplink in VLAN {vlan}: {table:?}",
            host + 1,
            g.name,
            g.mac
        );
    }

    /// Runs `traffic` while sniffing on the ToR's port from host `from_host` (what arrives
    /// there from the host's uplink: the sniffer ignores frames a port sends) for frames from
    /// `src_mac`; returns the VLAN ids of what was captured (at least one frame).
    fn tags_on_wire(&self, from_host: usize, src_mac: &str, traffic: impl FnOnce()) -> Vec<u64> {
        let port = self.lab.host(from_host).name.clone();
        let sn = self.lab.sniff(
            &self.lab.tor,
            &port,
            &[
                "--match",
                &format!("src_mac={src_mac}"),
                "--count",
                "3",
                "--timeout",
                "5",
            ],
        );
        traffic();
        let r = sn.finish(lab::WAIT);
        let tags: Vec<u64> = r.json["frames"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|f| f["vlan"].as_u64().unwrap_or(0))
            .collect();
        assert!(
            !tags.is_empty(),
            "nothing from {src_mac} reached the ToR's port {port}: {}",
            r.text
        );
        tags
    }
}

// ------------------------------------------------------------------------------------------------
// The behaviours

fn cross_host_ping(n: &mut Net) {
    let tags = n.tags_on_wire(0, &n.web1.mac, || n.ping_all(&n.web1, &n.web2, 5));
    assert!(
        tags.iter().all(|&t| t == 100),
        "web1's frames from h1 on the ToR carry VLANs {tags:?}, expected 100 only"
    );
    // evsd on h2 read the tag off its af_packet uplink: web1's MAC is learned there in VLAN 100.
    n.assert_learned_on_uplink(1, &n.web1, 100);
    n.ping_all(&n.web2, &n.web1, 5);
    n.ping_all(&n.web2, &n.web3, 5);
    n.ping_all(&n.web3, &n.web2, 5);
    n.ping_all(&n.web3, &n.web1, 5);
    // Through the uplinks: h1 sent and h3 received on theirs.
    let (tx1, rx3) = (n.tx(0, "uplink"), n.rx(2, "uplink"));
    n.ping_all(&n.web1, &n.web3, 5);
    assert!(
        n.tx(0, "uplink") >= tx1 + 5 && n.rx(2, "uplink") >= rx3 + 5,
        "web1 → web3 did not go h1's uplink → h3's uplink:\n{}",
        n.lab.dump()
    );
}

fn cross_host_tcp(n: &mut Net) {
    let r = n
        .lab
        .tcp_check(&n.web1, &n.web3, 8080)
        .unwrap_or_else(|r| panic!("TCP web1 (h1) → web3 (h3):8080 failed: {}", r.text));
    eprintln!("    web1 → web3:8080 echoed: {}", r.json);
    n.lab
        .tcp_check(&n.web2, &n.web1, 9090)
        .unwrap_or_else(|r| panic!("TCP web2 (h2) → web1 (h1):9090 failed: {}", r.text));
}

fn vlan_isolation(n: &mut Net) {
    // web1 (VLAN 100, h1) asks for db2's address (VLAN 200, h2): its ARP requests reach h2's
    // uplink tagged 100, and evsd must deliver nothing of them to db2.
    let (db2_tx, up2_rx) = (n.tx(1, "db2"), n.rx(1, "uplink"));
    let got = n.lab.ping(&n.web1, &n.db2.ip, 3, SEC);
    assert_eq!(got, 0, "web1 (VLAN 100) reached db2 (VLAN 200)");
    assert!(
        n.rx(1, "uplink") > up2_rx,
        "web1's ARP requests never reached h2's uplink: the isolation check would be vacuous"
    );
    assert_eq!(
        n.tx(1, "db2"),
        db2_tx,
        "evsd on h2 delivered frames to db2 while only web1 (VLAN 100) was talking"
    );
    // And the other way: db2 → web1.
    let web1_tx = n.tx(0, "web1");
    let got = n.lab.ping(&n.db2, &n.web1.ip, 3, SEC);
    assert_eq!(got, 0, "db2 (VLAN 200) reached web1 (VLAN 100)");
    assert_eq!(
        n.tx(0, "web1"),
        web1_tx,
        "evsd on h1 delivered frames to web1 while only db2 (VLAN 200) was talking"
    );
}

fn same_host_stays_local(n: &mut Net) {
    // The first exchange may flood (ARP broadcast, MACs not yet learned); after it, both MACs
    // are learned on h1 and both ARP caches hold the other.
    assert!(
        n.lab.ping_until(&n.web1, &n.web1b.ip, 10 * SEC),
        "web1 never reached web1b on the same host"
    );
    let (up_tx, b_tx) = (n.tx(0, "uplink"), n.tx(0, "web1b"));
    let got = n.lab.ping(&n.web1, &n.web1b.ip, 10, SEC);
    assert_eq!(got, 10, "web1 → web1b: {got}/10 echo replies");
    assert!(
        n.tx(0, "web1b") >= b_tx + 10,
        "the echoes did not go through evsd's port web1b"
    );
    assert_eq!(
        n.tx(0, "uplink"),
        up_tx,
        "h1's uplink transmitted while only web1 and web1b (both on h1) talked"
    );
}

fn db_cross_host(n: &mut Net) {
    let tags = n.tags_on_wire(0, &n.db1.mac, || n.ping_all(&n.db1, &n.db2, 5));
    assert!(
        tags.iter().all(|&t| t == 200),
        "db1's frames from h1 on the ToR carry VLANs {tags:?}, expected 200 only"
    );
    n.assert_learned_on_uplink(1, &n.db1, 200);
    n.ping_all(&n.db2, &n.db1, 5);
}

/// The ToR is VLAN-aware: with VLAN 200 taken off its port towards h2, db1 no longer reaches
/// db2 while web still crosses to h2; with the port's range back, db works again.
fn tor_vlan_filter(n: &mut Net) {
    n.lab.set_tor_vlans(1, "1-199,201-4094");
    let got = n.lab.ping(&n.db1, &n.db2.ip, 3, SEC);
    let web = n.lab.ping(&n.web1, &n.web2.ip, 3, SEC);
    n.lab.set_tor_vlans(1, "1-4094");
    assert_eq!(
        got,
        0,
        "db1 reached db2 although the ToR does not carry VLAN 200 to h2:\n{}",
        n.lab.tor_dump()
    );
    assert_eq!(web, 3, "web1 → web2 broke when only VLAN 200 was removed");
    n.ping_all(&n.db1, &n.db2, 3);
}

fn dpdk_guest(n: &mut Net) {
    let Some(pmd) = &n.pmd3 else {
        eprintln!("    *** SKIPPED: dpdk-testpmd not installed ***");
        return;
    };
    // Forwarding on CPU 0: h3's evsd forwards on CPU 1 (the lab spreads hosts over both).
    let guest = n.lab.start_testpmd(pmd, PmdMode::IcmpEcho, 0);
    n.ping_all(&n.web1, pmd, 5);
    let rx = n.rx(2, "pmd3");
    drop(guest);
    assert!(
        rx >= 5,
        "evsd on h3 counted {rx} frames from the testpmd guest"
    );
}

type Step = (&'static str, fn(&mut Net));

const STEPS: &[Step] = &[
    ("cross_host_ping", cross_host_ping),
    ("cross_host_tcp", cross_host_tcp),
    ("vlan_isolation", vlan_isolation),
    ("same_host_stays_local", same_host_stays_local),
    ("db_cross_host", db_cross_host),
    ("tor_vlan_filter", tor_vlan_filter),
    ("dpdk_guest", dpdk_guest),
];

#[test]
fn three_hosts_static_configs() {
    evs_e2e::skip_unless_lab!();
    let _g = evs_e2e::serial();
    let only: Option<Vec<String>> = std::env::var("MULTIHOST_STEPS")
        .ok()
        .map(|s| s.split(',').map(|x| x.trim().to_string()).collect());
    let t0 = Instant::now();
    let mut net = build();
    eprintln!(
        "lab up in {:.1} s (namespaces {}-*, ToR {:?}, files in {})",
        t0.elapsed().as_secs_f64(),
        net.lab.id,
        net.lab.tor_mode,
        net.lab.dir.path().display()
    );
    let mut failed = vec![];
    for (name, f) in STEPS {
        if only.as_ref().is_some_and(|o| !o.iter().any(|x| x == name)) {
            continue;
        }
        let s = Instant::now();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mut net)));
        let secs = s.elapsed().as_secs_f64();
        match r {
            Ok(()) => eprintln!("PASS {name} ({secs:.1} s)"),
            Err(e) => {
                let msg = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                eprintln!("FAIL {name} ({secs:.1} s): {msg}\n{}", net.lab.dump());
                failed.push(name.to_string());
            }
        }
    }
    eprintln!(
        "multihost_static: total {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    drop(net);
    assert!(failed.is_empty(), "failed steps: {failed:?}");
}

/// What a host agent will do, without the agent: two hosts start with almost-empty configs
/// (EAL, dataplane and control socket only), then each gets its model with `evsd ctl apply` and
/// its uplink and guest port with `evsd ctl attach`, and the guests reach each other across
/// the ToR.
#[test]
fn bare_hosts_filled_at_run_time() {
    evs_e2e::skip_unless_lab!();
    let _g = evs_e2e::serial();
    let t0 = Instant::now();
    let mut lab = Lab::new(LabSpec::hosts(2));
    let a = lab.add_ns_guest(0, "web1", "02:00:00:00:01:01", "10.0.0.11/24");
    let b = lab.add_ns_guest(1, "web2", "02:00:00:00:02:01", "10.0.0.21/24");
    lab.start_all(|_| EvsdOptions::bare());
    for (h, g) in [(0, &a), (1, &b)] {
        assert!(
            lab.host(h).ports().is_empty(),
            "a bare evsd should have no ports"
        );
        let applied = lab.host(h).apply(&model(&lab, h));
        eprintln!("    h{}: evsd ctl apply: {}", h + 1, applied.trim());
        let host = lab.host(h);
        host.ctl(&["attach", "uplink", "--ethdev", &host.uplink_devargs()])
            .unwrap_or_else(|e| panic!("{e}"));
        lab.attach(g);
        host.wait_port_up("uplink");
        host.wait_port_up(&g.name);
    }
    assert!(
        lab.ping_until(&a, &b.ip, 10 * SEC),
        "web1 (h1) never reached web2 (h2):\n{}",
        lab.dump()
    );
    let got = lab.ping(&b, &a.ip, 5, SEC);
    assert_eq!(got, 5, "web2 → web1: {got}/5 echo replies");
    eprintln!(
        "bare_hosts_filled_at_run_time: total {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}
