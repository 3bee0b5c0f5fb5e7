//! What the flowtable tells the dataplane about each packet of a burst.
//!
//! Kept free of references into the tables so the dataplane can hold results across a burst while
//! the control side publishes a new table version.

use crate::wire::Layout;
use serde::{Deserialize, Serialize};

/// Why a packet was dropped. A small closed set so per-port drop counters are an array, not a map;
/// the human explanation (which rule, which group) comes from [`crate::trace`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[repr(u8)]
pub enum DropReason {
    /// The frame could not be parsed (truncated or malformed headers).
    Malformed = 0,
    /// No rule matched (the tables' default is to drop).
    NoMatch,
    /// An explicit drop rule with no more specific reason.
    Policy,
    /// A tagged frame arrived on an access port.
    TaggedOnAccess,
    /// The frame's VLAN is not in the trunk's (or uplink's) allowed set.
    VlanNotAllowed,
    /// QinQ / stacked tags are not supported on this port.
    StackedVlan,
    /// Source MAC differs from the MAC bound to the port.
    SpoofedMac,
    /// Source IPv4/IPv6/ARP sender address not bound to the port.
    SpoofedIp,
    /// DHCP server message (UDP 67→68, 547→546) from a guest with DHCP isolation on or a
    /// security group.
    DhcpServer,
    /// DHCP server message towards a port with a security group from anywhere but an uplink.
    DhcpServerSpoof,
    /// ARP whose sender hardware address is not the MAC bound to the port.
    ArpSpoofedMac,
    /// Neighbour advertisement, or duplicate-address-detection solicitation, for an IPv6 address
    /// not bound to the port.
    NdSpoofedTarget,
    /// Neighbour solicitation or advertisement whose link-layer address option is not the port's
    /// MAC.
    NdSpoofedLladdr,
    /// Router advertisement from a guest whose security group does not allow it.
    RaGuard,
    /// No egress rule of the sender's security group allows the new connection.
    SgEgressDenied,
    /// No ingress rule of the receiver's security group allows the new connection.
    SgIngressDenied,
    /// Connection tracking marked the packet invalid (bad TCP transition).
    CtInvalid,
    /// The connection table is full.
    CtFull,
    /// Over the port's transmit shaping rate.
    Meter,
    /// The port's MAC learning limit is reached and the source is unknown.
    MacLimit,
    /// The frame would go back out of the port it came from (or nowhere else in its VLAN).
    Loop,
    /// The destination port is down or its transmit queue is full (counted by the dataplane).
    TxFull,
    /// The destination port does not exist.
    NoPort,
    /// Over its input port's storm control limit on broadcast (appended last: the reasons' numbers
    /// index counters).
    StormBroadcast,
    /// Over its input port's storm control limit on multicast.
    StormMulticast,
    /// Over its input port's storm control limit on unicast to unlearned MACs (flooded).
    StormUnknownUnicast,
}

