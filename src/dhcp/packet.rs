//! DHCPv4 messages (RFC 2131/2132) a client sends and the replies it
//! accepts, built and read with dhcproto; no I/O here.

use std::net::Ipv4Addr;

use dhcproto::v4::{
    self, Decodable as _, Decoder, DhcpOption, Encodable as _, Flags, Message, MessageType,
    OptionCode,
};

/// Who the client is: the same for every message of one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    pub mac: [u8; 6],
    /// Option 61: hardware type 1 (Ethernet) and the MAC, as most clients
    /// send it; stable because the MAC is derived from the container id.
    pub client_id: Vec<u8>,
    /// Option 12, so the server (dnsmasq) can put the name in its DNS.
    pub hostname: Option<String>,
}

impl ClientIdentity {
    pub fn new(mac: [u8; 6], hostname: Option<String>) -> ClientIdentity {
        let mut client_id = vec![1];
        client_id.extend_from_slice(&mac);
        ClientIdentity {
            mac,
            client_id,
            hostname: hostname.filter(|h| !h.is_empty() && h.len() <= 63),
        }
    }

    /// For devices that share their parent's MAC (ipvlan): the MAC is the
    /// same for every container, so option 61 is derived from the container
    /// id instead — RFC 4361's form: type 255, an IAID and a DUID-UUID
    /// (RFC 6355), all from a hash of the id, so a restart keeps it.
    pub fn shared_mac(
        mac: [u8; 6],
        container_id: &str,
        hostname: Option<String>,
    ) -> ClientIdentity {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(container_id.as_bytes());
        let mut client_id = vec![255];
        client_id.extend_from_slice(&digest[..4]);
        client_id.extend_from_slice(&[0, 4]);
        client_id.extend_from_slice(&digest[4..20]);
        ClientIdentity {
            client_id,
            ..ClientIdentity::new(mac, hostname)
        }
    }

    /// The identity a record kept: its MAC and the client id it sent.
    pub fn with_client_id(
        mac: [u8; 6],
        client_id: Vec<u8>,
        hostname: Option<String>,
    ) -> ClientIdentity {
        ClientIdentity {
            client_id,
            ..ClientIdentity::new(mac, hostname)
        }
    }

