//! Address claims on top of the store: one key per held address, created
//! only if absent, in the same transaction as the container's record.

use std::net::{IpAddr, Ipv4Addr};

use crate::cidr::{Ipv4Cidr, Ipv6Cidr};
use crate::record::{now, FlatRecord, RecordKind, State};
use crate::store::{Compare, Keys, Op, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    #[error("address {ip} is held by container {holder}")]
    Held { ip: IpAddr, holder: String },
    #[error("the store kept changing under us; gave up after {0} attempts")]
    Contended(usize),
    #[error("{0} was changed by someone else meanwhile; left as it is")]
    Changed(String),
    #[error("container {container} already has a record of another network type ({key}); remove it first (macvlan detach --id {container})")]
    OtherNetwork { container: String, key: String },
    #[error("corrupt record {key}: {message}")]
    Corrupt { key: String, message: String },
    /// The claim's transaction failed without an answer (a timeout: it
    /// may have been applied) and the store could not be asked after: the
    /// caller treats it as made, registering its undo (issue 16).
    #[error("the store gave no answer to the claim, which may have been written ({source}); it is undone when the store answers again, or released by macvlan gc")]
    Unknown {
        claim: Box<Claim>,
        source: StoreError,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a claim replaced, so that a failed attach can put it back.
#[derive(Debug, Clone)]
pub struct Claim {
    pub key: String,
    /// The record as it was before (a restart of a stopped container), raw.
    pub previous: Option<String>,
    /// The address keys claimed (IPv4 and IPv6).
    pub address_keys: Vec<String>,
    /// Address keys of the previous record that this claim gave up.
    pub previous_address_keys: Vec<String>,
    /// Address keys the previous record held too (a restart): an undo
    /// leaves them held.
    pub kept_keys: Vec<String>,
}

/// One address to claim, with that address's keys in the other pools (a
/// network's and the ad-hoc one), which must not be held by someone else.
#[derive(Debug, Clone)]
pub struct Wanted {
    pub ip: IpAddr,
    pub guards: Vec<String>,
}

impl Wanted {
    pub fn new(ip: impl Into<IpAddr>, guards: Vec<String>) -> Wanted {
        Wanted {
            ip: ip.into(),
            guards,
        }
    }
}

/// The address keys a record's fixed addresses hold (`ip`, `ip6`).
pub fn record_address_keys(keys: &Keys, record: &FlatRecord) -> Vec<String> {
    let v4 = record
        .ip
        .parse::<Ipv4Cidr>()
        .ok()
        .map(|c| keys.address(&record.pool, c.address));
    let v6 = record
        .ip6
        .as_deref()
        .and_then(|t| t.parse::<Ipv6Cidr>().ok())
        .map(|c| keys.address(&record.pool, c.address));
    v4.into_iter().chain(v6).collect()
}

const ATTEMPTS: usize = 20;

/// The pool of addresses containers asked for ad hoc (`TYPE=flat`, and
/// leases of `TYPE=dhcp`): one key per address, whatever its prefix, so
/// `192.0.2.10/24` and `192.0.2.10/25` are one address. Network names
/// cannot start with '_'.
pub const ADHOC_POOL: &str = "_adhoc";

fn holder_value(container_id: &str) -> String {
    serde_json::Value::String(container_id.to_string()).to_string()
}

/// Reads the container id out of an ipam key's JSON string value.
pub fn parse_holder(value: &str) -> String {
    serde_json::from_str::<String>(value).unwrap_or_else(|_| value.to_string())
}

/// Finds an attachment's record, whatever its kind: its key and raw value.
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

/// Adds to `compares` that each of `checked` is absent or `mine`; fails
/// naming the holder of one that is someone else's.
fn require_free<'a>(
    store: &dyn Store,
    checked: impl Iterator<Item = &'a String>,
    mine: &str,
    ip: IpAddr,
    compares: &mut Vec<Compare>,
) -> Result<(), IpamError> {
    for key in checked {
        match store.get(key)? {
            None => compares.push(Compare::Absent(key.clone())),
            Some(value) if value == mine => {
                compares.push(Compare::Equals(key.clone(), mine.to_string()))
            }
            Some(value) => {
                return Err(IpamError::Held {
                    ip,
                    holder: parse_holder(&value),
                })
            }
        }
    }
    Ok(())
}

/// Claims every `wanted` address in `record.pool` for attachment
/// `container_id` and writes `record` (state attaching), all in one
/// transaction, which also checks that no address's guards are held by
/// someone else. Claiming addresses the attachment already holds (a
/// restart) succeeds; one held by another fails naming it.
pub fn claim(
    store: &dyn Store,
    keys: &Keys,
    container_id: &str,
    wanted: &[Wanted],
    record: &FlatRecord,
) -> Result<Claim, IpamError> {
    claim_checking(store, keys, container_id, wanted, record, None)
}

/// [`claim`], in a transaction that also finds `unchanged` (a key and the
/// value it was read with) as it was: a claim on a network that is being
/// removed fails with `Changed` instead of holding an address in it.
pub fn claim_checking(
    store: &dyn Store,
    keys: &Keys,
    container_id: &str,
    wanted: &[Wanted],
    record: &FlatRecord,
    unchanged: Option<(&str, &str)>,
) -> Result<Claim, IpamError> {
    let key = keys.record(container_id, record.kind());
    check_no_other_network(store, keys, container_id, record.kind())?;
    let address_keys: Vec<String> = wanted
        .iter()
        .map(|w| keys.address(&record.pool, w.ip))
        .collect();
    let mine = holder_value(container_id);
    for _ in 0..ATTEMPTS {
        let previous = store.get(&key)?;
        let old_keys = match &previous {
            None => Vec::new(),
            Some(text) => {
                let old: FlatRecord =
                    serde_json::from_str(text).map_err(|e| IpamError::Corrupt {
                        key: key.clone(),
                        message: e.to_string(),
                    })?;
                // Only keys this attachment holds: a SLAAC address is
                // recorded but never claimed.
                let mut held = Vec::new();
                for key in record_address_keys(keys, &old) {
                    if store.get(&key)?.as_deref() == Some(mine.as_str()) {
                        held.push(key);
                    }
                }
                held
            }
        };
        let (kept_keys, previous_address_keys): (Vec<String>, Vec<String>) =
            old_keys.into_iter().partition(|k| address_keys.contains(k));
        let mut compares = vec![match &previous {
            None => Compare::Absent(key.clone()),
            Some(text) => Compare::Equals(key.clone(), text.clone()),
        }];
        if let Some((other, value)) = unchanged {
            compares.push(Compare::Equals(other.to_string(), value.to_string()));
        }
        for (w, address_key) in wanted.iter().zip(&address_keys) {
            require_free(
                store,
                std::iter::once(address_key).chain(&w.guards),
                &mine,
                w.ip,
                &mut compares,
            )?;
        }
        let written = serde_json::to_string(record).expect("record serialises");
        let mut ops: Vec<Op> = address_keys
            .iter()
            .map(|k| Op::Put(k.clone(), mine.clone()))
            .collect();
        ops.push(Op::Put(key.clone(), written.clone()));
        for old in &previous_address_keys {
            ops.push(Op::Delete(old.clone()));
        }
        let claim = Claim {
            key: key.clone(),
            previous: previous.clone(),
            address_keys: address_keys.clone(),
            previous_address_keys,
            kept_keys,
        };
        let committed = match store.transaction(&compares, &ops) {
            Ok(committed) => committed,
            // No answer is not a no: read back whether it was applied.
            Err(source) => match store.get(&key) {
                Ok(now) if now.as_deref() == Some(written.as_str()) => true,
                Ok(_) => return Err(source.into()),
                Err(_) => {
                    return Err(IpamError::Unknown {
                        claim: Box::new(claim),
                        source,
                    })
                }
            },
        };
        if committed {
            return Ok(claim);
        }
        if let Some((other, value)) = unchanged {
            if store.get(other)?.as_deref() != Some(value) {
                return Err(IpamError::Changed(other.to_string()));
            }
        }
    }
    Err(IpamError::Contended(ATTEMPTS))
}

/// Undoes a claim: puts back what was there before, if nothing changed since.
pub fn undo_claim(store: &dyn Store, container_id: &str, claim: &Claim) -> Result<(), IpamError> {
    // The addresses must still be this container's; its record may have
    // moved on within the same attach (marked running) and is put back
    // regardless.
    let mine = holder_value(container_id);
    let compares: Vec<Compare> = claim
        .address_keys
        .iter()
        .map(|k| Compare::Equals(k.clone(), mine.clone()))
        .collect();
    let mut ops = vec![match &claim.previous {
        Some(previous) => Op::Put(claim.key.clone(), previous.clone()),
        None => Op::Delete(claim.key.clone()),
    }];
    for key in &claim.address_keys {
        if !claim.kept_keys.contains(key) {
            ops.push(Op::Delete(key.clone()));
        }
    }
    for old in &claim.previous_address_keys {
        ops.push(Op::Put(old.clone(), mine.clone()));
    }
    if !store.transaction(&compares, &ops)? {
        return Err(IpamError::Changed(claim.key.clone()));
    }
    Ok(())
}

/// The address a DHCP record's lease holds, if it holds a lease.
fn lease_address(record: &FlatRecord) -> Option<Ipv4Addr> {
    let cidr: Ipv4Cidr = record.lease.as_ref()?.address.parse().ok()?;
    Some(cidr.address)
}

/// The address keys a record's DHCP and DHCPv6 leases hold.
pub fn lease_keys(keys: &Keys, record: &FlatRecord) -> Vec<String> {
    let v6 = record
        .lease6
        .as_ref()
        .and_then(|l| l.address.parse::<Ipv6Cidr>().ok())
        .map(|c| keys.address(&record.pool, c.address));
    lease_address(record)
        .map(|address| keys.address(&record.pool, address))
        .into_iter()
        .chain(v6)
        .collect()
}

/// The compares and ops that move a DHCP record's address key from the
/// lease in `old` to the lease in `new` (`None`: no record), claiming the
/// new one if absent — and none of `guards` (the address in other pools)
/// held by another — and releasing the old one if ours.
pub fn lease_key_change(
    store: &dyn Store,
    keys: &Keys,
    container_id: &str,
    old: Option<&FlatRecord>,
    new: Option<&FlatRecord>,
    guards: &[String],
) -> Result<(Vec<Compare>, Vec<Op>), IpamError> {
    let (mut compares, mut ops) = (Vec::new(), Vec::new());
    let before = old.map(|r| lease_keys(keys, r)).unwrap_or_default();
    let after = new.map(|r| lease_keys(keys, r)).unwrap_or_default();
    if before == after {
        return Ok((compares, ops));
    }
    let mine = holder_value(container_id);
    let v4_key = new.and_then(|r| lease_address(r).map(|a| keys.address(&r.pool, a)));
    for key in after.iter().filter(|k| !before.contains(k)) {
        // The IPv4 lease's address is also checked in the other pool.
        let (ip, checked): (IpAddr, &[String]) = if Some(key) == v4_key.as_ref() {
            let ip = new.and_then(lease_address).unwrap_or(Ipv4Addr::UNSPECIFIED);
            (IpAddr::V4(ip), guards)
        } else {
            let ip = key
                .rsplit('/')
                .next()
                .and_then(|t| t.parse().ok())
                .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
            (ip, &[])
        };
        require_free(
            store,
            std::iter::once(key).chain(checked),
            &mine,
            ip,
            &mut compares,
        )?;
        ops.push(Op::Put(key.clone(), mine.clone()));
    }
    for key in before.into_iter().filter(|k| !after.contains(k)) {
        if store.get(&key)?.as_deref() == Some(mine.as_str()) {
            compares.push(Compare::Equals(key.clone(), mine.clone()));
            ops.push(Op::Delete(key));
        }
    }
    Ok((compares, ops))
}

/// Rewrites a container's record through `change`, atomically, and returns
/// it as it is now; `change` returns `false` when there is nothing to write.
/// A DHCP record's address key follows its lease in the same transaction.
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
        let old = parse_record(&key, &text)?;
        let mut record = old.clone();
        if !change(&mut record) {
            return Ok(Some(record));
        }
        record.updated_at = now();
        let new = serde_json::to_string(&record).expect("record serialises");
        let (mut compares, mut ops) =
            lease_key_change(store, keys, container_id, Some(&old), Some(&record), &[])?;
        compares.push(Compare::Equals(key.clone(), text));
        ops.push(Op::Put(key.clone(), new));
        if store.transaction(&compares, &ops)? {
            return Ok(Some(record));
        }
    }
    Err(IpamError::Contended(ATTEMPTS))
}

