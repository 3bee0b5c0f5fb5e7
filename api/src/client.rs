//! A client of `evsd`'s control socket: one typed method per request.

use crate::capture::{read_chunk, CaptureSpec, CaptureStarted, Chunk};
use crate::reply::*;
use crate::request::Request;
use model::{Attach, Model};
use serde::de::DeserializeOwned;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a client waits for an answer (evsd itself gives up on a request after 30 s).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(35);

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("cannot connect to {socket}: {source} (is evsd running? is this its control socket?)")]
    Connect {
        socket: PathBuf,
        source: std::io::Error,
    },
    #[error("control socket {socket}: {source}")]
    Io {
        socket: PathBuf,
        source: std::io::Error,
    },
    #[error("evsd closed the connection without answering")]
    NoAnswer,
    /// The answer is not what this request returns (a client and daemon of different versions).
    #[error("unexpected answer from evsd: {0}")]
    Protocol(String),
    /// evsd refused the request; the message says what and where.
    #[error("{0}")]
    Refused(String),
}

/// `evsd`'s control socket. Each call opens its own connection, so a client can be shared freely.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
}

impl Client {
    pub fn new(socket: impl Into<PathBuf>) -> Client {
        Client {
            socket: socket.into(),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sends `req` and returns the raw envelope.
    pub fn request(&self, req: &Request) -> Result<Response, ApiError> {
        let io = |source| ApiError::Io {
            socket: self.socket.clone(),
            source,
        };
        let s = UnixStream::connect(&self.socket).map_err(|source| ApiError::Connect {
            socket: self.socket.clone(),
            source,
        })?;
        s.set_read_timeout(Some(ANSWER_TIMEOUT)).map_err(io)?;
        let mut w = s.try_clone().map_err(io)?;
        let mut line = serde_json::to_string(req).map_err(|e| ApiError::Protocol(e.to_string()))?;
        line.push('\n');
        w.write_all(line.as_bytes()).map_err(io)?;
        let mut answer = String::new();
        BufReader::new(s).read_line(&mut answer).map_err(io)?;
        if answer.is_empty() {
            return Err(ApiError::NoAnswer);
        }
        serde_json::from_str(&answer)
            .map_err(|e| ApiError::Protocol(format!("{e}: {:?}", answer.trim_end())))
    }

    /// Sends `req` and reads its result as `T`.
    pub fn call<T: DeserializeOwned>(&self, req: &Request) -> Result<T, ApiError> {
        let r = self.request(req)?;
        if !r.ok {
            return Err(ApiError::Refused(
                r.error.unwrap_or_else(|| "request failed".into()),
            ));
        }
        let v = r.result.unwrap_or(serde_json::Value::Null);
        serde_json::from_value(v).map_err(|e| ApiError::Protocol(e.to_string()))
    }

    pub fn show_ports(&self) -> Result<Vec<PortReport>, ApiError> {
        self.call(&Request::ShowPorts)
    }
    pub fn show_threads(&self) -> Result<Vec<ThreadReport>, ApiError> {
        self.call(&Request::ShowThreads)
    }
    pub fn show_model(&self) -> Result<Model, ApiError> {
        self.call(&Request::ShowModel)
    }
    pub fn show_tables(&self) -> Result<TableDump, ApiError> {
        self.call(&Request::ShowTables)
    }
    pub fn show_mac(&self) -> Result<Vec<MacEntry>, ApiError> {
        self.call(&Request::ShowMac)
    }
    pub fn show_connections(&self, limit: usize) -> Result<Vec<ConnectionEntry>, ApiError> {
        self.call(&Request::ShowConnections { limit })
    }
    pub fn apply(&self, model: Model) -> Result<Applied, ApiError> {
        self.call(&Request::Apply { model })
    }
    pub fn attach(&self, a: Attach) -> Result<String, ApiError> {
        self.call(&Request::Attach(a))
    }
    pub fn detach(&self, port: &str) -> Result<String, ApiError> {
        self.call(&Request::Detach { port: port.into() })
    }
    pub fn stats_reset(&self) -> Result<String, ApiError> {
        self.call(&Request::StatsReset)
    }
    /// `frame`: the frame's bytes in hex ([`crate::parse_hex`] syntax).
    pub fn trace(&self, port: &str, frame: &str) -> Result<TraceReport, ApiError> {
        self.call(&Request::Trace {
            port: port.into(),
            frame: frame.into(),
        })
    }
    pub fn metrics(&self) -> Result<String, ApiError> {
        self.call(&Request::Metrics)
    }
    pub fn shutdown(&self) -> Result<String, ApiError> {
        self.call(&Request::Shutdown)
    }

    /// Starts a capture (see [`crate::capture`]): refusals come back here, as for any request;
    /// the frames then come from [`CaptureStream::next`].
    pub fn capture(&self, spec: CaptureSpec) -> Result<CaptureStream, ApiError> {
        let io = |source| ApiError::Io {
            socket: self.socket.clone(),
            source,
        };
        let s = UnixStream::connect(&self.socket).map_err(|source| ApiError::Connect {
            socket: self.socket.clone(),
            source,
        })?;
        // The answer line comes at once; the frames may take any time after it.
        s.set_read_timeout(Some(ANSWER_TIMEOUT)).map_err(io)?;
        let mut w = s.try_clone().map_err(io)?;
        let mut line = serde_json::to_string(&Request::Capture(spec))
            .map_err(|e| ApiError::Protocol(e.to_string()))?;
        line.push('\n');
        w.write_all(line.as_bytes()).map_err(io)?;
        let mut reader = BufReader::new(s);
        let mut answer = String::new();
        reader.read_line(&mut answer).map_err(io)?;
        if answer.is_empty() {
            return Err(ApiError::NoAnswer);
        }
        let r: Response = serde_json::from_str(&answer)
            .map_err(|e| ApiError::Protocol(format!("{e}: {:?}", answer.trim_end())))?;
        if !r.ok {
            return Err(ApiError::Refused(
                r.error.unwrap_or_else(|| "request failed".into()),
            ));
        }
        let started = serde_json::from_value(r.result.unwrap_or_default())
            .map_err(|e| ApiError::Protocol(e.to_string()))?;
        reader.get_ref().set_read_timeout(None).map_err(io)?;
        Ok(CaptureStream {
            reader,
            socket: self.socket.clone(),
            started,
        })
    }
}

/// A capture in progress: the pcap bytes as they come, then the summary.
#[derive(Debug)]
pub struct CaptureStream {
    reader: BufReader<UnixStream>,
    socket: PathBuf,
    pub started: CaptureStarted,
}

impl CaptureStream {
    /// The next piece of the pcap file, or the summary at the end; `None` if evsd went away
    /// without one.
    pub fn next_chunk(&mut self) -> Result<Option<Chunk>, ApiError> {
        read_chunk(&mut self.reader).map_err(|source| ApiError::Io {
            socket: self.socket.clone(),
            source,
        })
    }

    /// A handle that ends the capture from another thread (a signal handler's, say): evsd
    /// sends what it still has, then the summary.
    pub fn stopper(&self) -> std::io::Result<CaptureStopper> {
        Ok(CaptureStopper(self.reader.get_ref().try_clone()?))
    }
}

/// Ends a capture: shuts down the client's writing side, which evsd reads as "stop".
#[derive(Debug)]
pub struct CaptureStopper(UnixStream);

impl CaptureStopper {
    pub fn stop(&self) {
        let _ = self.0.shutdown(std::net::Shutdown::Write);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    /// A one-shot server answering every request with `reply`.
    fn serve(reply: Response) -> (tempfile::TempDir, Client) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ctl.sock");
        let l = UnixListener::bind(&path).unwrap();
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                let mut line = String::new();
                BufReader::new(&s).read_line(&mut line).unwrap();
                crate::parse_request(&line).expect("the client sends valid requests");
                let mut out = serde_json::to_string(&reply).unwrap();
                out.push('\n');
                (&s).write_all(out.as_bytes()).unwrap();
            }
        });
        (dir, Client::new(path))
    }

    fn thread() -> ThreadReport {
        ThreadReport {
            thread: 0,
            core: 1,
            busy_cycles: 10,
            idle_cycles: 90,
            packets: 5,
            iterations: 7,
            cycles_per_packet: Some(2.0),
            busy_pct: 10.0,
            cache_exact_hits: 4,
            cache_megaflow_hits: 1,
            cache_misses: 0,
            cache_hit_pct: Some(100.0),
            rx_ports: vec!["vm1".into()],
        }
    }

    #[test]
    fn typed_answers_round_trip() {
        let reply = Reply::Threads(vec![thread()]);
        let (_d, c) = serve(Response::ok(&reply));
        assert_eq!(c.show_threads().unwrap(), vec![thread()]);
        // The same answer read as another request's type is a protocol error, not garbage.
        assert!(matches!(c.show_mac(), Err(ApiError::Protocol(_))));
    }

    #[test]
    fn refusals_and_missing_daemons_are_clear() {
        let (_d, c) = serve(Response::err("attach \"vm9\": no port named \"vm9\""));
        let e = c.detach("vm9").unwrap_err();
        assert_eq!(e.to_string(), "attach \"vm9\": no port named \"vm9\"");
        let e = Client::new("/nonexistent/evsd.sock")
            .show_ports()
            .unwrap_err();
        assert!(e.to_string().contains("/nonexistent/evsd.sock"), "{e}");
    }
}
