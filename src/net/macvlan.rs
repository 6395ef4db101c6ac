//! The steps every macvlan network shares once its address is claimed: the
//! interface inside the container, its address, route and limits, and the
//! record marked running.

use std::net::{Ipv4Addr, Ipv6Addr};

use anyhow::{Context as _, Result};

use super::ipv6::Plan;

use super::{free_interface_name, stable_mac, Attached, Context, Rollback, Sockets, Target, Undo};
use crate::cidr::{Ipv4Cidr, Ipv6Cidr};
use crate::ipam::{self, Claim};
use crate::netlink::{format_mac, IpvlanSpec, Link, MacvlanMode, MacvlanSpec};
use crate::record::{FlatRecord, LimitRecord, State};
use crate::request::NetworkRequest;

/// Where the container's macvlan goes and what it holds.
pub struct Placement<'a> {
    /// The device the macvlan sits on: the LAN interface, or a VLAN's
    /// 802.1Q sub-interface.
    pub parent: &'a Link,
    /// `None` on an IPv6-only network.
    pub address: Option<Ipv4Cidr>,
    pub gateway: Option<Ipv4Addr>,
    /// The IPv6 side (a static address is claimed with the IPv4 one).
    pub ipv6: &'a Plan,
    /// Host access: the host-side device to route the address through,
    /// and the host's address to reach it from (its own on the parent in
    /// the network's subnet, if it has one).
    pub host_device: Option<(&'a Link, Option<Ipv4Addr>)>,
    /// Now, as the record's creation time when it has no earlier one.
    pub now: u64,
}

/// The record a claim writes (state attaching), without gateway or VLAN.
pub fn new_record(
    ctx: &Context,
    target: &Target,
    request: &NetworkRequest,
    parent_name: &str,
    address: Option<Ipv4Cidr>,
    now: u64,
) -> FlatRecord {
    FlatRecord {
        ip: address.map(|a| a.to_string()).unwrap_or_default(),
        gateway: None,
        ip6: None,
        gateway6: None,
        host_interface: parent_name.to_string(),
        mac: format_mac(&stable_mac(&target.container_id)),
        mtu: request.mtu,
        mode: request.macvlan_mode(),
        host: ctx.host.clone(),
        host_id: Some(ctx.host_id.clone()),
        network: None,
        state: State::Attaching,
        pool: crate::ipam::ADHOC_POOL.to_string(),
        ifname: None,
        pid: target.pid,
        created_at: now,
        updated_at: now,
        stopped_at: None,
        egress: None,
        ingress: None,
        vlan: None,
        client_id: None,
        lease: None,
        lease6: None,
        netns_inode: None,
        client_pid: None,
        host_route: None,
        lease_pending: false,
        boot_id: crate::host::boot_id().map(str::to_string),
        resolv_conf: None,
        cni: request.cni.clone(),
    }
}

/// The container's new macvlan, before it has an address.
pub struct NewInterface {
    pub ifname: String,
    pub link: Link,
    /// The container's interfaces before it was made (for qos, which may
    /// need a free ifb name).
    pub existing: Vec<String>,
    /// The MAC the kernel reports (in passthru mode, the parent's).
    pub mac: [u8; 6],
}

