//! `evsd ctl capture`, end to end: pcap files of a port's frames read back by `tcpdump -r`.
//!
//! ```text
//!   ns <lab>-h1-a  eth0 10.0.0.1 ─veth─ g-a ┐
//!                                           ├─ evsd (net_af_packet ports), one host of a lab
//!   ns <lab>-h1-b  eth0 10.0.0.2 ─veth─ g-b ┘
//! ```
//!
//! Two captures at once on different ports while A pings B and opens TCP connections to it:
//! on A, both directions, filter `icmp and dst host 10.0.0.2`, to a file (only A's echo
//! requests may appear: B's replies cross the same port and the TCP frames too); on B,
//! `--out --filter icmp -w - | tcpdump -r -` (the echo requests B is sent). Both end by
//! `--count`. Meanwhile a second capture on A is refused, unknown ports and bad filters get
//! errors that say what, and other `ctl` commands keep working. Then Ctrl-C ends a capture
//! with its summary, and the port can be captured again at once. Skips (loudly) without
//! tcpdump or the lab's requirements.

use evs_e2e::lab::{have, EvsdOptions, Lab, LabSpec};
use evs_e2e::{evsd_bin, wait_for, Proc};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

fn model() -> String {
    r#"
[[uplinks]]
name = "uplink"
vlans = ["100"]

[[port_groups]]
name = "web"
type = "access"
vlan = 100

[[ports]]
name = "a"
mac = "02:00:00:00:00:0a"
ips = ["10.0.0.1"]
port_group = "web"

[[ports]]
name = "b"
mac = "02:00:00:00:00:0b"
ips = ["10.0.0.2"]
port_group = "web"
"#
    .into()
}

/// `evsd ctl -s SOCK capture ARGS` in the background, its stderr (and stdout) to `log`.
fn capture(sock: &Path, args: &[&str], log: &Path) -> Proc {
    let mut c = Command::new(evsd_bin());
    c.args(["ctl", "-s"]).arg(sock).arg("capture").args(args);
    Proc::spawn("evsd ctl capture", &mut c, log.to_owned())
}

/// A shell pipeline in the background.
fn pipeline(cmd: &str, log: &Path) -> Proc {
    Proc::spawn(
        "capture pipeline",
        Command::new("sh").args(["-c", cmd]),
        log.to_owned(),
    )
}

/// `evsd ctl -s SOCK ARGS` to completion: (success, stdout + stderr).
fn ctl(sock: &Path, args: &[&str]) -> (bool, String) {
    let o = Command::new(evsd_bin())
        .args(["ctl", "-s"])
        .arg(sock)
        .args(args)
        .output()
        .expect("run evsd ctl");
    let text =
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    (o.status.success(), text)
}