/// Puts record `key` of attachment `holder` back to `previous` (raw;
/// `None`: absent), moving its lease's address key along: an undo.
pub fn restore_record(
    store: &dyn Store,
    keys: &Keys,
    holder: &str,
    key: &str,
    previous: Option<&str>,
) -> Result<(), IpamError> {
    let current_text = store.get(key)?;
    let current: Option<FlatRecord> = current_text
        .as_deref()
        .and_then(|t| serde_json::from_str(t).ok());
    let before: Option<FlatRecord> = previous.and_then(|t| serde_json::from_str(t).ok());
    let (mut compares, mut ops) =
        lease_key_change(store, keys, holder, current.as_ref(), before.as_ref(), &[])?;
    compares.push(match &current_text {
        Some(text) => Compare::Equals(key.to_string(), text.clone()),
        None => Compare::Absent(key.to_string()),
    });
    ops.push(match previous {
        Some(text) => Op::Put(key.to_string(), text.to_string()),
        None => Op::Delete(key.to_string()),
    });
    if !store.transaction(&compares, &ops)? {
        return Err(IpamError::Changed(key.to_string()));
    }
    Ok(())
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
    let address_keys = record_address_keys(keys, &record)
        .into_iter()
        .chain(lease_keys(keys, &record));
    for address_key in address_keys {
        if ops.contains(&Op::Delete(address_key.clone())) {
            continue;
        }
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
    use crate::store::{LeaseId, SqliteStore};

    fn record(ip: &str) -> FlatRecord {
        FlatRecord::sample(ip)
    }

    /// An ad-hoc claim as the flat driver makes it.
    fn claim_flat(
        store: &SqliteStore,
        keys: &Keys,
        id: &str,
        address: Ipv4Cidr,
        record: &FlatRecord,
    ) -> Result<Claim, IpamError> {
        claim(
            store,
            keys,
            id,
            &[Wanted::new(address.address, vec![])],
            record,
        )
    }

    /// A store whose transactions are applied but answered with an error
    /// (a timeout after the commit), and whose reads fail when `blind`.
    struct LostAnswers {
        inner: SqliteStore,
        blind: bool,
        gone: std::sync::atomic::AtomicBool,
    }

    impl Store for LostAnswers {
        fn get(&self, key: &str) -> crate::store::Result<Option<String>> {
            if self.gone.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(lost());
            }
            self.inner.get(key)
        }
        fn list(&self, prefix: &str) -> crate::store::Result<Vec<(String, String)>> {
            self.inner.list(prefix)
        }
        fn transaction(&self, compares: &[Compare], ops: &[Op]) -> crate::store::Result<bool> {
            self.inner.transaction(compares, ops)?;
            self.gone
                .store(self.blind, std::sync::atomic::Ordering::SeqCst);
            Err(lost())
        }
        fn grant_lease(&self, ttl: std::time::Duration) -> crate::store::Result<LeaseId> {
            self.inner.grant_lease(ttl)
        }
        fn keep_alive(&self, lease: LeaseId) -> crate::store::Result<bool> {
            self.inner.keep_alive(lease)
        }
        fn revoke_lease(&self, lease: LeaseId) -> crate::store::Result<()> {
            self.inner.revoke_lease(lease)
        }
    }

    fn lost() -> StoreError {
        StoreError::Backend {
            location: "test".into(),
            message: "no answer within 2s".into(),
        }
    }

    #[test]
    fn a_claim_whose_answer_was_lost_is_taken_as_made() {
        let (_dir, inner, keys) = setup();
        let address: Ipv4Cidr = "198.18.0.7/24".parse().unwrap();
        // Read back: it was written, so it is a claim like any other.
        let store = LostAnswers {
            inner,
            blind: false,
            gone: Default::default(),
        };
        claim_flat(
            &store.inner,
            &keys,
            "warm",
            address,
            &record("198.18.0.7/24"),
        )
        .unwrap();
        let wanted = [Wanted::new(Ipv4Addr::new(198, 18, 0, 8), vec![])];
        let made = super::claim(&store, &keys, "c1", &wanted, &record("198.18.0.8/24")).unwrap();
        assert_eq!(
            made.address_keys,
            [keys.address(ADHOC_POOL, Ipv4Addr::new(198, 18, 0, 8))]
        );
        // Cannot even read back: Unknown, carrying the claim to undo.
        let store = LostAnswers {
            inner: store.inner,
            blind: true,
            gone: Default::default(),
        };
        let wanted = [Wanted::new(Ipv4Addr::new(198, 18, 0, 9), vec![])];
        match super::claim(&store, &keys, "c2", &wanted, &record("198.18.0.9/24")) {
            Err(IpamError::Unknown { claim, .. }) => {
                assert_eq!(claim.key, keys.record("c2", RecordKind::Flat));
                // It was written: the undo the caller registers removes it.
                undo_claim(&store.inner, "c2", &claim).unwrap();
                assert_eq!(store.inner.get(&claim.key).unwrap(), None);
                assert_eq!(store.inner.get(&claim.address_keys[0]).unwrap(), None);
            }
            other => panic!("{other:?}"),
        }
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
                .get("/macvlan/ipam/_adhoc/192.0.2.10")
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
        // The same address under another prefix is the same address.
        let wider: Ipv4Cidr = "192.0.2.10/25".parse().unwrap();
        match claim_flat(&store, &keys, "c", wider, &record("192.0.2.10/25")) {
            Err(IpamError::Held { holder, .. }) => assert_eq!(holder, "a"),
            other => panic!("expected Held, got {other:?}"),
        }
    }

    #[test]
    fn a_guard_held_by_another_refuses_the_claim() {
        let (_dir, store, keys) = setup();
        let ip: Ipv4Addr = "192.0.2.10".parse().unwrap();
        let mut on_network = record("192.0.2.10/24");
        on_network.pool = "lan".into();
        claim(
            &store,
            &keys,
            "n",
            &[Wanted::new(ip, vec![keys.address(ADHOC_POOL, ip)])],
            &on_network,
        )
        .unwrap();
        match claim(
            &store,
            &keys,
            "a",
            &[Wanted::new(ip, vec![keys.address("lan", ip)])],
            &record("192.0.2.10/24"),
        ) {
            Err(IpamError::Held { holder, .. }) => assert_eq!(holder, "n"),
            other => panic!("expected Held, got {other:?}"),
        }
    }

    #[test]
    fn changing_address_moves_the_key_and_undo_restores_it() {
        let (_dir, store, keys) = setup();
        let first: Ipv4Cidr = "192.0.2.10/24".parse().unwrap();
        let second: Ipv4Cidr = "192.0.2.11/24".parse().unwrap();
        claim_flat(&store, &keys, "a", first, &record("192.0.2.10/24")).unwrap();
        let claim = claim_flat(&store, &keys, "a", second, &record("192.0.2.11/24")).unwrap();
        assert_eq!(store.get("/macvlan/ipam/_adhoc/192.0.2.10").unwrap(), None);
        undo_claim(&store, "a", &claim).unwrap();
        assert!(store
            .get("/macvlan/ipam/_adhoc/192.0.2.10")
            .unwrap()
            .is_some());
        assert_eq!(store.get("/macvlan/ipam/_adhoc/192.0.2.11").unwrap(), None);
        assert_eq!(
            load_flat(&store, &keys, "a").unwrap().unwrap().ip,
            "192.0.2.10/24"
        );
    }

    #[test]
    fn dual_stack_claims_both_keys_at_once_and_undo_keeps_a_restarts_own() {
        let (_dir, store, keys) = setup();
        let v4: Ipv4Addr = "192.0.2.10".parse().unwrap();
        let v6: std::net::Ipv6Addr = "2001:db8::a".parse().unwrap();
        let mut dual = record("192.0.2.10/24");
        dual.ip6 = Some("2001:db8::a/64".into());
        let both = [Wanted::new(v4, vec![]), Wanted::new(v6, vec![])];
        claim(&store, &keys, "a", &both, &dual).unwrap();
        assert!(store
            .get("/macvlan/ipam/_adhoc/2001:db8::a")
            .unwrap()
            .is_some());
        // Another container wanting the same IPv6 address (written
        // differently) gets neither.
        let mut other = record("192.0.2.11/24");
        other.ip6 = Some("2001:db8::a/64".into());
        let v6_upper: std::net::Ipv6Addr = "2001:DB8:0::A".parse().unwrap();
        match claim(
            &store,
            &keys,
            "b",
            &[
                Wanted::new("192.0.2.11".parse::<Ipv4Addr>().unwrap(), vec![]),
                Wanted::new(v6_upper, vec![]),
            ],
            &other,
        ) {
            Err(IpamError::Held { holder, ip }) => {
                assert_eq!((holder.as_str(), ip), ("a", IpAddr::V6(v6)))
            }
            other => panic!("expected Held, got {other:?}"),
        }
        assert_eq!(store.get("/macvlan/ipam/_adhoc/192.0.2.11").unwrap(), None);
        // A restart that changes only the IPv6 address, then undone: both
        // old keys held again, the new one gone.
        let mut moved = dual.clone();
        moved.ip6 = Some("2001:db8::b/64".into());
        let again = claim(
            &store,
            &keys,
            "a",
            &[
                Wanted::new(v4, vec![]),
                Wanted::new("2001:db8::b".parse::<std::net::Ipv6Addr>().unwrap(), vec![]),
            ],
            &moved,
        )
        .unwrap();
        assert_eq!(store.get("/macvlan/ipam/_adhoc/2001:db8::a").unwrap(), None);
        undo_claim(&store, "a", &again).unwrap();
        assert!(store
            .get("/macvlan/ipam/_adhoc/2001:db8::a")
            .unwrap()
            .is_some());
        assert!(store
            .get("/macvlan/ipam/_adhoc/192.0.2.10")
            .unwrap()
            .is_some());
        assert_eq!(store.get("/macvlan/ipam/_adhoc/2001:db8::b").unwrap(), None);
        release_flat(&store, &keys, "a").unwrap().unwrap();
        assert!(store.list("/macvlan/").unwrap().is_empty());
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
