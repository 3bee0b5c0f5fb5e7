//! One DVS across three hosts, defined only with `dvsctl` against `dvs-controller`, with each
//! host's `evsd` following the controller as its host agent. The physical network is the lab
//! (`evs_e2e::lab`): host namespaces behind a top-of-rack namespace bridging VLANs; the
//! controller lives in a management namespace with a link to every host.
//!
//! Every check is by packets actually received: pings and TCP between namespace guests.

use evs_e2e::lab::{skip_reason, testpmd_missing, EvsdOptions, Guest, Lab, LabSpec, PmdMode};
use evs_e2e::qemu::{assert_ping_ok, guest_image, Guest as QemuGuest, BOOT};
use evs_e2e::{wait_for, Proc};
use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

const PORT: u16 = 9660;
const SECOND_PORT: u16 = 9661;
const WAIT: Duration = Duration::from_secs(30);
/// Many steps start DPDK processes and labs; one lab at a time keeps the two CPUs usable.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

enum Backend {
    Embedded,
    /// A 3-member etcd cluster on the management namespace's loopback, two controller replicas.
    Etcd,
}

/// The controller side of the lab: store, replicas, and dvsctl run in the management namespace.
struct Control {
    mgmt: String,
    dir: PathBuf,
    backend: Backend,
    replicas: Vec<Option<Proc>>,
    etcd: Vec<Option<Proc>>,
    token_file: PathBuf,
}

fn controller_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_dvs-controller-e2e"))
}

fn dvsctl_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_dvsctl-e2e"))
}

