//! Real etcd members on loopback for the tests: random free ports, a temporary data dir,
//! readiness by polling with a bounded number of tries, and SIGKILL of every member on drop.

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dvs_store::{EtcdOptions, EtcdStore};
use etcd_client::{Client, ConnectOptions};

use super::Fixture;

/// The etcd binary: `$ETCD_BIN`, else `etcd` on `PATH` (Debian's `etcd-server` package).
pub fn etcd_binary() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("ETCD_BIN") {
        return Some(PathBuf::from(bin));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("etcd"))
        .find(|candidate| candidate.is_file())
}

/// `None` (after saying so loudly) when etcd is not installed, unless
/// `DVS_STORE_REQUIRE_ETCD` is set, in which case that is a failure: CI sets it so that a
/// missing etcd cannot pass as green.
pub fn etcd_or_skip(test: &str) -> Option<PathBuf> {
    match etcd_binary() {
        Some(bin) => Some(bin),
        None if std::env::var_os("DVS_STORE_REQUIRE_ETCD").is_some() => {
            panic!("DVS_STORE_REQUIRE_ETCD is set but no etcd binary is on PATH (or ETCD_BIN)")
        }
        None => {
            // Straight to the stderr handle, not eprintln!: the test harness captures the
            // macros' output of passing tests, and this must be seen.
            let _ = writeln!(
                std::io::stderr(),
                "*** SKIPPING etcd test `{test}`: no `etcd` on PATH and no ETCD_BIN; install \
                 Debian's etcd-server package to run it ***"
            );
            None
        }
    }
}

/// A fresh one-member cluster and a store on it, for the shared suite.
pub async fn etcd_fixture(test: &str) -> Option<Fixture> {
    let bin = etcd_or_skip(test)?;
    let cluster = EtcdCluster::start(&bin, 1).await;
    let store = EtcdStore::connect(cluster.options())
        .await
        .unwrap_or_else(|e| panic!("connecting to the test etcd: {e}\n{}", cluster.logs()));
    Some(Fixture {
        store: Arc::new(store),
        keep: Box::new(cluster),
    })
}

pub struct Member {
    pub name: String,
    pub client_url: String,
    peer_url: String,
    log: PathBuf,
    child: Option<Child>,
    /// The command line, to restart the member on its data dir after a kill.
    command: Vec<std::ffi::OsString>,
}

pub struct EtcdCluster {
    pub members: Vec<Member>,
    dir: tempfile::TempDir,
}

/// How many times a cluster start is tried (a port picked as free can be taken by someone
/// else before etcd binds it).
const START_TRIES: usize = 3;

impl EtcdCluster {
    pub async fn start(bin: &Path, size: usize) -> EtcdCluster {
        let mut failures = Vec::new();
        for _ in 0..START_TRIES {
            let mut cluster = Self::spawn(bin, size);
            match cluster.wait_ready().await {
                Ok(()) => return cluster,
                Err(why) => failures.push(format!("{why}\n{}", cluster.logs())),
            }
        }
        panic!(
            "etcd cluster of {size} did not start in {START_TRIES} tries:\n{}",
            failures.join("\n---\n")
        );
    }

    fn spawn(bin: &Path, size: usize) -> EtcdCluster {
        let dir = tempfile::tempdir().expect("temp dir for etcd");
        // Hold every listener until all ports are chosen, so that they are distinct.
        let listeners: Vec<TcpListener> = (0..size * 2)
            .map(|_| TcpListener::bind("127.0.0.1:0").expect("a free loopback port"))
            .collect();
        let ports: Vec<u16> = listeners
            .iter()
            .map(|l| l.local_addr().unwrap().port())
            .collect();
        drop(listeners);
        let mut members: Vec<Member> = (0..size)
            .map(|i| Member {
                name: format!("m{i}"),
                client_url: format!("http://127.0.0.1:{}", ports[2 * i]),
                peer_url: format!("http://127.0.0.1:{}", ports[2 * i + 1]),
                log: dir.path().join(format!("m{i}.log")),
                child: None,
                command: Vec::new(),
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url))
            .collect::<Vec<_>>()
            .join(",");
        let token = format!("dvs-store-test-{}-{}", std::process::id(), ports[0]);
        for m in &mut members {
            let data_dir = dir.path().join(&m.name);
            let mut command: Vec<std::ffi::OsString> = vec![bin.into()];
            command.extend(
                [
                    "--name",
                    &m.name,
                    "--data-dir",
                    data_dir.to_str().expect("UTF-8 temp dir"),
                    "--listen-client-urls",
                    &m.client_url,
                    "--advertise-client-urls",
                    &m.client_url,
                    "--listen-peer-urls",
                    &m.peer_url,
                    "--initial-advertise-peer-urls",
                    &m.peer_url,
                    "--initial-cluster",
                    &initial_cluster,
                    "--initial-cluster-state",
                    "new",
                    "--initial-cluster-token",
                    &token,
                    // Fast elections: a killed leader is replaced in about a second.
                    "--heartbeat-interval",
                    "50",
                    "--election-timeout",
                    "500",
                    "--logger",
                    "zap",
                    "--log-level",
                    "warn",
                ]
                .map(std::ffi::OsString::from),
            );
            m.command = command;
            m.launch();
        }
        EtcdCluster { members, dir }
    }

