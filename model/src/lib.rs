//! `model`: the operator's desired state, as serde types with validation, and nothing else.
//!
//! What `evsd` reads from its config and its control socket, what the controller stores and sends
//! each host. Every validation error names the object and the field ([`ModelError`]). No packet
//! processing and no I/O here: `flowtable` compiles these types into tables, `api` carries them.

#![forbid(unsafe_code)]

mod attach;
pub mod cluster;
mod mac;
mod storm;
mod switch;

pub use attach::{Attach, Backend, EthdevConfig, Role, VhostConfig};
pub use cluster::{Cluster, HostSlice, Kind, Object, ObjectId};
pub use mac::{Mac, MacParseError};
pub use switch::*;