/// What dvsctl printed, with its exit code.
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Control {
    fn new(lab: &mut Lab, backend: Backend) -> Control {
        let mgmt = lab.add_management();
        let dir = lab.dir.path().join("control");
        std::fs::create_dir_all(&dir).unwrap();
        let token_file = dir.join("operator.token");
        std::fs::write(&token_file, "op-e2e-token\n").unwrap();
        let mut c = Control {
            mgmt,
            dir,
            backend,
            replicas: vec![],
            etcd: vec![],
            token_file,
        };
        if matches!(c.backend, Backend::Etcd) {
            for i in 0..3 {
                let p = c.spawn_etcd(i);
                c.etcd.push(Some(p));
            }
            for i in 0..3 {
                c.wait_etcd(i);
            }
        }
        let n = match c.backend {
            Backend::Embedded => 1,
            Backend::Etcd => 2,
        };
        for i in 0..n {
            c.replicas.push(None);
            c.start_replica(i);
        }
        c
    }

    fn etcd_urls(i: usize) -> (String, String) {
        (
            format!("http://127.0.0.1:{}", 23790 + 2 * i),
            format!("http://127.0.0.1:{}", 23791 + 2 * i),
        )
    }

    fn spawn_etcd(&self, i: usize) -> Proc {
        let cluster: Vec<String> = (0..3)
            .map(|j| format!("e{j}={}", Self::etcd_urls(j).1))
            .collect();
        let (client, peer) = Self::etcd_urls(i);
        let data = self.dir.join(format!("etcd{i}"));
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.mgmt, "etcd", "--name"])
            .arg(format!("e{i}"))
            .arg("--data-dir")
            .arg(&data)
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &cluster.join(",")])
            .args([
                "--initial-cluster-state",
                "new",
                "--initial-cluster-token",
                "dvs-e2e",
            ])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(["--log-level", "warn", "--logger", "zap"]);
        Proc::spawn(
            &format!("etcd{i}"),
            &mut cmd,
            self.dir.join(format!("etcd{i}.log")),
        )
    }

    fn wait_etcd(&self, i: usize) {
        let url = format!("{}/health", Self::etcd_urls(i).0);
        wait_for(&format!("etcd member {i} to be healthy"), WAIT, || {
            let ok = Command::new("ip")
                .args(["netns", "exec", &self.mgmt, "python3", "-c"])
                .arg("import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)")
                .arg(&url)
                .status()
                .is_ok_and(|s| s.success());
            ok.then_some(())
        });
    }

    fn replica_port(i: usize) -> u16 {
        if i == 0 {
            PORT
        } else {
            SECOND_PORT
        }
    }

    fn start_replica(&mut self, i: usize) {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.mgmt])
            .arg(controller_bin())
            .arg("--listen")
            .arg(format!("0.0.0.0:{}", Self::replica_port(i)))
            .arg("--operator-token-file")
            .arg(&self.token_file);
        match self.backend {
            Backend::Embedded => {
                cmd.arg("--db").arg(self.dir.join("controller.redb"));
            }
            Backend::Etcd => {
                let urls: Vec<String> = (0..3).map(|j| Self::etcd_urls(j).0).collect();
                cmd.arg("--etcd").arg(urls.join(","));
            }
        }
        let p = Proc::spawn(
            &format!("controller{i}"),
            &mut cmd,
            self.dir.join(format!("controller{i}.log")),
        );
        self.replicas[i] = Some(p);
        wait_for(&format!("controller replica {i} to answer"), WAIT, || {
            (self.dvsctl_at(i, &["status"]).code == 0).then_some(())
        });
    }

    fn kill_replica(&mut self, i: usize) {
        if let Some(mut p) = self.replicas[i].take() {
            p.kill();
        }
    }

    /// The controller URLs a host uses: every replica, as seen from host `h`.
    fn urls_for(&self, lab: &Lab, h: usize) -> String {
        (0..self.replicas.len())
            .map(|i| format!("http://{}:{}", lab.mgmt_addr(h), Self::replica_port(i)))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn dvsctl_at(&self, replica: usize, args: &[&str]) -> Out {
        let o = Command::new("ip")
            .args(["netns", "exec", &self.mgmt])
            .arg(dvsctl_bin())
            .arg("--controller")
            .arg(format!("http://127.0.0.1:{}", Self::replica_port(replica)))
            .arg("--token-file")
            .arg(&self.token_file)
            .args(args)
            .output()
            .expect("run dvsctl");
        Out {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into(),
            stderr: String::from_utf8_lossy(&o.stderr).into(),
        }
    }

    /// dvsctl against the first live replica; panics with its output if it fails.
    fn dvsctl(&self, args: &[&str]) -> String {
        let i = self
            .replicas
            .iter()
            .position(Option::is_some)
            .expect("a live replica");
        let o = self.dvsctl_at(i, args);
        assert_eq!(
            o.code,
            0,
            "dvsctl {} failed ({}):\n{}{}",
            args.join(" "),
            o.code,
            o.stdout,
            o.stderr
        );
        o.stdout
    }

    fn status(&self) -> Value {
        serde_json::from_str(&self.dvsctl(&["--json", "status"])).expect("status JSON")
    }

    /// Waits until every host is alive and runs its current slice.
    fn wait_in_sync(&self, hosts: usize) {
        wait_for("every host alive and in sync", WAIT, || {
            let s = self.status();
            let hs = s["hosts"].as_array()?;
            (hs.len() == hosts
                && hs
                    .iter()
                    .all(|h| h["alive"] == true && h["in_sync"] == true))
            .then_some(())
        });
    }
}

struct Guests {
    web: Vec<Guest>,
    db: Vec<Guest>,
    app: Vec<Guest>,
    /// A namespace guest on h1 and a dpdk-testpmd guest (vhost-user, the agent creates the
    /// socket) on h3, alone in port group pmd: testpmd answers ARP for any address.
    pmd: (Guest, Guest),
    /// A second web guest on h1: traffic between it and web1 stays on the host.
    web1b: Guest,
}

/// The QEMU guest on h2 (port vm2, web): its socket is the one the agent creates.
const VM_IP: &str = "10.1.0.52";
const VM_MAC: &str = "02:00:00:00:02:34";

