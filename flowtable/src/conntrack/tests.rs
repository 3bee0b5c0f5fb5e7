use super::*;
use crate::parse::{parse, parse_with_layout};
use crate::wire::{self, EthernetFrame, EthernetRepr, IcmpEchoRepr, IcmpPacket, Layout};
use crate::wire::{Ipv4Packet, Ipv4Repr, Ipv6Packet, Ipv6Repr, TcpPacket, TcpRepr};
use crate::wire::{UdpPacket, UdpRepr, VlanTag};
use model::Mac;
use proptest::prelude::*;

const S: u64 = SEC;

// ---- frame builders ----

const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 1];
const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 2];

/// An Ethernet header (and 802.1Q tag) announcing `ethertype`.
fn eth(ethertype: u16, vlan: Option<u16>) -> Vec<u8> {
    let tag = if vlan.is_some() {
        wire::vlan::TAG_LEN
    } else {
        0
    };
    let mut f = vec![0; wire::ethernet::HEADER_LEN + tag];
    let mut e = EthernetFrame::new_unchecked(&mut f[..]);
    EthernetRepr {
        src: Mac(MAC_A),
        dst: Mac(MAC_B),
        ethertype: if vlan.is_some() {
            key::ETH_TYPE_VLAN
        } else {
            ethertype
        },
    }
    .emit(&mut e);
    if let Some(v) = vlan {
        let mut t = VlanTag::new_unchecked(e.payload_mut());
        t.set_tci(v);
        t.set_ethertype(ethertype);
    }
    f
}

fn ipv4_hdr(src: [u8; 4], dst: [u8; 4], proto: u8, payload_len: usize) -> Vec<u8> {
    let mut h = vec![0; wire::ipv4::HEADER_LEN];
    Ipv4Repr {
        src: src.into(),
        dst: dst.into(),
        protocol: proto,
        payload_len,
        ttl: 64,
        ident: 1,
        dont_fragment: false,
    }
    .emit(&mut Ipv4Packet::new_unchecked(&mut h[..]));
    h
}

fn ipv6_hdr(src: u128, dst: u128, nh: u8, payload_len: usize) -> Vec<u8> {
    let mut h = vec![0; wire::ipv6::HEADER_LEN];
    Ipv6Repr {
        src: src.into(),
        dst: dst.into(),
        next_header: nh,
        payload_len,
        hop_limit: 64,
    }
    .emit(&mut Ipv6Packet::new_unchecked(&mut h[..]));
    h
}

/// A TCP header with checksum 0 (conntrack does not read it).
fn tcp_hdr(sp: u16, dp: u16, fl: u16) -> Vec<u8> {
    let mut t = vec![0; wire::tcp::HEADER_LEN];
    TcpRepr {
        src_port: sp,
        dst_port: dp,
        seq: 1,
        ack: 0,
        flags: fl as u8,
        window: 0xffff,
    }
    .emit(&mut TcpPacket::new_unchecked(&mut t[..]));
    t
}

fn udp_hdr(sp: u16, dp: u16, payload: usize) -> Vec<u8> {
    let mut u = vec![0xab; wire::udp::HEADER_LEN + payload];
    UdpRepr {
        src_port: sp,
        dst_port: dp,
        payload_len: payload,
    }
    .emit(&mut UdpPacket::new_unchecked(&mut u[..]));
    u
}

fn v4(src: [u8; 4], dst: [u8; 4], proto: u8, l4: &[u8]) -> Vec<u8> {
    let mut f = eth(key::ETH_TYPE_IPV4, None);
    f.extend(ipv4_hdr(src, dst, proto, l4.len()));
    f.extend_from_slice(l4);
    f
}

fn tcp4(src: [u8; 4], sp: u16, dst: [u8; 4], dp: u16, fl: u16) -> Vec<u8> {
    v4(src, dst, key::IP_PROTO_TCP, &tcp_hdr(sp, dp, fl))
}

fn udp4(src: [u8; 4], sp: u16, dst: [u8; 4], dp: u16) -> Vec<u8> {
    v4(src, dst, key::IP_PROTO_UDP, &udp_hdr(sp, dp, 4))
}

fn tcp6(src: u128, sp: u16, dst: u128, dp: u16, fl: u16) -> Vec<u8> {
    let t = tcp_hdr(sp, dp, fl);
    let mut f = eth(key::ETH_TYPE_IPV6, None);
    f.extend(ipv6_hdr(src, dst, key::IP_PROTO_TCP, t.len()));
    f.extend(t);
    f
}

/// An ICMP message: type, code, the four type-dependent bytes (identifier and sequence number
/// of an echo), `body`; checksummed as ICMPv4 (conntrack does not read it).
fn icmp_msg(ty: u8, code: u8, rest: [u8; 4], body: &[u8]) -> Vec<u8> {
    let mut m = vec![0; wire::icmp::HEADER_LEN];
    m.extend_from_slice(body);
    let mut p = IcmpPacket::new_unchecked(&mut m[..]);
    IcmpEchoRepr {
        msg_type: ty,
        ident: u16::from_be_bytes([rest[0], rest[1]]),
        seq: u16::from_be_bytes([rest[2], rest[3]]),
    }
    .emit(&mut p);
    p.set_code(code);
    p.fill_checksum(0);
    m
}

fn echo4(src: [u8; 4], dst: [u8; 4], ty: u8, id: u16) -> Vec<u8> {
    let [a, b] = id.to_be_bytes();
    v4(
        src,
        dst,
        key::IP_PROTO_ICMP,
        &icmp_msg(ty, 0, [a, b, 0, 1], b"pingpong"),
    )
}

fn echo6(src: u128, dst: u128, ty: u8, id: u16) -> Vec<u8> {
    let [a, b] = id.to_be_bytes();
    let m = icmp_msg(ty, 0, [a, b, 0, 1], b"pingpong");
    let mut f = eth(key::ETH_TYPE_IPV6, Some(0x0005));
    f.extend(ipv6_hdr(src, dst, key::IP_PROTO_ICMPV6, m.len()));
    f.extend(m);
    f
}

