//! Operator-defined networks (`NETWORK=lan`, and the thesis's `TYPE=vlan
//! VLAN=name`): the network's record says the parent, VLAN, subnet, gateway,
//! range and limits; the container says at most which address. Static
//! networks take the requested or lowest free address of the range; DHCP
//! networks hand over to the DHCP driver on the network's device.

use anyhow::{bail, Context as _, Result};

use super::flat::{find_parent, host_addresses, host_addresses6};
use super::ipv6::Plan;
use super::{Attached, Context, Driver, HostFacts, Rollback, Sockets, Target};
use crate::netlink::Netlink;
use crate::network::{self, Ipam, Ipv6Mode};
use crate::record::{now, VlanRef};
use crate::request::{DhcpRequest, NamedRequest, NetworkRequest};

pub struct NamedDriver<'a> {
    pub request: &'a NetworkRequest,
    pub named: &'a NamedRequest,
}

impl NamedDriver<'_> {
    fn setting(&self) -> String {
        format!("{} {:?}", self.named.setting, self.named.name.as_str())
    }
}

impl Driver for NamedDriver<'_> {
    fn validate(&self, ctx: &Context, host: &mut Netlink) -> Result<HostFacts> {
        let name = self.named.name.as_str();
        let invalid = || format!("invalid {}", self.setting());
        let (network, record) =
            network::load_stored(ctx.store()?, &ctx.keys, name).with_context(invalid)?;
        let policy = &ctx.config.policy;
        if !policy.network_allowed(name) {
            bail!(
                "{}: this host does not serve that network ([policy] networks = {:?})",
                invalid(),
                policy.networks
            );
        }
        if network.annotations_only && self.named.from_env {
            bail!(
                "{}: network {name} may be requested by annotation only (macvlan.network={name}), not by an environment variable, which an image can set",
                invalid()
            );
        }
        if let (crate::config::DhcpClient::Udhcpc(_), Some(_), Ipam::Dhcp) =
            (&ctx.config.dhcp.client, network.ipvlan, network.ipam)
        {
            bail!("{}: [dhcp] client = \"udhcpc\" cannot serve ipvlan networks (every container shares the parent's MAC, and udhcpc identifies itself by it); use the built-in client", invalid());
        }
        let effective = self.request.within(&network)?;
        let parent = find_parent(host, &network.parent)
            .with_context(|| format!("network {name}'s parent"))?;
        let reserved = host_addresses(host, &parent)?;
        // One more netlink dump, only where the store hands out IPv6 addresses.
        let reserved6 = match network.ipv6 {
            Ipv6Mode::Static => host_addresses6(host, &parent)?,
            _ => Vec::new(),
        };
        if let Some((address, prefix)) = self.named.address6 {
            let shown = match prefix {
                Some(p) => format!("{address}/{p}"),
                None => address.to_string(),
            };
            match (network.ipv6, network.subnet6()) {
                (Ipv6Mode::Static, Some(subnet)) => {
                    if prefix.is_some_and(|p| p != subnet.prefix) {
                        bail!(
                            "invalid IP6/macvlan.ip6 \"{shown}\": network {name} is {subnet}; give the address alone or with /{}",
                            subnet.prefix
                        );
                    }
                }
                (Ipv6Mode::Off, _) => bail!(
                    "invalid IP6/macvlan.ip6 \"{shown}\": network {name} has no IPv6 (created without --ipv6/--subnet6); remove IP6"
                ),
                (mode, _) => bail!(
                    "invalid IP6/macvlan.ip6 \"{shown}\": network {name} takes its IPv6 addresses from {} (--ipv6 {}); remove IP6",
                    if mode == Ipv6Mode::Slaac { "router advertisements" } else { "DHCPv6" },
                    mode.as_str()
                ),
            }
            network::check_address6(&network, address, &reserved6)
                .with_context(|| format!("invalid IP6/macvlan.ip6 \"{shown}\""))?;
        }
        if let Some((address, prefix)) = self.named.address {
            let subnet = network.subnet();
            match (network.ipam, subnet) {
                (_, None) if !network.has_ipv4() => bail!(
                    "invalid IP/macvlan.ip \"{address}\": network {name} is IPv6-only; give IP6 instead"
                ),
                (Ipam::Dhcp, _) | (_, None) => bail!(
                    "invalid IP/macvlan.ip \"{address}\": network {name} takes its addresses from DHCP; remove IP"
                ),
                (Ipam::Static, Some(subnet)) => {
                    if let Some(prefix) = prefix.filter(|p| *p != subnet.prefix) {
                        bail!(
                            "invalid IP/macvlan.ip \"{address}/{prefix}\": network {name} is {subnet}; give the address alone or with /{}",
                            subnet.prefix
                        );
                    }
                }
            }
            network::check_address(&network, address, &reserved)
                .with_context(|| format!("invalid IP/macvlan.ip \"{address}\""))?;
        }
        effective.check_against_parent(&network.link_parent(), parent.mtu)?;
        Ok(HostFacts {
            parent,
            network: Some(network),
            network_record: Some(record),
            reserved,
            reserved6,
            networks: Vec::new(),
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
        let network = facts.network.as_ref().expect("validate found the network");
        let request = self.request.within(network)?;
        // A VLAN's sub-interface is shared by its containers on this host
        // and outlives this one: it is not undone.
        let device = match network.vlan {
            Some(_) => {
                let sub = super::ensure_sub_interface(&mut sockets.host, &facts.parent, network)?;
                sockets.timings.step("vlan_device_ms");
                sub
            }
            None => facts.parent.clone(),
        };
        let dynamic6 = match network.ipv6 {
            Ipv6Mode::Slaac => Plan::Slaac {
                wait: ctx.config.ipv6.slaac_wait,
            },
            Ipv6Mode::Dhcpv6 => Plan::Dhcpv6 {
                prefix: network.subnet6().map_or(128, |s| s.prefix),
            },
            Ipv6Mode::Off | Ipv6Mode::Static => Plan::Off,
        };
        if network.ipam == Ipam::Dhcp {
            let dhcp = DhcpRequest {
                parent: device.name.clone(),
            };
            let facts = HostFacts {
                parent: device,
                ..facts.clone()
            };
            return super::dhcp::DhcpDriver {
                request: &request,
                dhcp: &dhcp,
                ipv6: &dynamic6,
            }
            .setup(ctx, target, &facts, sockets, undo);
        }
        // Host access: the shared host-side device, made on first use.
        let host_device = if network.host_access {
            let device = super::host_access::ensure_device(
                &mut sockets.host,
                &device,
                network,
                &facts.reserved,
            )?;
            sockets.timings.step("host_device_ms");
            Some(device)
        } else {
            None
        };
        let now = now();
        let mut record = super::macvlan::new_record(ctx, target, &request, &device.name, None, now);
        record.gateway = network.gateway.map(|g| g.to_string());
        record.vlan = network.vlan.map(|id| VlanRef {
            name: network.name.clone(),
            id,
        });
        let stored = facts
            .network_record
            .as_deref()
            .context("the network's record was not read")?;
        let claimed = network::claim(
            ctx.store()?,
            &ctx.keys,
            &target.container_id,
            (network, stored),
            network::Requested {
                v4: self.named.address.map(|(a, _)| a),
                v6: self.named.address6.map(|(a, _)| a),
            },
            network::Reserved {
                v4: &facts.reserved,
                v6: &facts.reserved6,
            },
            &record,
        )
        .map_err(anyhow::Error::from)
        .inspect_err(|e| super::register_unknown_claim(e, &target.container_id, undo))
        .with_context(|| format!("claim an address on network {}", network.name))?;
        let ipv6 = match claimed.v6 {
            Some(address) => Plan::Static {
                address,
                gateway: network.gateway6,
            },
            None => dynamic6,
        };
        super::macvlan::attach_claimed(
            ctx,
            target,
            &request,
            sockets,
            undo,
            claimed.claim,
            super::macvlan::Placement {
                parent: &device,
                address: claimed.v4,
                // One default route: the first network's.
                gateway: network
                    .gateway
                    .filter(|_| crate::request::is_primary(&target.container_id)),
                ipv6: &ipv6,
                host_device: host_device.as_ref().map(|device| {
                    let source = network.host_address.or_else(|| {
                        facts
                            .reserved
                            .iter()
                            .copied()
                            .find(|a| network.subnet().is_some_and(|s| s.contains(*a)))
                    });
                    (device, source)
                }),
                now,
            },
        )
    }
}
