//! Operator-defined networks in the store (`/macvlan/network/<name>`):
//! creating one (a subnet that overlaps no other network's, a cluster-unique
//! 802.1Q ID when it is a VLAN), removing it while nobody holds an address
//! in it, and taking addresses in it (the requested one, the one the
//! container held before, or the lowest free one of its range).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use crate::cidr::{Ipv4Cidr, Ipv6Cidr};
use crate::ipam::{self, Claim, IpamError, Wanted};
use crate::netlink::{IpvlanFlag, IpvlanMode, MacvlanMode};
use crate::record::{now, FlatRecord};
use crate::request::NetworkName;
use crate::store::{Compare, Keys, Op, Store, StoreError};

/// 802.1Q IDs a network may use: 0 (priority tags) and 4095 are reserved.
pub const IDS: std::ops::RangeInclusive<u16> = 1..=4094;

const ATTEMPTS: usize = 64;

/// After a lost race, the next address is picked among this many free ones.
const CONTENDED_SPREAD: usize = 32;

/// How a network's containers get their addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Ipam {
    /// From the store: the requested address or the lowest free one.
    #[default]
    Static,
    /// From the LAN's DHCP server, through the built-in client.
    Dhcp,
}

impl Ipam {
    pub fn as_str(self) -> &'static str {
        match self {
            Ipam::Static => "static",
            Ipam::Dhcp => "dhcp",
        }
    }
}

/// How a network's containers get IPv6 addresses (`--ipv6`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Ipv6Mode {
    /// No IPv6 on the container's interface, not even link-local.
    #[default]
    Off,
    /// From the store: the requested (`IP6`) or the lowest free address of
    /// `--ip-range6`.
    Static,
    /// From the router's advertisements (the interface's EUI-64 identifier).
    Slaac,
    /// From the LAN's DHCPv6 server; routes from advertisements.
    Dhcpv6,
}

impl Ipv6Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Ipv6Mode::Off => "off",
            Ipv6Mode::Static => "static",
            Ipv6Mode::Slaac => "slaac",
            Ipv6Mode::Dhcpv6 => "dhcpv6",
        }
    }

    fn is_off(&self) -> bool {
        *self == Ipv6Mode::Off
    }
}

/// An ipvlan network's device settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpvlanSpec {
    pub mode: IpvlanMode,
    #[serde(default)]
    pub flag: IpvlanFlag,
}

/// The kind of device a container gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LinkDriver {
    #[default]
    Macvlan,
    /// Slaves share the parent's MAC: for ports that allow one MAC (Wi-Fi,
    /// cloud VPCs, port security).
    Ipvlan,
}

impl LinkDriver {
    pub fn as_str(self) -> &'static str {
        match self {
            LinkDriver::Macvlan => "macvlan",
            LinkDriver::Ipvlan => "ipvlan",
        }
    }
}

/// A network, as `/macvlan/network/<name>` holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    #[serde(skip)]
    pub name: String,
    #[serde(default)]
    pub driver: LinkDriver,
    /// The host interface the network lives on (the trunk, for a VLAN).
    pub parent: String,
    /// macvlan's mode (bridge for ipvlan networks, where it has no meaning).
    pub mode: MacvlanMode,
    /// ipvlan networks: the mode and the flag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipvlan: Option<IpvlanSpec>,
    /// The 802.1Q ID: containers sit on the sub-interface `parent.<id>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
    /// CIDR form, host bits zero. Required for static address management.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Ipv4Addr>,
    /// The part of the subnet handed out (default: all of it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_range: Option<String>,
    /// Addresses never handed out (other hosts, printers, routers…).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<Ipv4Addr>,
    #[serde(default)]
    pub ipam: Ipam,
    /// The IPv6 side: how addresses are got, and for static ones the
    /// subnet, gateway (link-local allowed), range and exclusions.
    #[serde(default, skip_serializing_if = "Ipv6Mode::is_off")]
    pub ipv6: Ipv6Mode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet6: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway6: Option<Ipv6Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_range6: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude6: Vec<Ipv6Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Egress and ingress caps (kbit/s): a container gets these unless it
    /// asks for less.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_kbit: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_rate_kbit: Option<u64>,
    /// Only annotations may request it, not environment variables (which
    /// an image's author sets).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub annotations_only: bool,
    /// This host reaches its own containers on the network (and they it)
    /// through a host-side macvlan on the same parent and a /32 route per
    /// local container.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub host_access: bool,
    /// The host's address on the network, held by the host-side device
    /// (`--host-address`); never a container's. Without it the host reaches
    /// its containers from its own address on the parent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_address: Option<Ipv4Addr>,
    pub created_at: u64,
    /// `network rm` has begun: no new claims (issue 16). Set before it
    /// looks for holders, so a claim racing it either shows up as a holder
    /// or fails; a `network rm` that died here is finished by running it
    /// again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub removing: bool,
    /// DHCP networks: the lease's DNS servers and domain go into the
    /// container's /etc/resolv.conf (`--dhcp-dns`), put back at stop.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dhcp_dns: bool,
}

impl Network {
    pub fn subnet(&self) -> Option<Ipv4Cidr> {
        self.subnet.as_deref().and_then(|s| s.parse().ok())
    }

    /// The addresses handed out: the range, else the whole subnet.
    pub fn range(&self) -> Option<Ipv4Cidr> {
        self.ip_range
            .as_deref()
            .and_then(|s| s.parse().ok())
            .or_else(|| self.subnet())
    }

    pub fn subnet6(&self) -> Option<Ipv6Cidr> {
        self.subnet6.as_deref().and_then(|s| s.parse().ok())
    }

    /// The IPv6 addresses handed out: the range, else the whole subnet.
    pub fn range6(&self) -> Option<Ipv6Cidr> {
        self.ip_range6
            .as_deref()
            .and_then(|s| s.parse().ok())
            .or_else(|| self.subnet6())
    }

    /// Whether containers get an IPv4 address (IPv6-only networks: none).
    pub fn has_ipv4(&self) -> bool {
        self.subnet.is_some() || self.ipam == Ipam::Dhcp
    }

    /// Why `address` can never be a container's IPv6 address, or `None`.
    pub fn address6_problem(&self, address: Ipv6Addr, reserved: &[Ipv6Addr]) -> Option<String> {
        if self.ipv6 != Ipv6Mode::Static {
            return Some(match self.ipv6 {
                Ipv6Mode::Off => "the network has no IPv6 (--ipv6 off)".to_string(),
                mode => format!(
                    "the network's IPv6 addresses come from {} (--ipv6 {})",
                    if mode == Ipv6Mode::Slaac {
                        "router advertisements"
                    } else {
                        "DHCPv6"
                    },
                    mode.as_str()
                ),
            });
        }
        let subnet = self.subnet6()?;
        let range = self.range6().unwrap_or(subnet);
        Some(
            if let Some(problem) = crate::cidr::ipv6_unicast_problem(address) {
                problem.to_string()
            } else if !subnet.contains(address) {
                format!("outside its subnet {subnet}")
            } else if address == subnet.network() {
                "the subnet-router anycast address of its subnet".to_string()
            } else if Some(address) == self.gateway6 {
                "its gateway's address".to_string()
            } else if self.exclude6.contains(&address) {
                "excluded from it (--exclude)".to_string()
            } else if reserved.contains(&address) {
                format!("an address of this host's {}", self.parent)
            } else if !range.contains(address) {
                format!("outside its range {range} (--ip-range6)")
            } else {
                return None;
            },
        )
    }

    /// The address pool's name in `/macvlan/ipam/<pool>/`: the network's.
    pub fn pool(&self) -> String {
        self.name.clone()
    }

