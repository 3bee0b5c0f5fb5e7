//! The command line, as clap definitions. Values whose mistakes must name the object (a MAC, a
//! VLAN range, an address) are taken as text here and checked by [`crate::ops`]; choices from a
//! fixed list (a bond mode, a direction) are clap value enums.

use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

const LONG_ABOUT: &str = "\
Edit and inspect the distributed virtual switch through its controller (dvs-controller).

Each invocation is one atomic transaction: it applies whole, validated against the whole \
installation, or not at all. Changes of existing objects (set, rule-add, rule-del, move) read the \
object and write it back only if nobody changed it in between, re-reading a few times on a \
conflict.

The controller's address comes from --controller, else $DVS_CONTROLLER, else \
http://127.0.0.1:9660. The operator's token is read from --token-file (given before the \
subcommand) or $DVS_TOKEN_FILE, else taken from $DVS_TOKEN.";

#[derive(Parser, Debug)]
#[command(
    name = "dvsctl",
    version,
    about = "Configure and inspect the EVS distributed virtual switch (via dvs-controller)",
    long_about = LONG_ABOUT,
    after_long_help = crate::exit::EXIT_CODES,
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Global options")]
pub struct Global {
    /// The controller's URL.
    #[arg(
        long,
        env = "DVS_CONTROLLER",
        default_value = "http://127.0.0.1:9660",
        value_name = "URL",
        global = true
    )]
    pub controller: String,
    /// A file holding the operator's token (else $DVS_TOKEN). Give it before the subcommand.
    #[arg(long, env = "DVS_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Trust the CA certificates in this PEM file for an https:// controller (default: the
    /// system's web roots).
    #[arg(long, env = "DVS_CA_FILE", value_name = "FILE", global = true)]
    pub ca_file: Option<PathBuf>,
    /// Print what the controller answered as JSON (the protocol's types) instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// After a change, wait until every affected live host has applied it (hosts), then report
    /// which hosts applied it, which are down and which are still pending.
    #[arg(long, value_enum, default_value_t = Wait::None, value_name = "WHAT", global = true)]
    pub wait: Wait,
    /// How long --wait=hosts waits, in seconds (1-120).
    #[arg(long, default_value_t = 30, value_name = "SECS", global = true)]
    pub wait_timeout: u64,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// Return once the controller has stored the change.
    None,
    /// Also wait for the affected hosts to apply it.
    Hosts,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Distributed virtual switches: the VLANs carried across hosts.
    #[command(subcommand)]
    Dvs(DvsCmd),
    /// Hypervisor hosts running evsd and the host agent.
    #[command(subcommand)]
    Host(HostCmd),
    /// Uplink groups: a host's physical ports into one DVS.
    #[command(subcommand)]
    Uplink(UplinkCmd),
    /// Port groups of a DVS: VLAN behaviour and options shared by their ports.
    #[command(subcommand)]
    Pg(PgCmd),
    /// Security groups and their rules.
    #[command(subcommand)]
    Sg(SgCmd),
    /// Ports: guests' vNICs, each in a port group, placed on a host.
    #[command(subcommand)]
    Port(PortCmd),
    /// The hosts as the controller sees them: alive, applied revision, in sync, ports, errors.
    Status {
        /// Also list every port each host reports.
        #[arg(long)]
        ports: bool,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Write man pages (one per command and subcommand) into DIR.
    Man { dir: PathBuf },
}

// ---- dvs ----

#[derive(Subcommand, Debug)]
pub enum DvsCmd {
    /// Create a DVS carrying VLANS.
    Add {
        /// The DVS's name.
        name: String,
        /// VLAN ids and ranges, comma-separated: 100-199,300.
        #[arg(long, value_name = "RANGES")]
        vlans: String,
        /// Do nothing if a DVS of this name exists.
        #[arg(long)]
        may_exist: bool,
    },
    /// Change the VLANs a DVS carries.
    Set {
        /// The DVS's name.
        name: String,
        /// VLAN ids and ranges, comma-separated: 100-199,300.
        #[arg(long, value_name = "RANGES")]
        vlans: String,
    },
    /// Delete a DVS (its port groups, uplinks and ports must be gone first).
    Del {
        /// The DVS's name.
        name: String,
        /// Do nothing if it does not exist.
        #[arg(long)]
        if_exists: bool,
    },
    /// List the DVSs.
    List,
    /// Show a DVS with its port groups and uplink groups.
    Show {
        /// The DVS's name.
        name: String,
    },
}

