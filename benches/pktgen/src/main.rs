//! `evs-pktgen`: a one-core DPDK traffic generator for the switch benchmarks.
//!
//! Port A (the first `--port`) transmits; port B (the second) counts what arrives. `--bidir` also
//! sends the reverse flows from B to A (replies, so stateful switches see both directions).
//! `--mode handshake` opens TCP connections: SYN from A, the generator answers SYN-ACK on B for
//! every SYN that crosses the switch, then ACK from A; connections completed per second are the
//! ACKs that reach B.
//!
//!     evs-pktgen --port virtio_user0,path=/tmp/a.sock --port virtio_user1,path=/tmp/b.sock \
//!         --lcores 0 --huge-dir /mnt/h --size 64 --flows 10000 --duration 10 --json
//!     evs-pktgen pingpong --cpus 0,1        # core-to-core round trip, ns

mod packet;

use clap::{Args, Parser, Subcommand, ValueEnum};
use evs_dpdk::{self as dpdk, Eal, EthPort, Mbuf, Mempool, Queues, RxQueueToken, TxQueueToken};
use packet::{Flow, Layout, Proto};
use serde_json::json;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const BURST: usize = 32;
const IMIX: [usize; 3] = [64, 570, 1518];
/// 7:4:1 of 64/570/1518 interleaved over 12 packets.
const IMIX_PATTERN: [u8; 12] = [0, 1, 0, 0, 1, 0, 2, 0, 1, 0, 0, 1];
const MAX_SAMPLES: usize = 4 << 20;

