//! evsd's life: the saved state (or the config) decides the model and attachments, EAL up,
//! threads up, ports attached, then the control loop until SIGINT/SIGTERM or a `shutdown`
//! request, then an orderly teardown. SIGHUP re-reads the config file and applies its model
//! through the control loop's `apply` path.

use crate::audit::{self, Source};
use crate::cli::BootArgs;
use crate::config::Config;
use crate::control::{self, Call};
use crate::metrics;
use crate::reports;
use crate::state::{self, InForce};
use crate::switchd::{Dataplane, Since};
use crate::watchdog::{self, ThreadHealth, Watchdog};
use api::{Reply, Request, Response};
use crossbeam_channel::RecvTimeoutError;
use evs_dpdk::{self as dpdk, Eal};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The daemon's life, under target `evsd` (`evsd: stopped` is what operators and tests look for).
fn log(msg: impl AsRef<str>) {
    tracing::info!(target: "evsd", "{}", msg.as_ref());
}

/// What an operator should look at: a refused reload, a setting that was not applied.
fn warn(msg: impl AsRef<str>) {
    tracing::warn!(target: "evsd", "{}", msg.as_ref());
}

/// `boot`: the config `boot_args` gave, checked (`BootArgs::load`); `boot_args.discard_state`: start from
/// the config file's model and attachments even if changes made at run time were saved (the
/// saved file is moved aside). `boot_args` is kept to read the same file again on SIGHUP.
pub fn run(boot: Config, boot_args: BootArgs) -> Result<(), String> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone())
            .map_err(|e| format!("cannot install signal handler: {e}"))?;
    }
    let reload = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, reload.clone())
        .map_err(|e| format!("cannot install signal handler: {e}"))?;
    let started = metrics::Started::now();
    let stall_for_test = watchdog::test_stall_thread()?;
    // Before the EAL: a state file evsd refuses costs no DPDK start-up.
    let start = state::startup(boot, boot_args.discard_state)?;
    log(&start.origin);
    let switch = start.switch().map_err(|e| e.to_string())?;
    let attach_source = start.attach_source();
    let (cfg, mut store) = (start.config, start.store);
    let args = cfg.eal.to_args();
    log(format!("EAL args: {}", args.join(" ")));
    // Before the EAL: its start-up lines, and every vhost connect later, go through our log.
    if let Err(e) = dpdk::log::route_to_tracing() {
        warn(format!("DPDK's log stays on stdout: {e}"));
    }
    let eal = Eal::init(&args).map_err(|e| e.to_string())?;
    log(format!("{} up, TSC {} Hz", dpdk::version(), dpdk::tsc_hz()));
    // The EAL pinned this thread to the main lcore; let the control threads float on the CPUs the
    // forwarding threads do not own.
    let others: Vec<usize> = (0..dpdk::num_cpus())
        .filter(|c| !cfg.dataplane.cores.contains(c))
        .collect();
    let _ = dpdk::set_affinity(&others);
    let mut dp = Dataplane::new(eal, switch, &cfg.dataplane).map_err(|e| e.to_string())?;
    let (calls_tx, calls) = crossbeam_channel::unbounded::<Call>();
    let sock = match control::serve(&cfg.dataplane.control_socket, calls_tx.clone()) {
        Ok(p) => p,
        Err(e) => {
            let _ = dp.shutdown();
            return Err(format!(
                "control socket {}: {e}",
                cfg.dataplane.control_socket.display()
            ));
        }
    };
    log(format!("control socket {}", sock.display()));
    if let Some(addr) = &cfg.dataplane.metrics_listen {
        match metrics::serve(addr, calls_tx.clone()) {
            Ok(a) => log(format!("metrics on http://{a}/metrics")),
            Err(e) => {
                let _ = dp.shutdown();
                let _ = std::fs::remove_file(&sock);
                return Err(format!("dataplane.metrics_listen {addr}: {e}"));
            }
        }
    }
    for a in &cfg.attach {
        let r = a
            .backend()
            .map_err(|e| e.to_string())
            .and_then(|b| dp.attach(&a.port, b).map_err(|e| e.to_string()));
        if let Err(e) = r {
            let _ = dp.shutdown();
            let _ = std::fs::remove_file(&sock);
            return Err(format!("{e} (attachment from {attach_source})"));
        }
        log(format!("attached {}", a.port));
    }
    store.started(in_force(&dp));
    if let Some(c) = &cfg.controller {
        if let Err(e) =
            crate::agent::start(c, &cfg.dataplane.state_dir, calls_tx.clone(), stop.clone())
        {
            let _ = dp.shutdown();
            let _ = std::fs::remove_file(&sock);
            return Err(e);
        }
        log(format!("host {} following controller {}", c.host, c.url));
    }
    drop(calls_tx);
    log("forwarding");
    if let Some(i) = stall_for_test {
        match dp.stall_thread_for_test(i) {
            Ok(()) => warn(format!(
                "{}={i}: forwarding thread {i} blocked on purpose (test only)",
                watchdog::TEST_STALL_ENV
            )),
            Err(e) => warn(format!("{}: {e}", watchdog::TEST_STALL_ENV)),
        }
    }
    if let Err(e) = crate::notify::ready(&ready_status(&dp)) {
        log(format!("NOTIFY_SOCKET: {e}"));
    }
    let tick = Duration::from_millis(cfg.dataplane.link_poll_ms.max(1));
    let clock = dpdk::TscClock::new(dpdk::tsc_hz());
    let mut last_housekeeping = std::time::Instant::now();
    let mut dog = Watchdog::new(
        cfg.dataplane.watchdog_secs,
        cfg.dataplane.cores.len(),
        std::time::Instant::now(),
    );
    while !stop.load(Ordering::Relaxed) {
        match calls.recv_timeout(tick) {
            Ok(Call {
                req,
                reply,
                from,
                capture,
            }) => {
                if matches!(req, Request::Shutdown) {
                    // Answer first: the process may be gone before a later answer is written.
                    // Callers wait for the exit (the control socket disappears with it).
                    let _ = reply.send(Response::ok(&Reply::Text("stopping".into())));
                    break;
                }
                let answer = match (req, capture) {
                    // The session its connection thread drains (crate::capture).
                    (Request::Capture(_), Some(s)) => dp.capture_start(s).map(Reply::Capture),
                    (req, _) => {
                        // Saved before the answer: what a client sees acknowledged survives a
                        // crash.
                        let persist = state::persists(&req);
                        let mut answer = handle(&mut dp, req, from, &started, &dog.health());
                        if persist {
                            answer = store.sync(answer, &in_force(&dp));
                        }
                        answer
                    }
                };
                let _ = reply.send(Response::from(answer));
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if reload.swap(false, Ordering::Relaxed) {
            let _ = crate::notify::reloading();
            reload_config(&boot_args, &cfg, &mut dp, &mut store, &started);
            let _ = crate::notify::ready(&ready_status(&dp));
        }
        dp.capture_reap();
        for (name, state) in dp.poll_links() {
            log(format!("port {name}: link {state:?}"));
        }
        // Every tick, on this thread: a stuck forwarding thread cannot stop its own watchdog.
        for event in dog.check(&dp.thread_iterations(), std::time::Instant::now()) {
            if report(&event, &cfg) {
                if let Some(m) = store.at_exit(|| in_force(&dp)) {
                    log(m);
                }
                let _ = std::fs::remove_file(&sock);
                // No teardown: the stuck thread may hold ports and mbufs.
                std::process::exit(watchdog::EXIT_STALLED);
            }
        }
        if last_housekeeping.elapsed() >= Duration::from_secs(1) {
            last_housekeeping = std::time::Instant::now();
            // Same clock as the forwarding threads' `now_ns`.
            dp.switch().housekeeping(clock.now_ns());
            if let Some(m) = store.retry(|| in_force(&dp)) {
                log(m);
            }
        }
    }
    log("shutting down");
    let _ = crate::notify::stopping();
    if let Some(m) = store.at_exit(|| in_force(&dp)) {
        log(m);
    }
    let down = dp.shutdown();
    let _ = std::fs::remove_file(&sock);
    down?;
    log("stopped");
    Ok(())
}

/// What `systemctl status evsd` shows once evsd is ready.
fn ready_status(dp: &Dataplane) -> String {
    format!("forwarding, {} ports attached", dp.attachments().len())
}

/// Logs a watchdog event; true when evsd must exit for it (`watchdog_exit`).
fn report(event: &watchdog::Event, cfg: &Config) -> bool {
    match *event {
        watchdog::Event::Stalled { thread, for_secs } => {
            tracing::error!(
                target: "evsd::watchdog",
                thread,
                "forwarding thread {thread} STALLED: its loop has not turned for {for_secs} s \
                 (watchdog_secs = {})",
                cfg.dataplane.watchdog_secs
            );
            if cfg.dataplane.watchdog_exit {
                tracing::error!(
                    target: "evsd::watchdog",
                    "watchdog_exit = true: exiting with status {} so that the supervisor \
                     restarts evsd",
                    watchdog::EXIT_STALLED
                );
            }
            cfg.dataplane.watchdog_exit
        }
        watchdog::Event::Recovered { thread } => {
            tracing::warn!(
                target: "evsd::watchdog",
                thread,
                "forwarding thread {thread} is making progress again"
            );
            false
        }
    }
}

/// SIGHUP: the config file read and checked again as `evsd run` checks it; its model applied as
/// `evsd ctl apply` applies one (atomic swap, saved to the state file before it counts). A file
/// that is refused changes nothing. What only a restart can change is logged, not applied.
fn reload_config(
    args: &BootArgs,
    running: &Config,
    dp: &mut Dataplane,
    store: &mut state::Store,
    started: &metrics::Started,
) {
    let file = args.config.display();
    let generation = dp.switch().pipeline().version;
    if running.controller.is_some() {
        warn(format!(
            "SIGHUP: ignored: the model comes from the controller ({file} is not re-read)"
        ));
        return;
    }
    let new = match Config::load_boot(&args.config, &args.overrides()) {
        Ok(c) => c,
        Err(e) => {
            warn(format!(
                "SIGHUP: REFUSED {file}, keeping generation {generation} in force: {e}"
            ));
            return;
        }
    };
    let needs_restart: Vec<&str> = [
        ("[eal]", to_json(&new.eal) != to_json(&running.eal)),
        ("[switch]", to_json(&new.switch) != to_json(&running.switch)),
        (
            "[dataplane]",
            to_json(&new.dataplane) != to_json(&running.dataplane),
        ),
    ]
    .into_iter()
    .filter_map(|(s, changed)| changed.then_some(s))
    .collect();
    if !needs_restart.is_empty() {
        warn(format!(
            "SIGHUP: {} of {file} changed; that takes a restart and is not applied",
            needs_restart.join(", ")
        ));
    }
    if to_json(&new.attach) != to_json(&dp.attachments()) {
        warn(format!(
            "SIGHUP: the [[attach]] entries of {file} differ from the backends in force; a \
             reload applies the model only (use `evsd ctl attach`/`detach`)"
        ));
    }
    let model = new.model();
    if model == dp.switch().model() {
        log(format!(
            "SIGHUP: {file}: the model is the one in force (generation {generation})"
        ));
        return;
    }
    let req = Request::Apply { model };
    let answer = handle(dp, req, Source::Sighup, started, &[]);
    match store.sync(answer, &in_force(dp)) {
        Ok(_) => log(format!(
            "SIGHUP: {file} applied, generation {}",
            dp.switch().pipeline().version
        )),
        Err(e) => warn(format!("SIGHUP: {file}: {e}")),
    }
}

fn to_json<T: serde::Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or_default()
}

