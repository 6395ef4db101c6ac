//! A container interface's IPv6 side and its announcements: the
//! per-interface sysctls written inside the container's namespace before
//! the link goes up (so no router advertisement is taken that the network
//! did not ask for), static addresses without DAD's wait, and SLAAC's
//! bounded wait for a usable address and a default route.

use std::fs::File;
use std::io;
use std::net::Ipv6Addr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

use crate::cidr::Ipv6Cidr;
use crate::netlink::Netlink;

/// What the interface's IPv6 side is to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// IPv6 disabled on the interface: not even a link-local address.
    Off,
    /// A fixed address from the store; router advertisements ignored.
    Static {
        address: Ipv6Cidr,
        gateway: Option<Ipv6Addr>,
    },
    /// The router's prefix and the interface's EUI-64 identifier; the
    /// default route from the advertisement.
    Slaac { wait: Duration },
    /// A DHCPv6 lease, its address under `prefix` (the network's IPv6
    /// prefix length, else 128); advertisements accepted for routes only.
    Dhcpv6 { prefix: u8 },
}

impl Plan {
    /// (accept_ra, autoconf): 2 accepts advertisements even where the
    /// namespace forwards (ip-sysctl.rst).
    fn router_advertisements(&self) -> (u8, u8) {
        match self {
            Plan::Off | Plan::Static { .. } => (0, 0),
            Plan::Slaac { .. } => (2, 1),
            Plan::Dhcpv6 { .. } => (2, 0),
        }
    }
}

/// What [`prepare`] found worth saying.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Prepared {
    /// The namespace had IPv6 disabled (by the engine, say): it was
    /// enabled on this interface only.
    pub reenabled: bool,
}

fn write(path: &str, value: &str) -> io::Result<()> {
    std::fs::write(path, value).map_err(|e| io::Error::new(e.kind(), format!("write {path}: {e}")))
}

/// Sets interface `ifname`'s IPv6 sysctls (and IPv4's `arp_notify`) from a
/// thread inside the container's namespace — never the host's — before the
/// link is up: disabled for `Off`; else enabled (also where the namespace
/// disabled IPv6), router advertisements as the plan says, and both
/// families announcing the interface's addresses when it comes up (a
/// gratuitous ARP per `arp_notify`, an unsolicited neighbour advertisement
/// per `ndisc_notify`, ip-sysctl.rst) so neighbours learn the MAC at once.
pub fn prepare(netns: &File, ifname: &str, plan: &Plan) -> Result<Prepared> {
    let name = ifname.to_string();
    let plan = plan.clone();
    let on = plan != Plan::Off;
    let prepared = crate::netns::on_this_thread(netns, move || -> io::Result<Prepared> {
        let ifname = name;
        write(&format!("/proc/sys/net/ipv4/conf/{ifname}/arp_notify"), "1")?;
        let conf = format!("/proc/sys/net/ipv6/conf/{ifname}");
        if !std::path::Path::new("/proc/sys/net/ipv6").exists() {
            return if on {
                Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "this kernel has no IPv6 (booted with ipv6.disable=1?)",
                ))
            } else {
                Ok(Prepared::default())
            };
        }
        if !on {
            write(&format!("{conf}/disable_ipv6"), "1")?;
            return Ok(Prepared::default());
        }
        let (accept_ra, autoconf) = plan.router_advertisements();
        write(&format!("{conf}/accept_ra"), &accept_ra.to_string())?;
        write(&format!("{conf}/autoconf"), &autoconf.to_string())?;
        // Addresses DAD checks (the link-local one, SLAAC's) usable while
        // it runs (RFC 4429), where the kernel has CONFIG_IPV6_OPTIMISTIC_DAD:
        // the container starts without waiting DAD's second.
        if accept_ra > 0 && std::path::Path::new(&format!("{conf}/optimistic_dad")).exists() {
            write(&format!("{conf}/optimistic_dad"), "1")?;
            write(&format!("{conf}/use_optimistic"), "1")?;
        }
        write(&format!("{conf}/ndisc_notify"), "1")?;
        let disabled = std::fs::read_to_string(format!("{conf}/disable_ipv6"))?;
        let reenabled = disabled.trim() == "1";
        if reenabled {
            write(&format!("{conf}/disable_ipv6"), "0")?;
        }
        Ok(Prepared { reenabled })
    });
    prepared
        .and_then(|result| result)
        .with_context(|| format!("set {ifname}'s IPv6 sysctls inside the container's namespace"))
}

