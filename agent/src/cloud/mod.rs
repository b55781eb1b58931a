//! AWS: instance metadata, SDK configuration and the HTTP clients behind them.

pub mod aws;
pub mod http;
pub mod imds;

pub use http::NetworkSettings;
pub use imds::{Metadata, MetadataError};
