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

use evs_e2e::{serial, skip_unless_dpdk, unique, wait_for, Evsd, Proc};
use serde_json::{json, Value};
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Boot of two guests at once under TCG on a loaded 2-CPU machine: normally 3–6 s.
const BOOT: Duration = Duration::from_secs(120);
const T: Duration = Duration::from_secs(60);
const IP_A: &str = "10.0.0.10";
const IP_B: &str = "10.0.0.11";
const MAC_A: &str = "02:00:00:00:00:0a";
const MAC_B: &str = "02:00:00:00:00:0b";
/// Per TCP transfer (a multiple of 4096: the guest sends whole 4 KiB blocks of random data).
const BYTES: u64 = 4 << 20;

/// Runs `scripts/guest-image.sh`; returns (kernel, initrd) or why there is no image.
fn guest_image() -> Result<(PathBuf, PathBuf), String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/guest-image.sh");
    let t0 = Instant::now();
    let out = Command::new("bash")
        .arg(&script)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    let err = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        let tail: Vec<&str> = err.lines().rev().take(15).collect();
        return Err(format!(
            "{} failed ({}):\n{}",
            script.display(),
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        ));
    }
    let cache = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .map(PathBuf::from)
        .ok_or("guest-image.sh printed no cache directory")?;
    let (k, i) = (cache.join("vmlinuz"), cache.join("initrd.img"));
    if !k.is_file() || !i.is_file() {
        return Err(format!("no vmlinuz/initrd.img in {}", cache.display()));
    }
    if evs_e2e::which("qemu-system-x86_64").is_none() {
        return Err("qemu-system-x86_64 not installed".into());
    }
    eprintln!(
        "guest image: {} ({:.1} s): {}",
        cache.display(),
        t0.elapsed().as_secs_f64(),
        err.lines().last().unwrap_or("")
    );
    Ok((k, i))
}

/// A QEMU guest: its console file (markers out) and its command port (commands in).
struct Guest {
    name: String,
    proc: Proc,
    console: PathBuf,
    cmd: UnixStream,
    next_id: u32,
}

impl Guest {
    fn start(
        dir: &Path,
        name: &str,
        ip: &str,
        mac: &str,
        vhost: &Path,
        image: &(PathBuf, PathBuf),
    ) -> Guest {
        let console = dir.join(format!("{name}.console"));
        let cmd_sock = dir.join(format!("{name}.cmd"));
        let mut qemu = Command::new("qemu-system-x86_64");
        qemu.args(["-accel", "tcg", "-cpu", "max", "-m", "256", "-smp", "1"])
            .args([
                "-nodefaults",
                "-no-user-config",
                "-display",
                "none",
                "-no-reboot",
            ])
            .arg("-kernel")
            .arg(&image.0)
            .arg("-initrd")
            .arg(&image.1)
            .arg("-append")
            .arg(format!(
                "console=ttyS0 loglevel=3 panic=-1 evs.name={name} evs.ip={ip}/24"
            ))
            // vhost-user needs the guest's memory shared with the switch.
            .args(["-object", "memory-backend-memfd,id=mem,size=256M,share=on"])
            .args(["-numa", "node,memdev=mem"])
            .arg("-chardev")
            .arg(format!("socket,id=vhost0,path={}", vhost.display()))
            .args(["-netdev", "vhost-user,id=net0,chardev=vhost0"])
            // vectors=0: QEMU 7.2 with TCG + vhost-user + MSI-X segfaults when the driver starts.
            .arg("-device")
            .arg(format!("virtio-net-pci,netdev=net0,mac={mac},vectors=0"))
            .arg("-serial")
            .arg(format!("file:{}", console.display()))
            .arg("-chardev")
            .arg(format!(
                "socket,id=cmd0,path={},server=on,wait=off",
                cmd_sock.display()
            ))
            .args(["-serial", "chardev:cmd0"]);
        let mut proc = Proc::spawn(
            &format!("qemu-{name}"),
            &mut qemu,
            dir.join(format!("{name}.qemu.log")),
        );
        // The command connection stays open for the guest's life: QEMU drops what it has not
        // yet handed to the guest's UART when the connection closes.
        let cmd = wait_for(&format!("{name}'s command socket"), T, || {
            if let Some(s) = proc.exited() {
                panic!(
                    "QEMU for {name} exited at start ({s}):\n{}",
                    proc.log_text()
                );
            }
            UnixStream::connect(&cmd_sock).ok()
        });
        Guest {
            name: name.into(),
            proc,
            console,
            cmd,
            next_id: 1,
        }
    }

