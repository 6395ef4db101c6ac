//! What the store remembers about one container's network, as the JSON
//! value under `/macvlan/flat/<container-id>` (flat networks) or
//! `/macvlan/vland/<container-id>` (VLAN networks: the same fields and `vlan`)
//! or `/macvlan/dhcp/<container-id>` (DHCP networks: `client_id` and `lease`).

use serde::{Deserialize, Serialize};

use crate::netlink::MacvlanMode;

/// Where a container's network is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// The address is claimed and the hook is setting up the link.
    Attaching,
    /// The container's interface is configured.
    Running,
    /// The container stopped; its address stays reserved until it is removed.
    Stopped,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Attaching => "attaching",
            State::Running => "running",
            State::Stopped => "stopped",
        }
    }
}

/// The record of a container on a flat network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlatRecord {
    /// CIDR, e.g. `192.0.2.10/24`; empty on an IPv6-only network.
    pub ip: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// The IPv6 address, CIDR in canonical form (`2001:db8::a/64`): static,
    /// learnt by SLAAC, or leased by DHCPv6.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<String>,
    /// The IPv6 default route's next hop (link-local ones on the interface).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway6: Option<String>,
    pub host_interface: String,
    pub mac: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    pub mode: MacvlanMode,
    /// The host the container runs on: its name, for display…
    pub host: String,
    /// …and its identity (`host_id`), which decides whose record it is.
    /// Records written before host ids existed have none: they are the
    /// host's whose name is `host`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_id: Option<String>,
    /// The operator-defined network the attachment is on (none: ad hoc).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    pub state: State,
    /// The address pool the address key lives in (`/macvlan/ipam/<pool>/`):
    /// the network's name, or `_adhoc`.
    pub pool: String,
    /// The interface name inside the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ifname: Option<String>,
    /// The container's init process while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Unix seconds.
    pub created_at: u64,
    pub updated_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<u64>,
    /// Egress limit in force (tbf): rate in kbit/s, bucket in bytes, latency in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<LimitRecord>,
    /// Ingress limit in force (tbf on an ifb in the container's namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<LimitRecord>,
    /// The VLAN network, for containers on one (`host_interface` is then
    /// the 802.1Q sub-interface the macvlan sits on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<VlanRef>,
    /// DHCP networks: the client identifier (option 61) sent, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// DHCP networks: the lease held (none once released).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<DhcpLease>,
    /// DHCPv6 networks (`--ipv6 dhcpv6`): the IPv6 lease held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease6: Option<Dhcp6Lease>,
    /// The inode of the container's network namespace while it runs, so a
    /// daemon never mistakes a recycled pid for the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns_inode: Option<u64>,
    /// DHCP networks kept by an external client: its process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_pid: Option<u32>,
    /// Attachments made through the CNI plugin: the runtime's names for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cni: Option<CniRef>,
    /// Networks with host access: the host-side device through which this
    /// host routes to the container's address (a /32 route, removed at stop).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_route: Option<String>,
    /// DHCP: a lease was being asked for and is not recorded yet; a server
    /// may hold one for this client (a hook killed after the ACK), so a
    /// stop or `gc` asks the server and gives it back (issue 16).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lease_pending: bool,
    /// The boot the attachment was made in (`pid` and `netns_inode` mean
    /// nothing in another: both are reused after a reboot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
    /// The container's resolv.conf as written from the lease (`--dhcp-dns`)
    /// and what it held before, put back at stop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolv_conf: Option<crate::oci::resolv::Written>,
}

/// A DHCP lease as the server gave it. Times are Unix seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DhcpLease {
    /// CIDR, e.g. `192.0.2.50/24`.
    pub address: String,
    /// The server identifier (option 54): where renewals go.
    pub server: std::net::Ipv4Addr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router: Option<std::net::Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<std::net::Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// When the last ACK came.
    pub obtained_at: u64,
    /// Lease time in seconds (option 51).
    pub lease_time: u32,
    /// Renewal (T1) and rebinding (T2) times, and the end of the lease.
    pub renew_at: u64,
    pub rebind_at: u64,
    pub expires_at: u64,
}