    pub fn client_id_hex(&self) -> String {
        self.client_id.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// The options asked for in every DISCOVER and REQUEST.
const PARAMETERS: [OptionCode; 8] = [
    OptionCode::SubnetMask,
    OptionCode::Router,
    OptionCode::DomainNameServer,
    OptionCode::DomainName,
    OptionCode::AddressLeaseTime,
    OptionCode::ServerIdentifier,
    OptionCode::Renewal,
    OptionCode::Rebinding,
];

fn base(xid: u32, identity: &ClientIdentity, kind: MessageType, ciaddr: Ipv4Addr) -> Message {
    let unspecified = Ipv4Addr::UNSPECIFIED;
    let mut message = Message::new_with_id(
        xid,
        ciaddr,
        unspecified,
        unspecified,
        unspecified,
        &identity.mac,
    );
    let options = message.opts_mut();
    options.insert(DhcpOption::MessageType(kind));
    options.insert(DhcpOption::ClientIdentifier(identity.client_id.clone()));
    message
}

fn with_parameters(mut message: Message, identity: &ClientIdentity) -> Message {
    let options = message.opts_mut();
    options.insert(DhcpOption::ParameterRequestList(PARAMETERS.to_vec()));
    options.insert(DhcpOption::MaxMessageSize(1500));
    if let Some(name) = &identity.hostname {
        options.insert(DhcpOption::Hostname(name.clone()));
    }
    message
}

/// DISCOVER, asking for `previous` (a restarted container's last address)
/// if known. The broadcast flag is set: an interface without an address
/// would drop a reply sent by unicast to the offered address.
pub fn discover(xid: u32, identity: &ClientIdentity, previous: Option<Ipv4Addr>) -> Vec<u8> {
    let mut message = with_parameters(
        base(xid, identity, MessageType::Discover, Ipv4Addr::UNSPECIFIED),
        identity,
    );
    message.set_flags(Flags::default().set_broadcast());
    if let Some(address) = previous {
        message
            .opts_mut()
            .insert(DhcpOption::RequestedIpAddress(address));
    }
    encode(&message)
}

/// REQUEST in the SELECTING state: accepts `offer` from its server.
pub fn request_offer(xid: u32, identity: &ClientIdentity, offer: &Reply) -> Vec<u8> {
    let mut message = with_parameters(
        base(xid, identity, MessageType::Request, Ipv4Addr::UNSPECIFIED),
        identity,
    );
    message.set_flags(Flags::default().set_broadcast());
    let options = message.opts_mut();
    options.insert(DhcpOption::RequestedIpAddress(offer.address));
    options.insert(DhcpOption::ServerIdentifier(offer.server));
    encode(&message)
}

/// REQUEST in the RENEWING (unicast to the server) or REBINDING (broadcast)
/// state: ciaddr set, no server identifier, no requested address.
pub fn request_renewal(xid: u32, identity: &ClientIdentity, address: Ipv4Addr) -> Vec<u8> {
    encode(&with_parameters(
        base(xid, identity, MessageType::Request, address),
        identity,
    ))
}

/// RELEASE: ciaddr is the address given back (servers such as dnsmasq
/// ignore a release without it), unicast to the server that leased it.
pub fn release(
    xid: u32,
    identity: &ClientIdentity,
    address: Ipv4Addr,
    server: Ipv4Addr,
) -> Vec<u8> {
    let mut message = base(xid, identity, MessageType::Release, address);
    message
        .opts_mut()
        .insert(DhcpOption::ServerIdentifier(server));
    encode(&message)
}

/// DECLINE: `address` is in use by someone else (RFC 2131 §3.1.5).
pub fn decline(
    xid: u32,
    identity: &ClientIdentity,
    address: Ipv4Addr,
    server: Ipv4Addr,
) -> Vec<u8> {
    let mut message = base(xid, identity, MessageType::Decline, Ipv4Addr::UNSPECIFIED);
    let options = message.opts_mut();
    options.insert(DhcpOption::RequestedIpAddress(address));
    options.insert(DhcpOption::ServerIdentifier(server));
    encode(&message)
}

fn encode(message: &Message) -> Vec<u8> {
    message
        .to_vec()
        .expect("a message built from valid parts encodes")
}

/// What a server's OFFER, ACK or NAK said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub kind: ReplyKind,
    pub address: Ipv4Addr,
    pub server: Ipv4Addr,
    pub prefix: u8,
    /// Option 1 as sent (`None`: absent, and `prefix` is the classful one).
    pub mask: Option<Ipv4Addr>,
    pub router: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub domain: Option<String>,
    /// Option 51; 0 when the server sent none (refused by `rules`).
    pub lease_time: u32,
    pub renewal: u32,
    pub rebinding: u32,
    /// Option 56 of a NAK, if any.
    pub message: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyKind {
    Offer,
    Ack,
    Nak,
}

/// Reads a datagram; `None` unless it is a reply to transaction `xid` for
/// `mac` (other clients' traffic shares the broadcast port).
pub fn parse_reply(bytes: &[u8], xid: u32, mac: &[u8; 6]) -> Option<Reply> {
    let bytes = keep_known_options(bytes)?;
    let message = Message::decode(&mut Decoder::new(&bytes)).ok()?;
    if message.opcode() != v4::Opcode::BootReply
        || message.xid() != xid
        // dhcproto's chaddr() slices by hlen unchecked: a reply with hlen
        // above 16 would panic there (found by tests/fuzz.rs).
        || !(6..=16).contains(&message.hlen())
        || message.chaddr().get(..6) != Some(&mac[..])
    {
        return None;
    }
    let options = message.opts();
    let kind = match options.msg_type()? {
        MessageType::Offer => ReplyKind::Offer,
        MessageType::Ack => ReplyKind::Ack,
        MessageType::Nak => ReplyKind::Nak,
        _ => return None,
    };
    let server = match options.get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(server)) => *server,
        _ => message.siaddr(),
    };
    let mask = match options.get(OptionCode::SubnetMask) {
        Some(DhcpOption::SubnetMask(mask)) => Some(*mask),
        _ => None,
    };
    let prefix = match mask {
        Some(mask) => u32::from(mask).leading_ones() as u8,
        None => default_prefix(message.yiaddr()),
    };
    let router = match options.get(OptionCode::Router) {
        Some(DhcpOption::Router(routers)) => routers.first().copied(),
        _ => None,
    };
    let dns = match options.get(OptionCode::DomainNameServer) {
        Some(DhcpOption::DomainNameServer(servers)) => servers.clone(),
        _ => Vec::new(),
    };
    let domain = match options.get(OptionCode::DomainName) {
        Some(DhcpOption::DomainName(name)) => Some(name.clone()),
        _ => None,
    };
    let lease_time = match options.get(OptionCode::AddressLeaseTime) {
        Some(DhcpOption::AddressLeaseTime(t)) => *t,
        _ => 0,
    };
    // RFC 2131 §4.4.5: T1 defaults to half the lease, T2 to 7/8 of it.
    let renewal = match options.get(OptionCode::Renewal) {
        Some(DhcpOption::Renewal(t)) => *t,
        _ => lease_time / 2,
    };
    let rebinding = match options.get(OptionCode::Rebinding) {
        Some(DhcpOption::Rebinding(t)) => *t,
        _ => (lease_time as u64 * 7 / 8) as u32,
    };
    let text = match options.get(OptionCode::Message) {
        Some(DhcpOption::Message(text)) => Some(text.clone()),
        _ => None,
    };
    Some(Reply {
        kind,
        address: message.yiaddr(),
        server,
        prefix,
        mask,
        router,
        dns,
        domain,
        lease_time,
        renewal,
        rebinding,
        message: text,
    })
}

