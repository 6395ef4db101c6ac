//! The optional external client (`[dhcp] client = "udhcpc"`), as the
//! original system ran one: busybox udhcpc, started on the host inside the
//! container's namespace, keeps and renews the lease itself. This binary is
//! its script, so the address is still applied over netlink and the lease
//! still recorded in the store.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

use crate::config::{Config, DEFAULT_CONFIG_PATH};
use crate::log::{Level, Logger};
use crate::net::Context;
use crate::netlink::Netlink;
use crate::record::{now, DhcpLease};

/// Set in udhcpc's environment to the id of the container it works for;
/// `macvlan` run with it set acts as udhcpc's script (see `src/bin/macvlan.rs`).
pub const SCRIPT_ENV: &str = "MACVLAN_DHCP_SCRIPT";

/// Starts udhcpc for `ifname` inside the namespace `netns`, in a session
/// of its own (the runtime must not wait for it), asking for `requested`
/// (a restarted container's address) and releasing its lease when it is
/// told to stop (`-R`). Returns its pid.
pub fn start(
    config: &Config,
    program: &Path,
    netns: &File,
    ifname: &str,
    container_id: &str,
    requested: Option<std::net::Ipv4Addr>,
) -> Result<u32> {
    let script = std::env::current_exe().context("find the macvlan binary")?;
    let mut command = Command::new(program);
    crate::cni::scrub(&mut command);
    if program.file_name().is_some_and(|n| n == "busybox") {
        command.arg("udhcpc");
    }
    // Foreground (the pid stays ours), release on exit, a DISCOVER a second
    // and a second's pause after a failed round: the hook's own timeout
    // bounds the wait.
    command
        .args(["-f", "-R", "-T", "1", "-A", "1", "-i", ifname, "-s"])
        .arg(&script)
        .args(requested.map(|a| format!("-r{a}")))
        .env(SCRIPT_ENV, container_id)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(source) = &config.source {
        command.env("MACVLAN_CONFIG", source);
    }
    let fd = netns.as_raw_fd();
    // SAFETY: setns and setsid are async-signal-safe; `netns` outlives spawn.
    unsafe {
        command.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::setsid();
            Ok(())
        });
    }
    let child = command
        .spawn()
        .with_context(|| format!("start {}", program.display()))?;
    Ok(child.id())
}

/// Whether `pid` is still the udhcpc started for `container_id` (and not
/// a process that got its pid later).
fn is_our_client(pid: u32, container_id: &str) -> bool {
    let Ok(environment) = std::fs::read(format!("/proc/{pid}/environ")) else {
        return false;
    };
    let wanted = format!("{SCRIPT_ENV}={container_id}");
    environment
        .split(|b| *b == 0)
        .any(|entry| entry == wanted.as_bytes())
}

