//! `macvlan hook <stage>`: dispatches an OCI hook invocation to attach
//! (createRuntime) or mark-stopped (poststop).

use std::path::Path;

use anyhow::{bail, Context as _, Result};

use super::{BundleConfig, NetnsSpec, State};
use crate::config::Config;
use crate::log::{Level, Logger};
use crate::net::{self, Target};
use crate::request::{self, Settings};

/// The hook stages this program acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    CreateRuntime,
    Poststop,
    /// Any other stage of the spec: accepted, nothing to do.
    Ignored,
}

impl Stage {
    /// `prestart` is the pre-1.0 name of the point where createRuntime runs.
    pub fn from_name(name: &str) -> Stage {
        match name {
            "createRuntime" | "prestart" => Stage::CreateRuntime,
            "poststop" => Stage::Poststop,
            _ => Stage::Ignored,
        }
    }

    /// For hooks.d entries that run one command at every stage: the stage
    /// follows from the state's status.
    pub fn from_status(status: &str) -> Stage {
        match status {
            "creating" => Stage::CreateRuntime,
            "stopped" => Stage::Poststop,
            _ => Stage::Ignored,
        }
    }
}

/// Runs the hook for a parsed state. The caller adds the container id to errors.
pub fn run_state(
    stage_name: Option<&str>,
    state: State,
    config: Config,
    logger: &Logger,
) -> Result<()> {
    let stage = match stage_name {
        Some(name) => Stage::from_name(name),
        None => Stage::from_status(&state.status),
    };
    match stage {
        Stage::Ignored => Ok(()),
        Stage::Poststop => {
            // A failing poststop would fail the runtime's delete, and the
            // container could not be cleaned up: say what went wrong and
            // succeed; the record stays as it was for `macvlan gc`.
            let stopped = net::Context::new(config, logger.clone())
                .and_then(|ctx| net::stopped(&ctx, &state.id));
            if let Err(e) = stopped {
                logger.log(
                    Level::Error,
                    "poststop",
                    &[
                        ("container", state.id.as_str()),
                        (
                            "error",
                            &format!("{e:#}; the record is left for macvlan gc to release"),
                        ),
                    ],
                );
            }
            Ok(())
        }
        Stage::CreateRuntime => create_runtime(state, config, logger),
    }
}

fn create_runtime(state: State, config: Config, logger: &Logger) -> Result<()> {
    let bundle_path = state
        .bundle
        .clone()
        .context("the OCI state has no bundle path")?;
    let bundle = BundleConfig::load(Path::new(&bundle_path))?;
    // The state's annotations are the config's, as the runtime saw them;
    // take both in case a runtime passes only one.
    let mut annotations = bundle.annotations.clone();
    annotations.extend(state.annotations.clone());
    let settings = Settings::collect(&annotations, &bundle.env, config.policy.allow_env)?;
    if settings.is_empty() {
        return Ok(());
    }
    // `docker run --net container:X`, a podman pod's members, every
    // Kubernetes app container: the namespace is its owner's, configured
    // when the owner started. Configuring it again would replace the
    // owner's route, leave an ethN behind when the joiner stops, and
    // throttle the owner's interface.
    if let NetnsSpec::Path(path) = &bundle.netns {
        logger.log(
            Level::Info,
            "skip",
            &[
                ("container", &state.id),
                ("netns", path),
                (
                    "reason",
                    "joins an existing network namespace; only its owner is configured",
                ),
            ],
        );
        return Ok(());
    }
    let Some(mut request) = request::parse(&state.id, &settings, &config.policy)? else {
        let Some(shaping) = request::parse_shaping(&state.id, &settings)? else {
            return Ok(());
        };
        let pid = state.pid.context(
            "the OCI state has no pid; createRuntime needs the container's init process",
        )?;
        let ctx = net::Context::new(config, logger.clone())?;
        let target = Target::process(&state.id, pid);
        return net::qos::shape(&ctx, &shaping, &target);
    };
    if let Some(discovery) = &mut request.discovery {
        discovery.service = Some(discovery.service_name(bundle.hostname.as_deref())?);
    }
    if bundle.netns == NetnsSpec::Host {
        bail!("the container shares the host's network namespace (no \"network\" entry in linux.namespaces); a macvlan needs a namespace of its own");
    }
    let pid = state
        .pid
        .context("the OCI state has no pid; createRuntime needs the container's init process")?;
    let ctx = net::Context::new(config, logger.clone())?;
    let target = Target {
        hostname: bundle.hostname.clone(),
        resolv: bundle.resolv.clone(),
        ..Target::process(&state.id, pid)
    };
    net::attach(&ctx, &request, &target)?;
    Ok(())
}
