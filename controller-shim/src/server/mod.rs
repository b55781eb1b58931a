//! The controller-shim service: HTTPS on the control plane, bootstrapping workers.

pub mod app;
pub mod bootstrap;
pub mod checks;
pub mod ec2;
pub mod groups;
pub mod known;
pub mod listener;
pub mod metrics;
pub mod refusal;
pub mod replay;
pub mod sources;
pub mod specs;
pub mod store;
pub mod sts;
pub mod tls;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use aws_config::{BehaviorVersion, Region};

use crate::identity::StsEndpoint;
use crate::pki::CertificateAuthority;

pub use crate::config::{self, ShimConfig};
pub use app::{Shim, admin_router, router};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("the CA: {0}")]
    Ca(#[from] crate::pki::PkiError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("listening on {address}: {source}")]
    Listen {
        address: String,
        source: std::io::Error,
    },
    #[error("the STS client: {0}")]
    Sts(String),
}

fn read(path: &Path) -> Result<String, ServeError> {
    std::fs::read_to_string(path).map_err(|source| ServeError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// Builds the service from its configuration: reads the CA and the serving certificate
/// (refusing a bad pair before listening) and sets up the AWS clients.
pub async fn build(config: ShimConfig) -> Result<(Arc<Shim>, Arc<tls::ServingCert>), ServeError> {
    let ca_cert = read(&config.ca.cert_file)?;
    let ca_key = read(&config.ca.key_file)?;
    let ca = CertificateAuthority::from_pem(
        &format!("the CA {}", config.ca.cert_file.display()),
        &ca_cert,
        &ca_key,
    )?;
    let serving = tls::ServingCert::load(&config.tls.cert_file, &config.tls.key_file)?;
    let sdk = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(config.aws.region.clone()))
        .load()
        .await;
    let sts_url = config
        .aws
        .sts_endpoint
        .clone()
        .or_else(|| std::env::var("AWS_ENDPOINT_URL_STS").ok())
        .or_else(|| sdk.endpoint_url().map(str::to_owned));
    let endpoint = match sts_url {
        Some(url) => StsEndpoint {
            url,
            region: config.aws.region.clone(),
        },
        None => StsEndpoint::regional(&config.aws.region),
    };
    let sts = sts::Sts::new(endpoint).map_err(ServeError::Sts)?;
    let ec2 = ec2::Ec2::new(aws_sdk_ec2::Client::new(&sdk));
    let s3 = s3_client(&sdk);
    let shim = Shim::new(app::Parts {
        config,
        ca,
        sts,
        ec2,
        s3,
    });
    Ok((Arc::new(shim), serving))
}

/// Path-style addressing where virtual hosts cannot work (an IP or localhost endpoint).
fn s3_client(sdk: &aws_config::SdkConfig) -> aws_sdk_s3::Client {
    let literal = |url: &str| {
        let host = url
            .split("://")
            .nth(1)
            .unwrap_or(url)
            .split('/')
            .next()
            .unwrap_or("");
        let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
        host == "localhost" || host.starts_with('[') || host.parse::<std::net::IpAddr>().is_ok()
    };
    let path_style = sdk.endpoint_url().is_some_and(literal)
        || std::env::var("AWS_ENDPOINT_URL_S3").is_ok_and(|u| literal(&u));
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(sdk)
            .force_path_style(path_style)
            .build(),
    )
}

/// Runs the service until SIGTERM or SIGINT: the workers' HTTPS listener, the loopback
/// listener for operators, and the upkeep beside them.
pub async fn run(config_path: &Path) -> Result<(), ServeError> {
    let config = ShimConfig::load(config_path)?;
    let open_files = listener::raise_open_files_limit();
    let (shim, serving) = build(config).await?;
    let config = &shim.config;
    let bind = |address: String| async move {
        tokio::net::TcpListener::bind(&address)
            .await
            .map_err(|source| ServeError::Listen { address, source })
    };
    let workers = bind(config.listen.clone()).await?;
    let admin = bind(config.admin_listen.clone()).await?;
    let limits = &config.limits;
    let connection_limits = listener::ConnectionLimits {
        max_connections: listener::connection_budget(limits.max_connections, open_files),
        per_source: limits.per_source_connections,
        handshake_timeout: Duration::from_secs(limits.handshake_timeout_seconds),
        max_age: Duration::from_secs(limits.connection_max_age_seconds),
        grace: Duration::from_secs(10),
    };
    let acceptor = serving.acceptor(shim.ca.cert_pem())?;
    let address =
        |l: &tokio::net::TcpListener| l.local_addr().map(|a| a.to_string()).unwrap_or_default();
    tracing::info!(address = %address(&workers), admin = %address(&admin), cluster = %config.cluster_name,
        node_groups = %shim.groups.describe(), max_connections = connection_limits.max_connections,
        open_files = ?open_files, "controller-shim serving");
    let mut upkeep = shim.start_upkeep();
    upkeep.push(serving.watch());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let stopping = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|s| *s).await;
    };
    let admin_task = tokio::spawn(listener::serve(
        admin,
        None,
        admin_router(shim.clone()),
        listener::ConnectionLimits {
            max_connections: 64,
            per_source: 64,
            ..connection_limits.clone()
        },
        shim.metrics.clone(),
        stopping(stopped.clone()),
    ));
    let workers_task = tokio::spawn(listener::serve(
        workers,
        Some(acceptor),
        router(shim.clone()),
        connection_limits,
        shim.metrics.clone(),
        stopping(stopped),
    ));
    shutdown_signal().await;
    let _ = stop.send(true);
    let _ = tokio::join!(admin_task, workers_task);
    for task in upkeep {
        task.abort();
    }
    tracing::info!("controller-shim stopped");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
}
