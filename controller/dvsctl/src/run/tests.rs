use super::*;
use crate::cli::Cli;
use api::dvs::{TxnOp, WaitReport};
use clap::Parser;
use model::cluster::{Dvs, Host, Object};
use model::SecurityGroup;
use std::cell::RefCell;
use std::collections::VecDeque;

/// A controller that serves a fixed set of objects, records every transaction and answers them
/// from a script.
#[derive(Default)]
struct Fake {
    objects: RefCell<Vec<Versioned>>,
    gets: RefCell<usize>,
    sent: RefCell<Vec<TxnRequest>>,
    replies: RefCell<VecDeque<Result<TxnReply, ControllerError>>>,
}

impl Fake {
    fn with(objects: Vec<Object>) -> Fake {
        let f = Fake::default();
        *f.objects.borrow_mut() = objects
            .into_iter()
            .map(|object| Versioned {
                resource_version: 10,
                object,
            })
            .collect();
        f
    }
    fn reply(&self, r: Result<TxnReply, ControllerError>) {
        self.replies.borrow_mut().push_back(r);
    }
}

fn conflict() -> ControllerError {
    ControllerError::Refused {
        status: 409,
        code: "conflict".into(),
        message: "security group \"web\" changed (resource version 10, now 11)".into(),
    }
}

fn ok_reply() -> TxnReply {
    TxnReply {
        revision: 11,
        changed: vec![],
        affected_hosts: vec![],
        host_tokens: vec![],
        wait: None,
    }
}

impl Controller for Fake {
    fn list(&self, kind: Option<Kind>) -> Result<ObjectList, ControllerError> {
        Ok(ObjectList {
            revision: 10,
            objects: self
                .objects
                .borrow()
                .iter()
                .filter(|v| kind.is_none_or(|k| v.object.kind() == k))
                .cloned()
                .collect(),
        })
    }
    fn get(&self, id: &ObjectId) -> Result<Versioned, ControllerError> {
        *self.gets.borrow_mut() += 1;
        let mut objects = self.objects.borrow_mut();
        let v = objects
            .iter_mut()
            .find(|v| v.object.id() == *id)
            .ok_or_else(|| ControllerError::Refused {
                status: 404,
                code: "not_found".into(),
                message: format!("{id} not found"),
            })?;
        let out = v.clone();
        // Every read sees a newer version, as if someone else kept writing.
        v.resource_version += 1;
        Ok(out)
    }
    fn txn(&self, t: &TxnRequest) -> Result<TxnReply, ControllerError> {
        self.sent.borrow_mut().push(t.clone());
        self.replies
            .borrow_mut()
            .pop_front()
            .unwrap_or_else(|| Ok(ok_reply()))
    }
    fn status(&self) -> Result<StatusReport, ControllerError> {
        Err(ControllerError::Unreachable {
            url: "fake".into(),
            message: "no status here".into(),
        })
    }
}

fn exec(args: &str, ctl: &Fake) -> (Result<(), Failure>, String) {
    let cli = Cli::try_parse_from(std::iter::once("dvsctl").chain(args.split_whitespace()))
        .unwrap_or_else(|e| panic!("{args}: {e}"));
    let mut out = vec![];
    let r = ops::plan(&cli.cmd).and_then(|p| execute(&cli.global, p, ctl, &mut out));
    (r, String::from_utf8(out).unwrap())
}

fn web() -> Object {
    Object::SecurityGroup(SecurityGroup::default_group("web"))
}

#[test]
fn update_rereads_and_retries_on_conflict() {
    let ctl = Fake::with(vec![web()]);
    ctl.reply(Err(conflict()));
    ctl.reply(Err(conflict()));
    let (r, _) = exec(
        "sg rule-add web --direction ingress --protocol tcp --port 22",
        &ctl,
    );
    r.unwrap();
    let sent = ctl.sent.borrow();
    assert_eq!(sent.len(), 3);
    assert_eq!(*ctl.gets.borrow(), 3);
    // Each attempt is one update guarded by the version just read, carrying the new rule.
    for (i, t) in sent.iter().enumerate() {
        match &t.ops[..] {
            [TxnOp::Update {
                object: Object::SecurityGroup(g),
                resource_version,
            }] => {
                assert_eq!(*resource_version, Some(10 + i as u64));
                assert_eq!(g.rules.len(), 3);
                assert_eq!(g.rules[2].port_min, Some(22));
            }
            o => panic!("{o:?}"),
        }
    }
}

#[test]
fn update_gives_up_after_attempts() {
    let ctl = Fake::with(vec![web()]);
    for _ in 0..ATTEMPTS {
        ctl.reply(Err(conflict()));
    }
    let (r, _) = exec("sg rule-del web 0", &ctl);
    let f = r.unwrap_err();
    assert_eq!(f.exit, Exit::Refused);
    assert!(f.message.contains("gave up after 5 attempts"), "{f}");
    assert_eq!(ctl.sent.borrow().len(), ATTEMPTS);
}

#[test]
fn other_refusals_are_not_retried() {
    let ctl = Fake::with(vec![web()]);
    ctl.reply(Err(ControllerError::Refused {
        status: 400,
        code: "invalid".into(),
        message: "security group \"web\": rules[2].remote: unknown security group \"x\"".into(),
    }));
    let (r, _) = exec("sg rule-add web --direction ingress --remote-group x", &ctl);
    let f = r.unwrap_err();
    assert_eq!(f.exit, Exit::Refused);
    assert_eq!(
        f.message,
        "security group \"web\": rules[2].remote: unknown security group \"x\""
    );
    assert_eq!(ctl.sent.borrow().len(), 1);
}

