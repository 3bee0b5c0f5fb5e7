//! Connection tracking for stateful security groups (the `ct` action), in the spirit of netfilter's
//! and OVS's conntrack: each packet gets `ct_state` bits ([`key::ct`]) saying whether it starts a
//! connection (NEW), belongs to one that has seen traffic both ways (ESTABLISHED), is an ICMP error
//! about one (RELATED), travels in the reply direction (REPLY), or makes no sense (INVALID).
//!
//! # Semantics
//! - A connection is identified by (zone, IPv4/IPv6, IP protocol, addresses, ports) in its original
//!   direction; a packet going the other way finds the same entry and gets [`ct::REPLY`].
//! - TCP and UDP use the ports. ICMP echo request/reply (v4 types 8/0, v6 128/129) use the echo
//!   identifier, read from the frame, and the message type gives the direction (a reply never
//!   creates a connection: INVALID without an entry). Other protocols, and ICMP messages that are
//!   neither echo nor errors (neighbour discovery, router advertisements, …), are tracked by
//!   addresses and protocol only.
//! - Original-direction packets are NEW until a reply has been seen, then every packet of the
//!   connection is ESTABLISHED (netfilter semantics). Only NEW packets with `commit` create entries.
//! - TCP follows SYN_SENT → SYN_RECV → ESTABLISHED → FIN_WAIT / CLOSE_WAIT → TIME_WAIT, with RST →
//!   CLOSED from anywhere and a timeout per state. A first packet without SYN (or with ACK, RST or
//!   FIN besides SYN) is INVALID and never committed. A SYN on a TIME_WAIT or CLOSED entry starts a
//!   new connection (the old entry is replaced, or removed when the SYN is not committed). There is
//!   no sequence-number window tracking.
//! - **Mid-stream pickup** ([`CtConfig::tcp_loose`], on by default; Linux's
//!   `nf_conntrack_tcp_loose`): a TCP segment with ACK and none of SYN, FIN, RST that finds no live
//!   entry (after a restart of the switch, say) is NEW instead of INVALID, in its own direction,
//!   with [`CtResult::picked_up`] set. So it meets the same rules as a connection opened that way: if
//!   they commit it, the entry starts ESTABLISHED (no handshake to see; there is no window to
//!   learn, see above) with [`CtEntryInfo::picked_up`], and a reply makes it ESTABLISHED both ways
//!   as usual; if they do not, it is dropped as any refused new connection. Until a reply is seen
//!   a picked-up entry lives [`CtTimeouts::tcp_picked_up`], not a day: a forged ACK the rules let
//!   through holds a slot for a minute, not for `tcp_established`.
//!   One refinement over netfilter: a connection picked up from a segment travelling *away* from
//!   the lower port (ties: the lower address), i.e. from the likely server, is provisional: until
//!   a packet of the other direction (the client's) has itself been allowed as new and committed,
//!   the client's plain ACKs are NEW (picked up) rather than replies, and its other segments
//!   INVALID; that commit turns the entry round (client → server) and makes it ESTABLISHED. A
//!   connection crosses two port zones (the sender's egress, the receiver's ingress), and without
//!   this the server's zone could orient the entry server → client (allowed as its egress) while
//!   the client's zone orients it client → server (its egress too): the session would pass
//!   although no direction is allowed as new on both ports.
//! - ICMP errors (v4 types 3, 4, 5, 11, 12; v6 1–4) quoting a packet of a live connection of the same
//!   zone (either direction) are RELATED (with REPLY when they travel towards the originator). They
//!   create nothing and refresh nothing. **Errors quoting nothing we track are INVALID** (netfilter
//!   would say NEW): a firewall allowing NEW ICMP would otherwise accept forged errors.
//! - Non-IP packets, keys with [`flags::INVALID`], and non-first IP fragments (no transport header;
//!   there is no reassembly) are INVALID.
//! - Every accepted packet refreshes its connection's expiry; an expired entry behaves as absent
//!   even before [`ConnTrack::expire`] removes it. Invalid packets change nothing.
//! - At `max_entries` connections a commit is refused: the packet stays NEW, [`CtResult::full`] is
//!   set and [`CtStats::limit_hits`] counts it.
//!
//! # Design
//! [`SHARDS`] shards, chosen by the top bits of a seeded hash of the normalised tuple, each a
//! [`parking_lot::Mutex`] guarding an open-addressing table (see `table.rs`) of 64-byte, cache-line-
//! aligned slots, allocated at creation for 1.5× the shard's share of `max_entries` (load factor ≤ ⅔
//! when the table is full; tables never grow, so a shard can refuse a commit before the global
//! limit only if the hash were wildly unbalanced: at a million entries a shard holds 16 K ± 130 of
//! its 21.5 K maximum). Memory: 64 bytes × 1.5 per connection of `max_entries` (~100 MB for the
//! default 1 M), all touched (zeroed) at creation. The tuple is normalised
//! (the smaller (address, port) endpoint first, plus a bit saying which side originated) so that
//! one probe finds a connection from either direction. Forwarding threads contend only when they
//! hit the same shard at the same moment; the one shared atomic is the entry count, touched only
//! when a connection is created or removed. Nothing allocates per packet.
//!
//! With a million connections a lookup is dominated by its cache and TLB miss (the table is ~100 MB):
//! [`ConnTrack::prefetch`] lets a caller processing a burst start all those misses before the first
//! lookup. That is why slots are atomics beside the shard's mutex rather than inside it (relaxed
//! atomics compile to plain loads and stores; every access but the prefetch holds the lock).