/// What a restart must bring back.
fn in_force(dp: &Dataplane) -> InForce {
    InForce::of(dp.switch(), dp.attachments())
}

/// Runs one request; a change (apply, attach, detach) leaves its audit line, `from` naming who
/// asked.
fn handle(
    dp: &mut Dataplane,
    req: Request,
    from: Source,
    started: &metrics::Started,
    health: &[ThreadHealth],
) -> Result<Reply, String> {
    let now = dp.clock_ns();
    let sw = dp.switch().clone();
    let generation = sw.pipeline().version;
    Ok(match req {
        Request::ShowPorts => Reply::Ports(dp.show_ports()),
        Request::ShowThreads => Reply::Threads(dp.show_threads()),
        Request::ShowModel => Reply::Model(sw.model()),
        Request::ShowTables => Reply::Tables(reports::tables(&sw)),
        Request::ShowMac => Reply::Mac(reports::mac(&sw, now)),
        Request::ShowConnections { limit } => {
            Reply::Connections(reports::connections(&sw, limit, now))
        }
        Request::Apply { model } => {
            let before = sw.pipeline();
            let old_model = sw.model();
            let changes = audit::model_changes(&old_model, &model);
            let r = sw.apply(model).map_err(|e| {
                let e = e.to_string();
                audit::refused(from, generation, "apply", &e);
                e
            })?;
            let applied = reports::applied(&sw, &before, &r);
            log(format!("{applied}"));
            audit::applied(from, applied.generation, &changes);
            Reply::Applied(applied)
        }
        Request::Attach(a) => {
            let r = a
                .backend()
                .map_err(|e| format!("attach {:?}: {e}", a.port))
                .and_then(|b| {
                    dp.attach(&a.port, b.clone())
                        .map(|()| b)
                        .map_err(|e| e.to_string())
                });
            match r {
                Ok(b) => audit::attached(from, generation, &a.port, &b),
                Err(e) => {
                    audit::refused(from, generation, "attach", &e);
                    return Err(e);
                }
            }
            Reply::Text("attached".into())
        }
        Request::Detach { port } => {
            if let Err(e) = dp.detach(&port) {
                let e = e.to_string();
                audit::refused(from, generation, "detach", &e);
                return Err(e);
            }
            audit::detached(from, generation, &port);
            Reply::Text("detached".into())
        }
        Request::StatsReset => {
            dp.stats_reset();
            Reply::Text("reset".into())
        }
        Request::Trace { port, frame } => {
            let f = api::parse_hex(&frame).map_err(|e| format!("trace: frame: {e}"))?;
            Reply::Trace(reports::trace(sw.trace(&port, &f, now)?))
        }
        // Since start, whatever `stats_reset` did: Prometheus counters must not go backwards.
        Request::Metrics => Reply::Text(metrics::render(&metrics::Sample {
            ports: &dp.show_ports_since(Since::Start),
            threads: &dp.show_threads_since(Since::Start),
            ct: sw.shared().ct.stats(),
            generation: sw.pipeline().version,
            tsc_hz: dpdk::tsc_hz(),
            started,
            mbufs: dp.mbufs(),
            health,
        })),
        Request::Shutdown => Reply::Text("stopping".into()),
        // Served by the control loop with its connection's session (see `run`).
        Request::Capture(c) => {
            return Err(format!(
                "capture {:?}: only on a control connection of its own",
                c.port
            ))
        }
    })
}
