//! `flowtable`: everything the switch decides about a packet, in pure Rust (no DPDK).
//!
//! A packet's path, top to bottom:
//! 1. [`parse`] turns an Ethernet frame into a [`key::FlowKey`];
//! 2. [`datapath::Worker`] (one per forwarding thread) looks the key up in its exact-match cache, and
//!    on a miss walks the [`classifier`] tables of the current [`pipeline::Pipeline`] version;
//! 3. the resulting actions run: conntrack ([`conntrack`]), meters ([`meter`]), MAC learning
//!    ([`mac_learning`]), VLAN edits, output;
//! 4. the caller (the DPDK dataplane, or a test) receives a [`datapath::BurstResult`]: per packet,
//!    the ports to emit on with their VLAN edits, or the reason it was dropped.
//!
//! The control side ([`policy`] → [`compiler`]) builds tables from the operator's model and publishes
//! them atomically; [`trace`] explains any packet's fate step by step.

pub mod checksum;
pub mod classifier;
pub mod compiler;
pub mod conntrack;
pub mod datapath;
pub mod frames;
pub mod key;
pub mod mac_learning;
pub mod matcher;
pub mod meter;
pub mod parse;
pub mod pipeline;
pub mod trace;
pub mod verdict;
pub mod wire;
