//! The tables `dvsctl` prints, from the protocol's types (`--json` prints the same values
//! serialized).

use crate::ops::ethertype_str;
use api::dvs::{StatusReport, TxnReply, Versioned, WaitReport};
pub use api::text::table;
use model::cluster::{DvsPort, DvsPortGroup, Host, Kind, Object, UplinkGroup};
use model::{Direction, PortKind, Priority, Protocol, Remote, SecurityGroup, SgRule, VlanRange};
use std::fmt::Write;

/// `key: value` lines with the values aligned.
fn fields(title: &str, kv: &[(&str, String)]) -> String {
    let w = kv.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    let mut out = format!("{title}\n");
    for (k, v) in kv {
        let _ = writeln!(out, "  {:<w$} {v}", format!("{k}:"));
    }
    out
}

fn dash(s: String) -> String {
    if s.is_empty() {
        "-".into()
    } else {
        s
    }
}

fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map(T::to_string).unwrap_or_else(|| "-".into())
}

pub fn vlans(v: &[VlanRange]) -> String {
    dash(
        v.iter()
            .map(|r| r.to_string())
            .collect::<Vec<_>>()
            .join(","),
    )
}

fn yes(b: bool) -> String {
    if b { "yes" } else { "no" }.into()
}

fn priority(p: Priority) -> &'static str {
    match p {
        Priority::Low => "low",
        Priority::Medium => "medium",
        Priority::High => "high",
    }
}

/// `access 100` / `trunk 100-110,120 native 5`.
pub fn pg_mode(g: &model::PortGroup) -> String {
    match g.kind {
        PortKind::Access => format!("access {}", opt(&g.vlan)),
        PortKind::Trunk => match g.native_vlan {
            Some(n) => format!("trunk {} native {n}", vlans(&g.vlans)),
            None => format!("trunk {}", vlans(&g.vlans)),
        },
    }
}

fn pg_options(g: &model::PortGroup) -> String {
    let mut o = vec![];
    if g.dhcp_isolation {
        o.push("dhcp-isolation");
    }
    if g.ip_mac_binding {
        o.push("ip-mac-binding");
    }
    if g.tcp_checksum_fill {
        o.push("checksum-fill");
    }
    dash(o.join(","))
}

fn shaping(g: &model::PortGroup) -> String {
    match &g.shaping {
        None => "-".into(),
        Some(s) => {
            let mut t = format!("avg {}", s.average_mbps);
            if let Some(p) = s.peak_mbps {
                let _ = write!(t, " peak {p}");
            }
            if s.burst_mbit > 0.0 {
                let _ = write!(t, " burst {}", s.burst_mbit);
            }
            let _ = write!(t, " {}", priority(s.priority));
            t
        }
    }
}

/// `broadcast 1000 pps burst 100, multicast 5000 pps 20000 kbit/s burst 500`: each limited
/// class with its burst as enforced (the default when none was given); `-` when off.
fn storm(sc: Option<&model::StormControl>) -> String {
    let Some(sc) = sc else {
        return "-".into();
    };
    let classes: Vec<String> = sc
        .limits()
        .iter()
        .filter_map(|(name, l)| {
            let l = (*l)?;
            let mut t = format!("{} {} pps", name.replace('_', "-"), l.pps);
            if let Some(k) = l.kbps {
                let _ = write!(t, " {k} kbit/s");
            }
            let _ = write!(t, " burst {}", l.burst());
            Some(t)
        })
        .collect();
    if classes.is_empty() {
        "none (no class limited)".into()
    } else {
        classes.join(", ")
    }
}

fn ips(p: &DvsPort) -> String {
    dash(
        p.port
            .ips
            .iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(","),
    )
}

fn socket(p: &DvsPort) -> String {
    match &p.vhost {
        Some(v) => format!("{} ({})", v.socket.display(), v.role),
        None => "-".into(),
    }
}

fn protocol(p: Protocol) -> String {
    match p {
        Protocol::Any => "any".into(),
        Protocol::Tcp => "tcp".into(),
        Protocol::Udp => "udp".into(),
        Protocol::Icmp => "icmp".into(),
        Protocol::Number(n) => n.to_string(),
    }
}

