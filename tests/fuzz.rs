//! Property tests over the parsers that take input from outside (issue
//! 16): container requests (annotations and environment), the OCI state
//! and config.json, DHCPv4 and DHCPv6 replies, DNS messages, and the
//! runtime wrapper's command line. No input may panic; every refused
//! request names its setting. Bounded (a few hundred cases a property) so
//! that CI runs them in seconds; no lab needed.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use proptest::prelude::*;

use macvlan_runc::config::Policy;
use macvlan_runc::request::{self, Settings};

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 2000,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// The contract's setting names, in both spellings, and a few others.
const KEYS: &[&str] = &[
    "TYPE",
    "HOSTIF",
    "IP",
    "GW",
    "VLAN",
    "MTU",
    "MODE",
    "RATE",
    "BURST",
    "LATENCY",
    "INGRESS_RATE",
    "DISCOVER",
    "PORT",
    "SERVICE",
    "NETWORK",
    "NETWORKS",
    "IP6",
    "GW6",
    "macvlan.type",
    "macvlan.host-interface",
    "macvlan.ip",
    "macvlan.gateway",
    "macvlan.vlan",
    "macvlan.mtu",
    "macvlan.mode",
    "macvlan.rate",
    "macvlan.network",
    "macvlan.networks",
    "macvlan.ip6",
    "macvlan.gateway6",
    "macvlan.discover",
    "macvlan.port",
    "macvlan.bogus",
    "OTHER",
];

/// Values near what users write, and garbage.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("flat".to_string()),
        Just("dhcp".to_string()),
        Just("vlan".to_string()),
        Just("lan0".to_string()),
        Just("192.0.2.10/24".to_string()),
        Just("2001:db8::10/64".to_string()),
        Just("lan,storage=192.0.2.40+2001:db8::40".to_string()),
        Just("10mbit".to_string()),
        Just("true".to_string()),
        "[0-9./:a-f,=+]{0,24}",
        "\\PC{0,40}",
    ]
}

fn settings() -> impl Strategy<Value = (BTreeMap<String, String>, Vec<String>)> {
    let pair = || (proptest::sample::select(KEYS), value());
    (
        proptest::collection::vec(pair(), 0..6),
        proptest::collection::vec(pair(), 0..6),
    )
        .prop_map(|(annotations, env)| {
            let annotations = annotations
                .into_iter()
                .filter(|(k, _)| k.starts_with("macvlan."))
                .map(|(k, v)| (k.to_string(), v))
                .collect();
            let env = env.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
            (annotations, env)
        })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn a_request_parses_or_is_refused_naming_its_setting(
        (annotations, env) in settings(),
        allow_env in any::<bool>(),
        allow_adhoc in any::<bool>(),
    ) {
        let policy = Policy { allow_env, allow_adhoc, ..Policy::default() };
        match Settings::collect(&annotations, &env, allow_env) {
            Err(e) => prop_assert!(!e.setting.is_empty(), "{e}"),
            Ok(settings) => {
                if let Err(e) = request::parse("c1", &settings, &policy) {
                    prop_assert!(!e.setting.is_empty(), "{e}");
                    prop_assert!(!e.problem.is_empty(), "{e}");
                }
                let _ = request::parse_discovery(&settings);
                let _ = request::parse_shaping("c1", &settings);
            }
        }
    }

    #[test]
    fn oci_state_and_config_never_panic(text in "\\PC{0,200}", pid in any::<i64>()) {
        let _ = macvlan_runc::oci::State::parse(&text);
        let _ = macvlan_runc::oci::BundleConfig::parse(&text);
        let state = format!(
            r#"{{"ociVersion":"1.0.2","id":{text:?},"status":"creating","pid":{pid},"bundle":{text:?},"annotations":{{"macvlan.ip":{text:?}}}}}"#
        );
        let _ = macvlan_runc::oci::State::parse(&state);
        let config = format!(
            r#"{{"process":{{"env":[{text:?}]}},"hostname":{text:?},"linux":{{"namespaces":[{{"type":"network","path":{text:?}}}]}}}}"#
        );
        let _ = macvlan_runc::oci::BundleConfig::parse(&config);
    }

    #[test]
    fn dhcp_replies_never_panic(
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..12),
        cut in any::<usize>(),
    ) {
        let mac = [2, 0, 0, 0, 0, 1];
        let mut bytes = sound_offer(0x1234, mac);
        let sound = macvlan_runc::dhcp::packet::parse_reply(&bytes, 0x1234, &mac);
        prop_assert_eq!(sound.map(|r| r.lease_time), Some(120));
        for (at, byte) in flips {
            let at = at % bytes.len();
            bytes[at] = byte;
        }
        bytes.truncate(cut % (bytes.len() + 1));
        if let Some(reply) = macvlan_runc::dhcp::packet::parse_reply(&bytes, 0x1234, &mac) {
            let rules = macvlan_runc::dhcp::rules::LeaseRules::default();
            if let Err(refusal) = rules.check(&reply) {
                prop_assert!(!refusal.field.is_empty());
            }
            let mut reply = reply;
            macvlan_runc::dhcp::rules::order_timers(&mut reply);
            prop_assert!(reply.lease_time < 2 || reply.lease_time == u32::MAX
                || (reply.renewal < reply.rebinding && reply.rebinding < reply.lease_time)
                || reply.renewal == 0);
        }
    }

    #[test]
    fn dhcpv6_answers_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..300),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..12),
        cut in any::<usize>(),
    ) {
        let client = macvlan_runc::dhcp::client6("c1");
        let _ = macvlan_runc::dhcp::v6::read(&bytes, 0x123456, &client);
        let mut reply = sound_reply6(&client);
        let sound = macvlan_runc::dhcp::v6::read(&reply, 0x123456, &client);
        prop_assert_eq!(sound.and_then(|a| a.address), Some("2001:db8::100".parse().unwrap()));
        for (at, byte) in flips {
            let at = at % reply.len();
            reply[at] = byte;
        }
        reply.truncate(cut % (reply.len() + 1));
        let _ = macvlan_runc::dhcp::v6::read(&reply, 0x123456, &client);
    }

    #[test]
    fn dns_messages_never_panic(
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8),
        name in "[a-z0-9._-]{1,40}",
    ) {
        use hickory_proto::op::{Message, MessageType, OpCode, Query};
        use hickory_proto::rr::{Name, RecordType};
        use std::str::FromStr;
        let Ok(owner) = Name::from_str(&name) else { return Ok(()) };
        let mut query = Message::new(7, MessageType::Query, OpCode::Query);
        query.add_query(Query::query(owner, RecordType::SRV));
        let mut bytes = query.to_vec().unwrap();
        for (at, byte) in flips {
            let at = at % bytes.len();
            bytes[at] = byte;
        }
        if let Ok(message) = Message::from_vec(&bytes) {
            let domain = macvlan_runc::discovery::dns::DnsOptions::parse_domain("lab").unwrap();
            let reply = macvlan_runc::discovery::dns::answer(&message, &domain, true, &Nothing);
            if let macvlan_runc::discovery::dns::Reply::Answer(answer) = reply {
                let limit = macvlan_runc::discovery::dns::udp_limit(&message);
                if let Some(encoded) = macvlan_runc::discovery::dns::encode_within(answer, limit) {
                    prop_assert!(encoded.len() <= limit);
                }
            }
        }
    }

    #[test]
    fn the_wrappers_command_line_never_panics(
        args in proptest::collection::vec(
            prop_oneof![
                Just("--root".to_string()),
                Just("--log".to_string()),
                Just("--log-format=json".to_string()),
                Just("--macvlan-config".to_string()),
                Just("--".to_string()),
                Just("create".to_string()),
                Just("--bundle".to_string()),
                "-{0,2}[a-z-]{0,10}(=[a-z/]{0,8})?",
            ],
            0..10,
        ),
    ) {
        let invocation = macvlan_runc::oci::wrapper::parse_invocation(&args);
        if let Some(at) = invocation.subcommand {
            prop_assert!(at < invocation.runc_args.len());
        }
        // Only the wrapper's own option (and its value) is taken out.
        prop_assert!(invocation.runc_args.len() <= args.len());
    }
}

