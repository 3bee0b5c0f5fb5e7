//! Building [`Match`]es field by field, and printing them the way `ovs-ofctl dump-flows` does.

use crate::classifier::Match;
use crate::key::{FlowKey, VLAN_PRESENT, VLAN_VID_MASK};
use model::Mac;
use std::fmt;
use std::net::IpAddr;

/// Builds a match one field at a time: `MatchBuilder::new().in_port(3).vlan(100).build()`.
#[derive(Clone, Copy, Default)]
pub struct MatchBuilder {
    v: FlowKey,
    m: FlowKey,
}

macro_rules! exact {
    ($name:ident, $set:ident, $ty:ty) => {
        pub fn $name(mut self, x: $ty) -> Self {
            self.v.$set(x);
            self.m.$set(!0);
            self
        }
    };
}

impl MatchBuilder {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn build(self) -> Match {
        Match::new(self.v, self.m)
    }
    exact!(in_port, set_in_port, u32);
    exact!(out_port, set_out_port, u32);
    exact!(reg0, set_reg0, u32);
    exact!(eth_type, set_eth_type, u16);
    exact!(ip_proto, set_ip_proto, u8);
    exact!(tp_src, set_tp_src, u16);
    exact!(tp_dst, set_tp_dst, u16);
    exact!(arp_op, set_arp_op, u16);

    pub fn eth_src(mut self, mac: Mac) -> Self {
        self.v.set_eth_src(mac);
        self.m.set_eth_src(Mac::BROADCAST);
        self
    }
    pub fn arp_sha(mut self, mac: Mac) -> Self {
        self.v.set_arp_sha(mac);
        self.m.set_arp_sha(Mac::BROADCAST);
        self
    }
    /// Untagged frames only.
    pub fn untagged(mut self) -> Self {
        self.v.set_vlan_tci(0);
        self.m.set_vlan_tci(VLAN_PRESENT);
        self
    }
    /// Any tagged frame.
    pub fn tagged(mut self) -> Self {
        self.v.set_vlan_tci(VLAN_PRESENT);
        self.m.set_vlan_tci(VLAN_PRESENT);
        self
    }
    /// Tagged with a VLAN id matching `vid` under `mask` (12-bit).
    pub fn vlan_masked(mut self, vid: u16, mask: u16) -> Self {
        self.v
            .set_vlan_tci(VLAN_PRESENT | (vid & mask & VLAN_VID_MASK));
        self.m.set_vlan_tci(VLAN_PRESENT | (mask & VLAN_VID_MASK));
        self
    }
    pub fn vlan(self, vid: u16) -> Self {
        self.vlan_masked(vid, VLAN_VID_MASK)
    }
    pub fn reg0_masked(mut self, v: u32, mask: u32) -> Self {
        self.v.set_reg0(v & mask);
        self.m.set_reg0(mask);
        self
    }
    pub fn flags(mut self, value: u8, mask: u8) -> Self {
        self.v.set_flags(value);
        self.m.set_flags(mask);
        self
    }
    pub fn ct_state(mut self, value: u8, mask: u8) -> Self {
        self.v.set_ct_state(value);
        self.m.set_ct_state(mask);
        self
    }
    pub fn tp_dst_masked(mut self, v: u16, mask: u16) -> Self {
        self.v.set_tp_dst(v & mask);
        self.m.set_tp_dst(mask);
        self
    }
    /// Source address within `addr/len` (IPv4 addresses use the low 32 bits).
    pub fn ip_src_prefix(mut self, addr: IpAddr, len: u8) -> Self {
        let (v, m) = prefix(addr, len);
        self.v.set_ip_src(v);
        self.m.set_ip_src(m);
        self
    }
    pub fn ip_dst_prefix(mut self, addr: IpAddr, len: u8) -> Self {
        let (v, m) = prefix(addr, len);
        self.v.set_ip_dst(v);
        self.m.set_ip_dst(m);
        self
    }
}

fn prefix(addr: IpAddr, len: u8) -> (u128, u128) {
    match addr {
        IpAddr::V4(a) => {
            let m = if len == 0 {
                0
            } else {
                u32::MAX << (32 - len.min(32))
            };
            (u32::from(a) as u128, m as u128)
        }
        IpAddr::V6(a) => {
            let m = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len.min(128))
            };
            (u128::from(a), m)
        }
    }
}

