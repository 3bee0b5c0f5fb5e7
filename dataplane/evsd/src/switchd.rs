//! The control-side owner of the dataplane: EAL, mbuf pool, ports and forwarding threads.
//! Everything here runs on the control thread; the forwarding threads only see plan
//! [`Update`]s.
//!
//! Queue tokens: attaching a port starts it, which creates its rx and tx queue tokens; they wait
//! in the port's `Home` until a plan update moves them to a forwarding thread (a tx queue that
//! several threads share is lent as clones of a [`SharedTxQueueToken`]). A thread hands back what
//! an update takes from it ([`Returned`], on its return channel), and everything when it stops;
//! a port is stopped and removed only once all its tokens are home again.

use crate::config::{Attach, Backend, DataplaneSection};
use crate::ethdev::EthTx;
use crate::forwarding::{self, Command, LoopConfig, Returned, RxAssign, RxSlot, TxTarget, Update};
use crate::stats::{PortSnapshot, ThreadSnapshot, ThreadStats, MAX_PORTS};
use api::{PmdStats, PortKind, PortReport, PortState, ThreadReport};
use crossbeam_channel::{Receiver, Sender};
use evs_dpdk::{
    self as dpdk, DpdkError, Eal, EthPort, Mempool, Queues, RxQueueToken, SharedTxQueueToken,
    TxQueueToken,
};
use evs_vhost::{Endpoint, LinkState, LinkTracker};
use flowtable::switch::Switch;
use flowtable::verdict::DropReason;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum DpError {
    #[error(transparent)]
    Dpdk(#[from] DpdkError),
    #[error(transparent)]
    Vhost(#[from] evs_vhost::VhostError),
    #[error("{0}")]
    Other(String),
}

fn other(s: impl Into<String>) -> DpError {
    DpError::Other(s.into())
}

/// How long a stop waits for the forwarding threads (they stop within one loop iteration).
pub const STOP_GRACE: Duration = Duration::from_secs(5);

type EthUpdate = Update<RxQueueToken, EthTx>;
type EthReturned = Returned<RxQueueToken, EthTx>;

struct FwdThread {
    cmds: Sender<Command<RxQueueToken, EthTx>>,
    /// What the thread hands back: the queues an update took from it, everything at the stop.
    rets: Receiver<EthReturned>,
    stats: Arc<ThreadStats>,
    handle: Option<JoinHandle<()>>,
    /// Flowtable ids of the ports the thread holds a tx queue of.
    tx_held: BTreeSet<u32>,
}

struct Attached {
    flow_id: u32,
    backend: Backend,
    port: EthPort,
    dev_name: String,
    driver: String,
    endpoint: Option<Endpoint>,
    link: LinkTracker,
    link_up: Arc<AtomicBool>,
    /// Keeps `link_up` current between polls (PMDs with link-change events).
    /// Ended (dropped) before the port is removed.
    link_watch: Option<dpdk::LinkWatch>,
    /// The port's queue tokens that no forwarding thread holds.
    home: Home,
    /// Being detached: in no plan any more.
    detaching: bool,
}

/// A port's queue tokens while they are on the control thread.
struct Home {
    rx: Option<RxQueueToken>,
    /// Per tx queue.
    tx: Vec<TxHome>,
}

enum TxHome {
    /// A queue of one thread: here unless lent.
    Own(Option<TxQueueToken>),
    /// A queue threads share: each holds a clone.
    Shared(SharedTxQueueToken),
}

impl Home {
    fn new(q: Queues, shared: bool) -> Home {
        Home {
            rx: q.rx.into_iter().next(),
            tx: q
                .tx
                .into_iter()
                .map(|t| {
                    if shared {
                        TxHome::Shared(t.share())
                    } else {
                        TxHome::Own(Some(t))
                    }
                })
                .collect(),
        }
    }

    /// The tx queue thread `t` uses, moved out (or a clone of a shared one).
    fn lend_tx(&mut self, t: usize) -> Option<EthTx> {
        let n = self.tx.len();
        match self.tx.get_mut(t % n.max(1))? {
            TxHome::Own(q) => q.take().map(EthTx::Own),
            TxHome::Shared(q) => Some(EthTx::Shared(q.clone())),
        }
    }

    fn take_back_tx(&mut self, q: EthTx) {
        match q {
            EthTx::Own(q) => {
                if let Some(TxHome::Own(slot)) = self.tx.get_mut(q.queue() as usize) {
                    *slot = Some(q);
                }
            }
            // The clone goes; the queue's own token stays here.
            EthTx::Shared(q) => drop(q),
        }
    }

    /// Every token of the port, if all are home.
    fn into_queues(self) -> Result<Queues, String> {
        let mut q = Queues {
            rx: self.rx.into_iter().collect(),
            tx: vec![],
        };
        for (i, t) in self.tx.into_iter().enumerate() {
            match t {
                TxHome::Own(Some(t)) => q.tx.push(t),
                TxHome::Own(None) => return Err(format!("tx queue {i} is still lent")),
                TxHome::Shared(s) => match s.into_exclusive() {
                    Ok(t) => q.tx.push(t),
                    Err(_) => return Err(format!("shared tx queue {i} is still lent")),
                },
            }
        }
        Ok(q)
    }
}

/// Puts what a thread handed back into its ports' homes (tokens of ports that are gone are
/// dropped).
fn take_back(ports: &mut BTreeMap<String, Attached>, r: EthReturned) {
    for a in r.rx {
        if let Some(p) = ports.values_mut().find(|p| p.flow_id == a.flow_id) {
            p.home.rx = Some(a.queue);
        }
    }
    for (id, t) in r.tx {
        if let Some(p) = ports.values_mut().find(|p| p.flow_id == id) {
            p.home.take_back_tx(t.queue);
        }
    }
}

/// Where counters count from. `stats_reset` moves the operator's zero ([`Since::Reset`], what
/// `show` reports); metrics count from the start, as Prometheus needs counters that only grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Since {
    Start,
    Reset,
}

pub struct Dataplane {
    switch: Switch,
    pool: Option<Mempool>,
    pool_size: u32,
    threads: Vec<FwdThread>,
    ports: BTreeMap<String, Attached>,
    /// Names of the rx ports each thread polls, as last planned.
    assignment: Vec<Vec<String>>,
    next_vdev: u32,
    gen: u64,
    port_base: HashMap<u32, PortSnapshot>,
    thread_base: Vec<ThreadSnapshot>,
    eal: Option<Eal>,
    captures: crate::capture::Captures,
}

impl Dataplane {
    /// Starts forwarding threads on `cfg.cores` (each pinned and registered with the EAL).
    pub fn new(eal: Eal, switch: Switch, cfg: &DataplaneSection) -> Result<Dataplane, DpError> {
        let pool = Mempool::create("evs_mbufs", cfg.mbufs, 256)?;
        let tsc_hz = dpdk::tsc_hz();
        let mut threads = vec![];
        for (i, &core) in cfg.cores.iter().enumerate() {
            let (tx, rx) = crossbeam_channel::unbounded();
            let (ret_tx, ret_rx) = crossbeam_channel::unbounded();
            let stats = Arc::new(ThreadStats::new(core));
            let st = stats.clone();
            let worker = switch.worker();
            let lc = LoopConfig {
                burst: cfg.burst,
                idle_sleep_us: cfg.idle_sleep_us,
                tsc_hz,
            };
            let (ready_tx, ready_rx) = crossbeam_channel::bounded(1);
            let handle = std::thread::Builder::new()
                .name(format!("evs-fwd{i}"))
                .spawn(move || {
                    let setup = dpdk::set_affinity(&[core])
                        .map_err(|e| format!("pinning to core {core}: {e}"))
                        .and_then(|()| {
                            dpdk::register_thread().map_err(|e| format!("lcore registration: {e}"))
                        });
                    let ok = setup.is_ok();
                    let _ = ready_tx.send(setup);
                    if ok {
                        // A switch whose forwarding thread died forwards nothing while looking
                        // alive: exit loudly so a supervisor restarts it (guests reconnect).
                        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            forwarding::run::<RxQueueToken, EthTx>(lc, worker, rx, ret_tx, st)
                        }));
                        if r.is_err() {
                            tracing::error!(target: "evsd", "forwarding thread {i} panicked; exiting");
                            std::process::exit(70);
                        }
                        dpdk::unregister_thread();
                    }
                })
                .map_err(|e| other(format!("cannot spawn forwarding thread: {e}")))?;
            match ready_rx.recv() {
                Ok(Ok(_lcore)) => {}
                Ok(Err(e)) => return Err(other(format!("forwarding thread {i}: {e}"))),
                Err(_) => return Err(other(format!("forwarding thread {i} died at start"))),
            }
            threads.push(FwdThread {
                cmds: tx,
                rets: ret_rx,
                stats,
                handle: Some(handle),
                tx_held: BTreeSet::new(),
            });
        }
        let n = threads.len();
        Ok(Dataplane {
            switch,
            pool: Some(pool),
            pool_size: cfg.mbufs,
            threads,
            ports: BTreeMap::new(),
            assignment: vec![vec![]; n],
            next_vdev: 0,
            gen: 0,
            port_base: HashMap::new(),
            thread_base: vec![ThreadSnapshot::default(); n],
            eal: Some(eal),
            captures: Default::default(),
        })
    }

    pub fn switch(&self) -> &Switch {
        &self.switch
    }

    /// The forwarding threads' clock, for control-side calls into the flowtable.
    pub fn clock_ns(&self) -> u64 {
        dpdk::TscClock::new(dpdk::tsc_hz()).now_ns()
    }

    /// Gives model port (or uplink) `name` its backend and starts forwarding on it.
    pub fn attach(&mut self, name: &str, backend: Backend) -> Result<(), DpError> {
        let flow_id = self.switch.port_id(name).ok_or_else(|| {
            other(format!(
                "attach {name:?}: no port or uplink of that name in the model"
            ))
        })?;
        if flow_id as usize >= MAX_PORTS {
            return Err(other(format!(
                "attach {name:?}: port id {flow_id} exceeds the dataplane limit {MAX_PORTS}"
            )));
        }
        if let Some(a) = self.ports.get(name) {
            return Err(other(format!(
                "attach {name:?}: already attached to {} (detach it first)",
                a.dev_name
            )));
        }
        let (devargs, dev_name, endpoint) = match &backend {
            Backend::Vhost(v) => {
                let ep = Endpoint::prepare(v)?;
                let idx = self.next_vdev;
                self.next_vdev += 1;
                (ep.devargs(idx), Endpoint::vdev_name(idx), Some(ep))
            }
            Backend::Ethdev { devargs } => {
                let dev = devargs.split(',').next().unwrap_or("").trim().to_owned();
                if dev.is_empty() {
                    return Err(other(format!("attach {name:?}: empty devargs")));
                }
                if self.ports.values().any(|a| a.dev_name == dev) {
                    return Err(other(format!(
                        "attach {name:?}: device {dev} is already attached to another port"
                    )));
                }
                (devargs.clone(), dev, None)
            }
        };
        dpdk::dev_probe(&devargs).map_err(|e| {
            other(format!(
                "attach {name:?}: {e} (a vdev name must start with a DPDK driver name, e.g. \
                 net_tap0 or net_af_packet1; a PCI device must be bound to vfio-pci)"
            ))
        })?;
        let mut port = match EthPort::by_name(&dev_name) {
            Ok(p) => p,
            Err(e) if e.code == libc::ENODEV => {
                return Err(other(format!(
                    "attach {name:?}: {devargs} probed but no ethdev named {dev_name} appeared"
                )))
            }
            Err(e) => return Err(other(format!("attach {name:?}: {e}"))),
        };
        let link_up = Arc::new(AtomicBool::new(false));
        let pool = self.pool.as_ref().expect("pool");
        let threads = self.threads.len();
        let setup = (|| -> Result<(String, u16, Option<dpdk::LinkWatch>, Queues), DpError> {
            let info = port.info()?;
            let want = threads.max(1) as u16;
            let txq = want.min(info.max_tx_queues.max(1));
            // Before the start, so that a guest connecting at once is not missed.
            let watch = if info.lsc_interrupt {
                Some(port.watch_link(link_up.clone())?)
            } else {
                None
            };
            let queues = port.setup_and_start(1, txq, pool)?;
            Ok((info.driver, txq, watch, queues))
        })();
        let (driver, txq, watch, queues) = match setup {
            Ok(x) => x,
            Err(e) => {
                // No token was handed out.
                let _ = port.stop_and_remove(Queues::default());
                return Err(e);
            }
        };
        let up = port.link().up;
        link_up.store(up, Ordering::Relaxed);
        let mut link = LinkTracker::default();
        link.observe(up);
        self.ports.insert(
            name.to_owned(),
            Attached {
                flow_id,
                backend,
                port,
                dev_name,
                driver,
                endpoint,
                link,
                link_up,
                link_watch: watch,
                // Fewer tx queues than threads: every queue is shared, under its lock.
                home: Home::new(queues, (txq as usize) < threads),
                detaching: false,
            },
        );
        self.rebalance()?;
        Ok(())
    }

    /// Stops forwarding on `name` and removes its device; other ports keep running.
    pub fn detach(&mut self, name: &str) -> Result<(), DpError> {
        let a = self
            .ports
            .get_mut(name)
            .ok_or_else(|| other(format!("detach {name:?}: not attached")))?;
        a.detaching = true;
        let planned = self.rebalance();
        let mut a = self.ports.remove(name).expect("attached");
        self.captures
            .end_port(a.flow_id, &format!("port {name} detached"));
        // The threads must have handed back every queue of the port before it goes away: if one
        // did not confirm, leave the device in place rather than pull it from under the thread.
        if let Err(e) = planned {
            return Err(other(format!(
                "detach {name:?}: {e}; the device was left in place"
            )));
        }
        drop(a.link_watch.take());
        let rm = match a.home.into_queues() {
            Ok(q) => a.port.stop_and_remove(q).map_err(DpError::from),
            Err(e) => Err(other(format!(
                "detach {name:?}: {e}; the device was left in place"
            ))),
        };
        if let Some(ep) = &a.endpoint {
            ep.cleanup();
        }
        rm?;
        Ok(())
    }

    /// Recomputes every thread's plan: rx ports round-robin over threads (in name order), a tx
    /// queue of every attached port. Two phases so that no rx queue is ever polled by two
    /// threads: first every thread keeps only the rx queues it keeps in the new plan and hands
    /// the others back (and gets or returns tx queues of attached or detached ports), then the
    /// rx queues that moved, now home, are handed to their new threads.
    fn rebalance(&mut self) -> Result<(), DpError> {
        let n = self.threads.len();
        if n == 0 {
            return Ok(());
        }
        let active: Vec<(&String, &Attached)> =
            self.ports.iter().filter(|(_, a)| !a.detaching).collect();
        let tx_len = active
            .iter()
            .map(|(_, a)| a.flow_id as usize + 1)
            .max()
            .unwrap_or(0);
        let ids: BTreeSet<u32> = active.iter().map(|(_, a)| a.flow_id).collect();
        let mut new_rx: Vec<Vec<(String, u32)>> = vec![vec![]; n];
        for (i, (name, a)) in active.iter().enumerate() {
            new_rx[i % n].push(((*name).clone(), a.flow_id));
        }
        drop(active);

        // Phase 1: every thread keeps only the rx queues it keeps in the new plan.
        let mut phase1 = vec![];
        let mut tx_held = vec![];
        for (t, rx) in new_rx.iter().enumerate() {
            let rx = rx
                .iter()
                .filter(|(name, _)| self.assignment[t].contains(name))
                .map(|(_, id)| RxSlot::Keep(*id))
                .collect();
            let held = &self.threads[t].tx_held;
            let tx_take: Vec<u32> = held.difference(&ids).copied().collect();
            let mut now_held: BTreeSet<u32> = held.intersection(&ids).copied().collect();
            let mut tx_give = vec![];
            for a in self.ports.values_mut() {
                if a.detaching || held.contains(&a.flow_id) {
                    continue;
                }
                // Home whenever the thread does not hold it.
                let Some(queue) = a.home.lend_tx(t) else {
                    continue;
                };
                now_held.insert(a.flow_id);
                tx_give.push((
                    a.flow_id,
                    TxTarget {
                        queue,
                        link_up: a.link_up.clone(),
                    },
                ));
            }
            phase1.push(Update {
                gen: 0,
                rx,
                tx_give,
                tx_take,
                tx_len,
            });
            tx_held.push(now_held);
        }
        // What the threads hold once they have applied the update (even a late one).
        for (t, held) in self.threads.iter_mut().zip(tx_held) {
            t.tx_held = held;
        }
        self.publish(phase1)?;

        // Phase 2: the full plan. The rx queues that moved (and those of new ports) are home
        // now; the others stay where they are.
        let mut phase2 = vec![];
        for rx in &new_rx {
            let mut slots = vec![];
            for (name, id) in rx {
                let home = self.ports.get_mut(name).and_then(|a| a.home.rx.take());
                slots.push(match home {
                    Some(queue) => RxSlot::Give(RxAssign {
                        queue,
                        flow_id: *id,
                    }),
                    None => RxSlot::Keep(*id),
                });
            }
            phase2.push(Update {
                gen: 0,
                rx: slots,
                tx_give: vec![],
                tx_take: vec![],
                tx_len,
            });
        }
        self.publish(phase2)?;
        self.assignment = new_rx
            .into_iter()
            .map(|v| v.into_iter().map(|(n, _)| n).collect())
            .collect();
        Ok(())
    }

    /// Sends one update to every thread, waits until each has acknowledged it by its generation,
    /// and takes back what they handed back.
    fn publish(&mut self, updates: Vec<EthUpdate>) -> Result<(), DpError> {
        self.gen += 1;
        let gen = self.gen;
        for (t, mut u) in self.threads.iter().zip(updates) {
            u.gen = gen;
            t.cmds
                .send(Command::Update(u))
                .map_err(|_| other("a forwarding thread has exited"))?;
            t.stats.posted.fetch_add(1, Ordering::Release);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for (i, t) in self.threads.iter().enumerate() {
            while t.stats.plan_gen.load(Ordering::Acquire) < gen {
                if Instant::now() > deadline {
                    return Err(other(format!(
                        "forwarding thread {i} did not take the new port plan within 5 s"
                    )));
                }
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        // Each thread sent what it let go of before acknowledging.
        for (i, t) in self.threads.iter().enumerate() {
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                let r = t.rets.recv_timeout(left).map_err(|_| {
                    other(format!(
                        "forwarding thread {i} did not hand back its queues within 5 s"
                    ))
                })?;
                let done = r.gen >= gen;
                take_back(&mut self.ports, r);
                if done {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Polls every port's link from the control thread; forwarding to a port starts when its
    /// guest has connected and stops when it goes away.
    pub fn poll_links(&mut self) -> Vec<(String, LinkState)> {
        let mut changes = vec![];
        for (name, a) in self.ports.iter_mut() {
            let up = a.port.link().up;
            if let Some(s) = a.link.observe(up) {
                a.link_up.store(up, Ordering::Relaxed);
                changes.push((name.clone(), s));
            }
        }
        changes
    }

    fn port_counters(&self, id: u32, since: Since) -> PortSnapshot {
        let mut s = PortSnapshot::default();
        for t in &self.threads {
            s.add(&t.stats.read_port(id));
        }
        match since {
            Since::Start => s,
            Since::Reset => s.sub(&self.port_base.get(&id).copied().unwrap_or_default()),
        }
    }

    /// Every port's backend in force, in name order (what a restart must attach again).
    pub fn attachments(&self) -> Vec<Attach> {
        self.ports
            .iter()
            .map(|(name, a)| Attach::new(name.as_str(), a.backend.clone()))
            .collect()
    }

    /// Counters since the last `stats_reset` (what an operator looks at).
    pub fn show_ports(&self) -> Vec<PortReport> {
        self.show_ports_since(Since::Reset)
    }

    pub fn show_ports_since(&self, since: Since) -> Vec<PortReport> {
        let model = self.switch.model();
        let names = model
            .uplinks
            .iter()
            .map(|u| (u.name.clone(), PortKind::Uplink))
            .chain(model.ports.iter().map(|p| (p.name.clone(), PortKind::Port)));
        let mut out = vec![];
        let mut seen = std::collections::BTreeSet::new();
        for (name, kind) in names {
            seen.insert(name.clone());
            out.push(self.report(&name, kind, since));
        }
        // Attached ports that a newer model dropped still forward (and count) until detached.
        for name in self.ports.keys() {
            if !seen.contains(name) {
                out.push(self.report(name, PortKind::Stale, since));
            }
        }
        out
    }

    fn report(&self, name: &str, kind: PortKind, since: Since) -> PortReport {
        let id = self.switch.port_id(name).unwrap_or(0);
        let c = self.port_counters(id, since);
        let a = self.ports.get(name);
        let drops = DropReason::ALL
            .iter()
            .filter(|r| c.drops[**r as usize] > 0)
            .map(|r| (r.name().to_string(), c.drops[*r as usize]))
            .collect();
        let egress_drops = DropReason::ALL
            .iter()
            .filter(|r| c.egress_drops[**r as usize] > 0)
            .map(|r| (r.name().to_string(), c.egress_drops[*r as usize]))
            .collect();
        PortReport {
            name: name.to_owned(),
            id,
            kind,
            state: match a {
                None => PortState::Detached,
                Some(a) if a.link.state() == LinkState::Up => PortState::Up,
                Some(_) => PortState::Down,
            },
            backend: a.map(|a| a.backend.clone()),
            ethdev: a.map(|a| a.port.id()),
            driver: a.map(|a| a.driver.clone()),
            connects: a.map(|a| a.link.connects()).unwrap_or(0),
            rx_packets: c.rx_packets,
            rx_bytes: c.rx_bytes,
            tx_packets: c.tx_packets,
            tx_bytes: c.tx_bytes,
            drops,
            egress_drops,
            pmd: a.map(|a| {
                let s = a.port.stats();
                PmdStats {
                    ipackets: s.ipackets,
                    opackets: s.opackets,
                    imissed: s.imissed,
                    oerrors: s.oerrors,
                    rx_nombuf: s.rx_nombuf,
                }
            }),
        }
    }

    /// Counters since the last `stats_reset`.
    pub fn show_threads(&self) -> Vec<ThreadReport> {
        self.show_threads_since(Since::Reset)
    }

    pub fn show_threads_since(&self, since: Since) -> Vec<ThreadReport> {
        self.threads
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let s = match since {
                    Since::Start => t.stats.read(),
                    Since::Reset => t.stats.read().sub(&self.thread_base[i]),
                };
                let total = s.busy_cycles + s.idle_cycles;
                ThreadReport {
                    thread: i,
                    core: s.core,
                    busy_cycles: s.busy_cycles,
                    idle_cycles: s.idle_cycles,
                    packets: s.packets,
                    iterations: s.iterations,
                    cycles_per_packet: s.cycles_per_packet(),
                    busy_pct: if total == 0 {
                        0.0
                    } else {
                        100.0 * s.busy_cycles as f64 / total as f64
                    },
                    cache_exact_hits: s.cache_exact_hits,
                    cache_megaflow_hits: s.cache_megaflow_hits,
                    cache_misses: s.cache_misses,
                    cache_hit_pct: s.cache_hit_rate().map(|r| 100.0 * r),
                    rx_ports: self.assignment.get(i).cloned().unwrap_or_default(),
                }
            })
            .collect()
    }

    /// Zeroes what `show` reports (not what metrics export: see [`Since`]), by remembering the current values (the forwarding threads are
    /// the only writers of their counters).
    pub fn stats_reset(&mut self) {
        let ids: Vec<u32> = (0..MAX_PORTS as u32).collect();
        self.port_base.clear();
        for id in ids {
            let mut s = PortSnapshot::default();
            for t in &self.threads {
                s.add(&t.stats.read_port(id));
            }
            if s != PortSnapshot::default() {
                self.port_base.insert(id, s);
            }
        }
        self.thread_base = self.threads.iter().map(|t| t.stats.read()).collect();
        for a in self.ports.values() {
            a.port.stats_reset();
        }
    }

    pub fn mbufs(&self) -> crate::metrics::Mbufs {
        crate::metrics::Mbufs {
            total: self.pool_size,
            available: self.pool.as_ref().map(Mempool::available).unwrap_or(0),
        }
    }

    /// Each forwarding thread's loop iteration counter, for the watchdog.
    pub fn thread_iterations(&self) -> Vec<u64> {
        self.threads
            .iter()
            .map(|t| t.stats.iterations.load(Ordering::Relaxed))
            .collect()
    }

    /// Test only (`EVS_TEST_STALL_THREAD`): blocks forwarding thread `i` for good.
    pub fn stall_thread_for_test(&self, i: usize) -> Result<(), DpError> {
        let t = self
            .threads
            .get(i)
            .ok_or_else(|| other(format!("no forwarding thread {i} to stall")))?;
        t.cmds
            .send(Command::StallForTest)
            .map_err(|_| other(format!("forwarding thread {i} has exited")))?;
        t.stats.posted.fetch_add(1, Ordering::Release);
        Ok(())
    }

    /// Stops the threads, removes every port, frees the pool and ends the EAL. A thread that does
    /// not stop within [`STOP_GRACE`] (stuck) is left behind, and so are the ports, the pool and
    /// the EAL it may still use: the error says so, and the process is expected to exit.
    pub fn shutdown(mut self) -> Result<(), String> {
        let stuck = self.stop_threads();
        if !stuck.is_empty() {
            // What a stuck thread may still touch is never freed (the process exits next).
            std::mem::forget(self.pool.take());
            std::mem::forget(std::mem::take(&mut self.ports));
            return Err(format!(
                "forwarding thread(s) {stuck:?} did not stop within {} s; exiting without \
                 removing the ports or ending DPDK's EAL",
                STOP_GRACE.as_secs()
            ));
        }
        let names: Vec<String> = self.ports.keys().cloned().collect();
        for n in names {
            if let Some(mut a) = self.ports.remove(&n) {
                drop(a.link_watch.take());
                let rm = match a.home.into_queues() {
                    Ok(q) => a.port.stop_and_remove(q).map_err(|e| e.to_string()),
                    Err(e) => Err(format!("{e}; the device was left in place")),
                };
                if let Err(e) = rm {
                    tracing::warn!(target: "evsd", "removing {n}: {e}");
                }
                if let Some(ep) = &a.endpoint {
                    ep.cleanup();
                }
            }
        }
        self.pool.take();
        if let Some(eal) = self.eal.take() {
            if let Err(e) = eal.cleanup() {
                tracing::warn!(target: "evsd", "{e}");
            }
        }
        Ok(())
    }

    /// Tells every thread to stop and joins those that do within [`STOP_GRACE`]; returns the
    /// numbers of those that did not (their handles are dropped: the threads stay detached until
    /// the process exits, as `ctl shutdown` and SIGTERM must work even then).
    fn stop_threads(&mut self) -> Vec<usize> {
        for t in &self.threads {
            if t.handle.is_some() {
                let _ = t.cmds.send(Command::Stop);
                t.stats.posted.fetch_add(1, Ordering::Release);
            }
        }
        let deadline = Instant::now() + STOP_GRACE;
        let mut stuck = vec![];
        for (i, t) in self.threads.iter_mut().enumerate() {
            let Some(h) = t.handle.take() else { continue };
            while !h.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if h.is_finished() {
                let _ = h.join();
            } else {
                tracing::error!(target: "evsd", "forwarding thread {i} did not stop; leaving it");
                stuck.push(i);
            }
        }
        // A stopped thread has handed back everything it held.
        for t in &self.threads {
            while let Ok(r) = t.rets.try_recv() {
                take_back(&mut self.ports, r);
            }
        }
        stuck
    }
}

/// Packet capture ([`crate::capture`]): taps posted to every thread (each transmits to every
/// port), not waited for; the session's connection thread waits for them to let go.
impl Dataplane {
    /// Starts capture session `s` on its port (attached, not captured already).
    pub fn capture_start(
        &mut self,
        s: std::sync::Arc<crate::capture::Session>,
    ) -> Result<api::capture::CaptureStarted, String> {
        use crate::capture::{Tap, TapCmd};
        let name = s.spec.port.as_str();
        let Some(a) = self.ports.get(name) else {
            return Err(match self.switch.port_id(name) {
                Some(_) => format!("capture {name:?}: the port is not attached"),
                None => format!("capture {name:?}: no port or uplink of that name"),
            });
        };
        let flow_id = a.flow_id;
        self.captures.add(name, flow_id, &s)?;
        s.set_clock(self.clock_ns());
        for t in &self.threads {
            let tap = Tap {
                flow_id,
                session: s.clone(),
            };
            if t.cmds.send(Command::Tap(TapCmd::Add(tap))).is_ok() {
                t.stats.posted.fetch_add(1, Ordering::Release);
            }
        }
        Ok(s.started())
    }

    /// Takes back the taps of the sessions whose client is done.
    pub fn capture_reap(&mut self) {
        for id in self.captures.take_closed() {
            for t in &self.threads {
                let c = Command::Tap(crate::capture::TapCmd::Remove(id));
                if t.cmds.send(c).is_ok() {
                    t.stats.posted.fetch_add(1, Ordering::Release);
                }
            }
        }
    }
}

impl Drop for Dataplane {
    fn drop(&mut self) {
        // Shutdown normally consumed everything; on an early error path at least stop polling
        // before the pool goes.
        if !self.stop_threads().is_empty() {
            // The pool may still be in use by a stuck thread: leak it rather than free it.
            std::mem::forget(self.pool.take());
        }
    }
}
