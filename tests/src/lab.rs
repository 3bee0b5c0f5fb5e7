//! A multi-host lab for end-to-end tests: N "hosts", each a network namespace running its own
//! `evsd`, wired by one uplink each into a top-of-rack namespace that bridges tagged VLANs
//! between them: the physical network under a distributed virtual switch.
//!
//! ```text
//!            ns <id>-tor: bridge br0, one trunk port per host (tagged VLANs only)
//!                  h1                      h2                      h3
//!                   │ veth                  │ veth                  │ veth
//!   ns <id>-h1:    up0 (net_af_packet)     ns <id>-h2: ...         ns <id>-h3: ...
//!                   │
//!                 evsd ── g-web1 ─veth─ eth0 in ns <id>-h1-web1   (namespace guest)
//!                   └──── vhost/<port>.sock ── dpdk-testpmd       (DPDK guest, virtio_user)
//! ```
//!
//! * Names: `<id>` is `evlab<pid>x<n>`, unique per lab; interfaces are created directly inside
//!   their namespaces (`ip -n NS link add ... peer ... netns OTHER`), so nothing is named in the
//!   root namespace and parallel labs never collide. [`Lab`]'s `Drop` stops every process and
//!   deletes every namespace; [`Lab::new`] first removes what labs of dead processes left behind
//!   (a run killed by SIGKILL cannot clean up: its evsd keep running inside their namespaces).
//! * The ToR: a Linux bridge whose host ports are trunks carrying only tagged frames of a VLAN
//!   set (default 1-4094; [`Lab::set_tor_vlans`] changes one port's set). Where the kernel has
//!   bridge VLAN filtering, that is `vlan_filtering 1` with `bridge vlan` per port; where it does
//!   not (this machine's kernel has neither `CONFIG_BRIDGE_VLAN_FILTERING` nor 8021q), a plain
//!   bridge with nftables rules in the bridge family dropping, per port and direction, untagged
//!   frames and VLANs outside the port's set ([`TorMode`]). MAC learning is then shared across
//!   VLANs, which changes nothing while MACs are unique.
//! * Each host's evsd runs inside the host namespace (`ip netns exec`), with its own control
//!   socket, EAL `--file-prefix`, vhost socket directory and state directory, `--no-huge` (as
//!   every end-to-end test), idle sleep on (three switches share two CPUs), and the uplink as a
//!   `net_af_packet` port on the host end of its veth ([`Host::uplink_devargs`]). af_packet
//!   rather than af_xdp: the other namespace tests use it, it needs no BPF/XDP support and no
//!   queue/umem tuning on a veth, and what matters here is correctness, not rate.
//! * VLAN tags (measured on this kernel, 6.18): an AF_PACKET socket on a veth never sees a
//!   received frame's 802.1Q tag in the bytes: the kernel's receive path moves it into the
//!   skb's metadata before packet sockets are served, whatever `rxvlan`/`txvlan` say (all four
//!   combinations checked), and the socket reports it as aux data (`TP_STATUS_VLAN_VALID`,
//!   `tp_vlan_tci`). DPDK's af_packet PMD puts it back into the frame (`rte_vlan_insert`)
//!   unless the application asked for VLAN stripping, which evsd does not: evsd's uplink gets
//!   tagged frames (`multihost_static` checks that evsd learns remote MACs on the uplink in
//!   their VLAN), and its tags go out in the bytes. So the lab leaves VLAN offload as the kernel
//!   sets it (on; [`LabSpec::vlan_offload_off`] turns it off, and the test passes both ways).
//!   One limit follows: the re-inserted tag is always TPID 0x8100, so an 802.1ad (QinQ) outer
//!   tag would not cross an af_packet port intact.
//! * Guests: namespace guests ([`Lab::add_ns_guest`]: a namespace whose `eth0` is a veth to the
//!   host namespace, attached to evsd as a `net_af_packet` port, as in `policy_netns`), and
//!   `dpdk-testpmd` guests on vhost-user ports ([`Lab::add_vhost_port`], [`Lab::start_testpmd`]).
//!   Traffic comes from `tests/scripts/nstool.py` (standard library only: this machine has no
//!   ping or nc): [`Lab::ping`], [`Lab::tcp_check`], [`Lab::sniff`].
//! * evsd's configuration ([`EvsdOptions`]): either almost empty (EAL, dataplane, control
//!   socket: a host agent fills in the rest, with extra command-line arguments such as
//!   `--controller URL --host NAME --token-file F`), or a full static model with `[[attach]]`
//!   entries for the uplink and every guest port of the host.
//!
//! Every wait is a bounded poll of an observable condition.

use crate::{evsd_bin, unique, wait_for, Evsd, Proc};
use api::PortReport;
use serde_json::{json, Value};
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Bound of every wait for something that should happen within a second or two.
pub const WAIT: Duration = Duration::from_secs(30);

/// Namespace names of labs start with this, followed by the owning process id.
const PREFIX: &str = "evlab";

// ------------------------------------------------------------------------------------------------
// Shell helpers

