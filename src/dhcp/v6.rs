//! DHCPv6 messages (RFC 8415) for one IA_NA: SOLICIT (offering Rapid
//! Commit), REQUEST, RENEW, REBIND and RELEASE built, ADVERTISE and REPLY
//! read, with dhcproto's v6 module. Pure: no sockets here.

use std::net::Ipv6Addr;

use dhcproto::v6::{
    DhcpOption, DhcpOptions, IAAddr, Message, MessageType, OptionCode, Status, IANA, ORO,
};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};

/// DUID-UUID (RFC 6355, type 4): 16 bytes derived from the container id,
/// so a restarted container is the same client to the server (and keeps
/// its lease), whatever its MAC.
pub fn duid(container_id: &str) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("macvlan-runc dhcpv6 {container_id}").as_bytes());
    let mut duid = vec![0, 4];
    duid.extend_from_slice(&digest[..16]);
    duid
}

/// The IA_NA identifier of attachment `slot` (eth0: 1, eth1: 2…).
pub fn iaid(slot: usize) -> u32 {
    slot as u32 + 1
}

/// Who the client is to servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    pub duid: Vec<u8>,
    pub iaid: u32,
}

/// What a server's ADVERTISE or REPLY says about our IA_NA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub kind: MessageType,
    pub server_id: Vec<u8>,
    /// The address leased (none: the server had none, see `status`).
    pub address: Option<Ipv6Addr>,
    pub preferred: u32,
    pub valid: u32,
    pub t1: u32,
    pub t2: u32,
    pub dns: Vec<Ipv6Addr>,
    /// A REPLY to a SOLICIT with Rapid Commit: the lease is granted.
    pub rapid_commit: bool,
    pub preference: u8,
    /// A status other than success, with the server's text.
    pub status: Option<(Status, String)>,
}

fn ia_na(client: &Client, address: Option<Ipv6Addr>) -> DhcpOption {
    let mut opts = DhcpOptions::new();
    if let Some(addr) = address {
        opts.insert(DhcpOption::IAAddr(IAAddr {
            addr,
            preferred_life: 0,
            valid_life: 0,
            opts: DhcpOptions::new(),
        }));
    }
    DhcpOption::IANA(IANA {
        id: client.iaid,
        t1: 0,
        t2: 0,
        opts,
    })
}

fn message(
    kind: MessageType,
    xid: u32,
    client: &Client,
    server_id: Option<&[u8]>,
    address: Option<Ipv6Addr>,
) -> Message {
    let mut msg = Message::new(kind);
    msg.set_xid_num(xid & 0x00ff_ffff);
    let opts = msg.opts_mut();
    opts.insert(DhcpOption::ClientId(client.duid.clone()));
    if let Some(server) = server_id {
        opts.insert(DhcpOption::ServerId(server.to_vec()));
    }
    opts.insert(DhcpOption::ElapsedTime(0));
    opts.insert(ia_na(client, address));
    if kind != MessageType::Release {
        opts.insert(DhcpOption::ORO(ORO {
            opts: vec![OptionCode::DomainNameServers],
        }));
    }
    msg
}

fn encode(msg: &Message) -> Vec<u8> {
    let mut buffer = Vec::with_capacity(128);
    msg.encode(&mut Encoder::new(&mut buffer))
        .expect("a DHCPv6 message encodes");
    buffer
}

/// SOLICIT, asking for `hint` (the address held before) and offering Rapid
/// Commit (RFC 8415 §18.2.1).
pub fn solicit(xid: u32, client: &Client, hint: Option<Ipv6Addr>) -> Vec<u8> {
    let mut msg = message(MessageType::Solicit, xid, client, None, hint);
    msg.opts_mut().insert(DhcpOption::RapidCommit);
    encode(&msg)
}

/// REQUEST for the address `server_id` advertised.
pub fn request(xid: u32, client: &Client, server_id: &[u8], address: Ipv6Addr) -> Vec<u8> {
    encode(&message(
        MessageType::Request,
        xid,
        client,
        Some(server_id),
        Some(address),
    ))
}

/// RENEW (to the server that leased, `server_id`) or, without it, REBIND
/// (to any server).
pub fn renew(xid: u32, client: &Client, server_id: Option<&[u8]>, address: Ipv6Addr) -> Vec<u8> {
    let kind = match server_id {
        Some(_) => MessageType::Renew,
        None => MessageType::Rebind,
    };
    encode(&message(kind, xid, client, server_id, Some(address)))
}

/// RELEASE of `address`.
pub fn release(xid: u32, client: &Client, server_id: &[u8], address: Ipv6Addr) -> Vec<u8> {
    encode(&message(
        MessageType::Release,
        xid,
        client,
        Some(server_id),
        Some(address),
    ))
}

/// Reads an ADVERTISE or REPLY meant for `client` and transaction `xid`;
/// `None` for anything else (other clients' messages, other transactions,
/// malformed packets: a LAN carries all of these).
/// The message with only the options this client reads, each of a length
/// it can have (nested ones inside IA_NA and IAADDR too); `None` when the
/// options do not parse as code-length-value. dhcproto subtracts from
/// option lengths unchecked (a short status code underflows), so what any
/// machine on the link sends is cut down to what is understood first.
fn keep_known_options(packet: &[u8]) -> Option<Vec<u8>> {
    let header = packet.get(..4)?;
    let mut kept = header.to_vec();
    kept.extend(filter_options(&packet[4..], Level::Message)?);
    Some(kept)
}

