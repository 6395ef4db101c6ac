//! The registrar, one thread of `macvlan daemon` ([`crate::daemon`]):
//! health-checks every service registered on this host from inside its
//! container's network namespace and keeps the passing ones published
//! under a store lease.

use std::collections::HashMap;
use std::fs::File;
use std::net::TcpStream;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};

use super::{Endpoint, Registration};
use crate::log::Level;
use crate::net::Context;
use crate::store::{LeaseId, Op};

/// How often a service that is not up is checked.
pub const WAITING_INTERVAL: Duration = Duration::from_millis(250);

/// Health checks running at once.
const CONCURRENT_CHECKS: usize = 32;

/// How long a health check waits for the TCP handshake.
const CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// What one health check found.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Health {
    /// The port answered; `from_host`: to a connect from the host's own
    /// namespace (host access), else from inside the container's.
    Up {
        from_host: bool,
    },
    Down(String),
    /// The container's namespace is gone.
    Gone,
}

/// Connects to the service: from the host's own namespace where the host
/// routes to the container (host access), else from inside the container's
/// namespace — a host cannot reach its own macvlan children through the
/// parent interface.
fn check(registration: &Registration) -> Health {
    if !registration.container_alive() {
        return Health::Gone;
    }
    // Where the host routes to the container, no namespace to enter; if
    // that fails (the host has no address to reach it from, say), the
    // check from inside decides.
    if registration.from_host {
        let address = registration.check_address();
        if TcpStream::connect_timeout(&address, CHECK_TIMEOUT).is_ok() {
            return Health::Up { from_host: true };
        }
    }
    let path = registration.netns_path();
    let inode = registration.netns_inode;
    let address = registration.check_address();
    // setns moves only the calling thread; this one ends with the check.
    let result = std::thread::spawn(move || -> Result<()> {
        let netns = File::open(&path).with_context(|| format!("open {path}"))?;
        if netns.metadata()?.ino() != inode {
            bail!("namespace changed");
        }
        nix::sched::setns(&netns, nix::sched::CloneFlags::CLONE_NEWNET)
            .context("enter the container's network namespace")?;
        TcpStream::connect_timeout(&address, CHECK_TIMEOUT)
            .with_context(|| format!("connect to {address}"))?;
        Ok(())
    })
    .join();
    match result {
        Ok(Ok(())) => Health::Up { from_host: false },
        Ok(Err(_)) if !registration.container_alive() => Health::Gone,
        Ok(Err(e)) => Health::Down(format!("{e:#}")),
        Err(_) => Health::Down("health check thread panicked".into()),
    }
}

/// The registrar's memory between rounds.
#[derive(Default)]
pub struct Registrar {
    lease: Option<LeaseId>,
    /// What each container has published, and under which lease.
    published: HashMap<String, (LeaseId, String, Endpoint)>,
    /// The last health seen, to log transitions only.
    last: HashMap<String, Health>,
}

impl Registrar {
    /// Whether some registration has not been seen up yet: those are
    /// checked more often, so a new service is published soon after its
    /// port opens.
    pub fn waiting(&self) -> bool {
        self.last.values().any(|h| !matches!(h, Health::Up { .. }))
    }

