//! Writes a few valid frames as seeds: `cargo run --manifest-path fuzz/Cargo.toml --example seed_corpus`
//! (from the repository root) fills `fuzz/corpus/{parse_classify,trace}/seed-*`.

use flowtable::frames::{self, ACK, L4, SYN};
use flowtable::wire::ethernet::ethertype;
use model::Mac;
use flowtable_fuzz::input;
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
            .join("corpus")
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
}
