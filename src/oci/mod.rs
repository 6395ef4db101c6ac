//! The OCI side: the state a runtime passes to hooks, the bundle's
//! config.json, and the hook stages.

pub mod handoff;
pub mod hook;
pub mod passthrough;
pub mod resolv;
pub mod wrapper;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("cannot parse the OCI state on stdin: {0}")]
    State(String),
    #[error("cannot read {path}: {message}")]
    Bundle { path: String, message: String },
}

/// The OCI state JSON, read leniently: runtimes add fields and statuses the
/// spec does not list (oci-spec's `State` rejects those).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    pub id: String,
    pub status: String,
    pub pid: Option<u32>,
    pub bundle: Option<PathBuf>,
    pub annotations: BTreeMap<String, String>,
}

impl State {
    pub fn parse(text: &str) -> Result<State, OciError> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| OciError::State(e.to_string()))?;
        let id = value
            .get("id")
            .and_then(Value::as_str)
            .filter(|id| !id.is_empty())
            .ok_or_else(|| OciError::State("no \"id\"".into()))?
            .to_string();
        let status = value
            .get("status")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let pid = value
            .get("pid")
            .and_then(Value::as_u64)
            .filter(|pid| *pid > 0 && *pid <= u32::MAX as u64)
            .map(|pid| pid as u32);
        let bundle = value
            .get("bundle")
            .and_then(Value::as_str)
            .filter(|b| !b.is_empty())
            .map(PathBuf::from);
        Ok(State {
            id,
            status,
            pid,
            bundle,
            annotations: string_map(value.get("annotations")),
        })
    }
}

fn string_map(value: Option<&Value>) -> BTreeMap<String, String> {
    value
        .and_then(Value::as_object)
        .map(|map| {
            map.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// How the container's config.json sets up its network namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetnsSpec {
    /// A new, empty namespace: ours to configure.
    New,
    /// Joins an existing namespace (e.g. a pod's).
    Path(String),
    /// No network namespace entry: the container shares the host's.
    Host,
}

/// What the hook needs from the bundle's config.json.
#[derive(Debug, Clone)]
pub struct BundleConfig {
    pub annotations: BTreeMap<String, String>,
    pub env: Vec<String>,
    pub netns: NetnsSpec,
    /// The container's hostname, the default service name.
    pub hostname: Option<String>,
    /// Where its /etc/resolv.conf is on the host (a rootfs relative to the
    /// bundle until `load` makes it absolute).
    pub resolv: Option<resolv::Place>,
}

impl BundleConfig {
    /// The bundle's config.json, as text (handed to the daemon as read)
    /// and parsed.
    pub fn load(bundle: &Path) -> Result<(String, BundleConfig), OciError> {
        let path = bundle.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|e| OciError::Bundle {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        let config = BundleConfig::from_text(bundle, &text)?;
        Ok((text, config))
    }

    /// Parses the config.json of `bundle`, read as `text`.
    pub fn from_text(bundle: &Path, text: &str) -> Result<BundleConfig, OciError> {
        let path = bundle.join("config.json");
        let mut config = BundleConfig::parse(text).map_err(|message| OciError::Bundle {
            path: path.display().to_string(),
            message,
        })?;
        if let Some(resolv::Place::Rootfs { root }) = &mut config.resolv {
            if root.is_relative() {
                *root = bundle.join(&*root);
            }
        }
        Ok(config)
    }

    pub fn parse(text: &str) -> Result<BundleConfig, String> {
        let value: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let env = value
            .pointer("/process/env")
            .and_then(Value::as_array)
            .map(|env| {
                env.iter()
                    .filter_map(|e| e.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let namespaces = value
            .pointer("/linux/namespaces")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let netns = namespaces
            .iter()
            .find(|ns| ns.get("type").and_then(Value::as_str) == Some("network"))
            .map(|ns| match ns.get("path").and_then(Value::as_str) {
                Some(path) if !path.is_empty() => NetnsSpec::Path(path.to_string()),
                _ => NetnsSpec::New,
            })
            .unwrap_or(NetnsSpec::Host);
        Ok(BundleConfig {
            annotations: string_map(value.get("annotations")),
            env,
            netns,
            hostname: value
                .get("hostname")
                .and_then(Value::as_str)
                .map(str::to_string),
            resolv: resolv::Place::from_bundle(Path::new(""), &value),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_is_parsed_leniently() {
        let state = State::parse(
            r#"{"ociVersion":"1.0.2","id":"c1","status":"creating","pid":42,
                "bundle":"/b","annotations":{"macvlan.type":"flat"},"extra":{"x":1}}"#,
        )
        .unwrap();
        assert_eq!(state.id, "c1");
        assert_eq!(state.pid, Some(42));
        assert_eq!(state.bundle.as_deref(), Some(Path::new("/b")));
        assert_eq!(state.annotations["macvlan.type"], "flat");
        let stopped = State::parse(r#"{"id":"c1","status":"weird-new-status"}"#).unwrap();
        assert_eq!(stopped.pid, None);
        assert_eq!(stopped.status, "weird-new-status");
        assert!(State::parse(r#"{"status":"stopped"}"#).is_err());
        assert!(State::parse("not json").is_err());
    }

    #[test]
    fn bundle_config_namespaces() {
        let new = BundleConfig::parse(
            r#"{"process":{"env":["TYPE=flat"]},"linux":{"namespaces":[{"type":"pid"},{"type":"network"}]}}"#,
        )
        .unwrap();
        assert_eq!(new.netns, NetnsSpec::New);
        assert_eq!(new.env, ["TYPE=flat"]);
        let host = BundleConfig::parse(r#"{"linux":{"namespaces":[{"type":"pid"}]}}"#).unwrap();
        assert_eq!(host.netns, NetnsSpec::Host);
        let joined = BundleConfig::parse(
            r#"{"linux":{"namespaces":[{"type":"network","path":"/run/netns/x"}]}}"#,
        )
        .unwrap();
        assert_eq!(joined.netns, NetnsSpec::Path("/run/netns/x".into()));
    }
}
