//! The server side of the local control socket (the protocol and its client are the `api` crate):
//! one JSON request per line, one JSON response per line. Connection threads only parse and
//! forward; every request is executed by the daemon's control loop, which owns all DPDK control
//! calls.

use crate::audit::Source;
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
    /// Who asks (the audit line of a change names it).
    pub from: Source,
    /// With a `capture` request: the session its connection thread drains.
    pub capture: Option<std::sync::Arc<crate::capture::Session>>,
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
    let Ok(s_ctl) = s.try_clone() else { return };
    let mut w = std::io::BufWriter::new(w);
    // Read as bytes: a line that is not UTF-8 gets an error answer like any other bad request,
    // where `lines()` would end the connection without a word.
    for line in BufReader::new(s).split(b'\n') {
        let Ok(line) = line else { return };
        let resp = match std::str::from_utf8(&line) {
            Err(e) => Response::err(format!("bad request: not UTF-8 text: {e}")),
            Ok(l) if l.trim().is_empty() => continue,
            Ok(l) => match parse_request(l) {
                Err(e) => Response::err(e),
                // A stream to the end of the connection.
                Ok(Request::Capture(spec)) => return crate::capture::serve(spec, &calls, &s_ctl),
                Ok(req) => call(&calls, req),
            },
        };
        let mut out = serde_json::to_string(&resp).unwrap_or_else(|_| "{\"ok\":false}".into());
        out.push('\n');
        if w.write_all(out.as_bytes()).and_then(|_| w.flush()).is_err() {
            return;
        }
    }
}

/// Runs `req` from a control socket client on the control loop and waits for its answer.
pub fn call(calls: &Sender<Call>, req: Request) -> Response {
    send(calls, req, Source::Socket, None)
}

/// [`call`] on behalf of `from` (the host agent names the controller revision it carries out).
pub fn call_from(calls: &Sender<Call>, req: Request, from: Source) -> Response {
    send(calls, req, from, None)
}

/// [`call`] with the capture session of a `capture` request.
pub fn call_with(
    calls: &Sender<Call>,
    req: Request,
    capture: Option<std::sync::Arc<crate::capture::Session>>,
) -> Response {
    send(calls, req, Source::Socket, capture)
}

fn send(
    calls: &Sender<Call>,
    req: Request,
    from: Source,
    capture: Option<std::sync::Arc<crate::capture::Session>>,
) -> Response {
    let (tx, rx): (Sender<Response>, Receiver<Response>) = crossbeam_channel::bounded(1);
    let call = Call {
        req,
        reply: tx,
        from,
        capture,
    };
    if calls.send(call).is_err() {
        return Response::err("evsd is shutting down");
    }
    rx.recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| Response::err("evsd did not answer within 30 s"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found while writing the `control_request` fuzz target: a line that was not UTF-8 closed
    /// the connection with no answer.
    #[test]
    fn a_line_that_is_not_utf8_gets_an_error_and_the_connection_stays() {
        let (client, server) = UnixStream::pair().unwrap();
        let (calls, _rx) = crossbeam_channel::unbounded();
        let t = std::thread::spawn(move || connection(server, calls));
        let mut w = client.try_clone().unwrap();
        w.write_all(b"{\"cmd\": \"sh\xffow\"}\n{\"cmd\": \"explode\"}\n")
            .unwrap();
        let mut r = BufReader::new(client);
        for want in ["not UTF-8", "explode"] {
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            let resp: Response = serde_json::from_str(&line).unwrap();
            assert!(!resp.ok, "{line}");
            assert!(resp.error.as_deref().unwrap_or("").contains(want), "{line}");
        }
        w.shutdown(std::net::Shutdown::Both).unwrap();
        t.join().unwrap();
    }
}
