//! Turns a container's annotations and environment into a typed, validated
//! network request. Pure: touches nothing on the host, so every refusal
//! happens before the first change.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::cidr::{parse_ipv4, parse_ipv6, CidrError, Ipv4Cidr, Ipv6Cidr};
use crate::config::Policy;
use crate::netlink::MacvlanMode;

/// One per-container setting of the contract (DESIGN.md §2): its annotation
/// and the environment variable names of the original system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Type,
    HostInterface,
    Ip,
    Gateway,
    Vlan,
    Mtu,
    Mode,
    Rate,
    Burst,
    Latency,
    IngressRate,
    Discover,
    Port,
    Service,
    Network,
    Networks,
    Ip6,
    Gateway6,
}

impl Field {
    pub const ALL: [Field; 18] = [
        Field::Type,
        Field::HostInterface,
        Field::Ip,
        Field::Gateway,
        Field::Vlan,
        Field::Mtu,
        Field::Mode,
        Field::Rate,
        Field::Burst,
        Field::Latency,
        Field::IngressRate,
        Field::Discover,
        Field::Port,
        Field::Service,
        Field::Network,
        Field::Networks,
        Field::Ip6,
        Field::Gateway6,
    ];

    pub fn annotation(self) -> &'static str {
        match self {
            Field::Type => "macvlan.type",
            Field::HostInterface => "macvlan.host-interface",
            Field::Ip => "macvlan.ip",
            Field::Gateway => "macvlan.gateway",
            Field::Vlan => "macvlan.vlan",
            Field::Mtu => "macvlan.mtu",
            Field::Mode => "macvlan.mode",
            Field::Rate => "macvlan.rate",
            Field::Burst => "macvlan.burst",
            Field::Latency => "macvlan.latency",
            Field::IngressRate => "macvlan.ingress-rate",
            Field::Discover => "macvlan.discover",
            Field::Port => "macvlan.port",
            Field::Service => "macvlan.service",
            Field::Network => "macvlan.network",
            Field::Networks => "macvlan.networks",
            Field::Ip6 => "macvlan.ip6",
            Field::Gateway6 => "macvlan.gateway6",
        }
    }

    /// Environment names, the first being the canonical one.
    pub fn env_names(self) -> &'static [&'static str] {
        match self {
            Field::Type => &["TYPE"],
            Field::HostInterface => &["HOSTIF"],
            Field::Ip => &["IP"],
            Field::Gateway => &["GW"],
            Field::Vlan => &["VLAN", "VLANID"],
            Field::Mtu => &["MTU"],
            Field::Mode => &["MODE"],
            Field::Rate => &["RATE"],
            Field::Burst => &["BURST", "BRUST"],
            Field::Latency => &["LATENCY"],
            Field::IngressRate => &["INGRESS_RATE"],
            Field::Discover => &["DISCOVER"],
            Field::Port => &["PORT"],
            Field::Service => &["SERVICE"],
            Field::Network => &["NETWORK"],
            Field::Networks => &["NETWORKS"],
            Field::Ip6 => &["IP6"],
            Field::Gateway6 => &["GW6"],
        }
    }
}

/// A value as the user wrote it, with the name they wrote it under.
#[derive(Debug, Clone)]
struct Setting {
    name: String,
    value: String,
}

/// A refused request: which setting, what it held, what would be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct RequestError {
    /// The annotation or environment variable, as the user spelled it.
    pub setting: String,
    pub value: Option<String>,
    pub problem: String,
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(value) => write!(f, "invalid {} {:?}: {}", self.setting, value, self.problem),
            None => write!(f, "{}: {}", self.setting, self.problem),
        }
    }
}

/// The container's settings from both channels; annotations win.
pub struct Settings {
    values: BTreeMap<&'static str, Setting>,
}

impl Settings {
    /// Collects the contract's settings. Environment variables count only
    /// when the policy allows them: an image's ENV is written by whoever
    /// built the image, not by the operator.
    pub fn collect(
        annotations: &BTreeMap<String, String>,
        env: &[String],
        allow_env: bool,
    ) -> Result<Settings, RequestError> {
        for key in annotations.keys() {
            if key.starts_with("macvlan.") && !Field::ALL.iter().any(|f| f.annotation() == key) {
                let known: Vec<&str> = Field::ALL.iter().map(|f| f.annotation()).collect();
                return Err(RequestError {
                    setting: key.clone(),
                    value: None,
                    problem: format!("unknown annotation; known ones are {}", known.join(", ")),
                });
            }
        }
        let env: BTreeMap<&str, &str> = if allow_env {
            env.iter()
                .filter_map(|entry| entry.split_once('='))
                .collect()
        } else {
            BTreeMap::new()
        };
        let mut values = BTreeMap::new();
        for field in Field::ALL {
            let from_annotation = annotations.get(field.annotation()).map(|value| Setting {
                name: field.annotation().to_string(),
                value: value.clone(),
            });
            let from_env = || {
                field.env_names().iter().find_map(|name| {
                    env.get(name)
                        .filter(|v| !v.is_empty())
                        .map(|value| Setting {
                            name: (*name).to_string(),
                            value: value.to_string(),
                        })
                })
            };
            if let Some(setting) = from_annotation.or_else(from_env) {
                values.insert(field.annotation(), setting);
            }
        }
        Ok(Settings { values })
    }

    fn get(&self, field: Field) -> Option<&Setting> {
        self.values.get(field.annotation())
    }

    /// Whether the container asked for anything at all.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

/// The network types of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkType {
    Flat,
    Dhcp,
    /// A network the operator defined (`NETWORK=`, `NETWORKS=`, or the
    /// thesis's `TYPE=vlan VLAN=`).
    Network,
}

impl NetworkType {
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkType::Flat => "flat",
            NetworkType::Dhcp => "dhcp",
            NetworkType::Network => "network",
        }
    }
}

/// A flat network: a fixed address on the parent's LAN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlatRequest {
    pub parent: String,
    pub address: Ipv4Cidr,
    pub gateway: Option<Ipv4Addr>,
    /// IP6 and GW6: a fixed IPv6 address too (none: IPv6 off on the interface).
    pub address6: Option<Ipv6Cidr>,
    pub gateway6: Option<Ipv6Addr>,
}

/// A network the operator defined, by name, and the address asked for
/// (else the one held before, else the lowest free).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedRequest {
    pub name: NetworkName,
    /// The address and, if given in CIDR form, its prefix length (which
    /// must then be the network's).
    pub address: Option<(Ipv4Addr, Option<u8>)>,
    /// The IPv6 address asked for (IP6, or in NETWORKS after a '+'), with
    /// its prefix length if given.
    pub address6: Option<(Ipv6Addr, Option<u8>)>,
    /// The setting that named it, as spelled (`NETWORK`, `macvlan.networks`…).
    pub setting: String,
    /// Whether it came from an environment variable, not an annotation
    /// (networks marked annotations-only refuse those).
    pub from_env: bool,
}

/// A DHCP network: a macvlan on the parent's LAN whose address, prefix and
/// gateway come from the LAN's DHCP server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpRequest {
    pub parent: String,
}

/// Which network, with what the parser alone can know about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Network {
    Flat(FlatRequest),
    Dhcp(DhcpRequest),
    Named(NamedRequest),
}

/// What a container asked for, complete and checked: one attachment (its
/// first network), and the further networks of `NETWORKS` in `more`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkRequest {
    pub container_id: String,
    pub network: Network,
    /// Which of the container's attachments this is: 0 for the first
    /// (record `<id>`), n for the n-th further one (record `<id>/<n>`).
    pub slot: usize,
    /// Further networks (`NETWORKS=a,b`), each its own interface and record.
    pub more: Vec<NamedRequest>,
    pub mtu: Option<u32>,
    /// `None`: the network's mode (bridge for ad-hoc requests).
    pub mode: Option<MacvlanMode>,
    /// An ipvlan device instead of a macvlan (from the network).
    pub ipvlan: Option<crate::network::IpvlanSpec>,
    /// Egress limit, if one was asked for.
    pub egress: Option<RateLimit>,
    /// Ingress limit (INGRESS_RATE), shaped on an ifb in the container's namespace.
    pub ingress: Option<RateLimit>,
    /// A service to register (DISCOVER=true).
    pub discovery: Option<DiscoveryRequest>,
    /// The interface's name (CNI_IFNAME); none: the first free `ethN`.
    pub ifname: Option<String>,
    /// The interface's MAC (CNI's `mac` capability); none: derived from
    /// the attachment's id.
    pub mac: Option<[u8; 6]>,
    /// Made through the CNI plugin: the runtime's names for the attachment.
    pub cni: Option<crate::record::CniRef>,
}

