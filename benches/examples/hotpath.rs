//! A steady, repeatable figure for the flowtable's per-packet cost: instructions per packet under
//! callgrind (`benches/callgrind.sh`), which unlike wall time does not depend on the machine's load.
//!
//! `hotpath N`: bursts of 32 UDP frames between two learned guests on the same VLAN, cycling
//! through N flows (distinct source ports; default 1: cache hits only; 10000: more segments than
//! the exact-match cache holds). `hotpath N sg`: N established TCP connections to a guest with a
//! stateful security group, bursts alternating client → server and server → client (conntrack on
//! every packet). Only `measured` is counted.

use evs_benches::{bursts, ports_model, sg_model, tcp_frame, udp_frame, Driver};
use flowtable::frames::{ACK, SYN};
use flowtable::switch::SwitchConfig;
use std::hint::black_box;

const BURSTS: usize = 20_000;

#[inline(never)]
fn measured(d: &mut Driver, plan: &[(u32, Vec<&[u8]>)]) {
    for i in 0..BURSTS {
        let (port, b) = &plan[i % plan.len()];
        d.burst(*port, b);
        black_box(&d.out);
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let flows: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1);
    let stateful = args.next().as_deref() == Some("sg");
    let model = if stateful {
        sg_model(0, 0)
    } else {
        ports_model(2)
    };
    let mut d = Driver::new(SwitchConfig::default(), model);
    let (vm0, vm1) = (d.id("vm0"), d.id("vm1"));
    d.burst(vm1, &[udp_frame(1, 0, 0, 53).as_slice()]);
    d.burst(vm0, &[udp_frame(0, 1, 0, 53).as_slice()]);
    let (fw, bw): (Vec<Vec<u8>>, Vec<Vec<u8>>) = if stateful {
        let f = |reply, flags| -> Vec<Vec<u8>> {
            (0..flows)
                .map(|i| tcp_frame(0, 1, i, reply, flags))
                .collect()
        };
        d.expect_delivered(vm0, &f(false, SYN));
        d.expect_delivered(vm1, &f(true, SYN | ACK));
        (f(false, ACK), f(true, ACK))
    } else {
        ((0..flows).map(|i| udp_frame(0, 1, i, 9)).collect(), vec![])
    };
    let mut plan: Vec<(u32, Vec<&[u8]>)> = vec![];
    let fb = bursts(&fw);
    let bb = if bw.is_empty() { vec![] } else { bursts(&bw) };
    for (i, f) in fb.iter().enumerate() {
        plan.push((vm0, f.clone()));
        if let Some(b) = bb.get(i) {
            plan.push((vm1, b.clone()));
        }
    }
    for (port, b) in &plan {
        d.burst(*port, b); // warm the caches
    }
    measured(&mut d, &plan);
    d.check_delivered();
    println!("packets={}", BURSTS * evs_benches::BURST);
}
