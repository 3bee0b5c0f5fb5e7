//! `evs-sink`: a DPDK receiver that drains its port no faster than a set rate, playing a
//! physical network that is slower than what the switch offers it (a congested uplink).
//!
//!     evs-sink --vdev virtio_user0,path=/tmp/up.sock,queues=1 --rate-pps 50000 --file-prefix s1
//!
//! Every 100 ms it prints one JSON line with what it has received so far, in total and by outer
//! VLAN id (0: untagged): `{"rx":1234,"vlans":{"100":1000,"200":234}}`. It runs until killed.

use evs_dpdk::{self as dpdk, Eal, EthPort, Mbuf, Mempool};
use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

struct Args {
    vdev: String,
    rate_pps: u64,
    file_prefix: String,
}

fn parse_args() -> Result<Args, String> {
    let mut vdev = None;
    let mut rate = None;
    let mut prefix = None;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut val = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--vdev" => vdev = Some(val("--vdev")?),
            "--rate-pps" => {
                let v = val("--rate-pps")?;
                rate = Some(
                    v.parse::<u64>()
                        .ok()
                        .filter(|&r| r > 0)
                        .ok_or(format!("--rate-pps: {v:?} is not a positive integer"))?,
                );
            }
            "--file-prefix" => prefix = Some(val("--file-prefix")?),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Args {
        vdev: vdev.ok_or("--vdev is required")?,
        rate_pps: rate.ok_or("--rate-pps is required")?,
        file_prefix: prefix.unwrap_or_else(|| format!("evs-sink-{}", std::process::id())),
    })
}

/// The outer VLAN id, 0 when untagged.
fn outer_vid(frame: &[u8]) -> u16 {
    flowtable::wire::vlan::outer_tag(frame).map_or(0, |t| t.vid())
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("evs-sink: {e}");
            std::process::exit(2);
        }
    };
    let eal_args: Vec<String> = [
        "-l",
        "0",
        "--no-huge",
        "-m",
        "128",
        "--no-pci",
        "--log-level=lib.eal:notice",
        "--file-prefix",
        &args.file_prefix,
        "--vdev",
        &args.vdev,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let run = || -> Result<(), dpdk::DpdkError> {
        let _eal = Eal::init(&eal_args)?;
        let pool = Mempool::create("sink", 4095, 128)?;
        // The only ethdev: the --vdev, named by its devargs up to the first comma.
        let mut port = EthPort::by_name(args.vdev.split(',').next().unwrap_or(""))?;
        let mut queues = port.setup_and_start(1, 1, &pool)?;
        let rxq = &mut queues.rx[0];
        let mut burst: [Option<Mbuf>; dpdk::MAX_BURST] = Default::default();
        let mut vlans: BTreeMap<u16, u64> = BTreeMap::new();
        let mut rx = 0u64;
        // A token bucket refilled every millisecond, at most 2 ms' worth (and one burst) deep,
        // so that the drain rate is steady rather than bursty.
        let per_ms = args.rate_pps as f64 / 1000.0;
        let depth = (2.0 * per_ms).max(dpdk::MAX_BURST as f64);
        let mut tokens = 0.0f64;
        let mut last = Instant::now();
        let mut last_print = Instant::now();
        loop {
            std::thread::sleep(Duration::from_millis(1));
            let now = Instant::now();
            tokens = (tokens + per_ms * (now - last).as_secs_f64() * 1000.0).min(depth);
            last = now;
            while tokens >= 1.0 {
                let want = (tokens as usize).min(dpdk::MAX_BURST);
                let n = rxq.rx_burst(&mut burst[..want]);
                if n == 0 {
                    break;
                }
                for m in burst[..n].iter().flatten() {
                    *vlans.entry(outer_vid(m.data())).or_default() += 1;
                }
                Mbuf::free_bulk(&mut burst[..n]);
                rx += n as u64;
                tokens -= n as f64;
            }
            if last_print.elapsed() >= Duration::from_millis(100) {
                last_print = Instant::now();
                let v: Vec<String> = vlans.iter().map(|(k, n)| format!("\"{k}\":{n}")).collect();
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{{\"rx\":{rx},\"vlans\":{{{}}}}}", v.join(","));
                let _ = out.flush();
            }
        }
    };
    if let Err(e) = run() {
        eprintln!("evs-sink: {e}");
        std::process::exit(1);
    }
}
