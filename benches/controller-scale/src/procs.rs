//! The processes under test: `dvs-controller` (the real release binary) and, for the etcd runs,
//! a 3-member etcd cluster on loopback (Debian's `etcd-server`), each on free ports with temporary
//! data dirs, stopped (SIGKILL, then reaped) when dropped. Also their memory and CPU time, read
//! from `/proc`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Free loopback ports, all held until every one is chosen so that they are distinct (one can
/// still be taken by someone else before the child binds it: starts are retried).
pub fn free_ports(n: usize) -> Vec<u16> {
    let ls: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("a free loopback port"))
        .collect();
    ls.iter().map(|l| l.local_addr().unwrap().port()).collect()
}

/// A bare HTTP/1.0 GET on loopback (no client library needed for a health probe).
pub fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(
        &format!("127.0.0.1:{port}").parse().unwrap(),
        Duration::from_millis(500),
    )
    .ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    // Servers answer an HTTP/1.0 request as 1.0 or 1.1.
    let ok = body.starts_with("HTTP/1.") && body.get(8..13) == Some(" 200 ");
    ok.then(|| body.split("\r\n\r\n").nth(1).unwrap_or("").to_owned())
}

/// A child process that is killed when dropped.
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn exited(&mut self) -> Option<String> {
        self.child
            .try_wait()
            .ok()
            .flatten()
            .map(|s| format!("{} exited: {s}; log {}", self.name, self.log.display()))
    }

    pub fn log_tail(&self) -> String {
        let t = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = t.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Words put before every child's command line (`--child-prefix`), e.g. `chrt --other 0` to
/// give the controller and etcd the normal scheduling class when the benchmark itself (the
/// simulated hosts) runs as `SCHED_IDLE`.
static PREFIX: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();

pub fn set_child_prefix(words: Vec<String>) {
    let _ = PREFIX.set(words);
}

fn spawn(name: &str, bin: &Path, args: &[String], log: PathBuf) -> Proc {
    let f = std::fs::File::create(&log).expect("log file");
    let prefix = PREFIX.get().cloned().unwrap_or_default();
    let mut cmd = match prefix.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(bin);
            c
        }
        None => Command::new(bin),
    };
    let child = cmd
        .args(args)
        .stdin(Stdio::null())
        .stdout(f.try_clone().unwrap())
        .stderr(f)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
    Proc {
        name: name.into(),
        child,
        log,
    }
}

/// A 3-member (or `size`) etcd cluster on loopback.
pub struct Etcd {
    pub members: Vec<Proc>,
    pub client_ports: Vec<u16>,
}

impl Etcd {
    pub fn start(bin: &Path, size: usize, dir: &Path) -> Result<Etcd, String> {
        let mut why = String::new();
        for attempt in 0..3 {
            let ports = free_ports(size * 2);
            let peers: Vec<String> = (0..size)
                .map(|i| format!("m{i}=http://127.0.0.1:{}", ports[2 * i + 1]))
                .collect();
            let members: Vec<Proc> = (0..size)
                .map(|i| {
                    let client = format!("http://127.0.0.1:{}", ports[2 * i]);
                    let peer = format!("http://127.0.0.1:{}", ports[2 * i + 1]);
                    let data = dir.join(format!("etcd-{attempt}-m{i}"));
                    let args: Vec<String> = [
                        "--name",
                        &format!("m{i}"),
                        "--data-dir",
                        data.to_str().unwrap(),
                        "--listen-client-urls",
                        &client,
                        "--advertise-client-urls",
                        &client,
                        "--listen-peer-urls",
                        &peer,
                        "--initial-advertise-peer-urls",
                        &peer,
                        "--initial-cluster",
                        &peers.join(","),
                        "--initial-cluster-state",
                        "new",
                        "--initial-cluster-token",
                        &format!("evs-bench-{}-{}", std::process::id(), ports[0]),
                        // The default 2 GiB backend quota is reached by a 10,000-host definition
                        // plus its history; the benchmark compacts nothing, so give it room.
                        "--quota-backend-bytes",
                        "8589934592",
                        "--logger",
                        "zap",
                        "--log-level",
                        "warn",
                    ]
                    .iter()
                    .map(|s| s.to_string())
                    .collect();
                    spawn(
                        &format!("etcd m{i}"),
                        bin,
                        &args,
                        dir.join(format!("etcd-{attempt}-m{i}.log")),
                    )
                })
                .collect();
            let mut e = Etcd {
                members,
                client_ports: (0..size).map(|i| ports[2 * i]).collect(),
            };
            match e.wait_ready() {
                Ok(()) => return Ok(e),
                Err(w) => why = w,
            }
        }
        Err(why)
    }

