//! The lease keeper, part of `macvlan daemon`: renews this host's DHCP
//! leases at T1 (to their server) and T2 (to any server), starts over when
//! one runs out, and gives back the lease of a container whose namespace is
//! gone. Its state is the store: a restarted daemon carries on from there.
//! While the store cannot be reached it goes on from its own copy of the
//! leases and writes them back later; a lease's deadlines run on the
//! monotonic clock from when the keeper first saw it, so a step of the wall
//! clock neither postpones a renewal nor ends a lease early (issue 16).

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _, Result};

use super::client;
use super::packet::ReplyKind;
use super::rules::{LeaseRules, Refusal};
use super::wire;
use crate::ipam;
use crate::log::Level;
use crate::net::Context;
use crate::netlink::Netlink;
use crate::record::{now, Dhcp6Lease, DhcpLease, FlatRecord, RecordKind, State};

/// How long one renewal waits for its answer.
const RENEW_WAIT: Duration = Duration::from_secs(2);

/// A lease the keeper could not get is tried again after this long.
const RETRY_AFTER: Duration = Duration::from_secs(10);

#[derive(Default)]
pub struct Keeper {
    /// When a container's failed renewal or acquisition is tried again.
    retry_at: HashMap<String, Instant>,
    /// Where each lease (attachment, `obtained_at`) started on the
    /// monotonic clock: its own time is `obtained_at` + the time since.
    anchors: HashMap<(String, u64), Instant>,
    /// The running DHCP records this keeper keeps, as last read or changed.
    memory: HashMap<String, FlatRecord>,
    /// Attachments whose lease in `memory` the store has not taken yet.
    unsaved: HashSet<String>,
    /// The same for DHCPv6 leases (on records of every kind).
    memory6: HashMap<String, FlatRecord>,
    unsaved6: HashSet<String>,
    /// The last store failure logged (once until it changes).
    store_error: Option<String>,
}

