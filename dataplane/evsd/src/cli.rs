//! Command line of `evsd`: run the daemon, check a config, or talk to a running daemon (`ctl`).

use crate::config::{Config, Overrides};
use crate::logging::{self, LogFormat};
use api::{text, Client};
use clap::{Parser, Subcommand, ValueEnum};
use model::{Attach, EthdevConfig};
use model::{Model, Role, VhostConfig};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "evsd",
    version,
    about = "EVS userspace virtual switch (DPDK dataplane)"
)]
pub struct Cli {
    /// Log filter, e.g. `info` or `info,evsd::agent=debug,dpdk=warn` (default: $EVS_LOG, else
    /// `info`).
    #[arg(long, global = true, value_name = "FILTER")]
    pub log_level: Option<String>,
    /// Log lines as text (timestamp, level, target, message) or one JSON object each.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Run the switch with a TOML config (and the state saved at run time, if any).
    Run {
        #[command(flatten)]
        boot: BootArgs,
    },
    /// Validate a config and the saved state exactly as `run` would (same arguments), print the
    /// EAL arguments, and exit.
    Check {
        #[command(flatten)]
        boot: BootArgs,
    },
    /// Talk to a running evsd over its control socket.
    Ctl {
        #[arg(short, long, global = true, default_value = api::DEFAULT_SOCKET)]
        socket: PathBuf,
        /// Print the answer as JSON (the protocol's typed value) instead of a table; accepted
        /// before or after the subcommand.
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        cmd: CtlCmd,
    },
}

/// What `run` and `check` both take, so that `check` judges what `run` would start with.
#[derive(clap::Args, Debug, Clone)]
pub struct BootArgs {
    #[arg(short, long)]
    pub config: PathBuf,
    /// Follow this DVS controller (overrides the config's `[controller] url`).
    #[arg(long, requires = "host")]
    pub controller: Option<String>,
    /// This host's name in the DVS.
    #[arg(long, requires = "controller")]
    pub host: Option<String>,
    /// The host's token file (`dvsctl host add NAME --token-file F`).
    #[arg(long, requires = "controller")]
    pub token_file: Option<PathBuf>,
    /// CA certificates (PEM) for an https:// controller.
    #[arg(long, requires = "controller")]
    pub controller_ca: Option<PathBuf>,
    /// Start from the config file's model and attachments even if changes made at run time
    /// were saved in dataplane.state_dir (the state file is moved aside, not deleted).
    #[arg(long)]
    pub discard_state: bool,
    /// Accept a model with no ports and no uplinks (also for SIGHUP reloads; the config key
    /// is `[dataplane] allow_empty_model = true`).
    #[arg(long)]
    pub allow_empty: bool,
}

impl BootArgs {
    pub fn overrides(&self) -> Overrides {
        Overrides {
            controller: match (&self.controller, &self.host) {
                (Some(url), Some(host)) => Some(crate::config::ControllerSection {
                    url: url.clone(),
                    host: host.clone(),
                    token_file: self.token_file.clone(),
                    ca_file: self.controller_ca.clone(),
                }),
                _ => None,
            },
            allow_empty: self.allow_empty,
        }
    }

    /// The config `run` starts with, checked as `run` checks it.
    pub fn load(&self) -> Result<Config, String> {
        Config::load_boot(&self.config, &self.overrides()).map_err(|e| e.to_string())
    }
}

#[derive(Subcommand, Debug)]
pub enum CtlCmd {
    /// show ports | threads | model | tables | mac | connections
    Show { what: ShowWhat },
    /// Replace the model with FILE: JSON or TOML with uplinks/port_groups/security_groups/ports,
    /// or evsd's own config file (its model is applied; the other sections are ignored).
    Apply {
        file: PathBuf,
        /// Accept a model with no ports and no uplinks.
        #[arg(long)]
        allow_empty: bool,
    },
    /// Give a model port a backend.
    Attach {
        port: String,
        /// vhost-user socket path.
        #[arg(long, conflicts_with = "ethdev")]
        vhost: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = RoleArg::Server)]
        role: RoleArg,
        /// DPDK devargs (PCI address or vdev string).
        #[arg(long)]
        ethdev: Option<String>,
    },
    /// Remove a port's backend.
    Detach { port: String },
    /// Explain the fate of a frame (hex bytes) arriving on PORT, step by step.
    Trace { port: String, frame: String },
    /// Zero the counters shown by `show`.
    StatsReset,
    /// Print the Prometheus exposition.
    Metrics,
    /// Capture PORT's frames as a pcap file (like tcpdump -w; `-w -` writes to stdout, e.g.
    /// `| tcpdump -r -`). Ends on Ctrl-C, a closed pipe or --count; prints the counts to stderr.
    Capture {
        port: String,
        /// Frames received from the port (what the guest sent, before any policy).
        #[arg(long = "in", conflicts_with_all = ["tx", "both"])]
        rx: bool,
        /// Frames transmitted to the port (what the guest receives, after VLAN edits).
        #[arg(long = "out", conflicts_with = "both")]
        tx: bool,
        /// Both directions (the default).
        #[arg(long)]
        both: bool,
        /// Keep only matching frames, e.g. "icmp and host 10.0.0.1" (see the README's
        /// "Packet capture" for the syntax).
        #[arg(long, default_value = "")]
        filter: String,
        /// Stop after N frames.
        #[arg(short = 'c', long)]
        count: Option<u64>,
        /// Bytes kept of each frame (0: the default).
        #[arg(long, default_value_t = api::capture::DEFAULT_SNAPLEN)]
        snaplen: u32,
        /// Nanosecond timestamps (microseconds otherwise).
        #[arg(long)]
        nano: bool,
        /// The pcap file to write, or `-` for stdout.
        #[arg(short = 'w', long = "write")]
        write: PathBuf,
    },
    /// Stop the switch.
    Shutdown,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShowWhat {
    /// Per-port state, counters, drops by reason.
    Ports,
    /// Per forwarding thread: busy cycles, cycles per packet, cache hit rate, ports.
    Threads,
    /// The port groups, security groups and ports in force (TOML; JSON with --json).
    Model,
    /// Every flow table, rule by rule, with why each rule exists.
    Tables,
    /// The MAC table.
    Mac,
    /// Tracked connections per port zone.
    Connections,
}

