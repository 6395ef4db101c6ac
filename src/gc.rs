//! `macvlan gc`: removal is not a runtime call (`docker rm` never calls the
//! runtime), so releases are discovered: the records and addresses of
//! containers that no longer exist, or that stopped too long ago, go.

use anyhow::{Context as _, Result};

use crate::config::GcPolicy;
use crate::ipam;
use crate::log::Level;
use crate::net::Context;
use crate::record::{now, FlatRecord, State};

/// Why gc releases a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// No engine knows the container any more.
    Gone,
    /// Stopped for longer than the retention.
    StoppedTooLong { seconds: u64 },
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::Gone => write!(f, "container no longer exists"),
            Reason::StoppedTooLong { seconds } => write!(f, "stopped for {seconds} s"),
        }
    }
}

/// One record gc released (or, with a dry run, would release).
#[derive(Debug, Clone)]
pub struct Release {
    pub container_id: String,
    pub address: String,
    pub reason: Reason,
}

/// Whether process `pid` runs: it exists and is not a zombie (a killed
/// container's init stays one until its new parent reaps it).
fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // "pid (comm) S …": the state follows the last ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X'),
        Err(_) => false,
    }
}

/// Whether the engines still know container `id`.
pub fn container_exists(policy: &GcPolicy, id: &str, record: &FlatRecord) -> bool {
    // An id is one path segment; anything else cannot be an engine's directory.
    let plain_name = !id.contains('/') && id != "." && id != "..";
    if plain_name
        && policy
            .container_dirs
            .iter()
            .any(|dir| dir.join(id).exists())
    {
        return true;
    }
    // A CNI attachment: exists while the runtime's namespace does (the
    // same one: a path can be reused).
    if let Some(cni) = &record.cni {
        use std::os::unix::fs::MetadataExt;
        return record.from_this_boot()
            && std::fs::metadata(&cni.netns).is_ok_and(|m| Some(m.ino()) == record.netns_inode);
    }
    // `macvlan attach --pid` targets: exist while their process runs (a
    // pid from another boot may be anyone's now).
    record.state != State::Stopped
        && record.from_this_boot()
        && record.pid.is_some_and(process_alive)
}

/// What gc would do with one record, judged without side effects.
pub fn judge(policy: &GcPolicy, id: &str, record: &FlatRecord, now: u64) -> Option<Reason> {
    if !container_exists(policy, id, record) {
        return Some(Reason::Gone);
    }
    match (record.state, record.stopped_at, policy.stopped_retention) {
        (State::Stopped, Some(stopped_at), Some(retention)) => {
            let seconds = now.saturating_sub(stopped_at);
            (seconds >= retention.as_secs()).then_some(Reason::StoppedTooLong { seconds })
        }
        _ => None,
    }
}

