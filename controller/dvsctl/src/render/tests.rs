use super::*;
use api::dvs::{HostReport, HostStatus, PortStatus};
use model::cluster::Dvs;
use model::{Mac, Port, PortGroup, Shaping, VhostConfig};

fn v(object: Object) -> Versioned {
    Versioned {
        resource_version: 3,
        object,
    }
}

fn port(name: &str, n: u8, host: Option<&str>, vhost: Option<VhostConfig>) -> Versioned {
    v(Object::Port(DvsPort {
        dvs: "prod".into(),
        port: Port {
            storm_control: None,
            name: name.into(),
            mac: Mac([2, 0, 0, 0, 0, n]),
            ips: vec![format!("10.0.0.{n}").parse().unwrap()],
            port_group: "web".into(),
            security_group: (n == 1).then(|| "web".into()),
        },
        host: host.map(Into::into),
        vhost,
        ethdev: None,
    }))
}

#[test]
fn table_aligns_columns() {
    let t = table(
        &["A", "LONGER"],
        &[
            vec!["xxxx".into(), "1".into()],
            vec!["y".into(), "22".into()],
        ],
    );
    assert_eq!(t, "A     LONGER\nxxxx  1\ny     22\n");
}

#[test]
fn port_list_renders_aligned() {
    let ports = vec![
        port("web1", 1, Some("h1"), None),
        port(
            "web10",
            10,
            None,
            Some(VhostConfig {
                socket: "/run/vm/web10.sock".into(),
                role: model::Role::Client,
            }),
        ),
    ];
    assert_eq!(
        list(Kind::Port, &ports),
        "\
NAME   DVS   PG   MAC                IPS        SG   HOST  SOCKET
web1   prod  web  02:00:00:00:00:01  10.0.0.1   web  h1    -
web10  prod  web  02:00:00:00:00:0a  10.0.0.10  -    -     /run/vm/web10.sock (client)
"
    );
    assert_eq!(
        list(Kind::Port, &[]),
        "NAME  DVS  PG  MAC  IPS  SG  HOST  SOCKET\n"
    );
}

#[test]
fn pg_and_dvs_lists() {
    let mut trunk = PortGroup::trunk(
        "router",
        vec!["100-110".parse().unwrap(), "120".parse().unwrap()],
        Some(100),
    );
    trunk.dhcp_isolation = true;
    trunk.tcp_checksum_fill = true;
    trunk.shaping = Some(Shaping {
        average_mbps: 100.0,
        peak_mbps: Some(200.0),
        burst_mbit: 10.0,
        priority: model::Priority::High,
    });
    let pgs = vec![
        v(Object::PortGroup(DvsPortGroup {
            dvs: "prod".into(),
            group: PortGroup::access("web", 100),
        })),
        v(Object::PortGroup(DvsPortGroup {
            dvs: "prod".into(),
            group: trunk,
        })),
    ];
    assert_eq!(
        list(Kind::PortGroup, &pgs),
        "\
DVS   NAME    VLANS                         OPTIONS                       SHAPING
prod  web     access 100                    -                             -
prod  router  trunk 100-110,120 native 100  dhcp-isolation,checksum-fill  avg 100 peak 200 burst 10 high
"
    );
    let dvs = vec![v(Object::Dvs(Dvs {
        name: "prod".into(),
        vlans: vec!["100-199".parse().unwrap(), "300".parse().unwrap()],
    }))];
    assert_eq!(list(Kind::Dvs, &dvs), "NAME  VLANS\nprod  100-199,300\n");
}

#[test]
fn rules_show_their_indexes() {
    let g = SecurityGroup {
        name: "db".into(),
        rules: vec![
            SgRule {
                direction: Direction::Ingress,
                ethertype: model::EtherType::IPv4,
                protocol: Protocol::Tcp,
                port_min: Some(5432),
                port_max: Some(5432),
                icmp_type: None,
                icmp_code: None,
                remote: Some(Remote::Group("web".into())),
            },
            SgRule {
                direction: Direction::Ingress,
                ethertype: model::EtherType::IPv6,
                protocol: Protocol::Icmp,
                port_min: None,
                port_max: None,
                icmp_type: Some(128),
                icmp_code: Some(0),
                remote: Some(Remote::Cidr("fd00::/8".parse().unwrap())),
            },
        ],
        allow_router_advertisements: false,
    };
    assert_eq!(
        rules(&g.rules),
        "\
#  DIRECTION  ETHERTYPE  PROTOCOL  PORTS  ICMP   REMOTE
0  ingress    ipv4       tcp       5432   -      group web
1  ingress    ipv6       icmp      -      128/0  fd00::/8
"
    );
    assert_eq!(rules(&[]), "no rules (nothing is let through)\n");
}

