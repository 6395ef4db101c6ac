//! The host side of VLAN networks: the 802.1Q sub-interface of the trunk
//! (made on first use and shared by every container of that VLAN on the
//! host), and `macvlan vlan gateway`, which makes this host a VLAN's gateway.

use anyhow::{bail, Context as _, Result};

use super::flat::find_parent;
use crate::netlink::{Link, Netlink};
use crate::network::Network;

/// The network's 802.1Q ID; only VLAN networks get here.
fn vlan_id(network: &Network) -> Result<u16> {
    network
        .vlan
        .with_context(|| format!("network {} is not a VLAN network (no --vlan)", network.name))
}

/// Finds or creates the VLAN's sub-interface on this host and brings it
/// up. Hooks of several containers may race to create it: the loser finds
/// the winner's device and checks it is the right one.
pub fn ensure_sub_interface(host: &mut Netlink, parent: &Link, network: &Network) -> Result<Link> {
    let id = vlan_id(network)?;
    let name = network.link_parent();
    let link = ensure_link(
        host,
        &name,
        |link| {
            let right = link.kind.as_deref() == Some("vlan")
                && link.vlan_id == Some(id)
                && link.parent_index == Some(parent.index);
            right.then_some(()).ok_or_else(|| {
                format!(
                    "is not VLAN {} on {} (kind {}, id {})",
                    id,
                    parent.name,
                    link.kind.as_deref().unwrap_or("physical"),
                    link.vlan_id
                        .map(|i| i.to_string())
                        .unwrap_or_else(|| "none".into()),
                )
            })
        },
        |h| h.create_vlan(&name, parent.index, id),
        "this kernel has no 802.1Q VLAN support (CONFIG_VLAN_8021Q, module 8021q)",
    )?;
    if !link.up {
        host.set_up(link.index)
            .with_context(|| format!("set {name} up"))?;
    }
    Ok(link)
}

/// The name of the gateway device `macvlan vlan gateway` makes.
pub fn gateway_device(network: &Network) -> String {
    format!("vgw{}", network.vlan.unwrap_or(0))
}

/// The VRF that holds a VLAN's gateway device on the gateway host, and its
/// routing table.
pub fn gateway_vrf(network: &Network) -> (String, u32) {
    let id = network.vlan.unwrap_or(0);
    (format!("vrf{id}"), 10_000 + u32::from(id))
}

/// Finds or creates link `name` with `create`, tolerating a concurrent
/// creator (hooks of several containers race for shared devices), and
/// checks what it found with `check`. `unsupported` says what the kernel
/// lacks when it does not know the device type.
pub(super) fn ensure_link(
    host: &mut Netlink,
    name: &str,
    check: impl Fn(&Link) -> std::result::Result<(), String>,
    create: impl Fn(&mut Netlink) -> std::result::Result<(), crate::netlink::NetlinkError>,
    unsupported: &str,
) -> Result<Link> {
    for _ in 0..3 {
        if let Some(link) = host.link_by_name(name)? {
            if let Err(problem) = check(&link) {
                bail!("{name} exists but {problem}; rename or remove it");
            }
            return Ok(link);
        }
        match create(host) {
            Ok(()) => continue,
            Err(e) if e.errno() == Some(libc::EEXIST) => continue,
            Err(e) if e.errno() == Some(libc::EOPNOTSUPP) => bail!(
                "{unsupported}, so {name} cannot be created; `macvlan doctor` shows what this host can do"
            ),
            Err(e) => return Err(e).with_context(|| format!("create {name}")),
        }
    }
    bail!("{name} kept appearing and disappearing while it was being created")
}

/// `macvlan vlan gateway NAME`: makes this host the VLAN's gateway — the
/// VLAN's sub-interface, and on it a macvlan holding the gateway address,
/// inside a VRF of its own. The VRF matters when one host is the gateway
/// of several VLANs: without it every gateway address is local to the
/// whole host, and a container of one VLAN could reach another VLAN's
/// gateway through its own. Idempotent. Forwarding and NAT out of the VRF
/// are the operator's (README, "VLAN networks").
pub fn vlan_gateway(network: &Network) -> Result<String> {
    super::check_privileges()?;
    vlan_id(network)?;
    let (Some(gateway), Some(subnet)) = (network.gateway, network.subnet()) else {
        bail!("network {} has no gateway address to hold", network.name);
    };
    let mut host = Netlink::open().context("open netlink socket")?;
    let parent = find_parent(&mut host, &network.parent)?;
    let sub = ensure_sub_interface(&mut host, &parent, network)?;
    let (vrf_name, table) = gateway_vrf(network);
    let vrf = ensure_link(
        &mut host,
        &vrf_name,
        |l| match l.kind.as_deref() {
            Some("vrf") => Ok(()),
            other => Err(format!(
                "is a {} device, not a VRF",
                other.unwrap_or("physical")
            )),
        },
        |h| h.create_vrf(&vrf_name, table),
        "this kernel has no VRF support (CONFIG_NET_VRF, module vrf)",
    )?;
    host.set_up(vrf.index)
        .with_context(|| format!("set {vrf_name} up"))?;
    let name = gateway_device(network);
    let device = ensure_link(
        &mut host,
        &name,
        |l| {
            (l.kind.as_deref() == Some("macvlan") && l.parent_index == Some(sub.index))
                .then_some(())
                .ok_or_else(|| format!("is not a macvlan on {}", sub.name))
        },
        |h| {
            h.create_macvlan(&crate::netlink::MacvlanSpec {
                name: &name,
                parent_index: sub.index,
                mode: crate::netlink::MacvlanMode::Bridge,
                mac: None,
                mtu: None,
                netns: None,
            })
        },
        "this kernel has no macvlan support (CONFIG_MACVLAN, module macvlan)",
    )?;
    if device.controller != Some(vrf.index) {
        host.set_controller(device.index, vrf.index)
            .with_context(|| format!("put {name} into {vrf_name}"))?;
    }
    match host.add_ipv4_address(device.index, gateway, subnet.prefix) {
        Ok(()) => {}
        Err(e) if e.errno() == Some(libc::EEXIST) => {}
        Err(e) => return Err(e).with_context(|| format!("add {gateway} to {name}")),
    }
    host.set_up(device.index)
        .with_context(|| format!("set {name} up"))?;
    Ok(format!("{name} (in {vrf_name}, table {table})"))
}
