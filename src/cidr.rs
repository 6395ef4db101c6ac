//! Addresses with a prefix length (`192.0.2.10/24`, `2001:db8::a/64`),
//! parsed strictly; IPv6 ones are written in RFC 5952's canonical form.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An IPv4 address together with the prefix length of its subnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Cidr {
    pub address: Ipv4Addr,
    pub prefix: u8,
}

impl Ipv4Cidr {
    pub fn new(address: Ipv4Addr, prefix: u8) -> Option<Self> {
        (prefix <= 32).then_some(Ipv4Cidr { address, prefix })
    }

    fn mask(self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - self.prefix)
        }
    }

    /// The subnet's network address (host bits zero).
    pub fn network(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.address) & self.mask())
    }

    /// The subnet's broadcast address (host bits one).
    pub fn broadcast(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.address) | !self.mask())
    }

    /// The subnet itself, with the host bits cleared.
    pub fn subnet(self) -> Ipv4Cidr {
        Ipv4Cidr {
            address: self.network(),
            prefix: self.prefix,
        }
    }

    /// Whether `ip` lies inside this subnet.
    pub fn contains(self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.network())
    }

    /// Whether two subnets share any address.
    pub fn overlaps(self, other: Ipv4Cidr) -> bool {
        self.contains(other.network()) || other.contains(self.network())
    }

    /// A name for the subnet usable as one store key segment: `192.0.2.0-24`.
    pub fn pool_name(self) -> String {
        format!("{}-{}", self.network(), self.prefix)
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix)
    }
}

/// Why a CIDR string was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CidrError {
    MissingPrefix,
    BadAddress,
    BadPrefix,
}

impl FromStr for Ipv4Cidr {
    type Err = CidrError;

    fn from_str(text: &str) -> Result<Self, CidrError> {
        let (address, prefix) = text.split_once('/').ok_or(CidrError::MissingPrefix)?;
        let address = parse_ipv4(address).ok_or(CidrError::BadAddress)?;
        if prefix.is_empty() || prefix.len() > 2 || !prefix.bytes().all(|b| b.is_ascii_digit()) {
            return Err(CidrError::BadPrefix);
        }
        let prefix: u8 = prefix.parse().map_err(|_| CidrError::BadPrefix)?;
        Ipv4Cidr::new(address, prefix).ok_or(CidrError::BadPrefix)
    }
}

/// Dotted-quad IPv4 only: no shorthand forms (`10.1`), no leading zeros
/// (which some libcs read as octal), no surrounding spaces.
pub fn parse_ipv4(text: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = text.split('.').collect();
    if parts.len() != 4 {
        return None;
    }
    let mut octets = [0u8; 4];
    for (octet, part) in octets.iter_mut().zip(&parts) {
        if part.is_empty()
            || part.len() > 3
            || !part.bytes().all(|b| b.is_ascii_digit())
            || (part.len() > 1 && part.starts_with('0'))
        {
            return None;
        }
        *octet = part.parse().ok()?;
    }
    Some(Ipv4Addr::from(octets))
}

/// An IPv6 address together with the prefix length of its subnet. Shown in
/// RFC 5952's canonical form (lower case, longest zero run as `::`), so one
/// address has one text — and one store key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv6Cidr {
    pub address: Ipv6Addr,
    pub prefix: u8,
}

impl Ipv6Cidr {
    pub fn new(address: Ipv6Addr, prefix: u8) -> Option<Self> {
        (prefix <= 128).then_some(Ipv6Cidr { address, prefix })
    }

    fn mask(self) -> u128 {
        if self.prefix == 0 {
            0
        } else {
            u128::MAX << (128 - self.prefix)
        }
    }

    /// The subnet's first address (host bits zero: the subnet-router anycast).
    pub fn network(self) -> Ipv6Addr {
        Ipv6Addr::from(u128::from(self.address) & self.mask())
    }

    /// The subnet's last address.
    pub fn last(self) -> Ipv6Addr {
        Ipv6Addr::from(u128::from(self.address) | !self.mask())
    }

    /// The subnet itself, with the host bits cleared.
    pub fn subnet(self) -> Ipv6Cidr {
        Ipv6Cidr {
            address: self.network(),
            prefix: self.prefix,
        }
    }

    pub fn contains(self, ip: Ipv6Addr) -> bool {
        u128::from(ip) & self.mask() == u128::from(self.network())
    }

    pub fn overlaps(self, other: Ipv6Cidr) -> bool {
        self.contains(other.network()) || other.contains(self.network())
    }
}

impl fmt::Display for Ipv6Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix)
    }
}

impl FromStr for Ipv6Cidr {
    type Err = CidrError;

    fn from_str(text: &str) -> Result<Self, CidrError> {
        let (address, prefix) = text.split_once('/').ok_or(CidrError::MissingPrefix)?;
        let address = parse_ipv6(address).ok_or(CidrError::BadAddress)?;
        if prefix.is_empty() || prefix.len() > 3 || !prefix.bytes().all(|b| b.is_ascii_digit()) {
            return Err(CidrError::BadPrefix);
        }
        let prefix: u8 = prefix.parse().map_err(|_| CidrError::BadPrefix)?;
        Ipv6Cidr::new(address, prefix).ok_or(CidrError::BadPrefix)
    }
}

/// An IPv6 address in any RFC 4291 text form (no zone index, no spaces, no
/// IPv4 address: those take `parse_ipv4`).
pub fn parse_ipv6(text: &str) -> Option<Ipv6Addr> {
    if !text.contains(':') {
        return None;
    }
    text.parse().ok()
}

