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

// The process's entry point (`build.rs` links it with `--entry`): the fast
// path first, then glibc's `_start`.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
macvlan_runc::early_entry!(macvlan_runc_entry, fast::exec_runc);

/// Pass-through runtime calls, before the C library has started: see
/// `macvlan_runc::oci::passthrough` for what may and may not be used here.
/// Returns when the call is not a plain pass-through or anything fails;
/// `main` then does (or reports) the same through the full path.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod fast {
    use core::mem::MaybeUninit;
    use core::ptr::write_volatile;

    use macvlan_runc::early::{self, join, read_file, Mapped, Startup, MAX_PATH};
    use macvlan_runc::oci::passthrough::{
        begins_env, own_value, pass_through, runtime, Toml, DEFAULT_CONFIG_NUL, DEFAULT_PATH,
    };

    const MAX_ARGS: usize = 256;
    const MAX_CONFIG: usize = 64 * 1024;

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
            if early::is_file(candidate) {
                return Some(candidate);
            }
        }
        None
    }

    pub unsafe extern "C" fn exec_runc(sp: *const usize) {
        let process = Startup::from_stack(sp);
        let mut arg_store = [const { MaybeUninit::<&[u8]>::uninit() }; MAX_ARGS];
        let Some(args) = process.args(&mut arg_store) else {
            return;
        };
        let Some(call) = pass_through(args) else {
            return;
        };

        // The environment: PATH, MACVLAN_CONFIG, and no MACVLAN_RUNC_WRAPPED
        // (a runtime pointing back at the wrapper: the full path says so).
        let mut path_var: Option<&[u8]> = None;
        let mut config_var: Option<*const u8> = None;
        let mut i = 0;
        while let Some(entry) = process.env(i) {
            if begins_env(entry, b"MACVLAN_RUNC_WRAPPED").is_some() {
                return;
            }
            // The first entry of a name is getenv's.
            if let Some(value) = begins_env(entry, b"PATH").filter(|_| path_var.is_none()) {
                path_var = Some(value);
            }
            if let Some(value) =
                begins_env(entry, b"MACVLAN_CONFIG").filter(|_| config_var.is_none())
            {
                if value.is_empty() {
                    return;
                }
                config_var = Some(value.as_ptr());
            }
            i += 1;
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
        let Some(mut buffer) = Mapped::new(MAX_CONFIG) else {
            return;
        };
        let text = buffer.part(0, MAX_CONFIG);
        let Some(len) = read_file(config_path, explicit, text) else {
            return;
        };
        let text = core::slice::from_raw_parts(text.as_ptr() as *const u8, len);
        let name: &[u8] = match runtime(text) {
            Toml::Str(value) => value,
            Toml::Absent => b"runc",
            _ => return,
        };

        let mut path = [const { MaybeUninit::<u8>::uninit() }; MAX_PATH];
        let Some(program) = find_program(name, path_var, &mut path) else {
            return;
        };

        // runc's argv: its path, then the command line without our option.
        let mut new_argv = [const { MaybeUninit::<*const u8>::uninit() }; MAX_ARGS + 2];
        new_argv[0].write(program);
        let mut n = 1;
        for i in 0..args.len() {
            if call.own.is_some_and(|own| own.args().contains(&i)) {
                continue;
            }
            write_volatile(
                new_argv.as_mut_ptr().add(n) as *mut *const u8,
                *process.argv().add(i + 1),
            );
            n += 1;
        }
        new_argv[n].write(core::ptr::null());

        // As Rust's Command::exec leaves it for the full path: SIGPIPE at its
        // default (the blocked mask is inherited either way).
        let default_action = [0usize; 4];
        early::syscall(
            libc::SYS_rt_sigaction,
            libc::SIGPIPE as usize,
            default_action.as_ptr() as usize,
            0,
            8,
        );
        process.exec_adding(
            program,
            new_argv.as_ptr() as *const *const u8,
            WRAPPED_NUL.as_ptr(),
        );
        // execve failed: the full path tries again and reports.
    }

    const WRAPPED_NUL: &[u8] = b"MACVLAN_RUNC_WRAPPED=1\0";
}
