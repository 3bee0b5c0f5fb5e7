//! The operator's model of one switch (one host's share of a DVS): uplinks, port groups, security groups and ports.
//!
//! These serde types are what `evsd` reads from its TOML config, what its control socket accepts, and
//! what the controller sends each host. [`Model::validate`] turns every mistake into an error that
//! names the object and the field.

use crate::mac::Mac;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Model {
    #[serde(default)]
    pub uplinks: Vec<Uplink>,
    #[serde(default)]
    pub port_groups: Vec<PortGroup>,
    #[serde(default)]
    pub security_groups: Vec<SecurityGroup>,
    #[serde(default)]
    pub ports: Vec<Port>,
    /// Addresses of members of security groups that are not ports of this switch: the ports on
    /// other hosts of a DVS, which the controller sends so remote-group rules cover them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remote_members: Vec<RemoteMembers>,
}

/// The addresses of a security group's members elsewhere (see [`Model::remote_members`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(deny_unknown_fields)]
pub struct RemoteMembers {
    pub security_group: String,
    pub ips: Vec<IpAddr>,
}

/// A physical port (or bond) that carries tagged traffic of the listed VLANs to the network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Uplink {
    pub name: String,
    /// VLANs carried; empty means every VLAN used by a port group of this switch.
    #[serde(default)]
    pub vlans: Vec<VlanRange>,
    /// Limits on broadcast, multicast and unknown unicast received from the physical network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storm_control: Option<StormControl>,
}

/// An inclusive range of VLAN ids, written `"100"` or `"100-199"` in configs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VlanRange {
    pub first: u16,
    pub last: u16,
}

impl VlanRange {
    pub fn contains(&self, vid: u16) -> bool {
        self.first <= vid && vid <= self.last
    }
}

impl fmt::Display for VlanRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

impl std::str::FromStr for VlanRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let parse = |t: &str| -> Result<u16, String> {
            let v: u16 = t
                .trim()
                .parse()
                .map_err(|_| format!("{t:?} is not a VLAN id"))?;
            if (1..=4094).contains(&v) {
                Ok(v)
            } else {
                Err(format!("VLAN id {v} out of range 1-4094"))
            }
        };
        let r = match s.split_once('-') {
            Some((a, b)) => VlanRange {
                first: parse(a)?,
                last: parse(b)?,
            },
            None => {
                let v = parse(s)?;
                VlanRange { first: v, last: v }
            }
        };
        if r.first > r.last {
            return Err(format!("VLAN range {s:?} is empty (first > last)"));
        }
        Ok(r)
    }
}

impl Serialize for VlanRange {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for VlanRange {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => n.to_string().parse().map_err(serde::de::Error::custom),
            Raw::S(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// Access ("normal") or trunk, as written in configs (`type = "access"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PortKind {
    #[default]
    Access,
    Trunk,
}

/// A port group's VLAN behaviour, checked and resolved from its fields by [`PortGroup::mode`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortMode {
    /// One VLAN; the guest sends untagged frames; tagged frames from the guest are dropped.
    Access { vlan: u16 },
    /// Tagged frames of the allowed VLANs pass; untagged frames go to `native_vlan` if set,
    /// and are dropped otherwise.
    Trunk {
        vlans: Vec<VlanRange>,
        native_vlan: Option<u16>,
    },
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, PartialOrd, Ord, Hash,
)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    Low,
    #[default]
    Medium,
    High,
}

/// Transmit shaping (guest → switch).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shaping {
    pub average_mbps: f64,
    /// At least `average_mbps`; defaults to it.
    #[serde(default)]
    pub peak_mbps: Option<f64>,
    /// Burst size in Mbit; 0 means "settle at the average rate".
    #[serde(default)]
    pub burst_mbit: f64,
    #[serde(default)]
    pub priority: Priority,
}
impl Eq for Shaping {}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortGroup {
    pub name: String,
    #[serde(rename = "type", default)]
    pub kind: PortKind,
    /// The VLAN of an access group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
    /// The allowed VLANs of a trunk group.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vlans: Vec<VlanRange>,
    /// Where a trunk puts untagged frames; absent: they are dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub native_vlan: Option<u16>,
    #[serde(default)]
    pub dhcp_isolation: bool,
    #[serde(default)]
    pub ip_mac_binding: bool,
    #[serde(default)]
    pub tcp_checksum_fill: bool,
    #[serde(default)]
    pub shaping: Option<Shaping>,
    /// Storm control of every port of the group, unless a port has its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storm_control: Option<StormControl>,
}

