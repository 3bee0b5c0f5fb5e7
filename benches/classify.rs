//! Parse + classify through `Worker::process_burst` (bursts of 32 frames), the raw tuple-space
//! lookup, and the stateful path (a port with a security group: established connections and new
//! connections).
//!
//! Run: `CARGO_TARGET_DIR=/work/tgt-bench cargo bench -p evs-benches --bench classify`
//! (add a filter after `--` to run one group, e.g. `-- classify_emc`).
//!
//! Every figure is packets (criterion "elements"): 32 per iteration for the burst benches.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use evs_benches::*;
use flowtable::classifier::{Action, Match, Rule, Table};
use flowtable::frames::{ACK, SYN};
use flowtable::key::{self, FlowKey};
use flowtable::switch::SwitchConfig;
use flowtable::verdict::DropReason;
use std::sync::Arc;
use std::time::{Duration, Instant};

const RULE_SETS: [usize; 3] = [10, 1_000, 10_000];
const FLOW_COUNTS: [usize; 3] = [1, 1_000, 100_000];

/// A driver on [`ports_model`] with about `rules` rules, with `vm1`'s and `vm0`'s MACs learned;
/// and the real number of rules in all its tables.
fn ports_driver(cfg: SwitchConfig, rules: usize) -> (Driver, usize) {
    let n_ports = ports_for_rules(rules);
    let t0 = Instant::now();
    let mut d = Driver::new(cfg, ports_model(n_ports));
    let built = t0.elapsed();
    let (total, per_table) = table_sizes(&d.sw);
    eprintln!(
        "model: {n_ports} ports → {total} rules (table=rules/masks: {per_table}); built in {built:.2?}"
    );
    let (vm0, vm1) = (d.id("vm0"), d.id("vm1"));
    // learn both MACs (the first frame floods VLAN 100)
    d.burst(vm1, &[udp_frame(1, 0, 0, 9).as_slice()]);
    d.burst(vm0, &[udp_frame(0, 1, 0, 9).as_slice()]);
    d.check_delivered();
    (d, total)
}

/// (a) cache hits (1 and 1k flows) and misses into the tables (100k flows > 8192 EMC entries).
fn classify_emc(c: &mut Criterion) {
    let mut g = c.benchmark_group("classify_emc");
    g.throughput(Throughput::Elements(BURST as u64));
    for &rules in &RULE_SETS {
        let (mut d, rules) = ports_driver(SwitchConfig::default(), rules);
        let vm0 = d.id("vm0");
        for &flows in &FLOW_COUNTS {
            let frames: Vec<Vec<u8>> = (0..flows as u32).map(|i| udp_frame(0, 1, i, 9)).collect();
            d.expect_delivered(vm0, &frames);
            let bs = bursts(&frames);
            let (h0, m0) = (d.w.stats().emc_hits, d.w.stats().emc_misses);
            let mut pos = 0;
            g.bench_function(
                BenchmarkId::new(format!("rules{rules}"), format!("flows{flows}")),
                |b| {
                    b.iter(|| {
                        d.burst(vm0, &bs[pos]);
                        pos += 1;
                        if pos == bs.len() {
                            pos = 0;
                        }
                        black_box(&d.out);
                    })
                },
            );
            d.check_delivered();
            let (h, m) = (d.w.stats().emc_hits - h0, d.w.stats().emc_misses - m0);
            eprintln!(
                "  rules{rules}/flows{flows}: EMC hit rate {:.1}% ({} segment lookups)",
                100.0 * h as f64 / (h + m).max(1) as f64,
                h + m
            );
        }
    }
    g.finish();
}

/// (b) the miss path alone: EMC of 16 entries, 100k flows, so every segment walks the tables.
fn classify_miss(c: &mut Criterion) {
    let mut g = c.benchmark_group("classify_miss");
    g.throughput(Throughput::Elements(BURST as u64));
    let flows = 100_000u32;
    let frames: Vec<Vec<u8>> = (0..flows).map(|i| udp_frame(0, 1, i, 9)).collect();
    let bs = bursts(&frames);
    for &rules in &RULE_SETS {
        let cfg = SwitchConfig {
            emc_entries: 16,
            ..SwitchConfig::default()
        };
        let (mut d, rules) = ports_driver(cfg, rules);
        let vm0 = d.id("vm0");
        let (h0, m0) = (d.w.stats().emc_hits, d.w.stats().emc_misses);
        let mut pos = 0;
        g.bench_function(
            BenchmarkId::new("emc16_flows100k", format!("rules{rules}")),
            |b| {
                b.iter(|| {
                    d.burst(vm0, &bs[pos]);
                    pos += 1;
                    if pos == bs.len() {
                        pos = 0;
                    }
                    black_box(&d.out);
                })
            },
        );
        d.check_delivered();
        let (h, m) = (d.w.stats().emc_hits - h0, d.w.stats().emc_misses - m0);
        eprintln!(
            "  emc16/rules{rules}: EMC hit rate {:.1}%",
            100.0 * h as f64 / (h + m).max(1) as f64
        );
    }
    g.finish();
}

