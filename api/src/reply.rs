//! What `evsd` answers: the response envelope and the typed result of every request.

use model::{Backend, Mac, Model};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// The envelope of every answer, one JSON line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Response {
    pub fn ok(r: &Reply) -> Response {
        match serde_json::to_value(r) {
            Ok(v) => Response {
                ok: true,
                result: Some(v),
                error: None,
            },
            Err(e) => Response::err(format!("evsd could not encode its answer: {e}")),
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

impl From<Result<Reply, String>> for Response {
    fn from(r: Result<Reply, String>) -> Response {
        match r {
            Ok(r) => Response::ok(&r),
            Err(e) => Response::err(e),
        }
    }
}

/// The result of a successful request, one variant per kind of answer (see [`crate::Request`]).
/// Serialized without a tag: the request says which one to expect.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Reply {
    Ports(Vec<PortReport>),
    Threads(Vec<ThreadReport>),
    Model(Model),
    Tables(TableDump),
    Mac(Vec<MacEntry>),
    Connections(Vec<ConnectionEntry>),
    Applied(Applied),
    Trace(TraceReport),
    /// The answer line of a capture that started (the pcap stream follows).
    Capture(crate::capture::CaptureStarted),
    /// A confirmation ("attached") or a text (the Prometheus exposition).
    Text(String),
}

/// What a port is in the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PortKind {
    /// A guest's port.
    Port,
    Uplink,
    /// Attached, but the model in force no longer names it: it forwards until detached.
    Stale,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PortState {
    /// Attached and its link is up (a vhost guest is connected).
    Up,
    /// Attached, link down (a vhost guest not connected yet, or gone).
    Down,
    /// No backend.
    Detached,
}

/// `show ports`: one model port or uplink.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PortReport {
    pub name: String,
    /// The flowtable's numeric id (stable across `apply`).
    pub id: u32,
    pub kind: PortKind,
    pub state: PortState,
    pub backend: Option<Backend>,
    /// DPDK's port id of the backend.
    pub ethdev: Option<u16>,
    /// The DPDK driver serving it (`net_vhost`, `net_af_packet`...).
    pub driver: Option<String>,
    /// Times the link came up (guest connections).
    pub connects: u64,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Packets dropped, by reason (`malformed`, `sg_ingress_denied`, `tx_full`...).
    pub drops: BTreeMap<String, u64>,
    /// Copies towards this port dropped by its egress policy (e.g. its security group's ingress
    /// rules), by reason; the sender's port counts the packet in `drops` when no copy went out.
    pub egress_drops: BTreeMap<String, u64>,
    /// The PMD's own counters (e.g. what the guest ring could not take).
    pub pmd: Option<PmdStats>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PmdStats {
    pub ipackets: u64,
    pub opackets: u64,
    pub imissed: u64,
    pub oerrors: u64,
    pub rx_nombuf: u64,
}

/// `show threads`: one forwarding thread.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThreadReport {
    pub thread: usize,
    pub core: usize,
    pub busy_cycles: u64,
    pub idle_cycles: u64,
    pub packets: u64,
    pub iterations: u64,
    pub cycles_per_packet: Option<f64>,
    /// Share of polling time spent on iterations that found packets.
    pub busy_pct: f64,
    /// Segment lookups (a packet makes one per pipeline stretch: ingress, egress per copy, after
    /// conntrack) answered by the exact-match cache, by the megaflow cache, and by walking the
    /// tables; published every 1024 loop iterations.
    pub cache_exact_hits: u64,
    pub cache_megaflow_hits: u64,
    pub cache_misses: u64,
    pub cache_hit_pct: Option<f64>,
    /// The ports whose receive queues this thread polls.
    pub rx_ports: Vec<String>,
}

/// `show tables`: every flow table of the pipeline version in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableDump {
    pub version: u64,
    /// Non-empty tables, in table order.
    pub tables: Vec<TableReport>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableReport {
    pub id: u32,
    /// What the table decides (`vlan_in`, `ingress_sg`...).
    pub name: String,
    /// Distinct masks: one hash probe each on a lookup.
    pub masks: usize,
    /// Highest priority first.
    pub rules: Vec<RuleReport>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleReport {
    pub priority: u32,
    /// The match, in `ovs-ofctl` style (`in_port=3,dl_vlan=100`).
    #[serde(rename = "match")]
    pub matches: String,
    pub actions: Vec<String>,
    /// Why the rule exists (which object of the model made it).
    pub note: String,
}

/// `show mac`: one MAC table entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MacEntry {
    pub vlan: u32,
    pub mac: Mac,
    pub port: String,
    /// Seconds since the source was last seen (0 for static entries).
    pub age_secs: u64,
    /// Installed for a port with IP–MAC binding (not learned).
    #[serde(rename = "static")]
    pub is_static: bool,
}

/// `show connections`: one tracked connection in one port's zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionEntry {
    /// The port whose zone holds the entry.
    pub port: String,
    pub connection: Connection,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connection {
    pub zone: u16,
    /// 0x0800 (IPv4) or 0x86dd (IPv6).
    pub eth_type: u16,
    pub proto: u8,
    /// Source of the original direction (the side that opened the connection).
    pub src: IpAddr,
    pub dst: IpAddr,
    /// Transport ports of the original direction (TCP/UDP; 0 otherwise).
    pub sport: u16,
    pub dport: u16,
    /// The identifier of an ICMP echo connection.
    pub icmp_id: Option<u16>,
    /// `ESTABLISHED`, `SYN_SENT`, `UNREPLIED`...
    pub state: String,
    /// Whether a reply-direction packet has been seen.
    pub replied: bool,
    /// Picked up in mid-stream (`[switch] tcp_loose`, e.g. after a restart): `src` is the
    /// higher-port side, taken for the client.
    #[serde(default)]
    pub picked_up: bool,
    pub expires_in_secs: u64,
    pub packets_orig: u32,
    pub packets_reply: u32,
}

/// `apply`: what the new model changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// The pipeline version now in force (forwarding threads see it from their next burst).
    pub generation: u64,
    pub rules_added: usize,
    pub rules_removed: usize,
    /// Model objects whose rules were recompiled (the others kept theirs).
    pub owners_recompiled: usize,
    /// Ports and uplinks the new model no longer names.
    pub removed_ports: Vec<String>,
}

/// `trace`: one frame's path, step by step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceReport {
    pub in_port: String,
    /// The parsed flow key.
    pub flow: String,
    pub steps: Vec<TraceStep>,
    /// Where copies go out.
    pub emits: Vec<TraceEmit>,
    /// Set when no copy goes out: the drop reason (`sg_ingress_denied`...).
    pub drop: Option<String>,
    /// One sentence: "delivered to vm2" or "dropped: ingress rule missing in security group web".
    pub verdict: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceStep {
    /// Nesting: 0 for the ingress path, 1 for the path towards one output port.
    pub depth: usize,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceEmit {
    pub port: String,
    /// The tag the copy leaves with: `untagged`, or the VLAN id.
    pub vlan: Option<u16>,
}