    /// The device containers' macvlans sit on: the parent, or for a VLAN
    /// its 802.1Q sub-interface `IF.<id>` (the name `ip link` and vconfig
    /// use; `vlan<id>` when that is longer than the kernel's 15 bytes).
    pub fn link_parent(&self) -> String {
        match self.vlan {
            None => self.parent.clone(),
            Some(id) => {
                let name = format!("{}.{}", self.parent, id);
                if name.len() <= 15 {
                    name
                } else {
                    format!("vlan{id}")
                }
            }
        }
    }

    /// The host-side device of `--host-access`: `mvh-<name>`, or within the
    /// kernel's 15 bytes `mvh-<first 6>-<4 hex of a hash of the name>`.
    pub fn host_device(&self) -> String {
        let name = format!("mvh-{}", self.name);
        if name.len() <= 15 {
            return name;
        }
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(self.name.as_bytes());
        format!("mvh-{}-{:02x}{:02x}", &self.name[..6], digest[0], digest[1])
    }

    /// Why `address` can never be a container's, or `None` if it can be.
    /// `reserved` are addresses of this host (the parent's own).
    pub fn address_problem(&self, address: Ipv4Addr, reserved: &[Ipv4Addr]) -> Option<String> {
        let subnet = self.subnet()?;
        let range = self.range().unwrap_or(subnet);
        Some(if !subnet.contains(address) {
            format!("outside its subnet {subnet}")
        } else if address == subnet.network() || address == subnet.broadcast() {
            "the network or broadcast address of its subnet".to_string()
        } else if Some(address) == self.gateway {
            "its gateway's address".to_string()
        } else if self.exclude.contains(&address) {
            "excluded from it (--exclude)".to_string()
        } else if Some(address) == self.host_address {
            "the host-side address (--host-address)".to_string()
        } else if reserved.contains(&address) {
            format!("an address of this host's {}", self.parent)
        } else if !range.contains(address) {
            format!("outside its range {range} (--ip-range)")
        } else {
            return None;
        })
    }

    /// Addresses containers can take, at most.
    pub fn capacity(&self) -> u32 {
        let (Some(subnet), Some(range)) = (self.subnet(), self.range()) else {
            return 0;
        };
        let first = u32::from(range.network()).max(u32::from(subnet.network()) + 1);
        let last = u32::from(range.broadcast()).min(u32::from(subnet.broadcast()) - 1);
        if last < first {
            return 0;
        }
        let mut count = last - first + 1;
        let inside = |a: &Ipv4Addr| (first..=last).contains(&u32::from(*a));
        count -= self.gateway.iter().filter(|a| inside(a)).count() as u32;
        let excluded: BTreeSet<&Ipv4Addr> = self
            .exclude
            .iter()
            .chain(self.host_address.iter())
            .filter(|a| inside(a) && Some(**a) != self.gateway)
            .collect();
        count.saturating_sub(excluded.len() as u32)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("no network {name:?}; known: {known}")]
    NotFound { name: String, known: String },
    #[error("a network {0:?} exists already")]
    Exists(String),
    #[error("subnet {subnet} overlaps network {other:?} ({other_subnet})")]
    Overlap {
        subnet: String,
        other: String,
        other_subnet: String,
    },
    #[error("VLAN ID {id} is used by network {holder:?}")]
    IdTaken { id: u16, holder: String },
    #[error("VLAN ID {0}: expected 1-4094 (0 and 4095 are reserved by 802.1Q)")]
    IdReserved(u16),
    #[error("every VLAN ID from 1 to 4094 is in use")]
    NoFreeId,
    #[error(
        "network {name:?} is in use by {holders}; stop those containers (and run macvlan gc) first"
    )]
    InUse { name: String, holders: String },
    #[error("network {name:?} ({range}) has no free address left")]
    Exhausted { name: String, range: String },
    #[error("{address} is not a usable address of network {name:?}: {problem}")]
    BadAddress {
        address: IpAddr,
        name: String,
        problem: String,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("the store kept changing under us; gave up after {0} attempts")]
    Contended(usize),
    #[error("corrupt record {key}: {message}")]
    Corrupt { key: String, message: String },
    #[error("network {0:?} is being removed (or was changed meanwhile); no address is handed out from it")]
    Removing(String),
    #[error(transparent)]
    Ipam(#[from] IpamError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

type Result<T> = std::result::Result<T, NetworkError>;

/// Which 802.1Q ID a new network gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VlanChoice {
    Id(u16),
    /// An unused one at random (`vlan create` without `--id`).
    Any,
}

/// What `macvlan network create` asks for.
#[derive(Debug, Clone)]
pub struct CreateRequest {
    pub name: NetworkName,
    pub parent: String,
    pub mode: MacvlanMode,
    /// `Some`: an ipvlan network (`--driver ipvlan --mode l2|l3|l3s`).
    pub ipvlan: Option<IpvlanSpec>,
    pub vlan: Option<VlanChoice>,
    pub subnet: Option<Ipv4Cidr>,
    pub gateway: Option<Ipv4Addr>,
    pub ip_range: Option<Ipv4Cidr>,
    pub exclude: Vec<Ipv4Addr>,
    pub ipam: Ipam,
    pub ipv6: Ipv6Mode,
    pub subnet6: Option<Ipv6Cidr>,
    pub gateway6: Option<Ipv6Addr>,
    pub ip_range6: Option<Ipv6Cidr>,
    pub exclude6: Vec<Ipv6Addr>,
    pub mtu: Option<u32>,
    pub rate_kbit: Option<u64>,
    pub ingress_rate_kbit: Option<u64>,
    pub annotations_only: bool,
    pub host_access: bool,
    pub host_address: Option<Ipv4Addr>,
    pub dhcp_dns: bool,
}

impl CreateRequest {
    /// A static network on `parent` with `subnet`, everything else default.
    pub fn new(name: NetworkName, parent: &str, subnet: Option<Ipv4Cidr>) -> CreateRequest {
        CreateRequest {
            name,
            parent: parent.to_string(),
            mode: MacvlanMode::Bridge,
            ipvlan: None,
            vlan: None,
            subnet,
            gateway: None,
            ip_range: None,
            exclude: Vec::new(),
            ipam: Ipam::Static,
            ipv6: Ipv6Mode::Off,
            subnet6: None,
            gateway6: None,
            ip_range6: None,
            exclude6: Vec::new(),
            mtu: None,
            rate_kbit: None,
            ingress_rate_kbit: None,
            annotations_only: false,
            dhcp_dns: false,
            host_access: false,
            host_address: None,
        }
    }
}

pub fn parse(name: &str, key: &str, text: &str) -> Result<Network> {
    let mut network: Network = serde_json::from_str(text).map_err(|e| NetworkError::Corrupt {
        key: key.to_string(),
        message: e.to_string(),
    })?;
    network.name = name.to_string();
    Ok(network)
}

/// Every readable network, by name. A record that does not parse is
/// reported on stderr with its key and skipped: one bad stored value must
/// not stop every later attach (issue 16); `network ls` lists it and
/// `network rm` removes it.
pub fn list(store: &dyn Store, keys: &Keys) -> Result<Vec<Network>> {
    let (networks, corrupt) = list_all(store, keys)?;
    for error in corrupt {
        eprintln!("macvlan: skipped {error} (remove it with macvlan network rm)");
    }
    Ok(networks)
}

