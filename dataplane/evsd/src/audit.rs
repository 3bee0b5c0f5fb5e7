//! The audit trail: one `info` line under target `audit` for every change to the switch (a model
//! applied, a port attached or detached), saying where the request came from, what changed and
//! the generation in force afterwards; a refused change is one `warn` line. For example:
//!
//! ```text
//! 2026-12-02T18:40:01.123456Z  INFO audit: apply from="control socket" generation=4 changes="ports +1 (c) ~1 (b); port_groups ~1 (web)"
//! ```

use model::{Backend, Model};
use std::collections::BTreeMap;
use std::fmt;

/// Who asked for a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `evsd ctl` or any other client of the control socket (also the metrics server's reads).
    Socket,
    /// A SIGHUP reload of the config file.
    Sighup,
    /// The host agent, carrying out this controller revision.
    Controller { revision: u64 },
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Socket => write!(f, "control socket"),
            Source::Sighup => write!(f, "SIGHUP"),
            Source::Controller { revision } => write!(f, "controller revision {revision}"),
        }
    }
}

/// At most this many names per list; the rest is counted ("and 12 more").
const MAX_NAMES: usize = 5;

fn names(v: &[&str]) -> String {
    let mut s = v
        .iter()
        .take(MAX_NAMES)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    if v.len() > MAX_NAMES {
        s += &format!(" and {} more", v.len() - MAX_NAMES);
    }
    s
}

/// `ports +1 (c) -1 (a) ~1 (b)` for one kind of object, or None when none changed.
fn diff<T: PartialEq>(
    kind: &str,
    before: &[T],
    after: &[T],
    name: impl Fn(&T) -> &str,
) -> Option<String> {
    let b: BTreeMap<&str, &T> = before.iter().map(|x| (name(x), x)).collect();
    let a: BTreeMap<&str, &T> = after.iter().map(|x| (name(x), x)).collect();
    let added: Vec<&str> = a.keys().filter(|k| !b.contains_key(*k)).copied().collect();
    let removed: Vec<&str> = b.keys().filter(|k| !a.contains_key(*k)).copied().collect();
    let changed: Vec<&str> = a
        .iter()
        .filter(|(k, v)| b.get(*k).is_some_and(|o| o != *v))
        .map(|(k, _)| *k)
        .collect();
    let mut parts = vec![];
    for (sign, v) in [("+", &added), ("-", &removed), ("~", &changed)] {
        if !v.is_empty() {
            parts.push(format!("{sign}{} ({})", v.len(), names(v)));
        }
    }
    (!parts.is_empty()).then(|| format!("{kind} {}", parts.join(" ")))
}

/// What a new model changes, by object name: `ports +1 (c) ~1 (b); port_groups ~1 (web)`, or
/// `nothing` for the model in force.
pub fn model_changes(before: &Model, after: &Model) -> String {
    let parts: Vec<String> = [
        diff("uplinks", &before.uplinks, &after.uplinks, |u| &u.name),
        diff(
            "port_groups",
            &before.port_groups,
            &after.port_groups,
            |g| &g.name,
        ),
        diff(
            "security_groups",
            &before.security_groups,
            &after.security_groups,
            |g| &g.name,
        ),
        diff("ports", &before.ports, &after.ports, |p| &p.name),
        (before.remote_members != after.remote_members).then(|| "remote_members changed".into()),
    ]
    .into_iter()
    .flatten()
    .collect();
    if parts.is_empty() {
        "nothing".into()
    } else {
        parts.join("; ")
    }
}

pub fn applied(from: Source, generation: u64, changes: &str) {
    tracing::info!(target: "audit", from = from.to_string().as_str(), generation, changes, "apply");
}

pub fn attached(from: Source, generation: u64, port: &str, backend: &Backend) {
    let backend = backend.describe();
    tracing::info!(target: "audit", from = from.to_string().as_str(), generation, port, backend, "attach");
}

pub fn detached(from: Source, generation: u64, port: &str) {
    tracing::info!(target: "audit", from = from.to_string().as_str(), generation, port, "detach");
}

/// A change that was asked for and refused (nothing changed).
pub fn refused(from: Source, generation: u64, what: &str, error: &str) {
    tracing::warn!(target: "audit", from = from.to_string().as_str(), generation, error, "{what} refused");
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::{Port, PortGroup};

    fn port(name: &str, group: &str) -> Port {
        serde_json::from_value(serde_json::json!({
            "name": name, "mac": "02:00:00:00:00:01", "port_group": group
        }))
        .unwrap()
    }

    fn group(name: &str, vlan: u16) -> PortGroup {
        serde_json::from_value(serde_json::json!({"name": name, "vlan": vlan})).unwrap()
    }

    #[test]
    fn names_what_was_added_removed_and_changed() {
        let before = Model {
            port_groups: vec![group("web", 100)],
            ports: vec![port("a", "web"), port("b", "web")],
            ..Model::default()
        };
        let mut after = before.clone();
        after.port_groups[0] = group("web", 200);
        after.ports.remove(0);
        after.ports.push(port("c", "web"));
        assert_eq!(
            model_changes(&before, &after),
            "port_groups ~1 (web); ports +1 (c) -1 (a)"
        );
        assert_eq!(model_changes(&before, &before), "nothing");
    }

    #[test]
    fn long_lists_are_bounded() {
        let after = Model {
            port_groups: vec![group("web", 100)],
            ports: (0..40).map(|i| port(&format!("p{i:02}"), "web")).collect(),
            ..Model::default()
        };
        let s = model_changes(&Model::default(), &after);
        assert_eq!(
            s,
            "port_groups +1 (web); ports +40 (p00, p01, p02, p03, p04 and 35 more)"
        );
    }
}