    fn console_text(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.console).unwrap_or_default()).into_owned()
    }

    /// The first console line containing one of `markers` (and ` id=ID ` when `id` is given),
    /// waiting up to `timeout`. A guest that stops or reports `EVS-ERROR` fails the test.
    fn wait_line(&mut self, markers: &[&str], id: Option<u32>, timeout: Duration) -> String {
        let what = format!("{} reporting {markers:?} (id {id:?})", self.name);
        let idf = id.map(|i| format!(" id={i} "));
        wait_for(&what, timeout, || {
            let text = self.console_text();
            for l in text.lines() {
                if let Some(p) = l.find("EVS-ERROR") {
                    panic!("{} reported {}\nconsole:\n{text}", self.name, &l[p..]);
                }
                let Some(p) = markers.iter().find_map(|m| l.find(m)) else {
                    continue;
                };
                let l = l[p..].trim_end();
                if idf
                    .as_ref()
                    .is_none_or(|f| format!("{l} ").contains(f.as_str()))
                {
                    return Some(l.to_string());
                }
            }
            if let Some(s) = self.proc.exited() {
                panic!(
                    "{} stopped ({s}) before {what}\nconsole:\n{text}",
                    self.name
                );
            }
            None
        })
    }

    /// Sends one command (see guest-image.sh's /init); returns its id.
    fn send(&mut self, cmd: &str) -> u32 {
        let id = self.next_id;
        self.next_id += 1;
        writeln!(self.cmd, "{id} {cmd}").expect("guest command port");
        id
    }

    fn ping(&mut self, ip: &str, count: u32) -> String {
        let id = self.send(&format!("ping {ip} {count}"));
        self.wait_line(&["EVS-PING-OK", "EVS-PING-FAIL"], Some(id), T)
    }

    /// Starts a one-connection TCP receiver; returns its id once the socket listens.
    fn listen(&mut self, port: u16) -> u32 {
        let id = self.send(&format!("listen {port}"));
        self.wait_line(&["EVS-LISTENING"], Some(id), T);
        id
    }

    /// Sends `bytes` of random data to `ip:port`; returns the sender's report.
    fn send_tcp(&mut self, ip: &str, port: u16, bytes: u64) -> String {
        let id = self.send(&format!("send {ip} {port} {bytes}"));
        self.wait_line(&["EVS-TCP-SENT"], Some(id), T)
    }

    fn poweroff(&mut self) {
        self.send("poweroff");
        let name = self.name.clone();
        wait_for(&format!("{name} powered off"), T, || self.proc.exited());
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let text = self.console_text();
            let lines: Vec<&str> = text.lines().collect();
            eprintln!(
                "----- console of guest {} ({}) -----\n{}\n-----",
                self.name,
                self.console.display(),
                lines[lines.len().saturating_sub(40)..].join("\n")
            );
        }
    }
}

/// `key=value` out of a marker line.
fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
}

fn num(line: &str, key: &str) -> u64 {
    field(line, key)
        .parse()
        .unwrap_or_else(|e| panic!("{key} in {line:?}: {e}"))
}

fn assert_ping_ok(line: &str, ip: &str, count: u64) {
    assert!(
        line.starts_with("EVS-PING-OK") && line.contains(&format!(" {ip} ")),
        "{line}"
    );
    assert_eq!(num(line, "received"), count, "every echo answered: {line}");
}

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
