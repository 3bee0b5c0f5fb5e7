//! From a parsed command line to what is sent: pure functions, no I/O.
//!
//! [`plan`] checks every value of the command line (naming the object and the option in its
//! errors) and says what to do: a transaction built from the command line alone (creates,
//! deletes), a change of an existing object (a [`Change`], applied by [`apply`] to the object as
//! read, then sent as an update guarded by its resource version), or a read.

use crate::cli::*;
use crate::exit::{Exit, Failure};
use api::dvs::{TxnOp, TxnRequest};
use model::cluster::{check_name, Dvs, DvsPort, DvsPortGroup, Host, UplinkGroup};
use model::cluster::{BondMode, Kind, Object, ObjectId};
use model::{Cidr, Direction, EtherType, Mac, Port, PortGroup, PortKind, Priority, Protocol};
use model::{Remote, Role, SecurityGroup, SgRule, Shaping, VhostConfig, VlanRange};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// The longest `--wait-timeout`: the client gives up on a request after 130 s.
pub const MAX_WAIT_SECS: u64 = 120;

/// What one invocation does.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// Send these ops as one transaction. `token_file`: where `host add` writes the new token.
    Txn {
        ops: Vec<TxnOp>,
        token_file: Option<PathBuf>,
    },
    /// Read `id`, [`apply`] `change` to it, send it back as an update of the version read.
    Edit {
        id: ObjectId,
        /// Boxed: a port group's change is far larger than any other plan.
        change: Box<Change>,
    },
    /// List the objects of `kind` that pass `filter`.
    List {
        kind: Kind,
        filter: Filter,
    },
    /// Show one object (with, in tables, the objects that belong to it).
    Show {
        id: ObjectId,
    },
    /// A security group's rules with their indexes.
    RuleList {
        id: ObjectId,
    },
    Status {
        ports: bool,
    },
    Completions(clap_complete::Shell),
    Man(PathBuf),
}

/// Which objects a list shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub dvs: Option<String>,
    pub host: Option<String>,
}

impl Filter {
    pub fn keep(&self, o: &Object) -> bool {
        let (dvs, host) = match o {
            Object::PortGroup(p) => (Some(&p.dvs), None),
            Object::Uplink(u) => (Some(&u.dvs), Some(&u.host)),
            Object::Port(p) => (Some(&p.dvs), p.host.as_ref()),
            _ => (None, None),
        };
        let ok = |want: &Option<String>, have: Option<&String>| match want {
            Some(w) => have == Some(w),
            None => true,
        };
        ok(&self.dvs, dvs) && ok(&self.host, host)
    }
}

