//! The DPDK dataplane of the EVS switch and the `evsd` daemon around it.
//!
//! - DPDK itself is behind `evs-dpdk` (the only crate with `unsafe`: this one forbids it);
//! - [`port`]: the seam between the loop and the ports (packets, rx/tx queues, burst
//!   containers, VLAN edits); [`ethdev`]: DPDK ethdev ports and mbufs behind it;
//! - [`forwarding`]: the poll-mode loop (rx burst → flowtable → VLAN edits/copies → tx burst),
//!   generic over the seam;
//! - [`stats`]: per-thread counters the control thread reads without locks;
//! - [`switchd`]: ports, threads and plans, driven from the control thread;
//! - [`config`] (with [`limits`], the allowed range of each number), [`control`] (the server
//!   side of `api`), [`reports`] (the switch's state as `api` answers), [`metrics`], [`state`]
//!   (what survives a restart), [`daemon`], [`cli`]: the evsd process;
//! - [`capture`]: `evsd ctl capture`, pcap of a port's frames (taps on the forwarding
//!   threads, drained on the client's connection thread);
//! - [`agent`]: with a controller, the host agent thread (crate `dvs-agent`), which drives the
//!   switch through the control loop like `evsd ctl` does.

#![forbid(unsafe_code)]

pub mod agent;
pub mod audit;
pub mod capture;
pub mod cli;
pub mod config;
pub mod control;
pub mod daemon;
pub mod ethdev;
pub mod forwarding;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod port;
pub mod reports;
pub mod state;
pub mod stats;
pub mod switchd;
pub mod watchdog;
