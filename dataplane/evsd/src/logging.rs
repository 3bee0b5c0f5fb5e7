//! evsd's log: `tracing` events to stderr (journald adds nothing but its own metadata), one line
//! each with an RFC 3339 UTC timestamp, the level and the target, or one JSON object per line
//! with `--log-format json`. The filter is `--log-level`, else `EVS_LOG`, else `info`, in
//! `tracing-subscriber`'s env-filter syntax (`info,evsd::watchdog=debug,dpdk=warn`).
//!
//! Targets operators filter on: `evsd` (the daemon's life), `audit` (one line per change of the
//! model or the ports, see `audit.rs`), `evsd::watchdog`, `dvs_agent` (the controller's host
//! agent), `dpdk` (DPDK's own log, routed here by `evs_dpdk::log`).

use clap::ValueEnum;
use tracing_subscriber::EnvFilter;

/// The environment variable with the log filter (when `--log-level` is not given).
pub const ENV: &str = "EVS_LOG";

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// `2026-12-02T18:15:00.123456Z  INFO evsd: forwarding`
    #[default]
    Text,
    /// One JSON object per line (`timestamp`, `level`, `target`, `fields.message`, ...).
    Json,
}

/// The filter in force: `level` (from `--log-level`), else `$EVS_LOG`, else `info`.
pub fn filter(level: Option<&str>) -> Result<EnvFilter, String> {
    let (spec, from) = match level {
        Some(l) => (l.to_owned(), "--log-level"),
        None => match std::env::var(ENV) {
            Ok(v) if !v.trim().is_empty() => (v, ENV),
            _ => ("info".to_owned(), "the default"),
        },
    };
    EnvFilter::builder()
        .parse(&spec)
        .map_err(|e| format!("{from} {spec:?}: {e} (e.g. `info,evsd::agent=debug`)"))
}

/// Installs the global subscriber; the first call wins (tests may call it more than once).
pub fn init(level: Option<&str>, format: LogFormat) -> Result<(), String> {
    let filter = filter(level)?;
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // journald and log files: no colour escapes.
        .with_ansi(false)
        .with_target(true);
    let r = match format {
        LogFormat::Text => b.try_init(),
        LogFormat::Json => b.json().flatten_event(true).try_init(),
    };
    // Already installed (a second `main_with` in one process): keep the first.
    let _ = r;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_filter_is_refused_naming_where_it_came_from() {
        let e = filter(Some("info,evsd=loud")).unwrap_err();
        assert!(e.starts_with("--log-level \"info,evsd=loud\""), "{e}");
        filter(Some("info,evsd::agent=debug,dpdk=warn")).unwrap();
    }
}
