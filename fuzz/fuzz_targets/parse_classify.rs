//! Arbitrary frame on an arbitrary input port → `parse` (checked against the etherparse
//! reference) → `Worker::process_burst`, on a realistic switch; checks the invariants of
//! `flowtable_fuzz::check`.
#![no_main]

use flowtable::parse::{parse, parse_reference};
use flowtable_fuzz::{check, fixture, split, tick};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((in_port, _, frame)) = split(data) else {
        return;
    };
    // The parser alone must never panic, and always keep the input port.
    let k = parse(in_port, frame);
    assert_eq!(k.in_port(), in_port);
    // The parser reads headers through flowtable::wire; etherparse's reading is the reference.
    assert_eq!(k, parse_reference(in_port, frame), "frame {frame:02x?}");
    let f = fixture();
    let now = tick();
    let mut g = f.worker.lock().unwrap_or_else(|e| e.into_inner());
    let (w, out) = &mut *g;
    // The frame alone, then twice in one burst (the second copy usually hits the cache).
    w.process_burst(in_port, &[frame], now, out);
    check(out, 1, in_port, f.ids.len(), &f.ids);
    w.process_burst(in_port, &[frame, frame], now + 1, out);
    check(out, 2, in_port, f.ids.len(), &f.ids);
});
