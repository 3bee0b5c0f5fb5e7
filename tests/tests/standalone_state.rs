//! A standalone evsd keeps what the operator changed at run time (`evsd ctl apply`, `attach`)
//! across restarts, `kill -9` included, and `--discard-state` goes back to the boot config.
//!
//! Driven as an operator would: one boot config file, `evsd ctl` commands, restarts of the
//! switch under running guests. The guests are dpdk-testpmd processes that own their vhost-user
//! sockets (evsd is the client and reconnects), so they keep running, and counting, while the
//! switch is killed and started again. Runs without hugepages, as root.

use evs_e2e::{serial, skip_unless_dpdk, wait_for, Evsd, Mode, Testpmd};
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

const T: Duration = Duration::from_secs(60);
/// Frames a guest must receive for a check by traffic (a few ms at testpmd's rate).
const N: u64 = 5_000;

/// The boot config: A and B in port group "web" (VLAN 100), both attached; A floods (testpmd's
/// txonly frames go to a MAC nobody has) to every other port of its VLAN.
fn boot_config(dir: &Path, prefix: &str) -> String {
    let mut c = evs_e2e::base_config(dir, prefix, "");
    c += r#"
[[port_groups]]
name = "web"
type = "access"
vlan = 100
"#;
    for (i, name) in ["a", "b"].iter().enumerate() {
        c += &format!(
            r#"
[[ports]]
name = "{name}"
mac = "02:00:00:00:00:{:02x}"
port_group = "web"

[[attach]]
port = "{name}"
vhost = {{ socket = "{}/{name}.sock", role = "client" }}
"#,
            i + 1,
            dir.display()
        );
    }
    c
}

/// The operator's change: a new port C in "web", and B moved to a new group "other" (VLAN 200),
/// so A's frames reach C and no longer B.
const CHANGED_MODEL: &str = r#"
[[port_groups]]
name = "web"
type = "access"
vlan = 100

[[port_groups]]
name = "other"
type = "access"
vlan = 200

[[ports]]
name = "a"
mac = "02:00:00:00:00:01"
port_group = "web"

[[ports]]
name = "b"
mac = "02:00:00:00:00:02"
port_group = "other"

[[ports]]
name = "c"
mac = "02:00:00:00:00:03"
port_group = "web"
"#;

fn evsd_cmd(args: &[&str]) -> Output {
    Command::new(evs_e2e::evsd_bin!())
        .args(args)
        .output()
        .expect("run evsd")
}