impl DropReason {
    pub const COUNT: usize = DropReason::StormUnknownUnicast as usize + 1;
    pub const ALL: [DropReason; DropReason::COUNT] = [
        DropReason::Malformed,
        DropReason::NoMatch,
        DropReason::Policy,
        DropReason::TaggedOnAccess,
        DropReason::VlanNotAllowed,
        DropReason::StackedVlan,
        DropReason::SpoofedMac,
        DropReason::SpoofedIp,
        DropReason::DhcpServer,
        DropReason::DhcpServerSpoof,
        DropReason::ArpSpoofedMac,
        DropReason::NdSpoofedTarget,
        DropReason::NdSpoofedLladdr,
        DropReason::RaGuard,
        DropReason::SgEgressDenied,
        DropReason::SgIngressDenied,
        DropReason::CtInvalid,
        DropReason::CtFull,
        DropReason::Meter,
        DropReason::MacLimit,
        DropReason::Loop,
        DropReason::TxFull,
        DropReason::NoPort,
        DropReason::StormBroadcast,
        DropReason::StormMulticast,
        DropReason::StormUnknownUnicast,
    ];
    /// Stable snake_case name used in metrics labels and CLI output.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::NoMatch => "no_match",
            DropReason::Policy => "policy",
            DropReason::TaggedOnAccess => "tagged_on_access",
            DropReason::VlanNotAllowed => "vlan_not_allowed",
            DropReason::StackedVlan => "stacked_vlan",
            DropReason::SpoofedMac => "spoofed_mac",
            DropReason::SpoofedIp => "spoofed_ip",
            DropReason::DhcpServer => "dhcp_server",
            DropReason::DhcpServerSpoof => "dhcp_server_spoof",
            DropReason::ArpSpoofedMac => "arp_spoofed_mac",
            DropReason::NdSpoofedTarget => "nd_spoofed_target",
            DropReason::NdSpoofedLladdr => "nd_spoofed_lladdr",
            DropReason::RaGuard => "ra_guard",
            DropReason::SgEgressDenied => "sg_egress_denied",
            DropReason::SgIngressDenied => "sg_ingress_denied",
            DropReason::CtInvalid => "ct_invalid",
            DropReason::CtFull => "ct_full",
            DropReason::Meter => "meter",
            DropReason::MacLimit => "mac_limit",
            DropReason::Loop => "loop",
            DropReason::TxFull => "tx_full",
            DropReason::NoPort => "no_port",
            DropReason::StormBroadcast => "storm_broadcast",
            DropReason::StormMulticast => "storm_multicast",
            DropReason::StormUnknownUnicast => "storm_unknown_unicast",
        }
    }
}

/// How the 802.1Q tag of a frame must change on its way out of one port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum VlanEdit {
    /// Leave the frame as it arrived.
    Keep,
    /// Remove the outer tag (towards an access port).
    Strip,
    /// Make the outer tag carry this VLAN id: push a tag if the frame has none, rewrite it otherwise.
    Set(u16),
}

/// One copy of a packet to transmit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Emit {
    pub port: u32,
    pub vlan: VlanEdit,
    /// Compute the TCP checksum before delivery (port group's "TCP checksum filling").
    pub fill_tcp_csum: bool,
}

/// The fate of one packet: emitted on `emits` (possibly several ports: flood), or dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PacketResult {
    /// Range in [`BurstResult::emits`].
    pub emit_start: u32,
    pub emit_len: u32,
    /// Set when no copy is sent; with a flood some copies may be dropped by egress policy while
    /// others go out, and those drops are counted but not reported here.
    pub drop: Option<DropReason>,
    /// Its port's meter passed it above the port's average rate (burst credit): on a congested
    /// port it goes after every port's within-average traffic.
    pub excess: bool,
    /// Where the parser found the frame's headers, and its outer VLAN: what the transmit side
    /// needs (VLAN edits, checksum filling) without walking the headers again.
    pub layout: Layout,
}

/// Results of one burst; reused across bursts so that steady-state processing does not allocate.
#[derive(Debug, Default)]
pub struct BurstResult {
    pub packets: Vec<PacketResult>,
    pub emits: Vec<Emit>,
    /// Transmit priority class of the burst's input port (its port group's shaping; medium when
    /// unshaped), for the transmit side's priority classes under congestion.
    pub priority: model::Priority,
}

impl BurstResult {
    pub fn with_capacity(burst: usize) -> Self {
        BurstResult {
            packets: Vec::with_capacity(burst),
            emits: Vec::with_capacity(burst * 8),
            priority: Default::default(),
        }
    }
    pub fn clear(&mut self) {
        self.packets.clear();
        self.emits.clear();
    }
    /// The copies to send for packet `i` of the burst.
    pub fn emits_of(&self, i: usize) -> &[Emit] {
        let p = &self.packets[i];
        &self.emits[p.emit_start as usize..(p.emit_start + p.emit_len) as usize]
    }
}
