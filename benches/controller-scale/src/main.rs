//! # evs-controller-bench: `dvs-controller` at scale
//!
//! One run = one store and one size: it starts the real `dvs-controller` binary (on a temporary
//! embedded store, or on a 3-member etcd cluster on loopback that it starts itself), defines a
//! DVS with `--hosts` hosts × `--ports` ports through the API, runs one simulated host agent per
//! host in this process (the real [`dvs_agent::Agent`] driving a [`sim::SimSwitch`] that compiles
//! each slice with flowtable), and measures:
//!
//! * **change → applied everywhere**: one port group's `dhcp_isolation` toggled, `--changes`
//!   times, for a group on every host and for one on every tenth host; per change, the time from
//!   sending the transaction until the last affected agent has applied the new slice (its switch finished the `Apply`)
//!   (seen from the agents' side), and what `--wait=hosts` reported;
//! * **agent resync**: one more host with `--resync-ports` ports; its agent started without
//!   state (full slice), then "killed" and restarted on its saved slice (fingerprint unchanged:
//!   nothing to send), then restarted with its state lost (full slice again);
//! * the controller's (and etcd's) RSS and CPU time, at idle and after each phase, and this
//!   process's (the agents').
//!
//! It prints a table and appends a JSON record to `--out`. `benches/controller-scale.sh` runs
//! the matrix. Everything it starts is on loopback and is killed when the run ends.

#![forbid(unsafe_code)]

mod costs;
mod procs;
mod sim;
mod topo;

use api::dvs::{ControllerClient, TxnOp, TxnReply, TxnRequest};
use clap::Parser;
use dvs_agent::{Agent, AgentConfig};
use model::Object;
use procs::{stats, stats_sum, ProcStats};
use serde_json::{json, Value};
use sim::{Expect, Kill, Probe, SimSwitch};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(about = "dvs-controller at scale: simulated host agents against the real controller")]
struct Args {
    /// `embedded` (redb in a temporary directory) or `etcd` (a 3-member cluster on loopback).
    #[arg(long, default_value = "embedded")]
    store: String,
    #[arg(long, default_value_t = 100)]
    hosts: usize,
    /// Ports per host.
    #[arg(long, default_value_t = 100)]
    ports: usize,
    /// Changes of the group used on every host.
    #[arg(long, default_value_t = 30)]
    changes: usize,
    /// Changes of the group used on every tenth host.
    #[arg(long, default_value_t = 10)]
    sparse_changes: usize,
    /// Ports of the resync host (0: no resync run).
    #[arg(long, default_value_t = 20000)]
    resync_ports: usize,
    /// Compile each slice with flowtable on this many hosts only (the others validate the
    /// model); default: every host.
    #[arg(long)]
    compile_sample: Option<usize>,
    /// Stack of each agent thread, KiB.
    #[arg(long, default_value_t = 1024)]
    stack_kib: usize,
    /// How long to wait for every affected host, per change and for convergence, seconds.
    #[arg(long, default_value_t = 120)]
    timeout_s: u64,
    /// The controller binary; default: `dvs-controller` next to this binary.
    #[arg(long)]
    controller_bin: Option<PathBuf>,
    /// The etcd binary; default: `etcd` on PATH.
    #[arg(long, default_value = "etcd")]
    etcd_bin: PathBuf,
    /// Results file (a JSON object with a `runs` array; this run is appended).
    #[arg(long)]
    out: Option<PathBuf>,
    /// A command prefix for the controller and etcd, split on spaces (`chrt --other 0`: see
    /// benches/controller-scale.sh, which runs the simulated hosts as SCHED_IDLE so that 1,000
    /// agent threads on 2 cores do not starve the controller they are measuring).
    #[arg(long, default_value = "")]
    child_prefix: String,
    /// Only time the controller's model work (copy, validate, affected hosts, slices) for this
    /// size in memory, and exit: no controller, no agents.
    #[arg(long)]
    costs: bool,
}

/// Ports one flowtable switch can hold, plus one (`flowtable::compiler`'s `MAX_PORTS`).
const FLOWTABLE_MAX_PORTS: usize = 4096;

