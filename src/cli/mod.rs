//! The `macvlan` command line: the OCI hook and the admin verbs.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};

use crate::config::{Config, DEFAULT_CONFIG_PATH};
use crate::discovery;
use crate::ipam;
use crate::log::{Level, Logger};
use crate::net::{self, Target};
use crate::record::FlatRecord;
use crate::request::{self, Field, ServiceName, Settings};

mod docs;
mod network;
use network::{NetworkCommand, VlanCommand, VlanCreateArgs};

#[derive(Debug, Parser)]
#[command(
    name = "macvlan",
    version,
    about = "Real LAN addresses for containers through macvlan"
)]
pub struct Cli {
    /// Configuration file (also: MACVLAN_CONFIG).
    #[arg(long, global = true, env = "MACVLAN_CONFIG")]
    pub config: Option<PathBuf>,
    /// Log step-by-step detail.
    #[arg(long, global = true)]
    pub debug: bool,
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once per process: the size difference between variants is irrelevant.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run as an OCI hook; the OCI state JSON is read from stdin. Without a
    /// stage, the stage follows from the state's status.
    Hook {
        /// createRuntime (alias prestart), poststop; other stages do nothing.
        stage: Option<String>,
    },
    /// Give an already running process's network namespace an interface.
    Attach(AttachArgs),
    /// Remove the interface `attach` gave a process and release its address.
    Detach {
        /// The process whose namespace holds the interfaces.
        #[arg(long, required_unless_present = "id")]
        pid: Option<u32>,
        /// Container id of the record (default: the one attached to --pid).
        #[arg(long)]
        id: Option<String>,
    },
    /// List the network records in the store.
    Ls {
        /// Print JSON: an array of records, each with its `id` and `type`.
        #[arg(long)]
        json: bool,
    },
    /// Show one container's network record.
    Inspect {
        /// Container id (`<id>/<n>` for a container's further networks).
        id: String,
    },
    /// Release the records and addresses of containers that no longer exist
    /// (and of those stopped longer than the configured retention).
    Gc {
        /// Only show what would be released.
        #[arg(long)]
        dry_run: bool,
    },
    /// Register a running container's service; the registrar publishes it
    /// while its port answers.
    Publish {
        /// The service's TCP port.
        #[arg(long)]
        port: String,
        /// The service's name (default: the container's hostname).
        #[arg(long)]
        service: Option<String>,
        /// Container id.
        container: String,
    },
    /// Withdraw a container's service at once.
    Unpublish {
        /// Container id.
        container: String,
    },
    /// Print the live endpoints of a service.
    Lookup {
        /// The service's name.
        name: String,
        /// Print JSON: an array of endpoints (`ip`, `port`, `container`, `host`).
        #[arg(long)]
        json: bool,
    },
    /// The host's background work: keeps registered services published
    /// while their health checks pass.
    Daemon {
        /// Exit after the configured idle time with nothing to do (how a
        /// hook starts it on demand).
        #[arg(long)]
        exit_when_idle: bool,
        /// Serve Prometheus metrics on this address and port (HTTP, any
        /// path), e.g. 127.0.0.1:9641; off by default.
        #[arg(long, value_name = "ADDR")]
        metrics: Option<std::net::SocketAddr>,
    },
    /// Networks the operator defines and containers name (NETWORK=lan):
    /// create, ls, inspect, rm.
    #[command(subcommand)]
    Network(NetworkCommand),
    /// VLAN networks (networks with --vlan), in the original system's
    /// verbs: create, delete, list, inspect, and this host as a VLAN's gateway.
    #[command(subcommand)]
    Vlan(VlanCommand),
    /// The original system's spelling of `vlan create`.
    #[command(name = "create-vlan")]
    CreateVlan(VlanCreateArgs),
    /// Check what this host can do: kernel features (tried in a throwaway
    /// namespace), runc, the store.
    Doctor {
        /// Print JSON: an array of checks (`check`, `ok`, `problem`, `remedy`).
        #[arg(long)]
        json: bool,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
    /// Write the manual pages (macvlan.1 and one per verb) into DIR.
    #[command(hide = true)]
    Man {
        /// Where to write them.
        dir: PathBuf,
    },
    /// Answer DNS queries (A, SRV) for `<service>.<domain>` from the store.
    Dns {
        /// Address and port to listen on (UDP), e.g. 192.0.2.1:53.
        #[arg(long)]
        listen: std::net::SocketAddr,
        /// The zone to answer for, e.g. svc.example.
        #[arg(long)]
        domain: String,
        /// Forward other names to this server (default: refuse them).
        #[arg(long)]
        forward: Option<std::net::SocketAddr>,
        /// Forward only for clients in this prefix (repeatable, IPv4 or
        /// IPv6); others get REFUSED for names outside the zone. Default:
        /// the subnets of the networks in the store, and loopback.
        #[arg(long = "forward-clients", value_name = "PREFIX")]
        forward_clients: Vec<String>,
        /// Serve Prometheus metrics (queries by type and response code) on
        /// this address and port; off by default.
        #[arg(long, value_name = "ADDR")]
        metrics: Option<std::net::SocketAddr>,
    },
}

#[derive(Debug, clap::Args)]
pub struct AttachArgs {
    /// The running process whose network namespace gets the interface.
    #[arg(long)]
    pub pid: u32,
    /// Container id to record it under (default: pid-<PID>).
    #[arg(long)]
    pub id: Option<String>,
    /// A network the operator defined (macvlan network ls).
    #[arg(long, conflicts_with_all = ["network_type", "networks"])]
    pub network: Option<String>,
    /// Several networks, `lan,storage=192.0.2.40`: eth0, eth1… in order.
    #[arg(long, conflicts_with = "network_type")]
    pub networks: Option<String>,
    /// An ad-hoc network: flat, dhcp or vlan (the original system's request).
    #[arg(long = "type", required_unless_present_any = ["network", "networks"])]
    pub network_type: Option<String>,
    /// Ad hoc: the parent interface (flat, dhcp).
    #[arg(long)]
    pub host_interface: Option<String>,
    /// The address: CIDR for flat, alone (or with the prefix) on a network.
    #[arg(long)]
    pub ip: Option<String>,
    /// Ad hoc: the default gateway (flat).
    #[arg(long)]
    pub gateway: Option<String>,
    /// The IPv6 address: CIDR for flat, alone (or with the prefix) on a
    /// network with static IPv6.
    #[arg(long)]
    pub ip6: Option<String>,
    /// Ad hoc: the IPv6 default gateway, in the subnet or link-local (flat).
    #[arg(long)]
    pub gateway6: Option<String>,
    /// With --type vlan: the VLAN network's name.
    #[arg(long)]
    pub vlan: Option<String>,
    /// 68 to the parent's MTU (at most the network's).
    #[arg(long)]
    pub mtu: Option<String>,
    /// macvlan mode: bridge, private, vepa or passthru.
    #[arg(long)]
    pub mode: Option<String>,
    /// Egress limit, kbit/s.
    #[arg(long)]
    pub rate: Option<String>,
    /// Token bucket size, bytes (with --rate).
    #[arg(long)]
    pub burst: Option<String>,
    /// Longest queueing delay, ms (with --rate).
    #[arg(long)]
    pub latency: Option<String>,
}

impl AttachArgs {
    /// The options as the annotations they stand for.
    fn annotations(&self) -> BTreeMap<String, String> {
        let fields = [
            (Field::Type, self.network_type.as_ref()),
            (Field::Network, self.network.as_ref()),
            (Field::Networks, self.networks.as_ref()),
            (Field::HostInterface, self.host_interface.as_ref()),
            (Field::Ip, self.ip.as_ref()),
            (Field::Gateway, self.gateway.as_ref()),
            (Field::Ip6, self.ip6.as_ref()),
            (Field::Gateway6, self.gateway6.as_ref()),
            (Field::Vlan, self.vlan.as_ref()),
            (Field::Mtu, self.mtu.as_ref()),
            (Field::Mode, self.mode.as_ref()),
            (Field::Rate, self.rate.as_ref()),
            (Field::Burst, self.burst.as_ref()),
            (Field::Latency, self.latency.as_ref()),
        ];
        fields
            .into_iter()
            .filter_map(|(field, value)| value.map(|v| (field.annotation().to_string(), v.clone())))
            .collect()
    }
}

impl Cli {
    /// The command line, with the hook's own recognised without building
    /// the parser for every verb: a runtime starts the hook once or twice
    /// per container, and clap's parser for the whole command line was a
    /// measurable part of its start (docs/hook-timing.md).
    pub fn from_args() -> Cli {
        let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
        Cli::hook_only(&args, std::env::var_os("MACVLAN_CONFIG")).unwrap_or_else(Cli::parse)
    }

