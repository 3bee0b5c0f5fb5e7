//! The capture filter: a small subset of tcpdump's expressions, evaluated on the flow key the
//! flowtable's own parser makes of a frame (so "tcp" here means exactly what the switch's rules
//! see as TCP, tags and all).
//!
//! ```text
//! expr    = and ("or" and)*                         ("||" too)
//! and     = unary ("and" unary)*                    ("&&" too)
//! unary   = ("not" | "!") unary | "(" expr ")" | primitive
//! primitive =
//!     "ip" | "ip6" | "arp" | "tcp" | "udp" | "icmp" | "icmp6"
//!   | "vlan" [VID]                 outer 802.1Q tag (any, or this VLAN id)
//!   | ["src" | "dst"] "host" ADDR  IPv4 or IPv6 source/destination (ARP: sender/target)
//!   | ["src" | "dst"] "port" N     TCP or UDP port
//!   | "ether" ["src" | "dst"] "host" MAC
//!   | "broadcast" | "multicast"    Ethernet destination
//! ```
//!
//! `and` binds tighter than `or`, as in tcpdump. Unlike tcpdump, `vlan` does not shift the
//! offsets of what follows: the parser always looks past the tags, so `tcp` matches tagged and
//! untagged TCP alike. For IPv6 neighbour discovery the flowtable keys the target address as
//! the destination, and so does `dst host`.

use flowtable::key::{
    FlowKey, ETH_TYPE_ARP, ETH_TYPE_IPV4, ETH_TYPE_IPV6, IP_PROTO_ICMP, IP_PROTO_ICMPV6,
    IP_PROTO_TCP, IP_PROTO_UDP,
};
use model::Mac;
use std::fmt;
use std::net::IpAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Src,
    Dst,
    Either,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    /// No expression: every frame.
    All,
    Ip,
    Ip6,
    Arp,
    Tcp,
    Udp,
    Icmp,
    Icmp6,
    Vlan(Option<u16>),
    Host(Side, IpAddr),
    Port(Side, u16),
    Ether(Side, Mac),
    Broadcast,
    Multicast,
    Not(Box<Filter>),
    And(Box<Filter>, Box<Filter>),
    Or(Box<Filter>, Box<Filter>),
}

impl Filter {
    /// Parses `text`; errors say at which column (1-based) and what was expected there.
    pub fn parse(text: &str) -> Result<Filter, String> {
        let toks = tokens(text);
        if toks.is_empty() {
            return Ok(Filter::All);
        }
        let mut p = Parser {
            toks,
            at: 0,
            len: text.chars().count(),
        };
        let f = p.or()?;
        if let Some(t) = p.peek() {
            return Err(p.error_at(t, "expected `and`, `or` or the end of the filter"));
        }
        Ok(f)
    }

    /// Whether the frame whose key is `k` matches. No allocation: the capture path calls this
    /// on the forwarding thread.
    pub fn matches(&self, k: &FlowKey) -> bool {
        let l4 = |proto: u8| (k.is_ipv4() || k.is_ipv6()) && k.ip_proto() == proto;
        match self {
            Filter::All => true,
            Filter::Ip => k.eth_type() == ETH_TYPE_IPV4,
            Filter::Ip6 => k.eth_type() == ETH_TYPE_IPV6,
            Filter::Arp => k.eth_type() == ETH_TYPE_ARP,
            Filter::Tcp => l4(IP_PROTO_TCP),
            Filter::Udp => l4(IP_PROTO_UDP),
            Filter::Icmp => k.is_ipv4() && k.ip_proto() == IP_PROTO_ICMP,
            Filter::Icmp6 => k.is_ipv6() && k.ip_proto() == IP_PROTO_ICMPV6,
            Filter::Vlan(None) => k.vlan().is_some(),
            Filter::Vlan(Some(v)) => k.vlan() == Some(*v),
            Filter::Host(side, a) => {
                let (s, d) = (k.ip_src_addr(), k.ip_dst_addr());
                side.pick(s == Some(*a), d == Some(*a))
            }
            Filter::Port(side, p) => {
                (l4(IP_PROTO_TCP) || l4(IP_PROTO_UDP))
                    && side.pick(k.tp_src() == *p, k.tp_dst() == *p)
            }
            Filter::Ether(side, m) => side.pick(k.eth_src() == *m, k.eth_dst() == *m),
            Filter::Broadcast => k.eth_dst() == Mac([0xff; 6]),
            Filter::Multicast => k.eth_dst().0[0] & 1 == 1,
            Filter::Not(f) => !f.matches(k),
            Filter::And(a, b) => a.matches(k) && b.matches(k),
            Filter::Or(a, b) => a.matches(k) || b.matches(k),
        }
    }

