//! The only place that talks rtnetlink: links, addresses and routes, over a
//! synchronous NETLINK_ROUTE socket bound to one network namespace.
//!
//! A netlink socket stays in the namespace it was created in, so a socket for
//! a container is opened by a short-lived thread that entered the container's
//! netns (see [`Netlink::open_in_netns`]); the calling thread never changes
//! namespace.

use std::fs::File;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::path::Path;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL,
    NLM_F_REPLACE, NLM_F_REQUEST,
};
use netlink_packet_core::{Nla, NlasIterator};
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressScope, CacheInfo,
};
use netlink_packet_route::link::{
    InfoData, InfoIpVlan, InfoKind, InfoMacVlan, InfoVeth, InfoVlan, InfoVrf, IpVlanFlags,
    IpVlanMode, LinkAttribute, LinkFlags, LinkInfo, LinkMessage, MacVlanMode,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::tc::{
    TcAction, TcActionAttribute, TcActionMirrorOption, TcActionOption, TcActionType, TcAttribute,
    TcFilterU32Option, TcHandle, TcMessage, TcMirror, TcMirrorActionType, TcOption, TcU32Key,
    TcU32Selector, TcU32SelectorFlags,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

pub mod tbf;

/// What went wrong talking to the kernel. The kernel's own errno is kept, so
/// callers can tell "exists" from "no such device" from "not permitted".
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("netlink error: {0}")]
    Kernel(io::Error),
    #[error("netlink socket: {0}")]
    Socket(io::Error),
    #[error("cannot enter network namespace {path}: {source}")]
    EnterNetns { path: String, source: io::Error },
    #[error("malformed netlink reply: {0}")]
    Decode(String),
}

impl NetlinkError {
    /// The kernel's errno, when the kernel refused the request.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetlinkError::Kernel(e) => e.raw_os_error(),
            _ => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, NetlinkError>;

/// How long to wait for what a namespace being dismantled still holds.
pub const TEARDOWN_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Runs `op` again while it fails with EADDRINUSE, for at most `wait`. The
/// kernel frees a stopped container's namespace from a workqueue, after the
/// engine has moved on: until then its devices still hold their MAC (which
/// macvlan will not bring up twice on one parent) and their addresses
/// (which ipvlan will not give two of its devices).
pub fn retry_while_in_use<T>(
    wait: std::time::Duration,
    mut op: impl FnMut() -> Result<T>,
) -> Result<T> {
    let started = std::time::Instant::now();
    loop {
        match op() {
            Err(e) if e.errno() == Some(libc::EADDRINUSE) && started.elapsed() < wait => {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            other => return other,
        }
    }
}

/// A network interface as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mtu: u32,
    pub mac: Option<[u8; 6]>,
    /// `IFLA_INFO_KIND`: "macvlan", "veth", "bridge"…; `None` for physical devices.
    pub kind: Option<String>,
    /// `IFLA_LINK`: the parent's index, for stacked devices such as macvlan.
    pub parent_index: Option<u32>,
    pub up: bool,
    /// The 802.1Q ID, for VLAN devices.
    pub vlan_id: Option<u16>,
    /// `IFLA_MASTER`: the VRF or bridge the link is enslaved to.
    pub controller: Option<u32>,
}

/// The macvlan modes of `ip-link(8)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MacvlanMode {
    Bridge,
    Private,
    Vepa,
    Passthru,
}

impl MacvlanMode {
    pub fn as_str(self) -> &'static str {
        match self {
            MacvlanMode::Bridge => "bridge",
            MacvlanMode::Private => "private",
            MacvlanMode::Vepa => "vepa",
            MacvlanMode::Passthru => "passthru",
        }
    }

    fn to_kernel(self) -> MacVlanMode {
        match self {
            MacvlanMode::Bridge => MacVlanMode::Bridge,
            MacvlanMode::Private => MacVlanMode::Private,
            MacvlanMode::Vepa => MacVlanMode::Vepa,
            MacvlanMode::Passthru => MacVlanMode::Passthrough,
        }
    }
}

/// The ipvlan modes of `ip-link(8)`: L2 (the slaves share the parent's
/// MAC and do ARP), L3 (routed, no ARP, no broadcast), L3S (L3 through
/// netfilter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IpvlanMode {
    L2,
    L3,
    L3s,
}

impl IpvlanMode {
    pub fn as_str(self) -> &'static str {
        match self {
            IpvlanMode::L2 => "l2",
            IpvlanMode::L3 => "l3",
            IpvlanMode::L3s => "l3s",
        }
    }
}

/// ipvlan's flags: how slaves of one parent reach each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum IpvlanFlag {
    #[default]
    Bridge,
    Private,
    Vepa,
}

