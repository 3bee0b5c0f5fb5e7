//! Table 4 (meter): a port group's transmit shaping, as a meter per port.

use super::tables::{Rules, T_L2, T_METER};
use crate::classifier::Action;
use crate::matcher::MatchBuilder;
use model::PortGroup;

/// The switch-wide default: no shaping.
pub(super) fn unshaped(rs: &mut Rules) {
    rs.add(
        T_METER,
        0,
        MatchBuilder::new().build(),
        vec![Action::GotoTable(T_L2)],
        "no transmit shaping",
    );
}

pub(super) fn port(rs: &mut Rules, pg: &PortGroup, id: u32) {
    let inp = MatchBuilder::new().in_port(id);
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