fn rule_row(i: usize, r: &SgRule) -> Vec<String> {
    let ports = match (r.port_min, r.port_max) {
        (None, None) => "-".into(),
        (Some(a), Some(b)) if a == b => a.to_string(),
        (a, b) => format!("{}-{}", a.unwrap_or(1), b.unwrap_or(65535)),
    };
    let icmp = match (r.icmp_type, r.icmp_code) {
        (Some(t), Some(c)) => format!("{t}/{c}"),
        (Some(t), None) => t.to_string(),
        _ => "-".into(),
    };
    let remote = match &r.remote {
        None => "any".into(),
        Some(Remote::Cidr(c)) => c.to_string(),
        Some(Remote::Group(g)) => format!("group {g}"),
    };
    vec![
        i.to_string(),
        match r.direction {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
        .into(),
        ethertype_str(r.ethertype).into(),
        protocol(r.protocol),
        ports,
        icmp,
        remote,
    ]
}

/// A security group's rules, with the indexes `rule-del` takes.
pub fn rules(rules: &[SgRule]) -> String {
    if rules.is_empty() {
        return "no rules (nothing is let through)\n".into();
    }
    let rows: Vec<_> = rules
        .iter()
        .enumerate()
        .map(|(i, r)| rule_row(i, r))
        .collect();
    table(
        &[
            "#",
            "DIRECTION",
            "ETHERTYPE",
            "PROTOCOL",
            "PORTS",
            "ICMP",
            "REMOTE",
        ],
        &rows,
    )
}

fn pg_rows<'a>(pgs: impl Iterator<Item = &'a DvsPortGroup>) -> Vec<Vec<String>> {
    pgs.map(|p| {
        vec![
            p.dvs.clone(),
            p.group.name.clone(),
            pg_mode(&p.group),
            pg_options(&p.group),
            shaping(&p.group),
        ]
    })
    .collect()
}
const PG_HEADER: [&str; 5] = ["DVS", "NAME", "VLANS", "OPTIONS", "SHAPING"];

fn uplink_rows<'a>(us: impl Iterator<Item = &'a UplinkGroup>) -> Vec<Vec<String>> {
    us.map(|u| {
        vec![
            u.dvs.clone(),
            u.host.clone(),
            u.name.clone(),
            u.bond_mode.to_string(),
            u.members.join(" "),
        ]
    })
    .collect()
}
const UPLINK_HEADER: [&str; 5] = ["DVS", "HOST", "NAME", "BOND-MODE", "MEMBERS"];

fn port_rows<'a>(ps: impl Iterator<Item = &'a DvsPort>) -> Vec<Vec<String>> {
    ps.map(|p| {
        vec![
            p.port.name.clone(),
            p.dvs.clone(),
            p.port.port_group.clone(),
            p.port.mac.to_string(),
            ips(p),
            opt(&p.port.security_group),
            opt(&p.host),
            socket(p),
        ]
    })
    .collect()
}
const PORT_HEADER: [&str; 8] = ["NAME", "DVS", "PG", "MAC", "IPS", "SG", "HOST", "SOCKET"];

fn host_vhost_dir(h: &Host) -> String {
    match &h.vhost_dir {
        Some(d) => d.display().to_string(),
        None => format!("{} (default)", model::cluster::DEFAULT_VHOST_DIR),
    }
}

/// The objects of one kind as a table (`dvsctl <kind> list`).
pub fn list(kind: Kind, objects: &[Versioned]) -> String {
    let all = || objects.iter().map(|v| &v.object);
    match kind {
        Kind::Dvs => {
            let rows: Vec<_> = all()
                .filter_map(|o| match o {
                    Object::Dvs(d) => Some(vec![d.name.clone(), vlans(&d.vlans)]),
                    _ => None,
                })
                .collect();
            table(&["NAME", "VLANS"], &rows)
        }
        Kind::Host => {
            let rows: Vec<_> = all()
                .filter_map(|o| match o {
                    Object::Host(h) => Some(vec![
                        h.name.clone(),
                        host_vhost_dir(h),
                        yes(h.token_sha256.is_some()),
                    ]),
                    _ => None,
                })
                .collect();
            table(&["NAME", "VHOST-DIR", "TOKEN"], &rows)
        }
        Kind::SecurityGroup => {
            let rows: Vec<_> = all()
                .filter_map(|o| match o {
                    Object::SecurityGroup(g) => Some(vec![
                        g.name.clone(),
                        g.rules.len().to_string(),
                        yes(g.allow_router_advertisements),
                    ]),
                    _ => None,
                })
                .collect();
            table(&["NAME", "RULES", "RA-ALLOWED"], &rows)
        }
        Kind::PortGroup => table(&PG_HEADER, &pg_rows(port_groups(objects))),
        Kind::Uplink => table(&UPLINK_HEADER, &uplink_rows(uplinks(objects))),
        Kind::Port => table(&PORT_HEADER, &port_rows(ports(objects))),
    }
}

