//! The controller's protocol: what `dvsctl`, host agents and tools send `dvs-controller`, and what
//! they get back, with a blocking client.
//!
//! HTTP/JSON (see `controller/README` in the repository for why not gRPC):
//!
//! | method | path | who | body → answer |
//! |---|---|---|---|
//! | GET  | `/v1/objects[?kind=K]` | operator | → [`ObjectList`] |
//! | GET  | `/v1/object/{kind}/{id}` | operator | → [`Versioned`] (`id` may contain `/`) |
//! | POST | `/v1/txn` | operator | [`TxnRequest`] → [`TxnReply`] |
//! | GET  | `/v1/status` | operator | → [`StatusReport`] |
//! | GET  | `/v1/hosts/{host}/watch?after=R&fingerprint=F` | that host | → NDJSON [`WatchEvent`]s: `slice` (whole), `delta` (only the port and security groups that changed, on the slice it names by fingerprint), `heartbeat` |
//! | PUT  | `/v1/hosts/{host}/status` | that host | [`HostStatus`] → `{}` |
//! | PUT  | `/v1/hosts/{host}/applied` | that host | [`HostAck`] → `{}` (a delta applied; ports as last reported) |
//! | GET  | `/healthz` | anyone | → `ok` |
//!
//! Every error is an [`ErrorBody`] with an HTTP status that says its class (400 invalid, 401/403
//! authentication, 404 missing, 409 conflict, 503 store unavailable).

use model::{HostSlice, Object, ObjectId};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Read};
use std::time::Duration;

/// The port `dvs-controller` listens on unless told otherwise.
pub const DEFAULT_CONTROLLER_PORT: u16 = 9660;

/// An object with its resource version (the store revision that last wrote it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Versioned {
    pub resource_version: u64,
    #[serde(flatten)]
    pub object: Object,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObjectList {
    /// The store revision the list reflects.
    pub revision: u64,
    pub objects: Vec<Versioned>,
}

/// One change of a transaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum TxnOp {
    /// Create; fails if an object with this id exists, unless `may_exist` (then nothing changes).
    Create {
        object: Object,
        #[serde(default)]
        may_exist: bool,
    },
    /// Replace an existing object; with `resource_version`, only if it is still that version.
    Update {
        object: Object,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resource_version: Option<u64>,
    },
    /// Delete; fails if missing, unless `if_exists`; with `resource_version`, only if unchanged.
    Delete {
        id: ObjectId,
        #[serde(default)]
        if_exists: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resource_version: Option<u64>,
    },
}

/// One atomic transaction: every op applies, validated together against the whole installation,
/// or none does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct TxnRequest {
    pub ops: Vec<TxnOp>,
    /// Wait up to this long for every affected live host to apply the result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TxnReply {
    /// The revision of the change (the current one if nothing changed).
    pub revision: u64,
    /// Objects the transaction created, changed or deleted.
    pub changed: Vec<ObjectId>,
    /// Hosts whose slice the change touches.
    pub affected_hosts: Vec<String>,
    /// Tokens of hosts this transaction created (shown once; the controller keeps a hash).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host_tokens: Vec<HostToken>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<WaitReport>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostToken {
    pub host: String,
    pub token: String,
}

/// How a `--wait=hosts` went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WaitReport {
    pub waited_ms: u64,
    /// Affected hosts that applied the change.
    pub applied: Vec<String>,
    /// Affected hosts without a live agent: they get the change when they return.
    pub down: Vec<String>,
    /// Affected live hosts that had not applied it when the wait ended.
    pub pending: Vec<String>,
}

impl WaitReport {
    pub fn complete(&self) -> bool {
        self.pending.is_empty()
    }
}

/// A port's state as its host sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortStatus {
    pub name: String,
    /// The backend is set up (a vhost socket listening or connected, an ethdev started).
    pub attached: bool,
    /// "up", "down" (no guest connected / no carrier) or "unknown".
    pub link: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What a host agent reports, under its own key (never into a record every host watches).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct HostStatus {
    /// The revision of the slice the switch runs.
    pub applied_revision: u64,
    /// [`fingerprint`] of that slice.
    pub fingerprint: String,
    pub ports: Vec<PortStatus>,
    /// Why the last slice could not be applied, if it could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The agent's software version.
    #[serde(default)]
    pub agent: String,
}

