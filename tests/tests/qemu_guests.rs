//! Two real Linux guests under QEMU (TCG, no hardware virtualization needed) exchanging traffic
//! through evsd over vhost-user: ARP + ICMP both ways, TCP transfers of 4 MiB both ways that
//! arrive complete and intact (the guests' virtio-net drivers negotiate CSUM/GUEST_CSUM, so the
//! sender hands over frames whose TCP checksum is only partial), evsd's per-port counters, and a
//! security group applied at run time that refuses TCP towards B while ping still works.
//!
//! The guest (Debian's cloud kernel + a busybox initramfs) is built and cached by
//! `scripts/guest-image.sh`, which the test runs itself (idempotent, a no-op once cached). The
//! guests report on their serial console (`EVS-READY`, `EVS-PING-OK ...`, `EVS-TCP-RECEIVED ...`,
//! see the script's /init) and take commands on a second serial port; every wait is a bounded
//! poll of the console file.
//!
//! Roles: evsd is the vhost-user server (it creates the sockets at start), QEMU the client. The
//! sockets exist before QEMU starts, so QEMU connects at once and there is no start-up ordering
//! to get wrong; in the other direction QEMU would have to wait (`server=on,wait=on`) for evsd's
//! reconnect timer before the guest even boots.
//!
//! Skips loudly when not root / no DPDK, or when QEMU or the guest image are missing and the
//! script cannot provide them; `EVS_REQUIRE_QEMU=1` turns that skip into a failure.

use evs_e2e::qemu::{assert_ping_ok, field, guest_image, num, Guest, BOOT, T};
use evs_e2e::{serial, skip_unless_dpdk, unique, wait_for, Evsd};
use serde_json::{json, Value};
use std::path::Path;
use std::time::Instant;

const IP_A: &str = "10.0.0.10";
const IP_B: &str = "10.0.0.11";
const MAC_A: &str = "02:00:00:00:00:0a";
const MAC_B: &str = "02:00:00:00:00:0b";
/// Per TCP transfer (a multiple of 4096: the guest sends whole 4 KiB blocks of random data).
const BYTES: u64 = 4 << 20;

/// One transfer `from` → `to`: both ends report the same size and MD5, the receiver no TCP
/// checksum errors.
fn transfer(from: &mut Guest, to: &mut Guest, to_ip: &str, port: u16) -> (String, String) {
    let rid = to.listen(port);
    let sent = from.send_tcp(to_ip, port, BYTES);
    assert_eq!(
        field(&sent, "rc"),
        "0",
        "{} could not send: {sent}",
        from.name
    );
    let got = to.wait_line(&["EVS-TCP-RECEIVED"], Some(rid), T);
    assert_eq!(field(&got, "rc"), "0", "{got}");
    assert_eq!(num(&sent, "bytes"), BYTES, "{sent}");
    assert_eq!(
        num(&got, "bytes"),
        BYTES,
        "all bytes arrived: {got}\nsent: {sent}"
    );
    assert_eq!(
        field(&got, "md5"),
        field(&sent, "md5"),
        "data intact\nsent: {sent}\ngot:  {got}"
    );
    assert_eq!(num(&got, "InCsumErrors"), 0, "{got}");
    eprintln!(
        "    {} -> {}: {BYTES} bytes in {} ms, md5 {}",
        from.name,
        to.name,
        field(&sent, "ms"),
        field(&got, "md5")
    );
    (sent, got)
}

fn config(dir: &Path, prefix: &str) -> String {
    let mut c = evs_e2e::base_config(dir, prefix, "");
    c += r#"
[[port_groups]]
name = "web"
type = "access"
vlan = 100
"#;
    for (name, mac, ip) in [("a", MAC_A, IP_A), ("b", MAC_B, IP_B)] {
        c += &format!(
            r#"
[[ports]]
name = "{name}"
mac = "{mac}"
ips = ["{ip}"]
port_group = "web"

[[attach]]
port = "{name}"
vhost = {{ socket = "{dir}/{name}.sock", role = "server" }}
"#,
            dir = dir.display()
        );
    }
    c
}

fn drops(p: &Value) -> u64 {
    ["drops", "egress_drops"]
        .iter()
        .filter_map(|k| p[k].as_object())
        .flat_map(|m| m.values().filter_map(Value::as_u64))
        .sum()
}

/// Virtio feature bits each guest's driver negotiated with evsd's vhost ports (DPDK's vhost
/// library logs them).
fn negotiated_features(evsd_log: &str) -> Vec<u64> {
    evsd_log
        .lines()
        .filter_map(|l| l.split("negotiated Virtio features: 0x").nth(1))
        .filter_map(|h| u64::from_str_radix(h.trim(), 16).ok())
        .collect()
}