mod frame;
mod table;
#[cfg(test)]
mod tests;

use parking_lot::{Mutex, MutexGuard};
use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::key::{self, ct, flags, is_icmp_error, FlowKey};
use crate::wire::Layout;
use table::{KeyWords, ShardTable, Slot, KF_USED};

/// Number of shards (a power of two).
pub const SHARDS: usize = 1 << SHARD_BITS;
const SHARD_BITS: u32 = 6;
/// Slots examined per lock hold by the whole-table walks (expire, retain, flush, dump).
const WALK_CHUNK: usize = 1024;

const SEC: u64 = 1_000_000_000;

/// TCP flag bits of [`FlowKey::tcp_flags`].
pub mod tcp_flags {
    pub const FIN: u16 = 0x01;
    pub const SYN: u16 = 0x02;
    pub const RST: u16 = 0x04;
    pub const PSH: u16 = 0x08;
    pub const ACK: u16 = 0x10;
}
use tcp_flags::{ACK, FIN, RST, SYN};

/// Idle timeouts, in nanoseconds of the caller's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct CtTimeouts {
    pub tcp_syn_sent: u64,
    pub tcp_syn_recv: u64,
    pub tcp_established: u64,
    pub tcp_fin_wait: u64,
    pub tcp_close_wait: u64,
    pub tcp_time_wait: u64,
    pub tcp_closed: u64,
    /// A picked-up TCP connection ([`CtConfig::tcp_loose`]) until a reply has been seen.
    pub tcp_picked_up: u64,
    /// UDP before a reply was seen.
    pub udp_first: u64,
    pub udp_established: u64,
    pub icmp: u64,
    /// Any other IP protocol.
    pub other: u64,
}

impl Default for CtTimeouts {
    fn default() -> Self {
        CtTimeouts {
            tcp_syn_sent: 30 * SEC,
            tcp_syn_recv: 60 * SEC,
            tcp_established: 24 * 3600 * SEC,
            tcp_fin_wait: 120 * SEC,
            tcp_close_wait: 60 * SEC,
            tcp_time_wait: 120 * SEC,
            tcp_closed: 10 * SEC,
            tcp_picked_up: 60 * SEC,
            udp_first: 30 * SEC,
            udp_established: 180 * SEC,
            icmp: 30 * SEC,
            other: 600 * SEC,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct CtConfig {
    /// Hard limit on the number of connections.
    pub max_entries: usize,
    pub timeouts: CtTimeouts,
    /// Pick up TCP connections in mid-stream (see the module's *Semantics*): what keeps the
    /// connections through the switch alive when it restarts with an empty table.
    pub tcp_loose: bool,
}

impl Default for CtConfig {
    fn default() -> Self {
        CtConfig {
            max_entries: 1 << 20,
            timeouts: CtTimeouts::default(),
            tcp_loose: true,
        }
    }
}

/// The verdict of [`ConnTrack::process`] on one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CtResult {
    /// [`key::ct`] bits: always [`ct::TRACKED`], plus NEW / ESTABLISHED / RELATED / INVALID and
    /// maybe REPLY.
    pub state: u8,
    /// A commit was asked for but the table is at `max_entries`: the connection was not created.
    pub full: bool,
    /// A mid-stream TCP segment without a connection, NEW because of [`CtConfig::tcp_loose`]
    /// (committed: a picked-up connection was created).
    pub picked_up: bool,
}

impl CtResult {
    const INVALID: CtResult = CtResult {
        state: ct::TRACKED | ct::INVALID,
        full: false,
        picked_up: false,
    };
    fn new(state: u8) -> CtResult {
        CtResult {
            state: ct::TRACKED | state,
            full: false,
            picked_up: false,
        }
    }
    fn new_picked_up(picked_up: bool) -> CtResult {
        CtResult {
            picked_up,
            ..CtResult::new(ct::NEW)
        }
    }
    pub fn is_new(&self) -> bool {
        self.state & ct::NEW != 0
    }
    pub fn is_established(&self) -> bool {
        self.state & ct::ESTABLISHED != 0
    }
    pub fn is_related(&self) -> bool {
        self.state & ct::RELATED != 0
    }
    pub fn is_reply(&self) -> bool {
        self.state & ct::REPLY != 0
    }
    pub fn is_invalid(&self) -> bool {
        self.state & ct::INVALID != 0
    }
}

/// Counters; `entries` is the current number of connections, the others count since creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct CtStats {
    pub entries: usize,
    /// Connections committed (a reopened TCP connection counts again).
    pub created: u64,
    /// Of `created`: TCP connections picked up in mid-stream ([`CtConfig::tcp_loose`]).
    pub picked_up: u64,
    /// Entries removed because they timed out (by `expire`, or found expired by a lookup).
    pub expired: u64,
    /// Commits refused because the table was at `max_entries`.
    pub limit_hits: u64,
    /// Packets that got INVALID.
    pub invalid: u64,
    /// Entries removed by `retain`, `flush_zone`, `clear`, or replaced by a TCP reopen.
    pub deleted: u64,
}

/// A connection's state, as shown by [`ConnTrack::dump`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CtState {
    SynSent,
    SynRecv,
    Established,
    FinWait,
    CloseWait,
    TimeWait,
    Closed,
    /// Non-TCP: no reply seen yet.
    Unreplied,
    /// Non-TCP: a reply has been seen.
    Replied,
}