    /// Every member answers `/health` with a leader elected: at most 30 s.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        for i in 0..self.members.len() {
            loop {
                if let Some(e) = self.members[i].exited() {
                    return Err(format!("{e}\n{}", self.members[i].log_tail()));
                }
                if http_get(self.client_ports[i], "/health").is_some_and(|b| b.contains("true")) {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(format!("etcd m{i} not healthy after 30 s"));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Ok(())
    }

    pub fn endpoints(&self) -> String {
        self.client_ports
            .iter()
            .map(|p| format!("http://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

pub struct Controller {
    pub proc: Proc,
    pub port: u16,
}

impl Controller {
    /// `etcd`: client URLs, or `None` for the embedded store in `dir`.
    pub fn start(bin: &Path, dir: &Path, etcd: Option<&str>) -> Result<Controller, String> {
        let mut why = String::new();
        for attempt in 0..3 {
            let port = free_ports(1)[0];
            let mut args = vec!["--listen".to_string(), format!("127.0.0.1:{port}")];
            match etcd {
                Some(e) => args.extend(["--etcd".to_string(), e.to_string()]),
                None => args.extend([
                    "--db".to_string(),
                    dir.join("controller.redb").display().to_string(),
                ]),
            }
            // EVS_BENCH_LOGS=DIR keeps the controller's log after the run.
            let logs = std::env::var_os("EVS_BENCH_LOGS").map_or(dir.to_owned(), PathBuf::from);
            let mut proc = spawn(
                "dvs-controller",
                bin,
                &args,
                logs.join(format!("controller-{attempt}.log")),
            );
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if let Some(e) = proc.exited() {
                    why = format!("{e}\n{}", proc.log_tail());
                    break;
                }
                if http_get(port, "/healthz").is_some() {
                    return Ok(Controller { proc, port });
                }
                if Instant::now() > deadline {
                    why = "dvs-controller did not answer /healthz in 20 s".into();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Err(why)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// A process's memory and CPU time, from `/proc/<pid>/status` and `/proc/<pid>/stat`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcStats {
    pub rss_kib: u64,
    pub hwm_kib: u64,
    pub threads: u64,
    /// User + system CPU seconds since the process started.
    pub cpu_s: f64,
}

/// Clock ticks per second of `/proc/<pid>/stat` (USER_HZ): 100 on every Linux architecture
/// this project builds for, and not changeable at run time.
const USER_HZ: f64 = 100.0;

pub fn stats(pid: u32) -> ProcStats {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name (field 2) may contain spaces: count fields after its closing ')'.
    let after = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line: 11 and 12 counted from the state (3).
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    ProcStats {
        rss_kib: field("VmRSS:"),
        hwm_kib: field("VmHWM:"),
        threads: field("Threads:"),
        cpu_s: (ticks(11) + ticks(12)) as f64 / USER_HZ,
    }
}

/// The sum over several processes (the etcd members).
pub fn stats_sum(pids: &[u32]) -> ProcStats {
    pids.iter()
        .map(|&p| stats(p))
        .fold(ProcStats::default(), |a, s| ProcStats {
            rss_kib: a.rss_kib + s.rss_kib,
            hwm_kib: a.hwm_kib + s.hwm_kib,
            threads: a.threads + s.threads,
            cpu_s: a.cpu_s + s.cpu_s,
        })
}
