//! `evs-dpdk`: the safe layer over `dpdk-sys` for the EAL, mempools, ethdev ports and mbufs, shared
//! by `evsd`, `evs-pktgen` and `evs-sink`. Every `unsafe` block that touches DPDK lives here.
//!
//! Threading contract (DPDK's, made explicit): EAL init, port setup, hotplug and teardown happen on
//! the control thread; rx/tx bursts on a (port, queue) happen on exactly one thread at a time, which
//! the forwarding module guarantees by construction (and with a [`TxLock`] where a tx queue must be
//! shared).

use dpdk_sys as sys;
use std::ffi::{CStr, CString};
use std::os::raw::{c_char, c_int, c_void};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Most packets handled per burst; fixed so bursts live on the stack.
pub const MAX_BURST: usize = 32;
/// Size of the 802.1Q tag.
const VLAN_TAG_LEN: usize = 4;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;

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
        if EAL_UP.swap(true, Ordering::SeqCst) {
            return Err(DpdkError {
                what: "rte_eal_init".into(),
                code: libc::EALREADY,
                msg: "the EAL is already initialised in this process".into(),
            });
        }
        let mut owned = vec![cstring("eal args", "evsd")?];
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
    /// thread joined first.
    pub fn cleanup(self) {
        // SAFETY: called once, after all users of DPDK objects are gone (enforced by ownership of
        // `self` and the caller's shutdown order).
        unsafe {
            sys::rte_eal_cleanup();
        }
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

/// Hot-plugs a device: a PCI address (`0000:03:00.0`) or a vdev (`net_tap0,iface=tap0`).
pub fn dev_probe(devargs: &str) -> Result<(), DpdkError> {
    let c = cstring("devargs", devargs)?;
    // SAFETY: valid C string; control thread only.
    let r = unsafe { sys::rte_dev_probe(c.as_ptr()) };
    if r < 0 {
        return Err(rte_err(format!("rte_dev_probe({devargs})"), r));
    }
    Ok(())
}

/// The ethdev port created for a device name (the devargs up to the first comma).
pub fn port_by_name(name: &str) -> Option<u16> {
    let c = CString::new(name).ok()?;
    let mut id = 0u16;
    // SAFETY: valid C string and out-pointer.
    let r = unsafe { sys::rte_eth_dev_get_port_by_name(c.as_ptr(), &mut id) };
    (r == 0).then_some(id)
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
    port: EthPort,
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
                    self.port.0,
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

/// An ethdev port id. Control-thread operations take `&self`; the type is `Copy` so forwarding
/// threads can name the port in bursts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EthPort(pub u16);

impl EthPort {
    pub fn id(self) -> u16 {
        self.0
    }

    fn raw_info(self) -> Result<sys::rte_eth_dev_info, DpdkError> {
        let mut info = sys::rte_eth_dev_info::default();
        // SAFETY: valid out-pointer to a zeroed struct.
        let r = unsafe { sys::rte_eth_dev_info_get(self.0, &mut info) };
        if r < 0 {
            return Err(rte_err(format!("rte_eth_dev_info_get(port {})", self.0), r));
        }
        Ok(info)
    }

    pub fn info(self) -> Result<PortInfo, DpdkError> {
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
    pub fn watch_link(self, up: Arc<AtomicBool>) -> Result<LinkWatch, DpdkError> {
        let arg = Arc::into_raw(up) as *mut c_void;
        // SAFETY: `arg` stays valid until the guard unregisters the callback (then it is freed);
        // the callback only reads the link and stores into the flag.
        let r = unsafe {
            sys::rte_eth_dev_callback_register(
                self.0,
                sys::rte_eth_event_type_RTE_ETH_EVENT_INTR_LSC,
                Some(link_event),
                arg,
            )
        };
        if r < 0 {
            // SAFETY: not registered: the reference is still ours.
            drop(unsafe { Arc::from_raw(arg as *const AtomicBool) });
            return Err(rte_err(
                format!("rte_eth_dev_callback_register(port {}, LSC)", self.0),
                r,
            ));
        }
        Ok(LinkWatch { port: self, arg })
    }

    /// Configures `rxq` rx and `txq` tx queues with default settings and starts the port.
    pub fn setup_and_start(self, rxq: u16, txq: u16, pool: &Mempool) -> Result<(), DpdkError> {
        let info = self.info()?;
        let mut conf = sys::rte_eth_conf::default();
        if info.lsc_interrupt {
            // Link changes as events (see `watch_link`); PMDs without them are polled.
            conf.intr_conf.set_lsc(1);
        }
        // SAFETY: zeroed rte_eth_conf means "no offloads, no RSS", valid for every PMD; LSC is
        // requested only from PMDs that announce it.
        let r = unsafe { sys::rte_eth_dev_configure(self.0, rxq, txq, &conf) };
        if r < 0 {
            return Err(rte_err(
                format!("rte_eth_dev_configure(port {}, {rxq} rx, {txq} tx)", self.0),
                r,
            ));
        }
        let clamp = |max: u16| if max == 0 { 1024 } else { max.min(1024) };
        // SAFETY: plain getter on a valid port id.
        let socket = unsafe { sys::rte_eth_dev_socket_id(self.0) };
        let socket = if socket < 0 { 0 } else { socket as u32 };
        for q in 0..rxq {
            // SAFETY: NULL rxconf selects the PMD default; the pool outlives the port.
            let r = unsafe {
                sys::rte_eth_rx_queue_setup(
                    self.0,
                    q,
                    clamp(info.rx_desc_max),
                    socket,
                    std::ptr::null(),
                    pool.as_ptr(),
                )
            };
            if r < 0 {
                return Err(rte_err(
                    format!("rte_eth_rx_queue_setup(port {}, q {q})", self.0),
                    r,
                ));
            }
        }
        for q in 0..txq {
            // SAFETY: NULL txconf selects the PMD default.
            let r = unsafe {
                sys::rte_eth_tx_queue_setup(
                    self.0,
                    q,
                    clamp(info.tx_desc_max),
                    socket,
                    std::ptr::null(),
                )
            };
            if r < 0 {
                return Err(rte_err(
                    format!("rte_eth_tx_queue_setup(port {}, q {q})", self.0),
                    r,
                ));
            }
        }
        // SAFETY: configured port.
        let r = unsafe { sys::rte_eth_dev_start(self.0) };
        if r < 0 {
            return Err(rte_err(format!("rte_eth_dev_start(port {})", self.0), r));
        }
        // A switch port must see frames for every MAC; PMDs that cannot (vhost) just refuse.
        // SAFETY: started port.
        unsafe {
            sys::rte_eth_promiscuous_enable(self.0);
        }
        Ok(())
    }

    pub fn link(self) -> LinkStatus {
        let mut l = sys::rte_eth_link::default();
        // SAFETY: valid out-pointer; nowait never blocks the control thread.
        let r = unsafe { sys::rte_eth_link_get_nowait(self.0, &mut l) };
        if r < 0 {
            return LinkStatus::default();
        }
        LinkStatus {
            up: l.link_status() != 0,
            speed_mbps: l.link_speed,
        }
    }

    pub fn stats(self) -> EthStats {
        let mut s = sys::rte_eth_stats::default();
        // SAFETY: valid out-pointer.
        let r = unsafe { sys::rte_eth_stats_get(self.0, &mut s) };
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

    pub fn stats_reset(self) {
        // SAFETY: valid port id.
        unsafe {
            sys::rte_eth_stats_reset(self.0);
        }
    }

    /// Stops the port and removes its device (for a vdev this destroys it, for net_vhost it
    /// unregisters the socket). No thread may use the port any more.
    pub fn stop_and_remove(self) -> Result<(), DpdkError> {
        let info = self.raw_info()?;
        // SAFETY: no forwarding thread polls this port any more (caller's contract).
        unsafe {
            sys::rte_eth_dev_stop(self.0);
        }
        // SAFETY: info.device is the live rte_device of this port; removal also closes the port.
        let r = unsafe { sys::rte_dev_remove(info.device) };
        if r < 0 {
            // SAFETY: the device could not be unplugged (e.g. a bus without hotplug): at least
            // release the port.
            unsafe {
                sys::rte_eth_dev_close(self.0);
            }
            return Err(rte_err(format!("rte_dev_remove(port {})", self.0), r));
        }
        Ok(())
    }
}

/// Serialises tx on a queue that several forwarding threads must share (a port with fewer tx
/// queues than threads, e.g. a single-queue vhost port). Uncontended with one thread.
#[derive(Debug, Default)]
pub struct TxLock(AtomicBool);

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
pub struct Mbuf(NonNull<sys::rte_mbuf>);

// SAFETY: an mbuf is owned by exactly one Mbuf (or one reference of its refcount); ownership may
// move between threads.
unsafe impl Send for Mbuf {}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VlanError {
    #[error("no headroom for a VLAN tag")]
    NoHeadroom,
    #[error("frame too short or not tagged")]
    NotTagged,
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

    #[inline]
    fn unique(&self) -> bool {
        // Indirect mbufs (rte_pktmbuf_clone) point at another buffer: treat as shared.
        let m = self.raw();
        m.refcnt == 1 && m.ol_flags & sys::RTE_MBUF_F_INDIRECT == 0
    }

    /// Writable first segment, or `None` while the buffer is shared with other copies.
    #[inline]
    pub fn data_mut(&mut self) -> Option<&mut [u8]> {
        if !self.unique() {
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

    /// A private deep copy from the same pool, for copies that need their own VLAN edit.
    #[inline]
    pub fn deep_copy(&self) -> Option<Mbuf> {
        let m = self.0.as_ptr();
        // SAFETY: live source mbuf; its own pool is valid while any of its mbufs lives.
        let c = unsafe { sys::rte_pktmbuf_copy(m, (*m).pool, 0, u32::MAX) };
        NonNull::new(c).map(Mbuf)
    }

    /// Adds 4 bytes in front (headroom) and returns the whole first segment.
    fn grow_front(&mut self) -> Result<&mut [u8], VlanError> {
        if !self.unique() {
            return Err(VlanError::Shared);
        }
        let m = self.0.as_ptr();
        // SAFETY: unique live mbuf; we only move data_off within the buffer's headroom.
        unsafe {
            if ((*m).data_off as usize) < VLAN_TAG_LEN {
                return Err(VlanError::NoHeadroom);
            }
            (*m).data_off -= VLAN_TAG_LEN as u16;
            (*m).data_len += VLAN_TAG_LEN as u16;
            (*m).pkt_len += VLAN_TAG_LEN as u32;
        }
        Ok(self.data_mut().expect("unique"))
    }

    fn shrink_front(&mut self) {
        let m = self.0.as_ptr();
        // SAFETY: unique live mbuf whose first segment is longer than the tag (checked by the
        // caller).
        unsafe {
            (*m).data_off += VLAN_TAG_LEN as u16;
            (*m).data_len -= VLAN_TAG_LEN as u16;
            (*m).pkt_len -= VLAN_TAG_LEN as u32;
        }
    }

    /// Inserts an 802.1Q tag after the MAC addresses.
    pub fn vlan_push(&mut self, tci: u16) -> Result<(), VlanError> {
        if self.data().len() < 14 {
            return Err(VlanError::NotTagged);
        }
        let d = self.grow_front()?;
        d.copy_within(4..16, 0);
        d[12..14].copy_from_slice(&ETH_P_8021Q.to_be_bytes());
        d[14..16].copy_from_slice(&tci.to_be_bytes());
        Ok(())
    }

    /// Removes the outer tag.
    pub fn vlan_pop(&mut self) -> Result<(), VlanError> {
        let d = self.data_mut().ok_or(VlanError::Shared)?;
        if d.len() < 18 || !is_tag(d) {
            return Err(VlanError::NotTagged);
        }
        d.copy_within(0..12, 4);
        self.shrink_front();
        Ok(())
    }

    /// Gives the outer tag VLAN `vid` (keeping its priority bits), pushing one if untagged.
    pub fn vlan_set(&mut self, vid: u16) -> Result<(), VlanError> {
        let d = self.data_mut().ok_or(VlanError::Shared)?;
        if d.len() >= 18 && is_tag(d) {
            let tci = u16::from_be_bytes([d[14], d[15]]);
            let tci = (tci & 0xf000) | (vid & 0x0fff);
            d[14..16].copy_from_slice(&tci.to_be_bytes());
            Ok(())
        } else {
            self.vlan_push(vid & 0x0fff)
        }
    }

    fn into_raw(self) -> RawMbuf {
        let p = self.0.as_ptr();
        std::mem::forget(self);
        p
    }
}

#[inline]
fn is_tag(d: &[u8]) -> bool {
    let t = u16::from_be_bytes([d[12], d[13]]);
    t == ETH_P_8021Q || t == ETH_P_8021AD
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

/// Up to [`MAX_BURST`] received packets. Slots are taken out one by one ([`MbufBurst::take`]);
/// whatever is left is freed in bulk.
pub struct MbufBurst {
    pkts: [RawMbuf; MAX_BURST],
    len: usize,
}

impl Default for MbufBurst {
    fn default() -> Self {
        MbufBurst {
            pkts: [std::ptr::null_mut(); MAX_BURST],
            len: 0,
        }
    }
}

// SAFETY: owns its mbufs like a Vec<Mbuf>.
unsafe impl Send for MbufBurst {}

impl MbufBurst {
    /// Receives up to `max` (≤ 32) packets from `port`/`queue`; the burst must be empty.
    #[inline]
    pub fn rx(&mut self, port: EthPort, queue: u16, max: usize) -> usize {
        debug_assert_eq!(self.len, 0);
        let max = max.min(MAX_BURST) as u16;
        // SAFETY: the array has room for `max` pointers; the caller is the only thread polling
        // this (port, queue) (forwarding plan invariant).
        let n = unsafe { sys::rte_eth_rx_burst(port.0, queue, self.pkts.as_mut_ptr(), max) };
        self.len = n as usize;
        self.len
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The first segment of packet `i`; `None` once the packet was taken.
    #[inline]
    pub fn data(&self, i: usize) -> Option<&[u8]> {
        let m = *self.pkts[..self.len].get(i)?;
        (!m.is_null()).then(|| seg_data(m))
    }

    #[inline]
    pub fn pkt_len(&self, i: usize) -> u32 {
        let m = self.pkts[..self.len][i];
        if m.is_null() {
            0
        } else {
            // SAFETY: live mbuf owned by the burst.
            unsafe { (*m).pkt_len }
        }
    }

    /// Views of all packets, for the classifier. `out` is caller storage so nothing allocates.
    #[inline]
    pub fn frames<'a>(&'a self, out: &mut [&'a [u8]; MAX_BURST]) -> usize {
        for (i, &m) in self.pkts[..self.len].iter().enumerate() {
            out[i] = if m.is_null() { &[] } else { seg_data(m) };
        }
        self.len
    }

    /// Moves packet `i` out of the burst.
    #[inline]
    pub fn take(&mut self, i: usize) -> Option<Mbuf> {
        let slot = &mut self.pkts[..self.len][i];
        let m = std::mem::replace(slot, std::ptr::null_mut());
        NonNull::new(m).map(Mbuf)
    }

    /// Frees what was not taken and empties the burst.
    #[inline]
    pub fn clear(&mut self) {
        let mut keep = 0;
        for i in 0..self.len {
            if !self.pkts[i].is_null() {
                self.pkts[keep] = self.pkts[i];
                keep += 1;
            }
        }
        if keep > 0 {
            // SAFETY: the first `keep` pointers are live mbufs owned by the burst.
            unsafe { sys::rte_pktmbuf_free_bulk(self.pkts.as_mut_ptr(), keep as u32) }
        }
        self.len = 0;
    }
}

impl Drop for MbufBurst {
    fn drop(&mut self) {
        self.clear();
    }
}

/// Outcome of one tx flush.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TxOutcome {
    pub sent: u32,
    pub sent_bytes: u64,
    /// Packets the queue could not take now; they stay in the buffer for the next flush.
    pub left: u32,
}

/// How many packets a [`TxBuffer`] holds: two bursts, so that packets a congested port cannot
/// take right now wait for the next loop iteration (where higher priority classes go first)
/// instead of being dropped at once, while a stalled destination pins only a few mbufs.
pub const TX_BUFFER_CAP: usize = 2 * MAX_BURST;

/// Packets waiting for one destination (port, tx queue): filled during a loop iteration, sent at
/// its end; what the port refuses stays queued, and new packets are refused (tail drop) while
/// the buffer is full.
pub struct TxBuffer {
    pkts: [RawMbuf; TX_BUFFER_CAP],
    lens: [u32; TX_BUFFER_CAP],
    len: usize,
}

// SAFETY: owns its mbufs.
unsafe impl Send for TxBuffer {}

impl Default for TxBuffer {
    fn default() -> Self {
        TxBuffer {
            pkts: [std::ptr::null_mut(); TX_BUFFER_CAP],
            lens: [0; TX_BUFFER_CAP],
            len: 0,
        }
    }
}

impl TxBuffer {
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline]
    pub fn is_full(&self) -> bool {
        self.len == TX_BUFFER_CAP
    }

    /// Queues `m`, or hands it back when the buffer is full.
    #[inline]
    pub fn push(&mut self, m: Mbuf) -> Result<(), Mbuf> {
        if self.len == TX_BUFFER_CAP {
            return Err(m);
        }
        self.lens[self.len] = m.pkt_len();
        self.pkts[self.len] = m.into_raw();
        self.len += 1;
        Ok(())
    }

    /// Sends what is queued on `port`/`queue`, oldest first; what the queue cannot take stays.
    #[inline]
    pub fn flush(&mut self, port: EthPort, queue: u16, lock: Option<&TxLock>) -> TxOutcome {
        if self.len == 0 {
            return TxOutcome::default();
        }
        if let Some(l) = lock {
            l.lock();
        }
        // SAFETY: `len` live mbufs; this thread is the only user of (port, queue) — exclusively
        // by plan or under `lock`. tx_burst takes ownership of the first `sent` mbufs.
        let sent = unsafe {
            sys::rte_eth_tx_burst(port.0, queue, self.pkts.as_mut_ptr(), self.len as u16)
        } as usize;
        if let Some(l) = lock {
            l.unlock();
        }
        let out = TxOutcome {
            sent: sent as u32,
            sent_bytes: self.lens[..sent].iter().map(|&l| l as u64).sum(),
            left: (self.len - sent) as u32,
        };
        if sent > 0 && sent < self.len {
            self.pkts.copy_within(sent..self.len, 0);
            self.lens.copy_within(sent..self.len, 0);
        }
        self.len -= sent;
        out
    }

    /// Frees everything queued (the destination went away or is down).
    pub fn discard(&mut self) -> u32 {
        let n = self.len;
        if n > 0 {
            // SAFETY: `n` live mbufs owned by the buffer.
            unsafe { sys::rte_pktmbuf_free_bulk(self.pkts.as_mut_ptr(), n as u32) }
        }
        self.len = 0;
        n as u32
    }
}

impl Drop for TxBuffer {
    fn drop(&mut self) {
        self.discard();
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
