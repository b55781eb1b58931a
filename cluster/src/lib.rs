//! nodewright-cluster, the cluster kit: from one small `Cluster` file to everything a
//! cluster's nodes read (the PKI in the state store, each group's NodeSpec and boot
//! config, controller-shim's node groups, least-privilege IAM policies) and the
//! CloudFormation stack that launches them. Its own binary, so the agent baked into
//! every node stays small; the NodeSpec and BootConfig types are the agent's.

pub mod catalogue;
pub mod cli;
pub mod file;
pub mod pki;
pub mod publish;
pub mod render;
pub mod store;

pub use catalogue::Catalogue;
pub use file::Cluster;
