//! `api`: the control protocol between `evsd` and its clients (`evsd ctl`, tests, the host agent,
//! tools), as typed values, with a client.
//!
//! On the wire: a Unix stream socket carrying one JSON [`Request`] per line (`{"cmd": "show_ports"}`)
//! and one JSON [`Response`] per line (`{"ok": true, "result": ...}` or `{"ok": false, "error":
//! "..."}`). The `result` of each request has one type ([`reply`]): the server builds a [`Reply`],
//! the [`Client`] reads it back into the same type, and `evsd ctl --json` prints that type
//! serialized, so a renamed field is a compile error rather than a `-` in a table. [`text`] renders
//! the same values as the tables `evsd ctl` prints.
//!
//! No DPDK and no packet processing here: a controller or a tool links this crate (and [`model`])
//! alone.

#![forbid(unsafe_code)]

pub mod capture;
pub mod client;
pub mod dvs;
pub mod reply;
pub mod request;
pub mod stdout;
pub mod text;

pub use client::{ApiError, CaptureStopper, CaptureStream, Client};
pub use reply::*;
pub use request::{parse_hex, parse_request, Request, DEFAULT_CONNECTION_LIMIT};

/// Where `evsd` serves its control socket unless configured otherwise.
pub const DEFAULT_SOCKET: &str = "/run/evs/evsd.sock";
