//! A hook handed to the running `macvlan daemon` (issue 17): the hook
//! process sends the OCI state and the bundle's config.json over
//! `<runtime_dir>/hooks.sock`, and the daemon, whose store is open and whose
//! code is warm, does the work and answers. With no daemon, or one that
//! declines, the hook does the work itself.
//!
//! The exchange: the hook writes one JSON [`Request`] and shuts its side;
//! the daemon answers `declined REASON` (nothing done: the hook goes on by
//! itself), or `taken` and, when done, `done` or `failed MESSAGE`. The daemon
//! acts only once `taken` is written, so a hook that meets a closed
//! connection before it knows nothing was done and may do it itself; after
//! `taken`, a lost connection is a failed hook whose leftovers are `gc`'s.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::io::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{anyhow, Context as _, Result};
use serde::{Deserialize, Serialize};

use super::hook::{self, Stage};
use super::State;
use crate::config::{Config, DhcpClient};
use crate::log::{Level, Logger};
use crate::net::Context;

/// The exchange's version; a daemon declines any other.
const VERSION: u32 = 1;
/// A state and a config.json are a few KiB; anything near this is not one.
const LIMIT: u64 = 8 << 20;
/// How long each side waits for the other's request or `taken`: the
/// daemon answers at once, so a daemon this late is stuck.
const TAKE_TIMEOUT: Duration = Duration::from_secs(5);

pub fn socket_path(config: &Config) -> PathBuf {
    config.daemon.runtime_dir.join("hooks.sock")
}

/// Whether a daemon for `config` serves hooks: asked for, and not with
/// udhcpc, whose processes would be the daemon's children (killed with
/// its unit, reaped by nobody).
pub fn served(config: &Config) -> bool {
    config.daemon.serve_hooks && !matches!(config.dhcp.client, DhcpClient::Udhcpc(_))
}

#[derive(Serialize, Deserialize)]
struct Request {
    version: u32,
    /// The stage's name, as the hook was given it or took it from the state.
    stage: String,
    /// The configuration file the hook read: the daemon must have read
    /// the same.
    config: Option<PathBuf>,
    /// The hook's network and mount namespaces (device, inode each): the
    /// daemon must share them, since the parent is found by name and the
    /// bundle's paths are the hook's.
    namespaces: [(u64, u64); 2],
    /// The OCI state, as the runtime wrote it.
    state: String,
    /// The bundle's config.json (createRuntime).
    bundle: Option<String>,
}

fn own_namespaces() -> std::io::Result<[(u64, u64); 2]> {
    let id = |path: &str| std::fs::metadata(path).map(|m| (m.dev(), m.ino()));
    Ok([id("/proc/self/ns/net")?, id("/proc/self/ns/mnt")?])
}

/// What offering a hook to the daemon came to.
pub enum Offered {
    /// The daemon took it: its result.
    Done(Result<()>),
    /// No daemon took it; nothing was done.
    NotServed,
}

/// Offers the hook to a running daemon.
pub fn offer(
    config: &Config,
    logger: &Logger,
    stage: Stage,
    state: &str,
    bundle: Option<&str>,
) -> Offered {
    // A test's failpoint is armed in the hook's environment, not the daemon's.
    if !served(config)
        || (cfg!(feature = "failpoints") && std::env::var_os("MACVLAN_FAILPOINT").is_some())
    {
        return Offered::NotServed;
    }
    let path = socket_path(config);
    // No socket, or nobody behind it: no daemon serves hooks.
    let Ok(stream) = UnixStream::connect(&path) else {
        return Offered::NotServed;
    };
    let Ok(namespaces) = own_namespaces() else {
        return Offered::NotServed;
    };
    let request = Request {
        version: VERSION,
        stage: stage.name().to_string(),
        config: config.source.clone(),
        namespaces,
        state: state.to_string(),
        bundle: bundle.map(str::to_string),
    };
    let Ok(bytes) = serde_json::to_vec(&request) else {
        return Offered::NotServed;
    };
    // A daemon that closed before reading all of it did nothing.
    if (&stream).write_all(&bytes).is_err() || stream.shutdown(std::net::Shutdown::Write).is_err() {
        return Offered::NotServed;
    }
    let _ = stream.set_read_timeout(Some(TAKE_TIMEOUT));
    let mut reader = BufReader::new(&stream);
    let mut first = String::new();
    match reader.read_line(&mut first) {
        Ok(_) if first.trim_end() == "taken" => {}
        Ok(_) if first.starts_with("declined ") => {
            logger.log(
                Level::Debug,
                "hook-handoff",
                &[
                    ("socket", &path.display().to_string()),
                    ("declined", first["declined ".len()..].trim_end()),
                ],
            );
            return Offered::NotServed;
        }
        // Closed before taking it (a daemon stopping, say): nothing done.
        Ok(0) => return Offered::NotServed,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Offered::NotServed,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            // It may still take it: doing the work here too could do it twice.
            return Offered::Done(Err(anyhow!(
                "the daemon at {} did not take the hook within {}s; is it stuck? (`[daemon] serve_hooks = false` makes hooks work alone)",
                path.display(),
                TAKE_TIMEOUT.as_secs()
            )));
        }
        Ok(_) => {
            return Offered::Done(Err(anyhow!(
                "the daemon at {} answered {:?}, expected \"taken\" or \"declined\"",
                path.display(),
                first.trim_end()
            )))
        }
        Err(e) => {
            return Offered::Done(Err(
                anyhow!(e).context(format!("read the daemon's answer from {}", path.display()))
            ))
        }
    }
    // Taken: the work may take as long as a DHCP exchange; the runtime's
    // hook timeout bounds it.
    let _ = stream.set_read_timeout(None);
    let mut answer = String::new();
    let read = reader.read_line(&mut answer);
    Offered::Done(match (read, answer.trim_end()) {
        (Ok(_), "done") => Ok(()),
        (Ok(_), line) if line.starts_with("failed ") => Err(anyhow!("{}", &line["failed ".len()..])),
        (read, _) => Err(anyhow!(
            "the daemon at {} took the hook and ended without an answer ({}); what it set up is left for `macvlan gc`",
            path.display(),
            match read {
                Err(e) => e.to_string(),
                Ok(_) => "connection closed".to_string(),
            }
        )),
    })
}

