//! Prometheus exposition: the text is rendered on the control loop from the same reports as
//! `show ports` / `show threads` (counted from the start, not from the last `stats-reset`, so
//! that counters never go backwards); a tiny HTTP server thread serves it on `GET /metrics`.

use crate::control::{self, Call};
use api::{PortReport, PortState, Request, ThreadReport};
use crossbeam_channel::Sender;
use flowtable::conntrack::CtStats;
use prometheus::core::Collector;
use prometheus::{Encoder, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};
use std::cell::RefCell;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// When the process started, for `process_start_time_seconds`.
pub struct Started {
    unix_secs: f64,
}

impl Started {
    pub fn now() -> Started {
        let unix_secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        Started { unix_secs }
    }
}

/// What one scrape reports.
pub struct Sample<'a> {
    /// Counted since the start (`Since::Start`).
    pub ports: &'a [PortReport],
    pub threads: &'a [ThreadReport],
    /// The connection tracker's counters (each tracked connection has one entry per port zone
    /// it crosses).
    pub ct: CtStats,
    /// The tables' version in force (what `apply` answers).
    pub generation: u64,
    /// The TSC's frequency, to give cycle counters in seconds too.
    pub tsc_hz: u64,
    pub started: &'a Started,
    pub mbufs: Mbufs,
    /// The watchdog's view of each forwarding thread, by thread number.
    pub health: &'a [crate::watchdog::ThreadHealth],
}

/// The packet pool: its size and the mbufs free in it (the rest sit in rings, caches and queues).
#[derive(Debug, Clone, Copy, Default)]
pub struct Mbufs {
    pub total: u32,
    pub available: u32,
}