// Here rather than next to `Match` so that the classifier does not depend on its own printer.
impl fmt::Debug for Match {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", describe(self))
    }
}

/// `in_port=3,vlan=100,ip_src=10.0.0.0/24,...`; `*` for a match-everything.
pub fn describe(m: &Match) -> String {
    let (v, k) = (&m.value, &m.mask);
    let mut parts: Vec<String> = vec![];
    fn field(parts: &mut Vec<String>, name: &str, mask: u64, val: u64, hex: bool) {
        if mask == 0 {
            return;
        }
        let full = mask.count_ones() == (64 - mask.leading_zeros() - mask.trailing_zeros());
        if hex || !full || mask.trailing_zeros() != 0 {
            parts.push(format!("{name}={val:#x}/{mask:#x}"));
        } else {
            parts.push(format!("{name}={val}"));
        }
    }
    let f = |parts: &mut Vec<String>, name: &str, mask: u64, val: u64, hex: bool| {
        field(parts, name, mask, val, hex)
    };
    f(
        &mut parts,
        "in_port",
        k.in_port() as u64,
        v.in_port() as u64,
        false,
    );
    f(
        &mut parts,
        "out_port",
        k.out_port() as u64,
        v.out_port() as u64,
        false,
    );
    f(&mut parts, "reg0", k.reg0() as u64, v.reg0() as u64, false);
    f(
        &mut parts,
        "ct_state",
        k.ct_state() as u64,
        v.ct_state() as u64,
        true,
    );
    f(
        &mut parts,
        "flags",
        k.flags() as u64,
        v.flags() as u64,
        true,
    );
    match (k.vlan_tci(), v.vlan_tci()) {
        (0, _) => {}
        (VLAN_PRESENT, 0) => parts.push("untagged".into()),
        (VLAN_PRESENT, _) => parts.push("tagged".into()),
        (m, t) if m & VLAN_VID_MASK == VLAN_VID_MASK => {
            parts.push(format!("vlan={}", t & VLAN_VID_MASK))
        }
        (m, t) => parts.push(format!(
            "vlan={}/{:#x}",
            t & VLAN_VID_MASK,
            m & VLAN_VID_MASK
        )),
    }
    if k.eth_src() != Mac::ZERO {
        parts.push(format!("eth_src={}", v.eth_src()));
    }
    if k.eth_dst() != Mac::ZERO {
        parts.push(format!("eth_dst={}", v.eth_dst()));
    }
    f(
        &mut parts,
        "eth_type",
        k.eth_type() as u64,
        v.eth_type() as u64,
        true,
    );
    for (name, val, mask) in [
        ("ip_src", v.ip_src(), k.ip_src()),
        ("ip_dst", v.ip_dst(), k.ip_dst()),
    ] {
        if mask == 0 {
            continue;
        }
        let v4 =
            v.eth_type() == crate::key::ETH_TYPE_IPV4 || v.eth_type() == crate::key::ETH_TYPE_ARP;
        if v4 && mask >> 32 == 0 {
            let a = std::net::Ipv4Addr::from(val as u32);
            parts.push(format!("{name}={a}/{}", (mask as u32).count_ones()));
        } else {
            let a = std::net::Ipv6Addr::from(val);
            parts.push(format!("{name}={a}/{}", mask.count_ones()));
        }
    }
    f(
        &mut parts,
        "ip_proto",
        k.ip_proto() as u64,
        v.ip_proto() as u64,
        false,
    );
    f(
        &mut parts,
        "tp_src",
        k.tp_src() as u64,
        v.tp_src() as u64,
        false,
    );
    f(
        &mut parts,
        "tp_dst",
        k.tp_dst() as u64,
        v.tp_dst() as u64,
        false,
    );
    f(
        &mut parts,
        "arp_op",
        k.arp_op() as u64,
        v.arp_op() as u64,
        false,
    );
    if k.arp_sha() != Mac::ZERO {
        parts.push(format!("arp_sha={}", v.arp_sha()));
    }
    if parts.is_empty() {
        "*".into()
    } else {
        parts.join(",")
    }
}