    /// Whether every frame matches (the capture path then skips parsing the frame).
    pub fn is_all(&self) -> bool {
        matches!(self, Filter::All)
    }
}

impl Side {
    fn pick(self, src: bool, dst: bool) -> bool {
        match self {
            Side::Src => src,
            Side::Dst => dst,
            Side::Either => src || dst,
        }
    }
    fn prefix(self) -> &'static str {
        match self {
            Side::Src => "src ",
            Side::Dst => "dst ",
            Side::Either => "",
        }
    }
}

/// The filter as understood, fully parenthesised (echoed back to the client).
impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Filter::All => Ok(()),
            Filter::Ip => f.write_str("ip"),
            Filter::Ip6 => f.write_str("ip6"),
            Filter::Arp => f.write_str("arp"),
            Filter::Tcp => f.write_str("tcp"),
            Filter::Udp => f.write_str("udp"),
            Filter::Icmp => f.write_str("icmp"),
            Filter::Icmp6 => f.write_str("icmp6"),
            Filter::Vlan(None) => f.write_str("vlan"),
            Filter::Vlan(Some(v)) => write!(f, "vlan {v}"),
            Filter::Host(s, a) => write!(f, "{}host {a}", s.prefix()),
            Filter::Port(s, p) => write!(f, "{}port {p}", s.prefix()),
            Filter::Ether(s, m) => write!(f, "ether {}host {m}", s.prefix()),
            Filter::Broadcast => f.write_str("broadcast"),
            Filter::Multicast => f.write_str("multicast"),
            Filter::Not(a) => write!(f, "not {a}"),
            Filter::And(a, b) => write!(f, "({a} and {b})"),
            Filter::Or(a, b) => write!(f, "({a} or {b})"),
        }
    }
}

/// A word or one of `( ) !`, with its column (1-based, in characters).
#[derive(Debug, Clone)]
struct Tok {
    text: String,
    col: usize,
}

fn tokens(text: &str) -> Vec<Tok> {
    let mut out = vec![];
    let mut cur: Option<Tok> = None;
    for (i, c) in text.chars().enumerate() {
        let col = i + 1;
        if c.is_whitespace() || c == '(' || c == ')' || c == '!' {
            if let Some(t) = cur.take() {
                out.push(t);
            }
            // `!=` is no operator here; `!` alone is `not`.
            if !c.is_whitespace() {
                out.push(Tok {
                    text: c.to_string(),
                    col,
                });
            }
        } else {
            cur.get_or_insert_with(|| Tok {
                text: String::new(),
                col,
            })
            .text
            .push(c);
        }
    }
    out.extend(cur);
    // `&&` and `||` are words of their own only when spaced; accept them as `and` / `or`.
    for t in &mut out {
        match t.text.as_str() {
            "&&" => t.text = "and".into(),
            "||" => t.text = "or".into(),
            _ => {}
        }
    }
    out
}

