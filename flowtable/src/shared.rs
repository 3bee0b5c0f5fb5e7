//! What the control side and every forwarding thread share: the switch-wide settings, the
//! published tables, the MAC table and the connection table.
//!
//! Below both [`crate::switch`] (which writes it) and [`crate::worker`] (which reads it), so that
//! neither has to know the other.

use crate::conntrack::{ConnTrack, CtConfig};
use crate::mac_learning::{MacConfig, MacTable};
use crate::pipeline::Pipeline;
use crate::storm::StormSignals;
use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};

/// Switch-wide settings that are not part of the operator's port model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SwitchConfig {
    /// Seconds a learned MAC stays without traffic.
    pub mac_aging_secs: u64,
    /// Most MACs one port may have learned (0: no limit).
    pub mac_limit_per_port: u32,
    /// Capacity of the MAC table.
    pub mac_capacity: usize,
    /// Most tracked connections (all zones together).
    pub ct_max_entries: usize,
    /// Pick up TCP connections in mid-stream, as Linux's `nf_conntrack_tcp_loose`
    /// ([`crate::conntrack::CtConfig::tcp_loose`]): established sessions survive a restart of the
    /// switch (which starts with an empty connection table).
    pub tcp_loose: bool,
    /// Entries of each worker's exact-match cache (rounded up to a power of two).
    pub emc_entries: usize,
    /// Entries of each worker's wildcarded cache (rounded up to a power of two; 0 disables it).
    pub megaflow_entries: usize,
}

impl Default for SwitchConfig {
    fn default() -> Self {
        SwitchConfig {
            mac_aging_secs: 300,
            mac_limit_per_port: 1024,
            mac_capacity: 65536,
            ct_max_entries: 1 << 20,
            tcp_loose: true,
            emc_entries: 32768,
            megaflow_entries: 32768,
        }
    }
}

/// The largest table sizes a config may ask for. The tables are allocated whole when the switch
/// starts, so a size beyond these is a typo, not a plan: refused up front with the field's name
/// rather than an allocation failure (or an overflowing size computation) at start.
pub const MAX_MAC_CAPACITY: usize = 1 << 24;
pub const MAX_CT_ENTRIES: usize = 1 << 24;
pub const MAX_CACHE_ENTRIES: usize = 1 << 20;

impl SwitchConfig {
    /// Checks the sizes against the `MAX_*` bounds; the error names the field (`switch.NAME`).
    pub fn check(&self) -> Result<(), String> {
        let sizes = [
            ("mac_capacity", self.mac_capacity, MAX_MAC_CAPACITY),
            ("ct_max_entries", self.ct_max_entries, MAX_CT_ENTRIES),
            ("emc_entries", self.emc_entries, MAX_CACHE_ENTRIES),
            ("megaflow_entries", self.megaflow_entries, MAX_CACHE_ENTRIES),
        ];
        for (name, v, max) in sizes {
            if v > max {
                return Err(format!("switch.{name}: {v} is above the limit {max}"));
            }
        }
        Ok(())
    }
}

/// State shared by the control side and all workers.
pub struct Shared {
    pub cfg: SwitchConfig,
    pub pipeline: ArcSwap<Pipeline>,
    pub mac: MacTable,
    pub ct: ConnTrack,
    /// Which ports' storm control dropped lately, for traces.
    pub storm: StormSignals,
}

impl Shared {
    /// Empty tables (no rule, no MAC, no connection) sized by `cfg`.
    pub fn new(cfg: SwitchConfig) -> Shared {
        let mac = MacTable::new(MacConfig {
            capacity: cfg.mac_capacity,
            aging_ns: cfg.mac_aging_secs.saturating_mul(1_000_000_000),
            per_port_limit: cfg.mac_limit_per_port,
        });
        let ct = ConnTrack::new(CtConfig {
            max_entries: cfg.ct_max_entries,
            tcp_loose: cfg.tcp_loose,
            ..CtConfig::default()
        });
        Shared {
            cfg,
            pipeline: ArcSwap::from_pointee(Pipeline::default()),
            mac,
            ct,
            storm: StormSignals::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `config_toml` fuzz target's review: `evsd check` accepted sizes whose tables
    /// cannot be allocated (or whose rounding to a power of two overflows), and `evsd run` died.
    #[test]
    fn oversized_tables_are_refused_by_name() {
        assert!(SwitchConfig::default().check().is_ok());
        let huge = SwitchConfig {
            ct_max_entries: usize::MAX,
            ..SwitchConfig::default()
        };
        let e = huge.check().unwrap_err();
        assert!(e.contains("switch.ct_max_entries"), "{e}");
        let huge = SwitchConfig {
            mac_capacity: (1 << 63) + 1,
            ..SwitchConfig::default()
        };
        assert!(huge.check().unwrap_err().contains("switch.mac_capacity"));
        let at_limit = SwitchConfig {
            emc_entries: MAX_CACHE_ENTRIES,
            megaflow_entries: MAX_CACHE_ENTRIES + 1,
            ..SwitchConfig::default()
        };
        assert!(at_limit
            .check()
            .unwrap_err()
            .contains("switch.megaflow_entries"));
    }
}