/// Every network, and the errors of the records that do not parse.
pub fn list_all(store: &dyn Store, keys: &Keys) -> Result<(Vec<Network>, Vec<NetworkError>)> {
    let prefix = keys.network_prefix();
    let mut networks = Vec::new();
    let mut corrupt = Vec::new();
    for (key, value) in store.list(&prefix)? {
        match parse(&key[prefix.len()..], &key, &value) {
            Ok(network) => networks.push(network),
            Err(error) => corrupt.push(error),
        }
    }
    Ok((networks, corrupt))
}

pub fn load(store: &dyn Store, keys: &Keys, name: &str) -> Result<Network> {
    Ok(load_stored(store, keys, name)?.0)
}

/// The network and its record as stored, which a claim's transaction
/// compares (so that none lands once `network rm` has begun).
pub fn load_stored(store: &dyn Store, keys: &Keys, name: &str) -> Result<(Network, String)> {
    let key = keys.network(name);
    match store.get(&key)? {
        Some(text) => Ok((parse(name, &key, &text)?, text)),
        None => {
            let known: Vec<String> = list(store, keys)?.into_iter().map(|n| n.name).collect();
            Err(NetworkError::NotFound {
                name: name.to_string(),
                known: if known.is_empty() {
                    "none (create one with macvlan network create)".into()
                } else {
                    known.join(", ")
                },
            })
        }
    }
}

/// A random number below `bound`, for picking a free VLAN ID or address.
fn random_below(bound: usize) -> usize {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(std::time::Instant::now().elapsed().as_nanos());
    (hasher.finish() % bound as u64) as usize
}

/// Checks a create request on its own, before the store is read.
fn validate(request: &CreateRequest) -> Result<Option<Ipv4Cidr>> {
    let invalid = |text: String| Err(NetworkError::Invalid(text));
    if let Some(VlanChoice::Id(id)) = request.vlan {
        if !IDS.contains(&id) {
            return Err(NetworkError::IdReserved(id));
        }
    }
    if let Some(ipvlan) = request.ipvlan {
        if request.ipam == Ipam::Dhcp && ipvlan.mode != IpvlanMode::L2 {
            return invalid(format!(
                "--ipam dhcp on ipvlan needs --mode l2 (mode {} has no broadcasts on the link)",
                ipvlan.mode.as_str()
            ));
        }
        if request.host_access && ipvlan.flag != IpvlanFlag::Bridge {
            return invalid(format!(
                "--host-access needs --flag bridge: the host-side device is a sibling ipvlan, which the {} flag cuts off",
                ipvlan.flag.as_str()
            ));
        }
    }
    if request.host_access && request.ipvlan.is_none() && request.mode != MacvlanMode::Bridge {
        return invalid(format!(
            "--host-access needs --mode bridge: the host-side device reaches the containers as a sibling macvlan, which only bridge mode delivers to (mode {})",
            request.mode.as_str()
        ));
    }
    if request.dhcp_dns && request.ipam != Ipam::Dhcp {
        return invalid(
            "--dhcp-dns needs --ipam dhcp: it writes the lease's DNS servers into the container's resolv.conf".into(),
        );
    }
    if request.host_access && request.ipam == Ipam::Dhcp {
        return invalid(
            "--host-access works with --ipam static only so far (a lease's address can change at renewal, and the host route with it)".into(),
        );
    }
    if !crate::request::valid_interface_name(&request.parent) || request.parent == "lo" {
        return invalid(format!(
            "--parent {:?}: expected an interface name of 1-15 characters (not lo)",
            request.parent
        ));
    }
    let subnet = request.subnet.map(|s| s.subnet());
    let Some(subnet) = subnet else {
        if request.ipam == Ipam::Static && request.ipv6 == Ipv6Mode::Off {
            return invalid(
                "--subnet is required unless --ipam dhcp (or an IPv6-only network: --ipv6 static|slaac|dhcpv6 without --subnet): the store hands out addresses from it"
                    .into(),
            );
        }
        for (flag, given) in [
            ("--gateway", request.gateway.is_some()),
            ("--ip-range", request.ip_range.is_some()),
            ("--exclude", !request.exclude.is_empty()),
            ("--host-address", request.host_address.is_some()),
        ] {
            if given {
                return invalid(format!("{flag} needs --subnet"));
            }
        }
        return Ok(None);
    };
    if !(1..=30).contains(&subnet.prefix) {
        return invalid(format!(
            "--subnet {}: expected a prefix length from 1 to 30",
            request.subnet.expect("given")
        ));
    }
    let host_address = |flag: &str, address: Ipv4Addr| {
        if !subnet.contains(address) || address == subnet.network() || address == subnet.broadcast()
        {
            Err(NetworkError::Invalid(format!(
                "{flag} {address}: expected a host address of {subnet}"
            )))
        } else {
            Ok(())
        }
    };
    if let Some(gateway) = request.gateway {
        host_address("--gateway", gateway)?;
    }
    if let Some(address) = request.host_address {
        if !request.host_access {
            return invalid("--host-address needs --host-access".into());
        }
        host_address("--host-address", address)?;
        if Some(address) == request.gateway || request.exclude.contains(&address) {
            return invalid(format!(
                "--host-address {address}: the gateway's or an excluded address"
            ));
        }
    }
    for address in &request.exclude {
        host_address("--exclude", *address)?;
    }
    if let Some(range) = request.ip_range {
        if range.subnet() != range
            || !subnet.contains(range.network())
            || range.prefix < subnet.prefix
        {
            return invalid(format!(
                "--ip-range {range}: expected a subnet inside {subnet} (host bits zero), like {}/{}",
                subnet.network(),
                (subnet.prefix + 1).min(30)
            ));
        }
    }
    if let Some(mtu) = request.mtu {
        if !(68..=65535).contains(&mtu) {
            return invalid(format!("--mtu {mtu}: expected 68-65535"));
        }
    }
    Ok(Some(subnet))
}

/// Checks a create request's IPv6 side; returns its subnet.
fn validate6(request: &CreateRequest) -> Result<Option<Ipv6Cidr>> {
    let invalid = |text: String| Err(NetworkError::Invalid(text));
    let subnet = request.subnet6.map(|s| s.subnet());
    let given = [
        ("--subnet6", subnet.is_some()),
        ("--gateway6", request.gateway6.is_some()),
        ("--ip-range6", request.ip_range6.is_some()),
        ("--exclude (IPv6)", !request.exclude6.is_empty()),
    ];
    match request.ipv6 {
        Ipv6Mode::Off => {
            if let Some((flag, _)) = given.iter().find(|(_, g)| *g) {
                return invalid(format!("{flag} needs --ipv6 static|slaac|dhcpv6"));
            }
            return Ok(None);
        }
        Ipv6Mode::Slaac | Ipv6Mode::Dhcpv6 => {
            if let Some((flag, _)) = given[1..].iter().find(|(_, g)| *g) {
                return invalid(format!(
                    "{flag}: with --ipv6 {} the router's advertisements give the prefix and default route, and the {} the address; only --subnet6 (the expected prefix) may be given",
                    request.ipv6.as_str(),
                    if request.ipv6 == Ipv6Mode::Slaac { "interface's EUI-64 identifier" } else { "DHCPv6 server" }
                ));
            }
            if request.ipvlan.is_some() {
                return invalid(format!(
                    "--ipv6 {} needs a MAC of the container's own (an ipvlan shares the parent's, so its EUI-64 and link-local addresses would collide); use --ipv6 static or a macvlan network",
                    request.ipv6.as_str()
                ));
            }
        }
        Ipv6Mode::Static => {
            if subnet.is_none() {
                return invalid(
                    "--ipv6 static needs --subnet6: the store hands out addresses from it".into(),
                );
            }
        }
    }
    let Some(subnet) = subnet else {
        return Ok(None);
    };
    if let Some(problem) =
        crate::cidr::ipv6_unicast_problem(subnet.network()).filter(|_| subnet.prefix >= 10)
    {
        return invalid(format!(
            "--subnet6 {subnet}: expected a global or unique-local prefix, not {problem}"
        ));
    }
    if request.ipv6 == Ipv6Mode::Static && !(1..=127).contains(&subnet.prefix) {
        return invalid(format!(
            "--subnet6 {subnet}: expected a prefix length from 1 to 127"
        ));
    }
    let host_address = |flag: &str, address: Ipv6Addr| {
        if let Some(problem) = crate::cidr::ipv6_unicast_problem(address) {
            return Err(NetworkError::Invalid(format!(
                "{flag} {address}: {problem}"
            )));
        }
        if !subnet.contains(address) || address == subnet.network() {
            return Err(NetworkError::Invalid(format!(
                "{flag} {address}: expected a host address of {subnet}"
            )));
        }
        Ok(())
    };
    if let Some(gateway) = request.gateway6 {
        // Routers usually advertise from their link-local address.
        if !crate::cidr::is_ipv6_link_local(gateway) {
            host_address("--gateway6", gateway).map_err(|e| {
                NetworkError::Invalid(format!("{e} or a link-local address (fe80::/10)"))
            })?;
        }
    }
    for address in &request.exclude6 {
        host_address("--exclude", *address)?;
    }
    if let Some(range) = request.ip_range6 {
        if range.subnet() != range
            || !subnet.contains(range.network())
            || range.prefix < subnet.prefix
        {
            return invalid(format!(
                "--ip-range6 {range}: expected a prefix inside {subnet} (host bits zero), like {}/{}",
                subnet.network(),
                (subnet.prefix + 8).min(127)
            ));
        }
    }
    Ok(Some(subnet))
}