/// A change of one existing object, every value already checked.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    DvsVlans(Vec<VlanRange>),
    HostVhostDir(Option<PathBuf>),
    Uplink(UplinkChange),
    PortGroup(PgChange),
    RuleAdd {
        rule: SgRule,
        may_exist: bool,
    },
    /// A security group's `allow_router_advertisements`.
    SgRouterAdvertisements(bool),
    RuleDel {
        which: RuleSel,
        if_exists: bool,
    },
    Port(PortChange),
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct UplinkChange {
    /// Replace the members.
    pub members: Option<Vec<String>>,
    pub add: Vec<String>,
    pub del: Vec<String>,
    pub bond_mode: Option<BondMode>,
    pub storm: StormChange,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ModeChange {
    Access(u16),
    Trunk(Vec<VlanRange>),
}

#[derive(Debug, Clone, PartialEq, Default)]
pub enum ShapingChange {
    #[default]
    Keep,
    Off,
    /// Change the options given; turning shaping on needs `average`.
    Set {
        average: Option<f64>,
        peak: Option<f64>,
        burst: Option<f64>,
        priority: Option<Priority>,
    },
}

/// A change of a port group's storm control.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum StormChange {
    #[default]
    Keep,
    Off,
    /// Set the classes given (broadcast, multicast, unknown unicast), keep the others.
    Set([Option<model::StormLimit>; 3]),
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct PgChange {
    pub mode: Option<ModeChange>,
    /// `Some(None)`: no native VLAN.
    pub native_vlan: Option<Option<u16>>,
    pub dhcp_isolation: Option<bool>,
    pub ip_mac_binding: Option<bool>,
    pub tcp_checksum_fill: Option<bool>,
    pub shaping: ShapingChange,
    pub storm: StormChange,
}

/// Which rule `rule-del` removes.
#[derive(Debug, Clone, PartialEq)]
pub enum RuleSel {
    Index(usize),
    Rule(SgRule),
}

#[derive(Debug, Clone, PartialEq, Default)]
pub enum VhostChange {
    #[default]
    Keep,
    /// Back to `<host's vhost dir>/<name>.sock`, switch as server.
    Default,
    Set {
        socket: Option<PathBuf>,
        role: Option<Role>,
    },
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct PortChange {
    pub dvs: Option<String>,
    pub port_group: Option<String>,
    pub mac: Option<Mac>,
    pub ips: Option<Vec<IpAddr>>,
    /// `Some(None)`: unfiltered.
    pub security_group: Option<Option<String>>,
    /// `Some(None)`: not placed.
    pub host: Option<Option<String>>,
    pub vhost: VhostChange,
    /// `Off`: the port's own limits go, its group's apply.
    pub storm: StormChange,
}

// ---- labels: how errors name objects (as the model's validation does) ----

pub fn dvs_label(name: &str) -> String {
    format!("dvs {name:?}")
}
pub fn host_label(name: &str) -> String {
    format!("host {name:?}")
}
pub fn pg_label(dvs: &str, name: &str) -> String {
    format!("port group {:?}", format!("{dvs}/{name}"))
}
pub fn uplink_label(dvs: &str, host: &str, name: &str) -> String {
    format!("uplink {:?}", format!("{dvs}/{host}/{name}"))
}
pub fn sg_label(name: &str) -> String {
    format!("security group {name:?}")
}
pub fn port_label(name: &str) -> String {
    format!("port {name:?}")
}

// ---- values ----

fn name(object: &str, option: &str, v: &str) -> Result<String, Failure> {
    check_name(object, option, v).map_err(|e| Failure::new(Exit::Usage, e.to_string()))?;
    Ok(v.to_owned())
}

fn opt_name(object: &str, option: &str, v: &Option<String>) -> Result<Option<String>, Failure> {
    v.as_deref().map(|v| name(object, option, v)).transpose()
}

pub fn vlan_id(object: &str, option: &str, v: &str) -> Result<u16, Failure> {
    let n: u16 = v
        .trim()
        .parse()
        .map_err(|_| Failure::usage(object, option, format!("{v:?} is not a VLAN id")))?;
    if !(1..=4094).contains(&n) {
        return Err(Failure::usage(
            object,
            option,
            format!("VLAN id {n} out of range 1-4094"),
        ));
    }
    Ok(n)
}

/// `100-199,300`.
pub fn vlan_ranges(object: &str, option: &str, v: &str) -> Result<Vec<VlanRange>, Failure> {
    let out = v
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<VlanRange>()
                .map_err(|e| Failure::usage(object, option, e))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if out.is_empty() {
        return Err(Failure::usage(
            object,
            option,
            "needs at least one VLAN id or range (100-199,300)",
        ));
    }
    Ok(out)
}

pub fn mac(object: &str, v: &str) -> Result<Mac, Failure> {
    v.parse()
        .map_err(|_| Failure::usage(object, "--mac", format!("{v:?} is not a MAC address")))
}

fn ips(object: &str, option: &str, v: &[String]) -> Result<Vec<IpAddr>, Failure> {
    v.iter()
        .map(|s| {
            s.trim()
                .parse()
                .map_err(|_| Failure::usage(object, option, format!("{s:?} is not an IP address")))
        })
        .collect()
}

fn number(object: &str, option: &str, v: &str) -> Result<f64, Failure> {
    match v.trim().parse::<f64>() {
        Ok(x) if x.is_finite() => Ok(x),
        _ => Err(Failure::usage(
            object,
            option,
            format!("{v:?} is not a number"),
        )),
    }
}

fn positive(object: &str, option: &str, v: &str) -> Result<f64, Failure> {
    let x = number(object, option, v)?;
    if x <= 0.0 {
        return Err(Failure::usage(object, option, "must be greater than 0"));
    }
    Ok(x)
}

fn absolute(object: &str, option: &str, p: &Path) -> Result<PathBuf, Failure> {
    if !p.is_absolute() {
        return Err(Failure::usage(
            object,
            option,
            format!("{:?} is not an absolute path", p.display().to_string()),
        ));
    }
    Ok(p.to_owned())
}

fn small(object: &str, option: &str, what: &str, v: &str) -> Result<u8, Failure> {
    v.trim()
        .parse()
        .map_err(|_| Failure::usage(object, option, format!("{v:?} is not an {what} (0-255)")))
}

/// `tcp`, `udp`, `icmp`, `any` or a protocol number (6, 17 and ICMP's number are named).
pub fn protocol(object: &str, v: &str, ethertype: EtherType) -> Result<Protocol, Failure> {
    let p = match v.trim().to_ascii_lowercase().as_str() {
        "any" => Protocol::Any,
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        "icmp" | "icmp6" | "icmpv6" => Protocol::Icmp,
        n => match n.parse::<u8>() {
            Ok(6) => Protocol::Tcp,
            Ok(17) => Protocol::Udp,
            Ok(1) if ethertype == EtherType::IPv4 => Protocol::Icmp,
            Ok(58) if ethertype == EtherType::IPv6 => Protocol::Icmp,
            Ok(n) => Protocol::Number(n),
            Err(_) => {
                return Err(Failure::usage(
                    object,
                    "--protocol",
                    format!("{v:?} is not tcp, udp, icmp, any or a protocol number (0-255)"),
                ))
            }
        },
    };
    Ok(p)
}

/// `80` or `8000-8080`.
pub fn port_range(object: &str, v: &str) -> Result<(u16, u16), Failure> {
    let one = |s: &str| -> Result<u16, Failure> {
        match s.trim().parse::<u16>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(Failure::usage(
                object,
                "--port",
                format!("{s:?} is not a port number (1-65535)"),
            )),
        }
    };
    let (a, b) = match v.split_once('-') {
        Some((a, b)) => (one(a)?, one(b)?),
        None => {
            let n = one(v)?;
            (n, n)
        }
    };
    if a > b {
        return Err(Failure::usage(
            object,
            "--port",
            format!("port range {v:?} is empty (first > last)"),
        ));
    }
    Ok((a, b))
}

/// The rule the options describe.
pub fn rule(object: &str, a: &RuleArgs) -> Result<SgRule, Failure> {
    let cidr: Option<Cidr> = a
        .remote_cidr
        .as_deref()
        .map(|c| {
            c.parse()
                .map_err(|e| Failure::usage(object, "--remote-cidr", e))
        })
        .transpose()?;
    let ethertype = match (a.ethertype, cidr) {
        (Some(EtherTypeArg::Ipv4), _) => EtherType::IPv4,
        (Some(EtherTypeArg::Ipv6), _) => EtherType::IPv6,
        (None, Some(c)) if c.addr.is_ipv6() => EtherType::IPv6,
        (None, _) => EtherType::IPv4,
    };
    if let Some(c) = cidr {
        if c.addr.is_ipv4() != (ethertype == EtherType::IPv4) {
            return Err(Failure::usage(
                object,
                "--remote-cidr",
                format!(
                    "{c} does not match --ethertype {}",
                    ethertype_str(ethertype)
                ),
            ));
        }
    }
    let protocol = match &a.protocol {
        Some(p) => protocol(object, p, ethertype)?,
        None => Protocol::Any,
    };
    let (port_min, port_max) = match &a.port {
        Some(p) => {
            if !matches!(protocol, Protocol::Tcp | Protocol::Udp) {
                return Err(Failure::usage(
                    object,
                    "--port",
                    "port ranges need --protocol tcp or udp",
                ));
            }
            let (lo, hi) = port_range(object, p)?;
            (Some(lo), Some(hi))
        }
        None => (None, None),
    };
    let icmp_type = a
        .icmp_type
        .as_deref()
        .map(|t| small(object, "--icmp-type", "ICMP type", t))
        .transpose()?;
    let icmp_code = a
        .icmp_code
        .as_deref()
        .map(|c| small(object, "--icmp-code", "ICMP code", c))
        .transpose()?;
    if icmp_type.is_some() && protocol != Protocol::Icmp {
        return Err(Failure::usage(
            object,
            "--icmp-type",
            "an ICMP type needs --protocol icmp",
        ));
    }
    let remote = match (cidr, &a.remote_group) {
        (Some(c), _) => Some(Remote::Cidr(c)),
        (None, Some(g)) => Some(Remote::Group(name(object, "--remote-group", g)?)),
        (None, None) => None,
    };
    Ok(SgRule {
        direction: match a.direction {
            DirectionArg::Ingress => Direction::Ingress,
            DirectionArg::Egress => Direction::Egress,
        },
        ethertype,
        protocol,
        port_min,
        port_max,
        icmp_type,
        icmp_code,
        remote,
    })
}

pub fn ethertype_str(e: EtherType) -> &'static str {
    match e {
        EtherType::IPv4 => "ipv4",
        EtherType::IPv6 => "ipv6",
    }
}

