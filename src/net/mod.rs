//! Attaching and detaching a container's network: the steps common to every
//! network type (privileges, namespace checks, logging, rollback), with the
//! type-specific work behind the small [`Driver`] trait.

mod dhcp;
mod flat;
mod macvlan;
pub mod qos;
mod vlan;

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context as _, Result};

use crate::config::Config;
use crate::ipam::{self, Claim};
use crate::log::{Level, Logger};
use crate::netlink::Netlink;
use crate::record::FlatRecord;
use crate::request::{Network, NetworkRequest};
use crate::store::{self, Keys, Store};

pub use flat::FlatDriver;
pub use vlan::{ensure_sub_interface, gateway_device, vlan_gateway, VlanDriver};

/// Everything an attach or detach needs from the host.
pub struct Context {
    pub config: Config,
    /// Opened on first use: shaping a container's own interface needs none.
    store: std::cell::OnceCell<Box<dyn Store>>,
    pub keys: Keys,
    pub logger: Logger,
    /// This host's name, recorded with every container.
    pub host: String,
}

impl Context {
    pub fn new(config: Config, logger: Logger) -> Result<Context> {
        let keys = Keys::new(&config.store_prefix);
        let host = config.host_name.clone().unwrap_or_else(|| {
            nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "localhost".into())
        });
        Ok(Context {
            config,
            store: std::cell::OnceCell::new(),
            keys,
            logger,
            host,
        })
    }

    /// The store the configuration names, opened on first use.
    pub fn store(&self) -> Result<&dyn Store> {
        if let Some(store) = self.store.get() {
            return Ok(store.as_ref());
        }
        let store = store::open(&self.config)?;
        Ok(self.store.get_or_init(|| store).as_ref())
    }
}

/// The container being attached: its id and the process whose network
/// namespace receives the interface.
#[derive(Debug, Clone)]
pub struct Target {
    pub container_id: String,
    pub pid: u32,
}

impl Target {
    pub fn netns_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/net", self.pid))
    }
}

/// What an attach configured, for the log and the caller.
#[derive(Debug, Clone)]
pub struct Attached {
    pub ifname: String,
    /// CIDR form.
    pub address: String,
    pub ip: std::net::Ipv4Addr,
    pub mac: String,
    pub parent: String,
}

/// One setup step's undo, run in reverse order when a later step fails.
pub enum Undo {
    /// Delete the interface `name` inside the container's namespace.
    DeleteLink { name: String },
    /// Put the store back as it was before the address claim.
    Claim(Box<Claim>),
    /// Remove the root and ingress qdiscs added to interface `name`.
    DeleteQdiscs { name: String },
    /// Remove the container's service registration.
    Registration,
    /// Give a DHCP lease back (RELEASE through the container's socket).
    DhcpRelease {
        socket: std::net::UdpSocket,
        payload: Vec<u8>,
        server: std::net::Ipv4Addr,
    },
    /// Stop the external DHCP client (which releases its lease).
    StopDhcpClient { pid: u32 },
    /// Put a record key back as it was (`None`: absent).
    RestoreRecord {
        key: String,
        previous: Option<String>,
    },
}

/// The undo list of an attach in progress.
#[derive(Default)]
pub struct Rollback {
    steps: Vec<Undo>,
}

impl Rollback {
    pub fn push(&mut self, undo: Undo) {
        self.steps.push(undo);
    }

