//! evsd as an operator runs it in production: SIGHUP reloads the config file (a changed model is
//! applied and saved, a bad or empty file refused with the switch unchanged), SIGTERM stops it
//! cleanly with status 0, the metrics endpoint serves what the Grafana dashboard in
//! `docs/grafana/evsd.json` queries, its counters do not go backwards on `stats-reset`, unknown
//! paths are 404, and `evsd ctl` on a closed pipe ends quietly. No guests needed: ports without
//! backends. Runs without hugepages, as root.

use evs_e2e::{serial, skip_unless_dpdk, wait_for, Evsd};
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

/// `[eal]`/`[dataplane]` of the tests plus `model`.
fn config(dir: &Path, prefix: &str, dataplane_extra: &str, model: &str) -> String {
    evs_e2e::base_config(dir, prefix, dataplane_extra) + model
}

/// Port group "web" on `vlan` with the ports `ports`.
fn model(vlan: u16, ports: &[&str]) -> String {
    let mut m = format!("\n[[port_groups]]\nname = \"web\"\nvlan = {vlan}\n");
    for (i, p) in ports.iter().enumerate() {
        m += &format!(
            "\n[[ports]]\nname = \"{p}\"\nmac = \"02:00:00:00:01:{:02x}\"\nport_group = \"web\"\n",
            i + 1
        );
    }
    m
}

fn evsd_cmd(args: &[&str]) -> Output {
    Command::new(evs_e2e::evsd_bin!())
        .args(args)
        .output()
        .expect("run evsd")
}