/// What an ICMP error quotes of the frame `quoted` (built by the helpers above): its IP header
/// and 8 bytes of L4.
fn quote(quoted: &[u8]) -> &[u8] {
    let l = parse_with_layout(1, quoted).1;
    &quoted[l.l3() as usize..l.l4().unwrap() as usize + 8]
}

/// An ICMPv4 error of `ty`/`code` from `src` to `dst`, quoting the IP packet of `quoted`.
fn icmp4_error(src: [u8; 4], dst: [u8; 4], ty: u8, code: u8, quoted: &[u8]) -> Vec<u8> {
    let m = icmp_msg(ty, code, [0; 4], quote(quoted));
    v4(src, dst, key::IP_PROTO_ICMP, &m)
}

fn icmp6_error(src: u128, dst: u128, ty: u8, quoted: &[u8]) -> Vec<u8> {
    let m = icmp_msg(ty, 0, [0; 4], quote(quoted));
    let mut f = eth(key::ETH_TYPE_IPV6, None);
    f.extend(ipv6_hdr(src, dst, key::IP_PROTO_ICMPV6, m.len()));
    f.extend(m);
    f
}

// ---- helpers ----

const A: [u8; 4] = [10, 0, 0, 1];
const B: [u8; 4] = [10, 0, 0, 2];
const R: [u8; 4] = [10, 0, 0, 254];

/// A table without mid-stream pickup: the strict state machine most tests check.
fn small(max: usize) -> ConnTrack {
    ConnTrack::new(CtConfig {
        max_entries: max,
        tcp_loose: false,
        ..CtConfig::default()
    })
}

/// A table with mid-stream pickup (the default configuration).
fn loose(max: usize) -> ConnTrack {
    ConnTrack::new(CtConfig {
        max_entries: max,
        ..CtConfig::default()
    })
}

/// Where the parser finds the headers of `frame`.
fn lay(frame: &[u8]) -> Layout {
    parse_with_layout(1, frame).1
}

fn go(c: &ConnTrack, zone: u16, frame: &[u8], commit: bool, now: u64) -> CtResult {
    let (k, l) = parse_with_layout(1, frame);
    assert!(!k.is_invalid(), "test frame does not parse: {k:?}");
    c.process(zone, &k, frame, &l, commit, now)
}

const NEW: u8 = ct::TRACKED | ct::NEW;
const EST: u8 = ct::TRACKED | ct::ESTABLISHED;
const EST_REPLY: u8 = ct::TRACKED | ct::ESTABLISHED | ct::REPLY;
const INV: u8 = ct::TRACKED | ct::INVALID;
const REL: u8 = ct::TRACKED | ct::RELATED;
const REL_REPLY: u8 = ct::TRACKED | ct::RELATED | ct::REPLY;

fn state_of(c: &ConnTrack) -> CtState {
    let d = c.dump(10);
    assert_eq!(d.len(), 1, "{d:?}");
    d[0].state
}

/// Opens A:1000 → B:80 with a full handshake at time `t`.
fn handshake(c: &ConnTrack, t: u64) {
    assert_eq!(go(c, 0, &tcp4(A, 1000, B, 80, SYN), true, t).state, NEW);
    assert_eq!(
        go(c, 0, &tcp4(B, 80, A, 1000, SYN | ACK), true, t).state,
        EST_REPLY
    );
    assert_eq!(go(c, 0, &tcp4(A, 1000, B, 80, ACK), true, t).state, EST);
}

// ---- tests ----

#[test]
fn conntrack_is_send_sync() {
    fn f<T: Send + Sync>() {}
    f::<ConnTrack>();
}

#[test]
fn conntrack_tcp_handshake() {
    let c = small(100);
    assert_eq!(go(&c, 0, &tcp4(A, 1000, B, 80, SYN), true, 0).state, NEW);
    assert_eq!(state_of(&c), CtState::SynSent);
    // retransmitted SYN: still NEW
    assert_eq!(go(&c, 0, &tcp4(A, 1000, B, 80, SYN), true, S).state, NEW);
    assert_eq!(c.len(), 1);
    assert_eq!(
        go(&c, 0, &tcp4(B, 80, A, 1000, SYN | ACK), true, S).state,
        EST_REPLY
    );
    assert_eq!(state_of(&c), CtState::SynRecv);
    assert_eq!(go(&c, 0, &tcp4(A, 1000, B, 80, ACK), true, S).state, EST);
    assert_eq!(state_of(&c), CtState::Established);
    assert_eq!(
        go(&c, 0, &tcp4(B, 80, A, 1000, ACK | tcp_flags::PSH), false, S).state,
        EST_REPLY
    );
    let d = c.dump(10);
    assert_eq!(d[0].src, IpAddr::from(A));
    assert_eq!(d[0].dst, IpAddr::from(B));
    assert_eq!((d[0].sport, d[0].dport), (1000, 80));
    assert_eq!((d[0].packets_orig, d[0].packets_reply), (3, 2));
    assert_eq!(d[0].proto, key::IP_PROTO_TCP);
    assert!(d[0].replied);
    assert_eq!(d[0].state.name(), "ESTABLISHED");
    assert_eq!(d[0].expires_in_secs, c.timeouts().tcp_established / S);
    let st = c.stats();
    assert_eq!((st.entries, st.created, st.invalid), (1, 1, 0));
}

#[test]
fn conntrack_tcp_without_syn_is_invalid() {
    let c = small(100);
    for fl in [ACK, SYN | ACK, RST, FIN, SYN | FIN, ACK | tcp_flags::PSH] {
        assert_eq!(go(&c, 0, &tcp4(A, 1000, B, 80, fl), true, 0).state, INV);
    }
    assert!(c.is_empty());
    assert_eq!(c.stats().invalid, 6);
    // before the SYN/ACK, only SYN and RST are accepted
    go(&c, 0, &tcp4(A, 1000, B, 80, SYN), true, 0);
    assert_eq!(go(&c, 0, &tcp4(A, 1000, B, 80, ACK), true, 0).state, INV);
    assert_eq!(go(&c, 0, &tcp4(B, 80, A, 1000, ACK), true, 0).state, INV);
    // a SYN from the originator on an established connection is invalid
    let c = small(100);
    handshake(&c, 0);
    assert_eq!(go(&c, 0, &tcp4(A, 1000, B, 80, SYN), true, 0).state, INV);
    assert_eq!(state_of(&c), CtState::Established);
}

