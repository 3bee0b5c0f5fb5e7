//! Prometheus exposition: the text is rendered on the control loop from the same reports as
//! `show ports` / `show threads`; a tiny HTTP server thread serves it.

use crate::control::{self, Call};
use api::{PortReport, PortState, Request, ThreadReport};
use crossbeam_channel::Sender;
use flowtable::conntrack::CtStats;
use prometheus::{Encoder, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

/// `ct`: the connection tracker's counters (each tracked connection has one entry per port zone
/// it crosses).
pub fn render(ports: &[PortReport], threads: &[ThreadReport], ct: &CtStats) -> String {
    let reg = Registry::new();
    let counter = |name: &str, help: &str, labels: &[&str]| {
        let c = IntCounterVec::new(Opts::new(name, help), labels).expect("metric definition");
        reg.register(Box::new(c.clone())).expect("unique metric");
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
    reg.register(Box::new(up.clone())).expect("unique metric");
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
            "Share of segment lookups answered by a cache since start or the last stats reset",
        ),
        &["thread", "core"],
    )
    .expect("metric definition");
    reg.register(Box::new(hit_rate.clone()))
        .expect("unique metric");
    for t in threads {
        let (th, c) = (t.thread.to_string(), t.core.to_string());
        let l = [th.as_str(), c.as_str()];
        busy.with_label_values(&l).inc_by(t.busy_cycles);
        idle.with_label_values(&l).inc_by(t.idle_cycles);
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
    let conns = prometheus::IntGauge::new(
        "evs_conntrack_entries",
        "Connection-tracking entries (one per connection and port zone it crosses)",
    )
    .expect("metric definition");
    reg.register(Box::new(conns.clone()))
        .expect("unique metric");
    conns.set(ct.entries as i64);
    let picked = prometheus::IntCounter::new(
        "evs_conntrack_picked_up_total",
        "TCP connections picked up in mid-stream (switch.tcp_loose), e.g. after a restart; per zone",
    )
    .expect("metric definition");
    reg.register(Box::new(picked.clone()))
        .expect("unique metric");
    picked.inc_by(ct.picked_up);
    let mut buf = vec![];
    TextEncoder::new()
        .encode(&reg.gather(), &mut buf)
        .expect("text encoding");
    String::from_utf8(buf).unwrap_or_default()
}

/// Serves `GET /metrics` (any path, in fact) on `addr`.
pub fn serve(addr: &str, calls: Sender<Call>) -> std::io::Result<std::net::SocketAddr> {
    let l = TcpListener::bind(addr)?;
    let local = l.local_addr()?;
    std::thread::Builder::new()
        .name("evs-metrics".into())
        .spawn(move || {
            for s in l.incoming().flatten() {
                let mut s = s;
                s.set_read_timeout(Some(Duration::from_secs(2))).ok();
                // The request itself does not matter; read what arrived so the peer sees a clean
                // close.
                let mut req = [0u8; 2048];
                let _ = s.read(&mut req);
                let r = control::call(&calls, Request::Metrics);
                let (status, body) = match (r.ok, r.result) {
                    (true, Some(serde_json::Value::String(t))) => ("200 OK", t),
                    _ => (
                        "503 Service Unavailable",
                        r.error.unwrap_or_default() + "\n",
                    ),
                };
                let _ = write!(
                    s,
                    "HTTP/1.0 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        })?;
    Ok(local)
}
