//! The simulated host: a [`HostSwitch`] that answers the agent's requests the way `evsd` does,
//! without DPDK. `ShowPorts`/`Attach`/`Detach` work on an in-memory table; `Apply` really
//! compiles the model with a [`flowtable::switch::Switch`] (the same call evsd's control loop
//! makes), or, for hosts outside the compiled sample, validates it with `Model::validate`.
//!
//! The [`Probe`] is how the benchmark sees the agents from outside without touching their code:
//! a host counts as done when its switch has finished an `Apply` of a matching model (the
//! table swap; the agent then saves the slice and reports, which `--wait=hosts` includes). A
//! policy delta reaches the switch as one `Apply` and nothing else. A whole slice is followed
//! by attaches, the save and the status report's `ShowPorts`: that `ShowPorts` marks the host
//! "reported" (applied, attached and saved), which is what a resync is measured to.

use api::{Applied, PortKind, PortReport, PortState, Reply, Request, Response};
use dvs_agent::HostSwitch;
use flowtable::switch::{Switch, SwitchConfig};
use model::{Backend, Model};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// What the benchmark waits for at the moment.
#[derive(Debug, Clone, PartialEq)]
pub enum Expect {
    /// Any applied slice counts (initial convergence, resync).
    Any,
    /// A slice whose port group `group` (switch name, `dvs/name`) has this `dhcp_isolation`.
    Dhcp { group: String, value: bool },
}

/// Shared by the benchmark and every simulated switch.
pub struct Probe {
    epoch: Instant,
    expect: RwLock<Expect>,
    /// Per host: nanoseconds since `epoch` (+1, so 0 means "not yet") when the host finished
    /// applying a slice that matches `expect`.
    done: Vec<AtomicU64>,
    /// Per host, the same for the first `ShowPorts` after that `Apply`: a whole slice is
    /// attached and saved by then and its status report is about to go out (a resync is
    /// measured to here; a policy delta has nothing after its `Apply`).
    reported: Vec<AtomicU64>,
    /// Time spent inside `Apply` (compile or validate), all hosts, and how many applies.
    pub apply_ns: AtomicU64,
    pub applies: AtomicU64,
    /// The slowest single `Apply` seen since the last reset.
    pub apply_max_ns: AtomicU64,
}

impl Probe {
    pub fn new(hosts: usize) -> Arc<Probe> {
        Arc::new(Probe {
            epoch: Instant::now(),
            expect: RwLock::new(Expect::Any),
            done: (0..hosts).map(|_| AtomicU64::new(0)).collect(),
            reported: (0..hosts).map(|_| AtomicU64::new(0)).collect(),
            apply_ns: AtomicU64::new(0),
            applies: AtomicU64::new(0),
            apply_max_ns: AtomicU64::new(0),
        })
    }

    /// Clears the done marks of `hosts` and sets what counts from now on.
    pub fn arm(&self, expect: Expect, hosts: impl IntoIterator<Item = usize>) {
        *self.expect.write().unwrap() = expect;
        for h in hosts {
            self.done[h].store(0, Ordering::SeqCst);
            self.reported[h].store(0, Ordering::SeqCst);
        }
    }

    /// When host `h` finished (as an `Instant`), if it has.
    pub fn done_at(&self, h: usize) -> Option<Instant> {
        self.at(&self.done[h])
    }

    /// When host `h` was about to report after finishing, if it has.
    pub fn reported_at(&self, h: usize) -> Option<Instant> {
        self.at(&self.reported[h])
    }

    fn at(&self, mark: &AtomicU64) -> Option<Instant> {
        match mark.load(Ordering::SeqCst) {
            0 => None,
            ns => Some(self.epoch + Duration::from_nanos(ns - 1)),
        }
    }

    fn mark(&self, mark: &AtomicU64) {
        mark.store(self.epoch.elapsed().as_nanos() as u64 + 1, Ordering::SeqCst);
    }

    pub fn reset_apply_stats(&self) {
        self.apply_ns.store(0, Ordering::SeqCst);
        self.applies.store(0, Ordering::SeqCst);
        self.apply_max_ns.store(0, Ordering::SeqCst);
    }

    fn matches(&self, model: &Model) -> bool {
        match &*self.expect.read().unwrap() {
            Expect::Any => true,
            Expect::Dhcp { group, value } => model
                .port_groups
                .iter()
                .any(|g| &g.name == group && g.dhcp_isolation == *value),
        }
    }
}

/// Lets the benchmark "kill -9" one agent: once set, the agent's next call to its switch never
/// returns, so it neither reports nor saves again (its thread is left parked until the process
/// exits).
#[derive(Default)]
pub struct Kill {
    pub dead: AtomicBool,
    pub parked: AtomicBool,
}

pub struct SimSwitch {
    idx: usize,
    probe: Arc<Probe>,
    /// `Some(config)`: compile every model with flowtable; `None`: validate only.
    compile: Option<SwitchConfig>,
    switch: Option<Switch>,
    generation: u64,
    /// The applied model's uplinks and ports, in `show ports` order.
    names: Vec<(String, PortKind)>,
    attached: BTreeMap<String, Backend>,
    /// An `Apply` matching the probe happened; the next `ShowPorts` marks the host reported.
    applied_match: bool,
    kill: Option<Arc<Kill>>,
}

