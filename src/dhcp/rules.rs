//! What a DHCP reply must be before its lease is used: anyone on the LAN can
//! answer a broadcast, so an offer is checked field by field (issue 16).

use std::net::Ipv4Addr;
use std::ops::RangeInclusive;

use crate::cidr::Ipv4Cidr;

use super::packet::Reply;

/// The checks a reply's lease must pass on one container's interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRules {
    /// Leases shorter than this are refused (`[dhcp] min_lease`).
    pub min_lease: u32,
    /// Prefix lengths a subnet mask may have (`[dhcp] prefix_lengths`).
    pub prefixes: RangeInclusive<u8>,
    /// This host's own addresses on the parent: never a container's.
    pub reserved: Vec<Ipv4Addr>,
    /// The leased address must lie in one of these (the network's subnet,
    /// or `[policy] allowed_subnets` for ad-hoc requests); empty: anywhere.
    pub subnets: Vec<Ipv4Cidr>,
}

impl Default for LeaseRules {
    fn default() -> Self {
        LeaseRules {
            min_lease: 60,
            prefixes: 8..=30,
            reserved: Vec::new(),
            subnets: Vec::new(),
        }
    }
}

/// Why a reply was not used: the field and what would have been accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub address: Ipv4Addr,
    pub server: Ipv4Addr,
    pub field: &'static str,
    pub reason: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} from server {}: {}: {}",
            self.address, self.server, self.field, self.reason
        )
    }
}

const ADDRESS: &str = "yiaddr (the leased address)";
const MASK: &str = "option 1 (subnet mask)";
const ROUTER: &str = "option 3 (router)";
const LEASE: &str = "option 51 (lease time)";

impl LeaseRules {
    /// The rules for a container on `network` (none: an ad-hoc request,
    /// held to `[policy] allowed_subnets`) beside this host's `reserved`
    /// addresses on the parent.
    pub fn new(
        config: &crate::config::Config,
        network: Option<&crate::network::Network>,
        reserved: &[Ipv4Addr],
    ) -> LeaseRules {
        let subnets = match network {
            Some(network) => network.subnet().into_iter().collect(),
            None => config.policy.allowed_subnets.clone(),
        };
        LeaseRules {
            min_lease: u32::try_from(config.dhcp.min_lease.as_secs()).unwrap_or(u32::MAX),
            prefixes: config.dhcp.prefix_lengths.clone(),
            reserved: reserved.to_vec(),
            subnets,
        }
    }

