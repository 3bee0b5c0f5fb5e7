//! The forwarding threads' watchdog, run by the control loop (never by a forwarding thread): a
//! thread whose loop iteration counter (`ThreadStats::iterations`, bumped once per loop, idle or
//! not) has not moved for `[dataplane] watchdog_secs` is stalled — a deadlock, a PMD call that
//! never returns, a CPU taken away. It is reported with one `error` line (target
//! `evsd::watchdog`) and the `evs_thread_stalled` / `evs_thread_stalls_total` metrics; with
//! `[dataplane] watchdog_exit = true` evsd then exits with status [`EXIT_STALLED`] so that its
//! supervisor restarts it (a switch with a dead thread forwards nothing on its ports while
//! looking alive).
//!
//! Test only: `EVS_TEST_STALL_THREAD=N` in evsd's environment blocks forwarding thread N for
//! good once evsd is up (see [`test_stall_thread`]); the end-to-end tests use it to stall a
//! thread on purpose. Never set it in production.

use std::time::{Duration, Instant};

/// evsd's exit status when the watchdog ends it (`EX_SOFTWARE`, as for a panicked thread).
pub const EXIT_STALLED: i32 = 70;

/// The test-only variable that stalls one forwarding thread (see the module doc).
pub const TEST_STALL_ENV: &str = "EVS_TEST_STALL_THREAD";

/// The forwarding thread `EVS_TEST_STALL_THREAD` names, if set (test only).
pub fn test_stall_thread() -> Result<Option<usize>, String> {
    match std::env::var(TEST_STALL_ENV) {
        Err(_) => Ok(None),
        Ok(v) => v.trim().parse().map(Some).map_err(|_| {
            format!("{TEST_STALL_ENV}={v:?}: must be a forwarding thread number (test only)")
        }),
    }
}

/// One thread as the watchdog sees it (and the metrics report it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ThreadHealth {
    pub stalled: bool,
    /// Times the thread was found stalled since the start.
    pub stalls: u64,
}

struct Watched {
    iterations: u64,
    moved_at: Instant,
    health: ThreadHealth,
}

/// A change the watchdog reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Thread `thread` made no progress for `for_secs`.
    Stalled { thread: usize, for_secs: u64 },
    /// Thread `thread` moves again.
    Recovered { thread: usize },
}

pub struct Watchdog {
    /// None: off (`watchdog_secs = 0`).
    timeout: Option<Duration>,
    threads: Vec<Watched>,
}

impl Watchdog {
    pub fn new(secs: u64, threads: usize, now: Instant) -> Watchdog {
        Watchdog {
            timeout: (secs > 0).then(|| Duration::from_secs(secs)),
            threads: (0..threads)
                .map(|_| Watched {
                    iterations: 0,
                    moved_at: now,
                    health: ThreadHealth::default(),
                })
                .collect(),
        }
    }

    /// Compares each thread's iteration counter with the last look; `iterations[i]` is thread
    /// i's counter now.
    pub fn check(&mut self, iterations: &[u64], now: Instant) -> Vec<Event> {
        let Some(timeout) = self.timeout else {
            return vec![];
        };
        let mut events = vec![];
        for (i, (w, &n)) in self.threads.iter_mut().zip(iterations).enumerate() {
            if n != w.iterations {
                w.iterations = n;
                w.moved_at = now;
                if w.health.stalled {
                    w.health.stalled = false;
                    events.push(Event::Recovered { thread: i });
                }
                continue;
            }
            let still = now.saturating_duration_since(w.moved_at);
            if !w.health.stalled && still >= timeout {
                w.health.stalled = true;
                w.health.stalls += 1;
                events.push(Event::Stalled {
                    thread: i,
                    for_secs: still.as_secs(),
                });
            }
        }
        events
    }

    pub fn health(&self) -> Vec<ThreadHealth> {
        self.threads.iter().map(|w| w.health).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_that_stops_iterating_is_stalled_once_and_recovers() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut w = Watchdog::new(5, 2, t0);
        assert_eq!(w.check(&[1, 1], t0 + s), vec![]);
        // Thread 0 keeps moving, thread 1 is stuck at 1.
        assert_eq!(w.check(&[2, 1], t0 + 5 * s), vec![]);
        assert_eq!(
            w.check(&[3, 1], t0 + 6 * s),
            vec![Event::Stalled {
                thread: 1,
                for_secs: 5
            }]
        );
        // Reported once, not on every look.
        assert_eq!(w.check(&[4, 1], t0 + 9 * s), vec![]);
        assert_eq!(
            w.health(),
            vec![
                ThreadHealth::default(),
                ThreadHealth {
                    stalled: true,
                    stalls: 1
                }
            ]
        );
        assert_eq!(
            w.check(&[5, 2], t0 + 10 * s),
            vec![Event::Recovered { thread: 1 }]
        );
        assert_eq!(
            w.health()[1],
            ThreadHealth {
                stalled: false,
                stalls: 1
            }
        );
    }

    #[test]
    fn zero_seconds_is_off() {
        let t0 = Instant::now();
        let mut w = Watchdog::new(0, 1, t0);
        assert_eq!(w.check(&[0], t0 + Duration::from_secs(3600)), vec![]);
    }
}