/// The frames of a pcap file as `tcpdump -n -r` prints them, one line each.
fn tcpdump_read(file: &Path) -> Vec<String> {
    let o = Command::new("tcpdump")
        .args(["-n", "-r"])
        .arg(file)
        .output()
        .expect("run tcpdump");
    assert!(
        o.status.success(),
        "tcpdump -r {} failed: {}",
        file.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

fn wait_exit(p: &mut Proc, what: &str) -> std::process::ExitStatus {
    wait_for(what, T, || p.exited())
}

#[test]
fn capture_reads_back_with_tcpdump_filters_and_stops() {
    evs_e2e::skip_unless_lab!();
    if !have("tcpdump") {
        eprintln!("\n*** SKIPPING capture: tcpdump is not installed (scripts/setup.sh) ***\n");
        return;
    }
    let _g = evs_e2e::serial();
    let mut lab = Lab::new(LabSpec::hosts(1));
    let a = lab.add_ns_guest(0, "a", "02:00:00:00:00:0a", "10.0.0.1/24");
    let b = lab.add_ns_guest(0, "b", "02:00:00:00:00:0b", "10.0.0.2/24");
    lab.start_evsd(0, EvsdOptions::full(&model(), "uplink"));
    assert!(
        lab.ping_until(&a, &b.ip, T),
        "A cannot ping B\n{}",
        lab.dump()
    );
    let host = lab.host(0);
    let sock = host.control_socket.clone();
    let dir = host.dir.clone();

    // Refusals: each says what is wrong, and where.
    let (ok, text) = ctl(&sock, &["capture", "nope", "-w", "/dev/null"]);
    assert!(
        !ok && text.contains("\"nope\"") && text.contains("no port"),
        "{text}"
    );
    let (ok, text) = ctl(
        &sock,
        &[
            "capture",
            "a",
            "--filter",
            "icmp and hots 1.2.3.4",
            "-w",
            "/dev/null",
        ],
    );
    assert!(!ok && text.contains("column 10 (`hots`)"), "{text}");

    let file_a = dir.join("a.pcap");
    let mut cap_a = capture(
        &sock,
        &[
            "a",
            "--filter",
            "icmp and dst host 10.0.0.2",
            "--count",
            "4",
            "-w",
            file_a.to_str().unwrap(),
        ],
        &dir.join("cap-a.log"),
    );
    let file_b = dir.join("b.txt");
    let mut cap_b = pipeline(
        &format!(
            "{} ctl -s {} capture b --out --filter icmp -c 2 -w - | tcpdump -n -r - > {}",
            evsd_bin().display(),
            sock.display(),
            file_b.display()
        ),
        &dir.join("cap-b.log"),
    );
    // Started once the client says so (evsd answered: the taps are posted).
    for (p, what) in [(&cap_a, "capture on a"), (&cap_b, "capture on b")] {
        wait_for(&format!("{what} to start"), T, || {
            p.log_text().contains("capturing on").then_some(())
        });
    }
    let (ok, text) = ctl(&sock, &["capture", "a", "--in", "-w", "/dev/null"]);
    assert!(
        !ok && text.contains("\"a\"") && text.contains("already being captured"),
        "{text}"
    );
    let (ok, text) = ctl(&sock, &["show", "ports"]);
    assert!(ok && text.contains('a'), "ctl stays responsive: {text}");

    // Traffic the filters must leave out (TCP both ways, and B's echo replies), then pings
    // until both captures have their count.
    lab.tcp_check(&a, &b, 8080)
        .unwrap_or_else(|r| panic!("TCP A→B: {}", r.text));
    wait_for("both captures to reach their count", T, || {
        lab.ping(&a, &b.ip, 2, Duration::from_secs(2));
        (cap_a.exited().is_some() && cap_b.exited().is_some()).then_some(())
    });
    assert!(
        wait_exit(&mut cap_a, "capture a").success(),
        "{}",
        cap_a.log_text()
    );
    assert!(
        wait_exit(&mut cap_b, "capture b").success(),
        "{}",
        cap_b.log_text()
    );

    let lines = tcpdump_read(&file_a);
    assert_eq!(lines.len(), 4, "--count 4: {lines:#?}");
    for l in &lines {
        assert!(
            l.contains("IP 10.0.0.1 > 10.0.0.2: ICMP echo request"),
            "only A's echo requests: {l}"
        );
    }
    let log_a = cap_a.log_text();
    assert!(
        log_a.contains("4 packets captured") && log_a.contains("ended: count"),
        "{log_a}"
    );

    let piped = std::fs::read_to_string(&file_b).unwrap();
    let lines: Vec<&str> = piped.lines().collect();
    assert_eq!(lines.len(), 2, "-c 2 through the pipe: {piped}");
    for l in &lines {
        assert!(
            l.contains("IP 10.0.0.1 > 10.0.0.2: ICMP echo request"),
            "{l}"
        );
    }

    // Ctrl-C: evsd sends what it has and the summary; the port is free again at once.
    let file_c = dir.join("c.pcap");
    let mut cap_c = capture(
        &sock,
        &["a", "--in", "--nano", "-w", file_c.to_str().unwrap()],
        &dir.join("cap-c.log"),
    );
    wait_for("capture c to start", T, || {
        cap_c.log_text().contains("capturing on").then_some(())
    });
    // Some frames of A's, as A sent them (one ping is enough: the echo request).
    lab.ping(&a, &b.ip, 1, Duration::from_secs(2));
    wait_for("capture c to have frames", T, || {
        let n = std::fs::metadata(&file_c).map(|m| m.len()).unwrap_or(0);
        (n > 24).then_some(())
    });
    // SAFETY: signalling our own child by pid.
    unsafe {
        libc::kill(cap_c.pid(), libc::SIGINT);
    }
    assert!(wait_exit(&mut cap_c, "capture c after Ctrl-C").success());
    let log_c = cap_c.log_text();
    assert!(
        log_c.contains("packets captured") && log_c.contains("ended: client"),
        "{log_c}"
    );
    let lines = tcpdump_read(&file_c);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("IP 10.0.0.1 > 10.0.0.2: ICMP echo request")),
        "{lines:#?}"
    );
    assert!(
        lines.iter().all(|l| !l.contains("echo reply")),
        "--in: nothing sent to A: {lines:#?}"
    );
    // The port is free again: a new capture on it starts (and SIGTERM ends it the same way).
    let mut cap_d = capture(&sock, &["a", "-w", "/dev/null"], &dir.join("cap-d.log"));
    wait_for("capture d to start", T, || {
        let t = cap_d.log_text();
        assert!(!t.contains("error"), "{t}");
        t.contains("capturing on").then_some(())
    });
    assert!(cap_d.stop(T).is_some_and(|s| s.success()));
    assert!(cap_d.log_text().contains("ended: client"));
}
