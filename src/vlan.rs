//! VLAN networks in the store: creating one (a cluster-unique 802.1Q ID, a
//! subnet that overlaps no other VLAN's), deleting it, and taking addresses
//! in it (the requested one, or the lowest free one).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::cidr::Ipv4Cidr;
use crate::ipam::{self, Claim, IpamError};
use crate::record::{now, FlatRecord};
use crate::request::VlanName;
use crate::store::{Compare, Keys, Op, Store, StoreError};

/// 802.1Q IDs a network may use: 0 (priority tags) and 4095 are reserved.
pub const IDS: std::ops::RangeInclusive<u16> = 1..=4094;

const ATTEMPTS: usize = 64;

/// After a lost race, the next address is picked among this many free ones.
const CONTENDED_SPREAD: usize = 32;

/// A VLAN network, as `/macvlan/vlan/<name>` holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VlanNetwork {
    #[serde(skip)]
    pub name: String,
    pub id: u16,
    /// The subnet in CIDR form, e.g. `198.18.0.0/24`.
    pub subnet: String,
    pub gateway: Ipv4Addr,
    pub host_interface: String,
    pub created_at: u64,
}

impl VlanNetwork {
    pub fn subnet(&self) -> Ipv4Cidr {
        self.subnet.parse().expect("stored subnets are valid")
    }

    /// The address pool's name in `/macvlan/ipam/<pool>/`.
    pub fn pool(&self) -> String {
        self.subnet().pool_name()
    }

    /// The 802.1Q sub-interface on a host: `IF.<id>`, the name `ip link`
    /// and vconfig use; when that is longer than the kernel's 15 bytes,
    /// `vlan<id>`.
    pub fn sub_interface(&self) -> String {
        let name = format!("{}.{}", self.host_interface, self.id);
        if name.len() <= 15 {
            name
        } else {
            format!("vlan{}", self.id)
        }
    }

