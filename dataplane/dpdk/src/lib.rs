//! `evs-dpdk`: the safe layer over `dpdk-sys` for the EAL, mempools, ethdev ports and mbufs, shared
//! by `evsd`, `evs-pktgen` and `evs-sink`. Every `unsafe` block that touches DPDK lives here.
//!
//! Threading contract (DPDK's, made explicit by types): EAL init, port setup, hotplug and teardown
//! happen on the control thread, which owns each port's one [`EthPort`] handle; rx/tx bursts on
//! a (port, queue) need that queue's token ([`RxQueueToken`], [`TxQueueToken`], created once by
//! [`EthPort::setup_and_start`] and not `Clone`), so exactly one thread at a time uses a queue, or
//! several under a lock with a [`SharedTxQueueToken`]; a port is stopped only with every token
//! handed back.

pub mod log;

use dpdk_sys as sys;
use std::collections::BTreeSet;
use std::ffi::{CStr, CString};
use std::os::raw::{c_char, c_int, c_void};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Most packets handled per burst; fixed so bursts live on the stack.
pub const MAX_BURST: usize = 32;

#[derive(Debug, thiserror::Error)]
#[error("{what}: {msg} (errno {code})")]
pub struct DpdkError {
    pub what: String,
    pub code: i32,
    pub msg: String,
}

fn rte_err(what: impl Into<String>, code: i32) -> DpdkError {
    let code = code.abs();
    // SAFETY: rte_strerror returns a pointer to a static or thread-local string for any code.
    let msg = unsafe { CStr::from_ptr(sys::rte_strerror(code)) }
        .to_string_lossy()
        .into_owned();
    DpdkError {
        what: what.into(),
        code,
        msg,
    }
}

/// rte_errno of the calling thread (set by DPDK calls that return NULL or -1).
pub fn errno() -> i32 {
    // SAFETY: reads a thread-local int through the C shim.
    unsafe { sys::evs_rte_errno() }
}

fn cstring(what: &str, s: &str) -> Result<CString, DpdkError> {
    CString::new(s).map_err(|_| DpdkError {
        what: what.into(),
        code: libc::EINVAL,
        msg: format!("{s:?} contains a NUL byte"),
    })
}

static EAL_UP: AtomicBool = AtomicBool::new(false);

/// The initialised EAL. DPDK allows one init per process; [`Eal::cleanup`] ends it.
pub struct Eal {
    _private: (),
}

impl Eal {
    /// `args` are EAL arguments without the program name.
    pub fn init(args: &[String]) -> Result<Eal, DpdkError> {
        Eal::init_as("evsd", args)
    }

    /// [`Eal::init`] with `program` as `argv[0]` (the EAL's log identity).
    pub fn init_as(program: &str, args: &[String]) -> Result<Eal, DpdkError> {
        if EAL_UP.swap(true, Ordering::SeqCst) {
            return Err(DpdkError {
                what: "rte_eal_init".into(),
                code: libc::EALREADY,
                msg: "the EAL is already initialised in this process".into(),
            });
        }
        let mut owned = vec![cstring("eal args", program)?];
        for a in args {
            owned.push(cstring("eal args", a)?);
        }
        // The EAL may keep pointers into argv (it reorders and stores some of them): leak the
        // strings, it is once per process.
        let mut argv: Vec<*mut c_char> = owned.into_iter().map(CString::into_raw).collect();
        let argc = argv.len() as c_int;
        argv.push(std::ptr::null_mut());
        let argv = Box::leak(argv.into_boxed_slice());
        // SAFETY: argv is a NULL-terminated array of argc valid C strings that outlive the process.
        let r = unsafe { sys::rte_eal_init(argc, argv.as_mut_ptr()) };
        if r < 0 {
            EAL_UP.store(false, Ordering::SeqCst);
            return Err(rte_err(
                format!("rte_eal_init({})", args.join(" ")),
                errno(),
            ));
        }
        Ok(Eal { _private: () })
    }

    /// Releases hugepages and driver resources; every port must be closed and every forwarding
    /// thread joined first. Refused (`EBUSY`, the EAL stays up) while a port still has its
    /// handle, i.e. may still have queue tokens in use.
    pub fn cleanup(self) -> Result<(), DpdkError> {
        let open = claims().len();
        if open > 0 {
            return Err(DpdkError {
                what: "rte_eal_cleanup".into(),
                code: libc::EBUSY,
                msg: format!("{open} port(s) not stopped; the EAL was left up"),
            });
        }
        // SAFETY: called once (it consumes the only `Eal`), with no port left whose queues could
        // be in use (checked above); the other DPDK objects are gone by the caller's shutdown
        // order (pool after ports, threads joined).
        unsafe {
            sys::rte_eal_cleanup();
        }
        Ok(())
    }
}

/// TSC frequency measured by the EAL.
pub fn tsc_hz() -> u64 {
    // SAFETY: plain getter, valid after EAL init (returns 0 before, which callers tolerate).
    unsafe { sys::rte_get_tsc_hz() }
}

