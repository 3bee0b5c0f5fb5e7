//! Command line of `evsd`: run the daemon, check a config, or talk to a running daemon (`ctl`).

use crate::config::{Attach, Config, EthdevConfig};
use crate::control::{self, Request, Response};
use clap::{Parser, Subcommand};
use evs_vhost::{Role, VhostConfig};
use model::Model;
use serde_json::Value;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "evsd",
    version,
    about = "EVS userspace virtual switch (DPDK dataplane)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Run the switch with a TOML config.
    Run {
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Parse and validate a config, print the EAL arguments it implies, and exit.
    Check {
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Talk to a running evsd over its control socket.
    Ctl {
        #[arg(short, long, default_value = "/run/evs/evsd.sock")]
        socket: PathBuf,
        /// Print the raw JSON result instead of tables.
        #[arg(long)]
        json: bool,
        #[command(subcommand)]
        cmd: CtlCmd,
    },
}

#[derive(Subcommand, Debug)]
pub enum CtlCmd {
    /// show ports | threads | model | tables | mac | connections
    Show {
        #[arg(value_parser = ["ports", "threads", "model", "tables", "mac", "connections"])]
        what: String,
    },
    /// Replace the model with FILE (JSON or TOML with uplinks/port_groups/security_groups/ports).
    Apply { file: PathBuf },
    /// Give a model port a backend.
    Attach {
        port: String,
        /// vhost-user socket path.
        #[arg(long, conflicts_with = "ethdev")]
        vhost: Option<PathBuf>,
        #[arg(long, default_value = "server")]
        role: String,
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
    /// Stop the switch.
    Shutdown,
}

/// The whole `evsd` program, shared by the shipped binary and the test crate's copy of it.
pub fn main() {
    let cli = Cli::parse();
    if let Err(e) = main_with(cli) {
        eprintln!("evsd: error: {e}");
        std::process::exit(1);
    }
}

pub fn main_with(cli: Cli) -> Result<(), String> {
    match cli.cmd {
        Cmd::Run { config } => {
            let cfg = Config::load(&config).map_err(|e| e.to_string())?;
            crate::daemon::run(cfg)
        }
        Cmd::Check { config } => {
            let cfg = Config::load(&config).map_err(|e| e.to_string())?;
            println!("config OK: {} attach entries", cfg.attach.len());
            println!("EAL args: {}", cfg.eal.to_args().join(" "));
            Ok(())
        }
        Cmd::Ctl { socket, json, cmd } => ctl(&socket, json, cmd),
    }
}

fn load_model(file: &std::path::Path) -> Result<Model, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let is_toml = file.extension().map(|e| e == "toml").unwrap_or(false);
    let r = if is_toml {
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

fn ctl(socket: &std::path::Path, json: bool, cmd: CtlCmd) -> Result<(), String> {
    let (req, kind) = match cmd {
        CtlCmd::Show { what } => match what.as_str() {
            "ports" => (Request::ShowPorts, "ports"),
            "threads" => (Request::ShowThreads, "threads"),
            "tables" => (Request::ShowTables, "trace"),
            "mac" => (Request::ShowMac, "mac"),
            "connections" => (Request::ShowConnections { limit: 1000 }, "connections"),
            _ => (Request::ShowModel, "json"),
        },
        CtlCmd::Apply { file } => (
            Request::Apply {
                model: load_model(&file)?,
            },
            "msg",
        ),
        CtlCmd::Attach {
            port,
            vhost,
            role,
            ethdev,
        } => {
            let role = match role.as_str() {
                "server" => Role::Server,
                "client" => Role::Client,
                r => return Err(format!("--role: {r:?} is neither server nor client")),
            };
            (
                Request::Attach(Attach {
                    port,
                    vhost: vhost.map(|socket| VhostConfig { socket, role }),
                    ethdev: ethdev.map(|devargs| EthdevConfig { devargs }),
                }),
                "msg",
            )
        }
        CtlCmd::Detach { port } => (Request::Detach { port }, "msg"),
        CtlCmd::StatsReset => (Request::StatsReset, "msg"),
        CtlCmd::Trace { port, frame } => (Request::Trace { port, frame }, "trace"),
        CtlCmd::Metrics => (Request::Metrics, "text"),
        CtlCmd::Shutdown => (Request::Shutdown, "msg"),
    };
    let resp: Response = control::request(socket, &req)?;
    if !resp.ok {
        return Err(resp.error.unwrap_or_else(|| "request failed".into()));
    }
    let v = resp.result.unwrap_or(Value::Null);
    if json {
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(());
    }
    match kind {
        "ports" => print_ports(&v),
        "threads" => print_threads(&v),
        "mac" => print_mac(&v),
        "connections" => print_connections(&v),
        "trace" => println!("{}", v["text"].as_str().unwrap_or_default().trim_end()),
        "text" | "msg" => match v {
            Value::String(s) => println!("{}", s.trim_end()),
            v => println!("{v}"),
        },
        _ => println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default()),
    }
    Ok(())
}

fn s(v: &Value, k: &str) -> String {
    match &v[k] {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        x => x.to_string(),
    }
}

fn table(header: &[&str], rows: Vec<Vec<String>>) {
    let mut w: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.len());
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<width$}  ", width = w[i]));
            }
        }
        println!("{}", out.trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r);
    }
}

