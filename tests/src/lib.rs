//! Helpers for the end-to-end tests: child-process guards that always clean up, an evsd driver
//! that talks to the control socket, and a dpdk-testpmd "guest" whose port counters we can read.
//!
//! Every wait is a bounded poll on an observable condition (control socket, testpmd's periodic
//! stats), never a fixed sleep.

pub mod lab;
pub mod qemu;
pub mod reap;

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The machine has 2 cores: tests that each start a switch and guests must not overlap.
static SERIAL: Mutex<()> = Mutex::new(());

pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// Why this environment cannot run DPDK end-to-end tests, if it cannot.
pub fn skip_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root (DPDK vhost/virtio_user need root here)".into());
    }
    if which("dpdk-testpmd").is_none() {
        return Some(
            "dpdk-testpmd not installed (apt-get install dpdk, see scripts/setup.sh)".into(),
        );
    }
    None
}

/// Prints the reason loudly and tells the test to return.
#[macro_export]
macro_rules! skip_unless_dpdk {
    () => {
        $crate::evsd_bin!();
        if let Some(r) = $crate::skip_reason() {
            eprintln!("\n*** SKIPPING {}: {r} ***\n", module_path!());
            return;
        }
    };
}

pub fn which(bin: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(bin))
            .find(|f| f.is_file())
    })
}

static UNIQUE: AtomicU32 = AtomicU32::new(0);

/// A name unique to this test process and call, for DPDK file prefixes.
pub fn unique(tag: &str) -> String {
    format!(
        "{tag}{}x{}",
        std::process::id(),
        UNIQUE.fetch_add(1, Ordering::Relaxed)
    )
}

/// Polls `f` every 50 ms until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A child process that is stopped (SIGTERM, then SIGKILL) when dropped, even on panic; on a
/// failing test its log tail is printed.
pub struct Proc {
    pub name: String,
    pub child: Option<Child>,
    pub log: PathBuf,
    /// DPDK's per-prefix runtime directory, removed after the process is gone.
    pub runtime_dir: Option<PathBuf>,
}

impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command, log: PathBuf) -> Proc {
        let f = std::fs::File::create(&log).expect("log file");
        let f2 = f.try_clone().expect("log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(f)
            .stderr(f2)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc {
            name: name.into(),
            child: Some(child),
            log,
            runtime_dir: None,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(-1)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Exit status if it has exited (the zombie is reaped later, see [`reap`]).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_ref().and_then(reap::exit_status)
    }

    /// Sends SIGTERM and waits (bounded) for the exit; SIGKILL after `grace`. Reaping happens
    /// on another thread (see [`reap`]).
    pub fn stop(&mut self, grace: Duration) -> Option<std::process::ExitStatus> {
        let c = self.child.take()?;
        // SAFETY: signalling our own child by pid (not reaped yet, so the pid is still ours).
        unsafe {
            libc::kill(c.id() as i32, libc::SIGTERM);
        }
        match reap::wait_exit(&c, grace) {
            Some(s) => {
                reap::reap_later(c);
                Some(s)
            }
            None => reap::kill(c),
        }
    }

    /// SIGKILL, as in a crash; waits (bounded) for the exit.
    pub fn kill(&mut self) -> Option<std::process::ExitStatus> {
        reap::kill(self.child.take()?)
    }

    fn tail(&self, n: usize) -> String {
        let t = self.log_text();
        let lines: Vec<&str> = t.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.stop(Duration::from_secs(5));
        }
        if let Some(d) = &self.runtime_dir {
            let _ = std::fs::remove_dir_all(d);
        }
        if std::thread::panicking() {
            eprintln!(
                "----- last lines of {} ({}) -----\n{}\n-----",
                self.name,
                self.log.display(),
                self.tail(40)
            );
        }
    }
}

static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Records the evsd binary cargo built for the integration tests (see [`evsd_bin!`]).
pub fn set_bin(p: &str) {
    let _ = BIN.set(PathBuf::from(p));
}

/// Path of the evsd binary built for the tests (`EVSD_BIN` overrides, e.g. a release build).
pub fn evsd_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("EVSD_BIN") {
        return p.into();
    }
    BIN.get()
        .cloned()
        .expect("call evs_e2e::evsd_bin!() in the test first")
}

/// Only integration tests see `CARGO_BIN_EXE_*`: this expands there and records it.
#[macro_export]
macro_rules! evsd_bin {
    () => {{
        $crate::set_bin(env!("CARGO_BIN_EXE_evsd-e2e"));
        $crate::evsd_bin()
    }};
}

