//! The few DPDK calls the generator needs, over `dpdk-sys` (kept here rather than in the dataplane
//! crate, which other people are changing).

use dpdk_sys as sys;
use std::ffi::{CStr, CString};
use std::os::raw::c_char;

pub type RawMbuf = *mut sys::rte_mbuf;

fn err(what: &str, code: i32) -> String {
    // SAFETY: rte_strerror returns a static/thread-local string for any code.
    let msg = unsafe { CStr::from_ptr(sys::rte_strerror(code.abs())) };
    format!("{what}: {} ({})", msg.to_string_lossy(), code.abs())
}

fn rte_errno() -> i32 {
    // SAFETY: reads a thread-local through the dpdk-sys shim.
    unsafe { sys::evs_rte_errno() }
}

/// Initialises the EAL with `args` (without argv[0]). Once per process.
pub fn eal_init(args: &[String]) -> Result<(), String> {
    let mut argv: Vec<*mut c_char> = std::iter::once("evs-pktgen".to_owned())
        .chain(args.iter().cloned())
        .map(|a| CString::new(a).expect("NUL in EAL argument").into_raw())
        .collect();
    let argc = argv.len() as i32;
    argv.push(std::ptr::null_mut());
    let argv = Box::leak(argv.into_boxed_slice()); // the EAL may keep pointers into argv
                                                   // SAFETY: NULL-terminated array of argc C strings living for the whole process.
    let r = unsafe { sys::rte_eal_init(argc, argv.as_mut_ptr()) };
    if r < 0 {
        return Err(err(
            &format!("rte_eal_init({})", args.join(" ")),
            rte_errno(),
        ));
    }
    Ok(())
}

pub fn eal_cleanup() {
    // SAFETY: every port is stopped and no mbuf is in use any more.
    unsafe {
        sys::rte_eal_cleanup();
    }
}

pub fn tsc_hz() -> u64 {
    // SAFETY: getter, valid after EAL init.
    unsafe { sys::rte_get_tsc_hz() }
}

#[inline(always)]
pub fn rdtsc() -> u64 {
    // SAFETY: no preconditions on x86_64.
    unsafe { core::arch::x86_64::_rdtsc() }
}

pub struct Pool(pub *mut sys::rte_mempool);

impl Pool {
    pub fn create(name: &str, n: u32) -> Result<Pool, String> {
        let c = CString::new(name).unwrap();
        // SAFETY: EAL is up; valid C string.
        let p = unsafe {
            sys::rte_pktmbuf_pool_create(
                c.as_ptr(),
                n,
                256,
                0,
                sys::RTE_MBUF_DEFAULT_BUF_SIZE as u16,
                -1,
            )
        };
        if p.is_null() {
            return Err(err("rte_pktmbuf_pool_create", rte_errno()));
        }
        Ok(Pool(p))
    }

    /// Fills `out` with fresh mbufs; false when the pool is short.
    #[inline]
    pub fn alloc_bulk(&self, out: &mut [RawMbuf]) -> bool {
        // SAFETY: `out` has room for out.len() pointers; the pool is live.
        unsafe { sys::rte_pktmbuf_alloc_bulk(self.0, out.as_mut_ptr(), out.len() as u32) == 0 }
    }
}

/// The port created for devargs (its name is the devargs up to the first comma).
pub fn port_by_name(name: &str) -> Option<u16> {
    let c = CString::new(name).ok()?;
    let mut id = 0u16;
    // SAFETY: valid C string and out-pointer.
    (unsafe { sys::rte_eth_dev_get_port_by_name(c.as_ptr(), &mut id) } == 0).then_some(id)
}

