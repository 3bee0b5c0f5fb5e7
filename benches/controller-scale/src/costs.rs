//! `--costs`: the controller's per-transaction model work on the benchmark's installation, in
//! memory and single-threaded, so that each step's share is seen without 1,000 agents on the
//! same CPUs: copying the state, validating it, finding the affected hosts of a port group
//! change, cutting their slices, and serializing them.

use crate::topo;
use model::{Cluster, Kind, ObjectId};
use std::path::Path;
use std::time::Instant;

fn time<T>(what: &str, rounds: usize, mut f: impl FnMut() -> T) -> T {
    let start = Instant::now();
    let mut out = None;
    for _ in 0..rounds {
        out = Some(std::hint::black_box(f()));
    }
    let each = start.elapsed().as_secs_f64() * 1e3 / rounds as f64;
    println!("| {what} | {each:.2} ms |");
    out.expect("at least one round")
}

pub fn run(hosts: usize, ports: usize) {
    let mut c = Cluster::default();
    for o in topo::objects(hosts, ports, Path::new("/run/evs/vhost")) {
        c.insert(o);
    }
    println!(
        "model work at {hosts} hosts × {ports} ports ({} objects), per call:\n",
        c.ports.len() + c.hosts.len() + c.uplinks.len() + c.port_groups.len() + 2
    );
    println!("| step | time |\n|---|---|");
    time("copy the state", 20, || c.clone());
    time("validate", 5, || c.validate().expect("valid"));
    let mut after = c.clone();
    after.insert(topo::wide_group(true));
    let changed = [ObjectId::new(
        Kind::PortGroup,
        format!("{}/{}", topo::DVS, topo::WIDE),
    )];
    let affected = time("affected hosts of a pg0 change", 5, || {
        Cluster::affected_hosts(&c, &after, &changed)
    });
    let slices = time("slices of those hosts", 3, || {
        after.host_slices(affected.iter().map(String::as_str))
    });
    time("serialize those slices", 3, || {
        slices
            .values()
            .map(|s| serde_json::to_vec(s).expect("serializable").len())
            .sum::<usize>()
    });
    println!("\n{} hosts affected", affected.len());
}