    /// `[--config PATH] [--debug] hook [STAGE]`, the global options in any
    /// place; anything else (help, an unknown option, another verb) is
    /// left to clap. `env_config` is MACVLAN_CONFIG.
    fn hook_only(
        args: &[std::ffi::OsString],
        env_config: Option<std::ffi::OsString>,
    ) -> Option<Cli> {
        let mut config = None;
        let mut debug = false;
        let mut positional = Vec::new();
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let text = arg.to_str()?;
            // Given twice is clap's error to report.
            if text == "--config" && config.is_none() {
                config = Some(PathBuf::from(args.next()?));
            } else if let Some(path) = text.strip_prefix("--config=").filter(|_| config.is_none()) {
                config = Some(PathBuf::from(path));
            } else if text == "--debug" && !debug {
                debug = true;
            } else if text.starts_with('-') {
                return None;
            } else {
                positional.push(text);
            }
        }
        let (verb, stage) = match positional.as_slice() {
            [verb] => (*verb, None),
            [verb, stage] => (*verb, Some(stage.to_string())),
            _ => return None,
        };
        if verb != "hook" {
            return None;
        }
        let config = config.or_else(|| env_config.filter(|v| !v.is_empty()).map(PathBuf::from));
        Some(Cli {
            config,
            debug,
            command: Command::Hook { stage },
        })
    }
}