fn shaping_change(object: &str, s: &ShapingArgs) -> Result<ShapingChange, Failure> {
    if !s.any() {
        return Ok(ShapingChange::Keep);
    }
    let average = s
        .shaping_average
        .as_deref()
        .map(|v| positive(object, "--shaping-average", v))
        .transpose()?;
    let peak = s
        .shaping_peak
        .as_deref()
        .map(|v| positive(object, "--shaping-peak", v))
        .transpose()?;
    let burst = s
        .shaping_burst
        .as_deref()
        .map(|v| {
            let x = number(object, "--shaping-burst", v)?;
            if x < 0.0 {
                return Err(Failure::usage(
                    object,
                    "--shaping-burst",
                    "must be 0 or more",
                ));
            }
            Ok(x)
        })
        .transpose()?;
    Ok(ShapingChange::Set {
        average,
        peak,
        burst,
        priority: s.priority.map(Into::into),
    })
}

fn count(object: &str, option: &str, v: &str) -> Result<u64, Failure> {
    v.trim()
        .parse::<u64>()
        .map_err(|_| Failure::usage(object, option, format!("{v:?} is not a whole number")))
}

/// The storm-control options given; their ranges are the model's to check.
fn storm_change(object: &str, s: &StormArgs) -> Result<StormChange, Failure> {
    if *s == StormArgs::default() {
        return Ok(StormChange::Keep);
    }
    let burst = s
        .storm_burst
        .as_deref()
        .map(|b| count(object, "--storm-burst", b))
        .transpose()?;
    let limit = |option: &str, v: &Option<String>| -> Result<Option<model::StormLimit>, Failure> {
        v.as_deref()
            .map(|v| {
                Ok(model::StormLimit {
                    pps: count(object, option, v)?,
                    burst,
                    kbps: None,
                })
            })
            .transpose()
    };
    let l = [
        limit("--storm-broadcast", &s.storm_broadcast)?,
        limit("--storm-multicast", &s.storm_multicast)?,
        limit("--storm-unknown-unicast", &s.storm_unknown_unicast)?,
    ];
    if l.iter().all(Option::is_none) {
        return Err(Failure::usage(
            object,
            "--storm-burst",
            "give the limits it is for: --storm-broadcast, --storm-multicast or \
             --storm-unknown-unicast PPS",
        ));
    }
    Ok(StormChange::Set(l))
}

/// The storm control `change` leaves, from `current`.
fn stormed(
    current: Option<model::StormControl>,
    change: &StormChange,
) -> Option<model::StormControl> {
    match change {
        StormChange::Keep => current,
        StormChange::Off => None,
        StormChange::Set([b, m, u]) => {
            let mut s = current.unwrap_or_default();
            s.broadcast = b.or(s.broadcast);
            s.multicast = m.or(s.multicast);
            s.unknown_unicast = u.or(s.unknown_unicast);
            Some(s)
        }
    }
}