#[test]
fn linux_guests_ping_and_tcp_through_evsd() {
    skip_unless_dpdk!();
    let _g = serial();
    let image = match guest_image() {
        Ok(i) => i,
        Err(r) if std::env::var_os("EVS_REQUIRE_QEMU").is_some_and(|v| v == "1") => {
            panic!("EVS_REQUIRE_QEMU=1 but no QEMU guest: {r}")
        }
        Err(r) => {
            eprintln!(
                "\n*** SKIPPING {}: no QEMU guest: {r} ***\n",
                module_path!()
            );
            return;
        }
    };
    let t0 = Instant::now();
    let d = tempfile::Builder::new()
        .prefix("evs-qemu-")
        .tempdir()
        .unwrap();
    let dir = d.path();
    let evsd = Evsd::start(dir, "evsd", &config(dir, &unique("evs-e2e-qemu-")));
    let (sa, sb) = (dir.join("a.sock"), dir.join("b.sock"));
    wait_for("evsd's vhost-user sockets", T, || {
        (sa.exists() && sb.exists()).then_some(())
    });

    let mut a = Guest::start(dir, "a", IP_A, MAC_A, &sa, &image);
    let mut b = Guest::start(dir, "b", IP_B, MAC_B, &sb, &image);
    for g in [&mut a, &mut b] {
        let ready = g.wait_line(&["EVS-READY"], None, BOOT);
        eprintln!("    {ready}");
        assert_eq!(field(&ready, "carrier"), "1", "{ready}");
    }
    evsd.wait_state("a", "up", T);
    evsd.wait_state("b", "up", T);
    eprintln!(
        "    both guests up after {:.1} s",
        t0.elapsed().as_secs_f64()
    );

    // The drivers negotiated checksum offload both ways: A's frames carry partial TCP checksums
    // (VIRTIO_NET_F_CSUM) and B may be handed frames whose checksum is not verified
    // (VIRTIO_NET_F_GUEST_CSUM).
    let feats = negotiated_features(&evsd.proc.log_text());
    if feats.is_empty() {
        eprintln!("    (evsd's log does not show the negotiated virtio features)");
    }
    for f in &feats {
        assert!(f & 0b11 == 0b11, "CSUM and GUEST_CSUM negotiated: {f:#x}");
    }

    // ICMP both ways; the first echo of each needs ARP through the switch (flood, learn, reply).
    let p = a.ping(IP_B, 5);
    assert_ping_ok(&p, IP_B, 5);
    eprintln!("    a: {p}");
    let p = b.ping(IP_A, 5);
    assert_ping_ok(&p, IP_A, 5);
    eprintln!("    b: {p}");

    // TCP both ways, 4 MiB each, complete and intact.
    let before = (evsd.port("a"), evsd.port("b"));
    transfer(&mut a, &mut b, IP_B, 5001);
    transfer(&mut b, &mut a, IP_A, 5002);
    let (pa, pb) = (evsd.port("a"), evsd.port("b"));
    // About 2,900 full-size frames per 4 MiB (1448 bytes of payload each).
    for (port, now, was) in [("a", &pa, &before.0), ("b", &pb, &before.1)] {
        let d = |k: &str| now[k].as_u64().unwrap() - was[k].as_u64().unwrap_or(0);
        assert!(d("rx_packets") >= 2_800, "port {port} rx: {now}");
        assert!(d("tx_packets") >= 2_800, "port {port} tx: {now}");
        assert!(d("rx_bytes") >= BYTES, "port {port} rx bytes: {now}");
        assert!(d("tx_bytes") >= BYTES, "port {port} tx bytes: {now}");
    }
    assert!(evsd.counter("a", "rx_packets") > 0 && evsd.counter("b", "rx_packets") > 0);
    eprintln!(
        "    evsd: a rx {} tx {} drops {}, b rx {} tx {} drops {}",
        pa["rx_packets"],
        pa["tx_packets"],
        drops(&pa),
        pb["rx_packets"],
        pb["tx_packets"],
        drops(&pb)
    );

    // A security group on B that admits ICMP but no TCP, applied at run time: A's connection
    // attempts are dropped at B's ingress (counted on B), ping still answers; the original model
    // back, the same listener gets its data.
    let model = evsd.ctl(json!({"cmd": "show_model"}));
    let mut no_tcp = model.clone();
    no_tcp["security_groups"] = json!([{
        "name": "b-icmp-only",
        "rules": [{"direction": "ingress", "protocol": "icmp"}, {"direction": "egress"}],
    }]);
    for p in no_tcp["ports"].as_array_mut().unwrap() {
        if p["name"] == "b" {
            p["security_group"] = json!("b-icmp-only");
        }
    }
    let denied = |e: &Evsd| {
        e.port("b")["egress_drops"]["sg_ingress_denied"]
            .as_u64()
            .unwrap_or(0)
    };
    let denied0 = denied(&evsd);
    evsd.ctl(json!({"cmd": "apply", "model": no_tcp}));
    let rid = b.listen(5003);
    let sent = a.send_tcp(IP_B, 5003, BYTES);
    assert_ne!(
        field(&sent, "rc"),
        "0",
        "TCP to B must be refused now: {sent}"
    );
    assert!(
        denied(&evsd) > denied0,
        "SYNs dropped by B's security group: {}",
        evsd.port("b")
    );
    assert!(
        !b.console_text()
            .contains(&format!("EVS-TCP-RECEIVED id={rid} ")),
        "B accepted a connection its security group refuses:\n{}",
        b.console_text()
    );
    let p = a.ping(IP_B, 3);
    assert_ping_ok(&p, IP_B, 3);
    eprintln!(
        "    with b-icmp-only on B: TCP refused ({}; {} SYNs dropped), {p}",
        sent.split("err=").nth(1).unwrap_or("").trim(),
        denied(&evsd) - denied0
    );

    evsd.ctl(json!({"cmd": "apply", "model": model}));
    let sent = a.send_tcp(IP_B, 5003, BYTES);
    assert_eq!(field(&sent, "rc"), "0", "TCP to B allowed again: {sent}");
    let got = b.wait_line(&["EVS-TCP-RECEIVED"], Some(rid), T);
    assert_eq!(num(&got, "bytes"), BYTES, "{got}");
    assert_eq!(field(&got, "md5"), field(&sent, "md5"), "{got}\n{sent}");

    a.poweroff();
    b.poweroff();
    eprintln!("    done in {:.1} s", t0.elapsed().as_secs_f64());
}
