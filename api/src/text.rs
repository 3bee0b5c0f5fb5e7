//! The tables `evsd ctl` prints, from the typed answers.

use crate::reply::*;
use model::Backend;
use std::fmt::{self, Write};

/// Columns padded to their widest cell, two spaces apart; the last column is not padded
/// (`evsd ctl` and `dvsctl` print their tables with it).
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut w: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[String]| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                l.push_str(c);
            } else {
                let _ = write!(l, "{c:<width$}  ", width = w[i]);
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&header.iter().map(|h| h.to_string()).collect::<Vec<_>>());
    for r in rows {
        line(r);
    }
    out
}

fn opt<T: fmt::Display>(v: Option<T>, f: impl Fn(T) -> String) -> String {
    v.map(f).unwrap_or_else(|| "-".into())
}

impl fmt::Display for PortKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PortKind::Port => "port",
            PortKind::Uplink => "uplink",
            PortKind::Stale => "stale",
        })
    }
}

impl fmt::Display for PortState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PortState::Up => "up",
            PortState::Down => "down",
            PortState::Detached => "detached",
        })
    }
}

pub fn backend(b: &Option<Backend>) -> String {
    match b {
        Some(Backend::Vhost(v)) => format!("vhost:{}({})", v.socket.display(), v.role),
        Some(Backend::Ethdev { devargs }) => format!("ethdev:{devargs}"),
        None => "-".into(),
    }
}

pub fn ports(ports: &[PortReport]) -> String {
    let rows: Vec<Vec<String>> = ports
        .iter()
        .map(|p| {
            let d: Vec<String> = p
                .drops
                .iter()
                .map(|(k, n)| format!("{k}={n}"))
                .chain(
                    p.egress_drops
                        .iter()
                        .map(|(k, n)| format!("egress:{k}={n}")),
                )
                .collect();
            vec![
                p.name.clone(),
                p.id.to_string(),
                p.kind.to_string(),
                p.state.to_string(),
                p.rx_packets.to_string(),
                p.rx_bytes.to_string(),
                p.tx_packets.to_string(),
                p.tx_bytes.to_string(),
                if d.is_empty() {
                    "0".into()
                } else {
                    d.join(",")
                },
                backend(&p.backend),
            ]
        })
        .collect();
    table(
        &[
            "PORT", "ID", "KIND", "STATE", "RX_PKTS", "RX_BYTES", "TX_PKTS", "TX_BYTES", "DROPS",
            "BACKEND",
        ],
        &rows,
    )
}

pub fn threads(threads: &[ThreadReport]) -> String {
    let rows: Vec<Vec<String>> = threads
        .iter()
        .map(|t| {
            vec![
                t.thread.to_string(),
                t.core.to_string(),
                t.packets.to_string(),
                t.busy_cycles.to_string(),
                format!("{:.1}%", t.busy_pct),
                opt(t.cycles_per_packet, |c| format!("{c:.0}")),
                opt(t.cache_hit_pct, |c| format!("{c:.1}%")),
                t.rx_ports.join(","),
            ]
        })
        .collect();
    table(
        &[
            "THREAD",
            "CORE",
            "PACKETS",
            "BUSY_CYCLES",
            "BUSY",
            "CYC/PKT",
            "CACHE_HIT",
            "RX_PORTS",
        ],
        &rows,
    )
}

pub fn mac(entries: &[MacEntry]) -> String {
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            vec![
                e.vlan.to_string(),
                e.mac.to_string(),
                e.port.clone(),
                e.age_secs.to_string(),
                if e.is_static { "static" } else { "learned" }.into(),
            ]
        })
        .collect();
    table(&["VLAN", "MAC", "PORT", "AGE_S", "KIND"], &rows)
}

