//! What a client may ask `evsd`.

use crate::capture::CaptureSpec;
use model::{Attach, Model};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Connections `show connections` lists unless told otherwise.
pub const DEFAULT_CONNECTION_LIMIT: usize = 1000;

fn default_conn_limit() -> usize {
    DEFAULT_CONNECTION_LIMIT
}

/// One request; the comment of each says the type of its reply (see [`crate::reply`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// → `Vec<PortReport>`
    ShowPorts,
    /// → `Vec<ThreadReport>`
    ShowThreads,
    /// → `Model`: the port groups, security groups and ports in force.
    ShowModel,
    /// → `TableDump`: every flow table, rule by rule.
    ShowTables,
    /// → `Vec<MacEntry>`: VLAN, MAC, port, age, static or learned.
    ShowMac,
    /// → `Vec<ConnectionEntry>`: tracked connections (at most `limit`).
    ShowConnections {
        #[serde(default = "default_conn_limit")]
        limit: usize,
    },
    /// → `Applied`: replace the model (validated first; nothing changes on error).
    Apply { model: Model },
    /// → `String`: give a port or uplink its backend.
    Attach(Attach),
    /// → `String`: remove a port's backend.
    Detach { port: String },
    /// → `String`: zero what `show` reports (Prometheus counters keep counting).
    StatsReset,
    /// → `TraceReport`: what the switch does with a frame (hex) arriving on `port`, without
    /// changing state.
    Trace { port: String, frame: String },
    /// → `String`
    Shutdown,
    /// → `String`: the Prometheus text exposition (what the HTTP endpoint serves).
    Metrics,
    /// → `CaptureStarted`, then the pcap stream (see [`crate::capture`]): the only request that
    /// is answered with more than one line, so the last one on its connection.
    Capture(CaptureSpec),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_errors_have_paths() {
        let r = parse_request(r#"{"cmd":"show_ports"}"#).unwrap();
        assert_eq!(r, Request::ShowPorts);
        let r = parse_request(
            r#"{"cmd":"attach","port":"vm1","vhost":{"socket":"/tmp/a.sock","role":"client"}}"#,
        )
        .unwrap();
        let Request::Attach(a) = &r else {
            panic!("{r:?}")
        };
        assert!(a.backend().is_ok());
        assert_eq!(
            parse_request(&serde_json::to_string(&r).unwrap()).unwrap(),
            r
        );
        let e = parse_request(
            r#"{"cmd":"apply","model":{"ports":[{"name":"a","mac":"zz","port_group":"x"}]}}"#,
        )
        .unwrap_err();
        assert!(e.contains("model.ports[0].mac"), "{e}");
        let e = parse_request(r#"{"cmd":"explode"}"#).unwrap_err();
        assert!(e.contains("explode"), "{e}");
        let r = parse_request(r#"{"cmd":"show_connections"}"#).unwrap();
        assert_eq!(
            r,
            Request::ShowConnections {
                limit: DEFAULT_CONNECTION_LIMIT
            }
        );
        let r = parse_request(r#"{"cmd":"capture","port":"vm1","filter":"icmp"}"#).unwrap();
        let Request::Capture(c) = &r else {
            panic!("{r:?}")
        };
        assert_eq!((c.port.as_str(), c.filter.as_str()), ("vm1", "icmp"));
        assert_eq!(
            parse_request(&serde_json::to_string(&r).unwrap()).unwrap(),
            r
        );
        let e = parse_request(r#"{"cmd":"capture","port":"vm1","fliter":"icmp"}"#).unwrap_err();
        assert!(e.contains("fliter"), "{e}");
    }

    #[test]
    fn hex_frames() {
        assert_eq!(parse_hex("ff:00 1a").unwrap(), vec![0xff, 0, 0x1a]);
        assert!(parse_hex("f").unwrap_err().contains("odd"));
        assert!(parse_hex("zz").unwrap_err().contains("hex byte"));
    }
}
