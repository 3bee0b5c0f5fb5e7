//! Raw bindings to the system DPDK (Debian's 22.11), generated at build time.
//!
//! Static-inline DPDK functions (e.g. `rte_eth_rx_burst`) are exported with the suffix `__extern`
//! by bindgen's wrappers; use them through the re-exports below so callers keep DPDK's names.
//! Everything here is `unsafe`: the safe layer lives in the `dataplane` crate.
#![allow(
    non_upper_case_globals,
    non_camel_case_types,
    non_snake_case,
    dead_code
)]
#![allow(clippy::all)]

include!(concat!(env!("OUT_DIR"), "/bindings.rs"));

// The hot path reads mbuf fields directly; a layout drift against the C headers would corrupt
// packets silently, so fail the build instead.
const _: () = assert!(core::mem::size_of::<rte_mbuf>() == 128);
const _: () = assert!(core::mem::offset_of!(rte_mbuf, data_off) == 16);
const _: () = assert!(core::mem::offset_of!(rte_mbuf, pkt_len) == 36);
const _: () = assert!(core::mem::offset_of!(rte_mbuf, data_len) == 40);
