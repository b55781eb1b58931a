//! etcd backups to the state store, and the restore for when quorum is gone.
//!
//! - `client`: etcd's client API over its JSON gateway, with the node's client
//!   certificate (status, leader, members, a linearizable count, the snapshot stream);
//! - `snapshot`: the gateway's snapshot stream and the digest etcd puts in a snapshot;
//! - `layout`: etcd-manager's store layout and documents, and ours beside them;
//! - `store`: the S3 side (listing, multipart upload, documents, removal);
//! - `retention`: which backups to keep (etcd-manager's hourly and daily rule);
//! - `backup`: one round (leader only, one per interval slot);
//! - `restore`: one member rebuilt from a backup;
//! - `record`: what a node remembers of its rounds, for `status` and the metrics.
//!
//! It sits at the control-plane layer: it uses the host, cloud and spec layers below
//! and is driven by the commands and the timer above.

pub mod backup;
pub mod client;
pub mod layout;
pub mod record;
pub mod restore;
pub mod retention;
pub mod snapshot;
pub mod store;