/// The shaping `change` leaves, from `current`.
fn shaped(
    object: &str,
    current: Option<Shaping>,
    change: &ShapingChange,
) -> Result<Option<Shaping>, Failure> {
    let (average, peak, burst, priority) = match change {
        ShapingChange::Keep => return Ok(current),
        ShapingChange::Off => return Ok(None),
        ShapingChange::Set {
            average,
            peak,
            burst,
            priority,
        } => (average, peak, burst, priority),
    };
    let mut s = match (current, average) {
        (Some(s), _) => s,
        (None, Some(a)) => Shaping {
            average_mbps: *a,
            peak_mbps: None,
            burst_mbit: 0.0,
            priority: Priority::default(),
        },
        (None, None) => {
            let option = if peak.is_some() {
                "--shaping-peak"
            } else if burst.is_some() {
                "--shaping-burst"
            } else {
                "--priority"
            };
            return Err(Failure::new(
                Exit::Usage,
                format!(
                    "{object}: {option}: shaping is off; turn it on with --shaping-average MBPS"
                ),
            ));
        }
    };
    if let Some(a) = average {
        s.average_mbps = *a;
    }
    if let Some(p) = peak {
        s.peak_mbps = Some(*p);
    }
    if let Some(b) = burst {
        s.burst_mbit = *b;
    }
    if let Some(p) = priority {
        s.priority = *p;
    }
    if let Some(p) = s.peak_mbps {
        if p < s.average_mbps {
            return Err(Failure::new(
                Exit::Usage,
                format!(
                    "{object}: --shaping-peak: {p} Mbit/s is below the average rate {} Mbit/s",
                    s.average_mbps
                ),
            ));
        }
    }
    Ok(Some(s))
}

// ---- ops ----

pub fn create(object: Object, may_exist: bool) -> TxnOp {
    TxnOp::Create { object, may_exist }
}

pub fn delete(kind: Kind, id: impl Into<String>, if_exists: bool) -> TxnOp {
    TxnOp::Delete {
        id: ObjectId::new(kind, id),
        if_exists,
        resource_version: None,
    }
}

pub fn update(object: Object, resource_version: u64) -> TxnOp {
    TxnOp::Update {
        object,
        resource_version: Some(resource_version),
    }
}

/// The transaction of `ops` with the wait the global options ask for.
pub fn request(ops: Vec<TxnOp>, g: &Global) -> Result<TxnRequest, Failure> {
    Ok(TxnRequest {
        ops,
        wait_ms: wait_ms(g)?,
    })
}

/// `TxnRequest.wait_ms` for the global options (`--wait=hosts`, `--wait-timeout`).
pub fn wait_ms(g: &Global) -> Result<Option<u64>, Failure> {
    Ok(match g.wait {
        Wait::None => None,
        Wait::Hosts => {
            if !(1..=MAX_WAIT_SECS).contains(&g.wait_timeout) {
                return Err(Failure::new(
                    Exit::Usage,
                    format!(
                        "--wait-timeout: {} is not between 1 and {MAX_WAIT_SECS} seconds",
                        g.wait_timeout
                    ),
                ));
            }
            Some(g.wait_timeout * 1000)
        }
    })
}

fn txn(ops: Vec<TxnOp>) -> Plan {
    Plan::Txn {
        ops,
        token_file: None,
    }
}

fn edit(kind: Kind, id: impl Into<String>, change: Change) -> Plan {
    Plan::Edit {
        id: ObjectId::new(kind, id),
        change: Box::new(change),
    }
}

/// What `cmd` does, with every value on its command line checked.
pub fn plan(cmd: &Cmd) -> Result<Plan, Failure> {
    Ok(match cmd {
        Cmd::Dvs(c) => plan_dvs(c)?,
        Cmd::Host(c) => plan_host(c)?,
        Cmd::Uplink(c) => plan_uplink(c)?,
        Cmd::Pg(c) => plan_pg(c)?,
        Cmd::Sg(c) => plan_sg(c)?,
        Cmd::Port(c) => plan_port(c)?,
        Cmd::Status { ports } => Plan::Status { ports: *ports },
        Cmd::Completions { shell } => Plan::Completions(*shell),
        Cmd::Man { dir } => Plan::Man(dir.clone()),
    })
}

fn plan_dvs(c: &DvsCmd) -> Result<Plan, Failure> {
    Ok(match c {
        DvsCmd::Add {
            name: n,
            vlans,
            may_exist,
        } => {
            let o = dvs_label(n);
            let d = Dvs {
                name: name(&o, "name", n)?,
                vlans: vlan_ranges(&o, "--vlans", vlans)?,
            };
            txn(vec![create(Object::Dvs(d), *may_exist)])
        }
        DvsCmd::Set { name: n, vlans } => {
            let o = dvs_label(n);
            name(&o, "name", n)?;
            edit(
                Kind::Dvs,
                n,
                Change::DvsVlans(vlan_ranges(&o, "--vlans", vlans)?),
            )
        }
        DvsCmd::Del { name: n, if_exists } => {
            name(&dvs_label(n), "name", n)?;
            txn(vec![delete(Kind::Dvs, n, *if_exists)])
        }
        DvsCmd::List => Plan::List {
            kind: Kind::Dvs,
            filter: Filter::default(),
        },
        DvsCmd::Show { name: n } => Plan::Show {
            id: ObjectId::new(Kind::Dvs, name(&dvs_label(n), "name", n)?),
        },
    })
}