pub fn connections(conns: &[ConnectionEntry]) -> String {
    let rows: Vec<Vec<String>> = conns
        .iter()
        .map(|r| {
            let c = &r.connection;
            let end = |ip: &std::net::IpAddr, port: u16| match ip {
                std::net::IpAddr::V6(_) => format!("[{ip}]:{port}"),
                _ => format!("{ip}:{port}"),
            };
            vec![
                r.port.clone(),
                c.proto.to_string(),
                end(&c.src, c.sport),
                end(&c.dst, c.dport),
                if c.picked_up {
                    format!("{} (picked up)", c.state)
                } else {
                    c.state.clone()
                },
                c.expires_in_secs.to_string(),
            ]
        })
        .collect();
    table(
        &[
            "ZONE(PORT)",
            "PROTO",
            "ORIGINAL SOURCE",
            "ORIGINAL DESTINATION",
            "STATE",
            "EXPIRES_S",
        ],
        &rows,
    )
}

/// In the style of `ovs-ofctl dump-flows`: every table, rule by rule, with why each rule exists.
pub fn tables(d: &TableDump) -> String {
    let mut out = format!("pipeline version {}\n", d.version);
    for t in &d.tables {
        let _ = writeln!(
            out,
            "table {} ({}): {} rules, {} masks",
            t.id,
            t.name,
            t.rules.len(),
            t.masks
        );
        for r in &t.rules {
            let _ = writeln!(
                out,
                "  priority={} {} actions={}  # {}",
                r.priority,
                r.matches,
                r.actions.join(","),
                r.note
            );
        }
    }
    out
}

impl fmt::Display for TraceReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "packet in port {}: {}", self.in_port, self.flow)?;
        for s in &self.steps {
            writeln!(f, "{}{}", "    ".repeat(s.depth + 1), s.text)?;
        }
        write!(f, "verdict: {}", self.verdict)
    }
}

impl fmt::Display for Applied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "applied: generation {}, {} rules added, {} removed, {} objects recompiled",
            self.generation, self.rules_added, self.rules_removed, self.owners_recompiled
        )?;
        if !self.removed_ports.is_empty() {
            write!(f, "; ports removed: {}", self.removed_ports.join(", "))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::{Role, VhostConfig};

    #[test]
    fn port_table_shows_every_field_it_names() {
        let p = PortReport {
            name: "vm1".into(),
            id: 3,
            kind: PortKind::Port,
            state: PortState::Up,
            backend: Some(Backend::Vhost(VhostConfig {
                socket: "/run/vm1.sock".into(),
                role: Role::Client,
            })),
            ethdev: Some(0),
            driver: Some("net_vhost".into()),
            connects: 1,
            rx_packets: 11,
            rx_bytes: 704,
            tx_packets: 12,
            tx_bytes: 768,
            drops: [("tx_full".to_string(), 2)].into(),
            egress_drops: [("sg_ingress_denied".to_string(), 1)].into(),
            pmd: None,
        };
        let t = ports(&[p]);
        let row = t.lines().nth(1).unwrap();
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            cells,
            [
                "vm1",
                "3",
                "port",
                "up",
                "11",
                "704",
                "12",
                "768",
                "tx_full=2,egress:sg_ingress_denied=1",
                "vhost:/run/vm1.sock(client)"
            ]
        );
    }

    #[test]
    fn tables_render_like_dump_flows() {
        let d = TableDump {
            version: 4,
            tables: vec![TableReport {
                id: 12,
                name: "ingress_sg".into(),
                masks: 1,
                rules: vec![RuleReport {
                    priority: 0,
                    matches: "reg0=100".into(),
                    actions: vec!["drop(sg_ingress_denied)".into()],
                    note: "ingress rule missing in security group web".into(),
                }],
            }],
        };
        assert_eq!(
            tables(&d),
            "pipeline version 4\ntable 12 (ingress_sg): 1 rules, 1 masks\n  priority=0 reg0=100 \
             actions=drop(sg_ingress_denied)  # ingress rule missing in security group web\n"
        );
    }
}
