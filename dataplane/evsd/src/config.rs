//! evsd's TOML configuration: EAL, switch and dataplane settings, port backends, and the
//! operator's model (uplinks, port groups, security groups, ports) at the top level.

use flowtable::switch::SwitchConfig;
pub use model::{Attach, Backend, EthdevConfig};
use model::{Model, Port, PortGroup, SecurityGroup, Uplink};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub eal: EalSection,
    #[serde(default)]
    pub switch: SwitchConfig,
    #[serde(default)]
    pub dataplane: DataplaneSection,
    #[serde(default)]
    pub attach: Vec<Attach>,
    /// Follow a DVS controller: the model and attachments come from it (see `agent.rs`).
    #[serde(default)]
    pub controller: Option<ControllerSection>,
    #[serde(default)]
    pub uplinks: Vec<Uplink>,
    #[serde(default)]
    pub port_groups: Vec<PortGroup>,
    #[serde(default)]
    pub security_groups: Vec<SecurityGroup>,
    #[serde(default)]
    pub ports: Vec<Port>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct EalSection {
    /// The EAL main lcore list (`-l`); the control thread starts there.
    pub cores: String,
    /// Run without hugepages (functional tests; ~35% slower vhost-user).
    pub no_huge: bool,
    /// Memory to reserve, MiB (`-m`); 0: the EAL's default (512 without hugepages).
    pub memory_mb: u32,
    /// A hugetlbfs mount to use (`--huge-dir`).
    pub huge_dir: Option<PathBuf>,
    /// `--file-prefix`; needed to run several DPDK processes side by side.
    pub file_prefix: Option<String>,
    /// `--in-memory` (the default with hugepages: nothing is left in hugetlbfs after exit).
    pub in_memory: Option<bool>,
    /// Extra EAL arguments, appended last (e.g. `["--no-pci", "--log-level=7"]`).
    pub args: Vec<String>,
}

impl Default for EalSection {
    fn default() -> Self {
        EalSection {
            cores: "0".into(),
            no_huge: false,
            memory_mb: 0,
            huge_dir: None,
            file_prefix: None,
            in_memory: None,
            args: vec![],
        }
    }
}

impl EalSection {
    /// The argument list handed to `rte_eal_init` (without argv[0]).
    pub fn to_args(&self) -> Vec<String> {
        let mut a = vec!["-l".to_owned(), self.cores.clone()];
        if self.no_huge {
            a.push("--no-huge".into());
            let mb = if self.memory_mb == 0 {
                512
            } else {
                self.memory_mb
            };
            a.extend(["-m".into(), mb.to_string()]);
        } else if self.memory_mb > 0 {
            a.extend(["-m".into(), self.memory_mb.to_string()]);
        }
        // --in-memory and --no-huge exclude each other; a file prefix keeps instances apart.
        if !self.no_huge && self.in_memory.unwrap_or(true) {
            a.push("--in-memory".into());
        }
        if let Some(d) = &self.huge_dir {
            a.extend(["--huge-dir".into(), d.display().to_string()]);
        }
        let prefix = self
            .file_prefix
            .clone()
            .unwrap_or_else(|| format!("evsd{}", std::process::id()));
        a.extend(["--file-prefix".into(), prefix]);
        // Telemetry would create a socket per instance under /var/run/dpdk; evsd has its own.
        a.push("--no-telemetry".into());
        a.extend(self.args.iter().cloned());
        a
    }
}

/// `[controller]`: this host's agent (or `evsd run --controller URL --host NAME --token-file F`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ControllerSection {
    /// `http://controller:9660`
    pub url: String,
    /// This host's name in the DVS.
    pub host: String,
    /// The host's token (from `dvsctl host add NAME --token-file F`).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// CA certificates (PEM) for an `https://` controller; absent: the system's web roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataplaneSection {
    /// CPUs of the forwarding threads, one thread each.
    pub cores: Vec<usize>,
    /// Packets per rx burst (1-32).
    pub burst: usize,
    /// Sleep after an idle loop iteration, µs (like OVS pmd-sleep-max); 0 busy-polls.
    pub idle_sleep_us: u64,
    /// mbufs in the packet pool.
    pub mbufs: u32,
    /// Prometheus endpoint, e.g. "127.0.0.1:9650"; absent: no metrics server.
    pub metrics_listen: Option<String>,
    /// The control socket (line-delimited JSON).
    pub control_socket: PathBuf,
    /// How often the control thread polls link state, ms.
    pub link_poll_ms: u64,
    /// Where the changes made at run time (apply, attach, detach) are kept across restarts
    /// (`state.json`, see the `state` module); created if missing.
    pub state_dir: PathBuf,
    /// Accept a model with no ports and no uplinks (from this file, `ctl apply` or a reload);
    /// otherwise refused, as it is more likely the wrong file than a switch meant to do nothing.
    pub allow_empty_model: bool,
    /// A forwarding thread whose loop has not turned for this long is reported stalled (log,
    /// `evs_thread_stalled`); 0: no watchdog.
    pub watchdog_secs: u64,
    /// Exit (status 70) when a forwarding thread is stalled, so that systemd restarts evsd.
    pub watchdog_exit: bool,
}