// State codes as stored in slots (0 is never used).
const S_SYN_SENT: u8 = 1;
const S_SYN_RECV: u8 = 2;
const S_ESTABLISHED: u8 = 3;
const S_FIN_WAIT: u8 = 4;
const S_CLOSE_WAIT: u8 = 5;
const S_TIME_WAIT: u8 = 6;
const S_CLOSED: u8 = 7;
const S_UNREPLIED: u8 = 8;
const S_REPLIED: u8 = 9;

impl CtState {
    fn from_code(c: u8) -> CtState {
        match c {
            S_SYN_SENT => CtState::SynSent,
            S_SYN_RECV => CtState::SynRecv,
            S_ESTABLISHED => CtState::Established,
            S_FIN_WAIT => CtState::FinWait,
            S_CLOSE_WAIT => CtState::CloseWait,
            S_TIME_WAIT => CtState::TimeWait,
            S_CLOSED => CtState::Closed,
            S_UNREPLIED => CtState::Unreplied,
            _ => CtState::Replied,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            CtState::SynSent => "SYN_SENT",
            CtState::SynRecv => "SYN_RECV",
            CtState::Established => "ESTABLISHED",
            CtState::FinWait => "FIN_WAIT",
            CtState::CloseWait => "CLOSE_WAIT",
            CtState::TimeWait => "TIME_WAIT",
            CtState::Closed => "CLOSED",
            CtState::Unreplied => "UNREPLIED",
            CtState::Replied => "REPLIED",
        }
    }
}

impl std::fmt::Display for CtState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One connection, as seen by [`ConnTrack::dump`] and [`ConnTrack::retain`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CtEntryInfo {
    pub zone: u16,
    /// [`key::ETH_TYPE_IPV4`] or [`key::ETH_TYPE_IPV6`].
    pub eth_type: u16,
    pub proto: u8,
    /// Source of the original direction (the side that opened the connection).
    pub src: IpAddr,
    pub dst: IpAddr,
    /// Transport ports of the original direction (TCP/UDP; 0 otherwise).
    pub sport: u16,
    pub dport: u16,
    /// The identifier of an ICMP echo connection.
    pub icmp_id: Option<u16>,
    pub state: CtState,
    /// Whether a reply-direction packet has been seen.
    pub replied: bool,
    /// Picked up in mid-stream ([`CtConfig::tcp_loose`]): its handshake was not seen, so `src`
    /// is the higher-port side (taken for the client) once a packet from it was committed, and
    /// until then whichever side sent first.
    pub picked_up: bool,
    /// Absolute expiry time (caller's clock, ns).
    pub expires_at_ns: u64,
    /// Seconds until expiry, relative to the latest `now_ns` the shard has seen (or to the `now_ns`
    /// given to [`ConnTrack::dump_at`]).
    pub expires_in_secs: u64,
    pub packets_orig: u32,
    pub packets_reply: u32,
}

impl CtEntryInfo {
    /// A flow key for a packet of the original direction (addresses, protocol, ports; ICMP echo
    /// request type), for re-checking the connection against a new rule set.
    pub fn orig_key(&self) -> FlowKey {
        let mut k = FlowKey::ZERO;
        k.set_eth_type(self.eth_type);
        k.set_ip_proto(self.proto);
        let ip = |a: IpAddr| match a {
            IpAddr::V4(a) => u32::from(a) as u128,
            IpAddr::V6(a) => u128::from(a),
        };
        k.set_ip_src(ip(self.src));
        k.set_ip_dst(ip(self.dst));
        if self.icmp_id.is_some() {
            k.set_tp_src(if self.eth_type == key::ETH_TYPE_IPV6 {
                128
            } else {
                8
            });
        } else {
            k.set_tp_src(self.sport);
            k.set_tp_dst(self.dport);
        }
        k
    }
}

// `kflags` bits (byte 0 of key word 4), besides `KF_USED`.
const KF_V6: u64 = 0x01;
/// ICMP echo: the tuple is stored oriented (lo = requester), not normalised.
const KF_ECHO: u64 = 0x02;

// `cflags` bits (byte of slot word 5).
/// The originator is the "hi" endpoint.
const CF_ORIG_HI: u8 = 0x01;
const CF_REPLIED: u8 = 0x02;
const CF_FIN_ORIG: u8 = 0x04;
const CF_FIN_REPLY: u8 = 0x08;
/// Picked up in mid-stream.
const CF_PICKED_UP: u8 = 0x10;
/// Picked up from the likely server's side and not yet confirmed from the client's (see the
/// module's *Semantics*).
const CF_PICKED_FROM_SERVER: u8 = 0x20;

/// A normalised connection tuple and its hash.
#[derive(Clone, Copy)]
struct Tuple {
    w: KeyWords,
    hash: u64,
}

/// Transport part of a packet, as conntrack sees it.
#[derive(Clone, Copy)]
enum Transport {
    Ports(u16, u16),
    EchoRequest(u16),
    EchoReply(u16),
    Bare,
}

#[derive(Default)]
struct Counters {
    created: u64,
    picked_up: u64,
    expired: u64,
    limit_hits: u64,
    invalid: u64,
    deleted: u64,
}

/// What a shard's lock protects (besides the table's contents).
struct ShardState {
    len: usize,
    /// Latest `now_ns` seen by this shard (for `expires_in_secs` in dumps).
    now: u64,
    c: Counters,
}

/// A shard, on its own cache lines so that locking one does not disturb its neighbours. The table
/// sits beside the mutex, not in it, so that [`ConnTrack::prefetch`] can read it unlocked; every
/// other access happens with `st` locked.
#[repr(align(128))]
struct Shard {
    st: Mutex<ShardState>,
    table: ShardTable,
}

/// The connection table. `Send + Sync`: forwarding threads share it through `&ConnTrack`.
pub struct ConnTrack {
    shards: Box<[Shard]>,
    count: AtomicUsize,
    /// INVALID verdicts given before any shard was chosen (non-IP, malformed).
    invalid_early: AtomicU64,
    max_entries: usize,
    t: CtTimeouts,
    tcp_loose: bool,
    seed: u64,
}

/// A panic while a shard was locked leaves its state consistent enough to go on (counters, a
/// slot at worst): the shard stays usable, as it did when this was a `std` mutex whose poison
/// was ignored. `parking_lot`'s has no poison to check, which `std`'s did on every lock and unlock
/// (about 15 instructions a tracked packet).
#[inline(always)]
fn lock(m: &Mutex<ShardState>) -> MutexGuard<'_, ShardState> {
    m.lock()
}