fn define(lab: &mut Lab, c: &Control) -> Guests {
    c.dvsctl(&["dvs", "add", "prod", "--vlans", "100-299"]);
    for h in &lab.hosts {
        let token = h.dir.join("host.token");
        let vhost_dir = h.vhost_dir.display().to_string();
        c.dvsctl(&[
            "host",
            "add",
            &h.name,
            "--token-file",
            token.to_str().unwrap(),
            "--vhost-dir",
            &vhost_dir,
        ]);
        c.dvsctl(&[
            "uplink",
            "add",
            "prod",
            &h.name,
            "up",
            "--member",
            &h.uplink_devargs(),
        ]);
    }
    c.dvsctl(&["pg", "add", "prod", "web", "--vlan", "100"]);
    c.dvsctl(&["pg", "add", "prod", "db", "--vlan", "200"]);
    c.dvsctl(&["pg", "add", "prod", "app", "--vlan", "250"]);
    c.dvsctl(&["pg", "add", "prod", "pmd", "--vlan", "260"]);
    // srv admits ICMP only from the members of cli, wherever they run.
    c.dvsctl(&["sg", "add", "cli", "--default-rules"]);
    c.dvsctl(&["sg", "add", "other", "--default-rules"]);
    c.dvsctl(&["sg", "add", "srv", "--default-rules"]);
    c.dvsctl(&[
        "sg",
        "rule-add",
        "srv",
        "--direction",
        "ingress",
        "--protocol",
        "icmp",
        "--remote-group",
        "cli",
    ]);
    let add = |lab: &mut Lab, host: usize, name: &str, n: u8, pg: &str, sg: Option<&str>| {
        let mac = format!("02:00:00:00:{:02x}:{n:02x}", host + 1);
        let ip = format!("10.1.0.{n}");
        let g = lab.add_ns_guest(host, name, &mac, &format!("{ip}/24"));
        let devargs = lab.devargs(&g).unwrap();
        let hname = lab.hosts[host].name.clone();
        let mut args = vec![
            "port", "add", name, "--dvs", "prod", "--pg", pg, "--mac", &mac, "--ip", &ip, "--host",
            &hname, "--ethdev", &devargs,
        ];
        if let Some(sg) = sg {
            args.extend(["--sg", sg]);
        }
        c.dvsctl(&args);
        g
    };
    let pmd_client = add(lab, 0, "pmdc", 41, "pmd", None);
    let pmd = lab.add_vhost_port(2, "pmd3", "02:00:00:00:03:2b", "10.1.0.43");
    c.dvsctl(&[
        "port", "add", "pmd3", "--dvs", "prod", "--pg", "pmd", "--mac", &pmd.mac, "--ip", &pmd.ip,
        "--host", "h3",
    ]);
    let web1b = add(lab, 0, "web1b", 14, "web", None);
    c.dvsctl(&[
        "port", "add", "vm2", "--dvs", "prod", "--pg", "web", "--mac", VM_MAC, "--ip", VM_IP,
        "--host", "h2",
    ]);
    Guests {
        web1b,
        pmd: (pmd_client, pmd),
        web: (0..3)
            .map(|h| add(lab, h, &format!("web{}", h + 1), 11 + h as u8, "web", None))
            .collect(),
        db: (0..2)
            .map(|h| add(lab, h, &format!("db{}", h + 1), 21 + h as u8, "db", None))
            .collect(),
        app: vec![
            add(lab, 0, "app1", 31, "app", Some("cli")),
            add(lab, 1, "app2", 32, "app", Some("other")),
            add(lab, 2, "app3", 33, "app", Some("srv")),
        ],
    }
}

fn host_opts(lab: &Lab, c: &Control, i: usize) -> EvsdOptions {
    let h = &lab.hosts[i];
    EvsdOptions::bare()
        .arg("--controller")
        .arg(c.urls_for(lab, i))
        .arg("--host")
        .arg(h.name.clone())
        .arg("--token-file")
        .arg(h.dir.join("host.token").display().to_string())
}

fn wait_ports_up(lab: &Lab, g: &Guests) {
    for h in &lab.hosts {
        h.wait_port_up("prod/up");
    }
    for x in g
        .web
        .iter()
        .chain(&g.db)
        .chain(&g.app)
        .chain([&g.pmd.0, &g.web1b])
    {
        lab.hosts[x.host].wait_port_up(&x.name);
    }
}

