//! The allowed range of every numeric setting of the boot config, so that a typo (a 27-hour idle
//! sleep, a MAC table of 10^12 entries) is refused at `evsd check` time with the range, instead
//! of starving the switch or failing an allocation at run time. The model's own numbers (shaping)
//! are bounded in `model::Model::validate`, which the controller shares.

use crate::config::Config;
use std::fmt::Display;
use std::ops::RangeInclusive;

/// One bounded setting: its section, key and range, as the README lists them.
pub struct Limit {
    pub section: &'static str,
    pub key: &'static str,
    pub range: RangeInclusive<u64>,
}

const fn limit(section: &'static str, key: &'static str, lo: u64, hi: u64) -> Limit {
    Limit {
        section,
        key,
        range: lo..=hi,
    }
}

/// Every bounded setting of the boot config.
pub const LIMITS: &[Limit] = &[
    // 1 TiB; 0 means the EAL's default.
    limit("eal", "memory_mb", 0, 1 << 20),
    // A day: longer than any sane idle time, and the aging timer must fire within a run.
    limit("switch", "mac_aging_secs", 1, 86_400),
    limit("switch", "mac_limit_per_port", 0, 1 << 20),
    limit("switch", "mac_capacity", 16, 1 << 24),
    limit("switch", "ct_max_entries", 1024, 1 << 26),
    limit("switch", "emc_entries", 1, 1 << 22),
    limit("switch", "megaflow_entries", 0, 1 << 22),
    limit("dataplane", "burst", 1, 32),
    // One second: a thread asleep longer drops what its rings cannot hold meanwhile.
    limit("dataplane", "idle_sleep_us", 0, 1_000_000),
    limit("dataplane", "mbufs", 1024, (1 << 24) - 1),
    // The control loop's tick: link changes, housekeeping and SIGHUP wait for it.
    limit("dataplane", "link_poll_ms", 1, 10_000),
    // An hour; 0 turns the watchdog off. It looks once per control loop tick (link_poll_ms).
    limit("dataplane", "watchdog_secs", 0, 3600),
];

/// The value of `section.key` in `cfg` (every entry of [`LIMITS`] has one).
fn value(cfg: &Config, section: &str, key: &str) -> u64 {
    let (s, d, e) = (&cfg.switch, &cfg.dataplane, &cfg.eal);
    match (section, key) {
        ("eal", "memory_mb") => e.memory_mb.into(),
        ("switch", "mac_aging_secs") => s.mac_aging_secs,
        ("switch", "mac_limit_per_port") => s.mac_limit_per_port.into(),
        ("switch", "mac_capacity") => s.mac_capacity as u64,
        ("switch", "ct_max_entries") => s.ct_max_entries as u64,
        ("switch", "emc_entries") => s.emc_entries as u64,
        ("switch", "megaflow_entries") => s.megaflow_entries as u64,
        ("dataplane", "burst") => d.burst as u64,
        ("dataplane", "idle_sleep_us") => d.idle_sleep_us,
        ("dataplane", "mbufs") => d.mbufs.into(),
        ("dataplane", "link_poll_ms") => d.link_poll_ms,
        ("dataplane", "watchdog_secs") => d.watchdog_secs,
        _ => unreachable!("limits::LIMITS names {section}.{key}, which value() does not know"),
    }
}

/// `[dataplane] idle_sleep_us = 97200000000: must be 0..=1000000`.
pub fn out_of_range(section: &str, key: &str, v: impl Display, range: impl Display) -> String {
    format!("[{section}] {key} = {v}: must be {range}")
}

/// The first setting of `cfg` outside its range, named with its value and the range.
pub fn check(cfg: &Config) -> Result<(), String> {
    for l in LIMITS {
        let v = value(cfg, l.section, l.key);
        if !l.range.contains(&v) {
            let r = format!("{}..={}", l.range.start(), l.range.end());
            return Err(out_of_range(l.section, l.key, v, r));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_within_range_and_every_limit_has_a_value() {
        let c = Config::default();
        check(&c).unwrap();
        for l in LIMITS {
            value(&c, l.section, l.key);
        }
    }

    #[test]
    fn names_field_value_and_range() {
        let mut c = Config::default();
        c.dataplane.idle_sleep_us = 97_200_000_000;
        assert_eq!(
            check(&c).unwrap_err(),
            "[dataplane] idle_sleep_us = 97200000000: must be 0..=1000000"
        );
        let mut c = Config::default();
        c.switch.mac_aging_secs = 0;
        assert_eq!(
            check(&c).unwrap_err(),
            "[switch] mac_aging_secs = 0: must be 1..=86400"
        );
    }
}
