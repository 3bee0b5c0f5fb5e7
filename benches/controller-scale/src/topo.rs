//! The installation the benchmark defines: one DVS `prod`, one security group, ten port groups
//! used on every host (`pg0`..`pg9`, ports spread round-robin), one `sparse` group used on every
//! tenth host only, and per host one uplink group and `ports` ports. Every object is created
//! through the controller's API in batched transactions, as `dvsctl` would.

use api::dvs::{ControllerClient, TxnOp, TxnRequest};
use model::cluster::{Dvs, DvsPort, DvsPortGroup, Host, UplinkGroup};
use model::{Mac, Object, Port, PortGroup, SecurityGroup};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::Instant;

pub const DVS: &str = "prod";
/// The group every host uses.
pub const WIDE: &str = "pg0";
/// The group every tenth host uses.
pub const SPARSE: &str = "sparse";
pub const GROUPS: usize = 10;
/// Objects per transaction: the store takes at most 128 operations per transaction (etcd's
/// default `--max-txn-ops`, which the embedded store enforces too), and the controller adds one
/// for its write sequence.
const BATCH_OPS: usize = 127;

pub fn host_name(i: usize) -> String {
    format!("h{i:05}")
}

pub fn group(name: &str, vlan: u16, dhcp_isolation: bool) -> Object {
    let mut g = PortGroup::access(name, vlan);
    g.dhcp_isolation = dhcp_isolation;
    Object::PortGroup(DvsPortGroup {
        dvs: DVS.into(),
        group: g,
    })
}

pub fn sparse_group(dhcp_isolation: bool) -> Object {
    group(SPARSE, 200, dhcp_isolation)
}

pub fn wide_group(dhcp_isolation: bool) -> Object {
    group(WIDE, 100, dhcp_isolation)
}

fn create(object: Object) -> TxnOp {
    TxnOp::Create {
        object,
        may_exist: false,
    }
}

/// A port with a MAC and an IPv4 address unique in the DVS, derived from a global index.
fn port(name: String, n: u32, group: String, host: &str) -> Object {
    let b = n.to_be_bytes();
    Object::Port(DvsPort {
        dvs: DVS.into(),
        port: Port {
            storm_control: None,
            name,
            mac: Mac([0x02, 0x00, b[0], b[1], b[2], b[3]]),
            ips: vec![IpAddr::V4(Ipv4Addr::new(10, b[1], b[2], b[3]))],
            port_group: group,
            security_group: Some("web".into()),
        },
        host: Some(host.into()),
        vhost: None,
        ethdev: None,
    })
}

/// What defining took.
pub struct Defined {
    pub tokens: HashMap<String, String>,
    pub txns: usize,
    pub seconds: f64,
    /// The slowest transaction's round trip.
    pub max_txn_s: f64,
}

fn run(op: &ControllerClient, ops: Vec<TxnOp>, d: &mut Defined) -> Result<(), String> {
    let t = Instant::now();
    let r = op
        .txn(&TxnRequest { ops, wait_ms: None })
        .map_err(|e| e.to_string())?;
    d.max_txn_s = d.max_txn_s.max(t.elapsed().as_secs_f64());
    d.txns += 1;
    for t in r.host_tokens {
        d.tokens.insert(t.host, t.token);
    }
    Ok(())
}

/// The DVS, its groups, and hosts `0..hosts` with `ports` ports each.
pub fn define(
    op: &ControllerClient,
    hosts: usize,
    ports: usize,
    vhost_dir: &Path,
) -> Result<Defined, String> {
    let start = Instant::now();
    let mut d = Defined {
        tokens: HashMap::new(),
        txns: 0,
        seconds: 0.0,
        max_txn_s: 0.0,
    };
    let mut base = vec![
        create(Object::Dvs(Dvs {
            name: DVS.into(),
            vlans: vec!["100-299".parse().unwrap()],
        })),
        create(Object::SecurityGroup(SecurityGroup::default_group("web"))),
        create(sparse_group(false)),
    ];
    for g in 0..GROUPS {
        base.push(create(group(&format!("pg{g}"), 100 + g as u16, false)));
    }
    run(op, base, &mut d)?;
    let mut ops = vec![];
    for h in 0..hosts {
        let mut one = vec![];
        add_host(&mut one, &host_name(h), h, ports, vhost_dir);
        if !ops.is_empty() && ops.len() + one.len() > BATCH_OPS {
            run(op, std::mem::take(&mut ops), &mut d)?;
        }
        // A host with more ports than a transaction takes goes in several.
        while one.len() > BATCH_OPS {
            let rest = one.split_off(BATCH_OPS);
            run(op, std::mem::replace(&mut one, rest), &mut d)?;
        }
        ops.extend(one);
    }
    if !ops.is_empty() {
        run(op, ops, &mut d)?;
    }
    d.seconds = start.elapsed().as_secs_f64();
    Ok(d)
}

