//! IPv4 addresses with a prefix length (`192.0.2.10/24`), parsed strictly.

use std::fmt;
use std::net::Ipv4Addr;
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

#[cfg(test)]
mod tests {
    use super::*;

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
