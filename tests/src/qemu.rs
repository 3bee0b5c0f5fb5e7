//! Real Linux guests under QEMU (TCG: no hardware virtualization needed) on a vhost-user socket:
//! Debian's cloud kernel and a busybox initramfs built and cached by `scripts/guest-image.sh`.
//! A guest reports on its serial console (`EVS-READY`, `EVS-PING-OK ...`, `EVS-TCP-RECEIVED ...`,
//! see the script's /init) and takes commands on a second serial port; every wait is a bounded
//! poll of the console file.

use crate::{wait_for, Proc};
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Boot of two guests at once under TCG on a loaded 2-CPU machine: normally 3–6 s.
pub const BOOT: Duration = Duration::from_secs(120);
/// Any one command of a guest.
pub const T: Duration = Duration::from_secs(60);

/// Runs `scripts/guest-image.sh`; returns (kernel, initrd) or why there is no image.
pub fn guest_image() -> Result<(PathBuf, PathBuf), String> {
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
    if crate::which("qemu-system-x86_64").is_none() {
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
pub struct Guest {
    pub name: String,
    pub proc: Proc,
    console: PathBuf,
    cmd: UnixStream,
    next_id: u32,
}

impl Guest {
    pub fn start(
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

    pub fn console_text(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.console).unwrap_or_default()).into_owned()
    }

    /// The first console line containing one of `markers` (and ` id=ID ` when `id` is given),
    /// waiting up to `timeout`. A guest that stops or reports `EVS-ERROR` fails the test.
    pub fn wait_line(&mut self, markers: &[&str], id: Option<u32>, timeout: Duration) -> String {
        let what = format!("{} reporting {markers:?} (id {id:?})", self.name);
        let idf = id.map(|i| format!(" id={i} "));
        wait_for(&what, timeout, || {
            let text = self.console_text();
            // Only whole lines: the serial console writes a long report in pieces, and a
            // marker line read half-written lacks its last fields.
            let whole = text.rfind('\n').map_or("", |end| &text[..end]);
            for l in whole.lines() {
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
    pub fn send(&mut self, cmd: &str) -> u32 {
        let id = self.next_id;
        self.next_id += 1;
        writeln!(self.cmd, "{id} {cmd}").expect("guest command port");
        id
    }

    pub fn ping(&mut self, ip: &str, count: u32) -> String {
        let id = self.send(&format!("ping {ip} {count}"));
        self.wait_line(&["EVS-PING-OK", "EVS-PING-FAIL"], Some(id), T)
    }

    /// Starts a one-connection TCP receiver; returns its id once the socket listens.
    pub fn listen(&mut self, port: u16) -> u32 {
        let id = self.send(&format!("listen {port}"));
        self.wait_line(&["EVS-LISTENING"], Some(id), T);
        id
    }

    /// Sends `bytes` of random data to `ip:port`; returns the sender's report.
    pub fn send_tcp(&mut self, ip: &str, port: u16, bytes: u64) -> String {
        let id = self.send(&format!("send {ip} {port} {bytes}"));
        self.wait_line(&["EVS-TCP-SENT"], Some(id), T)
    }

    pub fn poweroff(&mut self) {
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
pub fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
}

pub fn num(line: &str, key: &str) -> u64 {
    field(line, key)
        .parse()
        .unwrap_or_else(|e| panic!("{key} in {line:?}: {e}"))
}

pub fn assert_ping_ok(line: &str, ip: &str, count: u64) {
    assert!(
        line.starts_with("EVS-PING-OK") && line.contains(&format!(" {ip} ")),
        "{line}"
    );
    assert_eq!(num(line, "received"), count, "every echo answered: {line}");
}
