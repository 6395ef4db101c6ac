//! `macvlan doctor`: what this host can do — the kernel features the
//! network types need (tried for real in a throwaway network namespace),
//! the privileges, runc, and the store — and how to get what is missing.

use std::path::Path;

use anyhow::{bail, Result};

use crate::net::Context;
use crate::netlink::{IpvlanFlag, IpvlanMode, IpvlanSpec, MacvlanMode, MacvlanSpec, Netlink};

/// One check's outcome.
struct Check {
    what: &'static str,
    /// `None`: works.
    problem: Option<String>,
    /// What to do about it, and what does not work without it.
    remedy: &'static str,
}

/// Tries the kernel features in a network namespace of a short-lived
/// thread's own (unshare moves only that thread; the namespace and every
/// device in it go when the thread ends).
fn kernel_checks() -> Vec<Check> {
    std::thread::spawn(|| {
        if let Err(e) = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET) {
            return vec![Check {
                what: "a throwaway network namespace",
                problem: Some(format!("unshare: {e}")),
                remedy: "run as root (CAP_SYS_ADMIN)",
            }];
        }
        let mut netlink = match Netlink::open() {
            Ok(n) => n,
            Err(e) => {
                return vec![Check {
                    what: "netlink",
                    problem: Some(e.to_string()),
                    remedy: "run as root",
                }]
            }
        };
        let mut checks = Vec::new();
        let mut parent = None;
        let veth = netlink
            .create_veth("probe0", "probe1")
            .map_err(|e| e.to_string())
            .and_then(|()| {
                netlink
                    .link_by_name("probe0")
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| "probe0 vanished".to_string())
            });
        match veth {
            Ok(link) => {
                parent = Some(link);
                checks.push(ok("veth (to try the rest on)"));
            }
            Err(e) => checks.push(Check {
                what: "veth (to try the rest on)",
                problem: Some(e),
                remedy: "load the veth module; the other kernel checks need it",
            }),
        }
        if let Some(parent) = parent {
            let macvlan = netlink.create_macvlan(&MacvlanSpec {
                name: "probemv",
                parent_index: parent.index,
                mode: MacvlanMode::Bridge,
                mac: None,
                mtu: None,
                netns: None,
            });
            checks.push(result(
                "macvlan",
                macvlan.map_err(|e| e.to_string()),
                "load the macvlan module (CONFIG_MACVLAN); no network type works without it",
            ));
            // A device carries macvlans or ipvlans, not both: the veth's
            // other end is the ipvlan probe's parent.
            let other = netlink
                .link_by_name("probe1")
                .map_err(|e| e.to_string())
                .and_then(|l| l.ok_or_else(|| "probe1 vanished".to_string()));
            let ipvlan = |mode, name: &str| {
                other.clone().and_then(|peer| {
                    netlink_ipvlan(name, peer.index, mode)
                })
            };
            checks.push(result(
                "ipvlan",
                ipvlan(IpvlanMode::L2, "probeiv"),
                "load the ipvlan module (CONFIG_IPVLAN); --driver ipvlan networks need it",
            ));
            checks.push(result(
                "ipvlan L3S",
                ipvlan(IpvlanMode::L3s, "probeiv3s"),
                "ipvlan's L3S mode needs netfilter (CONFIG_NETFILTER) besides CONFIG_IPVLAN; --mode l3s needs it",
            ));
            checks.push(result(
                "802.1Q VLAN",
                netlink
                    .create_vlan("probe0.7", parent.index, 7)
                    .map_err(|e| e.to_string()),
                "load the 8021q module (CONFIG_VLAN_8021Q); TYPE=vlan and `vlan gateway` need it",
            ));
            let tbf = crate::netlink::tbf::Tbf::new(10_000, 12_500, 50)
                .ok_or_else(|| "tbf parameters".to_string())
                .and_then(|tbf| {
                    netlink
                        .replace_root_tbf(parent.index, &tbf)
                        .map_err(|e| e.to_string())
                });
            checks.push(result(
                "tbf qdisc",
                tbf,
                "load sch_tbf (CONFIG_NET_SCH_TBF); RATE and INGRESS_RATE need it",
            ));
            let ipv6 = if !std::path::Path::new("/proc/sys/net/ipv6").exists() {
                Err("this kernel has IPv6 disabled (booted with ipv6.disable=1?)".to_string())
            } else {
                netlink
                    .add_ipv6_address(parent.index, "2001:db8::1".parse().expect("address"), 64, true)
                    .map_err(|e| e.to_string())
            };
            checks.push(result(
                "IPv6",
                ipv6,
                "boot without ipv6.disable=1 (CONFIG_IPV6); --ipv6/--subnet6 networks and IP6 need it",
            ));
            checks.push(result(
                "IPv6 optimistic DAD",
                if std::path::Path::new("/proc/sys/net/ipv6/conf/all/optimistic_dad").exists() {
                    Ok(())
                } else {
                    Err("not in this kernel (CONFIG_IPV6_OPTIMISTIC_DAD)".to_string())
                },
                "optional: without it a SLAAC container waits a second longer for its address",
            ));
        }
        checks.push(result(
            "ifb",
            netlink.create_ifb("probeifb").map_err(|e| e.to_string()),
            "load the ifb module (CONFIG_IFB); INGRESS_RATE needs it",
        ));
        checks
    })
    .join()
    .unwrap_or_else(|_| {
        vec![Check {
            what: "kernel checks",
            problem: Some("the check thread panicked".into()),
            remedy: "",
        }]
    })
}

