//! Each worker's caches of [`crate::pipeline::Segment`]s, in the order a lookup tries them: the
//! exact-match cache ([`emc`]), then the wildcarded megaflow cache ([`megaflow`]), then a walk of
//! the tables. Both are per thread (no locks, no sharing) and tag every entry with the table
//! version it was computed from, so publishing new tables invalidates them without a flush.

pub(crate) mod emc;
pub(crate) mod megaflow;