#[test]
fn nothing_to_do_sends_no_transaction() {
    let ctl = Fake::with(vec![web()]);
    let (r, out) = exec("sg rule-add web --direction egress --may-exist", &ctl);
    r.unwrap();
    assert_eq!(out, "");
    assert!(ctl.sent.borrow().is_empty());
    let (r, _) = exec("sg rule-del web 7 --if-exists", &ctl);
    r.unwrap();
    assert!(ctl.sent.borrow().is_empty());
    // Editing a missing object: the controller's not-found, exit 1.
    let (r, _) = exec("port move web1 h1", &ctl);
    assert_eq!(r.unwrap_err().exit, Exit::Refused);
}

#[test]
fn wait_with_pending_hosts_exits_4() {
    let ctl = Fake::default();
    ctl.reply(Ok(TxnReply {
        revision: 12,
        changed: vec![ObjectId::new(Kind::Dvs, "prod")],
        affected_hosts: vec!["h1".into(), "h2".into()],
        host_tokens: vec![],
        wait: Some(WaitReport {
            waited_ms: 2000,
            applied: vec!["h1".into()],
            down: vec![],
            pending: vec!["h2".into()],
        }),
    }));
    let (r, out) = exec(
        "--wait=hosts --wait-timeout 2 dvs add prod --vlans 100",
        &ctl,
    );
    let f = r.unwrap_err();
    assert_eq!(f.exit, Exit::Pending);
    assert_eq!(
        f.message,
        "--wait=hosts: after 2.0 s, 1 host had not applied revision 12: h2"
    );
    assert!(
        out.starts_with("waited 2.00 s: 1 applied, 0 down, 1 pending\n"),
        "{out}"
    );
    assert_eq!(ctl.sent.borrow()[0].wait_ms, Some(2000));

    // Complete: exit 0.
    let ctl = Fake::default();
    ctl.reply(Ok(TxnReply {
        wait: Some(WaitReport {
            waited_ms: 10,
            applied: vec!["h1".into()],
            down: vec!["h2".into()],
            pending: vec![],
        }),
        ..ok_reply()
    }));
    let (r, _) = exec("--wait=hosts dvs add prod --vlans 100", &ctl);
    r.unwrap();
}

fn token_reply(host: &str) -> TxnReply {
    TxnReply {
        host_tokens: vec![HostToken {
            host: host.into(),
            token: "s3cr3t".into(),
        }],
        ..ok_reply()
    }
}

#[test]
fn host_token_is_printed_or_written_0600() {
    let ctl = Fake::default();
    ctl.reply(Ok(token_reply("h1")));
    let (r, out) = exec("host add h1", &ctl);
    r.unwrap();
    assert_eq!(out, "s3cr3t\n");

    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("h1.token");
    let ctl = Fake::default();
    ctl.reply(Ok(token_reply("h1")));
    let (r, out) = exec(
        &format!("--json host add h1 --token-file {}", f.display()),
        &ctl,
    );
    r.unwrap();
    assert_eq!(std::fs::read_to_string(&f).unwrap(), "s3cr3t\n");
    let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // The JSON reply printed does not carry the token written to the file.
    assert!(!out.contains("s3cr3t"), "{out}");
    let reply: TxnReply = serde_json::from_str(&out).unwrap();
    assert_eq!(reply.revision, 11);

    // --may-exist on an existing host: no token, and no empty file left behind.
    let g = dir.path().join("h2.token");
    let ctl = Fake::default();
    let (r, _) = exec(
        &format!("host add h2 --may-exist --token-file {}", g.display()),
        &ctl,
    );
    r.unwrap();
    assert!(!g.exists());
}

#[test]
fn unwritable_token_file_stops_before_the_transaction() {
    let ctl = Fake::default();
    let (r, _) = exec("host add h1 --token-file /nonexistent-dir/h1.token", &ctl);
    let f = r.unwrap_err();
    assert_eq!(f.exit, Exit::Usage);
    assert!(
        f.message
            .starts_with("host \"h1\": --token-file: cannot write /nonexistent-dir/h1.token"),
        "{f}"
    );
    assert!(ctl.sent.borrow().is_empty());
}

#[test]
fn lists_filter_sort_and_print_json() {
    let ctl = Fake::with(vec![
        Object::Dvs(Dvs {
            name: "zeta".into(),
            vlans: vec!["5".parse().unwrap()],
        }),
        Object::Host(Host {
            name: "h1".into(),
            vhost_dir: None,
            token_sha256: None,
        }),
        Object::Dvs(Dvs {
            name: "alpha".into(),
            vlans: vec!["100-199".parse().unwrap()],
        }),
    ]);
    let (r, out) = exec("dvs list", &ctl);
    r.unwrap();
    assert_eq!(out, "NAME   VLANS\nalpha  100-199\nzeta   5\n");
    let (r, out) = exec("dvs list --json", &ctl);
    r.unwrap();
    let l: ObjectList = serde_json::from_str(&out).unwrap();
    assert_eq!(l.objects.len(), 2);
    assert_eq!(l.objects[0].object.id(), ObjectId::new(Kind::Dvs, "alpha"));
    let (r, out) = exec("sg rule-list web --json", &Fake::with(vec![web()]));
    r.unwrap();
    let rules: Vec<model::SgRule> = serde_json::from_str(&out).unwrap();
    assert_eq!(rules, SecurityGroup::default_group("web").rules);
}

#[test]
fn unreachable_controller_exits_3() {
    let (r, _) = exec("status", &Fake::default());
    assert_eq!(r.unwrap_err().exit, Exit::Unavailable);
}
