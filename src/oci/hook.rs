//! `macvlan hook <stage>`: dispatches an OCI hook invocation to attach
//! (createRuntime) or mark-stopped (poststop).

use anyhow::{bail, Context as _, Result};

use super::handoff::{self, Offered};
use super::{BundleConfig, NetnsSpec, State};
use crate::config::Config;
use crate::log::{Level, Logger};
use crate::net::{self, Context, Target};
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

    /// The stage's name in the spec (the hand-off to the daemon sends it).
    pub fn name(self) -> &'static str {
        match self {
            Stage::CreateRuntime => "createRuntime",
            Stage::Poststop => "poststop",
            Stage::Ignored => "ignored",
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

/// What a createRuntime hook is to do, decided from the state, the
/// bundle and the policy before anything is touched.
enum Plan {
    /// The container asks for nothing.
    Nothing,
    /// It joins a namespace another container owns (the path).
    Skip(String),
    Work(Box<Work>),
}

/// The work a createRuntime hook does, in this process or the daemon.
enum Work {
    Shape(request::ShapingRequest, Target),
    Attach(Box<request::NetworkRequest>, Target),
}

/// Who did a hook's work, for its log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DoneBy {
    /// The hook process itself.
    Hook,
    /// A running `macvlan daemon`, handed the state ([`super::handoff`]).
    Daemon,
}

impl DoneBy {
    pub fn as_str(self) -> &'static str {
        match self {
            DoneBy::Hook => "hook",
            DoneBy::Daemon => "daemon",
        }
    }
}

/// Runs the hook for a parsed state (`text`: as read, for the daemon):
/// hands it to a running daemon when one serves hooks, else does the work
/// here. The caller adds the container id to errors.
pub fn run_state(
    stage_name: Option<&str>,
    state: State,
    text: &str,
    config: Config,
    logger: &Logger,
) -> (DoneBy, Result<()>) {
    // The daemon's answer to the hook's early path, judged here; when
    // nothing was done, the hook goes on as if there had been no early path.
    if let Some(Offered::Done(result)) = handoff::relayed(&config, logger) {
        return (DoneBy::Daemon, result);
    }
    let stage = match stage_name {
        Some(name) => Stage::from_name(name),
        None => Stage::from_status(&state.status),
    };
    match stage {
        Stage::Ignored => (DoneBy::Hook, Ok(())),
        Stage::Poststop => {
            if let Offered::Done(result) = handoff::offer(&config, logger, stage, text, None) {
                return (DoneBy::Daemon, result);
            }
            let ctx = net::Context::new(config, logger.clone());
            poststop(ctx, &state.id, logger);
            (DoneBy::Hook, Ok(()))
        }
        Stage::CreateRuntime => {
            let planned = (|| {
                let bundle_path = state
                    .bundle
                    .clone()
                    .context("the OCI state has no bundle path")?;
                let (bundle_text, bundle) = BundleConfig::load(&bundle_path)?;
                let work = work_to_do(&state, &bundle, &config, logger)?;
                anyhow::Ok(work.map(|work| (bundle_text, work)))
            })();
            let (bundle_text, work) = match planned {
                Ok(Some(planned)) => planned,
                Ok(None) => return (DoneBy::Hook, Ok(())),
                Err(e) => return (DoneBy::Hook, Err(e)),
            };
            if let Offered::Done(result) =
                handoff::offer(&config, logger, stage, text, Some(&bundle_text))
            {
                return (DoneBy::Daemon, result);
            }
            let result =
                net::Context::new(config, logger.clone()).and_then(|ctx| execute(&ctx, work));
            (DoneBy::Hook, result)
        }
    }
}

