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
//!
//! `macvlan hook` offers itself from its entry point, before the C library
//! starts (`src/bin/macvlan.rs`): it sends the state as read and no
//! config.json (the daemon reads it, sharing the hook's mount namespace),
//! exits when the answer is `taken` and `done`, and otherwise starts the
//! full hook again with the state back on stdin and [`ANSWER_ENV`] set to
//! the answer, judged here ([`relayed`]) as one read here would be: a
//! failure is reported, the work is never done twice, and a decline lets
//! the full hook go on as before.

use std::io::{Read, Write};
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
pub const VERSION: u32 = 2;
/// Set by the hook's early path for the full hook: `ERRNO ANSWER`, how
/// reading the daemon's answer ended (0: the end of the stream) and the
/// answer as read.
pub const ANSWER_ENV: &str = "MACVLAN_HOOK_ANSWER";
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
    /// The stage's name as the hook was given it; none: the state's status
    /// says.
    stage: Option<String>,
    /// The configuration file the hook read: the daemon must have read
    /// the same.
    config: Option<PathBuf>,
    /// The hook's network and mount namespaces (device, inode each): the
    /// daemon must share them, since the parent is found by name and the
    /// bundle's paths are the hook's.
    namespaces: [(u64, u64); 2],
    /// The OCI state, as the runtime wrote it.
    state: String,
    /// The bundle's config.json (createRuntime), if the hook read it; the
    /// daemon reads it otherwise.
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
        stage: Some(stage.name().to_string()),
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
    let (answer, end) = read_answer(&stream);
    judge(&path, &answer, end, logger)
}