impl ConnTrack {
    pub fn new(cfg: CtConfig) -> Self {
        let per_shard = (cfg.max_entries.saturating_mul(3) / 2).div_ceil(SHARDS) + 16;
        let shards = (0..SHARDS)
            .map(|_| Shard {
                st: Mutex::new(ShardState {
                    len: 0,
                    now: 0,
                    c: Counters::default(),
                }),
                table: ShardTable::with_slots(per_shard),
            })
            .collect();
        ConnTrack {
            shards,
            count: AtomicUsize::new(0),
            invalid_early: AtomicU64::new(0),
            max_entries: cfg.max_entries,
            t: cfg.timeouts,
            tcp_loose: cfg.tcp_loose,
            seed: std::collections::hash_map::RandomState::new().hash_one(0x5eed_u64) | 1,
        }
    }

    pub fn max_entries(&self) -> usize {
        self.max_entries
    }

    pub fn timeouts(&self) -> &CtTimeouts {
        &self.t
    }

    pub fn tcp_loose(&self) -> bool {
        self.tcp_loose
    }

    /// Number of connections (entries that expired but were not yet removed included).
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn stats(&self) -> CtStats {
        let mut s = CtStats {
            entries: self.len(),
            invalid: self.invalid_early.load(Ordering::Relaxed),
            ..CtStats::default()
        };
        for sh in self.shards.iter() {
            let g = lock(&sh.st);
            s.created += g.c.created;
            s.picked_up += g.c.picked_up;
            s.expired += g.c.expired;
            s.limit_hits += g.c.limit_hits;
            s.invalid += g.c.invalid;
            s.deleted += g.c.deleted;
        }
        s
    }

    fn early_invalid(&self) -> CtResult {
        self.invalid_early.fetch_add(1, Ordering::Relaxed);
        CtResult::INVALID
    }

    #[inline(always)]
    fn hash(&self, w: &KeyWords) -> u64 {
        let mut h = self.seed;
        for &x in w {
            h = (h ^ x).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            h ^= h >> 32;
        }
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }

    /// The normalised tuple of a packet, and whether the packet's source is the tuple's "hi" side.
    #[inline(always)]
    fn tuple(
        &self,
        zone: u16,
        v6: bool,
        proto: u8,
        src: u128,
        dst: u128,
        l4: Transport,
    ) -> (Tuple, bool) {
        let mut kf = KF_USED | if v6 { KF_V6 } else { 0 };
        // (lo endpoint, hi endpoint, packet source is hi)
        let ((la, lp), (ha, hp), side_hi) = match l4 {
            Transport::Ports(sp, dp) => {
                if (src, sp) <= (dst, dp) {
                    ((src, sp), (dst, dp), false)
                } else {
                    ((dst, dp), (src, sp), true)
                }
            }
            Transport::Bare => {
                if src <= dst {
                    ((src, 0), (dst, 0), false)
                } else {
                    ((dst, 0), (src, 0), true)
                }
            }
            Transport::EchoRequest(id) => {
                kf |= KF_ECHO;
                ((src, id), (dst, id), false)
            }
            Transport::EchoReply(id) => {
                kf |= KF_ECHO;
                ((dst, id), (src, id), true)
            }
        };
        let w = [
            (la >> 64) as u64,
            la as u64,
            (ha >> 64) as u64,
            ha as u64,
            (lp as u64) << 48 | (hp as u64) << 32 | (zone as u64) << 16 | (proto as u64) << 8 | kf,
        ];
        let hash = self.hash(&w);
        (Tuple { w, hash }, side_hi)
    }

    #[inline(always)]
    fn shard(&self, t: &Tuple) -> &Shard {
        &self.shards[(t.hash >> (64 - SHARD_BITS)) as usize]
    }