#[test]
fn conntrack_pickup_mid_stream_segment() {
    let t = CtTimeouts::default();
    let c = loose(100);
    // Evaluated without commit (the security group's lookup): NEW, flagged, nothing created.
    let r = go(&c, 0, &tcp4(A, 1000, B, 80, ACK | tcp_flags::PSH), false, 0);
    assert_eq!((r.state, r.picked_up), (NEW, true));
    assert!(c.is_empty());
    // Committed (a rule allowed it as new): an established, unreplied entry in its direction.
    let r = go(&c, 0, &tcp4(A, 1000, B, 80, ACK), true, 0);
    assert_eq!((r.state, r.picked_up), (NEW, true));
    let d = c.dump_at(10, 0);
    assert_eq!(d.len(), 1);
    assert_eq!((d[0].src, d[0].sport), (IpAddr::from(A), 1000));
    assert_eq!(d[0].state, CtState::Established);
    assert!(d[0].picked_up && !d[0].replied);
    assert_eq!(d[0].expires_in_secs, t.tcp_picked_up / S);
    // More of the same direction: still NEW until a reply (netfilter semantics), not re-created.
    let r = go(&c, 0, &tcp4(A, 1000, B, 80, ACK), true, S);
    assert_eq!((r.state, r.picked_up), (NEW, false));
    // The reverse direction matches it, and from then on it is an ordinary connection.
    let r = go(&c, 0, &tcp4(B, 80, A, 1000, ACK), false, S);
    assert_eq!((r.state, r.picked_up), (EST_REPLY, false));
    assert_eq!(go(&c, 0, &tcp4(A, 1000, B, 80, ACK), false, S).state, EST);
    assert_eq!(c.dump_at(1, S)[0].expires_in_secs, t.tcp_established / S);
    let st = c.stats();
    assert_eq!(
        (st.entries, st.created, st.picked_up, st.invalid),
        (1, 1, 1, 0)
    );
}

#[test]
fn conntrack_pickup_never_without_commit_nor_from_syn_fin_rst() {
    let c = loose(100);
    // A refused pickup (no commit) leaves nothing: the other direction is not established.
    go(&c, 0, &tcp4(A, 1000, B, 80, ACK), false, 0);
    let r = go(&c, 0, &tcp4(B, 80, A, 1000, ACK), false, 0);
    assert_eq!((r.state, r.picked_up), (NEW, true));
    assert!(c.is_empty());
    // Only a plain ACK (PSH allowed) is picked up: FIN, RST, SYN/ACK, a bare segment stay invalid.
    for fl in [SYN | ACK, RST, RST | ACK, FIN, FIN | ACK, SYN | FIN, 0] {
        let r = go(&c, 0, &tcp4(A, 1000, B, 80, fl), true, 0);
        assert_eq!((r.state, r.picked_up), (INV, false), "flags {fl:#x}");
    }
    assert!(c.is_empty());
    assert_eq!(c.stats().picked_up, 0);
    // peek says what process would, creating nothing.
    let seg = tcp4(A, 1000, B, 80, ACK);
    let r = c.peek(0, &parse(1, &seg), &seg, &lay(&seg), 0);
    assert_eq!((r.state, r.picked_up), (NEW, true));
    assert!(c.is_empty());
}

#[test]
fn conntrack_pickup_from_the_server_side_waits_for_the_client_direction() {
    let t = CtTimeouts::default();
    let c = loose(100);
    // The server's segment (from the lower port) comes first: picked up, provisionally.
    let r = go(&c, 0, &tcp4(B, 80, A, 1000, ACK), true, 0);
    assert_eq!((r.state, r.picked_up), (NEW, true));
    assert_eq!(c.dump(1)[0].src, IpAddr::from(B));
    // The client's direction is not a reply yet: NEW, to be judged by the rules...
    let r = go(&c, 0, &tcp4(A, 1000, B, 80, ACK), false, 0);
    assert_eq!((r.state, r.picked_up), (NEW, true));
    let seg = tcp4(A, 1000, B, 80, ACK);
    let r = c.peek(0, &parse(1, &seg), &seg, &lay(&seg), 0);
    assert_eq!((r.state, r.picked_up), (NEW, true));
    // ...and only as a plain ACK.
    for fl in [FIN | ACK, RST, SYN | ACK] {
        assert_eq!(go(&c, 0, &tcp4(A, 1000, B, 80, fl), true, 0).state, INV);
    }
    let d = c.dump(1);
    assert!(!d[0].replied && d[0].src == IpAddr::from(B));
    assert_eq!(c.dump_at(1, 0)[0].expires_in_secs, t.tcp_picked_up / S);
    // The server's direction itself stays NEW (no reply seen).
    assert_eq!(go(&c, 0, &tcp4(B, 80, A, 1000, ACK), true, S).state, NEW);
    // Committed (the rules allow the client's direction as new): turned round, established.
    let r = go(&c, 0, &tcp4(A, 1000, B, 80, ACK), true, S);
    assert_eq!((r.state, r.picked_up), (NEW, true));
    let d = c.dump_at(1, S);
    assert_eq!(
        (d[0].src, d[0].sport, d[0].dport),
        (IpAddr::from(A), 1000, 80)
    );
    assert!(d[0].replied && d[0].picked_up);
    assert_eq!(d[0].state, CtState::Established);
    assert_eq!((d[0].packets_orig, d[0].packets_reply), (1, 2));
    assert_eq!(d[0].expires_in_secs, t.tcp_established / S);
    assert_eq!(
        go(&c, 0, &tcp4(B, 80, A, 1000, ACK), false, S).state,
        EST_REPLY
    );
    assert_eq!(go(&c, 0, &tcp4(A, 1000, B, 80, ACK), false, S).state, EST);
    assert_eq!((c.len(), c.stats().picked_up), (1, 1));
    // With equal ports, the lower address is taken for the server.
    let c = loose(100);
    go(&c, 0, &tcp4(A, 7000, B, 7000, ACK), true, 0);
    let r = go(&c, 0, &tcp4(B, 7000, A, 7000, ACK), false, 0);
    assert_eq!((r.state, r.picked_up), (NEW, true));
    let c = loose(100);
    go(&c, 0, &tcp4(B, 7000, A, 7000, ACK), true, 0);
    assert_eq!(
        go(&c, 0, &tcp4(A, 7000, B, 7000, ACK), false, 0).state,
        EST_REPLY
    );
}

