//! From the operator's [`Model`] to the tables of a [`Pipeline`].
//!
//! Table layout (ingress: tables 0–5, then per output port: egress tables 10–13):
//! | table | name | what it decides |
//! |---|---|---|
//! | 0 | classify | input port, VLAN access/trunk/uplink checks → VLAN domain in `reg0` |
//! | 1 | port_security | DHCP isolation, IP–MAC binding (anti-spoofing) |
//! | 2 | egress_ct | conntrack lookup in the sender's zone |
//! | 3 | egress_sg | sender's security group, egress rules |
//! | 4 | meter | sender's transmit shaping |
//! | 5 | l2 | MAC learning forwarding within `reg0` |
//! | 10 | egress_vlan | is the output port in `reg0`'s VLAN? |
//! | 11 | ingress_ct | conntrack lookup in the receiver's zone |
//! | 12 | ingress_sg | receiver's security group, ingress rules |
//! | 13 | output | VLAN tag out (strip for access, tag for trunk/uplink), checksum fill |
//!
//! Rules are grouped by owner (the global rules, each uplink, each port). Each owner's inputs are
//! fingerprinted; an update recompiles only the owners whose fingerprint changed and applies the
//! difference to the tables by rule id, so the outcome equals a compilation from scratch.
//!
//! One module per table family writes its part of an owner's rules: `vlan` (tables 0, 10, 13),
//! `port_security` (1), `security_group` (2–3, 11–12), `shaping` (4); `tables` holds the
//! layout they share. This module is the incremental driver.

mod port_security;
mod security_group;
mod shaping;
mod tables;
mod vlan;

use crate::classifier::{Rule, Table, TableId};
use crate::conntrack::CtEntryInfo;
use crate::key::MAX_PORTS;
use crate::meter::MeterConfig;
use crate::pipeline::{Pipeline, PortInfo};
use model::Mac;
use model::{Model, ModelError, Port, PortMode};
use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use tables::Rules;

pub use port_security::eui64_link_local;
pub use security_group::CT_EST_OR_REL;
pub use tables::{
    TABLE_COUNT, TABLE_NAMES, T_CLASSIFY, T_EGRESS_CT, T_EGRESS_SG, T_EGRESS_VLAN, T_INGRESS_CT,
    T_INGRESS_SG, T_L2, T_METER, T_OUTPUT, T_PORT_SECURITY,
};

/// What an update changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyReport {
    pub rules_added: usize,
    pub rules_removed: usize,
    pub owners_recompiled: usize,
    pub removed_ports: Vec<u32>,
    pub unbound_macs: Vec<(u32, Mac)>,
    /// Conntrack zones whose security-group rules changed.
    pub sg_changed_zones: Vec<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Owner {
    Global,
    Uplink(String),
    Port(String),
}

struct Compiled {
    fingerprint: u64,
    rules: Vec<(TableId, Rule)>,
    /// Fingerprint of the security-group part alone (to know whose connections to re-check).
    sg_fingerprint: u64,
}

/// Incremental compiler state: the current model, port ids, and every owner's rules.
pub struct Compiler {
    model: Model,
    ids: BTreeMap<String, u32>,
    owners: BTreeMap<Owner, Compiled>,
    pipeline: Pipeline,
}

impl Default for Compiler {
    fn default() -> Self {
        Self::new()
    }
}

fn fingerprint<T: serde::Serialize + ?Sized>(v: &T) -> u64 {
    let s = serde_json::to_string(v).expect("model types serialize");
    let mut h = std::collections::hash_map::DefaultHasher::new();
    s.hash(&mut h);
    h.finish()
}

