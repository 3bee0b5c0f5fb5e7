//! The desired state of a whole installation: distributed virtual switches (DVSs) spanning
//! hosts, what the controller stores and `dvsctl` edits.
//!
//! A DVS carries a set of VLANs across hosts; each host joins it with an uplink group (its
//! physical ports towards the network); port groups belong to one DVS; security groups are
//! shared by all; a port is a guest's vNIC in one port group, placed on one host.
//!
//! [`Cluster::validate`] checks every object against every other, with errors that name the
//! object and the field. [`Cluster::host_slice`] cuts out what one host needs: a per-switch
//! [`Model`] (the same type `evsd` reads from its config) plus how to attach each port, and
//! [`Cluster::affected_hosts`] says whose slice a set of changed objects can touch, so a change
//! is sent only to the hosts it concerns.
//!
//! One switch per host serves every DVS the host is in, and the switch's L2 domain is the VLAN.
//! Two DVSs that share a host must therefore carry disjoint VLANs; validation refuses the
//! overlap rather than silently bridging them.

use crate::attach::{Attach, EthdevConfig, Role, VhostConfig};
use crate::switch::{Model, ModelError, Port, PortGroup, PortMode, Remote, RemoteMembers};
use crate::switch::{SecurityGroup, Uplink, VlanRange};
use rustc_hash::{FxHashMap, FxHashSet};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// Where an agent puts the vhost-user sockets of its ports unless a port names its own.
pub const DEFAULT_VHOST_DIR: &str = "/run/evs/vhost";

/// A distributed virtual switch: a set of VLANs carried across the hosts that join it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(deny_unknown_fields)]
pub struct Dvs {
    pub name: String,
    /// The VLANs this DVS carries; every port group's VLANs must be among them.
    pub vlans: Vec<VlanRange>,
}

/// A hypervisor host running `evsd` with the host agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(deny_unknown_fields)]
pub struct Host {
    pub name: String,
    /// Directory of the vhost-user sockets the agent creates for ports placed here
    /// (`<dir>/<port>.sock`); absent: [`DEFAULT_VHOST_DIR`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vhost_dir: Option<PathBuf>,
    /// SHA-256 (hex) of the host's token; set by the controller, never the token itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_sha256: Option<String>,
}

/// How the members of an uplink group share traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum BondMode {
    /// One member carries everything; another takes over when its link fails.
    #[default]
    ActiveBackup,
    /// Spread by source MAC; needs no configuration on the physical switch.
    BalanceSlb,
    /// Spread by L3/L4 hash.
    BalanceTcp,
    /// IEEE 802.3ad, negotiated with the physical switch.
    Lacp,
}

impl fmt::Display for BondMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BondMode::ActiveBackup => "active-backup",
            BondMode::BalanceSlb => "balance-slb",
            BondMode::BalanceTcp => "balance-tcp",
            BondMode::Lacp => "lacp",
        })
    }
}

/// A host's physical ports into one DVS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(deny_unknown_fields)]
pub struct UplinkGroup {
    pub name: String,
    pub dvs: String,
    pub host: String,
    /// DPDK devargs or PCI addresses of the members (`0000:3b:00.0`,
    /// `net_af_packet0,iface=eth1`). Until bonds land the switch uses the first member.
    pub members: Vec<String>,
    #[serde(default)]
    pub bond_mode: BondMode,
    /// Storm control of what arrives from the network through this group (the switch's uplink).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storm_control: Option<crate::switch::StormControl>,
}

/// A port group of one DVS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DvsPortGroup {
    pub dvs: String,
    #[serde(flatten)]
    pub group: PortGroup,
}

/// A guest vNIC's port in a DVS, with where it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DvsPort {
    pub dvs: String,
    #[serde(flatten)]
    pub port: Port,
    /// The host the guest runs on; absent: defined but not placed anywhere yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The vhost-user endpoint; absent: `<host's vhost_dir>/<name>.sock`, switch as server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vhost: Option<VhostConfig>,
    /// Instead of vhost-user: a DPDK ethdev on the host (an SR-IOV VF, or `net_af_packet` on a
    /// veth towards a namespace guest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ethdev: Option<EthdevConfig>,
}

