//! The switch as the dataplane sees it: a control-side [`Switch`] handle and one [`Worker`] per
//! forwarding thread.
//!
//! INTERIM: the classifier pipeline is being written; until it lands, `process_burst` floods every
//! parsed frame to all other ports. The API below is the one the pipeline will keep.

use crate::parse::parse;
use crate::policy::{Model, ModelError};
use crate::verdict::{BurstResult, DropReason, Emit, PacketResult, VlanEdit};
use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Switch-wide settings that are not part of the operator's port model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SwitchConfig {
    /// Seconds a learned MAC stays without traffic.
    pub mac_aging_secs: u64,
    /// Most MACs one port may have learned (0: no limit).
    pub mac_limit_per_port: u32,
    /// Most tracked connections (all zones together).
    pub ct_max_entries: usize,
}

impl Default for SwitchConfig {
    fn default() -> Self {
        SwitchConfig {
            mac_aging_secs: 300,
            mac_limit_per_port: 1024,
            ct_max_entries: 1 << 20,
        }
    }
}

struct Published {
    model: Model,
    ports: Vec<u32>,
}

/// Control-side handle; cheap to clone, shared with the control socket and the forwarding threads.
#[derive(Clone)]
pub struct Switch {
    inner: Arc<Inner>,
}

struct Inner {
    _cfg: SwitchConfig,
    current: ArcSwap<Published>,
    /// Port name → id; ids are never reused while the switch runs.
    ids: Mutex<BTreeMap<String, u32>>,
}

impl Switch {
    pub fn new(cfg: SwitchConfig, model: Model) -> Result<Switch, ModelError> {
        let sw = Switch {
            inner: Arc::new(Inner {
                _cfg: cfg,
                current: ArcSwap::from_pointee(Published {
                    model: Model::default(),
                    ports: vec![],
                }),
                ids: Mutex::new(BTreeMap::new()),
            }),
        };
        sw.apply(model)?;
        Ok(sw)
    }

    /// Validates `model` and publishes it atomically: forwarding threads see the old or the new
    /// version, never a mix.
    pub fn apply(&self, model: Model) -> Result<(), ModelError> {
        model.validate()?;
        let mut ids = self.inner.ids.lock().unwrap();
        let names = model
            .uplinks
            .iter()
            .map(|u| &u.name)
            .chain(model.ports.iter().map(|p| &p.name));
        let mut ports = vec![];
        for n in names {
            let next = ids.len() as u32 + 1;
            ports.push(*ids.entry(n.clone()).or_insert(next));
        }
        self.inner
            .current
            .store(Arc::new(Published { model, ports }));
        Ok(())
    }

    pub fn model(&self) -> Model {
        self.inner.current.load().model.clone()
    }

    /// The numeric id of a port or uplink, stable across `apply`.
    pub fn port_id(&self, name: &str) -> Option<u32> {
        self.inner.ids.lock().unwrap().get(name).copied()
    }

    pub fn worker(&self) -> Worker {
        Worker { sw: self.clone() }
    }
}

/// Per-forwarding-thread state (caches, meters, counters). `Send`, not shared.
pub struct Worker {
    sw: Switch,
}

impl Worker {
    /// Decides the fate of every frame of a burst received on `in_port`.
    pub fn process_burst(
        &mut self,
        in_port: u32,
        frames: &[&[u8]],
        _now_ns: u64,
        out: &mut BurstResult,
    ) {
        out.clear();
        let cur = self.sw.inner.current.load();
        for f in frames {
            let k = parse(in_port, f);
            let start = out.emits.len() as u32;
            if k.is_invalid() {
                out.packets.push(PacketResult {
                    emit_start: start,
                    emit_len: 0,
                    drop: Some(DropReason::Malformed),
                });
                continue;
            }
            for &p in cur.ports.iter().filter(|&&p| p != in_port) {
                out.emits.push(Emit {
                    port: p,
                    vlan: VlanEdit::Keep,
                    fill_tcp_csum: false,
                });
            }
            let n = out.emits.len() as u32 - start;
            let drop = (n == 0).then_some(DropReason::Loop);
            out.packets.push(PacketResult {
                emit_start: start,
                emit_len: n,
                drop,
            });
        }
    }
}
