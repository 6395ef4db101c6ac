//! The client's conversations with the server: DISCOVER → OFFER → REQUEST →
//! ACK (with the ARP probe and DECLINE), renewal and rebinding, release.

use std::net::{Ipv4Addr, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::Result;

use super::packet::{self, ClientIdentity, Reply, ReplyKind};
use super::wire;

/// The first retransmission comes after this long, doubling after that
/// (RFC 2131 §4.1 says 4 s; a container start should not wait that long
/// for a lost datagram).
const FIRST_RETRANSMIT: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no DHCP server answered within {within} ({sent} DISCOVER sent); is a DHCP server on this LAN, and does it have free addresses?")]
    NoOffer { within: String, sent: u32 },
    #[error("the server offered {address} but did not acknowledge it within {within}")]
    NoAck { address: Ipv4Addr, within: String },
    #[error("every address offered was in use on the wire and declined: {0}")]
    AllDeclined(String),
    #[error(transparent)]
    Io(#[from] anyhow::Error),
}

/// What happened on the way to a lease, for the log.
#[derive(Debug, Default, Clone)]
pub struct Story {
    pub discovers: u32,
    pub declined: Vec<Ipv4Addr>,
    pub naks: u32,
}

pub fn random_xid() -> u32 {
    let mut bytes = [0u8; 4];
    // SAFETY: fills the buffer it is given.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if n != 4 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        return nanos ^ std::process::id().rotate_left(16);
    }
    u32::from_ne_bytes(bytes)
}

/// One client socket talking to the server, counting what it sent.
struct Exchange<'a> {
    socket: &'a UdpSocket,
    identity: &'a ClientIdentity,
    sent: u32,
}

impl Exchange<'_> {
    /// Sends `payload` to `to` and waits for a reply to `xid` that
    /// `accept`s, retransmitting with doubling pauses, until `deadline`.
    fn transact(
        &mut self,
        xid: u32,
        to: Ipv4Addr,
        payload: &[u8],
        deadline: Instant,
        accept: impl Fn(&Reply) -> bool,
    ) -> Result<Option<Reply>> {
        let mut pause = FIRST_RETRANSMIT;
        let mut buffer = vec![0u8; 1500];
        while Instant::now() < deadline {
            wire::send(self.socket, to, payload)?;
            self.sent += 1;
            let until = (Instant::now() + pause).min(deadline);
            while let Some(n) = wire::receive(self.socket, until, &mut buffer)? {
                if let Some(reply) = packet::parse_reply(&buffer[..n], xid, &self.identity.mac) {
                    if accept(&reply) {
                        return Ok(Some(reply));
                    }
                }
            }
            pause = (pause * 2).min(Duration::from_secs(4));
        }
        Ok(None)
    }
}

fn describe(duration: Duration) -> String {
    humantime::format_duration(Duration::from_millis(duration.as_millis() as u64)).to_string()
}

/// Gets a lease from the INIT state: DISCOVER (asking for `previous`),
/// REQUEST the offer, and before taking the acknowledged address ask the
/// wire whether anyone has it (`in_use`); an address in use is declined
/// and the exchange starts again. Gives up at `deadline`.
pub fn acquire(
    socket: &UdpSocket,
    identity: &ClientIdentity,
    previous: Option<Ipv4Addr>,
    started: Instant,
    deadline: Instant,
    in_use: impl Fn(Ipv4Addr) -> Result<bool>,
) -> Result<(Reply, Story), ClientError> {
    let mut story = Story::default();
    let within = describe(deadline - started);
    loop {
        let xid = random_xid();
        let asked = previous.filter(|p| !story.declined.contains(p));
        let discover = packet::discover(xid, identity, asked);
        let declined = story.declined.clone();
        let mut discovering = Exchange {
            socket,
            identity,
            sent: 0,
        };
        let offer = discovering.transact(xid, Ipv4Addr::BROADCAST, &discover, deadline, |r| {
            r.kind == ReplyKind::Offer && !declined.contains(&r.address)
        })?;
        story.discovers += discovering.sent;
        let Some(offer) = offer else {
            if !story.declined.is_empty() {
                return Err(ClientError::AllDeclined(join(&story.declined)));
            }
            return Err(ClientError::NoOffer {
                within,
                sent: story.discovers,
            });
        };
        let request = packet::request_offer(xid, identity, &offer);
        let mut requesting = Exchange {
            socket,
            identity,
            sent: 0,
        };
        let answer = requesting.transact(xid, Ipv4Addr::BROADCAST, &request, deadline, |r| {
            r.kind == ReplyKind::Nak || (r.kind == ReplyKind::Ack && r.address == offer.address)
        })?;
        let Some(ack) = answer else {
            return Err(ClientError::NoAck {
                address: offer.address,
                within,
            });
        };
        if ack.kind == ReplyKind::Nak {
            story.naks += 1;
            continue;
        }
        if in_use(ack.address)? {
            let decline = packet::decline(random_xid(), identity, ack.address, ack.server);
            wire::send(socket, Ipv4Addr::BROADCAST, &decline)?;
            story.declined.push(ack.address);
            continue;
        }
        return Ok((ack, story));
    }
}

fn join(addresses: &[Ipv4Addr]) -> String {
    addresses
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Asks to extend the lease on `address`: to its server (RENEWING, after
/// T1) or to everyone (REBINDING, after T2). `None`: no answer by `until`.
pub fn renew(
    socket: &UdpSocket,
    identity: &ClientIdentity,
    address: Ipv4Addr,
    to: Ipv4Addr,
    until: Instant,
) -> Result<Option<Reply>> {
    let xid = random_xid();
    let request = packet::request_renewal(xid, identity, address);
    Exchange {
        socket,
        identity,
        sent: 0,
    }
    .transact(xid, to, &request, until, |r| {
        r.kind == ReplyKind::Nak || r.kind == ReplyKind::Ack
    })
}

/// Gives `address` back to `server`, from inside the container's
/// namespace while it still has the address.
pub fn release(
    socket: &UdpSocket,
    identity: &ClientIdentity,
    address: Ipv4Addr,
    server: Ipv4Addr,
) -> Result<()> {
    wire::send(
        socket,
        server,
        &packet::release(random_xid(), identity, address, server),
    )
}
