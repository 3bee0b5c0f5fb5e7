//! # dvs-agent: one host's share of the DVS
//!
//! Runs inside `evsd` (`evsd run --controller URL --host NAME --token-file F`) and, with a
//! simulated switch, in the controller's scale benchmark. Its loop:
//!
//! 1. **Restore**: the last applied slice from `<state_dir>/agent.json` goes to the switch at
//!    once, so a host restarted while the controller is down forwards with its last state
//!    without waiting for anyone.
//! 2. **Watch**: `GET /v1/hosts/<host>/watch` with the revision and fingerprint it runs; the
//!    controller sends the slice only if it differs, then every change that touches this host.
//! 3. **Apply** ([`Agent::apply`]): detach backends that go or change, replace the model (evsd's
//!    atomic table swap: the tables are never empty in between), attach what is new; then save
//!    the slice durably and report.
//! 4. **Report** ([`Agent::status`]): applied revision, fingerprint and per-port state under the
//!    host's own status key, every [`STATUS_INTERVAL`] (which also renews its lease).
//! 5. **Lose the controller**: keep forwarding on the last state, retry with backoff (capped at
//!    [`MAX_BACKOFF`]), resume from the last revision.

#![forbid(unsafe_code)]

mod state;

use api::dvs::{ControllerClient, ControllerError, HostAck, HostStatus, PortStatus, WatchEvent};
use api::{PortReport, PortState, Reply, Request, Response};
use model::{Attach, Backend, HostSlice};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub use state::{SavedSlice, StateFile};

/// How often the agent reports (the controller's host lease is 10 s).
pub const STATUS_INTERVAL: Duration = Duration::from_secs(3);
/// The longest wait between two attempts to reach the controller.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The switch the agent drives: `evsd`'s control loop, or a simulation.
pub trait HostSwitch {
    fn call(&mut self, req: Request) -> Response;
    /// The controller revision the following calls carry out (evsd names it in its audit log).
    fn carrying_out(&mut self, _revision: u64) {}
}

#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// One URL per controller replica, comma-separated; the agent moves to the next when one
    /// fails.
    pub controller: String,
    pub host: String,
    pub token: Option<String>,
    /// A PEM file of CA certificates for an https:// controller (default: the web roots).
    pub ca_file: Option<PathBuf>,
    /// Where the last applied slice is kept.
    pub state_dir: PathBuf,
}

pub struct Agent<S: HostSwitch> {
    cfg: AgentConfig,
    /// One client per replica; `client` is the one in use.
    clients: Vec<ControllerClient>,
    client: ControllerClient,
    switch: S,
    state: StateFile,
    /// What the switch runs.
    applied: Option<SavedSlice>,
    /// Why the last slice (or some of its ports) could not be applied.
    error: Option<String>,
    port_errors: BTreeMap<String, String>,
    last_report: Option<Instant>,
    /// Ask for the whole slice on the next watch (a delta did not fit what the switch runs).
    want_whole: bool,
    /// A full status report went out: after one, a policy delta (which changes no port) is
    /// acknowledged without the ports (the controller answers 409 if it holds no full report
    /// under the host's lease, and the agent sends one).
    reported_ports: bool,
}

/// The agent's lines (target `dvs_agent`), with the host as a field and in the text, as before.
fn log(host: &str, msg: impl AsRef<str>) {
    tracing::info!(host, "agent {host}: {}", msg.as_ref());
}

/// What went wrong (a refused slice, a failed attach, a lost controller).
fn warn(host: &str, msg: impl AsRef<str>) {
    tracing::warn!(host, "agent {host}: {}", msg.as_ref());
}

fn typed<T: serde::de::DeserializeOwned>(r: Response) -> Result<T, String> {
    if !r.ok {
        return Err(r.error.unwrap_or_else(|| "refused".into()));
    }
    serde_json::from_value(r.result.unwrap_or_default())
        .map_err(|e| format!("unexpected answer: {e}"))
}

