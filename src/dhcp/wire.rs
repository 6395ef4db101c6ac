//! The client's sockets: UDP port 68 inside the container's namespace, the
//! ARP probe of an offered address, and the throwaway namespace a release
//! is sent from once the container's own namespace is gone.

use std::fs::File;
use std::io;
use std::mem::size_of;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

use crate::cidr::Ipv4Cidr;
use crate::netlink::{MacvlanMode, MacvlanSpec, Netlink};

pub const CLIENT_PORT: u16 = 68;
pub const SERVER_PORT: u16 = 67;

/// Runs `work` on a short-lived thread inside the namespace `netns`:
/// sockets it opens stay in that namespace after the thread ends.
fn in_netns<T: Send + 'static>(
    netns: &File,
    work: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    crate::netns::run_in(netns, "dhcp-netns", work)
}

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn set_int_option(fd: &OwnedFd, level: libc::c_int, name: libc::c_int) -> io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: a valid descriptor and a c_int option value of the right size.
    check(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&one as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

/// A UDP socket on port 68 bound to `ifname`, in the calling thread's
/// namespace. SO_BINDTODEVICE lets it broadcast from an interface that has
/// no address yet; SO_REUSEADDR lets a renewal run while another client
/// socket of ours is open in the same namespace.
fn client_socket(ifname: &str, local: Ipv4Addr) -> io::Result<UdpSocket> {
    // SAFETY: plain socket creation; the descriptor is owned at once.
    let fd = unsafe {
        OwnedFd::from_raw_fd(check(libc::socket(
            libc::AF_INET,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            0,
        ))?)
    };
    set_int_option(&fd, libc::SOL_SOCKET, libc::SO_REUSEADDR)?;
    set_int_option(&fd, libc::SOL_SOCKET, libc::SO_BROADCAST)?;
    // SAFETY: the option value is the interface name's bytes.
    check(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            ifname.as_ptr().cast(),
            ifname.len() as libc::socklen_t,
        )
    })?;
    bind(UdpSocket::from(fd), SocketAddrV4::new(local, CLIENT_PORT))
}

fn bind(socket: UdpSocket, address: SocketAddrV4) -> io::Result<UdpSocket> {
    let raw = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: address.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*address.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: a sockaddr_in of the size given.
    check(unsafe {
        libc::bind(
            socket.as_raw_fd(),
            (&raw as *const libc::sockaddr_in).cast(),
            size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    })?;
    Ok(socket)
}

/// The client's UDP socket inside the container's namespace.
pub fn open_client(netns: &File, ifname: &str) -> Result<UdpSocket> {
    let name = ifname.to_string();
    in_netns(netns, move || client_socket(&name, Ipv4Addr::UNSPECIFIED))
        .with_context(|| format!("open the DHCP client socket (UDP {CLIENT_PORT}) on {ifname}"))
}

/// Sends `payload` to the server, or to everyone on the link.
pub fn send(socket: &UdpSocket, to: Ipv4Addr, payload: &[u8]) -> Result<()> {
    socket
        .send_to(payload, SocketAddrV4::new(to, SERVER_PORT))
        .with_context(|| format!("send to {to}:{SERVER_PORT}"))?;
    Ok(())
}

/// The next datagram before `until`, or `None` when it passes.
pub fn receive(socket: &UdpSocket, until: Instant, buffer: &mut [u8]) -> Result<Option<usize>> {
    let now = Instant::now();
    if now >= until {
        return Ok(None);
    }
    socket.set_read_timeout(Some((until - now).max(Duration::from_millis(1))))?;
    match socket.recv(buffer) {
        Ok(n) => Ok(Some(n)),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e).context("receive a DHCP reply"),
    }
}

const ETH_P_ARP: u16 = 0x0806;

fn link_layer_address(ifindex: u32, to: [u8; 6]) -> libc::sockaddr_ll {
    let mut addr = [0u8; 8];
    addr[..6].copy_from_slice(&to);
    libc::sockaddr_ll {
        sll_family: libc::AF_PACKET as u16,
        sll_protocol: ETH_P_ARP.to_be(),
        sll_ifindex: ifindex as i32,
        sll_hatype: 0,
        sll_pkttype: 0,
        sll_halen: 6,
        sll_addr: addr,
    }
}