/// Where the options start: after the fixed header and the magic cookie.
const OPTIONS_AT: usize = 240;
const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];

/// The datagram with only the options this client reads, each of a length
/// it can have; `None` when the options do not even parse as code-length-
/// value. dhcproto's decoder asserts on the lengths of options it knows
/// (debug builds panic on them; found by tests/fuzz.rs), and nothing else
/// in a reply is used: what any machine on the LAN sends is cut down to
/// what is understood before it is decoded.
fn keep_known_options(bytes: &[u8]) -> Option<Vec<u8>> {
    if bytes.len() < OPTIONS_AT || bytes[236..OPTIONS_AT] != MAGIC_COOKIE {
        return None;
    }
    let mut kept = bytes[..OPTIONS_AT].to_vec();
    let mut at = OPTIONS_AT;
    while at < bytes.len() {
        let code = bytes[at];
        match code {
            0 => {
                at += 1;
                continue;
            }
            255 => break,
            _ => {}
        }
        let len = usize::from(*bytes.get(at + 1)?);
        let value = bytes.get(at + 2..at + 2 + len)?;
        let fits = match code {
            // Subnet mask, server identifier, lease time, T1, T2.
            1 | 54 | 51 | 58 | 59 => len == 4,
            // Routers, DNS servers.
            3 | 6 => len >= 4 && len % 4 == 0,
            // Message type.
            53 => len == 1,
            // Domain name, message.
            15 | 56 => len >= 1,
            _ => false,
        };
        if fits {
            kept.extend_from_slice(&[code, len as u8]);
            kept.extend_from_slice(value);
        }
        at += 2 + len;
    }
    kept.push(255);
    Some(kept)
}

