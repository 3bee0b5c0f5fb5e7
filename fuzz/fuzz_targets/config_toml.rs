//! Arbitrary text as evsd's TOML config, through what `evsd check` does (parse, then the
//! cross-field checks) without starting anything: never a panic, every refusal a message, and
//! a config the checks accept yields EAL arguments and a model the switch compiles.
#![no_main]

use evsd::config::Config;
use flowtable::shared::{MAX_CACHE_ENTRIES, MAX_CT_ENTRIES, MAX_MAC_CAPACITY};
use flowtable_fuzz::check_message;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let cfg = match Config::parse(text).and_then(Config::checked) {
        Ok(c) => c,
        Err(e) => return check_message("config", &e),
    };
    let args = cfg.eal.to_args();
    assert!(args.len() >= 2 && args[0] == "-l", "EAL args {args:?}");
    let s = &cfg.switch;
    assert!(s.mac_capacity <= MAX_MAC_CAPACITY && s.ct_max_entries <= MAX_CT_ENTRIES);
    assert!(s.emc_entries <= MAX_CACHE_ENTRIES && s.megaflow_entries <= MAX_CACHE_ENTRIES);
    // The switch evsd would build, with its tables kept small (the sizes are checked above; the
    // small ones, 0 included, are kept as given).
    let mut small = cfg.switch.clone();
    small.mac_capacity = small.mac_capacity.min(1024);
    small.ct_max_entries = small.ct_max_entries.min(1024);
    small.emc_entries = small.emc_entries.min(256);
    small.megaflow_entries = small.megaflow_entries.min(256);
    let sw = flowtable_fuzz::check_compiles(small, &cfg.model())
        .expect("a checked config's model compiles");
    for a in &cfg.attach {
        assert!(
            sw.port_id(&a.port).is_some(),
            "attach {:?}: not a port of the switch",
            a.port
        );
        a.backend().expect("a checked attach has a backend");
    }
});
