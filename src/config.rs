//! The configuration file (`/etc/macvlan-runc/config.toml`) and the host
//! policy it carries.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::cidr::Ipv4Cidr;

pub const DEFAULT_CONFIG_PATH: &str = "/etc/macvlan-runc/config.toml";
/// Where the daemon keeps its lock, pid file and hooks socket by default.
pub const DEFAULT_RUNTIME_DIR: &str = "/run/macvlan-runc";
pub const DEFAULT_STORE: &str = "sqlite:///var/lib/macvlan-runc/state.db";
pub const DEFAULT_LOG: &str = "/var/log/macvlan-runc.log";

/// Which store holds the records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// Embedded SQLite file: one host, no server.
    Sqlite(PathBuf),
    /// An etcd cluster: its client endpoints as `host:port`.
    Etcd(Vec<String>),
}

/// How to reach etcd (`[etcd]`): bounds, TLS and authentication.
#[derive(Clone, PartialEq, Eq)]
pub struct EtcdConfig {
    /// A request (and connecting) fails after this long.
    pub timeout: std::time::Duration,
    /// CA bundle that signed the servers' certificates; enables TLS.
    pub ca: Option<PathBuf>,
    /// Client certificate and key (PEM), for clusters that require them.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub user: Option<String>,
    password: Option<String>,
    pub password_file: Option<PathBuf>,
}

impl Default for EtcdConfig {
    fn default() -> Self {
        EtcdConfig {
            timeout: std::time::Duration::from_secs(5),
            ca: None,
            cert: None,
            key: None,
            user: None,
            password: None,
            password_file: None,
        }
    }
}

// Never print the password, not even in debug output.
impl std::fmt::Debug for EtcdConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdConfig")
            .field("timeout", &self.timeout)
            .field("ca", &self.ca)
            .field("cert", &self.cert)
            .field("key", &self.key)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("password_file", &self.password_file)
            .finish()
    }
}

impl EtcdConfig {
    pub fn tls_enabled(&self) -> bool {
        self.ca.is_some() || self.cert.is_some()
    }

    /// The password, from the config or (first line of) `password_file`.
    pub fn password(&self) -> std::io::Result<String> {
        match (&self.password, &self.password_file) {
            (Some(password), _) => Ok(password.clone()),
            (None, Some(path)) => Ok(std::fs::read_to_string(path)?
                .lines()
                .next()
                .unwrap_or_default()
                .to_string()),
            (None, None) => Ok(String::new()),
        }
    }
}

/// Where attach/detach lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    File(PathBuf),
    /// The local syslog socket (`/dev/log`), which journald also serves.
    Syslog,
    Stderr,
}

/// What containers on this host may ask for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Policy {
    /// Parent interfaces containers may use; empty allows any.
    pub allowed_parents: Vec<String>,
    /// Subnets container addresses must lie in; empty allows any.
    pub allowed_subnets: Vec<Ipv4Cidr>,
    /// The IPv6 ones of the same list. Once the list is given, an ad-hoc
    /// IPv6 address must lie in one of these (none given: none allowed).
    pub allowed_subnets6: Vec<crate::cidr::Ipv6Cidr>,
    /// Whether environment variables (not only annotations) may request a network.
    pub allow_env: bool,
    /// Whether containers may describe a LAN themselves (the thesis's
    /// `TYPE=flat|dhcp HOSTIF= IP= GW=`) instead of naming a network.
    pub allow_adhoc: bool,
    /// The networks this host serves; empty serves every network in the store.
    pub networks: Vec<String>,
}

impl Policy {
    pub fn parent_allowed(&self, parent: &str) -> bool {
        self.allowed_parents.is_empty() || self.allowed_parents.iter().any(|p| p == parent)
    }

    pub fn network_allowed(&self, name: &str) -> bool {
        self.networks.is_empty() || self.networks.iter().any(|n| n == name)
    }

    pub fn subnet6_allowed(&self, address: crate::cidr::Ipv6Cidr) -> bool {
        (self.allowed_subnets.is_empty() && self.allowed_subnets6.is_empty())
            || self.allowed_subnets6.iter().any(|allowed| {
                allowed.contains(address.address) && allowed.prefix <= address.prefix
            })
    }

