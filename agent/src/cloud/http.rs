//! HTTP clients with the node's network settings: the proxy from the boot config and
//! the extra CA bundle, applied to every outbound client except IMDS.

use aws_smithy_http_client::proxy::ProxyConfig;
use aws_smithy_http_client::tls::{self, TlsContext, TrustStore, rustls_provider::CryptoMode};
use aws_smithy_http_client::{Builder, Connector};
use aws_smithy_runtime_api::client::http::SharedHttpClient;

use crate::error::{Classified, ErrorKind};
use crate::runbook::Topic;
use crate::spec::ProxySettings;

/// IMDS addresses (IPv4 and IPv6) never go through a proxy.
pub const IMDS_HOSTS: &[&str] = &["169.254.169.254", "fd00:ec2::254"];

#[derive(Debug, Clone, Default)]
pub struct NetworkSettings {
    pub proxy: Option<ProxySettings>,
    /// Extra PEM certificates to trust beside the OS trust store.
    pub ca_bundle: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("proxy setting {setting}={url:?} is not usable: {detail}")]
    Proxy {
        setting: &'static str,
        url: String,
        detail: String,
    },
    #[error("caBundle is not usable: {0}")]
    CaBundle(String),
}

/// Unusable settings come from the boot config: refused input.
impl Classified for NetworkError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::InvalidInput
    }
    fn topic(&self) -> Option<Topic> {
        Some(Topic::InvalidSpec)
    }
}

impl NetworkSettings {
    /// Hosts that bypass the proxy: the configured ones and IMDS, wherever it is
    /// (`AWS_EC2_METADATA_SERVICE_ENDPOINT` can move it, e.g. in tests).
    pub fn no_proxy(&self) -> Vec<String> {
        let mut hosts: Vec<String> = self
            .proxy
            .as_ref()
            .map(|p| p.no_proxy.clone())
            .unwrap_or_default();
        hosts.extend(IMDS_HOSTS.iter().map(|h| h.to_string()));
        if let Some(host) = std::env::var("AWS_EC2_METADATA_SERVICE_ENDPOINT")
            .ok()
            .and_then(|url| host_of(&url))
        {
            hosts.push(host);
        }
        hosts
    }

    fn aws_proxy(&self) -> Result<ProxyConfig, NetworkError> {
        let Some(proxy) = &self.proxy else {
            return Ok(ProxyConfig::disabled());
        };
        let no_proxy = self.no_proxy().join(",");
        let config = match (&proxy.http, &proxy.https) {
            (None, None) => return Ok(ProxyConfig::disabled()),
            (Some(http), Some(https)) if http == https => {
                ProxyConfig::all(http.as_str()).map_err(|e| proxy_error("http", http, e))?
            }
            (_, Some(https)) => {
                ProxyConfig::https(https.as_str()).map_err(|e| proxy_error("https", https, e))?
            }
            (Some(http), None) => {
                ProxyConfig::http(http.as_str()).map_err(|e| proxy_error("http", http, e))?
            }
        };
        Ok(config.no_proxy(no_proxy))
    }

    fn tls_context(&self) -> Result<TlsContext, NetworkError> {
        let mut store = TrustStore::default().with_native_roots(true);
        if let Some(pem) = &self.ca_bundle {
            store = store.with_pem_certificate(pem.as_bytes().to_vec());
        }
        TlsContext::builder()
            .with_trust_store(store)
            .build()
            .map_err(|e| NetworkError::CaBundle(e.to_string()))
    }

