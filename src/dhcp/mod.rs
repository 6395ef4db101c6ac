//! DHCP networks' built-in client: getting a lease for a container, keeping
//! it in the store under `/macvlan/dhcp/<id>`, and giving it back.

pub mod client;
pub mod client6;
pub mod external;
pub mod keeper;
pub mod packet;
pub mod rules;
pub mod v6;
pub mod wire;
pub mod wire6;

use std::net::Ipv4Addr;
use std::time::Instant;

use anyhow::{Context as _, Result};

use crate::cidr::Ipv4Cidr;
use crate::ipam;
use crate::log::Level;
use crate::net::Context;
use crate::record::{now, Dhcp6Lease, DhcpLease, FlatRecord, RecordKind, State};
use crate::store::{Compare, Op};
use packet::{ClientIdentity, Reply};

/// The lease a server's ACK grants, dated `now` (Unix seconds).
pub fn lease_from(reply: &Reply, now: u64) -> DhcpLease {
    let lease_time = u64::from(reply.lease_time);
    DhcpLease {
        address: format!("{}/{}", reply.address, reply.prefix),
        server: reply.server,
        router: reply.router,
        dns: reply.dns.clone(),
        domain: reply.domain.clone(),
        obtained_at: now,
        lease_time: reply.lease_time,
        renew_at: now + u64::from(reply.renewal).min(lease_time),
        rebind_at: now + u64::from(reply.rebinding).min(lease_time),
        expires_at: now + lease_time,
    }
}

impl DhcpLease {
    pub fn cidr(&self) -> Result<Ipv4Cidr> {
        self.address
            .parse()
            .map_err(|_| anyhow::anyhow!("lease address {:?} is not CIDR", self.address))
    }
}

/// Puts the lease's address on interface `index` with the lease's
/// remaining lifetime (so the kernel drops it at expiry if nobody renews
/// it), and the default route via its router.
pub fn configure(
    container: &mut crate::netlink::Netlink,
    index: u32,
    lease: &DhcpLease,
    now: u64,
    record_id: &str,
) -> Result<()> {
    let address = lease.cidr()?;
    // 0xffffffff is an infinite lease (RFC 2131 §3.3).
    if lease.lease_time == u32::MAX {
        container.add_ipv4_address(index, address.address, address.prefix)
    } else {
        let remaining = lease.expires_at.saturating_sub(now).max(1);
        container.add_ipv4_address_until(
            index,
            address.address,
            address.prefix,
            u32::try_from(remaining).unwrap_or(u32::MAX - 1),
        )
    }
    .with_context(|| format!("add address {address}"))?;
    // One default route per container: its first network's.
    let first = crate::request::is_primary(record_id);
    if let Some(router) = lease.router.filter(|_| first) {
        container
            .replace_default_route(index, router)
            .with_context(|| format!("set default route via {router}"))?;
    }
    Ok(())
}

/// The identity a record's container uses with the server.
pub fn identity_of(record: &FlatRecord, hostname: Option<String>) -> Result<ClientIdentity> {
    let mac = crate::netlink::parse_mac(&record.mac)
        .with_context(|| format!("record MAC {:?}", record.mac))?;
    // The client id the lease was taken with (ipvlan's is not the MAC's).
    let kept = record.client_id.as_deref().and_then(|hex| {
        (hex.len() % 2 == 0)
            .then(|| {
                (0..hex.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok())
                    .collect::<Option<Vec<u8>>>()
            })
            .flatten()
    });
    Ok(match kept {
        Some(client_id) if !client_id.is_empty() => {
            ClientIdentity::with_client_id(mac, client_id, hostname)
        }
        _ => ClientIdentity::new(mac, hostname),
    })
}

/// Writes `record` under the container's DHCP key if the key still holds
/// `expected` (raw; `None` = absent), claiming its lease's address key in
/// the same transaction (refused when the address is held by another
/// container, in the record's pool or in one of `guards`).
pub fn put_record(
    ctx: &Context,
    container_id: &str,
    expected: Option<&str>,
    record: &FlatRecord,
    guards: &[String],
) -> Result<bool> {
    let key = ctx.keys.record(container_id, RecordKind::Dhcp);
    let old: Option<FlatRecord> = expected.and_then(|text| serde_json::from_str(text).ok());
    let (mut compares, mut ops) = ipam::lease_key_change(
        ctx.store()?,
        &ctx.keys,
        container_id,
        old.as_ref(),
        Some(record),
        guards,
    )?;
    compares.push(match expected {
        Some(text) => Compare::Equals(key.clone(), text.to_string()),
        None => Compare::Absent(key.clone()),
    });
    ops.push(Op::Put(key, serde_json::to_string(record)?));
    Ok(ctx.store()?.transaction(&compares, &ops)?)
}

