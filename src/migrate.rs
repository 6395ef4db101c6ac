//! The keyspace's schema version (`<prefix>/schema`) and the migrations that
//! bring an older store up to it: run once, by whichever process opens the
//! store first, under a lock that the others wait for.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::cidr::Ipv4Cidr;
use crate::ipam::{self, ADHOC_POOL};
use crate::netlink::MacvlanMode;
use crate::network::{Ipam, LinkDriver, Network};
use crate::record::FlatRecord;
use crate::store::{Compare, Keys, Op, Store, StoreError};

/// The keyspace this build reads and writes. 0 (no key): records keyed by
/// hostname, VLAN networks under `vlan/`, address keys per subnet pool.
/// 1: networks under `network/`, address keys per network or `_adhoc`,
/// records with a host id.
pub const SCHEMA: u32 = 1;

/// The lock ends by itself this long after a migrating process died.
const LOCK_TTL: Duration = Duration::from_secs(30);
/// How long a process waits for another's migration.
const LOCK_WAIT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("the store was written by a newer macvlan-runc (schema {found}; this one knows up to {SCHEMA}): upgrade macvlan-runc on this host")]
    Newer { found: u32 },
    #[error("corrupt schema version {0:?} at {1}")]
    Corrupt(String, String),
    #[error("another process has been migrating the store for over {seconds}s ({lock} is held); try again")]
    Locked { seconds: u64, lock: String },
    #[error("{0}")]
    Failpoint(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Ipam(#[from] ipam::IpamError),
}

/// Who is migrating: records of this host get its id.
pub struct Identity<'a> {
    pub host_id: &'a str,
    pub host_name: &'a str,
    /// The store is this host's alone (SQLite): every record in it is this
    /// host's, whatever name it was written under.
    pub local: bool,
}

/// The schema version in the store (0 when the key is absent).
pub fn version(store: &dyn Store, keys: &Keys) -> Result<u32, MigrateError> {
    match store.get(&keys.schema())? {
        None => Ok(0),
        Some(text) => text
            .trim()
            .parse()
            .map_err(|_| MigrateError::Corrupt(text, keys.schema())),
    }
}

