//! Connection tracking: lookups of established connections in a table of a million, and commits of
//! new connections.
//!
//! Run: `cargo bench -p evs-benches --bench conntrack`.
//!
//! Times are the benchmark thread's on-CPU time (from `/proc/thread-self/schedstat`, wall time where
//! that is unavailable), so that the figures mean "per core" even on a machine shared with other work.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use flowtable::conntrack::{tcp_flags, ConnTrack, CtConfig};
use flowtable::key::{self, FlowKey};
use flowtable::wire::Layout;
use std::time::{Duration, Instant};

const CONNS: usize = 1 << 20;
/// TCP keys need nothing from the frame: conntrack reads it only for ICMP.
const NO_FRAME: Layout = Layout::new(0, None, None);
/// Packets per measured iteration (amortises the timing loop).
const BATCH: usize = 1024;

/// The TCP segment of connection `i` (distinct for every i < 2^32), in either direction.
fn tcp_key(i: u32, reply: bool, flags: u16) -> FlowKey {
    let mut k = FlowKey::ZERO;
    k.set_eth_type(key::ETH_TYPE_IPV4);
    k.set_ip_proto(key::IP_PROTO_TCP);
    let client = (0x0a00_0000 | (i >> 12)) as u128; // 10.x.y.z
    let server = 0xc0a8_0001_u128 + (i & 0xf) as u128; // 192.168.0.1..16
    let cport = 1024 + (i & 0xfff) as u16;
    let (s, sp, d, dp) = if reply {
        (server, 443, client, cport)
    } else {
        (client, cport, server, 443)
    };
    k.set_ip_src(s);
    k.set_ip_dst(d);
    k.set_tp_src(sp);
    k.set_tp_dst(dp);
    k.set_tcp_flags(flags);
    k
}

fn udp_key(i: u32) -> FlowKey {
    let mut k = FlowKey::ZERO;
    k.set_eth_type(key::ETH_TYPE_IPV4);
    k.set_ip_proto(key::IP_PROTO_UDP);
    k.set_ip_src((0x0a00_0000 | (i >> 12)) as u128);
    k.set_ip_dst(0xc0a8_0001);
    k.set_tp_src(1024 + (i & 0xfff) as u16);
    k.set_tp_dst(53);
    k
}

/// A fixed pseudo-random permutation of 0..n (so that consecutive lookups hit unrelated lines).
fn shuffled(n: usize) -> Vec<u32> {
    let mut v: Vec<u32> = (0..n as u32).collect();
    let mut x = 0x2545_f491_4f6c_dd1d_u64;
    for i in (1..n).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.swap(i, (x % (i as u64 + 1)) as usize);
    }
    v
}

/// The calling thread's on-CPU time (ns resolution, updated at least every scheduler tick).
fn cpu_time() -> Option<Duration> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    Some(Duration::from_nanos(
        s.split_whitespace().next()?.parse().ok()?,
    ))
}

/// Runs `f` and returns the on-CPU time it took (wall time if that is unknown).
fn timed(mut f: impl FnMut()) -> Duration {
    let (c0, t0) = (cpu_time(), Instant::now());
    f();
    match (c0, cpu_time()) {
        (Some(a), Some(b)) => b.saturating_sub(a),
        _ => t0.elapsed(),
    }
}