/// `evsd ctl --json show model` through the CLI, as an operator would look.
fn shown_model(e: &Evsd) -> model::Model {
    let o = evsd_cmd(&[
        "ctl",
        "-s",
        e.socket.to_str().unwrap(),
        "--json",
        "show",
        "model",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).expect("show model --json")
}

fn generation(e: &Evsd) -> u64 {
    e.ctl(serde_json::json!({"cmd": "show_tables"}))["version"]
        .as_u64()
        .unwrap()
}

fn port_names(m: &model::Model) -> Vec<String> {
    m.ports.iter().map(|p| p.name.clone()).collect()
}

fn hup(e: &Evsd) {
    let s = Command::new("kill")
        .args(["-HUP", &e.proc.pid().to_string()])
        .status()
        .expect("kill -HUP");
    assert!(s.success());
}

/// Sends SIGHUP and waits for one more log line containing `want` than there was; returns it.
fn hup_and_wait(e: &Evsd, want: &str) -> String {
    let before = e.proc.log_text().matches(want).count();
    hup(e);
    wait_for(&format!("log line with {want:?}"), T, || {
        let log = e.proc.log_text();
        (log.matches(want).count() > before)
            .then(|| log.lines().rfind(|l| l.contains(want)).unwrap().to_owned())
    })
}

#[test]
fn sighup_applies_the_changed_file_refuses_a_bad_one_and_sigterm_stops_cleanly() {
    skip_unless_dpdk!();
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let prefix = evs_e2e::unique("ops-hup");
    let cfg = d.join("evsd.toml");
    std::fs::write(&cfg, config(d, &prefix, "", &model(100, &["a"]))).unwrap();
    let mut e = Evsd::run(d, "evsd", &cfg, &[]);
    assert_eq!(port_names(&shown_model(&e)), ["a"]);
    let gen0 = generation(&e);

    // A changed file: a new port, the group moved to another VLAN.
    std::fs::write(&cfg, config(d, &prefix, "", &model(200, &["a", "b"]))).unwrap();
    let line = hup_and_wait(&e, "SIGHUP: ");
    assert!(line.contains(" applied, generation "), "{line}");
    let m = shown_model(&e);
    assert_eq!(port_names(&m), ["a", "b"]);
    assert_eq!(m.port_groups[0].vlan, Some(200));
    let gen1 = generation(&e);
    assert!(gen1 > gen0, "generation {gen0} -> {gen1}");
    // The audit line: who, what, the generation in force.
    let audit = audit_lines(&e);
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert!(audit[0].contains(" INFO audit: apply "), "{}", audit[0]);
    assert!(audit[0].contains("from=\"SIGHUP\""), "{}", audit[0]);
    assert!(
        audit[0].contains(&format!("generation={gen1} ")),
        "{}",
        audit[0]
    );
    assert!(
        audit[0].contains("changes=\"port_groups ~1 (web); ports +1 (b)\""),
        "{}",
        audit[0]
    );
    // Saved as after `ctl apply`: a restart would bring it back.
    let saved = std::fs::read_to_string(d.join("state/state.json")).expect("state.json");
    assert!(saved.contains("\"b\""), "{saved}");

    // The same file again: nothing to apply.
    let line = hup_and_wait(&e, "SIGHUP: ");
    assert!(line.contains("the model is the one in force"), "{line}");
    assert_eq!(generation(&e), gen1);

    // A bad value next to a model change: refused whole, the switch keeps what it had.
    std::fs::write(
        &cfg,
        config(d, &prefix, "", &model(300, &["a", "b", "c"]))
            .replace("idle_sleep_us = 20", "idle_sleep_us = 97200000000"),
    )
    .unwrap();
    let line = hup_and_wait(&e, "SIGHUP: REFUSED");
    assert!(
        line.contains("[dataplane] idle_sleep_us = 97200000000: must be 0..=1000000"),
        "{line}"
    );
    assert!(
        line.contains(&format!("keeping generation {gen1}")),
        "{line}"
    );
    let m = shown_model(&e);
    assert_eq!(port_names(&m), ["a", "b"]);
    assert_eq!(m.port_groups[0].vlan, Some(200));
    assert_eq!(generation(&e), gen1);

    // A file whose model is empty (an edit gone wrong): refused, saying how to allow it.
    std::fs::write(&cfg, evs_e2e::base_config(d, &prefix, "")).unwrap();
    let line = hup_and_wait(&e, "SIGHUP: REFUSED");
    assert!(line.contains("no ports and no uplinks"), "{line}");
    assert!(line.contains("allow_empty_model = true"), "{line}");
    assert_eq!(port_names(&shown_model(&e)), ["a", "b"]);

    // A syntax error: refused too, naming the place.
    std::fs::write(&cfg, "[dataplane\n").unwrap();
    let line = hup_and_wait(&e, "SIGHUP: REFUSED");
    assert!(line.contains("evsd.toml"), "{line}");
    assert_eq!(generation(&e), gen1);

    // SIGTERM: a clean stop, status 0, the control socket gone.
    let status = e.proc.stop(T).expect("evsd was running");
    assert_eq!(status.code(), Some(0), "{status}\n{}", e.proc.log_text());
    assert!(e.proc.log_text().contains("evsd: stopped"));
    assert!(!e.socket.exists(), "control socket left behind");
}

/// evsd's `audit` lines so far.
fn audit_lines(e: &Evsd) -> Vec<String> {
    e.proc
        .log_text()
        .lines()
        .filter(|l| l.contains(" audit: "))
        .map(str::to_owned)
        .collect()
}

/// Waits for the `n`th audit line and returns it.
fn nth_audit_line(e: &Evsd, n: usize) -> String {
    wait_for(&format!("audit line {n}"), T, || {
        audit_lines(e).get(n - 1).cloned()
    })
}

fn ctl_cli(e: &Evsd, args: &[&str]) -> Output {
    let mut a = vec!["ctl", "-s", e.socket.to_str().unwrap()];
    a.extend_from_slice(args);
    evsd_cmd(&a)
}

#[test]
fn every_change_leaves_one_audit_line_with_its_source_and_generation() {
    skip_unless_dpdk!();
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let prefix = evs_e2e::unique("ops-audit");
    let cfg = d.join("evsd.toml");
    std::fs::write(&cfg, config(d, &prefix, "", &model(100, &["a"]))).unwrap();
    let e = Evsd::run(d, "evsd", &cfg, &[]);
    // Starting is not a change.
    assert_eq!(audit_lines(&e), Vec::<String>::new());
    let start_log = e.proc.log_text();
    assert!(
        start_log
            .lines()
            .all(|l| l.contains("Z ") && l.starts_with("20")),
        "every line starts with an RFC 3339 UTC timestamp:\n{start_log}"
    );

    // `evsd ctl apply` of a file with one more port and one removed.
    let m = d.join("m.toml");
    std::fs::write(&m, model(100, &["b", "c"])).unwrap();
    let o = ctl_cli(&e, &["apply", m.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let gen = generation(&e);
    let l = nth_audit_line(&e, 1);
    assert!(l.contains(" INFO audit: apply "), "{l}");
    assert!(l.contains("from=\"control socket\""), "{l}");
    assert!(l.contains(&format!("generation={gen} ")), "{l}");
    assert!(l.contains("changes=\"ports +2 (b, c) -1 (a)\""), "{l}");

    // attach and detach (a vhost server socket: no guest needed).
    let sock = d.join("b.sock");
    let o = ctl_cli(&e, &["attach", "b", "--vhost", sock.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let l = nth_audit_line(&e, 2);
    assert!(l.contains(" INFO audit: attach "), "{l}");
    assert!(l.contains("port=\"b\""), "{l}");
    assert!(l.contains(&format!("generation={gen} ")), "{l}");
    assert!(
        l.contains(&format!("backend=\"vhost {}", sock.display())),
        "{l}"
    );
    let o = ctl_cli(&e, &["detach", "b"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let l = nth_audit_line(&e, 3);
    assert!(l.contains(" INFO audit: detach "), "{l}");
    assert!(l.contains("port=\"b\""), "{l}");

    // A refused change: one warning, the generation unchanged.
    let o = ctl_cli(&e, &["detach", "b"]);
    assert!(!o.status.success());
    let l = nth_audit_line(&e, 4);
    assert!(l.contains(" WARN audit: detach refused "), "{l}");
    assert!(l.contains(&format!("generation={gen} ")), "{l}");
    assert!(l.contains("not attached"), "{l}");
    assert_eq!(generation(&e), gen);

    // Reads are not changes.
    ctl_cli(&e, &["show", "ports"]);
    ctl_cli(&e, &["metrics"]);
    assert_eq!(audit_lines(&e).len(), 4, "{:?}", audit_lines(&e));
}

fn metrics_addr(e: &Evsd) -> String {
    let log = e.proc.log_text();
    let l = log
        .lines()
        .find(|l| l.contains("metrics on http://"))
        .expect("metrics line in the evsd log");
    let url = l.split("http://").nth(1).unwrap();
    url.trim_end_matches("/metrics").to_string()
}

/// The whole HTTP answer to `GET path`.
fn http_get(addr: &str, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).expect("metrics connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// The value of the sample line starting with `series` (name and labels).
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
}

/// Every metric name a query of the dashboard uses (`evs_*`, `process_*`).
fn dashboard_metrics(dashboard: &serde_json::Value) -> BTreeSet<String> {
    fn queries(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("expr" | "query" | "definition", serde_json::Value::String(s)) => {
                            out.push(s.clone())
                        }
                        _ => queries(v, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| queries(v, out)),
            _ => {}
        }
    }
    let mut qs = vec![];
    queries(dashboard, &mut qs);
    assert!(qs.len() >= 10, "too few queries found: {qs:?}");
    let mut names = BTreeSet::new();
    for q in qs {
        // Label values ("miss", "$instance") are not metric names.
        let unquoted: String = q.split('"').step_by(2).collect::<Vec<_>>().join(" ");
        for w in unquoted.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')) {
            if w.starts_with("evs_") || w.starts_with("process_") {
                names.insert(w.to_owned());
            }
        }
    }
    names
}

#[test]
fn metrics_serve_the_dashboard_never_go_backwards_and_ctl_survives_a_closed_pipe() {
    skip_unless_dpdk!();
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let prefix = evs_e2e::unique("ops-metrics");
    let e = Evsd::start(
        d,
        "evsd",
        &config(
            d,
            &prefix,
            r#"metrics_listen = "127.0.0.1:0""#,
            &model(100, &["a"]),
        ),
    );
    let addr = metrics_addr(&e);

    let m = http_get(&addr, "/metrics");
    assert!(m.starts_with("HTTP/1.0 200"), "{m}");
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/grafana/evsd.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("dashboard")).unwrap();
    let used = dashboard_metrics(&dashboard);
    assert!(used.contains("evs_port_rx_packets_total"), "{used:?}");
    let missing: Vec<&String> = used
        .iter()
        .filter(|n| !m.lines().any(|l| l.starts_with(&format!("# TYPE {n} "))))
        .collect();
    assert!(
        missing.is_empty(),
        "{} queries metrics evsd does not export: {missing:?}",
        path.display()
    );
    assert!(
        m.contains(&format!(
            "evs_build_info{{dpdk=\"{}\",version=\"{}\"}} 1",
            evs_dpdk::version(),
            env!("CARGO_PKG_VERSION")
        )),
        "{m}"
    );
    let started = sample(&m, "process_start_time_seconds ");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        started > 1.0e9 && started <= now,
        "start time {started}, now {now}"
    );
    assert!(sample(&m, "evs_thread_idle_seconds_total{") > 0.0, "{m}");

    // `stats-reset` zeroes what `show` says, not what Prometheus scrapes.
    let series = "evs_thread_idle_cycles_total{core=\"1\",thread=\"0\"}";
    let before = sample(&m, series);
    assert!(before > 0.0);
    e.ctl(serde_json::json!({"cmd": "stats_reset"}));
    let shown = e.ctl(serde_json::json!({"cmd": "show_threads"}))[0]["idle_cycles"]
        .as_f64()
        .unwrap();
    assert!(
        shown < before,
        "show threads after reset: {shown} >= {before}"
    );
    let after = sample(&http_get(&addr, "/metrics"), series);
    assert!(
        after >= before,
        "{series} went backwards: {before} -> {after}"
    );

    for p in ["/", "/metricsx", "/favicon.ico"] {
        let r = http_get(&addr, p);
        assert!(r.starts_with("HTTP/1.0 404"), "{p}: {r}");
    }

    // A closed pipe: the read end gone before evsd ctl writes a byte.
    let mut child = Command::new(evs_e2e::evsd_bin())
        .args(["ctl", "-s", e.socket.to_str().unwrap(), "metrics"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(o.status.code(), Some(141), "{}: {err}", o.status);
    // And as an operator types it.
    let o = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "set -o pipefail; '{}' ctl -s '{}' metrics | head -1",
            evs_e2e::evsd_bin().display(),
            e.socket.display()
        ))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 1);
    assert!(
        matches!(o.status.code(), Some(0) | Some(141)),
        "{}: {err}",
        o.status
    );
}

/// Starts evsd with `EVS_TEST_STALL_THREAD=0` (test only: forwarding thread 0 blocks for good
/// once evsd is up) and waits for its control socket.
fn run_stalled(d: &Path, name: &str, dataplane_extra: &str) -> Evsd {
    let prefix = evs_e2e::unique("ops-dog");
    let cfg = d.join(format!("{name}.toml"));
    std::fs::write(
        &cfg,
        config(d, &prefix, dataplane_extra, &model(100, &["a"])),
    )
    .unwrap();
    let proc = evs_e2e::Proc::spawn(
        name,
        Command::new(evs_e2e::evsd_bin!())
            .args(["run", "-c"])
            .arg(&cfg)
            .env("EVS_TEST_STALL_THREAD", "0"),
        d.join(format!("{name}.log")),
    );
    let mut e = Evsd {
        proc,
        socket: d.join("evsd.sock"),
        config: cfg,
    };
    wait_for("evsd control socket", T, || {
        if let Some(s) = e.proc.exited() {
            panic!("evsd exited during start-up ({s}):\n{}", e.proc.log_text());
        }
        e.try_ctl(&serde_json::json!({"cmd": "show_threads"})).ok()
    });
    e
}

#[test]
fn a_stalled_forwarding_thread_is_reported_and_shutdown_still_works() {
    skip_unless_dpdk!();
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut e = run_stalled(
        d,
        "evsd",
        "metrics_listen = \"127.0.0.1:0\"\nwatchdog_secs = 1",
    );
    let line = wait_for("the watchdog's STALLED line", T, || {
        e.proc
            .log_text()
            .lines()
            .find(|l| l.contains("forwarding thread 0 STALLED"))
            .map(str::to_owned)
    });
    assert!(line.contains(" ERROR evsd::watchdog: "), "{line}");
    let m = http_get(&metrics_addr(&e), "/metrics");
    assert_eq!(
        sample(&m, "evs_thread_stalled{core=\"1\",thread=\"0\"}"),
        1.0,
        "{m}"
    );
    assert_eq!(
        sample(&m, "evs_thread_stalls_total{core=\"1\",thread=\"0\"}"),
        1.0,
        "{m}"
    );
    // The control loop still answers, and still changes the model.
    let mf = d.join("m.toml");
    std::fs::write(&mf, model(100, &["a", "b"])).unwrap();
    let o = ctl_cli(&e, &["apply", mf.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // `ctl shutdown` ends evsd although thread 0 never stops: non-zero, saying why.
    let o = ctl_cli(&e, &["shutdown"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let st = wait_for("evsd to exit after ctl shutdown", T, || e.proc.exited());
    let log = e.proc.log_text();
    assert_eq!(st.code(), Some(1), "{st}\n{log}");
    assert!(log.contains("did not stop within"), "{log}");
    assert!(!e.socket.exists(), "control socket left behind");
    // What was applied was saved before the stop.
    let saved = std::fs::read_to_string(d.join("state/state.json")).expect("state.json");
    assert!(saved.contains("\"b\""), "{saved}");

    // SIGTERM too (watchdog off: the stall goes unreported, the stop still ends).
    let mut e = run_stalled(d, "evsd-term", "watchdog_secs = 0");
    let st = e.proc.stop(T).expect("evsd was running");
    let log = e.proc.log_text();
    assert_eq!(st.code(), Some(1), "{st}\n{log}");
    assert!(log.contains("did not stop within"), "{log}");
    assert!(!log.contains("STALLED"), "{log}");
}

#[test]
fn with_watchdog_exit_a_stalled_thread_ends_evsd_for_its_supervisor() {
    skip_unless_dpdk!();
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut e = run_stalled(d, "evsd", "watchdog_secs = 1\nwatchdog_exit = true");
    let st = wait_for("evsd to exit on its own", T, || e.proc.exited());
    let log = e.proc.log_text();
    assert_eq!(st.code(), Some(70), "{st}\n{log}");
    assert!(log.contains("forwarding thread 0 STALLED"), "{log}");
    assert!(
        log.contains("watchdog_exit = true: exiting with status 70"),
        "{log}"
    );
    assert!(!e.socket.exists(), "control socket left behind");
}