/// Runs `sh -c cmd`; the error carries the command and its output.
pub fn try_sh(cmd: &str) -> Result<String, String> {
    let o = Command::new("sh")
        .args(["-c", cmd])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run sh: {e}"))?;
    if !o.status.success() {
        return Err(format!(
            "command failed ({}): {cmd}\nstdout: {}\nstderr: {}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// Runs `sh -c cmd`; panics with its output when it fails.
pub fn sh(cmd: &str) -> String {
    try_sh(cmd).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs `sh -c cmd`, ignoring failure (cleanup).
pub fn sh_quiet(cmd: &str) {
    let _ = Command::new("sh")
        .args(["-c", cmd])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

pub fn have(bin: &str) -> bool {
    crate::which(bin).is_some()
}

/// The distribution's python3 (a pyenv shim may point elsewhere; the tool needs only the
/// standard library).
pub fn python() -> String {
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3".into()
    } else {
        "python3".into()
    }
}

pub fn tool_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/nstool.py")
}

/// The JSON object a tool run printed last.
pub fn last_json(text: &str) -> Value {
    text.lines()
        .rev()
        .find_map(|l| {
            let l = l.trim();
            l.starts_with('{')
                .then(|| serde_json::from_str(l).ok())
                .flatten()
        })
        .unwrap_or(Value::Null)
}

// ------------------------------------------------------------------------------------------------
// Prerequisites

/// How the ToR namespace makes its bridge VLAN-aware.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TorMode {
    /// `vlan_filtering 1` and `bridge vlan add` per port (kernels with
    /// `CONFIG_BRIDGE_VLAN_FILTERING`).
    VlanFiltering,
    /// A VLAN-unaware bridge plus nftables rules (bridge family, forward hook) that drop untagged
    /// frames and VLANs outside each port's set, in and out.
    Nftables,
}

/// Which [`TorMode`] this kernel supports, probed once in a scratch namespace.
pub fn tor_mode() -> Result<TorMode, String> {
    static MODE: std::sync::OnceLock<Result<TorMode, String>> = std::sync::OnceLock::new();
    MODE.get_or_init(|| {
        let ns = format!("{PREFIX}{}probe{}", std::process::id(), unique(""));
        try_sh(&format!("ip netns add {ns}"))?;
        let filtering = try_sh(&format!(
            "ip -n {ns} link add br0 type bridge vlan_filtering 1 vlan_default_pvid 0"
        ))
        .is_ok();
        let nft = have("nft")
            && try_sh(&format!(
                "ip netns exec {ns} nft add table bridge probe && \
                 ip netns exec {ns} nft add chain bridge probe f \
                 '{{ type filter hook forward priority 0; }}'"
            ))
            .is_ok();
        sh_quiet(&format!("ip netns del {ns}"));
        if filtering {
            Ok(TorMode::VlanFiltering)
        } else if nft {
            Ok(TorMode::Nftables)
        } else {
            Err(
                "the kernel has no bridge VLAN filtering and nft (nftables) is not usable: \
                 the lab's top-of-rack bridge cannot be VLAN-aware (apt-get install nftables)"
                    .into(),
            )
        }
    })
    .clone()
}

/// Why this machine cannot run the lab, if it cannot: not root, no `ip`/`ethtool`/python3, no
/// way to make the ToR bridge VLAN-aware. (dpdk-testpmd is needed only by
/// [`Lab::start_testpmd`]: see [`testpmd_missing`].)
pub fn skip_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root (network namespaces and DPDK need root)".into());
    }
    for b in ["ip", "ethtool", "sh"] {
        if !have(b) {
            return Some(format!(
                "{b} is not installed (apt-get install iproute2 ethtool)"
            ));
        }
    }
    if !Path::new("/usr/bin/python3").exists() && !have("python3") {
        return Some("python3 is not installed".into());
    }
    if let Err(e) = try_sh("ip netns list") {
        return Some(format!("ip netns does not work: {e}"));
    }
    tor_mode().err()
}

/// Why [`Lab::start_testpmd`] cannot work here, if it cannot.
pub fn testpmd_missing() -> Option<String> {
    (!have("dpdk-testpmd"))
        .then(|| "dpdk-testpmd not installed (apt-get install dpdk, see scripts/setup.sh)".into())
}

/// Prints the reason loudly and returns from the test when the lab cannot run here.
#[macro_export]
macro_rules! skip_unless_lab {
    () => {
        $crate::evsd_bin!();
        if let Some(r) = $crate::lab::skip_reason() {
            eprintln!("\n*** SKIPPING {}: {r} ***\n", module_path!());
            return;
        }
    };
}

// ------------------------------------------------------------------------------------------------
// Leftovers

/// The pid a lab name carries (`evlab<pid>x<n>-...` or `evlab<pid>probe...`).
fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PREFIX)?;
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

