//! Arbitrary bytes as a model (what `evsd ctl apply`, the state file and the agent hand the
//! switch): parsing, `Model::validate` and the policy compiler must agree, never panic, and
//! refuse with a message. Accepted models also go through one long-lived switch in turn, so the
//! incremental compiler sees arbitrary changes from one valid model to the next.
#![no_main]

use flowtable::switch::Switch;
use flowtable_fuzz::{check_compiles, check_message, check_round_trip, small_config, MODEL_JSON};
use libfuzzer_sys::fuzz_target;
use model::Model;
use std::sync::{Mutex, OnceLock};

fn running() -> &'static Mutex<Switch> {
    static S: OnceLock<Mutex<Switch>> = OnceLock::new();
    S.get_or_init(|| {
        let m: Model = serde_json::from_str(MODEL_JSON).expect("fuzz model parses");
        Mutex::new(Switch::new(small_config(), m).expect("fuzz model is valid"))
    })
}

fuzz_target!(|data: &[u8]| {
    let m: Model = match serde_json::from_slice(data) {
        Ok(m) => m,
        Err(e) => return check_message("model JSON", &e.to_string()),
    };
    check_round_trip(&m);
    let fresh = check_compiles(small_config(), &m);
    let sw = running().lock().unwrap_or_else(|e| e.into_inner());
    let before = sw.model();
    match sw.apply(m.clone()) {
        Ok(_) => {
            assert!(fresh.is_some(), "an update accepted a model a new switch refuses");
            assert_eq!(sw.model(), m, "the switch runs another model than it was given");
            let _ = sw.dump_tables();
        }
        Err(e) => {
            assert!(fresh.is_none(), "an update refused a model a new switch accepts: {e}");
            assert_eq!(sw.model(), before, "a refused update changed the switch");
        }
    }
});