/// `evsd ctl ARGS` against `evsd`, which must succeed; its standard output.
fn ctl(evsd: &Evsd, args: &[&str]) -> String {
    let sock = evsd.socket.to_str().unwrap();
    let o = evsd_cmd(&[&["ctl", "-s", sock], args].concat());
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        o.status.success(),
        "evsd ctl {args:?}: {out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

fn show_model(evsd: &Evsd) -> model::Model {
    serde_json::from_str(&ctl(evsd, &["show", "model", "--json"])).unwrap()
}

fn show_ports(evsd: &Evsd) -> Vec<api::PortReport> {
    serde_json::from_str(&ctl(evsd, &["show", "ports", "--json"])).unwrap()
}

fn generation(evsd: &Evsd) -> u64 {
    let t: api::TableDump =
        serde_json::from_str(&ctl(evsd, &["show", "tables", "--json"])).unwrap();
    t.version
}

fn group_of(m: &model::Model, port: &str) -> Option<String> {
    m.ports
        .iter()
        .find(|p| p.name == port)
        .map(|p| p.port_group.clone())
}

/// What `evsd ctl show ...` must say once the operator's change is in force.
fn assert_changed_state(evsd: &Evsd, gen: u64, c_sock: &Path) {
    let m = show_model(evsd);
    assert_eq!(group_of(&m, "c").as_deref(), Some("web"), "{m:?}");
    assert_eq!(group_of(&m, "b").as_deref(), Some("other"), "{m:?}");
    assert_eq!(generation(evsd), gen, "the generation survives");
    let ports = show_ports(evsd);
    let c = ports.iter().find(|p| p.name == "c").expect("port c");
    assert_eq!(
        c.backend,
        Some(model::Backend::Vhost(model::VhostConfig {
            socket: c_sock.to_owned(),
            role: model::Role::Client,
        })),
        "{c:?}"
    );
}

/// Waits until guest `g` (testpmd port 0) received `n` more frames than `since`.
fn guest_receives(g: &Testpmd, what: &str, since: u64, n: u64) -> u64 {
    wait_for(what, T, || {
        let rx = g.stats(0).0;
        (rx >= since + n).then_some(rx)
    })
}

#[test]
fn run_time_changes_survive_kill_and_restart() {
    skip_unless_dpdk!();
    let _g = serial();
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let sock = |n: &str| dir.join(format!("{n}.sock"));
    let cfg = dir.join("evsd.toml");
    std::fs::write(&cfg, boot_config(dir, &evs_e2e::unique("evs-e2e-state-"))).unwrap();
    let state_file = dir.join("state").join("state.json");

    // The guests own their sockets and wait for the switch (they block in EAL init until it
    // connects); C's waits until the operator attaches it.
    let gb = Testpmd::start(dir, "guest-b", &[&sock("b")], true, Mode::RxOnly);
    let gc = Testpmd::start(dir, "guest-c", &[&sock("c")], true, Mode::RxOnly);
    let _ga = Testpmd::start(dir, "guest-a", &[&sock("a")], true, Mode::TxOnly);
    for n in ["a", "b", "c"] {
        wait_for(&format!("guest {n}'s socket"), T, || {
            sock(n).exists().then_some(())
        });
    }

    // 1. The boot config: A's frames reach B.
    let evsd = Evsd::run(dir, "evsd1", &cfg, &[]);
    assert!(
        evsd.proc.log_text().contains("no saved state in"),
        "{}",
        evsd.proc.log_text()
    );
    evsd.wait_state("a", "up", T);
    evsd.wait_state("b", "up", T);
    guest_receives(&gb, "B receiving with the boot config", 0, N);
    assert!(!state_file.exists(), "no run-time change, no state file");
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        CHANGED_MODEL.replace("port_group = \"other\"", "port_group = \"nope\""),
    )
    .unwrap();
    let o = evsd_cmd(&[
        "ctl",
        "-s",
        evsd.socket.to_str().unwrap(),
        "apply",
        bad.to_str().unwrap(),
    ]);
    assert!(
        !o.status.success(),
        "a model naming a missing port group is refused"
    );
    assert!(
        !state_file.exists(),
        "a refused apply changes nothing, so writes nothing"
    );

    // 2. The operator changes the model and attaches C.
    let changed = dir.join("changed.toml");
    std::fs::write(&changed, CHANGED_MODEL).unwrap();
    let applied: api::Applied =
        serde_json::from_str(&ctl(&evsd, &["apply", changed.to_str().unwrap(), "--json"])).unwrap();
    assert!(
        state_file.exists(),
        "the apply was saved before it was answered"
    );
    let out = ctl(
        &evsd,
        &[
            "attach",
            "c",
            "--vhost",
            sock("c").to_str().unwrap(),
            "--role",
            "client",
        ],
    );
    assert_eq!(out.trim(), "attached");
    let gen = applied.generation;
    assert_changed_state(&evsd, gen, &sock("c"));
    evsd.wait_state("c", "up", T);
    guest_receives(&gc, "C receiving after the apply and attach", 0, N);
    let b_tx = evsd.counter("b", "tx_packets");
    let c_tx = evsd.counter("c", "tx_packets");
    wait_for("more of A's frames to C", T, || {
        (evsd.counter("c", "tx_packets") >= c_tx + N).then_some(())
    });
    assert!(
        evsd.counter("b", "tx_packets") <= b_tx + 256,
        "B is in VLAN 200 now: only frames in flight at the apply may still reach it"
    );
    let ids: Vec<(String, u32)> = show_ports(&evsd)
        .into_iter()
        .map(|p| (p.name, p.id))
        .collect();

    // 3. kill -9: nothing is saved at exit; what is on disk is what was acknowledged.
    evsd.kill9();
    let check = evsd_cmd(&["check", "-c", cfg.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{said}");
    assert!(
        said.contains(&format!("generation {gen}, 3 ports")),
        "evsd check tells the state file will be used: {said}"
    );
    let c_rx = gc.stats(0).0;
    let b_rx = gb.stats(0).0;

    // 4. Started again with the same boot config: the saved state is in force, and traffic
    // follows it (C receives A's frames, B nothing).
    let evsd = Evsd::run(dir, "evsd2", &cfg, &[]);
    let log = evsd.proc.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("RESTORING"))
        .unwrap_or_else(|| panic!("no RESTORING line in the log:\n{log}"));
    assert!(
        line.contains(state_file.to_str().unwrap())
            && line.contains(&format!("generation {gen}, 3 ports")),
        "{line}"
    );
    assert_changed_state(&evsd, gen, &sock("c"));
    let ids_after: Vec<(String, u32)> = show_ports(&evsd)
        .into_iter()
        .map(|p| (p.name, p.id))
        .collect();
    assert_eq!(ids_after, ids, "port ids survive");
    for n in ["a", "b", "c"] {
        evsd.wait_state(n, "up", T);
    }
    let c_rx = guest_receives(&gc, "C receiving after kill -9 and restart", c_rx, N);
    // The guest can count frames before the forwarding thread publishes its counters.
    wait_for(
        "evsd counting what it sent to C after the restart",
        T,
        || (evsd.counter("c", "tx_packets") >= N).then_some(()),
    );
    assert_eq!(
        evsd.counter("b", "tx_packets"),
        0,
        "B stays in VLAN 200 after the restart"
    );
    assert!(gb.stats(0).0 <= b_rx + 256, "guest B got nothing new");

    // 5. A clean restart (SIGTERM) keeps it too.
    let mut evsd = evsd;
    let st = evsd.proc.stop(T).expect("evsd exit status");
    assert!(st.success(), "evsd exit on SIGTERM: {st}");
    drop(evsd);
    let evsd = Evsd::run(dir, "evsd3", &cfg, &[]);
    assert_changed_state(&evsd, gen, &sock("c"));
    evsd.wait_state("c", "up", T);
    guest_receives(&gc, "C receiving after a clean restart", c_rx, N);

    // A save that fails (here: the temp file cannot be created) makes the answer an error that
    // says the change is in force but not persisted; evsd retries and logs when it succeeds.
    let blocker = dir.join("state").join("state.json.tmp");
    std::fs::create_dir(&blocker).unwrap();
    let o = evsd_cmd(&[
        "ctl",
        "-s",
        evsd.socket.to_str().unwrap(),
        "apply",
        changed.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "an unsaved apply must not look saved");
    assert!(
        err.contains(&format!(
            "the change is applied (generation {} is in force) but NOT persisted",
            gen + 1
        )),
        "{err}"
    );
    assert_eq!(generation(&evsd), gen + 1, "the change is in force");
    std::fs::remove_dir(&blocker).unwrap();
    wait_for("the retried save", T, || {
        evsd.proc
            .log_text()
            .contains("after an earlier failure")
            .then_some(())
    });
    let saved = std::fs::read_to_string(&state_file).unwrap();
    assert!(
        saved.contains(&format!("\"generation\": {}", gen + 1)),
        "{saved}"
    );

    // 6. --discard-state: back to the boot config (B in "web" receiving again, no port C); the
    // state file is kept aside, not deleted.
    let mut evsd = evsd;
    let st = evsd.proc.stop(T).expect("evsd exit status");
    assert!(st.success(), "evsd exit on SIGTERM: {st}");
    drop(evsd);
    let b_rx = gb.stats(0).0;
    let evsd = Evsd::run(dir, "evsd4", &cfg, &["--discard-state"]);
    assert!(
        evsd.proc
            .log_text()
            .contains("--discard-state: the saved state was moved to"),
        "{}",
        evsd.proc.log_text()
    );
    assert!(!state_file.exists());
    assert!(dir.join("state").join("state.json.discarded").exists());
    let m = show_model(&evsd);
    assert_eq!(group_of(&m, "b").as_deref(), Some("web"), "{m:?}");
    assert_eq!(group_of(&m, "c"), None, "{m:?}");
    assert!(show_ports(&evsd).iter().all(|p| p.name != "c"));
    evsd.wait_state("b", "up", T);
    guest_receives(&gb, "B receiving again with the boot config", b_rx, N);

    // 7. A state file evsd cannot read stops it at start, naming the file and the way out; it is
    // never silently replaced by the config.
    let mut evsd = evsd;
    evsd.proc.stop(T).expect("evsd exit status");
    drop(evsd);
    std::fs::write(&state_file, "{\"format_version\": 1, \"generation\": ").unwrap();
    for args in [["run", "-c"], ["check", "-c"]] {
        // Under a guard: an evsd that wrongly started would be stopped, not left running.
        let mut p = evs_e2e::Proc::spawn(
            "evsd-refusing",
            Command::new(evs_e2e::evsd_bin!()).args(args).arg(&cfg),
            dir.join(format!("evsd-{}-corrupt.log", args[0])),
        );
        let st = wait_for("evsd refusing the corrupt state file", T, || p.exited());
        let err = p.log_text();
        assert!(!st.success(), "evsd {args:?} accepted a corrupt state file");
        assert!(
            err.contains(state_file.to_str().unwrap())
                && err.contains("not valid JSON")
                && err.contains("--discard-state"),
            "evsd {args:?}: {err}"
        );
    }
}
