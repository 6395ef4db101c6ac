//! The `macvlan-runc` runtime wrapper: finds runc's subcommand and bundle in
//! an unchanged runc command line, adds our hooks to a bundle that asks for
//! a network, and hands over to the real runc.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use serde_json::{json, Value};

use crate::oci::passthrough;
use crate::request::Field;

/// What the wrapper needs to know about one runc command line.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Invocation {
    /// The command line for runc: the original minus the wrapper's own option.
    pub runc_args: Vec<String>,
    /// Index of the subcommand in `runc_args`.
    pub subcommand: Option<usize>,
    pub log: Option<PathBuf>,
    pub log_format_json: bool,
    /// `--macvlan-config PATH`.
    pub config: Option<PathBuf>,
}

/// Splits `-name`, `--name`, `--name=value` into (name, inline value); Go's
/// flag package (under runc's urfave/cli) accepts all of them.
fn split_flag(arg: &str) -> Option<(&str, Option<&str>)> {
    let body = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-'))?;
    if body.is_empty() {
        return None;
    }
    Some(match body.split_once('=') {
        Some((name, value)) => (name, Some(value)),
        None => (body, None),
    })
}

/// Parses runc's global options up to the subcommand.
pub fn parse_invocation(args: &[String]) -> Invocation {
    let mut invocation = Invocation::default();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        if arg == "--" {
            invocation.runc_args.extend(args[i..].iter().cloned());
            return invocation;
        }
        let Some((name, inline)) = split_flag(arg) else {
            invocation.subcommand = Some(invocation.runc_args.len());
            invocation.runc_args.extend(args[i..].iter().cloned());
            return invocation;
        };
        let takes_value = passthrough::takes_value(name.as_bytes());
        let value = match (takes_value, inline) {
            (false, _) => None,
            (true, Some(value)) => Some(value.to_string()),
            (true, None) => {
                i += 1;
                args.get(i).cloned()
            }
        };
        if passthrough::is_own_option(name.as_bytes()) {
            invocation.config = value.map(PathBuf::from);
        } else {
            match name {
                "log" => invocation.log = value.clone().map(PathBuf::from),
                "log-format" => invocation.log_format_json = value.as_deref() == Some("json"),
                _ => {}
            }
            invocation.runc_args.push(arg.clone());
            if takes_value && inline.is_none() {
                if let Some(value) = value {
                    invocation.runc_args.push(value);
                }
            }
        }
        i += 1;
    }
    invocation
}

impl Invocation {
    pub fn subcommand_name(&self) -> Option<&str> {
        self.subcommand.map(|i| self.runc_args[i].as_str())
    }

    /// The bundle of `create`/`run`: `-b`, `--bundle`, `--bundle=`, or the
    /// current directory.
    pub fn bundle(&self) -> Option<PathBuf> {
        let start = self.subcommand? + 1;
        let rest = &self.runc_args[start..];
        let mut i = 0;
        while i < rest.len() {
            if rest[i] == "--" {
                break;
            }
            if let Some((name, inline)) = split_flag(&rest[i]) {
                if name == "b" || name == "bundle" {
                    return match inline {
                        Some(value) => Some(PathBuf::from(value)),
                        None => rest.get(i + 1).map(PathBuf::from),
                    };
                }
            }
            i += 1;
        }
        Some(PathBuf::from("."))
    }
}

/// Whether a config.json asks for one of our networks (any `macvlan.*`
/// annotation, or NETWORK, NETWORKS or TYPE in the environment when the
/// policy lets env count).
pub fn asks_for_network(config: &Value, allow_env: bool) -> bool {
    let annotations = config
        .get("annotations")
        .and_then(Value::as_object)
        .is_some_and(|map| map.keys().any(|k| k.starts_with("macvlan.")));
    if annotations {
        return true;
    }
    allow_env
        && config
            .pointer("/process/env")
            .and_then(Value::as_array)
            .is_some_and(|env| {
                env.iter().filter_map(Value::as_str).any(|entry| {
                    // A network, or limits alone (which shape the
                    // container's existing interface).
                    let names = [
                        Field::Network,
                        Field::Networks,
                        Field::Type,
                        Field::Rate,
                        Field::IngressRate,
                    ]
                    .into_iter()
                    .flat_map(|field| field.env_names());
                    names.into_iter().any(|name| {
                        entry
                            .strip_prefix(name)
                            .and_then(|v| v.strip_prefix('='))
                            .is_some_and(|v| !v.is_empty())
                    })
                })
            })
}