/// Gives a stopped container's lease back to its server (from a throwaway
/// namespace: the container's is gone) and marks the record stopped. The
/// record stays, so a restart asks for the same address. Idempotent.
pub fn release_stopped(ctx: &Context, container_id: &str, record: &FlatRecord) -> Result<()> {
    give_back(ctx, container_id, record)?;
    crate::failpoint::check("after-release")?;
    ipam::update_flat(ctx.store()?, &ctx.keys, container_id, |r| {
        if r.state == State::Stopped && r.lease.is_none() && r.lease6.is_none() && !r.lease_pending
        {
            return false;
        }
        r.state = State::Stopped;
        r.stopped_at.get_or_insert_with(now);
        r.pid = None;
        r.netns_inode = None;
        r.lease_pending = false;
        r.lease = None;
        r.lease6 = None;
        r.client_pid = None;
        true
    })?;
    Ok(())
}

/// Gives a record's lease back: stops its external client (which releases
/// it), or sends the release itself.
pub fn give_back(ctx: &Context, container_id: &str, record: &FlatRecord) -> Result<()> {
    if let Some(pid) = record.client_pid {
        return external::stop(pid, container_id);
    }
    if let Some(lease) = &record.lease {
        release_lease(ctx, record, lease)
            .with_context(|| format!("release the DHCP lease on {}", lease.address))?;
    } else if record.lease_pending {
        // The hook was killed while getting a lease: the server may hold
        // one the record does not name.
        release_unrecorded(ctx, container_id, record)
            .context("give back a lease the hook did not record")?;
    }
    if let Some(lease) = &record.lease6 {
        release_lease6(container_id, record, lease)
            .with_context(|| format!("release the DHCPv6 lease on {}", lease.address))?;
    }
    Ok(())
}

/// Finds (by a DISCOVER with the record's identity) and releases the lease
/// a server may hold for an attachment whose hook never recorded it.
fn release_unrecorded(ctx: &Context, container_id: &str, record: &FlatRecord) -> Result<()> {
    let mut host = crate::netlink::Netlink::open().context("open netlink socket")?;
    let parent = host
        .link_by_name(&record.host_interface)?
        .with_context(|| format!("parent interface {} not found", record.host_interface))?;
    let identity = identity_of(record, None)?;
    let wait = ctx
        .config
        .dhcp
        .timeout
        .min(std::time::Duration::from_secs(3));
    if let Some(address) = wire::release_unrecorded(parent.index, identity, wait)? {
        ctx.logger.log(
            Level::Info,
            "dhcp-release",
            &[
                ("container", container_id),
                ("address", &address.to_string()),
                ("reason", "a lease taken by a hook that did not finish"),
            ],
        );
    }
    Ok(())
}

/// Sends a RELEASE for `lease` from a throwaway namespace on the record's
/// parent interface.
pub fn release_lease(ctx: &Context, record: &FlatRecord, lease: &DhcpLease) -> Result<()> {
    let started = Instant::now();
    let address = lease.cidr()?;
    let mut host = crate::netlink::Netlink::open().context("open netlink socket")?;
    let parent = host
        .link_by_name(&record.host_interface)?
        .with_context(|| format!("parent interface {} not found", record.host_interface))?;
    let identity = identity_of(record, None)?;
    let payload = packet::release(0x5eed_0001, &identity, address.address, lease.server);
    wire::send_from_throwaway(parent.index, address, lease.router, lease.server, payload)?;
    if ctx.logger.debug_enabled() {
        ctx.logger.log(
            Level::Debug,
            "dhcp-release",
            &[
                ("address", &lease.address),
                ("server", &lease.server.to_string()),
                (
                    "duration_ms",
                    &format!("{:.1}", started.elapsed().as_secs_f64() * 1000.0),
                ),
            ],
        );
    }
    Ok(())
}