// ---- host ----

#[derive(Subcommand, Debug)]
pub enum HostCmd {
    /// Register a host; prints the token its agent authenticates with (shown only once).
    Add {
        /// The host's name.
        name: String,
        /// Where the agent creates the vhost-user sockets of ports placed here
        /// (default /run/evs/vhost).
        #[arg(long, value_name = "DIR")]
        vhost_dir: Option<PathBuf>,
        /// Write the new host's token to FILE (mode 0600) instead of printing it.
        #[arg(long, value_name = "FILE")]
        token_file: Option<PathBuf>,
        /// Do nothing if a host of this name exists (no new token is issued then).
        #[arg(long)]
        may_exist: bool,
    },
    /// Change a host's vhost-user socket directory.
    #[command(group(ArgGroup::new("dir").required(true).args(["vhost_dir", "default_vhost_dir"])))]
    Set {
        /// The host's name.
        name: String,
        /// The new directory (absolute).
        #[arg(long, value_name = "DIR")]
        vhost_dir: Option<PathBuf>,
        /// Go back to the default directory (/run/evs/vhost).
        #[arg(long)]
        default_vhost_dir: bool,
    },
    /// Delete a host (no uplink group or port may be on it).
    Del {
        /// The host's name.
        name: String,
        /// Do nothing if it does not exist.
        #[arg(long)]
        if_exists: bool,
    },
    /// List the hosts.
    List,
    /// Show a host with its uplink groups and the ports placed on it.
    Show {
        /// The host's name.
        name: String,
    },
}

// ---- uplink ----

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BondModeArg {
    /// One member carries everything; another takes over when its link fails.
    ActiveBackup,
    /// Spread by source MAC; needs no configuration on the physical switch.
    BalanceSlb,
    /// Spread by L3/L4 hash.
    BalanceTcp,
    /// IEEE 802.3ad, negotiated with the physical switch.
    Lacp,
}

impl From<BondModeArg> for model::cluster::BondMode {
    fn from(b: BondModeArg) -> Self {
        use model::cluster::BondMode;
        match b {
            BondModeArg::ActiveBackup => BondMode::ActiveBackup,
            BondModeArg::BalanceSlb => BondMode::BalanceSlb,
            BondModeArg::BalanceTcp => BondMode::BalanceTcp,
            BondModeArg::Lacp => BondMode::Lacp,
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum UplinkCmd {
    /// Join HOST to DVS through an uplink group of physical ports.
    Add {
        /// The DVS.
        dvs: String,
        /// The host.
        host: String,
        /// The uplink group's name.
        name: String,
        /// A member: DPDK devargs or PCI address (0000:3b:00.0, net_af_packet0,iface=eth1);
        /// repeat for several.
        #[arg(long = "member", value_name = "DEVARGS", required = true)]
        members: Vec<String>,
        /// How the members share traffic (default active-backup).
        #[arg(long, value_enum, value_name = "MODE")]
        bond_mode: Option<BondModeArg>,
        #[command(flatten)]
        storm: StormArgs,
        /// Do nothing if this uplink group exists.
        #[arg(long)]
        may_exist: bool,
    },
    /// Change an uplink group's members, bond mode or storm control.
    #[command(group(ArgGroup::new("change").required(true).multiple(true)
        .args(["members", "add_member", "del_member", "bond_mode", "storm_broadcast",
            "storm_multicast", "storm_unknown_unicast", "storm_burst", "no_storm_control"])))]
    Set {
        /// The DVS.
        dvs: String,
        /// The host.
        host: String,
        /// The uplink group's name.
        name: String,
        /// Replace the members with these (repeat for several).
        #[arg(long = "member", value_name = "DEVARGS", conflicts_with_all = ["add_member", "del_member"])]
        members: Vec<String>,
        /// Add a member.
        #[arg(long, value_name = "DEVARGS")]
        add_member: Vec<String>,
        /// Remove a member.
        #[arg(long, value_name = "DEVARGS")]
        del_member: Vec<String>,
        /// How the members share traffic.
        #[arg(long, value_enum, value_name = "MODE")]
        bond_mode: Option<BondModeArg>,
        #[command(flatten)]
        storm: StormArgs,
        /// Turn storm control off.
        #[arg(long, conflicts_with_all = ["storm_broadcast", "storm_multicast", "storm_unknown_unicast", "storm_burst"])]
        no_storm_control: bool,
    },
    /// Delete an uplink group.
    Del {
        /// The DVS.
        dvs: String,
        /// The host.
        host: String,
        /// The uplink group's name.
        name: String,
        /// Do nothing if it does not exist.
        #[arg(long)]
        if_exists: bool,
    },
    /// List uplink groups.
    List {
        /// Only uplink groups of this DVS.
        #[arg(long)]
        dvs: Option<String>,
        /// Only uplink groups on this host.
        #[arg(long)]
        host: Option<String>,
    },
    /// Show one uplink group.
    Show {
        /// The DVS.
        dvs: String,
        /// The host.
        host: String,
        /// The uplink group's name.
        name: String,
    },
}

