//! Shared by the test binaries: each uses part of it, so unused-item warnings are expected.
#![allow(dead_code)]

pub mod etcd_cluster;
pub mod suite;

use std::any::Any;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use dvs_store::Store;

/// A store under test and whatever keeps it alive (temp dir, etcd processes).
pub struct Fixture {
    pub store: Arc<dyn Store>,
    /// Dropped after `store` (field order): the store closes before its files go.
    pub keep: Box<dyn Any + Send>,
}

/// Every wait in the tests is bounded by this, so a broken store fails a test instead of
/// hanging it.
pub const WAIT: Duration = Duration::from_secs(30);

pub async fn bounded<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {WAIT:?} waiting for {what}"),
    }
}