/// Time-stamp counter; inline (no FFI call) because the forwarding loop reads it twice per
/// iteration.
#[inline(always)]
pub fn rdtsc() -> u64 {
    // SAFETY: rdtsc has no preconditions on x86_64.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Nanoseconds from the TSC, as a multiply and shift (a 128-bit division per loop iteration showed
/// up at 6% of the forwarding loop). Every thread must use the same clock: the flowtable compares
/// timestamps taken on the forwarding threads with those of the control thread's housekeeping.
#[derive(Debug, Clone, Copy)]
pub struct TscClock {
    mult: u128,
}

impl TscClock {
    pub fn new(hz: u64) -> TscClock {
        TscClock {
            mult: (1_000_000_000u128 << 32) / hz.max(1) as u128,
        }
    }
    #[inline(always)]
    pub fn ns(&self, tsc: u64) -> u64 {
        ((tsc as u128 * self.mult) >> 32) as u64
    }
    #[inline(always)]
    pub fn now_ns(&self) -> u64 {
        self.ns(rdtsc())
    }
}

/// Gives the calling (non-EAL) thread an lcore id, so it gets a per-lcore mempool cache; without
/// it every mbuf alloc/free goes to the shared ring.
pub fn register_thread() -> Result<u32, DpdkError> {
    // SAFETY: registers the current thread in the EAL's lcore table; EAL is initialised (the
    // caller holds an `Eal` reference to start forwarding threads).
    let r = unsafe { sys::rte_thread_register() };
    if r < 0 {
        return Err(rte_err("rte_thread_register", errno()));
    }
    // SAFETY: reads this thread's per-lcore variable.
    Ok(unsafe { sys::rte_lcore_id() })
}

pub fn unregister_thread() {
    // SAFETY: undoes register_thread on the same thread; harmless if it was not registered.
    unsafe { sys::rte_thread_unregister() }
}

/// A packet mbuf pool.
pub struct Mempool {
    ptr: NonNull<sys::rte_mempool>,
}

// SAFETY: rte_mempool is designed for concurrent get/put from many lcores.
unsafe impl Send for Mempool {}
// SAFETY: as above; no Rust-side interior state.
unsafe impl Sync for Mempool {}

impl Mempool {
    pub fn create(name: &str, n: u32, cache: u32) -> Result<Mempool, DpdkError> {
        let cname = cstring("mempool name", name)?;
        // SAFETY: valid C string; the EAL is up (an `Eal` exists whenever this is called).
        let p = unsafe {
            sys::rte_pktmbuf_pool_create(
                cname.as_ptr(),
                n,
                cache,
                0,
                sys::RTE_MBUF_DEFAULT_BUF_SIZE as u16,
                -1, // SOCKET_ID_ANY
            )
        };
        NonNull::new(p).map(|ptr| Mempool { ptr }).ok_or_else(|| {
            rte_err(
                format!("rte_pktmbuf_pool_create({name}, {n} mbufs)"),
                errno(),
            )
        })
    }

    /// Mbufs currently free in the pool (approximate under concurrency).
    pub fn available(&self) -> u32 {
        // SAFETY: read-only query of a live pool.
        unsafe { sys::rte_mempool_avail_count(self.ptr.as_ptr()) }
    }

    /// A fresh packet holding a copy of `frame` (for locally generated frames and tests).
    pub fn alloc_with(&self, frame: &[u8]) -> Option<Mbuf> {
        // SAFETY: live pool; alloc returns NULL or an mbuf we now own.
        let m = NonNull::new(unsafe { sys::rte_pktmbuf_alloc(self.as_ptr()) }).map(Mbuf)?;
        let len = u16::try_from(frame.len()).ok()?;
        // SAFETY: append returns NULL or a pointer to `len` writable bytes inside our mbuf.
        let p = unsafe { sys::rte_pktmbuf_append(m.0.as_ptr(), len) } as *mut u8;
        if p.is_null() {
            return None; // `m` is freed on drop
        }
        // SAFETY: p points to `len` bytes just reserved in the mbuf's data room.
        unsafe { std::ptr::copy_nonoverlapping(frame.as_ptr(), p, frame.len()) };
        Some(m)
    }

    /// Fills every slot of `out` (which must be empty) with a fresh mbuf, or none of them when the
    /// pool has fewer free; returns whether it did.
    #[inline]
    pub fn alloc_bulk(&self, out: &mut [Option<Mbuf>]) -> bool {
        debug_assert!(out.iter().all(Option::is_none));
        // SAFETY: `out` has room for out.len() mbuf pointers (`Option<Mbuf>` is one); the pool
        // is live. On success every slot holds an mbuf we now own.
        let r = unsafe {
            sys::rte_pktmbuf_alloc_bulk(self.as_ptr(), out.as_mut_ptr().cast(), out.len() as u32)
        };
        if r != 0 {
            // On failure the mempool may have left pointers it took back into its cache in the
            // array: they are not ours.
            // SAFETY: writing NULL (`None`) over every slot, without dropping what is there.
            unsafe { std::ptr::write_bytes(out.as_mut_ptr(), 0, out.len()) };
            return false;
        }
        true
    }

    fn as_ptr(&self) -> *mut sys::rte_mempool {
        self.ptr.as_ptr()
    }
}

impl Drop for Mempool {
    fn drop(&mut self) {
        // SAFETY: the pool is dropped after every port using it was closed (the Dataplane owns
        // both and closes ports first).
        unsafe { sys::rte_mempool_free(self.ptr.as_ptr()) }
    }
}

/// Hot-plugs a device: a PCI address (`0000:03:00.0`) or a vdev (`net_tap0,iface=tap0`). The
/// ethdev it creates is then taken with [`EthPort::by_name`].
pub fn dev_probe(devargs: &str) -> Result<(), DpdkError> {
    let c = cstring("devargs", devargs)?;
    // SAFETY: valid C string; control thread only.
    let r = unsafe { sys::rte_dev_probe(c.as_ptr()) };
    if r < 0 {
        return Err(rte_err(format!("rte_dev_probe({devargs})"), r));
    }
    Ok(())
}

/// Port ids that have an [`EthPort`]: at most one handle per port, so that a port's queue tokens
/// exist once. A claim ends when the port is removed or closed (never when a handle is merely
/// dropped: its tokens may still be in use).
static CLAIMED: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

fn claims() -> std::sync::MutexGuard<'static, BTreeSet<u16>> {
    // A panic while holding the lock leaves the set itself consistent.
    CLAIMED.lock().unwrap_or_else(|e| e.into_inner())
}

