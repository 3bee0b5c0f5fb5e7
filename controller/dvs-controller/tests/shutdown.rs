//! The `dvs-controller` binary stops on SIGTERM even while a host agent watches its slice (a
//! watch stream never ends by itself, and a graceful shutdown waits for responses in flight).

use api::dvs::{ControllerClient, TxnOp, TxnRequest, WatchEvent};
use model::cluster::Host;
use model::Object;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn sigterm_stops_the_controller_while_an_agent_watches() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Command::new(env!("CARGO_BIN_EXE_dvs-controller"))
        .args(["--listen", "127.0.0.1:0", "--db"])
        .arg(dir.path().join("c.redb"))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // "dvs-controller: serving http://ADDR on the embedded store" (after the open-API warning).
    let mut err = BufReader::new(c.stderr.take().unwrap());
    let url = loop {
        let mut l = String::new();
        assert!(err.read_line(&mut l).unwrap() > 0, "controller exited");
        // After the timestamp and level.
        if let Some((_, rest)) = l.split_once("dvs-controller: serving ") {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
    };
    // Keep draining its stderr so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in err.lines() {});

    let op = ControllerClient::new(&url, None);
    op.txn(&TxnRequest {
        ops: vec![TxnOp::Create {
            object: Object::Host(Host {
                name: "h1".into(),
                vhost_dir: None,
                token_sha256: None,
            }),
            may_exist: false,
        }],
        wait_ms: None,
    })
    .unwrap();
    let mut watch = op.watch("h1", 0, "").unwrap();
    assert!(matches!(watch.next(), Some(Ok(WatchEvent::Slice { .. }))));

    let t = Instant::now();
    let st = Command::new("kill")
        .args(["-TERM", &c.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let status = loop {
        if let Some(s) = c.try_wait().unwrap() {
            break s;
        }
        if t.elapsed() > Duration::from_secs(15) {
            let _ = c.kill();
            panic!("dvs-controller still running 15 s after SIGTERM with a watch stream open");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    // The agent's stream ends (or breaks): it would now reconnect, to another replica if any.
    // (A heartbeat sent before the exit may still be read first.)
    for ev in watch.by_ref().take(3) {
        if ev.is_err() {
            break;
        }
    }
    assert!(watch.next().is_none_or(|e| e.is_err()));
}
