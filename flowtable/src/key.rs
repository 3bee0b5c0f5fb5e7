//! The flow key: every field the classifier can match on, packed into a fixed array of `u64` words.
//!
//! Why words and not a struct of typed fields: masking, hashing and comparing a key are then a loop
//! over [`KEY_WORDS`] machine words, with no per-field code, which is what the tuple-space classifier
//! and the exact-match cache do for every packet. Typed accessors give the fields their meaning.
//!
//! Layout (bit 63 is the most significant bit of a word):
//! | word | contents |
//! |---|---|
//! | 0 | `in_port`:32, `ct_state`:8, `stage`:8, `ip_proto`:8, `flags`:8 |
//! | 1 | `eth_dst`:48, `vlan_tci`:16 (outer tag; [`VLAN_PRESENT`] set when tagged) |
//! | 2 | `eth_src`:48, `eth_type`:16 (the ethertype after the tags) |
//! | 3–4 | `ip_src`:128 (IPv4 and ARP sender address in the low 32 bits) |
//! | 5–6 | `ip_dst`:128 (IPv4 and ARP target address in the low 32 bits) |
//! | 7 | `tp_src`:16, `tp_dst`:16 (ICMP type and code here), `tcp_flags`:16, `inner_tci`:16 |
//! | 8 | `arp_sha`:48, `arp_op`:16 |
//! | 9 | `out_port`:32, `reg0`:32 (pipeline metadata: the egress port, the VLAN domain) |
//!
//! IPv6 neighbour solicitations and advertisements carry what port security checks in the words
//! ARP uses: `ip_dst` is the ND target address (not the IPv6 destination) and `arp_sha` the
//! source or target link-layer address option (zero when absent). Nothing after port security
//! looks at an ND message's IPv6 destination: ND bypasses conntrack and security-group rules and
//! is forwarded by MAC, as ARP is.

use crate::wire::ethernet::ethertype;
use crate::wire::ip::protocol;
use model::Mac;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub const KEY_WORDS: usize = 10;

/// Port ids (`in_port`, `out_port`) are below this bound, so per-port counters are plain arrays.
pub const MAX_PORTS: usize = 4096;

/// Bit of `vlan_tci` that says a tag is present (as in OpenFlow's `OFPVID_PRESENT` idea, but in the
/// CFI/DEI position so VLAN 0 priority tags stay distinguishable from untagged frames).
pub const VLAN_PRESENT: u16 = 0x1000;
pub const VLAN_VID_MASK: u16 = 0x0fff;

// The values the key's fields take, named once in `wire`.
pub const ETH_TYPE_IPV4: u16 = ethertype::IPV4;
pub const ETH_TYPE_ARP: u16 = ethertype::ARP;
pub const ETH_TYPE_IPV6: u16 = ethertype::IPV6;
pub const ETH_TYPE_VLAN: u16 = ethertype::VLAN;
pub const ETH_TYPE_QINQ: u16 = ethertype::QINQ;

pub const IP_PROTO_ICMP: u8 = protocol::ICMP;
pub const IP_PROTO_TCP: u8 = protocol::TCP;
pub const IP_PROTO_UDP: u8 = protocol::UDP;
pub const IP_PROTO_ICMPV6: u8 = protocol::ICMPV6;

/// ICMPv6 types of neighbour discovery (RFC 4861) and multicast listener discovery (RFC 2710,
/// 3810), which port security lets through whatever a security group's rules say.
pub mod icmp6 {
    pub const MLD_QUERY: u8 = 130;
    pub const MLD_REPORT: u8 = 131;
    pub const MLD_DONE: u8 = 132;
    pub const ROUTER_SOLICIT: u8 = 133;
    pub const ROUTER_ADVERT: u8 = 134;
    pub const NEIGHBOR_SOLICIT: u8 = 135;
    pub const NEIGHBOR_ADVERT: u8 = 136;
    pub const MLD2_REPORT: u8 = 143;
}

/// ICMP (`v6` false) or ICMPv6 types of error messages, which quote the packet they are about.
pub fn is_icmp_error(v6: bool, ty: u8) -> bool {
    if v6 {
        matches!(ty, 1..=4)
    } else {
        matches!(ty, 3 | 4 | 5 | 11 | 12)
    }
}

/// Bits of the `flags` byte.
pub mod flags {
    /// The frame could not be parsed completely (truncated or malformed); fields after the
    /// failing header are zero.
    pub const INVALID: u8 = 0x01;
    /// An IP fragment (any fragment, first included).
    pub const FRAG: u8 = 0x02;
    /// A non-first IP fragment: no transport header, so the L4 fields are zero.
    pub const FRAG_LATER: u8 = 0x04;
    /// Two VLAN tags (QinQ); the inner one is in `inner_tci`.
    pub const QINQ: u8 = 0x08;
    /// More than two VLAN tags or another link extension (MACsec): not parsed further.
    pub const LINK_EXT_UNSUPPORTED: u8 = 0x10;
}