/// Makes an ipvlan on `parent` with a socket of its own (the probe thread's
/// namespace).
fn netlink_ipvlan(name: &str, parent: u32, mode: IpvlanMode) -> std::result::Result<(), String> {
    let mut netlink = Netlink::open().map_err(|e| e.to_string())?;
    netlink
        .create_ipvlan(&IpvlanSpec {
            name,
            parent_index: parent,
            mode,
            flag: IpvlanFlag::Bridge,
            mtu: None,
            netns: None,
        })
        .map_err(|e| e.to_string())
}

fn ok(what: &'static str) -> Check {
    Check {
        what,
        problem: None,
        remedy: "",
    }
}

fn result(what: &'static str, outcome: Result<(), String>, remedy: &'static str) -> Check {
    Check {
        what,
        problem: outcome.err(),
        remedy,
    }
}

/// The etcd password file must not be readable by everyone.
fn secrets(ctx: &Context) -> Check {
    let outcome = match &ctx.config.etcd.password_file {
        Some(path) if crate::files::readable_by_others(path) => {
            Err(format!("{} is readable by other users", path.display()))
        }
        _ => Ok(()),
    };
    result(
        "etcd password_file mode",
        outcome,
        "chmod 0600 (or 0640 with a group of its own) the password file",
    )
}

/// Whether `program` names an executable file, directly or on PATH.
fn find_program(program: &str) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |path: &Path| {
        path.metadata()
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if program.contains('/') {
        let path = Path::new(program);
        return executable(path).then(|| path.to_path_buf());
    }
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|dir| dir.join(program))
        .find(|path| executable(path))
}

/// A broadcast sent by a macvlan in bridge mode is copied to every other
/// macvlan on the same parent through the CPU's input backlog (netif_rx);
/// with about as many macvlans as `net.core.netdev_max_backlog` the copies
/// fill it and the rest — on a veth parent even the copy for the wire — are
/// dropped: ARP and DHCP stop working (measured by benches/scale.rs: 1,000
/// DHCP containers on one veth parent, backlog 1,000).
fn broadcast_capacity(ctx: &Context) -> Check {
    let what = "broadcast capacity (net.core.netdev_max_backlog vs macvlans per parent)";
    let backlog = std::fs::read_to_string("/proc/sys/net/core/netdev_max_backlog")
        .ok()
        .and_then(|t| t.trim().parse::<usize>().ok());
    let records = ctx
        .store()
        .and_then(|store| Ok(crate::ipam::list_records(store, &ctx.keys)?));
    let (Some(backlog), Ok(records)) = (backlog, records) else {
        return ok(what);
    };
    let mut per_parent: std::collections::BTreeMap<String, usize> = Default::default();
    for (_, _, text) in records {
        if let Ok(record) = serde_json::from_str::<crate::record::FlatRecord>(&text) {
            if ctx.owns(&record) && record.state == crate::record::State::Running {
                *per_parent.entry(record.host_interface).or_default() += 1;
            }
        }
    }
    result(
        what,
        crowded_parent(&per_parent, backlog),
        "raise it above the number of containers per parent, e.g. sysctl -w net.core.netdev_max_backlog=4096",
    )
}