/// The kinds of objects, in the order a transaction creates them (deletes go in reverse).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Dvs,
    Host,
    SecurityGroup,
    PortGroup,
    Uplink,
    Port,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Dvs,
        Kind::Host,
        Kind::SecurityGroup,
        Kind::PortGroup,
        Kind::Uplink,
        Kind::Port,
    ];
    /// The path segment of this kind in store keys and URLs.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Dvs => "dvs",
            Kind::Host => "host",
            Kind::SecurityGroup => "security-group",
            Kind::PortGroup => "port-group",
            Kind::Uplink => "uplink",
            Kind::Port => "port",
        }
    }
    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One object of any kind, as stored and as carried by the controller's API
/// (`{"kind": "port-group", "dvs": "prod", "name": "web", ...}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Object {
    Dvs(Dvs),
    Host(Host),
    SecurityGroup(SecurityGroup),
    PortGroup(DvsPortGroup),
    Uplink(UplinkGroup),
    Port(DvsPort),
}

/// An object's identity: its kind and its id within the kind.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ObjectId {
    pub kind: Kind,
    /// `name` for DVSs, hosts, security groups and ports (port names are global: they are the
    /// vNICs' names); `dvs/name` for port groups; `dvs/host/name` for uplink groups.
    pub id: String,
}

impl ObjectId {
    pub fn new(kind: Kind, id: impl Into<String>) -> ObjectId {
        ObjectId {
            kind,
            id: id.into(),
        }
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:?}", self.kind, self.id)
    }
}

impl Object {
    pub fn kind(&self) -> Kind {
        match self {
            Object::Dvs(_) => Kind::Dvs,
            Object::Host(_) => Kind::Host,
            Object::SecurityGroup(_) => Kind::SecurityGroup,
            Object::PortGroup(_) => Kind::PortGroup,
            Object::Uplink(_) => Kind::Uplink,
            Object::Port(_) => Kind::Port,
        }
    }
    pub fn id(&self) -> ObjectId {
        let id = match self {
            Object::Dvs(d) => d.name.clone(),
            Object::Host(h) => h.name.clone(),
            Object::SecurityGroup(s) => s.name.clone(),
            Object::PortGroup(p) => format!("{}/{}", p.dvs, p.group.name),
            Object::Uplink(u) => format!("{}/{}/{}", u.dvs, u.host, u.name),
            Object::Port(p) => p.port.name.clone(),
        };
        ObjectId::new(self.kind(), id)
    }
}

/// One kind of object by id: a persistent (structurally shared) ordered map, so that copying
/// the state of a 100,000-port installation for each transaction or snapshot costs a pointer,
/// not 100,000 allocations (the controller copies it several times per change).
pub type Objects<V> = imbl::OrdMap<String, V>;

/// Every object of an installation, by id.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Cluster {
    #[serde(default)]
    pub dvs: Objects<Dvs>,
    #[serde(default)]
    pub hosts: Objects<Host>,
    #[serde(default)]
    pub security_groups: Objects<SecurityGroup>,
    /// By `dvs/name`.
    #[serde(default)]
    pub port_groups: Objects<DvsPortGroup>,
    /// By `dvs/host/name`.
    #[serde(default)]
    pub uplinks: Objects<UplinkGroup>,
    #[serde(default)]
    pub ports: Objects<DvsPort>,
}

/// One host's share of the installation: what its switch runs and how its ports attach.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct HostSlice {
    pub host: String,
    /// Port groups are named `dvs/name` and uplinks `dvs/name`, so groups of different DVSs
    /// never clash inside the one switch.
    pub model: Model,
    /// A backend for every uplink and placed port of `model`.
    pub attach: Vec<Attach>,
}

fn err(object: impl Into<String>, field: &str, message: impl Into<String>) -> ModelError {
    ModelError {
        object: object.into(),
        field: field.into(),
        message: message.into(),
    }
}

fn name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && !name.starts_with(['-', '.'])
}

