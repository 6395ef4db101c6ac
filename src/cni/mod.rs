//! The CNI face: `macvlan` run with `CNI_COMMAND` set is a CNI plugin
//! (spec 1.1.0; configurations of 0.4.0 to 1.1.0) for the store's
//! networks — ADD, DEL, CHECK, GC, STATUS and VERSION. An attachment is a
//! record like any other, keyed `<CNI_CONTAINERID>:<CNI_IFNAME>` (OCI
//! container ids have no ':'), so `macvlan ls`, the DHCP keeper, rates and
//! `macvlan gc` treat it as they treat a hook's.

mod result;

use std::collections::BTreeSet;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::Deserialize;
use serde_json::Value;

use crate::config::{Config, DEFAULT_CONFIG_PATH};
use crate::ipam::{self, IpamError};
use crate::log::{Level, Logger};
use crate::net::{self, Context, Target};
use crate::network::NetworkError;
use crate::record::{CniRef, FlatRecord};
use crate::request::{self, NamedRequest, Network, NetworkName, NetworkRequest, RateLimit};

pub use result::render;

/// The runtime's variables for one invocation of a plugin.
pub const ENVIRONMENT: [&str; 6] = [
    "CNI_COMMAND",
    "CNI_CONTAINERID",
    "CNI_NETNS",
    "CNI_IFNAME",
    "CNI_ARGS",
    "CNI_PATH",
];

/// Keeps a process this one starts (the daemon, udhcpc) from inheriting
/// the invocation: with `CNI_COMMAND` set, this binary is a plugin.
pub fn scrub(command: &mut std::process::Command) {
    for name in ENVIRONMENT {
        command.env_remove(name);
    }
}

/// The spec versions whose configurations and results this plugin speaks.
pub const SUPPORTED: [&str; 3] = ["0.4.0", "1.0.0", "1.1.0"];

/// The spec's well-known error codes, and ours (100 and up).
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNKNOWN_CONTAINER: u32 = 3;
    pub const INVALID_ENVIRONMENT: u32 = 4;
    pub const IO_FAILURE: u32 = 5;
    pub const DECODING_FAILURE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    pub const TRY_AGAIN_LATER: u32 = 11;
    pub const NOT_AVAILABLE: u32 = 50;
    /// The address asked for is held by another container.
    pub const ADDRESS_IN_USE: u32 = 100;
    /// The network has no free address left.
    pub const NO_FREE_ADDRESS: u32 = 101;
    /// ADD for an attachment that exists (no DEL in between).
    pub const ALREADY_ATTACHED: u32 = 102;
    /// CHECK found the attachment not as ADD left it.
    pub const CHECK_FAILED: u32 = 103;
    /// Setting the interface up failed (the message says where).
    pub const SETUP_FAILED: u32 = 110;
}

/// A failure as the spec reports it: a code and a one-line message.
#[derive(Debug)]
pub struct CniError {
    pub code: u32,
    pub msg: String,
}

impl CniError {
    fn new(code: u32, msg: impl Into<String>) -> CniError {
        CniError {
            code,
            msg: msg.into(),
        }
    }
}

/// The network configuration on stdin, as far as this plugin reads it.
#[derive(Debug, Deserialize)]
pub struct NetConf {
    #[serde(rename = "cniVersion", default)]
    pub cni_version: String,
    #[serde(default)]
    pub name: String,
    #[serde(rename = "type", default)]
    pub kind: String,
    /// The store network to attach to (`macvlan network ls`).
    #[serde(default)]
    pub network: Option<String>,
    /// The macvlan-runc configuration file (store, policy, log); default
    /// the host's.
    #[serde(default)]
    pub config: Option<PathBuf>,
    #[serde(rename = "runtimeConfig", default)]
    pub runtime_config: RuntimeConfig,
    #[serde(default)]
    pub args: Value,
    #[serde(rename = "prevResult", default)]
    pub prev_result: Option<Value>,
    #[serde(rename = "cni.dev/valid-attachments", default)]
    pub valid_attachments: Option<Vec<ValidAttachment>>,
}