/// Host access: every running container of this host on a
/// `--host-access` network has its route through the network's host-side
/// device.
fn host_access(ctx: &Context) -> Check {
    let what = "host access (devices and routes of --host-access networks)";
    let found = (|| -> Result<Vec<String>> {
        let store = ctx.store()?;
        let networks = crate::network::list(store, &ctx.keys)?;
        let mut problems = Vec::new();
        for network in networks.iter().filter(|n| n.host_access) {
            let routes = crate::net::host_access::state(network)?;
            for (id, _, text) in crate::ipam::list_records(store, &ctx.keys)? {
                let Ok(record) = serde_json::from_str::<crate::record::FlatRecord>(&text) else {
                    continue;
                };
                if !ctx.owns(&record)
                    || record.state != crate::record::State::Running
                    || record.network.as_deref() != Some(network.name.as_str())
                {
                    continue;
                }
                let address = record
                    .ip
                    .parse::<crate::cidr::Ipv4Cidr>()
                    .map(|c| c.address)
                    .ok();
                match (&routes, address) {
                    (None, _) => problems.push(format!(
                        "{} is missing though {id} runs on network {}",
                        network.host_device(),
                        network.name
                    )),
                    (Some((device, routed)), Some(address)) if !routed.contains(&address) => {
                        problems.push(format!("no route to {id}'s {address} through {device}"))
                    }
                    _ => {}
                }
            }
        }
        Ok(problems)
    })();
    let problem = match found {
        Ok(problems) if problems.is_empty() => None,
        Ok(problems) => Some(problems.join("; ")),
        Err(e) => Some(format!("{e:#}")),
    };
    Check {
        what,
        problem,
        remedy: "restart the containers named (their hooks make the device and routes), or run macvlan gc for ones that are gone",
    }
}

/// An error naming the parent whose macvlans come near `backlog`.
fn crowded_parent(
    per_parent: &std::collections::BTreeMap<String, usize>,
    backlog: usize,
) -> Result<(), String> {
    match per_parent.iter().max_by_key(|(_, n)| **n) {
        Some((parent, count)) if *count * 10 >= backlog * 8 => Err(format!(
            "{count} running containers on {parent} and netdev_max_backlog is {backlog}: broadcasts (ARP, DHCP) from them are dropped once the copies to the others fill the backlog"
        )),
        _ => Ok(()),
    }
}

/// Runs every check and prints them (as JSON with `json`); fails when one
/// found a problem.
pub fn run(ctx: &Context, json: bool) -> Result<()> {
    let mut checks = Vec::new();
    checks.push(result(
        "privileges (CAP_NET_ADMIN, CAP_SYS_ADMIN)",
        crate::net::check_privileges().map_err(|e| format!("{e:#}")),
        "run hooks and admin commands as root",
    ));
    checks.extend(kernel_checks());
    checks.push(result(
        "runc",
        find_program(&ctx.config.runtime)
            .map(|_| ())
            .ok_or_else(|| format!("{:?} not found", ctx.config.runtime)),
        "install runc, or set `runtime` in the config; the macvlan-runc wrapper needs it",
    ));
    let store = ctx
        .store()
        .and_then(|store| Ok(store.list(&ctx.keys.vlan_prefix())?))
        .map(|_| ())
        .map_err(|e| format!("{e:#}"));
    checks.push(result(
        "store",
        store,
        "check `store` (and [etcd]) in the config; every hook needs the store",
    ));
    checks.push(broadcast_capacity(ctx));
    checks.push(host_access(ctx));
    checks.push(secrets(ctx));
    if let Ok(store) = ctx.store() {
        if let Ok((_, corrupt)) = crate::network::list_all(store, &ctx.keys) {
            checks.push(result(
                "network records",
                match corrupt.is_empty() {
                    true => Ok(()),
                    false => Err(corrupt
                        .iter()
                        .map(|e| e.to_string())
                        .collect::<Vec<_>>()
                        .join("; ")),
                },
                "remove the corrupt network (macvlan network rm NAME) and create it again; attaches skip it meanwhile",
            ));
        }
    }
    let problems = checks.iter().filter(|c| c.problem.is_some()).count();
    if json {
        let list: Vec<serde_json::Value> = checks
            .iter()
            .map(|c| {
                serde_json::json!({
                    "check": c.what,
                    "ok": c.problem.is_none(),
                    "problem": c.problem,
                    "remedy": c.problem.as_ref().map(|_| c.remedy),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
    }
    for check in checks.iter().filter(|_| !json) {
        match &check.problem {
            None => println!("ok       {}", check.what),
            Some(problem) => {
                println!("MISSING  {}: {problem}", check.what);
                if !check.remedy.is_empty() {
                    println!("         → {}", check.remedy);
                }
            }
        }
    }
    if problems > 0 {
        bail!(
            "{problems} problem{} found",
            if problems == 1 { "" } else { "s" }
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warns_when_a_parent_nears_the_backlog() {
        let mut per_parent = std::collections::BTreeMap::new();
        per_parent.insert("lan0".to_string(), 100);
        assert!(crowded_parent(&per_parent, 1000).is_ok());
        per_parent.insert("lan1".to_string(), 800);
        let problem = crowded_parent(&per_parent, 1000).unwrap_err();
        assert!(
            problem.contains("800 running containers on lan1"),
            "{problem}"
        );
        assert!(crowded_parent(&per_parent, 4096).is_ok());
    }
}