fn plan_host(c: &HostCmd) -> Result<Plan, Failure> {
    Ok(match c {
        HostCmd::Add {
            name: n,
            vhost_dir,
            token_file,
            may_exist,
        } => {
            let o = host_label(n);
            let h = Host {
                name: name(&o, "name", n)?,
                vhost_dir: vhost_dir
                    .as_deref()
                    .map(|d| absolute(&o, "--vhost-dir", d))
                    .transpose()?,
                token_sha256: None,
            };
            Plan::Txn {
                ops: vec![create(Object::Host(h), *may_exist)],
                token_file: token_file.clone(),
            }
        }
        HostCmd::Set {
            name: n,
            vhost_dir,
            default_vhost_dir: _,
        } => {
            let o = host_label(n);
            name(&o, "name", n)?;
            let dir = vhost_dir
                .as_deref()
                .map(|d| absolute(&o, "--vhost-dir", d))
                .transpose()?;
            edit(Kind::Host, n, Change::HostVhostDir(dir))
        }
        HostCmd::Del { name: n, if_exists } => {
            name(&host_label(n), "name", n)?;
            txn(vec![delete(Kind::Host, n, *if_exists)])
        }
        HostCmd::List => Plan::List {
            kind: Kind::Host,
            filter: Filter::default(),
        },
        HostCmd::Show { name: n } => Plan::Show {
            id: ObjectId::new(Kind::Host, name(&host_label(n), "name", n)?),
        },
    })
}

/// Checks the three names of an uplink group; its id.
fn uplink_id(dvs: &str, host: &str, n: &str) -> Result<(String, String), Failure> {
    let o = uplink_label(dvs, host, n);
    name(&o, "dvs", dvs)?;
    name(&o, "host", host)?;
    name(&o, "name", n)?;
    Ok((o, format!("{dvs}/{host}/{n}")))
}

fn plan_uplink(c: &UplinkCmd) -> Result<Plan, Failure> {
    Ok(match c {
        UplinkCmd::Add {
            dvs,
            host,
            name: n,
            members,
            bond_mode,
            storm,
            may_exist,
        } => {
            let (o, _) = uplink_id(dvs, host, n)?;
            let u = UplinkGroup {
                storm_control: stormed(None, &storm_change(&o, storm)?),
                name: n.clone(),
                dvs: dvs.clone(),
                host: host.clone(),
                members: members.clone(),
                bond_mode: bond_mode.map(Into::into).unwrap_or_default(),
            };
            txn(vec![create(Object::Uplink(u), *may_exist)])
        }
        UplinkCmd::Set {
            dvs,
            host,
            name: n,
            members,
            add_member,
            del_member,
            bond_mode,
            storm,
            no_storm_control,
        } => {
            let (o, id) = uplink_id(dvs, host, n)?;
            let change = UplinkChange {
                members: (!members.is_empty()).then(|| members.clone()),
                add: add_member.clone(),
                del: del_member.clone(),
                bond_mode: bond_mode.map(Into::into),
                storm: if *no_storm_control {
                    StormChange::Off
                } else {
                    storm_change(&o, storm)?
                },
            };
            edit(Kind::Uplink, id, Change::Uplink(change))
        }
        UplinkCmd::Del {
            dvs,
            host,
            name: n,
            if_exists,
        } => {
            let (_, id) = uplink_id(dvs, host, n)?;
            txn(vec![delete(Kind::Uplink, id, *if_exists)])
        }
        UplinkCmd::List { dvs, host } => Plan::List {
            kind: Kind::Uplink,
            filter: Filter {
                dvs: dvs.clone(),
                host: host.clone(),
            },
        },
        UplinkCmd::Show { dvs, host, name: n } => Plan::Show {
            id: ObjectId::new(Kind::Uplink, uplink_id(dvs, host, n)?.1),
        },
    })
}

fn pg_id(dvs: &str, n: &str) -> Result<(String, String), Failure> {
    let o = pg_label(dvs, n);
    name(&o, "dvs", dvs)?;
    name(&o, "name", n)?;
    Ok((o, format!("{dvs}/{n}")))
}

/// The port group `pg add` creates.
pub fn new_port_group(a: &PgAddArgs) -> Result<DvsPortGroup, Failure> {
    let (o, _) = pg_id(&a.dvs, &a.name)?;
    let mut g = match (&a.vlan, &a.trunk) {
        (Some(v), None) => PortGroup::access(&a.name, vlan_id(&o, "--vlan", v)?),
        (None, Some(t)) => {
            let native = a
                .native_vlan
                .as_deref()
                .map(|n| vlan_id(&o, "--native-vlan", n))
                .transpose()?;
            PortGroup::trunk(&a.name, vlan_ranges(&o, "--trunk", t)?, native)
        }
        _ => {
            return Err(Failure::usage(
                &o,
                "--vlan",
                "give either --vlan N (access) or --trunk RANGES",
            ))
        }
    };
    g.dhcp_isolation = a.dhcp_isolation;
    g.ip_mac_binding = a.ip_mac_binding;
    g.tcp_checksum_fill = a.checksum_fill;
    g.shaping = shaped(&o, None, &shaping_change(&o, &a.shaping)?)?;
    g.storm_control = stormed(None, &storm_change(&o, &a.storm)?);
    Ok(DvsPortGroup {
        dvs: a.dvs.clone(),
        group: g,
    })
}