/// The `[eal]` and `[dataplane]` sections the end-to-end tests share: no hugepages, forwarding on
/// CPU 1 with a short idle sleep (guests share the two CPUs with the switch), the control socket
/// and the state directory in `dir` (never the host's `/var/lib/evs`: a test's run-time changes
/// must not become another run's starting point). `extra` goes at the end of `[dataplane]` (e.g.
/// `metrics_listen = "127.0.0.1:0"`).
pub fn base_config(dir: &Path, prefix: &str, extra: &str) -> String {
    format!(
        r#"
[eal]
no_huge = true
memory_mb = 256
file_prefix = "{prefix}"
args = ["--no-pci", "--log-level=lib.eal:notice"]

[dataplane]
cores = [1]
idle_sleep_us = 20
mbufs = 4095
control_socket = "{dir}/evsd.sock"
state_dir = "{dir}/state"
{extra}
"#,
        dir = dir.display()
    )
}

/// A running evsd with its control socket.
pub struct Evsd {
    pub proc: Proc,
    pub socket: PathBuf,
    pub config: PathBuf,
}

impl Evsd {
    /// Writes `config` into `dir` and starts evsd; returns once the control socket answers.
    pub fn start(dir: &Path, name: &str, config: &str) -> Evsd {
        let cfg = dir.join(format!("{name}.toml"));
        std::fs::write(&cfg, config).unwrap();
        Evsd::run(dir, name, &cfg, &[])
    }

    /// Starts evsd on the config file `cfg` with more `evsd run` arguments (`--discard-state`),
    /// logging to `dir/name.log`; returns once the control socket answers. Starting twice from
    /// one file is a restart with the same boot config.
    pub fn run(dir: &Path, name: &str, cfg: &Path, args: &[&str]) -> Evsd {
        let config = std::fs::read_to_string(cfg).expect("config file");
        let socket = control_socket_of(&config).expect("config sets dataplane.control_socket");
        let mut proc = Proc::spawn(
            name,
            Command::new(evsd_bin())
                .args(["run", "-c"])
                .arg(cfg)
                .args(args),
            dir.join(format!("{name}.log")),
        );
        proc.runtime_dir = file_prefix_of(&config).map(|p| Path::new("/var/run/dpdk").join(p));
        let mut e = Evsd {
            proc,
            socket,
            config: cfg.to_path_buf(),
        };
        wait_for("evsd control socket", Duration::from_secs(30), || {
            if let Some(s) = e.proc.exited() {
                panic!("evsd exited during start-up ({s}):\n{}", e.proc.log_text());
            }
            e.try_ctl(&json!({"cmd": "show_threads"})).ok()
        });
        e
    }

    /// `kill -9`: the process gets no chance to save, answer or clean up anything, as in a
    /// crash. Its DPDK runtime directory stays too, as it would (the next evsd with the same
    /// file prefix takes it over).
    pub fn kill9(mut self) {
        assert!(self.proc.kill().is_some(), "evsd did not die of SIGKILL");
        self.proc.runtime_dir = None;
    }

    pub fn try_ctl(&self, req: &Value) -> Result<Value, String> {
        let s = UnixStream::connect(&self.socket).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(30))).ok();
        let mut w = s.try_clone().map_err(|e| e.to_string())?;
        writeln!(w, "{req}").map_err(|e| e.to_string())?;
        let mut line = String::new();
        BufReader::new(s)
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        serde_json::from_str(&line).map_err(|e| format!("{e}: {line:?}"))
    }

    /// Sends a request that must succeed; returns its result.
    pub fn ctl(&self, req: Value) -> Value {
        let r = self
            .try_ctl(&req)
            .unwrap_or_else(|e| panic!("control request {req} failed: {e}"));
        assert_eq!(r["ok"], json!(true), "request {req} answered {r}");
        r["result"].clone()
    }

    pub fn port(&self, name: &str) -> Value {
        let ports = self.ctl(json!({"cmd": "show_ports"}));
        ports
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no port {name} in {ports}"))
    }

    pub fn counter(&self, port: &str, field: &str) -> u64 {
        self.port(port)[field].as_u64().unwrap_or(0)
    }

    pub fn wait_state(&self, port: &str, state: &str, timeout: Duration) {
        wait_for(&format!("port {port} {state}"), timeout, || {
            (self.port(port)["state"] == state).then_some(())
        });
    }
}

fn toml_string(config: &str, key: &str) -> Option<String> {
    config.lines().find_map(|l| {
        let v = l.trim().strip_prefix(key)?.trim().strip_prefix('=')?;
        Some(v.trim().trim_matches('"').to_string())
    })
}

fn control_socket_of(config: &str) -> Option<PathBuf> {
    toml_string(config, "control_socket").map(PathBuf::from)
}

fn file_prefix_of(config: &str) -> Option<String> {
    toml_string(config, "file_prefix")
}