#[derive(Parser, Debug)]
#[command(
    name = "evs-pktgen",
    version,
    about = "DPDK traffic generator for evsd benchmarks"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    gen: GenArgs,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Measure the core-to-core round trip (cache-line ping-pong), in ns; no DPDK.
    Pingpong {
        #[arg(long, default_value = "0,1")]
        cpus: String,
        #[arg(long, default_value_t = 200_000)]
        iters: u64,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Mode {
    /// Constant stream of the templates (TX on A, or on both ports with --bidir).
    Throughput,
    /// TCP handshakes: SYN from A, SYN-ACK from B, ACK from A.
    Handshake,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
enum ProtoArg {
    Udp,
    Tcp,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Field {
    SrcMac,
    SrcIp,
    DstIp,
    Sport,
    Dport,
}

#[derive(Args, Debug)]
struct GenArgs {
    /// Port devargs: a vdev (`virtio_user0,path=/tmp/a.sock,queues=1[,server=1]`) or a PCI address.
    /// First = A (tx), second = B (rx); one port: tx and rx on the same port.
    #[arg(long = "port")]
    ports: Vec<String>,
    /// EAL core list (-l); the generator runs on the first.
    #[arg(short = 'l', long, default_value = "0")]
    lcores: String,
    /// Run without hugepages (about 35% slower vhost-user).
    #[arg(long)]
    no_huge: bool,
    /// Memory, MiB (-m).
    #[arg(short = 'm', long, default_value_t = 256)]
    mem: u32,
    #[arg(long)]
    file_prefix: Option<String>,
    #[arg(long)]
    huge_dir: Option<String>,
    /// Extra EAL arguments (repeatable).
    #[arg(long = "eal-arg", allow_hyphen_values = true)]
    eal_args: Vec<String>,

    #[arg(long, value_enum, default_value = "throughput")]
    mode: Mode,
    /// Frame size including the 4-byte FCS (64-1518); the buffer is size-4 bytes.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// IMIX 7:4:1 of 64/570/1518 instead of --size.
    #[arg(long)]
    imix: bool,
    #[arg(long, value_enum, default_value = "udp")]
    proto: ProtoArg,
    /// 802.1Q tag on transmitted frames.
    #[arg(long)]
    vlan: Option<u16>,
    #[arg(long, default_value = "02:00:00:00:00:01")]
    src_mac: String,
    #[arg(long, default_value = "02:00:00:00:00:02")]
    dst_mac: String,
    #[arg(long, default_value = "10.0.0.1")]
    src_ip: Ipv4Addr,
    #[arg(long, default_value = "10.0.0.2")]
    dst_ip: Ipv4Addr,
    #[arg(long, default_value_t = 1024)]
    sport: u16,
    #[arg(long, default_value_t = 5001)]
    dport: u16,
    /// Number of flows (distinct 5-tuples), cycled round robin.
    #[arg(long, default_value_t = 1)]
    flows: u32,
    /// Fields that vary across flows (comma-separated); flow i adds i to each.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "sport,dport")]
    vary: Vec<Field>,
    /// Also send the reverse flows from B to A.
    #[arg(long)]
    bidir: bool,
    /// Rate per transmitting port, packets/s (handshake: SYNs/s); 0 = unlimited.
    #[arg(long, default_value_t = 0)]
    rate_pps: u64,
    /// Rate per transmitting port as % of 10G line rate for the frame size (overrides --rate-pps).
    #[arg(long)]
    rate_pct: Option<f64>,
    /// Measured window, seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Traffic before the window starts (not counted in rates), seconds.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Stamp one packet in N for latency (0: none).
    #[arg(long, default_value_t = 256)]
    sample_every: u32,
    /// Seconds to wait for links to come up.
    #[arg(long, default_value_t = 30.0)]
    link_timeout: f64,
    /// Machine-readable result on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Default, Clone, Copy, Debug)]
struct Counters {
    tx: u64,
    tx_bytes: u64,
    rx: u64,
    rx_bytes: u64,
}

/// The two queues of a generator port (one rx, one tx).
struct PortQueues {
    rx: RxQueueToken,
    tx: TxQueueToken,
}

/// One transmitting side: its templates and pacing state.
struct Stream {
    /// Index of its port in the port list.
    port: usize,
    /// templates[size_class * nflows + flow]
    templates: Vec<Vec<u8>>,
    nflows: usize,
    lay: Layout,
    stamp_ok: [bool; 3],
    flow: usize,
    imix_pos: usize,
    seq: u32,
    made: u64,
    /// Built but not yet accepted by the tx queue (kept, not freed, under backpressure).
    pending: [Option<Mbuf>; BURST],
    /// Their lengths (a sent mbuf belongs to the queue and may be gone already).
    lens: [u32; BURST],
    npending: usize,
}

struct Latency {
    samples: Vec<u32>,
    seen: u64,
    hz: u64,
}

impl Latency {
    fn record(&mut self, now: u64, tsc: u64) {
        self.seen += 1;
        if self.samples.len() < MAX_SAMPLES {
            let ns = (now.wrapping_sub(tsc) as u128 * 1_000_000_000 / self.hz as u128) as u64;
            self.samples.push(ns.min(u32::MAX as u64) as u32);
        }
    }
    fn summary(&mut self) -> serde_json::Value {
        if self.samples.is_empty() {
            return json!(null);
        }
        self.samples.sort_unstable();
        let n = self.samples.len();
        let sum: u64 = self.samples.iter().map(|&x| x as u64).sum();
        let pct = |p: f64| self.samples[((n as f64 * p) as usize).min(n - 1)];
        json!({
            "samples": n, "min_ns": self.samples[0], "avg_ns": sum / n as u64,
            "p50_ns": pct(0.50), "p99_ns": pct(0.99), "max_ns": self.samples[n - 1],
        })
    }
}

fn main() {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Some(Cmd::Pingpong { cpus, iters, json }) => pingpong(&cpus, iters, json),
        None => run(cli.gen),
    };
    if let Err(e) = r {
        eprintln!("evs-pktgen: error: {e}");
        std::process::exit(1);
    }
}

fn eal_args(g: &GenArgs) -> Vec<String> {
    let mut a = vec![
        "-l".to_owned(),
        g.lcores.clone(),
        "-m".into(),
        g.mem.to_string(),
    ];
    if g.no_huge {
        a.push("--no-huge".into());
    } else {
        // Nothing left in hugetlbfs after exit; one file for all segments because vhost-user
        // shares at most 8 memory regions.
        a.extend(["--in-memory".into(), "--single-file-segments".into()]);
    }
    if let Some(d) = &g.huge_dir {
        a.extend(["--huge-dir".into(), d.clone()]);
    }
    let prefix = g
        .file_prefix
        .clone()
        .unwrap_or_else(|| format!("evs-pktgen{}", std::process::id()));
    a.extend(["--file-prefix".into(), prefix, "--no-telemetry".into()]);
    let mut any_pci = false;
    for p in &g.ports {
        let name = p.split(',').next().unwrap_or("");
        if is_pci(name) {
            any_pci = true;
            a.extend(["-a".into(), p.clone()]);
        } else {
            a.extend(["--vdev".into(), p.clone()]);
        }
    }
    if !any_pci {
        a.push("--no-pci".into());
    }
    a.extend(g.eal_args.iter().cloned());
    a
}

fn is_pci(name: &str) -> bool {
    let b = name.as_bytes();
    name.len() >= 7
        && b.iter().filter(|&&c| c == b':').count() >= 1
        && name.contains('.')
        && b.iter()
            .all(|c| c.is_ascii_hexdigit() || *c == b':' || *c == b'.')
}

fn flows(g: &GenArgs) -> Result<Vec<Flow>, String> {
    let base = Flow {
        src_mac: packet::parse_mac(&g.src_mac)?,
        dst_mac: packet::parse_mac(&g.dst_mac)?,
        src_ip: g.src_ip,
        dst_ip: g.dst_ip,
        sport: g.sport,
        dport: g.dport,
    };
    let n = g.flows.max(1);
    Ok((0..n)
        .map(|i| {
            let mut f = base;
            for v in &g.vary {
                match v {
                    Field::SrcMac => {
                        let x =
                            u16::from_be_bytes([f.src_mac[4], f.src_mac[5]]).wrapping_add(i as u16);
                        f.src_mac[4..6].copy_from_slice(&x.to_be_bytes());
                        f.src_mac[3] = f.src_mac[3].wrapping_add((i >> 16) as u8);
                    }
                    Field::SrcIp => {
                        f.src_ip = Ipv4Addr::from(u32::from(base.src_ip).wrapping_add(i))
                    }
                    Field::DstIp => {
                        f.dst_ip = Ipv4Addr::from(u32::from(base.dst_ip).wrapping_add(i))
                    }
                    Field::Sport => f.sport = base.sport.wrapping_add(i as u16),
                    Field::Dport => {
                        f.dport = base.dport.wrapping_add((i >> 16) as u16 + (i as u16 / 7))
                    }
                }
            }
            f
        })
        .collect())
}

fn sizes(g: &GenArgs) -> Vec<usize> {
    if g.imix {
        IMIX.to_vec()
    } else {
        vec![g.size]
    }
}

fn make_stream(port: usize, fl: &[Flow], g: &GenArgs, proto: Proto) -> Stream {
    let sz = sizes(g);
    let lay = packet::layout(g.vlan, proto);
    let mut templates = Vec::with_capacity(sz.len() * fl.len());
    let mut stamp_ok = [false; 3];
    for (i, &s) in sz.iter().enumerate() {
        let len = s - packet::FCS_LEN;
        stamp_ok[i] = packet::stamp_fits(&lay, len);
        for f in fl {
            templates.push(packet::build(f, g.vlan, proto, len, packet::TCP_ACK));
        }
    }
    Stream {
        port,
        templates,
        nflows: fl.len(),
        lay,
        stamp_ok,
        flow: 0,
        imix_pos: 0,
        seq: 0,
        made: 0,
        pending: Default::default(),
        lens: [0; BURST],
        npending: 0,
    }
}

fn rate_pps(g: &GenArgs) -> u64 {
    if let Some(p) = g.rate_pct {
        let avg = if g.imix {
            (7 * 64 + 4 * 570 + 1518) as f64 / 12.0
        } else {
            g.size as f64
        };
        (p / 100.0 * 10e9 / ((avg + 20.0) * 8.0)) as u64
    } else {
        g.rate_pps
    }
}

/// Set by SIGINT/SIGTERM.
static STOP: LazyLock<Arc<AtomicBool>> = LazyLock::new(Default::default);

fn run(g: GenArgs) -> Result<(), String> {
    if g.ports.is_empty() || g.ports.len() > 2 {
        return Err("give one or two --port".into());
    }
    if !g.imix && !(64..=1518).contains(&g.size) {
        return Err(format!("--size {} is not in 64-1518", g.size));
    }
    let proto = match g.proto {
        ProtoArg::Udp => Proto::Udp,
        ProtoArg::Tcp => Proto::Tcp,
    };
    let fl = flows(&g)?;
    let args = eal_args(&g);
    let t_exec = Instant::now();
    let eal = Eal::init_as("evs-pktgen", &args).map_err(|e| e.to_string())?;
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, STOP.clone())
            .map_err(|e| format!("cannot install signal handler: {e}"))?;
    }
    let hz = dpdk::tsc_hz();
    let pool = Mempool::create("pktgen", 32767, 256).map_err(|e| e.to_string())?;
    let mut ports = vec![];
    let mut qs = vec![];
    for p in &g.ports {
        let name = p.split(',').next().unwrap();
        let mut port = EthPort::by_name(name).map_err(|_| format!("no ethdev named {name:?}"))?;
        // One rx and one tx queue, default settings, promiscuous, link polled.
        let Queues { mut rx, mut tx } = port
            .setup_and_start_polled(1, 1, &pool)
            .map_err(|e| e.to_string())?;
        ports.push(port);
        qs.push(PortQueues {
            rx: rx.pop().expect("one rx queue"),
            tx: tx.pop().expect("one tx queue"),
        });
    }
    let stop_all = |ports: Vec<EthPort>, qs: Vec<PortQueues>| {
        for (p, q) in ports.into_iter().zip(qs) {
            let _ = p.stop_and_close(Queues {
                rx: vec![q.rx],
                tx: vec![q.tx],
            });
        }
    };
    let (pa, pb) = (0, ports.len() - 1);
    let deadline = Instant::now() + Duration::from_secs_f64(g.link_timeout);
    while !ports.iter().all(|p| p.link().up) {
        if Instant::now() > deadline || STOP.load(Ordering::Relaxed) {
            stop_all(ports, qs);
            return Err("links did not come up (is the switch running?)".into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    eprintln!(
        "evs-pktgen: links up after {:.3} s (EAL + ports); {} flows, mode {:?}",
        t_exec.elapsed().as_secs_f64(),
        fl.len(),
        g.mode
    );
    let result = match g.mode {
        Mode::Throughput => throughput(&g, &pool, &mut qs, pa, pb, &fl, proto, hz),
        Mode::Handshake => handshake(&g, &pool, &mut qs, pa, pb, &fl, hz),
    };
    stop_all(ports, qs);
    drop(pool);
    if let Err(e) = eal.cleanup() {
        eprintln!("evs-pktgen: {e}");
    }
    let mut v = result?;
    v["eal_args"] = json!(args.join(" "));
    if g.json {
        println!("{}", serde_json::to_string_pretty(&v).unwrap());
    } else {
        print_text(&v);
    }
    Ok(())
}

/// CPU time this thread got, ns (from /proc/thread-self/schedstat).
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|x| x.parse().ok()))
        .unwrap_or(0)
}

fn now_unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Builds up to BURST packets of `s` into its pending array.
#[inline]
fn refill(s: &mut Stream, pool: &Mempool, want: usize, proto: Proto, sample_every: u32, now: u64) {
    let n = want.min(BURST - s.npending);
    if n == 0 {
        return;
    }
    let slot = &mut s.pending[s.npending..s.npending + n];
    if !pool.alloc_bulk(slot) {
        return;
    }
    let nclasses = s.templates.len() / s.nflows;
    let lens = &mut s.lens[s.npending..s.npending + n];
    for (m, len) in slot.iter_mut().flatten().zip(lens) {
        let class = if nclasses > 1 {
            let c = IMIX_PATTERN[s.imix_pos] as usize;
            s.imix_pos = if s.imix_pos + 1 == IMIX_PATTERN.len() {
                0
            } else {
                s.imix_pos + 1
            };
            c
        } else {
            0
        };
        let t = &s.templates[class * s.nflows + s.flow];
        s.flow = if s.flow + 1 == s.nflows {
            0
        } else {
            s.flow + 1
        };
        let d = m.set_len(t.len()).expect("frames fit in an mbuf");
        d.copy_from_slice(t);
        *len = t.len() as u32;
        s.made += 1;
        if sample_every != 0 && s.made.is_multiple_of(sample_every as u64) && s.stamp_ok[class] {
            s.seq = s.seq.wrapping_add(1);
            packet::stamp(d, &s.lay, proto, s.seq, now);
        }
    }
    s.npending += n;
}

#[inline]
fn send(s: &mut Stream, q: &mut TxQueueToken, c: &mut Counters) {
    if s.npending == 0 {
        return;
    }
    let sent = q.tx_burst(&mut s.pending[..s.npending]);
    for &l in &s.lens[..sent] {
        c.tx_bytes += l as u64 + packet::FCS_LEN as u64;
    }
    c.tx += sent as u64;
    if sent > 0 && sent < s.npending {
        // The sent slots are empty: behind the packets still waiting.
        s.pending[..s.npending].rotate_left(sent);
        s.lens.copy_within(sent..s.npending, 0);
    }
    s.npending -= sent;
}

/// Receives one burst on `q`; counts and samples latency.
#[inline]
fn receive(q: &mut RxQueueToken, c: &mut Counters, lat: &mut Latency, first_rx: &mut u64) -> usize {
    let mut b: [Option<Mbuf>; BURST] = Default::default();
    let n = q.rx_burst(&mut b);
    if n == 0 {
        return 0;
    }
    if *first_rx == 0 {
        *first_rx = now_unix_ns();
    }
    let now = dpdk::rdtsc();
    for m in b[..n].iter().flatten() {
        c.rx_bytes += m.pkt_len() as u64 + packet::FCS_LEN as u64;
        let d = m.data();
        // Cheap pre-check before parsing: the IP id of an untagged or single-tagged frame.
        // wire: IPv4 identification at 18..20 (untagged) or 22..24 (one tag)
        if (d.len() > 20 && d[18] == 0xe5 && d[19] == 0xe5)
            || (d.len() > 24 && d[22] == 0xe5 && d[23] == 0xe5)
        {
            if let Some((_, tsc)) = packet::read_stamp(d) {
                lat.record(now, tsc);
            }
        }
    }
    c.rx += n as u64;
    Mbuf::free_bulk(&mut b[..n]);
    n
}

#[allow(clippy::too_many_arguments)]
fn throughput(
    g: &GenArgs,
    pool: &Mempool,
    qs: &mut [PortQueues],
    pa: usize,
    pb: usize,
    fl: &[Flow],
    proto: Proto,
    hz: u64,
) -> Result<serde_json::Value, String> {
    let rev: Vec<Flow> = fl.iter().map(Flow::reversed).collect();
    let mut streams = vec![make_stream(pa, fl, g, proto)];
    if g.bidir {
        if pa == pb {
            return Err("--bidir needs two ports".into());
        }
        streams.push(make_stream(pb, &rev, g, proto));
    }
    let rate = rate_pps(g);
    let mut lat = Latency {
        samples: Vec::with_capacity(1 << 16),
        seen: 0,
        hz,
    };
    // cnt[0]: A→B (tx on A, rx on B); cnt[1]: B→A.
    let mut cnt = [Counters::default(); 2];
    let mut win = [Counters::default(); 2];
    let mut first_rx = 0u64;
    let t0 = dpdk::rdtsc();
    let t_win = t0 + (g.warmup * hz as f64) as u64;
    let t_end = t_win + (g.duration * hz as f64) as u64;
    let mut in_window = false;
    let mut win_tsc = 0u64;
    let mut cpu0 = 0u64;
    loop {
        let now = dpdk::rdtsc();
        if !in_window && now >= t_win {
            in_window = true;
            win = cnt;
            win_tsc = now;
            lat.samples.clear();
            lat.seen = 0;
            cpu0 = thread_cpu_ns();
            eprintln!("evs-pktgen: window start");
        }
        if now >= t_end || STOP.load(Ordering::Relaxed) {
            break;
        }
        for (i, s) in streams.iter_mut().enumerate() {
            let want = if rate == 0 {
                BURST
            } else {
                let due = ((now - t0) as u128 * rate as u128 / hz as u128) as u64;
                due.saturating_sub(s.made).min(BURST as u64) as usize
            };
            refill(s, pool, want, proto, g.sample_every, now);
            send(s, &mut qs[s.port].tx, &mut cnt[i]);
        }
        receive(&mut qs[pb].rx, &mut cnt[0], &mut lat, &mut first_rx);
        if pa != pb {
            receive(&mut qs[pa].rx, &mut cnt[1], &mut lat, &mut first_rx);
        }
    }
    let t_stop = dpdk::rdtsc();
    let secs = if in_window {
        (t_stop - win_tsc) as f64 / hz as f64
    } else {
        0.0
    };
    let cpu_share = (thread_cpu_ns() - cpu0) as f64 / 1e9 / secs.max(1e-9);
    eprintln!("evs-pktgen: window end");
    let win_end = cnt;
    // Drain what is still in flight (loss counts the whole run).
    for s in streams.iter_mut() {
        Mbuf::free_bulk(&mut s.pending[..s.npending]);
        s.npending = 0;
    }
    let drain_end = dpdk::rdtsc() + hz / 5;
    while dpdk::rdtsc() < drain_end {
        receive(&mut qs[pb].rx, &mut cnt[0], &mut lat, &mut first_rx);
        if pa != pb {
            receive(&mut qs[pa].rx, &mut cnt[1], &mut lat, &mut first_rx);
        }
    }
    let dir = |i: usize| {
        let w_tx = win_end[i].tx - win[i].tx;
        let w_rx = win_end[i].rx - win[i].rx;
        let w_rxb = win_end[i].rx_bytes - win[i].rx_bytes;
        let loss = cnt[i].tx.saturating_sub(cnt[i].rx);
        json!({
            "tx_pps": w_tx as f64 / secs.max(1e-9),
            "rx_pps": w_rx as f64 / secs.max(1e-9),
            "rx_gbps": w_rxb as f64 * 8.0 / 1e9 / secs.max(1e-9),
            "tx_packets": cnt[i].tx, "rx_packets": cnt[i].rx,
            "loss_packets": loss,
            "loss_pct": if cnt[i].tx > 0 { loss as f64 * 100.0 / cnt[i].tx as f64 } else { 0.0 },
        })
    };
    let a2b = dir(0);
    let b2a = if g.bidir { dir(1) } else { json!(null) };
    let rx_total = a2b["rx_pps"].as_f64().unwrap_or(0.0) + b2a["rx_pps"].as_f64().unwrap_or(0.0);
    let tx_total = a2b["tx_pps"].as_f64().unwrap_or(0.0) + b2a["tx_pps"].as_f64().unwrap_or(0.0);
    let tx_all = cnt[0].tx + cnt[1].tx;
    let rx_all = cnt[0].rx + cnt[1].rx;
    Ok(json!({
        "mode": "throughput",
        "frame": if g.imix { "imix".to_string() } else { g.size.to_string() },
        "flows": fl.len(), "bidir": g.bidir, "offered_pps_per_port": rate,
        "window_s": secs,
        "tx_pps": tx_total, "rx_pps": rx_total,
        "tx_mpps": tx_total / 1e6, "rx_mpps": rx_total / 1e6,
        "loss_packets": tx_all.saturating_sub(rx_all),
        "loss_pct": if tx_all > 0 { tx_all.saturating_sub(rx_all) as f64 * 100.0 / tx_all as f64 } else { 0.0 },
        "a_to_b": a2b, "b_to_a": b2a,
        "latency": lat.summary(),
        "first_rx_unix_ns": first_rx,
        "cpu_share": cpu_share,
        "tsc_hz": hz,
    }))
}

fn handshake(
    g: &GenArgs,
    pool: &Mempool,
    qs: &mut [PortQueues],
    pa: usize,
    pb: usize,
    fl: &[Flow],
    hz: u64,
) -> Result<serde_json::Value, String> {
    if pa == pb {
        return Err("handshake mode needs two ports".into());
    }
    let rate = rate_pps(g);
    let base = fl[0];
    let len = (if g.imix { 64 } else { g.size }) - packet::FCS_LEN;
    // One SYN template; each connection patches source IP/port and ISN (checksums recomputed).
    let syn = packet::build(&base, g.vlan, Proto::Tcp, len, packet::TCP_SYN);
    let lay = packet::layout(g.vlan, Proto::Tcp);
    let (ip, l4) = (lay.ip, lay.l4);
    let mut conn: u64 = 0;
    let (mut syn_tx, mut synack_tx, mut synack_rx, mut ack_tx, mut ack_rx) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut other_rx = 0u64;
    let mut gen_drop = 0u64;
    let mut w = [0u64; 3];
    let t0 = dpdk::rdtsc();
    let t_win = t0 + (g.warmup * hz as f64) as u64;
    let t_end = t_win + (g.duration * hz as f64) as u64;
    let mut in_window = false;
    let mut win_tsc = 0;
    let mut cpu0 = 0u64;
    let mut b: [Option<Mbuf>; BURST] = Default::default();
    let mut out: [Option<Mbuf>; BURST] = Default::default();
    let mut pending: [Option<Mbuf>; BURST] = Default::default();
    let mut npend = 0usize;
    let src0 = u32::from(base.src_ip);
    loop {
        let now = dpdk::rdtsc();
        if !in_window && now >= t_win {
            in_window = true;
            win_tsc = now;
            w = [syn_tx, synack_rx, ack_rx];
            cpu0 = thread_cpu_ns();
            eprintln!("evs-pktgen: window start");
        }
        if now >= t_end || STOP.load(Ordering::Relaxed) {
            break;
        }
        // New SYNs on A.
        let want = if rate == 0 {
            BURST
        } else {
            let due = ((now - t0) as u128 * rate as u128 / hz as u128) as u64;
            due.saturating_sub(syn_tx + npend as u64).min(BURST as u64) as usize
        };
        let n = want.min(BURST - npend);
        if n > 0 && pool.alloc_bulk(&mut pending[npend..npend + n]) {
            for m in pending[npend..npend + n].iter_mut().flatten() {
                let d = m.set_len(syn.len()).expect("frames fit in an mbuf");
                d.copy_from_slice(&syn);
                // Unique 4-tuple per connection: 64512 source ports per source IP.
                let sport = 1024 + (conn % 64512) as u16;
                let sip = src0.wrapping_add((conn / 64512) as u32);
                d[ip + 12..ip + 16].copy_from_slice(&sip.to_be_bytes());
                d[l4..l4 + 2].copy_from_slice(&sport.to_be_bytes());
                d[l4 + 4..l4 + 8]
                    .copy_from_slice(&((conn as u32).wrapping_mul(2654435761)).to_be_bytes());
                packet::ipv4_csum(d, ip);
                packet::tcp_csum(d, ip, l4, lay.payload);
                conn += 1;
            }
            npend += n;
        }
        if npend > 0 {
            let sent = qs[pa].tx.tx_burst(&mut pending[..npend]);
            syn_tx += sent as u64;
            if sent > 0 && sent < npend {
                pending[..npend].rotate_left(sent);
            }
            npend -= sent;
        }
        // B: answer SYNs with SYN-ACK, count ACKs.
        let n = qs[pb].rx.rx_burst(&mut b);
        let mut k = 0;
        for slot in &mut b[..n] {
            let Some(mut m) = slot.take() else { continue };
            let Some(d) = m.data_mut() else {
                other_rx += 1;
                continue;
            };
            match packet::tcp_fields(d) {
                Some((f, seq, _)) if f & packet::TCP_SYN != 0 && f & packet::TCP_ACK == 0 => {
                    let isn = seq.rotate_left(13) ^ 0x5eed_5eed;
                    packet::tcp_answer(
                        d,
                        packet::TCP_SYN | packet::TCP_ACK,
                        isn,
                        seq.wrapping_add(1),
                    );
                    out[k] = Some(m);
                    k += 1;
                }
                Some((f, _, _)) if f & packet::TCP_ACK != 0 && f & packet::TCP_SYN == 0 => {
                    ack_rx += 1;
                }
                _ => {
                    other_rx += 1;
                }
            }
        }
        if k > 0 {
            let s = qs[pb].tx.tx_burst(&mut out[..k]);
            synack_tx += s as u64;
            gen_drop += (k - s) as u64;
            Mbuf::free_bulk(&mut out[s..k]);
        }
        // A: answer SYN-ACKs with ACK.
        let n = qs[pa].rx.rx_burst(&mut b);
        let mut k = 0;
        for slot in &mut b[..n] {
            let Some(mut m) = slot.take() else { continue };
            let Some(d) = m.data_mut() else {
                other_rx += 1;
                continue;
            };
            match packet::tcp_fields(d) {
                Some((f, seq, ack)) if f == packet::TCP_SYN | packet::TCP_ACK => {
                    synack_rx += 1;
                    packet::tcp_answer(d, packet::TCP_ACK, ack, seq.wrapping_add(1));
                    out[k] = Some(m);
                    k += 1;
                }
                _ => {
                    other_rx += 1;
                }
            }
        }
        if k > 0 {
            let s = qs[pa].tx.tx_burst(&mut out[..k]);
            ack_tx += s as u64;
            gen_drop += (k - s) as u64;
            Mbuf::free_bulk(&mut out[s..k]);
        }
    }
    let secs = if in_window {
        (dpdk::rdtsc() - win_tsc) as f64 / hz as f64
    } else {
        0.0
    };
    let cpu_share = (thread_cpu_ns() - cpu0) as f64 / 1e9 / secs.max(1e-9);
    eprintln!("evs-pktgen: window end");
    let wv = [syn_tx - w[0], synack_rx - w[1], ack_rx - w[2]];
    Mbuf::free_bulk(&mut pending[..npend]);
    let s = secs.max(1e-9);
    Ok(json!({
        "mode": "handshake", "window_s": secs, "offered_syn_pps": rate,
        "syn_pps": wv[0] as f64 / s,
        "synack_rx_pps": wv[1] as f64 / s,
        "cps": wv[2] as f64 / s,
        "syn_tx": syn_tx, "synack_tx": synack_tx, "synack_rx": synack_rx,
        "ack_tx": ack_tx, "ack_rx": ack_rx, "other_rx": other_rx, "gen_drop": gen_drop,
        "completion_pct": if syn_tx > 0 { ack_rx as f64 * 100.0 / syn_tx as f64 } else { 0.0 },
        "tsc_hz": hz, "cpu_share": cpu_share,
        // The throughput fields, for uniform reports: packets the switch delivered.
        "rx_mpps": (wv[1] + wv[2]) as f64 / s / 1e6,
    }))
}

fn print_text(v: &serde_json::Value) {
    if v["mode"] == "handshake" {
        println!(
            "handshake: {:.0} SYN/s offered, {:.0} SYN-ACK/s back at A, {:.0} connections/s completed \
             (ACK at B); totals syn {} synack {} ack {} ({:.1}% completed)",
            v["syn_pps"].as_f64().unwrap_or(0.0),
            v["synack_rx_pps"].as_f64().unwrap_or(0.0),
            v["cps"].as_f64().unwrap_or(0.0),
            v["syn_tx"], v["synack_rx"], v["ack_rx"],
            v["completion_pct"].as_f64().unwrap_or(0.0)
        );
        return;
    }
    println!(
        "frame {} flows {} bidir {}: tx {:.3} Mpps, rx {:.3} Mpps, loss {} ({:.3}%) over {:.2} s",
        v["frame"],
        v["flows"],
        v["bidir"],
        v["tx_mpps"].as_f64().unwrap_or(0.0),
        v["rx_mpps"].as_f64().unwrap_or(0.0),
        v["loss_packets"],
        v["loss_pct"].as_f64().unwrap_or(0.0),
        v["window_s"].as_f64().unwrap_or(0.0)
    );
    for d in ["a_to_b", "b_to_a"] {
        if !v[d].is_null() {
            println!(
                "  {d}: tx {:.3} Mpps rx {:.3} Mpps ({:.2} Gbit/s) loss {}",
                v[d]["tx_pps"].as_f64().unwrap_or(0.0) / 1e6,
                v[d]["rx_pps"].as_f64().unwrap_or(0.0) / 1e6,
                v[d]["rx_gbps"].as_f64().unwrap_or(0.0),
                v[d]["loss_packets"]
            );
        }
    }
    let l = &v["latency"];
    if !l.is_null() {
        println!(
            "  latency ({} samples): min {} ns, avg {} ns, p99 {} ns, max {} ns",
            l["samples"], l["min_ns"], l["avg_ns"], l["p99_ns"], l["max_ns"]
        );
    }
}

fn pin(cpu: usize) {
    let _ = dpdk::set_affinity(&[cpu]);
}

/// Core-to-core round trip: two threads bounce a counter through one cache line.
fn pingpong(cpus: &str, iters: u64, json_out: bool) -> Result<(), String> {
    let c: Vec<usize> = cpus
        .split(',')
        .map(|x| x.trim().parse().map_err(|_| format!("bad cpu {x:?}")))
        .collect::<Result<_, _>>()?;
    if c.len() != 2 {
        return Err("--cpus needs two CPUs".into());
    }
    #[repr(align(64))]
    struct Line(AtomicU64);
    static LINE: Line = Line(AtomicU64::new(0));
    let other = c[1];
    let h = std::thread::spawn(move || {
        pin(other);
        let mut expect = 1;
        while expect < 2 * iters {
            while LINE.0.load(Ordering::Acquire) != expect {
                std::hint::spin_loop();
            }
            LINE.0.store(expect + 1, Ordering::Release);
            expect += 2;
        }
    });
    pin(c[0]);
    LINE.0.store(0, Ordering::SeqCst);
    let t = Instant::now();
    let mut v = 0;
    // The first iterations warm up; the whole run is short (tens of ms).
    while v < 2 * iters {
        LINE.0.store(v + 1, Ordering::Release);
        while LINE.0.load(Ordering::Acquire) != v + 2 {
            std::hint::spin_loop();
        }
        v += 2;
    }
    let ns = t.elapsed().as_nanos() as f64 / iters as f64;
    h.join().map_err(|_| "pingpong thread panicked")?;
    if json_out {
        println!("{}", json!({"cpus": c, "round_trip_ns": ns}));
    } else {
        println!("core {} <-> core {}: {:.0} ns round trip", c[0], c[1], ns);
    }
    Ok(())
}
