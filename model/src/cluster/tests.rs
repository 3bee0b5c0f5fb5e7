use super::*;
use crate::switch::{Direction, EtherType, Protocol, SgRule};
use crate::Mac;

fn vl(s: &str) -> Vec<VlanRange> {
    s.split(',').map(|x| x.parse().unwrap()).collect()
}

fn port(name: &str, n: u8, pg: &str, sg: Option<&str>, host: Option<&str>) -> Object {
    Object::Port(DvsPort {
        dvs: "prod".into(),
        port: Port {
            storm_control: None,
            name: name.into(),
            mac: Mac([2, 0, 0, 0, 0, n]),
            ips: vec![format!("10.0.0.{n}").parse().unwrap()],
            port_group: pg.into(),
            security_group: sg.map(Into::into),
        },
        host: host.map(Into::into),
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

fn uplink(host: &str) -> Object {
    Object::Uplink(UplinkGroup {
        storm_control: None,
        name: "up".into(),
        dvs: "prod".into(),
        host: host.into(),
        members: vec![format!("net_af_packet0,iface={host}-up")],
        bond_mode: BondMode::ActiveBackup,
    })
}

/// Two hosts, DVS prod (VLANs 100-199), groups web and db; db admits tcp/5432 from web's members.
fn example() -> Cluster {
    let mut c = Cluster::default();
    let db = SecurityGroup {
        name: "db".into(),
        rules: vec![SgRule {
            direction: Direction::Ingress,
            ethertype: EtherType::IPv4,
            protocol: Protocol::Tcp,
            port_min: Some(5432),
            port_max: Some(5432),
            icmp_type: None,
            icmp_code: None,
            remote: Some(Remote::Group("web".into())),
        }],
        allow_router_advertisements: false,
    };
    for o in [
        Object::Dvs(Dvs {
            name: "prod".into(),
            vlans: vl("100-199"),
        }),
        host("a"),
        host("b"),
        Object::SecurityGroup(SecurityGroup::default_group("web")),
        Object::SecurityGroup(db),
        Object::PortGroup(DvsPortGroup {
            dvs: "prod".into(),
            group: PortGroup::access("web", 100),
        }),
        Object::PortGroup(DvsPortGroup {
            dvs: "prod".into(),
            group: PortGroup::access("db", 101),
        }),
        uplink("a"),
        uplink("b"),
        port("web1", 1, "web", Some("web"), Some("a")),
        port("web2", 2, "web", Some("web"), Some("b")),
        port("db1", 3, "db", Some("db"), Some("b")),
    ] {
        c.insert(o);
    }
    c
}

#[test]
fn example_validates_and_slices_per_host() {
    let c = example();
    c.validate().unwrap();
    let a = c.host_slice("a");
    a.model.validate().unwrap();
    let names: Vec<&str> = a.model.ports.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["web1"]);
    assert_eq!(a.model.port_groups[0].name, "prod/web");
    assert_eq!(a.model.uplinks[0].name, "prod/up");
    assert_eq!(a.attach.len(), 2);
    let sock = a.attach.iter().find(|x| x.port == "web1").unwrap();
    assert_eq!(
        sock.vhost.as_ref().unwrap().socket,
        PathBuf::from("/run/evs/vhost/web1.sock")
    );
    // Host b has db1, whose group admits web's members: web1 lives on a, so its address
    // travels as a remote member; web's rules do travel (web2 is local).
    let b = c.host_slice("b");
    b.model.validate().unwrap();
    assert_eq!(
        b.model.remote_members,
        vec![RemoteMembers {
            security_group: "web".into(),
            ips: vec!["10.0.0.1".parse().unwrap()],
        }]
    );
    assert_eq!(
        b.model.group_member_ips("web").len(),
        2,
        "local web2 and remote web1"
    );
}

/// Storm limits set in the controller's objects reach the host that enforces them: the group's,
/// a port's own, and an uplink group's.
#[test]
fn storm_control_travels_in_the_host_slice() {
    use crate::storm::{StormControl, StormLimit};
    let mut c = example();
    let group = StormControl {
        broadcast: Some(StormLimit::pps(1000)),
        ..StormControl::default()
    };
    let own = StormControl {
        multicast: Some(StormLimit::pps(50)),
        ..StormControl::default()
    };
    let mut web = PortGroup::access("web", 100);
    web.storm_control = Some(group);
    c.insert(Object::PortGroup(DvsPortGroup {
        dvs: "prod".into(),
        group: web,
    }));
    let Object::Port(mut p) = port("web1", 1, "web", Some("web"), Some("a")) else {
        unreachable!()
    };
    p.port.storm_control = Some(own);
    c.insert(Object::Port(p));
    let Object::Uplink(mut u) = uplink("a") else {
        unreachable!()
    };
    u.storm_control = Some(StormControl {
        unknown_unicast: Some(StormLimit::pps(20000)),
        ..StormControl::default()
    });
    c.insert(Object::Uplink(u));
    c.validate().unwrap();
    let a = c.host_slice("a");
    a.model.validate().unwrap();
    assert_eq!(a.model.port_groups[0].storm_control, Some(group));
    assert_eq!(a.model.ports[0].storm_control, Some(own));
    assert_eq!(
        a.model.uplinks[0].storm_control.unwrap().unknown_unicast,
        Some(StormLimit::pps(20000))
    );
    // Host b's port of the same group gets the group's limits; its uplink none.
    let b = c.host_slice("b");
    let pg = b
        .model
        .port_groups
        .iter()
        .find(|g| g.name == "prod/web")
        .unwrap();
    assert_eq!(pg.storm_control, Some(group));
    assert_eq!(b.model.uplinks[0].storm_control, None);
}

#[test]
fn slices_of_several_hosts_in_one_pass_are_each_hosts_slice() {
    let c = example();
    let all = c.host_slices(["a", "b", "nowhere"]);
    assert_eq!(
        all.keys().collect::<Vec<_>>(),
        ["a", "b"],
        "unknown hosts are left out"
    );
    assert_eq!(all["a"], c.host_slice("a"));
    assert_eq!(all["b"], c.host_slice("b"));
    assert_eq!(c.host_slice("nowhere").model, Model::default());
}

#[test]
fn affected_hosts_follow_placement_and_remote_groups() {
    let before = example();
    // A new web port on a: a (placement) and b (db names web as a remote group).
    let mut after = before.clone();
    after.insert(port("web3", 4, "web", Some("web"), Some("a")));
    let id = ObjectId::new(Kind::Port, "web3");
    let hs = Cluster::affected_hosts(&before, &after, std::slice::from_ref(&id));
    assert_eq!(hs.into_iter().collect::<Vec<_>>(), ["a", "b"]);
    // The db group's rules only concern b.
    let id = ObjectId::new(Kind::SecurityGroup, "db");
    let hs = Cluster::affected_hosts(&before, &before, &[id]);
    assert_eq!(hs.into_iter().collect::<Vec<_>>(), ["b"]);
    // Moving db1 from b to a touches both.
    let mut moved = before.clone();
    let Some(Object::Port(mut p)) = moved.get(&ObjectId::new(Kind::Port, "db1")) else {
        panic!()
    };
    p.host = Some("a".into());
    moved.insert(Object::Port(p));
    let hs = Cluster::affected_hosts(&before, &moved, &[ObjectId::new(Kind::Port, "db1")]);
    assert_eq!(hs.into_iter().collect::<Vec<_>>(), ["a", "b"]);
}

fn refused(c: &Cluster, object: &str, field: &str, words: &str) {
    let e = c.validate().unwrap_err();
    assert_eq!(
        (e.object.as_str(), e.field.as_str()),
        (object, field),
        "{e}"
    );
    assert!(e.message.contains(words), "{e}");
}

#[test]
fn mistakes_name_object_and_field() {
    let mut c = example();
    c.insert(port("web9", 9, "nosuch", None, Some("a")));
    refused(
        &c,
        "port \"web9\"",
        "port_group",
        "unknown port group \"nosuch\"",
    );

    let mut c = example();
    c.insert(port("web9", 1, "web", None, Some("a")));
    refused(&c, "port \"web9\"", "mac", "already used by port \"web1\"");

    let mut c = example();
    let mut p = port("web9", 9, "web", None, Some("zz"));
    if let Object::Port(p) = &mut p {
        p.port.ips = vec!["10.0.0.2".parse().unwrap()];
    }
    c.insert(p);
    refused(
        &c,
        "port \"web9\"",
        "ips",
        "10.0.0.2 is already used by port \"web2\"",
    );

    let mut c = example();
    c.insert(Object::PortGroup(DvsPortGroup {
        dvs: "prod".into(),
        group: PortGroup::access("far", 300),
    }));
    refused(
        &c,
        "port group \"prod/far\"",
        "vlan",
        "VLAN 300 is not carried by DVS \"prod\"",
    );

    let mut c = example();
    c.insert(Object::Dvs(Dvs {
        name: "lab".into(),
        vlans: vl("150-250"),
    }));
    c.insert(Object::Uplink(UplinkGroup {
        dvs: "lab".into(),
        ..match uplink("a") {
            Object::Uplink(u) => u,
            _ => unreachable!(),
        }
    }));
    refused(
        &c,
        "dvs \"prod\"",
        "vlans",
        "VLAN 150 is also carried by DVS \"lab\"",
    );

    let mut c = example();
    c.insert(Object::Uplink(UplinkGroup {
        name: "second".into(),
        ..match uplink("a") {
            Object::Uplink(u) => u,
            _ => unreachable!(),
        }
    }));
    refused(&c, "uplink \"prod/a/up\"", "name", "already joins DVS");

    let mut c = example();
    c.insert(host("bad/name"));
    refused(&c, "host \"bad/name\"", "name", "not a valid name");

    let mut c = example();
    c.insert(Object::Dvs(Dvs {
        name: "prod".into(),
        vlans: vl("100-150,140-199"),
    }));
    refused(&c, "dvs \"prod\"", "vlans", "overlap");
}

#[test]
fn objects_round_trip_as_tagged_json() {
    let c = example();
    for o in c.objects() {
        let j = serde_json::to_string(&o).unwrap();
        let back: Object = serde_json::from_str(&j).unwrap();
        assert_eq!(back, o, "{j}");
    }
    let j =
        serde_json::to_value(c.get(&ObjectId::new(Kind::PortGroup, "prod/web")).unwrap()).unwrap();
    assert_eq!(j["kind"], "port-group");
    assert_eq!(j["dvs"], "prod");
    assert_eq!(j["vlan"], 100);
}

#[test]
fn a_policy_change_is_validated_on_what_it_touches_and_anything_else_in_full() {
    let before = example();
    let pg = ObjectId::new(Kind::PortGroup, "prod/web");
    let sg = ObjectId::new(Kind::SecurityGroup, "db");
    // A port group moved to a VLAN its DVS does not carry.
    let mut after = before.clone();
    after.insert(Object::PortGroup(DvsPortGroup {
        dvs: "prod".into(),
        group: PortGroup::access("web", 300),
    }));
    let e = after
        .validate_change(&before, std::slice::from_ref(&pg))
        .unwrap_err();
    assert_eq!(
        (e.object.as_str(), e.field.as_str()),
        ("port group \"prod/web\"", "vlan"),
        "{e}"
    );
    // A rule naming a group that does not exist.
    let mut after = before.clone();
    let mut db = after.security_groups.get("db").unwrap().clone();
    db.rules[0].remote = Some(Remote::Group("nosuch".into()));
    after.insert(Object::SecurityGroup(db));
    let e = after
        .validate_change(&before, std::slice::from_ref(&sg))
        .unwrap_err();
    assert!(e.to_string().contains("nosuch"), "{e}");
    // A good policy change passes; a port change goes through the full check (here: a MAC
    // clash with another port, which only the full check can see).
    let mut after = before.clone();
    after.insert(Object::PortGroup(DvsPortGroup {
        dvs: "prod".into(),
        group: PortGroup::access("web", 150),
    }));
    after.validate_change(&before, &[pg]).unwrap();
    let mut after = before.clone();
    after.insert(port("web3", 1, "web", Some("web"), Some("a")));
    let e = after
        .validate_change(&before, &[ObjectId::new(Kind::Port, "web3")])
        .unwrap_err();
    assert_eq!(e.field, "mac", "{e}");
}
