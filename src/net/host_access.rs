//! Host access (`network create --host-access`): a macvlan's (or ipvlan's)
//! parent never delivers to its own macvlans, so the host reaches its
//! containers through a sibling — a bridge-mode macvlan (or an ipvlan of the
//! network's mode) `mvh-<network>` on the same parent in the host's
//! namespace — and one /32 route per local container through it.
//! The parent's own configuration is not touched. With no address on the
//! device the kernel picks the host's source address (its address on the
//! parent); the container reaches that address through the same device,
//! which answers ARP for the host's addresses (arp_ignore 0, the default).

use anyhow::{Context as _, Result};

use super::Context;
use crate::log::Level;
use crate::netlink::{IpvlanSpec, Link, MacvlanMode, MacvlanSpec, Netlink};
use crate::network::Network;
use crate::record::FlatRecord;

/// Finds or makes the network's host-side device on `parent` (the parent
/// or the VLAN sub-interface the containers' devices sit on) and brings it
/// up. Hooks of several containers race to make it: the loser finds the
/// winner's and checks it.
///
/// On an ipvlan network the device is an ipvlan of the network's mode, and
/// it also holds this host's addresses on the parent (`host_addresses`, as
/// /32): ipvlan hands a frame between its devices by the destination
/// address (the MAC is shared), so replies to the host reach the host only
/// through a device that holds its address. The parent keeps its own.
pub fn ensure_device(
    host: &mut Netlink,
    parent: &Link,
    network: &Network,
    host_addresses: &[std::net::Ipv4Addr],
) -> Result<Link> {
    let name = network.host_device();
    let kind = network.driver.as_str();
    let link = super::vlan::ensure_link(
        host,
        &name,
        |link| {
            (link.kind.as_deref() == Some(kind) && link.parent_index == Some(parent.index))
                .then_some(())
                .ok_or_else(|| format!("is not an {kind} on {}", parent.name))
        },
        |h| match network.ipvlan {
            None => h.create_macvlan(&MacvlanSpec {
                name: &name,
                parent_index: parent.index,
                mode: MacvlanMode::Bridge,
                mac: None,
                mtu: None,
                netns: None,
            }),
            Some(ipvlan) => h.create_ipvlan(&IpvlanSpec {
                name: &name,
                parent_index: parent.index,
                mode: ipvlan.mode,
                flag: ipvlan.flag,
                mtu: None,
                netns: None,
            }),
        },
        "this kernel lacks the network's device type (CONFIG_MACVLAN / CONFIG_IPVLAN)",
    )?;
    // The network's own host address, where it names one, on any device.
    if let Some(address) = network.host_address {
        match host.add_ipv4_address(link.index, address, 32) {
            Ok(()) => {}
            Err(e) if e.errno() == Some(libc::EEXIST) => {}
            Err(e) => return Err(e).with_context(|| format!("add {address}/32 to {name}")),
        }
    }
    // L3 and L3S route by address in the host's own stack and need
    // nothing more; an address of the parent's on the device there would
    // even take the host's ARP away from the parent.
    if network.host_address.is_none()
        && network
            .ipvlan
            .is_some_and(|i| i.mode == crate::netlink::IpvlanMode::L2)
    {
        if host_addresses.is_empty() {
            anyhow::bail!(
                "host access on ipvlan network {} needs an IPv4 address of this host on {} (ipvlan delivers to the host's device by address); give {} one, or the network a --host-address",
                network.name,
                parent.name,
                parent.name
            );
        }
        for address in host_addresses {
            match host.add_ipv4_address(link.index, *address, 32) {
                Ok(()) => {}
                Err(e) if e.errno() == Some(libc::EEXIST) => {}
                Err(e) => return Err(e).with_context(|| format!("add {address}/32 to {name}")),
            }
        }
    }
    if !link.up {
        host.set_up(link.index)
            .with_context(|| format!("set {name} up"))?;
    }
    Ok(link)
}

/// Removes the host's route to `address` through `device`, if both are there.
pub fn delete_route(address: std::net::Ipv4Addr, device: &str) -> Result<()> {
    let mut host = Netlink::open().context("open netlink socket")?;
    if let Some(link) = host.link_by_name(device)? {
        host.delete_host_route(address, link.index)
            .with_context(|| format!("delete the route to {address} through {device}"))?;
    }
    Ok(())
}

/// A stopped, detached or collected attachment's route, if it had one.
/// Failures are logged, not returned: the record's own teardown matters more.
pub fn remove_route(ctx: &Context, id: &str, record: &FlatRecord) {
    let Some(device) = &record.host_route else {
        return;
    };
    let Ok(cidr) = record.ip.parse::<crate::cidr::Ipv4Cidr>() else {
        return;
    };
    if let Err(e) = delete_route(cidr.address, device) {
        ctx.logger.log(
            Level::Error,
            "host-route",
            &[("container", id), ("error", &format!("{e:#}"))],
        );
    }
}

/// `network rm`: the network's host-side device on this host, if any.
pub fn remove_device(network: &Network) -> Result<bool> {
    let mut host = Netlink::open().context("open netlink socket")?;
    let name = network.host_device();
    match host.link_by_name(&name)? {
        Some(link) if link.kind.as_deref() == Some(network.driver.as_str()) => {
            host.delete_link(link.index)
                .with_context(|| format!("delete {name}"))?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// Host-side devices (`mvh-…` macvlans or ipvlans) of networks no longer in
/// the store — left by a `network rm` that died between the store and the
/// kernel — are deleted. Returns their names.
pub fn remove_orphans(networks: &[Network]) -> Result<Vec<String>> {
    let mut host = Netlink::open().context("open netlink socket")?;
    let wanted: Vec<String> = networks
        .iter()
        .filter(|n| n.host_access)
        .map(|n| n.host_device())
        .collect();
    let mut removed = Vec::new();
    for link in host.links()? {
        let ours = matches!(link.kind.as_deref(), Some("macvlan" | "ipvlan"));
        if ours && link.name.starts_with("mvh-") && !wanted.contains(&link.name) {
            host.delete_link(link.index)
                .with_context(|| format!("delete {}", link.name))?;
            removed.push(link.name);
        }
    }
    Ok(removed)
}

/// The device and the containers' addresses routed through it on this host.
pub fn state(network: &Network) -> Result<Option<(String, Vec<std::net::Ipv4Addr>)>> {
    let mut host = Netlink::open().context("open netlink socket")?;
    let name = network.host_device();
    let Some(link) = host.link_by_name(&name)? else {
        return Ok(None);
    };
    let mut routes = host.host_routes(link.index)?;
    routes.sort();
    Ok(Some((name, routes)))
}