    /// The HTTP client for AWS SDK calls (S3, EC2, Route53, STS).
    pub fn aws_http_client(&self) -> Result<SharedHttpClient, NetworkError> {
        let proxy = self.aws_proxy()?;
        let context = self.tls_context()?;
        Ok(
            Builder::new().build_with_connector_fn(move |settings, components| {
                let mut builder = Connector::builder().proxy_config(proxy.clone());
                if let Some(settings) = settings {
                    builder = builder.connector_settings(settings.clone());
                }
                if let Some(sleep) = components.and_then(|c| c.sleep_impl()) {
                    builder.set_sleep_impl(Some(sleep));
                }
                builder
                    .tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc))
                    .tls_context(context.clone())
                    .build()
            }),
        )
    }

    /// The proxies alone, for clients that pin their own CA (controller-shim).
    pub fn reqwest_proxies(&self) -> Result<Vec<reqwest::Proxy>, NetworkError> {
        let mut out = Vec::new();
        if let Some(proxy) = &self.proxy {
            let no_proxy = reqwest::NoProxy::from_string(&self.no_proxy().join(","));
            if let Some(http) = &proxy.http {
                out.push(
                    reqwest::Proxy::http(http)
                        .map_err(|e| proxy_error("http", http, e))?
                        .no_proxy(no_proxy.clone()),
                );
            }
            if let Some(https) = &proxy.https {
                out.push(
                    reqwest::Proxy::https(https)
                        .map_err(|e| proxy_error("https", https, e))?
                        .no_proxy(no_proxy),
                );
            }
        }
        Ok(out)
    }

    /// A reqwest client builder with the proxy and CA settings, for downloads.
    pub fn reqwest_builder(&self) -> Result<reqwest::ClientBuilder, NetworkError> {
        let mut builder = reqwest::Client::builder().no_proxy();
        if let Some(proxy) = &self.proxy {
            let no_proxy = reqwest::NoProxy::from_string(&self.no_proxy().join(","));
            if let Some(http) = &proxy.http {
                builder = builder.proxy(
                    reqwest::Proxy::http(http)
                        .map_err(|e| proxy_error("http", http, e))?
                        .no_proxy(no_proxy.clone()),
                );
            }
            if let Some(https) = &proxy.https {
                builder = builder.proxy(
                    reqwest::Proxy::https(https)
                        .map_err(|e| proxy_error("https", https, e))?
                        .no_proxy(no_proxy),
                );
            }
        }
        if let Some(pem) = &self.ca_bundle {
            let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes())
                .map_err(|e| NetworkError::CaBundle(e.to_string()))?;
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        Ok(builder)
    }
}

fn proxy_error(setting: &'static str, url: &str, e: impl std::fmt::Display) -> NetworkError {
    NetworkError::Proxy {
        setting,
        url: url.to_owned(),
        detail: e.to_string(),
    }
}

/// An SDK HTTP client that never uses a proxy, for IMDS.
pub fn direct_http_client() -> SharedHttpClient {
    NetworkSettings::default()
        .aws_http_client()
        .expect("the default network settings are always valid")
}

/// The host of a URL such as `http://169.254.169.254:80/` (an IPv6 address without
/// its brackets).
fn host_of(url: &str) -> Option<String> {
    Some(match url::Url::parse(url).ok()?.host()? {
        url::Host::Domain(name) => name.to_owned(),
        url::Host::Ipv4(ip) => ip.to_string(),
        url::Host::Ipv6(ip) => ip.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imds_is_never_proxied() {
        let settings = NetworkSettings {
            proxy: Some(ProxySettings {
                http: Some("http://proxy:3128".into()),
                https: None,
                no_proxy: vec![".internal".into()],
            }),
            ca_bundle: None,
        };
        let hosts = settings.no_proxy();
        assert!(hosts.contains(&".internal".to_owned()));
        assert!(hosts.contains(&"169.254.169.254".to_owned()));
        assert!(hosts.contains(&"fd00:ec2::254".to_owned()));
    }

    #[test]
    fn hosts_of_urls() {
        assert_eq!(host_of("http://127.0.0.1:8080/"), Some("127.0.0.1".into()));
        assert_eq!(
            host_of("http://[fd00:ec2::254]"),
            Some("fd00:ec2::254".into())
        );
        assert_eq!(host_of("http://imds"), Some("imds".into()));
        assert_eq!(host_of("nonsense"), None);
    }
}
