//! VLAN networks: an 802.1Q sub-interface of the host's interface (made on
//! first use and shared by every container of that VLAN on the host), a
//! macvlan on it inside the container, the requested or lowest free address
//! of the VLAN's subnet, and the route via the VLAN's gateway.

use anyhow::{bail, Context as _, Result};

use super::flat::find_parent;
use super::{Attached, Context, Driver, HostFacts, Rollback, Sockets, Target};
use crate::netlink::{Link, Netlink};
use crate::record::{now, VlanRef};
use crate::request::{NetworkRequest, VlanRequest};
use crate::vlan::{self, VlanNetwork};

pub struct VlanDriver<'a> {
    pub request: &'a NetworkRequest,
    pub vlan: &'a VlanRequest,
}

/// Finds or creates the VLAN's sub-interface on this host and brings it
/// up. Hooks of several containers may race to create it: the loser finds
/// the winner's device and checks it is the right one.
pub fn ensure_sub_interface(
    host: &mut Netlink,
    parent: &Link,
    network: &VlanNetwork,
) -> Result<Link> {
    let name = network.sub_interface();
    let link = ensure_link(
        host,
        &name,
        |link| {
            let right = link.kind.as_deref() == Some("vlan")
                && link.vlan_id == Some(network.id)
                && link.parent_index == Some(parent.index);
            right.then_some(()).ok_or_else(|| {
                format!(
                    "is not VLAN {} on {} (kind {}, id {})",
                    network.id,
                    parent.name,
                    link.kind.as_deref().unwrap_or("physical"),
                    link.vlan_id
                        .map(|i| i.to_string())
                        .unwrap_or_else(|| "none".into()),
                )
            })
        },
        |h| h.create_vlan(&name, parent.index, network.id),
        "this kernel has no 802.1Q VLAN support (CONFIG_VLAN_8021Q, module 8021q)",
    )?;
    if !link.up {
        host.set_up(link.index)
            .with_context(|| format!("set {name} up"))?;
    }
    Ok(link)
}

impl Driver for VlanDriver<'_> {
    fn validate(&self, ctx: &Context, host: &mut Netlink) -> Result<HostFacts> {
        let setting = "VLAN/macvlan.vlan";
        let network = vlan::load(ctx.store()?, &ctx.keys, self.vlan.name.as_str())
            .with_context(|| format!("invalid {setting} {:?}", self.vlan.name.as_str()))?;
        let policy = &ctx.config.policy;
        if !policy.parent_allowed(&network.host_interface) {
            bail!(
                "invalid {setting} {:?}: its host interface {} is not allowed by the host policy; allowed parents: {}",
                network.name,
                network.host_interface,
                policy.allowed_parents.join(", ")
            );
        }
        if !policy.subnet_allowed(network.subnet()) {
            bail!(
                "invalid {setting} {:?}: its subnet {} is outside the subnets the host policy allows",
                network.name,
                network.subnet
            );
        }
        if let Some((address, prefix)) = self.vlan.address {
            if let Some(prefix) = prefix.filter(|p| *p != network.subnet().prefix) {
                bail!(
                    "invalid IP/macvlan.ip \"{address}/{prefix}\": VLAN network {:?} is {}; give the address alone or with /{}",
                    network.name,
                    network.subnet,
                    network.subnet().prefix
                );
            }
            vlan::check_address(&network, address)
                .map_err(|e| anyhow::anyhow!("invalid IP/macvlan.ip \"{address}\": {e}"))?;
        }
        let parent = find_parent(host, &network.host_interface)?;
        self.request
            .check_against_parent(&network.sub_interface(), parent.mtu)?;
        Ok(HostFacts {
            parent,
            vlan: Some(network),
        })
    }

    fn setup(
        &self,
        ctx: &Context,
        target: &Target,
        facts: &HostFacts,
        sockets: &mut Sockets,
        undo: &mut Rollback,
    ) -> Result<Attached> {
        let network = facts.vlan.as_ref().expect("validate found the VLAN");
        // The sub-interface is shared by the VLAN's containers on this host
        // and outlives this one: it is not undone.
        let sub = ensure_sub_interface(&mut sockets.host, &facts.parent, network)?;
        sockets.timings.step("vlan_device_ms");
        let now = now();
        let mut record =
            super::macvlan::new_record(ctx, target, self.request, &sub.name, network.subnet(), now);
        record.gateway = Some(network.gateway.to_string());
        record.vlan = Some(VlanRef {
            name: network.name.clone(),
            id: network.id,
        });
        let (claim, address) = vlan::claim(
            ctx.store()?,
            &ctx.keys,
            &target.container_id,
            network,
            self.vlan.address.map(|(a, _)| a),
            &record,
        )
        .context("claim address")?;
        super::macvlan::attach_claimed(
            ctx,
            target,
            self.request,
            sockets,
            undo,
            claim,
            super::macvlan::Placement {
                parent: &sub,
                address,
                gateway: Some(network.gateway),
                now,
            },
        )
    }
}

/// The name of the gateway device `macvlan vlan gateway` makes.
pub fn gateway_device(network: &VlanNetwork) -> String {
    format!("vgw{}", network.id)
}

/// The VRF that holds a VLAN's gateway device on the gateway host, and its
/// routing table.
pub fn gateway_vrf(network: &VlanNetwork) -> (String, u32) {
    (format!("vrf{}", network.id), 10_000 + u32::from(network.id))
}

/// Finds or creates link `name` with `create`, tolerating a concurrent
/// creator (hooks of several containers race for shared devices), and
/// checks what it found with `check`. `unsupported` says what the kernel
/// lacks when it does not know the device type.
fn ensure_link(
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
pub fn vlan_gateway(network: &VlanNetwork) -> Result<String> {
    super::check_privileges()?;
    let mut host = Netlink::open().context("open netlink socket")?;
    let parent = find_parent(&mut host, &network.host_interface)?;
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
    match host.add_ipv4_address(device.index, network.gateway, network.subnet().prefix) {
        Ok(()) => {}
        Err(e) if e.errno() == Some(libc::EEXIST) => {}
        Err(e) => return Err(e).with_context(|| format!("add {} to {name}", network.gateway)),
    }
    host.set_up(device.index)
        .with_context(|| format!("set {name} up"))?;
    Ok(format!("{name} (in {vrf_name}, table {table})"))
}
