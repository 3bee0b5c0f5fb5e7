//! Rule updates under load: a reader thread classifies a fixed burst in a loop while the main thread
//! replaces a security group of 10 000 rules by a different one of 10 000 (`Switch::apply`), back
//! and forth. Prints how long each apply takes and the reader's burst times before, during and
//! after the applies (the reader must never wait for the writer: tables are published through
//! `ArcSwap`).
//!
//! Run: `CARGO_TARGET_DIR=/work/tgt-bench cargo bench -p evs-benches --bench updates`
//! (a plain `main`, not criterion: the figures of interest are the tail latencies).

use evs_benches::*;
use flowtable::frames;
use flowtable::switch::SwitchConfig;
use flowtable::verdict::BurstResult;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const FILLER: usize = 10_000;
const APPLIES: usize = 6;
const PHASES: [&str; 3] = [
    "before (writer idle)",
    "during apply",
    "between applies (idle)",
];

#[derive(Default)]
struct PhaseLog {
    /// Burst durations in ns.
    times: Vec<u32>,
    drops: u64,
}

fn pct(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn main() {
    // `cargo bench` passes `--bench`; nothing to parse.
    let t0 = Instant::now();
    let a = sg_model(FILLER, 0);
    let b = sg_model(FILLER, 1);
    let mut d = Driver::new(SwitchConfig::default(), a.clone());
    let build = t0.elapsed();
    let (total, per_table) = table_sizes(&d.sw);
    println!("model A: {total} rules ({per_table}); first apply (from empty) took {build:.2?}");
    let (vm0, vm1) = (d.id("vm0"), d.id("vm1"));

    // The reader's traffic: 32 established UDP flows vm0 → vm1:53 (allowed by both versions).
    d.burst(vm1, &[udp_frame(1, 0, 0, 53).as_slice()]); // learn vm1's MAC
    let fwd: Vec<Vec<u8>> = (0..BURST as u32).map(|i| udp_frame(0, 1, i, 53)).collect();
    d.expect_delivered(vm0, &fwd);
    // The replies: MACs, addresses and ports swapped.
    let rev: Vec<Vec<u8>> = fwd.iter().map(|f| frames::reversed(f)).collect();
    d.expect_delivered(vm1, &rev);
    println!(
        "reader: {} flows established ({} connections tracked)",
        fwd.len(),
        d.sw.shared().ct.len()
    );

    let sw = d.sw.clone();
    let mut w = sw.worker();
    let phase = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (phase, stop) = (phase.clone(), stop.clone());
        std::thread::spawn(move || {
            let refs: Vec<&[u8]> = fwd.iter().map(|f| f.as_slice()).collect();
            let mut out = BurstResult::with_capacity(BURST);
            let mut logs: Vec<PhaseLog> = (0..3)
                .map(|_| PhaseLog {
                    times: Vec::with_capacity(1 << 24),
                    drops: 0,
                })
                .collect();
            // the bursts that found the cache stale (first after each publish)
            let mut miss_bursts: Vec<u32> = vec![];
            let mut now = 2_000_000_000u64;
            while !stop.load(Ordering::Relaxed) {
                let ph = phase.load(Ordering::Relaxed);
                let misses = w.stats().emc_misses;
                now += 1_000;
                let t = Instant::now();
                w.process_burst(vm0, &refs, now, &mut out);
                let dt = t.elapsed().as_nanos().min(u32::MAX as u128) as u32;
                let l = &mut logs[ph];
                l.times.push(dt);
                l.drops += out.packets.iter().filter(|p| p.drop.is_some()).count() as u64;
                if w.stats().emc_misses != misses {
                    miss_bursts.push(dt);
                }
            }
            (logs, miss_bursts)
        })
    };

    std::thread::sleep(Duration::from_secs(2));
    let mut applies = vec![];
    for i in 0..APPLIES {
        let m = if i % 2 == 0 { b.clone() } else { a.clone() };
        phase.store(1, Ordering::Relaxed);
        let t = Instant::now();
        let r = sw.apply(m).expect("valid model");
        let dt = t.elapsed();
        phase.store(2, Ordering::Relaxed);
        applies.push((dt, r.rules_added, r.rules_removed));
        std::thread::sleep(Duration::from_millis(300));
    }
    stop.store(true, Ordering::Relaxed);
    let (mut logs, mut miss_bursts) = reader.join().unwrap();

    println!();
    println!("| apply | time | rules added | rules removed |");
    println!("|---|---|---|---|");
    for (i, (dt, add, rm)) in applies.iter().enumerate() {
        let dir = if i % 2 == 0 { "A→B" } else { "B→A" };
        println!("| {} {dir} | {dt:.2?} | {add} | {rm} |", i + 1);
    }
    println!();
    println!(
        "reader: one burst of {BURST} established UDP packets through conntrack, per call of process_burst"
    );
    println!("| phase | bursts | p50 | p99 | p99.9 | max | bursts > 10 µs | drops |");
    println!("|---|---|---|---|---|---|---|---|");
    for (name, l) in PHASES.iter().zip(logs.iter_mut()) {
        l.times.sort_unstable();
        let over = l.times.iter().filter(|&&t| t > 10_000).count();
        println!(
            "| {name} | {} | {} ns | {} ns | {} ns | {} ns | {over} | {} |",
            l.times.len(),
            pct(&l.times, 0.5),
            pct(&l.times, 0.99),
            pct(&l.times, 0.999),
            l.times.last().copied().unwrap_or(0),
            l.drops
        );
    }
    miss_bursts.sort_unstable();
    println!(
        "first bursts after a publish (EMC stale, tables walked): {} bursts, max {} ns, median {} ns",
        miss_bursts.len(),
        miss_bursts.last().copied().unwrap_or(0),
        pct(&miss_bursts, 0.5)
    );
}