fn reaches(lab: &Lab, from: &Guest, to: &Guest) -> bool {
    lab.ping_until(from, &to.ip, Duration::from_secs(10))
}

fn blocked(lab: &Lab, from: &Guest, to: &Guest) -> bool {
    lab.ping(from, &to.ip, 3, Duration::from_secs(2)) == 0
}

fn vlan_of_web(lab: &Lab, host: usize) -> u64 {
    let m: Value =
        serde_json::from_str(&lab.hosts[host].ctl(&["--json", "show", "model"]).unwrap()).unwrap();
    let pgs = m["port_groups"].as_array().unwrap();
    pgs.iter().find(|p| p["name"] == "prod/web").unwrap()["vlan"]
        .as_u64()
        .unwrap()
}

/// What `trace` says of a flooded frame (`dst`: broadcast or multicast) from `src_mac` arriving
/// on `port` of `host` (tagged with `vlan` if given, as from the uplink): its storm-control
/// step (`""` when the port has no limit for the frame's class) and the drop reason (`null`
/// when it would be flooded).
fn trace_flood(
    lab: &Lab,
    host: usize,
    port: &str,
    dst: &str,
    src_mac: &str,
    vlan: Option<u16>,
) -> (String, Value) {
    let tag = vlan.map_or(String::new(), |v| format!("8100{v:04x}"));
    let frame = format!(
        "{dst}{}{tag}08004500001c000100004011000000000000ffffffff0fa0270f00080000",
        src_mac.replace(':', "")
    );
    let r = lab.hosts[host]
        .evsd()
        .try_ctl(&serde_json::json!({"cmd": "trace", "port": port, "frame": frame}))
        .unwrap_or_else(|e| panic!("trace on host {host}: {e}"));
    let r = &r["result"];
    let step = r["steps"]
        .as_array()
        .unwrap_or_else(|| panic!("trace on host {host}: {r}"))
        .iter()
        .filter_map(|s| s["text"].as_str())
        .find(|t| t.starts_with("storm control"))
        .unwrap_or_default()
        .to_string();
    (step, r["drop"].clone())
}

const BROADCAST: &str = "ffffffffffff";
const MULTICAST: &str = "01005e0000fb";