/// Bits of `ct_state`, as in OpenFlow's `ct_state`.
pub mod ct {
    /// Connection tracking has been run on this packet.
    pub const TRACKED: u8 = 0x01;
    pub const NEW: u8 = 0x02;
    pub const ESTABLISHED: u8 = 0x04;
    pub const RELATED: u8 = 0x08;
    /// The packet goes in the reply direction of its connection.
    pub const REPLY: u8 = 0x10;
    /// Conntrack could not make sense of it (bad TCP transition, table full).
    pub const INVALID: u8 = 0x20;
}

/// A flow key, or a mask over one (same layout; a set bit means "this bit matters").
#[derive(Clone, Copy, PartialEq, Eq, Default, PartialOrd, Ord)]
pub struct FlowKey(pub [u64; KEY_WORDS]);

impl std::hash::Hash for FlowKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash64());
    }
}

/// A `Hasher` that passes [`FlowKey::hash64`] through: keys are hashed once, by our own mixer.
#[derive(Default, Clone, Copy)]
pub struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ *b as u64).wrapping_mul(0x100_0000_01b3);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 ^= v;
    }
}

pub type KeyMap<V> =
    std::collections::HashMap<FlowKey, V, std::hash::BuildHasherDefault<KeyHasher>>;

macro_rules! field {
    ($get:ident, $set:ident, $ty:ty, $word:expr, $shift:expr, $bits:expr) => {
        #[inline(always)]
        pub fn $get(&self) -> $ty {
            ((self.0[$word] >> $shift) & ((1u64 << $bits) - 1)) as $ty
        }
        #[inline(always)]
        pub fn $set(&mut self, v: $ty) {
            let m = ((1u64 << $bits) - 1) << $shift;
            self.0[$word] = (self.0[$word] & !m) | (((v as u64) << $shift) & m);
        }
    };
}

impl FlowKey {
    pub const ZERO: FlowKey = FlowKey([0; KEY_WORDS]);
    pub const ALL_ONES: FlowKey = FlowKey([u64::MAX; KEY_WORDS]);

    field!(in_port, set_in_port, u32, 0, 32, 32);
    field!(ct_state, set_ct_state, u8, 0, 24, 8);
    field!(stage, set_stage, u8, 0, 16, 8);
    field!(ip_proto, set_ip_proto, u8, 0, 8, 8);
    field!(flags, set_flags, u8, 0, 0, 8);
    field!(vlan_tci, set_vlan_tci, u16, 1, 0, 16);
    field!(eth_type, set_eth_type, u16, 2, 0, 16);
    field!(tp_src, set_tp_src, u16, 7, 48, 16);
    field!(tp_dst, set_tp_dst, u16, 7, 32, 16);
    field!(tcp_flags, set_tcp_flags, u16, 7, 16, 16);
    field!(inner_tci, set_inner_tci, u16, 7, 0, 16);
    field!(arp_op, set_arp_op, u16, 8, 0, 16);
    field!(out_port, set_out_port, u32, 9, 32, 32);
    field!(reg0, set_reg0, u32, 9, 0, 32);