pub fn render(sample: &Sample) -> String {
    let Sample {
        ports, threads, ct, ..
    } = *sample;
    let ex = Exposition::default();
    let gauge = |name: &str, help: &str| {
        let g = prometheus::Gauge::new(name, help).expect("metric definition");
        ex.add(&g, "gauge");
        g
    };
    let build = IntGaugeVec::new(
        Opts::new(
            "evs_build_info",
            "1, labelled with the evsd and DPDK versions",
        ),
        &["version", "dpdk"],
    )
    .expect("metric definition");
    ex.add(&build, "gauge");
    build
        .with_label_values(&[env!("CARGO_PKG_VERSION"), &evs_dpdk::version()])
        .set(1);
    gauge(
        "process_start_time_seconds",
        "Start time of the evsd process, seconds since the Unix epoch",
    )
    .set(sample.started.unix_secs);
    gauge(
        "evs_model_generation",
        "Version of the tables in force (what `evsd ctl apply` answers); changes on every apply",
    )
    .set(sample.generation as f64);
    let counter = |name: &str, help: &str, labels: &[&str]| {
        let c = IntCounterVec::new(Opts::new(name, help), labels).expect("metric definition");
        ex.add(&c, "counter");
        c
    };
    let rx_p = counter("evs_port_rx_packets_total", "Packets received", &["port"]);
    let rx_b = counter("evs_port_rx_bytes_total", "Bytes received", &["port"]);
    let tx_p = counter(
        "evs_port_tx_packets_total",
        "Packets transmitted",
        &["port"],
    );
    let tx_b = counter("evs_port_tx_bytes_total", "Bytes transmitted", &["port"]);
    let drops = counter(
        "evs_port_drops_total",
        "Packets dropped, by reason",
        &["port", "reason"],
    );
    let egress = counter(
        "evs_port_egress_drops_total",
        "Copies towards the port dropped by its egress policy, by reason",
        &["port", "reason"],
    );
    let up = IntGaugeVec::new(
        Opts::new(
            "evs_port_link_up",
            "1 when the port has a backend whose link is up (a vhost guest is connected)",
        ),
        &["port"],
    )
    .expect("metric definition");
    ex.add(&up, "gauge");
    for p in ports {
        let l = [p.name.as_str()];
        rx_p.with_label_values(&l).inc_by(p.rx_packets);
        rx_b.with_label_values(&l).inc_by(p.rx_bytes);
        tx_p.with_label_values(&l).inc_by(p.tx_packets);
        tx_b.with_label_values(&l).inc_by(p.tx_bytes);
        for (r, n) in &p.drops {
            drops.with_label_values(&[p.name.as_str(), r]).inc_by(*n);
        }
        for (r, n) in &p.egress_drops {
            egress.with_label_values(&[p.name.as_str(), r]).inc_by(*n);
        }
        up.with_label_values(&l)
            .set((p.state == PortState::Up) as i64);
    }
    let busy = counter(
        "evs_thread_busy_cycles_total",
        "TSC cycles of loop iterations that found packets",
        &["thread", "core"],
    );
    let idle = counter(
        "evs_thread_idle_cycles_total",
        "TSC cycles of empty polling iterations",
        &["thread", "core"],
    );
    let seconds = |name: &str, help: &str| {
        let c = prometheus::CounterVec::new(Opts::new(name, help), &["thread", "core"])
            .expect("metric definition");
        ex.add(&c, "counter");
        c
    };
    let busy_s = seconds(
        "evs_thread_busy_seconds_total",
        "Seconds of loop iterations that found packets (busy cycles / TSC frequency)",
    );
    let idle_s = seconds(
        "evs_thread_idle_seconds_total",
        "Seconds of empty polling iterations (idle cycles / TSC frequency)",
    );
    let hz = sample.tsc_hz.max(1) as f64;
    let pk = counter(
        "evs_thread_packets_total",
        "Packets processed by the forwarding thread",
        &["thread", "core"],
    );
    let cache = counter(
        "evs_thread_cache_lookups_total",
        "Segment lookups by result: exact_hit (exact-match cache), megaflow_hit (wildcarded \
         cache), miss (walked the tables)",
        &["thread", "core", "result"],
    );
    let hit_rate = prometheus::GaugeVec::new(
        Opts::new(
            "evs_thread_cache_hit_ratio",
            "Share of segment lookups answered by a cache since start",
        ),
        &["thread", "core"],
    )
    .expect("metric definition");
    ex.add(&hit_rate, "gauge");
    for t in threads {
        let (th, c) = (t.thread.to_string(), t.core.to_string());
        let l = [th.as_str(), c.as_str()];
        busy.with_label_values(&l).inc_by(t.busy_cycles);
        idle.with_label_values(&l).inc_by(t.idle_cycles);
        busy_s
            .with_label_values(&l)
            .inc_by(t.busy_cycles as f64 / hz);
        idle_s
            .with_label_values(&l)
            .inc_by(t.idle_cycles as f64 / hz);
        pk.with_label_values(&l).inc_by(t.packets);
        for (result, n) in [
            ("exact_hit", t.cache_exact_hits),
            ("megaflow_hit", t.cache_megaflow_hits),
            ("miss", t.cache_misses),
        ] {
            cache
                .with_label_values(&[th.as_str(), c.as_str(), result])
                .inc_by(n);
        }
        if let Some(p) = t.cache_hit_pct {
            hit_rate.with_label_values(&l).set(p / 100.0);
        }
    }
    let stalled = IntGaugeVec::new(
        Opts::new(
            "evs_thread_stalled",
            "1 while the watchdog finds the forwarding thread's loop not turning (dataplane.watchdog_secs)",
        ),
        &["thread", "core"],
    )
    .expect("metric definition");
    ex.add(&stalled, "gauge");
    let stalls = counter(
        "evs_thread_stalls_total",
        "Times the watchdog found the forwarding thread stalled",
        &["thread", "core"],
    );
    for t in threads {
        let h = sample.health.get(t.thread).copied().unwrap_or_default();
        let (th, c) = (t.thread.to_string(), t.core.to_string());
        let l = [th.as_str(), c.as_str()];
        stalled.with_label_values(&l).set(i64::from(h.stalled));
        stalls.with_label_values(&l).inc_by(h.stalls);
    }
    let conns = prometheus::IntGauge::new(
        "evs_conntrack_entries",
        "Connection-tracking entries (one per connection and port zone it crosses)",
    )
    .expect("metric definition");
    ex.add(&conns, "gauge");
    conns.set(ct.entries as i64);
    // A count that only grows over a long run is a leak; `benches/soak.sh` watches it.
    let mbufs = sample.mbufs;
    for (name, help, v) in [
        ("evs_mbufs_total", "mbufs in the packet pool", mbufs.total),
        (
            "evs_mbufs_in_use",
            "mbufs not free in the pool (in rx/tx rings, per-core caches, virtqueues, in flight)",
            mbufs.total.saturating_sub(mbufs.available),
        ),
    ] {
        let g = prometheus::IntGauge::new(name, help).expect("metric definition");
        ex.add(&g, "gauge");
        g.set(i64::from(v));
    }
    let picked = prometheus::IntCounter::new(
        "evs_conntrack_picked_up_total",
        "TCP connections picked up in mid-stream (switch.tcp_loose), e.g. after a restart; per zone",
    )
    .expect("metric definition");
    ex.add(&picked, "counter");
    picked.inc_by(ct.picked_up);
    ex.text()
}

