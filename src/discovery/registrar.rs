//! The registrar (`macvlan daemon`): health-checks every service registered
//! on this host from inside its container's network namespace and keeps the
//! passing ones published under a store lease, runs the DHCP lease keeper
//! ([`crate::dhcp::keeper`]); and starting it on demand.

use std::collections::HashMap;
use std::fs::File;
use std::net::TcpStream;
use std::os::unix::fs::MetadataExt;
use std::os::unix::io::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

use super::{Endpoint, Registration};
use crate::config::Config;
use crate::log::Level;
use crate::net::Context;
use crate::store::{LeaseId, Op};

/// How often a service that is not up is checked.
const WAITING_INTERVAL: Duration = Duration::from_millis(250);

/// Health checks running at once.
const CONCURRENT_CHECKS: usize = 32;

/// How long a health check waits for the TCP handshake.
const CHECK_TIMEOUT: Duration = Duration::from_secs(1);

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn request_stop(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn lock_path(config: &Config) -> PathBuf {
    config.daemon.runtime_dir.join("daemon.lock")
}

pub fn pid_path(config: &Config) -> PathBuf {
    config.daemon.runtime_dir.join("daemon.pid")
}

fn open_lock(config: &Config) -> Result<File> {
    let dir = &config.daemon.runtime_dir;
    crate::files::create_dir(dir).with_context(|| format!("create {}", dir.display()))?;
    let path = lock_path(config);
    crate::files::open_lock(&path).with_context(|| format!("open {}", path.display()))
}

/// Takes the daemon's lock without waiting; `false` when a daemon holds it.
fn try_lock(file: &File) -> Result<bool> {
    // SAFETY: flock on a descriptor this function borrows.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let error = std::io::Error::last_os_error();
    if error.raw_os_error() == Some(libc::EWOULDBLOCK) {
        return Ok(false);
    }
    Err(error).context("lock the daemon's lock file")
}

/// Starts `macvlan daemon` in the background unless one runs for this
/// configuration: a registered service must never depend on someone having
/// started a daemon by hand.
pub fn ensure_running(config: &Config) -> Result<()> {
    let lock = open_lock(config)?;
    if !try_lock(&lock)? {
        return Ok(());
    }
    drop(lock);
    let exe = std::env::current_exe().context("find the macvlan binary")?;
    let mut command = Command::new(exe);
    if let Some(source) = &config.source {
        command.arg("--config").arg(source);
    }
    crate::cni::scrub(&mut command);
    command
        .args(["daemon", "--exit-when-idle"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // Its own session: the runtime that ran the hook waits for the hook's
    // output pipes and may signal its process group.
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    command.spawn().context("start macvlan daemon")?;
    Ok(())
}

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
struct Registrar {
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
    fn waiting(&self) -> bool {
        self.last.values().any(|h| !matches!(h, Health::Up { .. }))
    }

    /// One pass over this host's registrations. Returns how many there are.
    fn round(&mut self, ctx: &Context) -> Result<usize> {
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
        for (registration, health) in registrations.iter().zip(results) {
            let id = &registration.container;
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

/// Writes `text` to `path` through a temporary file and a rename.
fn write_atomically(path: &Path, text: &str) -> Result<()> {
    let temporary = path.with_extension("tmp");
    crate::files::replace(path, &temporary, text.as_bytes(), crate::files::LOG)
        .with_context(|| format!("write {} (through {})", path.display(), temporary.display()))
}

/// Runs the daemon until SIGTERM/SIGINT, or, with `exit_when_idle`, until
/// it has had nothing to do for the configured idle time.
pub fn run(ctx: &Context, exit_when_idle: bool) -> Result<()> {
    let config = &ctx.config;
    let lock = open_lock(config)?;
    if !try_lock(&lock)? {
        if exit_when_idle {
            return Ok(());
        }
        let pid = std::fs::read_to_string(pid_path(config)).unwrap_or_default();
        bail!(
            "another macvlan daemon runs for {} (pid {})",
            config.daemon.runtime_dir.display(),
            pid.trim()
        );
    }
    write_atomically(&pid_path(config), &format!("{}\n", std::process::id()))?;
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(
            libc::SIGTERM,
            request_stop as *const () as libc::sighandler_t,
        );
        libc::signal(
            libc::SIGINT,
            request_stop as *const () as libc::sighandler_t,
        );
    }
    let ttl = config.discovery.ttl;
    let interval = ttl / 3;
    ctx.logger.log(
        Level::Info,
        "daemon-start",
        &[
            ("pid", &std::process::id().to_string()),
            ("host", &ctx.host),
            ("ttl", &humantime::format_duration(ttl).to_string()),
        ],
    );
    if let Some(path) = config
        .etcd
        .password_file
        .as_deref()
        .filter(|p| crate::files::readable_by_others(p))
    {
        ctx.logger.log(
            Level::Warn,
            "daemon-start",
            &[(
                "warning",
                &format!(
                    "the etcd password file {} is readable by other users; chmod 0600 it",
                    path.display()
                ),
            )],
        );
    }
    let mut registrar = Registrar::default();
    let mut keeper = crate::dhcp::keeper::Keeper::default();
    let mut idle_since = Instant::now();
    let mut last_error: Option<String> = None;
    while !STOP.load(Ordering::SeqCst) {
        let registered = registrar.round(ctx);
        let kept = keeper.round(ctx);
        let mut lease_due = None;
        for result in [
            registered,
            kept.map(|(n, due)| {
                lease_due = due;
                n
            }),
        ] {
            match result {
                Ok(0) => {}
                Ok(_) => idle_since = Instant::now(),
                Err(e) => {
                    // Logged once per distinct error: a store outage would
                    // otherwise fill the log at every round.
                    let message = format!("{e:#}");
                    if last_error.as_ref() != Some(&message) {
                        ctx.logger
                            .log(Level::Error, "daemon", &[("error", &message)]);
                        last_error = Some(message);
                    }
                    idle_since = Instant::now();
                }
            }
        }
        if exit_when_idle && idle_since.elapsed() >= config.daemon.idle_exit {
            break;
        }
        let mut pause = if registrar.waiting() {
            interval.min(WAITING_INTERVAL)
        } else {
            interval
        };
        if let Some(due) = lease_due {
            pause = pause.min(due.max(Duration::from_millis(50)));
        }
        let round_started = Instant::now();
        while round_started.elapsed() < pause && !STOP.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    // Endpoints stay under their lease: a restarted daemon takes them over
    // before it runs out, and if none comes they vanish within one TTL.
    let _ = std::fs::remove_file(pid_path(config));
    ctx.logger.log(
        Level::Info,
        "daemon-stop",
        &[("pid", &std::process::id().to_string())],
    );
    drop(lock);
    Ok(())
}