fn flag(on: bool, off: bool) -> Option<bool> {
    match (on, off) {
        (true, _) => Some(true),
        (_, true) => Some(false),
        _ => None,
    }
}

pub fn pg_change(a: &PgSetArgs) -> Result<PgChange, Failure> {
    let (o, _) = pg_id(&a.dvs, &a.name)?;
    let mode = match (&a.vlan, &a.trunk) {
        (Some(v), _) => Some(ModeChange::Access(vlan_id(&o, "--vlan", v)?)),
        (None, Some(t)) => Some(ModeChange::Trunk(vlan_ranges(&o, "--trunk", t)?)),
        (None, None) => None,
    };
    let native_vlan = match (&a.native_vlan, a.no_native_vlan) {
        (Some(n), _) => Some(Some(vlan_id(&o, "--native-vlan", n)?)),
        (None, true) => Some(None),
        (None, false) => None,
    };
    let shaping = if a.no_shaping {
        ShapingChange::Off
    } else {
        shaping_change(&o, &a.shaping)?
    };
    let storm = if a.no_storm_control {
        StormChange::Off
    } else {
        storm_change(&o, &a.storm)?
    };
    let c = PgChange {
        storm,
        mode,
        native_vlan,
        dhcp_isolation: flag(a.dhcp_isolation, a.no_dhcp_isolation),
        ip_mac_binding: flag(a.ip_mac_binding, a.no_ip_mac_binding),
        tcp_checksum_fill: flag(a.checksum_fill, a.no_checksum_fill),
        shaping,
    };
    if c == PgChange::default() {
        return Err(Failure::new(
            Exit::Usage,
            format!("{o}: nothing to change: give at least one option (see dvsctl pg set --help)"),
        ));
    }
    Ok(c)
}

fn plan_pg(c: &PgCmd) -> Result<Plan, Failure> {
    Ok(match c {
        PgCmd::Add(a) => txn(vec![create(
            Object::PortGroup(new_port_group(a)?),
            a.may_exist,
        )]),
        PgCmd::Set(a) => {
            let change = pg_change(a)?;
            edit(
                Kind::PortGroup,
                pg_id(&a.dvs, &a.name)?.1,
                Change::PortGroup(change),
            )
        }
        PgCmd::Del {
            dvs,
            name: n,
            if_exists,
        } => txn(vec![delete(Kind::PortGroup, pg_id(dvs, n)?.1, *if_exists)]),
        PgCmd::List { dvs } => Plan::List {
            kind: Kind::PortGroup,
            filter: Filter {
                dvs: dvs.clone(),
                host: None,
            },
        },
        PgCmd::Show { dvs, name: n } => Plan::Show {
            id: ObjectId::new(Kind::PortGroup, pg_id(dvs, n)?.1),
        },
    })
}

fn sg_name(n: &str) -> Result<String, Failure> {
    name(&sg_label(n), "name", n)
}

fn plan_sg(c: &SgCmd) -> Result<Plan, Failure> {
    Ok(match c {
        SgCmd::Add {
            name: n,
            default_rules,
            allow_router_advertisements,
            may_exist,
        } => {
            sg_name(n)?;
            let mut g = if *default_rules {
                SecurityGroup::default_group(n)
            } else {
                SecurityGroup {
                    name: n.clone(),
                    rules: vec![],
                    allow_router_advertisements: false,
                }
            };
            g.allow_router_advertisements = *allow_router_advertisements;
            txn(vec![create(Object::SecurityGroup(g), *may_exist)])
        }
        SgCmd::Set {
            name: n,
            allow_router_advertisements,
        } => edit(
            Kind::SecurityGroup,
            sg_name(n)?,
            Change::SgRouterAdvertisements(*allow_router_advertisements),
        ),
        SgCmd::Del { name: n, if_exists } => {
            txn(vec![delete(Kind::SecurityGroup, sg_name(n)?, *if_exists)])
        }
        SgCmd::List => Plan::List {
            kind: Kind::SecurityGroup,
            filter: Filter::default(),
        },
        SgCmd::Show { name: n } => Plan::Show {
            id: ObjectId::new(Kind::SecurityGroup, sg_name(n)?),
        },
        SgCmd::RuleAdd {
            sg,
            rule: r,
            may_exist,
        } => {
            let o = sg_label(sg);
            let rule = rule(&o, r)?;
            edit(
                Kind::SecurityGroup,
                sg_name(sg)?,
                Change::RuleAdd {
                    rule,
                    may_exist: *may_exist,
                },
            )
        }
        SgCmd::RuleDel {
            sg,
            index,
            rule: r,
            if_exists,
        } => {
            let o = sg_label(sg);
            let which = match (index, r) {
                (Some(i), _) => RuleSel::Index(*i),
                (None, Some(r)) => RuleSel::Rule(rule(&o, r)?),
                (None, None) => {
                    return Err(Failure::usage(
                        &o,
                        "rule-del",
                        "give the rule's INDEX or its options (--direction ...)",
                    ))
                }
            };
            edit(
                Kind::SecurityGroup,
                sg_name(sg)?,
                Change::RuleDel {
                    which,
                    if_exists: *if_exists,
                },
            )
        }
        SgCmd::RuleList { sg } => Plan::RuleList {
            id: ObjectId::new(Kind::SecurityGroup, sg_name(sg)?),
        },
    })
}

