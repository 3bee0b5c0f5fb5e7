//! Where a port's frames come from and go to: a vhost-user socket towards a guest, or a DPDK
//! ethdev (a NIC, an SR-IOV VF, a vdev). Part of the desired state: a host's config and, with the
//! controller, a port's record say how each port is attached.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::PathBuf;

/// Which side creates the Unix socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The switch listens; the VMM connects (QEMU `-chardev socket,path=...` without `server`).
    #[default]
    Server,
    /// The VMM listens; the switch connects and reconnects, so the switch can restart under a
    /// running guest.
    Client,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Server => "server",
            Role::Client => "client",
        })
    }
}

/// A vhost-user backend as written in configs: `vhost = { socket = "...", role = "server" }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VhostConfig {
    pub socket: PathBuf,
    #[serde(default)]
    pub role: Role,
}

/// Which backend serves a model port or uplink.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum Backend {
    /// A vhost-user socket towards a guest (DPDK net_vhost).
    Vhost(VhostConfig),
    /// Any DPDK ethdev: a PCI address or a vdev string (`net_af_packet0,iface=veth0`).
    Ethdev { devargs: String },
}

impl Backend {
    pub fn describe(&self) -> String {
        match self {
            Backend::Vhost(v) => format!("vhost {} ({})", v.socket.display(), v.role),
            Backend::Ethdev { devargs } => format!("ethdev {devargs}"),
        }
    }
}

/// One `[[attach]]` entry: exactly one of `vhost` or `ethdev`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Attach {
    /// A port or uplink name of the model.
    pub port: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vhost: Option<VhostConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ethdev: Option<EthdevConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EthdevConfig {
    pub devargs: String,
}

impl Attach {
    /// The entry that gives `port` this backend (what a config or a state file records).
    pub fn new(port: impl Into<String>, backend: Backend) -> Attach {
        let (vhost, ethdev) = match backend {
            Backend::Vhost(v) => (Some(v), None),
            Backend::Ethdev { devargs } => (None, Some(EthdevConfig { devargs })),
        };
        Attach {
            port: port.into(),
            vhost,
            ethdev,
        }
    }

    pub fn backend(&self) -> Result<Backend, String> {
        match (&self.vhost, &self.ethdev) {
            (Some(v), None) => Ok(Backend::Vhost(v.clone())),
            (None, Some(e)) => Ok(Backend::Ethdev {
                devargs: e.devargs.clone(),
            }),
            (None, None) => Err(
                "needs a backend: `vhost = { socket = ... }` or `ethdev = { devargs = ... }`"
                    .into(),
            ),
            (Some(_), Some(_)) => Err("has both `vhost` and `ethdev`; choose one".into()),
        }
    }
}