/// Creates the container's macvlan on `parent`, registers its undo, and
/// finds it in the container's namespace.
pub fn create_interface(
    ctx: &Context,
    target: &Target,
    request: &NetworkRequest,
    parent: &Link,
    ipv6: &Plan,
    sockets: &mut Sockets,
    undo: &mut Rollback,
) -> Result<NewInterface> {
    let existing: Vec<String> = sockets
        .container
        .links()
        .context("list the container's interfaces")?
        .into_iter()
        .map(|l| l.name)
        .collect();
    let ifname = match &request.ifname {
        Some(name) if existing.contains(name) => anyhow::bail!(
            "interface {name} exists already in the container's namespace (CNI_IFNAME {name}: ADD twice without DEL?)"
        ),
        Some(name) => name.clone(),
        None => free_interface_name(&existing),
    };
    sockets.timings.step("list_links_ms");

    // Created directly inside the container's namespace under its final
    // name (`ip link add … netns`): one message instead of create, move
    // and rename, and a crash can never leave a stray link on the host.
    // Passthru takes the parent's MAC: setting ours would change the
    // parent's address (macvlan's passthru semantics).
    let mac = request
        .mac
        .unwrap_or_else(|| stable_mac(&target.container_id));
    let created = match request.ipvlan {
        None => sockets.host.create_macvlan(&MacvlanSpec {
            name: &ifname,
            parent_index: parent.index,
            mode: request.macvlan_mode(),
            mac: (request.macvlan_mode() != MacvlanMode::Passthru).then_some(mac),
            mtu: request.mtu,
            netns: Some(&sockets.netns),
        }),
        // ipvlan shares the parent's MAC.
        Some(ipvlan) => sockets.host.create_ipvlan(&IpvlanSpec {
            name: &ifname,
            parent_index: parent.index,
            mode: ipvlan.mode,
            flag: ipvlan.flag,
            mtu: request.mtu,
            netns: Some(&sockets.netns),
        }),
    };
    let kind = match request.ipvlan {
        None => "macvlan",
        Some(_) => "ipvlan",
    };
    match created {
        Ok(()) => {}
        Err(e) if e.errno() == Some(libc::EOPNOTSUPP) => {
            return Err(e).with_context(|| {
                format!(
                    "create {kind} on {}: this kernel has no {kind} support (CONFIG_{}, module {kind}); `macvlan doctor` shows what this host can do",
                    parent.name,
                    kind.to_ascii_uppercase()
                )
            })
        }
        // A device can be the parent of macvlans or of ipvlans, not both.
        Err(e) if e.errno() == Some(libc::EBUSY) => {
            return Err(e).with_context(|| {
                format!(
                    "create {kind} on {}: it already carries devices of the other kind (macvlan and ipvlan cannot share a parent)",
                    parent.name
                )
            })
        }
        Err(e) => return Err(e).with_context(|| format!("create {kind} on {}", parent.name)),
    }
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
    // Before the link is up: no router advertisement may be taken first.
    let prepared = super::ipv6::prepare(&sockets.netns, &ifname, ipv6)?;
    if prepared.reenabled {
        ctx.logger.log(
            crate::log::Level::Info,
            "ipv6-enabled",
            &[
                ("container", target.container_id.as_str()),
                ("interface", ifname.as_str()),
                (
                    "note",
                    "the namespace had IPv6 disabled (disable_ipv6=1, by the engine?); enabled on this interface only, as its network asks for IPv6",
                ),
            ],
        );
    }
    sockets.timings.step("sysctl_ms");
    Ok(NewInterface {
        mac: link.mac.unwrap_or(mac),
        ifname,
        link,
        existing,
    })
}

/// Brings the container's new interface up, waiting (boundedly) while a
/// restarted container's previous interface still holds the same MAC on the
/// parent — seen with `docker restart` under load.
pub fn set_up(sockets: &mut Sockets, link: &Link, ifname: &str) -> Result<()> {
    let container = &mut sockets.container;
    match crate::netlink::retry_while_in_use(crate::netlink::TEARDOWN_WAIT, || {
        container.set_up(link.index)
    }) {
        Err(e) if e.errno() == Some(libc::EADDRINUSE) => Err(e).with_context(|| {
            format!(
                "set {ifname} up: its MAC {} is still up on the parent after {}s (another container's interface?)",
                link.mac.map(|m| format_mac(&m)).unwrap_or_default(),
                crate::netlink::TEARDOWN_WAIT.as_secs()
            )
        }),
        other => other.with_context(|| format!("set {ifname} up")),
    }
}

/// What the interface's IPv6 side ended up with.
#[derive(Debug, Clone)]
pub struct Ipv6Outcome {
    pub address: Ipv6Cidr,
    pub gateway: Option<Ipv6Addr>,
    /// DHCPv6 networks: the lease.
    pub lease: Option<crate::record::Dhcp6Lease>,
}