/// Storm control set with dvsctl reaches the switches: a port group's limit on all its ports
/// on every host, a port's own limit in place of its group's, an uplink group's limit on what
/// comes from the physical network; each is taken back the same way. `trace` shows the limit
/// each switch enforces; a burst of broadcasts from one guest is really cut down to it.
fn storm_control(lab: &Lab, c: &Control, g: &Guests) {
    let web_vlan = vlan_of_web(lab, 0) as u16;
    let from_web = |i: usize| trace_flood(lab, i, &g.web[i].name, BROADCAST, &g.web[i].mac, None);
    let limit = |i: usize| from_web(i).0;
    for i in 0..3 {
        assert_eq!(limit(i), "", "host {i}: no storm control before");
    }
    c.dvsctl(&[
        "--wait=hosts",
        "pg",
        "set",
        "prod",
        "web",
        "--storm-broadcast",
        "0",
        "--storm-burst",
        "1",
    ]);
    for i in 0..3 {
        let l = limit(i);
        assert!(
            l.contains("broadcast within its limit (0 pps, burst 1"),
            "host {i}: {l}"
        );
    }
    // The limit in force, by packets: web2 sends 50 broadcasts, one passes.
    let storm0 = storm_drops(lab, 1, "web2");
    let sent = lab.spawn_tool(
        &g.web[1].ns,
        &[
            "send",
            "eth0",
            "udp",
            "--src-mac",
            &g.web[1].mac,
            "--src-ip",
            &g.web[1].ip,
            "--repeat",
            "50",
        ],
    );
    let r = sent.finish(WAIT);
    assert!(r.ok, "send from web2: {}", r.text);
    wait_for("web2's broadcasts dropped by storm control", WAIT, || {
        (storm_drops(lab, 1, "web2") - storm0 >= 49).then_some(())
    });
    assert_eq!(from_web(1).1, "storm_broadcast", "web2 is storming");
    let shown = c.dvsctl(&["pg", "show", "prod", "web"]);
    assert!(shown.contains("broadcast 0 pps burst 1"), "{shown}");
    let shown = c.dvsctl(&["port", "show", "web1"]);
    assert!(
        shown.contains("storm control:    the port group's"),
        "{shown}"
    );

    // web1's own limit replaces the group's.
    c.dvsctl(&[
        "--wait=hosts",
        "port",
        "set",
        "web1",
        "--storm-broadcast",
        "1000",
    ]);
    assert!(
        limit(0).contains("(1000 pps"),
        "web1 has its own: {}",
        limit(0)
    );
    let shown = c.dvsctl(&["port", "show", "web1"]);
    assert!(shown.contains("(the port's own)"), "{shown}");
    assert!(
        limit(2).contains("(0 pps"),
        "web3 keeps its group's: {}",
        limit(2)
    );
    c.dvsctl(&[
        "--wait=hosts",
        "port",
        "set",
        "web1",
        "--group-storm-control",
    ]);
    assert!(
        limit(0).contains("(0 pps"),
        "web1 back on its group's: {}",
        limit(0)
    );
    c.dvsctl(&[
        "--wait=hosts",
        "pg",
        "set",
        "prod",
        "web",
        "--no-storm-control",
    ]);
    for i in 0..3 {
        assert_eq!(limit(i), "", "host {i}: storm control off again");
    }

    // The uplink group of h1: multicast from the physical network is limited, broadcast not.
    let h1 = lab.hosts[0].name.clone();
    let from_up = |dst| trace_flood(lab, 0, "prod/up", dst, "02:00:00:00:0f:01", Some(web_vlan)).0;
    assert_eq!(from_up(MULTICAST), "", "no uplink storm control before");
    c.dvsctl(&[
        "--wait=hosts",
        "uplink",
        "set",
        "prod",
        &h1,
        "up",
        "--storm-multicast",
        "500",
    ]);
    let l = from_up(MULTICAST);
    assert!(
        l.contains("storm control of prod/up: multicast within its limit (500 pps"),
        "{l}"
    );
    assert_eq!(from_up(BROADCAST), "", "broadcast has no limit there");
    c.dvsctl(&[
        "--wait=hosts",
        "uplink",
        "set",
        "prod",
        &h1,
        "up",
        "--no-storm-control",
    ]);
    assert_eq!(from_up(MULTICAST), "", "uplink storm control off again");
}

fn storm_drops(lab: &Lab, host: usize, port: &str) -> u64 {
    lab.hosts[host].evsd().port(port)["drops"]["storm_broadcast"]
        .as_u64()
        .unwrap_or(0)
}

/// A real Linux guest (QEMU/TCG) on port vm2 of h2 pings web1 on h1 and is pinged back.
fn qemu_guest(lab: &Lab, g: &Guests) {
    let image = match guest_image() {
        Ok(i) => i,
        Err(r) if std::env::var_os("EVS_REQUIRE_QEMU").is_some_and(|v| v == "1") => {
            panic!("EVS_REQUIRE_QEMU=1 but no QEMU guest: {r}")
        }
        Err(r) => {
            eprintln!("*** SKIPPING the QEMU guest of the DVS test: {r} ***");
            return;
        }
    };
    let socket = lab.hosts[1].vhost_dir.join("vm2.sock");
    wait_for("the agent's vhost-user socket for vm2", WAIT, || {
        socket.exists().then_some(())
    });
    let dir = lab.dir.path().join("qemu");
    std::fs::create_dir_all(&dir).unwrap();
    let mut vm = QemuGuest::start(&dir, "vm2", VM_IP, VM_MAC, &socket, &image);
    let ready = vm.wait_line(&["EVS-READY"], None, BOOT);
    assert!(ready.contains("carrier=1"), "{ready}");
    lab.hosts[1].wait_port_up("vm2");
    let p = vm.ping(&g.web[0].ip, 3);
    assert_ping_ok(&p, &g.web[0].ip, 3);
    assert_eq!(
        lab.ping(&g.web[0], VM_IP, 3, Duration::from_secs(5)),
        3,
        "web1 -> QEMU guest"
    );
    vm.poweroff();
}