/// What a host reports after applying a slice that changed none of its ports (a policy delta):
/// the revision and fingerprint it runs, and why not if the switch refused it. Its ports are as
/// in its last [`HostStatus`]. It goes to its own key beside the host's status, so 1,000 hosts
/// acknowledging a policy change write ~100 bytes each instead of their whole port lists
/// (~8 KB at 100 ports), and the controller decodes as little.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostAck {
    pub applied_revision: u64,
    pub fingerprint: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One line of a host's watch stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WatchEvent {
    /// The host's whole slice as of `revision`; sent first when the agent's fingerprint differs,
    /// and whenever a change alters the slice.
    Slice {
        revision: u64,
        fingerprint: String,
        slice: HostSlice,
    },
    /// The slice with fingerprint `base` changed only in the objects of `delta`: replace them
    /// and the result is the slice `fingerprint` as of `revision`. An agent that does not run
    /// `base` reconnects asking for the whole slice.
    Delta {
        revision: u64,
        base: String,
        fingerprint: String,
        delta: SliceDelta,
    },
    /// Nothing changed for this host up to `revision`; also keeps the connection proven alive.
    Heartbeat { revision: u64 },
}

/// Objects of a slice's model that a change replaced (by name, each already in the slice): a
/// policy change on 1,000 hosts sends each the one port group it changed, not its whole slice.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SliceDelta {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port_groups: Vec<model::PortGroup>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub security_groups: Vec<model::SecurityGroup>,
}

impl SliceDelta {
    pub fn is_empty(&self) -> bool {
        self.port_groups.is_empty() && self.security_groups.is_empty()
    }

    /// Replaces the delta's objects in `slice`; an object the slice lacks is an error (the
    /// delta was cut for another slice).
    pub fn apply(&self, slice: &mut HostSlice) -> Result<(), String> {
        for g in &self.port_groups {
            let Some(old) = slice
                .model
                .port_groups
                .iter_mut()
                .find(|x| x.name == g.name)
            else {
                return Err(format!(
                    "the delta changes port group {:?}, which the slice lacks",
                    g.name
                ));
            };
            *old = g.clone();
        }
        for g in &self.security_groups {
            let Some(old) = slice
                .model
                .security_groups
                .iter_mut()
                .find(|x| x.name == g.name)
            else {
                return Err(format!(
                    "the delta changes security group {:?}, which the slice lacks",
                    g.name
                ));
            };
            *old = g.clone();
        }
        Ok(())
    }

    /// The fingerprint of the slice `base` with this delta applied: a digest of `base` and the
    /// delta's JSON, so that neither side serializes the whole slice again. (It names the
    /// history, not only the content: a controller that computes the slice afresh names it by
    /// its JSON, differently, and sends it whole once.)
    pub fn fingerprint_after(&self, base: &str) -> String {
        let mut bytes = Vec::with_capacity(base.len() + 256);
        bytes.extend_from_slice(base.as_bytes());
        bytes.push(b'+');
        bytes.extend_from_slice(&serde_json::to_vec(self).unwrap_or_default());
        fingerprint_of_json(&bytes)
    }
}

/// How often the controller sends a heartbeat on an idle watch.
pub const HEARTBEAT: Duration = Duration::from_secs(3);

/// A host as `dvsctl status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostReport {
    pub host: String,
    /// The agent holds a live lease (reported within the lease's TTL).
    pub alive: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<String>,
    /// The host's current slice equals the one it runs.
    pub in_sync: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<HostStatus>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    pub revision: u64,
    pub store: String,
    pub hosts: Vec<HostReport>,
}

/// The body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    /// `invalid`, `unauthorized`, `forbidden`, `not_found`, `conflict`, `unavailable`, `internal`.
    pub code: String,
}