/// The interface's IPv6 address and default route once it is up: a static
/// address without DAD's wait and its route; SLAAC's address and route
/// once a router advertisement gave them (bounded); a DHCPv6 lease (its
/// RELEASE registered as the undo), with the route if an advertisement
/// has given it by then.
pub fn configure_ipv6(
    ctx: &Context,
    target: &Target,
    sockets: &mut Sockets,
    undo: &mut Rollback,
    (link, ifname): (&Link, &str),
    plan: &Plan,
) -> Result<Option<Ipv6Outcome>> {
    // One default route per family: the first network's.
    let default_route = crate::request::is_primary(&target.container_id);
    match plan {
        Plan::Off => Ok(None),
        Plan::Static { address, gateway } => {
            sockets
                .container
                .add_ipv6_address(link.index, address.address, address.prefix, true)
                .with_context(|| format!("add address {address} to {ifname}"))?;
            if let Some(mac) = link.mac {
                super::ipv6::announce(&sockets.netns, link.index, mac, vec![address.address])?;
            }
            let gateway = gateway.filter(|_| default_route);
            if let Some(gateway) = gateway {
                sockets
                    .container
                    .replace_default_route6(link.index, gateway)
                    .with_context(|| {
                        format!("set IPv6 default route via {gateway} dev {ifname}")
                    })?;
            }
            Ok(Some(Ipv6Outcome {
                address: *address,
                gateway,
                lease: None,
            }))
        }
        Plan::Slaac { wait } => {
            solicit_router(ctx, sockets, link, ifname);
            let (address, gateway) =
                super::ipv6::wait_for_slaac(&mut sockets.container, link.index, ifname, *wait)?;
            sockets.timings.step("slaac_ms");
            Ok(Some(Ipv6Outcome {
                address,
                gateway: Some(gateway),
                lease: None,
            }))
        }
        Plan::Dhcpv6 { prefix } => {
            solicit_router(ctx, sockets, link, ifname);
            let client = crate::dhcp::client6(&target.container_id);
            let socket = crate::dhcp::wire6::open_client(&sockets.netns, ifname)?;
            let started = std::time::Instant::now();
            let answer = crate::dhcp::client6::acquire(
                &socket,
                link.index,
                &client,
                started,
                started + ctx.config.dhcp.timeout,
            )
            .map_err(|e| anyhow::anyhow!(e))
            .with_context(|| format!("get an IPv6 address by DHCPv6 on {ifname}"))?;
            let now = crate::record::now();
            let lease = crate::dhcp::lease6_from(&answer, *prefix, client.iaid, now)?;
            let address = lease.cidr()?;
            undo.push(super::Undo::Dhcp6Release {
                payload: crate::dhcp::v6::release(
                    crate::dhcp::client::random_xid(),
                    &client,
                    &answer.server_id,
                    address.address,
                ),
                socket,
                index: link.index,
            });
            sockets.timings.step("dhcp6_ms");
            crate::dhcp::configure6(&mut sockets.container, link.index, &lease, now)
                .with_context(|| format!("configure {ifname}"))?;
            if let Some(mac) = link.mac {
                super::ipv6::announce(&sockets.netns, link.index, mac, vec![address.address])?;
            }
            let gateway = sockets
                .container
                .default_gateway6(link.index)
                .context("read the IPv6 default route")?;
            crate::daemon::ensure_running(&ctx.config)
                .context("start the lease keeper (macvlan daemon)")?;
            Ok(Some(Ipv6Outcome {
                address,
                gateway,
                lease: Some(lease),
            }))
        }
    }
}

/// Asks routers to advertise now (best effort: the kernel solicits too, a
/// second later).
fn solicit_router(ctx: &Context, sockets: &Sockets, link: &Link, ifname: &str) {
    if let Err(e) = super::ipv6::solicit_router(&sockets.netns, link.index) {
        ctx.logger.log(
            crate::log::Level::Debug,
            "ipv6-solicit",
            &[("interface", ifname), ("error", &format!("{e:#}"))],
        );
    }
}

/// The limits the request asks for, on the container's new interface.
pub fn apply_limits(
    request: &NetworkRequest,
    parent: &Link,
    link: &Link,
    existing: &[String],
    sockets: &mut Sockets,
    undo: &mut Rollback,
) -> Result<(Option<LimitRecord>, Option<LimitRecord>)> {
    super::qos::apply(
        &mut sockets.container,
        link,
        existing,
        request.mtu.unwrap_or(parent.mtu),
        request.egress.as_ref(),
        request.ingress.as_ref(),
        undo,
    )
}