/// Stops the container's udhcpc (which then sends its RELEASE) and waits
/// up to 3 s for it to go. A client already gone is fine.
pub fn stop(pid: u32, container_id: &str) -> Result<()> {
    if !is_our_client(pid, container_id) {
        return Ok(());
    }
    // SAFETY: signalling a pid just checked to be our client.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    let started = Instant::now();
    while is_our_client(pid, container_id) {
        if started.elapsed() > Duration::from_secs(3) {
            // SAFETY: as above.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            bail!("udhcpc (pid {pid}) did not stop within 3s; killed");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// udhcpc's script: `event` is deconfig, bound, renew, leasefail or nak;
/// the lease is in udhcpc's environment variables. Runs inside the
/// container's namespace (udhcpc's).
pub fn script(container_id: &str, event: &str) -> Result<()> {
    let (path, explicit) = match std::env::var_os("MACVLAN_CONFIG") {
        Some(path) => (PathBuf::from(path), true),
        None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
    };
    let config = Config::load(&path, explicit)?;
    let logger = Logger::new(config.log.clone(), config.debug);
    let ctx = Context::new(config, logger)?;
    let result = apply(&ctx, container_id, event);
    if let Err(e) = &result {
        ctx.logger.log(
            Level::Error,
            "udhcpc-script",
            &[
                ("container", container_id),
                ("event", event),
                ("error", &format!("{e:#}")),
            ],
        );
    }
    result
}

fn variable(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The lease udhcpc reports in its environment.
fn lease_from_environment(now: u64) -> Result<DhcpLease> {
    let ip = variable("ip").context("udhcpc gave no ip")?;
    let prefix = match variable("mask") {
        Some(mask) => mask.parse::<u8>().context("udhcpc's mask")?,
        None => variable("subnet")
            .and_then(|s| s.parse::<std::net::Ipv4Addr>().ok())
            .map(|m| u32::from(m).leading_ones() as u8)
            .unwrap_or(24),
    };
    // No lease time: 0, which the lease rules refuse.
    let lease_time: u32 = variable("lease").and_then(|l| l.parse().ok()).unwrap_or(0);
    let addresses = |name: &str| -> Vec<std::net::Ipv4Addr> {
        variable(name)
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|a| a.parse().ok())
            .collect()
    };
    let lease = u64::from(lease_time);
    Ok(DhcpLease {
        address: format!("{ip}/{prefix}"),
        server: variable("serverid")
            .and_then(|s| s.parse().ok())
            .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED),
        router: addresses("router").first().copied(),
        dns: addresses("dns"),
        domain: variable("domain"),
        obtained_at: now,
        lease_time,
        renew_at: now + lease / 2,
        rebind_at: now + lease * 7 / 8,
        expires_at: now + lease,
    })
}

/// Holds udhcpc's lease to the same rules as the built-in client's (this
/// runs in the container's namespace: the host's addresses are not in view).
fn check_rules(ctx: &Context, record: &crate::record::FlatRecord, lease: &DhcpLease) -> Result<()> {
    let cidr = lease.cidr()?;
    let network = match &record.network {
        Some(name) => Some(crate::network::load(ctx.store()?, &ctx.keys, name)?),
        None => None,
    };
    let rules = super::rules::LeaseRules::new(&ctx.config, network.as_ref(), &[]);
    let reply = super::packet::Reply {
        kind: super::packet::ReplyKind::Ack,
        address: cidr.address,
        server: lease.server,
        prefix: cidr.prefix,
        mask: variable("subnet").and_then(|s| s.parse().ok()),
        router: lease.router,
        dns: Vec::new(),
        domain: None,
        lease_time: lease.lease_time,
        renewal: 0,
        rebinding: 0,
        message: None,
    };
    rules
        .check(&reply)
        .map_err(|refusal| anyhow::anyhow!("refused the lease {refusal}"))
}

fn apply(ctx: &Context, container_id: &str, event: &str) -> Result<()> {
    let ifname = variable("interface").context("udhcpc gave no interface")?;
    let mut netlink = Netlink::open().context("open netlink socket")?;
    let link = netlink
        .link_by_name(&ifname)?
        .with_context(|| format!("{ifname} not found"))?;
    let store = ctx.store()?;
    let record = crate::ipam::load_flat(store, &ctx.keys, container_id)?
        .with_context(|| format!("no record for container {container_id}"))?;
    match event {
        "bound" | "renew" => {
            let now = now();
            let lease = lease_from_environment(now)?;
            check_rules(ctx, &record, &lease)?;
            if let Some(old) = record.lease.as_ref().filter(|l| l.address != lease.address) {
                let old = old.cidr()?;
                let _ = netlink.delete_ipv4_address(link.index, old.address, old.prefix);
            }
            super::configure(&mut netlink, link.index, &lease, now, container_id)?;
            ctx.logger.log(
                Level::Info,
                if event == "bound" {
                    "dhcp-lease"
                } else {
                    "dhcp-renew"
                },
                &[
                    ("container", container_id),
                    ("address", &lease.address),
                    ("server", &lease.server.to_string()),
                    ("client", "udhcpc"),
                ],
            );
            crate::ipam::update_flat(store, &ctx.keys, container_id, |r| {
                r.ip = lease.address.clone();
                r.gateway = lease.router.map(|g| g.to_string());
                r.lease = Some(lease.clone());
                r.lease_pending = false;
                true
            })?;
        }
        "deconfig" => {
            netlink.set_up(link.index)?;
            if let Some(old) = &record.lease {
                let old = old.cidr()?;
                let _ = netlink.delete_ipv4_address(link.index, old.address, old.prefix);
                crate::ipam::update_flat(store, &ctx.keys, container_id, |r| {
                    r.lease = None;
                    true
                })?;
            }
        }
        _ => {}
    }
    Ok(())
}
