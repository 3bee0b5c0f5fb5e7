//! The local control socket: a Unix stream socket carrying one JSON request per line and one JSON
//! response per line. Connection threads only parse and forward; every request is executed by the
//! daemon's control loop, which owns all DPDK control calls.

use crate::config::Attach;
use crossbeam_channel::{Receiver, Sender};
use model::Model;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    ShowPorts,
    ShowThreads,
    ShowModel,
    /// Every flow table, rule by rule (text).
    ShowTables,
    /// The MAC table: VLAN, MAC, port, age, static or learned.
    ShowMac,
    /// Tracked connections (at most `limit`).
    ShowConnections {
        #[serde(default = "default_conn_limit")]
        limit: usize,
    },
    /// Replace the model (validated first; nothing changes on error).
    Apply {
        model: Model,
    },
    Attach(Attach),
    Detach {
        port: String,
    },
    StatsReset,
    /// Explain what the switch does with a frame (hex) arriving on `port`, without changing state.
    Trace {
        port: String,
        frame: String,
    },
    Shutdown,
    /// Prometheus text exposition (what the HTTP endpoint serves).
    Metrics,
}

fn default_conn_limit() -> usize {
    1000
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Response {
    pub fn ok(v: impl Serialize) -> Response {
        Response {
            ok: true,
            result: Some(serde_json::to_value(v).unwrap_or(Value::Null)),
            error: None,
        }
    }
    pub fn err(e: impl ToString) -> Response {
        Response {
            ok: false,
            result: None,
            error: Some(e.to_string()),
        }
    }
}

/// Decodes a hex string (spaces, ':' and '-' allowed between bytes).
pub fn parse_hex(s: &str) -> Result<Vec<u8>, String> {
    let digits: Vec<u8> = s
        .bytes()
        .filter(|b| !matches!(b, b' ' | b':' | b'-' | b'\n' | b'\t'))
        .collect();
    if !digits.len().is_multiple_of(2) {
        return Err("odd number of hex digits".into());
    }
    digits
        .chunks(2)
        .map(|c| {
            std::str::from_utf8(c)
                .ok()
                .and_then(|t| u8::from_str_radix(t, 16).ok())
                .ok_or_else(|| format!("{:?} is not a hex byte", String::from_utf8_lossy(c)))
        })
        .collect()
}

/// A request on its way to the control loop, with where to send the answer.
pub struct Call {
    pub req: Request,
    pub reply: Sender<Response>,
}

/// Parses one request line; errors name the JSON path of the mistake (`model.ports[0].mac`).
pub fn parse_request(line: &str) -> Result<Request, String> {
    let v: Value = serde_json::from_str(line).map_err(|e| format!("bad request: {e}"))?;
    // An internally tagged enum buffers its content and loses the path inside it: deserialize the
    // one large payload (a model) on its own so its errors point at the field.
    if v["cmd"] == "apply" {
        if let Some(m) = v.get("model") {
            let model: Model = serde_path_to_error::deserialize(m).map_err(|e| {
                let path = e.path().to_string();
                format!("bad request at `model.{path}`: {}", e.into_inner())
            })?;
            return Ok(Request::Apply { model });
        }
    }
    serde_json::from_value(v).map_err(|e| format!("bad request: {e}"))
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

/// Client side, for `evsd ctl` and tests: one request, one response.
pub fn request(socket: &Path, req: &Request) -> Result<Response, String> {
    let s = UnixStream::connect(socket)
        .map_err(|e| format!("cannot connect to {}: {e}", socket.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(35))).ok();
    let mut w = s.try_clone().map_err(|e| e.to_string())?;
    let mut line = serde_json::to_string(req).map_err(|e| e.to_string())?;
    line.push('\n');
    w.write_all(line.as_bytes()).map_err(|e| e.to_string())?;
    let mut r = BufReader::new(s);
    let mut resp = String::new();
    r.read_line(&mut resp).map_err(|e| e.to_string())?;
    if resp.is_empty() {
        return Err("evsd closed the connection without answering".into());
    }
    serde_json::from_str(&resp).map_err(|e| format!("bad response {resp:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_errors_have_paths() {
        let r = parse_request(r#"{"cmd":"show_ports"}"#).unwrap();
        assert!(matches!(r, Request::ShowPorts));
        let r = parse_request(
            r#"{"cmd":"attach","port":"vm1","vhost":{"socket":"/tmp/a.sock","role":"client"}}"#,
        )
        .unwrap();
        let Request::Attach(a) = r else { panic!() };
        assert!(a.backend().is_ok());
        let e = parse_request(
            r#"{"cmd":"apply","model":{"ports":[{"name":"a","mac":"zz","port_group":"x"}]}}"#,
        )
        .unwrap_err();
        assert!(e.contains("model.ports[0].mac"), "{e}");
        assert_eq!(parse_hex("ff:00 1a").unwrap(), vec![0xff, 0, 0x1a]);
        assert!(parse_hex("f").is_err());
        let e = parse_request(r#"{"cmd":"explode"}"#).unwrap_err();
        assert!(e.contains("explode"), "{e}");
    }
}
