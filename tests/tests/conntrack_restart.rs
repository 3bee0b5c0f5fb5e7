//! An established TCP session through a security group survives `kill -9` of evsd and a restart
//! (conntrack starts empty; `[switch] tcp_loose`, on by default, picks the session up in
//! mid-stream), while the direction the rules refuse stays refused; with `tcp_loose = false` the
//! same session's segments are invalid after a restart.
//!
//! ```text
//!   ns <lab>-h1-a  eth0 10.0.0.1 ─veth─ g-a ┐
//!                                           ├─ evsd (net_af_packet ports), one host of a lab
//!   ns <lab>-h1-b  eth0 10.0.0.2 ─veth─ g-b ┘
//! ```
//!
//! Both ports are in security group `web-sg`: egress anything, ingress TCP 5001 from 10.0.0.1
//! only. So A may open connections to B:5001 and B may not open any to A. Namespace guests sit
//! on veths, so their links stay up while evsd is down: the guests' TCP stacks just retransmit.
//! The stream is `nstool.py stream`: one socket, a line every 50 ms, echoed by B, never
//! reconnecting; it reports the bytes sent and echoed and its local port.

use evs_e2e::lab::{last_json, Bg, EvsdOptions, Guest, Lab, LabSpec};
use evs_e2e::wait_for;
use std::time::Duration;

/// Bound of waits that span an evsd restart and TCP's retransmission back-off.
const RESUME: Duration = Duration::from_secs(90);
const PORT: &str = "5001";

fn model() -> String {
    r#"
[[uplinks]]
name = "uplink"
vlans = ["100"]

[[port_groups]]
name = "web"
type = "access"
vlan = 100

[[security_groups]]
name = "web-sg"
rules = [
  { direction = "egress" },
  { direction = "ingress", protocol = "tcp", port_min = 5001, port_max = 5001, remote = { cidr = "10.0.0.1/32" } },
]

[[ports]]
name = "a"
mac = "02:00:00:00:00:0a"
ips = ["10.0.0.1"]
port_group = "web"
security_group = "web-sg"

[[ports]]
name = "b"
mac = "02:00:00:00:00:0b"
ips = ["10.0.0.2"]
port_group = "web"
security_group = "web-sg"
"#
    .into()
}

fn options(tcp_loose: bool) -> EvsdOptions {
    EvsdOptions {
        extra_toml: format!("\n[switch]\ntcp_loose = {tcp_loose}\n"),
        ..EvsdOptions::full(&model(), "uplink")
    }
}

/// The stream's latest report: (local port, bytes sent, bytes echoed).
fn progress(s: &Bg) -> (u64, u64, u64) {
    let text = s.proc.log_text();
    let j = last_json(&text);
    assert!(
        j.get("error").is_none_or(|e| e.is_null()),
        "the stream failed: {text}"
    );
    let n = |k: &str| j[k].as_u64().unwrap_or_else(|| panic!("no {k} in {j}"));
    (n("port"), n("sent"), n("echoed"))
}

fn drops(lab: &Lab, port: &str, reason: &str) -> u64 {
    let p = lab.host(0).port(port);
    p.drops.get(reason).copied().unwrap_or(0)
}

fn metric(lab: &Lab, name: &str) -> u64 {
    let m = lab
        .host(0)
        .ctl(&["metrics"])
        .unwrap_or_else(|e| panic!("{e}"));
    m.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in the metrics:\n{m}"))
}

/// A new connection `from` → `to`:5001 (3 s to connect and get its line echoed).
fn connects(lab: &Lab, from: &Guest, to: &Guest) -> bool {
    let r = lab.run(
        from,
        &[
            "connect",
            &to.ip,
            PORT,
            "--timeout",
            "3",
            "--payload",
            "new",
        ],
    );
    r.ok
}

/// Waits until the stream has bytes outstanding: sent while the switch is down, not echoed.
fn wait_outstanding(s: &Bg) -> u64 {
    wait_for(
        "the stream to have unechoed bytes while evsd is down",
        RESUME,
        || {
            let (_, sent, echoed) = progress(s);
            (sent >= echoed + 100).then_some(sent)
        },
    )
}