    /// Checks an OFFER or ACK; a NAK carries no lease and passes.
    pub fn check(&self, reply: &Reply) -> Result<(), Refusal> {
        let refuse = |field: &'static str, reason: String| Refusal {
            address: reply.address,
            server: reply.server,
            field,
            reason,
        };
        if reply.kind == super::packet::ReplyKind::Nak {
            return Ok(());
        }
        let address = reply.address;
        if let Some(kind) = unusable(address) {
            return Err(refuse(
                ADDRESS,
                format!("{kind} address; expected a unicast host address"),
            ));
        }
        if let Some(mask) = reply.mask {
            let bits = u32::from(mask);
            if bits.leading_ones() != bits.count_ones() {
                return Err(refuse(
                    MASK,
                    format!(
                        "{mask} is not contiguous; expected ones then zeros, like 255.255.255.0"
                    ),
                ));
            }
        }
        if !self.prefixes.contains(&reply.prefix) {
            return Err(refuse(
                MASK,
                format!(
                    "/{} is outside the accepted prefix lengths /{}–/{} ([dhcp] prefix_lengths)",
                    reply.prefix,
                    self.prefixes.start(),
                    self.prefixes.end()
                ),
            ));
        }
        let subnet = Ipv4Cidr {
            address,
            prefix: reply.prefix,
        };
        if address == subnet.network() || address == subnet.broadcast() {
            return Err(refuse(
                ADDRESS,
                format!(
                    "the {} address of {}/{}; expected a host address",
                    if address == subnet.network() {
                        "network"
                    } else {
                        "broadcast"
                    },
                    subnet.network(),
                    subnet.prefix
                ),
            ));
        }
        if let Some(router) = reply.router {
            if router == address {
                return Err(refuse(
                    ADDRESS,
                    format!("the router's own address ({ROUTER})"),
                ));
            }
            if !subnet.contains(router) || unusable(router).is_some() {
                return Err(refuse(
                    ROUTER,
                    format!(
                        "{router} is not a host of the leased subnet {}/{}",
                        subnet.network(),
                        subnet.prefix
                    ),
                ));
            }
        }
        if self.reserved.contains(&address) {
            return Err(refuse(
                ADDRESS,
                "an address of this host on the parent interface".to_string(),
            ));
        }
        if !self.subnets.is_empty() && !self.subnets.iter().any(|s| s.contains(address)) {
            return Err(refuse(
                ADDRESS,
                format!(
                    "outside the allowed subnets {}",
                    self.subnets
                        .iter()
                        .map(|s| s.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        if reply.lease_time == 0 {
            return Err(refuse(
                LEASE,
                "missing or zero; expected a lease time in seconds".to_string(),
            ));
        }
        if reply.lease_time < self.min_lease {
            return Err(refuse(
                LEASE,
                format!(
                    "{} s is shorter than the minimum {} s ([dhcp] min_lease)",
                    reply.lease_time, self.min_lease
                ),
            ));
        }
        Ok(())
    }
}

/// The kind of address no container may have, if `address` is one.
fn unusable(address: Ipv4Addr) -> Option<&'static str> {
    if address.is_unspecified() {
        Some("the unspecified")
    } else if address.is_broadcast() {
        Some("the limited broadcast")
    } else if address.is_loopback() {
        Some("a loopback")
    } else if address.is_multicast() {
        Some("a multicast")
    } else if address.octets()[0] >= 240 {
        Some("a reserved (240.0.0.0/4)")
    } else if address.is_link_local() {
        Some("a link-local")
    } else {
        None
    }
}

/// Puts T1 and T2 in order (0 < T1 < T2 < lease, RFC 2131 §4.4.5) when a
/// server sent them otherwise: the defaults, half and seven eighths.
pub fn order_timers(reply: &mut Reply) {
    let lease = reply.lease_time;
    if lease == u32::MAX || lease < 2 {
        return;
    }
    if reply.renewal == 0 || reply.renewal >= lease {
        reply.renewal = lease / 2;
    }
    if reply.rebinding <= reply.renewal || reply.rebinding >= lease {
        let seven_eighths = (u64::from(lease) * 7 / 8) as u32;
        reply.rebinding = if seven_eighths > reply.renewal {
            seven_eighths
        } else {
            reply.renewal + (lease - reply.renewal) / 2
        };
    }
}

/// Parses `[dhcp] prefix_lengths` ("8-30").
pub fn parse_prefixes(text: &str) -> Option<RangeInclusive<u8>> {
    let (low, high) = text.trim().split_once('-')?;
    let low: u8 = low.trim().parse().ok()?;
    let high: u8 = high.trim().parse().ok()?;
    (1 <= low && low <= high && high <= 32).then_some(low..=high)
}

#[cfg(test)]
mod tests {
    use super::super::packet::ReplyKind;
    use super::*;

    fn offer() -> Reply {
        Reply {
            kind: ReplyKind::Offer,
            address: Ipv4Addr::new(192, 0, 2, 100),
            server: Ipv4Addr::new(192, 0, 2, 1),
            prefix: 24,
            mask: Some(Ipv4Addr::new(255, 255, 255, 0)),
            router: Some(Ipv4Addr::new(192, 0, 2, 1)),
            dns: vec![],
            domain: None,
            lease_time: 120,
            renewal: 60,
            rebinding: 105,
            message: None,
        }
    }

    fn field_of(reply: Reply, rules: &LeaseRules) -> &'static str {
        rules.check(&reply).unwrap_err().field
    }

    #[test]
    fn a_sound_offer_passes() {
        assert_eq!(LeaseRules::default().check(&offer()), Ok(()));
    }

    #[test]
    fn every_bad_field_is_refused_by_name() {
        let rules = LeaseRules {
            reserved: vec![Ipv4Addr::new(192, 0, 2, 250)],
            subnets: vec!["192.0.2.0/24".parse().unwrap()],
            ..LeaseRules::default()
        };
        for bad in [
            "0.0.0.0",
            "255.255.255.255",
            "127.0.0.5",
            "224.0.0.5",
            "169.254.1.1",
            "192.0.2.0",
            "192.0.2.255",
            "192.0.2.1",
            "192.0.2.250",
        ] {
            let mut reply = offer();
            reply.address = bad.parse().unwrap();
            if bad.starts_with("127") || bad.starts_with("224") || bad.starts_with("169") {
                reply.router = None;
            }
            assert_eq!(field_of(reply, &rules), ADDRESS, "{bad}");
        }
        let mut reply = offer();
        reply.mask = Some(Ipv4Addr::new(255, 0, 255, 0));
        assert_eq!(field_of(reply, &rules), MASK);
        let mut reply = offer();
        reply.prefix = 31;
        reply.mask = Some(Ipv4Addr::new(255, 255, 255, 254));
        assert_eq!(field_of(reply, &rules), MASK);
        let mut reply = offer();
        reply.router = Some(Ipv4Addr::new(198, 51, 100, 1));
        assert_eq!(field_of(reply, &rules), ROUTER);
        let mut reply = offer();
        reply.lease_time = 0;
        assert_eq!(field_of(reply, &rules), LEASE);
        let mut reply = offer();
        reply.lease_time = 10;
        let refusal = rules.check(&reply).unwrap_err();
        assert_eq!(refusal.field, LEASE);
        assert!(refusal
            .to_string()
            .contains("10 s is shorter than the minimum 60 s"));
        let mut reply = offer();
        reply.address = Ipv4Addr::new(198, 51, 100, 7);
        reply.router = None;
        assert!(rules
            .check(&reply)
            .unwrap_err()
            .reason
            .contains("outside the allowed subnets 192.0.2.0/24"));
        // A NAK carries no lease.
        let mut nak = offer();
        nak.kind = ReplyKind::Nak;
        nak.address = Ipv4Addr::UNSPECIFIED;
        assert_eq!(rules.check(&nak), Ok(()));
    }

    #[test]
    fn timers_are_put_in_order() {
        let mut reply = offer();
        (reply.renewal, reply.rebinding) = (500, 3);
        order_timers(&mut reply);
        assert_eq!((reply.renewal, reply.rebinding), (60, 105));
        (reply.renewal, reply.rebinding) = (110, 100);
        order_timers(&mut reply);
        assert_eq!((reply.renewal, reply.rebinding), (110, 115));
        (reply.renewal, reply.rebinding) = (30, 90);
        order_timers(&mut reply);
        assert_eq!((reply.renewal, reply.rebinding), (30, 90));
    }

    #[test]
    fn prefix_lengths_parse() {
        assert_eq!(parse_prefixes("8-30"), Some(8..=30));
        assert_eq!(parse_prefixes(" 16 - 24 "), Some(16..=24));
        for bad in ["30-8", "0-24", "8-33", "8", "a-b"] {
            assert_eq!(parse_prefixes(bad), None, "{bad}");
        }
    }
}