impl<S: HostSwitch> Agent<S> {
    /// Fails only on an unreadable CA file.
    pub fn new(cfg: AgentConfig, switch: S) -> Result<Agent<S>, String> {
        let client_for = |u: &str| match &cfg.ca_file {
            None => Ok(ControllerClient::new(u, cfg.token.clone())),
            Some(ca) => ControllerClient::with_ca(u, cfg.token.clone(), ca),
        };
        let clients: Vec<ControllerClient> = cfg
            .controller
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(client_for)
            .collect::<Result<_, _>>()?;
        let client = clients
            .first()
            .cloned()
            .unwrap_or_else(|| ControllerClient::new(&cfg.controller, cfg.token.clone()));
        let state = StateFile::new(cfg.state_dir.join("agent.json"));
        Ok(Agent {
            cfg,
            clients,
            client,
            switch,
            state,
            applied: None,
            error: None,
            port_errors: BTreeMap::new(),
            last_report: None,
            want_whole: false,
            reported_ports: false,
        })
    }

    pub fn switch(&mut self) -> &mut S {
        &mut self.switch
    }

    /// The revision of the slice the switch runs (0: none yet).
    pub fn applied_revision(&self) -> u64 {
        self.applied.as_ref().map_or(0, |a| a.revision)
    }

    /// Puts the saved slice, if there is one, on the switch. A saved slice that cannot be read is
    /// an error (the operator decides; nothing is guessed).
    pub fn restore(&mut self) -> Result<bool, String> {
        let Some(saved) = self.state.load()? else {
            return Ok(false);
        };
        if saved.slice.host != self.cfg.host {
            return Err(format!(
                "{}: holds the slice of host {:?}, not {:?}; remove it to start afresh",
                self.state.path().display(),
                saved.slice.host,
                self.cfg.host
            ));
        }
        log(
            &self.cfg.host,
            format!(
                "restoring revision {} ({} ports) from {}",
                saved.revision,
                saved.slice.model.ports.len(),
                self.state.path().display()
            ),
        );
        self.install(
            saved.revision,
            saved.fingerprint.clone(),
            saved.slice,
            false,
        )?;
        Ok(true)
    }

    /// Applies one slice: detach what goes or changes, swap the model, attach what is new.
    /// On a refused model nothing changes and the error is reported.
    pub fn apply(
        &mut self,
        revision: u64,
        fingerprint: String,
        slice: HostSlice,
    ) -> Result<(), String> {
        self.install(revision, fingerprint, slice, true)
    }

    fn install(
        &mut self,
        revision: u64,
        fingerprint: String,
        slice: HostSlice,
        save: bool,
    ) -> Result<(), String> {
        self.switch.carrying_out(revision);
        let attached = self.attached()?;
        let wanted: BTreeMap<&str, Backend> = slice
            .attach
            .iter()
            .filter_map(|a| a.backend().ok().map(|b| (a.port.as_str(), b)))
            .collect();
        // Detach first, while the ports are still in the model.
        for (name, backend) in &attached {
            if wanted.get(name.as_str()) != Some(backend) {
                if let Err(e) =
                    typed::<String>(self.switch.call(Request::Detach { port: name.clone() }))
                {
                    warn(&self.cfg.host, format!("detach {name}: {e}"));
                }
            }
        }
        self.swap_model(revision, &slice.model)?;
        self.port_errors.clear();
        for a in &slice.attach {
            let Ok(b) = a.backend() else { continue };
            let keep = attached.get(&a.port) == Some(&b);
            if keep {
                continue;
            }
            if let Err(e) = self.attach(a, &b) {
                warn(&self.cfg.host, format!("attach {}: {e}", a.port));
                self.port_errors.insert(a.port.clone(), e);
            }
        }
        self.keep(revision, fingerprint, slice, save);
        Ok(())
    }