/// The port `port add` creates.
pub fn new_port(a: &PortAddArgs) -> Result<DvsPort, Failure> {
    let o = port_label(&a.name);
    Ok(DvsPort {
        dvs: name(&o, "--dvs", &a.dvs)?,
        port: Port {
            storm_control: stormed(None, &storm_change(&o, &a.storm)?),
            name: name(&o, "name", &a.name)?,
            mac: mac(&o, &a.mac)?,
            ips: ips(&o, "--ip", &a.ip)?,
            port_group: name(&o, "--pg", &a.pg)?,
            security_group: opt_name(&o, "--sg", &a.sg)?,
        },
        host: opt_name(&o, "--host", &a.host)?,
        vhost: a
            .socket
            .as_deref()
            .map(|s| {
                Ok::<_, Failure>(VhostConfig {
                    socket: absolute(&o, "--socket", s)?,
                    role: a.role.map(Into::into).unwrap_or_default(),
                })
            })
            .transpose()?,
        ethdev: match &a.ethdev {
            Some(d) if d.trim().is_empty() => {
                return Err(Failure::usage(&o, "--ethdev", "must not be empty"))
            }
            Some(d) => Some(model::EthdevConfig { devargs: d.clone() }),
            None => None,
        },
    })
}

pub fn port_change(a: &PortSetArgs) -> Result<PortChange, Failure> {
    let o = port_label(&a.name);
    name(&o, "name", &a.name)?;
    let vhost = if a.default_socket {
        VhostChange::Default
    } else if a.socket.is_some() || a.role.is_some() {
        VhostChange::Set {
            socket: a
                .socket
                .as_deref()
                .map(|s| absolute(&o, "--socket", s))
                .transpose()?,
            role: a.role.map(Into::into),
        }
    } else {
        VhostChange::Keep
    };
    let c = PortChange {
        dvs: opt_name(&o, "--dvs", &a.dvs)?,
        port_group: opt_name(&o, "--pg", &a.pg)?,
        mac: a.mac.as_deref().map(|m| mac(&o, m)).transpose()?,
        ips: if a.no_ip {
            Some(vec![])
        } else if a.ip.is_empty() {
            None
        } else {
            Some(ips(&o, "--ip", &a.ip)?)
        },
        security_group: if a.no_sg {
            Some(None)
        } else {
            opt_name(&o, "--sg", &a.sg)?.map(Some)
        },
        host: if a.unplace {
            Some(None)
        } else {
            opt_name(&o, "--host", &a.host)?.map(Some)
        },
        vhost,
        storm: if a.group_storm_control {
            StormChange::Off
        } else {
            storm_change(&o, &a.storm)?
        },
    };
    if c == PortChange::default() {
        return Err(Failure::new(
            Exit::Usage,
            format!(
                "{o}: nothing to change: give at least one option (see dvsctl port set --help)"
            ),
        ));
    }
    Ok(c)
}

fn plan_port(c: &PortCmd) -> Result<Plan, Failure> {
    Ok(match c {
        PortCmd::Add(a) => txn(vec![create(Object::Port(new_port(a)?), a.may_exist)]),
        PortCmd::Set(a) => edit(Kind::Port, &a.name, Change::Port(port_change(a)?)),
        PortCmd::Move { name: n, host } => {
            let o = port_label(n);
            name(&o, "name", n)?;
            let change = PortChange {
                host: Some(Some(name(&o, "HOST", host)?)),
                ..PortChange::default()
            };
            edit(Kind::Port, n, Change::Port(change))
        }
        PortCmd::Del { name: n, if_exists } => {
            name(&port_label(n), "name", n)?;
            txn(vec![delete(Kind::Port, n, *if_exists)])
        }
        PortCmd::List { dvs, host } => Plan::List {
            kind: Kind::Port,
            filter: Filter {
                dvs: dvs.clone(),
                host: host.clone(),
            },
        },
        PortCmd::Show { name: n } => Plan::Show {
            id: ObjectId::new(Kind::Port, name(&port_label(n), "name", n)?),
        },
    })
}

// ---- applying a change to the object read ----

fn wrong_kind(id: &ObjectId, o: &Object) -> Failure {
    Failure::new(
        Exit::Unavailable,
        format!(
            "unexpected answer from the controller: asked for {id}, got a {}",
            o.kind()
        ),
    )
}

