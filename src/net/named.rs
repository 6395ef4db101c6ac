//! Operator-defined networks (`NETWORK=lan`, and the thesis's `TYPE=vlan
//! VLAN=name`): the network's record says the parent, VLAN, subnet, gateway,
//! range and limits; the container says at most which address. Static
//! networks take the requested or lowest free address of the range; DHCP
//! networks hand over to the DHCP driver on the network's device.

use anyhow::{bail, Context as _, Result};

use super::flat::{find_parent, host_addresses};
use super::{Attached, Context, Driver, HostFacts, Rollback, Sockets, Target};
use crate::netlink::Netlink;
use crate::network::{self, Ipam};
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
        let network = network::load(ctx.store()?, &ctx.keys, name).with_context(invalid)?;
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
        if let Some((address, prefix)) = self.named.address {
            let subnet = network.subnet();
            match (network.ipam, subnet) {
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
                .map_err(|e| anyhow::anyhow!("invalid IP/macvlan.ip \"{address}\": {e}"))?;
        }
        effective.check_against_parent(&network.link_parent(), parent.mtu)?;
        Ok(HostFacts {
            parent,
            network: Some(network),
            reserved,
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
        let subnet = network.subnet().expect("static networks have a subnet");
        let mut record =
            super::macvlan::new_record(ctx, target, &request, &device.name, subnet, now);
        record.gateway = network.gateway.map(|g| g.to_string());
        record.vlan = network.vlan.map(|id| VlanRef {
            name: network.name.clone(),
            id,
        });
        let (claim, address) = network::claim(
            ctx.store()?,
            &ctx.keys,
            &target.container_id,
            network,
            self.named.address.map(|(a, _)| a),
            &facts.reserved,
            &record,
        )
        .with_context(|| format!("claim an address on network {}", network.name))?;
        super::macvlan::attach_claimed(
            ctx,
            target,
            &request,
            sockets,
            undo,
            claim,
            super::macvlan::Placement {
                parent: &device,
                address,
                // One default route: the first network's.
                gateway: network.gateway.filter(|_| request.slot == 0),
                host_device: host_device.as_ref().map(|device| {
                    let source = network
                        .host_address
                        .or_else(|| facts.reserved.iter().copied().find(|a| subnet.contains(*a)));
                    (device, source)
                }),
                now,
            },
        )
    }
}