/// Why `address` cannot be a host's own unicast address on a LAN, or `None`.
pub fn ipv6_unicast_problem(address: Ipv6Addr) -> Option<&'static str> {
    let bits = u128::from(address);
    Some(if address.is_unspecified() {
        "the unspecified address ::"
    } else if address.is_loopback() {
        "the loopback address ::1"
    } else if address.is_multicast() {
        "a multicast address (ff00::/8)"
    } else if bits >> 118 == 0x3fa {
        "a link-local address (fe80::/10); the kernel gives each interface its own"
    } else if bits >> 32 == 0xffff {
        "an IPv4-mapped address (::ffff:0:0/96); give the IPv4 address as IP"
    } else {
        return None;
    })
}

/// Whether `address` is link-local (fe80::/10): a router's usual address,
/// used together with the interface.
pub fn is_ipv6_link_local(address: Ipv6Addr) -> bool {
    u128::from(address) >> 118 == 0x3fa
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_is_canonical_and_strict() {
        let a: Ipv6Cidr = "2001:DB8:0::A/64".parse().unwrap();
        let b: Ipv6Cidr = "2001:db8:0:0:0:0:0:a/64".parse().unwrap();
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "2001:db8::a/64");
        assert_eq!(a.network().to_string(), "2001:db8::");
        assert_eq!(a.last().to_string(), "2001:db8::ffff:ffff:ffff:ffff");
        assert!(a.contains("2001:db8::ffff".parse().unwrap()));
        assert!(!a.contains("2001:db8:1::1".parse().unwrap()));
        assert_eq!(
            "2001:db8::1".parse::<Ipv6Cidr>(),
            Err(CidrError::MissingPrefix)
        );
        assert_eq!(
            "2001:db8::1/129".parse::<Ipv6Cidr>(),
            Err(CidrError::BadPrefix)
        );
        assert_eq!(
            "192.0.2.1/24".parse::<Ipv6Cidr>(),
            Err(CidrError::BadAddress)
        );
        assert_eq!(
            "fe80::1%eth0/64".parse::<Ipv6Cidr>(),
            Err(CidrError::BadAddress)
        );
        let c: Ipv6Cidr = "2001:db8::/48".parse().unwrap();
        assert!(c.overlaps(a) && a.overlaps(c));
        assert!(!a.overlaps("2001:db8:1::/64".parse().unwrap()));
    }

    #[test]
    fn ipv6_non_unicast_addresses_are_named() {
        for (text, word) in [
            ("::", "unspecified"),
            ("::1", "loopback"),
            ("ff02::1", "multicast"),
            ("fe80::1", "link-local"),
            ("febf::1", "link-local"),
            ("::ffff:192.0.2.1", "IPv4-mapped"),
        ] {
            let problem = ipv6_unicast_problem(text.parse().unwrap()).unwrap();
            assert!(problem.contains(word), "{text}: {problem}");
        }
        assert_eq!(ipv6_unicast_problem("2001:db8::a".parse().unwrap()), None);
        assert_eq!(ipv6_unicast_problem("fec0::1".parse().unwrap()), None);
        assert!(is_ipv6_link_local("fe80::1".parse().unwrap()));
        assert!(!is_ipv6_link_local("2001:db8::1".parse().unwrap()));
    }

    #[test]
    fn parses_and_derives_subnet_addresses() {
        let cidr: Ipv4Cidr = "192.0.2.10/24".parse().unwrap();
        assert_eq!(cidr.network(), Ipv4Addr::new(192, 0, 2, 0));
        assert_eq!(cidr.broadcast(), Ipv4Addr::new(192, 0, 2, 255));
        assert!(cidr.contains(Ipv4Addr::new(192, 0, 2, 1)));
        assert!(!cidr.contains(Ipv4Addr::new(192, 0, 3, 1)));
        assert_eq!(cidr.pool_name(), "192.0.2.0-24");
        assert_eq!(cidr.to_string(), "192.0.2.10/24");
    }

    #[test]
    fn refuses_malformed_text() {
        assert_eq!(
            "192.0.2.10".parse::<Ipv4Cidr>(),
            Err(CidrError::MissingPrefix)
        );
        assert_eq!(
            "192.0.2.256/24".parse::<Ipv4Cidr>(),
            Err(CidrError::BadAddress)
        );
        assert_eq!("192.0.2/24".parse::<Ipv4Cidr>(), Err(CidrError::BadAddress));
        assert_eq!(
            "192.0.2.010/24".parse::<Ipv4Cidr>(),
            Err(CidrError::BadAddress)
        );
        assert_eq!(
            " 192.0.2.1/24".parse::<Ipv4Cidr>(),
            Err(CidrError::BadAddress)
        );
        assert_eq!(
            "192.0.2.1/33".parse::<Ipv4Cidr>(),
            Err(CidrError::BadPrefix)
        );
        assert_eq!("192.0.2.1/".parse::<Ipv4Cidr>(), Err(CidrError::BadPrefix));
        assert_eq!(
            "192.0.2.1/+4".parse::<Ipv4Cidr>(),
            Err(CidrError::BadPrefix)
        );
        assert_eq!(
            "192.0.2.1/2a".parse::<Ipv4Cidr>(),
            Err(CidrError::BadPrefix)
        );
    }

    #[test]
    fn overlap() {
        let a: Ipv4Cidr = "198.51.100.0/24".parse().unwrap();
        let b: Ipv4Cidr = "198.51.100.128/25".parse().unwrap();
        let c: Ipv4Cidr = "198.51.101.0/24".parse().unwrap();
        assert!(a.overlaps(b) && b.overlaps(a));
        assert!(!a.overlaps(c));
    }
}
