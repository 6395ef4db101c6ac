//! Flat networks: a macvlan of the host's LAN interface holding a fixed
//! address, with the default route via the LAN's gateway.

use anyhow::{Context as _, Result};

use super::{
    free_interface_name, stable_mac, Attached, Context, Driver, HostFacts, Rollback, Sockets,
    Target, Undo,
};
use crate::ipam;
use crate::netlink::{format_mac, MacvlanMode, MacvlanSpec, Netlink};
use crate::record::{now, FlatRecord, State};
use crate::request::NetworkRequest;

pub struct FlatDriver<'a> {
    pub request: &'a NetworkRequest,
}

/// Finds the parent in the hook's own namespace over netlink (`/sys/class/net`
/// shows the namespace that mounted sysfs, not ours).
fn find_parent(host: &mut Netlink, name: &str) -> Result<crate::netlink::Link> {
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
    let key = ctx.keys.flat(holder);
    let Some(text) = ctx.store()?.get(&key)? else {
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
    fn validate(&self, host: &mut Netlink) -> Result<HostFacts> {
        let parent = find_parent(host, self.request.parent())?;
        self.request.check_against_parent(parent.mtu)?;
        Ok(HostFacts { parent })
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
        let flat = &request.flat;
        let parent = &facts.parent;
        let mac = stable_mac(&target.container_id);
        let mac_text = format_mac(&mac);

        let now = now();
        let record = FlatRecord {
            ip: flat.address.to_string(),
            gateway: flat.gateway.map(|g| g.to_string()),
            host_interface: flat.parent.clone(),
            mac: mac_text.clone(),
            mtu: request.mtu,
            mode: request.mode,
            host: ctx.host.clone(),
            state: State::Attaching,
            pool: flat.address.subnet().pool_name(),
            ifname: None,
            pid: Some(target.pid),
            created_at: now,
            updated_at: now,
            stopped_at: None,
            egress: None,
            ingress: None,
        };
        let claim = claim_address(ctx, &target.container_id, flat.address, &record)
            .context("claim address")?;
        let created_at = claim
            .previous
            .as_deref()
            .and_then(|text| serde_json::from_str::<FlatRecord>(text).ok())
            .map(|old| old.created_at)
            .unwrap_or(now);
        undo.push(Undo::Claim(Box::new(claim)));
        sockets.timings.step("claim_ms");
        crate::failpoint::check("after-claim")?;

        let existing: Vec<String> = sockets
            .container
            .links()
            .context("list the container's interfaces")?
            .into_iter()
            .map(|l| l.name)
            .collect();
        let ifname = free_interface_name(&existing);
        sockets.timings.step("list_links_ms");

        // Created directly inside the container's namespace under its final
        // name (`ip link add … netns`): one message instead of create, move
        // and rename, and a crash can never leave a stray link on the host.
        // Passthru takes the parent's MAC: setting ours would change the
        // parent's address (macvlan's passthru semantics).
        let spec = MacvlanSpec {
            name: &ifname,
            parent_index: parent.index,
            mode: request.mode,
            mac: (request.mode != MacvlanMode::Passthru).then_some(mac),
            mtu: request.mtu,
            netns: Some(&sockets.netns),
        };
        sockets
            .host
            .create_macvlan(&spec)
            .with_context(|| format!("create macvlan on {}", flat.parent))?;
        undo.push(Undo::DeleteLink {
            name: ifname.clone(),
        });
        sockets.timings.step("create_link_ms");
        crate::failpoint::check("after-create")?;

        let link = sockets
            .container
            .link_by_name(&ifname)
            .context("find the new interface")?
            .with_context(|| format!("{ifname} vanished from the container's namespace"))?;
        sockets
            .container
            .add_ipv4_address(link.index, flat.address.address, flat.address.prefix)
            .with_context(|| format!("add address {} to {ifname}", flat.address))?;
        sockets
            .container
            .set_up(link.index)
            .with_context(|| format!("set {ifname} up"))?;
        if let Some(gateway) = flat.gateway {
            sockets
                .container
                .replace_default_route(link.index, gateway)
                .with_context(|| format!("set default route via {gateway}"))?;
        }
        let (egress, ingress) = super::qos::apply(
            &mut sockets.container,
            &link,
            &existing,
            request.mtu.unwrap_or(parent.mtu),
            request.egress.as_ref(),
            request.ingress.as_ref(),
            undo,
        )?;
        sockets.timings.step("configure_ms");
        crate::failpoint::check("after-configure")?;
        let actual_mac = link.mac.map(|m| format_mac(&m)).unwrap_or(mac_text);

        let ifname_for_record = ifname.clone();
        let mac_for_record = actual_mac.clone();
        ipam::update_flat(ctx.store()?, &ctx.keys, &target.container_id, |r| {
            r.state = State::Running;
            r.ifname = Some(ifname_for_record.clone());
            r.mac = mac_for_record.clone();
            r.created_at = created_at;
            r.stopped_at = None;
            r.egress = egress.clone();
            r.ingress = ingress.clone();
        })
        .context("record the attachment")?;
        sockets.timings.step("record_ms");

        Ok(Attached {
            ifname,
            address: flat.address.to_string(),
            mac: actual_mac,
            parent: flat.parent.clone(),
        })
    }
}