    /// `tp_src` and `tp_dst` at once, from both in one word (source in the high half): they
    /// follow each other in the key as in TCP and UDP headers.
    #[inline(always)]
    pub fn set_tp_ports(&mut self, src_dst: u32) {
        let m = 0xffff_ffffu64 << 32;
        self.0[7] = (self.0[7] & !m) | ((src_dst as u64) << 32);
    }
    #[inline(always)]
    pub fn eth_dst(&self) -> Mac {
        Mac::from_u64(self.0[1] >> 16)
    }
    #[inline(always)]
    pub fn set_eth_dst(&mut self, m: Mac) {
        self.set_eth_dst_u64(m.to_u64());
    }
    /// [`FlowKey::set_eth_dst`] from the address's integer form ([`Mac::to_u64`]), as the
    /// parser reads it.
    #[inline(always)]
    pub fn set_eth_dst_u64(&mut self, m: u64) {
        self.0[1] = (self.0[1] & 0xffff) | (m << 16);
    }
    #[inline(always)]
    pub fn eth_src(&self) -> Mac {
        Mac::from_u64(self.0[2] >> 16)
    }
    /// [`FlowKey::eth_src`] in [`Mac::to_u64`]'s form, as the key holds it.
    #[inline(always)]
    pub fn eth_src_u64(&self) -> u64 {
        self.0[2] >> 16
    }
    /// [`FlowKey::eth_dst`] in [`Mac::to_u64`]'s form, as the key holds it.
    #[inline(always)]
    pub fn eth_dst_u64(&self) -> u64 {
        self.0[1] >> 16
    }
    #[inline(always)]
    pub fn set_eth_src(&mut self, m: Mac) {
        self.set_eth_src_u64(m.to_u64());
    }
    #[inline(always)]
    pub fn set_eth_src_u64(&mut self, m: u64) {
        self.0[2] = (self.0[2] & 0xffff) | (m << 16);
    }
    #[inline(always)]
    pub fn arp_sha(&self) -> Mac {
        Mac::from_u64(self.0[8] >> 16)
    }
    #[inline(always)]
    pub fn set_arp_sha(&mut self, m: Mac) {
        self.0[8] = (self.0[8] & 0xffff) | (m.to_u64() << 16);
    }
    #[inline(always)]
    pub fn ip_src(&self) -> u128 {
        ((self.0[3] as u128) << 64) | self.0[4] as u128
    }
    #[inline(always)]
    pub fn set_ip_src(&mut self, v: u128) {
        self.0[3] = (v >> 64) as u64;
        self.0[4] = v as u64;
    }
    #[inline(always)]
    pub fn ip_dst(&self) -> u128 {
        ((self.0[5] as u128) << 64) | self.0[6] as u128
    }
    #[inline(always)]
    pub fn set_ip_dst(&mut self, v: u128) {
        self.0[5] = (v >> 64) as u64;
        self.0[6] = v as u64;
    }
    /// The IPv4 (or ARP) source address; meaningful when `eth_type` is IPv4 or ARP.
    pub fn ipv4_src(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.0[4] as u32)
    }
    pub fn ipv4_dst(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.0[6] as u32)
    }
    /// The VLAN id of the outer tag, if the frame is tagged.
    pub fn vlan(&self) -> Option<u16> {
        let t = self.vlan_tci();
        (t & VLAN_PRESENT != 0).then_some(t & VLAN_VID_MASK)
    }
    pub fn is_invalid(&self) -> bool {
        self.flags() & flags::INVALID != 0
    }
    pub fn is_ipv4(&self) -> bool {
        self.eth_type() == ETH_TYPE_IPV4
    }
    pub fn is_ipv6(&self) -> bool {
        self.eth_type() == ETH_TYPE_IPV6
    }
    /// An IPv6 neighbour solicitation or advertisement (`ip_dst` is then its target).
    pub fn is_nd(&self) -> bool {
        self.is_ipv6()
            && self.ip_proto() == IP_PROTO_ICMPV6
            && self.flags() & flags::INVALID == 0
            && (self.tp_src() == icmp6::NEIGHBOR_SOLICIT as u16
                || self.tp_src() == icmp6::NEIGHBOR_ADVERT as u16)
    }
    /// Source address as an `IpAddr` when the frame is IPv4 (or ARP) or IPv6.
    pub fn ip_src_addr(&self) -> Option<IpAddr> {
        addr_of(self.eth_type(), self.ip_src())
    }
    pub fn ip_dst_addr(&self) -> Option<IpAddr> {
        addr_of(self.eth_type(), self.ip_dst())
    }

    /// `self & mask`, word by word.
    #[inline(always)]
    pub fn masked(&self, mask: &FlowKey) -> FlowKey {
        let mut out = [0u64; KEY_WORDS];
        for (i, o) in out.iter_mut().enumerate() {
            *o = self.0[i] & mask.0[i];
        }
        FlowKey(out)
    }
    /// True when `self` and `other` agree on every bit set in `mask`.
    #[inline(always)]
    pub fn matches(&self, value: &FlowKey, mask: &FlowKey) -> bool {
        let mut diff = 0u64;
        for i in 0..KEY_WORDS {
            diff |= (self.0[i] ^ value.0[i]) & mask.0[i];
        }
        diff == 0
    }
    /// `self == other`, without an early exit: the caches compare a whole key on every hit, where
    /// one OR of the word differences beats a compare that branches on each word.
    #[inline(always)]
    pub fn same_as(&self, other: &FlowKey) -> bool {
        let mut d = 0;
        for i in 0..KEY_WORDS {
            d |= self.0[i] ^ other.0[i];
        }
        d == 0
    }
    /// A 64-bit hash of the key, for the caches' set index and the classifier's hash maps.
    ///
    /// Every word times its own odd constant, summed, then one multiply-xorshift round: the
    /// products are independent (no chain of multiplies through the words), and each is one
    /// `imul` with the word read from memory, because the constants fit a sign-extended 32-bit
    /// immediate. Two keys that differ in one word never collide (an odd multiplier is a
    /// bijection, and so is the final round); nor do keys that differ only in the low 32 bits of
    /// one word and the high 32 bits of another (addresses and ports), since a nonzero
    /// difference below 2^32 times an odd constant is never a multiple of 2^32. The final round
    /// brings the high bits, where the products do most of their mixing, down to the low ones
    /// the set index uses, and keeps the top bits the hash maps' tags use.
    #[inline(always)]
    pub fn hash64(&self) -> u64 {
        const K: [u64; KEY_WORDS] = [
            0x79e7_92b7,
            0x6ed0_a4a7,
            0x47a6_9f13,
            0x6dad_afd5,
            0x764c_8847,
            0x63fe_f403,
            0x7b9a_6be1,
            0x79d5_a43b,
            0x4100_f15f,
            0x6d72_22a9,
        ];
        let mut h = 0u64;
        for (w, k) in self.0.iter().zip(K) {
            h = h.wrapping_add(w.wrapping_mul(k));
        }
        h ^= h >> 32;
        h = h.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        h ^ (h >> 32)
    }
    /// True when every bit of `self` (as a mask) is also set in `other`.
    pub fn is_subset_of(&self, other: &FlowKey) -> bool {
        (0..KEY_WORDS).all(|i| self.0[i] & !other.0[i] == 0)
    }
}