/// Brings the store to [`SCHEMA`], or refuses one written by a newer
/// version. Returns what the migration found worth telling (empty when
/// there was nothing to do). Costs one read when the store is current.
pub fn ensure(
    store: &dyn Store,
    keys: &Keys,
    identity: &Identity<'_>,
) -> Result<Vec<String>, MigrateError> {
    let found = version(store, keys)?;
    if found == SCHEMA {
        return Ok(Vec::new());
    }
    if found > SCHEMA {
        return Err(MigrateError::Newer { found });
    }
    let lease = store.grant_lease(LOCK_TTL)?;
    let holder =
        serde_json::Value::String(format!("{} pid {}", identity.host_id, std::process::id()))
            .to_string();
    let started = Instant::now();
    loop {
        if store.transaction(
            &[Compare::Absent(keys.schema_lock())],
            &[Op::PutWithLease(keys.schema_lock(), holder.clone(), lease)],
        )? {
            break;
        }
        let now = version(store, keys)?;
        if now >= SCHEMA {
            let _ = store.revoke_lease(lease);
            return if now > SCHEMA {
                Err(MigrateError::Newer { found: now })
            } else {
                Ok(Vec::new())
            };
        }
        if started.elapsed() > LOCK_WAIT {
            let _ = store.revoke_lease(lease);
            return Err(MigrateError::Locked {
                seconds: LOCK_WAIT.as_secs(),
                lock: keys.schema_lock(),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let result = (|| {
        let mut notes = Vec::new();
        // Read again under the lock: the previous holder may have finished.
        let now = version(store, keys)?;
        if now > SCHEMA {
            return Err(MigrateError::Newer { found: now });
        }
        if now == 0 {
            notes.extend(zero_to_one(store, keys, identity)?);
        }
        let compare = match now {
            0 => Compare::Absent(keys.schema()),
            n => Compare::Equals(keys.schema(), n.to_string()),
        };
        store.transaction(&[compare], &[Op::Put(keys.schema(), SCHEMA.to_string())])?;
        Ok(notes)
    })();
    let _ = store.revoke_lease(lease);
    result
}

/// A VLAN network as schema 0 kept it under `vlan/<name>`.
#[derive(Deserialize)]
struct VlanV0 {
    id: u16,
    subnet: String,
    gateway: Ipv4Addr,
    host_interface: String,
    #[serde(default)]
    created_at: u64,
}

/// Schema 0 → 1. Every step is its own compare-and-apply transaction that
/// does nothing if run twice, so a migration cut short is finished by the
/// next process.
fn zero_to_one(
    store: &dyn Store,
    keys: &Keys,
    identity: &Identity<'_>,
) -> Result<Vec<String>, MigrateError> {
    let mut notes = Vec::new();
    // VLAN networks become networks with a VLAN ID (`vlan-id/<id>` stays).
    let prefix = keys.vlan_prefix();
    for (key, text) in store.list(&prefix)? {
        let name = &key[prefix.len()..];
        let Ok(old) = serde_json::from_str::<VlanV0>(&text) else {
            notes.push(format!("{key}: unreadable, left as it is"));
            continue;
        };
        let network = Network {
            name: name.to_string(),
            driver: LinkDriver::Macvlan,
            parent: old.host_interface,
            mode: MacvlanMode::Bridge,
            ipvlan: None,
            vlan: Some(old.id),
            subnet: Some(old.subnet),
            gateway: Some(old.gateway),
            ip_range: None,
            exclude: Vec::new(),
            ipam: Ipam::Static,
            ipv6: Default::default(),
            subnet6: None,
            gateway6: None,
            ip_range6: None,
            exclude6: Vec::new(),
            mtu: None,
            rate_kbit: None,
            ingress_rate_kbit: None,
            annotations_only: false,
            host_access: false,
            host_address: None,
            created_at: old.created_at,
            removing: false,
            dhcp_dns: false,
        };
        let put = Op::Put(
            keys.network(name),
            serde_json::to_string(&network).expect("network serialises"),
        );
        let moved = store.transaction(
            &[
                Compare::Equals(key.clone(), text.clone()),
                Compare::Absent(keys.network(name)),
            ],
            &[put, Op::Delete(key.clone())],
        )?;
        if !moved {
            notes.push(format!(
                "{key}: a network {name:?} exists already; the VLAN network was left under {key}"
            ));
        }
    }
    let generation = store.get(&keys.vlan_generation())?;
    if let Some(generation) = generation {
        let next = store
            .get(&keys.network_generation())?
            .and_then(|g| g.parse::<u64>().ok())
            .unwrap_or(0)
            + 1;
        store.transaction(
            &[Compare::Equals(keys.vlan_generation(), generation)],
            &[
                Op::Delete(keys.vlan_generation()),
                Op::Put(keys.network_generation(), next.to_string()),
            ],
        )?;
    }

    // A crash here leaves networks moved and records not: the next opener
    // finds schema 0 and finishes.
    crate::failpoint::check("migrate-midway")
        .map_err(|e| MigrateError::Failpoint(e.to_string()))?;

    // Records: address keys move from the subnet's pool to the network's
    // or the ad-hoc pool (one key per address), DHCP leases get theirs,
    // and this host's records its id.
    for (id, key, text) in ipam::list_records(store, keys)? {
        let Ok(mut record) = serde_json::from_str::<FlatRecord>(&text) else {
            notes.push(format!("{key}: unreadable record, left as it is"));
            continue;
        };
        let holder = serde_json::Value::String(id.clone()).to_string();
        let new_pool = match &record.vlan {
            Some(vlan) => {
                record.network = Some(vlan.name.clone());
                vlan.name.clone()
            }
            None => ADHOC_POOL.to_string(),
        };
        let mut compares = vec![Compare::Equals(key.clone(), text.clone())];
        let mut ops = Vec::new();
        let address = record.ip.parse::<Ipv4Cidr>().ok().map(|c| c.address);
        if let Some(address) = address.filter(|a| !a.is_unspecified()) {
            let old_key = keys.address(&record.pool, address);
            let new_key = keys.address(&new_pool, address);
            if old_key != new_key {
                let ours = store.get(&old_key)?.as_deref() == Some(holder.as_str());
                if ours {
                    compares.push(Compare::Equals(old_key.clone(), holder.clone()));
                    ops.push(Op::Delete(old_key));
                    match store.get(&new_key)? {
                        None => {
                            compares.push(Compare::Absent(new_key.clone()));
                            ops.push(Op::Put(new_key, holder.clone()));
                        }
                        Some(other) if other == holder => {}
                        Some(other) => notes.push(format!(
                            "{address} was held twice, by {} and {id} (under two prefixes); {id} keeps its record without the address: restart or detach it",
                            ipam::parse_holder(&other)
                        )),
                    }
                }
            }
        }
        if let Some(lease) = &record.lease {
            if let Ok(cidr) = lease.address.parse::<Ipv4Cidr>() {
                let lease_key = keys.address(ADHOC_POOL, cidr.address);
                match store.get(&lease_key)? {
                    None => {
                        compares.push(Compare::Absent(lease_key.clone()));
                        ops.push(Op::Put(lease_key, holder.clone()));
                    }
                    Some(other) if other == holder => {}
                    Some(other) => notes.push(format!(
                        "{}: leased to {id} by DHCP but also held by {}",
                        cidr.address,
                        ipam::parse_holder(&other)
                    )),
                }
            }
        }
        record.pool = new_pool;
        if record.host_id.is_none() && (identity.local || record.host == identity.host_name) {
            record.host_id = Some(identity.host_id.to_string());
        }
        ops.push(Op::Put(
            key.clone(),
            serde_json::to_string(&record).expect("record serialises"),
        ));
        if !store.transaction(&compares, &ops)? {
            notes.push(format!(
                "{key}: changed during the migration; left as it is"
            ));
        }
    }

    // Address keys of schema 0's subnet pools (`192.0.2.0-24`) that no record
    // claimed are leftovers of crashes: network names hold no '.'.
    let prefix = keys.ipam_prefix();
    for (key, value) in store.list(&prefix)? {
        let pool = key[prefix.len()..].split('/').next().unwrap_or("");
        if pool.contains('.') {
            store.transaction(&[Compare::Equals(key.clone(), value)], &[Op::Delete(key)])?;
        }
    }
    Ok(notes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SqliteStore;

    fn identity() -> Identity<'static> {
        Identity {
            host_id: "host-1",
            host_name: "oldhost",
            local: false,
        }
    }

    fn fixture() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        std::fs::copy(
            concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/schema0.db"),
            &path,
        )
        .unwrap();
        let store = SqliteStore::open(&path).unwrap();
        (dir, store)
    }

    #[test]
    fn the_schema_zero_fixture_migrates_and_keeps_every_record() {
        let (_dir, store) = fixture();
        let keys = Keys::new("/macvlan");
        assert_eq!(version(&store, &keys).unwrap(), 0);
        let notes = ensure(&store, &keys, &identity()).unwrap();
        assert_eq!(version(&store, &keys).unwrap(), SCHEMA);
        // fa and fb held 192.0.2.10 under /24 and /25: one keeps it.
        assert!(
            notes
                .iter()
                .any(|n| n.contains("192.0.2.10 was held twice")),
            "{notes:?}"
        );
        let network = crate::network::load(&store, &keys, "test1").unwrap();
        assert_eq!(network.vlan, Some(100));
        assert_eq!(network.subnet.as_deref(), Some("198.18.0.0/24"));
        assert_eq!(network.parent, "lan0");
        assert!(store.get("/macvlan/vlan/test1").unwrap().is_none());
        assert!(store.get("/macvlan/vlan-generation").unwrap().is_none());
        let all: Vec<String> = ipam::list_records(&store, &keys)
            .unwrap()
            .into_iter()
            .map(|(id, _, _)| id)
            .collect();
        assert_eq!(all, ["fa", "fb", "fc", "vc1", "dd"]);
        let vc1 = ipam::load_flat(&store, &keys, "vc1").unwrap().unwrap();
        assert_eq!(vc1.network.as_deref(), Some("test1"));
        assert_eq!(vc1.host_id.as_deref(), Some("host-1"));
        let fc = ipam::load_flat(&store, &keys, "fc").unwrap().unwrap();
        assert_eq!(fc.host_id, None, "another host's record keeps its owner");
        assert!(fc.owned_by("other-id", "otherhost"));
        let held: Vec<(String, String)> = store.list("/macvlan/ipam/").unwrap();
        let held: Vec<(&str, &str)> = held.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(
            held,
            [
                ("/macvlan/ipam/_adhoc/192.0.2.10", "\"fa\""),
                ("/macvlan/ipam/_adhoc/192.0.2.150", "\"dd\""),
                ("/macvlan/ipam/_adhoc/192.0.2.20", "\"fc\""),
                ("/macvlan/ipam/test1/198.18.0.2", "\"vc1\""),
            ]
        );
        // Running it again changes nothing.
        assert!(ensure(&store, &keys, &identity()).unwrap().is_empty());
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("s.db")).unwrap();
        let keys = Keys::new("/macvlan");
        store
            .transaction(&[], &[Op::Put(keys.schema(), "99".into())])
            .unwrap();
        let e = ensure(&store, &keys, &identity()).unwrap_err();
        assert!(
            e.to_string().contains("newer macvlan-runc (schema 99"),
            "{e}"
        );
    }

    #[test]
    fn a_held_lock_is_waited_for_and_a_finished_migration_seen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let store = SqliteStore::open(&path).unwrap();
        let keys = Keys::new("/macvlan");
        let lease = store.grant_lease(Duration::from_secs(30)).unwrap();
        store
            .transaction(
                &[],
                &[Op::PutWithLease(
                    keys.schema_lock(),
                    "\"other\"".into(),
                    lease,
                )],
            )
            .unwrap();
        let other = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            let store = SqliteStore::open(&path).unwrap();
            store
                .transaction(
                    &[],
                    &[Op::Put(Keys::new("/macvlan").schema(), SCHEMA.to_string())],
                )
                .unwrap();
            store.revoke_lease(lease).unwrap();
        });
        let started = Instant::now();
        assert!(ensure(&store, &keys, &identity()).unwrap().is_empty());
        assert!(started.elapsed() >= Duration::from_millis(250));
        other.join().unwrap();
        assert_eq!(version(&store, &keys).unwrap(), SCHEMA);
    }
}
