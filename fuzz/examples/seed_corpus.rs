//! Writes seeds: `cargo run --manifest-path fuzz/Cargo.toml --example seed_corpus` (from the
//! repository root) fills `fuzz/seeds/{parse_classify,trace}/seed-*` with valid frames, and the
//! seeds of `model_json`, `control_request`, `config_toml` and `dvs_objects` with the
//! repository's examples (examples/evsd.toml, the fuzz model and installation) and requests
//! and transactions made from them, so the fuzzers start past the parsers' first errors.

use flowtable::frames::{self, ACK, L4, SYN};
use flowtable::wire::ethernet::ethertype;
use model::Mac;
use flowtable_fuzz::{input, CLUSTER_JSON, MODEL_JSON};
use std::path::Path;
use std::net::{Ipv4Addr, Ipv6Addr};

fn mac(n: u8) -> Mac {
    Mac([2, 0, 0, 0, 0, n])
}
fn ip(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 0, n)
}

fn main() {
    let v6 = |n: u16| Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, n);
    // (input port index into PORTS, frame)
    let seeds: Vec<(&str, usize, Vec<u8>)> = vec![
        (
            "udp-vm1-vm2",
            0,
            frames::ipv4(
                mac(1),
                mac(2),
                None,
                ip(1),
                ip(2),
                L4::Udp { src: 5000, dst: 53 },
                8,
            ),
        ),
        (
            "syn-vm2-vm1",
            1,
            frames::ipv4(
                mac(2),
                mac(1),
                None,
                ip(2),
                ip(1),
                L4::Tcp {
                    src: 40000,
                    dst: 80,
                    flags: SYN,
                },
                0,
            ),
        ),
        (
            "synack-vm1-vm2",
            0,
            frames::ipv4(
                mac(1),
                mac(2),
                None,
                ip(1),
                ip(2),
                L4::Tcp {
                    src: 80,
                    dst: 40000,
                    flags: SYN | ACK,
                },
                0,
            ),
        ),
        (
            "echo-vm4-vm3",
            3,
            frames::ipv4(
                mac(4),
                mac(3),
                None,
                Ipv4Addr::new(10, 0, 1, 4),
                ip(3),
                L4::Echo {
                    id: 7,
                    reply: false,
                },
                16,
            ),
        ),
        (
            "arp-vm1",
            0,
            frames::arp(
                mac(1),
                Mac::BROADCAST,
                None,
                1,
                mac(1),
                ip(1),
                Mac::ZERO,
                ip(2),
            ),
        ),
        (
            "dhcp-server-vm2",
            1,
            frames::ipv4(
                mac(2),
                Mac::BROADCAST,
                None,
                ip(2),
                Ipv4Addr::BROADCAST,
                L4::Udp { src: 67, dst: 68 },
                240,
            ),
        ),
        (
            "dhcp-client-vm1",
            0,
            frames::ipv4(
                mac(1),
                Mac::BROADCAST,
                None,
                Ipv4Addr::UNSPECIFIED,
                Ipv4Addr::BROADCAST,
                L4::Udp { src: 68, dst: 67 },
                240,
            ),
        ),
        (
            "spoof-vm1",
            0,
            frames::ipv4(
                mac(1),
                mac(2),
                None,
                ip(99),
                ip(2),
                L4::Udp { src: 1, dst: 53 },
                0,
            ),
        ),
        (
            "v6-tcp-vm1",
            0,
            frames::ipv6(
                mac(1),
                mac(2),
                None,
                v6(1),
                v6(2),
                L4::Tcp {
                    src: 1000,
                    dst: 443,
                    flags: SYN,
                },
                0,
            ),
        ),
        (
            "v6-echo-uplink",
            5,
            frames::ipv6(
                mac(9),
                mac(1),
                Some(100),
                v6(9),
                v6(1),
                L4::Echo {
                    id: 1,
                    reply: false,
                },
                0,
            ),
        ),
        (
            "trunk-vlan150",
            4,
            frames::ipv4(
                mac(5),
                mac(1),
                Some(150),
                ip(5),
                ip(1),
                L4::Udp { src: 9, dst: 9 },
                0,
            ),
        ),
        (
            "trunk-vlan100",
            4,
            frames::ipv4(
                mac(5),
                mac(2),
                Some(100),
                ip(5),
                ip(2),
                L4::Tcp {
                    src: 9,
                    dst: 80,
                    flags: SYN,
                },
                0,
            ),
        ),
        (
            "trunk-native",
            4,
            frames::ipv4(
                mac(5),
                mac(3),
                None,
                ip(5),
                ip(3),
                L4::Udp { src: 9, dst: 9 },
                0,
            ),
        ),
        (
            "uplink-vlan200",
            5,
            frames::ipv4(
                mac(10),
                mac(3),
                Some(200),
                ip(10),
                ip(3),
                L4::Udp { src: 9, dst: 9 },
                0,
            ),
        ),
        (
            "tagged-on-access",
            2,
            frames::ipv4(
                mac(3),
                mac(4),
                Some(200),
                ip(3),
                ip(4),
                L4::Udp { src: 9, dst: 9 },
                0,
            ),
        ),
    ];
    for dir in ["parse_classify", "trace"] {
        let d = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("seeds")
            .join(dir);
        std::fs::create_dir_all(&d).unwrap();
        for (name, port, frame) in &seeds {
            std::fs::write(d.join(format!("seed-{name}")), input(*port, frame)).unwrap();
        }
        // QinQ: a VLAN-100 frame with a second tag pushed in front.
        let mut q = seeds[11].2.clone();
        frames::push_tag(&mut q, ethertype::QINQ, 100);
        std::fs::write(d.join("seed-qinq-uplink"), input(5, &q)).unwrap();
        println!("{} seeds in {}", seeds.len() + 1, d.display());
    }
    let hex = |f: &[u8]| f.iter().map(|b| format!("{b:02x}")).collect::<String>();
    text_seeds(&seeds[0].2, &hex(&seeds[0].2), &hex(&seeds[3].2));
}