    /// How long a connection in `state` with `cflags` lives without traffic.
    // Always inlined: see `tcp_next`.
    #[inline(always)]
    fn timeout(&self, proto: u8, state: u8, cf: u8) -> u64 {
        let t = &self.t;
        if cf & (CF_PICKED_UP | CF_REPLIED) == CF_PICKED_UP && state == S_ESTABLISHED {
            return t.tcp_picked_up;
        }
        match state {
            S_SYN_SENT => t.tcp_syn_sent,
            S_SYN_RECV => t.tcp_syn_recv,
            S_ESTABLISHED => t.tcp_established,
            S_FIN_WAIT => t.tcp_fin_wait,
            S_CLOSE_WAIT => t.tcp_close_wait,
            S_TIME_WAIT => t.tcp_time_wait,
            S_CLOSED => t.tcp_closed,
            _ => match proto {
                key::IP_PROTO_UDP if state == S_UNREPLIED => t.udp_first,
                key::IP_PROTO_UDP => t.udp_established,
                key::IP_PROTO_ICMP | key::IP_PROTO_ICMPV6 => t.icmp,
                _ => t.other,
            },
        }
    }

    /// Tracks one packet in `zone`.
    ///
    /// `key` is the packet's parsed flow key; `frame` the whole Ethernet frame and `layout` where
    /// the parser found its headers: only the transport header is read, for ICMP (echo
    /// identifier, quoted packet of errors), so both may be empty / default for other protocols.
    /// With `commit`, a NEW packet creates its connection. `now_ns` is the caller's monotonic
    /// clock.
    #[inline]
    pub fn process(
        &self,
        zone: u16,
        key: &FlowKey,
        frame: &[u8],
        layout: &Layout,
        commit: bool,
        now_ns: u64,
    ) -> CtResult {
        self.process_inner(zone, key, frame, layout, commit, now_ns, false)
    }

    /// What `process(zone, key, frame, layout, false, now_ns)` would answer, changing nothing:
    /// no state transition, no timer refresh, no counter. For traces.
    pub fn peek(
        &self,
        zone: u16,
        key: &FlowKey,
        frame: &[u8],
        layout: &Layout,
        now_ns: u64,
    ) -> CtResult {
        self.process_inner(zone, key, frame, layout, false, now_ns, true)
    }

    // Always inlined: left to the compiler it went out of line once two of the interpreter's
    // paths had a conntrack step each, and the call cost a tracked packet about 10 instructions
    // (callgrind, 1k connections through stateful groups: 840 out of line, 830 inlined).
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn process_inner(
        &self,
        zone: u16,
        key: &FlowKey,
        frame: &[u8],
        layout: &Layout,
        commit: bool,
        now_ns: u64,
        dry: bool,
    ) -> CtResult {
        let v6 = match key.eth_type() {
            key::ETH_TYPE_IPV4 => false,
            key::ETH_TYPE_IPV6 => true,
            _ => return self.early_invalid(),
        };
        if key.flags() & (flags::INVALID | flags::FRAG_LATER) != 0 {
            return self.early_invalid();
        }
        let proto = key.ip_proto();
        let l4 = match proto {
            key::IP_PROTO_TCP | key::IP_PROTO_UDP => Transport::Ports(key.tp_src(), key.tp_dst()),
            key::IP_PROTO_ICMP | key::IP_PROTO_ICMPV6 if v6 == (proto == key::IP_PROTO_ICMPV6) => {
                // The layout stays behind its reference (black_box): otherwise the compiler
                // hoists its reads out of the datapath's per-segment loop, into every packet.
                let msg = || std::hint::black_box(layout).l4_bytes(frame);
                let ty = key.tp_src() as u8;
                let (req, rep) = if v6 { (128, 129) } else { (8, 0) };
                if ty == req || ty == rep {
                    let Some(id) = frame::echo_id(msg()) else {
                        return self.early_invalid();
                    };
                    if ty == req {
                        Transport::EchoRequest(id)
                    } else {
                        Transport::EchoReply(id)
                    }
                } else if is_icmp_error(v6, ty) {
                    return self.related(zone, v6, msg(), now_ns);
                } else {
                    Transport::Bare
                }
            }
            _ => Transport::Bare,
        };
        let (t, side_hi) = self.tuple(zone, v6, proto, key.ip_src(), key.ip_dst(), l4);
        self.track(&t, side_hi, proto, l4, key.tcp_flags(), commit, now_ns, dry)
    }

