//! The controller's log: `tracing` events to stderr, one line each with an RFC 3339 UTC
//! timestamp, the level and the target (`dvs-controller`, or `audit` for every object a
//! transaction writes or deletes), or one JSON object per line with `--log-format json`. The
//! filter is `--log-level`, else `EVS_LOG` (the variable evsd reads too), else `info`.

use clap::ValueEnum;
use tracing_subscriber::EnvFilter;

pub const ENV: &str = "EVS_LOG";

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

fn filter(level: Option<&str>) -> Result<EnvFilter, String> {
    let (spec, from) = match level {
        Some(l) => (l.to_owned(), "--log-level"),
        None => match std::env::var(ENV) {
            Ok(v) if !v.trim().is_empty() => (v, ENV),
            _ => ("info".to_owned(), "the default"),
        },
    };
    EnvFilter::builder()
        .parse(&spec)
        .map_err(|e| format!("{from} {spec:?}: {e} (e.g. `info,audit=warn`)"))
}

/// Installs the global subscriber (once; a second call keeps the first).
pub fn init(level: Option<&str>, format: LogFormat) -> Result<(), String> {
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter(level)?)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(true);
    let _ = match format {
        LogFormat::Text => b.try_init(),
        LogFormat::Json => b.json().flatten_event(true).try_init(),
    };
    Ok(())
}