#[test]
fn conntrack_pickup_then_rst_or_fin() {
    let t = CtTimeouts::default();
    let c = loose(100);
    go(&c, 0, &tcp4(A, 1000, B, 80, ACK), true, 0);
    assert_eq!(
        go(&c, 0, &tcp4(B, 80, A, 1000, RST), true, S).state,
        EST_REPLY
    );
    assert_eq!(state_of(&c), CtState::Closed);
    assert_eq!(c.dump_at(1, S)[0].expires_in_secs, t.tcp_closed / S);
    // once closed and expired, a new ACK may pick it up again
    let later = S + t.tcp_closed;
    let r = go(&c, 0, &tcp4(A, 1000, B, 80, ACK), true, later);
    assert_eq!((r.state, r.picked_up), (NEW, true));
    assert_eq!(state_of(&c), CtState::Established);
    assert_eq!(c.len(), 1);
    assert_eq!(c.stats().picked_up, 2);

    let c = loose(100);
    go(&c, 0, &tcp4(A, 1000, B, 80, ACK), true, 0);
    assert_eq!(
        go(&c, 0, &tcp4(B, 80, A, 1000, FIN | ACK), true, 0).state,
        EST_REPLY
    );
    assert_eq!(state_of(&c), CtState::CloseWait);
    go(&c, 0, &tcp4(A, 1000, B, 80, FIN | ACK), true, 0);
    assert_eq!(state_of(&c), CtState::TimeWait);
    // a SYN reopens as usual
    assert_eq!(go(&c, 0, &tcp4(A, 1000, B, 80, SYN), true, 0).state, NEW);
    assert_eq!(state_of(&c), CtState::SynSent);
    assert!(!c.dump(1)[0].picked_up);
}

#[test]
fn conntrack_pickup_unreplied_expires_soon() {
    let t = CtTimeouts::default();
    let c = loose(100);
    go(&c, 0, &tcp4(A, 1000, B, 80, ACK), true, 0);
    assert_eq!(c.expire(t.tcp_picked_up - 1), 0);
    assert_eq!(c.expire(t.tcp_picked_up), 1);
    // an expired strict entry is not revived by a stray ACK when pickup is off
    let c = small(100);
    handshake(&c, 0);
    let end = t.tcp_established;
    assert_eq!(go(&c, 0, &tcp4(A, 1000, B, 80, ACK), true, end).state, INV);
    assert!(c.is_empty());
    // with pickup on, it is picked up again
    let c = loose(100);
    handshake(&c, 0);
    let r = go(&c, 0, &tcp4(A, 1000, B, 80, ACK), true, end);
    assert_eq!((r.state, r.picked_up), (NEW, true));
    assert_eq!(c.len(), 1);
    assert_eq!(c.stats().expired, 1);
}

#[test]
fn conntrack_pickup_disabled_is_invalid() {
    let c = small(100);
    assert!(!c.tcp_loose());
    let r = go(&c, 0, &tcp4(A, 1000, B, 80, ACK), true, 0);
    assert_eq!((r.state, r.picked_up), (INV, false));
    assert!(c.is_empty());
    assert_eq!((c.stats().invalid, c.stats().picked_up), (1, 0));
}

#[test]
fn conntrack_tcp_fin_close() {
    let t = CtTimeouts::default();
    let c = small(100);
    handshake(&c, 0);
    assert_eq!(
        go(&c, 0, &tcp4(A, 1000, B, 80, FIN | ACK), true, S).state,
        EST
    );
    assert_eq!(state_of(&c), CtState::FinWait);
    assert_eq!(c.dump_at(1, S)[0].expires_in_secs, t.tcp_fin_wait / S);
    assert_eq!(
        go(&c, 0, &tcp4(B, 80, A, 1000, ACK), true, S).state,
        EST_REPLY
    );
    assert_eq!(state_of(&c), CtState::FinWait);
    assert_eq!(
        go(&c, 0, &tcp4(B, 80, A, 1000, FIN | ACK), true, S).state,
        EST_REPLY
    );
    assert_eq!(state_of(&c), CtState::TimeWait);
    assert_eq!(go(&c, 0, &tcp4(A, 1000, B, 80, ACK), true, S).state, EST);
    assert_eq!(state_of(&c), CtState::TimeWait);
    // time-wait expires
    let end = S + t.tcp_time_wait;
    assert_eq!(
        go(&c, 0, &tcp4(A, 1000, B, 80, ACK), true, end - 1).state,
        EST
    );
    let end = end - 1 + t.tcp_time_wait;
    assert_eq!(go(&c, 0, &tcp4(A, 1000, B, 80, ACK), true, end).state, INV);
    assert!(c.is_empty()); // the lookup removed the expired entry
    assert_eq!(c.stats().expired, 1);

    // server closes first: CLOSE_WAIT
    let c = small(100);
    handshake(&c, 0);
    go(&c, 0, &tcp4(B, 80, A, 1000, FIN | ACK), true, 0);
    assert_eq!(state_of(&c), CtState::CloseWait);
    go(&c, 0, &tcp4(A, 1000, B, 80, FIN | ACK), true, 0);
    assert_eq!(state_of(&c), CtState::TimeWait);
}

