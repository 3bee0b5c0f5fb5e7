//! The control side's handle on a switch: applies the operator's model, hands out workers, and
//! answers questions (traces, table dumps, the MAC and connection tables).
//!
//! The forwarding side never takes a lock: it reads the current [`Pipeline`] through an
//! `ArcSwap` once per burst, and the MAC table and conntrack are built for concurrent use.

use crate::compiler::Compiler;
use crate::conntrack::CtEntryInfo;
use crate::mac_learning::MacEntry;
use crate::matcher::describe;
use crate::pipeline::Pipeline;
use crate::trace::Trace;
use crate::worker::Worker;
use model::{Model, ModelError};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

pub use crate::compiler::ApplyReport;
pub use crate::shared::{Shared, SwitchConfig};

/// Control-side handle; cheap to clone, shared with the control socket and the forwarding threads.
#[derive(Clone)]
pub struct Switch {
    shared: Arc<Shared>,
    control: Arc<Mutex<Compiler>>,
    /// The version before the current one, kept alive by the control side so that the last
    /// reference to an old version is never dropped by a forwarding thread (freeing tables of
    /// thousands of rules there would stall it). Dropped at the next update, long after readers
    /// have moved on.
    retired: Arc<Mutex<Option<Arc<Pipeline>>>>,
}

impl Switch {
    pub fn new(cfg: SwitchConfig, model: Model) -> Result<Switch, ModelError> {
        Switch::with_compiler(cfg, model, Compiler::new())
    }

    /// A switch that continues a previous run: its first tables are version `generation` and the
    /// named ports get these ids (see [`Compiler::resuming`]).
    pub fn resume(
        cfg: SwitchConfig,
        model: Model,
        ids: BTreeMap<String, u32>,
        generation: u64,
    ) -> Result<Switch, ModelError> {
        Switch::with_compiler(cfg, model, Compiler::resuming(ids, generation))
    }

    fn with_compiler(cfg: SwitchConfig, model: Model, c: Compiler) -> Result<Switch, ModelError> {
        let sw = Switch {
            shared: Arc::new(Shared::new(cfg)),
            control: Arc::new(Mutex::new(c)),
            retired: Arc::new(Mutex::new(None)),
        };
        sw.apply(model)?;
        Ok(sw)
    }

    /// Validates `model`, compiles what changed and publishes the new tables atomically:
    /// forwarding threads see the old or the new version, never a mix. On error nothing changes.
    pub fn apply(&self, model: Model) -> Result<ApplyReport, ModelError> {
        let mut c = self.control.lock().unwrap();
        let report = c.update(&model)?;
        let p = c.pipeline();
        // Static MAC entries for bound ports, so a spoofer cannot steal a guest's MAC by learning.
        for (&id, info) in &p.ports {
            if let Some(mac) = c.bound_mac(&info.name) {
                for &d in c.domains_of(id).iter() {
                    self.shared.mac.set_static(d, mac, id);
                }
            }
        }
        for (d, mac) in &report.unbound_macs {
            self.shared.mac.remove_static(*d, *mac);
        }
        for id in &report.removed_ports {
            self.shared.mac.flush_port(*id);
        }
        let old = self.shared.pipeline.swap(Arc::new(p));
        // The version retired last time is surely unused by now: free it here, not in a reader.
        drop(self.retired.lock().unwrap().replace(old));
        // Connections a removed rule allowed are cut too (a documented choice): re-check each
        // connection of the affected zones against the new tables.
        if !report.sg_changed_zones.is_empty() {
            let pl = self.shared.pipeline.load();
            let zones = &report.sg_changed_zones;
            self.shared
                .ct
                .retain(|e| !zones.contains(&e.zone) || c.connection_allowed(&pl, e));
        }
        Ok(report)
    }

    pub fn model(&self) -> Model {
        self.control.lock().unwrap().model().clone()
    }

    /// The numeric id of a port or uplink, stable across `apply`.
    pub fn port_id(&self, name: &str) -> Option<u32> {
        self.control.lock().unwrap().port_id(name)
    }

    /// Every port's and uplink's id, by name.
    pub fn port_ids(&self) -> BTreeMap<String, u32> {
        self.control.lock().unwrap().ids().clone()
    }

    /// The current tables (for dumps and tests).
    pub fn pipeline(&self) -> Arc<Pipeline> {
        self.shared.pipeline.load_full()
    }

    pub fn shared(&self) -> &Shared {
        &self.shared
    }

    pub fn worker(&self) -> Worker {
        Worker::new(self.shared.clone())
    }

    /// Explains what the switch does with `frame` arriving on port `in_port` (a name), without
    /// changing any state.
    pub fn trace(&self, in_port: &str, frame: &[u8], now_ns: u64) -> Result<Trace, String> {
        let id = self
            .port_id(in_port)
            .ok_or_else(|| format!("unknown port {in_port:?}"))?;
        Ok(crate::trace::trace(&self.shared, id, frame, now_ns))
    }

    /// Every table, rule by rule, in the style of `ovs-ofctl dump-flows`.
    pub fn dump_tables(&self) -> String {
        use std::fmt::Write;
        let pl = self.pipeline();
        let mut out = format!("pipeline version {}\n", pl.version);
        for (i, t) in pl.tables.iter().enumerate() {
            if t.is_empty() {
                continue;
            }
            let name = pl.table_names.get(i).copied().unwrap_or("");
            let _ = writeln!(
                out,
                "table {i} ({name}): {} rules, {} masks",
                t.len(),
                t.subtable_count()
            );
            let mut rules: Vec<_> = t.rules().collect();
            rules.sort_by(|a, b| b.priority.cmp(&a.priority).then(a.id.cmp(&b.id)));
            for r in rules {
                let acts: Vec<String> = r.actions.iter().map(|a| a.to_string()).collect();
                let _ = writeln!(
                    out,
                    "  priority={} {} actions={}  # {}",
                    r.priority,
                    describe(&r.m),
                    acts.join(","),
                    r.note
                );
            }
        }
        out
    }

    /// The MAC table, with port names.
    pub fn mac_entries(&self, now_ns: u64) -> Vec<(String, MacEntry)> {
        let pl = self.pipeline();
        self.shared
            .mac
            .dump(now_ns)
            .into_iter()
            .map(|e| (pl.port_name(e.port), e))
            .collect()
    }

    /// Up to `limit` tracked connections, with the name of the port whose zone holds each.
    pub fn connections(&self, limit: usize, now_ns: u64) -> Vec<(String, CtEntryInfo)> {
        let pl = self.pipeline();
        self.shared
            .ct
            .dump_at(limit, now_ns)
            .into_iter()
            .map(|e| (pl.port_name(e.zone as u32), e))
            .collect()
    }

    /// Periodic housekeeping: ages MACs and expires connections. Call about once a second.
    pub fn housekeeping(&self, now_ns: u64) {
        self.shared.mac.age(now_ns);
        self.shared.ct.expire(now_ns);
    }
}