/// A small switch configuration: the simulated switch never forwards, so the MAC and
/// connection tables only need to exist, not to be sized for traffic (the defaults reserve
/// room for a million connections per switch).
pub fn small_config() -> SwitchConfig {
    SwitchConfig {
        mac_capacity: 1024,
        ct_max_entries: 1024,
        emc_entries: 64,
        megaflow_entries: 64,
        ..SwitchConfig::default()
    }
}

impl SimSwitch {
    pub fn new(idx: usize, probe: Arc<Probe>, compile: bool) -> SimSwitch {
        SimSwitch {
            idx,
            probe,
            compile: compile.then(small_config),
            switch: None,
            generation: 0,
            names: vec![],
            attached: BTreeMap::new(),
            applied_match: false,
            kill: None,
        }
    }

    pub fn with_kill(mut self, k: Arc<Kill>) -> SimSwitch {
        self.kill = Some(k);
        self
    }

    fn ports(&self) -> Vec<PortReport> {
        let report = |name: &str, kind: PortKind, id: u32| {
            let backend = self.attached.get(name).cloned();
            PortReport {
                name: name.to_owned(),
                id,
                kind,
                // No guest ever connects to a simulated vhost socket.
                state: if backend.is_some() {
                    PortState::Down
                } else {
                    PortState::Detached
                },
                backend,
                ethdev: None,
                driver: None,
                connects: 0,
                rx_packets: 0,
                rx_bytes: 0,
                tx_packets: 0,
                tx_bytes: 0,
                drops: BTreeMap::new(),
                egress_drops: BTreeMap::new(),
                pmd: None,
            }
        };
        let mut out: Vec<PortReport> = self
            .names
            .iter()
            .enumerate()
            .map(|(i, (n, k))| report(n, *k, i as u32 + 1))
            .collect();
        for n in self.attached.keys() {
            if !self.names.iter().any(|(m, _)| m == n) {
                out.push(report(n, PortKind::Stale, 0));
            }
        }
        out
    }

    fn apply(&mut self, model: Model) -> Result<Applied, String> {
        let start = Instant::now();
        let names: Vec<(String, PortKind)> = model
            .uplinks
            .iter()
            .map(|u| (u.name.clone(), PortKind::Uplink))
            .chain(model.ports.iter().map(|p| (p.name.clone(), PortKind::Port)))
            .collect();
        let matched = self.probe.matches(&model);
        let applied = match &self.compile {
            Some(cfg) => {
                let (generation, r) = match &self.switch {
                    Some(sw) => {
                        let r = sw.apply(model).map_err(|e| e.to_string())?;
                        (sw.pipeline().version, r)
                    }
                    None => {
                        let sw = Switch::new(cfg.clone(), model).map_err(|e| e.to_string())?;
                        let g = sw.pipeline().version;
                        self.switch = Some(sw);
                        (g, Default::default())
                    }
                };
                Applied {
                    generation,
                    rules_added: r.rules_added,
                    rules_removed: r.rules_removed,
                    owners_recompiled: r.owners_recompiled,
                    removed_ports: vec![],
                }
            }
            None => {
                model.validate().map_err(|e| e.to_string())?;
                self.generation += 1;
                Applied {
                    generation: self.generation,
                    rules_added: 0,
                    rules_removed: 0,
                    owners_recompiled: 0,
                    removed_ports: vec![],
                }
            }
        };
        self.names = names;
        let ns = start.elapsed().as_nanos() as u64;
        self.probe.apply_ns.fetch_add(ns, Ordering::Relaxed);
        self.probe.applies.fetch_add(1, Ordering::Relaxed);
        self.probe.apply_max_ns.fetch_max(ns, Ordering::Relaxed);
        if matched {
            self.probe.mark(&self.probe.done[self.idx]);
        }
        self.applied_match = matched;
        Ok(applied)
    }

    fn park_if_killed(&self) {
        if let Some(k) = &self.kill {
            if k.dead.load(Ordering::SeqCst) {
                k.parked.store(true, Ordering::SeqCst);
                loop {
                    std::thread::sleep(Duration::from_secs(3600));
                }
            }
        }
    }
}

impl HostSwitch for SimSwitch {
    fn call(&mut self, req: Request) -> Response {
        self.park_if_killed();
        match req {
            Request::ShowPorts => {
                if std::mem::take(&mut self.applied_match) {
                    self.probe.mark(&self.probe.reported[self.idx]);
                }
                Response::ok(&Reply::Ports(self.ports()))
            }
            Request::Apply { model } => match self.apply(model) {
                Ok(a) => Response::ok(&Reply::Applied(a)),
                Err(e) => Response::err(e),
            },
            Request::Attach(a) => match a.backend() {
                Ok(b) => {
                    self.attached.insert(a.port, b);
                    Response::ok(&Reply::Text("attached".into()))
                }
                Err(e) => Response::err(format!("attach {:?}: {e}", a.port)),
            },
            Request::Detach { port } => {
                self.attached.remove(&port);
                Response::ok(&Reply::Text("detached".into()))
            }
            other => Response::err(format!("the simulated switch does not serve {other:?}")),
        }
    }
}