/// Adds our createRuntime and poststop hooks, unless they are there
/// already. Returns whether it changed anything.
pub fn add_hooks(config: &mut Value, hook_binary: &Path, config_path: &Path) -> Result<bool> {
    let Some(root) = config.as_object_mut() else {
        bail!("config.json is not a JSON object");
    };
    let hooks = root.entry("hooks").or_insert_with(|| json!({}));
    let Some(hooks) = hooks.as_object_mut() else {
        bail!("config.json: \"hooks\" is not an object");
    };
    let binary = hook_binary.display().to_string();
    let mut changed = false;
    for stage in ["createRuntime", "poststop"] {
        let list = hooks.entry(stage).or_insert_with(|| json!([]));
        let Some(list) = list.as_array_mut() else {
            bail!("config.json: hooks.{stage} is not a list");
        };
        let present = list.iter().any(|hook| {
            hook.get("path").and_then(Value::as_str) == Some(binary.as_str())
                && hook
                    .get("args")
                    .and_then(Value::as_array)
                    .is_some_and(|args| args.iter().any(|a| a == "hook"))
        });
        if !present {
            list.push(json!({
                "path": binary,
                "args": ["macvlan", "--config", config_path.display().to_string(), "hook", stage],
            }));
            changed = true;
        }
    }
    Ok(changed)
}