// ---- pg ----

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PriorityArg {
    Low,
    Medium,
    High,
}

impl From<PriorityArg> for model::Priority {
    fn from(p: PriorityArg) -> Self {
        match p {
            PriorityArg::Low => model::Priority::Low,
            PriorityArg::Medium => model::Priority::Medium,
            PriorityArg::High => model::Priority::High,
        }
    }
}

/// Transmit shaping (guest → switch).
#[derive(Args, Debug, Clone, Default, PartialEq)]
pub struct ShapingArgs {
    /// Average rate in Mbit/s (turns shaping on).
    #[arg(long, value_name = "MBPS", allow_negative_numbers = true)]
    pub shaping_average: Option<String>,
    /// Peak rate in Mbit/s, at least the average (default: the average).
    #[arg(long, value_name = "MBPS", allow_negative_numbers = true)]
    pub shaping_peak: Option<String>,
    /// Burst size in Mbit (default 0: settle at the average rate).
    #[arg(long, value_name = "MBIT", allow_negative_numbers = true)]
    pub shaping_burst: Option<String>,
    /// Transmit priority class (default medium).
    #[arg(long, value_enum)]
    pub priority: Option<PriorityArg>,
}

impl ShapingArgs {
    pub fn any(&self) -> bool {
        *self != ShapingArgs::default()
    }
}

/// Storm control: limits on the flooded frames the switch takes from a port (for a port group,
/// from each of its ports, unless a port has its own; for an uplink group, from the physical
/// network).
#[derive(Args, Debug, Clone, Default, PartialEq)]
pub struct StormArgs {
    /// Broadcast limit in packets/s (0: drop every broadcast).
    #[arg(long, value_name = "PPS")]
    pub storm_broadcast: Option<String>,
    /// Multicast limit in packets/s.
    #[arg(long, value_name = "PPS")]
    pub storm_multicast: Option<String>,
    /// Limit on unicast to unlearned MACs (flooded), packets/s.
    #[arg(long, value_name = "PPS")]
    pub storm_unknown_unicast: Option<String>,
    /// Burst in packets of the limits given with it (default: a tenth of a second's worth, at
    /// least 32).
    #[arg(long, value_name = "PACKETS")]
    pub storm_burst: Option<String>,
}

