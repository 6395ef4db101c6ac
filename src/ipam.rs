//! Address claims on top of the store: one key per held address, created
//! only if absent, in the same transaction as the container's record.

use std::net::Ipv4Addr;

use crate::cidr::Ipv4Cidr;
use crate::record::{now, FlatRecord, RecordKind, State};
use crate::store::{Compare, Keys, Op, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    #[error("address {ip} is held by container {holder}")]
    Held { ip: Ipv4Addr, holder: String },
    #[error("the store kept changing under us; gave up after {0} attempts")]
    Contended(usize),
    #[error("{0} was changed by someone else meanwhile; left as it is")]
    Changed(String),
    #[error("container {container} already has a record of another network type ({key}); remove it first (macvlan detach --id {container})")]
    OtherNetwork { container: String, key: String },
    #[error("corrupt record {key}: {message}")]
    Corrupt { key: String, message: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a claim replaced, so that a failed attach can put it back.
#[derive(Debug, Clone)]
pub struct Claim {
    pub key: String,
    /// The record as it was before (a restart of a stopped container), raw.
    pub previous: Option<String>,
    pub address_key: String,
    /// Address key of the previous record, when it named another address.
    pub previous_address_key: Option<String>,
}

const ATTEMPTS: usize = 20;

fn holder_value(container_id: &str) -> String {
    serde_json::Value::String(container_id.to_string()).to_string()
}

/// Reads the container id out of an ipam key's JSON string value.
pub fn parse_holder(value: &str) -> String {
    serde_json::from_str::<String>(value).unwrap_or_else(|_| value.to_string())
}

/// Finds a container's record, flat or VLAN: its key and raw value.
pub fn locate(
    store: &dyn Store,
    keys: &Keys,
    container_id: &str,
) -> Result<Option<(String, String)>, IpamError> {
    for kind in RecordKind::ALL {
        let key = keys.record(container_id, kind);
        if let Some(text) = store.get(&key)? {
            return Ok(Some((key, text)));
        }
    }
    Ok(None)
}

/// Every container record in the store, flat and VLAN, as
/// `(container id, key, raw value)`.
pub fn list_records(
    store: &dyn Store,
    keys: &Keys,
) -> Result<Vec<(String, String, String)>, IpamError> {
    let mut all = Vec::new();
    for prefix in RecordKind::ALL.map(|kind| keys.record_prefix(kind)) {
        for (key, value) in store.list(&prefix)? {
            all.push((key[prefix.len()..].to_string(), key, value));
        }
    }
    Ok(all)
}

fn parse_record(key: &str, text: &str) -> Result<FlatRecord, IpamError> {
    serde_json::from_str(text).map_err(|e| IpamError::Corrupt {
        key: key.to_string(),
        message: e.to_string(),
    })
}

/// A container's record (flat or VLAN), if it has one.
pub fn load_flat(
    store: &dyn Store,
    keys: &Keys,
    container_id: &str,
) -> Result<Option<FlatRecord>, IpamError> {
    match locate(store, keys, container_id)? {
        None => Ok(None),
        Some((key, text)) => parse_record(&key, &text).map(Some),
    }
}

/// Refuses a container that already has a record of another network type.
pub fn check_no_other_network(
    store: &dyn Store,
    keys: &Keys,
    container_id: &str,
    kind: RecordKind,
) -> Result<(), IpamError> {
    for other in RecordKind::ALL.into_iter().filter(|k| *k != kind) {
        let key = keys.record(container_id, other);
        if store.get(&key)?.is_some() {
            return Err(IpamError::OtherNetwork {
                container: container_id.to_string(),
                key,
            });
        }
    }
    Ok(())
}

/// Claims `address` for `container_id` and writes `record` (state
/// attaching) in one transaction. Claiming an address the container already
/// holds (a restart) succeeds; one held by another container fails naming it.
pub fn claim_flat(
    store: &dyn Store,
    keys: &Keys,
    container_id: &str,
    address: Ipv4Cidr,
    record: &FlatRecord,
) -> Result<Claim, IpamError> {
    let key = keys.record(container_id, record.kind());
    check_no_other_network(store, keys, container_id, record.kind())?;
    let pool = address.subnet().pool_name();
    let address_key = keys.address(&pool, address.address);
    let mine = holder_value(container_id);
    for _ in 0..ATTEMPTS {
        let previous = store.get(&key)?;
        let previous_address_key = match &previous {
            None => None,
            Some(text) => {
                let old: FlatRecord =
                    serde_json::from_str(text).map_err(|e| IpamError::Corrupt {
                        key: key.clone(),
                        message: e.to_string(),
                    })?;
                let old_cidr: Option<Ipv4Cidr> = old.ip.parse().ok();
                old_cidr
                    .map(|c| keys.address(&old.pool, c.address))
                    .filter(|k| *k != address_key)
            }
        };
        let holder = store.get(&address_key)?;
        let mut compares = vec![match &previous {
            None => Compare::Absent(key.clone()),
            Some(text) => Compare::Equals(key.clone(), text.clone()),
        }];
        match &holder {
            None => compares.push(Compare::Absent(address_key.clone())),
            Some(value) if *value == mine => {
                compares.push(Compare::Equals(address_key.clone(), mine.clone()))
            }
            Some(value) => {
                return Err(IpamError::Held {
                    ip: address.address,
                    holder: parse_holder(value),
                })
            }
        }
        let written = serde_json::to_string(record).expect("record serialises");
        let mut ops = vec![
            Op::Put(address_key.clone(), mine.clone()),
            Op::Put(key.clone(), written),
        ];
        if let Some(old) = &previous_address_key {
            ops.push(Op::Delete(old.clone()));
        }
        if store.transaction(&compares, &ops)? {
            return Ok(Claim {
                key,
                previous,
                address_key,
                previous_address_key,
            });
        }
    }
    Err(IpamError::Contended(ATTEMPTS))
}

/// Undoes a claim: puts back what was there before, if nothing changed since.
pub fn undo_claim(store: &dyn Store, container_id: &str, claim: &Claim) -> Result<(), IpamError> {
    // The address must still be this container's; its record may have moved
    // on within the same attach (marked running) and is put back regardless.
    let compares = [Compare::Equals(
        claim.address_key.clone(),
        holder_value(container_id),
    )];
    let mut ops = Vec::new();
    match &claim.previous {
        Some(previous) => {
            ops.push(Op::Put(claim.key.clone(), previous.clone()));
            if let Some(old_address) = &claim.previous_address_key {
                ops.push(Op::Delete(claim.address_key.clone()));
                ops.push(Op::Put(old_address.clone(), holder_value(container_id)));
            }
        }
        None => {
            ops.push(Op::Delete(claim.key.clone()));
            ops.push(Op::Delete(claim.address_key.clone()));
        }
    }
    if !store.transaction(&compares, &ops)? {
        return Err(IpamError::Changed(claim.key.clone()));
    }
    Ok(())
}

/// Rewrites a container's record through `change`, atomically, and returns
/// it as it is now; `change` returns `false` when there is nothing to write.
/// `Ok(None)`: there is no record.
pub fn update_flat(
    store: &dyn Store,
    keys: &Keys,
    container_id: &str,
    change: impl Fn(&mut FlatRecord) -> bool,
) -> Result<Option<FlatRecord>, IpamError> {
    for _ in 0..ATTEMPTS {
        let Some((key, text)) = locate(store, keys, container_id)? else {
            return Ok(None);
        };
        let mut record = parse_record(&key, &text)?;
        if !change(&mut record) {
            return Ok(Some(record));
        }
        record.updated_at = now();
        let new = serde_json::to_string(&record).expect("record serialises");
        if store.transaction(
            &[Compare::Equals(key.clone(), text)],
            &[Op::Put(key.clone(), new)],
        )? {
            return Ok(Some(record));
        }
    }
    Err(IpamError::Contended(ATTEMPTS))
}

/// Marks a container's record stopped: one read and, unless it already
/// is, one write (poststop runs at every container stop). Idempotent; an
/// unknown id is fine.
pub fn mark_stopped(
    store: &dyn Store,
    keys: &Keys,
    container_id: &str,
) -> Result<Option<FlatRecord>, IpamError> {
    update_flat(store, keys, container_id, |r| {
        if r.state == State::Stopped {
            return false;
        }
        r.state = State::Stopped;
        r.stopped_at = Some(now());
        r.pid = None;
        true
    })
}

/// Removes a container's record and its address key, atomically.
pub fn release_flat(
    store: &dyn Store,
    keys: &Keys,
    container_id: &str,
) -> Result<Option<FlatRecord>, IpamError> {
    for _ in 0..ATTEMPTS {
        let Some((_, text)) = locate(store, keys, container_id)? else {
            return Ok(None);
        };
        if let Some(record) = release_flat_if(store, keys, container_id, &text)? {
            return Ok(Some(record));
        }
    }
    Err(IpamError::Contended(ATTEMPTS))
}

/// Removes a container's record and its address key, but only while the
/// record is still exactly `expected` (as read by the caller). `Ok(None)`:
/// it changed meanwhile, nothing was removed.
pub fn release_flat_if(
    store: &dyn Store,
    keys: &Keys,
    container_id: &str,
    expected: &str,
) -> Result<Option<FlatRecord>, IpamError> {
    let record = parse_record(&keys.flat(container_id), expected)?;
    let key = keys.record(container_id, record.kind());
    let mut compares = vec![Compare::Equals(key.clone(), expected.to_string())];
    let mut ops = vec![Op::Delete(key)];
    if let Ok(cidr) = record.ip.parse::<Ipv4Cidr>() {
        let address_key = keys.address(&record.pool, cidr.address);
        if store.get(&address_key)?.as_deref() == Some(holder_value(container_id).as_str()) {
            compares.push(Compare::Equals(
                address_key.clone(),
                holder_value(container_id),
            ));
            ops.push(Op::Delete(address_key));
        }
    }
    Ok(store.transaction(&compares, &ops)?.then_some(record))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SqliteStore;

    fn record(ip: &str) -> FlatRecord {
        FlatRecord::sample(ip)
    }

    fn setup() -> (tempfile::TempDir, SqliteStore, Keys) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("s.db")).unwrap();
        (dir, store, Keys::new("/macvlan"))
    }

    #[test]
    fn held_address_names_holder_and_restart_reclaims() {
        let (_dir, store, keys) = setup();
        let address: Ipv4Cidr = "192.0.2.10/24".parse().unwrap();
        claim_flat(&store, &keys, "a", address, &record("192.0.2.10/24")).unwrap();
        assert_eq!(
            store
                .get("/macvlan/ipam/192.0.2.0-24/192.0.2.10")
                .unwrap()
                .as_deref(),
            Some("\"a\"")
        );
        match claim_flat(&store, &keys, "b", address, &record("192.0.2.10/24")) {
            Err(IpamError::Held { holder, .. }) => assert_eq!(holder, "a"),
            other => panic!("expected Held, got {other:?}"),
        }
        // A restart of "a" claims its own address again.
        claim_flat(&store, &keys, "a", address, &record("192.0.2.10/24")).unwrap();
    }

    #[test]
    fn changing_address_moves_the_key_and_undo_restores_it() {
        let (_dir, store, keys) = setup();
        let first: Ipv4Cidr = "192.0.2.10/24".parse().unwrap();
        let second: Ipv4Cidr = "192.0.2.11/24".parse().unwrap();
        claim_flat(&store, &keys, "a", first, &record("192.0.2.10/24")).unwrap();
        let claim = claim_flat(&store, &keys, "a", second, &record("192.0.2.11/24")).unwrap();
        assert_eq!(
            store.get("/macvlan/ipam/192.0.2.0-24/192.0.2.10").unwrap(),
            None
        );
        undo_claim(&store, "a", &claim).unwrap();
        assert!(store
            .get("/macvlan/ipam/192.0.2.0-24/192.0.2.10")
            .unwrap()
            .is_some());
        assert_eq!(
            store.get("/macvlan/ipam/192.0.2.0-24/192.0.2.11").unwrap(),
            None
        );
        assert_eq!(
            load_flat(&store, &keys, "a").unwrap().unwrap().ip,
            "192.0.2.10/24"
        );
    }

    #[test]
    fn undo_of_a_first_claim_leaves_nothing() {
        let (_dir, store, keys) = setup();
        let address: Ipv4Cidr = "192.0.2.10/24".parse().unwrap();
        let claim = claim_flat(&store, &keys, "a", address, &record("192.0.2.10/24")).unwrap();
        undo_claim(&store, "a", &claim).unwrap();
        assert!(store.list("/macvlan/").unwrap().is_empty());
    }

    #[test]
    fn stop_is_idempotent_and_release_frees_the_address() {
        let (_dir, store, keys) = setup();
        let address: Ipv4Cidr = "192.0.2.10/24".parse().unwrap();
        claim_flat(&store, &keys, "a", address, &record("192.0.2.10/24")).unwrap();
        assert_eq!(
            mark_stopped(&store, &keys, "a").unwrap().unwrap().state,
            State::Stopped
        );
        assert_eq!(
            mark_stopped(&store, &keys, "a").unwrap().unwrap().state,
            State::Stopped
        );
        assert!(mark_stopped(&store, &keys, "never-seen").unwrap().is_none());
        release_flat(&store, &keys, "a").unwrap().unwrap();
        assert!(store.list("/macvlan/").unwrap().is_empty());
    }
}
