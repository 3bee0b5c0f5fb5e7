//! The controller's API end to end, in process, on the embedded store: transactions with
//! validation and resource versions, authentication, a host's watch stream carrying only its
//! slice, status under a lease, and `--wait=hosts`.

use api::dvs::{ControllerClient, HostAck, HostStatus, PortStatus, TxnOp, TxnRequest, WatchEvent};
use dvs_controller::{Auth, State};
use model::cluster::{Dvs, DvsPort, DvsPortGroup, Host, UplinkGroup};
use model::{Kind, Mac, Object, ObjectId, Port, PortGroup};
use std::sync::mpsc;

/// Polls `f` every 20 ms until it gives a value, at most 10 s (the status map follows the store's
/// watch, a moment after the write was answered).
fn wait_for<T>(mut f: impl FnMut() -> Option<T>) -> T {
    for _ in 0..500 {
        if let Some(v) = f() {
            return v;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!("condition not met in 10 s")
}

/// A controller on an embedded store in `dir`, serving on a free loopback port.
fn start(dir: &std::path::Path, operator_token: &str) -> String {
    start_with(dir, operator_token, None)
}

fn start_with(
    dir: &std::path::Path,
    operator_token: &str,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> String {
    let (tx, rx) = mpsc::channel();
    let path = dir.join("c.redb");
    let hash = dvs_controller::txn::sha256_hex(operator_token);
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let store = dvs_store::open(&dvs_store::StoreConfig::embedded(path))
                .await
                .unwrap();
            let st = State::new(
                store,
                Auth {
                    operator_token_hashes: vec![hash],
                },
            );
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let scheme = if tls.is_some() { "https" } else { "http" };
            tx.send(format!("{scheme}://{}", l.local_addr().unwrap()))
                .unwrap();
            dvs_controller::serve(l, tls, st, std::future::pending())
                .await
                .unwrap();
        });
    });
    rx.recv().unwrap()
}

fn create(o: Object) -> TxnOp {
    TxnOp::Create {
        object: o,
        may_exist: false,
    }
}

fn port(name: &str, n: u8, host: &str) -> Object {
    Object::Port(DvsPort {
        dvs: "prod".into(),
        port: Port {
            storm_control: None,
            name: name.into(),
            mac: Mac([2, 0, 0, 0, 0, n]),
            ips: vec![format!("10.0.0.{n}").parse().unwrap()],
            port_group: "web".into(),
            security_group: None,
        },
        host: Some(host.into()),
        vhost: None,
        ethdev: None,
    })
}

fn host(name: &str) -> Object {
    Object::Host(Host {
        name: name.into(),
        vhost_dir: None,
        token_sha256: None,
    })
}