/// The daemon's side of a handed-over hook: the same work, with the
/// daemon's context (its store already open).
pub fn serve(stage: Stage, state: &State, bundle_text: Option<&str>, ctx: &Context) -> Result<()> {
    match stage {
        Stage::Ignored => Ok(()),
        Stage::Poststop => {
            poststop(Ok(ctx), &state.id, &ctx.logger);
            Ok(())
        }
        Stage::CreateRuntime => {
            let bundle_path = state
                .bundle
                .as_deref()
                .context("the OCI state has no bundle path")?;
            // The hook's early path sends no config.json: read here, in the
            // hook's mount namespace (the daemon checked it shares it).
            let bundle = match bundle_text {
                Some(text) => BundleConfig::from_text(bundle_path, text)?,
                None => BundleConfig::load(bundle_path)?.1,
            };
            match work_to_do(state, &bundle, &ctx.config, &ctx.logger)? {
                Some(work) => execute(ctx, work),
                None => Ok(()),
            }
        }
    }
}

/// A failing poststop would fail the runtime's delete, and the container
/// could not be cleaned up: say what went wrong and succeed; the record
/// stays as it was for `macvlan gc`.
fn poststop<C: std::borrow::Borrow<Context>>(ctx: Result<C>, id: &str, logger: &Logger) {
    let stopped = ctx.and_then(|ctx| net::stopped(ctx.borrow(), id));
    if let Err(e) = stopped {
        logger.log(
            Level::Error,
            "poststop",
            &[
                ("container", id),
                (
                    "error",
                    &format!("{e:#}; the record is left for macvlan gc to release"),
                ),
            ],
        );
    }
}

// `docker run --net container:X`, a podman pod's members, every
// Kubernetes app container: the namespace is its owner's, configured
// when the owner started. Configuring it again would replace the
// owner's route, leave an ethN behind when the joiner stops, and
// throttle the owner's interface.
fn log_skip(logger: &Logger, id: &str, path: &str) {
    logger.log(
        Level::Info,
        "skip",
        &[
            ("container", id),
            ("netns", path),
            (
                "reason",
                "joins an existing network namespace; only its owner is configured",
            ),
        ],
    );
}

fn plan(state: &State, bundle: &BundleConfig, config: &Config) -> Result<Plan> {
    // The state's annotations are the config's, as the runtime saw them;
    // take both in case a runtime passes only one.
    let mut annotations = bundle.annotations.clone();
    annotations.extend(state.annotations.clone());
    let settings = Settings::collect(&annotations, &bundle.env, config.policy.allow_env)?;
    if settings.is_empty() {
        return Ok(Plan::Nothing);
    }
    if let NetnsSpec::Path(path) = &bundle.netns {
        return Ok(Plan::Skip(path.clone()));
    }
    let pid = || {
        state
            .pid
            .context("the OCI state has no pid; createRuntime needs the container's init process")
    };
    let Some(mut request) = request::parse(&state.id, &settings, &config.policy)? else {
        return Ok(match request::parse_shaping(&state.id, &settings)? {
            Some(shaping) => Plan::Work(Box::new(Work::Shape(
                shaping,
                Target::process(&state.id, pid()?),
            ))),
            None => Plan::Nothing,
        });
    };
    if let Some(discovery) = &mut request.discovery {
        discovery.service = Some(discovery.service_name(bundle.hostname.as_deref())?);
    }
    if bundle.netns == NetnsSpec::Host {
        bail!("the container shares the host's network namespace (no \"network\" entry in linux.namespaces); a macvlan needs a namespace of its own");
    }
    let target = Target {
        hostname: bundle.hostname.clone(),
        resolv: bundle.resolv.clone(),
        ..Target::process(&state.id, pid()?)
    };
    Ok(Plan::Work(Box::new(Work::Attach(
        Box::new(request),
        target,
    ))))
}

/// The plan's work, if any: a joined namespace is logged and left alone.
fn work_to_do(
    state: &State,
    bundle: &BundleConfig,
    config: &Config,
    logger: &Logger,
) -> Result<Option<Work>> {
    Ok(match plan(state, bundle, config)? {
        Plan::Nothing => None,
        Plan::Skip(path) => {
            log_skip(logger, &state.id, &path);
            None
        }
        Plan::Work(work) => Some(*work),
    })
}

fn execute(ctx: &Context, work: Work) -> Result<()> {
    match work {
        Work::Shape(shaping, target) => net::qos::shape(ctx, &shaping, &target),
        Work::Attach(request, target) => net::attach(ctx, &request, &target).map(|_| ()),
    }
}
