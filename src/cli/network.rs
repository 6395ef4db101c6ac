//! `macvlan network create|ls|inspect|rm`, and the original system's VLAN
//! verbs (`vlan create|delete|list|inspect|gateway`, `create-vlan`) as
//! aliases for networks with a VLAN ID.

use std::net::{Ipv4Addr, Ipv6Addr};

use anyhow::{bail, Context as _, Result};
use clap::Subcommand;

use crate::cidr::{parse_ipv4, parse_ipv6, Ipv4Cidr, Ipv6Cidr};
use crate::net;
use crate::netlink::{IpvlanFlag, IpvlanMode, MacvlanMode};
use crate::network::{self, CreateRequest, Ipam, Ipv6Mode, Network, VlanChoice};
use crate::request::{self, NetworkName};

#[derive(Debug, Subcommand)]
pub enum NetworkCommand {
    /// Define a network: the parent interface, optionally a VLAN, the
    /// subnet, gateway and range addresses come from, and limits.
    Create(Box<NetworkCreateArgs>),
    /// List the networks with their addresses used and free.
    #[command(alias = "list")]
    Ls {
        /// Print JSON: an array of networks as `inspect` shows them, without addresses.
        #[arg(long)]
        json: bool,
    },
    /// Show one network (JSON) with the addresses held and by whom.
    Inspect {
        /// The network's name.
        name: String,
    },
    /// Remove a network nobody holds an address in.
    #[command(alias = "delete")]
    Rm {
        /// The network's name.
        name: String,
    },
}

