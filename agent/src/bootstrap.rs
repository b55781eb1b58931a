//! The boot flow, step by step: user data, facts, node spec, model, plan, apply, record.
//! `boot`, `apply`, `plan` and `repair` are this flow with different sources and
//! endings (`repair`: the spec kept on the node, no network, nothing trusted from the
//! stat cache, protected paths left alone).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_config::SdkConfig;

use crate::assets::{FetchSettings, Fetcher};
use crate::cloud::{Metadata, MetadataError, NetworkSettings, aws, http::NetworkError};
use crate::controlplane::{self, ControlPlaneError};
use crate::engine::applied::{AppliedError, AppliedSpec};
use crate::engine::protect::Guard;
use crate::engine::{self, Plan, PlanError, RunRecord, RunResult, State, StateError, Timeline};
use crate::host::lock::{LockError, RunLock};
use crate::host::{Host, os};
use crate::model::{self, DesiredState, Facts, ModelError};
use crate::progress;
use crate::retry::RetryError;
use crate::runbook::{self, Topic};
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
    /// The spec (and facts) kept on the node by the last converging run (`repair`).
    Kept,
}

#[derive(Debug, Clone)]
pub struct Options {
    pub root: PathBuf,
    pub source: SpecSource,
    /// How long each remote source (IMDS, the state store) is retried.
    pub deadline: Duration,
    /// The command, as recorded in the state.
    pub command: String,
    /// Re-read every managed file (no stat cache) and leave protected paths alone.
    pub repair: bool,
    /// How long to wait for another run to release the run lock.
    pub lock_wait: Duration,
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
    #[error(transparent)]
    ControlPlane(#[from] ControlPlaneError),
    #[error("building the node's desired state: {0}")]
    Model(#[from] ModelError),
    #[error("planning: {0}")]
    Plan(#[from] PlanError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("{} of the changes failed:\n  - {}", failures.len(), failures.join("\n  - "))]
    Apply { failures: Vec<String> },
    #[error("{source}{}", holder.as_ref().map(|h| format!(": {h} is running")).unwrap_or_default())]
    Locked {
        source: LockError,
        /// The run holding it, from its live record.
        holder: Option<String>,
    },
    #[error(transparent)]
    Kept(#[from] AppliedError),
    #[error("reading the cluster PKI: {0}")]
    Pki(#[from] source::pki::PkiSourceError),
    #[error("issuing the control plane's certificates: {0}")]
    Issue(#[from] engine::issue::IssueError),
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
    pub const DRIFT: u8 = 7;
    pub const BUSY: u8 = 8;
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
            Self::Plan(_) | Self::Apply { .. } | Self::ControlPlane(_) => exit::APPLY_FAILED,
            Self::State(_) => exit::INTERNAL,
            Self::Locked {
                source: LockError::Held { .. },
                ..
            } => exit::BUSY,
            Self::Locked { .. } => exit::INTERNAL,
            Self::Kept(AppliedError::Missing { .. }) => exit::NO_STATE,
            Self::Kept(_) => exit::INTERNAL,
            Self::Pki(source::pki::PkiSourceError::Store(e))
                if e.is_deadline() || e.to_string().contains("HTTP 5") =>
            {
                exit::UNREACHABLE
            }
            Self::Pki(_) | Self::Issue(_) => exit::INVALID_INPUT,
        }
    }

    /// The runbook section for this failure, when one helps.
    pub fn runbook(&self) -> Option<Topic> {
        let by_text = || runbook::topic_for(&self.to_string());
        match self {
            Self::Spec(SpecError::DigestMismatch { .. }) => Some(Topic::SpecHashMismatch),
            Self::UserDataFile { .. }
            | Self::UserData(_)
            | Self::Spec(_)
            | Self::Network(_)
            | Self::Model(_) => Some(Topic::InvalidSpec),
            Self::Metadata(_) => Some(Topic::ImdsUnreachable),
            Self::Store(_) => by_text().or(Some(Topic::StateStoreUnreachable)),
            Self::Plan(_) | Self::Apply { .. } => by_text().or(Some(Topic::ApplyFailed)),
            Self::State(_) => None,
            Self::Locked { .. } => Some(Topic::AnotherRun),
            Self::Kept(_) => Some(Topic::NoAppliedSpec),
            Self::ControlPlane(ControlPlaneError::Names(_)) => Some(Topic::DnsPlaceholder),
            Self::ControlPlane(ControlPlaneError::Cloud(_)) => by_text(),
            Self::ControlPlane(_) => Some(Topic::VolumeStuck),
            Self::Shim(_) => by_text().or(Some(Topic::ControllerShim)),
            Self::Credentials(_) => Some(Topic::ApplyFailed),
            Self::Pki(_) => by_text().or(Some(Topic::StateStoreUnreachable)),
            Self::Issue(_) => Some(Topic::InvalidSpec),
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
    /// The spec's text, kept on the node for `repair`.
    pub spec_text: String,
    pub desired: DesiredState,
    /// The proxy and CA settings every outbound call uses.
    pub network: NetworkSettings,
    /// What the control-plane phase did (or, for `plan`, would do).
    pub control_plane_report: Vec<String>,
    /// Kubelet credentials controller-shim issued, to install before applying.
    pub credentials: Option<NewCredentials>,
}

/// What a node learns before it decides anything: its boot config, facts and spec.
pub struct Inputs {
    pub boot: Option<BootConfig>,
    pub facts: Facts,
    pub spec: NodeSpec,
    pub spec_url: String,
    pub spec_sha256: String,
    pub spec_text: String,
    pub network: NetworkSettings,
    /// Kubelet credentials controller-shim issued (workers, first boot).
    pub credentials: Option<NewCredentials>,
}

/// User data, facts and the verified node spec. Writes nothing.
pub async fn read_inputs(
    options: &Options,
    host: &Host,
    timeline: &mut Timeline,
) -> Result<Inputs, BootError> {
    let metadata = Metadata::new(options.deadline);
    let boot = match &options.source {
        SpecSource::UserData { file } => {
            progress::phase("user data");
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
        SpecSource::Url { .. } | SpecSource::Kept => None,
    };
    // Proxy and CA settings apply to every call from here on; IMDS bypasses them.
    let network = NetworkSettings {
        proxy: boot.as_ref().and_then(|b| b.proxy.clone()),
        ca_bundle: boot.as_ref().and_then(|b| b.ca_bundle.clone()),
    };

    progress::phase("facts");
    let began = Instant::now();
    let facts = metadata.instance_facts().await.map(|instance| Facts {
        instance,
        host: os::host_facts(host.root()),
        control_plane: Default::default(),
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
        let (spec, spec_sha256, spec_text, credentials) = fetched?;
        return Ok(Inputs {
            spec_url: boot.node_spec.describe(),
            boot: Some(boot.clone()),
            facts,
            spec,
            spec_sha256,
            spec_text,
            network,
            credentials,
        });
    }
    let (url, sha256) = match (&options.source, &boot) {
        (_, Some(boot)) => (
            boot.node_spec.url.clone().unwrap_or_default(),
            Some(boot.node_spec.sha256.clone()),
        ),
        (SpecSource::Url { url, sha256 }, None) => (url.clone(), sha256.clone()),
        (SpecSource::UserData { .. } | SpecSource::Kept, None) => {
            unreachable!("user data always yields a boot config; kept specs never get here")
        }
    };
    progress::phase("node spec");
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
    let (spec, spec_sha256, spec_text) = spec?;
    Ok(Inputs {
        boot,
        facts,
        spec,
        spec_url: url,
        spec_sha256,
        spec_text,
        network,
        credentials: None,
    })
}

/// Reads the inputs, runs the control-plane phase (read-only when `read_only`: then
/// nothing at all is written or changed) and renders the desired state. A kept spec
/// (`repair`) needs no network at all and reuses the facts it was applied with.
pub async fn prepare(
    options: &Options,
    host: &Host,
    timeline: &mut Timeline,
    read_only: bool,
) -> Result<Prepared, BootError> {
    if let SpecSource::Kept = options.source {
        return prepare_kept(options, host, timeline).await;
    }
    let Inputs {
        boot,
        mut facts,
        spec,
        spec_url,
        spec_sha256,
        spec_text,
        network,
        credentials,
    } = read_inputs(options, host, timeline).await?;

    // The PKI is read and checked before the control-plane phase writes anything.
    let pki = read_pki(&spec, &facts, &network, options.deadline, timeline).await?;
    let mut control_plane_report = Vec::new();
    if let Some(control_plane) = spec
        .control_plane
        .as_ref()
        .filter(|_| spec.role == spec::Role::ControlPlane)
    {
        progress::phase("control plane");
        let sdk = aws::sdk_config(&facts.instance.region, &network).await?;
        let outcome = controlplane::run_with_aws(
            control_plane,
            &spec.cluster.name,
            &facts.instance,
            host,
            &sdk,
            options.deadline,
            read_only,
            &options.command,
            timeline,
        )
        .await?;
        facts.control_plane = outcome.facts;
        control_plane_report = outcome.report;
    }

    let mut desired = render(&spec, &facts, timeline)?;
    settle_certificates(pki.as_ref(), host, &mut desired, timeline)?;
    Ok(Prepared {
        boot,
        facts,
        spec,
        spec_url,
        spec_sha256,
        spec_text,
        desired,
        network,
        control_plane_report,
        credentials,
    })
}

fn render(
    spec: &NodeSpec,
    facts: &Facts,
    timeline: &mut Timeline,
) -> Result<DesiredState, BootError> {
    progress::phase("model");
    let began = Instant::now();
    let desired = model::desired_state(spec, facts);
    timeline.record("model", began, outcome_text(&desired));
    Ok(desired?)
}

/// Control-plane nodes with `controlPlane.pki`: reads the CAs and the rest of the PKI
/// from the state store and checks them. Runs before anything is written.
async fn read_pki(
    spec: &NodeSpec,
    facts: &Facts,
    network: &NetworkSettings,
    deadline: Duration,
    timeline: &mut Timeline,
) -> Result<Option<source::pki::PkiMaterial>, BootError> {
    let Some(pki) = model::pki::pki_spec(spec) else {
        return Ok(None);
    };
    progress::phase("pki");
    let began = Instant::now();
    let sdk = if pki.store.starts_with("s3://") {
        Some(aws::sdk_config(&facts.instance.region, network).await?)
    } else {
        None
    };
    let material = source::pki::fetch_material(pki, sdk.as_ref(), deadline).await;
    timeline.record("pki store", began, outcome_text(&material));
    Ok(Some(material?))
}

/// Adds the CA files and every certificate and key to `desired`: kept when good on
/// disk, issued in memory otherwise (`apply` writes them; `plan` only shows them).
fn settle_certificates(
    material: Option<&source::pki::PkiMaterial>,
    host: &Host,
    desired: &mut DesiredState,
    timeline: &mut Timeline,
) -> Result<(), BootError> {
    let Some(material) = material else {
        return Ok(());
    };
    let began = Instant::now();
    let decisions = engine::issue::settle(desired, material, host, time::OffsetDateTime::now_utc());
    timeline.record("certificates", began, outcome_text(&decisions));
    let decisions = decisions?;
    let issued = decisions
        .iter()
        .filter(|(_, d)| *d != engine::issue::Decision::Keep)
        .count();
    tracing::info!(
        certificates = decisions.len(),
        to_issue = issued,
        "checked the control plane's certificates"
    );
    Ok(())
}

/// The inputs from the spec and facts kept on the node: no network at all. On a
/// control-plane node the kept facts hold the etcd members it had claimed; volumes are
/// not touched (that is `boot`'s and `watch`'s work).
async fn prepare_kept(
    options: &Options,
    host: &Host,
    timeline: &mut Timeline,
) -> Result<Prepared, BootError> {
    progress::phase("kept spec");
    let state_dir = host.state_dir();
    let began = Instant::now();
    let kept = AppliedSpec::load(&state_dir).and_then(|kept| {
        let spec = kept.node_spec(&state_dir)?;
        Ok((kept, spec))
    });
    timeline.record("kept spec", began, outcome_text(&kept));
    let (kept, spec) = kept?;
    tracing::info!(
        spec = %kept.spec_url,
        sha256 = %kept.spec_sha256,
        saved_at = %kept.saved_at,
        "using the spec kept on the node"
    );
    let mut desired = render(&spec, &kept.facts, timeline)?;
    // A control-plane node's CAs are not kept on the node (only ca.key, which
    // kube-controller-manager needs): re-issuing needs the state store.
    let pki = read_pki(
        &spec,
        &kept.facts,
        &NetworkSettings::default(),
        options.deadline,
        timeline,
    )
    .await?;
    settle_certificates(pki.as_ref(), host, &mut desired, timeline)?;
    Ok(Prepared {
        boot: None,
        facts: kept.facts,
        spec,
        spec_url: kept.spec_url,
        spec_sha256: kept.spec_sha256,
        spec_text: kept.spec,
        desired,
        // Repair works offline, from the cache: no proxy is needed.
        network: NetworkSettings::default(),
        control_plane_report: Vec::new(),
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
) -> Result<(NodeSpec, String, String, Option<NewCredentials>), BootError> {
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
    // The spec names the cluster CA; the shim signs with its own: they must agree, or
    // the kubelet would trust one CA and hold a certificate from another.
    if let (Some(spec_ca), Some(credentials)) = (&spec.cluster.ca_certificate, &answer.credentials)
        && !source::shim::same_certificates(spec_ca, &credentials.ca_bundle)
    {
        return Err(SpecError::Parse {
            source_name: name,
            detail: "cluster.caCertificate differs from the CA controller-shim issued the \
                     kubelet certificates with; refusing both"
                .to_owned(),
        }
        .into());
    }
    tracing::info!(spec = %name, sha256 = %digest, node_name = %answer.node_name, "node spec verified and parsed");
    Ok((spec, digest, text, answer.credentials))
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

pub(crate) async fn fetch_spec(
    url: &str,
    sha256: Option<&Sha256Hex>,
    facts: &Facts,
    network: &NetworkSettings,
    deadline: Duration,
    boot: Option<&BootConfig>,
) -> Result<(NodeSpec, String, String), BootError> {
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
    Ok((spec, digest, text))
}

/// What a converging run did.
pub struct Converged {
    pub plan: Plan,
    pub report: engine::ApplyReport,
    pub timeline: Vec<engine::TimelineEntry>,
    /// Repair only: paths the spec declares under protected paths, left alone.
    pub left_alone: Vec<(String, Guard)>,
}

/// The whole flow: prepare, plan, apply, record. Records a failed run too, when the
/// node already has a state directory (a refused input never creates anything).
pub async fn converge(
    options: &Options,
) -> Result<Converged, (BootError, Vec<engine::TimelineEntry>)> {
    let host = Host::new(&options.root);
    let _progress = progress::begin(&options.root, &options.command);
    let mut timeline = Timeline::new();
    let mut record = RecordContext::default();
    let result = converge_inner(options, &host, &mut timeline, &mut record).await;
    progress::phase("record");
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
    // A run that never got the lock changed nothing, and must not write the state
    // under the feet of the run that holds it.
    let locked_out = matches!(result, Err(BootError::Locked { .. }));
    if (applied_anything || state_dir.is_dir())
        && !locked_out
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
            left_alone: record.left_alone,
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
    left_alone: Vec<(String, Guard)>,
    /// Held from planning until the run is recorded.
    lock: Option<RunLock>,
}

async fn converge_inner(
    options: &Options,
    host: &Host,
    timeline: &mut Timeline,
    record: &mut RecordContext,
) -> Result<(Plan, engine::ApplyReport), BootError> {
    let mut prepared = prepare(options, host, timeline, false).await?;
    record.spec_url = Some(prepared.spec_url.clone());
    record.spec_sha256 = Some(prepared.spec_sha256.clone());
    // Inputs are valid: from here on the run may change the node, one run at a time.
    progress::phase("lock");
    record.lock = Some(acquire_lock(host, options.lock_wait, timeline).await?);

    if let Some(credentials) = &prepared.credentials {
        let began = Instant::now();
        let write_ca = prepared.spec.cluster.ca_certificate.is_none();
        let installed = source::shim::install(host.root(), credentials, write_ca)
            .map_err(BootError::Credentials);
        timeline.record("kubelet credentials", began, outcome_text(&installed));
        installed?;
    }

    let mut state = State::load_or_reset(&host.state_dir());
    let fetcher = Arc::new(fetcher_for(host, &prepared)?);
    let parallel = usize::from(prepared.spec.downloads.parallel);
    let began = Instant::now();
    let wanted: std::collections::BTreeSet<&str> = prepared
        .desired
        .files
        .iter()
        .map(|f| f.path.as_str())
        .chain(prepared.desired.asset_files.iter().map(|f| f.path.as_str()))
        .collect();
    if let Some(check) = engine::baked::verify_baked(host, &mut state, &wanted, parallel.max(4)) {
        timeline.record(
            "verify baked files",
            began,
            format!(
                "{} verified, {} differ",
                check.verified,
                check.mismatched.len()
            ),
        );
    }
    state.assets = asset_digests(&prepared.desired);
    progress::phase("plan");
    let began = Instant::now();
    let plan = if options.repair {
        let view = engine::repair::view(&state, &mut prepared.desired);
        record.left_alone = view.left_alone;
        engine::plan(&prepared.desired, host, &view.state).await
    } else {
        engine::plan(&prepared.desired, host, &state).await
    };
    timeline.record("plan", began, outcome_text(&plan));
    let plan = plan?;
    record.changes = plan.steps.len();
    tracing::info!(changes = plan.steps.len(), "planned");

    // Keep what is about to be applied, for `repair` without the network.
    if !matches!(options.source, SpecSource::Kept) {
        AppliedSpec {
            spec_url: prepared.spec_url.clone(),
            spec_sha256: prepared.spec_sha256.clone(),
            saved_at: engine::timeline::rfc3339(std::time::SystemTime::now()),
            agent_version: crate::VERSION.to_owned(),
            facts: prepared.facts.clone(),
            spec: prepared.spec_text.clone(),
        }
        .save_if_changed(&host.state_dir())?;
    }

    progress::phase("apply");
    let began = Instant::now();
    let report = engine::apply_with(&plan, host, &mut state, fetcher.clone()).await;
    report.record(timeline);
    let stats = fetcher.stats();
    if stats.downloads > 0 || stats.extracted > 0 || stats.bytes > 0 {
        // What each count means: `assets::FetchStats`.
        tracing::info!(
            downloads = stats.downloads,
            bytes = stats.bytes,
            resumed_bytes = stats.resumed_bytes,
            discarded_bytes = stats.discarded_bytes,
            extracted = stats.extracted,
            "assets fetched"
        );
    }
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

/// The downloader for a run: the spec's download settings, the node's proxy and CA,
/// and the instance's region for s3:// URLs.
pub fn fetcher_for(host: &Host, prepared: &Prepared) -> Result<Fetcher, BootError> {
    Ok(Fetcher::new(
        host,
        FetchSettings::from(&prepared.spec.downloads),
        prepared.network.clone(),
        Some(prepared.facts.instance.region.clone()),
    )?)
}

/// Asset name to sha256, as recorded for `cache prune`.
pub fn asset_digests(desired: &DesiredState) -> std::collections::BTreeMap<String, String> {
    desired
        .assets
        .iter()
        .map(|(name, asset)| (name.clone(), asset.sha256.to_string()))
        .collect()
}

/// Subject of the wait for the run lock, in the live run record.
const LOCK_SUBJECT: &str = "the run lock";

/// Takes the run lock, waiting up to `wait` for another run to release it.
async fn acquire_lock(
    host: &Host,
    wait: Duration,
    timeline: &mut Timeline,
) -> Result<RunLock, BootError> {
    let began = Instant::now();
    let mut attempts = 0;
    loop {
        match RunLock::try_acquire(&host.state_dir()) {
            Ok(lock) => {
                if attempts > 0 {
                    progress::done_waiting(LOCK_SUBJECT);
                    timeline.record("lock", began, "ok");
                }
                return Ok(lock);
            }
            Err(source @ LockError::Held { .. }) => {
                attempts += 1;
                let me = std::process::id();
                let holder = progress::read(host.root())
                    .into_iter()
                    .find(|f| f.running && f.progress.pid != me)
                    .map(|f| {
                        format!(
                            "{} (pid {}, since {}, phase {})",
                            f.progress.command,
                            f.progress.pid,
                            f.progress.started_at,
                            f.progress.phase
                        )
                    });
                if began.elapsed() >= wait {
                    progress::done_waiting(LOCK_SUBJECT);
                    timeline.record("lock", began, "failed: held by another run");
                    return Err(BootError::Locked { source, holder });
                }
                let reason = format!(
                    "held by {}",
                    holder.as_deref().unwrap_or("another nodewright run")
                );
                progress::waiting(
                    LOCK_SUBJECT,
                    &reason,
                    attempts,
                    Some(std::time::SystemTime::now() + wait.saturating_sub(began.elapsed())),
                );
                if attempts == 1 {
                    tracing::info!(%reason, "waiting for the run lock");
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(source) => {
                return Err(BootError::Locked {
                    source,
                    holder: None,
                });
            }
        }
    }
}

/// Plans without applying: nothing is written, started or downloaded.
pub async fn plan_only(options: &Options) -> Result<(Plan, Prepared), BootError> {
    let host = Host::new(&options.root);
    let mut timeline = Timeline::new();
    let mut prepared = prepare(options, &host, &mut timeline, true).await?;
    let state = State::load(&host.state_dir())?;
    let plan = if options.repair {
        let view = engine::repair::view(&state, &mut prepared.desired);
        engine::plan(&prepared.desired, &host, &view.state).await?
    } else {
        engine::plan(&prepared.desired, &host, &state).await?
    };
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