/// The store key segment of one attachment: the container's id for its
/// first, `<id>/<n>` for further ones (runtimes allow no '/' in ids).
pub fn record_id(container_id: &str, slot: usize) -> String {
    if slot == 0 {
        container_id.to_string()
    } else {
        format!("{container_id}/{slot}")
    }
}

/// Which of its container's attachments a record id is (0: the first).
pub fn slot_of(record_id: &str) -> usize {
    record_id
        .split_once('/')
        .and_then(|(_, slot)| slot.parse().ok())
        .unwrap_or(0)
}

/// Whether an attachment carries the container's default routes: its
/// first network's, or for a CNI attachment (`<container>:<ifname>`; OCI
/// ids have no ':') the one on `eth0`.
pub fn is_primary(record_id: &str) -> bool {
    slot_of(record_id) == 0
        && record_id
            .rsplit_once(':')
            .is_none_or(|(_, ifname)| ifname == "eth0")
}

/// The container an attachment's record id belongs to.
pub fn container_of(record_id: &str) -> &str {
    record_id.split('/').next().unwrap_or(record_id)
}

/// RATE / BURST / LATENCY as given; the bucket is sized once the MTU is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    pub rate_kbit: u64,
    pub burst: Option<u32>,
    pub latency_ms: u32,
    /// How the user spelled BURST, for error messages.
    pub burst_setting: String,
}

/// Default queueing latency when LATENCY is not given (ms).
pub const DEFAULT_LATENCY_MS: u32 = 50;

impl RateLimit {
    /// The smallest bucket that works: one full frame (MTU + Ethernet
    /// header), and at least 1 ms of traffic at the rate.
    pub fn minimum_burst(&self, mtu: u32) -> u64 {
        (u64::from(mtu) + 14).max(self.rate_kbit * 125 / 1000)
    }

    /// The default bucket: 10 ms of traffic, at least two full frames.
    pub fn default_burst(&self, mtu: u32) -> u64 {
        (2 * (u64::from(mtu) + 14)).max(self.rate_kbit * 125 / 100)
    }

    /// The tbf for an interface of MTU `mtu`.
    pub fn tbf(&self, mtu: u32) -> Result<crate::netlink::tbf::Tbf, RequestError> {
        let minimum = self.minimum_burst(mtu);
        let burst = match self.burst {
            Some(burst) if u64::from(burst) < minimum => {
                return Err(RequestError {
                    setting: self.burst_setting.clone(),
                    value: Some(burst.to_string()),
                    problem: format!(
                        "too small for {} kbit/s and MTU {mtu}: at least {minimum} bytes",
                        self.rate_kbit
                    ),
                })
            }
            Some(burst) => u64::from(burst),
            None => self.default_burst(mtu),
        };
        let burst = u32::try_from(burst).unwrap_or(u32::MAX);
        crate::netlink::tbf::Tbf::new(self.rate_kbit, burst, self.latency_ms).ok_or_else(|| {
            RequestError {
                setting: "macvlan.rate (RATE)".into(),
                value: Some(self.rate_kbit.to_string()),
                problem: "rate × latency is too large for the kernel's tbf; lower LATENCY".into(),
            }
        })
    }
}

impl NetworkRequest {
    pub fn network_type(&self) -> NetworkType {
        match self.network {
            Network::Flat(_) => NetworkType::Flat,
            Network::Dhcp(_) => NetworkType::Dhcp,
            Network::Named(_) => NetworkType::Network,
        }
    }

    /// The macvlan mode: as asked, else bridge.
    pub fn macvlan_mode(&self) -> MacvlanMode {
        self.mode.unwrap_or(MacvlanMode::Bridge)
    }

    /// This request with a network's defaults filled in and its caps
    /// checked: its mode and MTU unless asked otherwise (passthru, which
    /// takes the whole parent, only where the network is passthru), and
    /// its rate limits as a ceiling — a container may ask for less, not more.
    pub fn within(
        &self,
        network: &crate::network::Network,
    ) -> Result<NetworkRequest, RequestError> {
        let mut request = self.clone();
        if let (Some(mode), Some(ipvlan)) = (self.mode, network.ipvlan) {
            return Err(RequestError {
                setting: "macvlan.mode (MODE)".into(),
                value: Some(mode.as_str().into()),
                problem: format!(
                    "network {} is an ipvlan network (mode {}); MODE is for macvlan networks",
                    network.name,
                    ipvlan.mode.as_str()
                ),
            });
        }
        request.ipvlan = network.ipvlan;
        if self.mode == Some(MacvlanMode::Passthru) && network.mode != MacvlanMode::Passthru {
            return Err(RequestError {
                setting: "macvlan.mode (MODE)".into(),
                value: Some("passthru".into()),
                problem: format!(
                    "network {} is {}; passthru takes the whole parent and only a passthru network allows it",
                    network.name,
                    network.mode.as_str()
                ),
            });
        }
        request.mode = Some(self.mode.unwrap_or(network.mode));
        request.mtu = self.mtu.or(network.mtu);
        if let (Some(asked), Some(cap)) = (self.mtu, network.mtu) {
            if asked > cap {
                return Err(RequestError {
                    setting: "macvlan.mtu (MTU)".into(),
                    value: Some(asked.to_string()),
                    problem: format!("network {} has MTU {cap}: at most that", network.name),
                });
            }
        }
        for (limit, cap, setting) in [
            (
                &mut request.egress,
                network.rate_kbit,
                "macvlan.rate (RATE)",
            ),
            (
                &mut request.ingress,
                network.ingress_rate_kbit,
                "macvlan.ingress-rate (INGRESS_RATE)",
            ),
        ] {
            let Some(cap) = cap else { continue };
            match limit {
                Some(asked) if asked.rate_kbit > cap => {
                    return Err(RequestError {
                        setting: setting.into(),
                        value: Some(asked.rate_kbit.to_string()),
                        problem: format!("network {} allows at most {cap} kbit/s", network.name),
                    })
                }
                Some(_) => {}
                None => {
                    *limit = Some(RateLimit {
                        rate_kbit: cap,
                        burst: None,
                        latency_ms: DEFAULT_LATENCY_MS,
                        burst_setting: "macvlan.burst (BURST)".into(),
                    })
                }
            }
        }
        Ok(request)
    }

    /// This attachment's record id (`<id>` or `<id>/<slot>`).
    pub fn record_id(&self) -> String {
        record_id(&self.container_id, self.slot)
    }

    /// Every attachment the container asked for, in interface order: this
    /// one, then one per further network, without the service (which
    /// registers on the first address only).
    pub fn attachments(&self) -> Vec<NetworkRequest> {
        let mut all = vec![NetworkRequest {
            more: Vec::new(),
            ..self.clone()
        }];
        for (index, named) in self.more.iter().enumerate() {
            all.push(NetworkRequest {
                network: Network::Named(named.clone()),
                slot: index + 1,
                more: Vec::new(),
                discovery: None,
                ..self.clone()
            });
        }
        all
    }

    /// Checks what depends on the parent interface, once it has been found:
    /// the MTU may not exceed the parent's.
    pub fn check_against_parent(&self, parent: &str, parent_mtu: u32) -> Result<(), RequestError> {
        if let Some(mtu) = self.mtu {
            if mtu > parent_mtu {
                return Err(RequestError {
                    setting: "macvlan.mtu (MTU)".into(),
                    value: Some(mtu.to_string()),
                    problem: format!("must be between 68 and the MTU of {parent} ({parent_mtu})"),
                });
            }
        }
        for limit in [&self.egress, &self.ingress].into_iter().flatten() {
            limit.tbf(self.mtu.unwrap_or(parent_mtu))?;
        }
        Ok(())
    }
}

fn invalid(setting: &Setting, problem: impl Into<String>) -> RequestError {
    RequestError {
        setting: setting.name.clone(),
        value: Some(setting.value.clone()),
        problem: problem.into(),
    }
}

fn missing(field: Field, network: &str, example: &str) -> RequestError {
    RequestError {
        setting: format!("{} ({})", field.annotation(), field.env_names()[0]),
        value: None,
        problem: format!("required for a {network} network, for example {example}"),
    }
}

/// Linux interface names: 1–15 bytes, no '/', ':' or whitespace, not "." or "..".
pub fn valid_interface_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'/' && b != b':')
}