/// The metrics of one scrape, and every metric declared, with or without samples.
#[derive(Default)]
struct Exposition {
    reg: Registry,
    declared: RefCell<Vec<(String, String, &'static str)>>,
}

impl Exposition {
    fn add<C: Collector + Clone + 'static>(&self, c: &C, kind: &'static str) {
        for d in c.desc() {
            let decl = (d.fq_name.clone(), d.help.clone(), kind);
            self.declared.borrow_mut().push(decl);
        }
        self.reg
            .register(Box::new(c.clone()))
            .expect("unique metric");
    }

    /// The text format. A labelled metric with no sample yet (no drop of any reason so far) is
    /// still declared with HELP and TYPE, so that dashboards and alerts can be checked against
    /// a scrape before the first drop.
    fn text(&self) -> String {
        let families = self.reg.gather();
        let mut buf = vec![];
        TextEncoder::new()
            .encode(&families, &mut buf)
            .expect("text encoding");
        let mut out = String::from_utf8(buf).unwrap_or_default();
        for (name, help, kind) in self.declared.borrow().iter() {
            if !families.iter().any(|f| f.name() == name) {
                out += &format!("# HELP {name} {help}\n# TYPE {name} {kind}\n");
            }
        }
        out
    }
}

/// Status and body for the request line `line` (`GET /metrics HTTP/1.1`); `metrics` renders.
fn answer(line: &str, metrics: impl FnOnce() -> Result<String, String>) -> (&'static str, String) {
    let mut w = line.split_whitespace();
    let (method, target) = (w.next().unwrap_or(""), w.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    if path != "/metrics" {
        return (
            "404 Not Found",
            "not found: the metrics are at /metrics\n".into(),
        );
    }
    if method != "GET" {
        return ("405 Method Not Allowed", "only GET /metrics\n".into());
    }
    match metrics() {
        Ok(t) => ("200 OK", t),
        Err(e) => ("503 Service Unavailable", e + "\n"),
    }
}

/// The request up to the end of its headers (bounded; the peer may send it in pieces), so that
/// the answer is not written, and the socket closed, under a client still sending.
fn read_head(s: &mut impl Read) -> Vec<u8> {
    let mut req = vec![];
    let mut buf = [0u8; 1024];
    while req.len() < 8192 {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => req.extend_from_slice(&buf[..n]),
        }
        if req.windows(4).any(|w| w == b"\r\n\r\n") || req.windows(2).any(|w| w == b"\n\n") {
            break;
        }
    }
    req
}