fn write_all(dir: &str, seeds: &[(&str, String)]) {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds").join(dir);
    std::fs::create_dir_all(&d).unwrap();
    for (name, text) in seeds {
        std::fs::write(d.join(format!("seed-{name}")), text).unwrap();
    }
    println!("{} seeds in {}", seeds.len(), d.display());
}

fn text_seeds(_frame: &[u8], udp_hex: &str, dhcp_hex: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let example_toml = std::fs::read_to_string(root.join("examples/evsd.toml")).unwrap();
    let example = evsd::config::Config::parse(&example_toml).expect("examples/evsd.toml parses");
    let example_model = serde_json::to_string_pretty(&example.model()).unwrap();
    let fuzz_model: model::Model = serde_json::from_str(MODEL_JSON).unwrap();
    let compact = serde_json::to_string(&fuzz_model).unwrap();
    write_all(
        "model_json",
        &[
            ("fuzz-model", MODEL_JSON.into()),
            ("example-toml", example_model.clone()),
            ("empty", "{}".into()),
        ],
    );
    let apply = |m: &str| format!(r#"{{"cmd":"apply","model":{m}}}"#);
    let lines = [
        r#"{"cmd":"show_ports"}"#.to_string(),
        r#"{"cmd":"show_model"}"#.into(),
        r#"{"cmd":"show_tables"}"#.into(),
        r#"{"cmd":"show_mac"}"#.into(),
        r#"{"cmd":"show_connections","limit":5}"#.into(),
        r#"{"cmd":"stats_reset"}"#.into(),
        r#"{"cmd":"metrics"}"#.into(),
        r#"{"cmd":"detach","port":"vm1"}"#.into(),
        r#"{"cmd":"attach","port":"vm1","vhost":{"socket":"/tmp/vm1.sock","role":"client"}}"#.into(),
        r#"{"cmd":"attach","port":"uplink0","ethdev":{"devargs":"net_af_packet0,iface=eth1"}}"#.into(),
        format!(r#"{{"cmd":"trace","port":"vm1","frame":"{udp_hex}"}}"#),
        format!(r#"{{"cmd":"trace","port":"vm1","frame":"{dhcp_hex}"}}"#),
        apply(&compact),
        apply(&serde_json::to_string(&example.model()).unwrap()),
    ];
    let mut control: Vec<(&str, String)> = vec![];
    let names = [
        "show-ports", "show-model", "show-tables", "show-mac", "show-conns", "stats-reset",
        "metrics", "detach", "attach-vhost", "attach-ethdev", "trace-udp", "trace-dhcp",
        "apply-fuzz-model", "apply-example",
    ];
    for (n, l) in names.iter().zip(&lines) {
        control.push((n, l.clone()));
    }
    control.push(("session", lines.join("\n")));
    write_all("control_request", &control);
    write_all(
        "config_toml",
        &[
            ("example", example_toml.clone()),
            (
                "example-switch",
                format!("[switch]\nmac_aging_secs = 60\nmac_limit_per_port = 16\nct_max_entries = 4096\nemc_entries = 0\nmegaflow_entries = 0\n{}",
                    example_toml.replace("[switch]\nmac_aging_secs = 300\n", "")),
            ),
            (
                "attach",
                "[eal]\nno_huge = true\n[dataplane]\ncores = [0]\nstate_dir = \"/tmp/s\"\n\
                 [[port_groups]]\nname = \"pg\"\nvlan = 10\n\
                 [[ports]]\nname = \"vm1\"\nmac = \"02:00:00:00:00:01\"\nport_group = \"pg\"\n\
                 [[attach]]\nport = \"vm1\"\nvhost = { socket = \"/tmp/vm1.sock\", role = \"server\" }\n"
                    .into(),
            ),
            (
                "controller",
                "[controller]\nurl = \"http://127.0.0.1:9660\"\nhost = \"a\"\ntoken_file = \"/etc/evs/token\"\n\
                 [dataplane]\ncores = [0]\n"
                    .into(),
            ),
        ],
    );
    let objects: Vec<serde_json::Value> = serde_json::from_str(CLUSTER_JSON).unwrap();
    let txn = |ops: Vec<serde_json::Value>| serde_json::json!({ "ops": ops }).to_string();
    let by_kind = |k: &str| objects.iter().filter(|o| o["kind"] == k).cloned().collect::<Vec<_>>();
    let mut pg = by_kind("port-group")[0].clone();
    pg["vlan"] = 120.into();
    let mut port = by_kind("port")[0].clone();
    port["name"] = "web3".into();
    port["mac"] = "02:00:00:00:00:33".into();
    port["ips"] = serde_json::json!(["10.0.0.33"]);
    let mut moved = by_kind("port")[1].clone();
    moved["host"] = "a".into();
    write_all(
        "dvs_objects",
        &[
            ("update-pg", txn(vec![serde_json::json!({"op": "update", "object": pg})])),
            ("create-port", txn(vec![serde_json::json!({"op": "create", "object": port})])),
            ("move-port", txn(vec![serde_json::json!({"op": "update", "object": moved, "resource_version": 3})])),
            (
                "delete",
                txn(vec![serde_json::json!({"op": "delete", "id": {"kind": "port", "id": "web1"}, "if_exists": true})]),
            ),
            (
                "new-host",
                txn(vec![
                    serde_json::json!({"op": "create", "object": {"kind": "host", "name": "c", "vhost_dir": "/run/c"}}),
                    serde_json::json!({"op": "create", "object": {"kind": "uplink", "name": "up", "dvs": "prod", "host": "c", "members": ["0000:3b:00.0"], "bond_mode": "lacp"}}),
                ]),
            ),
            (
                "recreate-all",
                txn(objects.iter().map(|o| serde_json::json!({"op": "create", "object": o, "may_exist": true})).collect()),
            ),
        ],
    );
}
