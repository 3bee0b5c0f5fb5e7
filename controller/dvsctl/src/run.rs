//! Carrying out a [`Plan`] against the controller: one transaction per invocation (re-read and
//! retried on a version conflict), reads rendered as tables or JSON.

use crate::cli::Global;
use crate::exit::{Exit, Failure};
use crate::ops::{self, Plan};
use crate::render;
use api::dvs::{ControllerClient, ControllerError, HostToken, ObjectList, StatusReport};
use api::dvs::{TxnReply, TxnRequest, Versioned};
use model::cluster::{Kind, ObjectId};
use serde::Serialize;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// How often a read-modify-write is tried when someone else changed the object in between.
pub const ATTEMPTS: usize = 5;

/// What `dvsctl` needs of the controller (the HTTP client, or a fake in tests).
pub trait Controller {
    fn list(&self, kind: Option<Kind>) -> Result<ObjectList, ControllerError>;
    fn get(&self, id: &ObjectId) -> Result<Versioned, ControllerError>;
    fn txn(&self, t: &TxnRequest) -> Result<TxnReply, ControllerError>;
    fn status(&self) -> Result<StatusReport, ControllerError>;
}

impl Controller for ControllerClient {
    fn list(&self, kind: Option<Kind>) -> Result<ObjectList, ControllerError> {
        ControllerClient::list(self, kind)
    }
    fn get(&self, id: &ObjectId) -> Result<Versioned, ControllerError> {
        ControllerClient::get(self, id)
    }
    fn txn(&self, t: &TxnRequest) -> Result<TxnReply, ControllerError> {
        ControllerClient::txn(self, t)
    }
    fn status(&self) -> Result<StatusReport, ControllerError> {
        ControllerClient::status(self)
    }
}

/// Output is best effort: a closed pipe (`dvsctl port list | head`) is not an error.
fn emit(out: &mut dyn Write, s: &str) {
    let _ = out.write_all(s.as_bytes());
}

fn emit_json<T: Serialize>(out: &mut dyn Write, v: &T) -> Result<(), Failure> {
    let s = serde_json::to_string_pretty(v)
        .map_err(|e| Failure::new(Exit::Refused, format!("cannot print JSON: {e}")))?;
    emit(out, &s);
    emit(out, "\n");
    Ok(())
}