fn port_groups(all: &[Versioned]) -> impl Iterator<Item = &DvsPortGroup> {
    all.iter().filter_map(|v| match &v.object {
        Object::PortGroup(p) => Some(p),
        _ => None,
    })
}
fn uplinks(all: &[Versioned]) -> impl Iterator<Item = &UplinkGroup> {
    all.iter().filter_map(|v| match &v.object {
        Object::Uplink(u) => Some(u),
        _ => None,
    })
}
fn ports(all: &[Versioned]) -> impl Iterator<Item = &DvsPort> {
    all.iter().filter_map(|v| match &v.object {
        Object::Port(p) => Some(p),
        _ => None,
    })
}

fn section(out: &mut String, title: &str, header: &[&str], rows: Vec<Vec<String>>) {
    if rows.is_empty() {
        let _ = writeln!(out, "{title}: none");
    } else {
        let _ = writeln!(out, "{title}:");
        for l in table(header, &rows).lines() {
            let _ = writeln!(out, "  {l}");
        }
    }
}

/// One object in detail, with the objects of `all` that belong to it.
pub fn show(v: &Versioned, all: &[Versioned]) -> String {
    let rv = ("resource version", v.resource_version.to_string());
    match &v.object {
        Object::Dvs(d) => {
            let mut out = fields(
                &format!("dvs {}", d.name),
                &[("vlans", vlans(&d.vlans)), rv],
            );
            section(
                &mut out,
                "port groups",
                &PG_HEADER[1..],
                pg_rows(port_groups(all).filter(|p| p.dvs == d.name))
                    .into_iter()
                    .map(|r| r[1..].to_vec())
                    .collect(),
            );
            section(
                &mut out,
                "uplink groups",
                &UPLINK_HEADER[1..],
                uplink_rows(uplinks(all).filter(|u| u.dvs == d.name))
                    .into_iter()
                    .map(|r| r[1..].to_vec())
                    .collect(),
            );
            let n = ports(all).filter(|p| p.dvs == d.name).count();
            let _ = writeln!(out, "ports: {n}");
            out
        }
        Object::Host(h) => {
            let mut out = fields(
                &format!("host {}", h.name),
                &[
                    ("vhost dir", host_vhost_dir(h)),
                    (
                        "token",
                        if h.token_sha256.is_some() {
                            "set"
                        } else {
                            "none"
                        }
                        .into(),
                    ),
                    rv,
                ],
            );
            section(
                &mut out,
                "uplink groups",
                &UPLINK_HEADER,
                uplink_rows(uplinks(all).filter(|u| u.host == h.name)),
            );
            section(
                &mut out,
                "ports",
                &PORT_HEADER,
                port_rows(ports(all).filter(|p| p.host.as_deref() == Some(h.name.as_str()))),
            );
            out
        }
        Object::Uplink(u) => fields(
            &format!("uplink {}/{}/{}", u.dvs, u.host, u.name),
            &[
                ("dvs", u.dvs.clone()),
                ("host", u.host.clone()),
                ("bond mode", u.bond_mode.to_string()),
                ("members", u.members.join(" ")),
                ("storm control", storm(u.storm_control.as_ref())),
                rv,
            ],
        ),
        Object::PortGroup(p) => {
            let g = &p.group;
            let mut out = fields(
                &format!("port group {}/{}", p.dvs, g.name),
                &[
                    ("vlans", pg_mode(g)),
                    ("dhcp isolation", yes(g.dhcp_isolation)),
                    ("ip-mac binding", yes(g.ip_mac_binding)),
                    ("checksum fill", yes(g.tcp_checksum_fill)),
                    ("shaping", shaping(g)),
                    ("storm control", storm(g.storm_control.as_ref())),
                    rv,
                ],
            );
            section(
                &mut out,
                "ports",
                &PORT_HEADER,
                port_rows(ports(all).filter(|x| x.dvs == p.dvs && x.port.port_group == g.name)),
            );
            out
        }
        Object::SecurityGroup(g) => {
            let ra = (
                "router advertisements",
                if g.allow_router_advertisements {
                    "allowed"
                } else {
                    "dropped (ra_guard)"
                }
                .into(),
            );
            let mut out = fields(&format!("security group {}", g.name), &[rv, ra]);
            out.push_str(&security_group_rules(g));
            let users: Vec<&str> = ports(all)
                .filter(|p| p.port.security_group.as_deref() == Some(g.name.as_str()))
                .map(|p| p.port.name.as_str())
                .collect();
            let _ = writeln!(out, "ports: {}", dash(users.join(" ")));
            out
        }
        Object::Port(p) => fields(
            &format!("port {}", p.port.name),
            &[
                ("dvs", p.dvs.clone()),
                ("port group", p.port.port_group.clone()),
                ("mac", p.port.mac.to_string()),
                ("ips", ips(p)),
                ("security group", opt(&p.port.security_group)),
                (
                    "host",
                    p.host.clone().unwrap_or_else(|| "- (not placed)".into()),
                ),
                (
                    "socket",
                    match &p.vhost {
                        Some(_) => socket(p),
                        None => "<host's vhost dir>/<name>.sock (server)".into(),
                    },
                ),
                (
                    "storm control",
                    match &p.port.storm_control {
                        Some(sc) => format!("{} (the port's own)", storm(Some(sc))),
                        None => "the port group's".into(),
                    },
                ),
                rv,
            ],
        ),
    }
}

