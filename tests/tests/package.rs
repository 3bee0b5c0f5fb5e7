//! The Debian package as an operator gets it: `scripts/build-deb.sh` builds it (from the test
//! build, `--profile dev`), dpkg installs it into a clean directory root, and evsd is started from
//! the installed unit's own `ExecStartPre`/`ExecStart` lines with the installed default config:
//! the unit's readiness protocol (READY=1 on NOTIFY_SOCKET), `ExecReload` (SIGHUP) and the stop
//! (SIGTERM, status 0) are checked as systemd would see them. The controller is started from its
//! unit's line and `/etc/default` flags, and the installed `dvsctl` talks to it. Then dpkg removes
//! and purges the package. Runs as root, without hugepages (the one change made to the config
//! besides its paths, see `localize`).

use evs_e2e::{serial, skip_unless_dpdk, wait_for, Proc};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(30);

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn run(cmd: &mut Command) -> String {
    let o = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        o.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// dpkg acting on the directory root `root`, its own database inside it; maintainer scripts run
/// outside a chroot with DPKG_ROOT set (they honour it).
fn dpkg(root: &Path) -> Command {
    let mut c = Command::new("dpkg");
    c.arg(format!("--root={}", root.display()))
        .arg("--force-script-chrootless")
        .arg("--force-not-root")
        .arg("--log=/dev/null");
    c
}

/// The value of `Key=` in a unit file (the first one).
fn unit_line(unit: &str, key: &str) -> String {
    unit.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in the unit:\n{unit}"))
        .to_string()
}

/// A unit's command line with the installed root's paths: /usr/bin and /etc inside `root`.
fn command_of(line: &str, root: &Path, subst: &[(&str, String)]) -> Command {
    let mut words: Vec<String> = line.split_whitespace().map(str::to_string).collect();
    for w in &mut words {
        for (from, to) in subst {
            if w == from {
                *w = to.clone();
            }
        }
        if w.starts_with("/usr/") || w.starts_with("/etc/") {
            *w = format!("{}{w}", root.display());
        }
    }
    let mut c = Command::new(&words[0]);
    c.args(&words[1..]);
    c
}

/// The installed default config, made to run here: its run-time paths moved into `dir`, no
/// hugepages, a small memory size and idle sleep (a shared CI machine), the metrics port free.
fn localize(text: &str, dir: &Path) -> String {
    let d = dir.display();
    let out = text
        .replace("\"/run/evs/", &format!("\"{d}/run/"))
        .replace("\"/var/lib/evs\"", &format!("\"{d}/state\""))
        .replace("no_huge = false", "no_huge = true")
        .replace("memory_mb = 1024", "memory_mb = 256")
        .replace("idle_sleep_us = 0", "idle_sleep_us = 20")
        .replace("127.0.0.1:9650", "127.0.0.1:0");
    for (was, what) in [
        ("no_huge = false", "hugepages"),
        ("\"/run/evs/evsd.sock\"", "control socket"),
        ("\"/var/lib/evs\"", "state dir"),
    ] {
        assert!(
            text.contains(was),
            "the packaged config has no {was} ({what})"
        );
    }
    out
}

struct Notify(UnixDatagram);

impl Notify {
    /// Waits (bounded) for a datagram holding `what`; returns the datagram.
    fn expect(&self, what: &str) -> String {
        let deadline = Instant::now() + T;
        let mut buf = [0u8; 4096];
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            self.0
                .set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            if let Ok(n) = self.0.recv(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                if msg.lines().any(|l| l == what) {
                    return msg;
                }
                seen.push(msg);
            }
        }
        panic!("no {what} on NOTIFY_SOCKET within {T:?}; got {seen:?}");
    }
}

