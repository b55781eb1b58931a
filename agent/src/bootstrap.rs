//! The boot flow, step by step: user data, facts, node spec, model, plan, apply, record.
//! `boot`, `apply` and `plan` are this flow with different sources and endings.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use aws_config::SdkConfig;

use crate::cloud::{Metadata, MetadataError, NetworkSettings, aws, http::NetworkError};
use crate::engine::{self, Plan, PlanError, RunRecord, RunResult, State, StateError, Timeline};
use crate::host::{Host, os};
use crate::model::{self, DesiredState, Facts, ModelError};
use crate::retry::RetryError;
use crate::source::shim::{NewCredentials, ShimSourceError};
use crate::source::{self, StoreError, UserDataError};
use crate::spec::{self, BootConfig, NodeSpec, Sha256Hex, SpecError, SpecLocation};

/// Where the node spec comes from.
#[derive(Debug, Clone)]
pub enum SpecSource {
    /// The boot config in user data says (the `boot` command).
    UserData { file: Option<PathBuf> },
    /// Named on the command line (the `apply` command); the digest is optional.
    Url {
        url: String,
        sha256: Option<Sha256Hex>,
    },
}

#[derive(Debug, Clone)]
pub struct Options {
    pub root: PathBuf,
    pub source: SpecSource,
    /// How long each remote source (IMDS, the state store) is retried.
    pub deadline: Duration,
    /// The command, as recorded in the state.
    pub command: String,
    /// Whether a worker without kubelet credentials asks controller-shim for them
    /// (`boot`); otherwise it asks for the spec only and writes nothing (`plan`).
    pub credentials: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("reading user data from {path}: {source}")]
    UserDataFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    UserData(#[from] UserDataError),
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("{0}")]
    Metadata(RetryError<MetadataError>),
    #[error("{0}")]
    Store(RetryError<StoreError>),
    #[error(transparent)]
    Shim(#[from] ShimSourceError),
    #[error("writing the kubelet credentials: {0}")]
    Credentials(ShimSourceError),
    #[error(transparent)]
    Network(#[from] NetworkError),
    #[error("building the node's desired state: {0}")]
    Model(#[from] ModelError),
    #[error("planning: {0}")]
    Plan(#[from] PlanError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("{} of the changes failed:\n  - {}", failures.len(), failures.join("\n  - "))]
    Apply { failures: Vec<String> },
}

/// Exit codes; documented in the README and in `nodewright --help`.
pub mod exit {
    pub const OK: u8 = 0;
    pub const INTERNAL: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const INVALID_INPUT: u8 = 3;
    pub const UNREACHABLE: u8 = 4;
    pub const APPLY_FAILED: u8 = 5;
    pub const NO_STATE: u8 = 6;
}

impl BootError {
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::UserDataFile { .. } | Self::UserData(_) | Self::Spec(_) | Self::Network(_) => {
                exit::INVALID_INPUT
            }
            Self::Metadata(e) if !e.is_deadline() => exit::INVALID_INPUT,
            Self::Store(e) if !e.is_deadline() && !e.to_string().contains("HTTP 5") => {
                exit::INVALID_INPUT
            }
            Self::Metadata(_) | Self::Store(_) => exit::UNREACHABLE,
            Self::Shim(e) if e.is_unreachable() => exit::UNREACHABLE,
            Self::Shim(_) => exit::INVALID_INPUT,
            Self::Credentials(_) => exit::APPLY_FAILED,
            Self::Model(_) => exit::INVALID_INPUT,
            Self::Plan(_) | Self::Apply { .. } => exit::APPLY_FAILED,
            Self::State(_) => exit::INTERNAL,
        }
    }
}

/// Everything the flow learned before planning.
pub struct Prepared {
    pub boot: Option<BootConfig>,
    pub facts: Facts,
    pub spec: NodeSpec,
    pub spec_url: String,
    pub spec_sha256: String,
    pub desired: DesiredState,
    /// Kubelet credentials controller-shim issued, to install before applying.
    pub credentials: Option<NewCredentials>,
}

/// Reads the inputs and renders the desired state. Writes nothing.
pub async fn prepare(
    options: &Options,
    host: &Host,
    timeline: &mut Timeline,
) -> Result<Prepared, BootError> {
    let metadata = Metadata::new(options.deadline);

    let boot = match &options.source {
        SpecSource::UserData { file } => {
            let began = Instant::now();
            let result = read_boot_config(&metadata, file.as_ref()).await;
            timeline.record("user data", began, outcome_text(&result));
            let boot = result?;
            tracing::info!(
                cluster = %boot.cluster_name,
                node_group = %boot.node_group,
                role = %boot.role,
                spec = %boot.node_spec.describe(),
                "read the boot config"
            );
            Some(boot)
        }
        SpecSource::Url { .. } => None,
    };
    // Proxy and CA settings apply to every call from here on; IMDS bypasses them.
    let network = NetworkSettings {
        proxy: boot.as_ref().and_then(|b| b.proxy.clone()),
        ca_bundle: boot.as_ref().and_then(|b| b.ca_bundle.clone()),
    };

    let began = Instant::now();
    let facts = metadata.instance_facts().await.map(|instance| Facts {
        instance,
        host: os::host_facts(host.root()),
    });
    timeline.record("facts", began, outcome_text(&facts));
    let facts = facts.map_err(BootError::Metadata)?;
    tracing::info!(
        instance_id = %facts.instance.instance_id,
        availability_zone = %facts.instance.availability_zone,
        private_ipv4 = %facts.instance.private_ipv4,
        "gathered instance facts"
    );

    if let Some(boot) = &boot
        && let Some(shim) = &boot.node_spec.controller_shim
    {
        let began = Instant::now();
        let fetched = fetch_from_shim(options, host, boot, shim, &facts, &network).await;
        timeline.record("node spec", began, outcome_text(&fetched));
        let (spec, spec_sha256, credentials) = fetched?;
        let began = Instant::now();
        let desired = model::desired_state(&spec, &facts);
        timeline.record("model", began, outcome_text(&desired));
        return Ok(Prepared {
            spec_url: boot.node_spec.describe(),
            boot: Some(boot.clone()),
            facts,
            spec,
            spec_sha256,
            desired: desired?,
            credentials,
        });
    }
    let (url, sha256) = match (&options.source, &boot) {
        (_, Some(boot)) => (
            boot.node_spec.url.clone().unwrap_or_default(),
            Some(boot.node_spec.sha256.clone()),
        ),
        (SpecSource::Url { url, sha256 }, None) => (url.clone(), sha256.clone()),
        (SpecSource::UserData { .. }, None) => {
            unreachable!("user data always yields a boot config")
        }
    };
    let began = Instant::now();
    let spec = fetch_spec(
        &url,
        sha256.as_ref(),
        &facts,
        &network,
        options.deadline,
        boot.as_ref(),
    )
    .await;
    timeline.record("node spec", began, outcome_text(&spec));
    let (spec, spec_sha256) = spec?;

    let began = Instant::now();
    let desired = model::desired_state(&spec, &facts);
    timeline.record("model", began, outcome_text(&desired));
    let desired = desired?;

    Ok(Prepared {
        boot,
        facts,
        spec,
        spec_url: url,
        spec_sha256,
        desired,
        credentials: None,
    })
}

/// Workers: the spec (and, at first boot, the kubelet credentials) from controller-shim.
/// The spec's bytes are checked against the boot config's digest before anything the
/// shim sent is used.
async fn fetch_from_shim(
    options: &Options,
    host: &Host,
    boot: &BootConfig,
    shim: &spec::ControllerShimSource,
    facts: &Facts,
    network: &NetworkSettings,
) -> Result<(NodeSpec, String, Option<NewCredentials>), BootError> {
    let sdk = aws::sdk_config(&facts.instance.region, network).await?;
    let answer = source::shim::fetch(source::shim::Fetch {
        root: host.root(),
        boot,
        source: shim,
        hostname: &facts.instance.hostname,
        sdk: &sdk,
        proxies: network.reqwest_proxies()?,
        deadline: options.deadline,
        bootstrap: options.credentials,
    })
    .await?;
    let name = format!("the node spec from {}", boot.node_spec.describe());
    spec::verify_digest(&name, &answer.spec, &boot.node_spec.sha256)?;
    let digest = spec::digest(&answer.spec);
    let text = String::from_utf8(answer.spec).map_err(|_| SpecError::Parse {
        source_name: name.clone(),
        detail: "the document is not UTF-8 text".to_owned(),
    })?;
    let spec = NodeSpec::parse(&name, &text)?;
    spec::check_spec_matches_boot(&name, &text, &spec, boot)?;
    tracing::info!(spec = %name, sha256 = %digest, node_name = %answer.node_name, "node spec verified and parsed");
    Ok((spec, digest, answer.credentials))
}

async fn read_boot_config(
    metadata: &Metadata,
    file: Option<&PathBuf>,
) -> Result<BootConfig, BootError> {
    let raw = match file {
        Some(path) => std::fs::read(path).map_err(|source| BootError::UserDataFile {
            path: path.clone(),
            source,
        })?,
        None => metadata.user_data().await.map_err(BootError::Metadata)?,
    };
    let text = source::boot_config_text(&raw)?;
    Ok(BootConfig::parse("user data", &text)?)
}

async fn fetch_spec(
    url: &str,
    sha256: Option<&Sha256Hex>,
    facts: &Facts,
    network: &NetworkSettings,
    deadline: Duration,
    boot: Option<&BootConfig>,
) -> Result<(NodeSpec, String), BootError> {
    let location = SpecLocation::parse(url).map_err(|detail| SpecError::Parse {
        source_name: "node spec location".to_owned(),
        detail,
    })?;
    let sdk: Option<SdkConfig> = match location {
        SpecLocation::S3 { .. } => Some(aws::sdk_config(&facts.instance.region, network).await?),
        SpecLocation::File { .. } => None,
    };
    let bytes = source::fetch(&location, sdk.as_ref(), deadline)
        .await
        .map_err(BootError::Store)?;
    let name = location.to_string();
    let digest = spec::digest(&bytes);
    match sha256 {
        Some(expected) => spec::verify_digest(&name, &bytes, expected)?,
        None => {
            tracing::warn!(spec = %name, sha256 = %digest, "no digest given; the spec is not verified")
        }
    }
    let text = String::from_utf8(bytes).map_err(|_| SpecError::Parse {
        source_name: name.clone(),
        detail: "the document is not UTF-8 text".to_owned(),
    })?;
    let spec = NodeSpec::parse(&name, &text)?;
    if let Some(boot) = boot {
        spec::check_spec_matches_boot(&name, &text, &spec, boot)?;
    }
    tracing::info!(spec = %name, sha256 = %digest, "node spec verified and parsed");
    Ok((spec, digest))
}

/// What a converging run did.
pub struct Converged {
    pub plan: Plan,
    pub report: engine::ApplyReport,
    pub timeline: Vec<engine::TimelineEntry>,
}

/// The whole flow: prepare, plan, apply, record. Records a failed run too, when the
/// node already has a state directory (a refused input never creates anything).
pub async fn converge(
    options: &Options,
) -> Result<Converged, (BootError, Vec<engine::TimelineEntry>)> {
    let host = Host::new(&options.root);
    let mut timeline = Timeline::new();
    let mut record = RecordContext::default();
    let result = converge_inner(options, &host, &mut timeline, &mut record).await;
    let state_dir = host.state_dir();
    let mut state = record
        .state
        .take()
        .unwrap_or_else(|| State::load_or_reset(&state_dir));
    let (result_kind, error) = match &result {
        Ok(_) => (RunResult::Converged, None),
        Err(e) => (RunResult::Failed, Some(e.to_string())),
    };
    let entries = timeline.entries().to_vec();
    state.last_run = Some(RunRecord {
        command: options.command.clone(),
        started_at: engine::timeline::rfc3339(timeline.started_at()),
        finished_at: engine::timeline::rfc3339(std::time::SystemTime::now()),
        result: result_kind,
        error,
        spec_url: record.spec_url,
        spec_sha256: record.spec_sha256,
        agent_version: crate::VERSION.to_owned(),
        changes: record.changes,
        timeline: entries.clone(),
    });
    let applied_anything = record.changes > 0 || result.is_ok();
    if (applied_anything || state_dir.is_dir())
        && let Err(e) = state.save(&state_dir)
    {
        tracing::error!(error = %e, "could not record the run");
        if result.is_ok() {
            return Err((e.into(), entries));
        }
    }
    match result {
        Ok((plan, report)) => Ok(Converged {
            plan,
            report,
            timeline: entries,
        }),
        Err(e) => Err((e, entries)),
    }
}

#[derive(Default)]
struct RecordContext {
    state: Option<State>,
    spec_url: Option<String>,
    spec_sha256: Option<String>,
    changes: usize,
}

async fn converge_inner(
    options: &Options,
    host: &Host,
    timeline: &mut Timeline,
    record: &mut RecordContext,
) -> Result<(Plan, engine::ApplyReport), BootError> {
    let prepared = prepare(options, host, timeline).await?;
    record.spec_url = Some(prepared.spec_url.clone());
    record.spec_sha256 = Some(prepared.spec_sha256.clone());
    if let Some(credentials) = &prepared.credentials {
        let began = Instant::now();
        let installed =
            source::shim::install(host.root(), credentials).map_err(BootError::Credentials);
        timeline.record("kubelet credentials", began, outcome_text(&installed));
        installed?;
    }

    let mut state = State::load_or_reset(&host.state_dir());
    let began = Instant::now();
    let plan = engine::plan(&prepared.desired, host, &state).await;
    timeline.record("plan", began, outcome_text(&plan));
    let plan = plan?;
    record.changes = plan.steps.len();
    tracing::info!(changes = plan.steps.len(), "planned");

    let began = Instant::now();
    let report = engine::apply(&plan, host, &mut state).await;
    report.record(timeline);
    let failures = report.failures();
    timeline.record(
        "apply",
        began,
        if failures.is_empty() {
            "ok".to_owned()
        } else {
            format!("failed: {} steps", failures.len())
        },
    );
    record.state = Some(state);
    if !failures.is_empty() {
        return Err(BootError::Apply { failures });
    }
    Ok((plan, report))
}

/// Plans without applying: nothing is written, started or downloaded.
pub async fn plan_only(options: &Options) -> Result<(Plan, Prepared), BootError> {
    let host = Host::new(&options.root);
    let mut timeline = Timeline::new();
    let prepared = prepare(options, &host, &mut timeline).await?;
    let state = State::load(&host.state_dir())?;
    let plan = engine::plan(&prepared.desired, &host, &state).await?;
    Ok((plan, prepared))
}

fn outcome_text<T, E: std::fmt::Display>(result: &Result<T, E>) -> String {
    match result {
        Ok(_) => "ok".to_owned(),
        Err(e) => format!("failed: {}", first_line(&e.to_string())),
    }
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or(text)
}