fn scenario(backend: Backend) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(why) = skip_reason() {
        eprintln!("*** SKIPPING the DVS multi-host test: {why} ***");
        return;
    }
    if matches!(backend, Backend::Etcd) && !std::path::Path::new("/usr/bin/etcd").exists() {
        assert!(
            std::env::var_os("DVS_STORE_REQUIRE_ETCD").is_none(),
            "DVS_STORE_REQUIRE_ETCD is set but /usr/bin/etcd is missing (apt-get install etcd-server)"
        );
        eprintln!(
            "*** SKIPPING the DVS multi-host test on etcd: no /usr/bin/etcd (etcd-server) ***"
        );
        return;
    }
    if let Some(why) = testpmd_missing() {
        eprintln!("*** SKIPPING the DVS multi-host test: {why} ***");
        return;
    }
    evs_e2e::evsd_bin!();
    let etcd = matches!(backend, Backend::Etcd);
    let mut lab = Lab::new(LabSpec::hosts(3));
    let mut c = Control::new(&mut lab, backend);
    let g = define(&mut lab, &c);
    let opts: Vec<EvsdOptions> = (0..3).map(|i| host_opts(&lab, &c, i)).collect();
    lab.start_all(|i| opts[i].clone());
    c.wait_in_sync(3);
    wait_ports_up(&lab, &g);

    // Same port group across hosts, through the ToR; TCP too.
    assert!(
        reaches(&lab, &g.web[0], &g.web[1]),
        "web1 -> web2 across hosts\n{}",
        lab.dump()
    );
    assert!(
        reaches(&lab, &g.web[2], &g.web[0]),
        "web3 -> web1 across hosts\n{}",
        lab.dump()
    );
    lab.tcp_check(&g.web[0], &g.web[1], 8080)
        .unwrap_or_else(|r| panic!("TCP web1 -> web2: {}", r.text));
    // VLAN isolation between port groups across hosts; db reaches db.
    assert!(
        blocked(&lab, &g.web[0], &g.db[1]),
        "web1 must not reach db2 (other VLAN)"
    );
    assert!(reaches(&lab, &g.db[0], &g.db[1]), "db1 -> db2 across hosts");
    // A DPDK guest on the vhost-user socket the agent created for its port.
    let _pmd = lab.start_testpmd(&g.pmd.1, PmdMode::IcmpEcho, 1);
    assert!(
        reaches(&lab, &g.pmd.0, &g.pmd.1),
        "pmdc (h1) -> testpmd guest (h3)"
    );

    // Traffic between two guests of one host stays on the host: 50 echoes between web1 and
    // web1b (after a first exchange learned the MACs and filled the ARP caches) and h1's uplink
    // sends next to nothing meanwhile (other guests' rare broadcasts may go out; 100 local frames
    // would, if local traffic left the host).
    assert!(reaches(&lab, &g.web[0], &g.web1b), "web1 -> web1b on h1");
    let before = lab.hosts[0].port("prod/up").tx_packets;
    assert_eq!(
        lab.ping(&g.web[0], &g.web1b.ip, 50, Duration::from_secs(20)),
        50
    );
    let sent = lab.hosts[0].port("prod/up").tx_packets - before;
    assert!(
        sent < 5,
        "local traffic left h1 through its uplink: {sent} frames"
    );
    if !etcd {
        qemu_guest(&lab, &g);
    }

    // A remote-group rule: srv (app3 on h3) admits ICMP from cli's members (app1 on h1) only.
    assert!(
        reaches(&lab, &g.app[0], &g.app[2]),
        "app1 (cli) -> app3 (srv)"
    );
    assert!(
        blocked(&lab, &g.app[1], &g.app[2]),
        "app2 (other) must not reach app3 (srv)"
    );
    // Membership change: app2 (on h2) joins cli, and h3 lets it in.
    let out = c.dvsctl(&["--wait=hosts", "port", "set", "app2", "--sg", "cli"]);
    assert!(
        reaches(&lab, &g.app[1], &g.app[2]),
        "app2 joined cli: {out}"
    );

    if etcd {
        // Lose an etcd member and a controller replica mid-test: writes go on through the
        // other replica, and the hosts that followed the dead one move to the live one.
        if let Some(mut m) = c.etcd[0].take() {
            m.kill();
        }
        c.kill_replica(0);
    }

    // A port group change applied on every host before --wait=hosts returns.
    let out = c.dvsctl(&["--wait=hosts", "pg", "set", "prod", "web", "--vlan", "150"]);
    for i in 0..3 {
        assert_eq!(
            vlan_of_web(&lab, i),
            150,
            "host {i} after --wait=hosts: {out}"
        );
    }
    assert!(
        reaches(&lab, &g.web[0], &g.web[2]),
        "web1 -> web3 on VLAN 150"
    );
    storm_control(&lab, &c, &g);
    if etcd {
        // Every acknowledged write is there.
        let pg = c.dvsctl(&["--json", "pg", "show", "prod", "web"]);
        assert!(pg.contains("150"), "{pg}");
        let p = c.dvsctl(&["--json", "port", "show", "app2"]);
        assert!(p.contains("\"cli\""), "{p}");
    }

    // The controller killed: traffic continues, dvsctl says clearly it cannot reach it.
    for i in 0..c.replicas.len() {
        c.kill_replica(i);
    }
    assert!(
        reaches(&lab, &g.web[0], &g.web[1]),
        "forwarding without a controller"
    );
    let o = c.dvsctl_at(if etcd { 1 } else { 0 }, &["status"]);
    assert_eq!(
        o.code, 3,
        "exit code of dvsctl without a controller: {}",
        o.stderr
    );
    assert!(o.stderr.contains("cannot reach"), "{}", o.stderr);
    for i in 0..c.replicas.len() {
        c.start_replica(i);
    }
    c.wait_in_sync(3);

    // A change made while a host is down reaches it when it returns.
    lab.stop_evsd(2);
    c.dvsctl(&["pg", "set", "prod", "web", "--vlan", "160"]);
    wait_for("h1 and h2 on VLAN 160", WAIT, || {
        (vlan_of_web(&lab, 0) == 160 && vlan_of_web(&lab, 1) == 160).then_some(())
    });
    lab.start_evsd(2, opts[2].clone());
    wait_for("h3 on VLAN 160 after its return", WAIT, || {
        (vlan_of_web(&lab, 2) == 160).then_some(())
    });
    lab.hosts[2].wait_port_up("web3");
    assert!(
        reaches(&lab, &g.web[0], &g.web[2]),
        "web1 -> web3 after h3 returned"
    );

    // kill -9 of an evsd while the controller is down: it comes back with its last state.
    for i in 0..c.replicas.len() {
        c.kill_replica(i);
    }
    lab.kill9_evsd(1);
    lab.start_evsd(1, opts[1].clone());
    lab.hosts[1].wait_port_up("prod/up");
    lab.hosts[1].wait_port_up("web2");
    assert_eq!(vlan_of_web(&lab, 1), 160, "h2 restored its last state");
    assert!(
        reaches(&lab, &g.web[0], &g.web[1]),
        "web1 -> web2 after kill -9, no controller"
    );
    for i in 0..c.replicas.len() {
        c.start_replica(i);
    }
    c.wait_in_sync(3);
    eprintln!("{}", c.dvsctl(&["status"]));
}

#[test]
fn dvs_across_three_hosts_on_the_embedded_store() {
    scenario(Backend::Embedded);
}

#[test]
fn dvs_across_three_hosts_on_etcd_with_two_controllers() {
    scenario(Backend::Etcd);
}