#[test]
fn show_dvs_lists_what_belongs_to_it() {
    let all = vec![
        v(Object::Dvs(Dvs {
            name: "prod".into(),
            vlans: vec!["100-199".parse().unwrap()],
        })),
        v(Object::PortGroup(DvsPortGroup {
            dvs: "prod".into(),
            group: PortGroup::access("web", 100),
        })),
        v(Object::PortGroup(DvsPortGroup {
            dvs: "test".into(),
            group: PortGroup::access("other", 5),
        })),
        port("web1", 1, Some("h1"), None),
    ];
    let out = show(&all[0], &all);
    assert_eq!(
        out,
        "\
dvs prod
  vlans:            100-199
  resource version: 3
port groups:
  NAME  VLANS       OPTIONS  SHAPING
  web   access 100  -        -
uplink groups: none
ports: 1
"
    );
}

#[test]
fn show_pg_and_port_say_their_storm_control() {
    let mut g = PortGroup::access("web", 100);
    g.storm_control = Some(model::StormControl {
        broadcast: Some(model::StormLimit {
            pps: 1000,
            burst: Some(100),
            kbps: None,
        }),
        multicast: Some(model::StormLimit {
            pps: 5000,
            burst: None,
            kbps: Some(20000),
        }),
        unknown_unicast: None,
    });
    let all = vec![
        v(Object::PortGroup(DvsPortGroup {
            dvs: "prod".into(),
            group: g,
        })),
        port("web1", 1, Some("h1"), None),
    ];
    let out = show(&all[0], &all);
    assert!(
        out.contains(
            "  storm control:    broadcast 1000 pps burst 100, multicast 5000 pps 20000 kbit/s burst 500\n"
        ),
        "{out}"
    );
    // A port without its own limits follows its group; with its own, says so.
    assert!(show(&all[1], &all).contains("storm control:    the port group's\n"));
    let mut own = all[1].clone();
    if let Object::Port(p) = &mut own.object {
        p.port.storm_control = Some(model::StormControl::default());
    }
    let out = show(&own, &all);
    assert!(
        out.contains("storm control:    none (no class limited) (the port's own)\n"),
        "{out}"
    );
    // Off in a group: a dash.
    let plain = v(Object::PortGroup(DvsPortGroup {
        dvs: "prod".into(),
        group: PortGroup::access("db", 200),
    }));
    assert!(show(&plain, &all).contains("storm control:    -\n"));
}

#[test]
fn status_counts_ports() {
    let s = StatusReport {
        revision: 42,
        store: "embedded".into(),
        hosts: vec![
            HostReport {
                host: "h1".into(),
                alive: true,
                lease: Some("7f3a".into()),
                in_sync: true,
                status: Some(HostStatus {
                    applied_revision: 42,
                    fingerprint: "f".into(),
                    ports: vec![
                        PortStatus {
                            name: "web1".into(),
                            attached: true,
                            link: "up".into(),
                            error: None,
                        },
                        PortStatus {
                            name: "web2".into(),
                            attached: false,
                            link: "down".into(),
                            error: Some("no such socket dir".into()),
                        },
                    ],
                    error: None,
                    agent: "0.1.0".into(),
                }),
            },
            HostReport {
                host: "h2".into(),
                alive: false,
                lease: None,
                in_sync: false,
                status: None,
            },
        ],
    };
    assert_eq!(
        status(&s, true),
        "\
revision 42, store embedded
HOST  ALIVE  LEASE  APPLIED  IN-SYNC  ATTACHED  LINK-UP  AGENT  ERROR
h1    yes    7f3a   42       yes      1/2       1/2      0.1.0  -
h2    no     -      -        no       -         -        -      -

HOST  PORT  ATTACHED  LINK  ERROR
h1    web1  yes       up    -
h1    web2  no        down  no such socket dir
"
    );
}

#[test]
fn wait_report() {
    let w = WaitReport {
        waited_ms: 1250,
        applied: vec!["h1".into(), "h2".into()],
        down: vec!["h3".into()],
        pending: vec![],
    };
    assert_eq!(
        wait(&w),
        "\
waited 1.25 s: 2 applied, 1 down, 0 pending
  applied:  h1, h2
  down:     h3 (no live agent: they get the change when they return)
  pending:  -
"
    );
}