    /// A hint for a burst: starts loading the table slot `process(zone, key, ..)` will probe, so
    /// that calling `prefetch` for every packet of a burst and then `process` for each overlaps
    /// their cache and TLB misses (one DRAM latency for the burst instead of one per packet, with
    /// a large table). Takes no lock and changes nothing. ICMP packets are skipped.
    #[inline]
    pub fn prefetch(&self, zone: u16, key: &FlowKey) {
        let v6 = match key.eth_type() {
            key::ETH_TYPE_IPV4 => false,
            key::ETH_TYPE_IPV6 => true,
            _ => return,
        };
        let proto = key.ip_proto();
        let l4 = match proto {
            key::IP_PROTO_TCP | key::IP_PROTO_UDP => Transport::Ports(key.tp_src(), key.tp_dst()),
            key::IP_PROTO_ICMP | key::IP_PROTO_ICMPV6 => return,
            _ => Transport::Bare,
        };
        let (t, _) = self.tuple(zone, v6, proto, key.ip_src(), key.ip_dst(), l4);
        std::hint::black_box(self.shard(&t).table.touch(t.hash as u32));
    }

    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn track(
        &self,
        t: &Tuple,
        side_hi: bool,
        proto: u8,
        l4: Transport,
        tcpf: u16,
        commit: bool,
        now: u64,
        dry: bool,
    ) -> CtResult {
        let shard = self.shard(t);
        let tb = &shard.table;
        let mut g = lock(&shard.st);
        let sh = &mut *g;
        if now > sh.now {
            sh.now = now;
        }
        let h32 = t.hash as u32;
        let (i, existing) = match tb.find(&t.w, h32) {
            Ok(i) => (i, true),
            Err(i) => (i, false),
        };
        let mut replace = false;
        if existing {
            let (w5, w6) = (tb.word(i, 5), tb.word(i, 6));
            if w6 > now {
                let state = (w5 >> 24) as u8;
                let cf = (w5 >> 16) as u8;
                let reply = side_hi != (cf & CF_ORIG_HI != 0);
                if reply && cf & CF_PICKED_FROM_SERVER != 0 {
                    // The client's direction of a connection picked up from the server's side:
                    // judged as new by the rules before anything of it passes as a reply.
                    if tcpf & (SYN | ACK | RST | FIN) != ACK {
                        if !dry {
                            sh.c.invalid += 1;
                        }
                        return CtResult::INVALID;
                    }
                    if commit {
                        let ncf = ((cf ^ CF_ORIG_HI) & !CF_PICKED_FROM_SERVER) | CF_REPLIED;
                        let w7 = tb.word(i, 7);
                        tb.set_word(i, 5, (w5 & !0x00ff_0000) | (ncf as u64) << 16);
                        tb.set_word(i, 6, now + self.timeout(proto, state, ncf));
                        // Turned round: the counts swap directions, and this packet is original.
                        let (o, r) = ((w7 >> 32) as u32, w7 as u32);
                        tb.set_word(i, 7, (r.saturating_add(1) as u64) << 32 | o as u64);
                    }
                    return CtResult::new_picked_up(true);
                }
                let next = if proto == key::IP_PROTO_TCP {
                    tcp_next(state, cf, reply, tcpf)
                } else {
                    Next::To(
                        if reply { S_REPLIED } else { state },
                        if reply { cf | CF_REPLIED } else { cf },
                    )
                };
                match next {
                    Next::Invalid => {
                        if !dry {
                            sh.c.invalid += 1;
                        }
                        return CtResult::INVALID;
                    }
                    Next::To(ns, ncf) if dry => {
                        let ncf = if reply { ncf | CF_REPLIED } else { ncf };
                        let st = if ncf & CF_REPLIED != 0 {
                            ct::ESTABLISHED
                        } else {
                            ct::NEW
                        };
                        let _ = ns;
                        return CtResult::new(st | if reply { ct::REPLY } else { 0 });
                    }
                    Next::To(ns, ncf) => {
                        let ncf = if reply { ncf | CF_REPLIED } else { ncf };
                        let w7 = tb.word(i, 7);
                        tb.set_word(
                            i,
                            5,
                            (w5 & !0xffff_0000) | (ns as u64) << 24 | (ncf as u64) << 16,
                        );
                        tb.set_word(i, 6, now + self.timeout(proto, ns, ncf));
                        tb.set_word(
                            i,
                            7,
                            if reply {
                                (w7 & !0xffff_ffff) | (w7 as u32).saturating_add(1) as u64
                            } else {
                                (w7 & 0xffff_ffff)
                                    | (((w7 >> 32) as u32).saturating_add(1) as u64) << 32
                            },
                        );
                        let st = if ncf & CF_REPLIED != 0 {
                            ct::ESTABLISHED
                        } else {
                            ct::NEW
                        };
                        return CtResult::new(st | if reply { ct::REPLY } else { 0 });
                    }
                    Next::Reopen => {
                        if !dry {
                            sh.c.deleted += 1;
                        }
                        replace = true;
                    }
                }
            } else {
                if !dry {
                    sh.c.expired += 1;
                }
                replace = true;
            }
        }
        // No live connection: the packet may start one.
        let pickup =
            proto == key::IP_PROTO_TCP && self.tcp_loose && tcpf & (SYN | ACK | RST | FIN) == ACK;
        let starts = match l4 {
            _ if proto == key::IP_PROTO_TCP => tcpf & (SYN | ACK | RST | FIN) == SYN || pickup,
            Transport::EchoReply(_) => false,
            _ => true,
        };
        if !starts || !commit {
            if replace && !dry {
                // The old entry is dead (expired, or a TCP connection being reopened).
                tb.remove(i);
                sh.len -= 1;
                self.count.fetch_sub(1, Ordering::Relaxed);
            }
            if !starts {
                if !dry {
                    sh.c.invalid += 1;
                }
                return CtResult::INVALID;
            }
            return CtResult::new_picked_up(pickup);
        }
        let (state, cf) = if pickup && towards_server(l4, side_hi) {
            (S_ESTABLISHED, CF_PICKED_UP)
        } else if pickup {
            (S_ESTABLISHED, CF_PICKED_UP | CF_PICKED_FROM_SERVER)
        } else if proto == key::IP_PROTO_TCP {
            (S_SYN_SENT, 0)
        } else {
            (S_UNREPLIED, 0)
        };
        let cf = cf | if side_hi { CF_ORIG_HI } else { 0 };
        let slot: Slot = [
            t.w[0],
            t.w[1],
            t.w[2],
            t.w[3],
            t.w[4],
            (h32 as u64) << 32 | (state as u64) << 24 | (cf as u64) << 16,
            now + self.timeout(proto, state, cf),
            1 << 32,
        ];
        if replace {
            tb.set_slot(i, &slot);
            sh.c.created += 1;
            sh.c.picked_up += pickup as u64;
            return CtResult::new_picked_up(pickup);
        }
        // Reserve room under the global limit (and the shard's, which only a badly unbalanced
        // hash could reach: shards are sized for 1.5 times their share of `max_entries`).
        let mut n = self.count.load(Ordering::Relaxed);
        loop {
            if n >= self.max_entries || sh.len >= tb.max_len() {
                sh.c.limit_hits += 1;
                return CtResult {
                    full: true,
                    ..CtResult::new_picked_up(pickup)
                };
            }
            match self
                .count
                .compare_exchange_weak(n, n + 1, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(m) => n = m,
            }
        }
        tb.set_slot(i, &slot);
        sh.len += 1;
        sh.c.created += 1;
        sh.c.picked_up += pickup as u64;
        CtResult::new_picked_up(pickup)
    }