#[derive(Debug, clap::Args)]
pub struct NetworkCreateArgs {
    /// The network's name: letters, digits, '-' and '_', starting with a letter or digit.
    pub name: String,
    /// The host interface the network lives on (for a VLAN: the trunk).
    #[arg(long)]
    pub parent: String,
    /// The device containers get: macvlan, or ipvlan (which shares the
    /// parent's MAC, for ports that allow one).
    #[arg(long, default_value = "macvlan")]
    pub driver: String,
    /// macvlan: bridge (default), private, vepa or passthru; ipvlan: l2
    /// (default), l3 or l3s.
    #[arg(long)]
    pub mode: Option<String>,
    /// ipvlan: how containers of one parent reach each other: bridge
    /// (default), private or vepa.
    #[arg(long)]
    pub flag: Option<String>,
    /// 802.1Q ID (1-4094): containers sit on the sub-interface PARENT.ID.
    #[arg(long)]
    pub vlan: Option<String>,
    /// e.g. 192.0.2.0/24; required for --ipam static.
    #[arg(long)]
    pub subnet: Option<String>,
    /// Default: the subnet's first address.
    #[arg(long)]
    pub gateway: Option<String>,
    /// The part of the subnet handed out, e.g. 192.0.2.128/25.
    #[arg(long)]
    pub ip_range: Option<String>,
    /// An address never handed out, IPv4 or IPv6 (repeatable).
    #[arg(long)]
    pub exclude: Vec<String>,
    /// static (addresses from the store) or dhcp (from the LAN's server).
    #[arg(long, default_value = "static")]
    pub ipam: String,
    /// IPv6: off, static (from the store), slaac (router advertisements)
    /// or dhcpv6 (the LAN's server). Default: static with --subnet6, else off.
    #[arg(long)]
    pub ipv6: Option<String>,
    /// The IPv6 subnet, e.g. 2001:db8:1::/64 (required for --ipv6 static).
    #[arg(long)]
    pub subnet6: Option<String>,
    /// The IPv6 default route's next hop: in the subnet or link-local
    /// (fe80::1, used on the interface). Default: the subnet's first address.
    #[arg(long)]
    pub gateway6: Option<String>,
    /// The part of the IPv6 subnet handed out, e.g. 2001:db8:1::100/120.
    #[arg(long)]
    pub ip_range6: Option<String>,
    /// The containers' MTU (68 to the parent's): default and ceiling.
    #[arg(long)]
    pub mtu: Option<String>,
    /// Egress cap, kbit/s: containers get it unless they ask for less.
    #[arg(long)]
    pub rate: Option<String>,
    /// Ingress cap, kbit/s.
    #[arg(long)]
    pub ingress_rate: Option<String>,
    /// Only annotations may request this network, not environment
    /// variables (which an image's author can set).
    #[arg(long)]
    pub annotations_only: bool,
    /// DHCP networks: write the lease's DNS servers and domain into the
    /// container's /etc/resolv.conf (its engine's file or its rootfs's,
    /// never the host's), put back as it was at stop.
    #[arg(long)]
    pub dhcp_dns: bool,
    /// This host reaches its containers on the network, and they it,
    /// through a host-side macvlan `mvh-NAME` (bridge mode only).
    #[arg(long)]
    pub host_access: bool,
    /// The host's address on the network, on the host-side device (for a
    /// network one host serves; default: the host's own on the parent).
    #[arg(long, requires = "host_access")]
    pub host_address: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum VlanCommand {
    /// Create a VLAN network: a cluster-unique 802.1Q ID and a subnet.
    Create(VlanCreateArgs),
    /// Delete a VLAN network no container holds an address in.
    Delete {
        /// The VLAN network's name.
        name: String,
    },
    /// List the VLAN networks.
    #[command(alias = "ls")]
    List {
        /// Print JSON: an array of VLAN networks as `inspect` shows them.
        #[arg(long)]
        json: bool,
    },
    /// Show one VLAN network (JSON) with the addresses used and free.
    Inspect {
        /// The VLAN network's name.
        name: String,
    },
    /// Make this host the VLAN's gateway: `IF.<id>` and on it a macvlan
    /// holding the gateway address.
    Gateway {
        /// The VLAN network's name.
        name: String,
    },
}

#[derive(Debug, clap::Args)]
pub struct VlanCreateArgs {
    /// The VLAN network's name.
    #[arg(long)]
    pub name: String,
    /// The VLAN's subnet, e.g. 198.18.0.0/24.
    #[arg(long)]
    pub subnet: String,
    /// The host interface that carries the tagged frames (the trunk).
    #[arg(long)]
    pub host_interface: String,
    /// The 802.1Q ID, 1-4094 (default: an unused one at random).
    #[arg(long)]
    pub id: Option<String>,
    /// The gateway's address (default: the subnet's first).
    #[arg(long)]
    pub gateway: Option<String>,
}

fn network_name(flag: &str, text: &str) -> Result<NetworkName> {
    NetworkName::parse(text)
        .with_context(|| format!("invalid {flag} {text:?}: {}", NetworkName::EXPECTED))
}

fn cidr(flag: &str, text: &str, example: &str) -> Result<Ipv4Cidr> {
    text.parse().map_err(|_| {
        anyhow::anyhow!("invalid {flag} {text:?}: expected a subnet in CIDR form like {example}")
    })
}

fn address(flag: &str, text: &str) -> Result<Ipv4Addr> {
    parse_ipv4(text).with_context(|| {
        format!("invalid {flag} {text:?}: expected an IPv4 address like 192.0.2.1")
    })
}

fn cidr6(flag: &str, text: &str, example: &str) -> Result<Ipv6Cidr> {
    text.parse().map_err(|_| {
        anyhow::anyhow!(
            "invalid {flag} {text:?}: expected an IPv6 prefix in CIDR form like {example} (prefix length up to 128)"
        )
    })
}

fn address6(flag: &str, text: &str) -> Result<Ipv6Addr> {
    parse_ipv6(text).with_context(|| {
        format!("invalid {flag} {text:?}: expected an IPv6 address like 2001:db8::1 or fe80::1")
    })
}

fn vlan_id(flag: &str, text: &str) -> Result<u16> {
    text.trim()
        .parse::<u16>()
        .ok()
        .filter(|id| network::IDS.contains(id))
        .with_context(|| {
            format!("invalid {flag} {text:?}: expected 1-4094 (0 and 4095 are reserved by 802.1Q)")
        })
}

fn kbit(flag: &str, text: &str) -> Result<u64> {
    text.trim()
        .parse::<u64>()
        .ok()
        .filter(|r| *r > 0 && *r <= u64::from(u32::MAX) / 125)
        .with_context(|| format!("invalid {flag} {text:?}: expected a rate in kbit/s, like 10000"))
}

impl NetworkCreateArgs {
    fn request(&self) -> Result<CreateRequest> {
        let mode_text = self.mode.as_deref().map(|m| m.trim().to_ascii_lowercase());
        let (mode, ipvlan) = match self.driver.trim() {
            "macvlan" => {
                if let Some(flag) = &self.flag {
                    bail!("invalid --flag {flag:?}: only for --driver ipvlan");
                }
                let mode = match mode_text.as_deref().unwrap_or("bridge") {
                    "bridge" => MacvlanMode::Bridge,
                    "private" => MacvlanMode::Private,
                    "vepa" => MacvlanMode::Vepa,
                    "passthru" => MacvlanMode::Passthru,
                    other => bail!(
                        "invalid --mode {other:?}: expected bridge, private, vepa or passthru (macvlan)"
                    ),
                };
                (mode, None)
            }
            "ipvlan" => {
                let mode = match mode_text.as_deref().unwrap_or("l2") {
                    "l2" => IpvlanMode::L2,
                    "l3" => IpvlanMode::L3,
                    "l3s" => IpvlanMode::L3s,
                    other => bail!("invalid --mode {other:?}: expected l2, l3 or l3s (ipvlan)"),
                };
                let flag = match self.flag.as_deref().map(str::trim).unwrap_or("bridge") {
                    "bridge" => IpvlanFlag::Bridge,
                    "private" => IpvlanFlag::Private,
                    "vepa" => IpvlanFlag::Vepa,
                    other => bail!("invalid --flag {other:?}: expected bridge, private or vepa"),
                };
                (
                    MacvlanMode::Bridge,
                    Some(network::IpvlanSpec { mode, flag }),
                )
            }
            other => bail!("invalid --driver {other:?}: expected macvlan or ipvlan"),
        };
        let ipam = match self.ipam.trim() {
            "static" => Ipam::Static,
            "dhcp" => Ipam::Dhcp,
            other => bail!("invalid --ipam {other:?}: expected static or dhcp"),
        };
        let ipv6 = match self.ipv6.as_deref().map(|m| m.trim().to_ascii_lowercase()) {
            None if self.subnet6.is_some() => Ipv6Mode::Static,
            None => Ipv6Mode::Off,
            Some(mode) => match mode.as_str() {
                "off" => Ipv6Mode::Off,
                "static" => Ipv6Mode::Static,
                "slaac" => Ipv6Mode::Slaac,
                "dhcpv6" => Ipv6Mode::Dhcpv6,
                other => bail!("invalid --ipv6 {other:?}: expected off, static, slaac or dhcpv6"),
            },
        };
        let (exclude6, exclude): (Vec<&String>, Vec<&String>) =
            self.exclude.iter().partition(|e| e.contains(':'));
        Ok(CreateRequest {
            name: network_name("network name", &self.name)?,
            parent: self.parent.clone(),
            mode,
            ipvlan,
            vlan: self
                .vlan
                .as_deref()
                .map(|v| vlan_id("--vlan", v).map(VlanChoice::Id))
                .transpose()?,
            subnet: self
                .subnet
                .as_deref()
                .map(|s| cidr("--subnet", s, "192.0.2.0/24"))
                .transpose()?,
            gateway: self
                .gateway
                .as_deref()
                .map(|g| address("--gateway", g))
                .transpose()?,
            ip_range: self
                .ip_range
                .as_deref()
                .map(|r| cidr("--ip-range", r, "192.0.2.128/25"))
                .transpose()?,
            exclude: exclude
                .iter()
                .map(|e| address("--exclude", e))
                .collect::<Result<_>>()?,
            ipam,
            ipv6,
            subnet6: self
                .subnet6
                .as_deref()
                .map(|s| cidr6("--subnet6", s, "2001:db8:1::/64"))
                .transpose()?,
            gateway6: self
                .gateway6
                .as_deref()
                .map(|g| address6("--gateway6", g))
                .transpose()?,
            ip_range6: self
                .ip_range6
                .as_deref()
                .map(|r| cidr6("--ip-range6", r, "2001:db8:1::100/120"))
                .transpose()?,
            exclude6: exclude6
                .iter()
                .map(|e| address6("--exclude", e))
                .collect::<Result<_>>()?,
            mtu: self
                .mtu
                .as_deref()
                .map(|m| {
                    m.trim()
                        .parse::<u32>()
                        .ok()
                        .filter(|m| (68..=65535).contains(m))
                        .with_context(|| format!("invalid --mtu {m:?}: expected 68-65535"))
                })
                .transpose()?,
            rate_kbit: self
                .rate
                .as_deref()
                .map(|r| kbit("--rate", r))
                .transpose()?,
            ingress_rate_kbit: self
                .ingress_rate
                .as_deref()
                .map(|r| kbit("--ingress-rate", r))
                .transpose()?,
            annotations_only: self.annotations_only,
            dhcp_dns: self.dhcp_dns,
            host_access: self.host_access,
            host_address: self
                .host_address
                .as_deref()
                .map(|a| address("--host-address", a))
                .transpose()?,
        })
    }
}

/// A network as `ls --json` and `inspect` show it.
fn network_json(network: &Network, used: u32) -> serde_json::Value {
    let mut value = serde_json::to_value(network).expect("network serialises");
    value["name"] = network.name.clone().into();
    value["link_parent"] = network.link_parent().into();
    if network.ipam == Ipam::Static {
        value["used"] = used.into();
        value["free"] = network.capacity().saturating_sub(used).into();
    }
    value
}

/// IPv4 addresses held in the network (what its capacity counts).
fn used(ctx: &net::Context, network: &Network) -> Result<u32> {
    Ok(network::usage(ctx.store()?, &ctx.keys, network)?.0)
}

pub fn run_network(ctx: &net::Context, command: NetworkCommand) -> Result<()> {
    let store = ctx.store()?;
    match command {
        NetworkCommand::Create(args) => {
            let request = args.request()?;
            let network = network::create(store, &ctx.keys, &request)
                .with_context(|| format!("network {}", args.name))?;
            let mut line = format!(
                "network {}: {} on {}",
                network.name,
                network.ipam.as_str(),
                network.link_parent()
            );
            if let Some(subnet) = &network.subnet {
                line += &format!(" subnet {subnet}");
            }
            if let Some(range) = &network.ip_range {
                line += &format!(" range {range}");
            }
            if let Some(gateway) = network.gateway {
                line += &format!(" gateway {gateway}");
            }
            if network.ipv6 != Ipv6Mode::Off {
                line += &format!("; IPv6 {}", network.ipv6.as_str());
                if let Some(subnet) = &network.subnet6 {
                    line += &format!(" subnet {subnet}");
                }
                if let Some(range) = &network.ip_range6 {
                    line += &format!(" range {range}");
                }
                if let Some(gateway) = network.gateway6 {
                    line += &format!(" gateway {gateway}");
                }
            }
            println!("{line}");
        }
        NetworkCommand::Ls { json } => {
            let networks = network::list(store, &ctx.keys)?;
            let mut rows = Vec::new();
            for network in &networks {
                rows.push((network, used(ctx, network)?));
            }
            if json {
                let list: Vec<serde_json::Value> = rows
                    .iter()
                    .map(|(n, used)| network_json(n, *used))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(());
            }
            println!(
                "{:<16} {:<7} {:<12} {:<18} {:<15} {:<30} {:>5} {:>6}",
                "NAME", "IPAM", "PARENT", "SUBNET", "GATEWAY", "IPV6", "USED", "FREE"
            );
            for (n, used) in rows {
                let free = match n.ipam {
                    Ipam::Static => n.capacity().saturating_sub(used).to_string(),
                    Ipam::Dhcp => "-".into(),
                };
                let ipv6 = match (n.ipv6, &n.subnet6) {
                    (Ipv6Mode::Off, _) => "-".to_string(),
                    (mode, Some(subnet)) => format!("{} {subnet}", mode.as_str()),
                    (mode, None) => mode.as_str().to_string(),
                };
                let (subnet, gateway, free) = if n.has_ipv4() {
                    (
                        n.subnet.as_deref().unwrap_or("-").to_string(),
                        n.gateway
                            .map(|g| g.to_string())
                            .unwrap_or_else(|| "-".into()),
                        free,
                    )
                } else {
                    ("-".into(), "-".into(), "-".into())
                };
                println!(
                    "{:<16} {:<7} {:<12} {:<18} {:<15} {:<30} {:>5} {:>6}",
                    n.name,
                    n.ipam.as_str(),
                    n.link_parent(),
                    subnet,
                    gateway,
                    ipv6,
                    used,
                    free
                );
            }
        }
        NetworkCommand::Inspect { name } => {
            let network = network::load(store, &ctx.keys, &name)?;
            let held = network::holders(store, &ctx.keys, &network)?;
            let v4 = held.iter().filter(|(ip, _)| ip.is_ipv4()).count() as u32;
            let mut value = network_json(&network, v4);
            if network.ipv6 != Ipv6Mode::Off {
                value["used6"] = (held.len() as u32 - v4).into();
            }
            if network.host_access {
                value["host_device"] = match crate::net::host_access::state(&network)? {
                    Some((device, routes)) => {
                        serde_json::json!({"device": device, "routes": routes})
                    }
                    None => serde_json::json!({"device": null, "routes": []}),
                };
            }
            value["addresses"] = held
                .iter()
                .map(|(ip, holder)| {
                    serde_json::json!({
                        "ip": ip,
                        "container": request::container_of(holder),
                        "attachment": holder,
                    })
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&value)?);
        }
        NetworkCommand::Rm { name } => {
            let network = network::remove(store, &ctx.keys, &name)
                .with_context(|| format!("network {name}"))?;
            crate::failpoint::check("network-removed")?;
            let Some(network) = network else {
                // Its host-side device, if any, goes with the next gc.
                println!("network {name}: corrupt record removed");
                return Ok(());
            };
            if network.host_access && crate::net::host_access::remove_device(&network)? {
                println!("network {name}: {} removed", network.host_device());
            }
            match network.vlan {
                Some(id) => println!("network {name}: removed (VLAN ID {id} freed)"),
                None => println!("network {name}: removed"),
            }
        }
    }
    Ok(())
}

/// A VLAN network by name: refused for a network without a VLAN ID.
fn load_vlan(ctx: &net::Context, name: &str) -> Result<Network> {
    let network = network::load(ctx.store()?, &ctx.keys, name)?;
    if network.vlan.is_none() {
        bail!("network {name:?} has no VLAN ID; use macvlan network inspect/rm for it");
    }
    Ok(network)
}

/// A VLAN network in the shape `vlan inspect` and `vlan list --json` have
/// always had (`id`, `host_interface`, `sub_interface`), plus the network's.
fn vlan_json(network: &Network, used: u32) -> serde_json::Value {
    let mut value = network_json(network, used);
    value["id"] = network.vlan.into();
    value["host_interface"] = network.parent.clone().into();
    value["sub_interface"] = network.link_parent().into();
    value
}

pub fn run_vlan(ctx: &net::Context, command: VlanCommand) -> Result<()> {
    let store = ctx.store()?;
    match command {
        VlanCommand::Create(args) => {
            let name = network_name("--name", &args.name)?;
            let subnet = cidr("--subnet", &args.subnet, "198.18.0.0/24")?;
            if !request::valid_interface_name(&args.host_interface) || args.host_interface == "lo" {
                bail!(
                    "invalid --host-interface {:?}: expected an interface name of 1-15 characters (not lo)",
                    args.host_interface
                );
            }
            let mut request = CreateRequest::new(name, &args.host_interface, Some(subnet));
            request.vlan = Some(match args.id.as_deref() {
                Some(text) => VlanChoice::Id(vlan_id("--id", text)?),
                None => VlanChoice::Any,
            });
            request.gateway = args
                .gateway
                .as_deref()
                .map(|g| address("--gateway", g))
                .transpose()?;
            let network = network::create(store, &ctx.keys, &request)
                .with_context(|| format!("vlan {}", args.name))?;
            println!(
                "vlan {}: id {} subnet {} gateway {} on {}",
                network.name,
                network.vlan.unwrap_or(0),
                network.subnet.as_deref().unwrap_or("-"),
                network
                    .gateway
                    .map(|g| g.to_string())
                    .unwrap_or_else(|| "-".into()),
                network.parent
            );
        }
        VlanCommand::Delete { name } => {
            load_vlan(ctx, &name)?;
            let network =
                network::remove(store, &ctx.keys, &name).with_context(|| format!("vlan {name}"))?;
            println!(
                "vlan {name}: deleted (id {} freed)",
                network.and_then(|n| n.vlan).unwrap_or(0)
            );
        }
        VlanCommand::List { json } => {
            let networks: Vec<Network> = network::list(store, &ctx.keys)?
                .into_iter()
                .filter(|n| n.vlan.is_some())
                .collect();
            let mut rows = Vec::new();
            for network in &networks {
                rows.push((network, used(ctx, network)?));
            }
            if json {
                let list: Vec<serde_json::Value> =
                    rows.iter().map(|(n, used)| vlan_json(n, *used)).collect();
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                println!(
                    "{:<16} {:>4} {:<18} {:<15} {:<10} {:>5} {:>6}",
                    "NAME", "ID", "SUBNET", "GATEWAY", "INTERFACE", "USED", "FREE"
                );
                for (n, used) in rows {
                    println!(
                        "{:<16} {:>4} {:<18} {:<15} {:<10} {:>5} {:>6}",
                        n.name,
                        n.vlan.unwrap_or(0),
                        n.subnet.as_deref().unwrap_or("-"),
                        n.gateway
                            .map(|g| g.to_string())
                            .unwrap_or_else(|| "-".into()),
                        n.parent,
                        used,
                        n.capacity().saturating_sub(used)
                    );
                }
            }
        }
        VlanCommand::Inspect { name } => {
            let network = load_vlan(ctx, &name)?;
            let held = network::holders(store, &ctx.keys, &network)?;
            let mut value = vlan_json(
                &network,
                held.iter().filter(|(ip, _)| ip.is_ipv4()).count() as u32,
            );
            value["addresses"] = held
                .iter()
                .map(|(ip, holder)| serde_json::json!({"ip": ip, "container": holder}))
                .collect();
            println!("{}", serde_json::to_string_pretty(&value)?);
        }
        VlanCommand::Gateway { name } => {
            let network = load_vlan(ctx, &name)?;
            let device = crate::net::vlan_gateway(&network)
                .with_context(|| format!("vlan {name}: gateway"))?;
            println!(
                "vlan {name}: {device} holds {}/{} on {}",
                network.gateway.map(|g| g.to_string()).unwrap_or_default(),
                network.subnet().map(|s| s.prefix).unwrap_or(0),
                network.link_parent()
            );
        }
    }
    Ok(())
}
