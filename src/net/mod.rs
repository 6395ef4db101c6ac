//! Attaching and detaching a container's network: the steps common to every
//! network type (privileges, namespace checks, logging, rollback), with the
//! type-specific work behind the small [`Driver`] trait.

mod dhcp;
mod flat;
pub mod host_access;
pub mod ipv6;
mod macvlan;
mod named;
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
pub use named::NamedDriver;
pub use vlan::{ensure_sub_interface, gateway_device, vlan_gateway};

/// Everything an attach or detach needs from the host.
pub struct Context {
    pub config: Config,
    /// Opened on first use: shaping a container's own interface needs none.
    store: std::cell::OnceCell<Box<dyn Store>>,
    pub keys: Keys,
    pub logger: Logger,
    /// This host's name, recorded with every container for display.
    pub host: String,
    /// This host's identity, which decides whose a record is.
    pub host_id: String,
    /// The daemon does a hook's work ([`crate::oci::handoff`]): said in
    /// the attach and detach lines.
    pub by_daemon: bool,
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
        let host_id = crate::host::host_id(&config).context("find this host's id")?;
        Ok(Context {
            config,
            store: std::cell::OnceCell::new(),
            keys,
            logger,
            host,
            host_id,
            by_daemon: false,
        })
    }

    /// The store the configuration names, opened on first use and brought
    /// to this build's schema (one read when it is current).
    pub fn store(&self) -> Result<&dyn Store> {
        if let Some(store) = self.store.get() {
            return Ok(store.as_ref());
        }
        let store = store::open(&self.config)?;
        // Timed only in processes that serve metrics (never a hook).
        let store: Box<dyn Store> = if crate::metrics::enabled() {
            Box::new(crate::metrics::Metered(store))
        } else {
            store
        };
        let identity = crate::migrate::Identity {
            host_id: &self.host_id,
            host_name: &self.host,
            local: matches!(self.config.store, crate::config::StoreLocation::Sqlite(_)),
        };
        let notes = crate::migrate::ensure(store.as_ref(), &self.keys, &identity)
            .context("check the store's schema")?;
        for note in notes {
            self.logger.log(Level::Warn, "migrate", &[("note", &note)]);
        }
        Ok(self.store.get_or_init(|| store).as_ref())
    }

    /// Closes the store if it no longer reaches the store's files (see
    /// [`Store::still_current`]: a file replaced or damaged under a
    /// long-lived process), so that the next use opens it anew and meets
    /// what a new process would. For the daemon's contexts, before each use.
    pub fn refresh_store(&mut self) {
        if self.store.get().is_some_and(|store| !store.still_current()) {
            self.store = std::cell::OnceCell::new();
        }
    }

    /// Whether a record is this host's (by host id; records from before host
    /// ids by host name).
    pub fn owns(&self, record: &FlatRecord) -> bool {
        record.owned_by(&self.host_id, &self.host)
    }
}

/// The container being attached: its id and the process whose network
/// namespace receives the interface.
#[derive(Debug, Clone)]
pub struct Target {
    pub container_id: String,
    /// The container's init process; none for a CNI attachment, which
    /// names a namespace instead.
    pub pid: Option<u32>,
    /// The namespace: `/proc/<pid>/ns/net`, or the runtime's (CNI_NETNS).
    pub netns: PathBuf,
    /// The container's hostname (sent to DHCP servers as option 12).
    pub hostname: Option<String>,
    /// Where the container's /etc/resolv.conf is on the host, for DHCP
    /// networks that write their lease's resolvers into it.
    pub resolv: Option<crate::oci::resolv::Place>,
}

impl Target {
    /// The container whose init process is `pid`.
    pub fn process(container_id: &str, pid: u32) -> Target {
        Target {
            container_id: container_id.to_string(),
            pid: Some(pid),
            netns: PathBuf::from(format!("/proc/{pid}/ns/net")),
            hostname: None,
            resolv: None,
        }
    }

    pub fn netns_path(&self) -> PathBuf {
        self.netns.clone()
    }

    /// The process or the namespace, for messages and logs.
    pub fn describe(&self) -> String {
        match self.pid {
            Some(pid) => format!("process {pid}"),
            None => format!("namespace {}", self.netns.display()),
        }
    }
}