/// Serves `GET /metrics` on `addr`; other paths are 404.
pub fn serve(addr: &str, calls: Sender<Call>) -> std::io::Result<std::net::SocketAddr> {
    let l = TcpListener::bind(addr)?;
    let local = l.local_addr()?;
    std::thread::Builder::new()
        .name("evs-metrics".into())
        .spawn(move || {
            for s in l.incoming().flatten() {
                let mut s = s;
                s.set_read_timeout(Some(Duration::from_secs(2))).ok();
                let req = read_head(&mut s);
                let text = String::from_utf8_lossy(&req);
                let line = text.lines().next().unwrap_or("");
                let (status, body) = answer(line, || {
                    let r = control::call(&calls, Request::Metrics);
                    match (r.ok, r.result) {
                        (true, Some(serde_json::Value::String(t))) => Ok(t),
                        _ => Err(r.error.unwrap_or_default()),
                    }
                });
                let _ = write!(
                    s,
                    "HTTP/1.0 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        })?;
    Ok(local)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_is_read_to_the_end_of_its_headers_even_in_pieces() {
        struct Pieces(Vec<&'static [u8]>);
        impl Read for Pieces {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                if self.0.is_empty() {
                    return Ok(0);
                }
                let p = self.0.remove(0);
                buf[..p.len()].copy_from_slice(p);
                Ok(p.len())
            }
        }
        let mut r = Pieces(vec![
            b"GET ",
            b"/metrics",
            b" HTTP/1.0\r\n",
            b"\r\n",
            b"junk",
        ]);
        assert_eq!(read_head(&mut r), b"GET /metrics HTTP/1.0\r\n\r\n");
    }

    #[test]
    fn only_get_metrics_is_served() {
        let ok = || Ok("evs_x 1\n".to_string());
        assert_eq!(answer("GET /metrics HTTP/1.1", ok).0, "200 OK");
        assert_eq!(answer("GET /metrics?x=1 HTTP/1.1", ok).0, "200 OK");
        assert_eq!(answer("GET / HTTP/1.1", ok).0, "404 Not Found");
        assert_eq!(answer("GET /metricsx HTTP/1.1", ok).0, "404 Not Found");
        assert_eq!(answer("", ok).0, "404 Not Found");
        assert_eq!(
            answer("POST /metrics HTTP/1.1", ok).0,
            "405 Method Not Allowed"
        );
        let down = || Err("evsd is shutting down".to_string());
        assert_eq!(
            answer("GET /metrics HTTP/1.0", down).0,
            "503 Service Unavailable"
        );
    }

    #[test]
    fn exposes_build_info_start_time_and_seconds() {
        let started = Started::now();
        let t = ThreadReport {
            thread: 0,
            core: 1,
            busy_cycles: 3_000_000_000,
            idle_cycles: 1_000_000_000,
            packets: 0,
            iterations: 0,
            cycles_per_packet: None,
            busy_pct: 75.0,
            cache_exact_hits: 0,
            cache_megaflow_hits: 0,
            cache_misses: 0,
            cache_hit_pct: None,
            rx_ports: vec![],
        };
        let text = render(&Sample {
            ports: &[],
            threads: &[t],
            ct: CtStats::default(),
            generation: 3,
            tsc_hz: 2_000_000_000,
            started: &started,
            mbufs: Mbufs {
                total: 8191,
                available: 8000,
            },
            health: &[crate::watchdog::ThreadHealth {
                stalled: true,
                stalls: 2,
            }],
        });
        assert!(
            text.contains("evs_thread_stalled{core=\"1\",thread=\"0\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("evs_thread_stalls_total{core=\"1\",thread=\"0\"} 2"),
            "{text}"
        );
        assert!(text.contains("evs_mbufs_in_use 191"), "{text}");
        assert!(text.contains("evs_build_info{dpdk="), "{text}");
        assert!(text.contains("process_start_time_seconds "), "{text}");
        assert!(text.contains("evs_model_generation 3"), "{text}");
        // No port, so no sample, but declared all the same.
        assert!(
            text.contains("# TYPE evs_port_drops_total counter"),
            "{text}"
        );
        assert!(
            text.contains("evs_thread_busy_seconds_total{core=\"1\",thread=\"0\"} 1.5"),
            "{text}"
        );
    }
}