#[derive(Clone, Copy, PartialEq)]
enum Level {
    Message,
    IaNa,
    IaAddr,
}

fn filter_options(mut options: &[u8], level: Level) -> Option<Vec<u8>> {
    let mut kept = Vec::new();
    while !options.is_empty() {
        let code = u16::from_be_bytes([*options.first()?, *options.get(1)?]);
        let len = usize::from(u16::from_be_bytes([*options.get(2)?, *options.get(3)?]));
        let value = options.get(4..4 + len)?;
        // (fixed part before nested options, or the length's rule).
        let value = match (level, code) {
            // Client id, server id.
            (Level::Message, 1 | 2) if len >= 1 => Some(value.to_vec()),
            // IA_NA: IAID, T1, T2, then options.
            (Level::Message, 3) if len >= 12 => {
                let mut inner = value[..12].to_vec();
                inner.extend(filter_options(&value[12..], Level::IaNa)?);
                Some(inner)
            }
            // Preference.
            (Level::Message, 7) if len == 1 => Some(value.to_vec()),
            // Rapid commit.
            (Level::Message, 14) if len == 0 => Some(Vec::new()),
            // DNS servers.
            (Level::Message, 23) if len % 16 == 0 => Some(value.to_vec()),
            // IAADDR: address, preferred and valid lifetimes, then options.
            (Level::IaNa, 5) if len >= 24 => {
                let mut inner = value[..24].to_vec();
                inner.extend(filter_options(&value[24..], Level::IaAddr)?);
                Some(inner)
            }
            // Status code, at every level.
            (_, 13) if len >= 2 => Some(value.to_vec()),
            _ => None,
        };
        if let Some(value) = value {
            kept.extend_from_slice(&code.to_be_bytes());
            kept.extend_from_slice(&(value.len() as u16).to_be_bytes());
            kept.extend_from_slice(&value);
        }
        options = &options[4 + len..];
    }
    Some(kept)
}

pub fn read(packet: &[u8], xid: u32, client: &Client) -> Option<Answer> {
    let packet = keep_known_options(packet)?;
    let msg = Message::decode(&mut Decoder::new(&packet)).ok()?;
    let kind = msg.msg_type();
    if !matches!(kind, MessageType::Advertise | MessageType::Reply)
        || msg.xid_num() != xid & 0x00ff_ffff
    {
        return None;
    }
    let opts = msg.opts();
    match opts.get(OptionCode::ClientId) {
        Some(DhcpOption::ClientId(id)) if *id == client.duid => {}
        _ => return None,
    }
    let server_id = match opts.get(OptionCode::ServerId) {
        Some(DhcpOption::ServerId(id)) if !id.is_empty() => id.clone(),
        _ => return None,
    };
    let status_of = |opts: &DhcpOptions| match opts.get(OptionCode::StatusCode) {
        Some(DhcpOption::StatusCode(code)) if code.status != Status::Success => {
            Some((code.status, code.msg.clone()))
        }
        _ => None,
    };
    let mut answer = Answer {
        kind,
        server_id,
        address: None,
        preferred: 0,
        valid: 0,
        t1: 0,
        t2: 0,
        dns: match opts.get(OptionCode::DomainNameServers) {
            Some(DhcpOption::DomainNameServers(list)) => list.clone(),
            _ => Vec::new(),
        },
        rapid_commit: opts.get(OptionCode::RapidCommit).is_some(),
        preference: match opts.get(OptionCode::Preference) {
            Some(DhcpOption::Preference(p)) => *p,
            _ => 0,
        },
        status: status_of(opts),
    };
    let ia = opts
        .get_all(OptionCode::IANA)
        .into_iter()
        .flatten()
        .find_map(|o| match o {
            DhcpOption::IANA(ia) if ia.id == client.iaid => Some(ia),
            _ => None,
        });
    if let Some(ia) = ia {
        answer.t1 = ia.t1;
        answer.t2 = ia.t2;
        if let Some(status) = status_of(&ia.opts) {
            answer.status = Some(status);
        }
        // The first address with a lifetime; a valid lifetime of 0 is the
        // server taking an address back.
        if let Some(addr) = ia.opts.iter().find_map(|o| match o {
            DhcpOption::IAAddr(a) if a.valid_life > 0 => Some(a),
            _ => None,
        }) {
            answer.address = Some(addr.addr);
            answer.preferred = addr.preferred_life.min(addr.valid_life);
            answer.valid = addr.valid_life;
        }
    }
    Some(answer)
}

