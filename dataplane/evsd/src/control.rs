//! The server side of the local control socket (the protocol and its client are the `api` crate):
//! one JSON request per line, one JSON response per line. Connection threads only parse and
//! forward; every request is executed by the daemon's control loop, which owns all DPDK control
//! calls.

use api::{parse_request, Request, Response};
use crossbeam_channel::{Receiver, Sender};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A request on its way to the control loop, with where to send the answer.
pub struct Call {
    pub req: Request,
    pub reply: Sender<Response>,
}

/// Binds the control socket (replacing a stale one) and serves it on background threads.
pub fn serve(path: &Path, calls: Sender<Call>) -> std::io::Result<PathBuf> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)?;
    }
    if let Ok(md) = std::fs::symlink_metadata(path) {
        if !md.file_type().is_socket() {
            return Err(std::io::Error::other(format!(
                "{path:?} exists and is not a socket"
            )));
        }
        if UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::other(format!(
                "{path:?} is served by another running evsd"
            )));
        }
        std::fs::remove_file(path)?;
    }
    let l = UnixListener::bind(path)?;
    std::thread::Builder::new()
        .name("evs-ctl".into())
        .spawn(move || {
            for s in l.incoming().flatten() {
                let calls = calls.clone();
                let _ = std::thread::Builder::new()
                    .name("evs-ctl-conn".into())
                    .spawn(move || connection(s, calls));
            }
        })?;
    Ok(path.to_owned())
}

fn connection(s: UnixStream, calls: Sender<Call>) {
    let Ok(w) = s.try_clone() else { return };
    let mut w = std::io::BufWriter::new(w);
    for line in BufReader::new(s).lines() {
        let Ok(line) = line else { return };
        if line.trim().is_empty() {
            continue;
        }
        let resp = match parse_request(&line) {
            Err(e) => Response::err(e),
            Ok(req) => call(&calls, req),
        };
        let mut out = serde_json::to_string(&resp).unwrap_or_else(|_| "{\"ok\":false}".into());
        out.push('\n');
        if w.write_all(out.as_bytes()).and_then(|_| w.flush()).is_err() {
            return;
        }
    }
}

/// Runs `req` on the control loop and waits for its answer.
pub fn call(calls: &Sender<Call>, req: Request) -> Response {
    let (tx, rx): (Sender<Response>, Receiver<Response>) = crossbeam_channel::bounded(1);
    if calls.send(Call { req, reply: tx }).is_err() {
        return Response::err("evsd is shutting down");
    }
    rx.recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| Response::err("evsd did not answer within 30 s"))
}