/// The daemon's answer as it comes, until the stream ends (`None`) or
/// fails: `taken` within [`TAKE_TIMEOUT`], then as long as the work takes
/// (the runtime's hook timeout bounds it).
fn read_answer(stream: &UnixStream) -> (Vec<u8>, Option<std::io::Error>) {
    let _ = stream.set_read_timeout(Some(TAKE_TIMEOUT));
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match (&*stream).read(&mut chunk) {
            Ok(0) => return (answer, None),
            Ok(n) => {
                let before = answer.contains(&b'\n');
                answer.extend_from_slice(&chunk[..n]);
                if !before && answer.contains(&b'\n') {
                    let _ = stream.set_read_timeout(None);
                }
                if answer.len() as u64 > LIMIT {
                    return (answer, None);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return (answer, Some(e)),
        }
    }
}

/// What an answer (and how reading it ended) comes to: the hook's result
/// once `taken`, or nothing done.
fn judge(path: &Path, answer: &[u8], end: Option<std::io::Error>, logger: &Logger) -> Offered {
    let text = String::from_utf8_lossy(answer);
    let (first, rest, whole) = match text.split_once('\n') {
        Some((first, rest)) => (first, rest, true),
        None => (&text[..], "", false),
    };
    if !whole {
        match &end {
            // Closed before taking it (a daemon stopping, say): nothing done.
            None if first.is_empty() => return Offered::NotServed,
            None => {}
            Some(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return Offered::NotServed
            }
            Some(e)
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
            Some(e) => {
                return Offered::Done(Err(anyhow!(e.to_string())
                    .context(format!("read the daemon's answer from {}", path.display()))))
            }
        }
    }
    let first = first.trim_end();
    if let Some(reason) = first.strip_prefix("declined ") {
        logger.log(
            Level::Debug,
            "hook-handoff",
            &[
                ("socket", &path.display().to_string()),
                ("declined", reason),
            ],
        );
        return Offered::NotServed;
    }
    if first != "taken" {
        return Offered::Done(Err(anyhow!(
            "the daemon at {} answered {:?}, expected \"taken\" or \"declined\"",
            path.display(),
            first
        )));
    }
    let (second, complete) = match rest.split_once('\n') {
        Some((line, _)) => (line, true),
        None => (rest, false),
    };
    let second = second.trim_end();
    match (&end, complete) {
        (None, _) | (_, true) if second == "done" => return Offered::Done(Ok(())),
        (None, _) | (_, true) if second.starts_with("failed ") => {
            return Offered::Done(Err(anyhow!("{}", &second["failed ".len()..])))
        }
        _ => {}
    }
    Offered::Done(Err(anyhow!(
        "the daemon at {} took the hook and ended without an answer ({}); what it set up is left for `macvlan gc`",
        path.display(),
        match &end {
            Some(e) if !complete => e.to_string(),
            _ => "connection closed".to_string(),
        }
    )))
}

/// The answer the hook's early path relayed in [`ANSWER_ENV`], judged as
/// if read here; `None` when there is none.
pub fn relayed(config: &Config, logger: &Logger) -> Option<Offered> {
    use std::os::unix::ffi::OsStrExt;
    let value = std::env::var_os(ANSWER_ENV)?;
    let (errno, answer) = relay_parts(value.as_bytes());
    let end = (errno != 0).then(|| std::io::Error::from_raw_os_error(errno));
    Some(judge(&socket_path(config), answer, end, logger))
}

/// `ERRNO ANSWER` as the early path writes it; anything else reads as a
/// stream that ended with nothing (the full hook offers the hook again).
fn relay_parts(value: &[u8]) -> (i32, &[u8]) {
    value
        .iter()
        .position(|b| *b == b' ')
        .and_then(|space| {
            let errno: i32 = std::str::from_utf8(&value[..space]).ok()?.parse().ok()?;
            Some((errno, &value[space + 1..]))
        })
        .unwrap_or((0, b""))
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
        let stage = match &request.stage {
            Some(name) => Stage::from_name(name),
            None => Stage::from_status(&state.status),
        };
        Ok((stage, state, request.bundle))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn judged(answer: &str, errno: i32) -> Result<Option<()>, String> {
        let logger = Logger::new(crate::config::LogTarget::Stderr, false);
        let end = (errno != 0).then(|| std::io::Error::from_raw_os_error(errno));
        match judge(
            Path::new("/run/x/hooks.sock"),
            answer.as_bytes(),
            end,
            &logger,
        ) {
            Offered::NotServed => Ok(None),
            Offered::Done(Ok(())) => Ok(Some(())),
            Offered::Done(Err(e)) => Err(format!("{e:#}")),
        }
    }

    /// Every way an answer can end, as the hook reads it itself and as the
    /// early path relays it.
    #[test]
    fn answers_come_to_what_the_exchange_says() {
        assert_eq!(judged("", 0), Ok(None));
        assert_eq!(judged("", libc::ECONNRESET), Ok(None));
        assert_eq!(judged("declined busy\n", 0), Ok(None));
        assert_eq!(judged("taken\ndone\n", 0), Ok(Some(())));
        assert_eq!(judged("taken\ndone", 0), Ok(Some(())));
        assert_eq!(
            judged("taken\nfailed no address left\n", 0),
            Err("no address left".into())
        );
        let cases = [
            ("", libc::EAGAIN, "did not take the hook within 5s"),
            ("tak", libc::EAGAIN, "did not take the hook within 5s"),
            (
                "",
                libc::EIO,
                "read the daemon's answer from /run/x/hooks.sock: Input/output error",
            ),
            ("taken\n", 0, "ended without an answer (connection closed)"),
            (
                "taken\ndo",
                libc::ECONNRESET,
                "ended without an answer (Connection reset by peer",
            ),
            (
                "taken\nwhat\n",
                0,
                "ended without an answer (connection closed)",
            ),
            ("hello\n", 0, "answered \"hello\", expected"),
        ];
        for (answer, errno, want) in cases {
            let got = judged(answer, errno).unwrap_err();
            assert!(got.contains(want), "{answer:?} {errno}: {got}");
        }
    }

    #[test]
    fn relayed_answers_split_into_errno_and_answer() {
        assert_eq!(
            relay_parts(b"0 taken\nfailed x y\n"),
            (0, &b"taken\nfailed x y\n"[..])
        );
        assert_eq!(relay_parts(b"11 "), (11, &b""[..]));
        assert_eq!(relay_parts(b"x taken"), (0, &b""[..]));
        assert_eq!(relay_parts(b""), (0, &b""[..]));
    }
}