#[test]
fn conntrack_tcp_rst_and_reopen() {
    let t = CtTimeouts::default();
    let c = small(100);
    handshake(&c, 0);
    assert_eq!(
        go(&c, 0, &tcp4(B, 80, A, 1000, RST), true, S).state,
        EST_REPLY
    );
    assert_eq!(state_of(&c), CtState::Closed);
    assert_eq!(c.dump_at(1, S)[0].expires_in_secs, t.tcp_closed / S);
    // stray segments keep it closed
    assert_eq!(go(&c, 0, &tcp4(A, 1000, B, 80, ACK), true, S).state, EST);
    assert_eq!(state_of(&c), CtState::Closed);
    // a new SYN reopens: NEW again, SYN_SENT, no reply seen
    assert_eq!(
        go(&c, 0, &tcp4(A, 1000, B, 80, SYN), true, 2 * S).state,
        NEW
    );
    assert_eq!(state_of(&c), CtState::SynSent);
    assert!(!c.dump(1)[0].replied);
    assert_eq!(c.len(), 1);
    assert_eq!(c.stats().created, 2);
    // the closed timeout is short
    let c = small(100);
    handshake(&c, 0);
    go(&c, 0, &tcp4(A, 1000, B, 80, RST), true, 0);
    assert_eq!(c.expire(t.tcp_closed - 1), 0);
    assert_eq!(c.expire(t.tcp_closed), 1);
    assert!(c.is_empty());
    // connection refused: RST in reply to the SYN
    let c = small(100);
    go(&c, 0, &tcp4(A, 1000, B, 80, SYN), true, 0);
    assert_eq!(
        go(&c, 0, &tcp4(B, 80, A, 1000, RST | ACK), true, 0).state,
        EST_REPLY
    );
    assert_eq!(state_of(&c), CtState::Closed);
    // reopening from TIME_WAIT without commit drops the old entry
    let c = small(100);
    handshake(&c, 0);
    go(&c, 0, &tcp4(A, 1000, B, 80, FIN), true, 0);
    go(&c, 0, &tcp4(B, 80, A, 1000, FIN | ACK), true, 0);
    assert_eq!(state_of(&c), CtState::TimeWait);
    assert_eq!(go(&c, 0, &tcp4(A, 1000, B, 80, SYN), false, 0).state, NEW);
    assert!(c.is_empty());
}

#[test]
fn conntrack_tcp_established_timeout_refreshes() {
    let t = CtTimeouts::default();
    let c = small(100);
    handshake(&c, 0);
    let mut now = 0;
    for _ in 0..3 {
        now += t.tcp_established - 1;
        assert_eq!(go(&c, 0, &tcp4(A, 1000, B, 80, ACK), false, now).state, EST);
    }
    assert_eq!(c.expire(now + t.tcp_established - 1), 0);
    assert_eq!(c.expire(now + t.tcp_established), 1);
}

#[test]
fn conntrack_tcp_ipv6() {
    let (a, b) = (0x2001_0db8_u128 << 96 | 1, 0x2001_0db8_u128 << 96 | 2);
    let c = small(100);
    assert_eq!(go(&c, 0, &tcp6(a, 5555, b, 443, SYN), true, 0).state, NEW);
    assert_eq!(
        go(&c, 0, &tcp6(b, 443, a, 5555, SYN | ACK), true, 0).state,
        EST_REPLY
    );
    assert_eq!(go(&c, 0, &tcp6(a, 5555, b, 443, ACK), true, 0).state, EST);
    let d = c.dump(1);
    assert_eq!(d[0].eth_type, key::ETH_TYPE_IPV6);
    assert_eq!(d[0].src, IpAddr::V6(Ipv6Addr::from(a)));
    assert_eq!(d[0].state, CtState::Established);
    // an IPv4 packet with the same low address bits is another connection
    let a4 = (a as u32).to_be_bytes();
    let b4 = (b as u32).to_be_bytes();
    assert_eq!(go(&c, 0, &tcp4(b4, 443, a4, 5555, ACK), true, 0).state, INV);
}

#[test]
fn conntrack_udp_reply_establishes() {
    let t = CtTimeouts::default();
    let c = small(100);
    assert_eq!(go(&c, 0, &udp4(A, 5000, B, 53), true, 0).state, NEW);
    assert_eq!(c.dump_at(1, 0)[0].state, CtState::Unreplied);
    assert_eq!(c.dump_at(1, 0)[0].expires_in_secs, t.udp_first / S);
    assert_eq!(go(&c, 0, &udp4(A, 5000, B, 53), true, S).state, NEW);
    assert_eq!(go(&c, 0, &udp4(B, 53, A, 5000), true, S).state, EST_REPLY);
    assert_eq!(go(&c, 0, &udp4(A, 5000, B, 53), true, S).state, EST);
    let d = c.dump_at(1, S);
    assert_eq!(d[0].state, CtState::Replied);
    assert_eq!(d[0].expires_in_secs, t.udp_established / S);
    assert_eq!(c.len(), 1);
}

#[test]
fn conntrack_udp_one_way_stays_new_and_expires() {
    let t = CtTimeouts::default();
    let c = small(100);
    let mut now = 0;
    for _ in 0..5 {
        assert_eq!(go(&c, 0, &udp4(A, 5000, B, 53), true, now).state, NEW);
        now += t.udp_first - 1;
    }
    assert_eq!(c.len(), 1);
    assert_eq!(c.stats().created, 1);
    now += 1;
    // expired (but not yet removed): behaves as absent, so a reply is not established
    assert_eq!(go(&c, 0, &udp4(B, 53, A, 5000), false, now).state, NEW);
    assert!(c.is_empty());
    // commit without reply, then expire() removes it
    go(&c, 0, &udp4(A, 5000, B, 53), true, now);
    assert_eq!(c.dump_at(10, now + t.udp_first).len(), 0);
    assert_eq!(c.expire(now + t.udp_first - 1), 0);
    assert_eq!(c.expire(now + t.udp_first), 1);
    assert!(c.is_empty());
    assert_eq!(c.stats().expired, 2);
}

#[test]
fn conntrack_uncommitted_creates_nothing() {
    let c = small(100);
    assert_eq!(go(&c, 0, &udp4(A, 5000, B, 53), false, 0).state, NEW);
    assert_eq!(go(&c, 0, &udp4(B, 53, A, 5000), false, 0).state, NEW);
    assert!(c.is_empty());
}