/// A stable digest of a slice (FNV-1a over its JSON), so an agent and the controller can tell
/// whether they hold the same one without sending it.
pub fn fingerprint(slice: &HostSlice) -> String {
    fingerprint_of_json(&serde_json::to_vec(slice).unwrap_or_default())
}

/// [`fingerprint`] of a slice already serialized with `serde_json::to_vec` (the controller
/// serializes each slice once, for both the fingerprint and the watch stream).
pub fn fingerprint_of_json(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// A failed controller call, classified for exit codes.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("cannot reach the controller at {url}: {message}")]
    Unreachable { url: String, message: String },
    /// The controller answered with an error; `code` as in [`ErrorBody`].
    #[error("{message}")]
    Refused {
        status: u16,
        code: String,
        message: String,
    },
    #[error("unexpected answer from the controller: {0}")]
    Protocol(String),
}

impl ControllerError {
    pub fn code(&self) -> &str {
        match self {
            ControllerError::Unreachable { .. } => "unreachable",
            ControllerError::Refused { code, .. } => code,
            ControllerError::Protocol(_) => "protocol",
        }
    }
}

/// A blocking client of `dvs-controller`.
#[derive(Clone)]
pub struct ControllerClient {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
    /// For long-lived watch streams: no overall timeout, a read timeout above the heartbeat.
    stream_agent: ureq::Agent,
}

impl std::fmt::Debug for ControllerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControllerClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl ControllerClient {
    /// `url` like `http://127.0.0.1:9660`; `token` is sent as a bearer token. An `https://`
    /// controller is verified against the system's web roots (see [`ControllerClient::with_ca`]).
    pub fn new(url: &str, token: Option<String>) -> ControllerClient {
        Self::build(url, token, None)
    }

