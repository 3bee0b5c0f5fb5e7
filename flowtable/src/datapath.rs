//! The old home of the switch's control handle and workers, kept as a path so that code written
//! against it (the daemon) builds unchanged. New code uses [`crate::switch`] and [`crate::worker`].

pub use crate::key::MAX_PORTS;
pub use crate::switch::{ApplyReport, Shared, Switch, SwitchConfig};
pub use crate::verdict::BurstResult;
pub use crate::worker::{PortCounters, Worker, WorkerStats, RELEARN_NS};

/// The `ct_state` bits a security-group check table matches as "part of an allowed connection".
pub const CT_EST_OR_REL: [u8; 2] = [
    crate::key::ct::TRACKED | crate::key::ct::ESTABLISHED,
    crate::key::ct::TRACKED | crate::key::ct::RELATED,
];