/// Which side creates a vhost-user socket.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoleArg {
    /// evsd creates the socket; the VMM connects.
    Server,
    /// The VMM owns the socket; evsd connects and reconnects.
    Client,
}

impl From<RoleArg> for Role {
    fn from(r: RoleArg) -> Role {
        match r {
            RoleArg::Server => Role::Server,
            RoleArg::Client => Role::Client,
        }
    }
}

/// The whole `evsd` program, shared by the shipped binary and the test crate's copy of it.
pub fn main() {
    let cli = Cli::parse();
    if let Err(e) = main_with(cli) {
        // Plain stderr, not the log: also for `ctl` and for a bad `--log-level` itself, and
        // the one line a failed start ends with.
        eprintln!("evsd: error: {e}");
        std::process::exit(1);
    }
}

pub fn main_with(cli: Cli) -> Result<(), String> {
    logging::init(cli.log_level.as_deref(), cli.log_format)?;
    match cli.cmd {
        Cmd::Run { boot } => {
            let cfg = boot.load()?;
            crate::daemon::run(cfg, boot)
        }
        Cmd::Check { boot } => {
            let cfg = boot.load()?;
            let mut o = api::stdout::Stdout::new();
            o.line(&format!("config OK: {} attach entries", cfg.attach.len()));
            o.line(&format!("EAL args: {}", cfg.eal.to_args().join(" ")));
            if !boot.discard_state {
                o.line(&crate::state::inspect(&cfg)?);
            }
            Ok(())
        }
        Cmd::Ctl { socket, json, cmd } => ctl(&socket, json, cmd),
    }
}

/// A model file for `ctl apply` (and the model part of a config file, so that the boot config
/// and the run-time model can be one file).
pub fn load_model(file: &std::path::Path) -> Result<Model, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let is_toml = file.extension().map(|e| e == "toml").unwrap_or(false);
    let r = if is_toml {
        if is_config(&text) {
            let c = Config::parse(&text).map_err(|e| format!("{}: {e}", file.display()))?;
            return Ok(c.model());
        }
        serde_path_to_error::deserialize(toml::Deserializer::new(&text)).map_err(|e| {
            let path = e.path().to_string();
            format!("at `{path}`: {}", e.into_inner())
        })
    } else {
        let mut de = serde_json::Deserializer::from_str(&text);
        serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            format!("at `{path}`: {}", e.into_inner())
        })
    };
    r.map_err(|e| format!("{}: {e}", file.display()))
}

/// Whether TOML `text` is an evsd config (it has a section only a config has) rather than a
/// bare model.
fn is_config(text: &str) -> bool {
    const CONFIG_ONLY: [&str; 5] = ["eal", "switch", "dataplane", "attach", "controller"];
    text.parse::<toml::Table>()
        .map(|t| CONFIG_ONLY.iter().any(|k| t.contains_key(*k)))
        .unwrap_or(false)
}

