//! Service discovery: what a container asked to have registered
//! (`/macvlan/registration/<id>`), the endpoints the registrar keeps alive
//! under a store lease (`/macvlan/service/<name>/<id>`), and lookup.

pub mod dns;
pub mod registrar;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::fs::MetadataExt;

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

use crate::request::ServiceName;
use crate::store::{Keys, Op, Store};

/// A service a container on this host offers, kept registered by the
/// registrar while its health check passes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    pub service: String,
    /// The container's IPv4 address (none on an IPv6-only network).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<Ipv6Addr>,
    pub port: u16,
    pub container: String,
    pub host: String,
    /// The registering host's identity (absent in registrations made
    /// before host ids: those are the host's named `host`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_id: Option<String>,
    /// The container's init process: the health check connects from
    /// inside its network namespace (0 for a CNI attachment, which names
    /// its namespace in `netns`).
    pub pid: u32,
    /// A CNI attachment's namespace path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
    /// The inode of that namespace, so a reused pid is not mistaken for
    /// the container.
    pub netns_inode: u64,
    /// The host routes to the container (host access): check from here,
    /// without entering the container's namespace.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub from_host: bool,
    /// Unix seconds.
    pub created_at: u64,
    /// The boot it was made in: a pid and an inode from another boot name
    /// nothing that runs now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
}

/// One endpoint of a service, as lookups and DNS see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// Answered as A…
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<Ipv4Addr>,
    /// …and as AAAA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<Ipv6Addr>,
    pub port: u16,
    pub container: String,
    pub host: String,
}

impl Registration {
    pub fn new(
        service: &ServiceName,
        (ip, ip6): (Option<Ipv4Addr>, Option<Ipv6Addr>),
        port: u16,
        container: &str,
        (host, host_id): (&str, &str),
        (pid, netns): (Option<u32>, &std::path::Path),
    ) -> Result<Registration> {
        let netns_inode = std::fs::metadata(netns)
            .with_context(|| format!("stat {}", netns.display()))?
            .ino();
        if ip.is_none() && ip6.is_none() {
            anyhow::bail!("the container has no address to register");
        }
        Ok(Registration {
            service: service.to_string(),
            ip,
            ip6,
            port,
            container: container.to_string(),
            host: host.to_string(),
            host_id: Some(host_id.to_string()),
            pid: pid.unwrap_or(0),
            netns: pid.is_none().then(|| netns.display().to_string()),
            netns_inode,
            from_host: false,
            created_at: crate::record::now(),
            boot_id: crate::host::boot_id().map(str::to_string),
        })
    }

    /// Whether this registration is the host's `host_id` named `host_name`.
    pub fn owned_by(&self, host_id: &str, host_name: &str) -> bool {
        match &self.host_id {
            Some(id) => id == host_id,
            None => self.host == host_name,
        }
    }

    /// Where the health check connects: the IPv4 address, else the IPv6 one.
    pub fn check_address(&self) -> SocketAddr {
        let ip = match (self.ip, self.ip6) {
            (Some(v4), _) => IpAddr::V4(v4),
            (None, Some(v6)) => IpAddr::V6(v6),
            (None, None) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        };
        SocketAddr::new(ip, self.port)
    }

    pub fn endpoint(&self) -> Endpoint {
        Endpoint {
            ip: self.ip,
            ip6: self.ip6,
            port: self.port,
            container: self.container.clone(),
            host: self.host.clone(),
        }
    }

    /// The container's namespace: its process's, or a CNI attachment's.
    pub fn netns_path(&self) -> String {
        self.netns
            .clone()
            .unwrap_or_else(|| format!("/proc/{}/ns/net", self.pid))
    }

    /// Whether the container's namespace still exists (the same one).
    pub fn container_alive(&self) -> bool {
        crate::host::this_boot(self.boot_id.as_deref())
            && std::fs::metadata(self.netns_path())
                .map(|m| m.ino() == self.netns_inode)
                .unwrap_or(false)
    }
}

/// Records the registration (replacing an earlier one of the container);
/// the registrar publishes the endpoint once the port answers.
pub fn register(store: &dyn Store, keys: &Keys, registration: &Registration) -> Result<()> {
    let mut ops = Vec::new();
    if let Some(old) = load(store, keys, &registration.container)? {
        if old.service != registration.service {
            ops.push(Op::Delete(
                keys.service_endpoint(&old.service, &old.container),
            ));
        }
    }
    ops.push(Op::Put(
        keys.registration(&registration.container),
        serde_json::to_string(registration)?,
    ));
    store
        .transaction(&[], &ops)
        .context("record the service registration")?;
    Ok(())
}

/// Removes a container's registration and its endpoint at once. Returns
/// the registration there was.
pub fn withdraw(
    store: &dyn Store,
    keys: &Keys,
    container_id: &str,
) -> Result<Option<Registration>> {
    let Some(registration) = load(store, keys, container_id)? else {
        return Ok(None);
    };
    store
        .transaction(
            &[],
            &[
                Op::Delete(keys.service_endpoint(&registration.service, container_id)),
                Op::Delete(keys.registration(container_id)),
            ],
        )
        .context("remove the service registration")?;
    Ok(Some(registration))
}

pub fn load(store: &dyn Store, keys: &Keys, container_id: &str) -> Result<Option<Registration>> {
    let key = keys.registration(container_id);
    store
        .get(&key)?
        .map(|value| serde_json::from_str(&value).with_context(|| format!("corrupt record {key}")))
        .transpose()
}

/// Every registration in the store.
pub fn registrations(store: &dyn Store, keys: &Keys) -> Result<Vec<Registration>> {
    store
        .list(&keys.registration_prefix())?
        .into_iter()
        .map(|(key, value)| {
            serde_json::from_str(&value).with_context(|| format!("corrupt record {key}"))
        })
        .collect()
}

/// The live endpoints of service `name`.
pub fn endpoints(store: &dyn Store, keys: &Keys, name: &str) -> Result<Vec<Endpoint>> {
    store
        .list(&keys.service_prefix(Some(name)))?
        .into_iter()
        .map(|(key, value)| {
            serde_json::from_str(&value).with_context(|| format!("corrupt record {key}"))
        })
        .collect()
}

impl Endpoint {
    /// Where it listens, for people: `192.0.2.10:8000`,
    /// `[2001:db8::a]:8000`, or both joined by a comma.
    pub fn socket_addresses(&self) -> String {
        self.ip
            .map(IpAddr::V4)
            .into_iter()
            .chain(self.ip6.map(IpAddr::V6))
            .map(|ip| SocketAddr::new(ip, self.port).to_string())
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Every live endpoint, with its service name.
pub fn all_endpoints(store: &dyn Store, keys: &Keys) -> Result<Vec<(String, Endpoint)>> {
    let prefix = keys.service_prefix(None);
    store
        .list(&prefix)?
        .into_iter()
        .map(|(key, value)| {
            let name = key[prefix.len()..]
                .split('/')
                .next()
                .unwrap_or_default()
                .to_string();
            let endpoint =
                serde_json::from_str(&value).with_context(|| format!("corrupt record {key}"))?;
            Ok((name, endpoint))
        })
        .collect()
}