/// The renewal and rebinding times of a lease, in seconds from its start:
/// the server's T1/T2 when it gives sane ones, else 0.5 and 0.8 of the
/// preferred lifetime (RFC 8415 §21.4).
pub fn times(answer: &Answer) -> (u32, u32) {
    let base = answer.preferred.max(1);
    let t1 = if answer.t1 == 0 || answer.t1 > base {
        base / 2
    } else {
        answer.t1
    };
    let t2 = if answer.t2 == 0 || answer.t2 < t1 || answer.t2 > answer.valid {
        base / 5 * 4
    } else {
        answer.t2
    };
    (t1.max(1), t2.max(t1.max(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> Client {
        Client {
            duid: duid("c1"),
            iaid: iaid(0),
        }
    }

    /// A server's answer to `client`, as dnsmasq would build it.
    fn server_answer(kind: MessageType, xid: u32, address: Option<Ipv6Addr>) -> Vec<u8> {
        let mut msg = Message::new(kind);
        msg.set_xid_num(xid);
        let opts = msg.opts_mut();
        opts.insert(DhcpOption::ClientId(client().duid));
        opts.insert(DhcpOption::ServerId(vec![0, 3, 0, 1, 2, 0, 0, 0, 0, 1]));
        opts.insert(DhcpOption::DomainNameServers(vec!["2001:db8::53"
            .parse()
            .unwrap()]));
        let mut ia = DhcpOptions::new();
        if let Some(addr) = address {
            ia.insert(DhcpOption::IAAddr(IAAddr {
                addr,
                preferred_life: 100,
                valid_life: 200,
                opts: DhcpOptions::new(),
            }));
        }
        opts.insert(DhcpOption::IANA(IANA {
            id: 1,
            t1: 50,
            t2: 80,
            opts: ia,
        }));
        encode(&msg)
    }

    #[test]
    fn duid_is_stable_per_container_and_a_uuid_duid() {
        assert_eq!(duid("c1"), duid("c1"));
        assert_ne!(duid("c1"), duid("c2"));
        assert_eq!(&duid("c1")[..2], &[0, 4]);
        assert_eq!(duid("c1").len(), 18);
    }

    #[test]
    fn solicit_carries_rapid_commit_the_hint_and_our_identity() {
        let hint: Ipv6Addr = "2001:db8::10".parse().unwrap();
        let packet = solicit(0x123456, &client(), Some(hint));
        let msg = Message::decode(&mut Decoder::new(&packet)).unwrap();
        assert_eq!(msg.msg_type(), MessageType::Solicit);
        assert_eq!(msg.xid_num(), 0x123456);
        assert!(msg.opts().get(OptionCode::RapidCommit).is_some());
        match msg.opts().get(OptionCode::IANA) {
            Some(DhcpOption::IANA(ia)) => {
                assert_eq!(ia.id, 1);
                assert!(
                    matches!(ia.opts.get(OptionCode::IAAddr), Some(DhcpOption::IAAddr(a)) if a.addr == hint)
                );
            }
            other => panic!("{other:?}"),
        }
        let release = release(7, &client(), &[0, 3, 0, 1], hint);
        let msg = Message::decode(&mut Decoder::new(&release)).unwrap();
        assert_eq!(msg.msg_type(), MessageType::Release);
        assert!(msg.opts().get(OptionCode::ServerId).is_some());
        let rebind = renew(8, &client(), None, hint);
        let msg = Message::decode(&mut Decoder::new(&rebind)).unwrap();
        assert_eq!(msg.msg_type(), MessageType::Rebind);
        assert!(msg.opts().get(OptionCode::ServerId).is_none());
    }

    #[test]
    fn answers_are_read_only_for_our_transaction_and_client() {
        let address: Ipv6Addr = "2001:db8::42".parse().unwrap();
        let packet = server_answer(MessageType::Reply, 9, Some(address));
        let answer = read(&packet, 9, &client()).unwrap();
        assert_eq!(answer.address, Some(address));
        assert_eq!(
            (answer.preferred, answer.valid, answer.t1, answer.t2),
            (100, 200, 50, 80)
        );
        assert_eq!(answer.dns, ["2001:db8::53".parse::<Ipv6Addr>().unwrap()]);
        assert_eq!(times(&answer), (50, 80));
        // Another transaction, another client, garbage: ignored.
        assert!(read(&packet, 10, &client()).is_none());
        let other = Client {
            duid: duid("c2"),
            iaid: 1,
        };
        assert!(read(&packet, 9, &other).is_none());
        assert!(read(&[7, 0, 0], 9, &client()).is_none());
        assert!(read(&solicit(9, &client(), None), 9, &client()).is_none());
        // No address: the status says why.
        let none = read(
            &server_answer(MessageType::Advertise, 9, None),
            9,
            &client(),
        )
        .unwrap();
        assert_eq!(none.address, None);
    }

    #[test]
    fn insane_renewal_times_fall_back_to_the_rfc_fractions() {
        let answer = Answer {
            kind: MessageType::Reply,
            server_id: vec![1],
            address: None,
            preferred: 100,
            valid: 200,
            t1: 0,
            t2: 0,
            dns: vec![],
            rapid_commit: false,
            preference: 0,
            status: None,
        };
        assert_eq!(times(&answer), (50, 80));
        let late = Answer {
            t1: 500,
            t2: 900,
            ..answer
        };
        assert_eq!(times(&late), (50, 80));
    }
}
