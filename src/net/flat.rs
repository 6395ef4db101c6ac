//! Flat networks: a macvlan of the host's LAN interface holding a fixed
//! address, with the default route via the LAN's gateway.

use anyhow::{Context as _, Result};

use super::{Attached, Context, Driver, HostFacts, Rollback, Sockets, Target};
use crate::ipam;
use crate::netlink::Netlink;
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

/// Claims the address; when it is held by a container of this host that no
/// longer exists (`docker run --rm` again before `gc` ran), releases that
/// stale record first, as gc would.
fn claim_address(
    ctx: &Context,
    container_id: &str,
    address: crate::cidr::Ipv4Cidr,
    record: &FlatRecord,
) -> Result<ipam::Claim> {
    match ipam::claim_flat(ctx.store()?, &ctx.keys, container_id, address, record) {
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
            Ok(ipam::claim_flat(
                ctx.store()?,
                &ctx.keys,
                container_id,
                address,
                record,
            )?)
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
    if record.host != ctx.host
        || crate::gc::judge(&ctx.config.gc, holder, &record, now()) != Some(crate::gc::Reason::Gone)
    {
        return Ok(false);
    }
    Ok(ipam::release_flat_if(ctx.store()?, &ctx.keys, holder, &text)?.is_some())
}

impl Driver for FlatDriver<'_> {
    fn validate(&self, _ctx: &Context, host: &mut Netlink) -> Result<HostFacts> {
        let parent = find_parent(host, &self.flat.parent)?;
        self.request
            .check_against_parent(&self.flat.parent, parent.mtu)?;
        Ok(HostFacts { parent, vlan: None })
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
        let claim = claim_address(ctx, &target.container_id, flat.address, &record)
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
                now,
            },
        )
    }
}
