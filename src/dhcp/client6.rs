//! The DHCPv6 client's conversations: SOLICIT → ADVERTISE → REQUEST →
//! REPLY (or SOLICIT → REPLY with Rapid Commit), RENEW/REBIND → REPLY, all
//! bounded; retransmissions at 0.5, 1, 2, 4 s (RFC 8415 §15 starts at 1 s:
//! a container start should not wait that long for a lost datagram).

use std::net::{Ipv6Addr, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::Result;
use dhcproto::v6::MessageType;

use super::v6::{self, Answer, Client};
use super::wire6;

const FIRST_RETRANSMIT: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub enum Client6Error {
    #[error("no DHCPv6 server answered within {within} ({sent} SOLICIT sent); is a DHCPv6 server on this LAN (and router advertisements with the M flag)?")]
    NoAdvertise { within: String, sent: u32 },
    #[error("DHCPv6 server has no address for us: {0}")]
    NoAddress(String),
    #[error("the server advertised {address} but did not confirm it within {within}")]
    NoReply { address: Ipv6Addr, within: String },
    #[error(transparent)]
    Io(#[from] anyhow::Error),
}

/// Sends `payload` on link `index` and waits for an answer to `xid` that
/// `accept`s, retransmitting with doubling pauses until `deadline`.
fn transact(
    socket: &UdpSocket,
    index: u32,
    client: &Client,
    (xid, payload): (u32, &[u8]),
    deadline: Instant,
    sent: &mut u32,
    accept: impl Fn(&Answer) -> bool,
) -> Result<Option<Answer>> {
    let mut pause = FIRST_RETRANSMIT;
    let mut buffer = vec![0u8; 1500];
    while Instant::now() < deadline {
        wire6::send(socket, index, payload)?;
        *sent += 1;
        let until = (Instant::now() + pause).min(deadline);
        while let Some(n) = super::wire::receive(socket, until, &mut buffer)? {
            if let Some(answer) = v6::read(&buffer[..n], xid, client) {
                if accept(&answer) {
                    return Ok(Some(answer));
                }
            }
        }
        pause = (pause * 2).min(Duration::from_secs(4));
    }
    Ok(None)
}

fn within(started: Instant) -> String {
    format!("{:.1}s", started.elapsed().as_secs_f64())
}

fn status_text(answer: &Answer) -> String {
    match &answer.status {
        Some((status, text)) => format!("{status:?} {text:?}"),
        None => "no address in its answer".into(),
    }
}

/// Gets a lease: the REPLY granting an address.
pub fn acquire(
    socket: &UdpSocket,
    index: u32,
    client: &Client,
    started: Instant,
    deadline: Instant,
) -> std::result::Result<Answer, Client6Error> {
    let mut sent = 0;
    let mut refusal = None;
    while Instant::now() < deadline {
        let xid = super::client::random_xid();
        let solicit = v6::solicit(xid, client, None);
        let answer = transact(
            socket,
            index,
            client,
            (xid, &solicit),
            deadline,
            &mut sent,
            |a| {
                a.kind == MessageType::Advertise || (a.kind == MessageType::Reply && a.rapid_commit)
            },
        )?;
        let Some(answer) = answer else { break };
        let Some(address) = answer.address else {
            // NoAddrsAvail: ask again later (another server may answer).
            refusal = Some(status_text(&answer));
            std::thread::sleep(
                Duration::from_millis(500).min(deadline - Instant::now().min(deadline)),
            );
            continue;
        };
        if answer.kind == MessageType::Reply {
            return Ok(answer);
        }
        let xid = super::client::random_xid();
        let request = v6::request(xid, client, &answer.server_id, address);
        let reply = transact(
            socket,
            index,
            client,
            (xid, &request),
            deadline,
            &mut sent,
            |a| a.kind == MessageType::Reply,
        )?;
        match reply {
            Some(reply) if reply.address.is_some() => return Ok(reply),
            Some(reply) => refusal = Some(status_text(&reply)),
            None => {
                return Err(Client6Error::NoReply {
                    address,
                    within: within(started),
                })
            }
        }
    }
    Err(match refusal {
        Some(text) => Client6Error::NoAddress(text),
        None => Client6Error::NoAdvertise {
            within: within(started),
            sent,
        },
    })
}

/// RENEW (with the server's DUID) or REBIND (without) of `address`;
/// `None` when no server answered before `until`.
pub fn renew(
    socket: &UdpSocket,
    index: u32,
    client: &Client,
    server_id: Option<&[u8]>,
    address: Ipv6Addr,
    until: Instant,
) -> Result<Option<Answer>> {
    let xid = super::client::random_xid();
    let payload = v6::renew(xid, client, server_id, address);
    let mut sent = 0;
    transact(
        socket,
        index,
        client,
        (xid, &payload),
        until,
        &mut sent,
        |a| a.kind == MessageType::Reply,
    )
}