/// Creates a network: its record, its VLAN ID key and the generation
/// counter move in one transaction that checks nothing changed since the
/// overlap check read them.
pub fn create(store: &dyn Store, keys: &Keys, request: &CreateRequest) -> Result<Network> {
    let subnet = validate(request)?;
    let subnet6 = validate6(request)?;
    let name = request.name.as_str();
    // Docker's rule for IPv6 too: the subnet's first host address.
    let gateway6 = request.gateway6.or_else(|| {
        subnet6
            .filter(|_| request.ipv6 == Ipv6Mode::Static)
            .map(|s| Ipv6Addr::from(u128::from(s.network()) + 1))
    });
    // A VLAN network's gateway defaults to the subnet's first address (the
    // original system's rule, and Docker's).
    let gateway = request.gateway.or_else(|| {
        subnet
            .filter(|_| request.vlan.is_some() || request.ipam == Ipam::Static)
            .map(|s| Ipv4Addr::from(u32::from(s.network()) + 1))
    });
    for _ in 0..ATTEMPTS {
        let generation = store.get(&keys.network_generation())?;
        let existing = list(store, keys)?;
        if existing.iter().any(|n| n.name == name) {
            return Err(NetworkError::Exists(name.to_string()));
        }
        if let Some(subnet) = subnet {
            if let Some((other, other_subnet)) = existing
                .iter()
                .find_map(|n| n.subnet().filter(|o| o.overlaps(subnet)).map(|o| (n, o)))
            {
                return Err(NetworkError::Overlap {
                    subnet: subnet.to_string(),
                    other: other.name.clone(),
                    other_subnet: other_subnet.to_string(),
                });
            }
        }
        if let Some(subnet6) = subnet6 {
            if let Some((other, other_subnet)) = existing
                .iter()
                .find_map(|n| n.subnet6().filter(|o| o.overlaps(subnet6)).map(|o| (n, o)))
            {
                return Err(NetworkError::Overlap {
                    subnet: subnet6.to_string(),
                    other: other.name.clone(),
                    other_subnet: other_subnet.to_string(),
                });
            }
        }
        let used: BTreeSet<u16> = existing.iter().filter_map(|n| n.vlan).collect();
        let vlan = match request.vlan {
            None => None,
            Some(VlanChoice::Id(id)) => {
                if let Some(holder) = existing.iter().find(|n| n.vlan == Some(id)) {
                    return Err(NetworkError::IdTaken {
                        id,
                        holder: holder.name.clone(),
                    });
                }
                Some(id)
            }
            Some(VlanChoice::Any) => {
                let free: Vec<u16> = IDS.filter(|id| !used.contains(id)).collect();
                if free.is_empty() {
                    return Err(NetworkError::NoFreeId);
                }
                Some(free[random_below(free.len())])
            }
        };
        let network = Network {
            name: name.to_string(),
            driver: match request.ipvlan {
                Some(_) => LinkDriver::Ipvlan,
                None => LinkDriver::Macvlan,
            },
            parent: request.parent.clone(),
            mode: request.mode,
            ipvlan: request.ipvlan,
            vlan,
            subnet: subnet.map(|s| s.to_string()),
            gateway,
            ip_range: request.ip_range.map(|r| r.to_string()),
            exclude: request.exclude.clone(),
            ipam: request.ipam,
            ipv6: request.ipv6,
            subnet6: subnet6.map(|s| s.to_string()),
            gateway6,
            ip_range6: request.ip_range6.map(|r| r.to_string()),
            exclude6: request.exclude6.clone(),
            mtu: request.mtu,
            rate_kbit: request.rate_kbit,
            ingress_rate_kbit: request.ingress_rate_kbit,
            annotations_only: request.annotations_only,
            host_access: request.host_access,
            host_address: request.host_address,
            created_at: now(),
            removing: false,
            dhcp_dns: request.dhcp_dns,
        };
        let next = generation
            .as_deref()
            .and_then(|g| g.parse::<u64>().ok())
            .unwrap_or(0)
            + 1;
        let mut compares = vec![
            match &generation {
                Some(g) => Compare::Equals(keys.network_generation(), g.clone()),
                None => Compare::Absent(keys.network_generation()),
            },
            Compare::Absent(keys.network(name)),
        ];
        let mut ops = vec![
            Op::Put(keys.network_generation(), next.to_string()),
            Op::Put(
                keys.network(name),
                serde_json::to_string(&network).expect("network serialises"),
            ),
        ];
        if let Some(id) = vlan {
            compares.push(Compare::Absent(keys.vlan_id(id)));
            ops.push(Op::Put(
                keys.vlan_id(id),
                serde_json::Value::String(name.to_string()).to_string(),
            ));
        }
        if store.transaction(&compares, &ops)? {
            return Ok(network);
        }
    }
    Err(NetworkError::Contended(ATTEMPTS))
}

/// The addresses held in a network, as `(address, holder)`.
/// A network's IPv4 addresses in use, and free (`None`: the DHCP server's
/// pool, not known here).
pub fn usage(store: &dyn Store, keys: &Keys, network: &Network) -> Result<(u32, Option<u32>)> {
    let used = holders(store, keys, network)?
        .iter()
        .filter(|(ip, _)| ip.is_ipv4())
        .count() as u32;
    let free = (network.ipam == Ipam::Static && network.subnet().is_some())
        .then(|| network.capacity().saturating_sub(used));
    Ok((used, free))
}

pub fn holders(store: &dyn Store, keys: &Keys, network: &Network) -> Result<Vec<(IpAddr, String)>> {
    pool_holders(store, keys, &network.pool())
}

fn pool_holders(store: &dyn Store, keys: &Keys, pool: &str) -> Result<Vec<(IpAddr, String)>> {
    let prefix = keys.pool_prefix(pool);
    let mut held: Vec<(IpAddr, String)> = store
        .list(&prefix)?
        .into_iter()
        .filter_map(|(key, value)| {
            let ip = key[prefix.len()..].parse().ok()?;
            Some((ip, ipam::parse_holder(&value)))
        })
        .collect();
    held.sort();
    Ok(held)
}