/// Asks on the wire whether anyone has `address` (an ARP probe: sender
/// address 0.0.0.0, RFC 5227) and listens for `wait`. `true`: someone
/// answered, the address is in use.
pub fn arp_probe(
    netns: &File,
    ifindex: u32,
    mac: [u8; 6],
    address: Ipv4Addr,
    wait: Duration,
) -> Result<bool> {
    let socket = in_netns(netns, move || {
        // SAFETY: plain socket creation; the descriptor is owned at once.
        let fd = unsafe {
            OwnedFd::from_raw_fd(check(libc::socket(
                libc::AF_PACKET,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                i32::from(ETH_P_ARP.to_be()),
            ))?)
        };
        let local = link_layer_address(ifindex, [0; 6]);
        // SAFETY: a sockaddr_ll of the size given.
        check(unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&local as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        })?;
        // Held as a UdpSocket only for its recv with a timeout; the
        // descriptor is an AF_PACKET socket.
        Ok(UdpSocket::from(fd))
    })
    .context("open an ARP socket")?;

    let mut probe = Vec::with_capacity(28);
    probe.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    probe.extend_from_slice(&mac);
    probe.extend_from_slice(&[0; 4]);
    probe.extend_from_slice(&[0; 6]);
    probe.extend_from_slice(&address.octets());
    let broadcast = link_layer_address(ifindex, [0xff; 6]);
    // SAFETY: sending a buffer to a sockaddr_ll of the size given.
    check(unsafe {
        libc::sendto(
            socket.as_raw_fd(),
            probe.as_ptr().cast(),
            probe.len(),
            0,
            (&broadcast as *const libc::sockaddr_ll).cast(),
            size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        ) as libc::c_int
    })
    .context("send the ARP probe")?;

    let until = Instant::now() + wait;
    let mut buffer = [0u8; 64];
    while let Some(n) = receive(&socket, until, &mut buffer)? {
        if n < 28 || buffer[..6] != [0, 1, 8, 0, 6, 4] {
            continue;
        }
        let sender_mac = &buffer[8..14];
        let sender_ip = Ipv4Addr::new(buffer[14], buffer[15], buffer[16], buffer[17]);
        // A reply from the address's holder, or another host announcing it.
        if sender_ip == address && sender_mac != mac {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Sends `payload` (a RELEASE) from `address` to `server` out of a
/// throwaway namespace with a macvlan of its own on `parent_index`: after
/// a container stops its namespace is gone, yet the server still needs the
/// release from the leased address. The namespace and its macvlan vanish
/// with the thread.
pub fn send_from_throwaway(
    parent_index: u32,
    address: Ipv4Cidr,
    router: Option<Ipv4Addr>,
    server: Ipv4Addr,
    payload: Vec<u8>,
) -> Result<()> {
    std::thread::Builder::new()
        .name("dhcp-release".into())
        .spawn(move || -> Result<()> {
            let name = "dhcprel0";
            // Any MAC will do: servers match the release by client id and
            // chaddr inside the message, not by the frame's source.
            let (mut inner, link) = enter_throwaway(parent_index, name, 0x5a, None)?;
            inner.set_up(link.index)?;
            release_here(&mut inner, &link, name, address, router, server, &payload)
        })
        .context("start the release thread")?
        .join()
        .map_err(|_| anyhow::anyhow!("release thread panicked"))?
}

/// Inside a throwaway namespace holding `link` (up): puts `address` on it
/// and sends the RELEASE `payload` to `server`, waiting until it has left.
fn release_here(
    inner: &mut Netlink,
    link: &crate::netlink::Link,
    name: &str,
    address: Ipv4Cidr,
    router: Option<Ipv4Addr>,
    server: Ipv4Addr,
    payload: &[u8],
) -> Result<()> {
    // On an ipvlan parent an address belongs to one device: the stopped
    // container's may still hold it.
    crate::netlink::retry_while_in_use(crate::netlink::TEARDOWN_WAIT, || {
        inner.add_ipv4_address(link.index, address.address, address.prefix)
    })?;
    let next_hop = if address.contains(server) {
        server
    } else if let Some(router) = router {
        inner.replace_default_route(link.index, router)?;
        router
    } else {
        bail!("server {server} is off-link and the lease names no router");
    };
    let socket = client_socket(name, address.address)?;
    send(&socket, server, payload)?;
    // The datagram waits in the neighbour queue until the server's MAC is
    // known; ending the thread now would drop it with the namespace.
    let until = Instant::now() + Duration::from_secs(1);
    while Instant::now() < until && !neighbour_known(next_hop) {
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// Gives back a lease the store never recorded (a hook killed between the
/// server's ACK and its record): from a throwaway namespace, a DISCOVER
/// with the container's client identity — the server offers the address
/// it holds for that client — then a RELEASE of the offer. Returns the
/// address released; `None` when no server answered within `wait` (then
/// the server holds nothing, or its lease runs out by itself).
pub fn release_unrecorded(
    parent_index: u32,
    identity: super::packet::ClientIdentity,
    wait: Duration,
) -> Result<Option<Ipv4Addr>> {
    std::thread::Builder::new()
        .name("dhcp-release".into())
        .spawn(move || -> Result<Option<Ipv4Addr>> {
            let name = "dhcprel1";
            let (mut inner, link) = enter_throwaway(parent_index, name, 0x5b, None)?;
            inner.set_up(link.index)?;
            let socket = client_socket(name, Ipv4Addr::UNSPECIFIED)?;
            let xid = super::client::random_xid();
            let discover = super::packet::discover(xid, &identity, None);
            let deadline = Instant::now() + wait;
            let mut buffer = vec![0u8; 1500];
            let mut offer = None;
            'asking: while Instant::now() < deadline {
                send(&socket, Ipv4Addr::BROADCAST, &discover)?;
                let until = (Instant::now() + Duration::from_millis(500)).min(deadline);
                while let Some(n) = receive(&socket, until, &mut buffer)? {
                    if let Some(reply) =
                        super::packet::parse_reply(&buffer[..n], xid, &identity.mac)
                    {
                        if reply.kind == super::packet::ReplyKind::Offer {
                            offer = Some(reply);
                            break 'asking;
                        }
                    }
                }
            }
            let Some(offer) = offer else { return Ok(None) };
            drop(socket);
            let address = Ipv4Cidr {
                address: offer.address,
                prefix: offer.prefix,
            };
            let payload = super::packet::release(xid, &identity, offer.address, offer.server);
            release_here(
                &mut inner,
                &link,
                name,
                address,
                offer.router,
                offer.server,
                &payload,
            )?;
            Ok(Some(offer.address))
        })
        .context("start the release thread")?
        .join()
        .map_err(|_| anyhow::anyhow!("release thread panicked"))?
}

/// Moves the calling thread (a short-lived one) into a new network
/// namespace holding `name`, a macvlan of the parent — or an ipvlan, where
/// the parent carries ipvlans, which exclude macvlans — with a MAC of its
/// own (`salt` tells the callers' apart), after writing `sysctl` (a
/// per-interface IPv6 knob and its value) for it before it is up.
/// Returns a netlink socket there and the link, still down.
pub(super) fn enter_throwaway(
    parent_index: u32,
    name: &str,
    salt: u8,
    sysctl: Option<(&str, &str)>,
) -> Result<(Netlink, crate::netlink::Link)> {
    let mut host = Netlink::open().context("open netlink socket")?;
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
        .context("create a throwaway network namespace")?;
    let own = File::open("/proc/thread-self/ns/net").context("open the throwaway namespace")?;
    let mut mac = crate::net::stable_mac(&format!("release-{}", std::process::id()));
    mac[5] ^= salt;
    match host.create_macvlan(&MacvlanSpec {
        name,
        parent_index,
        mode: MacvlanMode::Bridge,
        mac: Some(mac),
        mtu: None,
        netns: Some(&own),
    }) {
        Err(e) if e.errno() == Some(libc::EBUSY) => host
            .create_ipvlan(&crate::netlink::IpvlanSpec {
                name,
                parent_index,
                mode: crate::netlink::IpvlanMode::L2,
                flag: crate::netlink::IpvlanFlag::Bridge,
                mtu: None,
                netns: Some(&own),
            })
            .context("create an ipvlan in the throwaway namespace")?,
        other => other.context("create a macvlan in the throwaway namespace")?,
    }
    if let Some((knob, value)) = sysctl {
        std::fs::write(format!("/proc/sys/net/ipv6/conf/{name}/{knob}"), value)
            .with_context(|| format!("set {knob} on the throwaway interface"))?;
    }
    let mut inner = Netlink::open().context("open netlink socket")?;
    let link = inner
        .link_by_name(name)?
        .context("the throwaway interface vanished")?;
    Ok((inner, link))
}

/// Whether the calling thread's namespace has resolved `address`.
fn neighbour_known(address: Ipv4Addr) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/thread-self/net/arp") else {
        return false;
    };
    let wanted = address.to_string();
    table.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.first() == Some(&wanted.as_str()) && fields.get(2) == Some(&"0x2")
    })
}