/// Registers the claim's undo, then builds the container's interface and
/// marks the record running.
pub fn attach_claimed(
    ctx: &Context,
    target: &Target,
    request: &NetworkRequest,
    sockets: &mut Sockets,
    undo: &mut Rollback,
    claim: Claim,
    placement: Placement<'_>,
) -> Result<Attached> {
    let Placement {
        parent,
        address,
        gateway,
        ipv6,
        host_device,
        now,
    } = placement;
    let created_at = claim
        .previous
        .as_deref()
        .and_then(|text| serde_json::from_str::<FlatRecord>(text).ok())
        .map(|old| old.created_at)
        .unwrap_or(now);
    undo.push(Undo::Claim {
        claim: Box::new(claim),
        holder: target.container_id.clone(),
    });
    sockets.timings.step("claim_ms");
    crate::failpoint::check("after-claim")?;

    let NewInterface {
        ifname,
        link,
        existing,
        mac,
    } = create_interface(ctx, target, request, parent, ipv6, sockets, undo)?;

    // Before the link is up, so that arp_notify announces it.
    if let Some(address) = address {
        sockets
            .container
            .add_ipv4_address(link.index, address.address, address.prefix)
            .with_context(|| format!("add address {address} to {ifname}"))?;
    }
    set_up(sockets, &link, &ifname)?;
    let v6 = configure_ipv6(ctx, target, sockets, undo, (&link, &ifname), ipv6)?;
    let routed = request
        .ipvlan
        .is_some_and(|i| i.mode != crate::netlink::IpvlanMode::L2);
    match gateway.filter(|_| address.is_some()) {
        // ipvlan L3/L3S: no ARP on the link; the parent's host routes.
        Some(_) if routed => sockets
            .container
            .replace_default_route_dev(link.index)
            .with_context(|| format!("set default route dev {ifname}"))?,
        Some(gateway) => sockets
            .container
            .replace_default_route(link.index, gateway)
            .with_context(|| format!("set default route via {gateway}"))?,
        None => {}
    }
    let (egress, ingress) = apply_limits(request, parent, &link, &existing, sockets, undo)?;
    if let (Some((device, source)), Some(address)) = (host_device, address) {
        sockets
            .host
            .replace_host_route(address.address, device.index, source)
            .with_context(|| {
                format!(
                    "route {} through {} (host access)",
                    address.address, device.name
                )
            })?;
        undo.push(Undo::DeleteHostRoute {
            address: address.address,
            device: device.name.clone(),
        });
    }
    sockets.timings.step("configure_ms");
    crate::failpoint::check("after-configure")?;
    let actual_mac = format_mac(&mac);

    // The lease keeper (and gc, for a CNI attachment, which has no
    // process) knows the container by its namespace.
    let netns_inode = if v6.as_ref().is_some_and(|o| o.lease.is_some()) || target.pid.is_none() {
        Some(std::os::unix::fs::MetadataExt::ino(
            &sockets.netns.metadata()?,
        ))
    } else {
        None
    };
    let ifname_for_record = ifname.clone();
    let mac_for_record = actual_mac.clone();
    ipam::update_flat(ctx.store()?, &ctx.keys, &target.container_id, |r| {
        r.state = State::Running;
        r.boot_id = crate::host::boot_id().map(str::to_string);
        r.ifname = Some(ifname_for_record.clone());
        r.mac = mac_for_record.clone();
        r.created_at = created_at;
        r.stopped_at = None;
        r.egress = egress.clone();
        r.ingress = ingress.clone();
        r.host_route = host_device
            .filter(|_| address.is_some())
            .map(|(d, _)| d.name.clone());
        r.ip6 = v6.as_ref().map(|o| o.address.to_string());
        r.gateway6 = v6.as_ref().and_then(|o| o.gateway).map(|g| g.to_string());
        r.lease6 = v6.as_ref().and_then(|o| o.lease.clone());
        if netns_inode.is_some() {
            r.netns_inode = netns_inode;
        }
        true
    })
    .context("record the attachment")?;
    sockets.timings.step("record_ms");

    Ok(Attached {
        ifname,
        address: Attached::describe(address, v6.as_ref().map(|o| o.address)),
        ip: address.map(|a| a.address),
        ip6: v6.as_ref().map(|o| o.address.address),
        mac: actual_mac,
        parent: parent.name.clone(),
        host_reachable: host_device.is_some() && address.is_some(),
    })
}