impl Compiler {
    pub fn new() -> Compiler {
        let pipeline = Pipeline {
            tables: vec![Table::new(); TABLE_COUNT],
            egress_table: T_EGRESS_VLAN,
            table_names: TABLE_NAMES.to_vec(),
            ..Pipeline::default()
        };
        Compiler {
            model: Model::default(),
            ids: BTreeMap::new(),
            owners: BTreeMap::new(),
            pipeline,
        }
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    /// A fresh compiler that will give the named ports these ids (used to compare an incremental
    /// history with a compilation from scratch, and to keep ids across a daemon restart).
    pub fn with_ids(ids: BTreeMap<String, u32>) -> Compiler {
        Compiler {
            ids,
            ..Compiler::new()
        }
    }

    /// A fresh compiler whose first update publishes version `generation` with these port ids:
    /// a restarted daemon continues the generations it acknowledged before (a client comparing
    /// generations never sees one go back) and keeps its ports' ids (conntrack zones, counters).
    pub fn resuming(ids: BTreeMap<String, u32>, generation: u64) -> Compiler {
        let mut c = Compiler::with_ids(ids);
        c.pipeline.version = generation.saturating_sub(1);
        c
    }

    pub fn ids(&self) -> &BTreeMap<String, u32> {
        &self.ids
    }
    pub fn port_id(&self, name: &str) -> Option<u32> {
        self.ids.get(name).copied()
    }
    /// A copy of the current pipeline, to publish.
    pub fn pipeline(&self) -> Pipeline {
        self.pipeline.clone()
    }

    /// The MAC bound to port `name` (IP–MAC binding on an access group), if any.
    pub fn bound_mac(&self, name: &str) -> Option<Mac> {
        let p = self.model.ports.iter().find(|p| p.name == name)?;
        let pg = self.model.port_group(&p.port_group)?;
        (pg.ip_mac_binding && matches!(pg.mode(), PortMode::Access { .. })).then_some(p.mac)
    }

    /// VLAN domains port `id` belongs to.
    pub fn domains_of(&self, id: u32) -> Vec<u32> {
        self.pipeline
            .flood
            .iter()
            .filter(|(_, ps)| ps.contains(&id))
            .map(|(d, _)| *d)
            .collect()
    }

    /// Validates and compiles `model`; on error nothing changes.
    pub fn update(&mut self, model: &Model) -> Result<ApplyReport, ModelError> {
        model.validate()?;
        let mut report = ApplyReport::default();
        // Ids: existing names keep theirs; new names get the smallest free id (ids double as
        // conntrack zones and counter indexes, so they stay small).
        let names: BTreeSet<&str> = model
            .uplinks
            .iter()
            .map(|u| u.name.as_str())
            .chain(model.ports.iter().map(|p| p.name.as_str()))
            .collect();
        let mut ids = self.ids.clone();
        ids.retain(|n, id| {
            let keep = names.contains(n.as_str());
            if !keep {
                report.removed_ports.push(*id);
            }
            keep
        });
        let mut used: BTreeSet<u32> = ids.values().copied().collect();
        let mut next = 1u32;
        for n in &names {
            if !ids.contains_key(*n) {
                while used.contains(&next) {
                    next += 1;
                }
                if next as usize >= MAX_PORTS {
                    return Err(ModelError {
                        object: format!("port {n:?}"),
                        field: "name".into(),
                        message: format!("too many ports: at most {} per switch", MAX_PORTS - 1),
                    });
                }
                ids.insert(n.to_string(), next);
                used.insert(next);
            }
        }
        let old_bound: BTreeSet<(u32, Mac)> = self.static_macs();

        // Each owner with its inputs' fingerprint.
        let uplink_vlans = vlan::effective_uplink_vlans(model);
        let mut wanted: BTreeMap<Owner, (u64, u64)> = BTreeMap::new();
        wanted.insert(Owner::Global, (0, 0));
        for u in &model.uplinks {
            let vl = if u.vlans.is_empty() {
                &uplink_vlans
            } else {
                &u.vlans
            };
            wanted.insert(
                Owner::Uplink(u.name.clone()),
                (fingerprint(&(u, ids[&u.name], vl)), 0),
            );
        }
        for p in &model.ports {
            let pg = model.port_group(&p.port_group).expect("validated");
            let sg = p
                .security_group
                .as_deref()
                .and_then(|s| model.security_group(s));
            let remotes = sg
                .map(|sg| security_group::remote_members(model, sg))
                .unwrap_or_default();
            let sg_fp = fingerprint(&(sg, &remotes));
            // DHCP server replies towards a port with a group are accepted from the uplinks only.
            let uplink_ids: Vec<u32> = match sg {
                Some(_) => model.uplinks.iter().map(|u| ids[&u.name]).collect(),
                None => vec![],
            };
            wanted.insert(
                Owner::Port(p.name.clone()),
                (
                    fingerprint(&(p, ids[&p.name], pg, sg_fp, uplink_ids)),
                    sg_fp,
                ),
            );
        }

        let new_model = model.clone();
        let old_owners: Vec<Owner> = self.owners.keys().cloned().collect();
        for o in old_owners {
            if !wanted.contains_key(&o) {
                let c = self.owners.remove(&o).unwrap();
                for (t, r) in &c.rules {
                    self.pipeline.tables[*t as usize].remove(r.id);
                    report.rules_removed += 1;
                }
            }
        }
        for (o, (fp, sg_fp)) in wanted {
            let old_sg = self.owners.get(&o).map(|c| c.sg_fingerprint);
            if self.owners.get(&o).map(|c| c.fingerprint) == Some(fp) && old_sg.is_some() {
                continue;
            }
            let rules = compile_owner(&new_model, &ids, &o);
            report.owners_recompiled += 1;
            let old = self.owners.remove(&o).map(|c| c.rules).unwrap_or_default();
            // Ids are per owner and position, so one may move to another table: diff by both.
            let new_ids: BTreeSet<(TableId, u64)> = rules.iter().map(|(t, r)| (*t, r.id)).collect();
            for (t, r) in &old {
                if !new_ids.contains(&(*t, r.id)) {
                    self.pipeline.tables[*t as usize].remove(r.id);
                    report.rules_removed += 1;
                }
            }
            let old_by_id: BTreeMap<(TableId, u64), &Rule> =
                old.iter().map(|(t, r)| ((*t, r.id), r)).collect();
            for (t, r) in &rules {
                if old_by_id.get(&(*t, r.id)) != Some(&r) {
                    self.pipeline.tables[*t as usize].insert(r.clone());
                    report.rules_added += 1;
                }
            }
            if let Owner::Port(name) = &o {
                if old_sg.is_some_and(|s| s != sg_fp) {
                    report.sg_changed_zones.push(ids[name] as u16);
                }
            }
            self.owners.insert(
                o,
                Compiled {
                    fingerprint: fp,
                    rules,
                    sg_fingerprint: sg_fp,
                },
            );
        }

        self.model = new_model;
        self.ids = ids;
        self.rebuild_port_maps();
        self.pipeline.version += 1;
        let new_bound = self.static_macs();
        report.unbound_macs = old_bound
            .difference(&new_bound)
            .map(|(d, m)| (*d, *m))
            .collect();
        Ok(report)
    }

    fn static_macs(&self) -> BTreeSet<(u32, Mac)> {
        let mut out = BTreeSet::new();
        for p in &self.model.ports {
            if let (Some(mac), Some(id)) = (self.bound_mac(&p.name), self.ids.get(&p.name)) {
                for d in self.domains_of(*id) {
                    out.insert((d, mac));
                }
            }
        }
        out
    }

    /// Flood lists, meters and port info: cheap, rebuilt from the model on every update.
    fn rebuild_port_maps(&mut self) {
        let m = &self.model;
        let mut flood: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
        let mut meters = BTreeMap::new();
        let mut storm = BTreeMap::new();
        let mut ports = BTreeMap::new();
        // A storm control without any limit costs nothing: such ports are left out.
        let limited = |s: Option<&model::StormControl>| {
            s.filter(|s| s.limits().iter().any(|(_, l)| l.is_some()))
                .copied()
        };
        let uplink_vlans = vlan::effective_uplink_vlans(m);
        for u in &m.uplinks {
            let id = self.ids[&u.name];
            let vl = if u.vlans.is_empty() {
                &uplink_vlans
            } else {
                &u.vlans
            };
            for r in vl {
                for v in r.first..=r.last {
                    flood.entry(v as u32).or_default().push(id);
                }
            }
            if let Some(s) = limited(u.storm_control.as_ref()) {
                storm.insert(id, s);
            }
            ports.insert(
                id,
                PortInfo {
                    name: u.name.clone(),
                    is_uplink: true,
                    security_group: None,
                },
            );
        }
        for p in &m.ports {
            let id = self.ids[&p.name];
            let pg = m.port_group(&p.port_group).expect("validated");
            for v in vlan::port_vlans(&pg.mode()) {
                flood.entry(v as u32).or_default().push(id);
            }
            if let Some(s) = &pg.shaping {
                meters.insert(id, MeterConfig::from_shaping(s));
            }
            if let Some(s) = limited(p.effective_storm_control(pg)) {
                storm.insert(id, s);
            }
            ports.insert(
                id,
                PortInfo {
                    name: p.name.clone(),
                    is_uplink: false,
                    security_group: p.security_group.clone(),
                },
            );
        }
        for v in flood.values_mut() {
            v.sort_unstable();
            v.dedup();
        }
        self.pipeline.flood = flood;
        self.pipeline.meters = meters;
        self.pipeline.storm = storm;
        self.pipeline.ports = ports;
    }

    /// Would the current tables still allow the original direction of connection `e`?
    /// Used to cut connections that only a removed rule allowed.
    pub fn connection_allowed(&self, pl: &Pipeline, e: &CtEntryInfo) -> bool {
        let port = e.zone as u32;
        let ips = pl.ports.get(&port).and_then(|_| {
            let name = self
                .ids
                .iter()
                .find(|(_, id)| **id == port)
                .map(|(n, _)| n)?;
            self.model
                .ports
                .iter()
                .find(|p| &p.name == name)
                .map(|p| p.ips.clone())
        });
        security_group::connection_allowed(pl, e, &ips.unwrap_or_default())
    }
}

fn compile_owner(m: &Model, ids: &BTreeMap<String, u32>, o: &Owner) -> Vec<(TableId, Rule)> {
    let mut rs = Rules::new(o);
    match o {
        Owner::Global => compile_global(&mut rs),
        Owner::Uplink(n) => {
            let u = m
                .uplinks
                .iter()
                .find(|u| &u.name == n)
                .expect("owner exists");
            let vl = if u.vlans.is_empty() {
                vlan::effective_uplink_vlans(m)
            } else {
                u.vlans.clone()
            };
            vlan::uplink(&mut rs, n, ids[n], &vl);
        }
        Owner::Port(n) => {
            let p = m.ports.iter().find(|p| &p.name == n).expect("owner exists");
            compile_port(&mut rs, m, ids, p, ids[n]);
        }
    }
    rs.out
}

/// The rules every switch has, whatever its ports.
fn compile_global(rs: &mut Rules) {
    vlan::classify_defaults(rs);
    shaping::unshaped(rs);
    vlan::domain_defaults(rs);
}

/// A guest port's rules, family by family (the order fixes the rules' ids).
fn compile_port(rs: &mut Rules, m: &Model, ids: &BTreeMap<String, u32>, p: &Port, id: u32) {
    let pg = m.port_group(&p.port_group).expect("validated");
    vlan::port(rs, p, pg, id);
    port_security::port(rs, p, pg, id);
    let uplinks: Vec<u32> = m.uplinks.iter().map(|u| ids[&u.name]).collect();
    security_group::port(rs, m, p, id, &uplinks);
    shaping::port(rs, pg, id);
}

#[cfg(test)]
mod tests;