#[test]
fn operator_defines_a_dvs_and_each_host_sees_its_slice() {
    let dir = tempfile::tempdir().unwrap();
    let url = start(dir.path(), "op-secret");
    let op = ControllerClient::new(&url, Some("op-secret".into()));

    // Without the operator token: refused.
    let e = ControllerClient::new(&url, None).list(None).unwrap_err();
    assert_eq!(e.code(), "unauthorized", "{e}");

    let r = op
        .txn(&TxnRequest {
            ops: vec![
                create(Object::Dvs(Dvs {
                    name: "prod".into(),
                    vlans: vec!["100-199".parse().unwrap()],
                })),
                create(host("h1")),
                create(host("h2")),
                create(Object::PortGroup(DvsPortGroup {
                    dvs: "prod".into(),
                    group: PortGroup::access("web", 100),
                })),
                create(Object::Uplink(UplinkGroup {
                    storm_control: None,
                    name: "up".into(),
                    dvs: "prod".into(),
                    host: "h1".into(),
                    members: vec!["net_af_packet0,iface=up0".into()],
                    bond_mode: Default::default(),
                })),
                create(port("vm1", 1, "h1")),
                create(port("vm2", 2, "h2")),
            ],
            wait_ms: None,
        })
        .unwrap();
    assert_eq!(r.host_tokens.len(), 2);
    assert_eq!(r.affected_hosts, ["h1", "h2"]);
    let token = |h: &str| {
        r.host_tokens
            .iter()
            .find(|t| t.host == h)
            .unwrap()
            .token
            .clone()
    };

    // A whole transaction is refused when one op is invalid, naming object and field.
    let e = op
        .txn(&TxnRequest {
            ops: vec![create(port("vm3", 3, "h1")), create(port("vm4", 1, "h2"))],
            wait_ms: None,
        })
        .unwrap_err();
    assert_eq!(e.code(), "invalid");
    assert!(e.to_string().contains("port \"vm4\": mac:"), "{e}");
    assert!(
        op.get(&ObjectId::new(Kind::Port, "vm3"))
            .unwrap_err()
            .code()
            == "not_found"
    );

    // A host token reads its own slice only.
    let h1 = ControllerClient::new(&url, Some(token("h1")));
    assert_eq!(h1.list(None).unwrap_err().code(), "forbidden");
    assert_eq!(h1.watch("h2", 0, "").err().unwrap().code(), "forbidden");
    let mut w = h1.watch("h1", 0, "").unwrap();
    let Some(Ok(WatchEvent::Slice {
        revision,
        fingerprint,
        slice,
    })) = w.next()
    else {
        panic!()
    };
    assert_eq!(revision, r.revision);
    let names: Vec<&str> = slice.model.ports.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["vm1"]);
    assert_eq!(slice.model.uplinks[0].name, "prod/up");
    // h1 reports what it runs: alive from now on.
    let vm1_up = PortStatus {
        name: "vm1".into(),
        attached: true,
        link: "up".into(),
        error: None,
    };
    let s = HostStatus {
        applied_revision: revision,
        fingerprint: fingerprint.clone(),
        ports: vec![vm1_up.clone()],
        ..Default::default()
    };
    h1.put_status("h1", &s).unwrap();
    // An acknowledgement without a full status before it would leave the ports unknown.
    let ack = HostAck {
        applied_revision: revision,
        fingerprint: fingerprint.clone(),
        error: None,
    };
    let e = op.put_ack("h2", &ack).unwrap_err();
    assert_eq!(e.code(), "conflict", "{e}");
    assert!(e.to_string().contains("send the full status"), "{e}");

    // Resuming with the fingerprint it has: no slice again, a heartbeat.
    let mut w2 = h1.watch("h1", revision, &fingerprint).unwrap();
    assert!(matches!(w2.next(), Some(Ok(WatchEvent::Heartbeat { .. }))));

    // An update with a stale resource version is a conflict; with the current one it goes
    // through and reaches h1's stream.
    let cur = op.get(&ObjectId::new(Kind::PortGroup, "prod/web")).unwrap();
    let Object::PortGroup(mut pg) = cur.object.clone() else {
        panic!()
    };
    pg.group.dhcp_isolation = true;
    let stale = TxnOp::Update {
        object: Object::PortGroup(pg.clone()),
        resource_version: Some(cur.resource_version - 1),
    };
    assert_eq!(
        op.txn(&TxnRequest {
            ops: vec![stale],
            wait_ms: None
        })
        .unwrap_err()
        .code(),
        "conflict"
    );
    let upd = TxnOp::Update {
        object: Object::PortGroup(pg),
        resource_version: Some(cur.resource_version),
    };

    // h1 reports it applied what it gets, in a thread, while the operator waits for hosts.
    // A policy change comes as a delta on the slice h1 runs: the changed port group only.
    let h1c = h1.clone();
    let (mut runs, runs_fp) = (slice.clone(), fingerprint.clone());
    let agent = std::thread::spawn(move || {
        for ev in w {
            if let Ok(WatchEvent::Delta {
                revision,
                base,
                fingerprint,
                delta,
            }) = ev
            {
                assert_eq!(base, runs_fp);
                assert_eq!(delta.port_groups.len(), 1, "{delta:?}");
                assert!(delta.security_groups.is_empty(), "{delta:?}");
                delta.apply(&mut runs).unwrap();
                assert!(runs.model.port_groups[0].dhcp_isolation);
                assert_eq!(delta.fingerprint_after(&base), fingerprint);
                // Acknowledged without the ports: they are as in the status above.
                let a = HostAck {
                    applied_revision: revision,
                    fingerprint,
                    error: None,
                };
                h1c.put_ack("h1", &a).unwrap();
                return (revision, runs);
            }
        }
        panic!("stream ended")
    });
    let r2 = op
        .txn(&TxnRequest {
            ops: vec![upd],
            wait_ms: Some(20_000),
        })
        .unwrap();
    let (applied, runs) = agent.join().unwrap();
    assert_eq!(applied, r2.revision);
    // What h1 built from the delta is the slice the controller now sends whole.
    let Some(Ok(WatchEvent::Slice { slice: whole, .. })) = h1.watch("h1", 0, "").unwrap().next()
    else {
        panic!()
    };
    assert_eq!(runs, whole);
    let wait = r2.wait.unwrap();
    assert_eq!(wait.applied, ["h1"]);
    // h2 never reported: it is down, and does not hold the wait up.
    assert_eq!(wait.down, ["h2"]);
    assert!(wait.pending.is_empty());

    let st = op.status().unwrap();
    let h1r = st.hosts.iter().find(|h| h.host == "h1").unwrap();
    assert!(h1r.alive && h1r.in_sync && h1r.lease.is_some(), "{h1r:?}");
    // The status shows the acknowledged revision and the ports of the last full report.
    let h1s = h1r.status.as_ref().unwrap();
    assert_eq!(h1s.applied_revision, r2.revision);
    assert_eq!(h1s.ports, std::slice::from_ref(&vm1_up));
    // A full report written after the ack is the status again, whatever revision it names.
    let older = HostStatus {
        applied_revision: revision,
        fingerprint: fingerprint.clone(),
        ports: vec![vm1_up],
        error: Some("refused".into()),
        ..Default::default()
    };
    h1.put_status("h1", &older).unwrap();
    let shown = wait_for(|| {
        let st = op.status().unwrap();
        let s = st.hosts.into_iter().find(|h| h.host == "h1")?.status?;
        (s.applied_revision == revision).then_some(s)
    });
    assert_eq!(shown.error.as_deref(), Some("refused"));
    assert!(!st.hosts.iter().find(|h| h.host == "h2").unwrap().alive);

    // Deleting a host that still has ports is refused by validation, naming the port.
    let e = op
        .txn(&TxnRequest {
            ops: vec![TxnOp::Delete {
                id: ObjectId::new(Kind::Host, "h2"),
                if_exists: false,
                resource_version: None,
            }],
            wait_ms: None,
        })
        .unwrap_err();
    assert!(e.to_string().contains("port \"vm2\": host:"), "{e}");
}