/// The daemon's socket.
pub struct Listener {
    listener: UnixListener,
    path: PathBuf,
}

/// Acceptors kept waiting beyond those busy: a hook meets a thread already
/// started (a thread's start is ~0.1 ms of a hook's 1–2 ms here).
const SPARE_ACCEPTORS: usize = 2;

impl Listener {
    /// Binds the socket, for the daemon holding its lock (a socket file
    /// found there is a stopped daemon's). Only root may connect.
    pub fn bind(config: &Config) -> Result<Listener> {
        use std::os::unix::fs::PermissionsExt;
        let path = socket_path(config);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("remove the old {}", path.display())),
        }
        let listener =
            UnixListener::bind(&path).with_context(|| format!("bind {}", path.display()))?;
        std::fs::set_permissions(
            &path,
            std::fs::Permissions::from_mode(crate::files::PRIVATE),
        )
        .with_context(|| format!("chmod {}", path.display()))?;
        Ok(Listener { listener, path })
    }

    /// Stops taking hooks: every waiting acceptor wakes and ends, and
    /// hooks still queued find the connection closed before `taken` and
    /// work alone. Hooks taken are answered before [`Listener::serve`]
    /// returns.
    pub fn shut(&self) {
        // SAFETY: shutdown on a descriptor this value owns.
        unsafe { libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RDWR) };
        let _ = std::fs::remove_file(&self.path);
    }

    /// Takes hooks until [`Listener::shut`], each on an acceptor thread
    /// that waited for it, with a context — and so a store connection —
    /// reused from hook to hook. `busy` is called as each hook starts and
    /// ends.
    pub fn serve(&self, config: &Config, logger: &Logger, busy: &(dyn Fn() + Sync)) {
        let Ok(namespaces) = own_namespaces() else {
            logger.log(
                Level::Error,
                "hook-handoff",
                &[(
                    "error",
                    "cannot read this process's namespaces; not serving hooks",
                )],
            );
            return;
        };
        let contexts: Mutex<Vec<Context>> = Mutex::new(Vec::new());
        let server = Server {
            listener: &self.listener,
            config,
            logger,
            namespaces,
            contexts: &contexts,
            waiting: AtomicUsize::new(0),
            busy,
        };
        std::thread::scope(|scope| {
            for _ in 0..SPARE_ACCEPTORS {
                server.spawn_acceptor(scope);
            }
        });
    }
}

struct Server<'a> {
    listener: &'a UnixListener,
    config: &'a Config,
    logger: &'a Logger,
    namespaces: [(u64, u64); 2],
    contexts: &'a Mutex<Vec<Context>>,
    /// Acceptors waiting for a hook.
    waiting: AtomicUsize,
    busy: &'a (dyn Fn() + Sync),
}

