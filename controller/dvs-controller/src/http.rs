//! The routes, authentication, and the operator's read and write handlers.

use crate::error::ApiErr;
use crate::{hosts, txn, State};
use api::dvs::{ObjectList, TxnReply, TxnRequest, Versioned};
use axum::extract::{Path, Query};
use axum::http::HeaderMap;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use model::{Kind, ObjectId};
use serde::Deserialize;
use std::sync::Arc;

type St = axum::extract::State<Arc<State>>;

pub fn router(state: Arc<State>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/v1/objects", get(list))
        .route("/v1/object/{kind}/{*id}", get(get_one))
        .route("/v1/txn", post(transaction))
        .route("/v1/status", get(hosts::status_report))
        .route("/v1/hosts/{host}/watch", get(hosts::watch))
        .route("/v1/hosts/{host}/status", put(hosts::put_status))
        .route("/v1/hosts/{host}/applied", put(hosts::put_ack))
        .with_state(state)
}

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    Operator,
    Host(String),
}

pub async fn caller(st: &State, headers: &HeaderMap) -> Result<Caller, ApiErr> {
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let open = st.auth.operator_token_hashes.is_empty();
    let Some(token) = token else {
        return if open {
            Ok(Caller::Operator)
        } else {
            Err(ApiErr::unauthorized(
                "no token: send `Authorization: Bearer <token>`",
            ))
        };
    };
    let hash = txn::sha256_hex(token);
    if open || st.auth.operator_token_hashes.contains(&hash) {
        return Ok(Caller::Operator);
    }
    let snap = st.snapshot().await?;
    match snap.host_by_token.get(&hash) {
        Some(h) => Ok(Caller::Host(h.clone())),
        None => Err(ApiErr::unauthorized("unknown token")),
    }
}

pub async fn operator(st: &State, headers: &HeaderMap) -> Result<(), ApiErr> {
    match caller(st, headers).await? {
        Caller::Operator => Ok(()),
        Caller::Host(h) => Err(ApiErr::forbidden(format!(
            "a host token (host {h:?}) may only read its own slice and write its own status"
        ))),
    }
}

#[derive(Deserialize)]
struct ListQuery {
    kind: Option<String>,
}

fn kind(s: &str) -> Result<Kind, ApiErr> {
    Kind::parse(s).ok_or_else(|| {
        let all: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
        ApiErr::invalid(format!("unknown kind {s:?}; kinds are {}", all.join(", ")))
    })
}

async fn list(
    st: St,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Result<Json<ObjectList>, ApiErr> {
    operator(&st, &headers).await?;
    let want = q.kind.as_deref().map(kind).transpose()?;
    let snap = st.fresh_snapshot().await?;
    let objects = snap
        .cluster
        .objects()
        .into_iter()
        .filter(|o| want.is_none_or(|k| o.kind() == k))
        .map(|object| Versioned {
            resource_version: snap.versions.get(&object.id()).copied().unwrap_or(0),
            object,
        })
        .collect();
    Ok(Json(ObjectList {
        revision: snap.txn_revision,
        objects,
    }))
}

async fn get_one(
    st: St,
    headers: HeaderMap,
    Path((k, id)): Path<(String, String)>,
) -> Result<Json<Versioned>, ApiErr> {
    operator(&st, &headers).await?;
    let id = ObjectId::new(kind(&k)?, id);
    let snap = st.fresh_snapshot().await?;
    let object = snap
        .cluster
        .get(&id)
        .ok_or_else(|| ApiErr::not_found(format!("{id} does not exist")))?;
    Ok(Json(Versioned {
        resource_version: snap.versions.get(&id).copied().unwrap_or(0),
        object,
    }))
}

async fn transaction(
    st: St,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<TxnReply>, ApiErr> {
    operator(&st, &headers).await?;
    let req: TxnRequest = parse_strict(&body)?;
    let (mut reply, after) = txn::execute(&st, &req).await?;
    for c in &reply.changed {
        tracing::info!(
            target: "audit",
            revision = reply.revision,
            "revision {}: {c} {}",
            reply.revision,
            if after.get(c).is_some() {
                "written"
            } else {
                "deleted"
            }
        );
    }
    if let Some(ms) = req.wait_ms {
        reply.wait = Some(
            hosts::wait(
                &st,
                &reply.affected_hosts,
                reply.revision,
                std::time::Duration::from_millis(ms),
            )
            .await,
        );
    }
    Ok(Json(reply))
}

/// Parses a request body, naming the JSON path of a mistake, and refusing fields the types do not
/// know (flattened types cannot refuse them by themselves).
fn parse_strict(body: &[u8]) -> Result<TxnRequest, ApiErr> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| ApiErr::invalid(format!("bad JSON: {e}")))?;
    let req: TxnRequest = serde_path_to_error::deserialize(&v).map_err(|e| {
        let path = e.path().to_string();
        ApiErr::invalid(format!("bad transaction at `{path}`: {}", e.into_inner()))
    })?;
    let back = serde_json::to_value(&req).map_err(|e| ApiErr::internal(e.to_string()))?;
    if let Some(path) = unknown_field(&v, &back, String::new()) {
        return Err(ApiErr::invalid(format!("unknown field `{path}`")));
    }
    Ok(req)
}

/// The first key of `input` that did not survive a parse and re-serialization (ignoring keys
/// whose value is a default the serializer leaves out).
fn unknown_field(
    input: &serde_json::Value,
    parsed: &serde_json::Value,
    path: String,
) -> Option<String> {
    use serde_json::Value;
    match (input, parsed) {
        (Value::Object(a), Value::Object(b)) => a.iter().find_map(|(k, v)| {
            let p = if path.is_empty() {
                k.clone()
            } else {
                format!("{path}.{k}")
            };
            match b.get(k) {
                Some(w) => unknown_field(v, w, p),
                None => {
                    let default = matches!(v, Value::Null | Value::Bool(false))
                        || v.as_array().is_some_and(|x| x.is_empty())
                        || v.as_object().is_some_and(|x| x.is_empty());
                    (!default).then_some(p)
                }
            }
        }),
        (Value::Array(a), Value::Array(b)) => a
            .iter()
            .zip(b)
            .enumerate()
            .find_map(|(i, (v, w))| unknown_field(v, w, format!("{path}[{i}]"))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_of_flattened_objects_are_refused() {
        let ok = br#"{"ops":[{"op":"create","object":{"kind":"port-group","dvs":"prod","name":"web","vlan":100}}]}"#;
        parse_strict(ok).unwrap();
        let bad = br#"{"ops":[{"op":"create","object":{"kind":"port-group","dvs":"prod","name":"web","vlan":100,"vlna":3}}]}"#;
        let e = parse_strict(bad).unwrap_err();
        assert_eq!(e.message, "unknown field `ops[0].object.vlna`");
        let e = parse_strict(br#"{"ops":[{"op":"explode"}]}"#).unwrap_err();
        assert!(e.message.contains("explode"), "{}", e.message);
    }
}