/// What the `evsd run` / `evsd check` command line changes in the file's config.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--controller URL --host NAME [--token-file F] [--controller-ca F]`.
    pub controller: Option<ControllerSection>,
    /// `--allow-empty`.
    pub allow_empty: bool,
}

impl Default for DataplaneSection {
    fn default() -> Self {
        DataplaneSection {
            cores: vec![1],
            burst: 32,
            idle_sleep_us: 0,
            mbufs: 16383,
            metrics_listen: None,
            control_socket: PathBuf::from("/run/evs/evsd.sock"),
            link_poll_ms: 100,
            state_dir: PathBuf::from("/var/lib/evs"),
            allow_empty_model: false,
            watchdog_secs: 5,
            watchdog_exit: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path:?}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path:?}: {msg}")]
    Parse { path: PathBuf, msg: String },
    #[error("{path:?}: {msg}")]
    Invalid { path: PathBuf, msg: String },
}

impl Config {
    pub fn model(&self) -> Model {
        Model {
            uplinks: self.uplinks.clone(),
            port_groups: self.port_groups.clone(),
            security_groups: self.security_groups.clone(),
            ports: self.ports.clone(),
            remote_members: vec![],
        }
    }

    /// What `evsd check`, `evsd run` and a reload (SIGHUP) accept, with the command line's
    /// `ov` applied: one function, so that `check` cannot pass what `run` refuses.
    pub fn load_boot(path: &Path, ov: &Overrides) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut c = Config::parse(&text).map_err(|msg| ConfigError::Parse {
            path: path.to_owned(),
            msg,
        })?;
        if let Some(o) = &ov.controller {
            let c = c.controller.get_or_insert(o.clone());
            c.url.clone_from(&o.url);
            c.host.clone_from(&o.host);
            if o.token_file.is_some() {
                c.token_file.clone_from(&o.token_file);
            }
            if o.ca_file.is_some() {
                c.ca_file.clone_from(&o.ca_file);
            }
        }
        c.dataplane.allow_empty_model |= ov.allow_empty;
        let invalid = |msg| ConfigError::Invalid {
            path: path.to_owned(),
            msg,
        };
        let c = c.checked().map_err(invalid)?;
        c.refuse_empty().map_err(invalid)?;
        Ok(c)
    }

    /// Refuses a model with nothing to switch unless the operator allowed it; with a
    /// controller the model comes from it, and the file's is empty by design.
    pub fn refuse_empty(&self) -> Result<(), String> {
        if self.controller.is_some() || self.dataplane.allow_empty_model {
            return Ok(());
        }
        let m = self.model();
        refuse_empty_model(
            &m,
            "`--allow-empty` or `[dataplane] allow_empty_model = true`",
        )
    }

    /// Parses TOML; errors carry the key path (`dataplane.cores[0]`) and the line.
    pub fn parse(text: &str) -> Result<Config, String> {
        let de = toml::Deserializer::new(text);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner().to_string();
            if path == "." || path.is_empty() {
                inner
            } else {
                format!("at `{path}`: {inner}")
            }
        })
    }

    /// Cross-field checks that serde cannot express.
    pub fn checked(self) -> Result<Config, String> {
        self.model().validate().map_err(|e| e.to_string())?;
        self.switch.check()?;
        let d = &self.dataplane;
        if d.cores.is_empty() {
            return Err("dataplane.cores: at least one forwarding core is needed".into());
        }
        let ncpu = evs_dpdk::num_cpus();
        for (i, &c) in d.cores.iter().enumerate() {
            if c >= ncpu {
                return Err(format!(
                    "dataplane.cores[{i}]: CPU {c} does not exist (this machine has {ncpu})"
                ));
            }
            if d.cores[..i].contains(&c) {
                return Err(format!("dataplane.cores[{i}]: CPU {c} is listed twice"));
            }
        }
        crate::limits::check(&self)?;
        check_lcores(&self.eal.cores, ncpu)?;
        if let Some(p) = &self.eal.file_prefix {
            if p.is_empty() || p.contains('/') {
                return Err(format!(
                    "[eal] file_prefix = {p:?}: must be a non-empty name without '/'"
                ));
            }
        }
        if let Some(a) = &d.metrics_listen {
            check_listen(a)?;
        }
        check_socket_path("[dataplane] control_socket", &d.control_socket)?;
        if let Some(c) = &self.controller {
            check_controller(c)?;
        }
        // A relative directory would follow the working directory, and a restart from another
        // one would silently not find the state.
        if !d.state_dir.is_absolute() {
            return Err(format!(
                "dataplane.state_dir: {:?} must be an absolute path",
                d.state_dir
            ));
        }
        let model = self.model();
        let names: Vec<&str> = model
            .uplinks
            .iter()
            .map(|u| u.name.as_str())
            .chain(model.ports.iter().map(|p| p.name.as_str()))
            .collect();
        for (i, a) in self.attach.iter().enumerate() {
            if !names.contains(&a.port.as_str()) {
                return Err(format!(
                    "attach[{i}].port: no port or uplink named {:?} in the model",
                    a.port
                ));
            }
            if self.attach[..i].iter().any(|b| b.port == a.port) {
                return Err(format!("attach[{i}].port: {:?} is attached twice", a.port));
            }
            let backend = a.backend().map_err(|e| format!("attach[{i}]: {e}"))?;
            if let Backend::Vhost(v) = &backend {
                if !v.socket.is_absolute() {
                    return Err(format!(
                        "attach[{i}].vhost.socket: {:?} must be an absolute path",
                        v.socket
                    ));
                }
                check_socket_path(&format!("attach[{i}].vhost.socket"), &v.socket)?;
                if self.attach[..i]
                    .iter()
                    .any(|b| matches!(&b.vhost, Some(w) if w.socket == v.socket))
                {
                    return Err(format!(
                        "attach[{i}].vhost.socket: {:?} is used by another port",
                        v.socket
                    ));
                }
            }
        }
        Ok(self)
    }
}