#[test]
fn conntrack_zones_are_isolated() {
    let c = small(100);
    assert_eq!(go(&c, 1, &udp4(A, 5000, B, 53), true, 0).state, NEW);
    assert_eq!(go(&c, 2, &udp4(B, 53, A, 5000), false, 0).state, NEW);
    assert_eq!(go(&c, 2, &udp4(A, 5000, B, 53), true, 0).state, NEW);
    assert_eq!(c.len(), 2);
    assert_eq!(go(&c, 1, &udp4(B, 53, A, 5000), true, 0).state, EST_REPLY);
    assert_eq!(go(&c, 2, &udp4(A, 5000, B, 53), true, 0).state, NEW);
    assert_eq!(c.flush_zone(1), 1);
    assert_eq!(c.len(), 1);
    assert_eq!(c.dump(10)[0].zone, 2);
    assert_eq!(go(&c, 1, &udp4(B, 53, A, 5000), false, 0).state, NEW);
}

#[test]
fn conntrack_icmp_echo() {
    let c = small(100);
    // a reply with no request is invalid, and never committed
    assert_eq!(go(&c, 0, &echo4(B, A, 0, 7), true, 0).state, INV);
    assert_eq!(go(&c, 0, &echo4(A, B, 8, 7), true, 0).state, NEW);
    assert_eq!(go(&c, 0, &echo4(B, A, 0, 7), true, 0).state, EST_REPLY);
    assert_eq!(go(&c, 0, &echo4(A, B, 8, 7), true, 0).state, EST);
    // another identifier is another connection
    assert_eq!(go(&c, 0, &echo4(B, A, 0, 8), true, 0).state, INV);
    // B pinging A with the same identifier is another connection too
    assert_eq!(go(&c, 0, &echo4(B, A, 8, 7), true, 0).state, NEW);
    assert_eq!(c.len(), 2);
    let d = c
        .dump(10)
        .into_iter()
        .find(|e| e.src == IpAddr::from(A))
        .unwrap();
    assert_eq!(d.icmp_id, Some(7));
    assert_eq!(d.state, CtState::Replied);
    assert_eq!(d.orig_key().tp_src(), 8);
    // ICMP timeout
    let t = c.timeouts().icmp;
    assert_eq!(go(&c, 0, &echo4(B, A, 0, 7), true, t).state, INV);
    // ICMPv6 echo, on a VLAN
    let (a, b) = (0xfe80_u128 << 112 | 1, 0xfe80_u128 << 112 | 2);
    assert_eq!(go(&c, 0, &echo6(a, b, 128, 99), true, 0).state, NEW);
    assert_eq!(go(&c, 0, &echo6(b, a, 129, 99), true, 0).state, EST_REPLY);
    // the identifier comes from the frame: without it, the echo is invalid
    let k = parse(1, &echo6(a, b, 128, 99));
    assert_eq!(
        c.process(0, &k, &[], &Layout::default(), true, 0).state,
        INV
    );
}

#[test]
fn conntrack_icmp_other_types_tracked_by_address() {
    let c = small(100);
    // timestamp request / reply: no identifier handling, addresses only
    let ts = v4(A, B, key::IP_PROTO_ICMP, &icmp_msg(13, 0, [0; 4], &[0; 12]));
    let tr = v4(B, A, key::IP_PROTO_ICMP, &icmp_msg(14, 0, [0; 4], &[0; 12]));
    assert_eq!(go(&c, 0, &ts, true, 0).state, NEW);
    assert_eq!(go(&c, 0, &tr, true, 0).state, EST_REPLY);
}

#[test]
fn conntrack_icmp_error_related() {
    let c = small(100);
    let q = udp4(A, 5000, B, 53);
    go(&c, 0, &q, true, 0);
    // port unreachable from B, quoting A's datagram: related, in the reply direction
    let err = icmp4_error(B, A, 3, 3, &q);
    assert_eq!(go(&c, 0, &err, false, 0).state, REL_REPLY);
    // TTL exceeded from a router
    let err = icmp4_error(R, A, 11, 0, &q);
    assert_eq!(go(&c, 0, &err, false, 0).state, REL_REPLY);
    // an error about the reply direction goes to the responder: related, original direction
    let rq = udp4(B, 53, A, 5000);
    let err = icmp4_error(A, B, 3, 3, &rq);
    assert_eq!(go(&c, 0, &err, false, 0).state, REL);
    // quoting an unknown datagram: invalid (and nothing is created, even with commit)
    let unknown = udp4(A, 5001, B, 53);
    let err = icmp4_error(B, A, 3, 3, &unknown);
    assert_eq!(go(&c, 0, &err, true, 0).state, INV);
    assert_eq!(c.len(), 1);
    // other zone: not related
    let err = icmp4_error(B, A, 3, 3, &q);
    assert_eq!(go(&c, 9, &err, false, 0).state, INV);
    // TCP connection, fragmentation needed
    handshake(&c, 0);
    let seg = tcp4(A, 1000, B, 80, ACK);
    let err = icmp4_error(R, A, 3, 4, &seg);
    assert_eq!(go(&c, 0, &err, false, 0).state, REL_REPLY);
    // a ping that timed out in transit
    let ping = echo4(A, B, 8, 3);
    let err = icmp4_error(R, A, 11, 0, &ping);
    assert_eq!(go(&c, 0, &err, false, 0).state, INV);
    go(&c, 0, &ping, true, 0);
    assert_eq!(go(&c, 0, &err, false, 0).state, REL_REPLY);
    // after expiry, not related
    let t = c.timeouts().udp_first;
    let err = icmp4_error(B, A, 3, 3, &q);
    assert_eq!(go(&c, 0, &err, false, t).state, INV);
    // ICMPv6 destination unreachable quoting a TCP segment
    let (a, b) = (0x2001_0db8_u128 << 96 | 1, 0x2001_0db8_u128 << 96 | 2);
    go(&c, 0, &tcp6(a, 5555, b, 443, SYN), true, 0);
    let err = icmp6_error(b, a, 1, &tcp6(a, 5555, b, 443, SYN));
    assert_eq!(go(&c, 0, &err, false, 0).state, REL_REPLY);
    let err = icmp6_error(b, a, 1, &tcp6(a, 5556, b, 443, SYN));
    assert_eq!(go(&c, 0, &err, false, 0).state, INV);
}