/// Replaces `path` with `contents` atomically: a temporary file in the same
/// directory, renamed over the original (keeping its mode).
pub fn write_atomically(path: &Path, contents: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .context("config.json path has no file name")?;
    let temporary = dir.join(format!(
        ".{}.macvlan-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    // The bundle directory may belong to another user: the temporary file
    // is created new (O_EXCL), never through a link planted at its name,
    // with the original's mode. No fsync: the rename makes the swap atomic
    // for runc, which reads the file right away; after a power loss the
    // engine recreates the bundle anyway.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or(0o644);
    crate::files::replace(path, &temporary, contents, mode).with_context(|| {
        format!(
            "replace {} (through {})",
            path.display(),
            temporary.display()
        )
    })
}

/// Adds the hooks to `<bundle>/config.json` when it asks for a network.
/// Returns whether the file was changed.
pub fn prepare_bundle(
    bundle: &Path,
    allow_env: bool,
    hook_binary: &Path,
    config_path: &Path,
) -> Result<bool> {
    let path = bundle.join("config.json");
    let text = std::fs::read(&path).with_context(|| format!("read {}", path.display()))?;
    // Generic JSON: fields this program does not know must survive.
    let mut config: Value =
        serde_json::from_slice(&text).with_context(|| format!("parse {}", path.display()))?;
    if !asks_for_network(&config, allow_env) {
        return Ok(false);
    }
    if !add_hooks(&mut config, hook_binary, config_path)? {
        return Ok(false);
    }
    let mut out = serde_json::to_vec(&config)?;
    out.push(b'\n');
    write_atomically(&path, &out)?;
    Ok(true)
}

/// The JSON line containerd shows the user from runc's `--log` file.
pub fn json_log_line(message: &str) -> String {
    let time = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
    json!({"level": "error", "msg": message, "time": time}).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn finds_the_subcommand_past_global_options() {
        for (line, sub) in [
            ("create --bundle /b id", "create"),
            ("--root /r --log /l --log-format json create id", "create"),
            ("--root=/r --log=/l --log-format=json start id", "start"),
            (
                "--debug --systemd-cgroup --criu /c --rootless false delete id",
                "delete",
            ),
            ("-root /r state id", "state"),
            ("features", "features"),
        ] {
            let invocation = parse_invocation(&args(line));
            assert_eq!(invocation.subcommand_name(), Some(sub), "{line}");
            assert_eq!(invocation.runc_args, args(line), "{line}");
        }
        let invocation = parse_invocation(&args("--log /l --log-format json kill id"));
        assert_eq!(invocation.log.as_deref(), Some(Path::new("/l")));
        assert!(invocation.log_format_json);
        assert!(parse_invocation(&args("--debug")).subcommand.is_none());
    }

    #[test]
    fn removes_its_own_option() {
        let invocation =
            parse_invocation(&args("--macvlan-config /etc/x.toml --root /r run -b /b id"));
        assert_eq!(invocation.config.as_deref(), Some(Path::new("/etc/x.toml")));
        assert_eq!(invocation.runc_args, args("--root /r run -b /b id"));
        let invocation = parse_invocation(&args("--macvlan-config=/x create id"));
        assert_eq!(invocation.runc_args, args("create id"));
    }

    #[test]
    fn finds_the_bundle() {
        for (line, bundle) in [
            ("create --bundle /b id", "/b"),
            ("create -b /b id", "/b"),
            ("--root /r create --bundle=/b --pid-file /p id", "/b"),
            ("run --pid-file /p -bundle /b id", "/b"),
            ("create --console-socket /s id", "."),
        ] {
            let invocation = parse_invocation(&args(line));
            assert_eq!(invocation.bundle(), Some(PathBuf::from(bundle)), "{line}");
        }
    }

    #[test]
    fn decides_who_asks_for_a_network() {
        let by_env = json!({"process": {"env": ["PATH=/bin", "TYPE=flat"]}});
        assert!(asks_for_network(&by_env, true));
        assert!(!asks_for_network(&by_env, false));
        let by_network = json!({"process": {"env": ["NETWORK=lan"]}});
        assert!(asks_for_network(&by_network, true));
        let by_networks = json!({"process": {"env": ["NETWORKS=lan,storage"]}});
        assert!(asks_for_network(&by_networks, true));
        let by_annotation = json!({"annotations": {"macvlan.type": "flat"}});
        assert!(asks_for_network(&by_annotation, false));
        let nothing =
            json!({"process": {"env": ["TYPES=x", "TYPE="]}, "annotations": {"other": "x"}});
        assert!(!asks_for_network(&nothing, true));
    }

    #[test]
    fn adds_hooks_once_and_keeps_unknown_fields() {
        let mut config = json!({
            "ociVersion": "1.0.2",
            "x-unknown": {"kept": [1, 2]},
            "hooks": {"createRuntime": [{"path": "/other"}], "prestart": [{"path": "/p"}]},
        });
        let binary = Path::new("/usr/bin/macvlan");
        let cfg = Path::new("/etc/macvlan-runc/config.toml");
        assert!(add_hooks(&mut config, binary, cfg).unwrap());
        assert!(!add_hooks(&mut config, binary, cfg).unwrap());
        assert_eq!(config["x-unknown"], json!({"kept": [1, 2]}));
        assert_eq!(
            config["hooks"]["createRuntime"].as_array().unwrap().len(),
            2
        );
        assert_eq!(config["hooks"]["poststop"].as_array().unwrap().len(), 1);
        assert_eq!(config["hooks"]["prestart"].as_array().unwrap().len(), 1);
        assert_eq!(
            config["hooks"]["poststop"][0]["args"],
            json!([
                "macvlan",
                "--config",
                "/etc/macvlan-runc/config.toml",
                "hook",
                "poststop"
            ])
        );
    }

    #[test]
    fn atomic_write_replaces_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, "old").unwrap();
        write_atomically(&path, b"new").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_link_planted_at_the_temporary_name_is_not_followed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, "old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let planted = dir
            .path()
            .join(format!(".config.json.macvlan-{}", std::process::id()));
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        write_atomically(&path, b"new").unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o640);
        assert!(std::fs::symlink_metadata(&planted).is_err());
    }

    #[test]
    fn log_line_is_json_containerd_reads() {
        let line: Value = serde_json::from_str(&json_log_line("bad \"thing\"")).unwrap();
        assert_eq!(line["level"], "error");
        assert_eq!(line["msg"], "bad \"thing\"");
    }
}