/// Capabilities the runtime passes (`ips`, `mac`, `bandwidth`).
#[derive(Debug, Default, Deserialize)]
pub struct RuntimeConfig {
    #[serde(default)]
    pub ips: Vec<String>,
    #[serde(default)]
    pub mac: Option<String>,
    #[serde(default)]
    pub bandwidth: Option<Bandwidth>,
}

/// The `bandwidth` capability: rates in bit/s, bursts in bits.
#[derive(Debug, Default, Deserialize)]
pub struct Bandwidth {
    #[serde(rename = "ingressRate", default)]
    pub ingress_rate: u64,
    #[serde(rename = "ingressBurst", default)]
    pub ingress_burst: u64,
    #[serde(rename = "egressRate", default)]
    pub egress_rate: u64,
    #[serde(rename = "egressBurst", default)]
    pub egress_burst: u64,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct ValidAttachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

/// A store that did not answer (or kept changing): the runtime may try
/// again later.
fn busy(e: impl std::fmt::Display) -> CniError {
    CniError::new(code::TRY_AGAIN_LATER, format!("{e:#}"))
}

/// The runtime's environment for one invocation.
#[derive(Debug, Clone, Default)]
pub struct Env {
    pub command: String,
    pub container_id: Option<String>,
    pub netns: Option<String>,
    pub ifname: Option<String>,
    /// `CNI_ARGS`: `K=V;K=V` (Kubernetes passes `IP=` and pod names).
    pub args: Vec<(String, String)>,
}

impl Env {
    pub fn from_process() -> Env {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        Env {
            command: var("CNI_COMMAND").unwrap_or_default(),
            container_id: var("CNI_CONTAINERID"),
            netns: var("CNI_NETNS"),
            ifname: var("CNI_IFNAME"),
            args: var("CNI_ARGS")
                .map(|text| {
                    text.split(';')
                        .filter_map(|kv| kv.split_once('='))
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    fn required(&self, value: &Option<String>, name: &str) -> Result<String, CniError> {
        value.clone().ok_or_else(|| {
            CniError::new(
                code::INVALID_ENVIRONMENT,
                format!(
                    "{name} is not set; the runtime must give it for {}",
                    self.command
                ),
            )
        })
    }
}

/// Runs one plugin invocation as the runtime made it (environment, stdin),
/// prints the result or the error JSON, and returns the exit code.
pub fn main() -> i32 {
    let env = Env::from_process();
    let mut input = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut input) {
        return print_error(
            "1.1.0",
            &CniError::new(
                code::IO_FAILURE,
                format!("read the network configuration from stdin: {e}"),
            ),
        );
    }
    let version = serde_json::from_str::<Value>(&input)
        .ok()
        .and_then(|v| v["cniVersion"].as_str().map(str::to_string))
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "1.1.0".to_string());
    match run(&env, &input) {
        Ok(Some(output)) => {
            println!("{output}");
            0
        }
        Ok(None) => 0,
        Err(e) => print_error(&version, &e),
    }
}

fn print_error(version: &str, error: &CniError) -> i32 {
    let body = serde_json::json!({
        "cniVersion": version,
        "code": error.code,
        "msg": error.msg,
    });
    println!("{body}");
    eprintln!("macvlan-runc (CNI): {}", error.msg);
    1
}

/// One invocation: `Ok(Some(json))` to print, `Ok(None)` for success
/// without output (DEL, GC, STATUS).
pub fn run(env: &Env, input: &str) -> Result<Option<String>, CniError> {
    if env.command == "VERSION" {
        let version = serde_json::from_str::<Value>(input)
            .ok()
            .and_then(|v| v["cniVersion"].as_str().map(str::to_string))
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "1.1.0".to_string());
        return Ok(Some(
            serde_json::json!({"cniVersion": version, "supportedVersions": SUPPORTED}).to_string(),
        ));
    }
    let conf: NetConf = serde_json::from_str(input).map_err(|e| {
        CniError::new(
            code::DECODING_FAILURE,
            format!("the network configuration is not valid JSON for this plugin: {e}"),
        )
    })?;
    if !SUPPORTED.contains(&conf.cni_version.as_str()) {
        return Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!(
                "cniVersion {:?} is not supported; this plugin speaks {}",
                conf.cni_version,
                SUPPORTED.join(", ")
            ),
        ));
    }
    let ctx = context(&conf)?;
    match env.command.as_str() {
        "ADD" => add(&ctx, env, &conf).map(Some),
        "DEL" => del(&ctx, env, &conf).map(|()| None),
        "CHECK" => check(&ctx, env, &conf).map(|()| None),
        "GC" => gc(&ctx, &conf).map(|()| None),
        "STATUS" => status(&ctx).map(|()| None),
        other => Err(CniError::new(
            code::INVALID_ENVIRONMENT,
            format!("CNI_COMMAND {other:?}: expected ADD, DEL, CHECK, GC, STATUS or VERSION"),
        )),
    }
}