#[test]
fn tcp_session_survives_kill9_and_restart() {
    evs_e2e::skip_unless_lab!();
    let _g = evs_e2e::serial();
    let mut lab = Lab::new(LabSpec::hosts(1));
    let a = lab.add_ns_guest(0, "a", "02:00:00:00:00:0a", "10.0.0.1/24");
    let b = lab.add_ns_guest(0, "b", "02:00:00:00:00:0b", "10.0.0.2/24");
    lab.start_evsd(0, options(true));

    let mut srv_b = lab.spawn_tool(&b.ns, &["serve-tcp", PORT, "--seconds", "600"]);
    srv_b.wait_ready();
    let mut srv_a = lab.spawn_tool(&a.ns, &["serve-tcp", PORT, "--seconds", "600"]);
    srv_a.wait_ready();
    assert!(
        connects(&lab, &a, &b),
        "A→B:{PORT} must connect\n{}",
        lab.dump()
    );
    assert!(
        !connects(&lab, &b, &a),
        "B→A:{PORT} must be refused by web-sg"
    );

    let mut stream = lab.spawn_tool(&a.ns, &["stream", &b.ip, PORT, "--seconds", "600"]);
    stream.wait_ready();
    let (lport, _, _) = progress(&stream);

    // kill -9: no chance to save anything; the new evsd starts with an empty connection table.
    lab.kill9_evsd(0);
    let sent_down = wait_outstanding(&stream);
    lab.start_evsd(0, options(true));

    // Everything sent while evsd was down, and more, comes back on the same socket.
    let (port_after, _, echoed) = wait_for("the same stream to deliver again", RESUME, || {
        let p = progress(&stream);
        (p.2 > sent_down + 100).then_some(p)
    });
    assert_eq!(
        port_after, lport,
        "the stream reconnected instead of resuming"
    );
    assert!(stream.proc.exited().is_none(), "the stream ended");
    eprintln!("    stream resumed: {echoed} bytes echoed, {sent_down} sent before the restart");
    // Picked up in each port's zone it crosses (a's egress, b's ingress), in its real direction.
    assert!(metric(&lab, "evs_conntrack_picked_up_total") >= 2);
    let out = lab.host(0).ctl(&["--json", "show", "connections"]).unwrap();
    let conns: Vec<api::ConnectionEntry> = serde_json::from_str(&out).unwrap();
    for zone in ["a", "b"] {
        assert!(
            conns.iter().any(|e| e.port == zone
                && e.connection.picked_up
                && e.connection.state == "ESTABLISHED"
                && e.connection.src.to_string() == a.ip
                && e.connection.sport as u64 == lport
                && e.connection.dport.to_string() == PORT),
            "no picked-up A→B:{PORT} connection in {zone}'s zone: {conns:?}"
        );
    }
    // The restart opened nothing the rules refuse: B still cannot connect to A, and its SYNs
    // are dropped by A's ingress rules.
    let denied = drops(&lab, "b", "sg_ingress_denied");
    assert!(
        !connects(&lab, &b, &a),
        "B→A:{PORT} connects after the restart"
    );
    assert!(drops(&lab, "b", "sg_ingress_denied") > denied);
    assert!(
        connects(&lab, &a, &b),
        "a new A→B connection after the restart"
    );

    // The same with tcp_loose = false: the session's segments are invalid for the new evsd.
    lab.kill9_evsd(0);
    wait_outstanding(&stream);
    lab.start_evsd(0, options(false));
    wait_for(
        "A's retransmissions dropped as invalid without tcp_loose",
        RESUME,
        || (drops(&lab, "a", "ct_invalid") >= 2).then_some(()),
    );
    let (_, sent, echoed) = progress(&stream);
    assert!(
        echoed + 100 <= sent,
        "without tcp_loose the session must not resume (sent {sent}, echoed {echoed})"
    );
    assert_eq!(metric(&lab, "evs_conntrack_picked_up_total"), 0);
    drop(stream);
    drop(srv_a);
    drop(srv_b);
}