struct Parser {
    toks: Vec<Tok>,
    at: usize,
    /// Length of the text, for errors at its end.
    len: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.at)
    }

    fn peek_is(&self, word: &str) -> bool {
        self.peek().is_some_and(|t| t.text == word)
    }

    fn next(&mut self, expected: &str) -> Result<Tok, String> {
        match self.toks.get(self.at) {
            Some(t) => {
                self.at += 1;
                Ok(t.clone())
            }
            None => Err(format!(
                "filter: at column {} (the end): expected {expected}",
                self.len + 1
            )),
        }
    }

    fn error_at(&self, t: &Tok, expected: &str) -> String {
        format!("filter: at column {} (`{}`): {expected}", t.col, t.text)
    }

    fn or(&mut self) -> Result<Filter, String> {
        let mut f = self.and()?;
        while self.peek_is("or") {
            self.at += 1;
            f = Filter::Or(Box::new(f), Box::new(self.and()?));
        }
        Ok(f)
    }

    fn and(&mut self) -> Result<Filter, String> {
        let mut f = self.unary()?;
        while self.peek_is("and") {
            self.at += 1;
            f = Filter::And(Box::new(f), Box::new(self.unary()?));
        }
        Ok(f)
    }

    fn unary(&mut self) -> Result<Filter, String> {
        const WHAT: &str = "a primitive (tcp, udp, icmp, arp, ip, ip6, host A, port N, vlan, \
                            ether host M, ...), `not` or `(`";
        let t = self.next(WHAT)?;
        match t.text.as_str() {
            "not" | "!" => Ok(Filter::Not(Box::new(self.unary()?))),
            "(" => {
                let f = self.or()?;
                let close = self.next("`)`")?;
                if close.text != ")" {
                    return Err(self.error_at(&close, "expected `)`"));
                }
                Ok(f)
            }
            _ => self.primitive(t, WHAT),
        }
    }

    fn primitive(&mut self, t: Tok, what: &str) -> Result<Filter, String> {
        Ok(match t.text.as_str() {
            "ip" => Filter::Ip,
            "ip6" => Filter::Ip6,
            "arp" => Filter::Arp,
            "tcp" => Filter::Tcp,
            "udp" => Filter::Udp,
            "icmp" => Filter::Icmp,
            "icmp6" => Filter::Icmp6,
            "broadcast" => Filter::Broadcast,
            "multicast" => Filter::Multicast,
            "vlan" => {
                let vid = match self.peek() {
                    Some(n) if n.text.starts_with(|c: char| c.is_ascii_digit()) => {
                        let n = self.next("a VLAN id")?;
                        match n.text.parse::<u16>() {
                            Ok(v) if v <= 4095 => Some(v),
                            _ => return Err(self.error_at(&n, "expected a VLAN id 0-4095")),
                        }
                    }
                    _ => None,
                };
                Filter::Vlan(vid)
            }
            "src" | "dst" | "host" | "port" => {
                let (side, kw) = match t.text.as_str() {
                    "src" => (Side::Src, self.next("`host` or `port`")?),
                    "dst" => (Side::Dst, self.next("`host` or `port`")?),
                    _ => (Side::Either, t.clone()),
                };
                match kw.text.as_str() {
                    "host" => {
                        let a = self.next("an IPv4 or IPv6 address")?;
                        let ip = a
                            .text
                            .parse::<IpAddr>()
                            .map_err(|_| self.error_at(&a, "expected an IPv4 or IPv6 address"))?;
                        Filter::Host(side, ip)
                    }
                    "port" => {
                        let n = self.next("a port number")?;
                        let p = n
                            .text
                            .parse::<u16>()
                            .map_err(|_| self.error_at(&n, "expected a port number 0-65535"))?;
                        Filter::Port(side, p)
                    }
                    _ => return Err(self.error_at(&kw, "expected `host` or `port`")),
                }
            }
            "ether" => {
                let mut kw = self.next("`host`, `src` or `dst`")?;
                let side = match kw.text.as_str() {
                    "src" => Side::Src,
                    "dst" => Side::Dst,
                    _ => Side::Either,
                };
                if side != Side::Either {
                    // `ether src MAC` and `ether src host MAC` both, as in tcpdump.
                    if self.peek_is("host") {
                        self.at += 1;
                    }
                } else if kw.text != "host" {
                    return Err(self.error_at(&kw, "expected `host`, `src` or `dst`"));
                }
                kw = self.next("a MAC address")?;
                let m = kw
                    .text
                    .parse::<Mac>()
                    .map_err(|_| self.error_at(&kw, "expected a MAC address aa:bb:cc:dd:ee:ff"))?;
                Filter::Ether(side, m)
            }
            _ => return Err(self.error_at(&t, &format!("expected {what}"))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowtable::parse::parse;

    /// Ethernet (+ tag) + IPv4 + `proto` header (8 bytes of ports or ICMP) from .1 to .2.
    fn ipv4(proto: u8, sport: u16, dport: u16, vlan: Option<u16>) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
        if let Some(v) = vlan {
            f.extend([0x81, 0x00]);
            f.extend(v.to_be_bytes());
        }
        f.extend([0x08, 0x00]);
        let l4_len: u16 = if proto == IP_PROTO_TCP { 20 } else { 8 };
        let total = 20 + l4_len;
        f.extend([0x45, 0]);
        f.extend(total.to_be_bytes());
        f.extend([0, 0, 0x40, 0, 64, proto, 0, 0]);
        f.extend([10, 0, 0, 1, 10, 0, 0, 2]);
        f.extend(sport.to_be_bytes());
        f.extend(dport.to_be_bytes());
        if proto == IP_PROTO_TCP {
            f.extend([0, 0, 0, 0, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
        } else {
            f.extend([0, 8, 0, 0]);
        }
        f
    }

    fn arp() -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend([2, 0, 0, 0, 0, 1, 0x08, 0x06]);
        f.extend([0, 1, 0x08, 0, 6, 4, 0, 1]);
        f.extend([2, 0, 0, 0, 0, 1, 10, 0, 0, 1]);
        f.extend([0, 0, 0, 0, 0, 0, 10, 0, 0, 2]);
        f
    }

    fn m(filter: &str, frame: &[u8]) -> bool {
        Filter::parse(filter)
            .unwrap_or_else(|e| panic!("{filter}: {e}"))
            .matches(&parse(1, frame))
    }

    #[test]
    fn primitives_match_what_the_switch_parses() {
        let tcp = ipv4(IP_PROTO_TCP, 40000, 80, None);
        let udp = ipv4(IP_PROTO_UDP, 5353, 53, Some(100));
        let icmp = ipv4(IP_PROTO_ICMP, 0x0800, 0, None);
        let arp = arp();
        assert!(m("", &tcp) && m("  ", &arp));
        assert!(m("tcp", &tcp) && !m("tcp", &udp) && !m("tcp", &icmp) && !m("tcp", &arp));
        assert!(m("udp", &udp) && m("ip", &udp) && !m("ip6", &udp) && !m("ip", &arp));
        assert!(m("icmp", &icmp) && !m("icmp", &tcp) && !m("icmp6", &icmp));
        assert!(m("arp", &arp) && !m("arp", &tcp));
        assert!(m("vlan", &udp) && m("vlan 100", &udp) && !m("vlan 101", &udp));
        assert!(!m("vlan", &tcp));
        assert!(m("port 80", &tcp) && m("dst port 80", &tcp) && !m("src port 80", &tcp));
        assert!(m("src port 40000", &tcp) && m("port 53", &udp));
        // ICMP's type/code sit where the ports are in the key: not ports.
        assert!(!m("port 2048", &icmp));
        assert!(m("host 10.0.0.1", &tcp) && m("src host 10.0.0.1", &tcp));
        assert!(!m("dst host 10.0.0.1", &tcp) && m("dst host 10.0.0.2", &icmp));
        assert!(!m("host 10.0.0.3", &tcp) && !m("host ::1", &tcp));
        assert!(m("host 10.0.0.2", &arp), "ARP's target address");
        assert!(m("ether host 02:00:00:00:00:01", &tcp));
        assert!(m("ether src 02:00:00:00:00:01", &tcp));
        assert!(m("ether dst host 02:00:00:00:00:02", &tcp));
        assert!(!m("ether dst 02:00:00:00:00:01", &tcp));
        assert!(m("broadcast", &arp) && m("multicast", &arp) && !m("broadcast", &tcp));
    }

    #[test]
    fn operators_and_precedence() {
        let tcp = ipv4(IP_PROTO_TCP, 40000, 80, None);
        let icmp = ipv4(IP_PROTO_ICMP, 0x0800, 0, None);
        assert!(m("icmp or tcp", &tcp) && m("icmp || tcp", &icmp));
        assert!(!m("icmp and tcp", &tcp) && m("ip && tcp", &tcp));
        assert!(m("not icmp", &tcp) && !m("! icmp", &icmp) && m("!icmp", &tcp));
        // and before or: `tcp or (icmp and udp)`.
        assert!(m("tcp or icmp and udp", &tcp));
        assert!(!m("(tcp or icmp) and udp", &tcp));
        assert!(m("host 10.0.0.1 and not (udp or arp)", &icmp));
        let f = Filter::parse("tcp or icmp and not port 22").unwrap();
        assert_eq!(f.to_string(), "(tcp or (icmp and not port 22))");
        assert_eq!(Filter::parse(&f.to_string()).unwrap(), f);
    }

    #[test]
    fn errors_say_where() {
        let e = |s: &str| Filter::parse(s).unwrap_err();
        assert_eq!(
            e("tcp and bogus"),
            "filter: at column 9 (`bogus`): expected a primitive (tcp, udp, icmp, arp, ip, ip6, \
             host A, port N, vlan, ether host M, ...), `not` or `(`"
        );
        assert!(
            e("tcp and").contains("column 8 (the end)"),
            "{}",
            e("tcp and")
        );
        assert!(e("host 10.0.0.300").contains("column 6 (`10.0.0.300`)"));
        assert!(e("port http").contains("port number"));
        assert!(e("vlan 5000").contains("VLAN id 0-4095"));
        assert!(e("(tcp").contains("expected `)`"));
        assert!(e("tcp udp").contains("column 5 (`udp`): expected `and`, `or`"));
        assert!(e("ether host zz").contains("MAC address"));
        assert!(e("src tcp").contains("expected `host` or `port`"));
        assert!(e("tcp)").contains("column 4 (`)`)"));
    }
}
