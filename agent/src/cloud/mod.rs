//! AWS: instance metadata, SDK configuration and the HTTP clients behind them, and the
//! EC2 and Route53 calls of the control plane (behind small traits).

pub mod aws;
pub mod ec2;
pub mod error;
#[cfg(test)]
pub mod fake;
pub mod http;
pub mod imds;
pub mod route53;

pub use error::CloudError;
pub use http::NetworkSettings;
pub use imds::{Metadata, MetadataError};