/// Parses and validates a container's request. `Ok(None)`: it asked for no
/// network (no type given).
pub fn parse(
    container_id: &str,
    settings: &Settings,
    policy: &Policy,
) -> Result<Option<NetworkRequest>, RequestError> {
    let named = parse_named(settings)?;
    let type_setting = settings.get(Field::Type);
    let (network_request, more) = match (named, type_setting) {
        (Some(_), Some(type_setting)) => {
            return Err(invalid(
                type_setting,
                "TYPE describes an ad-hoc network and NETWORK/NETWORKS name one the operator defined; give only one of them",
            ))
        }
        (Some(mut list), None) => {
            for field in [Field::HostInterface, Field::Gateway, Field::Gateway6, Field::Vlan] {
                if let Some(setting) = settings.get(field) {
                    return Err(invalid(
                        setting,
                        "not used with NETWORK/NETWORKS: the network (macvlan network create) defines it",
                    ));
                }
            }
            let first = list.remove(0);
            (Network::Named(first), list)
        }
        (None, None) => {
            // Only limits and no network: shaping of the interface the
            // container already has (see `parse_shaping`).
            if let Some(other) = settings
                .values
                .iter()
                .find(|(annotation, _)| {
                    !SHAPING_FIELDS
                        .iter()
                        .any(|f| f.annotation() == **annotation)
                })
                .map(|(_, setting)| setting)
            {
                return Err(RequestError {
                    setting: format!("{} (NETWORK)", Field::Network.annotation()),
                    value: None,
                    problem: format!(
                        "{} is set but no network is: name one with NETWORK=<name> (macvlan network ls)",
                        other.name
                    ),
                });
            }
            return Ok(None);
        }
        (None, Some(type_setting)) => {
            let network = match type_setting.value.trim().to_ascii_lowercase().as_str() {
                "flat" => NetworkType::Flat,
                "vlan" => NetworkType::Network,
                "dhcp" => NetworkType::Dhcp,
                _ => return Err(invalid(type_setting, "expected flat, dhcp or vlan")),
            };
            if network != NetworkType::Network {
                if let Some(setting) = settings.get(Field::Vlan) {
                    return Err(invalid(setting, "only for vlan networks"));
                }
                // TYPE=vlan names an operator's network; flat and dhcp
                // describe the LAN themselves, which only the operator may
                // allow.
                if !policy.allow_adhoc {
                    return Err(invalid(
                        type_setting,
                        "ad-hoc networks are off on this host ([policy] allow_adhoc = false); ask for a network the operator defined with NETWORK=<name> (macvlan network ls)",
                    ));
                }
            }
            let network = match network {
                NetworkType::Flat => Network::Flat(parse_flat(settings, policy)?),
                NetworkType::Network => Network::Named(parse_vlan(settings)?),
                NetworkType::Dhcp => Network::Dhcp(parse_dhcp(settings, policy)?),
            };
            (network, Vec::new())
        }
    };

    let mtu = match settings.get(Field::Mtu) {
        None => None,
        Some(setting) => {
            let mtu: u32 = setting
                .value
                .parse()
                .ok()
                .filter(|m| (68..=65535).contains(m))
                .ok_or_else(|| {
                    invalid(
                        setting,
                        "expected a number from 68 to the parent interface's MTU",
                    )
                })?;
            Some(mtu)
        }
    };

    let mode = match settings.get(Field::Mode) {
        None => None,
        Some(setting) => Some(match setting.value.trim().to_ascii_lowercase().as_str() {
            "bridge" => MacvlanMode::Bridge,
            "private" => MacvlanMode::Private,
            "vepa" => MacvlanMode::Vepa,
            "passthru" => MacvlanMode::Passthru,
            _ => {
                return Err(invalid(
                    setting,
                    "expected bridge, private, vepa or passthru",
                ))
            }
        }),
    };

    let egress = parse_egress(settings)?;
    let ingress = parse_ingress(settings)?;
    let discovery = parse_discovery(settings)?;

    Ok(Some(NetworkRequest {
        container_id: container_id.to_string(),
        network: network_request,
        slot: 0,
        more,
        ipvlan: None,
        mtu,
        mode,
        egress,
        ingress,
        discovery,
        ifname: None,
        mac: None,
        cni: None,
    }))
}

/// HOSTIF of a flat or DHCP network: a valid name the policy allows.
fn parse_parent(
    settings: &Settings,
    policy: &Policy,
    network: NetworkType,
) -> Result<String, RequestError> {
    let parent_setting = settings
        .get(Field::HostInterface)
        .ok_or_else(|| missing(Field::HostInterface, network.as_str(), "HOSTIF=eth0"))?;
    let parent = parent_setting.value.clone();
    if !valid_interface_name(&parent) {
        return Err(invalid(
            parent_setting,
            "expected an interface name of 1-15 characters without '/', ':' or spaces",
        ));
    }
    if parent == "lo" {
        return Err(invalid(
            parent_setting,
            "the loopback device cannot carry a macvlan",
        ));
    }
    if !policy.parent_allowed(&parent) {
        return Err(invalid(
            parent_setting,
            format!(
                "not allowed by the host policy; allowed parents: {}",
                policy.allowed_parents.join(", ")
            ),
        ));
    }
    Ok(parent)
}

/// HOSTIF of a DHCP network; the address, prefix and gateway come from the
/// server, so IP and GW are refused rather than silently ignored.
fn parse_dhcp(settings: &Settings, policy: &Policy) -> Result<DhcpRequest, RequestError> {
    let parent = parse_parent(settings, policy, NetworkType::Dhcp)?;
    for field in [Field::Ip, Field::Gateway, Field::Ip6, Field::Gateway6] {
        if let Some(setting) = settings.get(field) {
            return Err(invalid(
                setting,
                "a dhcp network takes its address and gateway from the DHCP server; remove it, or use TYPE=flat for a fixed address (IPv6 from DHCPv6 or SLAAC: a network with --ipv6 dhcpv6|slaac)",
            ));
        }
    }
    Ok(DhcpRequest { parent })
}

