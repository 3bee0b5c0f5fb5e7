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

use crate::classifier::{range_to_prefixes, Action, Match, Rule, Table, TableId};
use crate::conntrack::CtEntryInfo;
use crate::key::{self, ct, flags, MAX_PORTS};
use crate::matcher::MatchBuilder;
use crate::meter::MeterConfig;
use crate::pipeline::{Pipeline, PortInfo, Terminal};
use crate::verdict::DropReason;
use model::Mac;
use model::{
    Direction, EtherType, Model, ModelError, Port, PortMode, Remote, SecurityGroup, SgRule,
    VlanRange,
};
use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

pub const T_CLASSIFY: TableId = 0;
pub const T_PORT_SECURITY: TableId = 1;
pub const T_EGRESS_CT: TableId = 2;
pub const T_EGRESS_SG: TableId = 3;
pub const T_METER: TableId = 4;
pub const T_L2: TableId = 5;
pub const T_EGRESS_VLAN: TableId = 10;
pub const T_INGRESS_CT: TableId = 11;
pub const T_INGRESS_SG: TableId = 12;
pub const T_OUTPUT: TableId = 13;
pub const TABLE_COUNT: usize = 14;

pub const TABLE_NAMES: [&str; TABLE_COUNT] = [
    "classify",
    "port_security",
    "egress_ct",
    "egress_sg",
    "meter",
    "l2",
    "",
    "",
    "",
    "",
    "egress_vlan",
    "ingress_ct",
    "ingress_sg",
    "output",
];

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
        let uplink_vlans = effective_uplink_vlans(model);
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
            let remotes = sg.map(|sg| remote_members(model, sg)).unwrap_or_default();
            let sg_fp = fingerprint(&(sg, &remotes));
            wanted.insert(
                Owner::Port(p.name.clone()),
                (fingerprint(&(p, ids[&p.name], pg, sg_fp)), sg_fp),
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
        let mut ports = BTreeMap::new();
        let uplink_vlans = effective_uplink_vlans(m);
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
            for v in port_vlans(&pg.mode()) {
                flood.entry(v as u32).or_default().push(id);
            }
            if let Some(s) = &pg.shaping {
                meters.insert(id, MeterConfig::from_shaping(s));
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
        self.pipeline.ports = ports;
    }

    /// Would the current tables still allow the original direction of connection `e`?
    /// Used to cut connections that only a removed rule allowed.
    pub fn connection_allowed(&self, pl: &Pipeline, e: &CtEntryInfo) -> bool {
        let port = e.zone as u32;
        let mut k = e.orig_key();
        k.set_ct_state(ct::TRACKED | ct::NEW);
        let allowed = |seg: crate::pipeline::Segment| {
            matches!(seg.terminal, Terminal::Ct { commit: true, .. })
        };
        let mut eg = k;
        eg.set_in_port(port);
        eg.set_stage(T_EGRESS_SG);
        let mut ing = k;
        ing.set_out_port(port);
        ing.set_stage(T_INGRESS_SG);
        // A zone holds both the connections its port opened (egress) and those opened towards it
        // (ingress); the port's addresses tell which. Without addresses, either check may keep it.
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
        let ips = ips.unwrap_or_default();
        let opened_by_port = ips.contains(&e.src);
        let opened_to_port = ips.contains(&e.dst);
        match (opened_by_port, opened_to_port) {
            (true, false) => allowed(pl.walk(&eg, None)),
            (false, true) => allowed(pl.walk(&ing, None)),
            _ => allowed(pl.walk(&eg, None)) || allowed(pl.walk(&ing, None)),
        }
    }
}

/// VLANs an uplink without an explicit list carries: every VLAN of every port group.
fn effective_uplink_vlans(m: &Model) -> Vec<VlanRange> {
    let mut set = BTreeSet::new();
    for pg in &m.port_groups {
        set.extend(port_vlans(&pg.mode()));
    }
    let mut out: Vec<VlanRange> = vec![];
    for v in set {
        match out.last_mut() {
            Some(r) if r.last + 1 == v => r.last = v,
            _ => out.push(VlanRange { first: v, last: v }),
        }
    }
    out
}

fn port_vlans(mode: &PortMode) -> Vec<u16> {
    match mode {
        PortMode::Access { vlan } => vec![*vlan],
        PortMode::Trunk { vlans, native_vlan } => {
            let mut v: Vec<u16> = vlans.iter().flat_map(|r| r.first..=r.last).collect();
            v.extend(native_vlan);
            v
        }
    }
}