    pub fn subnet_allowed(&self, address: Ipv4Cidr) -> bool {
        self.allowed_subnets.is_empty()
            || self.allowed_subnets.iter().any(|allowed| {
                allowed.contains(address.address) && allowed.prefix <= address.prefix
            })
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub store: StoreLocation,
    /// Key prefix in the store, `/macvlan` by default.
    pub store_prefix: String,
    /// The real runc, for the runtime wrapper.
    pub runtime: String,
    pub log: LogTarget,
    pub debug: bool,
    pub policy: Policy,
    pub gc: GcPolicy,
    /// This host's name in records, for display (default: the kernel's hostname).
    pub host_name: Option<String>,
    /// This host's identity in records (default: /etc/machine-id, else a
    /// UUID kept in `host-id` beside the SQLite state, or in
    /// /var/lib/macvlan-runc).
    pub host_id: Option<String>,
    pub daemon: DaemonConfig,
    pub discovery: DiscoveryConfig,
    pub dhcp: DhcpConfig,
    pub ipv6: Ipv6Config,
    pub etcd: EtcdConfig,
    /// The file this was loaded from, passed on to the daemon a hook starts.
    pub source: Option<PathBuf>,
}

/// `macvlan daemon`: the host's background work (registrar).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonConfig {
    /// Holds the daemon's lock and pid files.
    pub runtime_dir: PathBuf,
    /// A daemon started on demand by a hook exits after this long with
    /// nothing to do (a daemon started by systemd keeps running).
    pub idle_exit: std::time::Duration,
    /// Whether the daemon takes hooks over from the hook processes
    /// (`<runtime_dir>/hooks.sock`, issue 17): its store and code are warm.
    pub serve_hooks: bool,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            runtime_dir: PathBuf::from(DEFAULT_RUNTIME_DIR),
            idle_exit: std::time::Duration::from_secs(60),
            serve_hooks: true,
        }
    }
}

/// Service registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveryConfig {
    /// An endpoint vanishes this long after its registrar stops renewing it.
    pub ttl: std::time::Duration,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        DiscoveryConfig {
            ttl: std::time::Duration::from_secs(10),
        }
    }
}

/// IPv6 address configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipv6Config {
    /// A hook on a SLAAC network fails when no router advertisement has
    /// given an address and a default route within this long.
    pub slaac_wait: std::time::Duration,
}

impl Default for Ipv6Config {
    fn default() -> Self {
        Ipv6Config {
            slaac_wait: std::time::Duration::from_secs(10),
        }
    }
}

/// The built-in DHCP client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpConfig {
    /// A hook fails when no server has given an address within this long.
    pub timeout: std::time::Duration,
    /// How long to listen for an answer to the ARP probe of an offered
    /// address (RFC 5227); zero skips the probe.
    pub probe_wait: std::time::Duration,
    /// Which client gets and keeps the lease.
    pub client: DhcpClient,
    /// Leases shorter than this are refused (a server on the LAN is not
    /// trusted to keep a container renewing every second).
    pub min_lease: std::time::Duration,
    /// The subnet-mask prefix lengths a lease may have.
    pub prefix_lengths: std::ops::RangeInclusive<u8>,
}

/// The DHCP client of DHCP networks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DhcpClient {
    /// The built-in client; `macvlan daemon` renews.
    Builtin,
    /// busybox udhcpc (the program at this path: busybox itself or a
    /// udhcpc), run in the container's namespace, renewing by itself.
    Udhcpc(PathBuf),
}

impl Default for DhcpConfig {
    fn default() -> Self {
        DhcpConfig {
            timeout: std::time::Duration::from_secs(10),
            probe_wait: std::time::Duration::from_millis(200),
            client: DhcpClient::Builtin,
            min_lease: std::time::Duration::from_secs(60),
            prefix_lengths: 8..=30,
        }
    }
}

/// How `macvlan gc` decides that a container is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcPolicy {
    /// A container exists while a directory named after its id exists in
    /// one of these (the engines' own state).
    pub container_dirs: Vec<PathBuf>,
    /// A stopped container's address is released after this long even if
    /// the container still exists; `None` keeps it while the container exists.
    pub stopped_retention: Option<std::time::Duration>,
}

/// Where the engines keep one directory per container that exists.
pub const DEFAULT_CONTAINER_DIRS: [&str; 6] = [
    "/run/runc",
    "/run/docker/runtime-runc/moby",
    "/var/lib/docker/containers",
    "/var/lib/containers/storage/overlay-containers",
    "/run/containerd/runc/default",
    "/run/containerd/runc/k8s.io",
];