/// Waits until link `index` has a usable global address from a router
/// advertisement and an IPv6 default route, at most `wait`.
pub fn wait_for_slaac(
    container: &mut Netlink,
    index: u32,
    ifname: &str,
    wait: Duration,
) -> Result<(Ipv6Cidr, Ipv6Addr)> {
    let deadline = Instant::now() + wait;
    loop {
        let address = container
            .ipv6_addresses(index)
            .context("list the interface's IPv6 addresses")?
            .into_iter()
            .find(|a| a.usable && !crate::cidr::is_ipv6_link_local(a.address));
        let gateway = container
            .default_gateway6(index)
            .context("read the IPv6 default route")?;

        if let (Some(address), Some(gateway)) = (address, gateway) {
            return Ok((
                Ipv6Cidr {
                    address: address.address,
                    prefix: address.prefix,
                },
                gateway,
            ));
        }
        if Instant::now() >= deadline {
            bail!(
                "no IPv6 address from a router advertisement on {ifname} within {}s ({}); is a router advertising a prefix on the network? ([ipv6] slaac_wait_secs sets the wait)",
                wait.as_secs(),
                match (address, gateway) {
                    (None, None) => "neither an address nor a default route",
                    (None, Some(_)) => "a default route but no address (does the prefix allow autonomous configuration?)",
                    _ => "an address but no default route (is the router's lifetime 0?)",
                }
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The unsolicited neighbour advertisement of `target` (RFC 4861 §7.2.6):
/// ICMPv6 type 136, Override set, with the target link-layer address
/// option. The kernel fills in the checksum of raw ICMPv6 sockets.
pub fn neighbour_advertisement(target: Ipv6Addr, mac: [u8; 6]) -> [u8; 32] {
    let mut packet = [0u8; 32];
    packet[0] = 136;
    // Flags R S O: only O (override the cached link-layer address).
    packet[4] = 0x20;
    packet[8..24].copy_from_slice(&target.octets());
    // Option 2 (target link-layer address), length 1 (8 bytes).
    packet[24] = 2;
    packet[25] = 1;
    packet[26..32].copy_from_slice(&mac);
    packet
}

/// Sends one unsolicited neighbour advertisement per address to all nodes
/// on link `index`, from inside the container's namespace, so neighbours
/// (and switches) learn the MAC at once — after a restart or a move to
/// another host. The kernel announces addresses that went through DAD
/// itself (`ndisc_notify`), but not those added without it (IFA_F_NODAD).
pub fn announce(netns: &File, index: u32, mac: [u8; 6], addresses: Vec<Ipv6Addr>) -> Result<()> {
    let packets = addresses
        .into_iter()
        .map(|a| neighbour_advertisement(a, mac).to_vec())
        .collect();
    send_icmpv6(
        netns,
        index,
        Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1),
        packets,
    )
    .context("send an unsolicited neighbour advertisement")
}

/// Asks the link's routers for an advertisement at once (RFC 4861 §6.3.7),
/// instead of waiting for the kernel's own solicitation, which follows the
/// link-local address's DAD second.
pub fn solicit_router(netns: &File, index: u32) -> Result<()> {
    // Type 133, code 0, checksum (the kernel's), 4 reserved bytes; no
    // source link-layer option, which an unspecified source may not carry.
    let solicitation = vec![133, 0, 0, 0, 0, 0, 0, 0];
    send_icmpv6(
        netns,
        index,
        Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2),
        vec![solicitation],
    )
    .context("send a router solicitation")
}

/// Sends ICMPv6 `packets` to the multicast group `to` on link `index`,
/// with the hop limit 255 neighbour discovery requires, from a raw socket
/// opened inside the container's namespace.
fn send_icmpv6(netns: &File, index: u32, to: Ipv6Addr, packets: Vec<Vec<u8>>) -> io::Result<()> {
    crate::netns::run_in(netns, "icmpv6", move || {
        // SAFETY: plain socket call; the descriptor is owned below.
        let fd = unsafe {
            libc::socket(
                libc::AF_INET6,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::IPPROTO_ICMPV6,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor nothing else owns.
        let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
        let set = |name: libc::c_int, value: libc::c_int| -> io::Result<()> {
            // SAFETY: a c_int option of the right size on a valid descriptor.
            let rc = unsafe {
                libc::setsockopt(
                    raw,
                    libc::IPPROTO_IPV6,
                    name,
                    (&value as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if rc < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(())
            }
        };
        set(libc::IPV6_MULTICAST_HOPS, 255)?;
        set(libc::IPV6_MULTICAST_IF, index as libc::c_int)?;
        let destination = libc::sockaddr_in6 {
            sin6_family: libc::AF_INET6 as libc::sa_family_t,
            sin6_port: 0,
            sin6_flowinfo: 0,
            sin6_addr: libc::in6_addr {
                s6_addr: to.octets(),
            },
            sin6_scope_id: index,
        };
        for packet in packets {
            // SAFETY: valid buffer and socket address of the stated sizes.
            let sent = unsafe {
                libc::sendto(
                    raw,
                    packet.as_ptr().cast(),
                    packet.len(),
                    0,
                    (&destination as *const libc::sockaddr_in6).cast(),
                    std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                )
            };
            if sent < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertisement_overrides_and_carries_the_mac() {
        let target: Ipv6Addr = "2001:db8::a".parse().unwrap();
        let mac = [0x02, 1, 2, 3, 4, 5];
        let na = neighbour_advertisement(target, mac);
        assert_eq!((na[0], na[1]), (136, 0));
        assert_eq!(na[4], 0x20, "override only: not solicited, not a router");
        assert_eq!(&na[8..24], &target.octets());
        assert_eq!((na[24], na[25]), (2, 1));
        assert_eq!(&na[26..], &mac);
    }

    #[test]
    fn router_advertisements_per_plan() {
        assert_eq!(Plan::Off.router_advertisements(), (0, 0));
        let address = "2001:db8::a/64".parse().unwrap();
        assert_eq!(
            Plan::Static {
                address,
                gateway: None
            }
            .router_advertisements(),
            (0, 0)
        );
        assert_eq!(
            Plan::Slaac {
                wait: Duration::from_secs(1)
            }
            .router_advertisements(),
            (2, 1)
        );
        assert_eq!(Plan::Dhcpv6 { prefix: 128 }.router_advertisements(), (2, 0));
    }
}