/// Refuses a model with no ports and no uplinks; `how` says how to allow it.
pub fn refuse_empty_model(m: &Model, how: &str) -> Result<(), String> {
    if m.ports.is_empty() && m.uplinks.is_empty() {
        return Err(format!(
            "the model has no ports and no uplinks, so the switch would forward nothing; if \
             that is intended, say so with {how}"
        ));
    }
    Ok(())
}

/// The EAL's `-l` list as evsd writes it (`0`, `0-2,4`): the EAL would refuse a CPU that does
/// not exist, but only after `check` said yes.
fn check_lcores(cores: &str, ncpu: usize) -> Result<(), String> {
    let bad = |why: String| Err(format!("[eal] cores = {cores:?}: {why}"));
    if cores.trim().is_empty() {
        return bad("must list at least one CPU (e.g. \"0\")".into());
    }
    for item in cores.split(',') {
        let (a, b) = item.split_once('-').unwrap_or((item, item));
        let (Ok(a), Ok(b)) = (a.trim().parse::<usize>(), b.trim().parse::<usize>()) else {
            return bad(format!(
                "{item:?} is not a CPU or a range (write e.g. \"0\" or \"0-2,4\")"
            ));
        };
        if a > b {
            return bad(format!("range {item:?} is empty"));
        }
        if b >= ncpu {
            return bad(format!(
                "CPU {b} does not exist (this machine has {ncpu}: 0..={})",
                ncpu - 1
            ));
        }
    }
    Ok(())
}

/// What `TcpListener::bind` will take at start-up: `host:port` that resolves.
fn check_listen(addr: &str) -> Result<(), String> {
    use std::net::ToSocketAddrs;
    let bad = |why: String| {
        Err(format!(
            "[dataplane] metrics_listen = {addr:?}: {why} (write e.g. \"127.0.0.1:9650\")"
        ))
    };
    match addr.to_socket_addrs().map(|mut a| a.next()) {
        Ok(Some(_)) => Ok(()),
        Ok(None) => bad("resolves to no address".into()),
        Err(e) => bad(format!("not a host:port address ({e})")),
    }
}