#[derive(Args, Debug, Clone)]
#[command(group(ArgGroup::new("mode").required(true).args(["vlan", "trunk"])))]
pub struct PgAddArgs {
    /// The DVS the group belongs to.
    pub dvs: String,
    /// The port group's name (unique within its DVS).
    pub name: String,
    /// An access group on VLAN N (the guest sends untagged frames).
    #[arg(long, value_name = "N")]
    pub vlan: Option<String>,
    /// A trunk group passing tagged frames of these VLANs: 100-110,120.
    #[arg(long, value_name = "RANGES")]
    pub trunk: Option<String>,
    /// Where a trunk puts untagged frames (default: they are dropped).
    #[arg(long, value_name = "N", conflicts_with = "vlan")]
    pub native_vlan: Option<String>,
    /// Let only uplinks answer DHCP (drop DHCP server traffic from guests).
    #[arg(long)]
    pub dhcp_isolation: bool,
    /// Drop frames whose source MAC/IP is not the port's own.
    #[arg(long)]
    pub ip_mac_binding: bool,
    /// Fill in TCP checksums the guest left to offload.
    #[arg(long)]
    pub checksum_fill: bool,
    #[command(flatten)]
    pub shaping: ShapingArgs,
    #[command(flatten)]
    pub storm: StormArgs,
    /// Do nothing if this port group exists.
    #[arg(long)]
    pub may_exist: bool,
}

#[derive(Args, Debug, Clone)]
pub struct PgSetArgs {
    /// The DVS the group belongs to.
    pub dvs: String,
    /// The port group's name.
    pub name: String,
    /// Make it an access group on VLAN N.
    #[arg(long, value_name = "N", conflicts_with = "trunk")]
    pub vlan: Option<String>,
    /// Make it a trunk of these VLANs.
    #[arg(long, value_name = "RANGES")]
    pub trunk: Option<String>,
    /// Where the trunk puts untagged frames.
    #[arg(long, value_name = "N", conflicts_with_all = ["vlan", "no_native_vlan"])]
    pub native_vlan: Option<String>,
    /// Drop the trunk's untagged frames again.
    #[arg(long, conflicts_with = "vlan")]
    pub no_native_vlan: bool,
    /// Let only uplinks answer DHCP.
    #[arg(long, conflicts_with = "no_dhcp_isolation")]
    pub dhcp_isolation: bool,
    /// Let guests answer DHCP again.
    #[arg(long)]
    pub no_dhcp_isolation: bool,
    /// Drop frames whose source MAC/IP is not the port's own.
    #[arg(long, conflicts_with = "no_ip_mac_binding")]
    pub ip_mac_binding: bool,
    /// Stop checking source MAC/IP.
    #[arg(long)]
    pub no_ip_mac_binding: bool,
    /// Fill in TCP checksums the guest left to offload.
    #[arg(long, conflicts_with = "no_checksum_fill")]
    pub checksum_fill: bool,
    /// Stop filling in TCP checksums.
    #[arg(long)]
    pub no_checksum_fill: bool,
    #[command(flatten)]
    pub shaping: ShapingArgs,
    /// Turn shaping off.
    #[arg(long, conflicts_with_all = ["shaping_average", "shaping_peak", "shaping_burst", "priority"])]
    pub no_shaping: bool,
    #[command(flatten)]
    pub storm: StormArgs,
    /// Turn storm control off.
    #[arg(long, conflicts_with_all = ["storm_broadcast", "storm_multicast", "storm_unknown_unicast", "storm_burst"])]
    pub no_storm_control: bool,
}

#[derive(Subcommand, Debug)]
pub enum PgCmd {
    /// Create a port group: --vlan N (access) or --trunk RANGES [--native-vlan N].
    Add(PgAddArgs),
    /// Change a port group; only the options given change.
    Set(PgSetArgs),
    /// Delete a port group (no port may be in it).
    Del {
        /// The DVS the group belongs to.
        dvs: String,
        /// The port group's name.
        name: String,
        /// Do nothing if it does not exist.
        #[arg(long)]
        if_exists: bool,
    },
    /// List port groups, of every DVS or of one.
    List { dvs: Option<String> },
    /// Show a port group with its ports.
    Show {
        /// The DVS the group belongs to.
        dvs: String,
        /// The port group's name.
        name: String,
    },
}