/// For each group a security group's rules name as remote: its members' addresses.
fn remote_members(m: &Model, sg: &SecurityGroup) -> BTreeMap<String, Vec<IpAddr>> {
    let mut out = BTreeMap::new();
    for r in &sg.rules {
        if let Some(Remote::Group(g)) = &r.remote {
            let mut ips: Vec<IpAddr> = m
                .ports
                .iter()
                .filter(|p| p.security_group.as_deref() == Some(g.as_str()))
                .flat_map(|p| p.ips.iter().copied())
                .collect();
            ips.sort();
            ips.dedup();
            out.insert(g.clone(), ips);
        }
    }
    out
}

/// Accumulates one owner's rules with deterministic ids: a hash of the owner, then a counter.
struct Rules {
    base: u64,
    out: Vec<(TableId, Rule)>,
}

impl Rules {
    fn new(owner: &Owner) -> Rules {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        owner.hash(&mut h);
        Rules {
            base: h.finish() & !0xf_ffff,
            out: vec![],
        }
    }
    fn add(
        &mut self,
        table: TableId,
        priority: u32,
        m: Match,
        actions: Vec<Action>,
        note: impl Into<Arc<str>>,
    ) {
        let id = self.base | self.out.len() as u64;
        self.out.push((
            table,
            Rule {
                id,
                priority,
                m,
                actions: Arc::from(actions),
                note: note.into(),
            },
        ));
    }
}

fn ranges_text(r: &[VlanRange]) -> String {
    r.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(",")
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
                effective_uplink_vlans(m)
            } else {
                u.vlans.clone()
            };
            compile_uplink(&mut rs, n, ids[n], &vl);
        }
        Owner::Port(n) => {
            let p = m.ports.iter().find(|p| &p.name == n).expect("owner exists");
            compile_port(&mut rs, m, p, ids[n]);
        }
    }
    rs.out
}

fn compile_global(rs: &mut Rules) {
    let any = MatchBuilder::new();
    rs.add(
        T_CLASSIFY,
        1000,
        any.flags(flags::INVALID, flags::INVALID).build(),
        vec![Action::Drop(DropReason::Malformed)],
        "malformed frame (truncated or bad headers)",
    );
    rs.add(
        T_CLASSIFY,
        900,
        any.flags(flags::QINQ, flags::QINQ).build(),
        vec![Action::Drop(DropReason::StackedVlan)],
        "stacked VLAN tags (QinQ) are not supported",
    );
    rs.add(
        T_CLASSIFY,
        900,
        any.flags(flags::LINK_EXT_UNSUPPORTED, flags::LINK_EXT_UNSUPPORTED)
            .build(),
        vec![Action::Drop(DropReason::StackedVlan)],
        "more than two VLAN tags or MACsec",
    );
    rs.add(
        T_CLASSIFY,
        0,
        any.build(),
        vec![Action::Drop(DropReason::NoMatch)],
        "frame from a port that is not configured",
    );
    rs.add(
        T_METER,
        0,
        any.build(),
        vec![Action::GotoTable(T_L2)],
        "no transmit shaping",
    );
    rs.add(
        T_L2,
        0,
        any.build(),
        vec![Action::Normal],
        "L2 learning switch within the VLAN",
    );
    rs.add(
        T_EGRESS_VLAN,
        0,
        any.build(),
        vec![Action::Drop(DropReason::VlanNotAllowed)],
        "output port is not in this VLAN",
    );
}

fn compile_uplink(rs: &mut Rules, name: &str, id: u32, vlans: &[VlanRange]) {
    let b = MatchBuilder::new();
    let text = ranges_text(vlans);
    for r in vlans {
        for (v, mask) in range_to_prefixes(r.first as u32, r.last as u32, 12) {
            let note = format!("uplink {name} carries VLANs {text}");
            rs.add(
                T_CLASSIFY,
                100,
                b.in_port(id).vlan_masked(v as u16, mask as u16).build(),
                vec![Action::SetReg0FromVlan, Action::GotoTable(T_L2)],
                note.clone(),
            );
            rs.add(
                T_EGRESS_VLAN,
                100,
                b.out_port(id).reg0_masked(v, mask | 0xffff_f000).build(),
                vec![Action::GotoTable(T_OUTPUT)],
                note,
            );
        }
    }
    rs.add(
        T_CLASSIFY,
        80,
        b.in_port(id).build(),
        vec![Action::Drop(DropReason::VlanNotAllowed)],
        format!("VLAN not carried by uplink {name} (carries {text}; untagged frames are dropped)"),
    );
    rs.add(
        T_OUTPUT,
        100,
        b.out_port(id).build(),
        vec![Action::EmitTagged {
            fill_tcp_csum: false,
        }],
        format!("uplink {name}: send tagged"),
    );
}

