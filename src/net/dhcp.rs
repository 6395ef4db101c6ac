//! DHCP networks: a macvlan of the host's LAN interface whose address,
//! prefix and default route come from the LAN's DHCP server, through the
//! built-in client; the lease is kept by `macvlan daemon`.

use std::os::unix::fs::MetadataExt;
use std::time::Instant;

use anyhow::{anyhow, bail, Context as _, Result};

use super::{Attached, Context, Driver, HostFacts, Rollback, Sockets, Target, Undo};
use crate::config::DhcpClient;
use crate::dhcp::{self, client, packet, wire};
use crate::ipam;
use crate::netlink::{format_mac, Netlink};
use crate::record::{now, FlatRecord, RecordKind, State};
use crate::request::{DhcpRequest, NetworkRequest};

pub struct DhcpDriver<'a> {
    pub request: &'a NetworkRequest,
    pub dhcp: &'a DhcpRequest,
    /// The network's IPv6 side (SLAAC or DHCPv6 beside the DHCPv4 lease).
    pub ipv6: &'a super::ipv6::Plan,
}

/// The interface made for the container, handed to the client that fills it.
struct Attachment<'a> {
    ifname: &'a str,
    link: &'a crate::netlink::Link,
    mac: [u8; 6],
    existing: &'a [String],
    previous: Option<&'a FlatRecord>,
    previous_text: Option<&'a str>,
    key: String,
    started: Instant,
}

/// The record written before a lease is asked for.
struct Intent<'a> {
    ifname: &'a str,
    mac: [u8; 6],
    client_id: String,
    previous: Option<&'a FlatRecord>,
    previous_text: Option<&'a str>,
    key: &'a str,
}

impl DhcpDriver<'_> {
    /// Writes the record (state attaching, no lease, the client id) before
    /// a lease is asked for, so that a hook killed between the server's
    /// ACK and the final record leaves what `gc` needs to give the lease
    /// back (`dhcp::give_back`, issue 16). Returns the text written.
    fn write_intent(
        &self,
        ctx: &Context,
        target: &Target,
        facts: &HostFacts,
        sockets: &Sockets,
        undo: &mut Rollback,
        intent: Intent<'_>,
    ) -> Result<String> {
        let id = &target.container_id;
        let now = now();
        let unspecified = crate::cidr::Ipv4Cidr {
            address: std::net::Ipv4Addr::UNSPECIFIED,
            prefix: 32,
        };
        let mut record = super::macvlan::new_record(
            ctx,
            target,
            self.request,
            &facts.parent.name,
            Some(unspecified),
            now,
        );
        record.mac = format_mac(&intent.mac);
        record.ifname = Some(intent.ifname.to_string());
        record.created_at = intent.previous.map(|p| p.created_at).unwrap_or(now);
        record.client_id = Some(intent.client_id);
        record.lease_pending = true;
        record.netns_inode = Some(sockets.netns.metadata()?.ino());
        on_network(
            &mut record,
            facts,
            &ctx.keys,
            std::net::Ipv4Addr::UNSPECIFIED,
        );
        if !dhcp::put_record(ctx, id, intent.previous_text, &record, &[])? {
            bail!(
                "the record {} changed meanwhile (another hook for {id}?)",
                intent.key
            );
        }
        undo.push(Undo::RestoreRecord {
            key: intent.key.to_string(),
            previous: intent.previous_text.map(str::to_string),
            holder: id.clone(),
        });
        Ok(serde_json::to_string(&record)?)
    }

    /// `[dhcp] client = "udhcpc"`: the record first (udhcpc's script, this
    /// binary, writes the lease into it), then udhcpc in the container's
    /// namespace; the hook waits for the lease as for its own client.
    #[allow(clippy::too_many_arguments)]
    fn setup_with_udhcpc(
        &self,
        ctx: &Context,
        target: &Target,
        facts: &HostFacts,
        sockets: &mut Sockets,
        undo: &mut Rollback,
        program: &std::path::Path,
        attachment: Attachment<'_>,
    ) -> Result<Attached> {
        let id = &target.container_id;
        let parent = &facts.parent;
        let Attachment {
            ifname,
            link,
            mac,
            existing,
            previous,
            previous_text,
            key,
            started,
        } = attachment;
        let client_id = packet::ClientIdentity::new(mac, None).client_id_hex();
        let intent = Intent {
            ifname,
            mac,
            client_id,
            previous,
            previous_text,
            key: &key,
        };
        self.write_intent(ctx, target, facts, sockets, undo, intent)?;
        let pid = dhcp::external::start(
            &ctx.config,
            program,
            &sockets.netns,
            ifname,
            id,
            previous.and_then(dhcp::previous_address),
        )?;
        undo.push(Undo::StopDhcpClient {
            pid,
            holder: id.clone(),
        });
        ipam::update_flat(ctx.store()?, &ctx.keys, id, |r| {
            r.client_pid = Some(pid);
            true
        })?;
        let deadline = started + ctx.config.dhcp.timeout;
        let lease = loop {
            let current = ipam::load_flat(ctx.store()?, &ctx.keys, id)?;
            if let Some(lease) = current.and_then(|r| r.lease) {
                break lease;
            }
            if Instant::now() >= deadline {
                bail!(
                    "get an address by DHCP on {ifname} (HOSTIF {}): udhcpc (pid {pid}) got no lease within {}",
                    parent.name,
                    humantime::format_duration(ctx.config.dhcp.timeout)
                );
            }
            if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                bail!("udhcpc (pid {pid}) exited without a lease; see the log");
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        sockets.timings.step("dhcp_ms");
        crate::failpoint::check("after-lease")?;
        let (egress, ingress) =
            super::macvlan::apply_limits(self.request, parent, link, existing, sockets, undo)?;
        let v6 =
            super::macvlan::configure_ipv6(ctx, target, sockets, undo, (link, ifname), self.ipv6)?;
        ipam::update_flat(ctx.store()?, &ctx.keys, id, |r| {
            r.state = State::Running;
            r.egress = egress.clone();
            r.ingress = ingress.clone();
            r.ip6 = v6.as_ref().map(|o| o.address.to_string());
            r.gateway6 = v6.as_ref().and_then(|o| o.gateway).map(|g| g.to_string());
            r.lease6 = v6.as_ref().and_then(|o| o.lease.clone());
            true
        })?;
        crate::daemon::ensure_running(&ctx.config)
            .context("start the watcher of DHCP containers (macvlan daemon)")?;
        let address = lease.cidr()?;
        Ok(Attached {
            ifname: ifname.to_string(),
            address: Attached::describe(Some(address), v6.as_ref().map(|o| o.address)),
            ip: Some(address.address),
            ip6: v6.as_ref().map(|o| o.address.address),
            mac: format_mac(&mac),
            parent: parent.name.clone(),
            host_reachable: false,
        })
    }
}

