//! `evsd check` and `evsd run` judge a config alike: every value `run` refuses, `check` refuses
//! with the same message (field, value, allowed range), before any DPDK start-up. Every config
//! here is invalid, so `run` never gets as far as the EAL.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const EVSD: &str = env!("CARGO_BIN_EXE_evsd");

/// A config that `check` accepts, in `dir` (control socket and state there).
fn good(dir: &Path) -> String {
    format!(
        r#"
[eal]
no_huge = true
memory_mb = 256
file_prefix = "evs-validation"

[switch]
mac_aging_secs = 300

[dataplane]
cores = [0]
idle_sleep_us = 50
control_socket = "{dir}/ctl.sock"
state_dir = "{dir}/state"

[[port_groups]]
name = "web"
vlan = 100

[[ports]]
name = "vm1"
mac = "02:00:00:00:00:01"
port_group = "web"
"#,
        dir = dir.display()
    )
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn evsd(args: &[&str]) -> Output {
    Command::new(EVSD).args(args).output().expect("run evsd")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `check` and `run` on `cfg` both fail, with the same message, which contains `want`.
fn both_refuse(cfg: &Path, extra: &[&str], want: &str) {
    let c = cfg.to_str().unwrap();
    let mut check = vec!["check", "-c", c];
    check.extend(extra);
    let mut run = vec!["run", "-c", c];
    run.extend(extra);
    let (oc, or) = (evsd(&check), evsd(&run));
    assert!(
        !oc.status.success(),
        "check accepted {cfg:?}: {}",
        stderr(&oc)
    );
    assert!(
        !or.status.success(),
        "run accepted {cfg:?}: {}",
        stderr(&or)
    );
    assert!(
        stderr(&oc).contains(want),
        "check: want {want:?} in: {}",
        stderr(&oc)
    );
    assert_eq!(
        stderr(&oc),
        stderr(&or),
        "check and run disagree on {cfg:?}"
    );
}

#[test]
fn good_config_passes_check() {
    let d = tempfile::tempdir().unwrap();
    let cfg = write(d.path(), "good.toml", &good(d.path()));
    let o = evsd(&["check", "-c", cfg.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("config OK"));
}

#[test]
fn out_of_range_values_are_refused_with_the_range() {
    let d = tempfile::tempdir().unwrap();
    let g = good(d.path());
    let cases = [
        (
            g.replace("idle_sleep_us = 50", "idle_sleep_us = 97200000000"),
            "[dataplane] idle_sleep_us = 97200000000: must be 0..=1000000",
        ),
        (
            g.replace("mac_aging_secs = 300", "mac_aging_secs = 0"),
            "[switch] mac_aging_secs = 0: must be 1..=86400",
        ),
        (
            g.replace("idle_sleep_us = 50", "idle_sleep_us = 50\nburst = 64"),
            "[dataplane] burst = 64: must be 1..=32",
        ),
        (
            g.replace("idle_sleep_us = 50", "idle_sleep_us = 50\nmbufs = 100"),
            "[dataplane] mbufs = 100: must be 1024..=16777215",
        ),
        (
            g.replace("idle_sleep_us = 50", "idle_sleep_us = 50\nlink_poll_ms = 0"),
            "[dataplane] link_poll_ms = 0: must be 1..=10000",
        ),
        (
            g.replace("memory_mb = 256", "memory_mb = 4000000"),
            "[eal] memory_mb = 4000000: must be 0..=1048576",
        ),
        (
            g.replace(
                "vlan = 100",
                "vlan = 100\nshaping = { average_mbps = 100, burst_mbit = 1e30 }",
            ),
            "shaping.burst_mbit: 1000000000000000000000000000000: must be 0..=100000",
        ),
        (
            g.replace("vlan = 100", "vlan = 100\nshaping = { average_mbps = 1e9 }"),
            "shaping.average_mbps: 1000000000: must be 0.001..=400000",
        ),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let cfg = write(d.path(), &format!("range{i}.toml"), text);
        both_refuse(&cfg, &[], want);
    }
}

#[test]
fn what_run_would_fail_on_later_fails_check_now() {
    let d = tempfile::tempdir().unwrap();
    let g = good(d.path());
    let long = format!("/tmp/{}/ctl.sock", "x".repeat(120));
    let cases = [
        (
            g.replace("idle_sleep_us = 50", "idle_sleep_us = 50\nmetrics_listen = \"nonsense\""),
            "[dataplane] metrics_listen = \"nonsense\": not a host:port address",
        ),
        (
            g.replace(
                "idle_sleep_us = 50",
                "idle_sleep_us = 50\nmetrics_listen = \"127.0.0.1:99999\"",
            ),
            "[dataplane] metrics_listen = \"127.0.0.1:99999\"",
        ),
        (
            g.replace("no_huge = true", "no_huge = true\ncores = \"0-9999\""),
            "[eal] cores = \"0-9999\": CPU 9999 does not exist",
        ),
        (
            g.replace("no_huge = true", "no_huge = true\ncores = \"one\""),
            "[eal] cores = \"one\": \"one\" is not a CPU or a range",
        ),
        (
            g.replace(&format!("{}/ctl.sock", d.path().display()), &long),
            "[dataplane] control_socket",
        ),
        (
            g.clone() + "\n[controller]\nurl = \"ftp://x\"\nhost = \"h1\"\n",
            "[controller] url = \"ftp://x\": must start with http:// or https://",
        ),
        (
            g.clone()
                + "\n[controller]\nurl = \"http://127.0.0.1:1\"\nhost = \"h1\"\ntoken_file = \"/nonexistent/token\"\n",
            "[controller] token_file = \"/nonexistent/token\"",
        ),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let cfg = write(d.path(), &format!("later{i}.toml"), text);
        both_refuse(&cfg, &[], want);
    }
}

#[test]
fn an_empty_model_is_refused_unless_allowed() {
    let d = tempfile::tempdir().unwrap();
    let g = good(d.path());
    let empty = &g[..g.find("[[port_groups]]").unwrap()];
    let cfg = write(d.path(), "empty.toml", empty);
    both_refuse(&cfg, &[], "the model has no ports and no uplinks");
    both_refuse(
        &cfg,
        &[],
        "`--allow-empty` or `[dataplane] allow_empty_model = true`",
    );
    let c = cfg.to_str().unwrap();
    let o = evsd(&["check", "-c", c, "--allow-empty"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let keyed = write(
        d.path(),
        "empty-allowed.toml",
        &empty.replace(
            "idle_sleep_us = 50",
            "idle_sleep_us = 50\nallow_empty_model = true",
        ),
    );
    let o = evsd(&["check", "-c", keyed.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    // With a controller the model comes from it: a bare file is what a DVS host has.
    let o = evsd(&[
        "check",
        "-c",
        c,
        "--controller",
        "http://127.0.0.1:9660",
        "--host",
        "h1",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn ctl_apply_refuses_an_empty_model_before_sending_it() {
    let d = tempfile::tempdir().unwrap();
    let m = write(d.path(), "m.json", "{}");
    // No evsd on this socket: the refusal must come before any connection.
    let sock = d.path().join("none.sock");
    let o = evsd(&[
        "ctl",
        "-s",
        sock.to_str().unwrap(),
        "apply",
        m.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("m.json: the model has no ports and no uplinks"),
        "{e}"
    );
    assert!(e.contains("`evsd ctl apply --allow-empty`"), "{e}");
    let o = evsd(&[
        "ctl",
        "-s",
        sock.to_str().unwrap(),
        "apply",
        "--allow-empty",
        m.to_str().unwrap(),
    ]);
    let e = stderr(&o);
    assert!(!e.contains("no ports and no uplinks"), "{e}");
}