/// Every object of the installation `define` creates, in creation order (for measuring the
/// controller's model operations in memory: `--costs`).
pub fn objects(hosts: usize, ports: usize, vhost_dir: &Path) -> Vec<Object> {
    let mut out = vec![
        Object::Dvs(Dvs {
            name: DVS.into(),
            vlans: vec!["100-299".parse().unwrap()],
        }),
        Object::SecurityGroup(SecurityGroup::default_group("web")),
        sparse_group(false),
    ];
    for g in 0..GROUPS {
        out.push(group(&format!("pg{g}"), 100 + g as u16, false));
    }
    let mut ops = vec![];
    for h in 0..hosts {
        add_host(&mut ops, &host_name(h), h, ports, vhost_dir);
    }
    out.extend(ops.into_iter().filter_map(|o| match o {
        TxnOp::Create { object, .. } => Some(object),
        _ => None,
    }));
    out
}

/// Host number `h` with its uplink group and ports (global port indices `h * ports ..`).
fn add_host(ops: &mut Vec<TxnOp>, name: &str, h: usize, ports: usize, vhost_dir: &Path) {
    ops.push(create(Object::Host(Host {
        name: name.into(),
        vhost_dir: Some(vhost_dir.to_owned()),
        token_sha256: None,
    })));
    ops.push(create(Object::Uplink(UplinkGroup {
        storm_control: None,
        name: "up".into(),
        dvs: DVS.into(),
        host: name.into(),
        members: vec!["net_af_packet0,iface=eth1".into()],
        bond_mode: Default::default(),
    })));
    for i in 0..ports {
        let n = (h * ports + i + 1) as u32;
        let g = if i == 0 && h.is_multiple_of(10) {
            SPARSE.to_string()
        } else {
            format!("pg{}", i % GROUPS)
        };
        ops.push(create(port(format!("{name}-p{i}"), n, g, name)));
    }
}

/// One more host, `name`, with `ports` ports whose global indices start after `first`
/// (for the resync run), in batches.
pub fn define_big_host(
    op: &ControllerClient,
    name: &str,
    first: usize,
    ports: usize,
    vhost_dir: &Path,
) -> Result<(String, f64), String> {
    let start = Instant::now();
    let mut d = Defined {
        tokens: HashMap::new(),
        txns: 0,
        seconds: 0.0,
        max_txn_s: 0.0,
    };
    let mut ops = vec![
        create(Object::Host(Host {
            name: name.into(),
            vhost_dir: Some(vhost_dir.to_owned()),
            token_sha256: None,
        })),
        create(Object::Uplink(UplinkGroup {
            storm_control: None,
            name: "up".into(),
            dvs: DVS.into(),
            host: name.into(),
            members: vec!["net_af_packet0,iface=eth1".into()],
            bond_mode: Default::default(),
        })),
    ];
    for i in 0..ports {
        let n = (first + i + 1) as u32;
        ops.push(create(port(
            format!("{name}-p{i}"),
            n,
            format!("pg{}", 1 + i % (GROUPS - 1)),
            name,
        )));
        if ops.len() >= BATCH_OPS {
            run(op, std::mem::take(&mut ops), &mut d)?;
        }
    }
    if !ops.is_empty() {
        run(op, ops, &mut d)?;
    }
    let token = d
        .tokens
        .remove(name)
        .ok_or_else(|| format!("no token for {name}"))?;
    Ok((token, start.elapsed().as_secs_f64()))
}
