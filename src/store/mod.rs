//! The store behind a trait: a key-value space with etcd's transaction model
//! (compare, then apply), so that every allocation is one atomic
//! "create if absent", whatever backend holds the keys.

mod etcd;
mod sqlite;

pub use etcd::EtcdStore;
pub use sqlite::SqliteStore;

use crate::config::{Config, StoreLocation};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {location}: {message}")]
    Backend { location: String, message: String },
    #[error("store lease {} has ended", .0 .0)]
    LeaseEnded(LeaseId),
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// A condition a transaction checks before applying its operations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compare {
    /// The key does not exist.
    Absent(String),
    /// The key holds exactly this value.
    Equals(String, String),
}

/// A change a transaction applies when all its conditions hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put(String, String),
    /// Put a key that disappears with the lease: when it is revoked, or
    /// when it expires because nobody kept it alive.
    PutWithLease(String, String, LeaseId),
    Delete(String),
}

/// A time-to-live grant, as etcd's: keys put under it vanish when it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LeaseId(pub i64);

/// A key-value store with atomic compare-and-apply transactions.
pub trait Store: Send + Sync {
    fn get(&self, key: &str) -> Result<Option<String>>;
    /// Every key that starts with `prefix`, in key order.
    fn list(&self, prefix: &str) -> Result<Vec<(String, String)>>;
    /// Applies `ops` atomically if every condition holds; returns whether it did.
    fn transaction(&self, compares: &[Compare], ops: &[Op]) -> Result<bool>;
    /// A new lease that ends `ttl` from now unless kept alive.
    fn grant_lease(&self, ttl: std::time::Duration) -> Result<LeaseId>;
    /// Restarts the lease's time to live; `false` when it has already ended
    /// (its keys are gone: grant a new one and put them again).
    fn keep_alive(&self, lease: LeaseId) -> Result<bool>;
    /// Ends the lease now, deleting its keys.
    fn revoke_lease(&self, lease: LeaseId) -> Result<()>;
    /// Whether this handle still reaches the store's files, for a process
    /// that keeps one open (the daemon): a file replaced or its SQLite
    /// side files removed under it is seen by a new handle, not this one.
    fn still_current(&self) -> bool {
        true
    }
}

/// Opens the store the configuration names.
pub fn open(config: &Config) -> Result<Box<dyn Store>> {
    match &config.store {
        StoreLocation::Sqlite(path) => Ok(Box::new(SqliteStore::open(path)?)),
        StoreLocation::Etcd(endpoints) => {
            Ok(Box::new(EtcdStore::connect(endpoints, &config.etcd)?))
        }
    }
}

/// The contract's key layout (DESIGN.md §2) under a configurable prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.trim_end_matches('/').to_string(),
        }
    }

    /// `/macvlan/flat/<container-id>`
    pub fn flat(&self, container_id: &str) -> String {
        format!("{}/flat/{container_id}", self.prefix)
    }

    pub fn flat_prefix(&self) -> String {
        format!("{}/flat/", self.prefix)
    }

    /// `/macvlan/vland/<container-id>`: a container on a VLAN network.
    pub fn vland(&self, container_id: &str) -> String {
        format!("{}/vland/{container_id}", self.prefix)
    }

    pub fn vland_prefix(&self) -> String {
        format!("{}/vland/", self.prefix)
    }

    /// `/macvlan/dhcp/<container-id>`: a container on a DHCP network.
    pub fn dhcp(&self, container_id: &str) -> String {
        format!("{}/dhcp/{container_id}", self.prefix)
    }

    /// Where records of `kind` live: `flat/`, `vland/` or `dhcp/`.
    pub fn record_prefix(&self, kind: crate::record::RecordKind) -> String {
        use crate::record::RecordKind;
        match kind {
            RecordKind::Flat => self.flat_prefix(),
            RecordKind::Vlan => self.vland_prefix(),
            RecordKind::Dhcp => format!("{}/dhcp/", self.prefix),
        }
    }

    /// Where a container's record of `kind` lives.
    pub fn record(&self, container_id: &str, kind: crate::record::RecordKind) -> String {
        format!("{}{container_id}", self.record_prefix(kind))
    }

    /// `/macvlan/network/<name>`: an operator-defined network.
    pub fn network(&self, name: &str) -> String {
        format!("{}/network/{name}", self.prefix)
    }

    pub fn network_prefix(&self) -> String {
        format!("{}/network/", self.prefix)
    }

    /// A counter every network creation and removal moves, so that the
    /// subnet-overlap check and the write are one atomic step.
    pub fn network_generation(&self) -> String {
        format!("{}/network-generation", self.prefix)
    }

    /// `/macvlan/schema`: the keyspace's schema version.
    pub fn schema(&self) -> String {
        format!("{}/schema", self.prefix)
    }

    /// Held (under a lease) by whoever migrates the keyspace.
    pub fn schema_lock(&self) -> String {
        format!("{}/schema-lock", self.prefix)
    }

    /// Everything under the prefix.
    pub fn all(&self) -> String {
        format!("{}/", self.prefix)
    }

    /// `/macvlan/vlan/<name>`: a VLAN network of schema 0 (now a network).
    pub fn vlan(&self, name: &str) -> String {
        format!("{}/vlan/{name}", self.prefix)
    }

    pub fn vlan_prefix(&self) -> String {
        format!("{}/vlan/", self.prefix)
    }

    /// `/macvlan/vlan-id/<id>`: which network holds an 802.1Q ID.
    pub fn vlan_id(&self, id: u16) -> String {
        format!("{}/vlan-id/{id}", self.prefix)
    }

    /// Schema 0's counter of VLAN creations (removed by the migration).
    pub fn vlan_generation(&self) -> String {
        format!("{}/vlan-generation", self.prefix)
    }

    /// `/macvlan/ipam/`: every pool.
    pub fn ipam_prefix(&self) -> String {
        format!("{}/ipam/", self.prefix)
    }

    /// `/macvlan/ipam/<pool>/`: every held address of a pool.
    pub fn pool_prefix(&self, pool: &str) -> String {
        format!("{}/ipam/{pool}/", self.prefix)
    }

    /// `/macvlan/service/<name>/<container-id>`: one endpoint of a service,
    /// under the registrar's lease (several containers may serve one name).
    pub fn service_endpoint(&self, name: &str, container_id: &str) -> String {
        format!("{}/service/{name}/{container_id}", self.prefix)
    }

    /// `/macvlan/service/<name>/`, or every service with `None`.
    pub fn service_prefix(&self, name: Option<&str>) -> String {
        match name {
            Some(name) => format!("{}/service/{name}/", self.prefix),
            None => format!("{}/service/", self.prefix),
        }
    }

    /// `/macvlan/registration/<container-id>`: what the registrar keeps
    /// registered (the service's name and port, where to health-check it).
    pub fn registration(&self, container_id: &str) -> String {
        format!("{}/registration/{container_id}", self.prefix)
    }

    pub fn registration_prefix(&self) -> String {
        format!("{}/registration/", self.prefix)
    }

    /// `/macvlan/ipam/<pool>/<ip>`: the pool is a network's name or `_adhoc`;
    /// IPv6 addresses in their canonical text (RFC 5952), so each has one key.
    pub fn address(&self, pool: &str, ip: impl Into<std::net::IpAddr>) -> String {
        let ip: std::net::IpAddr = ip.into();
        format!("{}/ipam/{pool}/{ip}", self.prefix)
    }
}
