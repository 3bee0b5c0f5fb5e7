use super::*;
use clap::error::ErrorKind;
use clap::Parser;

fn parse(args: &str) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(std::iter::once("dvsctl").chain(args.split_whitespace()))
}

fn plan_of(args: &str) -> Result<Plan, Failure> {
    plan(&parse(args).unwrap_or_else(|e| panic!("{args}: {e}")).cmd)
}

fn ops_of(args: &str) -> Vec<TxnOp> {
    match plan_of(args).unwrap() {
        Plan::Txn { ops, .. } => ops,
        p => panic!("{args}: not a transaction: {p:?}"),
    }
}

fn change_of(args: &str) -> (ObjectId, Change) {
    match plan_of(args).unwrap() {
        Plan::Edit { id, change } => (id, *change),
        p => panic!("{args}: not an edit: {p:?}"),
    }
}

fn usage_error(args: &str) -> String {
    let f = plan_of(args).unwrap_err();
    assert_eq!(f.exit, Exit::Usage, "{args}: {f}");
    f.message
}

fn vl(s: &str) -> Vec<VlanRange> {
    s.split(',').map(|x| x.parse().unwrap()).collect()
}

// ---- command-line errors ----

#[test]
fn value_errors_name_object_and_option() {
    assert_eq!(
        usage_error("port add web1 --dvs prod --pg web --mac zz"),
        r#"port "web1": --mac: "zz" is not a MAC address"#
    );
    assert_eq!(
        usage_error("port add web1 --dvs prod --pg web --mac 02:00:00:00:00:01 --ip 10.0.0.300"),
        r#"port "web1": --ip: "10.0.0.300" is not an IP address"#
    );
    assert_eq!(
        usage_error("pg add prod web --vlan 5000"),
        r#"port group "prod/web": --vlan: VLAN id 5000 out of range 1-4094"#
    );
    assert_eq!(
        usage_error("dvs add prod --vlans 100-199,abc"),
        r#"dvs "prod": --vlans: "abc" is not a VLAN id"#
    );
    assert_eq!(
        usage_error("dvs add prod --vlans 300-200"),
        r#"dvs "prod": --vlans: VLAN range "300-200" is empty (first > last)"#
    );
    assert_eq!(
        usage_error("dvs set prod --vlans ,"),
        r#"dvs "prod": --vlans: needs at least one VLAN id or range (100-199,300)"#
    );
    assert!(usage_error("dvs add bad/name --vlans 1")
        .starts_with(r#"dvs "bad/name": name: "bad/name" is not a valid name"#));
    assert!(
        usage_error("port add p1 --dvs prod --pg we?b --mac 02:00:00:00:00:01")
            .starts_with(r#"port "p1": --pg: "we?b" is not a valid name"#)
    );
    assert_eq!(
        usage_error("host add h1 --vhost-dir run/vhost"),
        r#"host "h1": --vhost-dir: "run/vhost" is not an absolute path"#
    );
    assert_eq!(
        usage_error("pg add prod web --vlan 10 --shaping-average -5"),
        r#"port group "prod/web": --shaping-average: must be greater than 0"#
    );
    assert_eq!(
        usage_error("pg add prod web --vlan 10 --shaping-peak 5"),
        r#"port group "prod/web": --shaping-peak: shaping is off; turn it on with --shaping-average MBPS"#
    );
    assert_eq!(
        usage_error("pg add prod web --vlan 10 --shaping-average 100 --shaping-peak 50"),
        r#"port group "prod/web": --shaping-peak: 50 Mbit/s is below the average rate 100 Mbit/s"#
    );
}

#[test]
fn rule_option_errors() {
    assert_eq!(
        usage_error("sg rule-add web --direction ingress --port 80"),
        r#"security group "web": --port: port ranges need --protocol tcp or udp"#
    );
    assert_eq!(
        usage_error("sg rule-add web --direction ingress --protocol tcp --port 90-80"),
        r#"security group "web": --port: port range "90-80" is empty (first > last)"#
    );
    assert_eq!(
        usage_error("sg rule-add web --direction ingress --protocol sctpx"),
        r#"security group "web": --protocol: "sctpx" is not tcp, udp, icmp, any or a protocol number (0-255)"#
    );
    assert_eq!(
        usage_error("sg rule-add web --direction ingress --icmp-type 8"),
        r#"security group "web": --icmp-type: an ICMP type needs --protocol icmp"#
    );
    assert_eq!(
        usage_error(
            "sg rule-add web --direction ingress --ethertype ipv4 --remote-cidr 2001:db8::/32"
        ),
        r#"security group "web": --remote-cidr: 2001:db8::/32 does not match --ethertype ipv4"#
    );
    assert!(
        usage_error("sg rule-add web --direction ingress --remote-cidr 10.0.0.0/40")
            .starts_with(r#"security group "web": --remote-cidr: prefix length 40"#)
    );
}

#[test]
fn clap_refuses_inconsistent_command_lines() {
    let kind = |a: &str| parse(a).unwrap_err().kind();
    // pg add needs exactly one of --vlan / --trunk.
    assert_eq!(kind("pg add prod web"), ErrorKind::MissingRequiredArgument);
    assert_eq!(
        kind("pg add prod web --vlan 10 --trunk 10-20"),
        ErrorKind::ArgumentConflict
    );
    assert_eq!(
        kind("pg add prod web --vlan 10 --native-vlan 5"),
        ErrorKind::ArgumentConflict
    );
    assert_eq!(
        kind("pg add prod web --native-vlan 5"),
        ErrorKind::MissingRequiredArgument
    );
    assert_eq!(
        kind("sg rule-add web --direction ingress --protocol icmp --icmp-code 0"),
        ErrorKind::MissingRequiredArgument
    );
    assert_eq!(
        kind("pg set prod web --no-shaping --shaping-average 5"),
        ErrorKind::ArgumentConflict
    );
    assert_eq!(
        kind("pg set prod web --dhcp-isolation --no-dhcp-isolation"),
        ErrorKind::ArgumentConflict
    );
    // rule-del: an index or the rule's options, not both, not neither.
    assert_eq!(kind("sg rule-del web"), ErrorKind::MissingRequiredArgument);
    assert_eq!(
        kind("sg rule-del web 1 --direction ingress"),
        ErrorKind::ArgumentConflict
    );
    assert_eq!(
        kind("sg rule-del web --protocol tcp"),
        ErrorKind::MissingRequiredArgument
    );
    assert_eq!(
        kind("port set web1 --host a --unplace"),
        ErrorKind::ArgumentConflict
    );
    assert_eq!(
        kind("port add p --dvs d --pg g --mac 02:00:00:00:00:01 --role client"),
        ErrorKind::MissingRequiredArgument
    );
    assert_eq!(
        kind("uplink add prod h1 up"),
        ErrorKind::MissingRequiredArgument
    );
    assert_eq!(
        kind("uplink set prod h1 up"),
        ErrorKind::MissingRequiredArgument
    );
    assert_eq!(kind("host set h1"), ErrorKind::MissingRequiredArgument);
    assert_eq!(
        kind("uplink add prod h1 up --member x --bond-mode roundrobin"),
        ErrorKind::InvalidValue
    );
    assert_eq!(kind("--wait=all dvs list"), ErrorKind::InvalidValue);
    // Global options go anywhere (but the operator's --token-file only before the subcommand).
    let c = parse("dvs list --json --controller http://c:1 --wait hosts").unwrap();
    assert!(c.global.json);
    assert_eq!(c.global.controller, "http://c:1");
    assert_eq!(c.global.wait, Wait::Hosts);
    assert_eq!(kind("dvs list --token-file t"), ErrorKind::UnknownArgument);
}

#[test]
fn set_with_nothing_to_change_is_refused() {
    assert_eq!(
        usage_error("pg set prod web"),
        r#"port group "prod/web": nothing to change: give at least one option (see dvsctl pg set --help)"#
    );
    assert_eq!(
        usage_error("port set web1"),
        r#"port "web1": nothing to change: give at least one option (see dvsctl port set --help)"#
    );
}

#[test]
fn wait_option_sets_wait_ms() {
    let g = |a: &str| parse(a).unwrap().global;
    let none = request(vec![], &g("dvs list")).unwrap();
    assert_eq!(none.wait_ms, None);
    let w = request(vec![], &g("--wait=hosts dvs list")).unwrap();
    assert_eq!(w.wait_ms, Some(30_000));
    let w = request(vec![], &g("--wait=hosts --wait-timeout 5 dvs list")).unwrap();
    assert_eq!(w.wait_ms, Some(5_000));
    let f = request(vec![], &g("--wait=hosts --wait-timeout 500 dvs list")).unwrap_err();
    assert_eq!(f.exit, Exit::Usage);
    assert_eq!(
        f.message,
        "--wait-timeout: 500 is not between 1 and 120 seconds"
    );
    // Without --wait=hosts the timeout is not looked at.
    assert_eq!(
        request(vec![], &g("--wait-timeout 500 dvs list"))
            .unwrap()
            .wait_ms,
        None
    );
}

// ---- ops built for each command ----

#[test]
fn dvs_ops() {
    assert_eq!(
        ops_of("dvs add prod --vlans 100-199,300"),
        vec![TxnOp::Create {
            object: Object::Dvs(Dvs {
                name: "prod".into(),
                vlans: vl("100-199,300"),
            }),
            may_exist: false,
        }]
    );
    assert!(matches!(
        &ops_of("dvs add prod --vlans 100 --may-exist")[..],
        [TxnOp::Create {
            may_exist: true,
            ..
        }]
    ));
    assert_eq!(
        ops_of("dvs del prod"),
        vec![TxnOp::Delete {
            id: ObjectId::new(Kind::Dvs, "prod"),
            if_exists: false,
            resource_version: None,
        }]
    );
    assert_eq!(
        ops_of("dvs del prod --if-exists"),
        vec![delete(Kind::Dvs, "prod", true)]
    );
    assert_eq!(
        change_of("dvs set prod --vlans 100-299"),
        (
            ObjectId::new(Kind::Dvs, "prod"),
            Change::DvsVlans(vl("100-299"))
        )
    );
}

#[test]
fn every_del_takes_if_exists_and_every_add_may_exist() {
    let dels = [
        ("dvs del d", Kind::Dvs, "d"),
        ("host del h", Kind::Host, "h"),
        ("uplink del d h u", Kind::Uplink, "d/h/u"),
        ("pg del d g", Kind::PortGroup, "d/g"),
        ("sg del s", Kind::SecurityGroup, "s"),
        ("port del p", Kind::Port, "p"),
    ];
    for (cmd, kind, id) in dels {
        assert_eq!(ops_of(cmd), vec![delete(kind, id, false)], "{cmd}");
        let with = format!("{cmd} --if-exists");
        assert_eq!(ops_of(&with), vec![delete(kind, id, true)], "{with}");
    }
    let adds = [
        "dvs add d --vlans 1",
        "host add h",
        "uplink add d h u --member x",
        "pg add d g --vlan 1",
        "sg add s",
        "port add p --dvs d --pg g --mac 02:00:00:00:00:01",
    ];
    for cmd in adds {
        for may_exist in [false, true] {
            let line = if may_exist {
                format!("{cmd} --may-exist")
            } else {
                cmd.to_owned()
            };
            match &ops_of(&line)[..] {
                [TxnOp::Create { may_exist: m, .. }] => assert_eq!(*m, may_exist, "{line}"),
                o => panic!("{line}: {o:?}"),
            }
        }
    }
}

#[test]
fn host_and_uplink_ops() {
    match plan_of("host add h1 --vhost-dir /srv/vhost --token-file /tmp/t").unwrap() {
        Plan::Txn { ops, token_file } => {
            assert_eq!(token_file, Some(PathBuf::from("/tmp/t")));
            assert_eq!(
                ops,
                vec![create(
                    Object::Host(Host {
                        name: "h1".into(),
                        vhost_dir: Some("/srv/vhost".into()),
                        token_sha256: None,
                    }),
                    false
                )]
            );
        }
        p => panic!("{p:?}"),
    }
    assert_eq!(
        ops_of(
            "uplink add prod h1 up --member 0000:3b:00.0 --member 0000:3b:00.1 --bond-mode lacp"
        ),
        vec![create(
            Object::Uplink(UplinkGroup {
                storm_control: None,
                name: "up".into(),
                dvs: "prod".into(),
                host: "h1".into(),
                members: vec!["0000:3b:00.0".into(), "0000:3b:00.1".into()],
                bond_mode: BondMode::Lacp,
            }),
            false
        )]
    );
    match &ops_of("uplink add prod h1 up --member net_af_packet0,iface=eth1")[..] {
        [TxnOp::Create {
            object: Object::Uplink(u),
            ..
        }] => {
            // A comma inside devargs is not a list separator.
            assert_eq!(u.members, vec!["net_af_packet0,iface=eth1".to_owned()]);
            assert_eq!(u.bond_mode, BondMode::ActiveBackup);
        }
        o => panic!("{o:?}"),
    }
    assert_eq!(
        change_of("host set h1 --default-vhost-dir"),
        (ObjectId::new(Kind::Host, "h1"), Change::HostVhostDir(None))
    );
}

#[test]
fn pg_add_builds_the_group() {
    let pg = |a: &str| match &ops_of(a)[..] {
        [TxnOp::Create {
            object: Object::PortGroup(p),
            ..
        }] => p.clone(),
        o => panic!("{a}: {o:?}"),
    };
    let g = pg("pg add prod web --vlan 100 --dhcp-isolation --ip-mac-binding");
    assert_eq!(g.dvs, "prod");
    assert_eq!(
        g.group,
        PortGroup {
            dhcp_isolation: true,
            ip_mac_binding: true,
            ..PortGroup::access("web", 100)
        }
    );
    let g = pg(
        "pg add prod router --trunk 100-110,120 --native-vlan 100 --checksum-fill \
                --shaping-average 100 --shaping-peak 200 --shaping-burst 10 --priority high",
    );
    assert_eq!(
        g.group,
        PortGroup {
            tcp_checksum_fill: true,
            shaping: Some(Shaping {
                average_mbps: 100.0,
                peak_mbps: Some(200.0),
                burst_mbit: 10.0,
                priority: Priority::High,
            }),
            ..PortGroup::trunk("router", vl("100-110,120"), Some(100))
        }
    );
    let g = pg("pg add prod slow --vlan 7 --shaping-average 10");
    assert_eq!(
        g.group.shaping,
        Some(Shaping {
            average_mbps: 10.0,
            peak_mbps: None,
            burst_mbit: 0.0,
            priority: Priority::Medium,
        })
    );
}

#[test]
fn sg_and_port_ops() {
    match &ops_of("sg add web --default-rules")[..] {
        [TxnOp::Create {
            object: Object::SecurityGroup(g),
            ..
        }] => assert_eq!(*g, SecurityGroup::default_group("web")),
        o => panic!("{o:?}"),
    }
    match &ops_of("sg add db")[..] {
        [TxnOp::Create {
            object: Object::SecurityGroup(g),
            ..
        }] => assert!(g.rules.is_empty()),
        o => panic!("{o:?}"),
    }
    assert_eq!(
        ops_of(
            "port add web1 --dvs prod --pg web --mac 02:00:00:00:00:01 --ip 10.0.0.1,fd00::1 \
             --sg web --host h1 --socket /run/vm/web1.sock --role client"
        ),
        vec![create(
            Object::Port(DvsPort {
                dvs: "prod".into(),
                port: Port {
                    storm_control: None,
                    name: "web1".into(),
                    mac: Mac([2, 0, 0, 0, 0, 1]),
                    ips: vec!["10.0.0.1".parse().unwrap(), "fd00::1".parse().unwrap()],
                    port_group: "web".into(),
                    security_group: Some("web".into()),
                },
                host: Some("h1".into()),
                vhost: Some(VhostConfig {
                    socket: "/run/vm/web1.sock".into(),
                    role: Role::Client,
                }),
                ethdev: None,
            }),
            false
        )]
    );
    match &ops_of("port add web2 --dvs prod --pg web --mac 02:00:00:00:00:02")[..] {
        [TxnOp::Create {
            object: Object::Port(p),
            ..
        }] => {
            assert_eq!(
                (&p.host, &p.vhost, &p.port.security_group),
                (&None, &None, &None)
            );
            assert!(p.port.ips.is_empty());
        }
        o => panic!("{o:?}"),
    }
    assert_eq!(
        change_of("port move web1 h2"),
        (
            ObjectId::new(Kind::Port, "web1"),
            Change::Port(PortChange {
                host: Some(Some("h2".into())),
                ..PortChange::default()
            })
        )
    );
    assert_eq!(
        change_of("port set web1 --unplace --no-sg --no-ip --pg db"),
        (
            ObjectId::new(Kind::Port, "web1"),
            Change::Port(PortChange {
                port_group: Some("db".into()),
                ips: Some(vec![]),
                security_group: Some(None),
                host: Some(None),
                ..PortChange::default()
            })
        )
    );
}

#[test]
fn reads_plan_lists_with_filters() {
    assert_eq!(
        plan_of("port list --host h1").unwrap(),
        Plan::List {
            kind: Kind::Port,
            filter: Filter {
                dvs: None,
                host: Some("h1".into())
            }
        }
    );
    assert_eq!(
        plan_of("pg show prod web").unwrap(),
        Plan::Show {
            id: ObjectId::new(Kind::PortGroup, "prod/web")
        }
    );
    assert_eq!(
        plan_of("uplink show prod h1 up").unwrap(),
        Plan::Show {
            id: ObjectId::new(Kind::Uplink, "prod/h1/up")
        }
    );
    let f = Filter {
        dvs: Some("prod".into()),
        host: Some("a".into()),
    };
    let mut p = port_obj(None);
    assert!(!f.keep(&p));
    if let Object::Port(x) = &mut p {
        x.host = Some("a".into());
    }
    assert!(f.keep(&p));
    // A filter by host does not apply to kinds without one (but by DVS it does).
    let pg = Object::PortGroup(DvsPortGroup {
        dvs: "test".into(),
        group: PortGroup::access("g", 1),
    });
    assert!(!f.keep(&pg));
}

// ---- rules ----

fn rule_of(args: &str) -> SgRule {
    match change_of(args).1 {
        Change::RuleAdd { rule, .. } => rule,
        c => panic!("{c:?}"),
    }
}

#[test]
fn rule_add_builds_rules() {
    assert_eq!(
        rule_of("sg rule-add web --direction ingress --protocol tcp --port 8000-8080 --remote-cidr 10.0.0.0/8"),
        SgRule {
            direction: Direction::Ingress,
            ethertype: EtherType::IPv4,
            protocol: Protocol::Tcp,
            port_min: Some(8000),
            port_max: Some(8080),
            icmp_type: None,
            icmp_code: None,
            remote: Some(Remote::Cidr("10.0.0.0/8".parse().unwrap())),
        }
    );
    // The ethertype follows the remote prefix unless given; ICMP's number is named.
    let r = rule_of("sg rule-add web --direction ingress --protocol 58 --icmp-type 128 --icmp-code 0 --remote-cidr fd00::/8");
    assert_eq!(
        (r.ethertype, r.protocol, r.icmp_type, r.icmp_code),
        (EtherType::IPv6, Protocol::Icmp, Some(128), Some(0))
    );
    let r =
        rule_of("sg rule-add db --direction ingress --protocol 6 --port 5432 --remote-group web");
    assert_eq!(r.protocol, Protocol::Tcp);
    assert_eq!((r.port_min, r.port_max), (Some(5432), Some(5432)));
    assert_eq!(r.remote, Some(Remote::Group("web".into())));
    let r = rule_of("sg rule-add db --direction egress --protocol 47");
    assert_eq!(
        (r.direction, r.protocol, r.remote),
        (Direction::Egress, Protocol::Number(47), None)
    );
}

fn sg(rules: Vec<SgRule>) -> Object {
    Object::SecurityGroup(SecurityGroup {
        name: "web".into(),
        rules,
        allow_router_advertisements: false,
    })
}

fn apply_args(args: &str, current: Object) -> Result<Option<Object>, Failure> {
    let (id, change) = change_of(args);
    apply(&id, &change, current)
}

#[test]
fn rule_add_and_del_apply() {
    let http = rule_of("sg rule-add web --direction ingress --protocol tcp --port 80");
    let ssh = rule_of("sg rule-add web --direction ingress --protocol tcp --port 22");
    let start = sg(vec![http.clone()]);

    let added = apply_args(
        "sg rule-add web --direction ingress --protocol tcp --port 22",
        start.clone(),
    )
    .unwrap();
    assert_eq!(added, Some(sg(vec![http.clone(), ssh.clone()])));

    // The same rule again: refused, or nothing to do with --may-exist.
    let f = apply_args(
        "sg rule-add web --direction ingress --protocol tcp --port 80",
        start.clone(),
    )
    .unwrap_err();
    assert_eq!(f.exit, Exit::Refused);
    assert_eq!(
        f.message,
        r#"security group "web": rule-add: the same rule is already rules[0]"#
    );
    assert_eq!(
        apply_args(
            "sg rule-add web --direction ingress --protocol tcp --port 80 --may-exist",
            start.clone()
        )
        .unwrap(),
        None
    );

    let both = sg(vec![http.clone(), ssh.clone()]);
    assert_eq!(
        apply_args("sg rule-del web 0", both.clone()).unwrap(),
        Some(sg(vec![ssh.clone()]))
    );
    assert_eq!(
        apply_args(
            "sg rule-del web --direction ingress --protocol tcp --port 22",
            both.clone()
        )
        .unwrap(),
        Some(sg(vec![http.clone()]))
    );
    let f = apply_args("sg rule-del web 2", both.clone()).unwrap_err();
    assert_eq!(
        f.message,
        r#"security group "web": rule-del: no rule rules[2] (it has 2 rules)"#
    );
    let f = apply_args("sg rule-del web --direction egress", both.clone()).unwrap_err();
    assert_eq!(
        f.message,
        r#"security group "web": rule-del: no rule matches those options"#
    );
    assert_eq!(
        apply_args("sg rule-del web 2 --if-exists", both.clone()).unwrap(),
        None
    );
    assert_eq!(
        apply_args("sg rule-del web --direction egress --if-exists", both).unwrap(),
        None
    );
}

// ---- applying set commands ----

fn pg_obj(g: PortGroup) -> Object {
    Object::PortGroup(DvsPortGroup {
        dvs: "prod".into(),
        group: g,
    })
}

fn group(o: Option<Object>) -> PortGroup {
    match o {
        Some(Object::PortGroup(p)) => p.group,
        o => panic!("{o:?}"),
    }
}

/// `--storm-*`: set on add, merged class by class on set, off with `--no-storm-control`.
#[test]
fn pg_storm_control_options() {
    let add = match ops_of("pg add prod web --vlan 100 --storm-broadcast 1000 --storm-burst 50")
        .as_slice()
    {
        [TxnOp::Create {
            object: Object::PortGroup(p),
            ..
        }] => p.group.clone(),
        o => panic!("{o:?}"),
    };
    let b = model::StormLimit {
        pps: 1000,
        burst: Some(50),
        kbps: None,
    };
    assert_eq!(add.storm_control.unwrap().broadcast, Some(b));
    assert_eq!(add.storm_control.unwrap().multicast, None);
    let g = group(
        apply_args(
            "pg set prod web --storm-multicast 5000",
            pg_obj(add.clone()),
        )
        .unwrap(),
    );
    let s = g.storm_control.unwrap();
    assert_eq!(s.broadcast, Some(b), "kept");
    assert_eq!(s.multicast, Some(model::StormLimit::pps(5000)));
    let off = group(apply_args("pg set prod web --no-storm-control", pg_obj(g)).unwrap());
    assert_eq!(off.storm_control, None);
    assert_eq!(
        usage_error("pg add prod web --vlan 100 --storm-broadcast lots"),
        r#"port group "prod/web": --storm-broadcast: "lots" is not a whole number"#
    );
    assert!(usage_error("pg add prod web --vlan 100 --storm-burst 5").contains("--storm-burst"));
}

#[test]
fn pg_set_applies() {
    let access = PortGroup {
        dhcp_isolation: true,
        ..PortGroup::access("web", 100)
    };
    // To a trunk: the access VLAN goes; other options stay.
    let g = group(
        apply_args(
            "pg set prod web --trunk 100-110 --native-vlan 100",
            pg_obj(access.clone()),
        )
        .unwrap(),
    );
    assert_eq!(
        g,
        PortGroup {
            dhcp_isolation: true,
            ..PortGroup::trunk("web", vl("100-110"), Some(100))
        }
    );
    // And back: the trunk's VLANs and native VLAN go.
    let back = group(apply_args("pg set prod web --vlan 101", pg_obj(g.clone())).unwrap());
    assert_eq!(
        back,
        PortGroup {
            dhcp_isolation: true,
            ..PortGroup::access("web", 101)
        }
    );
    let f = apply_args("pg set prod web --native-vlan 5", pg_obj(access.clone())).unwrap_err();
    assert_eq!(f.exit, Exit::Refused);
    assert_eq!(
        f.message,
        r#"port group "prod/web": --native-vlan: an access group has no native VLAN (make it a trunk with --trunk)"#
    );
    let g = group(
        apply_args(
            "pg set prod web --no-dhcp-isolation --ip-mac-binding --checksum-fill",
            pg_obj(access.clone()),
        )
        .unwrap(),
    );
    assert_eq!(
        (g.dhcp_isolation, g.ip_mac_binding, g.tcp_checksum_fill),
        (false, true, true)
    );

    // Shaping: changing one field of an unshaped group needs the average.
    let f = apply_args("pg set prod web --priority high", pg_obj(access.clone())).unwrap_err();
    assert_eq!(
        f.message,
        r#"port group "prod/web": --priority: shaping is off; turn it on with --shaping-average MBPS"#
    );
    let shaped = group(
        apply_args(
            "pg set prod web --shaping-average 50 --priority low",
            pg_obj(access.clone()),
        )
        .unwrap(),
    );
    let s = shaped.shaping.unwrap();
    assert_eq!(
        (s.average_mbps, s.peak_mbps, s.priority),
        (50.0, None, Priority::Low)
    );
    let g = group(apply_args("pg set prod web --shaping-peak 80", pg_obj(shaped.clone())).unwrap());
    let s2 = g.shaping.unwrap();
    assert_eq!(
        (s2.average_mbps, s2.peak_mbps, s2.priority),
        (50.0, Some(80.0), Priority::Low)
    );
    let f = apply_args("pg set prod web --shaping-peak 20", pg_obj(shaped.clone())).unwrap_err();
    assert_eq!(f.exit, Exit::Usage);
    let off = group(apply_args("pg set prod web --no-shaping", pg_obj(shaped)).unwrap());
    assert_eq!(off.shaping, None);
}

fn port_obj(vhost: Option<VhostConfig>) -> Object {
    Object::Port(DvsPort {
        dvs: "prod".into(),
        port: Port {
            storm_control: None,
            name: "web1".into(),
            mac: Mac([2, 0, 0, 0, 0, 1]),
            ips: vec!["10.0.0.1".parse().unwrap()],
            port_group: "web".into(),
            security_group: Some("web".into()),
        },
        host: None,
        vhost,
        ethdev: None,
    })
}

fn port_of(o: Option<Object>) -> DvsPort {
    match o {
        Some(Object::Port(p)) => p,
        o => panic!("{o:?}"),
    }
}

#[test]
fn port_set_and_move_apply() {
    let p = port_of(apply_args("port move web1 h2", port_obj(None)).unwrap());
    assert_eq!(p.host.as_deref(), Some("h2"));
    assert_eq!(
        port_of(Some(port_obj(None))).port,
        p.port,
        "only the host changed"
    );

    let p = port_of(
        apply_args(
            "port set web1 --mac 02:00:00:00:00:09 --ip 10.0.0.9 --ip 10.0.0.10 --no-sg",
            port_obj(None),
        )
        .unwrap(),
    );
    assert_eq!(p.port.mac, Mac([2, 0, 0, 0, 0, 9]));
    assert_eq!(p.port.ips.len(), 2);
    assert_eq!(p.port.security_group, None);

    // --role alone changes an explicit socket's role; on the default socket it is refused.
    let own = Some(VhostConfig {
        socket: "/run/vm/web1.sock".into(),
        role: Role::Server,
    });
    let p = port_of(apply_args("port set web1 --role client", port_obj(own.clone())).unwrap());
    assert_eq!(
        p.vhost,
        Some(VhostConfig {
            socket: "/run/vm/web1.sock".into(),
            role: Role::Client,
        })
    );
    let f = apply_args("port set web1 --role client", port_obj(None)).unwrap_err();
    assert_eq!(f.exit, Exit::Refused);
    assert!(f.message.starts_with(r#"port "web1": --role: "#), "{f}");
    let p = port_of(apply_args("port set web1 --default-socket", port_obj(own)).unwrap());
    assert_eq!(p.vhost, None);
}

#[test]
fn uplink_set_applies() {
    let up = Object::Uplink(UplinkGroup {
        storm_control: None,
        name: "up".into(),
        dvs: "prod".into(),
        host: "h1".into(),
        members: vec!["a".into(), "b".into()],
        bond_mode: BondMode::ActiveBackup,
    });
    let members = |o: Option<Object>| match o {
        Some(Object::Uplink(u)) => (u.members, u.bond_mode),
        o => panic!("{o:?}"),
    };
    assert_eq!(
        members(
            apply_args(
                "uplink set prod h1 up --add-member c --del-member a --bond-mode balance-slb",
                up.clone()
            )
            .unwrap()
        ),
        (vec!["b".into(), "c".into()], BondMode::BalanceSlb)
    );
    assert_eq!(
        members(apply_args("uplink set prod h1 up --member x", up.clone()).unwrap()).0,
        vec!["x".to_owned()]
    );
    let f = apply_args("uplink set prod h1 up --add-member a", up.clone()).unwrap_err();
    assert_eq!(
        f.message,
        r#"uplink "prod/h1/up": --add-member: "a" is already a member"#
    );
    let f = apply_args("uplink set prod h1 up --del-member z", up).unwrap_err();
    assert_eq!(
        f.message,
        r#"uplink "prod/h1/up": --del-member: "z" is not a member"#
    );
}

#[test]
fn apply_refuses_an_object_of_another_kind() {
    let f = apply_args("dvs set prod --vlans 1", port_obj(None)).unwrap_err();
    assert_eq!(f.exit, Exit::Unavailable);
}

// ---- what goes on the wire ----

#[test]
fn ops_serialize_as_the_protocol_says() {
    let req = TxnRequest {
        ops: ops_of("pg add prod web --vlan 100 --dhcp-isolation"),
        wait_ms: Some(5000),
    };
    let v = serde_json::to_value(&req).unwrap();
    assert_eq!(
        v,
        serde_json::json!({
            "ops": [{
                "op": "create",
                "may_exist": false,
                "object": {
                    "kind": "port-group", "dvs": "prod", "name": "web", "type": "access",
                    "vlan": 100, "dhcp_isolation": true, "ip_mac_binding": false,
                    "tcp_checksum_fill": false, "shaping": null
                }
            }],
            "wait_ms": 5000
        })
    );
    let del = serde_json::to_value(delete(Kind::Uplink, "prod/h1/up", true)).unwrap();
    assert_eq!(
        del,
        serde_json::json!({"op": "delete", "id": {"kind": "uplink", "id": "prod/h1/up"},
                           "if_exists": true})
    );
    // An update round-trips through the flattened Versioned/Object/Port layers.
    let p = port_obj(Some(VhostConfig {
        socket: "/s".into(),
        role: Role::Client,
    }));
    let v = api::dvs::Versioned {
        resource_version: 7,
        object: p.clone(),
    };
    let text = serde_json::to_string(&v).unwrap();
    assert_eq!(
        serde_json::from_str::<api::dvs::Versioned>(&text).unwrap(),
        v
    );
    let u = update(p, 7);
    let text = serde_json::to_string(&u).unwrap();
    assert_eq!(serde_json::from_str::<TxnOp>(&text).unwrap(), u);
}

#[test]
fn sg_router_advertisements_on_add_and_set() {
    match &ops_of("sg add routers --allow-router-advertisements")[..] {
        [TxnOp::Create {
            object: Object::SecurityGroup(g),
            ..
        }] => assert!(g.allow_router_advertisements && g.rules.is_empty()),
        o => panic!("{o:?}"),
    }
    let mut allowed = sg(vec![]);
    if let Object::SecurityGroup(g) = &mut allowed {
        g.allow_router_advertisements = true;
    }
    let set = |v: &str, cur: Object| {
        apply_args(
            &format!("sg set web --allow-router-advertisements {v}"),
            cur,
        )
        .unwrap()
    };
    assert_eq!(set("true", sg(vec![])), Some(allowed.clone()));
    assert_eq!(set("false", allowed), Some(sg(vec![])));
    // Already so: nothing to send.
    assert_eq!(set("false", sg(vec![])), None);
    let bad = parse("sg set web --allow-router-advertisements maybe").unwrap_err();
    assert_eq!(bad.kind(), ErrorKind::InvalidValue);
    assert!(bad.to_string().contains("maybe"), "{bad}");
    assert!(parse("sg set web").is_err(), "sg set needs the setting");
}

/// A port's own storm control replaces its group's: set on add, merged class by class on set,
/// dropped (the group's applies again) with `--group-storm-control`.
#[test]
fn port_storm_control_options() {
    let add = match ops_of(
        "port add web1 --dvs prod --pg web --mac 02:00:00:00:00:01 --storm-unknown-unicast 100",
    )
    .as_slice()
    {
        [TxnOp::Create {
            object: Object::Port(p),
            ..
        }] => p.port.storm_control,
        o => panic!("{o:?}"),
    };
    let s = add.expect("the port's own limits");
    assert_eq!(s.unknown_unicast, Some(model::StormLimit::pps(100)));
    assert_eq!((s.broadcast, s.multicast), (None, None));

    let p = port_of(apply_args("port set web1 --storm-broadcast 10", port_obj(None)).unwrap());
    let own = p.port.storm_control.expect("set");
    assert_eq!(own.broadcast, Some(model::StormLimit::pps(10)));
    let mut with_own = port_obj(None);
    if let Object::Port(x) = &mut with_own {
        x.port.storm_control = Some(own);
    }
    let p = port_of(apply_args("port set web1 --storm-multicast 20", with_own.clone()).unwrap());
    let s = p.port.storm_control.unwrap();
    assert_eq!(s.broadcast, Some(model::StormLimit::pps(10)), "kept");
    assert_eq!(s.multicast, Some(model::StormLimit::pps(20)));
    let p = port_of(apply_args("port set web1 --group-storm-control", with_own).unwrap());
    assert_eq!(p.port.storm_control, None);
    assert_eq!(
        usage_error("port set web1 --storm-multicast lots"),
        r#"port "web1": --storm-multicast: "lots" is not a whole number"#
    );
}

/// An uplink group's storm control (what the switch takes from the physical network), through
/// `uplink add` and `uplink set`, which now accepts it as its only change.
#[test]
fn uplink_storm_control_options() {
    let add = match ops_of("uplink add prod h1 up --member a --storm-broadcast 500").as_slice() {
        [TxnOp::Create {
            object: Object::Uplink(u),
            ..
        }] => u.storm_control,
        o => panic!("{o:?}"),
    };
    assert_eq!(add.unwrap().broadcast, Some(model::StormLimit::pps(500)));
    let up = Object::Uplink(UplinkGroup {
        storm_control: add,
        name: "up".into(),
        dvs: "prod".into(),
        host: "h1".into(),
        members: vec!["a".into()],
        bond_mode: BondMode::ActiveBackup,
    });
    let storm = |o: Option<Object>| match o {
        Some(Object::Uplink(u)) => u.storm_control,
        o => panic!("{o:?}"),
    };
    let s = storm(
        apply_args(
            "uplink set prod h1 up --storm-multicast 700 --storm-burst 70",
            up.clone(),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(s.broadcast, Some(model::StormLimit::pps(500)), "kept");
    assert_eq!(
        s.multicast,
        Some(model::StormLimit {
            pps: 700,
            burst: Some(70),
            kbps: None
        })
    );
    assert_eq!(
        storm(apply_args("uplink set prod h1 up --no-storm-control", up).unwrap()),
        None
    );
}
