//! A steady, repeatable figure for the flowtable's per-packet cost: instructions per packet under
//! callgrind (`benches/callgrind.sh`), which unlike wall time does not depend on the machine's load.
//!
//! Runs `BURSTS` bursts of 32 frames between two learned guests on the same VLAN; only `measured`
//! is counted. `hotpath N` cycles through N flows (distinct UDP source ports; default 1: cache hits
//! only; 10000: more segments than the exact-match cache holds).

use evs_benches::{ports_model, udp_frame, Driver, BURST};
use flowtable::datapath::SwitchConfig;
use std::hint::black_box;

const BURSTS: usize = 20_000;

#[inline(never)]
fn measured(d: &mut Driver, port: u32, bursts: &[Vec<&[u8]>]) {
    for i in 0..BURSTS {
        d.burst(port, &bursts[i % bursts.len()]);
        black_box(&d.out);
    }
}

fn main() {
    let flows: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1);
    let mut d = Driver::new(SwitchConfig::default(), ports_model(2));
    let (vm0, vm1) = (d.id("vm0"), d.id("vm1"));
    d.burst(vm1, &[udp_frame(1, 0, 0, 9).as_slice()]);
    d.burst(vm0, &[udp_frame(0, 1, 0, 9).as_slice()]);
    let n = flows.max(BURST).div_ceil(BURST) * BURST;
    let frames: Vec<Vec<u8>> = (0..n)
        .map(|i| udp_frame(0, 1, (i % flows) as u32, 9))
        .collect();
    let bursts: Vec<Vec<&[u8]>> = frames
        .chunks(BURST)
        .map(|c| c.iter().map(|f| f.as_slice()).collect())
        .collect();
    for b in &bursts {
        d.burst(vm0, b); // warm the caches
    }
    measured(&mut d, vm0, &bursts);
    assert!(
        d.out.packets.iter().all(|p| p.emit_len == 1),
        "every packet delivered once"
    );
    println!("packets={}", BURSTS * BURST);
}