fn say(msg: impl AsRef<str>) {
    println!("# {}", msg.as_ref());
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Nearest-rank percentile of `v` (sorted in place), `None` if empty.
fn pct(v: &mut [f64], p: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
    Some(v[rank.min(v.len()) - 1])
}

fn summary(v: &[f64]) -> Value {
    let mut v = v.to_vec();
    json!({
        "n": v.len(),
        "p50": pct(&mut v, 50.0),
        "p99": pct(&mut v, 99.0),
        "max": pct(&mut v, 100.0),
    })
}

fn stats_json(s: ProcStats) -> Value {
    json!({
        "rss_mib": s.rss_kib as f64 / 1024.0,
        "hwm_mib": s.hwm_kib as f64 / 1024.0,
        "threads": s.threads,
        "cpu_s": s.cpu_s,
    })
}

/// Days since 1970-01-01 to (year, month, day), for the results file's name.
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (y, m, d) = civil(secs.div_euclid(86_400));
    format!("{y:04}{m:02}{d:02}")
}

fn host_index(name: &str) -> Option<usize> {
    name.strip_prefix('h')?.parse().ok()
}

/// Starts one agent thread: restore (if asked), then follow the controller until `stop`.
/// `restored` receives how long the restore took.
#[allow(clippy::too_many_arguments)]
fn spawn_agent(
    url: &str,
    host: &str,
    token: &str,
    state_dir: PathBuf,
    switch: SimSwitch,
    stop: Arc<AtomicBool>,
    stack: usize,
    restored: Option<Arc<Mutex<Option<Duration>>>>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let cfg = AgentConfig {
        controller: url.into(),
        host: host.into(),
        token: Some(token.into()),
        ca_file: None,
        state_dir,
    };
    std::thread::Builder::new()
        .name(format!("agent-{host}"))
        .stack_size(stack)
        .spawn(move || {
            let start = Instant::now();
            let mut a = Agent::new(cfg, switch).expect("an agent without a CA file");
            if let Err(e) = a.restore() {
                eprintln!("bench: agent {}: restore: {e}", a.applied_revision());
            }
            if let Some(r) = restored {
                *r.lock().unwrap() = Some(start.elapsed());
            }
            a.run(&stop);
        })
}

/// Waits until every host of `hosts` is done (per the probe) or `limit` passes; returns the
/// hosts still missing.
fn wait_done(probe: &Probe, hosts: &[usize], limit: Duration) -> Vec<usize> {
    wait_marked(hosts, limit, |h| probe.done_at(h))
}

