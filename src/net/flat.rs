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

/// The IPv6 addresses of this host's `parent`: never a container's.
pub(super) fn host_addresses6(
    host: &mut Netlink,
    parent: &crate::netlink::Link,
) -> Result<Vec<std::net::Ipv6Addr>> {
    Ok(host
        .ipv6_addresses(parent.index)
        .with_context(|| format!("list the IPv6 addresses of {}", parent.name))?
        .into_iter()
        .map(|a| a.address)
        .collect())
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

/// The same for an IPv6 address and the networks whose `--subnet6` holds it.
fn network_guard6(ctx: &Context, networks: &[Network], address: std::net::Ipv6Addr) -> Vec<String> {
    networks
        .iter()
        .filter(|n| n.subnet6().is_some_and(|s| s.contains(address)))
        .map(|n| ctx.keys.address(&n.pool(), address))
        .collect()
}

/// Claims the address; when it is held by a container of this host that no
/// longer exists (`docker run --rm` again before `gc` ran), releases that
/// stale record first, as gc would.
fn claim_address(
    ctx: &Context,
    container_id: &str,
    address: &str,
    record: &FlatRecord,
    wanted: &[ipam::Wanted],
) -> Result<ipam::Claim> {
    let store = ctx.store()?;
    let claim = || ipam::claim(store, &ctx.keys, container_id, wanted, record);
    match claim() {
        Err(ipam::IpamError::Held { holder, .. }) if holder_is_gone(ctx, &holder)? => {
            ctx.logger.log(
                crate::log::Level::Info,
                "gc",
                &[
                    ("container", &holder),
                    ("address", address),
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
        // One more netlink dump, only where an IPv6 address is asked for.
        let reserved6 = match self.flat.address6 {
            Some(_) => host_addresses6(host, &parent)?,
            None => Vec::new(),
        };
        if let Some(address6) = self.flat.address6 {
            if reserved6.contains(&address6.address) {
                anyhow::bail!(
                    "invalid IP6/macvlan.ip6 \"{address6}\": {} is an address of this host's {}; a container may not take the host's own address",
                    address6.address,
                    parent.name
                );
            }
            if let Some(network) = networks.iter().find(|n| {
                Some(address6.address) == n.gateway6 || n.exclude6.contains(&address6.address)
            }) {
                anyhow::bail!(
                    "invalid IP6/macvlan.ip6 \"{address6}\": {} is the gateway or an excluded address of network {}, which no container may take",
                    address6.address,
                    network.name
                );
            }
        }
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
            network_record: None,
            reserved,
            reserved6,
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
            super::macvlan::new_record(ctx, target, request, &flat.parent, Some(flat.address), now);
        record.gateway = flat.gateway.map(|g| g.to_string());
        record.ip6 = flat.address6.map(|a| a.to_string());
        let mut wanted = vec![ipam::Wanted::new(
            flat.address.address,
            network_guard(ctx, &facts.networks, flat.address.address),
        )];
        if let Some(address6) = flat.address6 {
            wanted.push(ipam::Wanted::new(
                address6.address,
                network_guard6(ctx, &facts.networks, address6.address),
            ));
        }
        let shown = Attached::describe(Some(flat.address), flat.address6);
        let claim = match claim_address(ctx, &target.container_id, &shown, &record, &wanted) {
            Ok(claim) => claim,
            Err(e) => {
                super::register_unknown_claim(&e, &target.container_id, undo);
                return Err(e.context("claim address"));
            }
        };
        let ipv6 = match flat.address6 {
            Some(address) => super::ipv6::Plan::Static {
                address,
                gateway: flat.gateway6,
            },
            None => super::ipv6::Plan::Off,
        };
        super::macvlan::attach_claimed(
            ctx,
            target,
            request,
            sockets,
            undo,
            claim,
            super::macvlan::Placement {
                parent,
                address: Some(flat.address),
                gateway: flat.gateway,
                ipv6: &ipv6,
                host_device: None,
                now,
            },
        )
    }
}
