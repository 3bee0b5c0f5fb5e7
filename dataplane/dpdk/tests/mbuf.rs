//! Mbufs and port queue tokens against a real EAL (no hugepages; a `net_null` vdev): raw front
//! edits, sharing and copies, bulk alloc/free, and the token lifecycle of a port. One test
//! function because the EAL can start once per process.

use evs_dpdk::{Eal, EthPort, Mbuf, MbufError, Mempool, Queues, MAX_BURST};

fn frame() -> Vec<u8> {
    let mut f = vec![];
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 2]); // dst
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 1]); // src
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
fn mbufs_and_queue_tokens() {
    if !is_root() {
        eprintln!("*** SKIPPING mbufs_and_queue_tokens: needs root for the DPDK EAL ***");
        return;
    }
    let prefix = format!("evs-mbuf-test-{}", std::process::id());
    let args: Vec<String> = [
        "-l",
        "0",
        "--no-huge",
        "-m",
        "64",
        "--no-pci",
        "--no-telemetry",
        "--log-level=lib.eal:error",
        "--vdev",
        "net_null0",
        "--vdev",
        "net_null1",
        "--file-prefix",
        &prefix,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let eal = Eal::init(&args).expect("EAL init");
    assert!(Eal::init(&args).is_err(), "second init is refused");
    let pool = Mempool::create("test_pool", 1023, 0).unwrap();
    let free0 = pool.available();

    // Raw front edits.
    let plain = frame();
    let mut m = pool.alloc_with(&plain).unwrap();
    assert_eq!(m.data(), &plain[..]);
    let d = m.prepend(4).unwrap();
    assert_eq!(d.len(), plain.len() + 4);
    assert_eq!(&d[4..], &plain[..]);
    assert_eq!(m.pkt_len() as usize, plain.len() + 4);
    m.adj(4).unwrap();
    assert_eq!(m.data(), &plain[..]);
    assert_eq!(m.adj(plain.len() as u16), Err(MbufError::TooShort));
    assert_eq!(m.prepend(u16::MAX).err(), Some(MbufError::NoHeadroom));

    // Shared buffers are read-only; deep copies are private.
    let s = m.share();
    assert!(!m.is_unique());
    assert!(m.data_mut().is_none());
    assert_eq!(m.prepend(4).err(), Some(MbufError::Shared));
    assert_eq!(m.adj(4), Err(MbufError::Shared));
    let mut c = s.deep_copy().unwrap();
    c.data_mut().unwrap()[0] = 0xff;
    assert_eq!(s.data(), &plain[..]);
    drop(s);
    assert!(m.is_unique());

    // Fresh frames in bulk, freed in bulk (empty slots skipped).
    let mut slots: [Option<Mbuf>; 8] = Default::default();
    assert!(pool.alloc_bulk(&mut slots));
    for (i, s) in slots.iter_mut().enumerate() {
        let d = s.as_mut().unwrap().set_len(60 + i).unwrap();
        d.fill(i as u8);
    }
    assert_eq!(slots[3].as_ref().unwrap().data(), &[3u8; 63][..]);
    assert!(slots[0].as_mut().unwrap().set_len(1 << 20).is_none());
    let taken = slots[2].take();
    Mbuf::free_bulk(&mut slots);
    assert!(slots.iter().all(Option::is_none));
    drop((m, c, taken));
    assert_eq!(pool.available(), free0, "every mbuf went back to the pool");

    // Port handles and queue tokens.
    let mut port = EthPort::by_name("net_null0").unwrap();
    assert_eq!(
        EthPort::by_name("net_null0").unwrap_err().code,
        libc::EBUSY,
        "one handle per port"
    );
    assert_eq!(
        EthPort::by_name("net_null9").unwrap_err().code,
        libc::ENODEV
    );
    let Queues { mut rx, tx } = port.setup_and_start_polled(1, 2, &pool).unwrap();
    assert!(
        port.setup_and_start_polled(1, 2, &pool).is_err(),
        "tokens exist once"
    );
    assert_eq!((rx.len(), tx.len()), (1, 2));
    let mut burst: [Option<Mbuf>; MAX_BURST] = Default::default();
    let n = rx[0].rx_burst(&mut burst);
    assert!(n > 0, "net_null always has packets");
    let mut tx = tx.into_iter();
    let mut q0 = tx.next().unwrap();
    let shared = tx.next().unwrap().share();
    let other = shared.clone();
    let sent = q0.tx_burst(&mut burst[..n / 2]);
    assert_eq!(sent, n / 2, "net_null takes everything");
    assert!(burst[..sent].iter().all(Option::is_none));
    assert_eq!(other.tx_burst(&mut burst[n / 2..n]), n - n / 2);
    let shared = shared.into_exclusive().expect_err("a clone is still out");
    drop(other);
    let q1 = shared.into_exclusive().expect("last clone");
    assert_eq!(q1.queue(), 1);
    // Not all tokens back: the port stays up.
    let err = port
        .stop_and_close(Queues {
            rx: vec![],
            tx: vec![q0, q1],
        })
        .unwrap_err();
    assert_eq!(err.code, libc::EBUSY);
    rx.clear();

    // All tokens back: stopped and closed, and the handle's claim ends with the port.
    let mut port = EthPort::by_name("net_null1").unwrap();
    let q = port.setup_and_start(2, 1, &pool).unwrap();
    assert_eq!(q.rx.iter().map(|t| t.queue()).collect::<Vec<_>>(), [0, 1]);
    port.stop_and_close(q).unwrap();
    assert_eq!(
        EthPort::by_name("net_null1").unwrap_err().code,
        libc::ENODEV
    );

    assert_eq!(pool.available(), free0, "sent mbufs went back to the pool");
    let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/{prefix}"));
    drop(pool);
    assert_eq!(
        eal.cleanup().unwrap_err().code,
        libc::EBUSY,
        "net_null0 was never stopped"
    );
}