/// Hosts of `hosts` that `mark` still gives no time for after `limit`.
fn wait_marked(
    hosts: &[usize],
    limit: Duration,
    mark: impl Fn(usize) -> Option<Instant>,
) -> Vec<usize> {
    let deadline = Instant::now() + limit;
    let mut missing: Vec<usize> = hosts.to_vec();
    loop {
        missing.retain(|&h| mark(h).is_none());
        if missing.is_empty() || Instant::now() > deadline {
            return missing;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

struct Ctx {
    op: ControllerClient,
    probe: Arc<Probe>,
    controller_pid: u32,
    etcd_pids: Vec<u32>,
    timeout: Duration,
}

impl Ctx {
    fn snapshot(&self) -> Value {
        json!({
            "controller": stats_json(stats(self.controller_pid)),
            "etcd": if self.etcd_pids.is_empty() { Value::Null } else { stats_json(stats_sum(&self.etcd_pids)) },
            "bench_agents": stats_json(stats(std::process::id())),
        })
    }

    fn cpu(&self) -> (f64, f64, f64) {
        (
            stats(self.controller_pid).cpu_s,
            stats_sum(&self.etcd_pids).cpu_s,
            stats(std::process::id()).cpu_s,
        )
    }
}

/// `count` changes of one group (`object(value)`, switch name `group`), each waited for.
fn series(
    cx: &Ctx,
    label: &str,
    object: fn(bool) -> Object,
    group: &str,
    expected: &[usize],
    count: usize,
) -> Value {
    let mut value = false;
    let (mut last, mut per_host, mut waited, mut txn_ms) = (vec![], vec![], vec![], vec![]);
    let mut incomplete = 0usize;
    let mut affected_n = vec![];
    let cpu0 = cx.cpu();
    cx.probe.reset_apply_stats();
    let wall = Instant::now();
    for i in 0..count {
        value = !value;
        cx.probe.arm(
            Expect::Dhcp {
                group: group.into(),
                value,
            },
            expected.iter().copied(),
        );
        let t0 = Instant::now();
        let reply: Result<TxnReply, _> = cx.op.txn(&TxnRequest {
            ops: vec![TxnOp::Update {
                object: object(value),
                resource_version: None,
            }],
            wait_ms: Some(cx.timeout.as_millis() as u64),
        });
        let t_reply = t0.elapsed();
        let reply = match reply {
            Ok(r) => r,
            Err(e) => {
                say(format!("{label} change {i}: {e}"));
                incomplete += 1;
                continue;
            }
        };
        let affected: Vec<usize> = reply
            .affected_hosts
            .iter()
            .filter_map(|h| host_index(h))
            .collect();
        affected_n.push(affected.len() as f64);
        let missing = wait_done(&cx.probe, &affected, cx.timeout);
        if !missing.is_empty() || affected.len() != expected.len() {
            incomplete += 1;
            say(format!(
                "{label} change {i}: {} of {} affected hosts missing (expected {} affected)",
                missing.len(),
                affected.len(),
                expected.len()
            ));
        }
        let lat: Vec<f64> = affected
            .iter()
            .filter_map(|&h| cx.probe.done_at(h))
            .map(|t| ms(t.saturating_duration_since(t0)))
            .collect();
        let worst = lat.iter().copied().fold(0.0, f64::max);
        last.push(worst);
        per_host.extend(lat);
        txn_ms.push(ms(t_reply));
        if let Some(w) = &reply.wait {
            waited.push(w.waited_ms as f64);
            if !w.complete() {
                say(format!(
                    "{label} change {i}: --wait=hosts: {} pending, {} down after {} ms",
                    w.pending.len(),
                    w.down.len(),
                    w.waited_ms
                ));
            }
        }
        say(format!(
            "{label} change {i}: {} hosts, last applied after {worst:.1} ms, txn+wait {:.1} ms",
            affected.len(),
            ms(t_reply)
        ));
        // Let the status writes of this change settle before the next one.
        std::thread::sleep(Duration::from_millis(100));
    }
    let wall = wall.elapsed().as_secs_f64();
    let cpu1 = cx.cpu();
    let n = count.max(1) as f64;
    let applies = cx.probe.applies.load(Ordering::Relaxed).max(1);
    json!({
        "group": group,
        "changes": count,
        "affected_hosts": summary(&affected_n),
        "incomplete": incomplete,
        "all_applied_ms": summary(&last),
        "per_host_applied_ms": summary(&per_host),
        "wait_hosts_waited_ms": summary(&waited),
        "txn_with_wait_ms": summary(&txn_ms),
        "controller_cpu_s_per_change": (cpu1.0 - cpu0.0) / n,
        "etcd_cpu_s_per_change": (cpu1.1 - cpu0.1) / n,
        "agents_cpu_s_per_change": (cpu1.2 - cpu0.2) / n,
        "switch_apply_ms_mean": cx.probe.apply_ns.load(Ordering::Relaxed) as f64 / applies as f64 / 1e6,
        "switch_apply_ms_max": cx.probe.apply_max_ns.load(Ordering::Relaxed) as f64 / 1e6,
        "wall_s": wall,
    })
}

/// Waits until a killed agent has parked (it calls its switch at its next heartbeat/report).
fn wait_parked(k: &Kill) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !k.parked.load(Ordering::SeqCst) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

fn resync(cx: &Ctx, a: &Args, url: &str, vhost: &Path, state_root: &Path) -> Result<Value, String> {
    let name = "big";
    let idx = a.hosts;
    say(format!(
        "resync: defining host {name} with {} ports",
        a.resync_ports
    ));
    let (token, define_s) =
        topo::define_big_host(&cx.op, name, a.hosts * a.ports, a.resync_ports, vhost)?;
    let dir = state_root.join(name);
    let stack = 8 << 20;
    // flowtable gives a switch at most 4,095 ports (12-bit port ids): a bigger host's slice is
    // validated, not compiled, so this measures the agent, the transfer and the controller.
    let compile = a.resync_ports < FLOWTABLE_MAX_PORTS;
    let life = |restore_slot: Option<Arc<Mutex<Option<Duration>>>>| -> Result<(f64, u64, Arc<Kill>), String> {
        let kill = Arc::new(Kill::default());
        let stop = Arc::new(AtomicBool::new(false));
        let sw = SimSwitch::new(idx, cx.probe.clone(), compile).with_kill(kill.clone());
        cx.probe.arm(Expect::Any, [idx]);
        let applies0 = cx.probe.applies.load(Ordering::SeqCst);
        let t0 = Instant::now();
        spawn_agent(url, name, &token, dir.clone(), sw, stop, stack, restore_slot)
            .map_err(|e| e.to_string())?;
        // Measured to the status report: the whole slice applied, its ports attached, saved.
        if !wait_marked(&[idx], cx.timeout, |h| cx.probe.reported_at(h)).is_empty() {
            return Err(format!("agent {name} did not apply in {:?}", cx.timeout));
        }
        let took = cx.probe.reported_at(idx).unwrap().saturating_duration_since(t0);
        let applies = cx.probe.applies.load(Ordering::SeqCst) - applies0;
        Ok((ms(took), applies, kill))
    };
    let kill_and_wait = |k: &Kill| -> Result<(), String> {
        // Let the agent's status report go out first, then "kill -9" it.
        std::thread::sleep(Duration::from_millis(500));
        k.dead.store(true, Ordering::SeqCst);
        if wait_parked(k) {
            Ok(())
        } else {
            Err("the killed agent did not park in 20 s".into())
        }
    };

    say("resync: first start, no saved state");
    let (first_ms, first_applies, k1) = life(None)?;
    let slice_bytes = std::fs::metadata(dir.join("agent.json"))
        .map(|m| m.len())
        .unwrap_or(0);
    kill_and_wait(&k1)?;

    say("resync: restart on the saved slice");
    let restored = Arc::new(Mutex::new(None));
    let (warm_ms, warm_applies, k2) = life(Some(restored.clone()))?;
    let restore_ms = restored.lock().unwrap().map(ms);
    kill_and_wait(&k2)?;

    say("resync: restart with the state lost");
    std::fs::remove_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let (cold_ms, cold_applies, _k3) = life(None)?;

    Ok(json!({
        "ports": a.resync_ports,
        "compiled": compile,
        "define_s": define_s,
        "saved_slice_bytes": slice_bytes,
        "first_start_full_slice_ms": first_ms,
        "first_start_applies": first_applies,
        "restart_unchanged_ms": warm_ms,
        "restart_unchanged_restore_ms": restore_ms,
        // 1: only the restore's apply, the controller sent nothing.
        "restart_unchanged_applies": warm_applies,
        "restart_state_lost_ms": cold_ms,
        "restart_state_lost_applies": cold_applies,
    }))
}

fn main() {
    let a = Args::parse();
    if a.costs {
        costs::run(a.hosts, a.ports);
        return;
    }
    match run(&a) {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("evs-controller-bench: {e}");
            println!("# FAILED: {e}");
            std::process::exit(1);
        }
    }
}

fn run(a: &Args) -> Result<(), String> {
    let started = Instant::now();
    procs::set_child_prefix(
        a.child_prefix
            .split_whitespace()
            .map(String::from)
            .collect(),
    );
    let bin = match &a.controller_bin {
        Some(b) => b.clone(),
        None => std::env::current_exe()
            .map_err(|e| e.to_string())?
            .with_file_name("dvs-controller"),
    };
    if !bin.is_file() {
        return Err(format!(
            "{}: no controller binary (cargo build --release -p dvs-controller)",
            bin.display()
        ));
    }
    // The stores on disk (as in production); the agents' state on tmpfs, since a real host has a
    // disk of its own and 1,000 agents fsyncing one disk would measure that disk.
    let data = tempfile::Builder::new()
        .prefix("evs-ctl-bench-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let shm = Path::new("/dev/shm");
    let state = if shm.is_dir() {
        tempfile::Builder::new()
            .prefix("evs-ctl-bench-")
            .tempdir_in(shm)
    } else {
        tempfile::Builder::new().prefix("evs-ctl-bench-").tempdir()
    }
    .map_err(|e| e.to_string())?;
    let vhost = state.path().join("vhost");

    let etcd = match a.store.as_str() {
        "embedded" => None,
        "etcd" => {
            say("starting a 3-member etcd cluster");
            Some(procs::Etcd::start(&a.etcd_bin, 3, data.path())?)
        }
        s => return Err(format!("--store {s}: embedded or etcd")),
    };
    let ctl = procs::Controller::start(
        bin.as_path(),
        data.path(),
        etcd.as_ref().map(|e| e.endpoints()).as_deref(),
    )?;
    let url = ctl.url();
    say(format!("dvs-controller {} on the {} store", url, a.store));
    let probe = Probe::new(a.hosts + 1);
    let cx = Ctx {
        op: ControllerClient::new(&url, None),
        probe: probe.clone(),
        controller_pid: ctl.proc.pid(),
        etcd_pids: etcd
            .as_ref()
            .map(|e| e.members.iter().map(|m| m.pid()).collect())
            .unwrap_or_default(),
        timeout: Duration::from_secs(a.timeout_s),
    };
    let at_start = cx.snapshot();

    say(format!("defining {} hosts × {} ports", a.hosts, a.ports));
    let d = topo::define(&cx.op, a.hosts, a.ports, &vhost)?;
    say(format!(
        "defined in {:.1} s ({} transactions, slowest {:.2} s)",
        d.seconds, d.txns, d.max_txn_s
    ));
    let after_define = cx.snapshot();

    // The agents.
    let compiled = a.compile_sample.unwrap_or(a.hosts).min(a.hosts);
    let all: Vec<usize> = (0..a.hosts).collect();
    probe.arm(Expect::Any, all.iter().copied());
    let before_agents = stats(std::process::id());
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let mut spawned = 0;
    for h in 0..a.hosts {
        let name = topo::host_name(h);
        let token = d
            .tokens
            .get(&name)
            .ok_or_else(|| format!("no token for {name}"))?;
        let sw = SimSwitch::new(h, probe.clone(), h < compiled);
        match spawn_agent(
            &url,
            &name,
            token,
            state.path().join(&name),
            sw,
            stop.clone(),
            a.stack_kib << 10,
            None,
        ) {
            Ok(_) => spawned += 1,
            Err(e) => {
                return Err(format!(
                    "agent thread {h} of {}: {e} (the machine's thread limit?)",
                    a.hosts
                ))
            }
        }
    }
    say(format!(
        "{spawned} agents started in {:.2} s",
        t0.elapsed().as_secs_f64()
    ));
    let missing = wait_done(&probe, &all, cx.timeout * 3);
    if !missing.is_empty() {
        return Err(format!(
            "{} of {} agents did not apply their first slice in {:?} (first: {})\n{}",
            missing.len(),
            a.hosts,
            cx.timeout * 3,
            topo::host_name(missing[0]),
            ctl.proc.log_tail()
        ));
    }
    let converge_s = all
        .iter()
        .filter_map(|&h| probe.done_at(h))
        .map(|t| t.saturating_duration_since(t0).as_secs_f64())
        .fold(0.0, f64::max);
    say(format!(
        "all {} agents applied their slices in {converge_s:.2} s",
        a.hosts
    ));
    let after_agents = stats(std::process::id());

    // Idle: agents connected, heartbeats and status renewals only.
    std::thread::sleep(Duration::from_secs(2));
    let idle0 = cx.cpu();
    let idle_window = 9.0;
    std::thread::sleep(Duration::from_secs_f64(idle_window));
    let idle1 = cx.cpu();
    let idle = cx.snapshot();

    let wide_hosts = all.clone();
    let sparse_hosts: Vec<usize> = all
        .iter()
        .copied()
        .filter(|h| h.is_multiple_of(10))
        .collect();
    say(format!(
        "{} changes of {} (every host)",
        a.changes,
        topo::WIDE
    ));
    let wide = series(
        &cx,
        "wide",
        topo::wide_group,
        &format!("{}/{}", topo::DVS, topo::WIDE),
        &wide_hosts,
        a.changes,
    );
    let after_wide = cx.snapshot();
    say(format!(
        "{} changes of {} (every tenth host)",
        a.sparse_changes,
        topo::SPARSE
    ));
    let sparse = series(
        &cx,
        "sparse",
        topo::sparse_group,
        &format!("{}/{}", topo::DVS, topo::SPARSE),
        &sparse_hosts,
        a.sparse_changes,
    );
    let after_changes = cx.snapshot();

    let resync = if a.resync_ports > 0 {
        match resync(&cx, a, &url, &vhost, state.path()) {
            Ok(v) => v,
            Err(e) => {
                say(format!("resync failed: {e}"));
                json!({ "error": e })
            }
        }
    } else {
        Value::Null
    };
    let after_resync = cx.snapshot();

    let agent_kib =
        (after_agents.rss_kib.saturating_sub(before_agents.rss_kib)) as f64 / a.hosts.max(1) as f64;
    let record = json!({
        "date": today(),
        "store": a.store,
        "hosts": a.hosts,
        "ports_per_host": a.ports,
        "ports_total": a.hosts * a.ports,
        "compiled_hosts": compiled,
        "child_prefix": a.child_prefix,
        "agents_sched": std::fs::read_to_string("/proc/self/sched")
            .ok()
            .and_then(|t| t.lines().find(|l| l.starts_with("policy")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())),
        "machine": { "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0) },
        "define": { "seconds": d.seconds, "txns": d.txns, "slowest_txn_s": d.max_txn_s },
        "converge_s": converge_s,
        "agent_rss_kib_each": agent_kib,
        "idle_cpu_share": {
            "controller": (idle1.0 - idle0.0) / idle_window,
            "etcd": (idle1.1 - idle0.1) / idle_window,
            "agents": (idle1.2 - idle0.2) / idle_window,
        },
        "wide": wide,
        "sparse": sparse,
        "resync": resync,
        "procs": {
            "start": at_start,
            "after_define": after_define,
            "idle_with_agents": idle,
            "after_wide_changes": after_wide,
            "after_changes": after_changes,
            "after_resync": after_resync,
        },
        "wall_s": started.elapsed().as_secs_f64(),
    });
    print_table(&record);
    let out = a.out.clone().unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../results")
            .join(format!("controller-{}.json", today()))
    });
    append(&out, record)?;
    say(format!("appended to {}", out.display()));
    // The agents are left running: the process ends here, and the controller and etcd are
    // killed as `ctl` and `etcd` drop.
    stop.store(true, Ordering::SeqCst);
    drop(ctl);
    drop(etcd);
    Ok(())
}

fn append(out: &Path, record: Value) -> Result<(), String> {
    let mut doc: Value = std::fs::read(out)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_else(|| json!({ "runs": [] }));
    match doc.get_mut("runs").and_then(|r| r.as_array_mut()) {
        Some(runs) => runs.push(record),
        None => doc = json!({ "runs": [record] }),
    }
    if let Some(d) = out.parent() {
        std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    let text = serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?;
    std::fs::write(out, text + "\n").map_err(|e| format!("{}: {e}", out.display()))
}

fn f(v: &Value, path: &[&str]) -> String {
    let mut x = v;
    for p in path {
        x = &x[*p];
    }
    match x.as_f64() {
        Some(n) if n >= 100.0 => format!("{n:.0}"),
        Some(n) => format!("{n:.1}"),
        None => "-".into(),
    }
}

fn print_table(r: &Value) {
    println!();
    println!(
        "| store | hosts × ports | change → all applied p50 / p99 (ms) | per host p50 / p99 | --wait=hosts p50 / p99 | controller CPU s/change | 10% change p50 / p99 |"
    );
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| {} | {} × {} | {} / {} | {} / {} | {} / {} | {} | {} / {} |",
        r["store"].as_str().unwrap_or("?"),
        r["hosts"],
        r["ports_per_host"],
        f(r, &["wide", "all_applied_ms", "p50"]),
        f(r, &["wide", "all_applied_ms", "p99"]),
        f(r, &["wide", "per_host_applied_ms", "p50"]),
        f(r, &["wide", "per_host_applied_ms", "p99"]),
        f(r, &["wide", "wait_hosts_waited_ms", "p50"]),
        f(r, &["wide", "wait_hosts_waited_ms", "p99"]),
        r["wide"]["controller_cpu_s_per_change"]
            .as_f64()
            .map(|x| format!("{x:.3}"))
            .unwrap_or_default(),
        f(r, &["sparse", "all_applied_ms", "p50"]),
        f(r, &["sparse", "all_applied_ms", "p99"]),
    );
    println!();
    println!(
        "resync of {} ports: first start {} ms, restart unchanged {} ms (restore {} ms), restart state lost {} ms",
        r["resync"]["ports"],
        f(r, &["resync", "first_start_full_slice_ms"]),
        f(r, &["resync", "restart_unchanged_ms"]),
        f(r, &["resync", "restart_unchanged_restore_ms"]),
        f(r, &["resync", "restart_state_lost_ms"]),
    );
    println!(
        "controller: idle RSS {} MiB, after the runs {} MiB (peak {} MiB), CPU {} s in all; idle CPU share {}; agents {} KiB RSS each; converged in {} s",
        f(r, &["procs", "idle_with_agents", "controller", "rss_mib"]),
        f(r, &["procs", "after_resync", "controller", "rss_mib"]),
        f(r, &["procs", "after_resync", "controller", "hwm_mib"]),
        f(r, &["procs", "after_resync", "controller", "cpu_s"]),
        r["idle_cpu_share"]["controller"]
            .as_f64()
            .map(|x| format!("{x:.3}"))
            .unwrap_or_default(),
        f(r, &["agent_rss_kib_each"]),
        f(r, &["converge_s"]),
    );
}