/// The object `change` makes of `current` (the object `id` as read); `None`: nothing to do
/// (`--may-exist` / `--if-exists` found it done already).
pub fn apply(id: &ObjectId, change: &Change, current: Object) -> Result<Option<Object>, Failure> {
    let bad = |o: &Object| wrong_kind(id, o);
    Ok(Some(match (change, current) {
        (Change::DvsVlans(v), Object::Dvs(mut d)) => {
            d.vlans = v.clone();
            Object::Dvs(d)
        }
        (Change::HostVhostDir(dir), Object::Host(mut h)) => {
            h.vhost_dir = dir.clone();
            Object::Host(h)
        }
        (Change::Uplink(c), Object::Uplink(u)) => Object::Uplink(apply_uplink(c, u)?),
        (Change::PortGroup(c), Object::PortGroup(g)) => Object::PortGroup(apply_pg(c, g)?),
        (Change::SgRouterAdvertisements(allow), Object::SecurityGroup(mut g)) => {
            if g.allow_router_advertisements == *allow {
                return Ok(None);
            }
            g.allow_router_advertisements = *allow;
            Object::SecurityGroup(g)
        }
        (Change::RuleAdd { rule, may_exist }, Object::SecurityGroup(mut g)) => {
            if let Some(i) = g.rules.iter().position(|r| r == rule) {
                if *may_exist {
                    return Ok(None);
                }
                return Err(Failure::refused(
                    &sg_label(&g.name),
                    format!("rule-add: the same rule is already rules[{i}]"),
                ));
            }
            g.rules.push(rule.clone());
            Object::SecurityGroup(g)
        }
        (Change::RuleDel { which, if_exists }, Object::SecurityGroup(mut g)) => {
            let at = match which {
                RuleSel::Index(i) => (*i < g.rules.len()).then_some(*i),
                RuleSel::Rule(r) => g.rules.iter().position(|x| x == r),
            };
            match at {
                Some(i) => {
                    g.rules.remove(i);
                }
                None if *if_exists => return Ok(None),
                None => {
                    let what = match which {
                        RuleSel::Index(i) => format!(
                            "no rule rules[{i}] (it has {} rule{})",
                            g.rules.len(),
                            if g.rules.len() == 1 { "" } else { "s" }
                        ),
                        RuleSel::Rule(_) => "no rule matches those options".to_owned(),
                    };
                    return Err(Failure::refused(
                        &sg_label(&g.name),
                        format!("rule-del: {what}"),
                    ));
                }
            }
            Object::SecurityGroup(g)
        }
        (Change::Port(c), Object::Port(p)) => Object::Port(apply_port(c, p)?),
        (_, o) => return Err(bad(&o)),
    }))
}

fn apply_uplink(c: &UplinkChange, mut u: UplinkGroup) -> Result<UplinkGroup, Failure> {
    let o = uplink_label(&u.dvs, &u.host, &u.name);
    if let Some(m) = &c.members {
        u.members = m.clone();
    }
    for m in &c.add {
        if u.members.contains(m) {
            return Err(Failure::refused(
                &o,
                format!("--add-member: {m:?} is already a member"),
            ));
        }
        u.members.push(m.clone());
    }
    for m in &c.del {
        let Some(i) = u.members.iter().position(|x| x == m) else {
            return Err(Failure::refused(
                &o,
                format!("--del-member: {m:?} is not a member"),
            ));
        };
        u.members.remove(i);
    }
    if let Some(b) = c.bond_mode {
        u.bond_mode = b;
    }
    u.storm_control = stormed(u.storm_control, &c.storm);
    Ok(u)
}

fn apply_pg(c: &PgChange, mut pg: DvsPortGroup) -> Result<DvsPortGroup, Failure> {
    let o = pg_label(&pg.dvs, &pg.group.name);
    let g = &mut pg.group;
    match &c.mode {
        Some(ModeChange::Access(v)) => {
            g.kind = PortKind::Access;
            g.vlan = Some(*v);
            g.vlans.clear();
            g.native_vlan = None;
        }
        Some(ModeChange::Trunk(r)) => {
            g.kind = PortKind::Trunk;
            g.vlan = None;
            g.vlans = r.clone();
        }
        None => {}
    }
    if let Some(n) = c.native_vlan {
        if g.kind != PortKind::Trunk && n.is_some() {
            return Err(Failure::refused(
                &o,
                "--native-vlan: an access group has no native VLAN (make it a trunk with --trunk)",
            ));
        }
        g.native_vlan = n;
    }
    if let Some(b) = c.dhcp_isolation {
        g.dhcp_isolation = b;
    }
    if let Some(b) = c.ip_mac_binding {
        g.ip_mac_binding = b;
    }
    if let Some(b) = c.tcp_checksum_fill {
        g.tcp_checksum_fill = b;
    }
    g.shaping = shaped(&o, g.shaping, &c.shaping)?;
    g.storm_control = stormed(g.storm_control, &c.storm);
    Ok(pg)
}

fn apply_port(c: &PortChange, mut p: DvsPort) -> Result<DvsPort, Failure> {
    let o = port_label(&p.port.name);
    if let Some(d) = &c.dvs {
        p.dvs = d.clone();
    }
    if let Some(g) = &c.port_group {
        p.port.port_group = g.clone();
    }
    if let Some(m) = c.mac {
        p.port.mac = m;
    }
    if let Some(ips) = &c.ips {
        p.port.ips = ips.clone();
    }
    if let Some(sg) = &c.security_group {
        p.port.security_group = sg.clone();
    }
    if let Some(h) = &c.host {
        p.host = h.clone();
    }
    p.port.storm_control = stormed(p.port.storm_control, &c.storm);
    match &c.vhost {
        VhostChange::Keep => {}
        VhostChange::Default => p.vhost = None,
        VhostChange::Set { socket, role } => {
            let socket = match (socket, &p.vhost) {
                (Some(s), _) => s.clone(),
                (None, Some(v)) => v.socket.clone(),
                (None, None) => {
                    return Err(Failure::refused(
                        &o,
                        "--role: the port uses its host's default socket, where the switch is \
                         the server; give --socket PATH with --role",
                    ))
                }
            };
            let role = role
                .or(p.vhost.as_ref().map(|v| v.role))
                .unwrap_or_default();
            p.vhost = Some(VhostConfig { socket, role });
        }
    }
    Ok(p)
}

#[cfg(test)]
mod tests;
