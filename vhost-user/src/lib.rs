//! The vhost-user port lifecycle, independent of how the vring is served.
//!
//! The switch serves vhost-user through DPDK's `net_vhost` PMD, so a vhost port is an ordinary
//! ethdev. What this crate owns is everything around it:
//! - the socket path: its parent directory, stale sockets left by a crashed switch, and refusing to
//!   clobber a file that is not a socket or a socket another process is still serving;
//! - the role: as server the switch creates the socket; as client the guest's VMM owns it and the
//!   switch connects, and net_vhost reconnects after either side restarts;
//! - the devargs string that hands all this to net_vhost;
//! - link tracking: a port only gets traffic once its guest has connected and set up its rings.

#![forbid(unsafe_code)]

pub use model::{Role, VhostConfig};
use serde::{Deserialize, Serialize};
use std::io;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum VhostError {
    #[error("vhost socket path {0:?} must be absolute")]
    NotAbsolute(PathBuf),
    #[error("vhost socket path {0:?} contains ',' or '=', which DPDK devargs cannot carry")]
    BadChars(PathBuf),
    #[error("vhost socket path {0:?} is not valid UTF-8")]
    NotUtf8(PathBuf),
    #[error("cannot create the socket directory {dir:?}: {source}")]
    Dir { dir: PathBuf, source: io::Error },
    #[error("{0:?} exists and is not a socket; refusing to replace it")]
    NotASocket(PathBuf),
    #[error("{0:?} is a live socket served by another process; refusing to take it over")]
    InUse(PathBuf),
    #[error("cannot remove the stale socket {path:?}: {source}")]
    Remove { path: PathBuf, source: io::Error },
    #[error("cannot inspect {path:?}: {source}")]
    Stat { path: PathBuf, source: io::Error },
}

/// A checked socket path in a given role, ready to hand to net_vhost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    cfg: VhostConfig,
}

impl Endpoint {
    /// Checks the path and gets the filesystem ready for `cfg.role`.
    ///
    /// Server: creates the parent directory and removes a stale socket (one nobody accepts on),
    /// which a crashed switch leaves behind; net_vhost would otherwise fail to bind.
    /// Client: creates the parent directory only; the socket may appear later, and net_vhost
    /// keeps retrying until it does.
    pub fn prepare(cfg: &VhostConfig) -> Result<Endpoint, VhostError> {
        let p = &cfg.socket;
        if !p.is_absolute() {
            return Err(VhostError::NotAbsolute(p.clone()));
        }
        let s = p.to_str().ok_or_else(|| VhostError::NotUtf8(p.clone()))?;
        if s.contains(',') || s.contains('=') {
            return Err(VhostError::BadChars(p.clone()));
        }
        if let Some(dir) = p.parent() {
            std::fs::create_dir_all(dir).map_err(|source| VhostError::Dir {
                dir: dir.to_owned(),
                source,
            })?;
        }
        if cfg.role == Role::Server {
            remove_stale(p)?;
        }
        Ok(Endpoint { cfg: cfg.clone() })
    }

    pub fn config(&self) -> &VhostConfig {
        &self.cfg
    }

    pub fn role(&self) -> Role {
        self.cfg.role
    }

    pub fn socket(&self) -> &Path {
        &self.cfg.socket
    }

    /// The net_vhost vdev name for switch-wide index `index` (vdev names must be unique and
    /// start with the driver name).
    pub fn vdev_name(index: u32) -> String {
        format!("net_vhost{index}")
    }

    /// Devargs for `rte_dev_probe`. One queue pair: guests with multiqueue still work on their
    /// first pair, and each forwarding thread gets its own tx queue only where the port has them.
    pub fn devargs(&self, index: u32) -> String {
        let client = match self.cfg.role {
            Role::Server => 0,
            Role::Client => 1,
        };
        format!(
            "{},iface={},client={client},queues=1",
            Self::vdev_name(index),
            self.cfg.socket.display()
        )
    }

    /// Called after the port is removed: a server socket is ours to delete (net_vhost normally
    /// does, this covers a crash between probe and remove); a client socket belongs to the VMM.
    pub fn cleanup(&self) {
        if self.cfg.role == Role::Server {
            if let Ok(md) = std::fs::symlink_metadata(&self.cfg.socket) {
                if md.file_type().is_socket() {
                    let _ = std::fs::remove_file(&self.cfg.socket);
                }
            }
        }
    }
}

