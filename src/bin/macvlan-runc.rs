//! `macvlan-runc`: a runc-compatible runtime. Takes runc's command line
//! unchanged, adds the macvlan hooks to bundles that ask for a network on
//! `create`/`run`, then executes the real runc.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _, Result};
use macvlan_runc::config::{Config, DEFAULT_CONFIG_PATH};
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
    let path = std::env::var_os("PATH")
        .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
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