impl PortGroup {
    /// A new access group on `vlan` with every option off.
    pub fn access(name: &str, vlan: u16) -> PortGroup {
        PortGroup {
            name: name.into(),
            kind: PortKind::Access,
            vlan: Some(vlan),
            vlans: vec![],
            native_vlan: None,
            dhcp_isolation: false,
            ip_mac_binding: false,
            tcp_checksum_fill: false,
            shaping: None,
            storm_control: None,
        }
    }
    /// A new trunk group with every option off.
    pub fn trunk(name: &str, vlans: Vec<VlanRange>, native_vlan: Option<u16>) -> PortGroup {
        PortGroup {
            kind: PortKind::Trunk,
            vlan: None,
            vlans,
            native_vlan,
            ..PortGroup::access(name, 1)
        }
    }

    /// The VLAN behaviour; a group that fails [`Model::validate`] may give a meaningless answer.
    pub fn mode(&self) -> PortMode {
        match self.kind {
            PortKind::Access => PortMode::Access {
                vlan: self.vlan.unwrap_or(0),
            },
            PortKind::Trunk => PortMode::Trunk {
                vlans: self.vlans.clone(),
                native_vlan: self.native_vlan,
            },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Towards the guest.
    Ingress,
    /// From the guest.
    Egress,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, PartialOrd, Ord, Hash,
)]
pub enum EtherType {
    #[default]
    IPv4,
    IPv6,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, PartialOrd, Ord, Hash,
)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Any,
    Tcp,
    Udp,
    Icmp,
    /// Any other IP protocol number.
    #[serde(untagged)]
    Number(u8),
}

impl Protocol {
    /// IP protocol number for `ethertype`, `None` for any.
    pub fn number(self, ethertype: EtherType) -> Option<u8> {
        match self {
            Protocol::Any => None,
            Protocol::Tcp => Some(6),
            Protocol::Udp => Some(17),
            Protocol::Icmp => Some(if ethertype == EtherType::IPv6 { 58 } else { 1 }),
            Protocol::Number(n) => Some(n),
        }
    }
}

/// An IP prefix such as `10.0.0.0/24` or `2001:db8::/32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    pub addr: IpAddr,
    pub len: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                let m = if self.len == 0 {
                    0
                } else {
                    u32::MAX << (32 - self.len)
                };
                u32::from(a) & m == u32::from(b) & m
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => {
                let m = if self.len == 0 {
                    0
                } else {
                    u128::MAX << (128 - self.len)
                };
                u128::from(a) & m == u128::from(b) & m
            }
            _ => false,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl std::str::FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, l) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("{a:?} is not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match l {
            Some(l) => l
                .parse::<u8>()
                .map_err(|_| format!("{l:?} is not a prefix length"))?,
            None => max,
        };
        if len > max {
            return Err(format!("prefix length {len} is longer than {max} in {s:?}"));
        }
        Ok(Cidr { addr, len })
    }
}

impl Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}
impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Whom a security-group rule is about: an address range, or the members of a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Remote {
    Cidr(Cidr),
    Group(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord, Hash)]