/// `RTE_ETH_DEV_INTR_LSC` (a static-inline-free macro bindgen does not carry over).
const RTE_ETH_DEV_INTR_LSC: u32 = 1 << 1;

/// Runs on DPDK's interrupt thread when a port's link changes: mirrors it into the flag.
unsafe extern "C" fn link_event(
    port: u16,
    _event: sys::rte_eth_event_type,
    arg: *mut c_void,
    _ret: *mut c_void,
) -> c_int {
    let mut l = sys::rte_eth_link::default();
    // SAFETY: valid out-pointer; nowait never blocks the interrupt thread.
    if unsafe { sys::rte_eth_link_get_nowait(port, &mut l) } == 0 {
        // SAFETY: `arg` is the flag registered by `watch_link`, alive until unregistered.
        let up = unsafe { &*(arg as *const AtomicBool) };
        up.store(l.link_status() != 0, Ordering::Release);
    }
    0
}

/// An active [`EthPort::watch_link`]; unregisters the callback when dropped.
pub struct LinkWatch {
    port: u16,
    arg: *mut c_void,
}

// SAFETY: `arg` is an `Arc<AtomicBool>` reference, shareable across threads.
unsafe impl Send for LinkWatch {}

impl Drop for LinkWatch {
    fn drop(&mut self) {
        for _ in 0..1000 {
            // SAFETY: the same (port, event, callback, arg) as registered.
            let r = unsafe {
                sys::rte_eth_dev_callback_unregister(
                    self.port,
                    sys::rte_eth_event_type_RTE_ETH_EVENT_INTR_LSC,
                    Some(link_event),
                    self.arg,
                )
            };
            // -EAGAIN: the callback is running right now; it will be done in a moment.
            if r != -libc::EAGAIN {
                if r == 0 {
                    // SAFETY: unregistered: no callback can use `arg` any more.
                    drop(unsafe { Arc::from_raw(self.arg as *const AtomicBool) });
                }
                // Otherwise (port already gone) the flag leaks rather than risk a use after
                // free; a few bytes per removed port.
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStatus {
    pub up: bool,
    pub speed_mbps: u32,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EthStats {
    pub ipackets: u64,
    pub opackets: u64,
    pub ibytes: u64,
    pub obytes: u64,
    pub imissed: u64,
    pub ierrors: u64,
    pub oerrors: u64,
    pub rx_nombuf: u64,
}

/// Queue limits of a port.
#[derive(Debug, Clone, Default)]
pub struct PortInfo {
    pub driver: String,
    pub max_rx_queues: u16,
    pub max_tx_queues: u16,
    pub rx_desc_max: u16,
    pub tx_desc_max: u16,
    /// The PMD reports link changes as events (vhost does), see [`EthPort::watch_link`].
    pub lsc_interrupt: bool,
}

/// The one handle of an ethdev port, owned by the control thread: taken with [`EthPort::by_name`]
/// (after [`dev_probe`] or for a `--vdev` of the EAL), never forged from a number. Configuration,
/// link and counters go through it; packets go through the queue tokens that
/// [`EthPort::setup_and_start`] returns, and the port is stopped only with all of them given back
/// ([`EthPort::stop_and_remove`], [`EthPort::stop_and_close`]).
#[derive(Debug)]
pub struct EthPort {
    id: u16,
    /// (rx, tx) queues whose tokens were handed out by `setup_and_start`.
    issued: Option<(u16, u16)>,
}

/// Receive queue `queue` of a port: the right to poll it. Exactly one exists per configured rx
/// queue (created by [`EthPort::setup_and_start`]); it is not `Clone`, so at most one thread
/// polls a queue at any time.
#[derive(Debug)]
pub struct RxQueueToken {
    port: u16,
    queue: u16,
}

/// Transmit queue `queue` of a port, for one thread at a time (not `Clone`); see
/// [`SharedTxQueueToken`] for a queue several threads transmit on.
#[derive(Debug)]
pub struct TxQueueToken {
    port: u16,
    queue: u16,
}

/// A transmit queue shared by several threads (a port with fewer tx queues than forwarding
/// threads, e.g. a single-queue vhost port): clones go to the threads, and every burst takes the
/// queue's spin lock. Made from a [`TxQueueToken`] with [`TxQueueToken::share`]; turned back into
/// it once every clone has been dropped ([`SharedTxQueueToken::into_exclusive`]).
#[derive(Debug, Clone)]
pub struct SharedTxQueueToken(Arc<SharedTx>);

#[derive(Debug)]
struct SharedTx {
    q: TxQueueToken,
    lock: TxLock,
}

/// The tokens of a started port: rx queue `i` at `rx[i]`, tx queue `i` at `tx[i]`.
#[derive(Debug, Default)]
pub struct Queues {
    pub rx: Vec<RxQueueToken>,
    pub tx: Vec<TxQueueToken>,
}

impl RxQueueToken {
    pub fn port_id(&self) -> u16 {
        self.port
    }
    pub fn queue(&self) -> u16 {
        self.queue
    }

    /// Receives up to `out.len()` packets into the first slots of `out`, which must be empty
    /// (a packet left in a slot that gets filled would leak); returns how many arrived.
    #[inline]
    pub fn rx_burst(&mut self, out: &mut [Option<Mbuf>]) -> usize {
        debug_assert!(out.iter().all(Option::is_none));
        let max = out.len().min(u16::MAX as usize) as u16;
        // SAFETY: `out` has room for `max` mbuf pointers (`Option<Mbuf>` is a nullable mbuf
        // pointer, see `Mbuf`); this token is the only one for (port, queue) and `&mut self`
        // makes this the only burst on it; the port is started while tokens exist (it is stopped
        // only with all of them handed back). The PMD writes `n` owned mbufs into the slots.
        unsafe {
            sys::rte_eth_rx_burst(self.port, self.queue, out.as_mut_ptr().cast(), max) as usize
        }
    }
}

impl TxQueueToken {
    pub fn port_id(&self) -> u16 {
        self.port
    }
    pub fn queue(&self) -> u16 {
        self.queue
    }

    /// Transmits `pkts` oldest first, up to the first empty slot; returns how many the queue
    /// took (those slots are now empty). What it refused stays in place, in order.
    #[inline]
    pub fn tx_burst(&mut self, pkts: &mut [Option<Mbuf>]) -> usize {
        tx_burst(self.port, self.queue, pkts)
    }

    /// Makes this queue shareable between threads, each burst under a lock.
    pub fn share(self) -> SharedTxQueueToken {
        SharedTxQueueToken(Arc::new(SharedTx {
            q: self,
            lock: TxLock::default(),
        }))
    }
}

impl SharedTxQueueToken {
    pub fn port_id(&self) -> u16 {
        self.0.q.port
    }
    pub fn queue(&self) -> u16 {
        self.0.q.queue
    }

    /// [`TxQueueToken::tx_burst`] under the queue's lock (uncontended with one thread).
    #[inline]
    pub fn tx_burst(&self, pkts: &mut [Option<Mbuf>]) -> usize {
        self.0.lock.lock();
        let sent = tx_burst(self.0.q.port, self.0.q.queue, pkts);
        self.0.lock.unlock();
        sent
    }

    /// The exclusive token back, if this is the last clone; otherwise `self` again.
    pub fn into_exclusive(self) -> Result<TxQueueToken, SharedTxQueueToken> {
        Arc::try_unwrap(self.0)
            .map(|s| s.q)
            .map_err(SharedTxQueueToken)
    }
}

/// Transmits the dense prefix of `pkts` on (port, queue); the caller holds the queue's token
/// exclusively, or its lock.
#[inline]
fn tx_burst(port: u16, queue: u16, pkts: &mut [Option<Mbuf>]) -> usize {
    let max = pkts.len().min(u16::MAX as usize);
    let pkts = &mut pkts[..max];
    // Branch-free over the whole array (it vectorises) for the usual case of no gap; only a
    // gap makes the burst stop before it.
    let gap = pkts.iter().fold(false, |g, p| g | p.is_none());
    let n = if gap {
        pkts.iter().position(Option::is_none).unwrap_or(pkts.len())
    } else {
        pkts.len()
    };
    if n == 0 {
        return 0;
    }
    // SAFETY: the first `n` slots hold live mbufs we own (checked just above), laid out as mbuf
    // pointers; this thread is the only one transmitting on (port, queue) (exclusive token or
    // its lock, see the callers); the port is started while tokens exist. tx_burst takes
    // ownership of the first `sent` mbufs and leaves the rest of the array as it was.
    let sent =
        unsafe { sys::rte_eth_tx_burst(port, queue, pkts.as_mut_ptr().cast(), n as u16) } as usize;
    for s in &mut pkts[..sent] {
        // The PMD owns these now: empty the slots without freeing.
        std::mem::forget(s.take());
    }
    sent
}

impl EthPort {
    /// The port DPDK created for device `name` (the devargs up to the first comma). Fails with
    /// `ENODEV` if there is none and `EBUSY` if that port already has a handle.
    pub fn by_name(name: &str) -> Result<EthPort, DpdkError> {
        let c = cstring("device name", name)?;
        let mut id = 0u16;
        // SAFETY: valid C string and out-pointer.
        let r = unsafe { sys::rte_eth_dev_get_port_by_name(c.as_ptr(), &mut id) };
        if r != 0 {
            return Err(DpdkError {
                what: format!("rte_eth_dev_get_port_by_name({name})"),
                code: libc::ENODEV,
                msg: format!("no ethdev named {name}"),
            });
        }
        if !claims().insert(id) {
            return Err(DpdkError {
                what: format!("port {id} ({name})"),
                code: libc::EBUSY,
                msg: "the port is already in use".into(),
            });
        }
        Ok(EthPort { id, issued: None })
    }

    pub fn id(&self) -> u16 {
        self.id
    }

    fn raw_info(&self) -> Result<sys::rte_eth_dev_info, DpdkError> {
        let mut info = sys::rte_eth_dev_info::default();
        // SAFETY: valid out-pointer to a zeroed struct.
        let r = unsafe { sys::rte_eth_dev_info_get(self.id, &mut info) };
        if r < 0 {
            return Err(rte_err(
                format!("rte_eth_dev_info_get(port {})", self.id),
                r,
            ));
        }
        Ok(info)
    }

    pub fn info(&self) -> Result<PortInfo, DpdkError> {
        let i = self.raw_info()?;
        let driver = if i.driver_name.is_null() {
            String::new()
        } else {
            // SAFETY: driver_name is a static string of the driver when non-NULL.
            unsafe { CStr::from_ptr(i.driver_name) }
                .to_string_lossy()
                .into_owned()
        };
        // SAFETY: dev_flags points at the device's flags word for the device's lifetime.
        let lsc = !i.dev_flags.is_null() && unsafe { *i.dev_flags } & RTE_ETH_DEV_INTR_LSC != 0;
        Ok(PortInfo {
            driver,
            max_rx_queues: i.max_rx_queues,
            max_tx_queues: i.max_tx_queues,
            rx_desc_max: i.rx_desc_lim.nb_max,
            tx_desc_max: i.tx_desc_lim.nb_max,
            lsc_interrupt: lsc,
        })
    }

    /// Keeps `up` equal to the port's link state from the moment it changes, through the PMD's
    /// link-state-change event (vhost: a guest connects or goes away), instead of waiting for the
    /// next poll. Only for ports started with LSC interrupts ([`PortInfo::lsc_interrupt`]); the
    /// watch ends when the returned guard is dropped.
    pub fn watch_link(&self, up: Arc<AtomicBool>) -> Result<LinkWatch, DpdkError> {
        let arg = Arc::into_raw(up) as *mut c_void;
        // SAFETY: `arg` stays valid until the guard unregisters the callback (then it is freed);
        // the callback only reads the link and stores into the flag.
        let r = unsafe {
            sys::rte_eth_dev_callback_register(
                self.id,
                sys::rte_eth_event_type_RTE_ETH_EVENT_INTR_LSC,
                Some(link_event),
                arg,
            )
        };
        if r < 0 {
            // SAFETY: not registered: the reference is still ours.
            drop(unsafe { Arc::from_raw(arg as *const AtomicBool) });
            return Err(rte_err(
                format!("rte_eth_dev_callback_register(port {}, LSC)", self.id),
                r,
            ));
        }
        Ok(LinkWatch { port: self.id, arg })
    }

    /// Configures `rxq` rx and `txq` tx queues with default settings, link-change events when
    /// the PMD has them, and starts the port; returns the queues' tokens. Once per port.
    pub fn setup_and_start(
        &mut self,
        rxq: u16,
        txq: u16,
        pool: &Mempool,
    ) -> Result<Queues, DpdkError> {
        let lsc = self.info()?.lsc_interrupt;
        self.setup(rxq, txq, pool, lsc)
    }

    /// [`EthPort::setup_and_start`] without link-change events (the link is polled).
    pub fn setup_and_start_polled(
        &mut self,
        rxq: u16,
        txq: u16,
        pool: &Mempool,
    ) -> Result<Queues, DpdkError> {
        self.setup(rxq, txq, pool, false)
    }

    fn setup(
        &mut self,
        rxq: u16,
        txq: u16,
        pool: &Mempool,
        lsc: bool,
    ) -> Result<Queues, DpdkError> {
        if self.issued.is_some() {
            return Err(DpdkError {
                what: format!("setup of port {}", self.id),
                code: libc::EBUSY,
                msg: "the port is already started".into(),
            });
        }
        let info = self.info()?;
        let mut conf = sys::rte_eth_conf::default();
        if lsc {
            // Link changes as events (see `watch_link`); PMDs without them are polled.
            conf.intr_conf.set_lsc(1);
        }
        // SAFETY: zeroed rte_eth_conf means "no offloads, no RSS", valid for every PMD; LSC is
        // requested only from PMDs that announce it. No queue token of this port exists yet, so
        // no thread bursts on it.
        let r = unsafe { sys::rte_eth_dev_configure(self.id, rxq, txq, &conf) };
        if r < 0 {
            return Err(rte_err(
                format!(
                    "rte_eth_dev_configure(port {}, {rxq} rx, {txq} tx)",
                    self.id
                ),
                r,
            ));
        }
        let clamp = |max: u16| if max == 0 { 1024 } else { max.min(1024) };
        // SAFETY: plain getter on a valid port id.
        let socket = unsafe { sys::rte_eth_dev_socket_id(self.id) };
        let socket = if socket < 0 { 0 } else { socket as u32 };
        for q in 0..rxq {
            // SAFETY: NULL rxconf selects the PMD default; the pool outlives the port.
            let r = unsafe {
                sys::rte_eth_rx_queue_setup(
                    self.id,
                    q,
                    clamp(info.rx_desc_max),
                    socket,
                    std::ptr::null(),
                    pool.as_ptr(),
                )
            };
            if r < 0 {
                return Err(rte_err(
                    format!("rte_eth_rx_queue_setup(port {}, q {q})", self.id),
                    r,
                ));
            }
        }
        for q in 0..txq {
            // SAFETY: NULL txconf selects the PMD default.
            let r = unsafe {
                sys::rte_eth_tx_queue_setup(
                    self.id,
                    q,
                    clamp(info.tx_desc_max),
                    socket,
                    std::ptr::null(),
                )
            };
            if r < 0 {
                return Err(rte_err(
                    format!("rte_eth_tx_queue_setup(port {}, q {q})", self.id),
                    r,
                ));
            }
        }
        // SAFETY: configured port.
        let r = unsafe { sys::rte_eth_dev_start(self.id) };
        if r < 0 {
            return Err(rte_err(format!("rte_eth_dev_start(port {})", self.id), r));
        }
        // A switch port must see frames for every MAC; PMDs that cannot (vhost) just refuse.
        // SAFETY: started port.
        unsafe {
            sys::rte_eth_promiscuous_enable(self.id);
        }
        self.issued = Some((rxq, txq));
        let port = self.id;
        Ok(Queues {
            rx: (0..rxq).map(|queue| RxQueueToken { port, queue }).collect(),
            tx: (0..txq).map(|queue| TxQueueToken { port, queue }).collect(),
        })
    }

    pub fn link(&self) -> LinkStatus {
        let mut l = sys::rte_eth_link::default();
        // SAFETY: valid out-pointer; nowait never blocks the control thread.
        let r = unsafe { sys::rte_eth_link_get_nowait(self.id, &mut l) };
        if r < 0 {
            return LinkStatus::default();
        }
        LinkStatus {
            up: l.link_status() != 0,
            speed_mbps: l.link_speed,
        }
    }

    pub fn stats(&self) -> EthStats {
        let mut s = sys::rte_eth_stats::default();
        // SAFETY: valid out-pointer.
        let r = unsafe { sys::rte_eth_stats_get(self.id, &mut s) };
        if r < 0 {
            return EthStats::default();
        }
        EthStats {
            ipackets: s.ipackets,
            opackets: s.opackets,
            ibytes: s.ibytes,
            obytes: s.obytes,
            imissed: s.imissed,
            ierrors: s.ierrors,
            oerrors: s.oerrors,
            rx_nombuf: s.rx_nombuf,
        }
    }

    pub fn stats_reset(&self) {
        // SAFETY: valid port id.
        unsafe {
            sys::rte_eth_stats_reset(self.id);
        }
    }

    /// Whether `q` is every token this port handed out: then no thread can burst on it.
    fn check_all_back(&self, q: &Queues) -> Result<(), DpdkError> {
        let (rxq, txq) = self.issued.unwrap_or((0, 0));
        let complete = |ids: &mut dyn Iterator<Item = (u16, u16)>, n: u16| {
            let mut seen = vec![false; n as usize];
            let mut count = 0u16;
            for (port, queue) in ids {
                if port != self.id
                    || queue >= n
                    || std::mem::replace(&mut seen[queue as usize], true)
                {
                    return false;
                }
                count += 1;
            }
            count == n
        };
        if complete(&mut q.rx.iter().map(|t| (t.port, t.queue)), rxq)
            && complete(&mut q.tx.iter().map(|t| (t.port, t.queue)), txq)
        {
            Ok(())
        } else {
            Err(DpdkError {
                what: format!("stopping port {}", self.id),
                code: libc::EBUSY,
                msg: format!(
                    "{} of {rxq} rx and {} of {txq} tx queue tokens given back; the port was left \
                     running",
                    q.rx.len(),
                    q.tx.len()
                ),
            })
        }
    }

    /// Stops the port and removes its device (for a vdev this destroys it, for net_vhost it
    /// unregisters the socket). `queues` must be every token the port handed out (then no thread
    /// can use it any more); otherwise the port is left running and this fails with `EBUSY`.
    pub fn stop_and_remove(self, queues: Queues) -> Result<(), DpdkError> {
        self.check_all_back(&queues)?;
        drop(queues);
        let info = self.raw_info()?;
        // SAFETY: every queue token is back (checked above), so no thread bursts on this port.
        unsafe {
            sys::rte_eth_dev_stop(self.id);
        }
        // SAFETY: info.device is the live rte_device of this port; removal also closes the port.
        let r = unsafe { sys::rte_dev_remove(info.device) };
        if r < 0 {
            // SAFETY: the device could not be unplugged (e.g. a bus without hotplug): at least
            // release the port.
            unsafe {
                sys::rte_eth_dev_close(self.id);
            }
            claims().remove(&self.id);
            return Err(rte_err(format!("rte_dev_remove(port {})", self.id), r));
        }
        claims().remove(&self.id);
        Ok(())
    }

    /// Stops and closes the port, leaving its device (e.g. an EAL `--vdev` at exit). The same
    /// contract on `queues` as [`EthPort::stop_and_remove`].
    pub fn stop_and_close(self, queues: Queues) -> Result<(), DpdkError> {
        self.check_all_back(&queues)?;
        drop(queues);
        // SAFETY: every queue token is back (checked above), so no thread bursts on this port.
        unsafe {
            sys::rte_eth_dev_stop(self.id);
            sys::rte_eth_dev_close(self.id);
        }
        claims().remove(&self.id);
        Ok(())
    }
}

/// Serialises tx on a queue that several threads share ([`SharedTxQueueToken`]). Uncontended
/// with one thread.
#[derive(Debug, Default)]
struct TxLock(AtomicBool);

impl TxLock {
    #[inline]
    fn lock(&self) {
        while self
            .0
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            std::hint::spin_loop();
        }
    }
    #[inline]
    fn unlock(&self) {
        self.0.store(false, Ordering::Release);
    }
}

type RawMbuf = *mut sys::rte_mbuf;

/// One owned packet buffer. Dropping it frees it (or drops one reference of a shared buffer).
///
/// `repr(transparent)` over a non-null pointer: `Option<Mbuf>` is an mbuf pointer with NULL for
/// `None`, so arrays of `Option<Mbuf>` are handed to DPDK's burst and bulk functions as they are.
#[repr(transparent)]
pub struct Mbuf(NonNull<sys::rte_mbuf>);

const _: () = assert!(std::mem::size_of::<Option<Mbuf>>() == std::mem::size_of::<RawMbuf>());

// SAFETY: an mbuf is owned by exactly one Mbuf (or one reference of its refcount); ownership may
// move between threads.
unsafe impl Send for Mbuf {}

/// Why a raw edit of an mbuf's data was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MbufError {
    #[error("not enough headroom")]
    NoHeadroom,
    #[error("first segment too short")]
    TooShort,
    #[error("buffer shared with another copy")]
    Shared,
}

impl Mbuf {
    #[inline]
    fn raw(&self) -> &sys::rte_mbuf {
        // SAFETY: we own a live mbuf.
        unsafe { self.0.as_ref() }
    }

    /// Length of the whole packet (all segments).
    #[inline]
    pub fn pkt_len(&self) -> u32 {
        self.raw().pkt_len
    }

    /// The first segment's bytes (where all headers are).
    #[inline]
    pub fn data(&self) -> &[u8] {
        seg_data(self.0.as_ptr())
    }

    /// Not shared with other copies: the only reference of a direct mbuf.
    #[inline]
    pub fn is_unique(&self) -> bool {
        // Indirect mbufs (rte_pktmbuf_clone) point at another buffer: treat as shared.
        let m = self.raw();
        m.refcnt == 1 && m.ol_flags & sys::RTE_MBUF_F_INDIRECT == 0
    }

    /// Writable first segment, or `None` while the buffer is shared with other copies.
    #[inline]
    pub fn data_mut(&mut self) -> Option<&mut [u8]> {
        if !self.is_unique() {
            return None;
        }
        let m = self.0.as_ptr();
        // SAFETY: unique, live mbuf; buf_addr + data_off .. + data_len lies inside its buffer and
        // nobody else reads or writes it.
        unsafe {
            let p = ((*m).buf_addr as *mut u8).add((*m).data_off as usize);
            Some(std::slice::from_raw_parts_mut(p, (*m).data_len as usize))
        }
    }

    /// Another reference to the same buffer (refcount + 1): for copies that go out unchanged.
    #[inline]
    pub fn share(&self) -> Mbuf {
        // SAFETY: live mbuf; the refcount update is atomic when the buffer is already shared.
        unsafe {
            sys::rte_mbuf_refcnt_update(self.0.as_ptr(), 1);
        }
        Mbuf(self.0)
    }

    /// A private deep copy from the same pool, for copies that need their own edits.
    #[inline]
    pub fn deep_copy(&self) -> Option<Mbuf> {
        let m = self.0.as_ptr();
        // SAFETY: live source mbuf; its own pool is valid while any of its mbufs lives.
        let c = unsafe { sys::rte_pktmbuf_copy(m, (*m).pool, 0, u32::MAX) };
        NonNull::new(c).map(Mbuf)
    }

    /// Moves the start of the data `n` bytes into the headroom (`rte_pktmbuf_prepend`) and
    /// returns the whole, longer first segment; the new bytes come first and are unspecified.
    #[inline]
    pub fn prepend(&mut self, n: u16) -> Result<&mut [u8], MbufError> {
        if !self.is_unique() {
            return Err(MbufError::Shared);
        }
        let m = self.0.as_ptr();
        // SAFETY: unique live mbuf; data_off only moves within the buffer's headroom and the
        // lengths grow by what it moved.
        unsafe {
            if (*m).data_off < n {
                return Err(MbufError::NoHeadroom);
            }
            (*m).data_off -= n;
            (*m).data_len += n;
            (*m).pkt_len += n as u32;
        }
        Ok(self.data_mut().expect("unique"))
    }

    /// Drops the first `n` bytes of the data (`rte_pktmbuf_adj`); the first segment must be
    /// longer than `n`.
    #[inline]
    pub fn adj(&mut self, n: u16) -> Result<(), MbufError> {
        if !self.is_unique() {
            return Err(MbufError::Shared);
        }
        let m = self.0.as_ptr();
        // SAFETY: unique live mbuf whose first segment is longer than `n` (checked): data_off
        // stays inside the segment's data.
        unsafe {
            if (*m).data_len <= n {
                return Err(MbufError::TooShort);
            }
            (*m).data_off += n;
            (*m).data_len -= n;
            (*m).pkt_len -= n as u32;
        }
        Ok(())
    }

    /// Gives a single-segment packet exactly `len` bytes from its data start and returns them
    /// (for frames built in fresh mbufs; new bytes are unspecified). `None` if the mbuf is shared
    /// or chained, or its buffer has no room for `len` bytes.
    #[inline]
    pub fn set_len(&mut self, len: usize) -> Option<&mut [u8]> {
        let m = self.raw();
        if !self.is_unique() || m.nb_segs != 1 || m.data_off as usize + len > m.buf_len as usize {
            return None;
        }
        let m = self.0.as_ptr();
        // SAFETY: unique single-segment live mbuf; data_off + len lies within its buffer
        // (checked above), so the segment stays inside it.
        unsafe {
            (*m).data_len = len as u16;
            (*m).pkt_len = len as u32;
        }
        self.data_mut()
    }

    /// Frees the packets in `slots` with one bulk call (empty slots are skipped) and empties them.
    #[inline]
    pub fn free_bulk(slots: &mut [Option<Mbuf>]) {
        if slots.iter().all(Option::is_none) {
            return;
        }
        // SAFETY: the slots hold live mbufs we own or NULL (`None`), laid out as mbuf pointers;
        // rte_pktmbuf_free_bulk skips NULL entries.
        unsafe { sys::rte_pktmbuf_free_bulk(slots.as_mut_ptr().cast(), slots.len() as u32) }
        // SAFETY: freed above: write NULL (`None`) over every slot without dropping again.
        unsafe { std::ptr::write_bytes(slots.as_mut_ptr(), 0, slots.len()) }
    }
}

#[inline]
fn seg_data<'a>(m: RawMbuf) -> &'a [u8] {
    // SAFETY: callers pass a live mbuf they own (or hold a reference of) for at least 'a; its
    // first segment is buf_addr + data_off .. + data_len.
    unsafe {
        let p = ((*m).buf_addr as *const u8).add((*m).data_off as usize);
        std::slice::from_raw_parts(p, (*m).data_len as usize)
    }
}

impl Drop for Mbuf {
    fn drop(&mut self) {
        // SAFETY: we own this reference; free drops it and returns the buffer at zero.
        unsafe { sys::rte_pktmbuf_free(self.0.as_ptr()) }
    }
}

/// Pins the calling thread to `cpus` (empty: every CPU of the machine).
pub fn set_affinity(cpus: &[usize]) -> std::io::Result<()> {
    // SAFETY: cpu_set_t is plain data; CPU_ZERO/CPU_SET write inside it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let all: Vec<usize> = if cpus.is_empty() {
        (0..num_cpus()).collect()
    } else {
        cpus.to_vec()
    };
    for &c in &all {
        // SAFETY: c < CPU_SETSIZE is checked by libc's CPU_SET (it ignores out-of-range bits).
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    // SAFETY: pid 0 is the calling thread; set is a valid cpu_set_t of the given size.
    let r = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

pub fn num_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .max(
            // available_parallelism honours our own (pinned) affinity; ask sysconf for the machine.
            // SAFETY: sysconf has no preconditions.
            unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1) as usize,
        )
}

/// The DPDK version string, e.g. "DPDK 22.11.11".
pub fn version() -> String {
    // SAFETY: rte_version returns a static string.
    unsafe { CStr::from_ptr(sys::rte_version()) }
        .to_string_lossy()
        .into_owned()
}
