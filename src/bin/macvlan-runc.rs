//! `macvlan-runc`: a runc-compatible runtime. Takes runc's command line
//! unchanged, adds the macvlan hooks to bundles that ask for a network on
//! `create`/`run`, then executes the real runc. Other calls are passed to
//! runc from the entry point, before the C library starts ([`fast`]).

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _, Result};
use macvlan_runc::config::{Config, DEFAULT_CONFIG_PATH};
use macvlan_runc::oci::passthrough::DEFAULT_PATH;
use macvlan_runc::oci::wrapper::{json_log_line, parse_invocation, prepare_bundle, Invocation};

/// Set for the real runc, so that a runtime path pointing back at the
/// wrapper is caught instead of looping.
const WRAPPED_ENV: &str = "MACVLAN_RUNC_WRAPPED";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let invocation = parse_invocation(&args);
    let error = match run(&invocation) {
        Ok(never) => match never {},
        Err(error) => error,
    };
    let message = format!("macvlan-runc: {error:#}");
    eprintln!("{message}");
    if let Some(log) = &invocation.log {
        // containerd shows the user the last error line of runc's --log.
        let line = if invocation.log_format_json {
            json_log_line(&message)
        } else {
            format!(
                "time=\"{}\" level=error msg={:?}",
                humantime::format_rfc3339_millis(std::time::SystemTime::now()),
                message
            )
        };
        if let Ok(mut file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
        {
            let _ = writeln!(file, "{line}");
        }
    }
    std::process::exit(1);
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Finds `program` the way execvp would.
fn resolve(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        return Some(PathBuf::from(program));
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

fn run(invocation: &Invocation) -> Result<std::convert::Infallible> {
    if std::env::var_os(WRAPPED_ENV).is_some() {
        bail!("the configured runtime is macvlan-runc itself; set `runtime` in the config file to the real runc");
    }
    let (config_path, explicit) = match invocation
        .config
        .clone()
        .or_else(|| std::env::var_os("MACVLAN_CONFIG").map(PathBuf::from))
    {
        Some(path) => (absolute(&path), true),
        None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
    };
    let config = Config::load(&config_path, explicit)?;

    // Only create and run need more than an exec: every other runtime call
    // (dockerd's shim makes several per container) goes straight to runc.
    if matches!(invocation.subcommand_name(), Some("create" | "run")) {
        let own = std::env::current_exe()
            .and_then(|p| p.canonicalize())
            .context("find macvlan-runc's own path")?;
        let bundle = invocation.bundle().unwrap_or_else(|| PathBuf::from("."));
        let hook_binary = own.with_file_name("macvlan");
        if !hook_binary.is_file() {
            bail!(
                "the hook binary {} is missing (it is installed beside macvlan-runc)",
                hook_binary.display()
            );
        }
        prepare_bundle(&bundle, config.policy.allow_env, &hook_binary, &config_path)
            .with_context(|| format!("add the macvlan hooks to bundle {}", bundle.display()))?;
    }

    // A runtime that points back at this wrapper is caught by WRAPPED_ENV
    // in the second instance, before it does anything.
    let runtime = resolve(&config.runtime)
        .with_context(|| format!("runtime {:?} not found on PATH", config.runtime))?;
    // exec: runc replaces this process, so exit codes, stdio, signals and
    // the console socket are runc's own.
    let error = Command::new(&runtime)
        .args(&invocation.runc_args)
        .env(WRAPPED_ENV, "1")
        .exec();
    Err(error).with_context(|| format!("execute {}", runtime.display()))
}

/// The process's entry point (`build.rs` links it with `--entry`): the fast
/// path first, then glibc's `_start` with the stack pointer and `rdx` (the
/// dynamic loader's finalizer, zero in a static binary) as it found them.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
#[unsafe(naked)]
#[no_mangle]
unsafe extern "C" fn macvlan_runc_entry() -> ! {
    core::arch::naked_asm!(
        "mov r12, rsp",
        "mov r13, rdx",
        "mov rdi, rsp",
        "and rsp, -16",
        "call {fast}",
        "mov rsp, r12",
        "mov rdx, r13",
        "jmp {start}",
        fast = sym fast::exec_runc,
        start = sym _start,
    )
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
extern "C" {
    /// The C library's entry point (crt1.o).
    fn _start() -> !;
}

/// Pass-through runtime calls, before the C library has started: see
/// `macvlan_runc::oci::passthrough` for what may and may not be used here.
/// Returns when the call is not a plain pass-through or anything fails;
/// `main` then does (or reports) the same through the full path.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod fast {
    use core::mem::MaybeUninit;
    use core::ptr::write_volatile;

    use macvlan_runc::config::DEFAULT_CONFIG_PATH;
    use macvlan_runc::oci::passthrough::{
        begins_env, own_value, pass_through, runtime, Toml, DEFAULT_PATH,
    };

    const MAX_ARGS: usize = 256;
    const MAX_ENV: usize = 1024;
    const MAX_CONFIG: usize = 64 * 1024;
    const MAX_PATH: usize = 4096;

    #[inline(always)]
    unsafe fn syscall(n: libc::c_long, a: usize, b: usize, c: usize, d: usize) -> isize {
        let ret: isize;
        core::arch::asm!(
            "syscall",
            inlateout("rax") n as isize => ret,
            in("rdi") a, in("rsi") b, in("rdx") c, in("r10") d,
            lateout("rcx") _, lateout("r11") _,
            options(nostack),
        );
        ret
    }

    /// A NUL-terminated string as a slice (without the NUL). Volatile
    /// reads: the loop must not become a call to `strlen`.
    unsafe fn c_bytes<'a>(p: *const u8) -> &'a [u8] {
        let mut n = 0;
        while core::ptr::read_volatile(p.add(n)) != 0 {
            n += 1;
        }
        core::slice::from_raw_parts(p, n)
    }

    /// Reads the config file into `buf`: `Some(len)`, or `Some(0)` for a
    /// missing file at the default place (defaults), `None` otherwise.
    unsafe fn read_config(
        path: *const u8,
        explicit: bool,
        buf: &mut [MaybeUninit<u8>],
    ) -> Option<usize> {
        let fd = syscall(
            libc::SYS_openat,
            libc::AT_FDCWD as usize,
            path as usize,
            (libc::O_RDONLY | libc::O_CLOEXEC) as usize,
            0,
        );
        if fd == -(libc::ENOENT as isize) && !explicit {
            return Some(0);
        }
        if fd < 0 {
            return None;
        }
        let mut len = 0;
        let done = loop {
            let n = syscall(
                libc::SYS_read,
                fd as usize,
                buf.as_mut_ptr().add(len) as usize,
                buf.len() - len,
                0,
            );
            if n < 0 || len + n as usize == buf.len() {
                break None;
            }
            if n == 0 {
                break Some(len);
            }
            len += n as usize;
        };
        syscall(libc::SYS_close, fd as usize, 0, 0, 0);
        done
    }

    /// Writes `parts` one after another and a NUL into `out` (volatile
    /// writes: a copy loop must not become a call to `memcpy`).
    unsafe fn join(out: &mut [MaybeUninit<u8>; MAX_PATH], parts: &[&[u8]]) -> Option<*const u8> {
        let mut at = 0;
        for part in parts {
            for b in *part {
                if at + 1 >= MAX_PATH {
                    return None;
                }
                write_volatile(out.as_mut_ptr().add(at) as *mut u8, *b);
                at += 1;
            }
        }
        write_volatile(out.as_mut_ptr().add(at) as *mut u8, 0);
        Some(out.as_ptr() as *const u8)
    }

    /// Whether `path` is a regular file (following links), as the full
    /// wrapper's search of PATH asks.
    unsafe fn is_file(path: *const u8) -> bool {
        let mut st = MaybeUninit::<libc::stat>::uninit();
        syscall(
            libc::SYS_newfstatat,
            libc::AT_FDCWD as usize,
            path as usize,
            st.as_mut_ptr() as usize,
            0,
        ) == 0
            && st.assume_init_ref().st_mode & libc::S_IFMT == libc::S_IFREG
    }

    /// runc's path, as the full wrapper finds it: as given if it has a
    /// slash, else the first regular file of that name on `PATH`.
    unsafe fn find_program(
        name: &[u8],
        path_var: Option<&[u8]>,
        buf: &mut [MaybeUninit<u8>; MAX_PATH],
    ) -> Option<*const u8> {
        if name.contains(&b'/') {
            return join(buf, &[name]);
        }
        let dirs = path_var.unwrap_or(DEFAULT_PATH.as_bytes());
        for dir in dirs.split(|b| *b == b':') {
            let candidate = if dir.is_empty() {
                join(buf, &[name])?
            } else {
                join(buf, &[dir, b"/", name])?
            };
            if is_file(candidate) {
                return Some(candidate);
            }
        }
        None
    }

    pub unsafe extern "C" fn exec_runc(sp: *const usize) {
        let argc = *sp;
        let argv = sp.add(1) as *const *const u8;
        let envp = argv.add(argc + 1);
        if !(2..=MAX_ARGS).contains(&argc) {
            return;
        }
        // The command line without the program name.
        let mut arg_store = [const { MaybeUninit::<&[u8]>::uninit() }; MAX_ARGS];
        for i in 1..argc {
            arg_store[i - 1].write(c_bytes(*argv.add(i)));
        }
        let args = core::slice::from_raw_parts(arg_store.as_ptr() as *const &[u8], argc - 1);
        let Some(call) = pass_through(args) else {
            return;
        };

        // The environment: PATH, MACVLAN_CONFIG, and no MACVLAN_RUNC_WRAPPED
        // (a runtime pointing back at the wrapper: the full path says so).
        let mut env_count = 0;
        let mut path_var: Option<&[u8]> = None;
        let mut config_var: Option<*const u8> = None;
        while !(*envp.add(env_count)).is_null() {
            let entry = c_bytes(*envp.add(env_count));
            if begins_env(entry, b"MACVLAN_RUNC_WRAPPED").is_some() {
                return;
            }
            if let Some(value) = begins_env(entry, b"PATH") {
                path_var = Some(value);
            }
            if let Some(value) = begins_env(entry, b"MACVLAN_CONFIG") {
                if value.is_empty() {
                    return;
                }
                config_var = Some(value.as_ptr());
            }
            env_count += 1;
            if env_count + 2 > MAX_ENV {
                return;
            }
        }

        // The config file: --macvlan-config, MACVLAN_CONFIG, or the default.
        // Every value here ends a C string, so its pointer is one.
        let (config_path, explicit) = match call.own {
            Some(own) => {
                let value = own_value(args, own);
                if value.is_empty() {
                    return;
                }
                (value.as_ptr(), true)
            }
            None => match config_var {
                Some(value) => (value, true),
                None => (DEFAULT_CONFIG_NUL.as_ptr(), false),
            },
        };
        let mut text = [const { MaybeUninit::<u8>::uninit() }; MAX_CONFIG];
        let Some(len) = read_config(config_path, explicit, &mut text) else {
            return;
        };
        let text = core::slice::from_raw_parts(text.as_ptr() as *const u8, len);
        let name: &[u8] = match runtime(text) {
            Toml::Found(value) => value,
            Toml::Absent => b"runc",
            Toml::Unsure => return,
        };

        let mut path = [const { MaybeUninit::<u8>::uninit() }; MAX_PATH];
        let Some(program) = find_program(name, path_var, &mut path) else {
            return;
        };

        // runc's argv: its path, then the command line without our option.
        let mut new_argv = [const { MaybeUninit::<*const u8>::uninit() }; MAX_ARGS + 2];
        new_argv[0].write(program);
        let mut n = 1;
        for i in 0..argc - 1 {
            if call.own.is_some_and(|own| own.args().contains(&i)) {
                continue;
            }
            write_volatile(
                new_argv.as_mut_ptr().add(n) as *mut *const u8,
                *argv.add(i + 1),
            );
            n += 1;
        }
        new_argv[n].write(core::ptr::null());
        let mut new_env = [const { MaybeUninit::<*const u8>::uninit() }; MAX_ENV];
        for i in 0..env_count {
            // Volatile: a copy loop must not become a call to `memcpy`.
            write_volatile(new_env.as_mut_ptr().add(i) as *mut *const u8, *envp.add(i));
        }
        new_env[env_count].write(WRAPPED_NUL.as_ptr());
        new_env[env_count + 1].write(core::ptr::null());

        // As Rust's Command::exec leaves it for the full path: SIGPIPE at its
        // default (the blocked mask is inherited either way).
        let default_action = [0usize; 4];
        syscall(
            libc::SYS_rt_sigaction,
            libc::SIGPIPE as usize,
            default_action.as_ptr() as usize,
            0,
            8,
        );
        syscall(
            libc::SYS_execve,
            program as usize,
            new_argv.as_ptr() as usize,
            new_env.as_ptr() as usize,
            0,
        );
        // execve failed: the full path tries again and reports.
    }

    const DEFAULT_CONFIG_NUL: &[u8] = b"/etc/macvlan-runc/config.toml\0";
    const WRAPPED_NUL: &[u8] = b"MACVLAN_RUNC_WRAPPED=1\0";
    const _: () = {
        let (with_nul, path) = (DEFAULT_CONFIG_NUL, DEFAULT_CONFIG_PATH.as_bytes());
        assert!(with_nul.len() == path.len() + 1);
        let mut i = 0;
        while i < path.len() {
            assert!(with_nul[i] == path[i]);
            i += 1;
        }
    };
}