    /// The switch's atomic swap to `model`; a refusal is logged and kept as the host's error.
    fn swap_model(&mut self, revision: u64, model: &model::Model) -> Result<(), String> {
        self.switch.carrying_out(revision);
        match typed::<api::Applied>(self.switch.call(Request::Apply {
            model: model.clone(),
        })) {
            Ok(a) => {
                log(
                    &self.cfg.host,
                    format!(
                        "revision {revision}: generation {}, +{} -{} rules",
                        a.generation, a.rules_added, a.rules_removed
                    ),
                );
                self.error = None;
                Ok(())
            }
            Err(e) => {
                let e = format!("revision {revision} refused by the switch: {e}");
                warn(&self.cfg.host, &e);
                self.error = Some(e.clone());
                Err(e)
            }
        }
    }

    /// Records an applied slice as the one in force, and saves it (if `save`).
    fn keep(&mut self, revision: u64, fingerprint: String, slice: HostSlice, save: bool) {
        let saved = SavedSlice {
            revision,
            fingerprint,
            slice,
        };
        if save {
            if let Err(e) = self.state.save(&saved) {
                // Applied but not durable: say so, and keep going (the controller still has it).
                let e = format!("revision {revision} applied but not saved: {e}");
                warn(&self.cfg.host, &e);
                self.error = Some(e);
            }
        }
        self.applied = Some(saved);
    }

    /// Applies a slice that differs from the one the switch runs only in port groups and
    /// security groups (a delta): no port comes, goes or changes its backend, so the switch is
    /// not asked for its ports, nothing is detached or attached, and the report that follows
    /// reuses the last port list. At 1,000 hosts the two port listings and their decoding were
    /// most of an agent's work per policy change.
    fn apply_policy(
        &mut self,
        revision: u64,
        fingerprint: String,
        slice: HostSlice,
    ) -> Result<(), String> {
        self.swap_model(revision, &slice.model)?;
        self.keep(revision, fingerprint, slice, true);
        Ok(())
    }

    /// The acknowledgement of a policy delta: the revision now running, without the ports
    /// (unchanged since the last full report). A full report if none went out yet, or if the
    /// controller predates acknowledgements (404).
    fn report_policy(&mut self) -> Result<(), ControllerError> {
        if !self.reported_ports {
            return self.report();
        }
        let a = HostAck {
            applied_revision: self.applied_revision(),
            fingerprint: self
                .applied
                .as_ref()
                .map(|a| a.fingerprint.clone())
                .unwrap_or_default(),
            error: self.error.clone(),
        };
        match self.client.put_ack(&self.cfg.host, &a) {
            Err(ControllerError::Refused {
                status: 404 | 409, ..
            }) => self.report(),
            r => r,
        }
    }

    fn attach(&mut self, a: &Attach, b: &Backend) -> Result<(), String> {
        if let Backend::Vhost(v) = b {
            if let Some(d) = v.socket.parent() {
                std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
            }
        }
        typed::<String>(self.switch.call(Request::Attach(a.clone()))).map(|_| ())
    }

    fn ports(&mut self) -> Result<Vec<PortReport>, String> {
        typed(self.switch.call(Request::ShowPorts))
    }

    fn attached(&mut self) -> Result<BTreeMap<String, Backend>, String> {
        Ok(self
            .ports()?
            .into_iter()
            .filter_map(|p| p.backend.map(|b| (p.name, b)))
            .collect())
    }

    /// What the host reports.
    pub fn status(&mut self) -> HostStatus {
        let ports = match self.ports() {
            Ok(ps) => ps
                .into_iter()
                .map(|p| PortStatus {
                    error: self.port_errors.get(&p.name).cloned(),
                    attached: p.state != PortState::Detached,
                    link: match p.state {
                        PortState::Up => "up",
                        PortState::Down => "down",
                        PortState::Detached => "detached",
                    }
                    .into(),
                    name: p.name,
                })
                .collect(),
            Err(_) => vec![],
        };
        HostStatus {
            applied_revision: self.applied_revision(),
            fingerprint: self
                .applied
                .as_ref()
                .map(|a| a.fingerprint.clone())
                .unwrap_or_default(),
            ports,
            error: self.error.clone(),
            agent: env!("CARGO_PKG_VERSION").into(),
        }
    }

