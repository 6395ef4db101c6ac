//! The DHCPv6 client's sockets: UDP port 546 inside the container's
//! namespace, sending to All_DHCP_Relay_Agents_and_Servers (ff02::1:2) on
//! the interface, and the throwaway namespace a RELEASE is sent from once
//! the container's own namespace is gone.

use std::fs::File;
use std::io;
use std::net::{Ipv6Addr, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};

pub const CLIENT_PORT: u16 = 546;
pub const SERVER_PORT: u16 = 547;
/// All_DHCP_Relay_Agents_and_Servers (RFC 8415 §7.1).
pub const SERVERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 1, 2);

fn bind_to_device(socket: &UdpSocket, ifname: &str) -> io::Result<()> {
    // SAFETY: a valid descriptor and a name buffer of the stated length.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            ifname.as_ptr().cast(),
            ifname.len() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A client socket on `ifname` in the calling thread's namespace.
fn client_socket(ifname: &str) -> io::Result<UdpSocket> {
    let socket = UdpSocket::bind(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, CLIENT_PORT, 0, 0))?;
    bind_to_device(&socket, ifname)?;
    Ok(socket)
}

/// The client socket on the container's interface `ifname`.
pub fn open_client(netns: &File, ifname: &str) -> Result<UdpSocket> {
    let name = ifname.to_string();
    crate::netns::run_in(netns, "dhcp6-netns", move || client_socket(&name))
        .with_context(|| format!("open the DHCPv6 client socket (UDP {CLIENT_PORT}) on {ifname}"))
}

/// Sends `payload` to the servers on link `index`. A link-local address
/// still in DAD (without optimistic DAD) cannot be a source yet: that is
/// retried for a moment.
pub fn send(socket: &UdpSocket, index: u32, payload: &[u8]) -> Result<()> {
    let to = SocketAddrV6::new(SERVERS, SERVER_PORT, 0, index);
    let until = Instant::now() + Duration::from_millis(1500);
    loop {
        match socket.send_to(payload, to) {
            Ok(_) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) && Instant::now() < until => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e).with_context(|| format!("send to [{SERVERS}]:{SERVER_PORT}")),
        }
    }
}

/// Sends a RELEASE from a throwaway namespace with a macvlan of its own on
/// the parent (the container's namespace is gone at poststop), waiting at
/// most a second for the server's REPLY.
pub fn release_from_throwaway(parent_index: u32, payload: Vec<u8>) -> Result<()> {
    std::thread::Builder::new()
        .name("dhcp6-release".into())
        .spawn(move || -> Result<()> {
            let name = "dhcp6rel0";
            // Any MAC will do: the server knows the client by its DUID.
            // Its link-local address is a source at once, without DAD.
            let (mut inner, link) =
                super::wire::enter_throwaway(parent_index, name, 0xa5, Some(("accept_dad", "0")))?;
            inner.set_up(link.index)?;
            let socket = client_socket(name)?;
            send(&socket, link.index, &payload)?;
            let mut buffer = [0u8; 1500];
            let _ = super::wire::receive(
                &socket,
                Instant::now() + Duration::from_secs(1),
                &mut buffer,
            );
            Ok(())
        })
        .context("start the release thread")?
        .join()
        .map_err(|_| anyhow::anyhow!("release thread panicked"))?
}