#[test]
fn conntrack_non_ip_invalid_fragments() {
    let c = small(100);
    let mut arp = eth(key::ETH_TYPE_ARP, None);
    arp.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    arp.extend_from_slice(&[0; 20]);
    let k = parse(1, &arp);
    assert_eq!(c.process(0, &k, &arp, &lay(&arp), true, 0).state, INV);
    // a truncated frame
    let f = tcp4(A, 1000, B, 80, SYN);
    let k = parse(1, &f[..40]);
    assert!(k.is_invalid());
    assert_eq!(
        c.process(0, &k, &f[..40], &lay(&f[..40]), true, 0).state,
        INV
    );
    // a non-first fragment
    let mut f = udp4(A, 5000, B, 53);
    let l3 = lay(&f).l3() as usize;
    Ipv4Packet::new_unchecked(&mut f[l3..]).set_frag_offset(16); // × 8 bytes
    let k = parse(1, &f);
    assert!(k.flags() & flags::FRAG_LATER != 0);
    assert_eq!(c.process(0, &k, &f, &lay(&f), true, 0).state, INV);
    assert!(c.is_empty());
    assert_eq!(c.stats().invalid, 3);
}

#[test]
fn conntrack_other_protocol() {
    let c = small(100);
    let gre = v4(A, B, 47, &[0; 8]);
    let back = v4(B, A, 47, &[0; 8]);
    assert_eq!(go(&c, 0, &gre, true, 0).state, NEW);
    assert_eq!(go(&c, 0, &back, true, 0).state, EST_REPLY);
    assert_eq!(c.dump(1)[0].expires_in_secs, c.timeouts().other / S);
}

#[test]
fn conntrack_max_entries() {
    let c = small(5);
    for p in 0..5 {
        let r = go(&c, 0, &udp4(A, 5000 + p, B, 53), true, 0);
        assert_eq!(
            r,
            CtResult {
                state: NEW,
                ..Default::default()
            }
        );
    }
    assert_eq!(c.len(), 5);
    let r = go(&c, 0, &udp4(A, 6000, B, 53), true, 0);
    assert_eq!(
        r,
        CtResult {
            state: NEW,
            full: true,
            ..Default::default()
        }
    );
    assert!(!go(&c, 0, &udp4(A, 6001, B, 53), false, 0).full);
    assert_eq!(c.len(), 5);
    assert_eq!(c.stats().limit_hits, 1);
    // existing connections still work
    assert_eq!(go(&c, 0, &udp4(B, 53, A, 5003), true, 0).state, EST_REPLY);
    // an expired entry's slot is reused even at the limit
    let t = c.timeouts().udp_first;
    assert_eq!(
        go(&c, 0, &udp4(A, 5000, B, 53), true, t),
        CtResult {
            state: NEW,
            ..Default::default()
        }
    );
    assert_eq!(c.len(), 5);
    assert_eq!(c.expire(t), 3);
    assert!(!go(&c, 0, &udp4(A, 6000, B, 53), true, t).full);
    assert_eq!(c.len(), 3);
}

#[test]
fn conntrack_retain_and_dump() {
    let c = small(1000);
    for p in 0..100 {
        go(&c, 0, &udp4(A, 1000 + p, B, 53), true, 0);
        go(&c, 3, &tcp4(A, 1000 + p, B, 80, SYN), true, 0);
    }
    assert_eq!(c.len(), 200);
    assert_eq!(c.dump(7).len(), 7);
    assert_eq!(c.dump(1000).len(), 200);
    // the rule allowing UDP port 53 is removed
    let n = c.retain(|e| !(e.proto == key::IP_PROTO_UDP && e.dport == 53));
    assert_eq!(n, 100);
    assert_eq!(c.len(), 100);
    assert!(c.dump(1000).iter().all(|e| e.proto == key::IP_PROTO_TCP));
    // re-check by flow key
    let n = c.retain(|e| e.orig_key().tp_src() % 2 == 0);
    assert_eq!(n, 50);
    assert_eq!(c.flush_zone(3), 50);
    assert!(c.is_empty());
    let st = c.stats();
    assert_eq!((st.deleted, st.created), (200, 200));
    assert_eq!(
        go(&c, 3, &tcp4(B, 80, A, 1000, SYN | ACK), true, 0).state,
        INV
    );
}