/// What an attach configured, for the log and the caller.
#[derive(Debug, Clone)]
pub struct Attached {
    pub ifname: String,
    /// CIDR form, both families joined by a comma.
    pub address: String,
    /// `None` on an IPv6-only network.
    pub ip: Option<std::net::Ipv4Addr>,
    pub ip6: Option<std::net::Ipv6Addr>,
    pub mac: String,
    pub parent: String,
    /// The host routes to the address (host access): the registrar can
    /// check the service from the host's own namespace.
    pub host_reachable: bool,
}

impl Attached {
    /// The addresses for the log: `192.0.2.10/24,2001:db8::a/64`.
    pub fn describe(
        v4: Option<crate::cidr::Ipv4Cidr>,
        v6: Option<crate::cidr::Ipv6Cidr>,
    ) -> String {
        v4.map(|a| a.to_string())
            .into_iter()
            .chain(v6.map(|a| a.to_string()))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// One setup step's undo, run in reverse order when a later step fails.
pub enum Undo {
    /// Delete the interface `name` inside the container's namespace.
    DeleteLink { name: String },
    /// Put the store back as it was before attachment `holder`'s address claim.
    Claim { claim: Box<Claim>, holder: String },
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
    /// Stop attachment `holder`'s external DHCP client (which releases its lease).
    StopDhcpClient { pid: u32, holder: String },
    /// Give a DHCPv6 lease back (RELEASE through the container's socket).
    Dhcp6Release {
        socket: std::net::UdpSocket,
        index: u32,
        payload: Vec<u8>,
    },
    /// Remove the host's /32 route to `address` through `device` (host access).
    DeleteHostRoute {
        address: std::net::Ipv4Addr,
        device: String,
    },
    /// Put the container's resolv.conf back as it was.
    RestoreResolv(crate::oci::resolv::Written),
    /// Put attachment `holder`'s record key back as it was (`None`:
    /// absent), with the address key of its lease.
    RestoreRecord {
        key: String,
        previous: Option<String>,
        holder: String,
    },
}

/// A claim whose outcome the store did not tell (`IpamError::Unknown`,
/// anywhere in `error`'s chain) is treated as made: its undo is registered
/// before the error goes up, so the rollback removes it if it was written.
pub(super) fn register_unknown_claim(error: &anyhow::Error, holder: &str, undo: &mut Rollback) {
    use crate::ipam::IpamError;
    let unknown = error.chain().find_map(|cause| {
        let ipam = cause.downcast_ref::<IpamError>().or_else(|| match cause
            .downcast_ref::<crate::network::NetworkError>(
        ) {
            Some(crate::network::NetworkError::Ipam(inner)) => Some(inner),
            _ => None,
        });
        match ipam {
            Some(IpamError::Unknown { claim, .. }) => Some(claim.clone()),
            _ => None,
        }
    });
    if let Some(claim) = unknown {
        undo.push(Undo::Claim {
            claim,
            holder: holder.to_string(),
        });
    }
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
                Undo::Dhcp6Release {
                    socket,
                    index,
                    payload,
                } => (
                    "release DHCPv6 lease",
                    crate::dhcp::wire6::send(&socket, index, &payload),
                ),
                Undo::StopDhcpClient { pid, holder } => {
                    ("stop udhcpc", crate::dhcp::external::stop(pid, &holder))
                }
                Undo::DeleteHostRoute { address, device } => (
                    "delete host route",
                    host_access::delete_route(address, &device),
                ),
                Undo::RestoreRecord {
                    key,
                    previous,
                    holder,
                } => (
                    "restore record",
                    ctx.store().and_then(|store| {
                        ipam::restore_record(store, &ctx.keys, &holder, &key, previous.as_deref())
                            .map_err(Into::into)
                    }),
                ),
                Undo::RestoreResolv(written) => {
                    ("restore resolv.conf", crate::oci::resolv::restore(&written))
                }
                Undo::Claim { claim, holder } => (
                    "release address",
                    ctx.store().and_then(|store| {
                        ipam::undo_claim(store, &holder, &claim).map_err(Into::into)
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
    /// The operator's network, for requests that name one…
    pub network: Option<crate::network::Network>,
    /// …and its record as read, which the address claim compares.
    pub network_record: Option<String>,
    /// This host's own addresses on the parent: never a container's.
    pub reserved: Vec<std::net::Ipv4Addr>,
    pub reserved6: Vec<std::net::Ipv6Addr>,
    /// Every network, for ad-hoc requests: their addresses must not
    /// collide with what a network hands out.
    pub networks: Vec<crate::network::Network>,
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
        Network::Dhcp(dhcp) => Box::new(dhcp::DhcpDriver {
            request,
            dhcp,
            ipv6: &ipv6::Plan::Off,
        }),
        Network::Named(named) => Box::new(NamedDriver { request, named }),
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

/// Opens the target's network namespace, refusing one the hook shares (giving
/// it an interface would reconfigure the host) and the machine's initial one.
pub fn open_target_netns(target: &Target) -> Result<File> {
    let path = target.netns_path();
    let netns = File::open(&path).with_context(|| {
        format!(
            "{} not found (is the container running?)",
            target.describe()
        )
    })?;
    // Judged on the descriptor that will be used, not on the path: the pid
    // could be reused between a stat and an open.
    let meta = netns
        .metadata()
        .with_context(|| format!("stat {}", path.display()))?;
    let theirs = (meta.dev(), meta.ino());
    let ours = namespace_id(Path::new("/proc/self/ns/net"))?;
    if theirs == ours {
        bail!("the container shares the host's network namespace; give it its own (runc: a \"network\" entry in linux.namespaces; docker: --net none)");
    }
    // The machine's initial namespace (pid 1's) never belongs to a container,
    // even when the hook itself runs elsewhere (inside a lab host, say).
    if let Ok(initial) = namespace_id(Path::new("/proc/1/ns/net")) {
        if theirs == initial {
            bail!(
                "{} is in the machine's initial network namespace; refusing to configure it",
                target.describe()
            );
        }
    }
    Ok(netns)
}

/// Attaches `request` to the container — its first network and every
/// further one of `NETWORKS`, as `eth0`, `eth1`… — all or nothing: every
/// request is validated before anything changes, and on any failure every
/// change made so far, in every attachment, is undone before the error is
/// returned.
pub fn attach(ctx: &Context, request: &NetworkRequest, target: &Target) -> Result<Vec<Attached>> {
    let started = Instant::now();
    let attachments = request.attachments();
    let mut step = String::new();
    let result = attach_inner(ctx, request, &attachments, target, &mut step);
    count(
        ctx,
        crate::tally::Operation::Attach,
        started,
        result.as_ref().err().map(|_| step.as_str()),
    );
    let duration = format!("{:.1}", started.elapsed().as_secs_f64() * 1000.0);
    // Failures are logged once, with their whole chain, by the caller.
    if let Ok(all) = &result {
        for (attached, attachment) in all.iter().zip(&attachments) {
            let network = match &attachment.network {
                Network::Named(named) => named.name.as_str(),
                _ => "",
            };
            let mut fields = vec![
                ("container", target.container_id.as_str()),
                ("type", attachment.network_type().as_str()),
            ];
            if !network.is_empty() {
                fields.push(("network", network));
            }
            let pid = target.pid.map(|p| p.to_string()).unwrap_or_default();
            fields.extend([
                ("address", attached.address.as_str()),
                ("interface", attached.ifname.as_str()),
                ("mac", attached.mac.as_str()),
                ("parent", attached.parent.as_str()),
                ("pid", pid.as_str()),
                ("duration_ms", duration.as_str()),
            ]);
            if ctx.by_daemon {
                fields.push(("by", "daemon"));
            }
            ctx.logger.log(Level::Info, "attach", &fields);
        }
    }
    result
}

/// Counts an attach, poststop or detach in this host's tally (its
/// duration, and the step that failed); a tally that cannot be written is
/// logged, never the operation's failure.
pub fn count(
    ctx: &Context,
    operation: crate::tally::Operation,
    started: Instant,
    failed: Option<&str>,
) {
    let path = crate::tally::path(&ctx.config);
    if let Err(e) = crate::tally::record(&path, operation, started.elapsed(), failed) {
        ctx.logger.log(
            Level::Warn,
            "tally",
            &[
                ("file", &path.display().to_string()),
                ("error", &e.to_string()),
            ],
        );
    }
}

/// `step` names what was being done when an error is returned: a step
/// of the attach, or `setup_after_<step>` within a network type's setup.
fn attach_inner(
    ctx: &Context,
    request: &NetworkRequest,
    attachments: &[NetworkRequest],
    target: &Target,
    step: &mut String,
) -> Result<Vec<Attached>> {
    let mut timings = Timings::start();
    let mut begin = |name: &str| {
        step.clear();
        step.push_str(name);
    };
    begin("privileges");
    check_privileges()?;
    begin("namespace");
    let netns = open_target_netns(target)?;
    timings.step("open_netns_ms");
    begin("store");
    ctx.store()?;
    timings.step("store_open_ms");
    begin("validate");
    let drivers: Vec<Box<dyn Driver + '_>> = attachments.iter().map(driver_for).collect();
    let mut host = Netlink::open().context("open netlink socket")?;
    let facts = drivers
        .iter()
        .map(|driver| driver.validate(ctx, &mut host))
        .collect::<Result<Vec<HostFacts>>>()?;
    timings.step("validate_ms");

    begin("enter_netns");
    let netns_path = target.netns_path();
    let container = crate::netns::on_this_thread(&netns, Netlink::open)
        .with_context(|| format!("enter {}", netns_path.display()))
        .and_then(|socket| socket.map_err(anyhow::Error::from))
        .context("open netlink socket in the container's namespace")?;
    timings.step("enter_netns_ms");
    let setup_from = timings.steps.len();
    let mut sockets = Sockets {
        host,
        container,
        netns,
        timings,
    };
    let mut undo = Rollback::default();
    let result = (|| {
        let mut all = Vec::new();
        for ((driver, facts), attachment) in drivers.iter().zip(&facts).zip(attachments) {
            // Each attachment's records and address keys are its own:
            // `<id>` for the first, `<id>/<n>` for further ones.
            let each = Target {
                container_id: attachment.record_id(),
                ..target.clone()
            };
            let attached = driver.setup(ctx, &each, facts, &mut sockets, &mut undo);
            let attached = match (&attachment.network, attachments.len()) {
                (Network::Named(named), n) if n > 1 => attached.with_context(|| {
                    format!("network {} (attachment {})", named.name, attachment.slot)
                })?,
                _ => attached?,
            };
            all.push(attached);
        }
        // The service is registered once the address is known, and undone
        // with everything else; the registrar starts once the rest has worked.
        if let (Some(discovery), Some(first)) = (&request.discovery, all.first()) {
            register_service(ctx, discovery, target, first, &mut undo)?;
            crate::failpoint::check("start-registrar")?;
            crate::daemon::ensure_running(&ctx.config)
                .context("start the registrar (macvlan daemon)")?;
            sockets.timings.step("register_ms");
        }
        Ok(all)
    })();
    match result {
        Ok(all) => {
            if ctx.logger.debug_enabled() {
                let mut fields = vec![("container", target.container_id.as_str())];
                fields.extend(sockets.timings.fields());
                ctx.logger.log(Level::Debug, "attach-steps", &fields);
            }
            Ok(all)
        }
        Err(e) => {
            // The last step the setup finished tells where it failed.
            *step = match sockets
                .timings
                .steps
                .get(setup_from..)
                .and_then(|s| s.last())
            {
                Some((done, _)) => format!("setup_after_{}", done.trim_end_matches("_ms")),
                None => "setup".to_string(),
            };
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
    attached: &Attached,
    undo: &mut Rollback,
) -> Result<()> {
    // The caller has put the hostname in if SERVICE was not given.
    let service = discovery.service_name(None)?;
    let mut registration = crate::discovery::Registration::new(
        &service,
        (attached.ip, attached.ip6),
        discovery.port,
        &target.container_id,
        (&ctx.host, &ctx.host_id),
        (target.pid, &target.netns),
    )?;
    registration.from_host = attached.host_reachable;
    crate::discovery::register(ctx.store()?, &ctx.keys, &registration)?;
    undo.push(Undo::Registration);
    crate::failpoint::check("after-register")?;
    Ok(())
}

/// `poststop`: the namespace and its devices are gone; mark the records of
/// every attachment stopped (the addresses stay reserved for a restart)
/// and withdraw the service at once. Idempotent. Returns the first
/// attachment's record.
pub fn stopped(ctx: &Context, container_id: &str) -> Result<Option<FlatRecord>> {
    let started = Instant::now();
    let mut step = "store";
    let result = stopped_inner(ctx, container_id, started, &mut step);
    let failed = result.as_ref().err().map(|_| step);
    count(ctx, crate::tally::Operation::Poststop, started, failed);
    result
}

fn stopped_inner(
    ctx: &Context,
    container_id: &str,
    started: Instant,
    step: &mut &'static str,
) -> Result<Option<FlatRecord>> {
    let store = ctx.store()?;
    *step = "withdraw";
    crate::discovery::withdraw(store, &ctx.keys, container_id)
        .context("withdraw the service registration")?;
    let mut first = None;
    for slot in 0..=crate::request::MAX_NETWORKS {
        let id = crate::request::record_id(container_id, slot);
        *step = "mark_stopped";
        let record = ipam::mark_stopped(store, &ctx.keys, &id).context("mark record stopped")?;
        let Some(record) = record else { break };
        crate::failpoint::check("poststop-marked")?;
        host_access::remove_route(ctx, &id, &record);
        *step = "restore_resolv";
        put_back_resolv(ctx, &id, &record)?;
        if record.lease.is_some()
            || record.lease6.is_some()
            || record.client_pid.is_some()
            || record.lease_pending
        {
            *step = "dhcp_release";
            crate::dhcp::release_stopped(ctx, &id, &record)?;
        }
        log_detach(ctx, &id, &record, record.state.as_str(), started);
        first.get_or_insert(record);
    }
    Ok(first)
}

/// Puts back the resolv.conf a `--dhcp-dns` attachment wrote, and forgets
/// it in the record.
fn put_back_resolv(ctx: &Context, id: &str, record: &FlatRecord) -> Result<()> {
    let Some(written) = &record.resolv_conf else {
        return Ok(());
    };
    crate::oci::resolv::restore(written)?;
    ipam::update_flat(ctx.store()?, &ctx.keys, id, |r| {
        r.resolv_conf.take().is_some()
    })?;
    Ok(())
}

/// `macvlan detach`: removes the interfaces from a running process's
/// namespace and releases the records and addresses of every attachment
/// of the container. Returns the records released.
pub fn detach(ctx: &Context, container_id: &str, pid: Option<u32>) -> Result<Vec<FlatRecord>> {
    let started = Instant::now();
    let result = detach_all(ctx, container_id, pid);
    // detach_one's errors say which step; the tally keeps one label.
    let failed = result.as_ref().err().map(|_| "detach");
    count(ctx, crate::tally::Operation::Detach, started, failed);
    result
}

fn detach_all(ctx: &Context, container_id: &str, pid: Option<u32>) -> Result<Vec<FlatRecord>> {
    let container_id = crate::request::container_of(container_id);
    let mut released = Vec::new();
    crate::discovery::withdraw(ctx.store()?, &ctx.keys, container_id)
        .context("withdraw the service registration")?;
    for slot in 0..=crate::request::MAX_NETWORKS {
        let id = crate::request::record_id(container_id, slot);
        match detach_one(
            ctx,
            &id,
            pid.map(|p| PathBuf::from(format!("/proc/{p}/ns/net"))),
        )? {
            Some(record) => released.push(record),
            None if slot == 0 => {
                anyhow::bail!("no network record for container {container_id}")
            }
            None => break,
        }
    }
    Ok(released)
}

/// Removes one attachment: its interface from the namespace at `netns`
/// (else the record's process's or CNI namespace, if it still exists),
/// its host route, its leases, its record and addresses. `Ok(None)`: no
/// such record.
pub fn detach_one(ctx: &Context, id: &str, netns: Option<PathBuf>) -> Result<Option<FlatRecord>> {
    let started = Instant::now();
    let Some(record) = ipam::load_flat(ctx.store()?, &ctx.keys, id)? else {
        return Ok(None);
    };
    let netns = netns
        .or_else(|| {
            record
                .pid
                .map(|p| PathBuf::from(format!("/proc/{p}/ns/net")))
        })
        .or_else(|| record.cni.as_ref().map(|c| PathBuf::from(&c.netns)));
    if let (Some(netns_path), Some(ifname)) = (netns, &record.ifname) {
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
                    crate::failpoint::check("detach-unlinked")?;
                }
            }
        }
    }
    host_access::remove_route(ctx, id, &record);
    put_back_resolv(ctx, id, &record)?;
    crate::dhcp::give_back(ctx, id, &record)?;
    crate::failpoint::check("detach-released")?;
    ipam::release_flat(ctx.store()?, &ctx.keys, id)?;
    log_detach(ctx, id, &record, "released", started);
    Ok(Some(record))
}

/// The one structured line of a detach.
fn log_detach(
    ctx: &Context,
    container_id: &str,
    record: &FlatRecord,
    state: &str,
    started: Instant,
) {
    let duration = format!("{:.1}", started.elapsed().as_secs_f64() * 1000.0);
    let mut fields = vec![("container", container_id), ("type", record.network_type())];
    if let Some(network) = &record.network {
        fields.push(("network", network));
    }
    fields.extend([
        ("address", record.ip.as_str()),
        ("state", state),
        ("duration_ms", duration.as_str()),
    ]);
    if ctx.by_daemon {
        fields.push(("by", "daemon"));
    }
    ctx.logger.log(Level::Info, "detach", &fields);
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