/// xorshift64*: deterministic pseudo-random numbers without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Eight masks typical of the compiled tables (port, port+VLAN, port+MAC, security-group shapes
/// with port prefixes and remote prefixes).
fn masks() -> Vec<FlowKey> {
    let mut v = vec![];
    let mk = |f: &dyn Fn(&mut FlowKey)| {
        let mut m = FlowKey::ZERO;
        f(&mut m);
        m
    };
    v.push(mk(&|m| m.set_in_port(!0)));
    v.push(mk(&|m| {
        m.set_in_port(!0);
        m.set_vlan_tci(0x1fff)
    }));
    v.push(mk(&|m| {
        m.set_in_port(!0);
        m.set_eth_src(model::Mac::BROADCAST);
        m.set_eth_type(!0)
    }));
    v.push(mk(&|m| {
        m.set_out_port(!0);
        m.set_ct_state(0x03);
        m.set_eth_type(!0);
        m.set_ip_proto(!0);
        m.set_tp_dst(!0)
    }));
    v.push(mk(&|m| {
        m.set_out_port(!0);
        m.set_ct_state(0x03);
        m.set_eth_type(!0);
        m.set_ip_proto(!0);
        m.set_tp_dst(0xfffe)
    }));
    v.push(mk(&|m| {
        m.set_out_port(!0);
        m.set_ct_state(0x03);
        m.set_eth_type(!0);
        m.set_ip_proto(!0);
        m.set_tp_dst(!0);
        m.set_ip_src(0xffff_ff00)
    }));
    v.push(mk(&|m| {
        m.set_out_port(!0);
        m.set_ct_state(0x03);
        m.set_eth_type(!0);
        m.set_ip_proto(!0);
        m.set_tp_dst(!0);
        m.set_ip_src(0xffff_0000)
    }));
    v.push(mk(&|m| {
        m.set_in_port(!0);
        m.set_eth_type(!0);
        m.set_ip_dst(0xffff_ffff)
    }));
    v
}

/// A random key whose fields come from small ranges, so masked values collide with rules often.
fn random_key(r: &mut Rng) -> FlowKey {
    let mut k = FlowKey::ZERO;
    k.set_in_port((r.next() % 64) as u32);
    k.set_out_port((r.next() % 64) as u32);
    k.set_vlan_tci(0x1000 | (r.next() % 16) as u16);
    k.set_ct_state(0x03);
    k.set_eth_src(model::Mac::from_u64(0x0200_0000_0000 | (r.next() % 64)));
    k.set_eth_type(key::ETH_TYPE_IPV4);
    k.set_ip_proto(if r.next().is_multiple_of(2) { 6 } else { 17 });
    k.set_tp_dst((r.next() % 2048) as u16);
    k.set_ip_src(0x0a00_0000 | (r.next() % 4096) as u128);
    k.set_ip_dst(0x0a00_0000 | (r.next() % 4096) as u128);
    k
}

/// (b) raw `Table::lookup` on random wildcard rules over 8 masks: half the probes are built from a
/// rule's value (a hit), half are random (mostly a miss of every subtable).
fn table_lookup(c: &mut Criterion) {
    const PROBES: usize = 1024;
    let mut g = c.benchmark_group("table_lookup");
    g.throughput(Throughput::Elements(PROBES as u64));
    let ms = masks();
    for &n in &RULE_SETS {
        let mut r = Rng(0x9e37_79b9_7f4a_7c15 ^ n as u64);
        let mut t = Table::new();
        let actions: Arc<[Action]> = Arc::from(vec![Action::Drop(DropReason::Policy)]);
        let mut values = vec![];
        for id in 0..n as u64 {
            let mask = ms[(r.next() % ms.len() as u64) as usize];
            let v = random_key(&mut r);
            values.push(v);
            t.insert(Rule {
                id,
                priority: (r.next() % 100) as u32,
                m: Match::new(v, mask),
                actions: actions.clone(),
                note: "bench".into(),
            });
        }
        let probes: Vec<FlowKey> = (0..PROBES)
            .map(|i| {
                if i % 2 == 0 {
                    values[(r.next() % n as u64) as usize]
                } else {
                    random_key(&mut r)
                }
            })
            .collect();
        let hits = probes.iter().filter(|k| t.lookup(k).is_some()).count();
        for k in &probes[..64] {
            assert_eq!(t.lookup(k).map(|r| r.id), t.lookup_linear(k).map(|r| r.id));
        }
        eprintln!(
            "table of {} rules in {} subtables; {hits}/{PROBES} probes match a rule",
            t.len(),
            t.subtable_count()
        );
        g.bench_function(BenchmarkId::new("lookup", format!("rules{n}")), |b| {
            b.iter(|| {
                let mut found = 0u64;
                for k in &probes {
                    if let Some(r) = t.lookup(black_box(k)) {
                        found += r.id;
                    }
                }
                black_box(found)
            })
        });
    }
    g.finish();
}