/// Containers with a record on the network but no address key (a DHCP
/// container between leases, say).
fn record_holders(store: &dyn Store, keys: &Keys, name: &str) -> Result<Vec<String>> {
    let mut found = Vec::new();
    for (id, _key, text) in ipam::list_records(store, keys)? {
        // A record that does not parse cannot name the network; gc and
        // `macvlan ls` report it.
        let Ok(record) = serde_json::from_str::<FlatRecord>(&text) else {
            continue;
        };
        if record.network.as_deref() == Some(name) {
            found.push(id);
        }
    }
    Ok(found)
}

/// Removes a network no container holds an address in or has a record on.
/// Removes network `name` unless something holds it. A record that no
/// longer parses is removed too (its holders found by its pool's name and
/// its VLAN ID by the `vlan-id` key naming it): `Ok(None)`.
pub fn remove(store: &dyn Store, keys: &Keys, name: &str) -> Result<Option<Network>> {
    for _ in 0..ATTEMPTS {
        let network = match load(store, keys, name) {
            Ok(network) => Some(network),
            Err(NetworkError::Corrupt { .. }) => None,
            Err(e) => return Err(e),
        };
        // First mark it: claims compare the network's record in their
        // transaction, so from here none can land, and one that landed
        // before is seen among the holders below.
        let mut network = network;
        let mut unmark = None;
        if let Some(current) = network.as_mut().filter(|n| !n.removing) {
            let key = keys.network(name);
            let before = store.get(&key)?.unwrap_or_default();
            current.removing = true;
            let marked = serde_json::to_string(&*current).expect("network serialises");
            if !store.transaction(
                &[Compare::Equals(key.clone(), before.clone())],
                &[Op::Put(key.clone(), marked.clone())],
            )? {
                continue;
            }
            unmark = Some((key, marked, before));
        }
        let mut names: Vec<String> = pool_holders(store, keys, name)?
            .iter()
            .map(|(ip, container)| format!("{container} ({ip})"))
            .collect();
        for id in record_holders(store, keys, name)? {
            if !names.iter().any(|n| n.starts_with(&format!("{id} "))) {
                names.push(id);
            }
        }
        if !names.is_empty() {
            // Held: the network stays as it was.
            if let Some((key, marked, before)) = unmark {
                store.transaction(
                    &[Compare::Equals(key.clone(), marked)],
                    &[Op::Put(key, before)],
                )?;
            }
            return Err(NetworkError::InUse {
                name: name.to_string(),
                holders: names.join(", "),
            });
        }
        let generation = store.get(&keys.network_generation())?;
        let next = generation
            .as_deref()
            .and_then(|g| g.parse::<u64>().ok())
            .unwrap_or(0)
            + 1;
        let record = store.get(&keys.network(name))?.unwrap_or_default();
        let compares = vec![
            match &generation {
                Some(g) => Compare::Equals(keys.network_generation(), g.clone()),
                None => Compare::Absent(keys.network_generation()),
            },
            Compare::Equals(keys.network(name), record),
        ];
        let mut ops = vec![
            Op::Put(keys.network_generation(), next.to_string()),
            Op::Delete(keys.network(name)),
        ];
        match network.as_ref().map(|n| n.vlan) {
            Some(Some(id)) => ops.push(Op::Delete(keys.vlan_id(id))),
            Some(None) => {}
            None => {
                let prefix = keys.vlan_id(0);
                let prefix = &prefix[..prefix.len() - 1];
                for (key, value) in store.list(prefix)? {
                    let holder = serde_json::from_str::<String>(&value).unwrap_or(value);
                    if holder == name {
                        ops.push(Op::Delete(key));
                    }
                }
            }
        }
        if store.transaction(&compares, &ops)? {
            return Ok(network);
        }
    }
    Err(NetworkError::Contended(ATTEMPTS))
}

/// Checks that `address` can be a container's in `network`.
pub fn check_address(network: &Network, address: Ipv4Addr, reserved: &[Ipv4Addr]) -> Result<()> {
    match network.address_problem(address, reserved) {
        Some(problem) => Err(NetworkError::BadAddress {
            address: address.into(),
            name: network.name.clone(),
            problem,
        }),
        None => Ok(()),
    }
}

/// Checks that `address` can be a container's IPv6 address in `network`.
pub fn check_address6(network: &Network, address: Ipv6Addr, reserved: &[Ipv6Addr]) -> Result<()> {
    match network.address6_problem(address, reserved) {
        Some(problem) => Err(NetworkError::BadAddress {
            address: address.into(),
            name: network.name.clone(),
            problem,
        }),
        None => Ok(()),
    }
}

/// The network whose subnet holds `address`, if any: ad-hoc claims must
/// not take what that network hands out.
pub fn covering(networks: &[Network], address: Ipv4Addr) -> Option<&Network> {
    networks
        .iter()
        .find(|n| n.subnet().is_some_and(|s| s.contains(address)))
}

/// The addresses a container asked for, by family.
#[derive(Debug, Clone, Copy, Default)]
pub struct Requested {
    pub v4: Option<Ipv4Addr>,
    pub v6: Option<Ipv6Addr>,
}

/// This host's own addresses on the parent: never a container's.
#[derive(Debug, Clone, Copy, Default)]
pub struct Reserved<'a> {
    pub v4: &'a [Ipv4Addr],
    pub v6: &'a [Ipv6Addr],
}

/// What a claim took.
#[derive(Debug)]
pub struct Claimed {
    pub claim: Claim,
    /// `None` on an IPv6-only network.
    pub v4: Option<Ipv4Cidr>,
    /// `None` unless the network's IPv6 is static.
    pub v6: Option<Ipv6Cidr>,
}

/// The lowest free addresses of `first..=last` (numbers of one family), at
/// most `CONTENDED_SPREAD`, skipping `used` and what `usable` refuses.
fn free_addresses(
    first: u128,
    last: u128,
    used: &BTreeSet<IpAddr>,
    address: impl Fn(u128) -> IpAddr,
    usable: impl Fn(IpAddr) -> bool,
) -> Vec<IpAddr> {
    if last < first {
        return Vec::new();
    }
    (first..=last)
        .map(address)
        .filter(|a| !used.contains(a) && usable(*a))
        .take(CONTENDED_SPREAD)
        .collect()
}

