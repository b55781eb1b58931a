//! The boot flow, as its phases: inputs, facts, spec, control plane, certificates,
//! model, then (converging) lock, plan, apply and record. Each phase is a function of
//! the module that owns it; this module only puts them in order and times them.
//!
//! `boot`, `apply`, `plan` and `repair` are this flow with different inputs and endings:
//! `boot` reads user data, `apply`/`plan --spec` a URL, `repair` the spec and facts kept
//! on the node (no network, nothing trusted from the stat cache, protected paths left
//! alone); `plan` stops before the lock and changes nothing at all.

mod error;
mod kept;
mod lock;
mod phase;
mod record;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use error::BootError;
pub use kept::KeptSource;
pub use phase::Phases;
pub use record::Converged;

use crate::assets::{FetchSettings, Fetcher};
use crate::cloud::{Metadata, NetworkSettings, aws};
use crate::controlplane;
use crate::engine::applied::AppliedSpec;
use crate::engine::{self, Plan, State};
use crate::facts::Facts;
use crate::host::Host;
use crate::model::{self, CredentialFile, DesiredState};
use crate::source::facts::FactsFrom;
use crate::source::nodewright::StoreSource;
use crate::source::{self, Chain, Context, Fetched, Source, SourceError, VerifiedSpec};
use crate::spec::{Role, Sha256Hex};