#[serde(deny_unknown_fields)]
pub struct SgRule {
    pub direction: Direction,
    #[serde(default)]
    pub ethertype: EtherType,
    #[serde(default)]
    pub protocol: Protocol,
    /// Destination port range (TCP/UDP), inclusive.
    #[serde(default)]
    pub port_min: Option<u16>,
    #[serde(default)]
    pub port_max: Option<u16>,
    /// ICMP type and code (ICMP only).
    #[serde(default)]
    pub icmp_type: Option<u8>,
    #[serde(default)]
    pub icmp_code: Option<u8>,
    /// Absent: any remote address.
    #[serde(default)]
    pub remote: Option<Remote>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityGroup {
    pub name: String,
    #[serde(default)]
    pub rules: Vec<SgRule>,
    /// Members may send IPv6 router advertisements (a guest that is a router). Off: the switch's
    /// RA guard drops them (`ra_guard`), whatever the rules say.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_router_advertisements: bool,
}

impl SecurityGroup {
    /// The default group of the spec: allow every egress (IPv4 and IPv6), deny every ingress
    /// that is not a reply.
    pub fn default_group(name: &str) -> SecurityGroup {
        let egress = |ethertype| SgRule {
            direction: Direction::Egress,
            ethertype,
            protocol: Protocol::Any,
            port_min: None,
            port_max: None,
            icmp_type: None,
            icmp_code: None,
            remote: None,
        };
        SecurityGroup {
            name: name.into(),
            rules: vec![egress(EtherType::IPv4), egress(EtherType::IPv6)],
            allow_router_advertisements: false,
        }
    }
}

/// A guest vNIC's switch port (VSP).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Port {
    pub name: String,
    pub mac: Mac,
    #[serde(default)]
    pub ips: Vec<IpAddr>,
    pub port_group: String,
    /// Absent: traffic of this port is not filtered.
    #[serde(default)]
    pub security_group: Option<String>,
    /// Replaces its port group's storm control as a whole (`{}`: none for this port); absent:
    /// the group's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storm_control: Option<StormControl>,
}

impl Port {
    /// The storm control that applies to this port: its own, else its group's.
    pub fn effective_storm_control<'a>(&'a self, pg: &'a PortGroup) -> Option<&'a StormControl> {
        self.storm_control.as_ref().or(pg.storm_control.as_ref())
    }
}

pub use crate::storm::{StormControl, StormLimit};

/// Allowed shaping rates, Mbit/s: 1 kbit/s to 400 Gbit/s (the fastest NICs there are).
pub const SHAPING_RATE_MBPS: (f64, f64) = (0.001, 400_000.0);
/// Allowed shaping bursts, Mbit (0: settle at the average); 100 Gbit is a quarter second at
/// 400 Gbit/s, beyond which a "burst" is no longer one.
pub const SHAPING_BURST_MBIT: (f64, f64) = (0.0, 100_000.0);

/// A mistake in a model, naming the object and field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{object}: {field}: {message}")]
pub struct ModelError {
    pub object: String,
    pub field: String,
    pub message: String,
}

fn err(object: impl Into<String>, field: &str, message: impl Into<String>) -> ModelError {
    ModelError {
        object: object.into(),
        field: field.into(),
        message: message.into(),
    }
}

fn check_vlan(object: &str, field: &str, v: u16) -> Result<(), ModelError> {
    if (1..=4094).contains(&v) {
        Ok(())
    } else {
        Err(err(
            object,
            field,
            format!("VLAN id {v} out of range 1-4094"),
        ))
    }
}

fn check_ranges(object: &str, field: &str, r: &[VlanRange]) -> Result<(), ModelError> {
    let mut sorted = r.to_vec();
    sorted.sort();
    for x in &sorted {
        check_vlan(object, field, x.first)?;
        check_vlan(object, field, x.last)?;
        if x.first > x.last {
            return Err(err(object, field, format!("VLAN range {x} is empty")));
        }
    }
    for w in sorted.windows(2) {
        if w[1].first <= w[0].last {
            return Err(err(
                object,
                field,
                format!("VLAN ranges {} and {} overlap", w[0], w[1]),
            ));
        }
    }
    Ok(())
}

impl Model {
    pub fn port_group(&self, name: &str) -> Option<&PortGroup> {
        self.port_groups.iter().find(|p| p.name == name)
    }
    pub fn security_group(&self, name: &str) -> Option<&SecurityGroup> {
        self.security_groups.iter().find(|p| p.name == name)
    }

    /// Every address of the members of security group `group`: this switch's ports in it and
    /// the remote members the controller listed.
    pub fn group_member_ips(&self, group: &str) -> BTreeSet<IpAddr> {
        let local = self
            .ports
            .iter()
            .filter(|p| p.security_group.as_deref() == Some(group))
            .flat_map(|p| p.ips.iter().copied());
        let remote = self
            .remote_members
            .iter()
            .filter(|r| r.security_group == group)
            .flat_map(|r| r.ips.iter().copied());
        local.chain(remote).collect()
    }