fn addr_of(eth_type: u16, v: u128) -> Option<IpAddr> {
    match eth_type {
        ETH_TYPE_IPV4 | ETH_TYPE_ARP => Some(IpAddr::V4(Ipv4Addr::from(v as u32))),
        ETH_TYPE_IPV6 => Some(IpAddr::V6(Ipv6Addr::from(v))),
        _ => None,
    }
}

impl fmt::Debug for FlowKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "in_port={} ", self.in_port())?;
        if self.stage() != 0 {
            write!(f, "stage={} ", self.stage())?;
        }
        if self.ct_state() != 0 {
            write!(f, "ct_state={:#04x} ", self.ct_state())?;
        }
        write!(f, "{}->{} ", self.eth_src(), self.eth_dst())?;
        if let Some(v) = self.vlan() {
            write!(f, "vlan={v} ")?;
        }
        write!(f, "type={:#06x}", self.eth_type())?;
        if let (true, Some(s), Some(d)) = (self.is_nd(), self.ip_src_addr(), self.ip_dst_addr()) {
            write!(f, " {s} proto={} nd_target={d}", self.ip_proto())?;
            if self.arp_sha() != Mac::ZERO {
                write!(f, " nd_lladdr={}", self.arp_sha())?;
            }
        } else if let (Some(s), Some(d)) = (self.ip_src_addr(), self.ip_dst_addr()) {
            write!(f, " {s}->{d} proto={}", self.ip_proto())?;
            if self.tp_src() != 0 || self.tp_dst() != 0 {
                write!(f, " {}->{}", self.tp_src(), self.tp_dst())?;
            }
        }
        if self.flags() != 0 {
            write!(f, " flags={:#04x}", self.flags())?;
        }
        if self.reg0() != 0 || self.out_port() != 0 {
            write!(f, " reg0={} out_port={}", self.reg0(), self.out_port())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip_without_touching_neighbours() {
        let mut k = FlowKey::ALL_ONES;
        k.set_tp_dst(0x1234);
        assert_eq!(k.tp_dst(), 0x1234);
        let mut p = k;
        p.set_tp_ports(0xabcd_1234);
        assert_eq!(
            (p.tp_src(), p.tp_dst(), p.tcp_flags()),
            (0xabcd, 0x1234, 0xffff)
        );
        assert_eq!(k.tp_src(), 0xffff);
        assert_eq!(k.tcp_flags(), 0xffff);
        k.set_eth_src(Mac([1, 2, 3, 4, 5, 6]));
        assert_eq!(k.eth_src(), Mac([1, 2, 3, 4, 5, 6]));
        assert_eq!(k.eth_type(), 0xffff);
        k.set_in_port(7);
        assert_eq!(k.in_port(), 7);
        assert_eq!(k.ct_state(), 0xff);
    }

    #[test]
    fn mac_parses_and_rejects() {
        assert_eq!(
            "02:00:00:00:00:0a".parse::<Mac>().unwrap(),
            Mac([2, 0, 0, 0, 0, 10])
        );
        assert!("02:00:00:00:00".parse::<Mac>().is_err());
        assert!("02:00:00:00:00:0g".parse::<Mac>().is_err());
        assert!("02:00:00:00:00:00:01".parse::<Mac>().is_err());
    }
}