/// The macvlan-runc context the configuration names.
fn context(conf: &NetConf) -> Result<Context, CniError> {
    let (path, explicit) = match &conf.config {
        Some(path) => (path.clone(), true),
        None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
    };
    let config = Config::load(&path, explicit).map_err(|e| {
        CniError::new(
            code::INVALID_CONFIG,
            format!("config {}: {e:#}", path.display()),
        )
    })?;
    let logger = Logger::new(config.log.clone(), config.debug);
    Context::new(config, logger).map_err(|e| CniError::new(code::IO_FAILURE, format!("{e:#}")))
}

/// The store network the configuration names.
fn network_name(conf: &NetConf) -> Result<NetworkName, CniError> {
    let name = conf.network.as_deref().ok_or_else(|| {
        CniError::new(
            code::INVALID_CONFIG,
            format!(
                "network configuration {:?}: \"network\" must name a network of the store (macvlan network ls)",
                conf.name
            ),
        )
    })?;
    NetworkName::parse(name).ok_or_else(|| {
        CniError::new(
            code::INVALID_CONFIG,
            format!("\"network\" {name:?}: {}", NetworkName::EXPECTED),
        )
    })
}

/// The record id of attachment (container, ifname).
pub fn record_id(container_id: &str, ifname: &str) -> String {
    format!("{container_id}:{ifname}")
}

/// The spec's code for a failed setup, found in the error's chain.
fn classify(error: &anyhow::Error) -> u32 {
    for cause in error.chain() {
        if let Some(e) = cause.downcast_ref::<NetworkError>() {
            return match e {
                NetworkError::Ipam(IpamError::Held { .. }) => code::ADDRESS_IN_USE,
                NetworkError::Exhausted { .. } => code::NO_FREE_ADDRESS,
                NetworkError::NotFound { .. } | NetworkError::BadAddress { .. } => {
                    code::INVALID_CONFIG
                }
                NetworkError::Contended(_) => code::TRY_AGAIN_LATER,
                NetworkError::Store(_) => code::TRY_AGAIN_LATER,
                _ => code::SETUP_FAILED,
            };
        }
        if let Some(e) = cause.downcast_ref::<IpamError>() {
            return match e {
                IpamError::Held { .. } => code::ADDRESS_IN_USE,
                IpamError::Contended(_) | IpamError::Store(_) => code::TRY_AGAIN_LATER,
                _ => code::SETUP_FAILED,
            };
        }
        if cause.downcast_ref::<request::RequestError>().is_some() {
            return code::INVALID_CONFIG;
        }
    }
    code::SETUP_FAILED
}

/// An IPv4 and an IPv6 address asked for, each with its prefix if given.
type Requested = (
    Option<(Ipv4Addr, Option<u8>)>,
    Option<(Ipv6Addr, Option<u8>)>,
);