// ---- sg ----

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DirectionArg {
    /// Towards the guest.
    Ingress,
    /// From the guest.
    Egress,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum EtherTypeArg {
    Ipv4,
    Ipv6,
}

/// One security-group rule, as options.
#[derive(Args, Debug, Clone, PartialEq)]
pub struct RuleArgs {
    /// Which way the traffic goes.
    #[arg(long, value_enum)]
    pub direction: DirectionArg,
    /// Default: ipv6 if --remote-cidr is an IPv6 prefix, else ipv4.
    #[arg(long, value_enum)]
    pub ethertype: Option<EtherTypeArg>,
    /// tcp, udp, icmp, any (the default) or an IP protocol number.
    #[arg(long, value_name = "PROTO")]
    pub protocol: Option<String>,
    /// Destination port or range (tcp/udp): 80 or 8000-8080.
    #[arg(long, value_name = "PORT[-PORT]")]
    pub port: Option<String>,
    /// ICMP type (protocol icmp).
    #[arg(long, value_name = "T")]
    pub icmp_type: Option<String>,
    /// ICMP code (with --icmp-type).
    #[arg(long, value_name = "C", requires = "icmp_type")]
    pub icmp_code: Option<String>,
    /// Remote addresses: 10.0.0.0/8 (default: any).
    #[arg(long, value_name = "CIDR", conflicts_with = "remote_group")]
    pub remote_cidr: Option<String>,
    /// Remote: the members of this security group.
    #[arg(long, value_name = "SG")]
    pub remote_group: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum SgCmd {
    /// Create a security group (without rules it lets nothing through: add rules, or start from
    /// --default-rules).
    Add {
        /// The security group's name.
        name: String,
        /// Start with the default rules: allow every egress (IPv4 and IPv6).
        #[arg(long)]
        default_rules: bool,
        /// Let the members send IPv6 router advertisements (routers); others' RAs are dropped
        /// as `ra_guard`.
        #[arg(long)]
        allow_router_advertisements: bool,
        /// Do nothing if a security group of this name exists.
        #[arg(long)]
        may_exist: bool,
    },
    /// Change a security group's settings (its rules: rule-add, rule-del).
    Set {
        /// The security group's name.
        name: String,
        /// Whether the members may send IPv6 router advertisements.
        #[arg(long, value_name = "BOOL", action = clap::ArgAction::Set)]
        allow_router_advertisements: bool,
    },
    /// Delete a security group (no port or rule may refer to it).
    Del {
        /// The security group's name.
        name: String,
        /// Do nothing if it does not exist.
        #[arg(long)]
        if_exists: bool,
    },
    /// List the security groups.
    List,
    /// Show a security group and its rules.
    Show {
        /// The security group's name.
        name: String,
    },
    /// Add a rule to a security group.
    RuleAdd {
        /// The security group.
        sg: String,
        #[command(flatten)]
        rule: RuleArgs,
        /// Do nothing if an identical rule exists.
        #[arg(long)]
        may_exist: bool,
    },
    /// Remove a rule, by its index (as `rule-list` shows it) or by the same options as rule-add.
    #[command(group(ArgGroup::new("which").required(true).args(["index", "direction"])))]
    RuleDel {
        /// The security group.
        sg: String,
        /// The rule's index (0-based, as in rule-list and in errors: rules[0]).
        #[arg(conflicts_with = "RuleArgs")]
        index: Option<usize>,
        #[command(flatten)]
        rule: Option<RuleArgs>,
        /// Do nothing if there is no such rule.
        #[arg(long)]
        if_exists: bool,
    },
    /// List a security group's rules with their indexes.
    RuleList {
        /// The security group.
        sg: String,
    },
}

// ---- port ----

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoleArg {
    /// The switch creates the socket; the VMM connects.
    Server,
    /// The VMM owns the socket; the switch connects and reconnects.
    Client,
}

impl From<RoleArg> for model::Role {
    fn from(r: RoleArg) -> Self {
        match r {
            RoleArg::Server => model::Role::Server,
            RoleArg::Client => model::Role::Client,
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct PortAddArgs {
    /// The port's (vNIC's) name, unique across the installation.
    pub name: String,
    /// The DVS the port is in.
    #[arg(long)]
    pub dvs: String,
    /// The port group (of --dvs).
    #[arg(long)]
    pub pg: String,
    /// The guest's MAC address: 02:00:00:00:00:01.
    #[arg(long)]
    pub mac: String,
    /// The guest's address (repeat, or comma-separate, for several).
    #[arg(long, value_name = "IP", value_delimiter = ',')]
    pub ip: Vec<String>,
    /// The security group filtering the port (default: unfiltered).
    #[arg(long, value_name = "SG")]
    pub sg: Option<String>,
    /// The host the guest runs on (default: defined, not placed).
    #[arg(long)]
    pub host: Option<String>,
    /// The vhost-user socket (default: <host's vhost dir>/<name>.sock, switch as server).
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Which side creates --socket (default server: the switch).
    #[arg(long, value_enum, requires = "socket")]
    pub role: Option<RoleArg>,
    /// Attach a DPDK ethdev instead of a vhost-user socket (an SR-IOV VF's PCI address, or
    /// `net_af_packet1,iface=veth1` towards a namespace guest).
    #[arg(long, value_name = "DEVARGS", conflicts_with_all = ["socket", "role"])]
    pub ethdev: Option<String>,
    /// The port's own storm control, in place of its group's.
    #[command(flatten)]
    pub storm: StormArgs,
    /// Do nothing if a port of this name exists.
    #[arg(long)]
    pub may_exist: bool,
}

#[derive(Args, Debug, Clone)]
pub struct PortSetArgs {
    /// The port's name.
    pub name: String,
    /// Move the port to another DVS (with --pg of that DVS).
    #[arg(long, requires = "pg")]
    pub dvs: Option<String>,
    /// Move it to this port group (of its DVS, or of --dvs).
    #[arg(long)]
    pub pg: Option<String>,
    /// A new MAC address.
    #[arg(long)]
    pub mac: Option<String>,
    /// Replace the addresses with these (repeat, or comma-separate).
    #[arg(
        long,
        value_name = "IP",
        value_delimiter = ',',
        conflicts_with = "no_ip"
    )]
    pub ip: Vec<String>,
    /// Remove every address.
    #[arg(long)]
    pub no_ip: bool,
    /// Filter the port with this security group.
    #[arg(long, value_name = "SG", conflicts_with = "no_sg")]
    pub sg: Option<String>,
    /// Leave the port unfiltered.
    #[arg(long)]
    pub no_sg: bool,
    /// Place the port on HOST.
    #[arg(long, conflicts_with = "unplace")]
    pub host: Option<String>,
    /// Take the port off its host (it stays defined).
    #[arg(long)]
    pub unplace: bool,
    /// Use this vhost-user socket.
    #[arg(long, value_name = "PATH", conflicts_with = "default_socket")]
    pub socket: Option<PathBuf>,
    /// Go back to the host's default socket (<vhost dir>/<name>.sock, switch as server).
    #[arg(long, conflicts_with = "role")]
    pub default_socket: bool,
    /// Which side creates the socket (server: the switch; client: the VMM).
    #[arg(long, value_enum)]
    pub role: Option<RoleArg>,
    /// The port's own storm control, in place of its group's (classes not given keep the
    /// port's own, or none).
    #[command(flatten)]
    pub storm: StormArgs,
    /// Drop the port's own storm control: its group's applies again.
    #[arg(long, conflicts_with_all = ["storm_broadcast", "storm_multicast", "storm_unknown_unicast", "storm_burst"])]
    pub group_storm_control: bool,
}

#[derive(Subcommand, Debug)]
pub enum PortCmd {
    /// Create a port.
    Add(PortAddArgs),
    /// Change a port; only the options given change.
    Set(PortSetArgs),
    /// Place a port on HOST (the same as `port set NAME --host HOST`).
    Move {
        /// The port's name.
        name: String,
        /// The host to place it on.
        host: String,
    },
    /// Delete a port.
    Del {
        /// The port's name.
        name: String,
        /// Do nothing if it does not exist.
        #[arg(long)]
        if_exists: bool,
    },
    /// List ports.
    List {
        /// Only ports of this DVS.
        #[arg(long)]
        dvs: Option<String>,
        /// Only ports placed on this host.
        #[arg(long)]
        host: Option<String>,
    },
    /// Show one port.
    Show {
        /// The port's name.
        name: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definitions_are_consistent() {
        Cli::command().debug_assert();
    }
}