fn security_group_rules(g: &SecurityGroup) -> String {
    let mut out = String::new();
    if g.rules.is_empty() {
        out.push_str("rules: none (nothing is let through)\n");
    } else {
        out.push_str("rules:\n");
        for l in rules(&g.rules).lines() {
            let _ = writeln!(out, "  {l}");
        }
    }
    out
}

/// `dvsctl status`: one row per host; with `ports`, a row per reported port too.
pub fn status(s: &StatusReport, with_ports: bool) -> String {
    let mut out = format!("revision {}, store {}\n", s.revision, s.store);
    let rows: Vec<_> = s
        .hosts
        .iter()
        .map(|h| {
            let st = h.status.as_ref();
            let (attached, up, n) = st
                .map(|st| {
                    (
                        st.ports.iter().filter(|p| p.attached).count(),
                        st.ports.iter().filter(|p| p.link == "up").count(),
                        st.ports.len(),
                    )
                })
                .unwrap_or((0, 0, 0));
            vec![
                h.host.clone(),
                yes(h.alive),
                opt(&h.lease),
                st.map(|s| s.applied_revision.to_string())
                    .unwrap_or_else(|| "-".into()),
                yes(h.in_sync),
                st.map(|_| format!("{attached}/{n}"))
                    .unwrap_or_else(|| "-".into()),
                st.map(|_| format!("{up}/{n}"))
                    .unwrap_or_else(|| "-".into()),
                st.map(|s| dash(s.agent.clone()))
                    .unwrap_or_else(|| "-".into()),
                st.and_then(|s| s.error.clone())
                    .unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    if rows.is_empty() {
        out.push_str("no hosts\n");
        return out;
    }
    out.push_str(&table(
        &[
            "HOST", "ALIVE", "LEASE", "APPLIED", "IN-SYNC", "ATTACHED", "LINK-UP", "AGENT", "ERROR",
        ],
        &rows,
    ));
    if with_ports {
        let rows: Vec<_> = s
            .hosts
            .iter()
            .flat_map(|h| {
                h.status.iter().flat_map(|st| {
                    st.ports.iter().map(|p| {
                        vec![
                            h.host.clone(),
                            p.name.clone(),
                            yes(p.attached),
                            p.link.clone(),
                            opt(&p.error),
                        ]
                    })
                })
            })
            .collect();
        out.push('\n');
        if rows.is_empty() {
            out.push_str("no ports reported\n");
        } else {
            out.push_str(&table(
                &["HOST", "PORT", "ATTACHED", "LINK", "ERROR"],
                &rows,
            ));
        }
    }
    out
}

fn hosts(h: &[String]) -> String {
    dash(h.join(", "))
}

/// How a `--wait=hosts` went.
pub fn wait(w: &WaitReport) -> String {
    let mut out = format!(
        "waited {:.2} s: {} applied, {} down, {} pending\n",
        w.waited_ms as f64 / 1000.0,
        w.applied.len(),
        w.down.len(),
        w.pending.len()
    );
    let _ = writeln!(out, "  applied:  {}", hosts(&w.applied));
    let _ = writeln!(
        out,
        "  down:     {}{}",
        hosts(&w.down),
        if w.down.is_empty() {
            ""
        } else {
            " (no live agent: they get the change when they return)"
        }
    );
    let _ = writeln!(out, "  pending:  {}", hosts(&w.pending));
    out
}

/// What a write prints without `--json` when it was asked to wait: the wait, or why there was
/// none.
pub fn waited(r: &TxnReply) -> String {
    match &r.wait {
        Some(w) => wait(w),
        None if r.changed.is_empty() => "nothing changed: no host to wait for\n".into(),
        None if r.affected_hosts.is_empty() => "no host is affected by this change\n".into(),
        None => format!(
            "the controller did not wait (affected hosts: {})\n",
            hosts(&r.affected_hosts)
        ),
    }
}

#[cfg(test)]
mod tests;
