//! The switch's state as the control protocol's typed answers (`api`): the flowtable's own types
//! stay internal, so renaming a field inside the pipeline cannot change what clients read.

use api::{
    Applied, Connection, ConnectionEntry, MacEntry, RuleReport, TableDump, TableReport, TraceEmit,
    TraceReport, TraceStep,
};
use flowtable::switch::{ApplyReport, Switch};
use flowtable::trace::Trace;
use flowtable::verdict::VlanEdit;
use model::Model;

/// Every non-empty table of the version in force, highest priority first.
pub fn tables(sw: &Switch) -> TableDump {
    let pl = sw.pipeline();
    let tables = pl
        .tables
        .iter()
        .enumerate()
        .filter(|(_, t)| !t.is_empty())
        .map(|(i, t)| {
            let mut rules: Vec<_> = t.rules().collect();
            rules.sort_by(|a, b| b.priority.cmp(&a.priority).then(a.id.cmp(&b.id)));
            TableReport {
                id: i as u32,
                name: pl.table_names.get(i).copied().unwrap_or("").to_string(),
                masks: t.subtable_count(),
                rules: rules
                    .into_iter()
                    .map(|r| RuleReport {
                        priority: r.priority,
                        matches: flowtable::matcher::describe(&r.m),
                        actions: r.actions.iter().map(|a| a.to_string()).collect(),
                        note: r.note.to_string(),
                    })
                    .collect(),
            }
        })
        .collect();
    TableDump {
        version: pl.version,
        tables,
    }
}

pub fn mac(sw: &Switch, now_ns: u64) -> Vec<MacEntry> {
    sw.mac_entries(now_ns)
        .into_iter()
        .map(|(port, e)| MacEntry {
            vlan: e.domain,
            mac: e.mac,
            port,
            age_secs: e.age_ns / 1_000_000_000,
            is_static: e.is_static,
        })
        .collect()
}

pub fn connections(sw: &Switch, limit: usize, now_ns: u64) -> Vec<ConnectionEntry> {
    sw.connections(limit, now_ns)
        .into_iter()
        .map(|(port, e)| ConnectionEntry {
            port,
            connection: Connection {
                zone: e.zone,
                eth_type: e.eth_type,
                proto: e.proto,
                src: e.src,
                dst: e.dst,
                sport: e.sport,
                dport: e.dport,
                icmp_id: e.icmp_id,
                state: serde_json::to_value(e.state)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                replied: e.replied,
                expires_in_secs: e.expires_in_secs,
                packets_orig: e.packets_orig,
                packets_reply: e.packets_reply,
            },
        })
        .collect()
}

/// `before`: the model the apply replaced (to name the ports it removed).
pub fn applied(sw: &Switch, before: &Model, r: &ApplyReport) -> Applied {
    let after = sw.model();
    let names = |m: &Model| -> Vec<String> {
        m.uplinks
            .iter()
            .map(|u| u.name.clone())
            .chain(m.ports.iter().map(|p| p.name.clone()))
            .collect()
    };
    let kept = names(&after);
    Applied {
        generation: sw.pipeline().version,
        rules_added: r.rules_added,
        rules_removed: r.rules_removed,
        owners_recompiled: r.owners_recompiled,
        removed_ports: names(before)
            .into_iter()
            .filter(|n| !kept.contains(n))
            .collect(),
    }
}

pub fn trace(t: Trace) -> TraceReport {
    TraceReport {
        in_port: t.in_port,
        flow: t.flow,
        steps: t
            .steps
            .into_iter()
            .map(|s| TraceStep {
                depth: s.depth,
                text: s.text,
            })
            .collect(),
        emits: t
            .emits
            .into_iter()
            .map(|e| TraceEmit {
                port: e.port,
                vlan: match e.vlan {
                    VlanEdit::Set(v) => Some(v),
                    VlanEdit::Strip | VlanEdit::Keep => None,
                },
            })
            .collect(),
        drop: t.drop.map(|r| r.name().to_string()),
        verdict: t.verdict,
    }
}