fn print_ports(v: &Value) {
    let rows = v
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|p| {
            let backend = match &p["backend"] {
                Value::Object(o) => {
                    if let Some(vh) = o.get("vhost") {
                        format!("vhost:{}({})", s(vh, "socket"), s(vh, "role"))
                    } else if let Some(e) = o.get("ethdev") {
                        format!("ethdev:{}", s(e, "devargs"))
                    } else {
                        "-".into()
                    }
                }
                _ => "-".into(),
            };
            let mut d: Vec<String> = vec![];
            for (field, prefix) in [("drops", ""), ("egress_drops", "egress:")] {
                if let Value::Object(o) = &p[field] {
                    d.extend(o.iter().map(|(k, n)| format!("{prefix}{k}={n}")));
                }
            }
            let drops = if d.is_empty() {
                "0".to_string()
            } else {
                d.join(",")
            };
            vec![
                s(p, "name"),
                s(p, "id"),
                s(p, "kind"),
                s(p, "state"),
                s(p, "rx_packets"),
                s(p, "rx_bytes"),
                s(p, "tx_packets"),
                s(p, "tx_bytes"),
                drops,
                backend,
            ]
        })
        .collect();
    table(
        &[
            "PORT", "ID", "KIND", "STATE", "RX_PKTS", "RX_BYTES", "TX_PKTS", "TX_BYTES", "DROPS",
            "BACKEND",
        ],
        rows,
    );
}

fn print_threads(v: &Value) {
    let rows = v
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|t| {
            let cpp = t["cycles_per_packet"]
                .as_f64()
                .map(|c| format!("{c:.0}"))
                .unwrap_or_else(|| "-".into());
            let busy = t["busy_pct"]
                .as_f64()
                .map(|c| format!("{c:.1}%"))
                .unwrap_or_else(|| "-".into());
            let ports = t["rx_ports"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str())
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default();
            vec![
                s(t, "thread"),
                s(t, "core"),
                s(t, "packets"),
                s(t, "busy_cycles"),
                busy,
                cpp,
                t["cache_hit_pct"]
                    .as_f64()
                    .map(|c| format!("{c:.1}%"))
                    .unwrap_or_else(|| "-".into()),
                ports,
            ]
        })
        .collect();
    table(
        &[
            "THREAD",
            "CORE",
            "PACKETS",
            "BUSY_CYCLES",
            "BUSY",
            "CYC/PKT",
            "CACHE_HIT",
            "RX_PORTS",
        ],
        rows,
    );
}

fn print_mac(v: &Value) {
    println!(
        "{:<6} {:<18} {:<16} {:>8}  KIND",
        "VLAN", "MAC", "PORT", "AGE_S"
    );
    for e in v.as_array().into_iter().flatten() {
        println!(
            "{:<6} {:<18} {:<16} {:>8}  {}",
            e["vlan"],
            e["mac"].as_str().unwrap_or(""),
            e["port"].as_str().unwrap_or(""),
            e["age_secs"],
            if e["static"].as_bool() == Some(true) {
                "static"
            } else {
                "learned"
            }
        );
    }
}

fn print_connections(v: &Value) {
    println!(
        "{:<12} {:<6} {:<24} {:<24} {:<12} {:>9}",
        "ZONE(PORT)", "PROTO", "ORIGINAL SOURCE", "ORIGINAL DESTINATION", "STATE", "EXPIRES_S"
    );
    for r in v.as_array().into_iter().flatten() {
        let c = &r["connection"];
        let end = |ip: &Value, port: &Value| format!("{}:{}", ip.as_str().unwrap_or(""), port);
        println!(
            "{:<12} {:<6} {:<24} {:<24} {:<12} {:>9}",
            r["port"].as_str().unwrap_or(""),
            c["proto"],
            end(&c["src"], &c["sport"]),
            end(&c["dst"], &c["dport"]),
            c["state"].as_str().unwrap_or(""),
            c["expires_in_secs"]
        );
    }
}
