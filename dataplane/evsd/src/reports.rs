//! The switch's state as the control protocol's typed answers (`api`): the flowtable's own types
//! stay internal, so renaming a field inside the pipeline cannot change what clients read.

use api::{
    Applied, Connection, ConnectionEntry, MacEntry, RuleReport, TableDump, TableReport, TraceEmit,
    TraceReport, TraceStep,
};
use flowtable::pipeline::Pipeline;
use flowtable::switch::{ApplyReport, Switch};
use flowtable::trace::Trace;
use flowtable::verdict::VlanEdit;

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
                picked_up: e.picked_up,
                expires_in_secs: e.expires_in_secs,
                packets_orig: e.packets_orig,
                packets_reply: e.packets_reply,
            },
        })
        .collect()
}

/// `before`: the tables the apply replaced, which still name the ports it removed.
pub fn applied(sw: &Switch, before: &Pipeline, r: &ApplyReport) -> Applied {
    Applied {
        generation: sw.pipeline().version,
        rules_added: r.rules_added,
        rules_removed: r.rules_removed,
        owners_recompiled: r.owners_recompiled,
        removed_ports: r
            .removed_ports
            .iter()
            .map(|&id| before.port_name(id))
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

#[cfg(test)]
mod tests {
    use super::*;
    use flowtable::switch::SwitchConfig;
    use model::Model;

    const MODEL: &str = r#"
[[uplinks]]
name = "up0"

[[port_groups]]
name = "web"
vlan = 100

[[ports]]
name = "vm1"
mac = "02:00:00:00:00:01"
port_group = "web"

[[ports]]
name = "vm2"
mac = "02:00:00:00:00:02"
port_group = "web"
"#;

    #[test]
    fn apply_answer_names_removed_ports_and_the_new_generation() {
        let mut m: Model = toml::from_str(MODEL).unwrap();
        let sw = Switch::new(SwitchConfig::default(), m.clone()).unwrap();
        let gen0 = sw.pipeline().version;
        m.ports.retain(|p| p.name != "vm2");
        m.uplinks.clear();
        let before = sw.pipeline();
        let r = sw.apply(m).unwrap();
        let a = applied(&sw, &before, &r);
        let mut removed = a.removed_ports.clone();
        removed.sort();
        assert_eq!(removed, ["up0", "vm2"]);
        assert!(a.generation > gen0, "{a:?}");
        assert_eq!(a.generation, sw.pipeline().version);
        assert!(a.rules_removed > 0, "{a:?}");
    }
}