fn established_lookups(c: &mut Criterion) {
    let ct = ConnTrack::new(CtConfig {
        max_entries: CONNS,
        ..CtConfig::default()
    });
    let dt = timed(|| {
        for i in 0..CONNS as u32 {
            use tcp_flags::{ACK, SYN};
            ct.process(0, &tcp_key(i, false, SYN), &[], &NO_FRAME, true, 0);
            ct.process(0, &tcp_key(i, true, SYN | ACK), &[], &NO_FRAME, true, 0);
            let r = ct.process(0, &tcp_key(i, false, ACK), &[], &NO_FRAME, true, 0);
            assert!(r.is_established());
        }
    });
    eprintln!(
        "populated {} TCP connections (3-way handshakes) in {:.2?} of CPU: {:.2} M packets/s",
        ct.len(),
        dt,
        3.0 * CONNS as f64 / dt.as_secs_f64() / 1e6
    );
    assert_eq!(ct.len(), CONNS);

    let mut g = c.benchmark_group("conntrack_established_1M");
    g.throughput(Throughput::Elements(BATCH as u64));
    // every connection, in random order: the table (≈100 MB) is far larger than the caches
    let order = shuffled(CONNS);
    let keys: Vec<FlowKey> = order
        .iter()
        .enumerate()
        .map(|(n, &i)| tcp_key(i, n % 2 == 1, tcp_flags::ACK))
        .collect();
    for (name, set) in [("all_1M_random", CONNS), ("hot_4K", 4096)] {
        let mut pos = 0;
        g.bench_function(BenchmarkId::new("process", name), |b| {
            b.iter_custom(|iters| {
                timed(|| {
                    for _ in 0..iters {
                        let mut est = 0;
                        for k in &keys[pos..pos + BATCH] {
                            est +=
                                ct.process(0, k, &[], &NO_FRAME, true, 1).is_established() as u32;
                        }
                        pos = (pos + BATCH) % set;
                        black_box(est);
                    }
                })
            })
        });
        // as a datapath would with a burst of 32: prefetch all, then process each
        let mut pos = 0;
        g.bench_function(BenchmarkId::new("prefetch_burst32", name), |b| {
            b.iter_custom(|iters| {
                timed(|| {
                    for _ in 0..iters {
                        let mut est = 0;
                        for burst in keys[pos..pos + BATCH].chunks(32) {
                            for k in burst {
                                ct.prefetch(0, k);
                            }
                            for k in burst {
                                est += ct.process(0, k, &[], &NO_FRAME, true, 1).is_established()
                                    as u32;
                            }
                        }
                        pos = (pos + BATCH) % set;
                        black_box(est);
                    }
                })
            })
        });
    }
    g.finish();
    drop(ct);

    // a table small enough for the caches and the TLB: the CPU cost of a lookup
    const SMALL: usize = 8192;
    let ct = ConnTrack::new(CtConfig {
        max_entries: SMALL,
        ..CtConfig::default()
    });
    for i in 0..SMALL as u32 {
        use tcp_flags::{ACK, SYN};
        ct.process(0, &tcp_key(i, false, SYN), &[], &NO_FRAME, true, 0);
        ct.process(0, &tcp_key(i, true, SYN | ACK), &[], &NO_FRAME, true, 0);
    }
    let keys: Vec<FlowKey> = shuffled(SMALL)
        .iter()
        .enumerate()
        .map(|(n, &i)| tcp_key(i, n % 2 == 1, tcp_flags::ACK))
        .collect();
    let mut g = c.benchmark_group("conntrack_established_8K");
    g.throughput(Throughput::Elements(BATCH as u64));
    let mut pos = 0;
    g.bench_function("process", |b| {
        b.iter_custom(|iters| {
            timed(|| {
                for _ in 0..iters {
                    let mut est = 0;
                    for k in &keys[pos..pos + BATCH] {
                        est += ct.process(0, k, &[], &NO_FRAME, true, 1).is_established() as u32;
                    }
                    pos = (pos + BATCH) % SMALL;
                    black_box(est);
                }
            })
        })
    });
    g.finish();
}

fn new_connections(c: &mut Criterion) {
    let ct = ConnTrack::new(CtConfig {
        max_entries: CONNS,
        ..CtConfig::default()
    });
    let mut g = c.benchmark_group("conntrack_new");
    g.throughput(Throughput::Elements(1));
    for (name, udp) in [("udp_commit", true), ("tcp_syn_commit", false)] {
        ct.clear();
        let mut next = 0u32;
        g.bench_function(BenchmarkId::new("process", name), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    // the table fills from empty to full and is cleared (untimed) when full
                    if ct.len() >= CONNS {
                        ct.clear();
                        next = 0;
                    }
                    let n = left.min((CONNS - ct.len()) as u64) as u32;
                    total += timed(|| {
                        for i in next..next + n {
                            let k = if udp {
                                udp_key(i)
                            } else {
                                tcp_key(i, false, tcp_flags::SYN)
                            };
                            let r = ct.process(0, &k, &[], &NO_FRAME, true, 0);
                            debug_assert!(r.is_new() && !r.full);
                            black_box(r);
                        }
                    });
                    next += n;
                    left -= n as u64;
                }
                total
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = established_lookups, new_connections
}
criterion_main!(benches);
