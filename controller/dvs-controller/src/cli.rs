//! The `dvs-controller` command line: flags → store, auth, listener → [`crate::serve`].

use crate::{Auth, State};
use clap::Parser;
use dvs_store::{EtcdOptions, StoreConfig};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "The DVS controller: desired state, validation, per-host slices"
)]
pub struct Args {
    /// Address to serve the API on.
    #[arg(long, default_value = "127.0.0.1:9660")]
    listen: String,
    /// The embedded store's file (the default backend).
    #[arg(
        long,
        default_value = "/var/lib/dvs/controller.redb",
        conflicts_with = "etcd"
    )]
    db: PathBuf,
    /// Use an etcd cluster instead: its client URLs, comma-separated.
    #[arg(long, value_delimiter = ',')]
    etcd: Vec<String>,
    /// A file of operator tokens, one per line. Without it the operator API is open.
    #[arg(long)]
    operator_token_file: Option<PathBuf>,
    /// Serve HTTPS with this PEM certificate chain (with --tls-key).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Log filter, e.g. `info` or `info,audit=warn` (default: $EVS_LOG, else `info`).
    #[arg(long, value_name = "FILTER")]
    log_level: Option<String>,
    /// Log lines as text (timestamp, level, target, message) or one JSON object each.
    #[arg(long, value_enum, default_value_t = crate::logging::LogFormat::Text)]
    log_format: crate::logging::LogFormat,
}

/// The daemon's `main`: parses the command line, runs until SIGTERM/SIGINT.
pub fn main() {
    let args = Args::parse();
    if let Err(e) = crate::logging::init(args.log_level.as_deref(), args.log_format) {
        eprintln!("dvs-controller: {e}");
        std::process::exit(1);
    }
    if let Err(e) = run(args) {
        eprintln!("dvs-controller: {e}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<(), String> {
    let mut auth = Auth::default();
    if let Some(f) = &args.operator_token_file {
        let text = std::fs::read_to_string(f)
            .map_err(|e| format!("--operator-token-file {}: {e}", f.display()))?;
        auth.operator_token_hashes = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(crate::txn::sha256_hex)
            .collect();
        if auth.operator_token_hashes.is_empty() {
            return Err(format!(
                "--operator-token-file {}: no token in it",
                f.display()
            ));
        }
    } else {
        tracing::warn!(target: "dvs-controller", "WARNING: no --operator-token-file: anyone who can reach {} may change the DVS", args.listen);
    }
    let config = if args.etcd.is_empty() {
        if let Some(d) = args.db.parent() {
            std::fs::create_dir_all(d).map_err(|e| format!("--db {}: {e}", args.db.display()))?;
        }
        StoreConfig::embedded(&args.db)
    } else {
        StoreConfig::Etcd {
            options: EtcdOptions {
                endpoints: args.etcd.clone(),
                ..EtcdOptions::default()
            },
        }
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(c), Some(k)) => Some(crate::tls::acceptor(c, k)?),
        _ => None,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let store = dvs_store::open(&config)
            .await
            .map_err(|e| format!("store: {e}"))?;
        let state = State::new(store.clone(), auth);
        let listener = tokio::net::TcpListener::bind(&args.listen)
            .await
            .map_err(|e| format!("--listen {}: {e}", args.listen))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        tracing::info!(
            target: "dvs-controller",
            "serving http://{addr} on the {} store",
            store.backend()
        );
        let (stopping_tx, mut stopping) = tokio::sync::watch::channel(false);
        let shutdown = async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            tracing::info!(target: "dvs-controller", "stopping");
            let _ = stopping_tx.send(true);
        };
        // A graceful shutdown waits for every response in flight, and a host's watch stream
        // never ends by itself: while an agent watches, the server would not stop (and would
        // keep heartbeating agents that can no longer report). Requests get a grace period;
        // then the process exits, the agents' streams break and they reconnect elsewhere.
        let grace = async move {
            if stopping.wait_for(|s| *s).await.is_err() {
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        };
        tokio::select! {
            r = crate::serve(listener, tls, state, shutdown) => r.map_err(|e| e.to_string()),
            _ = grace => {
                tracing::info!(
                    target: "dvs-controller",
                    "closing the connections still open after {SHUTDOWN_GRACE:?} \
                     (host watch streams)"
                );
                Ok(())
            }
        }
    })
}

/// How long requests in flight (a `--wait=hosts`, a watch stream) may go on after SIGTERM.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(2);