#[test]
fn conntrack_many_entries_and_threads() {
    // enough entries per shard to exercise wrap-around, removal shifting and expiry walks
    let c = std::sync::Arc::new(small(50_000));
    let threads: Vec<_> = (0..4u8)
        .map(|t| {
            let c = c.clone();
            std::thread::spawn(move || {
                for i in 0..10_000u16 {
                    let src = [10, t, (i >> 8) as u8, i as u8];
                    let f = udp4(src, i, B, 53);
                    let k = parse(1, &f);
                    assert_eq!(c.process(0, &k, &f, &lay(&f), true, i as u64).state, NEW);
                    let r = udp4(B, 53, src, i);
                    let k = parse(1, &r);
                    assert_eq!(
                        c.process(0, &k, &r, &lay(&r), false, i as u64).state,
                        EST_REPLY
                    );
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(c.len(), 40_000);
    // entries committed at time i expire at i + udp_established
    let t = c.timeouts().udp_established;
    assert_eq!(c.expire(t + 5000), 4 * 5001);
    assert_eq!(c.len(), 40_000 - 4 * 5001);
    for i in (0..10_000u16).step_by(7) {
        let f = udp4(B, 53, [10, 2, (i >> 8) as u8, i as u8], i);
        let want = if (i as u64) > 5000 { EST_REPLY } else { NEW };
        assert_eq!(go(&c, 0, &f, false, t + 5000).state, want, "{i}");
    }
    assert_eq!(c.dump(usize::MAX).len(), c.len());
    assert_eq!(c.clear(), 40_000 - 4 * 5001);
    assert!(c.is_empty());
}

// ---- property tests ----

#[derive(Debug, Clone)]
struct Op {
    tuple: u8,
    tcp: bool,
    reply: bool,
    flags: u16,
    commit: bool,
    dt: u64,
}

fn op() -> impl Strategy<Value = Op> {
    (
        0u8..24,
        any::<bool>(),
        any::<bool>(),
        prop::sample::select(vec![SYN, SYN | ACK, ACK, FIN | ACK, RST, 0]),
        any::<bool>(),
        prop::sample::select(vec![0, 1, S, 20 * S, 100 * S, 400 * S]),
    )
        .prop_map(|(tuple, tcp, reply, flags, commit, dt)| Op {
            tuple,
            tcp,
            reply,
            flags,
            commit,
            dt,
        })
}

fn endpoints(tuple: u8) -> ([u8; 4], u16, [u8; 4], u16) {
    // a few addresses and ports so that tuples collide in both orders
    let a = [10, 0, 0, tuple % 3];
    let b = [10, 0, 0, tuple / 3 % 4];
    (a, 1000 + (tuple as u16 % 2), b, 80)
}

fn packet(o: &Op) -> Vec<u8> {
    let (mut a, mut ap, mut b, mut bp) = endpoints(o.tuple);
    if o.reply {
        std::mem::swap(&mut a, &mut b);
        std::mem::swap(&mut ap, &mut bp);
    }
    if o.tcp {
        tcp4(a, ap, b, bp, o.flags)
    } else {
        udp4(a, ap, b, bp)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Random traffic never takes the table past `max_entries`, and a reply to a connection just
    /// committed is always found.
    #[test]
    fn conntrack_prop_limit_and_replies(ops in prop::collection::vec(op(), 1..200), max in 1usize..12, tcp_loose in any::<bool>()) {
        let c = if tcp_loose { loose(max) } else { small(max) };
        let mut now = 0;
        for o in &ops {
            now += o.dt;
            let f = packet(o);
            let r = go(&c, 0, &f, o.commit, now);
            prop_assert!(c.len() <= max);
            prop_assert!(r.state & ct::TRACKED != 0);
            if o.commit && r.state == NEW && !r.full {
                // committed (or already there, unreplied): the reply must find it, unless it is a
                // connection picked up from the server's side, whose other direction waits for a
                // commit of its own
                let back = Op { reply: !o.reply, flags: SYN | ACK, ..o.clone() };
                let rr = go(&c, 0, &packet(&back), false, now);
                let provisional = tcp_loose
                    && rr.state == INV
                    && c.dump(usize::MAX).iter().any(|e| e.picked_up && !e.replied);
                prop_assert!(rr.state == EST_REPLY || provisional, "{:?} then {:?}", o, rr);
            }
            if r.full {
                prop_assert_eq!(c.len(), max);
            }
        }
        let live = c.dump_at(usize::MAX, now).len();
        c.expire(now);
        prop_assert_eq!(c.len(), live);
        prop_assert_eq!(c.dump(usize::MAX).len(), live);
    }

    /// UDP against a model: which connections exist, their state, and when they expire.
    #[test]
    fn conntrack_prop_udp_model(ops in prop::collection::vec(op(), 1..300)) {
        let t = CtTimeouts::default();
        let c = small(1000);
        // tuples t and t + 12 are the same connection (see `endpoints`):
        // t % 12 → (expiry, replied, opened by the `a` side)
        let mut model: std::collections::HashMap<u8, (u64, bool, bool)> = Default::default();
        let mut now = 0;
        for o in &ops {
            now += o.dt;
            let o = Op { tcp: false, ..o.clone() };
            let id = o.tuple % 12;
            let sender_is_a = !o.reply;
            let r = go(&c, 0, &packet(&o), o.commit, now);
            match model.get(&id).copied().filter(|e| e.0 > now) {
                None => {
                    prop_assert_eq!(r.state, NEW);
                    if o.commit {
                        model.insert(id, (now + t.udp_first, false, sender_is_a));
                    } else {
                        model.remove(&id);
                    }
                }
                Some((_, replied, opener_is_a)) => {
                    let is_reply = opener_is_a != sender_is_a;
                    let replied = replied || is_reply;
                    let want = if replied { ct::ESTABLISHED } else { ct::NEW };
                    prop_assert_eq!(r.state, ct::TRACKED | want | if is_reply { ct::REPLY } else { 0 });
                    let to = if replied { t.udp_established } else { t.udp_first };
                    model.insert(id, (now + to, replied, opener_is_a));
                }
            }
        }
        let live = model.values().filter(|v| v.0 > now).count();
        c.expire(now);
        prop_assert_eq!(c.len(), live);
    }
}

#[test]
fn conntrack_prefetch_is_only_a_hint() {
    let c = small(100);
    let frames = [
        tcp4(A, 1000, B, 80, SYN),
        udp4(A, 5000, B, 53),
        echo4(A, B, 8, 1),
        v4(A, B, 47, &[0; 8]),
    ];
    for f in &frames {
        c.prefetch(0, &parse(1, f));
        assert_eq!(go(&c, 0, f, true, 0).state, NEW);
        c.prefetch(0, &parse(1, f));
    }
    c.prefetch(0, &FlowKey::ZERO);
    assert_eq!(c.len(), 4);
    assert_eq!(c.stats().invalid, 0);
}

#[test]
fn peek_answers_like_process_but_changes_nothing() {
    let c = small(16);
    handshake(&c, 0);
    let fin = tcp4(A, 1000, B, 80, FIN | ACK);
    let k = parse(1, &fin);
    let before = c.dump_at(10, 5);
    assert_eq!(c.peek(0, &k, &fin, &lay(&fin), 5).state, EST);
    // Still established, same expiry: the FIN was only looked at.
    assert_eq!(state_of(&c), CtState::Established);
    assert_eq!(c.dump_at(10, 5)[0].expires_at_ns, before[0].expires_at_ns);
    // A packet that would be invalid is reported invalid without counting.
    let stray = tcp4(A, 2000, B, 80, ACK);
    let invalid_before = c.stats().invalid;
    assert_eq!(
        c.peek(0, &parse(1, &stray), &stray, &lay(&stray), 5).state,
        INV
    );
    assert_eq!(c.stats().invalid, invalid_before);
    // An unknown SYN is new, and nothing is created.
    let syn = tcp4(A, 3000, B, 80, SYN);
    assert_eq!(c.peek(0, &parse(1, &syn), &syn, &lay(&syn), 5).state, NEW);
    assert_eq!(c.len(), 1);
}