/// Through the whole pipeline with a stateful security group on the receiving port (`vm1`): one
/// conntrack lookup per packet in each direction (the client port has no security group).
fn stateful(c: &mut Criterion) {
    let mut g = c.benchmark_group("stateful");
    g.throughput(Throughput::Elements(BURST as u64));

    // Established: 1k TCP connections after a 3-way handshake; bursts alternate client → server
    // (ACK) and server → client (ACK).
    {
        let mut d = Driver::new(SwitchConfig::default(), sg_model(0, 0));
        let (total, per_table) = table_sizes(&d.sw);
        eprintln!("stateful model: {total} rules ({per_table})");
        let (vm0, vm1) = (d.id("vm0"), d.id("vm1"));
        let conns = 1000u32;
        let syn: Vec<_> = (0..conns).map(|i| tcp_frame(0, 1, i, false, SYN)).collect();
        let synack: Vec<_> = (0..conns)
            .map(|i| tcp_frame(0, 1, i, true, SYN | ACK))
            .collect();
        let ack: Vec<_> = (0..conns).map(|i| tcp_frame(0, 1, i, false, ACK)).collect();
        let rack: Vec<_> = (0..conns).map(|i| tcp_frame(0, 1, i, true, ACK)).collect();
        d.burst(vm1, &[udp_frame(1, 0, 0, 53).as_slice()]); // learn vm1's MAC
        d.expect_delivered(vm0, &syn);
        d.expect_delivered(vm1, &synack);
        d.expect_delivered(vm0, &ack);
        d.expect_delivered(vm1, &rack);
        eprintln!("  {} tracked connections", d.sw.shared().ct.len());
        let (fw, bw) = (bursts(&ack), bursts(&rack));
        let (h0, m0, p0) = (
            d.w.stats().emc_hits,
            d.w.stats().emc_misses,
            d.w.stats().packets,
        );
        let mut pos = 0;
        g.bench_function(BenchmarkId::new("established", "conns1k"), |b| {
            b.iter(|| {
                let i = pos >> 1;
                if pos & 1 == 0 {
                    d.burst(vm0, &fw[i]);
                } else {
                    d.burst(vm1, &bw[i]);
                }
                pos += 1;
                if pos == 2 * fw.len() {
                    pos = 0;
                }
                black_box(&d.out);
            })
        });
        d.check_delivered();
        let (h, m) = (d.w.stats().emc_hits - h0, d.w.stats().emc_misses - m0);
        eprintln!(
            "  established: EMC hit rate {:.1}% ({:.2} segment lookups per packet)",
            100.0 * h as f64 / (h + m).max(1) as f64,
            (h + m) as f64 / ((d.w.stats().packets - p0) as f64).max(1.0)
        );
    }

    // New connections: fresh TCP SYNs (a pool of 64k distinct ones; when it is used up, the
    // connection table is cleared, untimed, and the pool starts again).
    {
        let mut d = Driver::new(SwitchConfig::default(), sg_model(0, 0));
        let (vm0, vm1) = (d.id("vm0"), d.id("vm1"));
        d.burst(vm1, &[udp_frame(1, 0, 0, 53).as_slice()]); // learn vm1's MAC
        let pool: Vec<Vec<u8>> = (0..65536u32)
            .map(|i| tcp_frame(0, 1, i, false, SYN))
            .collect();
        let bs = bursts(&pool);
        let mut pos = 0;
        g.bench_function(BenchmarkId::new("new_tcp_syn", "fresh"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    if pos == 0 {
                        d.sw.shared().ct.clear();
                    }
                    let t0 = Instant::now();
                    d.burst(vm0, &bs[pos]);
                    total += t0.elapsed();
                    black_box(&d.out);
                    pos += 1;
                    if pos == bs.len() {
                        pos = 0;
                    }
                }
                total
            })
        });
        d.check_delivered();
        eprintln!(
            "  {} tracked connections at the end",
            d.sw.shared().ct.len()
        );
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    targets = classify_emc, classify_miss, table_lookup, stateful
}
criterion_main!(benches);