    /// Undoes every registered step, newest first. Failures are logged, not
    /// returned: the original error is what the user needs to see.
    fn run(self, ctx: &Context, container_id: &str, container: &mut Netlink) {
        for step in self.steps.into_iter().rev() {
            let (what, result): (&str, Result<()>) = match step {
                Undo::DeleteLink { name } => (
                    "delete link",
                    (|| {
                        if let Some(link) = container.link_by_name(&name)? {
                            container.delete_link(link.index)?;
                        }
                        Ok(())
                    })(),
                ),
                Undo::DeleteQdiscs { name } => (
                    "delete qdiscs",
                    (|| {
                        if let Some(link) = container.link_by_name(&name)? {
                            container.delete_qdiscs(link.index)?;
                        }
                        Ok(())
                    })(),
                ),
                Undo::Registration => (
                    "remove service registration",
                    ctx.store().and_then(|store| {
                        crate::discovery::withdraw(store, &ctx.keys, container_id).map(|_| ())
                    }),
                ),
                Undo::DhcpRelease {
                    socket,
                    payload,
                    server,
                } => (
                    "release DHCP lease",
                    // A unicast would wait for ARP, and the interface is
                    // deleted by the next undo step, dropping it; a
                    // broadcast leaves at once (servers match a release by
                    // client id and ciaddr), and the unicast follows for
                    // servers beyond a relay.
                    crate::dhcp::wire::send(&socket, std::net::Ipv4Addr::BROADCAST, &payload)
                        .and_then(|()| crate::dhcp::wire::send(&socket, server, &payload)),
                ),
                Undo::StopDhcpClient { pid } => (
                    "stop udhcpc",
                    crate::dhcp::external::stop(pid, container_id),
                ),
                Undo::RestoreRecord { key, previous } => (
                    "restore record",
                    ctx.store().and_then(|store| {
                        let op = match previous {
                            Some(text) => store::Op::Put(key, text),
                            None => store::Op::Delete(key),
                        };
                        store
                            .transaction(&[], &[op])
                            .map(|_| ())
                            .map_err(Into::into)
                    }),
                ),
                Undo::Claim(claim) => (
                    "release address",
                    ctx.store().and_then(|store| {
                        ipam::undo_claim(store, container_id, &claim).map_err(Into::into)
                    }),
                ),
            };
            if let Err(e) = result {
                ctx.logger.log(
                    Level::Error,
                    "rollback",
                    &[
                        ("container", container_id),
                        ("step", what),
                        ("error", &format!("{e:#}")),
                    ],
                );
            }
        }
    }
}

/// The sockets of one attach: the host's namespace (where the parent lives)
/// and the container's.
pub struct Sockets {
    pub host: Netlink,
    pub container: Netlink,
    /// The container's namespace, kept open for IFLA_NET_NS_FD.
    pub netns: File,
    /// Step timings, logged with `--debug`.
    pub timings: Timings,
}

/// Milliseconds spent in each step of an attach, for the debug log.
pub struct Timings {
    last: Instant,
    steps: Vec<(&'static str, String)>,
}

impl Timings {
    pub fn start() -> Timings {
        Timings {
            last: Instant::now(),
            steps: Vec::new(),
        }
    }

    /// Records the time since the previous step under `step`.
    pub fn step(&mut self, step: &'static str) {
        let now = Instant::now();
        self.steps.push((
            step,
            format!("{:.2}", (now - self.last).as_secs_f64() * 1000.0),
        ));
        self.last = now;
    }

    fn fields(&self) -> Vec<(&str, &str)> {
        self.steps.iter().map(|(k, v)| (*k, v.as_str())).collect()
    }
}

/// What validation found on the host, for the setup to use.
#[derive(Debug, Clone)]
pub struct HostFacts {
    /// The host's interface the network uses.
    pub parent: crate::netlink::Link,
    /// The VLAN network, for VLAN requests.
    pub vlan: Option<crate::vlan::VlanNetwork>,
}

/// A network type: everything it can check before changing anything, then
/// the setup, registering an undo for each change.
pub trait Driver {
    /// Checks the request against the host (parent interface, MTU) and the
    /// store (the network it names), changing nothing.
    fn validate(&self, ctx: &Context, host: &mut Netlink) -> Result<HostFacts>;
    /// Builds the container's interface.
    fn setup(
        &self,
        ctx: &Context,
        target: &Target,
        facts: &HostFacts,
        sockets: &mut Sockets,
        undo: &mut Rollback,
    ) -> Result<Attached>;
}

fn driver_for(request: &NetworkRequest) -> Box<dyn Driver + '_> {
    match &request.network {
        Network::Flat(flat) => Box::new(FlatDriver { request, flat }),
        Network::Dhcp(dhcp) => Box::new(dhcp::DhcpDriver { request, dhcp }),
        Network::Vlan(vlan) => Box::new(VlanDriver { request, vlan }),
    }
}

/// Refuses to run without the privileges the setup needs, naming them
/// (instead of a later, cryptic EPERM from netlink or setns).
pub fn check_privileges() -> Result<()> {
    use caps::{CapSet, Capability};
    let mut missing = Vec::new();
    for (cap, why) in [
        (Capability::CAP_NET_ADMIN, "create and configure interfaces"),
        (
            Capability::CAP_SYS_ADMIN,
            "enter the container's network namespace",
        ),
    ] {
        if !caps::has_cap(None, CapSet::Effective, cap).unwrap_or(false) {
            missing.push(format!("{cap} (to {why})"));
        }
    }
    if !missing.is_empty() {
        bail!(
            "missing privileges: {}; run the hook as root",
            missing.join(", ")
        );
    }
    Ok(())
}