    fn report(&mut self) -> Result<(), ControllerError> {
        let s = self.status();
        self.last_report = Some(Instant::now());
        self.client.put_status(&self.cfg.host, &s)?;
        self.reported_ports = true;
        Ok(())
    }

    fn report_if_due(&mut self) {
        if self
            .last_report
            .is_none_or(|t| t.elapsed() >= STATUS_INTERVAL)
        {
            if let Err(e) = self.report() {
                warn(&self.cfg.host, format!("status report: {e}"));
            }
        }
    }

    /// One watch connection, until it breaks.
    fn follow(&mut self) -> Result<(), ControllerError> {
        let fp = match &self.applied {
            Some(a) if !self.want_whole => a.fingerprint.clone(),
            _ => String::new(),
        };
        let stream = self
            .client
            .watch(&self.cfg.host, self.applied_revision(), &fp)?;
        log(
            &self.cfg.host,
            format!(
                "following {} from revision {}",
                self.client.url(),
                self.applied_revision()
            ),
        );
        for ev in stream {
            match ev? {
                WatchEvent::Slice {
                    revision,
                    fingerprint,
                    slice,
                } => {
                    // A refused slice is reported; the switch keeps its last state.
                    self.want_whole = false;
                    let _ = self.apply(revision, fingerprint, slice);
                    self.report()?;
                }
                WatchEvent::Delta {
                    revision,
                    base,
                    fingerprint,
                    delta,
                } => {
                    let next = match &self.applied {
                        Some(a) if a.fingerprint == base => {
                            let mut slice = a.slice.clone();
                            delta.apply(&mut slice).and_then(|()| {
                                if delta.fingerprint_after(&base) == fingerprint {
                                    Ok(slice)
                                } else {
                                    Err("the result's fingerprint differs".into())
                                }
                            })
                        }
                        _ => Err("it is for a slice this switch does not run".into()),
                    };
                    match next {
                        Ok(slice) => {
                            let _ = self.apply_policy(revision, fingerprint, slice);
                            self.report_policy()?;
                        }
                        Err(why) => {
                            log(
                                &self.cfg.host,
                                format!("delta for revision {revision} not applied: {why}; asking for the whole slice"),
                            );
                            self.want_whole = true;
                            return Err(ControllerError::Protocol(format!(
                                "delta for revision {revision}: {why}"
                            )));
                        }
                    }
                }
                WatchEvent::Heartbeat { .. } => self.report_if_due(),
            }
        }
        Err(ControllerError::Unreachable {
            url: self.client.url().into(),
            message: "the watch stream ended".into(),
        })
    }

    /// Follows the controller until `stop`, reconnecting with backoff; the switch keeps
    /// forwarding on its last state meanwhile.
    pub fn run(&mut self, stop: &AtomicBool) {
        let mut backoff = Duration::from_millis(200);
        let mut next = 0;
        while !stop.load(Ordering::Relaxed) {
            let started = Instant::now();
            let e = match self.follow() {
                Ok(()) => continue,
                Err(e) => e,
            };
            // The next replica, if there are several.
            next = (next + 1) % self.clients.len().max(1);
            if let Some(c) = self.clients.get(next) {
                self.client = c.clone();
            }
            if started.elapsed() > Duration::from_secs(10) {
                backoff = Duration::from_millis(200);
            }
            warn(
                &self.cfg.host,
                format!("{e}; keeping the last state, retrying in {backoff:?}"),
            );
            let until = Instant::now() + backoff;
            while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(50));
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

/// A `HostSwitch` for a closure, e.g. one that sends each request to evsd's control loop.
pub struct FnSwitch<F: FnMut(Request) -> Response>(pub F);

impl<F: FnMut(Request) -> Response> HostSwitch for FnSwitch<F> {
    fn call(&mut self, req: Request) -> Response {
        (self.0)(req)
    }
}

/// Builds a reply envelope (for simulated switches).
pub fn ok(r: &Reply) -> Response {
    Response::ok(r)
}