/// Names become store keys, URL segments and socket file names: keep them to a safe alphabet.
pub fn check_name(object: &str, field: &str, name: &str) -> Result<(), ModelError> {
    if name_ok(name) {
        Ok(())
    } else {
        Err(err(
            object,
            field,
            format!(
                "{name:?} is not a valid name: 1-63 of letters, digits, '-', '_', '.', \
                 not starting with '-' or '.'"
            ),
        ))
    }
}

fn vlans_of(mode: &PortMode) -> Vec<VlanRange> {
    match mode {
        PortMode::Access { vlan } => vec![VlanRange {
            first: *vlan,
            last: *vlan,
        }],
        PortMode::Trunk { vlans, native_vlan } => {
            let mut v = vlans.clone();
            if let Some(n) = native_vlan {
                v.push(VlanRange {
                    first: *n,
                    last: *n,
                });
            }
            v
        }
    }
}

fn covered(carried: &[VlanRange], r: VlanRange) -> bool {
    (r.first..=r.last).all(|v| carried.iter().any(|c| c.contains(v)))
}

fn overlap(a: &[VlanRange], b: &[VlanRange]) -> Option<u16> {
    a.iter().find_map(|x| {
        b.iter()
            .find(|y| x.first <= y.last && y.first <= x.last)
            .map(|y| x.first.max(y.first))
    })
}

/// Re-labels a per-switch validation error with the cluster object it came from.
fn relabel(e: ModelError, object: &str) -> ModelError {
    ModelError {
        object: object.to_owned(),
        ..e
    }
}

impl Cluster {
    /// The cluster as a list of objects, in creation order.
    pub fn objects(&self) -> Vec<Object> {
        let mut v: Vec<Object> = vec![];
        v.extend(self.dvs.values().cloned().map(Object::Dvs));
        v.extend(self.hosts.values().cloned().map(Object::Host));
        v.extend(
            self.security_groups
                .values()
                .cloned()
                .map(Object::SecurityGroup),
        );
        v.extend(self.port_groups.values().cloned().map(Object::PortGroup));
        v.extend(self.uplinks.values().cloned().map(Object::Uplink));
        v.extend(self.ports.values().cloned().map(Object::Port));
        v
    }

    pub fn get(&self, id: &ObjectId) -> Option<Object> {
        let k = id.id.as_str();
        match id.kind {
            Kind::Dvs => self.dvs.get(k).cloned().map(Object::Dvs),
            Kind::Host => self.hosts.get(k).cloned().map(Object::Host),
            Kind::SecurityGroup => self
                .security_groups
                .get(k)
                .cloned()
                .map(Object::SecurityGroup),
            Kind::PortGroup => self.port_groups.get(k).cloned().map(Object::PortGroup),
            Kind::Uplink => self.uplinks.get(k).cloned().map(Object::Uplink),
            Kind::Port => self.ports.get(k).cloned().map(Object::Port),
        }
    }

    /// Puts `o` in place of the object with its id (or adds it).
    pub fn insert(&mut self, o: Object) {
        let id = o.id().id;
        match o {
            Object::Dvs(x) => drop(self.dvs.insert(id, x)),
            Object::Host(x) => drop(self.hosts.insert(id, x)),
            Object::SecurityGroup(x) => drop(self.security_groups.insert(id, x)),
            Object::PortGroup(x) => drop(self.port_groups.insert(id, x)),
            Object::Uplink(x) => drop(self.uplinks.insert(id, x)),
            Object::Port(x) => drop(self.ports.insert(id, x)),
        }
    }

    pub fn remove(&mut self, id: &ObjectId) -> Option<Object> {
        let k = id.id.as_str();
        match id.kind {
            Kind::Dvs => self.dvs.remove(k).map(Object::Dvs),
            Kind::Host => self.hosts.remove(k).map(Object::Host),
            Kind::SecurityGroup => self.security_groups.remove(k).map(Object::SecurityGroup),
            Kind::PortGroup => self.port_groups.remove(k).map(Object::PortGroup),
            Kind::Uplink => self.uplinks.remove(k).map(Object::Uplink),
            Kind::Port => self.ports.remove(k).map(Object::Port),
        }
    }

