//! One operator transaction: its ops applied in order to the latest desired state, the result
//! validated as a whole, then committed in one store transaction guarded by the write sequence
//! key, so two controllers (or two requests) never commit against the same state. A lost race
//! is retried from the new state; a failed validation changes nothing.

use crate::error::ApiErr;
use crate::{keys, State};
use api::dvs::{HostToken, TxnOp, TxnReply, TxnRequest};
use dvs_store::{StoreError, Txn};
use model::{Cluster, Object, ObjectId};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;

/// Attempts before a transaction that keeps losing races is refused as a conflict.
const ATTEMPTS: usize = 8;
/// Of those, how many may end with the store unavailable (0.2 + 0.4 + ... s between them).
const UNAVAILABLE_RETRIES: usize = 4;

pub fn sha256_hex(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A fresh host token: 32 bytes from the kernel's CSPRNG, hex.
fn new_token() -> Result<String, ApiErr> {
    let mut b = [0u8; 32];
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(|e| ApiErr::internal(format!("cannot read /dev/urandom for a host token: {e}")))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// What the ops do to `cluster`: the changed ids and the tokens of new hosts.
fn apply_ops(
    cluster: &mut Cluster,
    versions: &crate::cache::Versions,
    ops: &[TxnOp],
) -> Result<(Vec<ObjectId>, Vec<HostToken>), ApiErr> {
    let mut changed = BTreeSet::new();
    let mut tokens = vec![];
    let check_rv = |id: &ObjectId, rv: Option<u64>| -> Result<(), ApiErr> {
        match (rv, versions.get(id)) {
            (Some(want), Some(have)) if want != *have => Err(ApiErr::conflict(format!(
                "{id} changed since resource version {want} (now {have}); read it again"
            ))),
            _ => Ok(()),
        }
    };
    for (i, op) in ops.iter().enumerate() {
        let at = |m: String| format!("ops[{i}]: {m}");
        match op {
            TxnOp::Create { object, may_exist } => {
                let id = object.id();
                if cluster.get(&id).is_some() {
                    if *may_exist {
                        continue;
                    }
                    return Err(ApiErr::conflict(at(format!(
                        "{id} already exists (--may-exist to accept that)"
                    ))));
                }
                let mut object = object.clone();
                if let Object::Host(h) = &mut object {
                    if h.token_sha256.is_none() {
                        let token = new_token()?;
                        h.token_sha256 = Some(sha256_hex(&token));
                        tokens.push(HostToken {
                            host: h.name.clone(),
                            token,
                        });
                    }
                }
                cluster.insert(object);
                changed.insert(id);
            }
            TxnOp::Update {
                object,
                resource_version,
            } => {
                let id = object.id();
                let Some(old) = cluster.get(&id) else {
                    return Err(ApiErr::not_found(at(format!("{id} does not exist"))));
                };
                check_rv(&id, *resource_version)?;
                let mut object = object.clone();
                // A host keeps its token unless the update sets another hash.
                if let (Object::Host(new), Object::Host(old)) = (&mut object, &old) {
                    if new.token_sha256.is_none() {
                        new.token_sha256 = old.token_sha256.clone();
                    }
                }
                cluster.insert(object);
                changed.insert(id);
            }
            TxnOp::Delete {
                id,
                if_exists,
                resource_version,
            } => {
                check_rv(id, *resource_version)?;
                if cluster.remove(id).is_none() {
                    if *if_exists {
                        continue;
                    }
                    return Err(ApiErr::not_found(at(format!(
                        "{id} does not exist (--if-exists to accept that)"
                    ))));
                }
                changed.insert(id.clone());
            }
        }
    }
    Ok((changed.into_iter().collect(), tokens))
}

/// Runs `req` to commit (or refusal); the reply's revision is the commit's. Also returns the
/// desired state the transaction produced.
pub async fn execute(st: &State, req: &TxnRequest) -> Result<(TxnReply, Cluster), ApiErr> {
    if req.ops.is_empty() {
        return Err(ApiErr::invalid("a transaction needs at least one op"));
    }
    let mut last_conflict = String::new();
    let mut unavailable = 0;
    for _ in 0..ATTEMPTS {
        let snap = st.fresh_snapshot().await?;
        // One copy (the result); the snapshot itself is the state before.
        let before = &snap.cluster;
        let mut after = Cluster::clone(before);
        let (changed, host_tokens) = apply_ops(&mut after, &snap.versions, &req.ops)?;
        if changed.is_empty() {
            return Ok((
                TxnReply {
                    revision: snap.txn_revision,
                    changed,
                    affected_hosts: vec![],
                    host_tokens,
                    wait: None,
                },
                after,
            ));
        }
        after
            .validate_change(before, &changed)
            .map_err(|e| ApiErr::invalid(e.to_string()))?;
        let mut t = if snap.txn_revision == 0 {
            Txn::new().when_absent(keys::SEQ)
        } else {
            Txn::new().when_mod_revision(keys::SEQ, snap.txn_revision)
        };
        for id in &changed {
            t = match after.get(id) {
                Some(o) => {
                    let v = serde_json::to_vec(&o).map_err(|e| ApiErr::internal(e.to_string()))?;
                    t.put(keys::object(id), v)
                }
                None => t.delete(keys::object(id)),
            };
        }
        t = t.put(keys::SEQ, b"seq".to_vec());
        match st.store.txn(t).await {
            Ok(r) => {
                let affected = Cluster::affected_hosts(before, &after, &changed);
                st.wait_for_txn(r.revision).await;
                return Ok((
                    TxnReply {
                        revision: r.revision,
                        changed,
                        affected_hosts: affected.into_iter().collect(),
                        host_tokens,
                        wait: None,
                    },
                    after,
                ));
            }
            Err(StoreError::Conflict { key, .. }) => {
                // Another transaction committed first: redo against its result.
                last_conflict = key;
                continue;
            }
            // An etcd member went away mid-request (the client may still route to it for a
            // moment). The write is guarded by the sequence key, so trying again is safe: it
            // commits once, or finds that it did and conflicts.
            Err(e @ StoreError::Unavailable { .. }) if unavailable < UNAVAILABLE_RETRIES => {
                unavailable += 1;
                tracing::warn!(target: "dvs-controller", "transaction: {e}; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(200 * unavailable as u64))
                    .await;
                continue;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiErr::conflict(format!(
        "the desired state kept changing under this transaction ({ATTEMPTS} attempts, last at \
         {last_conflict}); try again"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::cluster::{Dvs, Host};
    use model::Kind;

    fn dvs(name: &str) -> Object {
        Object::Dvs(Dvs {
            name: name.into(),
            vlans: vec!["100-199".parse().unwrap()],
        })
    }

    #[test]
    fn ops_apply_in_order_with_flags_and_versions() {
        let mut c = Cluster::default();
        let mut v = crate::cache::Versions::new();
        let (ch, _) = apply_ops(
            &mut c,
            &v,
            &[TxnOp::Create {
                object: dvs("a"),
                may_exist: false,
            }],
        )
        .unwrap();
        assert_eq!(ch, [ObjectId::new(Kind::Dvs, "a")]);
        v.insert(ObjectId::new(Kind::Dvs, "a"), 5);
        let e = apply_ops(
            &mut c,
            &v,
            &[TxnOp::Create {
                object: dvs("a"),
                may_exist: false,
            }],
        )
        .unwrap_err();
        assert_eq!(e.code, "conflict");
        assert!(e.message.contains("--may-exist"), "{}", e.message);
        let (ch, _) = apply_ops(
            &mut c,
            &v,
            &[TxnOp::Create {
                object: dvs("a"),
                may_exist: true,
            }],
        )
        .unwrap();
        assert!(ch.is_empty());
        let e = apply_ops(
            &mut c,
            &v,
            &[TxnOp::Update {
                object: dvs("a"),
                resource_version: Some(4),
            }],
        )
        .unwrap_err();
        assert!(
            e.message
                .contains("changed since resource version 4 (now 5)"),
            "{}",
            e.message
        );
        let del = |if_exists| TxnOp::Delete {
            id: ObjectId::new(Kind::Dvs, "zz"),
            if_exists,
            resource_version: None,
        };
        assert_eq!(
            apply_ops(&mut c, &v, &[del(false)]).unwrap_err().code,
            "not_found"
        );
        assert!(apply_ops(&mut c, &v, &[del(true)]).unwrap().0.is_empty());
    }

    #[test]
    fn new_hosts_get_a_token_and_keep_it_on_update() {
        let mut c = Cluster::default();
        let v = Default::default();
        let h = Object::Host(Host {
            name: "h1".into(),
            vhost_dir: None,
            token_sha256: None,
        });
        let (_, tokens) = apply_ops(
            &mut c,
            &v,
            &[TxnOp::Create {
                object: h.clone(),
                may_exist: false,
            }],
        )
        .unwrap();
        assert_eq!(tokens.len(), 1);
        let hash = c.hosts["h1"].token_sha256.clone().unwrap();
        assert_eq!(hash, sha256_hex(&tokens[0].token));
        apply_ops(
            &mut c,
            &v,
            &[TxnOp::Update {
                object: h,
                resource_version: None,
            }],
        )
        .unwrap();
        assert_eq!(c.hosts["h1"].token_sha256.as_deref(), Some(hash.as_str()));
    }
}
