//! The old home of the switch's control handle and workers, kept as a path so that code written
//! against it (the daemon) builds unchanged. New code uses [`crate::switch`] and [`crate::worker`].

pub use crate::compiler::CT_EST_OR_REL;
pub use crate::key::MAX_PORTS;
pub use crate::switch::{ApplyReport, Shared, Switch, SwitchConfig};
pub use crate::worker::{Worker, WorkerStats, RELEARN_NS};