/// Releases (or lists, with `dry_run`) the records of this host that gc finds.
pub fn run(ctx: &Context, dry_run: bool) -> Result<Vec<Release>> {
    let mut released = Vec::new();
    let mut leases_held = false;
    for (id, key, value) in ipam::list_records(ctx.store()?, &ctx.keys)? {
        let Ok(record) = serde_json::from_str::<FlatRecord>(&value) else {
            ctx.logger.log(
                Level::Error,
                "gc",
                &[("key", &key), ("error", "unreadable record; left alone")],
            );
            continue;
        };
        // In a shared store, only this host can judge its own containers.
        if !ctx.owns(&record) {
            continue;
        }
        leases_held |=
            (record.lease.is_some() || record.lease6.is_some() || record.client_pid.is_some())
                && record.state == State::Running;
        let container = crate::request::container_of(&id);
        // Running before a reboot: nothing of it runs now, whatever its
        // engine remembers; it is stopped (leases given back) as a
        // poststop would have.
        if record.state == State::Running
            && !record.from_this_boot()
            && container_exists(&ctx.config.gc, container, &record)
        {
            if !dry_run {
                crate::net::stopped(ctx, container)
                    .with_context(|| format!("mark {id} stopped (from an earlier boot)"))?;
                ctx.logger.log(
                    Level::Info,
                    "gc",
                    &[
                        ("container", &id),
                        ("address", &record.ip),
                        ("reason", "running in an earlier boot: marked stopped"),
                    ],
                );
            }
            continue;
        }
        let Some(reason) = judge(&ctx.config.gc, container, &record, now()) else {
            continue;
        };
        if !dry_run {
            // The record may have changed since the scan (a restart): release
            // only what still matches what was judged.
            if ipam::release_flat_if(ctx.store()?, &ctx.keys, &id, &value)?.is_none() {
                continue;
            }
            crate::net::host_access::remove_route(ctx, &id, &record);
            if let Some(written) = &record.resolv_conf {
                if let Err(e) = crate::oci::resolv::restore(written) {
                    ctx.logger.log(
                        Level::Error,
                        "gc",
                        &[("container", &id), ("error", &format!("{e:#}"))],
                    );
                }
            }
            // A DHCP lease whose container vanished without a poststop
            // goes back to its server too.
            if let Err(e) = crate::dhcp::give_back(ctx, &id, &record) {
                ctx.logger.log(
                    Level::Error,
                    "gc",
                    &[
                        ("container", &id),
                        ("address", &record.ip),
                        ("error", &format!("release the DHCP lease: {e:#}")),
                    ],
                );
            }
            ctx.logger.log(
                Level::Info,
                "gc",
                &[
                    ("container", &id),
                    ("address", &record.ip),
                    ("reason", &reason.to_string()),
                ],
            );
        }
        released.push(Release {
            container_id: id,
            address: record.ip.clone(),
            reason,
        });
    }
    if !dry_run {
        let orphans = crate::network::list(ctx.store()?, &ctx.keys)
            .map_err(anyhow::Error::from)
            .and_then(|networks| crate::net::host_access::remove_orphans(&networks));
        match orphans {
            Ok(removed) => {
                for name in removed {
                    ctx.logger.log(
                        Level::Info,
                        "gc",
                        &[
                            ("device", &name),
                            (
                                "reason",
                                "host-side device of a network no longer in the store",
                            ),
                        ],
                    );
                }
            }
            Err(e) => ctx.logger.log(
                Level::Error,
                "gc",
                &[("error", &format!("host-side devices left alone: {e:#}"))],
            ),
        }
    }
    // gc runs from a timer: if the daemon that renews this host's DHCP
    // leases was killed, this brings it back before the leases run out.
    if leases_held && !dry_run {
        crate::daemon::ensure_running(&ctx.config)
            .context("start the lease keeper (macvlan daemon)")?;
    }
    Ok(released)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(state: State, stopped_at: Option<u64>, pid: Option<u32>) -> FlatRecord {
        FlatRecord {
            state,
            stopped_at,
            pid,
            ..FlatRecord::sample("192.0.2.10/24")
        }
    }

    #[test]
    fn judges_by_engine_directories_and_retention() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("alive")).unwrap();
        let mut policy = GcPolicy {
            container_dirs: vec![dir.path().to_path_buf()],
            stopped_retention: None,
        };
        let stopped = record(State::Stopped, Some(1_000), None);
        assert_eq!(judge(&policy, "alive", &stopped, 100_000), None);
        assert_eq!(
            judge(&policy, "gone", &stopped, 100_000),
            Some(Reason::Gone)
        );
        assert_eq!(
            judge(&policy, "../alive", &stopped, 100_000),
            Some(Reason::Gone)
        );
        policy.stopped_retention = Some(std::time::Duration::from_secs(3600));
        assert_eq!(judge(&policy, "alive", &stopped, 1_000 + 3599), None);
        assert_eq!(
            judge(&policy, "alive", &stopped, 1_000 + 3600),
            Some(Reason::StoppedTooLong { seconds: 3600 })
        );
    }

    #[test]
    fn attached_processes_exist_while_they_run() {
        let policy = GcPolicy {
            container_dirs: vec![],
            stopped_retention: None,
        };
        let me = std::process::id();
        assert_eq!(
            judge(&policy, "pid-x", &record(State::Running, None, Some(me)), 0),
            None
        );
        assert_eq!(
            judge(
                &policy,
                "pid-x",
                &record(State::Running, None, Some(u32::MAX)),
                0
            ),
            Some(Reason::Gone)
        );
    }
}