    /// Addresses containers can take: the subnet's hosts but the gateway.
    pub fn capacity(&self) -> u32 {
        let subnet = self.subnet();
        u32::from(subnet.broadcast()) - u32::from(subnet.network()) - 2
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VlanError {
    #[error("no VLAN network {name:?}; known: {known}")]
    NotFound { name: String, known: String },
    #[error("a VLAN network {0:?} exists already")]
    Exists(String),
    #[error("subnet {subnet} overlaps VLAN network {other:?} ({other_subnet})")]
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
    #[error("VLAN network {name:?} is in use by {holders}; stop those containers (and run macvlan gc) first")]
    InUse { name: String, holders: String },
    #[error("VLAN network {name:?} ({subnet}) has no free address left")]
    Exhausted { name: String, subnet: String },
    #[error("{address} is not a usable address of VLAN network {name:?}: {problem}")]
    BadAddress {
        address: Ipv4Addr,
        name: String,
        problem: String,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("the store kept changing under us; gave up after {0} attempts")]
    Contended(usize),
    #[error("corrupt record {key}: {message}")]
    Corrupt { key: String, message: String },
    #[error(transparent)]
    Ipam(#[from] IpamError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

type Result<T> = std::result::Result<T, VlanError>;

/// What `macvlan vlan create` asks for.
#[derive(Debug, Clone)]
pub struct CreateRequest {
    pub name: VlanName,
    pub subnet: Ipv4Cidr,
    pub host_interface: String,
    pub id: Option<u16>,
    pub gateway: Option<Ipv4Addr>,
}

fn parse(name: &str, key: &str, text: &str) -> Result<VlanNetwork> {
    let mut network: VlanNetwork = serde_json::from_str(text).map_err(|e| VlanError::Corrupt {
        key: key.to_string(),
        message: e.to_string(),
    })?;
    network.name = name.to_string();
    Ok(network)
}

/// Every VLAN network, by name.
pub fn list(store: &dyn Store, keys: &Keys) -> Result<Vec<VlanNetwork>> {
    let prefix = keys.vlan_prefix();
    store
        .list(&prefix)?
        .into_iter()
        .map(|(key, value)| parse(&key[prefix.len()..], &key, &value))
        .collect()
}

pub fn load(store: &dyn Store, keys: &Keys, name: &str) -> Result<VlanNetwork> {
    let key = keys.vlan(name);
    match store.get(&key)? {
        Some(text) => parse(name, &key, &text),
        None => {
            let known: Vec<String> = list(store, keys)?.into_iter().map(|n| n.name).collect();
            Err(VlanError::NotFound {
                name: name.to_string(),
                known: if known.is_empty() {
                    "none (create one with macvlan vlan create)".into()
                } else {
                    known.join(", ")
                },
            })
        }
    }
}

fn overlaps(a: Ipv4Cidr, b: Ipv4Cidr) -> bool {
    a.contains(b.network()) || b.contains(a.network())
}

/// A random number below `bound`, for picking a free VLAN ID.
fn random_below(bound: usize) -> usize {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(std::time::Instant::now().elapsed().as_nanos());
    (hasher.finish() % bound as u64) as usize
}

/// Creates a VLAN network: its record, its ID key and the generation
/// counter move in one transaction that checks nothing changed since the
/// overlap check read them.
pub fn create(store: &dyn Store, keys: &Keys, request: &CreateRequest) -> Result<VlanNetwork> {
    if let Some(id) = request.id {
        if !IDS.contains(&id) {
            return Err(VlanError::IdReserved(id));
        }
    }
    let subnet = request.subnet.subnet();
    if !(1..=30).contains(&subnet.prefix) {
        return Err(VlanError::Invalid(format!(
            "--subnet {}: expected a prefix length from 1 to 30",
            request.subnet
        )));
    }
    let gateway = match request.gateway {
        Some(gateway) => {
            if !subnet.contains(gateway)
                || gateway == subnet.network()
                || gateway == subnet.broadcast()
            {
                return Err(VlanError::Invalid(format!(
                    "--gateway {gateway}: expected a host address of {subnet}"
                )));
            }
            gateway
        }
        None => Ipv4Addr::from(u32::from(subnet.network()) + 1),
    };
    let name = request.name.as_str();
    for _ in 0..ATTEMPTS {
        let generation = store.get(&keys.vlan_generation())?;
        let existing = list(store, keys)?;
        if existing.iter().any(|n| n.name == name) {
            return Err(VlanError::Exists(name.to_string()));
        }
        if let Some(other) = existing.iter().find(|n| overlaps(n.subnet(), subnet)) {
            return Err(VlanError::Overlap {
                subnet: subnet.to_string(),
                other: other.name.clone(),
                other_subnet: other.subnet.clone(),
            });
        }
        let used: BTreeSet<u16> = existing.iter().map(|n| n.id).collect();
        let id = match request.id {
            Some(id) => {
                if let Some(holder) = existing.iter().find(|n| n.id == id) {
                    return Err(VlanError::IdTaken {
                        id,
                        holder: holder.name.clone(),
                    });
                }
                id
            }
            None => {
                let free: Vec<u16> = IDS.filter(|id| !used.contains(id)).collect();
                if free.is_empty() {
                    return Err(VlanError::NoFreeId);
                }
                free[random_below(free.len())]
            }
        };
        let network = VlanNetwork {
            name: name.to_string(),
            id,
            subnet: subnet.to_string(),
            gateway,
            host_interface: request.host_interface.clone(),
            created_at: now(),
        };
        let next = generation
            .as_deref()
            .and_then(|g| g.parse::<u64>().ok())
            .unwrap_or(0)
            + 1;
        let compares = vec![
            match &generation {
                Some(g) => Compare::Equals(keys.vlan_generation(), g.clone()),
                None => Compare::Absent(keys.vlan_generation()),
            },
            Compare::Absent(keys.vlan(name)),
            Compare::Absent(keys.vlan_id(id)),
        ];
        let ops = vec![
            Op::Put(keys.vlan_generation(), next.to_string()),
            Op::Put(
                keys.vlan(name),
                serde_json::to_string(&network).expect("network serialises"),
            ),
            Op::Put(
                keys.vlan_id(id),
                serde_json::Value::String(name.to_string()).to_string(),
            ),
        ];
        if store.transaction(&compares, &ops)? {
            return Ok(network);
        }
    }
    Err(VlanError::Contended(ATTEMPTS))
}

/// The addresses held in a network, as `(address, container)`.
pub fn holders(
    store: &dyn Store,
    keys: &Keys,
    network: &VlanNetwork,
) -> Result<Vec<(Ipv4Addr, String)>> {
    let prefix = keys.pool_prefix(&network.pool());
    let mut held: Vec<(Ipv4Addr, String)> = store
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

/// Deletes a network no container holds an address in.
pub fn delete(store: &dyn Store, keys: &Keys, name: &str) -> Result<VlanNetwork> {
    for _ in 0..ATTEMPTS {
        let network = load(store, keys, name)?;
        let held = holders(store, keys, &network)?;
        if !held.is_empty() {
            let names: Vec<String> = held
                .iter()
                .map(|(ip, container)| format!("{container} ({ip})"))
                .collect();
            return Err(VlanError::InUse {
                name: name.to_string(),
                holders: names.join(", "),
            });
        }
        let generation = store.get(&keys.vlan_generation())?;
        let next = generation
            .as_deref()
            .and_then(|g| g.parse::<u64>().ok())
            .unwrap_or(0)
            + 1;
        let record = store.get(&keys.vlan(name))?.unwrap_or_default();
        let compares = vec![
            match &generation {
                Some(g) => Compare::Equals(keys.vlan_generation(), g.clone()),
                None => Compare::Absent(keys.vlan_generation()),
            },
            Compare::Equals(keys.vlan(name), record),
        ];
        let ops = vec![
            Op::Put(keys.vlan_generation(), next.to_string()),
            Op::Delete(keys.vlan(name)),
            Op::Delete(keys.vlan_id(network.id)),
        ];
        if store.transaction(&compares, &ops)? {
            return Ok(network);
        }
    }
    Err(VlanError::Contended(ATTEMPTS))
}

/// Checks that `address` can be a container's in `network`.
pub fn check_address(network: &VlanNetwork, address: Ipv4Addr) -> Result<()> {
    let subnet = network.subnet();
    let problem = if !subnet.contains(address) {
        Some(format!("outside its subnet {subnet}"))
    } else if address == subnet.network() || address == subnet.broadcast() {
        Some("the network or broadcast address of its subnet".to_string())
    } else if address == network.gateway {
        Some("its gateway's address".to_string())
    } else {
        None
    };
    match problem {
        Some(problem) => Err(VlanError::BadAddress {
            address,
            name: network.name.clone(),
            problem,
        }),
        None => Ok(()),
    }
}

/// Takes an address in `network` for `container_id` and writes `record`
/// (its `ip` and `pool` are filled in here): the requested address, else
/// the one the container held before (a restart), else the lowest free one.
/// Every attempt is one create-if-absent of the address key; a lost race
/// moves on to the next free address.
pub fn claim(
    store: &dyn Store,
    keys: &Keys,
    container_id: &str,
    network: &VlanNetwork,
    requested: Option<Ipv4Addr>,
    record: &FlatRecord,
) -> Result<(Claim, Ipv4Cidr)> {
    let subnet = network.subnet();
    let at = |address: Ipv4Addr| Ipv4Cidr {
        address,
        prefix: subnet.prefix,
    };
    let with_address = |address: Ipv4Addr| {
        let mut record = record.clone();
        record.ip = at(address).to_string();
        record.pool = network.pool();
        record
    };
    if let Some(address) = requested {
        check_address(network, address)?;
        let claim = ipam::claim_flat(
            store,
            keys,
            container_id,
            at(address),
            &with_address(address),
        )?;
        return Ok((claim, at(address)));
    }
    if let Some(previous) = ipam::load_flat(store, keys, container_id)? {
        let same_network = previous
            .vlan
            .as_ref()
            .is_some_and(|v| v.name == network.name);
        if let (true, Ok(cidr)) = (same_network, previous.ip.parse::<Ipv4Cidr>()) {
            if check_address(network, cidr.address).is_ok() {
                let claim = ipam::claim_flat(
                    store,
                    keys,
                    container_id,
                    at(cidr.address),
                    &with_address(cidr.address),
                )?;
                return Ok((claim, at(cidr.address)));
            }
        }
    }
    let first = u32::from(subnet.network()) + 1;
    let last = u32::from(subnet.broadcast()) - 1;
    let mut lost_races = 0;
    for _ in 0..ATTEMPTS {
        let used: BTreeSet<Ipv4Addr> = holders(store, keys, network)?
            .into_iter()
            .map(|(ip, _)| ip)
            .collect();
        let free: Vec<Ipv4Addr> = (first..=last)
            .map(Ipv4Addr::from)
            .filter(|a| *a != network.gateway && !used.contains(a))
            .take(CONTENDED_SPREAD)
            .collect();
        if free.is_empty() {
            return Err(VlanError::Exhausted {
                name: network.name.clone(),
                subnet: network.subnet.clone(),
            });
        }
        // The lowest free address; after a lost race, one of the next few
        // at random, so that hosts allocating at once stop colliding on
        // the same one.
        let address = if lost_races == 0 {
            free[0]
        } else {
            free[random_below(free.len())]
        };
        match ipam::claim_flat(
            store,
            keys,
            container_id,
            at(address),
            &with_address(address),
        ) {
            Ok(claim) => return Ok((claim, at(address))),
            // Taken meanwhile by another host's container.
            Err(IpamError::Held { .. }) => lost_races += 1,
            Err(e) => return Err(e.into()),
        }
    }
    Err(VlanError::Contended(ATTEMPTS))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::VlanRef;
    use crate::store::SqliteStore;

    fn setup() -> (tempfile::TempDir, SqliteStore, Keys) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("s.db")).unwrap();
        (dir, store, Keys::new("/macvlan"))
    }

    fn request(name: &str, subnet: &str, id: Option<u16>) -> CreateRequest {
        CreateRequest {
            name: VlanName::parse(name).unwrap(),
            subnet: subnet.parse().unwrap(),
            host_interface: "lan0".into(),
            id,
            gateway: None,
        }
    }

    fn record(network: &VlanNetwork) -> FlatRecord {
        let mut record = FlatRecord::sample("198.18.0.99/24");
        record.vlan = Some(VlanRef {
            name: network.name.clone(),
            id: network.id,
        });
        record
    }

    #[test]
    fn create_picks_a_free_id_and_the_first_address_as_gateway() {
        let (_d, store, keys) = setup();
        let network = create(&store, &keys, &request("test1", "198.18.0.7/24", None)).unwrap();
        assert!(IDS.contains(&network.id));
        assert_eq!(network.subnet, "198.18.0.0/24");
        assert_eq!(network.gateway, Ipv4Addr::new(198, 18, 0, 1));
        assert_eq!(network.sub_interface(), format!("lan0.{}", network.id));
        assert_eq!(load(&store, &keys, "test1").unwrap(), {
            let mut n = network.clone();
            n.name = "test1".into();
            n
        });
        assert_eq!(
            store.get(&keys.vlan_id(network.id)).unwrap().as_deref(),
            Some("\"test1\"")
        );
    }

    #[test]
    fn overlap_duplicate_names_and_taken_or_reserved_ids_are_refused() {
        let (_d, store, keys) = setup();
        create(&store, &keys, &request("a", "198.18.0.0/24", Some(10))).unwrap();
        let error = create(&store, &keys, &request("b", "198.18.0.128/25", None)).unwrap_err();
        assert_eq!(
            error.to_string(),
            "subnet 198.18.0.128/25 overlaps VLAN network \"a\" (198.18.0.0/24)"
        );
        let error = create(&store, &keys, &request("b", "198.18.0.0/16", None)).unwrap_err();
        assert!(matches!(error, VlanError::Overlap { .. }), "{error}");
        let error = create(&store, &keys, &request("a", "198.19.0.0/24", None)).unwrap_err();
        assert!(matches!(error, VlanError::Exists(_)));
        let error = create(&store, &keys, &request("b", "198.19.0.0/24", Some(10))).unwrap_err();
        assert_eq!(error.to_string(), "VLAN ID 10 is used by network \"a\"");
        for reserved in [0, 4095] {
            let error = create(
                &store,
                &keys,
                &request("b", "198.19.0.0/24", Some(reserved)),
            )
            .unwrap_err();
            assert!(matches!(error, VlanError::IdReserved(_)), "{error}");
        }
        let mut bad_gateway = request("b", "198.19.0.0/24", None);
        bad_gateway.gateway = Some(Ipv4Addr::new(198, 19, 0, 255));
        assert!(create(&store, &keys, &bad_gateway).is_err());
    }

    #[test]
    fn random_ids_never_reserved_and_the_last_free_one_is_found() {
        let (_d, store, keys) = setup();
        // Fill every ID but one directly, as other networks would.
        for id in IDS.filter(|id| *id != 1234) {
            store
                .transaction(&[], &[Op::Put(keys.vlan_id(id), "\"x\"".into())])
                .unwrap();
            let network = VlanNetwork {
                name: format!("n{id}"),
                id,
                subnet: format!("10.{}.{}.0/24", id / 256, id % 256),
                gateway: Ipv4Addr::new(10, (id / 256) as u8, (id % 256) as u8, 1),
                host_interface: "lan0".into(),
                created_at: 0,
            };
            store
                .transaction(
                    &[],
                    &[Op::Put(
                        keys.vlan(&network.name),
                        serde_json::to_string(&network).unwrap(),
                    )],
                )
                .unwrap();
        }
        let network = create(&store, &keys, &request("last", "198.18.0.0/24", None)).unwrap();
        assert_eq!(network.id, 1234);
        let error = create(&store, &keys, &request("more", "198.19.0.0/24", None)).unwrap_err();
        assert!(matches!(error, VlanError::NoFreeId), "{error}");
    }

    #[test]
    fn addresses_lowest_free_requested_restart_and_exhaustion() {
        let (_d, store, keys) = setup();
        // /29: .1 gateway, .2-.6 for containers.
        let network = create(&store, &keys, &request("small", "198.18.0.0/29", None)).unwrap();
        assert_eq!(network.capacity(), 5);
        let rec = record(&network);
        let (_, a) = claim(&store, &keys, "a", &network, None, &rec).unwrap();
        assert_eq!(a.to_string(), "198.18.0.2/29");
        let (_, b) = claim(
            &store,
            &keys,
            "b",
            &network,
            Some(Ipv4Addr::new(198, 18, 0, 4)),
            &rec,
        )
        .unwrap();
        assert_eq!(b.to_string(), "198.18.0.4/29");
        let (_, c) = claim(&store, &keys, "c", &network, None, &rec).unwrap();
        assert_eq!(c.to_string(), "198.18.0.3/29");
        // A restart keeps the address.
        ipam::mark_stopped(&store, &keys, "a").unwrap();
        let (_, again) = claim(&store, &keys, "a", &network, None, &rec).unwrap();
        assert_eq!(again, a);
        // Taken, gateway, outside.
        let taken = claim(
            &store,
            &keys,
            "d",
            &network,
            Some(Ipv4Addr::new(198, 18, 0, 4)),
            &rec,
        )
        .unwrap_err();
        assert_eq!(
            taken.to_string(),
            "address 198.18.0.4 is held by container b"
        );
        for (address, problem) in [
            (Ipv4Addr::new(198, 18, 0, 1), "its gateway's address"),
            (
                Ipv4Addr::new(198, 18, 0, 7),
                "the network or broadcast address",
            ),
            (
                Ipv4Addr::new(198, 18, 1, 2),
                "outside its subnet 198.18.0.0/29",
            ),
        ] {
            let error = claim(&store, &keys, "d", &network, Some(address), &rec).unwrap_err();
            assert!(error.to_string().contains(problem), "{error}");
        }
        claim(&store, &keys, "d", &network, None, &rec).unwrap();
        claim(&store, &keys, "e", &network, None, &rec).unwrap();
        let full = claim(&store, &keys, "f", &network, None, &rec).unwrap_err();
        assert_eq!(
            full.to_string(),
            "VLAN network \"small\" (198.18.0.0/29) has no free address left"
        );
        // Records live under vland, not flat.
        assert!(store.get(&keys.vland("a")).unwrap().is_some());
        assert!(store.get(&keys.flat("a")).unwrap().is_none());
    }

    #[test]
    fn delete_refuses_while_addresses_are_held_and_names_the_holders() {
        let (_d, store, keys) = setup();
        let network = create(&store, &keys, &request("t", "198.18.0.0/24", Some(7))).unwrap();
        claim(&store, &keys, "web", &network, None, &record(&network)).unwrap();
        let error = delete(&store, &keys, "t").unwrap_err();
        assert!(
            error.to_string().contains("in use by web (198.18.0.2)"),
            "{error}"
        );
        ipam::release_flat(&store, &keys, "web").unwrap();
        delete(&store, &keys, "t").unwrap();
        assert!(store.get(&keys.vlan_id(7)).unwrap().is_none());
        assert!(matches!(
            load(&store, &keys, "t").unwrap_err(),
            VlanError::NotFound { .. }
        ));
    }
}
