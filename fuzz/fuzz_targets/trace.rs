//! `Switch::trace` on arbitrary frames: must not panic, and its verdict must be consistent.
#![no_main]

use flowtable_fuzz::{fixture, split, tick};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((_, name, frame)) = split(data) else {
        return;
    };
    let f = fixture();
    let port = name.unwrap_or("no-such-port");
    match f.sw.trace(port, frame, tick()) {
        Ok(t) => {
            assert!(name.is_some(), "trace of an unknown port succeeded");
            assert!(
                t.emits.is_empty() != t.drop.is_none(),
                "trace must either emit or drop: {t}"
            );
            assert!(!t.verdict.is_empty());
            assert!(
                t.emits.iter().all(|e| e.port != port),
                "trace sends back to {port}: {t}"
            );
            let _ = t.to_string();
        }
        Err(e) => assert!(name.is_none(), "trace of {port} failed: {e}"),
    }
});