/// One rx and one tx queue, default settings, promiscuous.
pub fn port_start(port: u16, pool: &Pool) -> Result<(), String> {
    let mut info = sys::rte_eth_dev_info::default();
    // SAFETY: valid out-pointer.
    let r = unsafe { sys::rte_eth_dev_info_get(port, &mut info) };
    if r < 0 {
        return Err(err("rte_eth_dev_info_get", r));
    }
    let conf = sys::rte_eth_conf::default();
    // SAFETY: zeroed conf = no offloads; valid for every PMD.
    let r = unsafe { sys::rte_eth_dev_configure(port, 1, 1, &conf) };
    if r < 0 {
        return Err(err(&format!("rte_eth_dev_configure(port {port})"), r));
    }
    let clamp = |max: u16| if max == 0 { 1024 } else { max.min(1024) };
    // SAFETY: configured port; NULL conf = PMD defaults; pool outlives the port.
    unsafe {
        let sock = sys::rte_eth_dev_socket_id(port).max(0) as u32;
        let r = sys::rte_eth_rx_queue_setup(
            port,
            0,
            clamp(info.rx_desc_lim.nb_max),
            sock,
            std::ptr::null(),
            pool.0,
        );
        if r < 0 {
            return Err(err(&format!("rte_eth_rx_queue_setup(port {port})"), r));
        }
        let r = sys::rte_eth_tx_queue_setup(
            port,
            0,
            clamp(info.tx_desc_lim.nb_max),
            sock,
            std::ptr::null(),
        );
        if r < 0 {
            return Err(err(&format!("rte_eth_tx_queue_setup(port {port})"), r));
        }
        let r = sys::rte_eth_dev_start(port);
        if r < 0 {
            return Err(err(&format!("rte_eth_dev_start(port {port})"), r));
        }
        sys::rte_eth_promiscuous_enable(port);
    }
    Ok(())
}

pub fn link_up(port: u16) -> bool {
    let mut l = sys::rte_eth_link::default();
    // SAFETY: valid out-pointer.
    let r = unsafe { sys::rte_eth_link_get_nowait(port, &mut l) };
    r == 0 && l.link_status() != 0
}

pub fn port_stop(port: u16) {
    // SAFETY: no burst runs on the port any more.
    unsafe {
        sys::rte_eth_dev_stop(port);
        sys::rte_eth_dev_close(port);
    }
}

#[inline]
pub fn rx_burst(port: u16, out: &mut [RawMbuf; 32]) -> usize {
    // SAFETY: room for 32 pointers; only this thread polls the queue.
    unsafe { sys::rte_eth_rx_burst(port, 0, out.as_mut_ptr(), 32) as usize }
}

#[inline]
pub fn tx_burst(port: u16, pkts: &mut [RawMbuf]) -> usize {
    // SAFETY: live mbufs; tx takes ownership of the first `n` returned.
    unsafe { sys::rte_eth_tx_burst(port, 0, pkts.as_mut_ptr(), pkts.len() as u16) as usize }
}

#[inline]
pub fn free_bulk(pkts: &mut [RawMbuf]) {
    if !pkts.is_empty() {
        // SAFETY: live mbufs we own.
        unsafe { sys::rte_pktmbuf_free_bulk(pkts.as_mut_ptr(), pkts.len() as u32) }
    }
}

/// The first segment's bytes.
#[inline]
pub fn data<'a>(m: RawMbuf) -> &'a mut [u8] {
    // SAFETY: a live mbuf we own; buf_addr + data_off .. + data_len is inside its buffer.
    unsafe {
        let p = ((*m).buf_addr as *mut u8).add((*m).data_off as usize);
        std::slice::from_raw_parts_mut(p, (*m).data_len as usize)
    }
}

#[inline]
pub fn pkt_len(m: RawMbuf) -> u32 {
    // SAFETY: live mbuf.
    unsafe { (*m).pkt_len }
}

/// Sets a fresh mbuf's length to `len` and returns its data (the buffer must be large enough:
/// pools use the default 2 KiB data room).
#[inline]
pub fn set_len<'a>(m: RawMbuf, len: usize) -> &'a mut [u8] {
    // SAFETY: fresh single-segment mbuf from our pool; len ≤ 1518 < data room - headroom.
    unsafe {
        (*m).data_len = len as u16;
        (*m).pkt_len = len as u32;
    }
    data(m)
}