/// Puts a DHCP record in its network's pool (or the ad-hoc one) and
/// returns the keys its leased `address` must also find free: the
/// ad-hoc pool's for a network, the covering network's for an ad-hoc lease.
fn on_network(
    record: &mut FlatRecord,
    facts: &HostFacts,
    keys: &crate::store::Keys,
    address: std::net::Ipv4Addr,
) -> Vec<String> {
    match &facts.network {
        Some(network) => {
            record.network = Some(network.name.clone());
            record.pool = network.pool();
            record.vlan = network.vlan.map(|id| crate::record::VlanRef {
                name: network.name.clone(),
                id,
            });
            vec![keys.address(crate::ipam::ADHOC_POOL, address)]
        }
        None => crate::network::covering(&facts.networks, address)
            .map(|n| keys.address(&n.pool(), address))
            .into_iter()
            .collect(),
    }
}

impl Driver for DhcpDriver<'_> {
    fn validate(&self, ctx: &Context, host: &mut Netlink) -> Result<HostFacts> {
        let parent = super::flat::find_parent(host, &self.dhcp.parent)?;
        self.request
            .check_against_parent(&self.dhcp.parent, parent.mtu)?;
        let networks = super::flat::check_adhoc_parent(ctx, host, &parent)?;
        let reserved = super::flat::host_addresses(host, &parent)?;
        Ok(HostFacts {
            parent,
            network: None,
            network_record: None,
            reserved,
            reserved6: Vec::new(),
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
        let started = Instant::now();
        let id = &target.container_id;
        let request = self.request;
        let parent = &facts.parent;
        let store = ctx.store()?;
        ipam::check_no_other_network(store, &ctx.keys, id, RecordKind::Dhcp)?;
        let key = ctx.keys.record(id, RecordKind::Dhcp);
        let previous_text = store.get(&key)?;
        let previous: Option<FlatRecord> = match &previous_text {
            Some(text) => {
                Some(serde_json::from_str(text).map_err(|e| anyhow!("corrupt record {key}: {e}"))?)
            }
            None => None,
        };
        if let Some(old) = &previous {
            if old.state == State::Running
                && ctx.owns(old)
                && old.from_this_boot()
                && old.pid != target.pid
            {
                if let Some(pid) = old.pid {
                    if std::path::Path::new(&format!("/proc/{pid}")).exists() {
                        bail!("container {id} already has a DHCP address ({}) in process {pid}; detach it first", old.ip);
                    }
                }
            }
        }
        sockets.timings.step("read_record_ms");

        let super::macvlan::NewInterface {
            ifname,
            link,
            existing,
            mac,
        } = super::macvlan::create_interface(
            ctx, target, request, parent, self.ipv6, sockets, undo,
        )?;
        super::macvlan::set_up(sockets, &link, &ifname)?;

        if let DhcpClient::Udhcpc(program) = &ctx.config.dhcp.client {
            let attachment = Attachment {
                ifname: &ifname,
                link: &link,
                mac,
                existing: &existing,
                previous: previous.as_ref(),
                previous_text: previous_text.as_deref(),
                key,
                started,
            };
            return self.setup_with_udhcpc(ctx, target, facts, sockets, undo, program, attachment);
        }

        let socket = wire::open_client(&sockets.netns, &ifname)?;
        let hostname = target.hostname.clone();
        let identity = match request.ipvlan {
            Some(_) => packet::ClientIdentity::shared_mac(mac, id, hostname),
            None => packet::ClientIdentity::new(mac, hostname),
        };
        let intent = Intent {
            ifname: &ifname,
            mac,
            client_id: identity.client_id_hex(),
            previous: previous.as_ref(),
            previous_text: previous_text.as_deref(),
            key: &key,
        };
        let intent_text = self.write_intent(ctx, target, facts, sockets, undo, intent)?;
        crate::failpoint::check("after-intent")?;
        let config = &ctx.config.dhcp;
        let netns = &sockets.netns;
        let rules =
            dhcp::rules::LeaseRules::new(&ctx.config, facts.network.as_ref(), &facts.reserved);
        let (reply, story) = client::acquire(
            &socket,
            &identity,
            &rules,
            previous.as_ref().and_then(dhcp::previous_address),
            started,
            started + config.timeout,
            |address| {
                if config.probe_wait.is_zero() {
                    return Ok(false);
                }
                wire::arp_probe(netns, link.index, mac, address, config.probe_wait)
            },
        )
        .map_err(|e| anyhow!(e))
        .with_context(|| {
            format!(
                "get an address by DHCP on {ifname} (HOSTIF {})",
                parent.name
            )
        })?;
        undo.push(Undo::DhcpRelease {
            payload: packet::release(0x5eed_0002, &identity, reply.address, reply.server),
            socket,
            server: reply.server,
        });
        sockets.timings.step("dhcp_ms");
        for address in &story.declined {
            ctx.logger.log(
                crate::log::Level::Info,
                "dhcp-decline",
                &[
                    ("container", id.as_str()),
                    ("address", &address.to_string()),
                    ("reason", "an ARP probe found the offered address in use"),
                ],
            );
        }
        dhcp::keeper::log_refused(ctx, id, &story.refused);
        crate::failpoint::check("after-lease")?;

        let now = now();
        let lease = dhcp::lease_from(&reply, now);
        let address = lease.cidr()?;
        dhcp::configure(&mut sockets.container, link.index, &lease, now, id)
            .with_context(|| format!("configure {ifname}"))?;
        let (egress, ingress) =
            super::macvlan::apply_limits(request, parent, &link, &existing, sockets, undo)?;
        let resolv = match (&facts.network, &target.resolv) {
            (Some(network), Some(place)) if network.dhcp_dns => {
                crate::oci::resolv::write(place, &lease).context(
                    "write the lease's DNS servers into the container's resolv.conf (--dhcp-dns)",
                )?
            }
            _ => None,
        };
        if let Some(written) = &resolv {
            undo.push(Undo::RestoreResolv(written.clone()));
        }
        sockets.timings.step("configure_ms");

        let v6 = super::macvlan::configure_ipv6(
            ctx,
            target,
            sockets,
            undo,
            (&link, &ifname),
            self.ipv6,
        )?;
        let mut record =
            super::macvlan::new_record(ctx, target, request, &parent.name, Some(address), now);
        record.gateway = reply.router.map(|r| r.to_string());
        record.ip6 = v6.as_ref().map(|o| o.address.to_string());
        record.gateway6 = v6.as_ref().and_then(|o| o.gateway).map(|g| g.to_string());
        record.lease6 = v6.as_ref().and_then(|o| o.lease.clone());
        record.mac = format_mac(&mac);
        record.state = State::Running;
        record.ifname = Some(ifname.clone());
        record.created_at = previous.as_ref().map(|p| p.created_at).unwrap_or(now);
        record.egress = egress;
        record.ingress = ingress;
        record.client_id = Some(identity.client_id_hex());
        record.lease = Some(lease);
        record.resolv_conf = resolv;
        record.netns_inode = Some(sockets.netns.metadata()?.ino());
        let guards = on_network(&mut record, facts, &ctx.keys, address.address);
        let written = dhcp::put_record(ctx, id, Some(&intent_text), &record, &guards)
            .with_context(|| {
                format!(
                    "the DHCP server leased {address}, which another container holds; exclude it from the server's pool (or the network's)"
                )
            })?;
        if !written {
            bail!("the record {key} changed while the lease was taken (another hook for {id}?)");
        }
        undo.push(Undo::RestoreRecord {
            key,
            previous: previous_text,
            holder: id.clone(),
        });
        sockets.timings.step("record_ms");
        crate::failpoint::check("start-renewer")?;
        crate::daemon::ensure_running(&ctx.config)
            .context("start the lease keeper (macvlan daemon)")?;

        Ok(Attached {
            ifname,
            address: Attached::describe(Some(address), v6.as_ref().map(|o| o.address)),
            ip: Some(address.address),
            ip6: v6.as_ref().map(|o| o.address.address),
            mac: format_mac(&mac),
            parent: parent.name.clone(),
            host_reachable: false,
        })
    }
}