fn load_config(cli: &Cli) -> Result<Config> {
    let (path, explicit) = match &cli.config {
        Some(path) => (path.clone(), true),
        None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
    };
    let mut config = Config::load(&path, explicit)?;
    config.debug |= cli.debug;
    Ok(config)
}

/// Runs one command line; the caller prints the error chain and exits non-zero.
pub fn run(cli: Cli) -> Result<()> {
    let config = load_config(&cli)?;
    let logger = Logger::new(config.log.clone(), config.debug);
    match cli.command {
        Command::Hook { stage } => run_hook(stage.as_deref(), config, logger),
        Command::Attach(args) => {
            let id = args
                .id
                .clone()
                .unwrap_or_else(|| format!("pid-{}", args.pid));
            let settings = Settings::collect(&args.annotations(), &[], false)?;
            // The operator is at the keyboard: ad-hoc requests are theirs
            // to make, whatever the policy says about containers.
            let policy = crate::config::Policy {
                allow_adhoc: true,
                ..config.policy.clone()
            };
            let request = request::parse(&id, &settings, &policy)
                .with_context(|| format!("container {id}"))?
                .with_context(|| format!("container {id}: no network type given"))?;
            let ctx = net::Context::new(config, logger)?;
            let target = Target::process(&id, args.pid);
            let attached = net::attach(&ctx, &request, &target).map_err(|e| {
                log_failure(&ctx.logger, "attach", &id, &e);
                e.context(format!("container {id}"))
            })?;
            for attached in attached {
                println!(
                    "{id}: {} {} mac {} on {}",
                    attached.ifname, attached.address, attached.mac, attached.parent
                );
            }
            Ok(())
        }
        Command::Detach { pid, id } => {
            let ctx = net::Context::new(config, logger)?;
            let id = match id {
                Some(id) => id,
                None => {
                    let pid = pid.expect("clap requires --pid or --id");
                    find_by_pid(&ctx, pid)?
                        .with_context(|| format!("no container attached to pid {pid}"))?
                }
            };
            let records = net::detach(&ctx, &id, pid).with_context(|| format!("container {id}"))?;
            for record in records {
                let addresses: Vec<&str> = [record.ip.as_str()]
                    .into_iter()
                    .chain(record.ip6.as_deref())
                    .filter(|a| !a.is_empty())
                    .collect();
                println!("{id}: released {}", addresses.join(","));
            }
            Ok(())
        }
        Command::Ls { json } => {
            let ctx = net::Context::new(config, logger)?;
            let records = all_records(&ctx)?;
            let mut out = std::io::stdout().lock();
            if json {
                let list: Vec<serde_json::Value> =
                    records.iter().map(|(id, r)| record_json(id, r)).collect();
                writeln!(out, "{}", serde_json::to_string_pretty(&list)?)?;
            } else {
                writeln!(
                    out,
                    "{:<24} {:<5} {:<9} {:<19} {:<17} {:<10} {:<12} NETWORK",
                    "CONTAINER", "TYPE", "STATE", "ADDRESS", "MAC", "PARENT", "HOST"
                )?;
                for (id, r) in &records {
                    let short: String = id.chars().take(24).collect();
                    writeln!(
                        out,
                        "{short:<24} {:<5} {:<9} {:<19} {:<17} {:<10} {:<12} {}",
                        r.network_type(),
                        r.state.as_str(),
                        r.ip.split(',')
                            .chain(r.ip6.as_deref())
                            .filter(|a| !a.is_empty())
                            .collect::<Vec<_>>()
                            .join(","),
                        r.mac,
                        r.host_interface,
                        r.host,
                        r.network.as_deref().unwrap_or("-")
                    )?;
                }
            }
            Ok(())
        }
        Command::Gc { dry_run } => {
            let ctx = net::Context::new(config, logger)?;
            let releases = crate::gc::run(&ctx, dry_run)?;
            let verb = if dry_run { "would release" } else { "released" };
            for release in &releases {
                println!(
                    "{verb} {} {} ({})",
                    release.container_id, release.address, release.reason
                );
            }
            if releases.is_empty() {
                println!("nothing to release");
            }
            Ok(())
        }
        Command::Publish {
            port,
            service,
            container,
        } => {
            let ctx = net::Context::new(config, logger)?;
            publish(&ctx, &container, &port, service.as_deref())
                .with_context(|| format!("container {container}"))
        }
        Command::Unpublish { container } => {
            let ctx = net::Context::new(config, logger)?;
            match discovery::withdraw(ctx.store()?, &ctx.keys, &container)? {
                Some(r) => println!("{container}: withdrew {} {}", r.service, r.check_address()),
                None => anyhow::bail!("container {container}: no service is registered"),
            }
            Ok(())
        }
        Command::Lookup { name, json } => {
            let ctx = net::Context::new(config, logger)?;
            let service = ServiceName::parse(&name)
                .with_context(|| format!("service {name:?}: {}", ServiceName::EXPECTED))?;
            let endpoints = discovery::endpoints(ctx.store()?, &ctx.keys, service.as_str())?;
            if json {
                println!("{}", serde_json::to_string_pretty(&endpoints)?);
                return Ok(());
            }
            if endpoints.is_empty() {
                anyhow::bail!("service {service}: no live endpoints");
            }
            for e in &endpoints {
                println!("{} {} {}", e.socket_addresses(), e.container, e.host);
            }
            Ok(())
        }
        Command::Network(command) => {
            let ctx = net::Context::new(config, logger)?;
            network::run_network(&ctx, command)
        }
        Command::Vlan(command) => {
            let ctx = net::Context::new(config, logger)?;
            network::run_vlan(&ctx, command)
        }
        Command::CreateVlan(args) => {
            let ctx = net::Context::new(config, logger)?;
            network::run_vlan(&ctx, VlanCommand::Create(args))
        }
        Command::Doctor { json } => {
            let ctx = net::Context::new(config, logger)?;
            crate::doctor::run(&ctx, json)
        }
        Command::Completions { shell } => {
            docs::completions(shell, &mut std::io::stdout());
            Ok(())
        }
        Command::Man { dir } => docs::man_pages(&dir),
        Command::Daemon {
            exit_when_idle,
            metrics,
        } => {
            let ctx = net::Context::new(config, logger)?;
            if let Some(listen) = metrics {
                let scraper = std::sync::Mutex::new(net::Context::new(
                    ctx.config.clone(),
                    ctx.logger.clone(),
                )?);
                crate::metrics::serve(listen, move || {
                    let ctx = scraper.lock().unwrap_or_else(|e| e.into_inner());
                    crate::metrics::refresh_from_store(&ctx);
                    crate::tally::read(&crate::tally::path(&ctx.config)).to_prometheus()
                })?;
            }
            crate::daemon::run(&ctx, exit_when_idle)
        }
        Command::Dns {
            listen,
            domain,
            forward,
            forward_clients,
            metrics,
        } => {
            let ctx = net::Context::new(config, logger)?;
            if let Some(listen) = metrics {
                crate::metrics::serve(listen, String::new)?;
            }
            let forward_clients = if forward_clients.is_empty() {
                discovery::dns::ForwardClients::Served
            } else {
                discovery::dns::ForwardClients::Listed(
                    forward_clients
                        .iter()
                        .map(|p| discovery::dns::Prefix::parse(p))
                        .collect::<Result<_>>()?,
                )
            };
            let options = discovery::dns::DnsOptions {
                listen,
                domain: discovery::dns::DnsOptions::parse_domain(&domain)?,
                others: match forward {
                    Some(upstream) => discovery::dns::Others::Forward(upstream),
                    None => discovery::dns::Others::Refuse,
                },
                forward_clients,
            };
            discovery::dns::serve(&ctx, &options)
        }
        Command::Inspect { id } => {
            let ctx = net::Context::new(config, logger)?;
            let record = ipam::load_flat(ctx.store()?, &ctx.keys, &id)?
                .with_context(|| format!("no network record for container {id}"))?;
            let mut value = record_json(&id, &record);
            // The limits in force, read back from the kernel.
            if let (Some(pid), Some(ifname)) = (record.pid, &record.ifname) {
                let netns = PathBuf::from(format!("/proc/{pid}/ns/net"));
                if record.state == crate::record::State::Running && netns.exists() {
                    let mut container = crate::netlink::Netlink::open_in_netns(&netns)?;
                    let mut read_back = |device: &str| -> Result<serde_json::Value> {
                        let Some(link) = container.link_by_name(device)? else {
                            return Ok(serde_json::Value::Null);
                        };
                        Ok(match container.root_tbf(link.index)? {
                            Some(t) => serde_json::json!({
                                "device": device,
                                "rate_kbit": u64::from(t.rate) / 125,
                                "burst": t.burst,
                                "limit": t.limit,
                            }),
                            None => serde_json::Value::Null,
                        })
                    };
                    let egress = read_back(ifname)?;
                    let ingress = match record.ingress.as_ref().and_then(|i| i.device.clone()) {
                        Some(device) => read_back(&device)?,
                        None => serde_json::Value::Null,
                    };
                    value["kernel"] = serde_json::json!({"egress": egress, "ingress": ingress});
                }
            }
            println!("{}", serde_json::to_string_pretty(&value)?);
            Ok(())
        }
    }
}