/// Deletes namespaces (and the processes still inside them), DPDK runtime directories and
/// temporary directories of labs whose process is gone.
pub fn remove_stale() {
    let me = std::process::id();
    let dead = |pid: u32| pid != me && !Path::new("/proc").join(pid.to_string()).exists();
    if let Ok(list) = try_sh("ip netns list") {
        for l in list.lines() {
            let name = l.split_whitespace().next().unwrap_or("");
            if owner_pid(name).is_some_and(dead) {
                // An evsd or testpmd of the killed run still polls in there.
                sh_quiet(&format!("ip netns pids {name} | xargs -r kill -9"));
                sh_quiet(&format!("ip netns del {name}"));
            }
        }
    }
    // DPDK runtime directories (file prefixes) and the labs' temporary directories.
    for parent in [PathBuf::from("/var/run/dpdk"), std::env::temp_dir()] {
        let Ok(rd) = std::fs::read_dir(&parent) else {
            continue;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if owner_pid(&name).is_some_and(dead) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

// ------------------------------------------------------------------------------------------------
// The lab

/// What to build.
#[derive(Debug, Clone)]
pub struct LabSpec {
    /// Number of hosts (`h1`..`hN`).
    pub hosts: usize,
    /// VLANs every ToR host port carries tagged, in `bridge vlan` syntax: `"1-4094"`,
    /// `"100,200-210"`.
    pub tor_vlans: String,
    /// `dataplane.idle_sleep_us` of every evsd (>0: several switches share two CPUs).
    pub idle_sleep_us: u64,
    /// Turn the veths' VLAN tag offload (`rxvlan`/`txvlan`) off instead of leaving the kernel's
    /// default (on); `EVS_LAB_VLAN_OFFLOAD=off` sets it. evsd gets the tags either way (see the
    /// module comment); the knob is there to check that again.
    pub vlan_offload_off: bool,
}

impl LabSpec {
    pub fn hosts(n: usize) -> LabSpec {
        LabSpec {
            hosts: n,
            tor_vlans: "1-4094".into(),
            idle_sleep_us: 200,
            vlan_offload_off: std::env::var("EVS_LAB_VLAN_OFFLOAD").is_ok_and(|v| v == "off"),
        }
    }
}

/// One host: a namespace, its uplink, and (once started) its evsd.
pub struct Host {
    /// `h1`, `h2`...: also the name of its port on the ToR bridge.
    pub name: String,
    /// The network namespace evsd and its guest ports live in.
    pub ns: String,
    /// The host end of the uplink veth, inside `ns`.
    pub uplink_if: String,
    /// This host's files: config, logs.
    pub dir: PathBuf,
    /// Where vhost-user sockets of this host's ports go.
    pub vhost_dir: PathBuf,
    /// A state directory for a host agent (created empty; the lab puts nothing there).
    pub state_dir: PathBuf,
    pub control_socket: PathBuf,
    /// EAL `--file-prefix` of this host's evsd.
    pub file_prefix: String,
    /// EAL main lcore and forwarding CPU: spread over the two CPUs.
    pub eal_core: usize,
    pub fwd_core: usize,
    /// `[[attach]]` entries of the ports created on this host (port name, TOML body).
    attach: Vec<(String, String)>,
    next_vdev: u32,
    /// The VLANs its ToR port carries (what [`Lab::set_tor_vlans`] set last).
    pub tor_vlans: String,
    /// Ports the last start attached, waited for by [`Lab::wait_evsd`].
    wait_up: Vec<String>,
    evsd: Option<Evsd>,
}

impl Host {
    /// The DPDK devargs of the uplink (what a host agent attaches the model's uplink with).
    pub fn uplink_devargs(&self) -> String {
        format!("net_af_packet_up,iface={},qpairs=1", self.uplink_if)
    }

    /// The running evsd (panics if not started).
    pub fn evsd(&self) -> &Evsd {
        self.evsd
            .as_ref()
            .unwrap_or_else(|| panic!("evsd of {} is not running", self.name))
    }

    pub fn evsd_running(&self) -> bool {
        self.evsd.is_some()
    }

    /// `evsd ctl --socket S ARGS...` (the client binary the tests build); its stdout.
    pub fn ctl(&self, args: &[&str]) -> Result<String, String> {
        let o = Command::new(evsd_bin())
            .args(["ctl", "--socket"])
            .arg(&self.control_socket)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run evsd ctl: {e}"))?;
        if !o.status.success() {
            return Err(format!(
                "evsd ctl {args:?} on {} failed: {}{}",
                self.name,
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ));
        }
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    }

    /// Every port's state and counters, from `evsd ctl --json show ports` (the api's types).
    pub fn ports(&self) -> Vec<PortReport> {
        let out = self
            .ctl(&["--json", "show", "ports"])
            .unwrap_or_else(|e| panic!("{e}"));
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("show ports --json of {}: {e}: {out}", self.name))
    }

    /// The MAC table, from `evsd ctl --json show mac`.
    pub fn mac_table(&self) -> Vec<api::MacEntry> {
        let out = self
            .ctl(&["--json", "show", "mac"])
            .unwrap_or_else(|e| panic!("{e}"));
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("show mac --json of {}: {e}: {out}", self.name))
    }

    pub fn port(&self, name: &str) -> PortReport {
        let ports = self.ports();
        ports
            .iter()
            .find(|p| p.name == name)
            .cloned()
            .unwrap_or_else(|| {
                let names: Vec<&str> = ports.iter().map(|p| p.name.as_str()).collect();
                panic!("no port {name} on {} (ports: {names:?})", self.name)
            })
    }

    /// Polls until `port` is `up` (its backend is attached and its link is up).
    pub fn wait_port_up(&self, port: &str) {
        wait_for(&format!("port {port} up on {}", self.name), WAIT, || {
            (self.port(port).state == api::PortState::Up).then_some(())
        });
    }

    /// Applies `model_toml` (uplinks, port groups, security groups, ports) at run time.
    pub fn apply(&self, model_toml: &str) -> String {
        let f = self.dir.join(format!("apply-{}.toml", unique("")));
        std::fs::write(&f, model_toml).unwrap();
        self.ctl(&["apply", f.to_str().unwrap()])
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// A one-line summary of every port (for failure messages).
    pub fn port_dump(&self) -> String {
        let Some(e) = &self.evsd else {
            return format!("{}: evsd not running", self.name);
        };
        let Ok(v) = e.try_ctl(&json!({"cmd": "show_ports"})) else {
            return format!("{}: control socket does not answer", self.name);
        };
        let rows = v["result"].as_array().cloned().unwrap_or_default();
        let mut s = String::new();
        for p in rows {
            s += &format!(
                "  {:<3} {:<8} {:<8} rx {:>6} tx {:>6} drops {} egress_drops {}\n",
                self.name,
                p["name"].as_str().unwrap_or("?"),
                p["state"].as_str().unwrap_or("?"),
                p["rx_packets"],
                p["tx_packets"],
                p["drops"],
                p["egress_drops"]
            );
        }
        s
    }
}

/// How to start a host's evsd.
#[derive(Debug, Clone, Default)]
pub struct EvsdOptions {
    /// The operator's model as TOML (`[[uplinks]]`, `[[port_groups]]`, `[[security_groups]]`,
    /// `[[ports]]`); `None`: an almost-empty config (EAL, dataplane, control socket).
    pub model: Option<String>,
    /// With a model: the model's uplink name, attached to the host's uplink veth.
    pub uplink: Option<String>,
    /// With a model: attach every port created on this host ([`Lab::add_ns_guest`],
    /// [`Lab::add_vhost_port`]) by its name.
    pub attach_ports: bool,
    /// Lines added to `[dataplane]` (e.g. `metrics_listen = "127.0.0.1:0"`).
    pub dataplane_extra: String,
    /// More TOML after `[dataplane]`, starting with its own section header (e.g. `[switch]`).
    pub extra_toml: String,
    /// Arguments after `run -c CONFIG` (e.g. `--controller URL --host h1 --token-file F
    /// --state-dir DIR`, for a host agent built into evsd).
    pub args: Vec<String>,
    /// Program to run instead of the tests' evsd (same `run -c CONFIG ARGS` convention).
    pub program: Option<PathBuf>,
    /// Environment variables for the daemon.
    pub env: Vec<(String, String)>,
}

impl EvsdOptions {
    /// EAL, dataplane settings and a control socket only: a host agent fills in the rest.
    pub fn bare() -> EvsdOptions {
        EvsdOptions::default()
    }

    /// A full static config: `model` plus its uplink `uplink` on the host's uplink veth and
    /// every port created on the host attached.
    pub fn full(model: &str, uplink: &str) -> EvsdOptions {
        EvsdOptions {
            model: Some(model.into()),
            uplink: Some(uplink.into()),
            attach_ports: true,
            ..Default::default()
        }
    }

    pub fn arg(mut self, a: impl Into<String>) -> EvsdOptions {
        self.args.push(a.into());
        self
    }
}

/// A guest of the lab: a namespace guest or a vhost-user port for a DPDK guest.
#[derive(Debug, Clone)]
pub struct Guest {
    /// The evsd port name (unique on its host).
    pub name: String,
    /// Index of its host in [`Lab::hosts`].
    pub host: usize,
    /// Its namespace (namespace guests) or its host's namespace (vhost guests).
    pub ns: String,
    pub mac: String,
    /// IPv4 address without prefix length ("" for none).
    pub ip: String,
    /// The vhost-user socket (vhost guests).
    pub socket: Option<PathBuf>,
}

/// A process run by the lab in a namespace (tool runs, testpmd): stopped when dropped.
pub struct Bg {
    pub proc: Proc,
}

/// What a finished tool run printed.
#[derive(Debug, Clone)]
pub struct Ran {
    pub ok: bool,
    /// The last JSON line it printed.
    pub json: Value,
    pub text: String,
}

impl Bg {
    /// Waits (bounded) for the process to exit and returns what it printed last.
    pub fn finish(mut self, timeout: Duration) -> Ran {
        let name = self.proc.name.clone();
        let st = wait_for(&format!("{name} to finish"), timeout, || self.proc.exited());
        let text = self.proc.log_text();
        Ran {
            ok: st.success(),
            json: last_json(&text),
            text,
        }
    }

    /// Polls until the process printed a line `READY` (its sockets are open).
    pub fn wait_ready(&mut self) {
        let name = self.proc.name.clone();
        wait_for(&format!("{name} ready"), WAIT, || {
            let t = self.proc.log_text();
            if t.lines().any(|l| l.trim() == "READY") {
                return Some(());
            }
            if t.contains("Traceback") || self.proc.exited().is_some() {
                panic!("{name} failed before READY:\n{t}");
            }
            None
        });
    }
}

/// What a testpmd guest does (`--forward-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PmdMode {
    /// Answers ARP requests (for any address: give it an address nobody else has) and ICMP
    /// echo requests: a DPDK guest that can be pinged.
    IcmpEcho,
    /// Counts and drops what arrives.
    RxOnly,
    /// Sends 64-byte UDP frames at full speed (mind the two CPUs).
    TxOnly,
}

pub struct Lab {
    /// `evlab<pid>x<n>`: the prefix of every namespace of this lab.
    pub id: String,
    pub dir: tempfile::TempDir,
    /// The ToR namespace.
    pub tor: String,
    pub tor_mode: TorMode,
    pub hosts: Vec<Host>,
    pub guests: Vec<Guest>,
    /// Guest namespaces, deleted with the lab.
    guest_ns: Vec<String>,
    spec: LabSpec,
    py: String,
    tool: PathBuf,
    seq: Cell<u32>,
}

/// Offloads off on one interface: checksum and segmentation (a guest's TCP with a partial
/// checksum would reach the other guest through the af_packet ports still partial, i.e. bad),
/// VLAN tag offload only if asked ([`LabSpec::vlan_offload_off`]); IPv6 off (router
/// solicitations and DAD would be traffic of their own on every uplink).
fn quiet_if(ns: &str, dev: &str, vlan_offload_off: bool) {
    let pre = format!("ip netns exec {ns} ");
    let vlan = if vlan_offload_off {
        " rxvlan off txvlan off"
    } else {
        ""
    };
    sh(&format!(
        "{pre}ethtool -K {dev} tx off rx off tso off gso off gro off{vlan} >/dev/null 2>&1 || \
         {pre}ethtool -K {dev} tx off rx off tso off gso off{vlan}"
    ));
    sh_quiet(&format!(
        "{pre}sysctl -qw net.ipv6.conf.{}.disable_ipv6=1",
        dev.replace('.', "/")
    ));
}

/// A new namespace with loopback up and IPv6 off by default.
fn new_ns(ns: &str) {
    sh(&format!("ip netns add {ns}"));
    let e = |c: &str| sh(&format!("ip netns exec {ns} {c}"));
    e("sysctl -qw net.ipv6.conf.all.disable_ipv6=1");
    e("sysctl -qw net.ipv6.conf.default.disable_ipv6=1");
    e("ip link set lo up");
}

/// `"1-4094"`, `"100,200-210"` → nftables set elements `1-4094`, `100, 200-210`.
fn nft_set(vlans: &str) -> String {
    vlans
        .split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect::<Vec<_>>()
        .join(", ")
}

impl Lab {
    /// Builds the ToR and the hosts (namespaces, bridge, uplinks); no evsd yet
    /// ([`Lab::start_evsd`]). Panics with the failing command if something cannot be set up.
    pub fn new(spec: LabSpec) -> Lab {
        assert!(
            (1..=9).contains(&spec.hosts),
            "1-9 hosts (guest addresses and names assume one digit)"
        );
        remove_stale();
        let tor_mode = tor_mode().unwrap_or_else(|e| panic!("{e}"));
        let id = unique(PREFIX);
        let dir = tempfile::Builder::new()
            .prefix(&format!("{id}-"))
            .tempdir()
            .unwrap();
        let mut lab = Lab {
            tor: format!("{id}-tor"),
            id,
            tor_mode,
            hosts: vec![],
            guests: vec![],
            guest_ns: vec![],
            spec: spec.clone(),
            py: python(),
            tool: tool_path(),
            seq: Cell::new(0),
            dir,
        };
        // From here on, Drop cleans up whatever was created, even if a step panics.
        let tor = lab.tor.clone();
        new_ns(&tor);
        let t = |c: &str| sh(&format!("ip netns exec {tor} {c}"));
        match tor_mode {
            // No default PVID: untagged frames have no VLAN on a trunk port and are dropped.
            TorMode::VlanFiltering => {
                t("ip link add br0 type bridge vlan_filtering 1 vlan_default_pvid 0");
            }
            // The rules come with the ports (`set_tor_vlans`).
            TorMode::Nftables => {
                t("ip link add br0 type bridge");
            }
        };
        t("ip link set br0 up");
        quiet_if(&tor, "br0", spec.vlan_offload_off);
        for i in 0..spec.hosts {
            lab.add_host(i);
        }
        lab
    }

    fn add_host(&mut self, i: usize) {
        let name = format!("h{}", i + 1);
        let ns = format!("{}-{name}", self.id);
        new_ns(&ns);
        let dir = self.dir.path().join(&name);
        let vhost_dir = dir.join("vhost");
        let state_dir = dir.join("state");
        std::fs::create_dir_all(&vhost_dir).unwrap();
        std::fs::create_dir_all(&state_dir).unwrap();
        // The uplink: created in the host namespace, its peer (named after the host) moved into
        // the ToR and enslaved to the bridge.
        let up = "up0".to_string();
        sh(&format!(
            "ip -n {ns} link add {up} type veth peer name {name} netns {}",
            self.tor
        ));
        quiet_if(&ns, &up, self.spec.vlan_offload_off);
        quiet_if(&self.tor, &name, self.spec.vlan_offload_off);
        let t = |c: &str| sh(&format!("ip netns exec {} {c}", self.tor));
        t(&format!("ip link set {name} master br0"));
        t(&format!("ip link set {name} up"));
        sh(&format!("ip -n {ns} link set {up} up"));
        self.hosts.push(Host {
            control_socket: dir.join("evsd.sock"),
            file_prefix: format!("{}-{name}", self.id),
            eal_core: i % 2,
            fwd_core: (i + 1) % 2,
            name: name.clone(),
            ns,
            uplink_if: up,
            dir,
            vhost_dir,
            state_dir,
            attach: vec![],
            next_vdev: 0,
            tor_vlans: String::new(),
            wait_up: vec![],
            evsd: None,
        });
        let vlans = self.spec.tor_vlans.clone();
        self.set_tor_vlans(i, &vlans);
    }

    pub fn host(&self, i: usize) -> &Host {
        &self.hosts[i]
    }

    /// Sets the VLANs ToR port of host `i` carries (tagged), replacing its previous set.
    pub fn set_tor_vlans(&mut self, i: usize, vlans: &str) {
        let port = self.hosts[i].name.clone();
        self.hosts[i].tor_vlans = vlans.into();
        match self.tor_mode {
            TorMode::VlanFiltering => {
                let t = |c: &str| sh(&format!("ip netns exec {} {c}", self.tor));
                sh_quiet(&format!(
                    "ip netns exec {} bridge vlan del dev {port} vid 1-4094",
                    self.tor
                ));
                for v in vlans.split(',').map(str::trim).filter(|v| !v.is_empty()) {
                    t(&format!("bridge vlan add dev {port} vid {v}"));
                }
            }
            TorMode::Nftables => self.write_nft(),
        }
    }

    /// Replaces the ToR's nftables rule set (one transaction) with: untagged frames never cross
    /// (trunk ports only), tagged ones only within each port's VLAN set, in and out.
    fn write_nft(&self) {
        let mut r = String::from(
            "table bridge tor {}\ndelete table bridge tor\ntable bridge tor {\n  chain ports {\n    \
             type filter hook forward priority 0; policy accept;\n    \
             ether type != 8021q counter drop\n",
        );
        for h in &self.hosts {
            let set = nft_set(&h.tor_vlans);
            for dir in ["iifname", "oifname"] {
                r += &format!(
                    "    {dir} \"{}\" vlan id != {{ {set} }} counter drop\n",
                    h.name
                );
            }
        }
        r += "  }\n}\n";
        let f = self.dir.path().join("tor.nft");
        std::fs::write(&f, r).unwrap();
        sh(&format!(
            "ip netns exec {} nft -f {}",
            self.tor,
            f.display()
        ));
    }

    /// The ToR's filter rules or VLAN table, for failure messages.
    pub fn tor_dump(&self) -> String {
        match self.tor_mode {
            TorMode::VlanFiltering => {
                try_sh(&format!("ip netns exec {} bridge vlan show", self.tor))
            }
            TorMode::Nftables => try_sh(&format!(
                "ip netns exec {} nft list table bridge tor",
                self.tor
            )),
        }
        .unwrap_or_else(|e| e)
    }

    /// A namespace guest on host `host`: namespace `<id>-<host>-<name>` with `eth0` (`mac`,
    /// `ip_cidr` like `"10.0.0.11/24"`), whose veth peer `g-<name>` in the host namespace
    /// becomes evsd port `name` (a `net_af_packet` ethdev; attached at start by
    /// [`EvsdOptions::attach_ports`] or later by [`Lab::attach`]).
    pub fn add_ns_guest(&mut self, host: usize, name: &str, mac: &str, ip_cidr: &str) -> Guest {
        let host_if = format!("g-{name}");
        assert!(
            host_if.len() <= 15,
            "guest name {name:?} too long for an interface name"
        );
        let h = &self.hosts[host];
        let ns = format!("{}-{name}", h.ns);
        new_ns(&ns);
        self.guest_ns.push(ns.clone());
        sh(&format!(
            "ip -n {} link add {host_if} type veth peer name eth0 netns {ns}",
            h.ns
        ));
        quiet_if(&h.ns, &host_if, self.spec.vlan_offload_off);
        sh(&format!("ip -n {} link set {host_if} up", h.ns));
        quiet_if(&ns, "eth0", self.spec.vlan_offload_off);
        let e = |c: &str| sh(&format!("ip netns exec {ns} {c}"));
        e(&format!("ip link set eth0 address {mac}"));
        e("ip link set eth0 up");
        if !ip_cidr.is_empty() {
            e(&format!("ip addr add {ip_cidr} dev eth0"));
        }
        let h = &mut self.hosts[host];
        let vdev = h.next_vdev;
        h.next_vdev += 1;
        h.attach.push((
            name.into(),
            format!("ethdev = {{ devargs = \"net_af_packet{vdev},iface={host_if},qpairs=1\" }}"),
        ));
        let g = Guest {
            name: name.into(),
            host,
            ns,
            mac: mac.into(),
            ip: ip_cidr.split('/').next().unwrap_or("").into(),
            socket: None,
        };
        self.guests.push(g.clone());
        g
    }

    /// A vhost-user port `name` on host `host` (evsd the server, socket in the host's vhost
    /// directory), for a DPDK guest ([`Lab::start_testpmd`]). `mac`/`ip`: what the guest will
    /// use (the model's port needs a MAC; the IP is for the tests' bookkeeping).
    pub fn add_vhost_port(&mut self, host: usize, name: &str, mac: &str, ip: &str) -> Guest {
        let h = &mut self.hosts[host];
        let socket = h.vhost_dir.join(format!("{name}.sock"));
        h.attach.push((
            name.into(),
            format!(
                "vhost = {{ socket = \"{}\", role = \"server\" }}",
                socket.display()
            ),
        ));
        let g = Guest {
            name: name.into(),
            host,
            ns: h.ns.clone(),
            mac: mac.into(),
            ip: ip.into(),
            socket: Some(socket),
        };
        self.guests.push(g.clone());
        g
    }

    /// A management network for a controller: namespace `<id>-mgmt`, one veth per host (`mgmt0`
    /// inside the host, 10.254.<i+1>.2/30; the mgmt side 10.254.<i+1>.1/30). A controller run in
    /// that namespace listening on 0.0.0.0 is `http://10.254.<i+1>.1:PORT` for host `i` and
    /// `http://127.0.0.1:PORT` for tools run there ([`Lab::mgmt_addr`]). Separate from the
    /// uplinks, as a real management network is; gone with the lab.
    pub fn add_management(&mut self) -> String {
        let ns = format!("{}-mgmt", self.id);
        new_ns(&ns);
        self.guest_ns.push(ns.clone());
        for (i, h) in self.hosts.iter().enumerate() {
            let side = format!("m{}", h.name);
            sh(&format!(
                "ip -n {ns} link add {side} type veth peer name mgmt0 netns {}",
                h.ns
            ));
            sh(&format!(
                "ip -n {ns} addr add 10.254.{}.1/30 dev {side}",
                i + 1
            ));
            sh(&format!("ip -n {ns} link set {side} up"));
            sh(&format!(
                "ip -n {} addr add 10.254.{}.2/30 dev mgmt0",
                h.ns,
                i + 1
            ));
            sh(&format!("ip -n {} link set mgmt0 up", h.ns));
        }
        ns
    }

    /// The controller's address as host `i` sees it on the management network.
    pub fn mgmt_addr(&self, i: usize) -> String {
        format!("10.254.{}.1", i + 1)
    }

    /// The DPDK devargs of namespace guest `g`'s port (what a DVS port record attaches).
    pub fn devargs(&self, g: &Guest) -> Option<String> {
        let (_, body) = self.hosts[g.host]
            .attach
            .iter()
            .find(|(p, _)| *p == g.name)?;
        body.strip_prefix("ethdev = ")?
            .split('"')
            .nth(1)
            .map(str::to_owned)
    }

    /// The config evsd of host `i` is started with.
    pub fn evsd_config(&self, i: usize, o: &EvsdOptions) -> String {
        let h = &self.hosts[i];
        let mut c = format!(
            r#"
[eal]
cores = "{eal}"
no_huge = true
memory_mb = 256
file_prefix = "{prefix}"
args = ["--no-pci", "--log-level=lib.eal:notice", "--log-level=pmd.net.af_packet:warning"]

[dataplane]
cores = [{fwd}]
idle_sleep_us = {sleep}
mbufs = 4095
control_socket = "{sock}"
state_dir = "{state}"
{allow_empty}{extra}
"#,
            // A bare host is filled in later (`evsd ctl apply`, or its controller): said so, as
            // evsd refuses an empty model otherwise.
            allow_empty = if o.model.is_none() {
                "allow_empty_model = true\n"
            } else {
                ""
            },
            eal = h.eal_core,
            prefix = h.file_prefix,
            fwd = h.fwd_core,
            sleep = self.spec.idle_sleep_us,
            sock = h.control_socket.display(),
            state = h.state_dir.display(),
            extra = o.dataplane_extra,
        );
        c += &o.extra_toml;
        c.push('\n');
        if let Some(m) = &o.model {
            c += m;
            c.push('\n');
            if let Some(u) = &o.uplink {
                c += &format!(
                    "\n[[attach]]\nport = \"{u}\"\nethdev = {{ devargs = \"{}\" }}\n",
                    h.uplink_devargs()
                );
            }
            if o.attach_ports {
                for (port, body) in &h.attach {
                    c += &format!("\n[[attach]]\nport = \"{port}\"\n{body}\n");
                }
            }
        }
        c
    }

    /// Starts evsd of host `i` inside its namespace; returns once its control socket answers
    /// and, with a full config, every attached port is up (vhost ports excepted: their guests
    /// come later).
    pub fn start_evsd(&mut self, i: usize, o: EvsdOptions) -> &Evsd {
        self.spawn_evsd(i, o);
        self.wait_evsd(i);
        self.hosts[i].evsd()
    }

    /// [`Lab::start_evsd`] on every host at once (`opts(i)` for host `i`): the EAL start-ups
    /// overlap.
    pub fn start_all(&mut self, mut opts: impl FnMut(usize) -> EvsdOptions) {
        for i in 0..self.hosts.len() {
            self.spawn_evsd(i, opts(i));
        }
        for i in 0..self.hosts.len() {
            self.wait_evsd(i);
        }
    }

    /// Starts evsd of host `i` without waiting for it ([`Lab::wait_evsd`]).
    pub fn spawn_evsd(&mut self, i: usize, o: EvsdOptions) {
        assert!(
            self.hosts[i].evsd.is_none(),
            "evsd of host {i} already runs"
        );
        let config = self.evsd_config(i, &o);
        let vhost: Vec<String> = self
            .guests
            .iter()
            .filter(|g| g.host == i && g.socket.is_some())
            .map(|g| g.name.clone())
            .collect();
        let h = &mut self.hosts[i];
        let cfg = h.dir.join("evsd.toml");
        std::fs::write(&cfg, &config).unwrap();
        let _ = std::fs::remove_file(&h.control_socket);
        let program = o.program.clone().unwrap_or_else(evsd_bin);
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &h.ns])
            .arg(program)
            .args(["run", "-c"])
            .arg(&cfg)
            .args(&o.args);
        for (k, v) in &o.env {
            cmd.env(k, v);
        }
        // `ip netns exec` execs the program: the pid is evsd's, so SIGTERM reaches it.
        let mut proc = Proc::spawn(
            &format!("evsd-{}", h.name),
            &mut cmd,
            h.dir.join("evsd.log"),
        );
        proc.runtime_dir = Some(Path::new("/var/run/dpdk").join(&h.file_prefix));
        h.wait_up.clear();
        if o.model.is_some() {
            h.wait_up.extend(o.uplink.clone());
            if o.attach_ports {
                h.wait_up.extend(
                    h.attach
                        .iter()
                        .map(|(p, _)| p.clone())
                        .filter(|p| !vhost.contains(p)),
                );
            }
        }
        h.evsd = Some(Evsd {
            proc,
            socket: h.control_socket.clone(),
            config: cfg,
        });
    }

    /// Waits until evsd of host `i` answers on its control socket and the ports its config
    /// attached are up.
    pub fn wait_evsd(&mut self, i: usize) {
        let h = &mut self.hosts[i];
        let name = h.name.clone();
        let e = h.evsd.as_mut().expect("spawn_evsd first");
        wait_for(&format!("evsd of {name} to answer"), WAIT, || {
            if let Some(s) = e.proc.exited() {
                panic!(
                    "evsd of {name} exited during start-up ({s}):\n{}",
                    e.proc.log_text()
                );
            }
            e.try_ctl(&json!({"cmd": "show_threads"})).ok()
        });
        let h = &self.hosts[i];
        for p in &h.wait_up {
            h.wait_port_up(p);
        }
    }

    /// Stops evsd of host `i` (SIGTERM, SIGKILL after 5 s); returns its exit status.
    pub fn stop_evsd(&mut self, i: usize) -> Option<std::process::ExitStatus> {
        let mut e = self.hosts[i].evsd.take()?;
        e.proc.stop(Duration::from_secs(5))
    }

    /// `kill -9` of host `i`'s evsd: no chance to save or clean up, as in a crash.
    pub fn kill9_evsd(&mut self, i: usize) {
        if let Some(e) = self.hosts[i].evsd.take() {
            e.kill9();
        }
    }

    /// Attaches guest `g`'s port to its host's running evsd at run time (its port must be in
    /// the model in force).
    pub fn attach(&self, g: &Guest) -> String {
        let h = &self.hosts[g.host];
        let (_, body) = h
            .attach
            .iter()
            .find(|(p, _)| *p == g.name)
            .unwrap_or_else(|| panic!("no port {} created on {}", g.name, h.name));
        let mut args: Vec<String> = vec!["attach".into(), g.name.clone()];
        if let Some(s) = &g.socket {
            args.extend(["--vhost".into(), s.display().to_string()]);
        } else {
            let devargs = body
                .split('"')
                .nth(1)
                .expect("ethdev devargs in the attach entry");
            args.extend(["--ethdev".into(), devargs.to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        h.ctl(&args).unwrap_or_else(|e| panic!("{e}"))
    }

    // -------------------------------------------------------------------------------- traffic

    /// Starts `nstool.py ARGS` in namespace `ns` (the run's log is in the lab's directory).
    pub fn spawn_tool(&self, ns: &str, args: &[&str]) -> Bg {
        let n = self.seq.get();
        self.seq.set(n + 1);
        let short = ns.strip_prefix(&format!("{}-", self.id)).unwrap_or(ns);
        let name = format!("{short}-{}-{n}", args.first().copied().unwrap_or("tool"));
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns, &self.py])
            .arg(&self.tool)
            .args(args);
        let log = self.dir.path().join(format!("{name}.log"));
        Bg {
            proc: Proc::spawn(&name, &mut cmd, log),
        }
    }

    /// Runs `nstool.py ARGS` in guest `g`'s namespace to completion (bounded by the tool's own
    /// timeouts and a kill after [`WAIT`]).
    pub fn run(&self, g: &Guest, args: &[&str]) -> Ran {
        self.spawn_tool(&g.ns, args).finish(WAIT)
    }

    /// `count` ICMP echoes from `from` to `to_ip`, one every 0.2 s, each answered within
    /// `timeout`; returns how many replies came back.
    pub fn ping(&self, from: &Guest, to_ip: &str, count: u32, timeout: Duration) -> u32 {
        let r = self.run(
            from,
            &[
                "ping",
                to_ip,
                "--count",
                &count.to_string(),
                "--interval",
                "0.2",
                "--timeout",
                &format!("{:.2}", timeout.as_secs_f64()),
            ],
        );
        r.json["received"]
            .as_u64()
            .unwrap_or_else(|| panic!("ping from {} printed no result: {}", from.name, r.text))
            as u32
    }

    /// Pings until one echo is answered or `timeout` passes (e.g. while MACs are learned);
    /// returns whether one was.
    pub fn ping_until(&self, from: &Guest, to_ip: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.ping(from, to_ip, 1, Duration::from_secs(1)) == 1 {
                return true;
            }
        }
        false
    }

    /// A TCP echo server on `to` (port `port`), `from` connects, sends a line and must get it
    /// back within 3 s. Err: what the client reported.
    pub fn tcp_check(&self, from: &Guest, to: &Guest, port: u16) -> Result<Ran, Ran> {
        let p = port.to_string();
        let mut srv = self.spawn_tool(&to.ns, &["serve-tcp", &p, "--seconds", "30"]);
        srv.wait_ready();
        let r = self.run(
            from,
            &[
                "connect",
                &to.ip,
                &p,
                "--timeout",
                "3",
                "--payload",
                &format!("hello from {} to {}", from.name, to.name),
            ],
        );
        drop(srv);
        if r.ok {
            Ok(r)
        } else {
            Err(r)
        }
    }

    /// Starts a sniffer on `iface` in namespace `ns` (`nstool.py sniff`: `--match k=v` filters,
    /// VLAN tags recovered from aux data) and waits until it is capturing; [`Bg::finish`] gives
    /// its JSON (`matched`, `frames`).
    pub fn sniff(&self, ns: &str, iface: &str, args: &[&str]) -> Bg {
        let mut a = vec!["sniff", iface];
        a.extend_from_slice(args);
        let mut b = self.spawn_tool(ns, &a);
        b.wait_ready();
        b
    }

    /// Starts `dpdk-testpmd` as the guest of vhost port `g` ([`Lab::add_vhost_port`]) inside
    /// its host's namespace (so a killed run's leftovers are found with the namespace), with
    /// `g.mac` on its virtio_user port, forwarding on CPU `core`; waits until evsd sees the port
    /// up. testpmd busy-polls its CPU: keep it short.
    pub fn start_testpmd(&self, g: &Guest, mode: PmdMode, core: usize) -> Bg {
        let socket = g.socket.as_ref().expect("a vhost port (add_vhost_port)");
        let h = &self.hosts[g.host];
        let prefix = format!("{}-pmd{}", h.file_prefix, self.seq.get());
        let fwd = match mode {
            PmdMode::IcmpEcho => "icmpecho",
            PmdMode::RxOnly => "rxonly",
            PmdMode::TxOnly => "txonly",
        };
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &h.ns, "stdbuf", "-oL", "dpdk-testpmd"])
            .args(["-l", "0,1", "--no-huge", "-m", "256", "--no-pci"])
            .arg(format!("--main-lcore={}", 1 - core.min(1)))
            .args(["--file-prefix", &prefix, "--log-level=lib.eal:notice"])
            .arg(format!(
                "--vdev=virtio_user0,path={},queues=1,mac={}",
                socket.display(),
                g.mac
            ))
            .args([
                "--",
                "--nb-cores=1",
                "--total-num-mbufs=2048",
                "--stats-period=1",
            ])
            .arg(format!("--forward-mode={fwd}"));
        let n = self.seq.get();
        self.seq.set(n + 1);
        let name = format!("{}-testpmd-{}-{n}", h.name, g.name);
        let mut proc = Proc::spawn(&name, &mut cmd, self.dir.path().join(format!("{name}.log")));
        proc.runtime_dir = Some(Path::new("/var/run/dpdk").join(prefix));
        let mut b = Bg { proc };
        wait_for(
            &format!("testpmd guest {} up on {}", g.name, h.name),
            WAIT,
            || {
                if let Some(s) = b.proc.exited() {
                    panic!("testpmd exited ({s}):\n{}", b.proc.log_text());
                }
                (h.port(&g.name).state == api::PortState::Up).then_some(())
            },
        );
        b
    }

    /// Every host's ports and the ToR's rules, for failure messages.
    pub fn dump(&self) -> String {
        let mut s = String::new();
        for h in &self.hosts {
            s += &h.port_dump();
        }
        s += &format!("ToR ({:?}):\n{}", self.tor_mode, self.tor_dump());
        s
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for h in &mut self.hosts {
            h.evsd.take(); // SIGTERM, then SIGKILL after 5 s; removes its DPDK runtime dir
        }
        let all = self
            .guest_ns
            .iter()
            .chain(self.hosts.iter().map(|h| &h.ns))
            .chain(std::iter::once(&self.tor));
        for ns in all {
            // Any process still in there (a tool run or testpmd that outlived its guard).
            sh_quiet(&format!("ip netns pids {ns} | xargs -r kill -9"));
            sh_quiet(&format!("ip netns del {ns}"));
        }
    }
}