    /// An ICMP error: RELATED when it quotes a packet of a live connection, INVALID otherwise.
    fn related(&self, zone: u16, v6: bool, msg: &[u8], now: u64) -> CtResult {
        let Some(e) = frame::embedded(msg, v6) else {
            return self.early_invalid();
        };
        let l4 = match e.l4 {
            frame::EmbeddedL4::Ports(s, d) => Transport::Ports(s, d),
            frame::EmbeddedL4::EchoRequest(id) => Transport::EchoRequest(id),
            frame::EmbeddedL4::EchoReply(id) => Transport::EchoReply(id),
            frame::EmbeddedL4::Bare => Transport::Bare,
        };
        let (t, side_hi) = self.tuple(zone, v6, e.proto, e.src, e.dst, l4);
        let shard = self.shard(&t);
        let mut g = lock(&shard.st);
        if now > g.now {
            g.now = now;
        }
        if let Ok(i) = shard.table.find(&t.w, t.hash as u32) {
            if shard.table.word(i, 6) > now {
                let orig_hi = (shard.table.word(i, 5) >> 16) as u8 & CF_ORIG_HI != 0;
                // The quoted packet went in the original direction: the error goes back to the
                // originator, in the reply direction.
                let reply = side_hi == orig_hi;
                return CtResult::new(ct::RELATED | if reply { ct::REPLY } else { 0 });
            }
        }
        g.c.invalid += 1;
        CtResult::INVALID
    }

    /// Removes expired entries; returns how many. Walks every shard in chunks of a few hundred
    /// slots per lock hold, so forwarding threads are never held up for long.
    pub fn expire(&self, now_ns: u64) -> usize {
        self.walk(|s, _| s[6] <= now_ns, |c, n| c.expired += n)
    }

    /// Deletes every connection for which `keep` returns false; returns how many. `keep` runs with
    /// a shard locked: it must not call back into this `ConnTrack`.
    pub fn retain(&self, mut keep: impl FnMut(&CtEntryInfo) -> bool) -> usize {
        self.walk(|s, now| !keep(&info(s, now)), |c, n| c.deleted += n)
    }

    /// Deletes every connection of `zone`; returns how many.
    pub fn flush_zone(&self, zone: u16) -> usize {
        self.walk(|s, _| (s[4] >> 16) as u16 == zone, |c, n| c.deleted += n)
    }

    /// Deletes every connection.
    pub fn clear(&self) -> usize {
        let mut n = 0;
        for sh in self.shards.iter() {
            let mut g = lock(&sh.st);
            let l = g.len;
            sh.table.clear();
            g.len = 0;
            g.c.deleted += l as u64;
            self.count.fetch_sub(l, Ordering::Relaxed);
            n += l;
        }
        n
    }

    /// Removes the entries `doomed` selects, chunk by chunk; `count` records how many per shard.
    fn walk(
        &self,
        mut doomed: impl FnMut(&Slot, u64) -> bool,
        count: impl Fn(&mut Counters, u64),
    ) -> usize {
        let mut total = 0;
        for sh in self.shards.iter() {
            let mut pos = 0;
            loop {
                let mut g = lock(&sh.st);
                let g = &mut *g;
                let cap = sh.table.cap();
                if pos >= cap {
                    break;
                }
                let end = (pos + WALK_CHUNK).min(cap);
                let mut removed = 0;
                let mut i = pos;
                while i < end {
                    if sh.table.word(i, 4) != 0 && doomed(&sh.table.slot(i), g.now) {
                        sh.table.remove(i);
                        removed += 1;
                        // slot i now holds whatever shifted back into it: look again
                    } else {
                        i += 1;
                    }
                }
                if removed > 0 {
                    g.len -= removed;
                    count(&mut g.c, removed as u64);
                    self.count.fetch_sub(removed, Ordering::Relaxed);
                    total += removed;
                }
                pos = end;
            }
        }
        total
    }

    /// Up to `limit` live connections, for the CLI; expiry is relative to the latest time each shard
    /// has seen.
    pub fn dump(&self, limit: usize) -> Vec<CtEntryInfo> {
        self.dump_inner(limit, None)
    }

    /// Like [`ConnTrack::dump`], with expiry computed relative to `now_ns` (and entries expired at
    /// `now_ns` left out).
    pub fn dump_at(&self, limit: usize, now_ns: u64) -> Vec<CtEntryInfo> {
        self.dump_inner(limit, Some(now_ns))
    }