/// A Unix socket path must fit `sockaddr_un.sun_path` (108 bytes with the NUL).
fn check_socket_path(field: &str, p: &Path) -> Result<(), String> {
    const MAX: usize = 107;
    let n = p.as_os_str().len();
    if n > MAX {
        return Err(format!(
            "{field} = {p:?}: {n} bytes, a Unix socket path must be 1..={MAX}"
        ));
    }
    Ok(())
}

/// What the agent needs at start-up, read now so that `check` fails where `run` would.
fn check_controller(c: &ControllerSection) -> Result<(), String> {
    if !(c.url.starts_with("http://") || c.url.starts_with("https://")) {
        return Err(format!(
            "[controller] url = {:?}: must start with http:// or https://",
            c.url
        ));
    }
    if c.host.trim().is_empty() {
        return Err("[controller] host: must not be empty".into());
    }
    for (key, f) in [("token_file", &c.token_file), ("ca_file", &c.ca_file)] {
        if let Some(f) = f {
            std::fs::metadata(f)
                .map_err(|e| format!("[controller] {key} = {:?}: {e}", f.display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        [eal]
        no_huge = true
        memory_mb = 256
        file_prefix = "t1"
        args = ["--no-pci"]

        [dataplane]
        cores = [0]
        idle_sleep_us = 50
        control_socket = "/tmp/evs-test/ctl.sock"

        [[port_groups]]
        name = "pg"
        vlan = 10

        [[ports]]
        name = "vm1"
        mac = "02:00:00:00:00:01"
        port_group = "pg"

        [[ports]]
        name = "vm2"
        mac = "02:00:00:00:00:02"
        port_group = "pg"

        [[attach]]
        port = "vm1"
        vhost = { socket = "/tmp/evs-test/vm1.sock", role = "server" }

        [[attach]]
        port = "vm2"
        ethdev = { devargs = "net_tap0,iface=evs0" }
    "#;

    #[test]
    fn parses_example() {
        let c = Config::parse(GOOD).unwrap().checked().unwrap();
        assert_eq!(c.attach.len(), 2);
        assert_eq!(
            c.attach[1].backend().unwrap(),
            Backend::Ethdev {
                devargs: "net_tap0,iface=evs0".into()
            }
        );
        let args = c.eal.to_args();
        assert!(args.contains(&"--no-huge".to_string()));
        assert!(!args.contains(&"--in-memory".to_string()));
        assert_eq!(args.last().unwrap(), "--no-pci");
    }

    #[test]
    fn errors_name_the_field() {
        let e = Config::parse(&GOOD.replace("idle_sleep_us = 50", "idle_sleep_us = \"x\""))
            .unwrap_err();
        assert!(e.contains("dataplane.idle_sleep_us"), "{e}");
        let e = Config::parse(&GOOD.replace("role = \"server\"", "role = \"both\"")).unwrap_err();
        assert!(e.contains("attach[0]"), "{e}");
        let e = Config::parse(&GOOD.replace("[dataplane]", "[dataplane]\nbogus = 1")).unwrap_err();
        assert!(e.contains("bogus"), "{e}");
        let e = Config::parse(&GOOD.replace("port = \"vm2\"", "port = \"vm3\""))
            .unwrap()
            .checked()
            .unwrap_err();
        assert!(e.starts_with("attach[1].port"), "{e}");
        let e = Config::parse(&GOOD.replace("vlan = 10", "vlan = 5000"))
            .unwrap()
            .checked()
            .unwrap_err();
        assert!(e.contains("vlan"), "{e}");
    }

    /// `evsd check` passed this and `evsd run` died allocating the connection table.
    #[test]
    fn table_sizes_beyond_the_limits_are_refused() {
        let e = Config::parse(&GOOD.replace(
            "[dataplane]",
            "[switch]\nct_max_entries = 1000000000000\n\n[dataplane]",
        ))
        .unwrap()
        .checked()
        .unwrap_err();
        assert!(e.starts_with("switch.ct_max_entries: 1000000000000"), "{e}");
    }
}