/// What a testpmd guest does with its ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Generate 64-byte UDP frames.
    TxOnly,
    /// Count and drop what arrives.
    RxOnly,
    /// Forward between its ports.
    Io,
}

/// dpdk-testpmd playing a guest with one virtio_user port per socket.
pub struct Testpmd {
    pub proc: Proc,
}

impl Testpmd {
    /// `server`: virtio_user creates the socket (the switch is then a vhost-user client); note
    /// that testpmd blocks in EAL init until the switch connects.
    pub fn start(dir: &Path, name: &str, sockets: &[&Path], server: bool, mode: Mode) -> Testpmd {
        Testpmd::start_on(dir, name, sockets, server, mode, 1)
    }

    /// As [`Testpmd::start`], with the guest's forwarding thread on CPU `core` (0 or 1; the
    /// other CPU gets testpmd's mostly idle main thread).
    pub fn start_on(
        dir: &Path,
        name: &str,
        sockets: &[&Path],
        server: bool,
        mode: Mode,
        core: u32,
    ) -> Testpmd {
        let prefix = unique(&format!("evs-e2e-{name}-"));
        let mut cmd = Command::new("stdbuf");
        cmd.args(["-oL", "dpdk-testpmd", "-l", "0,1", "--no-huge", "-m", "256"])
            .arg(format!("--main-lcore={}", 1 - core.min(1)))
            .args(["--no-pci", "--file-prefix", &prefix])
            .arg("--log-level=lib.eal:notice");
        for (i, s) in sockets.iter().enumerate() {
            cmd.arg(format!(
                "--vdev=virtio_user{i},path={},queues=1{}",
                s.display(),
                if server { ",server=1" } else { "" }
            ));
        }
        let fwd = match mode {
            Mode::TxOnly => "txonly",
            Mode::RxOnly => "rxonly",
            Mode::Io => "io",
        };
        cmd.args([
            "--",
            "--nb-cores=1",
            "--total-num-mbufs=8192",
            "--stats-period=1",
        ])
        .arg(format!("--forward-mode={fwd}"));
        let mut proc = Proc::spawn(name, &mut cmd, dir.join(format!("{name}.log")));
        proc.runtime_dir = Some(Path::new("/var/run/dpdk").join(prefix));
        Testpmd { proc }
    }

    /// The last `RX-packets` / `TX-packets` testpmd printed for port `port` (cumulative).
    pub fn stats(&self, port: usize) -> (u64, u64) {
        let log = self.proc.log_text();
        let header = format!("NIC statistics for port {port}");
        let mut rx = 0;
        let mut tx = 0;
        let mut inside = false;
        for l in log.lines() {
            if l.contains("NIC statistics for port") {
                inside = l.contains(&header);
                continue;
            }
            if !inside {
                continue;
            }
            let num = |key: &str| -> Option<u64> {
                let rest = l.split(key).nth(1)?;
                rest.split_whitespace().next()?.parse().ok()
            };
            if let Some(v) = num("RX-packets:") {
                rx = v;
            }
            if let Some(v) = num("TX-packets:") {
                tx = v;
            }
        }
        (rx, tx)
    }
}

/// `evs-sink` (this crate's binary): a virtio_user receiver that drains no faster than a set
/// rate, i.e. a network slower than what the switch sends it.
pub struct Sink {
    pub proc: Proc,
}

impl Sink {
    /// `bin`: `env!("CARGO_BIN_EXE_evs-sink")` from the integration test.
    pub fn start(bin: &str, dir: &Path, name: &str, socket: &Path, rate_pps: u64) -> Sink {
        let prefix = unique(&format!("evs-e2e-{name}-"));
        let mut cmd = Command::new(bin);
        cmd.arg("--vdev")
            .arg(format!("virtio_user0,path={},queues=1", socket.display()))
            .args([
                "--rate-pps",
                &rate_pps.to_string(),
                "--file-prefix",
                &prefix,
            ]);
        let mut proc = Proc::spawn(name, &mut cmd, dir.join(format!("{name}.log")));
        proc.runtime_dir = Some(Path::new("/var/run/dpdk").join(prefix));
        Sink { proc }
    }

    /// What the sink has received so far: (total, by outer VLAN id), from its latest report.
    pub fn counts(&self) -> (u64, std::collections::BTreeMap<u16, u64>) {
        let log = self.proc.log_text();
        let last = log.lines().rev().find_map(|l| {
            serde_json::from_str::<Value>(l)
                .ok()
                .filter(|v| v["rx"].is_u64())
        });
        let Some(v) = last else {
            return (0, Default::default());
        };
        let vlans = v["vlans"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, n)| Some((k.parse().ok()?, n.as_u64()?)))
                    .collect()
            })
            .unwrap_or_default();
        (v["rx"].as_u64().unwrap_or(0), vlans)
    }
}
