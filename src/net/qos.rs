//! Bandwidth limits on a container's interface: egress as a tbf root qdisc,
//! ingress redirected to an ifb inside the container's namespace and shaped
//! there. Used by the network drivers and, for containers on other
//! networks, by `shape`.

use std::time::Instant;

use anyhow::{Context as _, Result};

use super::{check_privileges, open_target_netns, Context, Rollback, Target, Undo};
use crate::log::Level;
use crate::netlink::{Link, Netlink};
use crate::record::LimitRecord;
use crate::request::{RateLimit, ShapingRequest};

/// Applies the limits to `link`; returns what was applied, for the record.
/// `existing` lists the namespace's interface names (to pick a free ifbN).
pub fn apply(
    container: &mut Netlink,
    link: &Link,
    existing: &[String],
    mtu: u32,
    egress: Option<&RateLimit>,
    ingress: Option<&RateLimit>,
    undo: &mut Rollback,
) -> Result<(Option<LimitRecord>, Option<LimitRecord>)> {
    let ifname = &link.name;
    if egress.is_some() || ingress.is_some() {
        undo.push(Undo::DeleteQdiscs {
            name: ifname.clone(),
        });
    }
    let mut egress_record = None;
    if let Some(limit) = egress {
        let tbf = limit.tbf(mtu)?;
        container
            .replace_root_tbf(link.index, &tbf)
            .with_context(|| format!("set egress limit (tbf) on {ifname}"))?;
        egress_record = Some(LimitRecord {
            rate_kbit: limit.rate_kbit,
            burst: tbf.burst,
            latency_ms: limit.latency_ms,
            device: None,
        });
    }
    let mut ingress_record = None;
    if let Some(limit) = ingress {
        // Ingress is shaped as the egress of an ifb inside the container's
        // namespace, so it vanishes with the namespace (the CNI bandwidth
        // plugin's host-side ifb fails on macvlan: containernetworking/plugins#413).
        let tbf = limit.tbf(mtu)?;
        let ifb_name = (0..)
            .map(|n| format!("ifb{n}"))
            .find(|name| !existing.contains(name))
            .expect("some ifbN is free");
        container
            .create_ifb(&ifb_name)
            .with_context(|| format!("create {ifb_name} for the ingress limit"))?;
        undo.push(Undo::DeleteLink {
            name: ifb_name.clone(),
        });
        let ifb = container
            .link_by_name(&ifb_name)?
            .with_context(|| format!("{ifb_name} vanished"))?;
        container.set_up(ifb.index)?;
        container
            .replace_root_tbf(ifb.index, &tbf)
            .with_context(|| format!("set ingress limit (tbf) on {ifb_name}"))?;
        container
            .redirect_ingress(link.index, ifb.index)
            .with_context(|| format!("redirect {ifname}'s ingress to {ifb_name}"))?;
        ingress_record = Some(LimitRecord {
            rate_kbit: limit.rate_kbit,
            burst: tbf.burst,
            latency_ms: limit.latency_ms,
            device: Some(ifb_name),
        });
    }
    Ok((egress_record, ingress_record))
}

/// A rate without a network type: limits on the `eth0` the container
/// already has (Docker's own veth, a CNI interface…). Nothing is recorded:
/// the limits live and die with the container's namespace.
pub fn shape(ctx: &Context, request: &ShapingRequest, target: &Target) -> Result<()> {
    let started = Instant::now();
    check_privileges()?;
    let netns = open_target_netns(target)?;
    let mut container =
        Netlink::open_in_netns_file(&netns, &target.netns_path().display().to_string())
            .context("open netlink socket in the container's namespace")?;
    let link = container.link_by_name("eth0")?.context(
        "no eth0 in the container's network namespace to limit (a rate without TYPE shapes the interface the container already has)",
    )?;
    let existing: Vec<String> = container.links()?.into_iter().map(|l| l.name).collect();
    let mut undo = Rollback::default();
    let applied = apply(
        &mut container,
        &link,
        &existing,
        link.mtu,
        request.egress.as_ref(),
        request.ingress.as_ref(),
        &mut undo,
    );
    let (egress, ingress) = match applied {
        Ok(applied) => applied,
        Err(e) => {
            undo.run(ctx, &target.container_id, &mut container);
            return Err(e);
        }
    };
    let rate = |limit: &Option<LimitRecord>| {
        limit
            .as_ref()
            .map(|l| l.rate_kbit.to_string())
            .unwrap_or_else(|| "none".into())
    };
    ctx.logger.log(
        Level::Info,
        "attach",
        &[
            ("container", &target.container_id),
            ("type", "shaping"),
            ("interface", "eth0"),
            ("egress_kbit", &rate(&egress)),
            ("ingress_kbit", &rate(&ingress)),
            (
                "pid",
                &target.pid.map(|p| p.to_string()).unwrap_or_default(),
            ),
            (
                "duration_ms",
                &format!("{:.1}", started.elapsed().as_secs_f64() * 1000.0),
            ),
        ],
    );
    Ok(())
}