fn compile_port(rs: &mut Rules, m: &Model, p: &Port, id: u32) {
    let pg = m.port_group(&p.port_group).expect("validated");
    let sg = p
        .security_group
        .as_deref()
        .and_then(|s| m.security_group(s));
    let b = MatchBuilder::new();
    let inp = b.in_port(id);
    let outp = b.out_port(id);
    let name = &p.name;
    let csum = pg.tcp_checksum_fill;
    let mode = pg.mode();

    // Table 0 and 10/13: VLAN membership in and out.
    match &mode {
        PortMode::Access { vlan } => {
            rs.add(
                T_CLASSIFY,
                100,
                inp.untagged().build(),
                vec![
                    Action::SetReg0(*vlan as u32),
                    Action::GotoTable(T_PORT_SECURITY),
                ],
                format!(
                    "port {name}: access port of group {} in VLAN {vlan}",
                    pg.name
                ),
            );
            rs.add(
                T_CLASSIFY,
                90,
                inp.tagged().build(),
                vec![Action::Drop(DropReason::TaggedOnAccess)],
                format!(
                    "tagged frame on access port {name} (group {}, VLAN {vlan})",
                    pg.name
                ),
            );
            rs.add(
                T_EGRESS_VLAN,
                100,
                outp.reg0(*vlan as u32).build(),
                vec![Action::GotoTable(T_INGRESS_CT)],
                format!("port {name} is in VLAN {vlan}"),
            );
            rs.add(
                T_OUTPUT,
                100,
                outp.build(),
                vec![Action::EmitUntagged {
                    fill_tcp_csum: csum,
                }],
                format!("access port {name}: send untagged"),
            );
        }
        PortMode::Trunk { vlans, native_vlan } => {
            let text = ranges_text(vlans);
            for r in vlans {
                for (v, mask) in range_to_prefixes(r.first as u32, r.last as u32, 12) {
                    rs.add(
                        T_CLASSIFY,
                        100,
                        inp.vlan_masked(v as u16, mask as u16).build(),
                        vec![Action::SetReg0FromVlan, Action::GotoTable(T_PORT_SECURITY)],
                        format!(
                            "port {name}: trunk of group {} allows VLANs {text}",
                            pg.name
                        ),
                    );
                    rs.add(
                        T_EGRESS_VLAN,
                        100,
                        outp.reg0_masked(v, mask | 0xffff_f000).build(),
                        vec![Action::GotoTable(T_INGRESS_CT)],
                        format!("trunk port {name} carries VLANs {text}"),
                    );
                }
            }
            match native_vlan {
                Some(n) => {
                    rs.add(
                        T_CLASSIFY,
                        100,
                        inp.untagged().build(),
                        vec![
                            Action::SetReg0(*n as u32),
                            Action::GotoTable(T_PORT_SECURITY),
                        ],
                        format!("port {name}: untagged frames go to native VLAN {n}"),
                    );
                    rs.add(
                        T_EGRESS_VLAN,
                        100,
                        outp.reg0(*n as u32).build(),
                        vec![Action::GotoTable(T_INGRESS_CT)],
                        format!("trunk port {name} has native VLAN {n}"),
                    );
                    rs.add(
                        T_OUTPUT,
                        110,
                        outp.reg0(*n as u32).build(),
                        vec![Action::EmitUntagged {
                            fill_tcp_csum: csum,
                        }],
                        format!("trunk port {name}: native VLAN {n} goes untagged"),
                    );
                }
                None => rs.add(
                    T_CLASSIFY,
                    90,
                    inp.untagged().build(),
                    vec![Action::Drop(DropReason::VlanNotAllowed)],
                    format!("untagged frame on trunk port {name}, which has no native VLAN"),
                ),
            }
            rs.add(
                T_CLASSIFY,
                80,
                inp.build(),
                vec![Action::Drop(DropReason::VlanNotAllowed)],
                format!("VLAN not allowed on trunk port {name} (allowed: {text})"),
            );
            rs.add(
                T_OUTPUT,
                100,
                outp.build(),
                vec![Action::EmitTagged {
                    fill_tcp_csum: csum,
                }],
                format!("trunk port {name}: send tagged"),
            );
        }
    }

    // Table 1: port security.
    let go = || vec![Action::GotoTable(T_EGRESS_CT)];
    if pg.dhcp_isolation {
        let note = format!(
            "DHCP isolation on group {}: guest {name} may not answer as a DHCP server",
            pg.name
        );
        rs.add(
            T_PORT_SECURITY,
            300,
            inp.eth_type(key::ETH_TYPE_IPV4)
                .ip_proto(key::IP_PROTO_UDP)
                .tp_src(67)
                .tp_dst(68)
                .build(),
            vec![Action::Drop(DropReason::DhcpServer)],
            note.clone(),
        );
        rs.add(
            T_PORT_SECURITY,
            300,
            inp.eth_type(key::ETH_TYPE_IPV6)
                .ip_proto(key::IP_PROTO_UDP)
                .tp_src(547)
                .tp_dst(546)
                .build(),
            vec![Action::Drop(DropReason::DhcpServer)],
            note,
        );
    }
    let binding = pg.ip_mac_binding && matches!(mode, PortMode::Access { .. });
    if binding {
        let mac = p.mac;
        let bound = p
            .ips
            .iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let from = inp.eth_src(mac);
        for ip in &p.ips {
            match ip {
                IpAddr::V4(_) => {
                    rs.add(
                        T_PORT_SECURITY,
                        200,
                        from.eth_type(key::ETH_TYPE_IPV4)
                            .ip_src_prefix(*ip, 32)
                            .build(),
                        go(),
                        format!("{ip} is bound to port {name}"),
                    );
                    rs.add(
                        T_PORT_SECURITY,
                        200,
                        from.eth_type(key::ETH_TYPE_ARP)
                            .arp_sha(mac)
                            .ip_src_prefix(*ip, 32)
                            .build(),
                        go(),
                        format!("ARP from {ip}/{mac}, bound to port {name}"),
                    );
                }
                IpAddr::V6(_) => rs.add(
                    T_PORT_SECURITY,
                    200,
                    from.eth_type(key::ETH_TYPE_IPV6)
                        .ip_src_prefix(*ip, 128)
                        .build(),
                    go(),
                    format!("{ip} is bound to port {name}"),
                ),
            }
        }
        let zero4 = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        rs.add(
            T_PORT_SECURITY,
            200,
            from.eth_type(key::ETH_TYPE_IPV4)
                .ip_src_prefix(zero4, 32)
                .ip_proto(key::IP_PROTO_UDP)
                .tp_src(68)
                .tp_dst(67)
                .build(),
            go(),
            "DHCP client request (source 0.0.0.0) is allowed",
        );
        rs.add(
            T_PORT_SECURITY,
            200,
            from.eth_type(key::ETH_TYPE_IPV6)
                .ip_src_prefix(IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0)), 10)
                .build(),
            go(),
            "IPv6 link-local source is allowed",
        );
        rs.add(
            T_PORT_SECURITY,
            200,
            from.eth_type(key::ETH_TYPE_IPV6)
                .ip_src_prefix(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 128)
                .build(),
            go(),
            "IPv6 unspecified source (duplicate address detection) is allowed",
        );
        for (et, what) in [
            (key::ETH_TYPE_IPV4, "IPv4"),
            (key::ETH_TYPE_ARP, "ARP"),
            (key::ETH_TYPE_IPV6, "IPv6"),
        ] {
            rs.add(
                T_PORT_SECURITY,
                150,
                from.eth_type(et).build(),
                vec![Action::Drop(DropReason::SpoofedIp)],
                format!("{what} source address not bound to port {name} (bound: {bound})"),
            );
        }
        rs.add(
            T_PORT_SECURITY,
            100,
            from.build(),
            go(),
            format!("source MAC {mac} is bound to port {name}"),
        );
        rs.add(
            T_PORT_SECURITY,
            50,
            inp.build(),
            vec![Action::Drop(DropReason::SpoofedMac)],
            format!("source MAC not bound to port {name} (bound: {mac})"),
        );
    } else {
        rs.add(
            T_PORT_SECURITY,
            10,
            inp.build(),
            go(),
            format!("port {name}: no IP–MAC binding"),
        );
    }

    // Tables 2–3 and 11–12: the security group, both directions, stateful.
    let zone = id as u16;
    match sg {
        Some(sg) => {
            for (dir, ct_t, sg_t, next, port_m) in [
                (Direction::Egress, T_EGRESS_CT, T_EGRESS_SG, T_METER, inp),
                (
                    Direction::Ingress,
                    T_INGRESS_CT,
                    T_INGRESS_SG,
                    T_OUTPUT,
                    outp,
                ),
            ] {
                for et in [key::ETH_TYPE_IPV4, key::ETH_TYPE_IPV6] {
                    rs.add(
                        ct_t,
                        100,
                        port_m.eth_type(et).build(),
                        vec![Action::Ct {
                            zone,
                            commit: false,
                            table: sg_t,
                        }],
                        format!(
                            "security group {} of port {name}: track connection",
                            sg.name
                        ),
                    );
                }
                rs.add(
                    ct_t,
                    10,
                    port_m.build(),
                    vec![Action::GotoTable(sg_t + 1)],
                    "non-IP traffic is not filtered by security groups",
                );
                rs.add(sg_t, 300, port_m.ct_state(ct::TRACKED | ct::INVALID, ct::TRACKED | ct::INVALID).build(), vec![Action::Drop(DropReason::CtInvalid)], "connection tracking: invalid packet (bad TCP state, unrelated ICMP error, fragment)");
                rs.add(
                    sg_t,
                    200,
                    port_m
                        .ct_state(ct::TRACKED | ct::ESTABLISHED, ct::TRACKED | ct::ESTABLISHED)
                        .build(),
                    vec![Action::GotoTable(next)],
                    "packet of an established connection",
                );
                rs.add(
                    sg_t,
                    200,
                    port_m
                        .ct_state(ct::TRACKED | ct::RELATED, ct::TRACKED | ct::RELATED)
                        .build(),
                    vec![Action::GotoTable(next)],
                    "packet related to a connection (ICMP error)",
                );
                for (i, r) in sg
                    .rules
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| r.direction == dir)
                {
                    let new = port_m.ct_state(ct::TRACKED | ct::NEW, ct::TRACKED | ct::NEW);
                    for mm in sg_rule_matches(m, r, new, dir) {
                        rs.add(
                            sg_t,
                            100,
                            mm,
                            vec![Action::Ct {
                                zone,
                                commit: true,
                                table: next,
                            }],
                            format!(
                                "security group {} rule {i} ({}) allows the new connection",
                                sg.name,
                                describe_rule(r)
                            ),
                        );
                    }
                }
                let what = if dir == Direction::Egress {
                    "egress"
                } else {
                    "ingress"
                };
                let reason = if dir == Direction::Egress {
                    DropReason::SgEgressDenied
                } else {
                    DropReason::SgIngressDenied
                };
                rs.add(
                    sg_t,
                    1,
                    port_m.build(),
                    vec![Action::Drop(reason)],
                    format!("{what} rule missing in security group {}", sg.name),
                );
            }
        }
        None => {
            rs.add(
                T_EGRESS_CT,
                10,
                inp.build(),
                vec![Action::GotoTable(T_METER)],
                format!("port {name} has no security group"),
            );
            rs.add(
                T_INGRESS_CT,
                10,
                outp.build(),
                vec![Action::GotoTable(T_OUTPUT)],
                format!("port {name} has no security group"),
            );
        }
    }

    // Table 4: transmit shaping.
    if let Some(s) = &pg.shaping {
        rs.add(
            T_METER,
            100,
            inp.build(),
            vec![Action::Meter(id), Action::GotoTable(T_L2)],
            format!(
                "group {} shapes transmit to {} Mbit/s average, {} Mbit/s peak",
                pg.name,
                s.average_mbps,
                s.peak_mbps.unwrap_or(s.average_mbps)
            ),
        );
    }
}