impl Default for GcPolicy {
    fn default() -> Self {
        GcPolicy {
            container_dirs: DEFAULT_CONTAINER_DIRS.iter().map(PathBuf::from).collect(),
            stopped_retention: None,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            store: parse_store(DEFAULT_STORE).expect("default store"),
            store_prefix: "/macvlan".into(),
            runtime: "runc".into(),
            log: LogTarget::File(DEFAULT_LOG.into()),
            debug: false,
            policy: Policy {
                allow_env: true,
                ..Policy::default()
            },
            gc: GcPolicy::default(),
            host_name: None,
            host_id: None,
            daemon: DaemonConfig::default(),
            discovery: DiscoveryConfig::default(),
            dhcp: DhcpConfig::default(),
            ipv6: Ipv6Config::default(),
            etcd: EtcdConfig::default(),
            source: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    store: Option<String>,
    store_prefix: Option<String>,
    runtime: Option<String>,
    log: Option<String>,
    debug: Option<bool>,
    policy: Option<RawPolicy>,
    gc: Option<RawGc>,
    host_name: Option<String>,
    host_id: Option<String>,
    daemon: Option<RawDaemon>,
    discovery: Option<RawDiscovery>,
    dhcp: Option<RawDhcp>,
    ipv6: Option<RawIpv6>,
    etcd: Option<RawEtcd>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDhcp {
    timeout: Option<String>,
    probe_wait: Option<String>,
    client: Option<String>,
    udhcpc: Option<String>,
    min_lease: Option<String>,
    prefix_lengths: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIpv6 {
    slaac_wait: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEtcd {
    timeout: Option<String>,
    ca: Option<String>,
    cert: Option<String>,
    key: Option<String>,
    user: Option<String>,
    password: Option<String>,
    password_file: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDaemon {
    runtime_dir: Option<String>,
    idle_exit: Option<String>,
    serve_hooks: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDiscovery {
    ttl: Option<String>,
}

fn parse_duration(key: &str, text: &str, example: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("{key} {text:?}: {e}; expected a duration like \"{example}\""))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGc {
    container_dirs: Option<Vec<String>>,
    stopped_retention: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    allowed_parents: Option<Vec<String>>,
    allowed_subnets: Option<Vec<String>>,
    allow_env: Option<bool>,
    allow_adhoc: Option<bool>,
    networks: Option<Vec<String>>,
}

fn parse_store(text: &str) -> Result<StoreLocation, String> {
    if let Some(path) = text.strip_prefix("sqlite://") {
        if !path.starts_with('/') {
            return Err(format!(
                "store {text:?}: expected an absolute path, like sqlite:///var/lib/macvlan-runc/state.db"
            ));
        }
        return Ok(StoreLocation::Sqlite(PathBuf::from(path)));
    }
    if let Some(list) = text.strip_prefix("etcd://") {
        let endpoints: Vec<String> = list.split(',').map(|e| e.trim().to_string()).collect();
        for endpoint in &endpoints {
            let valid = endpoint.rsplit_once(':').is_some_and(|(host, port)| {
                !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
            });
            if !valid {
                return Err(format!(
                    "store {text:?}: {endpoint:?} is not host:port; expected etcd://10.0.0.1:2379,10.0.0.2:2379"
                ));
            }
        }
        return Ok(StoreLocation::Etcd(endpoints));
    }
    Err(format!(
        "store {text:?}: expected sqlite:///absolute/path/state.db or etcd://host:port[,host:port...]"
    ))
}

fn parse_log(text: &str) -> Result<LogTarget, String> {
    match text {
        "syslog" | "journald" => Ok(LogTarget::Syslog),
        "stderr" => Ok(LogTarget::Stderr),
        path if path.starts_with('/') => Ok(LogTarget::File(path.into())),
        other => Err(format!(
            "log {other:?}: expected an absolute file path, \"syslog\", \"journald\" or \"stderr\""
        )),
    }
}

impl Config {
    /// Loads `path`. A missing file at the default location means defaults;
    /// a missing file that was named explicitly is an error.
    pub fn load(path: &Path, explicit: bool) -> Result<Config, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
                return Ok(Config::default())
            }
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.display().to_string(),
                    source,
                })
            }
        };
        let mut config = Config::parse(&text).map_err(|message| ConfigError::Invalid {
            path: path.display().to_string(),
            message,
        })?;
        config.source = Some(path.to_path_buf());
        Ok(config)
    }

    pub fn parse(text: &str) -> Result<Config, String> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| e.message().to_string())?;
        let mut config = Config::default();
        if let Some(store) = raw.store {
            config.store = parse_store(&store)?;
        }
        if let Some(prefix) = raw.store_prefix {
            if !prefix.starts_with('/') || prefix.ends_with('/') {
                return Err(format!(
                    "store_prefix {prefix:?}: expected a key prefix like /macvlan"
                ));
            }
            config.store_prefix = prefix;
        }
        if let Some(runtime) = raw.runtime {
            config.runtime = runtime;
        }
        if let Some(log) = raw.log {
            config.log = parse_log(&log)?;
        }
        config.debug = raw.debug.unwrap_or(false);
        if let Some(policy) = raw.policy {
            if let Some(parents) = policy.allowed_parents {
                config.policy.allowed_parents = parents;
            }
            if let Some(subnets) = policy.allowed_subnets {
                let (v6, v4): (Vec<&String>, Vec<&String>) =
                    subnets.iter().partition(|s| s.contains(':'));
                config.policy.allowed_subnets = v4
                    .iter()
                    .map(|s| {
                        s.parse::<Ipv4Cidr>().map(Ipv4Cidr::subnet).map_err(|_| {
                            format!("policy.allowed_subnets: {s:?} is not a CIDR like 192.0.2.0/24 or 2001:db8::/64")
                        })
                    })
                    .collect::<Result<_, _>>()?;
                config.policy.allowed_subnets6 = v6
                    .iter()
                    .map(|s| {
                        s.parse::<crate::cidr::Ipv6Cidr>()
                            .map(crate::cidr::Ipv6Cidr::subnet)
                            .map_err(|_| {
                                format!("policy.allowed_subnets: {s:?} is not a CIDR like 192.0.2.0/24 or 2001:db8::/64")
                            })
                    })
                    .collect::<Result<_, _>>()?;
            }
            if let Some(allow_env) = policy.allow_env {
                config.policy.allow_env = allow_env;
            }
            if let Some(allow_adhoc) = policy.allow_adhoc {
                config.policy.allow_adhoc = allow_adhoc;
            }
            if let Some(networks) = policy.networks {
                if let Some(bad) = networks
                    .iter()
                    .find(|n| crate::request::NetworkName::parse(n).is_none())
                {
                    return Err(format!(
                        "policy.networks: {bad:?}: {}",
                        crate::request::NetworkName::EXPECTED
                    ));
                }
                config.policy.networks = networks;
            }
        }
        if let Some(gc) = raw.gc {
            if let Some(dirs) = gc.container_dirs {
                if let Some(bad) = dirs.iter().find(|d| !d.starts_with('/')) {
                    return Err(format!(
                        "gc.container_dirs: {bad:?} is not an absolute path"
                    ));
                }
                config.gc.container_dirs = dirs.into_iter().map(PathBuf::from).collect();
            }
            if let Some(retention) = gc.stopped_retention {
                config.gc.stopped_retention = match retention.trim() {
                    "" | "0" | "never" => None,
                    text => Some(humantime::parse_duration(text).map_err(|e| {
                        format!("gc.stopped_retention {text:?}: {e}; expected a duration like \"30d\" or \"12h\", or \"never\"")
                    })?),
                };
            }
        }
        if let Some(name) = raw.host_name {
            if name.is_empty() || name.contains('/') || name.len() > 253 {
                return Err(format!(
                    "host_name {name:?}: expected a host name (no '/', at most 253 characters)"
                ));
            }
            config.host_name = Some(name);
        }
        if let Some(id) = raw.host_id {
            let id = id.trim().to_string();
            let valid = !id.is_empty()
                && id.len() <= 64
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
            if !valid {
                return Err(format!(
                    "host_id {id:?}: expected 1-64 letters, digits, '-', '_' or '.'"
                ));
            }
            config.host_id = Some(id);
        }
        if let Some(daemon) = raw.daemon {
            if let Some(dir) = daemon.runtime_dir {
                if !dir.starts_with('/') {
                    return Err(format!(
                        "daemon.runtime_dir {dir:?}: expected an absolute path"
                    ));
                }
                config.daemon.runtime_dir = dir.into();
            }
            if let Some(idle) = daemon.idle_exit {
                config.daemon.idle_exit = parse_duration("daemon.idle_exit", &idle, "60s")?;
            }
            if let Some(serve) = daemon.serve_hooks {
                config.daemon.serve_hooks = serve;
            }
        }
        if let Some(etcd) = raw.etcd {
            let path = |key: &str, value: Option<String>| -> Result<Option<PathBuf>, String> {
                match value {
                    Some(v) if !v.starts_with('/') => {
                        Err(format!("etcd.{key} {v:?}: expected an absolute path"))
                    }
                    other => Ok(other.map(PathBuf::from)),
                }
            };
            if let Some(timeout) = etcd.timeout {
                config.etcd.timeout = parse_duration("etcd.timeout", &timeout, "5s")?;
            }
            config.etcd.ca = path("ca", etcd.ca)?;
            config.etcd.cert = path("cert", etcd.cert)?;
            config.etcd.key = path("key", etcd.key)?;
            if config.etcd.cert.is_some() != config.etcd.key.is_some() {
                return Err("etcd.cert and etcd.key: give both or neither".into());
            }
            config.etcd.user = etcd.user;
            config.etcd.password = etcd.password;
            config.etcd.password_file = path("password_file", etcd.password_file)?;
            if config.etcd.user.is_none()
                && (config.etcd.password.is_some() || config.etcd.password_file.is_some())
            {
                return Err("etcd.password: needs etcd.user".into());
            }
        }
        if let Some(wait) = raw.ipv6.and_then(|v| v.slaac_wait) {
            let wait = parse_duration("ipv6.slaac_wait", &wait, "10s")?;
            if wait < std::time::Duration::from_secs(1) {
                return Err(format!("ipv6.slaac_wait {wait:?}: at least 1s"));
            }
            config.ipv6.slaac_wait = wait;
        }
        if let Some(dhcp) = raw.dhcp {
            if let Some(timeout) = dhcp.timeout {
                let timeout = parse_duration("dhcp.timeout", &timeout, "10s")?;
                if timeout < std::time::Duration::from_secs(1) {
                    return Err(format!(
                        "dhcp.timeout {:?}: at least 1s",
                        humantime::format_duration(timeout).to_string()
                    ));
                }
                config.dhcp.timeout = timeout;
            }
            if let Some(wait) = dhcp.probe_wait {
                config.dhcp.probe_wait = parse_duration("dhcp.probe_wait", &wait, "200ms")?;
            }
            if let Some(min) = dhcp.min_lease {
                let min = parse_duration("dhcp.min_lease", &min, "60s")?;
                if min < std::time::Duration::from_secs(1) || min.as_secs() > u64::from(u32::MAX) {
                    return Err(format!(
                        "dhcp.min_lease {:?}: expected from 1s to 136y",
                        humantime::format_duration(min).to_string()
                    ));
                }
                config.dhcp.min_lease = min;
            }
            if let Some(lengths) = dhcp.prefix_lengths {
                config.dhcp.prefix_lengths = crate::dhcp::rules::parse_prefixes(&lengths)
                    .ok_or_else(|| {
                        format!("dhcp.prefix_lengths {lengths:?}: expected LOW-HIGH with 1 <= LOW <= HIGH <= 32, like \"8-30\"")
                    })?;
            }
            let udhcpc = dhcp.udhcpc.unwrap_or_else(|| "/bin/busybox".into());
            if !udhcpc.starts_with('/') {
                return Err(format!("dhcp.udhcpc {udhcpc:?}: expected an absolute path"));
            }
            config.dhcp.client = match dhcp.client.as_deref().map(str::trim) {
                None | Some("builtin") => DhcpClient::Builtin,
                Some("udhcpc") => DhcpClient::Udhcpc(udhcpc.into()),
                Some(other) => {
                    return Err(format!(
                        "dhcp.client {other:?}: expected \"builtin\" or \"udhcpc\" (dhclient and dhcpcd are not supported)"
                    ))
                }
            };
        }
        if let Some(discovery) = raw.discovery {
            if let Some(ttl) = discovery.ttl {
                let ttl = parse_duration("discovery.ttl", &ttl, "10s")?;
                if ttl < std::time::Duration::from_secs(2) {
                    return Err(format!(
                        "discovery.ttl {:?}: at least 2s (the registrar renews every third of it)",
                        humantime::format_duration(ttl).to_string()
                    ));
                }
                config.discovery.ttl = ttl;
            }
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_default_config_parses_to_the_defaults() {
        let text = include_str!("../config/config.toml");
        let config = Config::parse(text).unwrap();
        let defaults = Config::default();
        assert_eq!(config.store, defaults.store);
        assert_eq!(config.log, defaults.log);
        assert_eq!(config.policy, defaults.policy);
        assert_eq!(config.gc, defaults.gc);
        assert_eq!(config.daemon, defaults.daemon);
        assert_eq!(config.discovery, defaults.discovery);
        assert_eq!(config.etcd, defaults.etcd);
        assert_eq!(config.store_prefix, "/macvlan");
    }

    #[test]
    fn full_config() {
        let config = Config::parse(
            r#"
            store = "sqlite:///tmp/x.db"
            log = "syslog"
            debug = true
            [policy]
            allowed_parents = ["lan0"]
            allowed_subnets = ["192.0.2.7/24"]
            allow_env = false
            allow_adhoc = true
            networks = ["lan"]
            [gc]
            container_dirs = ["/run/x"]
            stopped_retention = "2h"
            "#,
        )
        .unwrap();
        assert_eq!(config.store, StoreLocation::Sqlite("/tmp/x.db".into()));
        assert_eq!(config.log, LogTarget::Syslog);
        assert!(config.debug);
        assert!(!config.policy.allow_env);
        assert!(config.policy.allow_adhoc);
        assert!(config.policy.network_allowed("lan"));
        assert!(!config.policy.network_allowed("storage"));
        assert!(Policy::default().network_allowed("any"));
        assert!(!Policy::default().allow_adhoc);
        assert_eq!(config.policy.allowed_subnets[0].to_string(), "192.0.2.0/24");
        assert!(config
            .policy
            .subnet_allowed("192.0.2.9/25".parse().unwrap()));
        assert!(!config
            .policy
            .subnet_allowed("192.0.2.9/16".parse().unwrap()));
    }

    #[test]
    fn etcd_store_and_options() {
        let config = Config::parse(
            r#"
            store = "etcd://10.0.0.1:2379, etcd2:2379"
            [etcd]
            timeout = "2s"
            ca = "/etc/ca.pem"
            user = "macvlan"
            password = "secret"
            "#,
        )
        .unwrap();
        assert_eq!(
            config.store,
            StoreLocation::Etcd(vec!["10.0.0.1:2379".into(), "etcd2:2379".into()])
        );
        assert_eq!(config.etcd.timeout, std::time::Duration::from_secs(2));
        assert!(config.etcd.tls_enabled());
        assert_eq!(config.etcd.password().unwrap(), "secret");
        let shown = format!("{config:?}");
        assert!(!shown.contains("secret"), "{shown}");
    }

    #[test]
    fn refuses_unknown_keys_and_bad_values() {
        assert!(Config::parse("stroe = \"x\"").is_err());
        assert!(Config::parse("store = \"sqlite://relative.db\"").is_err());
        assert!(Config::parse("log = \"somewhere\"").is_err());
        assert!(Config::parse("[policy]\nallowed_subnets = [\"nope\"]").is_err());
        assert!(Config::parse("[gc]\nstopped_retention = \"soon\"").is_err());
        assert!(Config::parse("[gc]\ncontainer_dirs = [\"relative\"]").is_err());
        assert!(Config::parse("[discovery]\nttl = \"1s\"").is_err());
        assert!(Config::parse("[daemon]\nruntime_dir = \"run\"").is_err());
        assert!(Config::parse("host_name = \"a/b\"").is_err());
        assert!(Config::parse("host_id = \"a b\"").is_err());
        assert!(Config::parse("[policy]\nnetworks = [\"_x\"]").is_err());
        assert!(Config::parse("store = \"etcd://nohost\"").is_err());
        assert!(Config::parse("store = \"etcd://a:1,b:x\"").is_err());
        assert!(Config::parse("[etcd]\ncert = \"/c\"").is_err());
        assert!(Config::parse("[etcd]\npassword = \"p\"").is_err());
        assert!(Config::parse("[dhcp]\nmin_lease = \"0s\"").is_err());
        let error = Config::parse("[dhcp]\nprefix_lengths = \"30-8\"").unwrap_err();
        assert!(error.contains("dhcp.prefix_lengths \"30-8\""), "{error}");
        let config =
            Config::parse("[dhcp]\nmin_lease = \"2m\"\nprefix_lengths = \"16-24\"").unwrap();
        assert_eq!(config.dhcp.min_lease, std::time::Duration::from_secs(120));
        assert_eq!(config.dhcp.prefix_lengths, 16..=24);
    }
}