/// `evsd ctl`: one typed request through [`api::Client`], its answer rendered as a table (or, with
/// `--json`, the same typed value serialized).
fn ctl(socket: &std::path::Path, json: bool, cmd: CtlCmd) -> Result<(), String> {
    let c = Client::new(socket);
    let e = |e: api::ApiError| e.to_string();
    // Prints the typed answer as JSON, or as the text `render` makes of it.
    fn out<T: serde::Serialize>(json: bool, v: &T, render: impl Fn(&T) -> String) {
        let text = if json {
            serde_json::to_string_pretty(v).unwrap_or_default()
        } else {
            render(v)
        };
        api::stdout::Stdout::new().line(text.trim_end());
    }
    match cmd {
        CtlCmd::Show { what } => match what {
            ShowWhat::Ports => out(json, &c.show_ports().map_err(e)?, |v| text::ports(v)),
            ShowWhat::Threads => out(json, &c.show_threads().map_err(e)?, |v| text::threads(v)),
            ShowWhat::Model => out(json, &c.show_model().map_err(e)?, |v| {
                toml::to_string(v)
                    .unwrap_or_else(|_| serde_json::to_string_pretty(v).unwrap_or_default())
            }),
            ShowWhat::Tables => out(json, &c.show_tables().map_err(e)?, text::tables),
            ShowWhat::Mac => out(json, &c.show_mac().map_err(e)?, |v| text::mac(v)),
            ShowWhat::Connections => out(
                json,
                &c.show_connections(api::DEFAULT_CONNECTION_LIMIT)
                    .map_err(e)?,
                |v| text::connections(v),
            ),
        },
        CtlCmd::Apply { file, allow_empty } => {
            let model = load_model(&file)?;
            if !allow_empty {
                crate::config::refuse_empty_model(&model, "`evsd ctl apply --allow-empty`")
                    .map_err(|m| format!("{}: {m}", file.display()))?;
            }
            let applied = c.apply(model).map_err(e)?;
            out(json, &applied, |a| a.to_string())
        }
        CtlCmd::Attach {
            port,
            vhost,
            role,
            ethdev,
        } => {
            let a = Attach {
                port,
                vhost: vhost.map(|socket| VhostConfig {
                    socket,
                    role: role.into(),
                }),
                ethdev: ethdev.map(|devargs| EthdevConfig { devargs }),
            };
            out(json, &c.attach(a).map_err(e)?, String::clone)
        }
        CtlCmd::Detach { port } => out(json, &c.detach(&port).map_err(e)?, String::clone),
        CtlCmd::StatsReset => out(json, &c.stats_reset().map_err(e)?, String::clone),
        CtlCmd::Trace { port, frame } => {
            api::parse_hex(&frame).map_err(|e| format!("FRAME: {e}"))?;
            out(json, &c.trace(&port, &frame).map_err(e)?, |t| t.to_string())
        }
        CtlCmd::Metrics => out(json, &c.metrics().map_err(e)?, String::clone),
        CtlCmd::Capture {
            port,
            rx,
            tx,
            both: _,
            filter,
            count,
            snaplen,
            nano,
            write,
        } => {
            let direction = match (rx, tx) {
                (true, _) => api::capture::Direction::In,
                (_, true) => api::capture::Direction::Out,
                _ => api::capture::Direction::Both,
            };
            let spec = api::capture::CaptureSpec {
                port,
                direction,
                filter,
                count,
                snaplen,
                nanosecond: nano,
            };
            capture(&c, spec, &write)?
        }
        CtlCmd::Shutdown => out(json, &c.shutdown().map_err(e)?, String::clone),
    }
    Ok(())
}

/// `evsd ctl capture`: the pcap stream copied to `write` as it comes; Ctrl-C or SIGTERM asks
/// evsd to stop (it sends what it still has, then the counts); a closed stdout ends quietly.
fn capture(
    c: &Client,
    spec: api::capture::CaptureSpec,
    write: &std::path::Path,
) -> Result<(), String> {
    use std::io::Write;
    use std::sync::atomic::{AtomicBool, Ordering};
    let mut out: Box<dyn Write> = if write == std::path::Path::new("-") {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(std::fs::File::create(write).map_err(|e| format!("{}: {e}", write.display()))?)
    };
    let (port, dir) = (spec.port.clone(), spec.direction);
    let mut stream = c.capture(spec).map_err(|e| e.to_string())?;
    let stopper = stream
        .stopper()
        .map_err(|e| format!("capture: control socket: {e}"))?;
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone())
            .map_err(|e| format!("cannot install signal handler: {e}"))?;
    }
    // The main thread blocks reading the stream: another one turns the signal into a stop.
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        stopper.stop();
    });
    let s = &stream.started;
    let filter = if s.filter.is_empty() {
        "none"
    } else {
        s.filter.as_str()
    };
    eprintln!(
        "evsd: capturing on {port} ({dir:?}), filter {filter}, snaplen {} bytes",
        s.snaplen
    );
    loop {
        match stream.next_chunk().map_err(|e| e.to_string())? {
            Some(api::capture::Chunk::Data(d)) => {
                // A reader that went away (`| head`, tcpdump -c): the capture just ends.
                if out.write_all(&d).and_then(|_| out.flush()).is_err() {
                    return Ok(());
                }
            }
            Some(api::capture::Chunk::End(end)) => {
                eprintln!(
                    "{} packets captured\n{} packets dropped by evsd (capture ring full)\nended: {}",
                    end.captured, end.dropped, end.reason
                );
                return Ok(());
            }
            None => return Err("evsd ended the capture without a summary".into()),
        }
    }
}