    fn dump_inner(&self, limit: usize, now: Option<u64>) -> Vec<CtEntryInfo> {
        let mut out = Vec::new();
        for sh in self.shards.iter() {
            let mut pos = 0;
            loop {
                if out.len() >= limit {
                    return out;
                }
                let g = lock(&sh.st);
                let cap = sh.table.cap();
                if pos >= cap {
                    break;
                }
                let now = now.unwrap_or(g.now);
                let end = (pos + WALK_CHUNK).min(cap);
                for i in pos..end {
                    if sh.table.word(i, 4) != 0 && sh.table.word(i, 6) > now && out.len() < limit {
                        out.push(info(&sh.table.slot(i), now));
                    }
                }
                pos = end;
            }
        }
        out
    }
}

/// The decoded view of a slot.
fn info(s: &Slot, now: u64) -> CtEntryInfo {
    let kf = s[4];
    let v6 = kf & KF_V6 != 0;
    let addr = |hi: u64, lo: u64| {
        let v = (hi as u128) << 64 | lo as u128;
        if v6 {
            IpAddr::V6(Ipv6Addr::from(v))
        } else {
            IpAddr::V4(Ipv4Addr::from(v as u32))
        }
    };
    let lo = (addr(s[0], s[1]), (s[4] >> 48) as u16);
    let hi = (addr(s[2], s[3]), (s[4] >> 32) as u16);
    let cf = (s[5] >> 16) as u8;
    let (o, r) = if cf & CF_ORIG_HI != 0 {
        (hi, lo)
    } else {
        (lo, hi)
    };
    let echo = kf & KF_ECHO != 0;
    CtEntryInfo {
        zone: (s[4] >> 16) as u16,
        eth_type: if v6 {
            key::ETH_TYPE_IPV6
        } else {
            key::ETH_TYPE_IPV4
        },
        proto: (s[4] >> 8) as u8,
        src: o.0,
        dst: r.0,
        sport: if echo { 0 } else { o.1 },
        dport: if echo { 0 } else { r.1 },
        icmp_id: echo.then_some(o.1),
        state: CtState::from_code((s[5] >> 24) as u8),
        replied: cf & CF_REPLIED != 0,
        picked_up: cf & CF_PICKED_UP != 0,
        expires_at_ns: s[6],
        expires_in_secs: s[6].saturating_sub(now) / SEC,
        packets_orig: (s[7] >> 32) as u32,
        packets_reply: s[7] as u32,
    }
}

/// Whether a TCP segment travels towards the endpoint a mid-stream pickup takes for the server:
/// the lower port (listening ports are usually below the ephemeral range), ties broken by the
/// lower address. Taken from the tuple alone, so that every zone a connection crosses agrees on
/// it (see the module's *Semantics*).
#[inline(always)]
fn towards_server(l4: Transport, side_hi: bool) -> bool {
    match l4 {
        Transport::Ports(sp, dp) if sp != dp => dp < sp,
        Transport::Ports(..) => side_hi,
        _ => false,
    }
}

enum Next {
    Invalid,
    /// Forget the old connection: the packet may start a new one.
    Reopen,
    To(u8, u8),
}

/// The TCP state machine: the next (state, cflags) of a connection in `state` when a packet with
/// flags `f` goes in the original (`reply == false`) or reply direction.
// Always inlined (and `ConnTrack::timeout` with it): both run for every tracked TCP packet, and
// as calls they cost about 45 instructions a packet more (callgrind, `benches/callgrind.sh 1000
// sg`: 968 instead of 925).
#[inline(always)]
fn tcp_next(state: u8, cf: u8, reply: bool, f: u16) -> Next {
    if f & RST != 0 {
        return Next::To(S_CLOSED, cf);
    }
    if f & SYN != 0 {
        if f & (ACK | FIN) == 0 && matches!(state, S_TIME_WAIT | S_CLOSED) {
            return Next::Reopen;
        }
        if f & FIN != 0 {
            return Next::Invalid;
        }
        return match (reply, f & ACK != 0, state) {
            // retransmitted SYN
            (false, false, S_SYN_SENT | S_SYN_RECV) => Next::To(state, cf),
            // SYN/ACK (or simultaneous open) and its retransmissions
            (true, _, S_SYN_SENT | S_SYN_RECV) => Next::To(S_SYN_RECV, cf),
            (true, true, S_ESTABLISHED) => Next::To(S_ESTABLISHED, cf),
            _ => Next::Invalid,
        };
    }
    match state {
        // Before the SYN/ACK, only SYN and RST make sense.
        S_SYN_SENT => Next::Invalid,
        S_CLOSED => Next::To(S_CLOSED, cf),
        _ if f & FIN != 0 => {
            let cf = cf | if reply { CF_FIN_REPLY } else { CF_FIN_ORIG };
            let ns = if state == S_TIME_WAIT
                || cf & (CF_FIN_ORIG | CF_FIN_REPLY) == CF_FIN_ORIG | CF_FIN_REPLY
            {
                S_TIME_WAIT
            } else if cf & CF_FIN_ORIG != 0 {
                S_FIN_WAIT
            } else {
                S_CLOSE_WAIT
            };
            Next::To(ns, cf)
        }
        S_SYN_RECV if !reply && f & ACK != 0 => Next::To(S_ESTABLISHED, cf),
        _ => Next::To(state, cf),
    }
}
