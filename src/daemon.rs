//! `macvlan daemon`: one per host, holding a lock in the runtime directory.
//! Threads that share nothing but the stop flag — the registrar
//! ([`crate::discovery::registrar`]) and the DHCP lease keeper
//! ([`crate::dhcp::keeper`]), each with its own store connection — so a
//! silent DHCP server (seconds per renewal) cannot let the registrar's
//! store lease lapse and drop every service from DNS (issue 16); and the
//! hooks handed over ([`crate::oci::handoff`], issue 17). Started on demand
//! by hooks and `gc`, or by systemd.

use std::fs::File;
use std::os::unix::io::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

use crate::config::Config;
use crate::dhcp::keeper::Keeper;
use crate::discovery::registrar::{Registrar, WAITING_INTERVAL};
use crate::log::Level;
use crate::net::Context;
use crate::oci::handoff::Listener;

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn request_stop(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// The packaged configuration, which the packaged unit runs the daemon with.
const PACKAGED_CONFIG: &str = "/etc/macvlan-runc/config.toml";
const UNIT: &str = "macvlan-daemon.service";

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
    crate::files::open_private(&path).with_context(|| format!("open {}", path.display()))
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

/// Whether a daemon for `config` is better started as the systemd unit:
/// this process runs under systemd (`INVOCATION_ID`, set for every unit's
/// processes — a child of a oneshot unit such as `macvlan-gc.service` is
/// killed when the unit ends), systemd manages the machine, and the
/// configuration is the packaged one the unit uses.
fn through_systemd(config: &Config, invocation: Option<&str>, systemd_runs: bool) -> bool {
    invocation.is_some_and(|id| !id.is_empty())
        && systemd_runs
        && config.source.as_deref() == Some(Path::new(PACKAGED_CONFIG))
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
    let invocation = std::env::var("INVOCATION_ID").ok();
    let systemd_runs = Path::new("/run/systemd/system").is_dir();
    if through_systemd(config, invocation.as_deref(), systemd_runs) {
        // The unit runs for good and is restarted if it dies; if systemctl
        // cannot start it (not installed, say), start one ourselves.
        let started = Command::new("systemctl")
            .args(["start", "--no-block", UNIT])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if started {
            return Ok(());
        }
    }
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

/// Writes `text` to `path` through a temporary file and a rename.
fn write_atomically(path: &Path, text: &str) -> Result<()> {
    let temporary = path.with_extension("tmp");
    crate::files::replace(path, &temporary, text.as_bytes(), crate::files::LOG)
        .with_context(|| format!("write {} (through {})", path.display(), temporary.display()))
}

/// Milliseconds since `start`, for the threads' last-busy marks.
fn millis_since(start: Instant) -> u64 {
    start.elapsed().as_millis() as u64
}

/// One of the daemon's loops: `round` does a pass and says how much it
/// has to keep (0: idle) and when it wants the next pass.
fn spawn_loop(
    name: &str,
    ctx: Context,
    busy: Arc<AtomicU64>,
    epoch: Instant,
    default_pause: Duration,
    mut round: impl FnMut(&Context) -> (Result<usize>, Option<Duration>) + Send + 'static,
) -> Result<std::thread::JoinHandle<()>> {
    let event = name.to_string();
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            let mut ctx = ctx;
            let mut last_error: Option<String> = None;
            while !STOP.load(Ordering::SeqCst) {
                ctx.refresh_store();
                let (result, due) = round(&ctx);
                match result {
                    Ok(0) => {}
                    Ok(_) => busy.store(millis_since(epoch), Ordering::SeqCst),
                    Err(e) => {
                        crate::metrics::count("macvlan_daemon_errors", &[("thread", &event)]);
                        // Logged once per distinct error: a store outage
                        // would otherwise fill the log at every round.
                        let message = format!("{e:#}");
                        if last_error.as_ref() != Some(&message) {
                            ctx.logger.log(Level::Error, &event, &[("error", &message)]);
                            last_error = Some(message);
                        }
                        busy.store(millis_since(epoch), Ordering::SeqCst);
                    }
                }
                let pause = due
                    .map(|d| d.max(Duration::from_millis(50)))
                    .unwrap_or(default_pause)
                    .min(default_pause);
                let started = Instant::now();
                while started.elapsed() < pause && !STOP.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        })
        .with_context(|| format!("start the {name} thread"))
}

/// Starts taking hooks over on `<runtime_dir>/hooks.sock`, when the
/// configuration asks for it. A socket that cannot be made leaves the
/// hooks to work alone, and the daemon's other work goes on.
fn serve_hooks(
    ctx: &Context,
    busy: Arc<AtomicU64>,
    epoch: Instant,
) -> Option<(Arc<Listener>, std::thread::JoinHandle<()>)> {
    if !crate::oci::handoff::served(&ctx.config) {
        return None;
    }
    let started = Listener::bind(&ctx.config).and_then(|listener| {
        let listener = Arc::new(listener);
        let serving = listener.clone();
        let config = ctx.config.clone();
        let logger = ctx.logger.clone();
        std::thread::Builder::new()
            .name("hooks".into())
            .spawn(move || {
                let busy = move || busy.store(millis_since(epoch), Ordering::SeqCst);
                serving.serve(&config, &logger, &busy);
            })
            .map(|thread| (listener, thread))
            .context("start the hooks thread")
    });
    match started {
        Ok(started) => Some(started),
        Err(e) => {
            ctx.logger.log(
                Level::Error,
                "daemon-start",
                &[("error", &format!("{e:#}; hooks do their work alone"))],
            );
            None
        }
    }
}

/// Runs the daemon until SIGTERM/SIGINT, or, with `exit_when_idle`, until
/// its threads (the hooks' too) have had nothing to do for the configured
/// idle time.
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
    let epoch = Instant::now();
    let registrar_busy = Arc::new(AtomicU64::new(0));
    let keeper_busy = Arc::new(AtomicU64::new(0));
    let interval = ttl / 3;
    let mut registrar = Registrar::default();
    let registrar_thread = spawn_loop(
        "registrar",
        Context::new(config.clone(), ctx.logger.clone())?,
        registrar_busy.clone(),
        epoch,
        interval,
        move |ctx| {
            let result = registrar.round(ctx);
            let due = registrar.waiting().then_some(WAITING_INTERVAL);
            (result, due)
        },
    )?;
    let mut keeper = Keeper::default();
    let keeper_thread = spawn_loop(
        "dhcp-keeper",
        Context::new(config.clone(), ctx.logger.clone())?,
        keeper_busy.clone(),
        epoch,
        interval,
        move |ctx| match keeper.round(ctx) {
            Ok((kept, due)) => (Ok(kept), due),
            Err(e) => (Err(e), None),
        },
    )?;
    let hooks_busy = Arc::new(AtomicU64::new(0));
    let hooks = serve_hooks(ctx, hooks_busy.clone(), epoch);
    while !STOP.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(50));
        if registrar_thread.is_finished() || keeper_thread.is_finished() {
            // A thread that ended on its own panicked: let the supervisor
            // (systemd, or the next hook or gc) start a whole daemon again.
            STOP.store(true, Ordering::SeqCst);
            ctx.logger.log(
                Level::Error,
                "daemon",
                &[("error", "a daemon thread ended unexpectedly; exiting")],
            );
        }
        let idle = millis_since(epoch).saturating_sub(
            registrar_busy
                .load(Ordering::SeqCst)
                .max(keeper_busy.load(Ordering::SeqCst))
                .max(hooks_busy.load(Ordering::SeqCst)),
        );
        if exit_when_idle && Duration::from_millis(idle) >= config.daemon.idle_exit {
            STOP.store(true, Ordering::SeqCst);
        }
    }
    // Hooks taken are finished and answered before the daemon goes.
    if let Some((listener, thread)) = hooks {
        listener.shut();
        let _ = thread.join();
    }
    let _ = registrar_thread.join();
    let _ = keeper_thread.join();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systemd_starts_the_packaged_daemon_only() {
        let packaged = Config {
            source: Some(PACKAGED_CONFIG.into()),
            ..Config::default()
        };
        assert!(through_systemd(&packaged, Some("abc"), true));
        assert!(!through_systemd(&packaged, None, true));
        assert!(!through_systemd(&packaged, Some(""), true));
        assert!(!through_systemd(&packaged, Some("abc"), false));
        let other = Config {
            source: Some("/tmp/lab/config.toml".into()),
            ..Config::default()
        };
        assert!(!through_systemd(&other, Some("abc"), true));
    }
}
