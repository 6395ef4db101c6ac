//! `macvlan`: the OCI hook and the admin command line.

fn main() {
    macvlan_runc::log::mark_start();
    // Run by udhcpc as its script (`[dhcp] client = "udhcpc"`): argv[1] is
    // udhcpc's event, the lease is in the environment.
    if let Ok(container) = std::env::var(macvlan_runc::dhcp::external::SCRIPT_ENV) {
        let event = std::env::args().nth(1).unwrap_or_default();
        if let Err(error) = macvlan_runc::dhcp::external::script(&container, &event) {
            eprintln!("macvlan: udhcpc script: {error:#}");
            std::process::exit(1);
        }
        return;
    }
    // Run by a container runtime as a CNI plugin (spec 1.1): the command
    // is in the environment, the network configuration on stdin.
    if std::env::var_os("CNI_COMMAND").is_some() {
        std::process::exit(macvlan_runc::cni::main());
    }
    let cli = macvlan_runc::cli::Cli::from_args();
    if let Err(error) = macvlan_runc::cli::run(cli) {
        // One line: the whole context chain, outermost first.
        eprintln!("macvlan: {error:#}");
        std::process::exit(1);
    }
}

// The process's entry point (`build.rs` links it with `--entry`): the
// hook's early path first, then glibc's `_start` and `main`.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
macvlan_runc::early_entry!(macvlan_entry, early_hook::offer);