/// HOSTIF, IP (CIDR) and GW of a flat network.
fn parse_flat(settings: &Settings, policy: &Policy) -> Result<FlatRequest, RequestError> {
    let network = NetworkType::Flat;
    let parent = parse_parent(settings, policy, network)?;

    let ip_setting = settings
        .get(Field::Ip)
        .ok_or_else(|| missing(Field::Ip, network.as_str(), "IP=192.0.2.10/24"))?;
    let address: Ipv4Cidr = ip_setting.value.parse().map_err(|e| {
        invalid(
            ip_setting,
            match e {
                CidrError::MissingPrefix => {
                    "missing the prefix length: expected CIDR form like 192.0.2.10/24"
                }
                CidrError::BadAddress => {
                    "expected an IPv4 address of four decimal octets 0-255 in CIDR form like 192.0.2.10/24"
                }
                CidrError::BadPrefix => "expected a prefix length from 1 to 30 after the '/'",
            },
        )
    })?;
    if !(1..=30).contains(&address.prefix) {
        return Err(invalid(
            ip_setting,
            "expected a prefix length from 1 to 30 after the '/'",
        ));
    }
    if address.address == address.network() {
        return Err(invalid(
            ip_setting,
            format!(
                "{} is the network address of its subnet; pick a host address",
                address.address
            ),
        ));
    }
    if address.address == address.broadcast() {
        return Err(invalid(
            ip_setting,
            format!(
                "{} is the broadcast address of its subnet; pick a host address",
                address.address
            ),
        ));
    }
    let first = address.address.octets()[0];
    if first == 0 || first == 127 || first >= 224 {
        return Err(invalid(
            ip_setting,
            "expected a unicast address (not 0.x, loopback, multicast or reserved)",
        ));
    }
    if !policy.subnet_allowed(address) {
        return Err(invalid(
            ip_setting,
            format!(
                "outside the subnets allowed by the host policy: {}",
                policy
                    .allowed_subnets
                    .iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }

    let gateway = match settings.get(Field::Gateway) {
        None => None,
        Some(setting) => {
            let gateway = parse_ipv4(setting.value.trim_end_matches("/32"))
                .ok_or_else(|| invalid(setting, "expected an IPv4 address like 192.0.2.1"))?;
            if !address.contains(gateway) {
                return Err(invalid(
                    setting,
                    format!("outside the container's subnet {}", address.subnet()),
                ));
            }
            if gateway == address.network() || gateway == address.broadcast() {
                return Err(invalid(
                    setting,
                    "is the network or broadcast address of the subnet",
                ));
            }
            if gateway == address.address {
                return Err(invalid(
                    ip_setting,
                    format!("{} is the gateway's address", address.address),
                ));
            }
            Some(gateway)
        }
    };

    let (address6, gateway6) = parse_ip6(settings, policy)?;
    Ok(FlatRequest {
        parent,
        address,
        gateway,
        address6,
        gateway6,
    })
}

/// What an IPv6 address setting may not be, in words, or `None`.
fn ipv6_refusal(address: Ipv6Addr) -> Option<String> {
    crate::cidr::ipv6_unicast_problem(address)
        .map(|problem| format!("{address} is {problem}; expected a global or unique-local unicast address like 2001:db8::10"))
}

/// IP6 (CIDR) and GW6 of an ad-hoc request.
fn parse_ip6(
    settings: &Settings,
    policy: &Policy,
) -> Result<(Option<Ipv6Cidr>, Option<Ipv6Addr>), RequestError> {
    let Some(ip_setting) = settings.get(Field::Ip6) else {
        if let Some(gw) = settings.get(Field::Gateway6) {
            return Err(invalid(gw, "needs IP6 (the container's IPv6 address)"));
        }
        return Ok((None, None));
    };
    let text = ip_setting.value.trim();
    if !text.contains(':') && parse_ipv4(text.split('/').next().unwrap_or("")).is_some() {
        return Err(invalid(
            ip_setting,
            "is an IPv4 address; give it as IP, and IP6 an IPv6 address in CIDR form like 2001:db8::10/64",
        ));
    }
    let address: Ipv6Cidr = text.parse().map_err(|e| {
        invalid(
            ip_setting,
            match e {
                CidrError::MissingPrefix => {
                    "missing the prefix length: expected CIDR form like 2001:db8::10/64"
                }
                CidrError::BadAddress => {
                    "expected an IPv6 address in CIDR form like 2001:db8::10/64"
                }
                CidrError::BadPrefix => "expected a prefix length from 1 to 128 after the '/'",
            },
        )
    })?;
    if address.prefix == 0 {
        return Err(invalid(
            ip_setting,
            "expected a prefix length from 1 to 128 after the '/'",
        ));
    }
    if let Some(problem) = ipv6_refusal(address.address) {
        return Err(invalid(ip_setting, problem));
    }
    if address.prefix < 128 && address.address == address.network() {
        return Err(invalid(
            ip_setting,
            format!(
                "{} is the subnet-router anycast address of its subnet; pick a host address",
                address.address
            ),
        ));
    }
    if !policy.subnet6_allowed(address) {
        return Err(invalid(
            ip_setting,
            format!(
                "outside the subnets allowed by the host policy: {}",
                policy
                    .allowed_subnets
                    .iter()
                    .map(|s| s.to_string())
                    .chain(policy.allowed_subnets6.iter().map(|s| s.to_string()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    let gateway = match settings.get(Field::Gateway6) {
        None => None,
        Some(setting) => {
            let gateway = parse_ipv6(setting.value.trim()).ok_or_else(|| {
                invalid(
                    setting,
                    "expected an IPv6 address like 2001:db8::1 or fe80::1",
                )
            })?;
            if !crate::cidr::is_ipv6_link_local(gateway) {
                if let Some(problem) = crate::cidr::ipv6_unicast_problem(gateway) {
                    return Err(invalid(setting, format!("{gateway} is {problem}")));
                }
                if !address.contains(gateway) {
                    return Err(invalid(
                        setting,
                        format!(
                            "outside the container's subnet {} and not link-local (fe80::/10)",
                            address.subnet()
                        ),
                    ));
                }
                if gateway == address.address {
                    return Err(invalid(
                        ip_setting,
                        format!("{} is the gateway's address", address.address),
                    ));
                }
            }
            Some(gateway)
        }
    };
    Ok((Some(address), gateway))
}

/// An IPv6 address given for a network: alone or in CIDR form.
fn parse_network_address6(
    setting: &Setting,
    text: &str,
) -> Result<(Ipv6Addr, Option<u8>), RequestError> {
    let text = text.trim();
    let (address, prefix) = match text.split_once('/') {
        Some((address, prefix)) => (address, Some(prefix)),
        None => (text, None),
    };
    if parse_ipv4(address).is_some() {
        return Err(invalid(
            setting,
            "is an IPv4 address; give it as IP, and IP6 an IPv6 address like 2001:db8::10",
        ));
    }
    let address = parse_ipv6(address).ok_or_else(|| {
        invalid(
            setting,
            "expected an IPv6 address like 2001:db8::10 (or in CIDR form with the network's prefix)",
        )
    })?;
    if let Some(problem) = ipv6_refusal(address) {
        return Err(invalid(setting, problem));
    }
    let prefix = prefix.map(|p| parse_prefix(setting, p, 128)).transpose()?;
    Ok((address, prefix))
}

/// The prefix length after an address's '/': 1 to `max`.
fn parse_prefix(setting: &Setting, text: &str, max: u8) -> Result<u8, RequestError> {
    text.parse::<u8>()
        .ok()
        .filter(|p| (1..=max).contains(p))
        .ok_or_else(|| {
            invalid(
                setting,
                format!("expected a prefix length from 1 to {max} after the '/'"),
            )
        })
}

/// An address given for a network: alone, or in CIDR form (whose prefix
/// must then be the network's, checked once the network is known).
fn parse_network_address(
    setting: &Setting,
    text: &str,
) -> Result<(Ipv4Addr, Option<u8>), RequestError> {
    let text = text.trim();
    let (address, prefix) = match text.split_once('/') {
        Some((address, prefix)) => (address, Some(prefix)),
        None => (text, None),
    };
    let address = parse_ipv4(address).ok_or_else(|| {
        invalid(
            setting,
            "expected an IPv4 address like 192.0.2.10 (or in CIDR form with the network's prefix)",
        )
    })?;
    let prefix = prefix.map(|p| parse_prefix(setting, p, 30)).transpose()?;
    Ok((address, prefix))
}

/// The most networks one container may join (`eth0`…`eth7`).
pub const MAX_NETWORKS: usize = 8;

/// NETWORK (with IP) or NETWORKS: the operator's networks a container
/// joins, in interface order. `None`: neither was given.
fn parse_named(settings: &Settings) -> Result<Option<Vec<NamedRequest>>, RequestError> {
    let single = settings.get(Field::Network);
    let list = settings.get(Field::Networks);
    let from_env = |setting: &Setting| !setting.name.starts_with("macvlan.");
    match (single, list) {
        (None, None) => Ok(None),
        (Some(_), Some(list)) => Err(invalid(
            list,
            "give either NETWORK (one network) or NETWORKS (several), not both",
        )),
        (Some(setting), None) => {
            let name = NetworkName::parse(&setting.value)
                .ok_or_else(|| invalid(setting, NetworkName::EXPECTED))?;
            let address = settings
                .get(Field::Ip)
                .map(|ip| parse_network_address(ip, &ip.value))
                .transpose()?;
            let address6 = settings
                .get(Field::Ip6)
                .map(|ip| parse_network_address6(ip, &ip.value))
                .transpose()?;
            Ok(Some(vec![NamedRequest {
                name,
                address,
                address6,
                setting: setting.name.clone(),
                from_env: from_env(setting),
            }]))
        }
        (None, Some(setting)) => {
            for field in [Field::Ip, Field::Ip6] {
                if let Some(ip) = settings.get(field) {
                    return Err(invalid(
                        ip,
                        "with NETWORKS, give each address in the list, like NETWORKS=lan,storage=192.0.2.40+2001:db8::40",
                    ));
                }
            }
            let mut networks: Vec<NamedRequest> = Vec::new();
            for entry in setting.value.split(',') {
                let (name, address) = match entry.split_once('=') {
                    Some((name, address)) => (name, Some(address)),
                    None => (entry, None),
                };
                let expected = "expected network names separated by commas, each with optional =addresses (IPv4, IPv6 or both joined by '+'), like lan,storage=192.0.2.40+2001:db8::40";
                let name = NetworkName::parse(name).ok_or_else(|| invalid(setting, expected))?;
                if networks.iter().any(|n| n.name == name) {
                    return Err(invalid(
                        setting,
                        format!(
                            "network {name} is named twice; a container joins each network once"
                        ),
                    ));
                }
                let given: Option<&str> = address;
                let (mut address, mut address6) = (None, None);
                for part in given.into_iter().flat_map(|a| a.split('+')) {
                    if part.contains(':') {
                        if address6.is_some() {
                            return Err(invalid(
                                setting,
                                format!("network {name}: one IPv6 address per network"),
                            ));
                        }
                        address6 = Some(parse_network_address6(setting, part)?);
                    } else {
                        if address.is_some() {
                            return Err(invalid(
                                setting,
                                format!("network {name}: one IPv4 address per network"),
                            ));
                        }
                        address = Some(parse_network_address(setting, part)?);
                    }
                }
                networks.push(NamedRequest {
                    name,
                    address,
                    address6,
                    setting: setting.name.clone(),
                    from_env: from_env(setting),
                });
            }
            if networks.len() > MAX_NETWORKS {
                return Err(invalid(
                    setting,
                    format!("at most {MAX_NETWORKS} networks per container"),
                ));
            }
            Ok(Some(networks))
        }
    }
}

/// VLAN and the optional IP of the thesis's `TYPE=vlan` request: the VLAN
/// network is an operator-defined network like any other.
fn parse_vlan(settings: &Settings) -> Result<NamedRequest, RequestError> {
    for (field, what) in [
        (Field::HostInterface, "host interface"),
        (Field::Gateway, "gateway"),
        (Field::Gateway6, "IPv6 gateway"),
    ] {
        if let Some(setting) = settings.get(field) {
            return Err(invalid(
                setting,
                format!("not used for vlan networks: the VLAN network (macvlan vlan create) names its {what}"),
            ));
        }
    }
    let name_setting = settings
        .get(Field::Vlan)
        .ok_or_else(|| missing(Field::Vlan, "vlan", "VLAN=test1"))?;
    let name = NetworkName::parse(&name_setting.value)
        .ok_or_else(|| invalid(name_setting, NetworkName::EXPECTED))?;
    let address = settings
        .get(Field::Ip)
        .map(|ip| parse_network_address(ip, &ip.value))
        .transpose()?;
    let address6 = settings
        .get(Field::Ip6)
        .map(|ip| parse_network_address6(ip, &ip.value))
        .transpose()?;
    Ok(NamedRequest {
        name,
        address,
        address6,
        setting: name_setting.name.clone(),
        from_env: !name_setting.name.starts_with("macvlan."),
    })
}

/// A network's name: 1–32 letters, digits, '-' or '_', starting with a
/// letter or digit (names starting with '_' are the store's own, as the
/// ad-hoc address pool `_adhoc`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NetworkName(String);

impl NetworkName {
    pub const EXPECTED: &'static str =
        "expected a network name: 1-32 letters, digits, '-' or '_', starting with a letter or digit";

    pub fn parse(text: &str) -> Option<NetworkName> {
        let name = text.trim();
        let valid = name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
            && name.len() <= 32
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        valid.then(|| NetworkName(name.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NetworkName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// DISCOVER / PORT / SERVICE: a service to register once the container runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveryRequest {
    pub port: u16,
    /// The name asked for; `None` means the container's hostname.
    pub service: Option<ServiceName>,
}

/// A service name: one DNS label (lower case letters, digits, '-'; 1–63
/// characters, not starting or ending with '-'), so that `<name>.<domain>`
/// resolves.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceName(String);

impl ServiceName {
    pub const EXPECTED: &'static str =
        "expected a DNS label: 1-63 letters, digits or '-', not starting or ending with '-'";

    pub fn parse(text: &str) -> Option<ServiceName> {
        let name = text.trim().to_ascii_lowercase();
        let valid = !name.is_empty()
            && name.len() <= 63
            && !name.starts_with('-')
            && !name.ends_with('-')
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        valid.then_some(ServiceName(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl DiscoveryRequest {
    /// The name to register: SERVICE, or else the container's hostname.
    pub fn service_name(&self, hostname: Option<&str>) -> Result<ServiceName, RequestError> {
        if let Some(name) = &self.service {
            return Ok(name.clone());
        }
        let setting = format!("{} (SERVICE)", Field::Service.annotation());
        match hostname.filter(|h| !h.is_empty()) {
            Some(hostname) => ServiceName::parse(hostname).ok_or_else(|| RequestError {
                setting,
                value: None,
                problem: format!(
                    "not given, and the hostname {hostname:?} is not a usable service name ({}); set SERVICE",
                    ServiceName::EXPECTED
                ),
            }),
            None => Err(RequestError {
                setting,
                value: None,
                problem: "not given and the container has no hostname; set SERVICE=name".into(),
            }),
        }
    }
}

/// A port number 1–65535.
pub fn parse_port(text: &str) -> Option<u16> {
    text.trim().parse::<u16>().ok().filter(|p| *p > 0)
}

/// DISCOVER, PORT and SERVICE: a service to register, if asked for.
pub fn parse_discovery(settings: &Settings) -> Result<Option<DiscoveryRequest>, RequestError> {
    let enabled = match settings.get(Field::Discover) {
        None => false,
        Some(setting) => match setting.value.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => true,
            "false" | "0" | "no" => false,
            _ => return Err(invalid(setting, "expected true or false")),
        },
    };
    if !enabled {
        for orphan in [Field::Port, Field::Service] {
            if let Some(setting) = settings.get(orphan) {
                if settings.get(Field::Discover).is_none() {
                    return Err(invalid(setting, "needs DISCOVER=true (macvlan.discover)"));
                }
            }
        }
        return Ok(None);
    }
    let port_setting = settings.get(Field::Port).ok_or_else(|| RequestError {
        setting: format!("{} (PORT)", Field::Port.annotation()),
        value: None,
        problem: "required with DISCOVER=true: the service's TCP port, for example PORT=8000"
            .into(),
    })?;
    let port = parse_port(&port_setting.value)
        .ok_or_else(|| invalid(port_setting, "expected a TCP port from 1 to 65535"))?;
    let service = settings
        .get(Field::Service)
        .map(|setting| {
            ServiceName::parse(&setting.value)
                .ok_or_else(|| invalid(setting, ServiceName::EXPECTED))
        })
        .transpose()?;
    Ok(Some(DiscoveryRequest { port, service }))
}

/// The settings that may come without a network type.
const SHAPING_FIELDS: [Field; 4] = [
    Field::Rate,
    Field::Burst,
    Field::Latency,
    Field::IngressRate,
];

/// Bandwidth limits for a container that is not on one of our networks
/// (the original system limited Docker's own veth containers too): a rate
/// without TYPE shapes the container's existing `eth0`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapingRequest {
    pub container_id: String,
    pub egress: Option<RateLimit>,
    pub ingress: Option<RateLimit>,
}

/// `Ok(Some)` when the container gives limits but no network type.
pub fn parse_shaping(
    container_id: &str,
    settings: &Settings,
) -> Result<Option<ShapingRequest>, RequestError> {
    if settings.get(Field::Type).is_some()
        || !SHAPING_FIELDS.iter().any(|f| settings.get(*f).is_some())
    {
        return Ok(None);
    }
    let egress = parse_egress(settings)?;
    let ingress = parse_ingress(settings)?;
    Ok(Some(ShapingRequest {
        container_id: container_id.to_string(),
        egress,
        ingress,
    }))
}

/// INGRESS_RATE (kbit/s); bucket and latency take the defaults.
fn parse_ingress(settings: &Settings) -> Result<Option<RateLimit>, RequestError> {
    let Some(setting) = settings.get(Field::IngressRate) else {
        return Ok(None);
    };
    Ok(Some(RateLimit {
        rate_kbit: positive(setting, "kbit/s", u64::from(u32::MAX) / 125)?,
        burst: None,
        latency_ms: DEFAULT_LATENCY_MS,
        burst_setting: setting.name.clone(),
    }))
}

/// A positive whole number of at most `max`, or the refusal naming the setting.
fn positive(setting: &Setting, unit: &str, max: u64) -> Result<u64, RequestError> {
    setting
        .value
        .trim()
        .parse::<u64>()
        .ok()
        .filter(|v| (1..=max).contains(v))
        .ok_or_else(|| {
            invalid(
                setting,
                format!("expected a whole number of {unit} from 1 to {max}"),
            )
        })
}

/// RATE (kbit/s), BURST (bytes), LATENCY (ms).
fn parse_egress(settings: &Settings) -> Result<Option<RateLimit>, RequestError> {
    let Some(rate) = settings.get(Field::Rate) else {
        for orphan in [Field::Burst, Field::Latency] {
            if let Some(setting) = settings.get(orphan) {
                return Err(invalid(setting, "needs RATE (macvlan.rate) as well"));
            }
        }
        return Ok(None);
    };
    // tbf holds the rate in bytes/s as a u32: up to 34 Gbit/s.
    let rate_kbit = positive(rate, "kbit/s", u64::from(u32::MAX) / 125)?;
    let burst = settings
        .get(Field::Burst)
        .map(|s| positive(s, "bytes", u64::from(u32::MAX)).map(|b| b as u32))
        .transpose()?;
    let latency_ms = settings
        .get(Field::Latency)
        .map(|s| positive(s, "ms", 60_000).map(|l| l as u32))
        .transpose()?
        .unwrap_or(DEFAULT_LATENCY_MS);
    Ok(Some(RateLimit {
        rate_kbit,
        burst,
        latency_ms,
        burst_setting: settings
            .get(Field::Burst)
            .map(|s| s.name.clone())
            .unwrap_or_else(|| "macvlan.burst (BURST)".into()),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flat(request: &NetworkRequest) -> &FlatRequest {
        match &request.network {
            Network::Flat(flat) => flat,
            other => panic!("not flat: {other:?}"),
        }
    }

    /// The tests of the thesis's request run with ad-hoc networks on.
    fn policy() -> Policy {
        Policy {
            allow_adhoc: true,
            ..Policy::default()
        }
    }

    fn env(pairs: &[&str]) -> Vec<String> {
        pairs.iter().map(|s| s.to_string()).collect()
    }

    fn parse_env(pairs: &[&str]) -> Result<Option<NetworkRequest>, RequestError> {
        let settings = Settings::collect(&BTreeMap::new(), &env(pairs), true)?;
        parse("c1", &settings, &policy())
    }

    fn error_for(pairs: &[&str]) -> RequestError {
        parse_env(pairs).expect_err("should be refused")
    }

    const GOOD: [&str; 4] = [
        "TYPE=flat",
        "HOSTIF=lan0",
        "IP=192.0.2.10/24",
        "GW=192.0.2.1",
    ];

    /// GOOD (a flat request) and `extra`.
    fn with_ipv6<'a>(extra: &[&'a str]) -> Vec<&'a str> {
        let mut all: Vec<&str> = GOOD.to_vec();
        all.extend_from_slice(extra);
        all
    }

    fn with(replace: &str) -> Vec<&str> {
        let key = replace.split('=').next().unwrap();
        let mut out: Vec<&str> = GOOD
            .iter()
            .copied()
            .filter(|e| e.split('=').next().unwrap() != key)
            .collect();
        out.push(replace);
        out
    }

    #[test]
    fn dhcp_needs_a_parent_and_refuses_fixed_addresses() {
        let request = parse_env(&["TYPE=DHCP", "HOSTIF=lan0"]).unwrap().unwrap();
        assert_eq!(
            request.network,
            Network::Dhcp(DhcpRequest {
                parent: "lan0".into()
            })
        );
        assert_eq!(request.network_type(), NetworkType::Dhcp);
        let missing = error_for(&["TYPE=dhcp"]);
        assert!(missing.to_string().contains("HOSTIF"), "{missing}");
        for fixed in ["IP=192.0.2.10/24", "GW=192.0.2.1"] {
            let error = error_for(&["TYPE=dhcp", "HOSTIF=lan0", fixed]);
            let field = fixed.split('=').next().unwrap();
            assert!(
                error.to_string().contains(field)
                    && error.to_string().contains("from the DHCP server"),
                "{error}"
            );
        }
        let vlan = error_for(&["TYPE=dhcp", "HOSTIF=lan0", "VLAN=test1"]);
        assert!(
            vlan.to_string().contains("only for vlan networks"),
            "{vlan}"
        );
    }

    #[test]
    fn no_type_means_no_network() {
        assert_eq!(parse_env(&["PATH=/bin", "HOME=/"]).unwrap(), None);
    }

    #[test]
    fn full_flat_request_from_env() {
        let request = parse_env(&GOOD).unwrap().unwrap();
        assert_eq!(flat(&request).parent, "lan0");
        assert_eq!(flat(&request).address.to_string(), "192.0.2.10/24");
        assert_eq!(flat(&request).gateway, Some(Ipv4Addr::new(192, 0, 2, 1)));
        assert_eq!(request.mode, None);
        assert_eq!(request.macvlan_mode(), MacvlanMode::Bridge);
        assert_eq!(request.mtu, None);
    }

    #[test]
    fn type_and_mode_are_case_insensitive() {
        let request = parse_env(
            &with("TYPE=FLAT")
                .iter()
                .copied()
                .chain(["MODE=Private"])
                .collect::<Vec<_>>(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(request.mode, Some(MacvlanMode::Private));
    }

    #[test]
    fn annotations_win_over_env() {
        let annotations: BTreeMap<String, String> =
            [("macvlan.type", "flat"), ("macvlan.ip", "192.0.2.20/24")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        let settings = Settings::collect(&annotations, &env(&GOOD), true).unwrap();
        let request = parse("c1", &settings, &policy()).unwrap().unwrap();
        assert_eq!(flat(&request).address.to_string(), "192.0.2.20/24");
        assert_eq!(flat(&request).parent, "lan0");
    }

    #[test]
    fn env_ignored_when_policy_forbids_it() {
        let settings = Settings::collect(&BTreeMap::new(), &env(&GOOD), false).unwrap();
        assert_eq!(parse("c1", &settings, &policy()).unwrap(), None);
    }

    #[test]
    fn bad_inputs_name_their_field() {
        let cases: Vec<(Vec<&str>, &str)> = vec![
            (with("IP=192.0.2.300/24"), "IP"),
            (with("IP=192.0.2.10"), "IP"),
            (with("IP=192.0.2/24"), "IP"),
            (with("IP=192.0.2.10/33"), "IP"),
            (with("IP=192.0.2.10/31"), "IP"),
            (with("IP=garbage"), "IP"),
            (with("IP=192.0.2.0/24"), "IP"),
            (with("IP=192.0.2.255/24"), "IP"),
            (with("IP=192.0.2.1/24"), "IP"),
            (with("IP=127.0.0.5/8"), "IP"),
            (with("GW=198.51.100.1"), "GW"),
            (with("GW=192.0.2.999"), "GW"),
            (with("GW=192.0.2.255"), "GW"),
            (with("TYPE=bridge"), "TYPE"),
            (with("MODE=fast"), "MODE"),
            (with("MTU=67"), "MTU"),
            (with("MTU=65536"), "MTU"),
            (with("MTU=-1"), "MTU"),
            (with("MTU=1500x"), "MTU"),
            (with("HOSTIF=a/b"), "HOSTIF"),
            (with("HOSTIF=waytoolonginterface"), "HOSTIF"),
            (with("HOSTIF=lo"), "HOSTIF"),
            (with("RATE=0"), "RATE"),
            (with("RATE=-5"), "RATE"),
            (with("RATE=fast"), "RATE"),
            (with("BURST=1000"), "BURST"),
            (with("LATENCY=0"), "LATENCY"),
            (with("INGRESS_RATE=0"), "INGRESS_RATE"),
            (with("INGRESS_RATE=1.5"), "INGRESS_RATE"),
            (
                vec!["TYPE=flat", "IP=192.0.2.10/24"],
                "macvlan.host-interface (HOSTIF)",
            ),
            (vec!["TYPE=flat", "HOSTIF=lan0"], "macvlan.ip (IP)"),
            (
                vec!["HOSTIF=lan0", "IP=192.0.2.10/24"],
                "macvlan.network (NETWORK)",
            ),
        ];
        for (input, field) in cases {
            let error = error_for(&input);
            assert_eq!(error.setting, field, "{input:?} -> {error}");
            assert!(!error.problem.is_empty());
        }
    }

    #[test]
    fn ip6_requests_and_refusals() {
        let request = parse_env(&with_ipv6(&["IP6=2001:DB8::A/64", "GW6=fe80::1"]))
            .unwrap()
            .unwrap();
        let flat = flat(&request);
        assert_eq!(flat.address6.unwrap().to_string(), "2001:db8::a/64");
        assert_eq!(flat.gateway6.unwrap().to_string(), "fe80::1");
        for (extra, setting, words) in [
            (vec!["IP6=192.0.2.10/24"], "IP6", "IPv4 address"),
            (vec!["IP6=fe80::a/64"], "IP6", "link-local"),
            (vec!["IP6=ff02::a/64"], "IP6", "multicast"),
            (vec!["IP6=::/0"], "IP6", "prefix length"),
            (
                vec!["IP6=2001:db8::a/129"],
                "IP6",
                "prefix length from 1 to 128",
            ),
            (vec!["IP6=2001:db8::/64"], "IP6", "subnet-router anycast"),
            (
                vec!["IP6=2001:db8::a/64", "GW6=2001:db9::1"],
                "GW6",
                "not link-local",
            ),
            (
                vec!["IP6=2001:db8::a/64", "GW6=ff02::1"],
                "GW6",
                "multicast",
            ),
            (vec!["GW6=fe80::1"], "GW6", "needs IP6"),
        ] {
            let e = error_for(&with_ipv6(&extra));
            assert_eq!(e.setting, setting, "{extra:?}: {e}");
            assert!(e.to_string().contains(words), "{extra:?}: {e}");
            assert!(!e.to_string().contains('\n'));
        }
        // On a network: IP6, and in NETWORKS after a '+'.
        let request = parse_env(&["NETWORK=lan", "IP6=2001:db8::5"])
            .unwrap()
            .unwrap();
        let Network::Named(named) = &request.network else {
            panic!()
        };
        assert_eq!(named.address6, Some(("2001:db8::5".parse().unwrap(), None)));
        let request = parse_env(&["NETWORKS=lan=192.0.2.5+2001:db8::5,six=2001:db8:1::9/64"])
            .unwrap()
            .unwrap();
        let Network::Named(first) = &request.network else {
            panic!()
        };
        assert_eq!(
            first.address.map(|a| a.0.to_string()).as_deref(),
            Some("192.0.2.5")
        );
        assert_eq!(
            first.address6.map(|a| a.0.to_string()).as_deref(),
            Some("2001:db8::5")
        );
        assert_eq!(
            request.more[0].address6,
            Some(("2001:db8:1::9".parse().unwrap(), Some(64)))
        );
        assert!(request.more[0].address.is_none());
        let e = error_for(&["NETWORKS=lan=2001:db8::5+2001:db8::6"]);
        assert!(
            e.to_string().contains("one IPv6 address per network"),
            "{e}"
        );
        let e = error_for(&["NETWORK=lan", "GW6=fe80::1"]);
        assert_eq!(e.setting, "GW6");
    }

    #[test]
    fn message_is_one_line_with_value_and_expectation() {
        let error = error_for(&with("IP=192.0.2.300/24"));
        let text = error.to_string();
        assert!(
            text.starts_with("invalid IP \"192.0.2.300/24\": expected"),
            "{text}"
        );
        assert!(!text.contains('\n'));
    }

    #[test]
    fn unknown_annotation_is_refused() {
        let annotations: BTreeMap<String, String> =
            [("macvlan.gatway".to_string(), "x".to_string())].into();
        let error = Settings::collect(&annotations, &[], true).err().unwrap();
        assert_eq!(error.setting, "macvlan.gatway");
    }

    #[test]
    fn vlanid_and_brust_aliases_are_recognised() {
        let settings =
            Settings::collect(&BTreeMap::new(), &env(&["VLANID=7", "BRUST=1"]), true).unwrap();
        assert_eq!(settings.get(Field::Vlan).unwrap().name, "VLANID");
        assert_eq!(settings.get(Field::Burst).unwrap().name, "BRUST");
    }

    #[test]
    fn policy_limits_parents_and_subnets() {
        let policy = Policy {
            allowed_parents: vec!["lan1".into()],
            allowed_subnets: vec!["198.51.100.0/24".parse().unwrap()],
            allowed_subnets6: Vec::new(),
            allow_env: true,
            allow_adhoc: true,
            networks: Vec::new(),
        };
        let settings = Settings::collect(&BTreeMap::new(), &env(&GOOD), true).unwrap();
        assert_eq!(
            parse("c1", &settings, &policy).unwrap_err().setting,
            "HOSTIF"
        );
        let settings =
            Settings::collect(&BTreeMap::new(), &env(&with("HOSTIF=lan1")), true).unwrap();
        assert_eq!(parse("c1", &settings, &policy).unwrap_err().setting, "IP");
    }

    #[test]
    fn egress_limits_with_defaults_and_minimum_burst() {
        let mut env = with("RATE=10000");
        let request = parse_env(&env).unwrap().unwrap();
        let egress = request.egress.clone().unwrap();
        assert_eq!(egress.latency_ms, DEFAULT_LATENCY_MS);
        let tbf = egress.tbf(1500).unwrap();
        assert_eq!(tbf.rate, 1_250_000);
        assert_eq!(tbf.burst, 12_500); // 10 ms at 10 Mbit/s
        let slow = parse_env(&with("RATE=100"))
            .unwrap()
            .unwrap()
            .egress
            .unwrap();
        assert_eq!(slow.tbf(1500).unwrap().burst, 3028); // two full frames

        env.push("BURST=1000");
        let request = parse_env(&env).unwrap().unwrap();
        let error = request.check_against_parent("lan0", 1500).unwrap_err();
        assert_eq!(error.setting, "BURST");
        assert!(error.problem.contains("at least 1514 bytes"), "{error}");

        let fast = parse_env(
            &with("RATE=1000000")
                .iter()
                .copied()
                .chain(["BRUST=5000"])
                .collect::<Vec<_>>(),
        )
        .unwrap()
        .unwrap();
        let error = fast.check_against_parent("lan0", 1500).unwrap_err();
        assert_eq!(error.setting, "BRUST");
        assert!(error.problem.contains("at least 125000 bytes"), "{error}");
    }

    #[test]
    fn limits_without_a_type_are_shaping() {
        let settings = Settings::collect(
            &BTreeMap::new(),
            &env(&["RATE=5000", "INGRESS_RATE=2000"]),
            true,
        )
        .unwrap();
        assert_eq!(parse("c1", &settings, &policy()).unwrap(), None);
        let shaping = parse_shaping("c1", &settings).unwrap().unwrap();
        assert_eq!(shaping.egress.unwrap().rate_kbit, 5000);
        assert_eq!(shaping.ingress.unwrap().rate_kbit, 2000);
        // An address without a type is still an error, limits or not.
        let settings = Settings::collect(
            &BTreeMap::new(),
            &env(&["RATE=5000", "IP=192.0.2.9/24"]),
            true,
        )
        .unwrap();
        assert_eq!(
            parse("c1", &settings, &policy()).unwrap_err().setting,
            "macvlan.network (NETWORK)"
        );
        let flat = Settings::collect(&BTreeMap::new(), &env(&with("RATE=5000")), true).unwrap();
        assert_eq!(parse_shaping("c1", &flat).unwrap(), None);
    }

    #[test]
    fn mtu_checked_against_parent() {
        let request = parse_env(&with("MTU=9000")).unwrap().unwrap();
        let error = request.check_against_parent("lan0", 1500).unwrap_err();
        assert!(error.problem.contains("1500"));
        assert!(request.check_against_parent("lan0", 9000).is_ok());
    }

    #[test]
    fn discovery_settings() {
        let mut pairs = GOOD.to_vec();
        pairs.extend(["DISCOVER=true", "PORT=8000", "SERVICE=WebApp"]);
        let discovery = parse_env(&pairs).unwrap().unwrap().discovery.unwrap();
        assert_eq!(discovery.port, 8000);
        assert_eq!(discovery.service_name(None).unwrap().as_str(), "webapp");

        let mut pairs = GOOD.to_vec();
        pairs.extend(["DISCOVER=true", "PORT=80"]);
        let discovery = parse_env(&pairs).unwrap().unwrap().discovery.unwrap();
        assert_eq!(
            discovery.service_name(Some("web-1")).unwrap().as_str(),
            "web-1"
        );
        let no_name = discovery.service_name(None).unwrap_err().to_string();
        assert!(
            no_name.contains("SERVICE") && no_name.contains("no hostname"),
            "{no_name}"
        );
        let bad_host = discovery.service_name(Some("a_b")).unwrap_err().to_string();
        assert!(bad_host.contains("\"a_b\""), "{bad_host}");

        let mut pairs = GOOD.to_vec();
        pairs.push("DISCOVER=false");
        assert_eq!(parse_env(&pairs).unwrap().unwrap().discovery, None);
    }

    #[test]
    fn bad_discovery_settings_name_their_field() {
        let cases: [(&[&str], &str); 7] = [
            (&["DISCOVER=true"], "macvlan.port (PORT): required"),
            (&["DISCOVER=true", "PORT=0"], "invalid PORT \"0\""),
            (&["DISCOVER=true", "PORT=70000"], "invalid PORT \"70000\""),
            (&["DISCOVER=true", "PORT=http"], "from 1 to 65535"),
            (
                &["DISCOVER=maybe", "PORT=80"],
                "invalid DISCOVER \"maybe\": expected true or false",
            ),
            (
                &["DISCOVER=true", "PORT=80", "SERVICE=-x"],
                "invalid SERVICE \"-x\": expected a DNS label",
            ),
            (&["PORT=80"], "invalid PORT \"80\": needs DISCOVER=true"),
        ];
        for (extra, expected) in cases {
            let mut pairs = GOOD.to_vec();
            pairs.extend(extra);
            let message = error_for(&pairs).to_string();
            assert!(message.contains(expected), "{extra:?}: {message}");
        }
        let long = "a".repeat(64);
        assert!(ServiceName::parse(&long).is_none());
        assert!(ServiceName::parse(&long[..63]).is_some());
        assert!(ServiceName::parse("a.b").is_none());
    }

    #[test]
    fn vlan_requests() {
        let parse_vlan = |pairs: &[&str]| {
            let mut all = vec!["TYPE=vlan"];
            all.extend_from_slice(pairs);
            parse_env(&all)
        };
        let request = parse_vlan(&["VLAN=test1"]).unwrap().unwrap();
        assert_eq!(request.network_type(), NetworkType::Network);
        assert_eq!(
            request.network,
            Network::Named(NamedRequest {
                name: NetworkName::parse("test1").unwrap(),
                address: None,
                address6: None,
                setting: "VLAN".into(),
                from_env: true,
            })
        );
        let request = parse_vlan(&["VLANID=test1", "IP=198.18.0.9/24"])
            .unwrap()
            .unwrap();
        let Network::Named(vlan) = request.network else {
            panic!()
        };
        assert_eq!(vlan.address, Some((Ipv4Addr::new(198, 18, 0, 9), Some(24))));
        // TYPE=vlan names an operator's network: allowed without ad-hoc.
        let settings =
            Settings::collect(&BTreeMap::new(), &env(&["TYPE=vlan", "VLAN=t"]), true).unwrap();
        assert!(parse("c1", &settings, &Policy::default()).is_ok());

        let cases: [(&[&str], &str); 5] = [
            (&[], "macvlan.vlan (VLAN): required for a vlan network"),
            (
                &["VLAN=a b"],
                "invalid VLAN \"a b\": expected a network name",
            ),
            (
                &["VLAN=t", "HOSTIF=lan0"],
                "invalid HOSTIF \"lan0\": not used for vlan networks",
            ),
            (
                &["VLAN=t", "GW=198.18.0.1"],
                "invalid GW \"198.18.0.1\": not used for vlan networks",
            ),
            (
                &["VLAN=t", "IP=198.18.0.300"],
                "invalid IP \"198.18.0.300\"",
            ),
        ];
        for (pairs, expected) in cases {
            let message = parse_vlan(pairs).unwrap_err().to_string();
            assert!(message.contains(expected), "{pairs:?}: {message}");
        }
        // VLAN on a flat network is a mistake.
        let mut pairs = GOOD.to_vec();
        pairs.push("VLAN=t");
        assert!(error_for(&pairs)
            .to_string()
            .contains("only for vlan networks"));
    }

    fn parse_with(
        pairs: &[&str],
        annotations: &[(&str, &str)],
        policy: &Policy,
    ) -> Result<Option<NetworkRequest>, RequestError> {
        let annotations = annotations
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let settings = Settings::collect(&annotations, &env(pairs), true)?;
        parse("c1", &settings, policy)
    }

    #[test]
    fn ad_hoc_requests_are_refused_unless_the_policy_allows_them() {
        let closed = Policy::default();
        for pairs in [&GOOD[..], &["TYPE=dhcp", "HOSTIF=lan0"][..]] {
            let e = parse_with(pairs, &[], &closed).unwrap_err();
            assert_eq!(e.setting, "TYPE");
            assert!(
                e.to_string().contains("[policy] allow_adhoc = false"),
                "{e}"
            );
            assert!(e.to_string().contains("NETWORK=<name>"), "{e}");
        }
        assert!(parse_with(&GOOD, &[], &policy()).unwrap().is_some());
    }

    #[test]
    fn a_named_network_with_or_without_an_address() {
        let closed = Policy::default();
        let request = parse_with(&["NETWORK=lan"], &[], &closed).unwrap().unwrap();
        assert_eq!(request.network_type(), NetworkType::Network);
        assert_eq!(request.record_id(), "c1");
        assert!(request.more.is_empty());
        let request = parse_with(&["NETWORK=lan", "IP=192.0.2.7"], &[], &closed)
            .unwrap()
            .unwrap();
        let Network::Named(named) = &request.network else {
            panic!()
        };
        assert_eq!(named.address, Some((Ipv4Addr::new(192, 0, 2, 7), None)));
        assert!(named.from_env);
        let request = parse_with(
            &[],
            &[("macvlan.network", "lan"), ("macvlan.ip", "192.0.2.7/24")],
            &closed,
        )
        .unwrap()
        .unwrap();
        let Network::Named(named) = &request.network else {
            panic!()
        };
        assert_eq!(named.address, Some((Ipv4Addr::new(192, 0, 2, 7), Some(24))));
        assert!(!named.from_env);
        assert_eq!(named.setting, "macvlan.network");
    }

    #[test]
    fn several_networks_become_attachments_in_order() {
        let request = parse_with(
            &["NETWORKS=lan, storage=192.0.2.40,dmz"],
            &[],
            &Policy::default(),
        )
        .unwrap()
        .unwrap();
        let all = request.attachments();
        let names: Vec<String> = all
            .iter()
            .map(|a| match &a.network {
                Network::Named(n) => n.name.to_string(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(names, ["lan", "storage", "dmz"]);
        let ids: Vec<String> = all.iter().map(|a| a.record_id()).collect();
        assert_eq!(ids, ["c1", "c1/1", "c1/2"]);
        assert_eq!(container_of("c1/2"), "c1");
        assert_eq!((slot_of("c1"), slot_of("c1/2")), (0, 2));
        let Network::Named(storage) = &all[1].network else {
            panic!()
        };
        assert_eq!(storage.address, Some((Ipv4Addr::new(192, 0, 2, 40), None)));
    }

    #[test]
    fn bad_network_requests_name_their_field() {
        let closed = Policy::default();
        let cases: [(&[&str], &str); 9] = [
            (
                &["NETWORK=lan", "TYPE=flat"],
                "invalid TYPE \"flat\": TYPE describes an ad-hoc network",
            ),
            (
                &["NETWORK=lan", "HOSTIF=eth0"],
                "invalid HOSTIF \"eth0\": not used with NETWORK",
            ),
            (&["NETWORK=lan", "GW=192.0.2.1"], "invalid GW"),
            (
                &["NETWORK=lan", "NETWORKS=a,b"],
                "invalid NETWORKS \"a,b\": give either NETWORK",
            ),
            (
                &["NETWORK=_x"],
                "invalid NETWORK \"_x\": expected a network name",
            ),
            (
                &["NETWORK=lan", "IP=192.0.2.300"],
                "invalid IP \"192.0.2.300\"",
            ),
            (&["NETWORKS=a,a"], "network a is named twice"),
            (
                &["NETWORKS=a,b", "IP=192.0.2.4"],
                "with NETWORKS, give each address in the list",
            ),
            (&["RATE=100"], ""),
        ];
        for (pairs, expected) in cases {
            match parse_with(pairs, &[], &closed) {
                Err(e) => assert!(e.to_string().contains(expected), "{pairs:?}: {e}"),
                Ok(r) => assert!(expected.is_empty() && r.is_none(), "{pairs:?} accepted"),
            }
        }
        let e = parse_with(&["NETWORKS=a,b,c,d,e,f,g,h,i"], &[], &closed).unwrap_err();
        assert!(e.to_string().contains("at most 8 networks"), "{e}");
        let e = parse_with(&["IP=192.0.2.4"], &[], &closed).unwrap_err();
        assert!(
            e.to_string()
                .contains("no network is: name one with NETWORK="),
            "{e}"
        );
    }

    #[test]
    fn a_network_fills_in_defaults_and_caps_limits() {
        let network: crate::network::Network = serde_json::from_str(
            r#"{"parent":"lan0","mode":"private","subnet":"192.0.2.0/24","mtu":1400,"rate_kbit":10000,"created_at":0}"#,
        )
        .unwrap();
        let network = crate::network::Network {
            name: "lan".into(),
            ..network
        };
        let closed = Policy::default();
        let request = parse_with(&["NETWORK=lan"], &[], &closed).unwrap().unwrap();
        let within = request.within(&network).unwrap();
        assert_eq!(within.macvlan_mode(), MacvlanMode::Private);
        assert_eq!(within.mtu, Some(1400));
        assert_eq!(within.egress.as_ref().unwrap().rate_kbit, 10000);
        let less = parse_with(&["NETWORK=lan", "RATE=5000"], &[], &closed)
            .unwrap()
            .unwrap();
        assert_eq!(
            less.within(&network).unwrap().egress.unwrap().rate_kbit,
            5000
        );
        let more = parse_with(&["NETWORK=lan", "RATE=50000"], &[], &closed)
            .unwrap()
            .unwrap();
        let e = more.within(&network).unwrap_err().to_string();
        assert!(e.contains("network lan allows at most 10000 kbit/s"), "{e}");
        let passthru = parse_with(&["NETWORK=lan", "MODE=passthru"], &[], &closed)
            .unwrap()
            .unwrap();
        assert!(passthru
            .within(&network)
            .unwrap_err()
            .to_string()
            .contains("only a passthru network"));
        let big = parse_with(&["NETWORK=lan", "MTU=1500"], &[], &closed)
            .unwrap()
            .unwrap();
        assert!(big
            .within(&network)
            .unwrap_err()
            .to_string()
            .contains("has MTU 1400"));
    }
}