impl IpvlanFlag {
    pub fn as_str(self) -> &'static str {
        match self {
            IpvlanFlag::Bridge => "bridge",
            IpvlanFlag::Private => "private",
            IpvlanFlag::Vepa => "vepa",
        }
    }
}

/// Everything needed to create one ipvlan device (its MAC is the parent's).
#[derive(Debug, Clone)]
pub struct IpvlanSpec<'a> {
    pub name: &'a str,
    pub parent_index: u32,
    pub mode: IpvlanMode,
    pub flag: IpvlanFlag,
    pub mtu: Option<u32>,
    /// Create the device directly inside this network namespace.
    pub netns: Option<&'a File>,
}

/// Everything needed to create one macvlan device.
#[derive(Debug, Clone)]
pub struct MacvlanSpec<'a> {
    pub name: &'a str,
    pub parent_index: u32,
    pub mode: MacvlanMode,
    /// `None` leaves the kernel's random MAC (required for passthru, where
    /// setting the address would change the parent's).
    pub mac: Option<[u8; 6]>,
    pub mtu: Option<u32>,
    /// Create the device directly inside this network namespace (an open
    /// `/proc/<pid>/ns/net`), as `ip link add … netns NS` does.
    pub netns: Option<&'a File>,
}

/// A NETLINK_ROUTE socket bound to the network namespace it was opened in.
/// One IPv6 address of a link, as the kernel reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Address {
    pub address: Ipv6Addr,
    pub prefix: u8,
    /// Not tentative (Duplicate Address Detection done) and not failed.
    pub usable: bool,
}

pub struct Netlink {
    socket: Socket,
    sequence: u32,
    buffer: Vec<u8>,
}

impl Netlink {
    /// A socket in the calling thread's network namespace.
    pub fn open() -> Result<Self> {
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(NetlinkError::Socket)?;
        socket.bind_auto().map_err(NetlinkError::Socket)?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(NetlinkError::Socket)?;
        // Ask for extended acks: harmless if unsupported.
        let _ = socket.set_ext_ack(true);
        Ok(Netlink {
            socket,
            sequence: 0,
            buffer: vec![0; 64 * 1024],
        })
    }

    /// A socket inside the network namespace at `netns_path` (for example
    /// `/proc/<pid>/ns/net`).
    pub fn open_in_netns(netns_path: &Path) -> Result<Self> {
        let file = File::open(netns_path).map_err(|source| NetlinkError::EnterNetns {
            path: netns_path.display().to_string(),
            source,
        })?;
        Netlink::open_in_netns_file(&file, &netns_path.display().to_string())
    }

