//! Flat networks: a macvlan of the host's LAN interface holding a fixed
//! address, with the default route via the LAN's gateway.

use anyhow::{Context as _, Result};

use super::{Attached, Context, Driver, HostFacts, Rollback, Sockets, Target};
use std::net::Ipv4Addr;

use crate::ipam;
use crate::netlink::Netlink;
use crate::network::Network;
use crate::record::{now, FlatRecord};
use crate::request::{FlatRequest, NetworkRequest};

pub struct FlatDriver<'a> {
    pub request: &'a NetworkRequest,
    pub flat: &'a FlatRequest,
}

/// Finds the parent in the hook's own namespace over netlink (`/sys/class/net`
/// shows the namespace that mounted sysfs, not ours).
pub(super) fn find_parent(host: &mut Netlink, name: &str) -> Result<crate::netlink::Link> {
    match host
        .link_by_name(name)
        .context("look up parent interface")?
    {
        Some(link) => Ok(link),
        None => {
            let mut names: Vec<String> = host
                .links()
                .map(|links| {
                    links
                        .into_iter()
                        .map(|l| l.name)
                        .filter(|n| n != "lo")
                        .collect()
                })
                .unwrap_or_default();
            names.sort();
            anyhow::bail!(
                "invalid HOSTIF/macvlan.host-interface {name:?}: no such interface in this host's network namespace; interfaces here: {}",
                if names.is_empty() { "none".to_string() } else { names.join(", ") }
            )
        }
    }
}

/// The IPv4 addresses of this host's `parent`: never a container's.
pub(super) fn host_addresses(
    host: &mut Netlink,
    parent: &crate::netlink::Link,
) -> Result<Vec<Ipv4Addr>> {
    host.ipv4_addresses(parent.index)
        .with_context(|| format!("list the addresses of {}", parent.name))
}

/// The rules every ad-hoc request obeys, whatever the policy: its parent
/// may not be a VLAN network's sub-interface (that would bypass the
/// network's allocation). Returns every network, for the address checks.
pub(super) fn check_adhoc_parent(
    ctx: &Context,
    host: &mut Netlink,
    parent: &crate::netlink::Link,
) -> Result<Vec<Network>> {
    let networks = crate::network::list(ctx.store()?, &ctx.keys)?;
    for network in networks.iter().filter(|n| n.vlan.is_some()) {
        let same_name = network.link_parent() == parent.name;
        let same_device = parent.kind.as_deref() == Some("vlan")
            && parent.vlan_id == network.vlan
            && parent.parent_index.is_some()
            && host
                .link_by_name(&network.parent)?
                .is_some_and(|trunk| Some(trunk.index) == parent.parent_index);
        if same_name || same_device {
            anyhow::bail!(
                "invalid HOSTIF/macvlan.host-interface {:?}: it is the sub-interface of VLAN network {} (VLAN {} on {}); ad-hoc requests may not use it — ask for the network instead (NETWORK={})",
                parent.name,
                network.name,
                network.vlan.unwrap_or(0),
                network.parent,
                network.name
            );
        }
    }
    Ok(networks)
}

/// The address key of `address` in the pool of the network whose subnet
/// holds it, if any: an ad-hoc claim must find it absent.
pub(super) fn network_guard(ctx: &Context, networks: &[Network], address: Ipv4Addr) -> Vec<String> {
    crate::network::covering(networks, address)
        .map(|n| ctx.keys.address(&n.pool(), address))
        .into_iter()
        .collect()
}

/// Claims the address; when it is held by a container of this host that no
/// longer exists (`docker run --rm` again before `gc` ran), releases that
/// stale record first, as gc would.
fn claim_address(
    ctx: &Context,
    container_id: &str,
    address: crate::cidr::Ipv4Cidr,
    record: &FlatRecord,
    guards: &[String],
) -> Result<ipam::Claim> {
    let store = ctx.store()?;
    let claim = || {
        ipam::claim(
            store,
            &ctx.keys,
            container_id,
            address.address,
            record,
            guards,
        )
    };
    match claim() {
        Err(ipam::IpamError::Held { holder, .. }) if holder_is_gone(ctx, &holder)? => {
            ctx.logger.log(
                crate::log::Level::Info,
                "gc",
                &[
                    ("container", &holder),
                    ("address", &address.to_string()),
                    (
                        "reason",
                        "container no longer exists; address claimed by a new container",
                    ),
                ],
            );
            Ok(claim()?)
        }
        other => Ok(other?),
    }
}

/// Releases `holder`'s record if gc would; returns whether it did.
fn holder_is_gone(ctx: &Context, holder: &str) -> Result<bool> {
    let Some((_, text)) = ipam::locate(ctx.store()?, &ctx.keys, holder)? else {
        return Ok(false);
    };
    let Ok(record) = serde_json::from_str::<FlatRecord>(&text) else {
        return Ok(false);
    };
    if !ctx.owns(&record)
        || crate::gc::judge(
            &ctx.config.gc,
            crate::request::container_of(holder),
            &record,
            now(),
        ) != Some(crate::gc::Reason::Gone)
    {
        return Ok(false);
    }
    Ok(ipam::release_flat_if(ctx.store()?, &ctx.keys, holder, &text)?.is_some())
}

impl Driver for FlatDriver<'_> {
    fn validate(&self, ctx: &Context, host: &mut Netlink) -> Result<HostFacts> {
        let parent = find_parent(host, &self.flat.parent)?;
        self.request
            .check_against_parent(&self.flat.parent, parent.mtu)?;
        let networks = check_adhoc_parent(ctx, host, &parent)?;
        let address = self.flat.address.address;
        let reserved = host_addresses(host, &parent)?;
        if reserved.contains(&address) {
            anyhow::bail!(
                "invalid IP/macvlan.ip \"{}\": {address} is an address of this host's {}; a container may not take the host's own address",
                self.flat.address,
                parent.name
            );
        }
        if let Some(network) = crate::network::covering(&networks, address) {
            if Some(address) == network.gateway || network.exclude.contains(&address) {
                anyhow::bail!(
                    "invalid IP/macvlan.ip \"{}\": {address} is {} of network {}, which no container may take",
                    self.flat.address,
                    if Some(address) == network.gateway { "the gateway" } else { "an excluded address" },
                    network.name
                );
            }
        }
        Ok(HostFacts {
            parent,
            network: None,
            reserved,
            networks,
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
        let request = self.request;
        let flat = self.flat;
        let parent = &facts.parent;
        let now = now();
        let mut record =
            super::macvlan::new_record(ctx, target, request, &flat.parent, flat.address, now);
        record.gateway = flat.gateway.map(|g| g.to_string());
        let guards = network_guard(ctx, &facts.networks, flat.address.address);
        let claim = claim_address(ctx, &target.container_id, flat.address, &record, &guards)
            .context("claim address")?;
        super::macvlan::attach_claimed(
            ctx,
            target,
            request,
            sockets,
            undo,
            claim,
            super::macvlan::Placement {
                parent,
                address: flat.address,
                gateway: flat.gateway,
                host_device: None,
                now,
            },
        )
    }
}