/// The lease a DHCPv6 REPLY grants, dated `now`, with the address under
/// `prefix` (the network's IPv6 prefix length, else 128).
pub fn lease6_from(answer: &v6::Answer, prefix: u8, iaid: u32, now: u64) -> Result<Dhcp6Lease> {
    let address = answer
        .address
        .context("the DHCPv6 REPLY holds no address")?;
    let (t1, t2) = v6::times(answer);
    Ok(Dhcp6Lease {
        address: crate::cidr::Ipv6Cidr { address, prefix }.to_string(),
        server_id: answer
            .server_id
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
        iaid,
        dns: answer.dns.clone(),
        obtained_at: now,
        preferred: answer.preferred,
        valid: answer.valid,
        renew_at: now + u64::from(t1),
        rebind_at: now + u64::from(t2),
        expires_at: now + u64::from(answer.valid),
    })
}

impl Dhcp6Lease {
    pub fn cidr(&self) -> Result<crate::cidr::Ipv6Cidr> {
        self.address
            .parse()
            .map_err(|_| anyhow::anyhow!("lease address {:?} is not CIDR", self.address))
    }

    /// The server's DUID as bytes.
    pub fn server_duid(&self) -> Vec<u8> {
        (0..self.server_id.len() / 2)
            .filter_map(|i| u8::from_str_radix(&self.server_id[2 * i..2 * i + 2], 16).ok())
            .collect()
    }
}

/// Puts a DHCPv6 lease's address on interface `index` with its remaining
/// lifetimes (the kernel drops it at expiry if nobody renews it), without
/// DAD (the server and the store's address key make it unique).
pub fn configure6(
    container: &mut crate::netlink::Netlink,
    index: u32,
    lease: &Dhcp6Lease,
    now: u64,
) -> Result<()> {
    let address = lease.cidr()?;
    let remaining =
        |end: u64| u32::try_from(end.saturating_sub(now).max(1)).unwrap_or(u32::MAX - 1);
    let infinite = lease.valid == u32::MAX;
    let lifetimes = if infinite {
        (u32::MAX, u32::MAX)
    } else {
        let valid = remaining(lease.expires_at);
        let preferred = remaining(lease.obtained_at + u64::from(lease.preferred)).min(valid);
        (preferred, valid)
    };
    container
        .add_ipv6_address_until(index, address.address, address.prefix, lifetimes)
        .with_context(|| format!("add address {address}"))
}

/// The DHCPv6 client identity of attachment `record_id`.
pub fn client6(record_id: &str) -> v6::Client {
    v6::Client {
        duid: v6::duid(crate::request::container_of(record_id)),
        iaid: v6::iaid(crate::request::slot_of(record_id)),
    }
}

/// Sends a RELEASE for `lease` from a throwaway namespace on the record's
/// parent interface.
pub fn release_lease6(record_id: &str, record: &FlatRecord, lease: &Dhcp6Lease) -> Result<()> {
    let address = lease.cidr()?;
    let mut host = crate::netlink::Netlink::open().context("open netlink socket")?;
    let parent = host
        .link_by_name(&record.host_interface)?
        .with_context(|| format!("parent interface {} not found", record.host_interface))?;
    let payload = v6::release(
        client::random_xid(),
        &client6(record_id),
        &lease.server_duid(),
        address.address,
    );
    wire6::release_from_throwaway(parent.index, payload)
}

/// The previous address of a restarting container, to ask for again.
pub fn previous_address(record: &FlatRecord) -> Option<Ipv4Addr> {
    record
        .lease
        .as_ref()
        .map(|l| l.address.as_str())
        .or(Some(record.ip.as_str()))
        .and_then(|text| text.parse::<Ipv4Cidr>().ok())
        .map(|c| c.address)
        .filter(|a| !a.is_unspecified())
}

#[cfg(test)]
mod tests {
    use super::*;
    use packet::ReplyKind;

    #[test]
    fn lease_times_follow_the_reply() {
        let reply = Reply {
            kind: ReplyKind::Ack,
            address: Ipv4Addr::new(198, 18, 0, 50),
            server: Ipv4Addr::new(198, 18, 0, 1),
            prefix: 24,
            mask: None,
            router: None,
            dns: vec![],
            domain: None,
            lease_time: 120,
            renewal: 4,
            rebinding: 200,
            message: None,
        };
        let lease = lease_from(&reply, 1000);
        assert_eq!(lease.address, "198.18.0.50/24");
        assert_eq!(lease.renew_at, 1004);
        // A T2 beyond the lease is capped at its end.
        assert_eq!(lease.rebind_at, 1120);
        assert_eq!(lease.expires_at, 1120);
    }
}