/// Takes the network's addresses for attachment `record_id` — IPv4 and,
/// on a static IPv6 network, IPv6, in one transaction — and writes
/// `record` (its `ip`, `ip6`, `pool` and `network` are filled in here).
/// Each family: the requested address, else the one held before (a
/// restart), else the lowest free one of the range. Every attempt is one
/// create-if-absent of the address keys, which also checks that no ad-hoc
/// claim holds them; a lost race moves on to another free address.
/// `(network, stored)`: the network and the record it was read from
/// ([`load_stored`]).
pub fn claim(
    store: &dyn Store,
    keys: &Keys,
    record_id: &str,
    (network, stored): (&Network, &str),
    requested: Requested,
    reserved: Reserved<'_>,
    record: &FlatRecord,
) -> Result<Claimed> {
    let subnet = network.subnet().filter(|_| network.ipam == Ipam::Static);
    let subnet6 = network
        .subnet6()
        .filter(|_| network.ipv6 == Ipv6Mode::Static);
    let mut fixed4 = requested.v4;
    let mut fixed6 = requested.v6;
    if let Some(address) = fixed4 {
        check_address(network, address, reserved.v4)?;
    }
    if let Some(address) = fixed6 {
        check_address6(network, address, reserved.v6)?;
    }
    if let Some(previous) = ipam::load_flat(store, keys, record_id)? {
        if previous.network.as_deref() == Some(network.name.as_str()) {
            if let Ok(cidr) = previous.ip.parse::<Ipv4Cidr>() {
                if check_address(network, cidr.address, reserved.v4).is_ok() {
                    fixed4 = fixed4.or(Some(cidr.address));
                }
            }
            if let Some(Ok(cidr)) = previous.ip6.as_deref().map(str::parse::<Ipv6Cidr>) {
                if check_address6(network, cidr.address, reserved.v6).is_ok() {
                    fixed6 = fixed6.or(Some(cidr.address));
                }
            }
        }
    }
    // `stored` is the record `network` was read from: the claim's
    // transaction finds it unchanged, so none lands after `network rm`
    // has begun.
    let network_key = keys.network(&network.name);
    if network.removing {
        return Err(NetworkError::Removing(network.name.clone()));
    }
    let other_pool = |address: IpAddr| vec![keys.address(crate::ipam::ADHOC_POOL, address)];
    let mut lost_races = 0;
    // Addresses held ad hoc (found by trying them): not in the network's pool.
    let mut held_ad_hoc: BTreeSet<IpAddr> = BTreeSet::new();
    for _ in 0..ATTEMPTS {
        let mut used: BTreeSet<IpAddr> = holders(store, keys, network)?
            .into_iter()
            .map(|(ip, _)| ip)
            .collect();
        used.extend(&held_ad_hoc);
        // The lowest free address; after a lost race, one of the next few
        // at random, so that hosts allocating at once stop colliding on
        // the same one.
        let pick = |free: &[IpAddr]| {
            if lost_races == 0 {
                free[0]
            } else {
                free[random_below(free.len())]
            }
        };
        let v4 = match (subnet, fixed4) {
            (None, _) => None,
            (Some(_), Some(fixed)) => Some(fixed),
            (Some(subnet), None) => {
                let range = network.range().unwrap_or(subnet);
                let first = u32::from(range.network()).max(u32::from(subnet.network()) + 1);
                let last = u32::from(range.broadcast()).min(u32::from(subnet.broadcast()) - 1);
                let free = free_addresses(
                    first.into(),
                    last.into(),
                    &used,
                    |n| IpAddr::V4(Ipv4Addr::from(n as u32)),
                    |a| matches!(a, IpAddr::V4(a) if network.address_problem(a, reserved.v4).is_none()),
                );
                if free.is_empty() {
                    return Err(NetworkError::Exhausted {
                        name: network.name.clone(),
                        range: range.to_string(),
                    });
                }
                match pick(&free) {
                    IpAddr::V4(a) => Some(a),
                    IpAddr::V6(_) => unreachable!("IPv4 numbers make IPv4 addresses"),
                }
            }
        };
        let v6 = match (subnet6, fixed6) {
            (None, _) => None,
            (Some(_), Some(fixed)) => Some(fixed),
            (Some(subnet6), None) => {
                let range = network.range6().unwrap_or(subnet6);
                let first = u128::from(range.network()).max(u128::from(subnet6.network()) + 1);
                let last = u128::from(range.last());
                let free = free_addresses(
                    first,
                    last,
                    &used,
                    |n| IpAddr::V6(Ipv6Addr::from(n)),
                    |a| matches!(a, IpAddr::V6(a) if network.address6_problem(a, reserved.v6).is_none()),
                );
                if free.is_empty() {
                    return Err(NetworkError::Exhausted {
                        name: network.name.clone(),
                        range: range.to_string(),
                    });
                }
                match pick(&free) {
                    IpAddr::V6(a) => Some(a),
                    IpAddr::V4(_) => unreachable!("IPv6 numbers make IPv6 addresses"),
                }
            }
        };
        let v4 = v4.zip(subnet).map(|(address, s)| Ipv4Cidr {
            address,
            prefix: s.prefix,
        });
        let v6 = v6.zip(subnet6).map(|(address, s)| Ipv6Cidr {
            address,
            prefix: s.prefix,
        });
        let mut written = record.clone();
        written.ip = v4.map(|c| c.to_string()).unwrap_or_default();
        written.ip6 = v6.map(|c| c.to_string());
        written.pool = network.pool();
        written.network = Some(network.name.clone());
        let wanted: Vec<Wanted> = v4
            .map(|c| IpAddr::V4(c.address))
            .into_iter()
            .chain(v6.map(|c| IpAddr::V6(c.address)))
            .map(|ip| Wanted::new(ip, other_pool(ip)))
            .collect();
        match ipam::claim_checking(
            store,
            keys,
            record_id,
            &wanted,
            &written,
            Some((&network_key, stored)),
        ) {
            Ok(claim) => return Ok(Claimed { claim, v4, v6 }),
            Err(IpamError::Changed(key)) if key == network_key => {
                return Err(NetworkError::Removing(network.name.clone()))
            }
            // Taken meanwhile by another host's container, or held ad hoc.
            Err(IpamError::Held { ip, holder })
                if Some(ip) != fixed4.map(IpAddr::V4) && Some(ip) != fixed6.map(IpAddr::V6) =>
            {
                let _ = holder;
                if store.get(&keys.address(&network.pool(), ip))?.is_some() {
                    lost_races += 1;
                } else {
                    held_ad_hoc.insert(ip);
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(NetworkError::Contended(ATTEMPTS))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SqliteStore;

    fn setup() -> (tempfile::TempDir, SqliteStore, Keys) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("s.db")).unwrap();
        (dir, store, Keys::new("/macvlan"))
    }

    fn request(name: &str, subnet: &str) -> CreateRequest {
        CreateRequest::new(
            NetworkName::parse(name).unwrap(),
            "lan0",
            Some(subnet.parse().unwrap()),
        )
    }

    fn vlan_request(name: &str, subnet: &str, id: Option<u16>) -> CreateRequest {
        let mut r = request(name, subnet);
        r.vlan = Some(id.map(VlanChoice::Id).unwrap_or(VlanChoice::Any));
        r
    }

    fn record() -> FlatRecord {
        FlatRecord::sample("198.18.0.99/24")
    }

    #[test]
    fn a_claim_never_lands_in_a_network_being_removed() {
        let (_dir, store, keys) = setup();
        let network = create(&store, &keys, &request("lan", "198.18.1.0/24")).unwrap();
        // A hook read the network, then `network rm` ran to the end before
        // its claim: the claim fails instead of holding an orphan address.
        remove(&store, &keys, "lan").unwrap();
        let error = take(&store, &keys, "c1", &network, None).unwrap_err();
        assert!(error.to_string().contains("network \"lan\""), "{error}");
        assert!(store.list("/macvlan/ipam/").unwrap().is_empty());

        // A `network rm` that died after marking: claims are refused until
        // it is run again, which finishes it.
        let network = create(&store, &keys, &request("lan", "198.18.1.0/24")).unwrap();
        let key = keys.network("lan");
        let mut marked = network.clone();
        marked.removing = true;
        store
            .transaction(
                &[],
                &[Op::Put(
                    key.clone(),
                    serde_json::to_string(&marked).unwrap(),
                )],
            )
            .unwrap();
        let error = take(&store, &keys, "c1", &network, None).unwrap_err();
        assert!(error.to_string().contains("is being removed"), "{error}");
        remove(&store, &keys, "lan").unwrap();
        assert_eq!(store.get(&key).unwrap(), None);

        // Held: `network rm` refuses and leaves the network claimable.
        let network = create(&store, &keys, &request("lan", "198.18.1.0/24")).unwrap();
        take(&store, &keys, "c1", &network, None).unwrap();
        assert!(matches!(
            remove(&store, &keys, "lan"),
            Err(NetworkError::InUse { .. })
        ));
        let reloaded = load(&store, &keys, "lan").unwrap();
        assert!(!reloaded.removing);
        take(&store, &keys, "c2", &reloaded, None).unwrap();
    }

    #[test]
    fn a_corrupt_network_is_skipped_by_list_and_removable() {
        let (_dir, store, keys) = setup();
        create(&store, &keys, &request("good", "198.18.1.0/24")).unwrap();
        create(
            &store,
            &keys,
            &vlan_request("bad", "198.18.2.0/24", Some(42)),
        )
        .unwrap();
        let key = keys.network("bad");
        let text = store.get(&key).unwrap().unwrap();
        let broken = text
            .replace("198.18.2.0/24", "not a subnet")
            .replace('{', "[");
        store
            .transaction(&[], &[Op::Put(key.clone(), broken)])
            .unwrap();
        let (good, corrupt) = list_all(&store, &keys).unwrap();
        assert_eq!(
            good.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(),
            ["good"]
        );
        assert!(
            corrupt[0]
                .to_string()
                .starts_with("corrupt record /macvlan/network/bad:"),
            "{}",
            corrupt[0]
        );
        assert_eq!(list(&store, &keys).unwrap().len(), 1);
        // Removed anyway, with the VLAN ID it held.
        assert!(remove(&store, &keys, "bad").unwrap().is_none());
        assert_eq!(store.get(&key).unwrap(), None);
        assert_eq!(store.get(&keys.vlan_id(42)).unwrap(), None);
        assert!(remove(&store, &keys, "good").unwrap().is_some());
    }

    fn take(
        store: &SqliteStore,
        keys: &Keys,
        id: &str,
        network: &Network,
        requested: Option<&str>,
    ) -> Result<Ipv4Addr> {
        claim(
            store,
            keys,
            id,
            (network, &serde_json::to_string(network).unwrap()),
            Requested {
                v4: requested.map(|r| r.parse().unwrap()),
                v6: None,
            },
            Reserved::default(),
            &record(),
        )
        .map(|claimed| claimed.v4.unwrap().address)
    }

    #[test]
    fn create_picks_a_free_id_and_the_first_address_as_gateway() {
        let (_d, store, keys) = setup();
        let network = create(&store, &keys, &vlan_request("test1", "198.18.0.7/24", None)).unwrap();
        let id = network.vlan.unwrap();
        assert!(IDS.contains(&id));
        assert_eq!(network.subnet.as_deref(), Some("198.18.0.0/24"));
        assert_eq!(network.gateway, Some(Ipv4Addr::new(198, 18, 0, 1)));
        assert_eq!(network.link_parent(), format!("lan0.{id}"));
        assert_eq!(load(&store, &keys, "test1").unwrap(), network);
        assert_eq!(
            store.get(&keys.vlan_id(id)).unwrap().as_deref(),
            Some("\"test1\"")
        );
    }

    #[test]
    fn overlap_duplicate_names_and_taken_or_reserved_ids_are_refused() {
        let (_d, store, keys) = setup();
        create(&store, &keys, &vlan_request("a", "198.18.0.0/24", Some(10))).unwrap();
        assert!(matches!(
            create(&store, &keys, &request("a", "198.18.9.0/24")),
            Err(NetworkError::Exists(_))
        ));
        match create(&store, &keys, &request("b", "198.18.0.128/25")) {
            Err(NetworkError::Overlap { other, .. }) => assert_eq!(other, "a"),
            other => panic!("expected overlap, got {other:?}"),
        }
        assert!(matches!(
            create(&store, &keys, &vlan_request("c", "198.18.1.0/24", Some(10))),
            Err(NetworkError::IdTaken { id: 10, .. })
        ));
        assert!(matches!(
            create(
                &store,
                &keys,
                &vlan_request("d", "198.18.2.0/24", Some(4095))
            ),
            Err(NetworkError::IdReserved(4095))
        ));
    }

    #[test]
    fn bad_definitions_are_refused_naming_the_flag() {
        let (_d, store, keys) = setup();
        let mut r = request("n", "192.0.2.0/24");
        r.gateway = Some("198.51.100.1".parse().unwrap());
        assert!(create(&store, &keys, &r)
            .unwrap_err()
            .to_string()
            .contains("--gateway"));
        let mut r = request("n", "192.0.2.0/24");
        r.ip_range = Some("192.0.3.0/28".parse().unwrap());
        assert!(create(&store, &keys, &r)
            .unwrap_err()
            .to_string()
            .contains("--ip-range"));
        let mut r = request("n", "192.0.2.0/24");
        r.exclude = vec!["192.0.2.255".parse().unwrap()];
        assert!(create(&store, &keys, &r)
            .unwrap_err()
            .to_string()
            .contains("--exclude"));
        let r = CreateRequest::new(NetworkName::parse("n").unwrap(), "lan0", None);
        assert!(create(&store, &keys, &r)
            .unwrap_err()
            .to_string()
            .contains("--subnet"));
        let mut r = CreateRequest::new(NetworkName::parse("n").unwrap(), "lan0", None);
        r.ipam = Ipam::Dhcp;
        assert_eq!(create(&store, &keys, &r).unwrap().gateway, None);
    }

    #[test]
    fn allocation_skips_gateway_excluded_reserved_and_stays_in_range() {
        let (_d, store, keys) = setup();
        let mut r = request("lan", "192.0.2.0/24");
        r.ip_range = Some("192.0.2.0/29".parse().unwrap());
        r.exclude = vec!["192.0.2.3".parse().unwrap()];
        let network = create(&store, &keys, &r).unwrap();
        // .1-.7 without the gateway (.1) and the excluded .3.
        assert_eq!(network.capacity(), 5);
        let reserved = ["192.0.2.4".parse().unwrap()];
        let mut got = Vec::new();
        let exhausted = loop {
            match claim(
                &store,
                &keys,
                &format!("c{}", got.len()),
                (&network, &serde_json::to_string(&network).unwrap()),
                Requested::default(),
                Reserved {
                    v4: &reserved,
                    v6: &[],
                },
                &record(),
            ) {
                Ok(claimed) => got.push(claimed.v4.unwrap().to_string()),
                Err(e) => break e,
            }
            assert!(got.len() <= 5);
        };
        assert!(
            matches!(exhausted, NetworkError::Exhausted { .. }),
            "{exhausted}"
        );
        assert_eq!(
            got,
            [
                "192.0.2.2/24",
                "192.0.2.5/24",
                "192.0.2.6/24",
                "192.0.2.7/24"
            ]
        );
        for (address, problem) in [
            ("192.0.2.1", "gateway"),
            ("192.0.2.3", "excluded"),
            ("192.0.2.9", "outside its range"),
            ("198.18.0.1", "outside its subnet"),
        ] {
            let e = take(&store, &keys, "x", &network, Some(address)).unwrap_err();
            assert!(e.to_string().contains(problem), "{address}: {e}");
        }
        let e = claim(
            &store,
            &keys,
            "x",
            (&network, &serde_json::to_string(&network).unwrap()),
            Requested {
                v4: Some("192.0.2.4".parse().unwrap()),
                v6: None,
            },
            Reserved {
                v4: &reserved,
                v6: &[],
            },
            &record(),
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("an address of this host's lan0"),
            "{e}"
        );
    }

    #[test]
    fn restart_keeps_the_address_and_ad_hoc_holders_are_respected() {
        let (_d, store, keys) = setup();
        let network = create(&store, &keys, &request("lan", "192.0.2.0/24")).unwrap();
        // An ad-hoc container holds .2: the network hands out .3.
        store
            .transaction(
                &[],
                &[Op::Put(
                    keys.address(ipam::ADHOC_POOL, "192.0.2.2".parse::<Ipv4Addr>().unwrap()),
                    "\"adhoc\"".into(),
                )],
            )
            .unwrap();
        assert_eq!(
            take(&store, &keys, "a", &network, None).unwrap(),
            Ipv4Addr::new(192, 0, 2, 3)
        );
        assert!(matches!(
            take(&store, &keys, "b", &network, Some("192.0.2.2")),
            Err(NetworkError::Ipam(IpamError::Held { .. }))
        ));
        assert_eq!(
            take(&store, &keys, "b", &network, None).unwrap(),
            Ipv4Addr::new(192, 0, 2, 4)
        );
        assert_eq!(
            take(&store, &keys, "a", &network, None).unwrap(),
            Ipv4Addr::new(192, 0, 2, 3)
        );
        let record = ipam::load_flat(&store, &keys, "a").unwrap().unwrap();
        assert_eq!(record.network.as_deref(), Some("lan"));
        assert_eq!(record.pool, "lan");
    }

    fn dual(name: &str) -> CreateRequest {
        let mut r = request(name, "192.0.2.0/24");
        r.ipv6 = Ipv6Mode::Static;
        r.subnet6 = Some("2001:db8:1::/64".parse().unwrap());
        r.ip_range6 = Some("2001:db8:1::/126".parse().unwrap());
        r
    }

    #[test]
    fn ipv6_sides_are_checked_and_default_their_gateway() {
        let (_d, store, keys) = setup();
        let network = create(&store, &keys, &dual("lan")).unwrap();
        assert_eq!(network.gateway6, Some("2001:db8:1::1".parse().unwrap()));
        assert_eq!(network.subnet6.as_deref(), Some("2001:db8:1::/64"));
        // An overlapping IPv6 subnet is refused like an IPv4 one.
        let mut other = dual("other");
        other.subnet = Some("198.51.100.0/24".parse().unwrap());
        other.subnet6 = Some("2001:db8:1:0:1::/80".parse().unwrap());
        other.ip_range6 = None;
        assert!(matches!(
            create(&store, &keys, &other),
            Err(NetworkError::Overlap { .. })
        ));
        for (change, flag) in [
            (
                Box::new(|r: &mut CreateRequest| r.gateway6 = Some("2001:db8:9::1".parse().unwrap()))
                    as Box<dyn Fn(&mut CreateRequest)>,
                "--gateway6 2001:db8:9::1: expected a host address of 2001:db8:3::/64 or a link-local",
            ),
            (
                Box::new(|r: &mut CreateRequest| r.gateway6 = Some("ff02::1".parse().unwrap())),
                "--gateway6 ff02::1: a multicast address",
            ),
            (
                Box::new(|r: &mut CreateRequest| r.ip_range6 = Some("2001:db8:2::/120".parse().unwrap())),
                "--ip-range6",
            ),
            (
                Box::new(|r: &mut CreateRequest| r.subnet6 = None),
                "--ipv6 static needs --subnet6",
            ),
            (
                Box::new(|r: &mut CreateRequest| r.ipv6 = Ipv6Mode::Off),
                "--subnet6 needs --ipv6",
            ),
            (
                Box::new(|r: &mut CreateRequest| {
                    r.ipv6 = Ipv6Mode::Slaac;
                    r.ip_range6 = None;
                    r.gateway6 = Some("fe80::1".parse().unwrap());
                }),
                "--gateway6: with --ipv6 slaac",
            ),
            (
                Box::new(|r: &mut CreateRequest| {
                    r.ipv6 = Ipv6Mode::Slaac;
                    r.ip_range6 = None;
                    r.ipvlan = Some(IpvlanSpec {
                        mode: IpvlanMode::L2,
                        flag: IpvlanFlag::Bridge,
                    });
                }),
                "needs a MAC of the container's own",
            ),
        ] {
            let mut r = dual("n2");
            r.subnet = Some("198.51.100.0/24".parse().unwrap());
            r.subnet6 = r.subnet6.map(|_| "2001:db8:3::/64".parse().unwrap());
            r.ip_range6 = r.ip_range6.map(|_| "2001:db8:3::/126".parse().unwrap());
            change(&mut r);
            let e = create(&store, &keys, &r).unwrap_err().to_string();
            assert!(e.contains(flag), "{flag}: {e}");
        }
        // IPv6-only: no --subnet.
        let mut only = dual("only6");
        only.subnet = None;
        only.subnet6 = Some("2001:db8:4::/64".parse().unwrap());
        only.ip_range6 = None;
        let only = create(&store, &keys, &only).unwrap();
        assert!(!only.has_ipv4());
    }

    #[test]
    fn dual_stack_claims_take_both_families_lowest_free_first() {
        let (_d, store, keys) = setup();
        let network = create(&store, &keys, &dual("lan")).unwrap();
        let take6 = |id: &str, v6: Option<&str>| {
            claim(
                &store,
                &keys,
                id,
                (&network, &serde_json::to_string(&network).unwrap()),
                Requested {
                    v4: None,
                    v6: v6.map(|a| a.parse().unwrap()),
                },
                Reserved::default(),
                &record(),
            )
        };
        // ::/126 holds ::1 (gateway), ::2, ::3: two for containers.
        let a = take6("a", None).unwrap();
        assert_eq!(a.v4.unwrap().to_string(), "192.0.2.2/24");
        assert_eq!(a.v6.unwrap().to_string(), "2001:db8:1::2/64");
        let b = take6("b", Some("2001:DB8:1:0::3")).unwrap();
        assert_eq!(b.v6.unwrap().to_string(), "2001:db8:1::3/64");
        assert!(matches!(
            take6("c", None),
            Err(NetworkError::Exhausted { .. })
        ));
        // A restart keeps both; the record has both.
        let again = take6("a", None).unwrap();
        assert_eq!(again.v6, a.v6);
        let record = ipam::load_flat(&store, &keys, "a").unwrap().unwrap();
        assert_eq!(record.ip6.as_deref(), Some("2001:db8:1::2/64"));
        for (address, problem) in [
            ("2001:db8:1::1", "gateway"),
            ("2001:db8:1::", "subnet-router anycast"),
            ("2001:db8:2::5", "outside its subnet"),
            ("fe80::5", "link-local"),
        ] {
            let e = take6("x", Some(address)).unwrap_err().to_string();
            assert!(e.contains(problem), "{address}: {e}");
        }
        ipam::release_flat(&store, &keys, "a").unwrap();
        ipam::release_flat(&store, &keys, "b").unwrap();
        assert!(holders(&store, &keys, &network).unwrap().is_empty());
    }

    #[test]
    fn remove_is_refused_while_in_use() {
        let (_d, store, keys) = setup();
        let network = create(&store, &keys, &vlan_request("v", "198.18.0.0/24", Some(7))).unwrap();
        take(&store, &keys, "c1", &network, None).unwrap();
        match remove(&store, &keys, "v") {
            Err(NetworkError::InUse { holders, .. }) => {
                assert!(holders.contains("c1 (198.18.0.2)"))
            }
            other => panic!("expected in use, got {other:?}"),
        }
        ipam::release_flat(&store, &keys, "c1").unwrap();
        remove(&store, &keys, "v").unwrap();
        assert!(store.get(&keys.vlan_id(7)).unwrap().is_none());
        assert!(matches!(
            load(&store, &keys, "v"),
            Err(NetworkError::NotFound { .. })
        ));
    }
}
