//! `nodewright watch`: the long-running service of control-plane nodes.
//!
//! A round is the control-plane phase of the boot flow (claim and mount the etcd
//! volumes, publish the names, remove the records of instances that no longer run),
//! every interval and at once on SIGHUP (which also re-reads the node spec). Rounds
//! run as tasks, so the systemd watchdog is pinged while a long round waits for a
//! volume, and only while the process's runtime is alive.

pub mod health;
pub mod notify;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::signal::unix::{SignalKind, signal};
use tokio::task::JoinHandle;

use std::path::PathBuf;

use crate::cloud::{Metadata, NetworkSettings, aws};
use crate::controlplane::{self, ControlPlaneRecord};
use crate::engine::Timeline;
use crate::error::{Classified, ErrorKind};
use crate::facts::Facts;
use crate::host::Host;
use crate::runbook::Topic;
use crate::source::{self, Chain, Context, SourceError};
use crate::spec::{ControlPlaneSpec, NodeSpec, Role, SpecError};

pub struct WatchOptions {
    pub root: PathBuf,
    /// User data from this file instead of IMDS.
    pub user_data: Option<PathBuf>,
    pub chain: Chain,
    /// How long each remote source is retried, in a round and when reading inputs.
    pub deadline: Duration,
    /// Overrides `controlPlane.watch.intervalSeconds`.
    pub interval: Option<Duration>,
    /// `127.0.0.1:PORT` for `GET /healthz`; none to serve nothing.
    pub health: Option<String>,
    /// Stop after this many rounds (tests, one-shot use); none to run until stopped.
    pub rounds: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("health endpoint {address}: {source}")]
    Health {
        address: String,
        source: std::io::Error,
    },
    #[error("signals: {0}")]
    Signals(std::io::Error),
    #[error("the last watch round failed: {0}")]
    Round(String),
}

impl Classified for WatchError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Source(e) => e.kind(),
            Self::Health { .. } => ErrorKind::Usage,
            Self::Signals(_) => ErrorKind::Internal,
            Self::Round(_) => ErrorKind::ChangeFailed,
        }
    }
    fn topic(&self) -> Option<Topic> {
        match self {
            Self::Source(e) => e.topic(),
            Self::Round(_) | Self::Health { .. } | Self::Signals(_) => None,
        }
    }
}

/// What a round needs, owned so that the round can run as a task.
#[derive(Clone)]
struct RoundInputs {
    control_plane: ControlPlaneSpec,
    spec: Arc<NodeSpec>,
    facts: Arc<Facts>,
    network: NetworkSettings,
}

/// The boot's first phases (inputs, facts, spec), asking for no credentials.
async fn load(watch: &WatchOptions, host: &Host) -> Result<RoundInputs, SourceError> {
    let metadata = Metadata::new(watch.deadline);
    let user_data = source::user_data(watch.user_data.as_deref(), &metadata).await?;
    let source = watch.chain.recognise(&user_data)?;
    let network = source.network();
    let facts = match source.facts() {
        Some(facts) => facts,
        None => {
            source::facts::gather(&source::facts::FactsFrom::Imds, watch.deadline, host.root())
                .await?
        }
    };
    let fetched = source
        .fetch(&Context {
            root: host.root(),
            facts: &facts,
            network: &network,
            deadline: watch.deadline,
            credentials: false,
        })
        .await?;
    let spec = fetched.spec.spec;
    let control_plane = match (&spec.control_plane, spec.role) {
        (Some(cp), Role::ControlPlane) => cp.clone(),
        _ => {
            return Err(SpecError::Parse {
                source_name: fetched.spec.url.clone(),
                detail: "controlPlane: nothing to watch: this node spec has no controlPlane section (or is not a control-plane spec)".to_owned(),
            }
            .into());
        }
    };
    Ok(RoundInputs {
        control_plane,
        spec: Arc::new(spec),
        facts: Arc::new(facts),
        network,
    })
}

