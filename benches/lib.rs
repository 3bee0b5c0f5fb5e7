//! Shared helpers for the benchmarks: packet builders used by several criterion benches.