/// Where the node spec comes from.
#[derive(Debug, Clone)]
pub enum SpecSource {
    /// User data says, through the first provider that recognises it (`boot`).
    UserData { file: Option<PathBuf>, chain: Chain },
    /// Named on the command line (`apply`, `plan --spec`); the digest is optional.
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
    /// Where the instance's facts come from (IMDS, briefly, or given).
    pub facts: FactsFrom,
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

/// Everything the flow learned before planning.
pub struct Prepared {
    pub facts: Facts,
    pub spec: VerifiedSpec,
    pub desired: DesiredState,
    /// The proxy and CA settings every outbound call uses.
    pub network: NetworkSettings,
    /// What the control-plane phase did (or, for `plan`, would do).
    pub control_plane_report: Vec<String>,
}

/// The whole flow. Records a failed run too, when the node already has a state
/// directory (a refused input never creates anything).
pub async fn converge(
    options: &Options,
) -> Result<Converged, (BootError, Vec<engine::TimelineEntry>)> {
    let host = Host::new(&options.root);
    let _live = crate::progress::begin(&options.root, &options.command);
    let mut phases = Phases::default();
    let mut run = record::Run::default();
    let result = async {
        let mut prepared = prepare(options, &host, &mut phases, false).await?;
        run.spec(&prepared.spec);
        let lock = lock(options, &host, &mut phases).await?;
        run.hold(lock);
        let mut state = State::load_or_reset(&host.state_dir());
        let plan = plan(
            options,
            &host,
            &mut phases,
            &mut prepared,
            &mut state,
            &mut run,
        )
        .await?;
        keep_spec(options, &host, &prepared)?;
        apply(&host, &mut phases, &prepared, plan, state, &mut run).await
    }
    .await;
    run.record(options, &host, &mut phases, result)
}

/// Plans without applying: nothing is written, started or downloaded.
pub async fn plan_only(options: &Options) -> Result<(Plan, Prepared), BootError> {
    let host = Host::new(&options.root);
    let mut phases = Phases::default();
    let mut prepared = prepare(options, &host, &mut phases, true).await?;
    let state = State::load(&host.state_dir())?;
    let plan = if options.repair {
        let view = engine::repair::view(&state, &mut prepared.desired);
        engine::plan(&prepared.desired, &host, &view.state).await?
    } else {
        engine::plan(&prepared.desired, &host, &state).await?
    };
    Ok((plan, prepared))
}

/// The phases up to the desired state. With `read_only` nothing at all is written or
/// changed (`plan`): the control-plane phase only reads EC2, Route53 and the devices.
pub async fn prepare(
    options: &Options,
    host: &Host,
    phases: &mut Phases,
    read_only: bool,
) -> Result<Prepared, BootError> {
    let metadata = Metadata::new(options.deadline);
    let source = inputs(options, host, &metadata, phases).await?;
    let network = source.network();
    // A spec named on the command line in a local file is read and checked first: a
    // bad spec is refused before anything asks the network, IMDS included.
    let early = local_spec(options, &network, phases).await?;
    let mut facts = facts(options, host, source.as_ref(), phases).await?;
    let fetched = match early {
        Some(fetched) => fetched,
        None => spec(options, host, source.as_ref(), &facts, &network, phases).await?,
    };
    // The PKI is read and checked before the control-plane phase writes anything.
    let pki = read_pki(options, &fetched.spec, &facts, &network, phases).await?;
    let control_plane_report = control_plane(
        options,
        host,
        &fetched.spec,
        &mut facts,
        &network,
        phases,
        read_only,
    )
    .await?;
    let Fetched { spec, credentials } = fetched;
    let credentials = certificates(host, &spec, &facts, pki.as_ref(), credentials, phases).await?;
    source::credentials::check_way_in(
        &spec.url,
        &spec.spec,
        source.issues_credentials(),
        &credentials,
    )
    .map_err(SourceError::from)?;
    let desired = phases
        .run("model", async {
            model::render(&spec.spec, &facts, credentials)
        })
        .await?;
    Ok(Prepared {
        facts,
        spec,
        desired,
        network,
        control_plane_report,
    })
}

/// Inputs: what user data (or the command line, or the kept spec) says the source is.
async fn inputs(
    options: &Options,
    host: &Host,
    metadata: &Metadata,
    phases: &mut Phases,
) -> Result<Box<dyn Source>, BootError> {
    Ok(match &options.source {
        SpecSource::UserData { file, chain } => {
            phases
                .run("user data", async {
                    let raw = source::user_data(file.as_deref(), metadata).await?;
                    chain.recognise(&raw)
                })
                .await?
        }
        SpecSource::Url { url, sha256 } => Box::new(StoreSource::new(url.clone(), sha256.clone())),
        SpecSource::Kept => {
            let state_dir = host.state_dir();
            Box::new(
                phases
                    .run("kept spec", async { KeptSource::load(&state_dir) })
                    .await?,
            )
        }
    })
}

/// `apply`/`plan --spec file://…`: the spec, read and verified before the facts (it
/// needs none of them).
async fn local_spec(
    options: &Options,
    network: &NetworkSettings,
    phases: &mut Phases,
) -> Result<Option<Fetched>, BootError> {
    let SpecSource::Url { url, sha256 } = &options.source else {
        return Ok(None);
    };
    if !url.starts_with("file://") {
        return Ok(None);
    }
    let store = StoreSource::new(url.clone(), sha256.clone());
    let spec = phases
        .run("node spec", async {
            // No region: a file needs none.
            store.fetch_spec("", network, options.deadline).await
        })
        .await?;
    Ok(Some(Fetched {
        spec,
        credentials: Vec::new(),
    }))
}

/// Facts: the source's own (kept), as given, or from IMDS.
async fn facts(
    options: &Options,
    host: &Host,
    source: &dyn Source,
    phases: &mut Phases,
) -> Result<Facts, BootError> {
    if let Some(kept) = source.facts() {
        return Ok(kept);
    }
    Ok(phases
        .run(
            "facts",
            source::facts::gather(&options.facts, options.deadline, host.root()),
        )
        .await?)
}

/// The spec, verified, and the credentials that came with it.
async fn spec(
    options: &Options,
    host: &Host,
    source: &dyn Source,
    facts: &Facts,
    network: &NetworkSettings,
    phases: &mut Phases,
) -> Result<Fetched, BootError> {
    let context = Context {
        root: host.root(),
        facts,
        network,
        deadline: options.deadline,
        credentials: options.credentials,
    };
    let fetched = match options.source {
        // Read with the inputs already.
        SpecSource::Kept => source.fetch(&context).await?,
        _ => phases.run("node spec", source.fetch(&context)).await?,
    };
    Ok(fetched)
}

/// Control-plane nodes with `controlPlane.pki`: the CAs and the rest of the PKI from
/// the state store, checked.
async fn read_pki(
    options: &Options,
    spec: &VerifiedSpec,
    facts: &Facts,
    network: &NetworkSettings,
    phases: &mut Phases,
) -> Result<Option<source::pki::PkiMaterial>, BootError> {
    let Some(pki) = model::pki::pki_spec(&spec.spec) else {
        return Ok(None);
    };
    let material = phases
        .run("pki store", async {
            let sdk = if pki.store.starts_with("s3://") {
                Some(aws::sdk_config(&facts.instance.region, network).await?)
            } else {
                None
            };
            Ok::<_, SourceError>(
                source::pki::fetch_material(pki, sdk.as_ref(), options.deadline).await?,
            )
        })
        .await?;
    Ok(Some(material))
}

/// The control plane's volumes and names (control-plane specs; never for `repair`):
/// what it decides (which etcd member this node is) becomes facts for the model.
async fn control_plane(
    options: &Options,
    host: &Host,
    spec: &VerifiedSpec,
    facts: &mut Facts,
    network: &NetworkSettings,
    phases: &mut Phases,
    read_only: bool,
) -> Result<Vec<String>, BootError> {
    let Some(control_plane) = spec
        .spec
        .control_plane
        .as_ref()
        .filter(|_| spec.spec.role == Role::ControlPlane)
        .filter(|_| !matches!(options.source, SpecSource::Kept))
    else {
        return Ok(Vec::new());
    };
    let timeline = phases.steps_of("control plane");
    let sdk = aws::sdk_config(&facts.instance.region, network)
        .await
        .map_err(SourceError::from)?;
    let outcome = controlplane::run_with_aws(
        control_plane,
        &spec.spec.cluster.name,
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
    Ok(outcome.report)
}

/// The node's credentials: what came with the spec (a worker's, from controller-shim),
/// the control plane's certificates kept or issued from the store's CAs, and what the
/// node already holds.
async fn certificates(
    host: &Host,
    spec: &VerifiedSpec,
    facts: &Facts,
    pki: Option<&source::pki::PkiMaterial>,
    mut credentials: Vec<CredentialFile>,
    phases: &mut Phases,
) -> Result<Vec<CredentialFile>, BootError> {
    if let Some(material) = pki {
        let wanted = model::pki::desired_certificates(&spec.spec, facts)?;
        let spec_ca = spec.spec.cluster.ca_certificate.as_deref();
        let settled = phases
            .run("certificates", async {
                source::issue::settle(
                    &wanted,
                    spec_ca,
                    material,
                    host,
                    time::OffsetDateTime::now_utc(),
                )
            })
            .await?;
        let issued = settled
            .decisions
            .iter()
            .filter(|(_, d)| *d != source::issue::Decision::Keep)
            .count();
        tracing::info!(
            certificates = settled.decisions.len(),
            to_issue = issued,
            "checked the control plane's certificates"
        );
        credentials.extend(settled.files);
    }
    let kept = source::credentials::kept(host, &credentials).map_err(BootError::Credentials)?;
    credentials.extend(kept);
    Ok(credentials)
}

/// Lock: from here on the run may change the node, one run at a time.
async fn lock(
    options: &Options,
    host: &Host,
    phases: &mut Phases,
) -> Result<crate::host::lock::RunLock, BootError> {
    let timeline = phases.steps_of("lock");
    lock::acquire(host, options.lock_wait, timeline).await
}

/// Plan: the difference between the desired state and the node, after checking the
/// files an image baked against its manifest.
async fn plan(
    options: &Options,
    host: &Host,
    phases: &mut Phases,
    prepared: &mut Prepared,
    state: &mut State,
    run: &mut record::Run,
) -> Result<Plan, BootError> {
    let began = std::time::Instant::now();
    let wanted: std::collections::BTreeSet<&str> = prepared
        .desired
        .files
        .iter()
        .map(|f| f.path.as_str())
        .chain(prepared.desired.asset_files.iter().map(|f| f.path.as_str()))
        .collect();
    let parallel = usize::from(prepared.spec.spec.downloads.parallel);
    if let Some(check) = engine::baked::verify_baked(host, state, &wanted, parallel.max(4)) {
        phases.end(
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
    let desired = &mut prepared.desired;
    let plan = phases
        .run("plan", async {
            if options.repair {
                let view = engine::repair::view(state, desired);
                run.left_alone = view.left_alone;
                engine::plan(desired, host, &view.state).await
            } else {
                engine::plan(desired, host, state).await
            }
        })
        .await?;
    run.changes = plan.steps.len();
    tracing::info!(changes = plan.steps.len(), "planned");
    Ok(plan)
}

/// Keeps what is about to be applied, for `repair` without the network.
fn keep_spec(options: &Options, host: &Host, prepared: &Prepared) -> Result<(), BootError> {
    if !matches!(options.source, SpecSource::Kept) {
        AppliedSpec {
            spec_url: prepared.spec.url.clone(),
            spec_sha256: prepared.spec.sha256.clone(),
            saved_at: crate::clock::now(),
            agent_version: crate::VERSION.to_owned(),
            facts: prepared.facts.clone(),
            spec: prepared.spec.text.clone(),
        }
        .save_if_changed(&host.state_dir())?;
    }
    Ok(())
}

/// Apply: carries the plan out; the state records what was done, failed or not.
async fn apply(
    host: &Host,
    phases: &mut Phases,
    prepared: &Prepared,
    plan: Plan,
    mut state: State,
    run: &mut record::Run,
) -> Result<(Plan, engine::ApplyReport), BootError> {
    let fetcher = Arc::new(fetcher_for(host, prepared)?);
    let began = phases.begin("apply");
    let report = engine::apply_with(&plan, host, &mut state, fetcher.clone()).await;
    report.record(phases.timeline());
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
    phases.end(
        "apply",
        began,
        if failures.is_empty() {
            "ok".to_owned()
        } else {
            format!("failed: {} steps", failures.len())
        },
    );
    run.state = Some(state);
    if !failures.is_empty() {
        return Err(BootError::Apply { failures });
    }
    Ok((plan, report))
}

/// The downloader for a run: the spec's download settings, the node's proxy and CA,
/// and the instance's region for s3:// URLs.
pub fn fetcher_for(host: &Host, prepared: &Prepared) -> Result<Fetcher, BootError> {
    Fetcher::new(
        host,
        FetchSettings::from(&prepared.spec.spec.downloads),
        prepared.network.clone(),
        Some(prepared.facts.instance.region.clone()),
    )
    .map_err(|e| BootError::Source(SourceError::from(e)))
}

/// Asset name to sha256, as recorded for `cache prune`.
pub fn asset_digests(desired: &DesiredState) -> std::collections::BTreeMap<String, String> {
    desired
        .assets
        .iter()
        .map(|(name, asset)| (name.clone(), asset.sha256.to_string()))
        .collect()
}