    /// Checks every object; the first mistake found is returned.
    pub fn validate(&self) -> Result<(), ModelError> {
        let mut names = BTreeSet::new();
        for u in &self.uplinks {
            let o = format!("uplink {:?}", u.name);
            if u.name.is_empty() {
                return Err(err(o, "name", "must not be empty"));
            }
            if !names.insert(u.name.as_str()) {
                return Err(err(
                    o,
                    "name",
                    "a port or uplink of this name already exists",
                ));
            }
            check_ranges(&o, "vlans", &u.vlans)?;
            if let Some(sc) = &u.storm_control {
                sc.check(&o)?;
            }
        }
        let mut pgs = BTreeSet::new();
        for pg in &self.port_groups {
            let o = format!("port group {:?}", pg.name);
            if pg.name.is_empty() {
                return Err(err(o, "name", "must not be empty"));
            }
            if !pgs.insert(pg.name.as_str()) {
                return Err(err(o, "name", "defined twice"));
            }
            match pg.kind {
                PortKind::Access => {
                    let Some(vlan) = pg.vlan else {
                        return Err(err(o, "vlan", "an access group needs a VLAN id"));
                    };
                    check_vlan(&o, "vlan", vlan)?;
                    if !pg.vlans.is_empty() || pg.native_vlan.is_some() {
                        return Err(err(
                            o,
                            "vlans",
                            "only trunk groups take vlans/native_vlan; use vlan",
                        ));
                    }
                }
                PortKind::Trunk => {
                    if pg.vlan.is_some() {
                        return Err(err(
                            o,
                            "vlan",
                            "a trunk takes vlans (a list of ranges), not vlan",
                        ));
                    }
                    if pg.vlans.is_empty() {
                        return Err(err(
                            o,
                            "vlans",
                            "a trunk needs at least one allowed VLAN range",
                        ));
                    }
                    check_ranges(&o, "vlans", &pg.vlans)?;
                    if let Some(n) = pg.native_vlan {
                        check_vlan(&o, "native_vlan", n)?;
                    }
                }
            }
            if let Some(s) = &pg.shaping {
                let (lo, hi) = SHAPING_RATE_MBPS;
                let range = |v: f64, lo: f64, hi: f64| format!("{v}: must be {lo}..={hi}");
                if !(lo..=hi).contains(&s.average_mbps) {
                    return Err(err(
                        o,
                        "shaping.average_mbps",
                        range(s.average_mbps, lo, hi),
                    ));
                }
                if let Some(p) = s.peak_mbps {
                    if !(p >= s.average_mbps && p <= hi) {
                        return Err(err(
                            o,
                            "shaping.peak_mbps",
                            range(p, s.average_mbps, hi) + " (at least average_mbps)",
                        ));
                    }
                }
                let (lo, hi) = SHAPING_BURST_MBIT;
                if !(lo..=hi).contains(&s.burst_mbit) {
                    return Err(err(o, "shaping.burst_mbit", range(s.burst_mbit, lo, hi)));
                }
            }
            if let Some(sc) = &pg.storm_control {
                sc.check(&o)?;
            }
        }
        let mut sgs = BTreeSet::new();
        for sg in &self.security_groups {
            let o = format!("security group {:?}", sg.name);
            if !sgs.insert(sg.name.as_str()) {
                return Err(err(o, "name", "defined twice"));
            }
            for (i, r) in sg.rules.iter().enumerate() {
                let f = |x: &str| format!("rules[{i}].{x}");
                let l4 = matches!(r.protocol, Protocol::Tcp | Protocol::Udp);
                if (r.port_min.is_some() || r.port_max.is_some()) && !l4 {
                    return Err(err(
                        &o,
                        &f("port_min"),
                        "port ranges need protocol tcp or udp",
                    ));
                }
                if let (Some(a), Some(b)) = (r.port_min, r.port_max) {
                    if a > b {
                        return Err(err(
                            &o,
                            &f("port_max"),
                            format!("port range {a}-{b} is empty"),
                        ));
                    }
                }
                if (r.icmp_type.is_some() || r.icmp_code.is_some()) && r.protocol != Protocol::Icmp
                {
                    return Err(err(
                        &o,
                        &f("icmp_type"),
                        "ICMP type/code need protocol icmp",
                    ));
                }
                if r.icmp_code.is_some() && r.icmp_type.is_none() {
                    return Err(err(&o, &f("icmp_code"), "an ICMP code needs an ICMP type"));
                }
                match &r.remote {
                    Some(Remote::Cidr(c))
                        if c.addr.is_ipv4() != (r.ethertype == EtherType::IPv4) =>
                    {
                        return Err(err(
                            &o,
                            &f("remote"),
                            format!("{c} does not match ethertype {:?}", r.ethertype),
                        ));
                    }
                    Some(Remote::Group(g))
                        if !self.security_groups.iter().any(|s| &s.name == g) =>
                    {
                        return Err(err(
                            &o,
                            &f("remote"),
                            format!("unknown security group {g:?}"),
                        ));
                    }
                    _ => {}
                }
            }
        }
        let mut macs = BTreeMap::new();
        for p in &self.ports {
            let o = format!("port {:?}", p.name);
            if p.name.is_empty() {
                return Err(err(o, "name", "must not be empty"));
            }
            if !names.insert(p.name.as_str()) {
                return Err(err(
                    o,
                    "name",
                    "a port or uplink of this name already exists",
                ));
            }
            if self.port_group(&p.port_group).is_none() {
                return Err(err(
                    o,
                    "port_group",
                    format!("unknown port group {:?}", p.port_group),
                ));
            }
            if let Some(sg) = &p.security_group {
                if self.security_group(sg).is_none() {
                    return Err(err(
                        o,
                        "security_group",
                        format!("unknown security group {sg:?}"),
                    ));
                }
            }
            if let Some(sc) = &p.storm_control {
                sc.check(&o)?;
            }
            if p.mac.is_multicast() || p.mac == Mac::ZERO {
                return Err(err(o, "mac", format!("{} is not a unicast MAC", p.mac)));
            }
            if let Some(other) = macs.insert(p.mac, p.name.as_str()) {
                return Err(err(
                    o,
                    "mac",
                    format!("{} is already used by port {other:?}", p.mac),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
        [[uplinks]]
        name = "uplink0"
        vlans = ["100-200"]

        [[port_groups]]
        name = "web"
        type = "access"
        vlan = 100
        dhcp_isolation = true
        ip_mac_binding = true
        shaping = { average_mbps = 100, peak_mbps = 200, burst_mbit = 10, priority = "high" }

        [[port_groups]]
        name = "router"
        type = "trunk"
        vlans = ["100", "150-160"]

        [[security_groups]]
        name = "web"
        rules = [
          { direction = "ingress", protocol = "tcp", port_min = 80, port_max = 80 },
          { direction = "ingress", protocol = "icmp", remote = { cidr = "10.0.0.0/8" } },
          { direction = "egress" },
        ]

        [[ports]]
        name = "vm1-eth0"
        mac = "02:00:00:00:00:01"
        ips = ["10.0.0.1"]
        port_group = "web"
        security_group = "web"
    "#;

    #[test]
    fn example_config_parses_and_validates() {
        let m: Model = toml::from_str(EXAMPLE).unwrap();
        m.validate().unwrap();
        assert_eq!(
            m.port_groups[1].mode(),
            PortMode::Trunk {
                vlans: vec![
                    VlanRange {
                        first: 100,
                        last: 100
                    },
                    VlanRange {
                        first: 150,
                        last: 160
                    }
                ],
                native_vlan: None
            }
        );
        assert_eq!(
            m.security_groups[0].rules[1].remote,
            Some(Remote::Cidr("10.0.0.0/8".parse().unwrap()))
        );
    }

    #[test]
    fn mistakes_name_object_and_field() {
        let mut m: Model = toml::from_str(EXAMPLE).unwrap();
        m.port_groups[0].vlan = Some(4095);
        assert_eq!(
            m.validate().unwrap_err().to_string(),
            "port group \"web\": vlan: VLAN id 4095 out of range 1-4094"
        );

        let mut m: Model = toml::from_str(EXAMPLE).unwrap();
        m.ports[0].port_group = "db".into();
        assert_eq!(
            m.validate().unwrap_err().to_string(),
            "port \"vm1-eth0\": port_group: unknown port group \"db\""
        );

        let mut m: Model = toml::from_str(EXAMPLE).unwrap();
        m.port_groups[1].vlans = vec!["100-150".parse().unwrap(), "150-160".parse().unwrap()];
        assert!(m.validate().unwrap_err().to_string().contains("overlap"));

        let bad = EXAMPLE.replace("ips = [\"10.0.0.1\"]", "ips = [\"10.0.0.300\"]");
        assert!(toml::from_str::<Model>(&bad).is_err());
        let bad = EXAMPLE.replace("vlans = [\"100-200\"]", "vlans = [\"200-100\"]");
        assert!(toml::from_str::<Model>(&bad)
            .unwrap_err()
            .to_string()
            .contains("empty"));
    }

    /// Storm control: group defaults, a port's override, the uplink's, and range errors that
    /// name the object and the field.
    #[test]
    fn storm_control_parses_and_is_range_checked() {
        let cfg = EXAMPLE
            .replace(
                "vlans = [\"100-200\"]",
                "vlans = [\"100-200\"]\nstorm_control = { broadcast = { pps = 5000 } }",
            )
            .replace(
                "priority = \"high\" }",
                "priority = \"high\" }\nstorm_control.broadcast = { pps = 1000, burst = 50 }\n\
                 storm_control.unknown_unicast = { pps = 200, kbps = 2000 }",
            );
        let m: Model = toml::from_str(&cfg).unwrap();
        m.validate().unwrap();
        let g = m.port_groups[0].storm_control.unwrap();
        assert_eq!(g.broadcast.unwrap().burst(), 50);
        assert_eq!(g.unknown_unicast.unwrap().kbps, Some(2000));
        assert_eq!(g.unknown_unicast.unwrap().burst(), 32, "default burst");
        assert_eq!(StormLimit::pps(10_000).burst(), 1000, "a tenth of a second");
        assert!(g.multicast.is_none());
        assert_eq!(
            m.uplinks[0].storm_control.unwrap().broadcast,
            Some(StormLimit::pps(5000))
        );
        // The group's applies to its ports; a port's own replaces it whole.
        let p = &m.ports[0];
        assert_eq!(p.effective_storm_control(&m.port_groups[0]), Some(&g));
        let mut own = p.clone();
        own.storm_control = Some(StormControl::default());
        assert_eq!(
            own.effective_storm_control(&m.port_groups[0]),
            Some(&StormControl::default())
        );
        // Round trip through TOML and JSON (the control socket).
        let again: Model = toml::from_str(&toml::to_string(&m).unwrap()).unwrap();
        assert_eq!(again, m);
        let again: Model = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
        assert_eq!(again, m);

        let mut bad = m.clone();
        bad.port_groups[0].storm_control.as_mut().unwrap().broadcast = Some(StormLimit {
            pps: 100_000_001,
            burst: None,
            kbps: None,
        });
        assert_eq!(
            bad.validate().unwrap_err().to_string(),
            "port group \"web\": storm_control.broadcast.pps: 100000001: must be 0..=100000000"
        );
        let mut bad = m.clone();
        bad.ports[0].storm_control = Some(StormControl {
            multicast: Some(StormLimit {
                pps: 10,
                burst: Some(0),
                kbps: None,
            }),
            ..Default::default()
        });
        assert_eq!(
            bad.validate().unwrap_err().to_string(),
            "port \"vm1-eth0\": storm_control.multicast.burst: 0: must be 1..=10000000"
        );
        let mut bad = m.clone();
        bad.uplinks[0].storm_control = Some(StormControl {
            unknown_unicast: Some(StormLimit {
                pps: 10,
                burst: None,
                kbps: Some(0),
            }),
            ..Default::default()
        });
        assert_eq!(
            bad.validate().unwrap_err().to_string(),
            "uplink \"uplink0\": storm_control.unknown_unicast.kbps: 0: must be 1..=400000000"
        );
        // A misspelt class or field is refused by name.
        let typo = cfg.replace("unknown_unicast = {", "unknown_unicats = {");
        let e = toml::from_str::<Model>(&typo).unwrap_err().to_string();
        assert!(e.contains("unknown_unicats"), "{e}");
        let typo = cfg.replace("pps = 1000, burst", "ppps = 1000, burst");
        assert!(toml::from_str::<Model>(&typo).is_err());
    }
}