/// The classful prefix, for a server that sends no subnet mask.
fn default_prefix(address: Ipv4Addr) -> u8 {
    match address.octets()[0] {
        0..=127 => 8,
        128..=191 => 16,
        _ => 24,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_mac_gets_a_client_id_from_the_container() {
        let mac = [2, 0, 0, 0, 0, 1];
        let a = ClientIdentity::shared_mac(mac, "a", None);
        let b = ClientIdentity::shared_mac(mac, "b", None);
        assert_ne!(a.client_id, b.client_id);
        assert_eq!(
            a.client_id,
            ClientIdentity::shared_mac(mac, "a", None).client_id
        );
        assert_eq!(a.client_id.len(), 1 + 4 + 2 + 16);
        assert_eq!(a.client_id[0], 255);
        assert_eq!(&a.client_id[5..7], &[0, 4]);
        assert_eq!(a.mac, mac);
    }

    fn identity() -> ClientIdentity {
        ClientIdentity::new([2, 0, 0, 0, 0, 1], Some("web".into()))
    }

    /// A server's reply to `xid`, as dnsmasq would build it.
    fn reply(xid: u32, kind: MessageType, t1: Option<u32>) -> Vec<u8> {
        let mut message = Message::new_with_id(
            xid,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::new(198, 18, 0, 50),
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            &[2, 0, 0, 0, 0, 1],
        );
        message.set_opcode(v4::Opcode::BootReply);
        let options = message.opts_mut();
        options.insert(DhcpOption::MessageType(kind));
        options.insert(DhcpOption::ServerIdentifier(Ipv4Addr::new(198, 18, 0, 1)));
        options.insert(DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)));
        options.insert(DhcpOption::Router(vec![Ipv4Addr::new(198, 18, 0, 1)]));
        options.insert(DhcpOption::AddressLeaseTime(120));
        if let Some(t1) = t1 {
            options.insert(DhcpOption::Renewal(t1));
        }
        message.to_vec().unwrap()
    }

    #[test]
    fn client_id_is_ethernet_and_mac() {
        assert_eq!(identity().client_id_hex(), "01020000000001");
    }

    #[test]
    fn discover_broadcasts_and_asks_for_the_previous_address() {
        let bytes = discover(7, &identity(), Some(Ipv4Addr::new(198, 18, 0, 9)));
        let message = Message::decode(&mut Decoder::new(&bytes)).unwrap();
        assert!(message.flags().broadcast());
        assert_eq!(message.opts().msg_type(), Some(MessageType::Discover));
        assert_eq!(
            message.opts().get(OptionCode::RequestedIpAddress),
            Some(&DhcpOption::RequestedIpAddress(Ipv4Addr::new(
                198, 18, 0, 9
            )))
        );
        assert_eq!(
            message.opts().get(OptionCode::Hostname),
            Some(&DhcpOption::Hostname("web".into()))
        );
    }

    #[test]
    fn release_carries_ciaddr_and_server() {
        let address = Ipv4Addr::new(198, 18, 0, 50);
        let server = Ipv4Addr::new(198, 18, 0, 1);
        let bytes = release(9, &identity(), address, server);
        let message = Message::decode(&mut Decoder::new(&bytes)).unwrap();
        assert_eq!(message.ciaddr(), address);
        assert_eq!(message.opts().msg_type(), Some(MessageType::Release));
        assert_eq!(
            message.opts().get(OptionCode::ServerIdentifier),
            Some(&DhcpOption::ServerIdentifier(server))
        );
    }

    #[test]
    fn reads_an_ack_with_defaults_for_t1_and_t2() {
        let parsed =
            parse_reply(&reply(5, MessageType::Ack, None), 5, &[2, 0, 0, 0, 0, 1]).unwrap();
        assert_eq!(parsed.kind, ReplyKind::Ack);
        assert_eq!(parsed.address, Ipv4Addr::new(198, 18, 0, 50));
        assert_eq!(parsed.prefix, 24);
        assert_eq!(parsed.router, Some(Ipv4Addr::new(198, 18, 0, 1)));
        assert_eq!(
            (parsed.lease_time, parsed.renewal, parsed.rebinding),
            (120, 60, 105)
        );
        let explicit =
            parse_reply(&reply(5, MessageType::Ack, Some(4)), 5, &[2, 0, 0, 0, 0, 1]).unwrap();
        assert_eq!(explicit.renewal, 4);
    }

    #[test]
    fn a_hardware_length_above_16_is_ignored_not_a_panic() {
        let mut bytes = reply(7, MessageType::Ack, None);
        bytes[2] = 200; // hlen
        assert!(parse_reply(&bytes, 7, &identity().mac).is_none());
    }

    #[test]
    fn ignores_other_transactions_and_clients() {
        let bytes = reply(5, MessageType::Offer, None);
        assert!(parse_reply(&bytes, 6, &[2, 0, 0, 0, 0, 1]).is_none());
        assert!(parse_reply(&bytes, 5, &[2, 0, 0, 0, 0, 2]).is_none());
        assert!(parse_reply(&discover(5, &identity(), None), 5, &[2, 0, 0, 0, 0, 1]).is_none());
    }
}