/// `macvlan publish`: registers a service of a running container of this host.
fn publish(ctx: &net::Context, id: &str, port: &str, service: Option<&str>) -> Result<()> {
    let port = request::parse_port(port)
        .with_context(|| format!("invalid --port {port:?}: expected a TCP port from 1 to 65535"))?;
    let record = ipam::load_flat(ctx.store()?, &ctx.keys, id)?
        .context("no network record; publish works for containers on a macvlan network")?;
    if !ctx.owns(&record) {
        anyhow::bail!(
            "runs on host {}; publish it there (the health check runs on the container's host)",
            record.host
        );
    }
    let pid = match (record.state, record.pid) {
        (crate::record::State::Running, Some(pid)) => pid,
        _ => anyhow::bail!("is not running (state {})", record.state.as_str()),
    };
    let service = match service {
        Some(name) => ServiceName::parse(name)
            .with_context(|| format!("invalid --service {name:?}: {}", ServiceName::EXPECTED))?,
        None => {
            let hostname = container_hostname(pid)?;
            ServiceName::parse(&hostname).with_context(|| {
                format!("its hostname {hostname:?} is not a service name; give --service NAME")
            })?
        }
    };
    let v4 = record
        .ip
        .parse::<crate::cidr::Ipv4Cidr>()
        .ok()
        .map(|c| c.address);
    let v6 = record
        .ip6
        .as_deref()
        .and_then(|t| t.parse::<crate::cidr::Ipv6Cidr>().ok())
        .map(|c| c.address);
    let registration = discovery::Registration::new(
        &service,
        (v4, v6),
        port,
        id,
        (&ctx.host, &ctx.host_id),
        (
            Some(pid),
            std::path::Path::new(&format!("/proc/{pid}/ns/net")),
        ),
    )?;
    discovery::register(ctx.store()?, &ctx.keys, &registration)?;
    crate::daemon::ensure_running(&ctx.config).context("start the registrar (macvlan daemon)")?;
    println!(
        "{id}: registered {service} at {}; published while the port answers",
        registration.check_address()
    );
    Ok(())
}