fn seconds(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// The container's namespace, if the process the record names still has
/// the namespace it was attached in.
fn container_netns(record: &FlatRecord) -> Option<File> {
    if !record.from_this_boot() {
        return None;
    }
    let path = match (record.pid, &record.cni) {
        (Some(pid), _) => format!("/proc/{pid}/ns/net"),
        // A CNI attachment: the runtime's namespace path.
        (None, Some(cni)) => cni.netns.clone(),
        (None, None) => return None,
    };
    let file = File::open(path).ok()?;
    let inode = file.metadata().ok()?.ino();
    (Some(inode) == record.netns_inode).then_some(file)
}

/// The lease rules of a record's attachment: its network's subnet (or the
/// ad-hoc policy) and this host's addresses on its parent.
fn rules_for(ctx: &Context, record: &FlatRecord) -> LeaseRules {
    let network = record
        .network
        .as_deref()
        .and_then(|name| crate::network::load(ctx.store().ok()?, &ctx.keys, name).ok());
    let reserved = Netlink::open()
        .and_then(|mut host| {
            let Some(parent) = host.link_by_name(&record.host_interface)? else {
                return Ok(Vec::new());
            };
            host.ipv4_addresses(parent.index)
        })
        .unwrap_or_default();
    LeaseRules::new(&ctx.config, network.as_ref(), &reserved)
}

/// Logs each reply the rules refused (one line each).
pub(crate) fn log_refused(ctx: &Context, id: &str, refused: &[Refusal]) {
    for refusal in refused {
        crate::metrics::count("macvlan_dhcp_events", &[("event", "refused")]);
        ctx.logger.log(
            Level::Info,
            "dhcp-refused",
            &[
                ("container", id),
                ("address", &refusal.address.to_string()),
                ("server", &refusal.server.to_string()),
                ("field", refusal.field),
                ("reason", &refusal.reason),
            ],
        );
    }
}

impl Keeper {
    /// One pass over this host's DHCP containers. Returns how many leases
    /// it keeps and when one next needs attention.
    pub fn round(&mut self, ctx: &Context) -> Result<(usize, Option<Duration>)> {
        self.write_back(ctx);
        let mut kept = 0;
        let mut next: Option<Duration> = None;
        let mut seen = Vec::new();
        for (id, record) in self.records(ctx)? {
            seen.push(id.clone());
            let Some(netns) = container_netns(&record) else {
                release_gone(ctx, &id, &record, &record.ip, "dhcp-release");
                continue;
            };
            kept += 1;
            if record.client_pid.is_some() {
                // An external client (udhcpc) renews by itself; the keeper
                // only watches for the container to go.
                continue;
            }
            let lease_now = record
                .lease
                .as_ref()
                .map(|lease| self.lease_now(&id, lease.obtained_at));
            let retry = self
                .retry_at
                .get(&id)
                .and_then(|at| at.checked_duration_since(Instant::now()));
            let due = match (&record.lease, lease_now, retry) {
                (_, _, Some(retry)) => retry,
                (Some(lease), Some(now), _) if lease.renew_at > now => {
                    seconds(lease.renew_at - now)
                }
                _ => {
                    self.retry_at.remove(&id);
                    if let Err(e) = self.attend(ctx, &id, &record, &netns) {
                        crate::metrics::count("macvlan_dhcp_events", &[("event", "failed")]);
                        ctx.logger.log(
                            Level::Error,
                            "dhcp-keep",
                            &[
                                ("container", id.as_str()),
                                ("address", record.ip.as_str()),
                                ("error", &format!("{e:#}")),
                            ],
                        );
                        self.retry_at
                            .insert(id.clone(), Instant::now() + RETRY_AFTER);
                    }
                    continue;
                }
            };
            next = Some(next.map_or(due, |n| n.min(due)));
        }
        crate::metrics::set("macvlan_dhcp_leases", &[("family", "4")], kept as i64);
        let kept4 = kept;
        // DHCPv6 leases, on records of every kind.
        for (id, record) in self.records6(ctx) {
            let Some(lease) = record.lease6.clone() else {
                continue;
            };
            let retry_key = format!("{id}#6");
            seen.push(retry_key.clone());
            let Some(netns) = container_netns(&record) else {
                release_gone(ctx, &id, &record, &lease.address, "dhcp6-release");
                continue;
            };
            kept += 1;
            let now = self.lease_now(&retry_key, lease.obtained_at);
            let retry = self
                .retry_at
                .get(&retry_key)
                .and_then(|at| at.checked_duration_since(Instant::now()));
            let due = match retry {
                Some(retry) => retry,
                None if lease.renew_at > now => seconds(lease.renew_at - now),
                None => {
                    self.retry_at.remove(&retry_key);
                    if let Err(e) = self.attend6(ctx, &id, &record, &lease, &netns) {
                        ctx.logger.log(
                            Level::Error,
                            "dhcp6-keep",
                            &[
                                ("container", id.as_str()),
                                ("address", lease.address.as_str()),
                                ("error", &format!("{e:#}")),
                            ],
                        );
                        self.retry_at
                            .insert(retry_key, Instant::now() + RETRY_AFTER);
                    }
                    continue;
                }
            };
            next = Some(next.map_or(due, |n| n.min(due)));
        }
        self.retry_at.retain(|id, _| seen.contains(id));
        let live: HashSet<&String> = seen.iter().collect();
        self.anchors
            .retain(|(id, _), _| live.contains(id) || live.contains(&format!("{id}#6")));
        // Nothing due (only external clients, or leases attended in this
        // round): the daemon's regular interval is soon enough.
        crate::metrics::set(
            "macvlan_dhcp_leases",
            &[("family", "6")],
            (kept - kept4) as i64,
        );
        Ok((kept, next))
    }

    /// The time of `id`'s lease obtained at `obtained_at` (Unix seconds):
    /// the wall clock when the keeper first sees the lease, the monotonic
    /// clock from then on.
    fn lease_now(&mut self, id: &str, obtained_at: u64) -> u64 {
        // One anchor per attachment: a renewed lease replaces the old one's.
        if !self.anchors.contains_key(&(id.to_string(), obtained_at)) {
            self.anchors.retain(|(other, _), _| other != id);
        }
        let anchor = *self
            .anchors
            .entry((id.to_string(), obtained_at))
            .or_insert_with(|| {
                let age = seconds(now().saturating_sub(obtained_at));
                Instant::now().checked_sub(age).unwrap_or_else(Instant::now)
            });
        obtained_at + anchor.elapsed().as_secs()
    }

    /// This host's running DHCP records: from the store, the keeper's own
    /// copy winning for leases the store has not taken yet; while the store
    /// cannot be read, the copy (an error only if there is none).
    fn records(&mut self, ctx: &Context) -> Result<Vec<(String, FlatRecord)>> {
        let prefix = ctx.keys.record_prefix(RecordKind::Dhcp);
        let listed = ctx.store().and_then(|store| Ok(store.list(&prefix)?));
        let listed = match listed {
            Ok(listed) => listed,
            Err(e) if self.memory.is_empty() => return Err(e),
            Err(e) => {
                let message = format!("{e:#}");
                if self.store_error.as_ref() != Some(&message) {
                    ctx.logger.log(
                        Level::Error,
                        "dhcp-keep",
                        &[
                            ("error", &message),
                            ("kept_from_memory", &self.memory.len().to_string()),
                        ],
                    );
                    self.store_error = Some(message);
                }
                let mut records: Vec<_> = self.memory.clone().into_iter().collect();
                records.sort_by(|a, b| a.0.cmp(&b.0));
                return Ok(records);
            }
        };
        self.store_error = None;
        let mut records = Vec::new();
        for (key, text) in listed {
            let id = key[prefix.len()..].to_string();
            let Ok(record) = serde_json::from_str::<FlatRecord>(&text) else {
                continue;
            };
            if !ctx.owns(&record) || record.state != State::Running {
                continue;
            }
            let record = match self.memory.get(&id) {
                Some(kept) if self.unsaved.contains(&id) && kept.pid == record.pid => kept.clone(),
                _ => record,
            };
            records.push((id, record));
        }
        self.memory = records.iter().cloned().collect();
        self.unsaved.retain(|id| self.memory.contains_key(id));
        Ok(records)
    }

    /// This host's running records with a DHCPv6 lease, as `records` does
    /// for DHCPv4: from the store, else (while it is away) the copy.
    fn records6(&mut self, ctx: &Context) -> Vec<(String, FlatRecord)> {
        for id in self.unsaved6.clone() {
            let lease = self.memory6.get(&id).and_then(|r| r.lease6.clone());
            if store_lease6(ctx, &id, lease).is_ok() {
                self.unsaved6.remove(&id);
            }
        }
        let listed = ctx
            .store()
            .and_then(|store| Ok(ipam::list_records(store, &ctx.keys)?));
        let Ok(listed) = listed else {
            let mut records: Vec<_> = self.memory6.clone().into_iter().collect();
            records.sort_by(|a, b| a.0.cmp(&b.0));
            return records;
        };
        let mut records = Vec::new();
        for (id, _, text) in listed {
            let Ok(record) = serde_json::from_str::<FlatRecord>(&text) else {
                continue;
            };
            if record.lease6.is_none() || !ctx.owns(&record) || record.state != State::Running {
                continue;
            }
            let record = match self.memory6.get(&id) {
                Some(kept) if self.unsaved6.contains(&id) && kept.pid == record.pid => kept.clone(),
                _ => record,
            };
            records.push((id, record));
        }
        self.memory6 = records.iter().cloned().collect();
        self.unsaved6.retain(|id| self.memory6.contains_key(id));
        records
    }

    /// Records the DHCPv6 lease now held (or none) in the copy, and in the
    /// store if it can be reached.
    fn save6(&mut self, ctx: &Context, id: &str, lease: Option<Dhcp6Lease>) {
        if let Some(record) = self.memory6.get_mut(id) {
            if let Some(lease) = &lease {
                record.ip6 = Some(lease.address.clone());
            }
            record.lease6 = lease.clone();
        }
        if store_lease6(ctx, id, lease).is_err() {
            self.unsaved6.insert(id.to_string());
        } else {
            self.unsaved6.remove(id);
        }
    }

    /// Records the lease now held (or none) in the keeper's copy, and in
    /// the store if it can be reached (else later, by `write_back`).
    fn save(&mut self, ctx: &Context, id: &str, lease: Option<DhcpLease>) {
        if let Some(record) = self.memory.get_mut(id) {
            if let Some(lease) = &lease {
                record.ip = lease.address.clone();
                record.gateway = lease.router.map(|g| g.to_string());
            }
            record.lease = lease.clone();
        }
        if let Err(e) = store_lease(ctx, id, lease) {
            self.unsaved.insert(id.to_string());
            if ctx.logger.debug_enabled() {
                ctx.logger.log(
                    Level::Debug,
                    "dhcp-keep",
                    &[("container", id), ("unsaved", &format!("{e:#}"))],
                );
            }
        } else {
            self.unsaved.remove(id);
        }
    }

    /// Writes the leases the store missed while it was away.
    fn write_back(&mut self, ctx: &Context) {
        for id in self.unsaved.clone() {
            let lease = self.memory.get(&id).and_then(|r| r.lease.clone());
            if store_lease(ctx, &id, lease).is_ok() {
                self.unsaved.remove(&id);
            }
        }
    }

    /// Renews, rebinds or re-acquires the lease of a running container.
    fn attend(&mut self, ctx: &Context, id: &str, record: &FlatRecord, netns: &File) -> Result<()> {
        let ifname = record
            .ifname
            .clone()
            .context("the record names no interface")?;
        let identity = super::identity_of(record, None)?;
        let socket = wire::open_client(netns, &ifname)?;
        let wall = now();
        let now = match &record.lease {
            Some(lease) => self.lease_now(id, lease.obtained_at),
            None => wall,
        };
        let lease = match &record.lease {
            Some(lease) if lease.expires_at > now => lease.clone(),
            expired => {
                if let Some(lease) = expired {
                    remove_address(netns, &ifname, lease)?;
                    crate::metrics::count("macvlan_dhcp_events", &[("event", "expired")]);
                    ctx.logger.log(
                        Level::Info,
                        "dhcp-expired",
                        &[("container", id), ("address", &lease.address)],
                    );
                    self.save(ctx, id, None);
                }
                return self.reacquire(ctx, id, record, netns, &ifname, &socket, &identity);
            }
        };
        let address = lease.cidr()?.address;
        // RENEWING hears only the leasing server; REBINDING any (RFC 2131
        // §4.4.5), its ACK still held to the rules.
        let (state, to, from, stage_end) = if now >= lease.rebind_at {
            (
                "rebinding",
                std::net::Ipv4Addr::BROADCAST,
                None,
                lease.expires_at,
            )
        } else {
            (
                "renewing",
                lease.server,
                Some(lease.server),
                lease.rebind_at,
            )
        };
        let rules = rules_for(ctx, record);
        let mut refused = Vec::new();
        let reply = client::renew(
            &socket,
            &identity,
            &rules,
            address,
            to,
            from,
            Instant::now() + RENEW_WAIT,
            &mut refused,
        )?;
        log_refused(ctx, id, &refused);
        match reply {
            Some(ack) if ack.kind == ReplyKind::Ack && ack.address == address => {
                let renewed = super::lease_from(&ack, wall);
                // The address's lifetime in the kernel follows the lease.
                let mut container =
                    Netlink::open_in_netns_file(netns, "the container's namespace")?;
                let link = container
                    .link_by_name(&ifname)?
                    .with_context(|| format!("{ifname} is gone from the container"))?;
                super::configure(&mut container, link.index, &renewed, wall, id)?;
                ctx.logger.log(
                    Level::Info,
                    "dhcp-renew",
                    &[
                        ("container", id),
                        ("address", &renewed.address),
                        ("server", &renewed.server.to_string()),
                        ("state", state),
                        ("lease_s", &renewed.lease_time.to_string()),
                    ],
                );
                crate::metrics::count("macvlan_dhcp_events", &[("event", "renewed")]);
                self.save(ctx, id, Some(renewed));
            }
            Some(other) => {
                crate::metrics::count("macvlan_dhcp_events", &[("event", "nak")]);
                // A NAK (or an ACK for another address): the lease is over.
                remove_address(netns, &ifname, &lease)?;
                ctx.logger.log(
                    Level::Info,
                    "dhcp-nak",
                    &[
                        ("container", id),
                        ("address", &lease.address),
                        ("server", &other.server.to_string()),
                    ],
                );
                self.save(ctx, id, None);
                let mut current = record.clone();
                current.lease = None;
                return self.reacquire(ctx, id, &current, netns, &ifname, &socket, &identity);
            }
            None => {
                // RFC 2131 §4.4.5: wait half the remaining time to T2 (or
                // to the end of the lease) before asking again.
                crate::metrics::count("macvlan_dhcp_events", &[("event", "renew_unanswered")]);
                let left = stage_end.saturating_sub(now);
                let retry = (left / 2).max(1).min(left.max(1));
                self.retry_at
                    .insert(id.to_string(), Instant::now() + seconds(retry));
                if ctx.logger.debug_enabled() {
                    ctx.logger.log(
                        Level::Debug,
                        "dhcp-renew-unanswered",
                        &[
                            ("container", id),
                            ("address", &lease.address),
                            ("state", state),
                        ],
                    );
                }
            }
        }
        Ok(())
    }

    /// Starts over from INIT for a running container that has lost its lease.
    #[allow(clippy::too_many_arguments)]
    fn reacquire(
        &mut self,
        ctx: &Context,
        id: &str,
        record: &FlatRecord,
        netns: &File,
        ifname: &str,
        socket: &std::net::UdpSocket,
        identity: &super::packet::ClientIdentity,
    ) -> Result<()> {
        let mut container = Netlink::open_in_netns_file(netns, "the container's namespace")?;
        let link = container
            .link_by_name(ifname)?
            .with_context(|| format!("{ifname} is gone from the container"))?;
        let started = Instant::now();
        let wait = ctx.config.dhcp.probe_wait;
        let mac = identity.mac;
        let rules = rules_for(ctx, record);
        let (reply, story) = client::acquire(
            socket,
            identity,
            &rules,
            super::previous_address(record),
            started,
            started + ctx.config.dhcp.timeout,
            |address| {
                if wait.is_zero() {
                    return Ok(false);
                }
                wire::arp_probe(netns, link.index, mac, address, wait)
            },
        )
        .map_err(|e| anyhow!(e))?;
        log_refused(ctx, id, &story.refused);
        let now = now();
        let lease = super::lease_from(&reply, now);
        super::configure(&mut container, link.index, &lease, now, id)?;
        crate::metrics::count("macvlan_dhcp_events", &[("event", "acquired")]);
        ctx.logger.log(
            Level::Info,
            "dhcp-lease",
            &[
                ("container", id),
                ("address", &lease.address),
                ("server", &lease.server.to_string()),
            ],
        );
        self.save(ctx, id, Some(lease));
        Ok(())
    }
}

impl Keeper {
    /// Renews (at T1, to its server), rebinds (at T2, to any) or, once it
    /// ran out or the server no longer knows it, re-acquires a DHCPv6 lease.
    fn attend6(
        &mut self,
        ctx: &Context,
        id: &str,
        record: &FlatRecord,
        lease: &Dhcp6Lease,
        netns: &File,
    ) -> Result<()> {
        let ifname = record
            .ifname
            .clone()
            .context("the record names no interface")?;
        let mut container = Netlink::open_in_netns_file(netns, "the container's namespace")?;
        let link = container
            .link_by_name(&ifname)?
            .with_context(|| format!("{ifname} is gone from the container"))?;
        let client = super::client6(id);
        let socket = super::wire6::open_client(netns, &ifname)?;
        let address = lease.cidr()?;
        // New leases are dated by the wall clock; this one's deadlines
        // follow the monotonic clock.
        let wall = now();
        let now = self.lease_now(&format!("{id}#6"), lease.obtained_at);
        let renewed = if lease.expires_at > now {
            let rebinding = now >= lease.rebind_at;
            let server = (!rebinding).then(|| lease.server_duid());
            let stage_end = if rebinding {
                lease.expires_at
            } else {
                lease.rebind_at
            };
            match super::client6::renew(
                &socket,
                link.index,
                &client,
                server.as_deref(),
                address.address,
                Instant::now() + RENEW_WAIT,
            )? {
                Some(answer) if answer.address == Some(address.address) => {
                    let renewed = super::lease6_from(&answer, address.prefix, client.iaid, wall)?;
                    ctx.logger.log(
                        Level::Info,
                        "dhcp6-renew",
                        &[
                            ("container", id),
                            ("address", &renewed.address),
                            ("state", if rebinding { "rebinding" } else { "renewing" }),
                            ("valid_s", &renewed.valid.to_string()),
                        ],
                    );
                    Some(renewed)
                }
                Some(other) => {
                    ctx.logger.log(
                        Level::Info,
                        "dhcp6-lost",
                        &[
                            ("container", id),
                            ("address", &lease.address),
                            ("status", &format!("{:?}", other.status)),
                        ],
                    );
                    None
                }
                None => {
                    // No answer: ask again halfway to the next stage.
                    let left = stage_end.saturating_sub(now);
                    let retry = (left / 2).max(1).min(left.max(1));
                    self.retry_at
                        .insert(format!("{id}#6"), Instant::now() + seconds(retry));
                    return Ok(());
                }
            }
        } else {
            ctx.logger.log(
                Level::Info,
                "dhcp6-expired",
                &[("container", id), ("address", &lease.address)],
            );
            None
        };
        let lease = match renewed {
            Some(lease) => lease,
            None => {
                container.delete_ipv6_address(link.index, address.address, address.prefix)?;
                self.save6(ctx, id, None);
                let started = Instant::now();
                let answer = super::client6::acquire(
                    &socket,
                    link.index,
                    &client,
                    started,
                    started + ctx.config.dhcp.timeout,
                )
                .map_err(|e| anyhow!(e))?;
                let lease = super::lease6_from(&answer, address.prefix, client.iaid, wall)?;
                ctx.logger.log(
                    Level::Info,
                    "dhcp6-lease",
                    &[("container", id), ("address", &lease.address)],
                );
                lease
            }
        };
        super::configure6(&mut container, link.index, &lease, wall)?;
        self.save6(ctx, id, Some(lease));
        Ok(())
    }
}

/// Gives back the leases of a container whose namespace is gone, logging
/// it (`event`) with the address and any error.
fn release_gone(ctx: &Context, id: &str, record: &FlatRecord, address: &str, event: &str) {
    crate::metrics::count("macvlan_dhcp_events", &[("event", "released")]);
    let error = super::release_stopped(ctx, id, record)
        .err()
        .map(|e| format!("{e:#}"));
    let mut fields = vec![
        ("container", id),
        ("address", address),
        ("reason", "the container's namespace is gone"),
    ];
    let level = match &error {
        Some(error) => {
            fields.push(("error", error));
            Level::Error
        }
        None => Level::Info,
    };
    ctx.logger.log(level, event, &fields);
}

/// Records the DHCPv6 lease now held (or none).
fn store_lease6(ctx: &Context, id: &str, lease: Option<Dhcp6Lease>) -> Result<()> {
    ipam::update_flat(ctx.store()?, &ctx.keys, id, |r| {
        if let Some(lease) = &lease {
            r.ip6 = Some(lease.address.clone());
        }
        r.lease6 = lease.clone();
        true
    })?;
    Ok(())
}

fn remove_address(netns: &File, ifname: &str, lease: &DhcpLease) -> Result<()> {
    let address = lease.cidr()?;
    let mut container = Netlink::open_in_netns_file(netns, "the container's namespace")?;
    if let Some(link) = container.link_by_name(ifname)? {
        match container.delete_ipv4_address(link.index, address.address, address.prefix) {
            Ok(()) => {}
            // Already gone.
            Err(e) if e.errno() == Some(libc::EADDRNOTAVAIL) => {}
            Err(e) => return Err(e).with_context(|| format!("remove {address} from {ifname}")),
        }
    }
    Ok(())
}

/// Records the lease now held (or none).
fn store_lease(ctx: &Context, id: &str, lease: Option<DhcpLease>) -> Result<()> {
    ipam::update_flat(ctx.store()?, &ctx.keys, id, |r| {
        if let Some(lease) = &lease {
            r.ip = lease.address.clone();
            r.gateway = lease.router.map(|g| g.to_string());
        }
        r.lease = lease.clone();
        true
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_keeps_its_own_time_and_one_anchor_per_attachment() {
        let mut keeper = Keeper::default();
        let wall = now();
        // First seen 30 s into the lease: its time is the wall clock's.
        let first = keeper.lease_now("a", wall - 30);
        assert!((wall..=wall + 1).contains(&first), "{first} {wall}");
        // Renewed: the old lease's anchor goes, the new one's starts now.
        let renewed = keeper.lease_now("a", wall);
        assert!((wall..=wall + 1).contains(&renewed));
        keeper.lease_now("b", wall);
        assert_eq!(keeper.anchors.len(), 2);
        assert!(keeper.anchors.contains_key(&("a".to_string(), wall)));
    }
}
