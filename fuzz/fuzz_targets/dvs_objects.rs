//! Arbitrary bytes as an operator's transaction (`POST /v1/txn`, what `dvsctl` sends): decoding
//! of its ops and objects, the ops applied to a valid installation as the controller applies
//! them, then `model::cluster` validation. No panic; every refusal a message; an object reads
//! back the same from the JSON the store keeps; and an installation the validation accepts
//! gives every host a slice its switch compiles, with a backend for each attachment.
#![no_main]

use api::dvs::{TxnOp, TxnRequest};
use flowtable_fuzz::{check_compiles, check_message, cluster, small_config};
use libfuzzer_sys::fuzz_target;
use model::{Cluster, Object, ObjectId};
use std::sync::OnceLock;

fn base() -> &'static Cluster {
    static C: OnceLock<Cluster> = OnceLock::new();
    C.get_or_init(|| {
        let c = cluster();
        c.validate().expect("the fuzz installation is valid");
        c
    })
}

/// The controller's `apply_ops` without resource versions and host tokens (the store's part).
fn apply(c: &mut Cluster, ops: &[TxnOp]) -> Result<Vec<ObjectId>, String> {
    let mut changed = vec![];
    for (i, op) in ops.iter().enumerate() {
        match op {
            TxnOp::Create { object, may_exist } => {
                let id = object.id();
                if c.get(&id).is_some() {
                    if *may_exist {
                        continue;
                    }
                    return Err(format!("ops[{i}]: {id} already exists"));
                }
                c.insert(object.clone());
                changed.push(id);
            }
            TxnOp::Update { object, .. } => {
                let id = object.id();
                if c.get(&id).is_none() {
                    return Err(format!("ops[{i}]: {id} does not exist"));
                }
                c.insert(object.clone());
                changed.push(id);
            }
            TxnOp::Delete { id, if_exists, .. } => {
                if c.remove(id).is_none() && !*if_exists {
                    return Err(format!("ops[{i}]: {id} does not exist"));
                }
                changed.push(id.clone());
            }
        }
    }
    changed.sort();
    changed.dedup();
    Ok(changed)
}

fn check_stored(o: &Object) {
    let text = serde_json::to_string(o).expect("an object serializes");
    let back: Object = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("a stored object does not read back: {e}: {text}"));
    assert_eq!(&back, o, "object changed through the store's JSON: {text}");
}

fuzz_target!(|data: &[u8]| {
    let v: serde_json::Value = match serde_json::from_slice(data) {
        Ok(v) => v,
        Err(e) => return check_message("transaction JSON", &e.to_string()),
    };
    let req: TxnRequest = match serde_json::from_value(v) {
        Ok(r) => r,
        Err(e) => return check_message("transaction", &e.to_string()),
    };
    for op in &req.ops {
        if let TxnOp::Create { object, .. } | TxnOp::Update { object, .. } = op {
            check_stored(object);
        }
    }
    let before = base();
    let mut after = before.clone();
    let changed = match apply(&mut after, &req.ops) {
        Ok(c) => c,
        Err(e) => return check_message("transaction", &e),
    };
    let full = after.validate();
    if let Err(e) = &full {
        check_message("installation", &e.to_string());
    }
    match after.validate_change(before, &changed) {
        Ok(()) => assert!(
            full.is_ok(),
            "validate_change accepts what validate refuses: {full:?}"
        ),
        Err(e) => {
            check_message("change", &e.to_string());
            return;
        }
    }
    if full.is_err() {
        return;
    }
    let hosts: Vec<String> = after.hosts.keys().cloned().collect();
    let slices = after.host_slices(hosts.iter().map(String::as_str));
    for h in &hosts {
        let slice = slices
            .get(h)
            .cloned()
            .unwrap_or_else(|| after.host_slice(h));
        let sw = check_compiles(small_config(), &slice.model).unwrap_or_else(|| {
            panic!("host {h}: a valid installation gives a slice the switch refuses")
        });
        for a in &slice.attach {
            assert!(
                sw.port_id(&a.port).is_some(),
                "host {h}: attach {:?} is not in its model",
                a.port
            );
            a.backend()
                .unwrap_or_else(|e| panic!("host {h}: attach {:?}: {e}", a.port));
        }
    }
});