/// The addresses asked for: `runtimeConfig.ips`, else `CNI_ARGS` `IP=`.
fn requested_addresses(env: &Env, conf: &NetConf) -> Result<Requested, CniError> {
    let mut texts: Vec<String> = conf.runtime_config.ips.clone();
    if texts.is_empty() {
        texts = env
            .args
            .iter()
            .filter(|(k, _)| k == "IP")
            .flat_map(|(_, v)| v.split(',').map(str::to_string))
            .collect();
    }
    let (mut v4, mut v6) = (None, None);
    for text in texts {
        let (address, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text.as_str(), None),
        };
        let bad = || {
            CniError::new(
                code::INVALID_CONFIG,
                format!("runtimeConfig.ips {text:?}: expected an address, optionally with the network's prefix, like 192.0.2.40/24 or 2001:db8::40"),
            )
        };
        let prefix = prefix
            .map(|p| p.parse::<u8>().map_err(|_| bad()))
            .transpose()?;
        match address.parse::<IpAddr>().map_err(|_| bad())? {
            IpAddr::V4(a) if v4.is_none() => v4 = Some((a, prefix)),
            IpAddr::V6(a) if v6.is_none() => v6 = Some((a, prefix)),
            _ => {
                return Err(CniError::new(
                    code::INVALID_CONFIG,
                    format!("runtimeConfig.ips: one address per family (got {text} too)"),
                ))
            }
        }
    }
    Ok((v4, v6))
}

/// The `bandwidth` capability as our limits (kbit/s and bytes).
fn limits(bandwidth: &Option<Bandwidth>) -> (Option<RateLimit>, Option<RateLimit>) {
    let Some(b) = bandwidth else {
        return (None, None);
    };
    let limit = |rate: u64, burst: u64, setting: &str| {
        (rate >= 1000).then(|| RateLimit {
            rate_kbit: rate / 1000,
            burst: (burst > 0).then(|| u32::try_from(burst / 8).unwrap_or(u32::MAX)),
            latency_ms: request::DEFAULT_LATENCY_MS,
            burst_setting: setting.to_string(),
        })
    };
    (
        limit(
            b.egress_rate,
            b.egress_burst,
            "runtimeConfig.bandwidth.egressBurst",
        ),
        limit(
            b.ingress_rate,
            b.ingress_burst,
            "runtimeConfig.bandwidth.ingressBurst",
        ),
    )
}

/// A service to register, asked for in `args` (`"macvlan.discover":
/// "true", "macvlan.port": "8000", "macvlan.service": "web"`) or in
/// `CNI_ARGS` (`DISCOVER=true;PORT=8000;SERVICE=web`); the service name
/// defaults to the pod's (`K8S_POD_NAME`).
fn discovery(env: &Env, conf: &NetConf) -> Result<Option<request::DiscoveryRequest>, CniError> {
    let bad = |e: request::RequestError| CniError::new(code::INVALID_CONFIG, format!("args: {e}"));
    let annotations: std::collections::BTreeMap<String, String> = conf
        .args
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| k.starts_with("macvlan."))
        .map(|(k, v)| {
            let text = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (k.clone(), text)
        })
        .collect();
    let from_args: Vec<String> = env
        .args
        .iter()
        .filter(|(k, _)| matches!(k.as_str(), "DISCOVER" | "PORT" | "SERVICE"))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let settings = request::Settings::collect(&annotations, &from_args, true).map_err(bad)?;
    let Some(mut asked) = request::parse_discovery(&settings).map_err(bad)? else {
        return Ok(None);
    };
    let pod = env
        .args
        .iter()
        .find(|(k, _)| k == "K8S_POD_NAME")
        .map(|(_, v)| v.as_str());
    asked.service = Some(asked.service_name(pod).map_err(bad)?);
    Ok(Some(asked))
}