#[test]
fn package_installs_into_a_clean_root_and_evsd_runs_from_its_unit() {
    skip_unless_dpdk!();
    for tool in ["dpkg", "dpkg-deb"] {
        if evs_e2e::which(tool).is_none() {
            eprintln!("SKIPPED: {tool} is not installed (apt-get install dpkg)");
            return;
        }
    }
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    // scripts/test.sh sets EVS_PACKAGE_PREBUILT=1: its `cargo test --workspace` has just built
    // the four binaries, and a `cargo build -p ...` of them would rebuild 15 crates with other
    // features. Run alone, the test builds what it packages.
    let mut build = Command::new(workspace().join("scripts/build-deb.sh"));
    build.args(["--profile", "dev"]);
    if std::env::var_os("EVS_PACKAGE_PREBUILT").is_some_and(|v| v == "1") {
        build.arg("--prebuilt");
    }
    let out = run(build.arg("--out").arg(tmp.path().join("deb")));
    let deb = PathBuf::from(out.lines().last().expect("build-deb.sh printed the .deb"));
    assert!(deb.exists(), "{}", deb.display());

    // What apt shows of it: a name, a version, the DPDK libraries it needs.
    let info = run(Command::new("dpkg-deb").arg("--info").arg(&deb));
    assert!(info.contains("Package: evs"), "{info}");
    let dep_line = info
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("Depends:"))
        .unwrap_or_else(|| panic!("no Depends:\n{info}"));
    assert!(
        dep_line.contains("librte-"),
        "DPDK's libraries are not in {dep_line}"
    );
    assert!(dep_line.contains("libc6"), "{dep_line}");

    // Installed into a clean root with its own dpkg database.
    let root = tmp.path().join("root");
    for d in ["var/lib/dpkg/info", "var/lib/dpkg/updates"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::write(root.join("var/lib/dpkg/status"), "").unwrap();
    // The libraries it depends on are the machine's, not in the empty root.
    run(dpkg(&root).arg("--force-depends").arg("-i").arg(&deb));
    let status = run(dpkg(&root).args(["-s", "evs"]));
    assert!(status.contains("Status: install ok installed"), "{status}");
    for f in [
        "usr/bin/evsd",
        "usr/bin/dvs-controller",
        "usr/bin/dvsctl",
        "lib/systemd/system/evsd.service",
        "lib/systemd/system/dvs-controller.service",
        "etc/evs/evsd.toml",
        "etc/default/dvs-controller",
        "usr/share/man/man1/evsd.1.gz",
        "usr/share/man/man1/evsd-ctl.1.gz",
        "usr/share/man/man1/dvsctl.1.gz",
        "usr/share/man/man1/dvs-controller.1.gz",
        "usr/share/bash-completion/completions/evsd",
        "usr/share/bash-completion/completions/dvsctl",
        "usr/share/zsh/vendor-completions/_evsd",
        "usr/share/fish/vendor_completions.d/dvsctl.fish",
        "usr/share/doc/evs/examples/evsd.toml",
        "usr/share/doc/evs/README.Debian",
        "var/lib/evs",
    ] {
        assert!(root.join(f).exists(), "the package did not install /{f}");
    }
    let man = run(Command::new("sh").arg("-c").arg(format!(
        "gzip -dc {}",
        root.join("usr/share/man/man1/evsd-run.1.gz").display()
    )));
    assert!(man.contains(".TH") && man.contains("config"), "{man}");
    let completion =
        std::fs::read_to_string(root.join("usr/share/bash-completion/completions/evsd")).unwrap();
    assert!(
        completion.contains("complete") && completion.contains("ctl"),
        "{completion}"
    );
    let conffiles = run(dpkg(&root).args(["--status", "evs"]));
    assert!(
        conffiles.contains("/etc/evs/evsd.toml"),
        "not a conffile: {conffiles}"
    );

    // evsd from the unit's own lines, with the installed config moved to run here.
    let unit = std::fs::read_to_string(root.join("lib/systemd/system/evsd.service")).unwrap();
    assert_eq!(unit_line(&unit, "Type"), "notify");
    let dir = tmp.path().join("evs");
    std::fs::create_dir_all(dir.join("run")).unwrap();
    let cfg = dir.join("evsd.toml");
    let installed = std::fs::read_to_string(root.join("etc/evs/evsd.toml")).unwrap();
    std::fs::write(&cfg, localize(&installed, &dir)).unwrap();
    let subst = [("/etc/evs/evsd.toml", cfg.display().to_string())];
    run(&mut command_of(
        &unit_line(&unit, "ExecStartPre"),
        &root,
        &subst,
    ));
    let notify_path = dir.join("notify");
    let notify = Notify(UnixDatagram::bind(&notify_path).unwrap());
    let mut start = command_of(&unit_line(&unit, "ExecStart"), &root, &subst);
    start.env("NOTIFY_SOCKET", &notify_path);
    let mut evsd = Proc::spawn("evsd (unit)", &mut start, dir.join("evsd.log"));
    let ready = notify.expect("READY=1");
    assert!(
        ready.contains(&format!("MAINPID={}", evsd.pid())),
        "{ready}"
    );
    // Ready means the control socket answers.
    let sock = dir.join("run/evsd.sock");
    let evsd_bin = root.join("usr/bin/evsd");
    let ctl = |args: &[&str]| {
        run(Command::new(&evsd_bin)
            .args(["ctl", "-s"])
            .arg(&sock)
            .args(args))
    };
    ctl(&["show", "ports"]);

    // `systemctl reload`: the unit's ExecReload with $MAINPID, then READY=1 again; the file's
    // new port is in force.
    std::fs::write(
        &cfg,
        localize(&installed, &dir)
            + "\n[[port_groups]]\nname = \"web\"\nvlan = 100\n\n[[ports]]\nname = \"vm1\"\nmac = \"02:00:00:00:00:01\"\nport_group = \"web\"\n",
    )
    .unwrap();
    let pid = evsd.pid().to_string();
    run(&mut command_of(
        &unit_line(&unit, "ExecReload"),
        &root,
        &[("$MAINPID", pid)],
    ));
    notify.expect("RELOADING=1");
    notify.expect("READY=1");
    wait_for("the reloaded port", T, || {
        ctl(&["show", "ports"]).contains("vm1").then_some(())
    });

    // `systemctl stop`: SIGTERM (the unit's KillSignal), STOPPING=1, exit status 0.
    assert_eq!(unit_line(&unit, "KillSignal"), "SIGTERM");
    let _ = Command::new("kill")
        .args(["-TERM", &evsd.pid().to_string()])
        .status();
    notify.expect("STOPPING=1");
    let st = wait_for("evsd to exit", T, || evsd.exited());
    assert!(st.success(), "evsd exited with {st}:\n{}", evsd.log_text());

    // The controller from its unit and /etc/default flags, the store moved into `dir`.
    let unit =
        std::fs::read_to_string(root.join("lib/systemd/system/dvs-controller.service")).unwrap();
    let defaults = std::fs::read_to_string(root.join("etc/default/dvs-controller")).unwrap();
    let opts = defaults
        .lines()
        .find_map(|l| l.strip_prefix("DVS_CONTROLLER_OPTS="))
        .expect("DVS_CONTROLLER_OPTS in /etc/default/dvs-controller")
        .trim_matches('"')
        .replace("127.0.0.1:9660", "127.0.0.1:0")
        .replace("/var/lib/dvs/", &format!("{}/", dir.display()));
    let line = unit_line(&unit, "ExecStart").replace("$DVS_CONTROLLER_OPTS", &opts);
    let mut ctrl = Proc::spawn(
        "dvs-controller (unit)",
        &mut command_of(&line, &root, &[]),
        dir.join("controller.log"),
    );
    let url = wait_for("the controller's address", T, || {
        let log = ctrl.log_text();
        let at = log.find("serving http://")? + "serving ".len();
        Some(log[at..].split_whitespace().next()?.to_string())
    });
    let dvsctl = |args: &[&str]| {
        run(Command::new(root.join("usr/bin/dvsctl"))
            .args(["--controller", &url])
            .args(args))
    };
    dvsctl(&["dvs", "add", "prod", "--vlans", "100-199"]);
    let shown = dvsctl(&["--json", "dvs", "list"]);
    assert!(shown.contains("prod"), "{shown}");
    let st = ctrl.stop(T).expect("the controller's exit status");
    assert!(
        st.success(),
        "dvs-controller exited with {st}:\n{}",
        ctrl.log_text()
    );
    assert!(
        dir.join("controller.redb").exists(),
        "the store is not where /etc/default says"
    );

    // Removed: binaries gone, the edited conffile kept until purge, state removed on purge.
    std::fs::write(root.join("var/lib/evs/state.json"), "{}").unwrap();
    run(dpkg(&root).args(["-r", "evs"]));
    assert!(!root.join("usr/bin/evsd").exists());
    assert!(
        root.join("etc/evs/evsd.toml").exists(),
        "remove must keep the conffile"
    );
    run(dpkg(&root).args(["-P", "evs"]));
    assert!(
        !root.join("etc/evs/evsd.toml").exists(),
        "purge removes the conffile"
    );
    assert!(
        !root.join("var/lib/evs").exists(),
        "purge removes evsd's state"
    );
}
