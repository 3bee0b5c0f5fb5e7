//! Arbitrary bytes as lines on evsd's control socket, through what its server does without a
//! DPDK port: `api::parse_request`, then the switch side of the control loop's dispatch (apply,
//! trace, the show reports) on one long-lived switch (back at the fuzz model for each input),
//! and the backend check of an attach.
//! No panic anywhere; every refusal is an error with a message; a parsed request, serialized by
//! a client, parses back the same; every answer serializes.
#![no_main]

use api::{parse_hex, parse_request, Reply, Request, Response};
use evsd::reports;
use flowtable::switch::Switch;
use flowtable_fuzz::{check_message, small_config, MODEL_JSON};
use libfuzzer_sys::fuzz_target;
use model::Model;
use std::sync::{Mutex, OnceLock};

const NOW: u64 = 1_000_000_000;

fn running() -> &'static Mutex<Switch> {
    static S: OnceLock<Mutex<Switch>> = OnceLock::new();
    S.get_or_init(|| {
        Mutex::new(Switch::new(small_config(), base().clone()).expect("fuzz model is valid"))
    })
}

/// What the control loop answers, for the requests that need no DPDK port.
fn dispatch(sw: &Switch, req: Request) -> Result<Option<Reply>, String> {
    Ok(Some(match req {
        Request::ShowModel => Reply::Model(sw.model()),
        Request::ShowTables => Reply::Tables(reports::tables(sw)),
        Request::ShowMac => Reply::Mac(reports::mac(sw, NOW)),
        Request::ShowConnections { limit } => {
            Reply::Connections(reports::connections(sw, limit, NOW))
        }
        Request::Apply { model } => {
            let before = sw.pipeline();
            let r = sw.apply(model).map_err(|e| e.to_string())?;
            Reply::Applied(reports::applied(sw, &before, &r))
        }
        Request::Attach(a) => {
            a.backend()
                .map_err(|e| format!("attach {:?}: {e}", a.port))?;
            return Ok(None);
        }
        Request::Trace { port, frame } => {
            let f = parse_hex(&frame).map_err(|e| format!("trace: frame: {e}"))?;
            Reply::Trace(reports::trace(sw.trace(&port, &f, NOW)?))
        }
        Request::ShowPorts
        | Request::ShowThreads
        | Request::Detach { .. }
        | Request::StatsReset
        | Request::Shutdown
        | Request::Metrics
        | Request::Capture(_) => return Ok(None),
    }))
}

fn base() -> &'static Model {
    static M: OnceLock<Model> = OnceLock::new();
    M.get_or_init(|| serde_json::from_str(MODEL_JSON).expect("fuzz model parses"))
}

fuzz_target!(|data: &[u8]| {
    let sw = running().lock().unwrap_or_else(|e| e.into_inner());
    // Every input starts from the same model (an earlier input's apply would otherwise make a
    // crash depend on what ran before, and slow every later `show tables`); the incremental
    // compiler still sees arbitrary changes within an input's lines.
    if sw.model() != *base() {
        sw.apply(base().clone()).expect("fuzz model is valid");
    }
    // Lines as the server splits them: bytes up to '\n', refused unless UTF-8.
    for line in data.split(|&b| b == b'\n') {
        let line = match std::str::from_utf8(line) {
            Ok(l) if l.trim().is_empty() => continue,
            Ok(l) => l,
            Err(_) => continue,
        };
        let req = match parse_request(line) {
            Ok(r) => r,
            Err(e) => {
                check_message("request", &e);
                serde_json::to_string(&Response::err(e)).expect("an error answer serializes");
                continue;
            }
        };
        let wire = serde_json::to_string(&req).expect("a request serializes");
        let back = parse_request(&wire)
            .unwrap_or_else(|e| panic!("a serialized request does not parse back: {e}: {wire}"));
        assert_eq!(back, req, "request changed through serialization: {wire}");
        let resp = match dispatch(&sw, req) {
            Ok(Some(r)) => Response::ok(&r),
            Ok(None) => continue,
            Err(e) => {
                check_message("request", &e);
                Response::err(e)
            }
        };
        serde_json::to_string(&resp).expect("an answer serializes");
    }
});
