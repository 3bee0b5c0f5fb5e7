//! The `dvsctl` binary against a scripted HTTP controller: what goes on the wire, what is
//! printed, and the exit codes.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::thread;

/// One request as the fake controller saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    authorization: Option<String>,
    body: String,
}

/// Answers each request with the next `(status, body)` of its script, then closes.
struct FakeController {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

fn serve(script: Vec<(u16, &'static str)>) -> FakeController {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(vec![]));
    let log = seen.clone();
    thread::spawn(move || {
        for (status, body) in script {
            let Ok((stream, _)) = listener.accept() else {
                return;
            };
            let mut r = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            let mut parts = line.split_whitespace();
            let method = parts.next().unwrap_or_default().to_owned();
            let path = parts.next().unwrap_or_default().to_owned();
            let (mut len, mut authorization) = (0, None);
            loop {
                let mut h = String::new();
                r.read_line(&mut h).unwrap();
                let h = h.trim_end();
                if h.is_empty() {
                    break;
                }
                let (k, v) = h.split_once(':').unwrap();
                match k.to_ascii_lowercase().as_str() {
                    "content-length" => len = v.trim().parse().unwrap(),
                    "authorization" => authorization = Some(v.trim().to_owned()),
                    _ => {}
                }
            }
            let mut b = vec![0; len];
            r.read_exact(&mut b).unwrap();
            log.lock().unwrap().push(Seen {
                method,
                path,
                authorization,
                body: String::from_utf8(b).unwrap(),
            });
            let mut s = stream;
            let _ = write!(
                s,
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    FakeController { url, seen }
}

fn dvsctl(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_dvsctl"));
    c.args(args)
        .env_remove("DVS_CONTROLLER")
        .env_remove("DVS_TOKEN_FILE")
        .env_remove("DVS_TOKEN");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

const REPLY: &str =
    r#"{"revision": 5, "changed": [{"kind": "dvs", "id": "prod"}], "affected_hosts": []}"#;

#[test]
fn a_create_is_one_transaction_with_the_token() {
    let c = serve(vec![(200, REPLY)]);
    let o = dvsctl(
        &[
            "--controller",
            &c.url,
            "dvs",
            "add",
            "prod",
            "--vlans",
            "100-199,300",
            "--may-exist",
        ],
        &[("DVS_TOKEN", "op-token")],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(o.stdout.is_empty());
    let seen = c.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        (seen[0].method.as_str(), seen[0].path.as_str()),
        ("POST", "/v1/txn")
    );
    assert_eq!(seen[0].authorization.as_deref(), Some("Bearer op-token"));
    let body: serde_json::Value = serde_json::from_str(&seen[0].body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"ops": [{"op": "create", "may_exist": true,
            "object": {"kind": "dvs", "name": "prod", "vlans": ["100-199", "300"]}}]})
    );
}

#[test]
fn an_update_reads_then_writes_that_version() {
    let c = serve(vec![
        (
            200,
            r#"{"resource_version": 41, "kind": "port-group", "dvs": "prod", "name": "web",
                "type": "access", "vlan": 100, "dhcp_isolation": true}"#,
        ),
        (200, REPLY),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let tf = dir.path().join("op.token");
    std::fs::write(&tf, "from-file\n").unwrap();
    let o = dvsctl(
        &[
            "--token-file",
            tf.to_str().unwrap(),
            "pg",
            "set",
            "prod",
            "web",
            "--vlan",
            "101",
        ],
        &[("DVS_CONTROLLER", &c.url), ("DVS_TOKEN", "ignored")],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let seen = c.seen.lock().unwrap().clone();
    assert_eq!(seen[0].method, "GET");
    assert_eq!(seen[0].path, "/v1/object/port-group/prod/web");
    assert_eq!(seen[0].authorization.as_deref(), Some("Bearer from-file"));
    let body: serde_json::Value = serde_json::from_str(&seen[1].body).unwrap();
    let op = &body["ops"][0];
    assert_eq!(op["op"], "update");
    assert_eq!(op["resource_version"], 41);
    assert_eq!(op["object"]["vlan"], 101);
    assert_eq!(op["object"]["dhcp_isolation"], true, "other fields kept");
}

#[test]
fn controller_refusals_map_to_exit_codes() {
    for (status, body, exit) in [
        (
            400,
            r#"{"error": "port group \"prod/web\": vlan: VLAN 300 is not carried by DVS \"prod\" (it carries 100-199)", "code": "invalid"}"#,
            1,
        ),
        (
            404,
            r#"{"error": "dvs \"x\" not found", "code": "not_found"}"#,
            1,
        ),
        (401, r#"{"error": "no token", "code": "unauthorized"}"#, 5),
        (
            403,
            r#"{"error": "a host token cannot do this", "code": "forbidden"}"#,
            5,
        ),
        (
            503,
            r#"{"error": "store unavailable", "code": "unavailable"}"#,
            3,
        ),
    ] {
        let c = serve(vec![(status, body)]);
        let o = dvsctl(&["--controller", &c.url, "dvs", "del", "x"], &[]);
        assert_eq!(o.status.code(), Some(exit), "{status}: {}", stderr(&o));
        let err: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(
            stderr(&o),
            format!("dvsctl: {}\n", err["error"].as_str().unwrap())
        );
    }
}

#[test]
fn unreachable_controller_exits_3() {
    // A port nobody listens on any more.
    let url = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let o = dvsctl(&["--controller", &url, "status"], &[]);
    assert_eq!(o.status.code(), Some(3));
    assert!(
        stderr(&o).starts_with(&format!("dvsctl: cannot reach the controller at {url}")),
        "{}",
        stderr(&o)
    );
}

#[test]
fn bad_command_lines_exit_2_and_send_nothing() {
    let c = serve(vec![(200, REPLY)]);
    let o = dvsctl(
        &[
            "--controller",
            &c.url,
            "port",
            "add",
            "web1",
            "--dvs",
            "prod",
            "--pg",
            "web",
            "--mac",
            "zz",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        stderr(&o),
        "dvsctl: port \"web1\": --mac: \"zz\" is not a MAC address\n"
    );
    let o = dvsctl(&["--controller", &c.url, "pg", "add", "prod", "web"], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(c.seen.lock().unwrap().is_empty());
}

#[test]
fn help_documents_exit_codes() {
    let o = dvsctl(&["--help"], &[]);
    assert_eq!(o.status.code(), Some(0));
    let s = String::from_utf8(o.stdout).unwrap();
    assert!(s.contains("Exit codes:"));
    assert!(s.contains("4  --wait=hosts timed out"));
}

#[test]
fn a_closed_stdout_ends_quietly() {
    // The read end is gone before dvsctl writes a byte (`dvsctl ... | head -1` once head left).
    let mut child = Command::new(env!("CARGO_BIN_EXE_dvsctl"))
        .args(["completions", "bash"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    let err = stderr(&o);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(
        o.status.code(),
        Some(api::stdout::BROKEN_PIPE_STATUS),
        "{err}"
    );
}
