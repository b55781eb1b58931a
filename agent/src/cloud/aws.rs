//! AWS SDK configuration shared by every AWS client the agent makes.
//!
//! Endpoints and credentials come the standard AWS way (environment, profile, then the
//! instance role through IMDS), so `AWS_ENDPOINT_URL` points the agent at an emulator.

use aws_config::{BehaviorVersion, Region, SdkConfig};

use super::http::{NetworkError, NetworkSettings};

pub async fn sdk_config(
    region: &str,
    network: &NetworkSettings,
) -> Result<SdkConfig, NetworkError> {
    let http = network.aws_http_client()?;
    Ok(aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(region.to_owned()))
        .http_client(http)
        .load()
        .await)
}

/// An S3 client. Against an endpoint whose host is an IP address or `localhost`,
/// virtual-hosted addressing cannot work, so path-style addressing is used there.
pub fn s3_client(config: &SdkConfig) -> aws_sdk_s3::Client {
    let path_style = config.endpoint_url().map(host_is_literal).unwrap_or(false)
        || std::env::var("AWS_ENDPOINT_URL_S3").is_ok_and(|url| host_is_literal(&url));
    let s3_config = aws_sdk_s3::config::Builder::from(config)
        .force_path_style(path_style)
        .build();
    aws_sdk_s3::Client::from_conf(s3_config)
}

fn host_is_literal(url: &str) -> bool {
    match url::Url::parse(url).ok().as_ref().and_then(url::Url::host) {
        Some(url::Host::Domain(name)) => name == "localhost",
        Some(url::Host::Ipv4(_) | url::Host::Ipv6(_)) => true,
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::host_is_literal;

    #[test]
    fn literal_hosts() {
        assert!(host_is_literal("http://127.0.0.1:5000"));
        assert!(host_is_literal("http://localhost:5000/"));
        assert!(host_is_literal("http://[::1]:5000"));
        assert!(host_is_literal("http://10.200.0.1:5000"));
        assert!(!host_is_literal("https://s3.us-east-1.amazonaws.com"));
        assert!(!host_is_literal(
            "https://bucket.vpce-1.s3.us-east-1.vpce.amazonaws.com"
        ));
    }
}
