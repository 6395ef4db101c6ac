//! The client's conversations with the server: DISCOVER → OFFER → REQUEST →
//! ACK (with the ARP probe and DECLINE), renewal and rebinding, release.

use std::net::{Ipv4Addr, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::Result;

use super::packet::{self, ClientIdentity, Reply, ReplyKind};
use super::rules::{self, LeaseRules, Refusal};
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
    #[error("no acceptable DHCP offer within {within}; refused {refused}")]
    Refused { within: String, refused: String },
    #[error(transparent)]
    Io(#[from] anyhow::Error),
}

/// What happened on the way to a lease, for the log.
#[derive(Debug, Default, Clone)]
pub struct Story {
    pub discovers: u32,
    pub declined: Vec<Ipv4Addr>,
    pub naks: u32,
    /// Replies that failed the lease rules (each once).
    pub refused: Vec<Refusal>,
}

/// Whether `reply` answers a REQUEST for `address`: a NAK, or an ACK of
/// that address that passes `rules` (a failing one is noted in `refused`).
fn answers(
    reply: &Reply,
    address: Ipv4Addr,
    rules: &LeaseRules,
    refused: &mut Vec<Refusal>,
) -> bool {
    match reply.kind {
        ReplyKind::Nak => true,
        ReplyKind::Ack if reply.address == address => match rules.check(reply) {
            Ok(()) => true,
            Err(refusal) => {
                note(refused, refusal);
                false
            }
        },
        _ => false,
    }
}

/// Keeps `refusal` unless an equal one is kept already (servers retransmit).
fn note(refused: &mut Vec<Refusal>, refusal: Refusal) {
    if !refused.contains(&refusal) {
        refused.push(refusal);
    }
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
        mut accept: impl FnMut(&Reply) -> bool,
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
/// and the exchange starts again. Offers and acknowledgements that fail
/// `rules` are ignored (and kept in the story). Gives up at `deadline`.
#[allow(clippy::too_many_arguments)]
pub fn acquire(
    socket: &UdpSocket,
    identity: &ClientIdentity,
    rules: &LeaseRules,
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
        let refused = &mut story.refused;
        let offer = discovering.transact(xid, Ipv4Addr::BROADCAST, &discover, deadline, |r| {
            if r.kind != ReplyKind::Offer || declined.contains(&r.address) {
                return false;
            }
            match rules.check(r) {
                Ok(()) => true,
                Err(refusal) => {
                    note(refused, refusal);
                    false
                }
            }
        })?;
        story.discovers += discovering.sent;
        let Some(offer) = offer else {
            if !story.declined.is_empty() {
                return Err(ClientError::AllDeclined(join(&story.declined)));
            }
            if !story.refused.is_empty() {
                return Err(ClientError::Refused {
                    within,
                    refused: join_refused(&story.refused),
                });
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
        // Only the chosen server may acknowledge or refuse the request.
        let refused = &mut story.refused;
        let answer = requesting.transact(xid, Ipv4Addr::BROADCAST, &request, deadline, |r| {
            r.server == offer.server && answers(r, offer.address, rules, refused)
        })?;
        let Some(mut ack) = answer else {
            if !story.refused.is_empty() {
                return Err(ClientError::Refused {
                    within,
                    refused: join_refused(&story.refused),
                });
            }
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
        rules::order_timers(&mut ack);
        return Ok((ack, story));
    }
}

fn join_refused(refused: &[Refusal]) -> String {
    refused
        .iter()
        .map(|r| r.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

fn join(addresses: &[Ipv4Addr]) -> String {
    addresses
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Asks to extend the lease on `address`: to its server (RENEWING, after
/// T1) or to everyone (REBINDING, after T2). While renewing only the
/// leasing server (`from`) is heard; an ACK must be for `address` and pass
/// `rules` (refusals go to `refused`). `None`: no acceptable answer by `until`.
#[allow(clippy::too_many_arguments)]
pub fn renew(
    socket: &UdpSocket,
    identity: &ClientIdentity,
    rules: &LeaseRules,
    address: Ipv4Addr,
    to: Ipv4Addr,
    from: Option<Ipv4Addr>,
    until: Instant,
    refused: &mut Vec<Refusal>,
) -> Result<Option<Reply>> {
    let xid = random_xid();
    let request = packet::request_renewal(xid, identity, address);
    let reply = Exchange {
        socket,
        identity,
        sent: 0,
    }
    .transact(xid, to, &request, until, |r| {
        from.is_none_or(|server| r.server == server) && answers(r, address, rules, refused)
    })?;
    Ok(reply.map(|mut reply| {
        rules::order_timers(&mut reply);
        reply
    }))
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
