//! The controller-shim service: HTTPS on the control plane, bootstrapping workers.

pub mod app;
pub mod ec2;
pub mod metrics;
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
pub use app::{Shim, router};

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
    let store = store::NodeStore::new(s3.clone(), &config.state.bucket, &config.state.prefix);
    let specs = specs::SpecCache::new(s3, Duration::from_secs(config.limits.spec_cache_seconds));
    let shim = Shim::new(config, ca, sts, ec2, store, specs);
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

/// Runs the service until SIGTERM or SIGINT.
pub async fn run(config_path: &Path) -> Result<(), ServeError> {
    let config = ShimConfig::load(config_path)?;
    let address = config.listen.clone();
    let (shim, serving) = build(config).await?;
    let listener = tokio::net::TcpListener::bind(&address)
        .await
        .map_err(|source| ServeError::Listen {
            address: address.clone(),
            source,
        })?;
    let local = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or(address);
    tracing::info!(address = %local, cluster = %shim.config.cluster_name, "controller-shim serving");
    tls::serve(
        listener,
        serving,
        router(shim),
        shutdown_signal(),
        Duration::from_secs(10),
    )
    .await;
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
