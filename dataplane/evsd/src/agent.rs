//! The host agent inside `evsd`: a thread that follows the controller (crate `dvs-agent`) and
//! drives this switch with the same requests `evsd ctl` sends, through the control loop, so a
//! slice from the controller takes exactly the path of an operator's `apply`/`attach`.

use crate::config::ControllerSection;
use crate::control::{self, Call};
use crossbeam_channel::Sender;
use dvs_agent::{Agent, AgentConfig, FnSwitch};
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
    let switch = FnSwitch(move |req| control::call(&calls, req));
    let mut agent = Agent::new(cfg, switch).map_err(|e| format!("controller.ca_file: {e}"))?;
    std::thread::Builder::new()
        .name("evs-agent".into())
        .spawn(move || {
            if let Err(e) = agent.restore() {
                eprintln!("evsd: agent: {e}; waiting for the controller instead");
            }
            agent.run(&stop);
        })
        .map_err(|e| format!("cannot start the agent thread: {e}"))?;
    Ok(())
}