fn add(ctx: &Context, env: &Env, conf: &NetConf) -> Result<String, CniError> {
    let container_id = env.required(&env.container_id, "CNI_CONTAINERID")?;
    let netns = env.required(&env.netns, "CNI_NETNS")?;
    let ifname = env.required(&env.ifname, "CNI_IFNAME")?;
    if !request::valid_interface_name(&ifname) {
        return Err(CniError::new(
            code::INVALID_ENVIRONMENT,
            format!("CNI_IFNAME {ifname:?}: expected an interface name of 1-15 characters"),
        ));
    }
    let name = network_name(conf)?;
    let id = record_id(&container_id, &ifname);
    let store = ctx.store().map_err(busy)?;
    if let Some(existing) = ipam::load_flat(store, &ctx.keys, &id).map_err(busy)? {
        if existing.cni.as_ref().is_some_and(|c| c.netns == netns)
            && crate::gc::container_exists(&ctx.config.gc, &id, &existing)
        {
            return Err(CniError::new(
                code::ALREADY_ATTACHED,
                format!(
                    "container {container_id} already has {ifname} on network {} (ADD twice without DEL)",
                    conf.name
                ),
            ));
        }
    }
    let (address, address6) = requested_addresses(env, conf)?;
    let mac = match &conf.runtime_config.mac {
        None => None,
        Some(text) => Some(crate::netlink::parse_mac(text).filter(|m| m[0] & 1 == 0).ok_or_else(|| {
            CniError::new(
                code::INVALID_CONFIG,
                format!("runtimeConfig.mac {text:?}: expected a unicast MAC like 02:42:c0:00:02:0a"),
            )
        })?),
    };
    let (egress, ingress) = limits(&conf.runtime_config.bandwidth);
    let discovery = discovery(env, conf)?;
    let named = NamedRequest {
        name,
        address,
        address6,
        setting: "network".into(),
        from_env: false,
    };
    let request = NetworkRequest {
        container_id: id.clone(),
        network: Network::Named(named),
        slot: 0,
        more: Vec::new(),
        mtu: None,
        mode: None,
        ipvlan: None,
        egress,
        ingress,
        discovery,
        ifname: Some(ifname.clone()),
        mac,
        cni: Some(CniRef {
            name: conf.name.clone(),
            container_id: container_id.clone(),
            ifname: ifname.clone(),
            netns: netns.clone(),
        }),
    };
    let target = Target {
        container_id: id.clone(),
        pid: None,
        netns: PathBuf::from(&netns),
        hostname: env
            .args
            .iter()
            .find(|(k, _)| k == "K8S_POD_NAME")
            .map(|(_, v)| v.clone()),
        resolv: None,
    };
    let attached = net::attach(ctx, &request, &target).map_err(|e| {
        ctx.logger.log(
            Level::Error,
            "attach",
            &[("container", id.as_str()), ("error", &format!("{e:#}"))],
        );
        CniError::new(classify(&e), format!("container {container_id}: {e:#}"))
    })?;
    let attached = attached
        .into_iter()
        .next()
        .ok_or_else(|| CniError::new(code::SETUP_FAILED, "the attach returned no interface"))?;
    let record = ipam::load_flat(store, &ctx.keys, &id)
        .map_err(busy)?
        .ok_or_else(|| CniError::new(code::SETUP_FAILED, format!("the record of {id} vanished")))?;
    Ok(render(
        &conf.cni_version,
        conf.prev_result.as_ref(),
        &attached,
        &record,
        &netns,
        request::is_primary(&id),
    ))
}

/// DEL: idempotent — an unknown attachment, or one whose namespace is
/// gone, succeeds; the interface (if its namespace still exists), the
/// record, the addresses and any lease go.
fn del(ctx: &Context, env: &Env, _conf: &NetConf) -> Result<(), CniError> {
    let container_id = env.required(&env.container_id, "CNI_CONTAINERID")?;
    let ifname = env.required(&env.ifname, "CNI_IFNAME")?;
    let id = record_id(&container_id, &ifname);
    let netns = env.netns.as_ref().map(PathBuf::from).filter(|p| p.exists());
    let store = ctx.store().map_err(busy)?;
    crate::discovery::withdraw(store, &ctx.keys, &id).map_err(busy)?;
    let started = std::time::Instant::now();
    let result = net::detach_one(ctx, &id, netns);
    let failed = result.as_ref().err().map(|_| "detach");
    net::count(ctx, crate::tally::Operation::Detach, started, failed);
    result.map_err(|e| {
        CniError::new(
            code::TRY_AGAIN_LATER,
            format!("container {container_id}: {e:#}"),
        )
    })?;
    Ok(())
}

