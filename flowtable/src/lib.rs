//! `flowtable`: everything the switch decides about a packet, in pure Rust (no DPDK).
//!
//! A packet's path, top to bottom:
//! 1. [`parse`] turns an Ethernet frame into a [`key::FlowKey`];
//! 2. [`worker::Worker`] (one per forwarding thread) runs the pipeline interpreter on it: each
//!    segment of the path comes from the worker's caches (exact-match, then megaflow) or from a
//!    walk of the [`classifier`] tables of the current [`pipeline::Pipeline`] version;
//! 3. the segments' dynamic ends run: conntrack ([`conntrack`]), meters ([`meter`]), MAC learning
//!    ([`mac_learning`]), flood, VLAN edits, output;
//! 4. the caller (the DPDK dataplane, or a test) receives a [`verdict::BurstResult`]: per packet,
//!    the ports to emit on with their VLAN edits, or the reason it was dropped.
//!
//! The control side ([`switch::Switch`], with [`compiler`]) builds tables from the operator's model
//! and publishes them atomically; [`trace`] explains any packet's fate step by step, through the
//! same interpreter as the worker.
//!
//! Files depend on each other in one direction only, from the bottom up: `key`, `verdict`,
//! `meter`, `mac_learning` → `storm`, `classifier` → `matcher`, `pipeline`, `parse`, `conntrack` → `cache`,
//! `compiler` → `shared` → `interp` → `worker`, `trace` → `switch`.

#![forbid(unsafe_code)]

mod cache;
pub mod checksum;
pub mod classifier;
pub mod compiler;
pub mod conntrack;
pub mod frames;
mod interp;
pub mod key;
pub mod mac_learning;
pub mod matcher;
pub mod meter;
pub mod parse;
pub mod pipeline;
pub mod shared;
pub mod storm;
pub mod switch;
pub mod trace;
pub mod verdict;
pub mod wire;
pub mod worker;
