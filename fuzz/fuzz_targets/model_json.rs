//! Arbitrary bytes as a model (what `evsd ctl apply`, the state file and the agent hand the
//! switch): parsing, `Model::validate` and the policy compiler must agree, never panic, and
//! refuse with a message. Accepted models also go, in turn, through one long-lived compiler, so
//! that incremental compilation sees arbitrary changes from one valid model to the next; its
//! tables must equal those compiled from scratch (with the same port ids).
#![no_main]

use flowtable::classifier::Rule;
use flowtable::compiler::Compiler;
use flowtable::pipeline::Pipeline;
use flowtable_fuzz::{check_compiles, check_message, check_round_trip, small_config, MODEL_JSON};
use libfuzzer_sys::fuzz_target;
use model::Model;
use std::sync::{Mutex, OnceLock};

fn running() -> &'static Mutex<Compiler> {
    static C: OnceLock<Mutex<Compiler>> = OnceLock::new();
    C.get_or_init(|| {
        let m: Model = serde_json::from_str(MODEL_JSON).expect("fuzz model parses");
        let mut c = Compiler::new();
        c.update(&m).expect("fuzz model is valid");
        Mutex::new(c)
    })
}

fn rules(p: &Pipeline) -> Vec<Vec<Rule>> {
    p.tables
        .iter()
        .map(|t| t.rules().map(|r| Rule::clone(r)).collect())
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let m: Model = match serde_json::from_slice(data) {
        Ok(m) => m,
        Err(e) => return check_message("model JSON", &e.to_string()),
    };
    check_round_trip(&m);
    let fresh = check_compiles(small_config(), &m);
    let mut inc = running().lock().unwrap_or_else(|e| e.into_inner());
    let before = inc.model().clone();
    match inc.update(&m) {
        Ok(_) => {
            assert!(
                fresh.is_some(),
                "an update accepted a model a new switch refuses"
            );
            assert_eq!(
                inc.model(),
                &m,
                "the compiler holds another model than it was given"
            );
            let mut scratch = Compiler::with_ids(inc.ids().clone());
            scratch.update(&m).expect("compiles from scratch");
            let (a, b) = (inc.pipeline(), scratch.pipeline());
            assert_eq!(
                rules(&a),
                rules(&b),
                "incremental tables differ from scratch"
            );
            assert_eq!(
                a.flood, b.flood,
                "incremental flood lists differ from scratch"
            );
            assert_eq!(a.meters, b.meters, "incremental meters differ from scratch");
            assert_eq!(a.egress_table, b.egress_table);
        }
        Err(e) => {
            assert!(
                fresh.is_none(),
                "an update refused a model a new switch accepts: {e}"
            );
            assert_eq!(
                inc.model(),
                &before,
                "a refused update changed the compiler"
            );
        }
    }
});