fn namespace_id(path: &Path) -> std::io::Result<(u64, u64)> {
    let meta = std::fs::metadata(path)?;
    Ok((meta.dev(), meta.ino()))
}

/// Refuses a process that shares the hook's own network namespace: giving
/// it an interface would reconfigure the host.
pub fn check_own_netns(target: &Target) -> Result<()> {
    let theirs = namespace_id(&target.netns_path()).with_context(|| {
        format!(
            "process {} not found (is the container running?)",
            target.pid
        )
    })?;
    let ours = namespace_id(Path::new("/proc/self/ns/net"))?;
    if theirs == ours {
        bail!("the container shares the host's network namespace; give it its own (runc: a \"network\" entry in linux.namespaces; docker: --net none)");
    }
    // The machine's initial namespace (pid 1's) never belongs to a container,
    // even when the hook itself runs elsewhere (inside a lab host, say).
    if let Ok(initial) = namespace_id(Path::new("/proc/1/ns/net")) {
        if theirs == initial {
            bail!("process {} is in the machine's initial network namespace; refusing to configure it", target.pid);
        }
    }
    Ok(())
}

/// Attaches `request` to the container, all or nothing: on any failure
/// every change made so far is undone before the error is returned.
pub fn attach(ctx: &Context, request: &NetworkRequest, target: &Target) -> Result<Attached> {
    let started = Instant::now();
    let result = attach_inner(ctx, request, target);
    let duration = format!("{:.1}", started.elapsed().as_secs_f64() * 1000.0);
    // Failures are logged once, with their whole chain, by the caller.
    if let Ok(attached) = &result {
        ctx.logger.log(
            Level::Info,
            "attach",
            &[
                ("container", &target.container_id),
                ("type", request.network_type().as_str()),
                ("address", &attached.address),
                ("interface", &attached.ifname),
                ("mac", &attached.mac),
                ("parent", &attached.parent),
                ("pid", &target.pid.to_string()),
                ("duration_ms", &duration),
            ],
        );
    }
    result
}

fn attach_inner(ctx: &Context, request: &NetworkRequest, target: &Target) -> Result<Attached> {
    let mut timings = Timings::start();
    check_privileges()?;
    check_own_netns(target)?;
    let driver = driver_for(request);
    let mut host = Netlink::open().context("open netlink socket")?;
    let facts = driver.validate(ctx, &mut host)?;
    timings.step("validate_ms");

    let netns_path = target.netns_path();
    let netns =
        File::open(&netns_path).with_context(|| format!("open {}", netns_path.display()))?;
    let container = Netlink::open_in_netns_file(&netns, &netns_path.display().to_string())
        .context("open netlink socket in the container's namespace")?;
    timings.step("enter_netns_ms");
    let mut sockets = Sockets {
        host,
        container,
        netns,
        timings,
    };
    let mut undo = Rollback::default();
    // The service is registered once the address is known, and undone with
    // everything else; the registrar starts once the rest has worked.
    let result = driver
        .setup(ctx, target, &facts, &mut sockets, &mut undo)
        .and_then(|attached| {
            if let Some(discovery) = &request.discovery {
                register_service(ctx, discovery, target, attached.ip, &mut undo)?;
                crate::failpoint::check("start-registrar")?;
                crate::discovery::registrar::ensure_running(&ctx.config)
                    .context("start the registrar (macvlan daemon)")?;
                sockets.timings.step("register_ms");
            }
            Ok(attached)
        });
    match result {
        Ok(attached) => {
            if ctx.logger.debug_enabled() {
                let mut fields = vec![("container", target.container_id.as_str())];
                fields.extend(sockets.timings.fields());
                ctx.logger.log(Level::Debug, "attach-steps", &fields);
            }
            Ok(attached)
        }
        Err(e) => {
            undo.run(ctx, &target.container_id, &mut sockets.container);
            Err(e)
        }
    }
}

/// Records the service the container asked to have registered and makes
/// sure a registrar runs to publish it once its port answers.
fn register_service(
    ctx: &Context,
    discovery: &crate::request::DiscoveryRequest,
    target: &Target,
    ip: std::net::Ipv4Addr,
    undo: &mut Rollback,
) -> Result<()> {
    // The caller has put the hostname in if SERVICE was not given.
    let service = discovery.service_name(None)?;
    let registration = crate::discovery::Registration::new(
        &service,
        ip,
        discovery.port,
        &target.container_id,
        &ctx.host,
        target.pid,
    )?;
    crate::discovery::register(ctx.store()?, &ctx.keys, &registration)?;
    undo.push(Undo::Registration);
    crate::failpoint::check("after-register")?;
    Ok(())
}