fn describe_rule(r: &SgRule) -> String {
    let mut s = format!("{:?} {:?} {:?}", r.direction, r.ethertype, r.protocol).to_lowercase();
    if let (Some(a), b) = (r.port_min, r.port_max) {
        s += &format!(" port {a}-{}", b.unwrap_or(a));
    } else if let Some(b) = r.port_max {
        s += &format!(" port 0-{b}");
    }
    if let Some(t) = r.icmp_type {
        s += &format!(" icmp type {t}");
        if let Some(c) = r.icmp_code {
            s += &format!(" code {c}");
        }
    }
    match &r.remote {
        Some(Remote::Cidr(c)) => s += &format!(" remote {c}"),
        Some(Remote::Group(g)) => s += &format!(" remote group {g}"),
        None => {}
    }
    s
}

/// The matches that together express one security-group rule (port ranges and remote groups
/// expand into several).
fn sg_rule_matches(m: &Model, r: &SgRule, base: MatchBuilder, dir: Direction) -> Vec<Match> {
    let et = if r.ethertype == EtherType::IPv4 {
        key::ETH_TYPE_IPV4
    } else {
        key::ETH_TYPE_IPV6
    };
    let mut b = base.eth_type(et);
    if let Some(p) = r.protocol.number(r.ethertype) {
        b = b.ip_proto(p);
    }
    if let Some(t) = r.icmp_type {
        b = b.tp_src(t as u16);
        if let Some(c) = r.icmp_code {
            b = b.tp_dst(c as u16);
        }
    }
    let mut with_ports = vec![];
    if r.port_min.is_some() || r.port_max.is_some() {
        let lo = r.port_min.unwrap_or(0) as u32;
        let hi = r.port_max.unwrap_or(u16::MAX) as u32;
        for (v, mask) in range_to_prefixes(lo, hi, 16) {
            with_ports.push(b.tp_dst_masked(v as u16, mask as u16));
        }
    } else {
        with_ports.push(b);
    }
    // The remote end is the destination of egress traffic and the source of ingress traffic.
    let remote_prefixes: Option<Vec<(IpAddr, u8)>> = match &r.remote {
        None => None,
        Some(Remote::Cidr(c)) => Some(vec![(c.addr, c.len)]),
        Some(Remote::Group(g)) => Some(
            m.ports
                .iter()
                .filter(|p| p.security_group.as_deref() == Some(g.as_str()))
                .flat_map(|p| p.ips.iter())
                .filter(|ip| ip.is_ipv4() == (r.ethertype == EtherType::IPv4))
                .map(|ip| (*ip, if ip.is_ipv4() { 32 } else { 128 }))
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect(),
        ),
    };
    let mut out = vec![];
    for b in with_ports {
        match &remote_prefixes {
            None => out.push(b.build()),
            Some(ps) => {
                for (a, l) in ps {
                    let mm = if dir == Direction::Egress {
                        b.ip_dst_prefix(*a, *l)
                    } else {
                        b.ip_src_prefix(*a, *l)
                    };
                    out.push(mm.build());
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::FlowKey;
    use model::{PortGroup, Protocol, Shaping, Uplink};
    use proptest::prelude::*;

    fn snapshot(c: &Compiler) -> Vec<Vec<(u64, u32, Match, Vec<Action>, String)>> {
        c.pipeline
            .tables
            .iter()
            .map(|t| {
                t.rules()
                    .map(|r| {
                        (
                            r.id,
                            r.priority,
                            r.m,
                            r.actions.to_vec(),
                            r.note.to_string(),
                        )
                    })
                    .collect()
            })
            .collect()
    }

    fn base() -> Model {
        let mut m = Model::default();
        m.uplinks.push(Uplink {
            name: "up".into(),
            vlans: vec![],
        });
        m.port_groups.push(PortGroup::access("a100", 100));
        m.port_groups.push(PortGroup {
            dhcp_isolation: true,
            ip_mac_binding: true,
            ..PortGroup::access("b200", 200)
        });
        m.port_groups.push(PortGroup::trunk(
            "t",
            vec!["100-110".parse().unwrap()],
            Some(300),
        ));
        m.security_groups
            .push(SecurityGroup::default_group("default"));
        m.security_groups.push(SecurityGroup {
            name: "web".into(),
            rules: vec![],
        });
        m
    }

    #[derive(Debug, Clone)]
    enum Op {
        AddPort {
            n: u8,
            pg: u8,
            sg: u8,
        },
        RemovePort(u8),
        MovePort {
            n: u8,
            pg: u8,
        },
        SetSg {
            n: u8,
            sg: u8,
        },
        AddRule {
            port: u16,
            remote_group: bool,
            ingress: bool,
        },
        RemoveRule(u8),
        SetVlan(u16),
        Shape(u8),
        TogglePg(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..6, 0u8..3, 0u8..3).prop_map(|(n, pg, sg)| Op::AddPort { n, pg, sg }),
            (0u8..6).prop_map(Op::RemovePort),
            (0u8..6, 0u8..3).prop_map(|(n, pg)| Op::MovePort { n, pg }),
            (0u8..6, 0u8..3).prop_map(|(n, sg)| Op::SetSg { n, sg }),
            (1u16..2000, any::<bool>(), any::<bool>()).prop_map(|(port, remote_group, ingress)| {
                Op::AddRule {
                    port,
                    remote_group,
                    ingress,
                }
            }),
            (0u8..4).prop_map(Op::RemoveRule),
            (1u16..20).prop_map(Op::SetVlan),
            (0u8..3).prop_map(Op::Shape),
            (0u8..3).prop_map(Op::TogglePg),
        ]
    }

    fn apply_op(m: &mut Model, op: &Op) {
        let pgs = ["a100", "b200", "t"];
        let sg = |i: u8| match i {
            0 => None,
            1 => Some("default".to_string()),
            _ => Some("web".to_string()),
        };
        let name = |n: u8| format!("vm{n}");
        match op {
            Op::AddPort { n, pg, sg: s } => {
                if !m.ports.iter().any(|p| p.name == name(*n)) {
                    m.ports.push(Port {
                        name: name(*n),
                        mac: Mac([2, 0, 0, 0, 1, *n]),
                        ips: vec![IpAddr::V4(Ipv4Addr::new(10, 0, 0, *n + 1))],
                        port_group: pgs[*pg as usize].into(),
                        security_group: sg(*s),
                    })
                }
            }
            Op::RemovePort(n) => m.ports.retain(|p| p.name != name(*n)),
            Op::MovePort { n, pg } => m
                .ports
                .iter_mut()
                .filter(|p| p.name == name(*n))
                .for_each(|p| p.port_group = pgs[*pg as usize].into()),
            Op::SetSg { n, sg: s } => m
                .ports
                .iter_mut()
                .filter(|p| p.name == name(*n))
                .for_each(|p| p.security_group = sg(*s)),
            Op::AddRule {
                port,
                remote_group,
                ingress,
            } => m.security_groups[1].rules.push(SgRule {
                direction: if *ingress {
                    Direction::Ingress
                } else {
                    Direction::Egress
                },
                ethertype: EtherType::IPv4,
                protocol: Protocol::Tcp,
                port_min: Some(*port),
                port_max: Some(*port + 10),
                icmp_type: None,
                icmp_code: None,
                remote: remote_group.then(|| Remote::Group("default".into())),
            }),
            Op::RemoveRule(i) => {
                let rules = &mut m.security_groups[1].rules;
                if (*i as usize) < rules.len() {
                    rules.remove(*i as usize);
                }
            }
            Op::SetVlan(v) => m.port_groups[0].vlan = Some(*v),
            Op::Shape(i) => {
                let pg = &mut m.port_groups[*i as usize];
                pg.shaping = match pg.shaping {
                    Some(_) => None,
                    None => Some(Shaping {
                        average_mbps: 10.0,
                        peak_mbps: None,
                        burst_mbit: 0.0,
                        priority: Default::default(),
                    }),
                }
            }
            Op::TogglePg(i) => {
                let pg = &mut m.port_groups[*i as usize];
                pg.ip_mac_binding = !pg.ip_mac_binding;
                pg.tcp_checksum_fill = !pg.tcp_checksum_fill;
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn incremental_equals_from_scratch(ops in proptest::collection::vec(op(), 1..25)) {
            let mut inc = Compiler::new();
            let mut m = base();
            inc.update(&m).unwrap();
            for o in &ops {
                apply_op(&mut m, o);
                inc.update(&m).unwrap();
                let mut scratch = Compiler::with_ids(inc.ids().clone());
                scratch.update(&m).unwrap();
                prop_assert_eq!(snapshot(&inc), snapshot(&scratch));
                prop_assert_eq!(&inc.pipeline.flood, &scratch.pipeline.flood);
                prop_assert_eq!(&inc.pipeline.meters, &scratch.pipeline.meters);
            }
        }
    }

    /// Keys that look like the switch's traffic: the ports' MACs and IPs, the stages where
    /// segments start, tagged or not, TCP/UDP ports near the rules' ranges.
    fn traffic_key() -> impl Strategy<Value = FlowKey> {
        (
            (
                0u32..8,
                prop_oneof![Just(0u8), Just(3), Just(5), Just(10), Just(12)],
            ),
            (
                0u8..8,
                0u8..8,
                prop_oneof![Just(None), (1u16..20).prop_map(Some)],
            ),
            (
                prop_oneof![Just(6u8), Just(17), Just(1)],
                0u16..2100,
                0u16..2100,
            ),
            (0u8..64, 0u32..8, 0u32..300),
        )
            .prop_map(
                |((in_port, stage), (src, dst, vlan), (proto, sp, dp), (cts, out, reg0))| {
                    let mut k = FlowKey::ZERO;
                    k.set_in_port(in_port);
                    k.set_stage(stage);
                    k.set_eth_src(Mac([2, 0, 0, 0, 1, src]));
                    k.set_eth_dst(Mac([2, 0, 0, 0, 1, dst]));
                    if let Some(v) = vlan {
                        k.set_vlan_tci(crate::key::VLAN_PRESENT | v);
                    }
                    k.set_eth_type(crate::key::ETH_TYPE_IPV4);
                    k.set_ip_src(u32::from(Ipv4Addr::new(10, 0, 0, src + 1)) as u128);
                    k.set_ip_dst(u32::from(Ipv4Addr::new(10, 0, 0, dst + 1)) as u128);
                    k.set_ip_proto(proto);
                    k.set_tp_src(sp);
                    k.set_tp_dst(dp);
                    k.set_ct_state(cts);
                    k.set_out_port(out);
                    k.set_reg0(reg0);
                    k
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// On compiled port-group pipelines: any key that agrees with a walked key on the bits
        /// `walk_wc` reported walks to the same segment (megaflow cache entries are exact).
        #[test]
        fn megaflow_wildcards_are_exact(
            ops in proptest::collection::vec(op(), 1..15),
            probes in proptest::collection::vec((traffic_key(), traffic_key()), 1..40),
        ) {
            let mut c = Compiler::new();
            let mut m = base();
            for o in &ops {
                apply_op(&mut m, o);
            }
            c.update(&m).unwrap();
            let pl = &c.pipeline;
            for (k, noise) in probes {
                let mut wc = FlowKey::ZERO;
                let seg = pl.walk_wc(&k, &mut wc);
                prop_assert_eq!(seg, pl.walk(&k, None));
                let mut k2 = k;
                for i in 0..crate::key::KEY_WORDS {
                    k2.0[i] = (k.0[i] & wc.0[i]) | (noise.0[i] & !wc.0[i]);
                }
                prop_assert_eq!(pl.walk(&k2, None), seg, "key {:?} wc {:?}", k, wc);
            }
        }
    }

    #[test]
    fn one_port_change_recompiles_one_owner() {
        let mut c = Compiler::new();
        let mut m = base();
        for n in 0..5 {
            apply_op(&mut m, &Op::AddPort { n, pg: 0, sg: 0 });
        }
        c.update(&m).unwrap();
        apply_op(&mut m, &Op::MovePort { n: 3, pg: 1 });
        let r = c.update(&m).unwrap();
        assert_eq!(r.owners_recompiled, 1, "{r:?}");
        // Unchanged model: nothing recompiled, nothing touched.
        let r = c.update(&m).unwrap();
        assert_eq!(
            (r.owners_recompiled, r.rules_added, r.rules_removed),
            (0, 0, 0)
        );
        // A rule in a group used by nobody changes nothing in the tables.
        apply_op(
            &mut m,
            &Op::AddRule {
                port: 80,
                remote_group: false,
                ingress: true,
            },
        );
        let r = c.update(&m).unwrap();
        assert_eq!(r.rules_added + r.rules_removed, 0, "{r:?}");
    }

    #[test]
    fn invalid_model_changes_nothing() {
        let mut c = Compiler::new();
        let m = base();
        c.update(&m).unwrap();
        let before = snapshot(&c);
        let mut bad = m.clone();
        bad.port_groups[0].vlan = Some(0);
        assert!(c.update(&bad).is_err());
        assert_eq!(snapshot(&c), before);
        assert_eq!(c.model(), &m);
    }
}
