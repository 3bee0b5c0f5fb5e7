//! Storm control: per-port limits on the frames the switch floods (broadcast, multicast, and
//! unicast to a MAC it has not learned) received from a port, or from the physical network
//! through an uplink.
//!
//! Where it is set, as operators of other switches expect it (Open vSwitch and vSphere put
//! per-port traffic policy on the port with port-group defaults; Cisco's `storm-control` is an
//! interface setting): a port group's `storm_control` applies to each of its ports (each port has
//! its own budget, not a share of the group's), a port's own `storm_control` replaces the group's
//! as a whole, and an uplink's applies to what arrives from the network. Unicast to a learned MAC
//! is never limited.

use crate::switch::ModelError;
use serde::{Deserialize, Serialize};

/// Allowed packet rates, packets/s: 0 (drop every such frame) to 100 Mpps (beyond any port).
pub const STORM_PPS: (u64, u64) = (0, 100_000_000);
/// Allowed byte rates, kbit/s: 1 kbit/s to 400 Gbit/s (as shaping).
pub const STORM_KBPS: (u64, u64) = (1, 400_000_000);
/// Allowed bursts, packets: at least one, at most 10 s of the largest rate would be absurd, so
/// 10 M.
pub const STORM_BURST: (u64, u64) = (1, 10_000_000);

/// The limits of one port; a class without a limit is not limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct StormControl {
    /// Frames to ff:ff:ff:ff:ff:ff.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broadcast: Option<StormLimit>,
    /// Frames to a group MAC other than broadcast (IPv4/IPv6 multicast, STP, LLDP...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multicast: Option<StormLimit>,
    /// Unicast frames flooded because their destination MAC is not learned in their VLAN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unknown_unicast: Option<StormLimit>,
}

/// A limit on one class of flooded frames: a packet rate with a burst, and optionally a byte
/// rate (both must allow a frame for it to pass).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StormLimit {
    /// Packets per second in the long run.
    pub pps: u64,
    /// Packets that may come at once after a quiet time; absent: [`StormLimit::burst`]'s
    /// default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u64>,
    /// Also at most this many kbit/s (1 kbit = 1000 bits, frame bytes without the FCS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kbps: Option<u64>,
}

impl StormLimit {
    /// A limit of `pps` with the default burst and no byte rate.
    pub fn pps(pps: u64) -> StormLimit {
        StormLimit {
            pps,
            burst: None,
            kbps: None,
        }
    }

    /// The burst in packets: as given, else a tenth of a second of the rate but at least 32 (one
    /// receive burst of the dataplane, so a legitimate handful of ARPs arriving together passes).
    pub fn burst(&self) -> u64 {
        self.burst.unwrap_or((self.pps / 10).max(32))
    }
}

impl StormControl {
    /// The three classes with their names, in a fixed order.
    pub fn limits(&self) -> [(&'static str, Option<&StormLimit>); 3] {
        [
            ("broadcast", self.broadcast.as_ref()),
            ("multicast", self.multicast.as_ref()),
            ("unknown_unicast", self.unknown_unicast.as_ref()),
        ]
    }

    /// Checks the ranges; errors name `object` and the field (`storm_control.broadcast.pps`).
    pub fn check(&self, object: &str) -> Result<(), ModelError> {
        for (class, l) in self.limits() {
            let Some(l) = l else { continue };
            let bad = |field: &str, v: u64, (lo, hi): (u64, u64)| ModelError {
                object: object.into(),
                field: format!("storm_control.{class}.{field}"),
                message: format!("{v}: must be {lo}..={hi}"),
            };
            let within = |v: u64, (lo, hi): (u64, u64)| (lo..=hi).contains(&v);
            if !within(l.pps, STORM_PPS) {
                return Err(bad("pps", l.pps, STORM_PPS));
            }
            if let Some(b) = l.burst.filter(|b| !within(*b, STORM_BURST)) {
                return Err(bad("burst", b, STORM_BURST));
            }
            if let Some(k) = l.kbps.filter(|k| !within(*k, STORM_KBPS)) {
                return Err(bad("kbps", k, STORM_KBPS));
            }
        }
        Ok(())
    }
}