    /// Checks every object against every other; the first mistake found is returned, naming
    /// the object and the field.
    pub fn validate(&self) -> Result<(), ModelError> {
        for d in self.dvs.values() {
            let o = format!("dvs {:?}", d.name);
            check_name(&o, "name", &d.name)?;
            if d.vlans.is_empty() {
                return Err(err(o, "vlans", "a DVS must carry at least one VLAN range"));
            }
            // The per-switch checks of ranges (bounds, order, overlap) through an uplink.
            let probe = Model {
                uplinks: vec![Uplink {
                    name: d.name.clone(),
                    vlans: d.vlans.clone(),
                    storm_control: None,
                }],
                ..Model::default()
            };
            probe.validate().map_err(|e| relabel(e, &o))?;
        }
        for h in self.hosts.values() {
            check_name(&format!("host {:?}", h.name), "name", &h.name)?;
        }
        self.validate_security_groups()?;
        for (id, pg) in &self.port_groups {
            self.validate_port_group(id, pg)?;
        }

        let mut per_host_dvs: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        let mut uplink_of: BTreeMap<(&str, &str), &str> = BTreeMap::new();
        for (id, u) in &self.uplinks {
            let o = format!("uplink {id:?}");
            check_name(&o, "name", &u.name)?;
            if !self.dvs.contains_key(&u.dvs) {
                return Err(err(o, "dvs", format!("unknown DVS {:?}", u.dvs)));
            }
            if !self.hosts.contains_key(&u.host) {
                return Err(err(o, "host", format!("unknown host {:?}", u.host)));
            }
            if let Some(sc) = &u.storm_control {
                sc.check(&o)?;
            }
            if u.members.is_empty() {
                return Err(err(
                    o,
                    "members",
                    "an uplink group needs at least one member",
                ));
            }
            let mut seen = BTreeSet::new();
            for m in &u.members {
                if m.trim().is_empty() {
                    return Err(err(o, "members", "a member must not be empty"));
                }
                if !seen.insert(m) {
                    return Err(err(o, "members", format!("{m:?} is listed twice")));
                }
            }
            if let Some(other) = uplink_of.insert((&u.dvs, &u.host), &u.name) {
                return Err(err(
                    o,
                    "name",
                    format!(
                        "host {:?} already joins DVS {:?} through uplink group {other:?}; \
                         one group per host per DVS (add members to it instead)",
                        u.host, u.dvs
                    ),
                ));
            }
            per_host_dvs.entry(&u.host).or_default().insert(&u.dvs);
        }

        // This loop runs over every port of the installation on every transaction (100,000
        // ports: it was 190 ms per transaction with SipHash and a socket path per port). So:
        // Fx hashing, and lookups skipped when a port names the same DVS, group and host as the
        // one before (ports of one host are adjacent in name order). A socket path is built only
        // where two ports can clash: a port whose record names its socket, or a port with the
        // derived socket on a host where such a port was seen. Ports are visited in name order,
        // so a clash names the same earlier port as with ordered maps.
        let n = self.ports.len();
        let mut macs: FxHashMap<(&str, [u8; 6]), &str> = FxHashMap::default();
        macs.reserve(n);
        let mut ips: FxHashMap<(&str, IpAddr), &str> = FxHashMap::default();
        ips.reserve(n);
        // Sockets named in port records, by host.
        let mut named_sockets: FxHashMap<(&str, PathBuf), &str> = FxHashMap::default();
        let mut last_ok: Option<(&str, &str, Option<&str>, Option<&str>)> = None;
        let mut pg_id = String::new();
        for (name, p) in &self.ports {
            let o = || format!("port {name:?}");
            if !name_ok(name) {
                check_name(&o(), "name", name)?;
            }
            let refs = (
                p.dvs.as_str(),
                p.port.port_group.as_str(),
                p.port.security_group.as_deref(),
                p.host.as_deref(),
            );
            let host = match p.host.as_deref() {
                Some(h) => self.hosts.get(h).map(|x| (h, x)),
                None => None,
            };
            if last_ok != Some(refs) {
                if !self.dvs.contains_key(&p.dvs) {
                    return Err(err(o(), "dvs", format!("unknown DVS {:?}", p.dvs)));
                }
                pg_id.clear();
                pg_id.push_str(&p.dvs);
                pg_id.push('/');
                pg_id.push_str(&p.port.port_group);
                if !self.port_groups.contains_key(&pg_id) {
                    return Err(err(
                        o(),
                        "port_group",
                        format!(
                            "unknown port group {:?} in DVS {:?}",
                            p.port.port_group, p.dvs
                        ),
                    ));
                }
                if let Some(sg) = &p.port.security_group {
                    if !self.security_groups.contains_key(sg) {
                        return Err(err(
                            o(),
                            "security_group",
                            format!("unknown security group {sg:?}"),
                        ));
                    }
                }
                if let Some(h) = &p.host {
                    per_host_dvs.entry(h).or_default().insert(&p.dvs);
                }
                last_ok = Some(refs);
            }
            if p.port.mac.is_multicast() || p.port.mac == crate::Mac::ZERO {
                return Err(err(
                    o(),
                    "mac",
                    format!("{} is not a unicast MAC", p.port.mac),
                ));
            }
            if let Some(other) = macs.insert((&p.dvs, p.port.mac.0), name) {
                return Err(err(
                    o(),
                    "mac",
                    format!(
                        "{} is already used by port {other:?} in DVS {:?}",
                        p.port.mac, p.dvs
                    ),
                ));
            }
            for ip in &p.port.ips {
                if let Some(other) = ips.insert((&p.dvs, *ip), name) {
                    return Err(err(
                        o(),
                        "ips",
                        format!("{ip} is already used by port {other:?} in DVS {:?}", p.dvs),
                    ));
                }
            }
            if let (Some(h), None) = (&p.host, host) {
                return Err(err(o(), "host", format!("unknown host {h:?}")));
            }
            let Some((h, hrec)) = host else { continue };
            if p.ethdev.is_some() {
                if p.vhost.is_some() {
                    return Err(err(
                        o(),
                        "ethdev",
                        "has both `vhost` and `ethdev`; choose one",
                    ));
                }
                continue;
            }
            let clash = |other: &str, sock: &Path| {
                err(
                    o(),
                    "vhost.socket",
                    format!(
                        "{} is already the socket of port {other:?} on host {h:?}",
                        sock.display()
                    ),
                )
            };
            match &p.vhost {
                Some(v) => {
                    if let Some(other) = named_sockets.insert((h, v.socket.clone()), name) {
                        return Err(clash(other, &v.socket));
                    }
                    // The derived socket of another port of this host?
                    let dir = hrec
                        .vhost_dir
                        .as_deref()
                        .unwrap_or(Path::new(DEFAULT_VHOST_DIR));
                    let derived_name = v
                        .socket
                        .strip_prefix(dir)
                        .ok()
                        .and_then(|f| f.to_str())
                        .and_then(|f| f.strip_suffix(".sock"));
                    if let Some((other, q)) = derived_name.and_then(|n| self.ports.get_key_value(n))
                    {
                        if q.host.as_deref() == Some(h) && q.vhost.is_none() && q.ethdev.is_none() {
                            return Err(clash(other, &v.socket));
                        }
                    }
                }
                None => {
                    if !named_sockets.is_empty() {
                        let sock = self.socket_of(hrec, p).socket;
                        if let Some(other) = named_sockets.get(&(h, sock.clone())) {
                            return Err(clash(other, &sock));
                        }
                    }
                }
            }
        }

        // One switch per host: the DVSs it serves must not share a VLAN.
        for (h, dvss) in &per_host_dvs {
            let v: Vec<&Dvs> = dvss.iter().map(|d| &self.dvs[*d]).collect();
            for (i, a) in v.iter().enumerate() {
                for b in &v[i + 1..] {
                    if let Some(vid) = overlap(&a.vlans, &b.vlans) {
                        return Err(err(
                            format!("dvs {:?}", b.name),
                            "vlans",
                            format!(
                                "VLAN {vid} is also carried by DVS {:?}, and both are on host \
                                 {h:?}; DVSs sharing a host need disjoint VLANs",
                                a.name
                            ),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Validates the state after a change of `changed` to `before` (a valid state): a change
    /// of port groups and security groups that exist before and after is checked on those
    /// objects alone (nothing else can refer to their content), anything else against
    /// everything. At 100,000 ports that is the difference between tens of milliseconds and
    /// none for each policy change.
    pub fn validate_change(
        &self,
        before: &Cluster,
        changed: &[ObjectId],
    ) -> Result<(), ModelError> {
        let policy_only = changed.iter().all(|id| match id.kind {
            Kind::PortGroup => {
                before.port_groups.contains_key(&id.id) && self.port_groups.contains_key(&id.id)
            }
            Kind::SecurityGroup => {
                before.security_groups.contains_key(&id.id)
                    && self.security_groups.contains_key(&id.id)
            }
            _ => false,
        });
        if !policy_only {
            return self.validate();
        }
        self.validate_security_groups()?;
        for id in changed {
            if let (Kind::PortGroup, Some(pg)) = (id.kind, self.port_groups.get(&id.id)) {
                self.validate_port_group(&id.id, pg)?;
            }
        }
        Ok(())
    }

    /// Every security group, with the switch's own rule checks (remote groups must exist).
    fn validate_security_groups(&self) -> Result<(), ModelError> {
        let probe = Model {
            security_groups: self.security_groups.values().cloned().collect(),
            ..Model::default()
        };
        for s in self.security_groups.values() {
            check_name(&format!("security group {:?}", s.name), "name", &s.name)?;
        }
        probe.validate()?;

        Ok(())
    }

    /// One port group: its own checks, its DVS, and its VLANs carried by the DVS.
    fn validate_port_group(&self, id: &str, pg: &DvsPortGroup) -> Result<(), ModelError> {
        let o = format!("port group {id:?}");
        check_name(&o, "name", &pg.group.name)?;
        let Some(d) = self.dvs.get(&pg.dvs) else {
            return Err(err(o, "dvs", format!("unknown DVS {:?}", pg.dvs)));
        };
        let probe = Model {
            port_groups: vec![pg.group.clone()],
            ..Model::default()
        };
        probe.validate().map_err(|e| relabel(e, &o))?;
        for r in vlans_of(&pg.group.mode()) {
            if !covered(&d.vlans, r) {
                let carried: Vec<String> = d.vlans.iter().map(|v| v.to_string()).collect();
                let field = match pg.group.mode() {
                    PortMode::Access { .. } => "vlan",
                    PortMode::Trunk { .. } => "vlans",
                };
                return Err(err(
                    o,
                    field,
                    format!(
                        "VLAN {r} is not carried by DVS {:?} (it carries {})",
                        d.name,
                        carried.join(",")
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The vhost-user endpoint of a placed port.
    pub fn socket_of(&self, host: &Host, p: &DvsPort) -> VhostConfig {
        p.vhost.clone().unwrap_or_else(|| VhostConfig {
            socket: host
                .vhost_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_VHOST_DIR))
                .join(format!("{}.sock", p.port.name)),
            role: Role::Server,
        })
    }

    /// What host `host` runs: its uplink groups, its ports with their port groups and security
    /// groups, and the addresses of remote-group members placed elsewhere.
    pub fn host_slice(&self, host: &str) -> HostSlice {
        let mut one = self.host_slices(std::iter::once(host));
        one.remove(host).unwrap_or_else(|| HostSlice {
            host: host.into(),
            ..HostSlice::default()
        })
    }

    /// The slices of several hosts in one pass over the ports: `host_slice` of each, without
    /// reading every port once per host (a change that touches 1,000 hosts of a 100,000-port
    /// installation would otherwise read 10^8 ports).
    pub fn host_slices<'a>(
        &self,
        hosts: impl IntoIterator<Item = &'a str>,
    ) -> BTreeMap<String, HostSlice> {
        let wanted: BTreeSet<&str> = hosts.into_iter().collect();
        if wanted.is_empty() {
            // Not a pass over every port for nothing (a policy change cuts no slice afresh).
            return BTreeMap::new();
        }
        let mut ports_of: BTreeMap<&str, Vec<&DvsPort>> = BTreeMap::new();
        let mut uplinks_of: BTreeMap<&str, Vec<&UplinkGroup>> = BTreeMap::new();
        // Every port of each security group, for the remote-group member lists.
        let mut members_of: BTreeMap<&str, Vec<&DvsPort>> = BTreeMap::new();
        for p in self.ports.values() {
            if let Some(h) = p.host.as_deref() {
                if wanted.contains(h) {
                    ports_of.entry(h).or_default().push(p);
                }
            }
            if let Some(sg) = p.port.security_group.as_deref() {
                members_of.entry(sg).or_default().push(p);
            }
        }
        for u in self.uplinks.values() {
            if wanted.contains(u.host.as_str()) {
                uplinks_of.entry(&u.host).or_default().push(u);
            }
        }
        let mut out = BTreeMap::new();
        for host in wanted {
            let Some(h) = self.hosts.get(host) else {
                continue;
            };
            let slice = self.slice_of(
                h,
                uplinks_of.get(host).map_or(&[][..], |v| v.as_slice()),
                ports_of.get(host).map_or(&[][..], |v| v.as_slice()),
                &members_of,
            );
            out.insert(host.to_owned(), slice);
        }
        out
    }

    /// One host's slice from its uplink groups and ports (in id order).
    fn slice_of(
        &self,
        h: &Host,
        uplinks: &[&UplinkGroup],
        ports: &[&DvsPort],
        members_of: &BTreeMap<&str, Vec<&DvsPort>>,
    ) -> HostSlice {
        let host = h.name.as_str();
        let mut model = Model::default();
        let mut attach = vec![];
        for u in uplinks {
            let name = format!("{}/{}", u.dvs, u.name);
            model.uplinks.push(Uplink {
                name: name.clone(),
                vlans: self
                    .dvs
                    .get(&u.dvs)
                    .map(|d| d.vlans.clone())
                    .unwrap_or_default(),
                storm_control: u.storm_control,
            });
            attach.push(Attach {
                port: name,
                vhost: None,
                ethdev: Some(EthdevConfig {
                    devargs: u.members[0].clone(),
                }),
            });
        }
        let mut pgs = BTreeSet::new();
        let mut sgs = BTreeSet::new();
        for p in ports {
            let pg = format!("{}/{}", p.dvs, p.port.port_group);
            model.ports.push(Port {
                port_group: pg.clone(),
                ..p.port.clone()
            });
            pgs.insert(pg);
            if let Some(s) = &p.port.security_group {
                sgs.insert(s.clone());
            }
            attach.push(match &p.ethdev {
                Some(e) => Attach {
                    port: p.port.name.clone(),
                    vhost: None,
                    ethdev: Some(e.clone()),
                },
                None => Attach {
                    port: p.port.name.clone(),
                    vhost: Some(self.socket_of(h, p)),
                    ethdev: None,
                },
            });
        }
        for pg in &pgs {
            if let Some(g) = self.port_groups.get(pg) {
                model.port_groups.push(PortGroup {
                    name: pg.clone(),
                    ..g.group.clone()
                });
            }
        }
        // Groups named as remotes need to exist in the switch's model; their own rules matter
        // only if a local port is in them, so others travel without rules (a rule change of a
        // group no local port uses does not touch this host).
        let remotes: BTreeSet<String> = sgs
            .iter()
            .filter_map(|s| self.security_groups.get(s))
            .flat_map(|s| s.rules.iter())
            .filter_map(|r| match &r.remote {
                Some(Remote::Group(g)) => Some(g.clone()),
                _ => None,
            })
            .collect();
        for s in sgs.iter().chain(remotes.difference(&sgs)) {
            if let Some(g) = self.security_groups.get(s) {
                let rules = if sgs.contains(s) {
                    g.rules.clone()
                } else {
                    vec![]
                };
                model.security_groups.push(SecurityGroup {
                    name: s.clone(),
                    rules,
                    allow_router_advertisements: sgs.contains(s) && g.allow_router_advertisements,
                });
            }
        }
        for g in &remotes {
            let mut ips: Vec<IpAddr> = members_of
                .get(g.as_str())
                .into_iter()
                .flatten()
                .filter(|p| p.host.as_deref() != Some(host))
                .flat_map(|p| p.port.ips.iter().copied())
                .collect();
            ips.sort();
            ips.dedup();
            if !ips.is_empty() {
                model.remote_members.push(RemoteMembers {
                    security_group: g.clone(),
                    ips,
                });
            }
        }
        HostSlice {
            host: host.into(),
            model,
            attach,
        }
    }

    /// The hosts whose slice a change of `changed` can alter, given the cluster before and
    /// after the change (an object's old and new placement both count).
    ///
    /// One pass over each cluster's ports, with set lookups of the changed ids: a change is
    /// committed and then followed by every controller replica, so this runs several times per
    /// change and must not build a whole index of a 100,000-port installation each time.
    pub fn affected_hosts(
        before: &Cluster,
        after: &Cluster,
        changed: &[ObjectId],
    ) -> BTreeSet<String> {
        // Hash sets of borrowed names: this loop visits every port, and ordered sets of
        // strings made it a string comparison per level per port (a tenth of the controller's
        // time on a change reaching 1,000 hosts).
        let mut hit: FxHashSet<&str> = FxHashSet::default();
        let (mut dvss, mut pgs, mut sgs) = (
            FxHashSet::default(),
            FxHashSet::default(),
            FxHashSet::default(),
        );
        for id in changed {
            match id.kind {
                Kind::Host => {
                    hit.insert(id.id.as_str());
                }
                Kind::Dvs => {
                    dvss.insert(id.id.as_str());
                }
                Kind::PortGroup => {
                    pgs.insert(id.id.split_once('/').unwrap_or((id.id.as_str(), "")));
                }
                Kind::SecurityGroup => {
                    sgs.insert(id.id.as_str());
                }
                Kind::Uplink | Kind::Port => {}
            }
        }
        // A change of port groups alone leaves ports, uplinks and security groups the same
        // maps before and after (persistent maps share them): one pass sees all there is.
        let same = Objects::ptr_eq(&before.ports, &after.ports)
            && Objects::ptr_eq(&before.uplinks, &after.uplinks)
            && Objects::ptr_eq(&before.security_groups, &after.security_groups);
        let passes: &[&Cluster] = if same { &[after] } else { &[before, after] };
        for &c in passes {
            // Groups whose members' addresses other hosts hold: a changed group, or the group
            // of a changed port (its address moved, came or went).
            let mut named: FxHashSet<&str> = sgs.clone();
            for id in changed {
                match id.kind {
                    Kind::Uplink => {
                        if let Some(u) = c.uplinks.get(&id.id) {
                            hit.insert(u.host.as_str());
                        }
                    }
                    Kind::Port => {
                        if let Some(p) = c.ports.get(&id.id) {
                            if let Some(h) = &p.host {
                                hit.insert(h.as_str());
                            }
                            if let Some(sg) = &p.port.security_group {
                                named.insert(sg);
                            }
                        }
                    }
                    _ => {}
                }
            }
            if dvss.is_empty() && pgs.is_empty() && sgs.is_empty() && named.is_empty() {
                continue;
            }
            // The security groups whose rules name one of `named` as a remote.
            let naming: FxHashSet<&str> = c
                .security_groups
                .values()
                .filter(|g| {
                    g.rules.iter().any(|r| {
                        matches!(&r.remote, Some(Remote::Group(n)) if named.contains(n.as_str()))
                    })
                })
                .map(|g| g.name.as_str())
                .collect();
            for u in c.uplinks.values() {
                if dvss.contains(u.dvs.as_str()) {
                    hit.insert(u.host.as_str());
                }
            }
            for p in c.ports.values() {
                let Some(h) = p.host.as_deref() else { continue };
                if hit.contains(h) {
                    continue;
                }
                let sg = p.port.security_group.as_deref();
                if dvss.contains(p.dvs.as_str())
                    || pgs.contains(&(p.dvs.as_str(), p.port.port_group.as_str()))
                    || sg.is_some_and(|g| sgs.contains(g) || naming.contains(g))
                {
                    hit.insert(h);
                }
            }
        }
        let mut out: BTreeSet<String> = hit.into_iter().map(str::to_owned).collect();
        out.retain(|h| after.hosts.contains_key(h) || before.hosts.contains_key(h));
        out
    }
}

#[cfg(test)]
mod tests;