/// The hostname inside a container (its UTS namespace).
fn container_hostname(pid: u32) -> Result<String> {
    std::thread::spawn(move || -> Result<String> {
        let path = format!("/proc/{pid}/ns/uts");
        let uts = std::fs::File::open(&path).with_context(|| format!("open {path}"))?;
        nix::sched::setns(&uts, nix::sched::CloneFlags::CLONE_NEWUTS)
            .context("enter the container's UTS namespace")?;
        Ok(nix::unistd::gethostname()?.to_string_lossy().into_owned())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("hostname lookup panicked"))?
}

fn record_json(id: &str, record: &FlatRecord) -> serde_json::Value {
    let mut value = serde_json::to_value(record).expect("record serialises");
    if let Some(map) = value.as_object_mut() {
        map.insert("id".into(), id.into());
        map.insert("type".into(), record.network_type().into());
    }
    value
}

fn all_records(ctx: &net::Context) -> Result<Vec<(String, FlatRecord)>> {
    ipam::list_records(ctx.store()?, &ctx.keys)?
        .into_iter()
        .map(|(id, key, value)| {
            let record: FlatRecord =
                serde_json::from_str(&value).with_context(|| format!("corrupt record {key}"))?;
            Ok((id, record))
        })
        .collect()
}

fn find_by_pid(ctx: &net::Context, pid: u32) -> Result<Option<String>> {
    Ok(all_records(ctx)?
        .into_iter()
        .find(|(_, r)| r.pid == Some(pid))
        .map(|(id, _)| id))
}

fn log_failure(logger: &Logger, event: &str, id: &str, error: &anyhow::Error) {
    logger.log(
        Level::Error,
        event,
        &[("container", id), ("error", &format!("{error:#}"))],
    );
}

fn run_hook(stage: Option<&str>, config: Config, logger: Logger) -> Result<()> {
    let started = Instant::now();
    let startup_ms = crate::log::since_start_ms();
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .context("read the OCI state from stdin")?;
    let state = crate::oci::State::parse(&text)?;
    let id = state.id.clone();
    let stage_label = stage.unwrap_or(state.status.as_str()).to_string();
    let debug = config.debug;
    let (done_by, result) = crate::oci::hook::run_state(stage, state, &text, config, &logger);
    if let Err(e) = &result {
        logger.log(
            Level::Error,
            "hook",
            &[
                ("container", &id),
                ("stage", &stage_label),
                ("by", done_by.as_str()),
                (
                    "duration_ms",
                    &format!("{:.1}", started.elapsed().as_secs_f64() * 1000.0),
                ),
                ("error", &format!("{e:#}")),
            ],
        );
    } else if debug {
        // From main to the hook's start (arguments, configuration), the
        // hook's own work, and from main to here.
        logger.log(
            Level::Debug,
            "hook",
            &[
                ("container", &id),
                ("stage", &stage_label),
                ("by", done_by.as_str()),
                ("startup_ms", &format!("{startup_ms:.2}")),
                (
                    "hook_ms",
                    &format!("{:.2}", started.elapsed().as_secs_f64() * 1000.0),
                ),
                ("main_ms", &format!("{:.2}", crate::log::since_start_ms())),
            ],
        );
    }
    result.map_err(|e| e.context(format!("container {id}: {stage_label}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hook's short path gives what clap gives, and leaves to clap
    /// whatever it does not fully understand.
    #[test]
    fn hook_command_lines_parse_as_clap_parses_them() {
        let env = std::env::var_os("MACVLAN_CONFIG");
        let taken = [
            "hook",
            "hook createRuntime",
            "hook poststop",
            "--config /etc/x.toml hook createRuntime",
            "--config=/etc/x.toml hook",
            "hook --config /etc/x.toml poststop",
            "hook createRuntime --debug",
            "--debug --config /a hook prestart",
        ];
        for line in taken {
            let args: Vec<std::ffi::OsString> = line.split(' ').map(Into::into).collect();
            let fast = Cli::hook_only(&args, env.clone()).unwrap_or_else(|| panic!("{line}"));
            let clap = Cli::try_parse_from(std::iter::once("macvlan".into()).chain(args))
                .unwrap_or_else(|e| panic!("{line}: {e}"));
            assert_eq!(format!("{fast:?}"), format!("{clap:?}"), "{line}");
        }
        let left = [
            "",
            "hook --help",
            "-h",
            "hook -x",
            "hook a b",
            "ls",
            "attach hook",
            "--config",
            "hook --version",
            "--confi /x hook",
            "--config /a --config /b hook",
            "--config=/a hook --config /b",
            "--debug hook --debug",
        ];
        for line in left {
            let args: Vec<std::ffi::OsString> = line
                .split(' ')
                .filter(|a| !a.is_empty())
                .map(Into::into)
                .collect();
            assert!(Cli::hook_only(&args, env.clone()).is_none(), "{line}");
        }
        let args: Vec<std::ffi::OsString> = vec!["hook".into()];
        let from_env = Cli::hook_only(&args, Some("/etc/env.toml".into())).unwrap();
        assert_eq!(from_env.config, Some(PathBuf::from("/etc/env.toml")));
    }

    /// The hook's early path (before the C library) reads the same command
    /// lines as `hook_only`, and leaves `--debug` and what it leaves to
    /// clap to the full path.
    #[test]
    fn the_early_hook_reads_what_hook_only_reads() {
        use crate::oci::passthrough::hook_call;
        for line in [
            "hook",
            "hook createRuntime",
            "--config /etc/x.toml hook createRuntime",
            "--config=/etc/x.toml hook",
            "hook --config /etc/x.toml poststop",
            "hook createRuntime --debug",
            "hook --help",
            "hook a b",
            "attach hook",
            "--config",
            "--config /a --config /b hook",
            "--config= hook",
            "hook poststop\u{e9}",
        ] {
            let args: Vec<&[u8]> = line.split(' ').map(str::as_bytes).collect();
            let early = hook_call(&args);
            let os: Vec<std::ffi::OsString> = line.split(' ').map(Into::into).collect();
            let full = Cli::hook_only(&os, None);
            match (early, full) {
                (Some(early), Some(full)) => {
                    let Command::Hook { stage } = full.command else {
                        panic!("{line}")
                    };
                    let utf8 = |b: &[u8]| std::str::from_utf8(b).unwrap().to_string();
                    assert_eq!(
                        early.config.map(|c| PathBuf::from(utf8(c))),
                        full.config,
                        "{line}"
                    );
                    assert_eq!(early.stage.map(utf8), stage, "{line}");
                    assert!(!full.debug, "{line}");
                }
                (None, Some(full)) => assert!(
                    full.debug
                        || full.config.as_deref() == Some(std::path::Path::new(""))
                        || !line.is_ascii(),
                    "{line}"
                ),
                (Some(_), None) => panic!("{line}: the early path takes what the full one leaves"),
                (None, None) => {}
            }
        }
    }
}