/// A store with no endpoints, for the DNS answer.
struct Nothing;

impl macvlan_runc::discovery::dns::Endpoints for Nothing {
    fn of(&self, _: &str) -> anyhow::Result<Vec<macvlan_runc::discovery::Endpoint>> {
        Ok(Vec::new())
    }
    fn all(&self) -> anyhow::Result<Vec<(String, macvlan_runc::discovery::Endpoint)>> {
        Ok(Vec::new())
    }
}

/// A DHCPv6 REPLY with an address for `client`, to mutate.
fn sound_reply6(client: &macvlan_runc::dhcp::v6::Client) -> Vec<u8> {
    use dhcproto::v6::{
        DhcpOption, DhcpOptions, IAAddr, Message, MessageType, Status, StatusCode, IANA,
    };
    use dhcproto::{Encodable, Encoder};
    let mut message = Message::new_with_id(MessageType::Reply, [0x12, 0x34, 0x56]);
    let mut address = DhcpOptions::new();
    address.insert(DhcpOption::StatusCode(StatusCode {
        status: Status::Success,
        msg: "ok".into(),
    }));
    let mut ia = DhcpOptions::new();
    ia.insert(DhcpOption::IAAddr(IAAddr {
        addr: "2001:db8::100".parse().unwrap(),
        preferred_life: 300,
        valid_life: 600,
        opts: address,
    }));
    let options = message.opts_mut();
    options.insert(DhcpOption::ClientId(client.duid.clone()));
    options.insert(DhcpOption::ServerId(vec![0, 1, 2, 3]));
    options.insert(DhcpOption::IANA(IANA {
        id: client.iaid,
        t1: 150,
        t2: 240,
        opts: ia,
    }));
    options.insert(DhcpOption::DomainNameServers(vec!["2001:db8::53"
        .parse()
        .unwrap()]));
    let mut bytes = Vec::new();
    message.encode(&mut Encoder::new(&mut bytes)).unwrap();
    bytes
}

/// An OFFER as dnsmasq would send one, to mutate.
fn sound_offer(xid: u32, mac: [u8; 6]) -> Vec<u8> {
    use dhcproto::v4::{DhcpOption, Message, MessageType, Opcode};
    use dhcproto::{Encodable, Encoder};
    let mut message = Message::default();
    message
        .set_opcode(Opcode::BootReply)
        .set_xid(xid)
        .set_chaddr(&mac)
        .set_yiaddr(Ipv4Addr::new(192, 0, 2, 100));
    let options = message.opts_mut();
    options.insert(DhcpOption::MessageType(MessageType::Offer));
    options.insert(DhcpOption::ServerIdentifier(Ipv4Addr::new(192, 0, 2, 1)));
    options.insert(DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)));
    options.insert(DhcpOption::Router(vec![Ipv4Addr::new(192, 0, 2, 1)]));
    options.insert(DhcpOption::AddressLeaseTime(120));
    options.insert(DhcpOption::Renewal(60));
    options.insert(DhcpOption::Rebinding(105));
    let mut bytes = Vec::new();
    message.encode(&mut Encoder::new(&mut bytes)).unwrap();
    bytes
}
