//! The VLAN edits of [`evsd::port::Packet`] on real mbufs (no hugepages, no devices): push, pop,
//! rewrite, on shared buffers and deep copies. One test function because the EAL can start once
//! per process.

use evs_dpdk::{Eal, Mempool};
use evsd::port::{Packet, VlanError};

fn frame(tagged: Option<u16>) -> Vec<u8> {
    let mut f = vec![];
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 2]); // dst
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 1]); // src
    if let Some(tci) = tagged {
        f.extend_from_slice(&[0x81, 0x00]);
        f.extend_from_slice(&tci.to_be_bytes());
    }
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend((0..46).map(|i| i as u8));
    f
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

#[test]
fn mbuf_vlan_and_sharing() {
    if !is_root() {
        eprintln!("*** SKIPPING mbuf_vlan_and_sharing: needs root for the DPDK EAL ***");
        return;
    }
    let prefix = format!("evsd-mbuf-test-{}", std::process::id());
    let args: Vec<String> = [
        "-l",
        "0",
        "--no-huge",
        "-m",
        "64",
        "--no-pci",
        "--no-telemetry",
        "--log-level=lib.eal:error",
        "--file-prefix",
        &prefix,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let eal = Eal::init(&args).expect("EAL init");
    let pool = Mempool::create("test_pool", 1023, 0).unwrap();
    let free0 = pool.available();

    let plain = frame(None);
    let mut m = pool.alloc_with(&plain).unwrap();
    assert_eq!(Packet::data(&m), &plain[..]);
    m.vlan_push(0x2064).unwrap();
    assert_eq!(m.data(), &frame(Some(0x2064))[..]);
    assert_eq!(m.pkt_len() as usize, plain.len() + 4);
    m.vlan_set(7).unwrap();
    assert_eq!(
        m.data(),
        &frame(Some(0x2007))[..],
        "rewrite keeps the priority bits"
    );
    m.vlan_pop().unwrap();
    assert_eq!(m.data(), &plain[..]);
    assert_eq!(m.vlan_pop(), Err(VlanError::NotTagged));
    m.vlan_set(5).unwrap();
    assert_eq!(
        m.data(),
        &frame(Some(5))[..],
        "set on an untagged frame pushes"
    );

    // Shared buffers are read-only; deep copies are private.
    let s = Packet::share(&m);
    assert_eq!(m.vlan_pop(), Err(VlanError::Shared));
    let mut c = Packet::deep_copy(&s).unwrap();
    c.vlan_pop().unwrap();
    assert_eq!(c.data(), &plain[..]);
    assert_eq!(s.data(), &frame(Some(5))[..]);
    drop(s);
    m.vlan_pop().unwrap();
    drop((m, c));
    assert_eq!(pool.available(), free0, "every mbuf went back to the pool");
    drop(pool);
    let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/{prefix}"));
    eal.cleanup().unwrap();
}