    /// As [`ControllerClient::new`], trusting the CA certificates in the PEM file `ca` (a
    /// private CA of the controller's certificate) instead of the web roots.
    pub fn with_ca(
        url: &str,
        token: Option<String>,
        ca: &std::path::Path,
    ) -> Result<ControllerClient, String> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::CertificateDer;
        let what = |e: &dyn std::fmt::Display| format!("CA file {}: {e}", ca.display());
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(ca).map_err(|e| what(&e))? {
            roots.add(c.map_err(|e| what(&e))?).map_err(|e| what(&e))?;
        }
        if roots.is_empty() {
            return Err(what(&"no certificate in it"));
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| what(&e))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self::build(url, token, Some(std::sync::Arc::new(tls))))
    }

    fn build(
        url: &str,
        token: Option<String>,
        tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    ) -> ControllerClient {
        let with_tls = |b: ureq::AgentBuilder| match &tls {
            Some(t) => b.tls_config(t.clone()),
            None => b,
        };
        let agent = with_tls(ureq::AgentBuilder::new())
            .timeout_connect(Duration::from_secs(3))
            .timeout(Duration::from_secs(130))
            .build();
        let stream_agent = with_tls(ureq::AgentBuilder::new())
            .timeout_connect(Duration::from_secs(3))
            .timeout_read(HEARTBEAT * 3)
            .build();
        ControllerClient {
            base: url.trim_end_matches('/').to_owned(),
            token,
            agent,
            stream_agent,
        }
    }

    pub fn url(&self) -> &str {
        &self.base
    }

    fn req(&self, agent: &ureq::Agent, method: &str, path: &str) -> ureq::Request {
        let r = agent.request(method, &format!("{}{path}", self.base));
        match &self.token {
            Some(t) => r.set("Authorization", &format!("Bearer {t}")),
            None => r,
        }
    }

    fn answer<T: serde::de::DeserializeOwned>(
        &self,
        r: Result<ureq::Response, ureq::Error>,
    ) -> Result<T, ControllerError> {
        let resp = self.check(r)?;
        let text = resp
            .into_string()
            .map_err(|e| ControllerError::Protocol(e.to_string()))?;
        serde_json::from_str(&text).map_err(|e| ControllerError::Protocol(format!("{e}: {text}")))
    }

    fn check(
        &self,
        r: Result<ureq::Response, ureq::Error>,
    ) -> Result<ureq::Response, ControllerError> {
        match r {
            Ok(resp) => Ok(resp),
            Err(ureq::Error::Status(status, resp)) => {
                let text = resp.into_string().unwrap_or_default();
                let body: ErrorBody = serde_json::from_str(&text).unwrap_or(ErrorBody {
                    error: format!("HTTP {status}: {text}"),
                    code: "internal".into(),
                });
                Err(ControllerError::Refused {
                    status,
                    code: body.code,
                    message: body.error,
                })
            }
            Err(e) => Err(ControllerError::Unreachable {
                url: self.base.clone(),
                message: e.to_string(),
            }),
        }
    }

    pub fn list(&self, kind: Option<model::Kind>) -> Result<ObjectList, ControllerError> {
        let path = match kind {
            Some(k) => format!("/v1/objects?kind={k}"),
            None => "/v1/objects".into(),
        };
        self.answer(self.req(&self.agent, "GET", &path).call())
    }

    pub fn get(&self, id: &ObjectId) -> Result<Versioned, ControllerError> {
        let path = format!("/v1/object/{}/{}", id.kind, id.id);
        self.answer(self.req(&self.agent, "GET", &path).call())
    }

    pub fn txn(&self, t: &TxnRequest) -> Result<TxnReply, ControllerError> {
        let body = serde_json::to_value(t).map_err(|e| ControllerError::Protocol(e.to_string()))?;
        self.answer(self.req(&self.agent, "POST", "/v1/txn").send_json(body))
    }

    pub fn status(&self) -> Result<StatusReport, ControllerError> {
        self.answer(self.req(&self.agent, "GET", "/v1/status").call())
    }

    pub fn put_status(&self, host: &str, s: &HostStatus) -> Result<(), ControllerError> {
        let body = serde_json::to_value(s).map_err(|e| ControllerError::Protocol(e.to_string()))?;
        let path = format!("/v1/hosts/{host}/status");
        let _: serde_json::Value =
            self.answer(self.req(&self.agent, "PUT", &path).send_json(body))?;
        Ok(())
    }

    /// Sends `host`'s acknowledgement of a slice that changed no port (see [`HostAck`]).
    pub fn put_ack(&self, host: &str, a: &HostAck) -> Result<(), ControllerError> {
        let body = serde_json::to_value(a).map_err(|e| ControllerError::Protocol(e.to_string()))?;
        let path = format!("/v1/hosts/{host}/applied");
        let _: serde_json::Value =
            self.answer(self.req(&self.agent, "PUT", &path).send_json(body))?;
        Ok(())
    }

    /// Opens `host`'s watch stream. `after`/`fingerprint`: what the agent runs, so an unchanged
    /// slice is not sent again.
    pub fn watch(
        &self,
        host: &str,
        after: u64,
        fingerprint: &str,
    ) -> Result<WatchStream, ControllerError> {
        let path = format!("/v1/hosts/{host}/watch?after={after}&fingerprint={fingerprint}");
        let resp = self.check(self.req(&self.stream_agent, "GET", &path).call())?;
        Ok(WatchStream {
            lines: BufReader::new(resp.into_reader()),
            url: self.base.clone(),
        })
    }
}

/// The events of one watch connection; ends (with an error) when the connection breaks or stays
/// silent for three heartbeats.
pub struct WatchStream {
    lines: BufReader<Box<dyn Read + Send + Sync + 'static>>,
    url: String,
}

impl Iterator for WatchStream {
    type Item = Result<WatchEvent, ControllerError>;
    fn next(&mut self) -> Option<Self::Item> {
        let mut line = String::new();
        loop {
            line.clear();
            return match self.lines.read_line(&mut line) {
                Ok(0) => None,
                Ok(_) if line.trim().is_empty() => continue,
                Ok(_) => Some(
                    serde_json::from_str(&line)
                        .map_err(|e| ControllerError::Protocol(format!("watch: {e}"))),
                ),
                Err(e) => Some(Err(ControllerError::Unreachable {
                    url: self.url.clone(),
                    message: format!("watch stream: {e}"),
                })),
            };
        }
    }
}