    /// A socket inside the network namespace `netns` (an open namespace
    /// file, named `path` in errors). A throwaway thread enters the
    /// namespace, opens the socket and exits; the socket keeps pointing at
    /// that namespace.
    pub fn open_in_netns_file(netns: &File, path: &str) -> Result<Self> {
        let path = path.to_string();
        let file = netns
            .try_clone()
            .map_err(|source| NetlinkError::EnterNetns {
                path: path.clone(),
                source,
            })?;
        std::thread::Builder::new()
            .name("netns".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(
                    |errno| NetlinkError::EnterNetns {
                        path,
                        source: io::Error::from_raw_os_error(errno as i32),
                    },
                )?;
                Netlink::open()
            })
            .map_err(NetlinkError::Socket)?
            .join()
            .map_err(|_| NetlinkError::Socket(io::Error::other("netns thread panicked")))?
    }

    /// Sends one request and collects the replies: every message of a dump,
    /// or nothing but the ack of a change.
    fn request(
        &mut self,
        message: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>> {
        self.sequence = self.sequence.wrapping_add(1);
        let sequence = self.sequence;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = sequence;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(message));
        packet.finalize();
        let mut out = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut out);
        self.socket.send(&out, 0).map_err(NetlinkError::Socket)?;

        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let mut replies = Vec::new();
        loop {
            let size = self
                .socket
                .recv(&mut &mut self.buffer[..], 0)
                .map_err(NetlinkError::Socket)?;
            let mut offset = 0;
            while offset < size {
                let bytes = &self.buffer[offset..size];
                let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(bytes)
                    .map_err(|e| NetlinkError::Decode(e.to_string()))?;
                let length = reply.header.length as usize;
                if length == 0 {
                    return Err(NetlinkError::Decode("zero-length message".into()));
                }
                offset += (length + 3) & !3;
                if reply.header.sequence_number != sequence {
                    continue;
                }
                match reply.payload {
                    NetlinkPayload::Error(error) => {
                        return match error.code {
                            Some(code) => Err(NetlinkError::Kernel(io::Error::from_raw_os_error(
                                -code.get(),
                            ))),
                            None => Ok(replies),
                        };
                    }
                    NetlinkPayload::Done(_) => return Ok(replies),
                    NetlinkPayload::InnerMessage(inner) => {
                        replies.push(inner);
                        if !dump {
                            return Ok(replies);
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// All links of this namespace.
    pub fn links(&mut self) -> Result<Vec<Link>> {
        let replies = self.request(
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            NLM_F_DUMP,
        )?;
        Ok(replies
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(link) => Some(parse_link(&link)),
                _ => None,
            })
            .collect())
    }

    /// The link called `name` in this namespace, if there is one.
    pub fn link_by_name(&mut self, name: &str) -> Result<Option<Link>> {
        let mut message = LinkMessage::default();
        message
            .attributes
            .push(LinkAttribute::IfName(name.to_string()));
        self.get_link(message)
    }

    fn get_link(&mut self, query: LinkMessage) -> Result<Option<Link>> {
        match self.request(RouteNetlinkMessage::GetLink(query), 0) {
            Ok(replies) => Ok(replies.into_iter().find_map(|m| match m {
                RouteNetlinkMessage::NewLink(link) => Some(parse_link(&link)),
                _ => None,
            })),
            Err(e) if e.errno() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates a macvlan device on `spec.parent_index` (which lives in *this*
    /// socket's namespace). With `spec.netns` the device is born inside that
    /// namespace under its final name: nothing is ever visible on the host.
    pub fn create_macvlan(&mut self, spec: &MacvlanSpec<'_>) -> Result<()> {
        let mut message = LinkMessage::default();
        let attributes = &mut message.attributes;
        attributes.push(LinkAttribute::IfName(spec.name.to_string()));
        attributes.push(LinkAttribute::Link(spec.parent_index));
        if let Some(mac) = spec.mac {
            attributes.push(LinkAttribute::Address(mac.to_vec()));
        }
        if let Some(mtu) = spec.mtu {
            attributes.push(LinkAttribute::Mtu(mtu));
        }
        if let Some(netns) = spec.netns {
            attributes.push(LinkAttribute::NetNsFd(netns.as_raw_fd()));
        }
        attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::MacVlan),
            LinkInfo::Data(InfoData::MacVlan(vec![InfoMacVlan::Mode(
                spec.mode.to_kernel(),
            )])),
        ]));
        self.request(
            RouteNetlinkMessage::NewLink(message),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )?;
        Ok(())
    }

    /// Creates an ipvlan device on `spec.parent_index` (in this socket's
    /// namespace), inside `spec.netns` when given, as `create_macvlan` does.
    pub fn create_ipvlan(&mut self, spec: &IpvlanSpec<'_>) -> Result<()> {
        let mut message = LinkMessage::default();
        let attributes = &mut message.attributes;
        attributes.push(LinkAttribute::IfName(spec.name.to_string()));
        attributes.push(LinkAttribute::Link(spec.parent_index));
        if let Some(mtu) = spec.mtu {
            attributes.push(LinkAttribute::Mtu(mtu));
        }
        if let Some(netns) = spec.netns {
            attributes.push(LinkAttribute::NetNsFd(netns.as_raw_fd()));
        }
        let mode = match spec.mode {
            IpvlanMode::L2 => IpVlanMode::L2,
            IpvlanMode::L3 => IpVlanMode::L3,
            IpvlanMode::L3s => IpVlanMode::L3S,
        };
        let flags = match spec.flag {
            IpvlanFlag::Bridge => IpVlanFlags::empty(),
            IpvlanFlag::Private => IpVlanFlags::Private,
            IpvlanFlag::Vepa => IpVlanFlags::Vepa,
        };
        attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::IpVlan),
            LinkInfo::Data(InfoData::IpVlan(vec![
                InfoIpVlan::Mode(mode),
                InfoIpVlan::Flags(flags),
            ])),
        ]));
        self.request(
            RouteNetlinkMessage::NewLink(message),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )?;
        Ok(())
    }

    /// Creates the 802.1Q sub-interface `name` with `id` on `parent_index`
    /// in this namespace (`ip link add link IF name IF.ID type vlan id ID`).
    pub fn create_vlan(&mut self, name: &str, parent_index: u32, id: u16) -> Result<()> {
        let mut message = LinkMessage::default();
        message
            .attributes
            .push(LinkAttribute::IfName(name.to_string()));
        message.attributes.push(LinkAttribute::Link(parent_index));
        message.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Vlan),
            LinkInfo::Data(InfoData::Vlan(vec![InfoVlan::Id(id)])),
        ]));
        self.request(
            RouteNetlinkMessage::NewLink(message),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )?;
        Ok(())
    }

    /// Creates a veth pair `name` / `peer` in this namespace (`macvlan
    /// doctor` needs an Ethernet device to try things on).
    pub fn create_veth(&mut self, name: &str, peer: &str) -> Result<()> {
        let mut peer_message = LinkMessage::default();
        peer_message
            .attributes
            .push(LinkAttribute::IfName(peer.to_string()));
        let mut message = LinkMessage::default();
        message.attributes = vec![
            LinkAttribute::IfName(name.to_string()),
            LinkAttribute::LinkInfo(vec![
                LinkInfo::Kind(InfoKind::Veth),
                LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer_message))),
            ]),
        ];
        self.request(
            RouteNetlinkMessage::NewLink(message),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )?;
        Ok(())
    }

    /// Creates a VRF device `name` bound to routing table `table`.
    pub fn create_vrf(&mut self, name: &str, table: u32) -> Result<()> {
        let mut message = LinkMessage::default();
        message.attributes = vec![
            LinkAttribute::IfName(name.to_string()),
            LinkAttribute::LinkInfo(vec![
                LinkInfo::Kind(InfoKind::Vrf),
                LinkInfo::Data(InfoData::Vrf(vec![InfoVrf::TableId(table)])),
            ]),
        ];
        self.request(
            RouteNetlinkMessage::NewLink(message),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )?;
        Ok(())
    }

    /// Makes `controller` (a VRF or bridge) the master of link `index`.
    pub fn set_controller(&mut self, index: u32, controller: u32) -> Result<()> {
        let mut message = LinkMessage::default();
        message.header.index = index;
        message
            .attributes
            .push(LinkAttribute::Controller(controller));
        self.request(RouteNetlinkMessage::SetLink(message), NLM_F_ACK)?;
        Ok(())
    }

    /// Sets a link up.
    pub fn set_up(&mut self, index: u32) -> Result<()> {
        let mut message = LinkMessage::default();
        message.header.index = index;
        message.header.flags = LinkFlags::Up;
        message.header.change_mask = LinkFlags::Up;
        self.request(RouteNetlinkMessage::SetLink(message), NLM_F_ACK)?;
        Ok(())
    }

    /// Deletes a link.
    pub fn delete_link(&mut self, index: u32) -> Result<()> {
        let mut message = LinkMessage::default();
        message.header.index = index;
        self.request(RouteNetlinkMessage::DelLink(message), NLM_F_ACK)?;
        Ok(())
    }

    /// Adds (or re-adds) an IPv4 address with its broadcast address.
    pub fn add_ipv4_address(&mut self, index: u32, address: Ipv4Addr, prefix: u8) -> Result<()> {
        self.put_ipv4_address(index, address, prefix, None)
    }

    /// Adds an IPv4 address the kernel removes by itself after `valid_for`
    /// seconds (a DHCP lease: if nobody renews it, the container stops
    /// using it when the server may give it to someone else). Re-adding an
    /// address that is there updates its lifetime.
    pub fn add_ipv4_address_until(
        &mut self,
        index: u32,
        address: Ipv4Addr,
        prefix: u8,
        valid_for: u32,
    ) -> Result<()> {
        self.put_ipv4_address(index, address, prefix, Some(valid_for))
    }

    fn put_ipv4_address(
        &mut self,
        index: u32,
        address: Ipv4Addr,
        prefix: u8,
        valid_for: Option<u32>,
    ) -> Result<()> {
        let mut message = AddressMessage::default();
        message.header.family = AddressFamily::Inet;
        message.header.prefix_len = prefix;
        message.header.scope = AddressScope::Universe;
        message.header.index = index;
        let host_mask = if prefix >= 32 { 0 } else { u32::MAX >> prefix };
        let broadcast = Ipv4Addr::from(u32::from(address) | host_mask);
        message.attributes = vec![
            AddressAttribute::Local(address.into()),
            AddressAttribute::Address(address.into()),
            AddressAttribute::Broadcast(broadcast),
        ];
        if let Some(valid) = valid_for {
            message.attributes.push(lifetimes(valid, valid));
        }
        self.request(
            RouteNetlinkMessage::NewAddress(message),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
        )?;
        Ok(())
    }

    /// The IPv4 addresses of link `index`.
    pub fn ipv4_addresses(&mut self, index: u32) -> Result<Vec<Ipv4Addr>> {
        let mut query = AddressMessage::default();
        query.header.family = AddressFamily::Inet;
        let replies = self.request(RouteNetlinkMessage::GetAddress(query), NLM_F_DUMP)?;
        Ok(replies
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewAddress(a) if a.header.index == index => {
                    a.attributes.iter().find_map(|attribute| match attribute {
                        AddressAttribute::Local(std::net::IpAddr::V4(ip))
                        | AddressAttribute::Address(std::net::IpAddr::V4(ip)) => Some(*ip),
                        _ => None,
                    })
                }
                _ => None,
            })
            .collect())
    }

    /// Adds an IPv6 address to link `index`. `nodad`: usable at once,
    /// without Duplicate Address Detection's tentative second (the store
    /// guarantees the address is unique; IFA_F_NODAD, rtnetlink(7)).
    pub fn add_ipv6_address(
        &mut self,
        index: u32,
        address: Ipv6Addr,
        prefix: u8,
        nodad: bool,
    ) -> Result<()> {
        self.put_ipv6_address(index, address, prefix, nodad, None)
    }

    /// Adds (or refreshes) an IPv6 address the kernel deprecates after
    /// `preferred` and removes after `valid` seconds (a DHCPv6 lease).
    pub fn add_ipv6_address_until(
        &mut self,
        index: u32,
        address: Ipv6Addr,
        prefix: u8,
        (preferred, valid): (u32, u32),
    ) -> Result<()> {
        self.put_ipv6_address(index, address, prefix, true, Some((preferred, valid)))
    }

    fn put_ipv6_address(
        &mut self,
        index: u32,
        address: Ipv6Addr,
        prefix: u8,
        nodad: bool,
        lifetime: Option<(u32, u32)>,
    ) -> Result<()> {
        let mut message = AddressMessage::default();
        message.header.family = AddressFamily::Inet6;
        message.header.prefix_len = prefix;
        message.header.scope = AddressScope::Universe;
        message.header.index = index;
        message.attributes = vec![AddressAttribute::Local(address.into())];
        if nodad {
            message.header.flags = AddressHeaderFlags::Nodad;
            message
                .attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        if let Some((preferred, valid)) = lifetime {
            message.attributes.push(lifetimes(preferred, valid));
        }
        self.request(
            RouteNetlinkMessage::NewAddress(message),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
        )?;
        Ok(())
    }

    /// The IPv6 addresses of link `index` with their prefix length and
    /// whether they are usable yet (not tentative, DAD not failed).
    pub fn ipv6_addresses(&mut self, index: u32) -> Result<Vec<Ipv6Address>> {
        let mut query = AddressMessage::default();
        query.header.family = AddressFamily::Inet6;
        let replies = self.request(RouteNetlinkMessage::GetAddress(query), NLM_F_DUMP)?;
        Ok(replies
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewAddress(a) if a.header.index == index => {
                    let flags = a
                        .attributes
                        .iter()
                        .find_map(|attribute| match attribute {
                            AddressAttribute::Flags(f) => Some(*f),
                            _ => None,
                        })
                        .unwrap_or_else(|| {
                            AddressFlags::from_bits_retain(a.header.flags.bits().into())
                        });
                    a.attributes.iter().find_map(|attribute| match attribute {
                        AddressAttribute::Address(std::net::IpAddr::V6(ip)) => Some(Ipv6Address {
                            address: *ip,
                            prefix: a.header.prefix_len,
                            // Optimistic addresses (RFC 4429) are usable
                            // while DAD runs; they are flagged tentative too.
                            usable: !flags.contains(AddressFlags::Dadfailed)
                                && (!flags.contains(AddressFlags::Tentative)
                                    || flags.contains(AddressFlags::Optimistic)),
                        }),
                        _ => None,
                    })
                }
                _ => None,
            })
            .collect())
    }

    /// Installs the IPv6 default route via `gateway` (link-local or global)
    /// on link `index`, replacing one that is there.
    pub fn replace_default_route6(&mut self, index: u32, gateway: Ipv6Addr) -> Result<()> {
        let mut message = RouteMessage::default();
        message.header.address_family = AddressFamily::Inet6;
        message.header.table = RouteHeader::RT_TABLE_MAIN;
        message.header.protocol = RouteProtocol::Boot;
        message.header.scope = RouteScope::Universe;
        message.header.kind = RouteType::Unicast;
        message.attributes = vec![
            RouteAttribute::Gateway(RouteAddress::Inet6(gateway)),
            RouteAttribute::Oif(index),
        ];
        self.request(
            RouteNetlinkMessage::NewRoute(message),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
        )?;
        Ok(())
    }

    /// The next hop of the IPv4 default route through link `index`, if any.
    pub fn default_gateway(&mut self, index: u32) -> Result<Option<Ipv4Addr>> {
        Ok(match self.default_next_hop(AddressFamily::Inet, index)? {
            Some(RouteAddress::Inet(ip)) => Some(ip),
            _ => None,
        })
    }

    /// The next hop of the IPv6 default route through link `index`, if any
    /// (learnt from a router advertisement, or set by us).
    pub fn default_gateway6(&mut self, index: u32) -> Result<Option<Ipv6Addr>> {
        Ok(match self.default_next_hop(AddressFamily::Inet6, index)? {
            Some(RouteAddress::Inet6(ip)) => Some(ip),
            _ => None,
        })
    }

    fn default_next_hop(
        &mut self,
        family: AddressFamily,
        index: u32,
    ) -> Result<Option<RouteAddress>> {
        let mut query = RouteMessage::default();
        query.header.address_family = family;
        let replies = self.request(RouteNetlinkMessage::GetRoute(query), NLM_F_DUMP)?;
        Ok(replies.into_iter().find_map(|m| match m {
            RouteNetlinkMessage::NewRoute(r)
                if r.header.destination_prefix_length == 0
                    && r.header.table == RouteHeader::RT_TABLE_MAIN
                    && r.attributes.contains(&RouteAttribute::Oif(index)) =>
            {
                r.attributes.iter().find_map(|a| match a {
                    RouteAttribute::Gateway(gateway) => Some(gateway.clone()),
                    _ => None,
                })
            }
            _ => None,
        }))
    }

    /// Removes an IPv6 address; absent is fine.
    pub fn delete_ipv6_address(&mut self, index: u32, address: Ipv6Addr, prefix: u8) -> Result<()> {
        let mut message = AddressMessage::default();
        message.header.family = AddressFamily::Inet6;
        message.header.prefix_len = prefix;
        message.header.index = index;
        message.attributes = vec![AddressAttribute::Local(address.into())];
        match self.request(RouteNetlinkMessage::DelAddress(message), NLM_F_ACK) {
            Err(e) if e.errno() == Some(libc::EADDRNOTAVAIL) => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// Removes an IPv4 address (and with it the routes through it).
    pub fn delete_ipv4_address(&mut self, index: u32, address: Ipv4Addr, prefix: u8) -> Result<()> {
        let mut message = AddressMessage::default();
        message.header.family = AddressFamily::Inet;
        message.header.prefix_len = prefix;
        message.header.index = index;
        message.attributes = vec![AddressAttribute::Local(address.into())];
        self.request(RouteNetlinkMessage::DelAddress(message), NLM_F_ACK)?;
        Ok(())
    }

    /// Installs the default route via `gateway` on link `index` in the main
    /// table, replacing a default route that is already there.
    pub fn replace_default_route(&mut self, index: u32, gateway: Ipv4Addr) -> Result<()> {
        let mut message = RouteMessage::default();
        message.header.address_family = AddressFamily::Inet;
        message.header.table = RouteHeader::RT_TABLE_MAIN;
        message.header.protocol = RouteProtocol::Boot;
        message.header.scope = RouteScope::Universe;
        message.header.kind = RouteType::Unicast;
        message.attributes = vec![
            RouteAttribute::Gateway(RouteAddress::Inet(gateway)),
            RouteAttribute::Oif(index),
        ];
        self.request(
            RouteNetlinkMessage::NewRoute(message),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
        )?;
        Ok(())
    }

    /// Installs the default route straight out of link `index` (no
    /// gateway: ipvlan L3, where the parent routes), replacing one that is there.
    pub fn replace_default_route_dev(&mut self, index: u32) -> Result<()> {
        let mut message = RouteMessage::default();
        message.header.address_family = AddressFamily::Inet;
        message.header.table = RouteHeader::RT_TABLE_MAIN;
        message.header.protocol = RouteProtocol::Boot;
        message.header.scope = RouteScope::Link;
        message.header.kind = RouteType::Unicast;
        message.attributes = vec![RouteAttribute::Oif(index)];
        self.request(
            RouteNetlinkMessage::NewRoute(message),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
        )?;
        Ok(())
    }

    fn host_route(destination: Ipv4Addr, index: Option<u32>) -> RouteMessage {
        let mut message = RouteMessage::default();
        message.header.address_family = AddressFamily::Inet;
        message.header.table = RouteHeader::RT_TABLE_MAIN;
        message.header.protocol = RouteProtocol::Boot;
        message.header.scope = RouteScope::Link;
        message.header.kind = RouteType::Unicast;
        message.header.destination_prefix_length = 32;
        message.attributes = vec![RouteAttribute::Destination(RouteAddress::Inet(destination))];
        if let Some(index) = index {
            message.attributes.push(RouteAttribute::Oif(index));
        }
        message
    }

    /// Routes `destination`/32 straight out of link `index` (no gateway),
    /// from `source` when given, replacing a route to it that is there.
    pub fn replace_host_route(
        &mut self,
        destination: Ipv4Addr,
        index: u32,
        source: Option<Ipv4Addr>,
    ) -> Result<()> {
        let mut message = Self::host_route(destination, Some(index));
        if let Some(source) = source {
            message
                .attributes
                .push(RouteAttribute::PrefSource(RouteAddress::Inet(source)));
        }
        self.request(
            RouteNetlinkMessage::NewRoute(message),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
        )?;
        Ok(())
    }

    /// Removes the route to `destination`/32 through link `index`; absent is fine.
    pub fn delete_host_route(&mut self, destination: Ipv4Addr, index: u32) -> Result<()> {
        match self.request(
            RouteNetlinkMessage::DelRoute(Self::host_route(destination, Some(index))),
            NLM_F_ACK,
        ) {
            Err(e) if e.errno() == Some(libc::ESRCH) => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// The /32 routes of the main table through link `index`.
    pub fn host_routes(&mut self, index: u32) -> Result<Vec<Ipv4Addr>> {
        let mut query = RouteMessage::default();
        query.header.address_family = AddressFamily::Inet;
        let replies = self.request(RouteNetlinkMessage::GetRoute(query), NLM_F_DUMP)?;
        Ok(replies
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewRoute(r)
                    if r.header.destination_prefix_length == 32
                        && r.header.table == RouteHeader::RT_TABLE_MAIN
                        && r.attributes.contains(&RouteAttribute::Oif(index)) =>
                {
                    r.attributes.iter().find_map(|a| match a {
                        RouteAttribute::Destination(RouteAddress::Inet(ip)) => Some(*ip),
                        _ => None,
                    })
                }
                _ => None,
            })
            .collect())
    }

    /// Makes a tbf the root qdisc of link `index`, replacing what is there.
    pub fn replace_root_tbf(&mut self, index: u32, tbf: &tbf::Tbf) -> Result<()> {
        let mut message = TcMessage::default();
        message.header.index = index as i32;
        message.header.parent = TcHandle {
            major: 0xffff,
            minor: 0xffff,
        };
        message.attributes = vec![
            TcAttribute::Kind("tbf".into()),
            TcAttribute::Options(tbf::options(tbf, tbf::ticks_per_usec())),
        ];
        self.request(
            RouteNetlinkMessage::NewQueueDiscipline(message),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
        )?;
        Ok(())
    }

    /// Creates an ifb device (the target of redirected ingress traffic).
    pub fn create_ifb(&mut self, name: &str) -> Result<()> {
        let mut message = LinkMessage::default();
        message.attributes = vec![
            LinkAttribute::IfName(name.to_string()),
            LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Ifb)]),
        ];
        self.request(
            RouteNetlinkMessage::NewLink(message),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )?;
        Ok(())
    }

    /// Sends everything arriving on link `index` to link `target` instead
    /// (whose egress qdisc then shapes it): an ingress qdisc, and on it a
    /// u32 filter matching every packet with a mirred "egress redirect"
    /// action — `tc filter add dev X parent ffff: u32 match u32 0 0 action
    /// mirred egress redirect dev T`.
    pub fn redirect_ingress(&mut self, index: u32, target: u32) -> Result<()> {
        let mut qdisc = TcMessage::default();
        qdisc.header.index = index as i32;
        qdisc.header.parent = TcHandle::INGRESS;
        qdisc.header.handle = TcHandle {
            major: 0xffff,
            minor: 0,
        };
        qdisc.attributes = vec![TcAttribute::Kind("ingress".into())];
        self.request(
            RouteNetlinkMessage::NewQueueDiscipline(qdisc),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )?;

        let mut mirror = TcMirror::default();
        mirror.generic.action = TcActionType::Stolen;
        mirror.eaction = TcMirrorActionType::EgressRedir;
        mirror.ifindex = target;
        let mut action = TcAction::default();
        action.tab = 1;
        action.attributes = vec![
            TcActionAttribute::Kind("mirred".into()),
            TcActionAttribute::Options(vec![TcActionOption::Mirror(TcActionMirrorOption::Parms(
                mirror,
            ))]),
        ];
        let mut selector = TcU32Selector::default();
        selector.flags = TcU32SelectorFlags::Terminal;
        selector.nkeys = 1;
        selector.keys = vec![TcU32Key::default()]; // mask 0, value 0: every packet
        let mut filter = TcMessage::default();
        filter.header.index = index as i32;
        filter.header.parent = TcHandle {
            major: 0xffff,
            minor: 0,
        };
        // tcm_info: priority 1 in the upper half, protocol ETH_P_ALL
        // (network byte order) in the lower.
        filter.header.info = (1 << 16) | u32::from(u16::from_be(libc::ETH_P_ALL as u16));
        filter.attributes = vec![
            TcAttribute::Kind("u32".into()),
            TcAttribute::Options(vec![
                TcOption::U32(TcFilterU32Option::Selector(selector)),
                TcOption::U32(TcFilterU32Option::Action(vec![action])),
            ]),
        ];
        self.request(
            RouteNetlinkMessage::NewTrafficFilter(filter),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )?;
        Ok(())
    }

    /// Deletes the root and ingress qdiscs of link `index`, if any: the
    /// kernel puts its default root qdisc back.
    pub fn delete_qdiscs(&mut self, index: u32) -> Result<()> {
        for parent in [TcHandle::ROOT, TcHandle::INGRESS] {
            let mut message = TcMessage::default();
            message.header.index = index as i32;
            message.header.parent = parent;
            match self.request(RouteNetlinkMessage::DelQueueDiscipline(message), NLM_F_ACK) {
                Ok(_) => {}
                // Nothing of that kind there.
                Err(e) if matches!(e.errno(), Some(libc::ENOENT) | Some(libc::EINVAL)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The root tbf of link `index` as the kernel holds it, if it has one.
    pub fn root_tbf(&mut self, index: u32) -> Result<Option<tbf::Tbf>> {
        let mut query = TcMessage::default();
        query.header.index = index as i32;
        let replies = self.request(RouteNetlinkMessage::GetQueueDiscipline(query), NLM_F_DUMP)?;
        for reply in replies {
            let RouteNetlinkMessage::NewQueueDiscipline(qdisc) = reply else {
                continue;
            };
            let root = qdisc.header.parent.major == 0xffff && qdisc.header.parent.minor == 0xffff;
            if qdisc.header.index != index as i32 || !root {
                continue;
            }
            let is_tbf = qdisc
                .attributes
                .iter()
                .any(|a| matches!(a, TcAttribute::Kind(kind) if kind == "tbf"));
            if !is_tbf {
                continue;
            }
            // netlink-packet-route does not know tbf: it hands back the
            // whole TCA_OPTIONS nest as one raw attribute.
            for attribute in &qdisc.attributes {
                let TcAttribute::Options(options) = attribute else {
                    continue;
                };
                for option in options {
                    let TcOption::Other(nla) = option else {
                        continue;
                    };
                    let mut nest = vec![0u8; nla.value_len()];
                    nla.emit_value(&mut nest);
                    for inner in NlasIterator::new(&nest[..]).flatten() {
                        if inner.kind() == 1 {
                            return Ok(tbf::parse_parms(inner.value(), tbf::ticks_per_usec()));
                        }
                    }
                }
            }
        }
        Ok(None)
    }
}

fn parse_link(message: &LinkMessage) -> Link {
    let mut link = Link {
        index: message.header.index,
        name: String::new(),
        mtu: 0,
        mac: None,
        kind: None,
        parent_index: None,
        up: message.header.flags.contains(LinkFlags::Up),
        vlan_id: None,
        controller: None,
    };
    for attribute in &message.attributes {
        match attribute {
            LinkAttribute::IfName(name) => link.name = name.clone(),
            LinkAttribute::Mtu(mtu) => link.mtu = *mtu,
            LinkAttribute::Address(bytes) if bytes.len() == 6 => {
                let mut mac = [0u8; 6];
                mac.copy_from_slice(bytes);
                link.mac = Some(mac);
            }
            LinkAttribute::Link(parent) => link.parent_index = Some(*parent),
            LinkAttribute::Controller(controller) => link.controller = Some(*controller),
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    match info {
                        LinkInfo::Kind(kind) => link.kind = Some(kind.to_string()),
                        LinkInfo::Data(InfoData::Vlan(vlan)) => {
                            link.vlan_id = vlan.iter().find_map(|v| match v {
                                InfoVlan::Id(id) => Some(*id),
                                _ => None,
                            })
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    link
}

/// `02:ab:…` form of a MAC address.
/// Reads `aa:bb:cc:dd:ee:ff`.
/// An address's preferred and valid lifetimes, in seconds.
fn lifetimes(preferred: u32, valid: u32) -> AddressAttribute {
    let mut lifetime = CacheInfo::default();
    lifetime.ifa_preferred = preferred;
    lifetime.ifa_valid = valid;
    AddressAttribute::CacheInfo(lifetime)
}

pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in mac.iter_mut() {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}