fn remove_stale(p: &Path) -> Result<(), VhostError> {
    let md = match std::fs::symlink_metadata(p) {
        Ok(md) => md,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(VhostError::Stat {
                path: p.to_owned(),
                source,
            })
        }
    };
    if !md.file_type().is_socket() {
        return Err(VhostError::NotASocket(p.to_owned()));
    }
    // A listener that accepts means another switch (or a test) owns the path right now.
    if UnixStream::connect(p).is_ok() {
        return Err(VhostError::InUse(p.to_owned()));
    }
    std::fs::remove_file(p).map_err(|source| VhostError::Remove {
        path: p.to_owned(),
        source,
    })
}

/// Link state of a vhost port as the switch sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkState {
    /// No guest, or its rings are not ready: the port gets no traffic.
    Down,
    /// The guest is connected and its rings are live.
    Up,
}

/// Debounced view of a port's link, fed by polling (`rte_eth_link_get_nowait`) from the control
/// thread. Counting transitions lets operators (and tests) see a guest reconnect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkTracker {
    state: LinkState,
    ups: u64,
    downs: u64,
}

impl Default for LinkTracker {
    fn default() -> Self {
        LinkTracker {
            state: LinkState::Down,
            ups: 0,
            downs: 0,
        }
    }
}

impl LinkTracker {
    /// Feeds one observation; returns the new state when it changed.
    pub fn observe(&mut self, up: bool) -> Option<LinkState> {
        let new = if up { LinkState::Up } else { LinkState::Down };
        if new == self.state {
            return None;
        }
        self.state = new;
        match new {
            LinkState::Up => self.ups += 1,
            LinkState::Down => self.downs += 1,
        }
        Some(new)
    }
    pub fn state(&self) -> LinkState {
        self.state
    }
    /// How many times the guest connected (link went up).
    pub fn connects(&self) -> u64 {
        self.ups
    }
    pub fn disconnects(&self) -> u64 {
        self.downs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    fn cfg(p: &Path, role: Role) -> VhostConfig {
        VhostConfig {
            socket: p.to_owned(),
            role,
        }
    }

    #[test]
    fn server_creates_dir_and_removes_stale_socket() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a/b/vm1.sock");
        Endpoint::prepare(&cfg(&p, Role::Server)).unwrap();
        assert!(p.parent().unwrap().is_dir());
        // A socket nobody listens on any more.
        drop(UnixListener::bind(&p).unwrap());
        assert!(p.exists());
        let ep = Endpoint::prepare(&cfg(&p, Role::Server)).unwrap();
        assert!(!p.exists());
        assert_eq!(
            ep.devargs(3),
            format!("net_vhost3,iface={},client=0,queues=1", p.display())
        );
    }

    #[test]
    fn refuses_live_socket_and_regular_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("live.sock");
        let _l = UnixListener::bind(&p).unwrap();
        let e = Endpoint::prepare(&cfg(&p, Role::Server)).unwrap_err();
        assert!(matches!(e, VhostError::InUse(_)), "{e}");
        let f = d.path().join("file");
        std::fs::write(&f, b"x").unwrap();
        let e = Endpoint::prepare(&cfg(&f, Role::Server)).unwrap_err();
        assert!(e.to_string().contains("not a socket"), "{e}");
        assert!(f.exists());
    }

    #[test]
    fn client_leaves_socket_alone() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("vmm.sock");
        let _l = UnixListener::bind(&p).unwrap();
        let ep = Endpoint::prepare(&cfg(&p, Role::Client)).unwrap();
        ep.cleanup();
        assert!(p.exists());
        assert!(ep.devargs(0).contains("client=1"));
    }

    #[test]
    fn rejects_paths_devargs_cannot_carry() {
        let e = Endpoint::prepare(&cfg(Path::new("/tmp/a,b.sock"), Role::Server)).unwrap_err();
        assert!(matches!(e, VhostError::BadChars(_)));
        let e = Endpoint::prepare(&cfg(Path::new("rel.sock"), Role::Server)).unwrap_err();
        assert!(matches!(e, VhostError::NotAbsolute(_)));
    }

    #[test]
    fn link_tracker_counts_reconnects() {
        let mut t = LinkTracker::default();
        assert_eq!(t.observe(false), None);
        assert_eq!(t.observe(true), Some(LinkState::Up));
        assert_eq!(t.observe(true), None);
        assert_eq!(t.observe(false), Some(LinkState::Down));
        assert_eq!(t.observe(true), Some(LinkState::Up));
        assert_eq!((t.connects(), t.disconnects()), (2, 1));
    }
}