    /// Polls every member until it serves a linearizable read (it is up and the cluster has a
    /// leader): at most 200 tries, 50 ms apart, and 30 s in all.
    async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        for i in 0..self.members.len() {
            let mut tries = 0;
            loop {
                if let Some(status) = self.members[i]
                    .child
                    .as_mut()
                    .and_then(|c| c.try_wait().ok().flatten())
                {
                    return Err(format!("{} exited early: {status}", self.members[i].name));
                }
                if member_answers(&self.members[i].client_url).await {
                    break;
                }
                tries += 1;
                if tries >= 200 || Instant::now() > deadline {
                    return Err(format!(
                        "{} not ready after {tries} tries",
                        self.members[i].name
                    ));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(())
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }

    pub fn options(&self) -> EtcdOptions {
        EtcdOptions {
            endpoints: self.endpoints(),
            // Small pages, so that the suite's listings exercise paging.
            list_page_size: 7,
            ..EtcdOptions::default()
        }
    }

    /// SIGKILL one member (no chance to flush or hand over leadership).
    pub fn kill(&mut self, index: usize) {
        if let Some(mut child) = self.members[index].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a killed member again on its data dir (etcd then ignores the initial-cluster
    /// flags and rejoins) and waits until it serves reads.
    pub async fn restart(&mut self, index: usize) {
        assert!(
            self.members[index].child.is_none(),
            "member {index} is running"
        );
        self.members[index].launch();
        let url = self.members[index].client_url.clone();
        for _ in 0..200 {
            if member_answers(&url).await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("restarted member {index} not ready\n{}", self.logs());
    }

    /// Index of the current leader, asked of the live members (bounded retries: an election
    /// may be under way).
    pub async fn leader(&self) -> usize {
        for _ in 0..100 {
            for m in self.members.iter().filter(|m| m.child.is_some()) {
                let Ok(Ok(mut client)) = tokio::time::timeout(
                    Duration::from_secs(1),
                    Client::connect([m.client_url.as_str()], None),
                )
                .await
                else {
                    continue;
                };
                let Ok(Ok(status)) =
                    tokio::time::timeout(Duration::from_secs(1), client.status()).await
                else {
                    continue;
                };
                let leader = status.leader();
                let self_id = status.header().map(|h| h.member_id());
                if leader != 0 && self_id == Some(leader) {
                    return self.members.iter().position(|x| x.name == m.name).unwrap();
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no etcd leader found\n{}", self.logs());
    }

    /// The members' logs, for failure messages.
    pub fn logs(&self) -> String {
        self.members
            .iter()
            .map(|m| {
                let text = std::fs::read_to_string(&m.log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(30).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                format!("--- {} log (last lines) ---\n{}", m.name, tail.join("\n"))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Member {
    fn launch(&mut self) {
        // Appends: a restarted member's log follows its first life's.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("etcd log file");
        let child = Command::new(&self.command[0])
            .args(&self.command[1..])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {:?}: {e}", self.command[0]));
        self.child = Some(child);
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}

async fn member_answers(url: &str) -> bool {
    let probe = async {
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_millis(500))
            .with_require_leader(true);
        let mut client = Client::connect([url], Some(options)).await.ok()?;
        client.get("probe", None).await.ok()
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), probe).await,
        Ok(Some(_))
    )
}