/// `poststop`: the namespace and its devices are gone; mark the record
/// stopped (the address stays reserved for a restart) and withdraw its
/// service at once. Idempotent.
pub fn stopped(ctx: &Context, container_id: &str) -> Result<Option<FlatRecord>> {
    let started = Instant::now();
    crate::discovery::withdraw(ctx.store()?, &ctx.keys, container_id)
        .context("withdraw the service registration")?;
    let record =
        ipam::mark_stopped(ctx.store()?, &ctx.keys, container_id).context("mark record stopped")?;
    if let Some(record) = record
        .as_ref()
        .filter(|r| r.lease.is_some() || r.client_pid.is_some())
    {
        crate::dhcp::release_stopped(ctx, container_id, record)?;
    }
    if let Some(record) = &record {
        log_detach(ctx, container_id, record, record.state.as_str(), started);
    }
    Ok(record)
}

/// `macvlan detach --pid`: removes the interface from a running process's
/// namespace and releases its record and address.
pub fn detach(ctx: &Context, container_id: &str, pid: Option<u32>) -> Result<FlatRecord> {
    let started = Instant::now();
    let record = ipam::load_flat(ctx.store()?, &ctx.keys, container_id)?
        .with_context(|| format!("no network record for container {container_id}"))?;
    crate::discovery::withdraw(ctx.store()?, &ctx.keys, container_id)
        .context("withdraw the service registration")?;
    if let (Some(pid), Some(ifname)) = (pid.or(record.pid), &record.ifname) {
        let netns_path = PathBuf::from(format!("/proc/{pid}/ns/net"));
        if netns_path.exists() {
            check_privileges()?;
            let mut container = Netlink::open_in_netns(&netns_path)
                .context("open netlink socket in the container's namespace")?;
            if let Some(link) = container.link_by_name(ifname)? {
                let ours =
                    link.mac.map(|m| crate::netlink::format_mac(&m)) == Some(record.mac.clone());
                if ours {
                    container
                        .delete_link(link.index)
                        .with_context(|| format!("delete {ifname}"))?;
                }
            }
        }
    }
    crate::dhcp::give_back(ctx, container_id, &record)?;
    ipam::release_flat(ctx.store()?, &ctx.keys, container_id)?;
    log_detach(ctx, container_id, &record, "released", started);
    Ok(record)
}

/// The one structured line of a detach.
fn log_detach(
    ctx: &Context,
    container_id: &str,
    record: &FlatRecord,
    state: &str,
    started: Instant,
) {
    ctx.logger.log(
        Level::Info,
        "detach",
        &[
            ("container", container_id),
            ("type", record.network_type()),
            ("address", &record.ip),
            ("state", state),
            (
                "duration_ms",
                &format!("{:.1}", started.elapsed().as_secs_f64() * 1000.0),
            ),
        ],
    );
}

/// A stable, locally administered, unicast MAC derived from the container
/// id: a restarted container keeps its MAC, so neighbours' ARP caches and
/// DHCP servers keep recognising it.
pub fn stable_mac(container_id: &str) -> [u8; 6] {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(container_id.as_bytes());
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&digest[..6]);
    mac[0] = (mac[0] & 0b1111_1100) | 0b0000_0010;
    mac
}

/// `eth0`, or the next free `ethN` when the container already has an `eth0`.
pub fn free_interface_name(existing: &[String]) -> String {
    (0..)
        .map(|n| format!("eth{n}"))
        .find(|name| !existing.iter().any(|e| e == name))
        .expect("some ethN is free")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_is_stable_local_and_unicast() {
        let mac = stable_mac("container-1");
        assert_eq!(mac, stable_mac("container-1"));
        assert_ne!(mac, stable_mac("container-2"));
        assert_eq!(mac[0] & 0b11, 0b10);
    }

    #[test]
    fn picks_next_free_ethn() {
        assert_eq!(free_interface_name(&["lo".into()]), "eth0");
        assert_eq!(
            free_interface_name(&["lo".into(), "eth0".into(), "eth2".into()]),
            "eth1"
        );
    }
}