/// A DHCPv6 lease (one IA_NA address). Times are Unix seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dhcp6Lease {
    /// CIDR: the address with the network's IPv6 prefix length, or /128.
    pub address: String,
    /// The server's DUID, hex: renewals and the release name it.
    pub server_id: String,
    pub iaid: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<std::net::Ipv6Addr>,
    pub obtained_at: u64,
    /// Preferred and valid lifetimes in seconds.
    pub preferred: u32,
    pub valid: u32,
    pub renew_at: u64,
    pub rebind_at: u64,
    pub expires_at: u64,
}

/// A CNI attachment: `(network name, CNI_CONTAINERID, CNI_IFNAME)` is its
/// key in the spec's terms; the namespace is the runtime's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniRef {
    /// The CNI network configuration's `name`.
    pub name: String,
    pub container_id: String,
    pub ifname: String,
    pub netns: String,
}

/// Which VLAN network a record belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VlanRef {
    pub name: String,
    pub id: u16,
}

impl FlatRecord {
    /// Whether the attachment was made in this boot (records from before
    /// boot ids are taken to be).
    pub fn from_this_boot(&self) -> bool {
        crate::host::this_boot(self.boot_id.as_deref())
    }

    /// Whether this record belongs to the host `host_id` named `host_name`.
    pub fn owned_by(&self, host_id: &str, host_name: &str) -> bool {
        match &self.host_id {
            Some(id) => id == host_id,
            None => self.host == host_name,
        }
    }

    pub fn network_type(&self) -> &'static str {
        match self.kind() {
            RecordKind::Flat => "flat",
            RecordKind::Vlan => "vlan",
            RecordKind::Dhcp => "dhcp",
        }
    }

    pub fn kind(&self) -> RecordKind {
        if self.client_id.is_some() {
            RecordKind::Dhcp
        } else if self.vlan.is_some() {
            RecordKind::Vlan
        } else {
            RecordKind::Flat
        }
    }
}

/// Which key family a record lives under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    Flat,
    Vlan,
    Dhcp,
}

impl RecordKind {
    pub const ALL: [RecordKind; 3] = [RecordKind::Flat, RecordKind::Vlan, RecordKind::Dhcp];
}

/// The egress limit as applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitRecord {
    pub rate_kbit: u64,
    pub burst: u32,
    pub latency_ms: u32,
    /// The device that carries the tbf (the ifb, for ingress).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
}

#[cfg(test)]
impl FlatRecord {
    /// A record for unit tests: `ip` on lan0, bridge mode, attaching.
    pub fn sample(ip: &str) -> FlatRecord {
        let _: crate::cidr::Ipv4Cidr = ip.parse().expect("test CIDR");
        FlatRecord {
            ip: ip.into(),
            gateway: None,
            ip6: None,
            gateway6: None,
            host_interface: "lan0".into(),
            mac: "02:00:00:00:00:01".into(),
            mtu: None,
            mode: MacvlanMode::Bridge,
            host: "h".into(),
            host_id: None,
            network: None,
            state: State::Attaching,
            pool: crate::ipam::ADHOC_POOL.into(),
            ifname: None,
            pid: None,
            created_at: 0,
            updated_at: 0,
            stopped_at: None,
            egress: None,
            ingress: None,
            vlan: None,
            client_id: None,
            lease: None,
            lease6: None,
            netns_inode: None,
            client_pid: None,
            host_route: None,
            lease_pending: false,
            boot_id: None,
            resolv_conf: None,
            cni: None,
        }
    }
}

pub fn now() -> u64 {
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    #[cfg(feature = "failpoints")]
    if let Some(shift) = clock_shift() {
        return wall.saturating_add_signed(shift);
    }
    wall
}

/// Test builds: seconds added to the wall clock, read from the file named
/// by `MACVLAN_CLOCK_SHIFT_FILE` at every call, so a test can step the
/// clock of a running daemon (a time namespace cannot move CLOCK_REALTIME).
#[cfg(feature = "failpoints")]
fn clock_shift() -> Option<i64> {
    let path = std::env::var_os("MACVLAN_CLOCK_SHIFT_FILE")?;
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}