async fn round(deadline: Duration, host: Host, inputs: RoundInputs) -> ControlPlaneRecord {
    let began = Instant::now();
    let mut timeline = Timeline::new();
    let facts = &inputs.facts;
    let result = async {
        let sdk = aws::sdk_config(&facts.instance.region, &inputs.network)
            .await
            .map_err(|e| e.to_string())?;
        controlplane::run_with_aws(
            &inputs.control_plane,
            &inputs.spec.cluster.name,
            &facts.instance,
            &host,
            &sdk,
            deadline,
            false,
            "watch",
            &mut timeline,
        )
        .await
        .map_err(|e| e.to_string())
    }
    .await;
    let mut record = ControlPlaneRecord::load(&host.state_dir()).unwrap_or_default();
    match &result {
        Ok(outcome) => {
            tracing::info!(
                seconds = began.elapsed().as_secs_f64(),
                changes = outcome.report.len(),
                "watch round done"
            );
        }
        Err(e) => {
            tracing::error!(error = %e, "watch round failed");
            record.ok = false;
            record.error.get_or_insert_with(|| e.to_string());
        }
    }
    record
}

pub async fn run(watch: WatchOptions) -> Result<(), WatchError> {
    let host = Host::new(&watch.root);
    let mut inputs = load(&watch, &host).await?;
    let interval = watch.interval.unwrap_or(Duration::from_secs(u64::from(
        inputs.control_plane.watch.interval_seconds,
    )));
    let shared: health::Shared = Arc::new(Mutex::new(health::Health::default()));
    if let Some(address) = &watch.health {
        let listener = health::bind(address)
            .await
            .map_err(|source| WatchError::Health {
                address: address.clone(),
                source,
            })?;
        tracing::info!(address = %address, "serving GET /healthz");
        tokio::spawn(health::serve(listener, shared.clone(), interval));
    }
    let mut hangup = signal(SignalKind::hangup()).map_err(WatchError::Signals)?;
    let mut terminate = signal(SignalKind::terminate()).map_err(WatchError::Signals)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(WatchError::Signals)?;
    let watchdog = notify::watchdog_period();
    let mut watchdog_tick = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    let mut running: Option<JoinHandle<ControlPlaneRecord>> = None;
    let mut reload = false;
    let mut again = false;
    let mut ready = false;
    let mut rounds = 0u64;
    let mut last_ok = true;
    loop {
        let start = tokio::select! {
            _ = ticker.tick() => true,
            Some(()) = hangup.recv() => {
                tracing::info!("SIGHUP: re-reading the node spec and running a round");
                reload = true;
                true
            }
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
            _ = watchdog_tick.tick(), if watchdog.is_some() => {
                notify::send("WATCHDOG=1");
                false
            }
            finished = async { running.as_mut().expect("guarded").await }, if running.is_some() => {
                running = None;
                rounds += 1;
                let record = finished.unwrap_or_else(|e| ControlPlaneRecord {
                    command: "watch".to_owned(),
                    error: Some(format!("internal error: {e}")),
                    ..Default::default()
                });
                last_ok = record.ok;
                let status = if record.ok {
                    format!("STATUS=round {rounds} ok")
                } else {
                    format!("STATUS=round {rounds} failed: {}", record.error.clone().unwrap_or_default())
                };
                {
                    let mut health = shared.lock().expect("health lock");
                    health.rounds = rounds;
                    health.last = Some((Instant::now(), record));
                }
                if !ready {
                    ready = true;
                    notify::send("READY=1");
                }
                notify::send(&status);
                if watch.rounds.is_some_and(|limit| rounds >= limit) {
                    break;
                }
                std::mem::take(&mut again)
            }
        };
        if !start {
            continue;
        }
        if running.is_some() {
            // One round at a time; a tick or SIGHUP during a round asks for another.
            again = true;
            continue;
        }
        if reload {
            reload = false;
            match load(&watch, &host).await {
                Ok(fresh) => inputs = fresh,
                Err(e) => {
                    tracing::error!(error = %e, "re-reading the inputs failed; keeping the last ones")
                }
            }
        }
        running = Some(tokio::spawn(round(
            watch.deadline,
            host.clone(),
            inputs.clone(),
        )));
    }
    notify::send("STOPPING=1");
    if let Some(task) = running {
        task.abort();
    }
    // With a round limit (one-shot use), the exit code says how the last round went.
    if watch.rounds.is_some() && !last_ok {
        let record = ControlPlaneRecord::load(&host.state_dir()).unwrap_or_default();
        return Err(WatchError::Round(
            record
                .error
                .unwrap_or_else(|| "the last round failed".to_owned()),
        ));
    }
    Ok(())
}