impl<'a> Server<'a> {
    fn spawn_acceptor<'scope>(&'scope self, scope: &'scope std::thread::Scope<'scope, '_>)
    where
        'a: 'scope,
    {
        let spawned = std::thread::Builder::new()
            .name("hooks".into())
            .spawn_scoped(scope, move || self.accept(scope));
        if let Err(e) = spawned {
            self.logger.log(
                Level::Error,
                "hook-handoff",
                &[("error", &format!("start a thread: {e}"))],
            );
        }
    }

    /// One acceptor: takes hooks until the socket is shut, starting
    /// another acceptor when it was the last one waiting, and ending when
    /// enough others wait.
    fn accept<'scope>(&'scope self, scope: &'scope std::thread::Scope<'scope, '_>)
    where
        'a: 'scope,
    {
        loop {
            self.waiting.fetch_add(1, Ordering::SeqCst);
            let accepted = self.listener.accept();
            let others = self.waiting.fetch_sub(1, Ordering::SeqCst) - 1;
            let stream = match accepted {
                Ok((stream, _)) => stream,
                // Shut (EINVAL): the daemon is stopping.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return,
                Err(e) => {
                    self.logger.log(
                        Level::Error,
                        "hook-handoff",
                        &[("error", &format!("accept: {e}"))],
                    );
                    // Out of descriptors, say: do not spin.
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            };
            if others == 0 {
                self.spawn_acceptor(scope);
            }
            (self.busy)();
            self.handle(stream);
            (self.busy)();
            if self.waiting.load(Ordering::SeqCst) >= SPARE_ACCEPTORS {
                return;
            }
        }
    }

    fn handle(&self, stream: UnixStream) {
        let request = match self.take(&stream) {
            Ok(request) => request,
            Err(reason) => {
                let _ = (&stream).write_all(format!("declined {}\n", one_line(&reason)).as_bytes());
                return;
            }
        };
        let (stage, state, bundle) = request;
        if (&stream).write_all(b"taken\n").is_err() {
            // The hook is gone, and will not count on this daemon.
            return;
        }
        let context = self
            .contexts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop();
        let context = match context {
            Some(mut context) => {
                context.refresh_store();
                Ok(context)
            }
            None => Context::new(self.config.clone(), self.logger.clone()).map(|mut ctx| {
                ctx.by_daemon = true;
                ctx
            }),
        };
        let result = context.and_then(|ctx| {
            let result = hook::serve(stage, &state, bundle.as_deref(), &ctx);
            self.contexts
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(ctx);
            result
        });
        let answer = match result {
            Ok(()) => "done\n".to_string(),
            Err(e) => format!("failed {}\n", one_line(&format!("{e:#}"))),
        };
        let _ = (&stream).write_all(answer.as_bytes());
    }

    /// Reads and checks a request: `Err` is why it is declined.
    fn take(&self, stream: &UnixStream) -> Result<(Stage, State, Option<String>), String> {
        let uid = peer_uid(stream).map_err(|e| format!("cannot tell who connected: {e}"))?;
        // SAFETY: geteuid cannot fail.
        let own = unsafe { libc::geteuid() };
        if uid != own {
            return Err(format!("served for uid {own} only, not {uid}"));
        }
        let _ = stream.set_read_timeout(Some(TAKE_TIMEOUT));
        let mut bytes = Vec::new();
        stream
            .take(LIMIT + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| format!("read the request: {e}"))?;
        if bytes.len() as u64 > LIMIT {
            return Err(format!("a request above {LIMIT} bytes"));
        }
        let request: Request =
            serde_json::from_slice(&bytes).map_err(|e| format!("an unreadable request: {e}"))?;
        if request.version != VERSION {
            return Err(format!(
                "exchange version {} (this daemon speaks {VERSION})",
                request.version
            ));
        }
        if request.config != self.config.source {
            return Err(format!(
                "the hook's config file {} is not this daemon's {}",
                shown(request.config.as_deref()),
                shown(self.config.source.as_deref())
            ));
        }
        if request.namespaces[0] != self.namespaces[0] {
            return Err("the hook runs in another network namespace".into());
        }
        if request.namespaces[1] != self.namespaces[1] {
            return Err("the hook runs in another mount namespace".into());
        }
        let state = State::parse(&request.state).map_err(|e| e.to_string())?;
        Ok((Stage::from_name(&request.stage), state, request.bundle))
    }
}

fn shown(path: Option<&Path>) -> String {
    path.map_or("(none)".into(), |p| p.display().to_string())
}

fn one_line(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}

/// The uid of the process at the other end (SO_PEERCRED).
fn peer_uid(stream: &UnixStream) -> std::io::Result<u32> {
    let mut credentials = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut length = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `length` bytes into `credentials`.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut credentials as *mut libc::ucred).cast(),
            &mut length,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(credentials.uid)
}