/// `macvlan hook`, handed to a running daemon before the C library has
/// started (issue 17; the exchange is `macvlan_runc::oci::handoff`'s, the
/// rules for code here `macvlan_runc::oci::passthrough`'s). Returns — for
/// `main` to do or report the same — when the call is not a plain hook or
/// no daemon listens; any answer of the daemon's other than `taken` and
/// `done` goes to the full hook, started again with the state back on
/// stdin and the answer in `MACVLAN_HOOK_ANSWER`, which judges it there.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod early_hook {
    use core::mem::MaybeUninit;
    use core::ptr::write_volatile;

    use macvlan_runc::config::{DEFAULT_CONFIG_PATH, DEFAULT_RUNTIME_DIR};
    use macvlan_runc::dhcp::external::SCRIPT_ENV;
    use macvlan_runc::early::{self, join, read_file, syscall, syscall6, Mapped, Startup, Stop};
    use macvlan_runc::oci::handoff::{ANSWER_ENV, VERSION};
    use macvlan_runc::oci::passthrough::{
        begins_env, decimal, hook_call, json_escaped, lookup, same, Toml, DEFAULT_CONFIG_NUL,
    };

    const MAX_ARGS: usize = 16;
    const MAX_CONFIG: usize = 64 * 1024;
    const MAX_STATE: usize = 64 * 1024;
    const MAX_ANSWER: usize = 16 * 1024;
    /// `MACVLAN_HOOK_ANSWER=ERRNO ANSWER`.
    const MAX_ENTRY: usize = MAX_ANSWER + 64;
    /// `sun_path`'s size.
    const MAX_SOCKET_PATH: usize = 108;

    /// The request, written in pieces to the daemon's socket.
    struct Out {
        fd: i32,
        buf: [MaybeUninit<u8>; 4096],
        len: usize,
        ok: bool,
    }

    impl Out {
        fn put(&mut self, bytes: &[u8]) {
            for b in bytes {
                if self.len == self.buf.len() {
                    self.flush();
                }
                // SAFETY: `len` is within `buf` (flushed when full).
                unsafe { write_volatile(self.buf.as_mut_ptr().add(self.len) as *mut u8, *b) };
                self.len += 1;
            }
        }

        fn flush(&mut self) {
            // SAFETY: the first `len` bytes of `buf` are written.
            let bytes =
                unsafe { core::slice::from_raw_parts(self.buf.as_ptr() as *const u8, self.len) };
            // SAFETY: `fd` is the connected socket.
            self.ok &= unsafe { early::write_all(self.fd, bytes, true) };
            self.len = 0;
        }

        fn string(&mut self, bytes: &[u8]) {
            self.put(b"\"");
            json_escaped(bytes, &mut |piece| self.put(piece));
            self.put(b"\"");
        }

        fn number(&mut self, n: u64) {
            let mut digits = [0u8; 20];
            self.put(decimal(n, &mut digits));
        }
    }

    /// Puts the state back on stdin for the full hook: what was read, then
    /// what was not (`at_end`: stdin was read to its end). On failure the
    /// full hook could not read it: this process says so and ends.
    unsafe fn restore_stdin(state: &[u8], at_end: bool) {
        let fd = syscall(
            libc::SYS_memfd_create,
            c"macvlan-hook-state".as_ptr() as usize,
            libc::MFD_CLOEXEC as usize,
            0,
            0,
        );
        let mut ok = fd >= 0 && early::write_all(fd as i32, state, false);
        let mut chunk = [MaybeUninit::<u8>::uninit(); 4096];
        let mut stop = if at_end { Stop::End } else { Stop::Full };
        while ok && stop == Stop::Full {
            let n;
            (n, stop) = early::read_all(0, &mut chunk);
            let read = core::slice::from_raw_parts(chunk.as_ptr() as *const u8, n);
            ok = early::write_all(fd as i32, read, false) && stop != Stop::Failed;
        }
        ok = ok
            && syscall(libc::SYS_lseek, fd as usize, 0, libc::SEEK_SET as usize, 0) == 0
            && syscall(libc::SYS_dup2, fd as usize, 0, 0, 0) == 0;
        if fd >= 0 {
            early::close(fd as i32);
        }
        if !ok {
            let message = b"macvlan: hook: cannot put the OCI state back on stdin for the full hook (memfd)\n";
            early::write_all(2, message, false);
            early::exit(1);
        }
    }

    /// Sets how long a read of `fd` may wait (0: for ever).
    unsafe fn read_timeout(fd: i32, seconds: i64) {
        let timeval = [seconds, 0i64];
        syscall6(
            libc::SYS_setsockopt,
            fd as usize,
            libc::SOL_SOCKET as usize,
            libc::SO_RCVTIMEO as usize,
            timeval.as_ptr() as usize,
            16,
            0,
        );
    }

    /// The config file, as `macvlan` finds it (`config`: from `--config` or
    /// MACVLAN_CONFIG; else the default, where a missing file means
    /// defaults and no file to name — the full path's): its path and the
    /// daemon's socket address in `address`, with its length. `None` with
    /// `debug` on (its timing line is the full hook's) or for anything not
    /// plainly read.
    unsafe fn socket_address(
        config: Option<&'static [u8]>,
        address: &mut [u8; 2 + MAX_SOCKET_PATH],
    ) -> Option<(&'static [u8], usize)> {
        // Every value here ends a C string.
        let (config_path, config_nul, explicit) = match config {
            Some(path) => (path, path.as_ptr(), true),
            None => (
                DEFAULT_CONFIG_PATH.as_bytes(),
                DEFAULT_CONFIG_NUL.as_ptr(),
                false,
            ),
        };
        let mut buffer = Mapped::new(MAX_CONFIG)?;
        let text = buffer.part(0, MAX_CONFIG);
        let len = match read_file(config_nul, explicit, text)? {
            0 if !explicit => return None,
            len => len,
        };
        let text = core::slice::from_raw_parts(text.as_ptr() as *const u8, len);
        match lookup(text, b"", b"debug") {
            Toml::Absent => {}
            Toml::Token(value) if same(value, b"false") => {}
            _ => return None,
        }
        let runtime_dir = match lookup(text, b"daemon", b"runtime_dir") {
            Toml::Str(dir) if dir.first() == Some(&b'/') => dir,
            Toml::Absent => DEFAULT_RUNTIME_DIR.as_bytes(),
            _ => return None,
        };
        let mut path = [const { MaybeUninit::<u8>::uninit() }; MAX_SOCKET_PATH];
        let path = early::c_bytes(join(&mut path, &[runtime_dir, b"/hooks.sock"])?);
        write_volatile(address.as_mut_ptr(), libc::AF_UNIX as u8);
        for (i, b) in path.iter().enumerate() {
            write_volatile(address.as_mut_ptr().add(2 + i), *b);
        }
        Some((config_path, 2 + path.len() + 1))
    }

    pub unsafe extern "C" fn offer(sp: *const usize) {
        let process = Startup::from_stack(sp);
        let mut arg_store = [const { MaybeUninit::<&[u8]>::uninit() }; MAX_ARGS];
        let Some(args) = process.args(&mut arg_store) else {
            return;
        };
        let Some(call) = hook_call(args) else {
            return;
        };

        // Not a hook for this path: run as a CNI plugin or udhcpc's script
        // (`main` looks at these first), a test's failpoint (armed in the
        // hook's environment, not the daemon's), or the full hook this path
        // started.
        let mut config_var: Option<&[u8]> = None;
        let mut i = 0;
        while let Some(entry) = process.env(i) {
            if begins_env(entry, b"CNI_COMMAND").is_some()
                || begins_env(entry, SCRIPT_ENV.as_bytes()).is_some()
                || begins_env(entry, b"MACVLAN_FAILPOINT").is_some()
                || begins_env(entry, ANSWER_ENV.as_bytes()).is_some()
            {
                return;
            }
            // The first entry of a name is getenv's.
            if config_var.is_none() {
                config_var = begins_env(entry, b"MACVLAN_CONFIG");
            }
            i += 1;
        }

        // The daemon's socket; none, or nobody behind it: the full hook,
        // stdin untouched.
        let mut address = [0u8; 2 + MAX_SOCKET_PATH];
        let Some((config_path, address_len)) = socket_address(
            call.config.or(config_var.filter(|v| !v.is_empty())),
            &mut address,
        ) else {
            return;
        };
        let fd = syscall(
            libc::SYS_socket,
            libc::AF_UNIX as usize,
            (libc::SOCK_STREAM | libc::SOCK_CLOEXEC) as usize,
            0,
            0,
        );
        if fd < 0 {
            return;
        }
        let fd = fd as i32;
        if syscall(
            libc::SYS_connect,
            fd as usize,
            address.as_ptr() as usize,
            address_len,
            0,
        ) != 0
        {
            early::close(fd);
            return;
        }
        let (Some(net), Some(mnt)) = (
            early::stat(c"/proc/self/ns/net".as_ptr().cast()),
            early::stat(c"/proc/self/ns/mnt".as_ptr().cast()),
        ) else {
            early::close(fd);
            return;
        };

        hand_over(&process, call.stage, config_path, fd, net, mnt);
    }

    /// Sends the state to the daemon connected on `fd` and acts on its
    /// answer (see the module's comment).
    unsafe fn hand_over(
        process: &Startup,
        stage: Option<&[u8]>,
        config_path: &[u8],
        fd: i32,
        net: early::Stat,
        mnt: early::Stat,
    ) {
        let Some(mut buffer) = Mapped::new(MAX_STATE + MAX_ANSWER + MAX_ENTRY) else {
            early::close(fd);
            return;
        };
        // The state, as the runtime wrote it.
        let state = buffer.part(0, MAX_STATE);
        let (len, stop) = early::read_all(0, state);
        let state = core::slice::from_raw_parts(state.as_ptr() as *const u8, len);
        if stop != Stop::End {
            early::close(fd);
            restore_stdin(state, false);
            return;
        }

        // The request (`handoff::Request`): no config.json, the daemon
        // reads it.
        let mut out = Out {
            fd,
            buf: [const { MaybeUninit::<u8>::uninit() }; 4096],
            len: 0,
            ok: true,
        };
        out.put(b"{\"version\":");
        out.number(u64::from(VERSION));
        out.put(b",\"stage\":");
        match stage {
            Some(stage) => out.string(stage),
            None => out.put(b"null"),
        }
        out.put(b",\"config\":");
        out.string(config_path);
        out.put(b",\"namespaces\":[[");
        out.number(net.dev);
        out.put(b",");
        out.number(net.ino);
        out.put(b"],[");
        out.number(mnt.dev);
        out.put(b",");
        out.number(mnt.ino);
        out.put(b"]],\"state\":");
        out.string(state);
        out.put(b",\"bundle\":null}");
        out.flush();
        // A daemon that closed before reading all of it did nothing.
        if !out.ok
            || syscall(
                libc::SYS_shutdown,
                fd as usize,
                libc::SHUT_WR as usize,
                0,
                0,
            ) != 0
        {
            early::close(fd);
            restore_stdin(state, true);
            return;
        }

        // The answer: `taken` within the take timeout, then the result.
        read_timeout(fd, 5);
        let answer = buffer.part(MAX_STATE, MAX_ANSWER);
        let mut len = 0;
        let mut first_line = false;
        let errno = loop {
            if len == MAX_ANSWER {
                break 0;
            }
            let n = syscall(
                libc::SYS_read,
                fd as usize,
                answer.as_mut_ptr().add(len) as usize,
                MAX_ANSWER - len,
                0,
            );
            if n == -(libc::EINTR as isize) {
                continue;
            }
            if n <= 0 {
                break -n;
            }
            len += n as usize;
            if !first_line {
                let read = core::slice::from_raw_parts(answer.as_ptr() as *const u8, len);
                if read.contains(&b'\n') {
                    first_line = true;
                    read_timeout(fd, 0);
                }
            }
        };
        early::close(fd);
        let answer = core::slice::from_raw_parts(answer.as_ptr() as *const u8, len);
        if errno == 0 && same(answer, b"taken\ndone\n") {
            early::exit(0);
        }
        // Any other answer — a decline, a failure, a daemon that ended or
        // did not answer in time — is the full hook's to judge
        // (`handoff::relayed`): it reports what the daemon did, or, when
        // nothing was done, offers the hook again or works alone.
        restore_stdin(state, true);
        // In the mapping: on the stack, its pages would be touched by the
        // stack probe at every hook, relayed or not.
        let entry = buffer.part(MAX_STATE + MAX_ANSWER, MAX_ENTRY);
        let mut at = 0;
        let mut push = |bytes: &[u8]| {
            for b in bytes {
                if at + 1 < entry.len() {
                    // A NUL would end the entry early.
                    write_volatile(
                        entry.as_mut_ptr().add(at) as *mut u8,
                        if *b == 0 { b' ' } else { *b },
                    );
                    at += 1;
                }
            }
        };
        let mut digits = [0u8; 20];
        push(ANSWER_ENV.as_bytes());
        push(b"=");
        push(decimal(errno as u64, &mut digits));
        push(b" ");
        push(answer);
        write_volatile(entry.as_mut_ptr().add(at) as *mut u8, 0);
        process.exec_adding(
            c"/proc/self/exe".as_ptr().cast(),
            process.argv(),
            entry.as_ptr() as *const u8,
        );
        let message = b"macvlan: hook: cannot start the full hook to judge the daemon's answer (exec /proc/self/exe failed); see the daemon's log\n";
        early::write_all(2, message, false);
        early::exit(1);
    }
}