/// CHECK: the attachment is as ADD left it — record running, interface
/// with its MAC and addresses, the default routes of a primary interface.
fn check(ctx: &Context, env: &Env, conf: &NetConf) -> Result<(), CniError> {
    let container_id = env.required(&env.container_id, "CNI_CONTAINERID")?;
    let netns = env.required(&env.netns, "CNI_NETNS")?;
    let ifname = env.required(&env.ifname, "CNI_IFNAME")?;
    let id = record_id(&container_id, &ifname);
    let store = ctx.store().map_err(busy)?;
    let record = ipam::load_flat(store, &ctx.keys, &id)
        .map_err(busy)?
        .ok_or_else(|| {
            CniError::new(
                code::UNKNOWN_CONTAINER,
                format!(
                    "container {container_id}: no attachment {ifname} on network {}",
                    conf.name
                ),
            )
        })?;
    let failed = |what: String| {
        CniError::new(
            code::CHECK_FAILED,
            format!("container {container_id} {ifname}: {what}"),
        )
    };
    if record.state != crate::record::State::Running {
        return Err(failed(format!("its record is {}", record.state.as_str())));
    }
    let mut container = crate::netlink::Netlink::open_in_netns(Path::new(&netns))
        .map_err(|e| failed(format!("open its namespace {netns}: {e}")))?;
    let link = container
        .link_by_name(&ifname)
        .map_err(|e| failed(e.to_string()))?
        .ok_or_else(|| failed("the interface is gone".into()))?;
    let mac = link
        .mac
        .map(|m| crate::netlink::format_mac(&m))
        .unwrap_or_default();
    if mac != record.mac {
        return Err(failed(format!("MAC {mac}, recorded {}", record.mac)));
    }
    if let Ok(cidr) = record.ip.parse::<crate::cidr::Ipv4Cidr>() {
        let have = container
            .ipv4_addresses(link.index)
            .map_err(|e| failed(e.to_string()))?;
        if !have.contains(&cidr.address) {
            return Err(failed(format!("address {cidr} is missing")));
        }
        if let (true, Some(gateway)) = (request::is_primary(&id), &record.gateway) {
            let route = container
                .default_gateway(link.index)
                .map_err(|e| failed(e.to_string()))?;
            if route.map(|g| g.to_string()).as_deref() != Some(gateway.as_str()) {
                return Err(failed(format!(
                    "the default route via {gateway} is missing"
                )));
            }
        }
    }
    if let Some(Ok(cidr)) = record
        .ip6
        .as_deref()
        .map(str::parse::<crate::cidr::Ipv6Cidr>)
    {
        let have: BTreeSet<Ipv6Addr> = container
            .ipv6_addresses(link.index)
            .map_err(|e| failed(e.to_string()))?
            .into_iter()
            .map(|a| a.address)
            .collect();
        if !have.contains(&cidr.address) {
            return Err(failed(format!("address {cidr} is missing")));
        }
    }
    Ok(())
}

/// GC: releases this host's attachments of this network that the runtime
/// no longer lists in `cni.dev/valid-attachments`.
fn gc(ctx: &Context, conf: &NetConf) -> Result<(), CniError> {
    let valid: BTreeSet<(String, String)> = conf
        .valid_attachments
        .iter()
        .flatten()
        .map(|a| (a.container_id.clone(), a.ifname.clone()))
        .collect();
    let store = ctx.store().map_err(busy)?;
    let records = ipam::list_records(store, &ctx.keys).map_err(busy)?;
    let mut failures = Vec::new();
    for (id, _, text) in records {
        let Ok(record) = serde_json::from_str::<FlatRecord>(&text) else {
            continue;
        };
        let Some(cni) = &record.cni else { continue };
        if cni.name != conf.name
            || !ctx.owns(&record)
            || valid.contains(&(cni.container_id.clone(), cni.ifname.clone()))
        {
            continue;
        }
        let released = crate::discovery::withdraw(store, &ctx.keys, &id)
            .map(|_| ())
            .and_then(|()| net::detach_one(ctx, &id, None).map(|_| ()));
        if let Err(e) = released {
            failures.push(format!("{id}: {e:#}"));
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(CniError::new(code::TRY_AGAIN_LATER, failures.join("; ")))
    }
}

/// STATUS: ready when the store answers.
fn status(ctx: &Context) -> Result<(), CniError> {
    let unavailable = |e: anyhow::Error| {
        CniError::new(
            code::NOT_AVAILABLE,
            format!("the store is unreachable, so no ADD can succeed: {e:#}"),
        )
    };
    let store = ctx.store().map_err(unavailable)?;
    store
        .get(&ctx.keys.schema())
        .map_err(|e| unavailable(e.into()))?;
    Ok(())
}