/// Carries out `plan` (anything but the local `completions` and `man`).
pub fn execute(
    g: &Global,
    plan: Plan,
    ctl: &dyn Controller,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    match plan {
        Plan::Txn { ops, token_file } => {
            let req = ops::request(ops, g)?;
            let sink = match &token_file {
                Some(p) => Some(TokenSink::open(p, &host_of(&req))?),
                None => None,
            };
            let reply = ctl.txn(&req)?;
            finish(g, reply, sink, out)
        }
        Plan::Edit { id, change } => {
            let wait_ms = ops::wait_ms(g)?;
            for attempt in 1.. {
                let current = ctl.get(&id)?;
                let Some(new) = ops::apply(&id, &change, current.object)? else {
                    // Already so (--may-exist / --if-exists): no transaction.
                    return Ok(());
                };
                let req = TxnRequest {
                    ops: vec![ops::update(new, current.resource_version)],
                    wait_ms,
                };
                match ctl.txn(&req) {
                    Ok(reply) => return finish(g, reply, None, out),
                    Err(e) if e.code() == "conflict" && attempt < ATTEMPTS => continue,
                    Err(e) if e.code() == "conflict" => {
                        return Err(Failure::new(
                            Exit::Refused,
                            format!("{e} (gave up after {ATTEMPTS} attempts: {id} keeps changing)"),
                        ))
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            unreachable!("the attempts loop returns")
        }
        Plan::List { kind, filter } => {
            let mut l = ctl.list(Some(kind))?;
            l.objects
                .retain(|v| v.object.kind() == kind && filter.keep(&v.object));
            l.objects.sort_by_key(|v| v.object.id());
            if g.json {
                emit_json(out, &l)
            } else {
                emit(out, &render::list(kind, &l.objects));
                Ok(())
            }
        }
        Plan::Show { id } => {
            let v = ctl.get(&id)?;
            if g.json {
                return emit_json(out, &v);
            }
            let related = match id.kind {
                Kind::Dvs | Kind::Host | Kind::PortGroup | Kind::SecurityGroup => {
                    ctl.list(None)?.objects
                }
                _ => vec![],
            };
            emit(out, &render::show(&v, &related));
            Ok(())
        }
        Plan::RuleList { id } => {
            let v = ctl.get(&id)?;
            let model::cluster::Object::SecurityGroup(sg) = v.object else {
                return Err(Failure::new(
                    Exit::Unavailable,
                    format!("unexpected answer from the controller: asked for {id}"),
                ));
            };
            if g.json {
                emit_json(out, &sg.rules)
            } else {
                emit(out, &render::rules(&sg.rules));
                Ok(())
            }
        }
        Plan::Status { ports } => {
            let s = ctl.status()?;
            if g.json {
                emit_json(out, &s)
            } else {
                emit(out, &render::status(&s, ports));
                Ok(())
            }
        }
        Plan::Completions(_) | Plan::Man(_) => Err(Failure::new(
            Exit::Usage,
            "completions and man pages are made without the controller",
        )),
    }
}

/// The host a `host add` transaction creates.
fn host_of(req: &TxnRequest) -> String {
    req.ops
        .iter()
        .find_map(|op| match op {
            api::dvs::TxnOp::Create {
                object: model::cluster::Object::Host(h),
                ..
            } => Some(h.name.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

/// After a write: the new host token, the reply (`--json`), the wait report; exit 4 if hosts
/// are still pending.
fn finish(
    g: &Global,
    mut reply: TxnReply,
    sink: Option<TokenSink>,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let mut token_failure = None;
    if let Some(sink) = sink {
        if let Err(f) = sink.write(&reply.host_tokens) {
            // The token is shown only once: rather print it than lose it.
            for t in &reply.host_tokens {
                emit(out, &format!("{}\n", t.token));
            }
            token_failure = Some(f);
        }
        reply.host_tokens.clear();
    }
    if g.json {
        emit_json(out, &reply)?;
    } else {
        for t in &reply.host_tokens {
            emit(out, &format!("{}\n", t.token));
        }
        if g.wait == crate::cli::Wait::Hosts {
            emit(out, &render::waited(&reply));
        }
    }
    if let Some(f) = token_failure {
        return Err(f);
    }
    match &reply.wait {
        Some(w) if !w.complete() => Err(Failure::new(
            Exit::Pending,
            format!(
                "--wait=hosts: after {:.1} s, {} host{} had not applied revision {}: {}",
                w.waited_ms as f64 / 1000.0,
                w.pending.len(),
                if w.pending.len() == 1 { "" } else { "s" },
                reply.revision,
                w.pending.join(", ")
            ),
        )),
        _ => Ok(()),
    }
}

/// Where `host add --token-file` puts the token: opened (mode 0600) before the transaction, so
/// a file that cannot be written stops it before the host exists.
struct TokenSink {
    path: PathBuf,
    file: File,
    created: bool,
    host: String,
}

impl TokenSink {
    fn open(path: &Path, host: &str) -> Result<TokenSink, Failure> {
        let created = !path.exists();
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(|e| {
                Failure::usage(
                    &ops::host_label(host),
                    "--token-file",
                    format!("cannot write {}: {e}", path.display()),
                )
            })?;
        Ok(TokenSink {
            path: path.to_owned(),
            file,
            created,
            host: host.to_owned(),
        })
    }

    fn write(mut self, tokens: &[HostToken]) -> Result<(), Failure> {
        let Some(t) = tokens
            .iter()
            .find(|t| t.host == self.host)
            .or(tokens.first())
        else {
            // --may-exist on an existing host: no token was issued; leave no empty file.
            if self.created {
                let _ = std::fs::remove_file(&self.path);
            }
            return Ok(());
        };
        let fail = |e: std::io::Error| {
            Failure::new(
                Exit::Refused,
                format!(
                    "{}: --token-file: the host was created, but writing its token to {} \
                     failed ({e}); the token is printed above",
                    ops::host_label(&self.host),
                    self.path.display()
                ),
            )
        };
        self.file
            .set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(fail)?;
        self.file.set_len(0).map_err(fail)?;
        self.file
            .write_all(format!("{}\n", t.token).as_bytes())
            .map_err(fail)?;
        self.file.sync_all().map_err(fail)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