/// A private CA and a server certificate for 127.0.0.1, made with the openssl command.
fn make_certs(dir: &std::path::Path) -> Option<()> {
    let sh = |c: &str| {
        std::process::Command::new("sh")
            .arg("-c")
            .arg(c)
            .current_dir(dir)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    if !sh("command -v openssl") {
        return None;
    }
    let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    assert!(sh(&format!("openssl req -x509 {ec} -keyout ca.key -out ca.pem -days 2 -subj /CN=dvs-test-ca 2>/dev/null")));
    assert!(sh(&format!(
        "openssl req {ec} -keyout srv.key -out srv.csr -subj /CN=127.0.0.1 2>/dev/null"
    )));
    std::fs::write(
        dir.join("ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    assert!(sh("openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out srv.pem -days 2 -extfile ext 2>/dev/null"));
    Some(())
}

#[test]
fn https_with_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    if make_certs(dir.path()).is_none() {
        eprintln!(
            "*** SKIPPING https_with_a_private_ca: no openssl command to make certificates ***"
        );
        return;
    }
    let acceptor =
        dvs_controller::tls::acceptor(&dir.path().join("srv.pem"), &dir.path().join("srv.key"))
            .unwrap();
    let url = start_with(dir.path(), "op", Some(acceptor));
    assert!(url.starts_with("https://"));
    let ok =
        ControllerClient::with_ca(&url, Some("op".into()), &dir.path().join("ca.pem")).unwrap();
    assert_eq!(ok.list(None).unwrap().objects.len(), 0);
    // The system's web roots do not know the private CA: refused before any request is sent.
    let e = ControllerClient::new(&url, Some("op".into()))
        .list(None)
        .unwrap_err();
    assert_eq!(e.code(), "unreachable", "{e}");
    // Plain HTTP to the TLS port gets nowhere either.
    let plain = url.replace("https://", "http://");
    assert!(ControllerClient::new(&plain, Some("op".into()))
        .list(None)
        .is_err());
    // A CA file that is not one is named.
    std::fs::write(dir.path().join("bad.pem"), "nonsense").unwrap();
    let e = ControllerClient::with_ca(&url, None, &dir.path().join("bad.pem")).unwrap_err();
    assert!(e.contains("bad.pem") && e.contains("no certificate"), "{e}");
}

/// The cache recycles superseded copies of the desired state, replaying edits onto them: after
/// every one of many creates, updates and deletes, what the controller serves is exactly what
/// was written, and each host's watch still starts from its current slice.
#[test]
fn the_cache_stays_exact_over_many_updates() {
    let dir = tempfile::tempdir().unwrap();
    let url = start(dir.path(), "op");
    let op = ControllerClient::new(&url, Some("op".into()));
    let r = op
        .txn(&TxnRequest {
            ops: vec![
                create(Object::Dvs(Dvs {
                    name: "prod".into(),
                    vlans: vec!["100-199".parse().unwrap()],
                })),
                create(host("h1")),
                create(host("h2")),
                create(Object::PortGroup(DvsPortGroup {
                    dvs: "prod".into(),
                    group: PortGroup::access("web", 100),
                })),
            ],
            wait_ms: None,
        })
        .unwrap();
    let mut want: std::collections::BTreeMap<String, Object> = std::collections::BTreeMap::new();
    for i in 1..=30u8 {
        let name = format!("vm{}", i % 7);
        let id = ObjectId::new(Kind::Port, &name);
        let exists = want.contains_key(&name);
        let op_ = match (exists, i % 3) {
            (true, 0) => {
                want.remove(&name);
                TxnOp::Delete {
                    id,
                    if_exists: false,
                    resource_version: None,
                }
            }
            (true, _) => {
                let o = port(&name, i, if i % 2 == 0 { "h1" } else { "h2" });
                want.insert(name.clone(), o.clone());
                TxnOp::Update {
                    object: o,
                    resource_version: None,
                }
            }
            (false, _) => {
                let o = port(&name, i, "h1");
                want.insert(name.clone(), o.clone());
                create(o)
            }
        };
        op.txn(&TxnRequest {
            ops: vec![op_],
            wait_ms: None,
        })
        .unwrap();
        let listed: Vec<Object> = op
            .list(Some(Kind::Port))
            .unwrap()
            .objects
            .into_iter()
            .map(|v| v.object)
            .collect();
        assert_eq!(
            listed,
            want.values().cloned().collect::<Vec<_>>(),
            "after change {i}"
        );
    }
    // The slice a host is sent is the one computed from scratch.
    let token = r.host_tokens.iter().find(|t| t.host == "h1").unwrap();
    let h1 = ControllerClient::new(&url, Some(token.token.clone()));
    let first = h1.watch("h1", 0, "").unwrap().next().unwrap().unwrap();
    let WatchEvent::Slice { slice, .. } = first else {
        panic!("{first:?}")
    };
    let names: Vec<String> = slice.model.ports.iter().map(|p| p.name.clone()).collect();
    let want_h1: Vec<String> = want
        .iter()
        .filter(|(_, o)| matches!(o, Object::Port(p) if p.host.as_deref() == Some("h1")))
        .map(|(n, _)| n.clone())
        .collect();
    assert_eq!(names, want_h1);
}