    /// One pass over this host's registrations. Returns how many there are.
    pub fn round(&mut self, ctx: &Context) -> Result<usize> {
        let store = ctx.store()?;
        let registrations: Vec<Registration> = super::registrations(store, &ctx.keys)?
            .into_iter()
            .filter(|r| r.owned_by(&ctx.host_id, &ctx.host))
            .collect();
        self.published
            .retain(|id, _| registrations.iter().any(|r| &r.container == id));
        self.last
            .retain(|id, _| registrations.iter().any(|r| &r.container == id));
        if registrations.is_empty() {
            crate::metrics::clear("macvlan_registrations");
            return Ok(0);
        }
        let lease = match self.lease {
            Some(lease) if store.keep_alive(lease)? => lease,
            _ => {
                // A new lease (first round, or the old one ran out while
                // this process was stopped): everything is put again.
                self.published.clear();
                let lease = store.grant_lease(ctx.config.discovery.ttl)?;
                self.lease = Some(lease);
                lease
            }
        };
        // The checks run on at most CONCURRENT_CHECKS threads (each check
        // enters a namespace on a thread of its own): a host with a
        // thousand services must not start a thousand threads every round.
        let next = std::sync::atomic::AtomicUsize::new(0);
        let results: Vec<std::sync::Mutex<Option<Health>>> = registrations
            .iter()
            .map(|_| std::sync::Mutex::new(None))
            .collect();
        std::thread::scope(|scope| {
            for _ in 0..CONCURRENT_CHECKS.min(registrations.len()) {
                scope.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(registration) = registrations.get(i) else {
                        break;
                    };
                    let health = check(registration);
                    *results[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(health);
                });
            }
        });
        let results = results.into_iter().map(|slot| {
            slot.into_inner()
                .unwrap_or_else(|e| e.into_inner())
                .unwrap_or(Health::Down("check panicked".into()))
        });
        let (mut up, mut down) = (0, 0);
        for (registration, health) in registrations.iter().zip(results) {
            let id = &registration.container;
            match &health {
                Health::Up { .. } => up += 1,
                Health::Down(_) => {
                    down += 1;
                    crate::metrics::count("macvlan_health_check_failures", &[]);
                }
                Health::Gone => {}
            }
            let key = ctx.keys.service_endpoint(&registration.service, id);
            match &health {
                Health::Gone => {
                    super::withdraw(store, &ctx.keys, id)?;
                    self.published.remove(id);
                }
                Health::Up { .. } => {
                    let endpoint = registration.endpoint();
                    let current = (lease, registration.service.clone(), endpoint.clone());
                    if self.published.get(id) != Some(&current) {
                        store.transaction(
                            &[],
                            &[Op::PutWithLease(
                                key,
                                serde_json::to_string(&endpoint)?,
                                lease,
                            )],
                        )?;
                        self.published.insert(id.clone(), current);
                    }
                }
                Health::Down(_) => {
                    let was_down = matches!(self.last.get(id), Some(Health::Down(_)));
                    if self.published.remove(id).is_some() || !was_down {
                        store.transaction(&[], &[Op::Delete(key)])?;
                    }
                }
            }
            self.log_transition(ctx, registration, &health);
        }
        crate::metrics::set("macvlan_registrations", &[("state", "up")], up);
        crate::metrics::set("macvlan_registrations", &[("state", "down")], down);
        Ok(registrations.len())
    }

    fn log_transition(&mut self, ctx: &Context, registration: &Registration, health: &Health) {
        let id = &registration.container;
        let changed = match (self.last.get(id), health) {
            (Some(Health::Down(_)), Health::Down(_)) => false,
            (last, now) => last != Some(now),
        };
        if changed {
            let address = registration.check_address().to_string();
            let never_up = !self.last.contains_key(id);
            let (event, level, reason) = match health {
                Health::Up { .. } => ("service-up", Level::Info, None),
                // A service that has not come up yet is not news.
                Health::Down(reason) if never_up => {
                    ("service-waiting", Level::Debug, Some(reason.as_str()))
                }
                Health::Down(reason) => ("service-down", Level::Info, Some(reason.as_str())),
                Health::Gone => (
                    "service-withdrawn",
                    Level::Info,
                    Some("the container's namespace is gone"),
                ),
            };
            let mut fields = vec![
                ("container", id.as_str()),
                ("service", registration.service.as_str()),
                ("address", address.as_str()),
            ];
            if let Health::Up { from_host } = health {
                fields.push((
                    "checked_from",
                    if *from_host { "host" } else { "container" },
                ));
            }
            if let Some(reason) = reason {
                fields.push(("reason", reason));
            }
            ctx.logger.log(level, event, &fields);
        }
        if *health == Health::Gone {
            self.last.remove(id);
        } else {
            self.last.insert(id.clone(), health.clone());
        }
    }
}
