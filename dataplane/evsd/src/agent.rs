//! The host agent inside `evsd`: a thread that follows the controller (crate `dvs-agent`) and
//! drives this switch with the same requests `evsd ctl` sends, through the control loop, so a
//! slice from the controller takes exactly the path of an operator's `apply`/`attach`.

use crate::audit::Source;
use crate::config::ControllerSection;
use crate::control::{self, Call};
use api::{Request, Response};
use crossbeam_channel::Sender;
use dvs_agent::{Agent, AgentConfig, HostSwitch};
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// Starts the agent thread; it first restores the saved slice, then follows the controller
/// until `stop`. The last applied slice is kept in `state_dir/agent.json`.
pub fn start(
    c: &ControllerSection,
    state_dir: &Path,
    calls: Sender<Call>,
    stop: Arc<AtomicBool>,
) -> Result<(), String> {
    let token = match &c.token_file {
        Some(f) => Some(
            std::fs::read_to_string(f)
                .map_err(|e| format!("controller.token_file {}: {e}", f.display()))?
                .trim()
                .to_owned(),
        ),
        None => None,
    };
    let cfg = AgentConfig {
        controller: c.url.clone(),
        host: c.host.clone(),
        token,
        ca_file: c.ca_file.clone(),
        state_dir: state_dir.to_owned(),
    };
    let switch = ControlLoop { calls, revision: 0 };
    let mut agent = Agent::new(cfg, switch).map_err(|e| format!("controller.ca_file: {e}"))?;
    std::thread::Builder::new()
        .name("evs-agent".into())
        .spawn(move || {
            if let Err(e) = agent.restore() {
                tracing::warn!("agent: {e}; waiting for the controller instead");
            }
            agent.run(&stop);
        })
        .map_err(|e| format!("cannot start the agent thread: {e}"))?;
    Ok(())
}

/// The agent's way into the control loop: `evsd ctl`'s requests, marked with the controller
/// revision they carry out (for the audit log).
struct ControlLoop {
    calls: Sender<Call>,
    revision: u64,
}

impl HostSwitch for ControlLoop {
    fn call(&mut self, req: Request) -> Response {
        let from = Source::Controller {
            revision: self.revision,
        };
        control::call_from(&self.calls, req, from)
    }

    fn carrying_out(&mut self, revision: u64) {
        self.revision = revision;
    }
}
