//! The snapshot as etcd streams it, and the integrity check etcd puts in it.
//!
//! Through the JSON gateway, `Maintenance.Snapshot` is newline-delimited JSON: one
//! `{"result":{"blob":"<base64>","remaining_bytes":"N"}}` per chunk of the database
//! (32 KiB), or `{"error":{...}}` when etcd gives up half-way. The bytes are the bolt
//! database followed by the sha256 of the database (32 bytes), the same stream
//! `etcdctl snapshot save` writes and `etcdctl snapshot restore` checks. A database is
//! whole pages (a multiple of 512 bytes), so a stream cut short or altered fails
//! [`SnapshotCheck::finish`].

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use serde::Deserialize;

use crate::host::hash::Hasher;

/// A gateway line is ~44 KiB for etcd's 32 KiB chunks; anything far larger is not etcd.
const MAX_LINE: usize = 4 << 20;
const DIGEST: usize = 32;
const PAGE_MULTIPLE: u64 = 512;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("the snapshot stream broke off: {0}")]
    Cut(String),
    #[error("etcd ended the snapshot with an error: {0}")]
    Etcd(String),
    #[error("the snapshot stream is not etcd's: {0}")]
    Garbled(String),
    #[error("the snapshot is damaged: {0}")]
    Damaged(String),
}

/// The decoded chunks of the gateway's snapshot stream.
pub struct GatewayChunks<S> {
    body: S,
    pending: Vec<u8>,
    ended: bool,
}

impl<S, E> GatewayChunks<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    pub fn new(body: S) -> Self {
        Self {
            body,
            pending: Vec::new(),
            ended: false,
        }
    }

    /// The next chunk of snapshot bytes, `None` at the end of the stream.
    pub async fn next(&mut self) -> Result<Option<Vec<u8>>, SnapshotError> {
        loop {
            if let Some(end) = self.pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=end).collect();
                let line = line.trim_ascii();
                if line.is_empty() {
                    continue;
                }
                return decode_line(line).map(Some);
            }
            if self.ended {
                let rest = std::mem::take(&mut self.pending);
                let rest = rest.trim_ascii();
                if rest.is_empty() {
                    return Ok(None);
                }
                return decode_line(rest).map(Some);
            }
            if self.pending.len() > MAX_LINE {
                return Err(SnapshotError::Garbled(format!(
                    "a message longer than {MAX_LINE} bytes"
                )));
            }
            match self.body.next().await {
                Some(Ok(bytes)) => self.pending.extend_from_slice(&bytes),
                Some(Err(e)) => return Err(SnapshotError::Cut(e.to_string())),
                None => self.ended = true,
            }
        }
    }
}

fn decode_line(line: &[u8]) -> Result<Vec<u8>, SnapshotError> {
    #[derive(Deserialize)]
    struct Message {
        result: Option<Chunk>,
        error: Option<serde_json::Value>,
    }
    #[derive(Deserialize)]
    struct Chunk {
        #[serde(default)]
        blob: String,
    }
    let message: Message = serde_json::from_slice(line).map_err(|e| {
        SnapshotError::Garbled(format!(
            "{e} in {:?}",
            String::from_utf8_lossy(&line[..line.len().min(120)])
        ))
    })?;
    if let Some(error) = message.error {
        let text = error
            .get("message")
            .and_then(|m| m.as_str())
            .map(str::to_owned)
            .unwrap_or_else(|| error.to_string());
        return Err(SnapshotError::Etcd(text));
    }
    let chunk = message
        .result
        .ok_or_else(|| SnapshotError::Garbled("a message with neither result nor error".into()))?;
    aws_smithy_types::base64::decode(&chunk.blob)
        .map_err(|e| SnapshotError::Garbled(format!("a chunk that is not base64: {e}")))
}

/// Checks the sha256 etcd appends to a snapshot while the bytes go by: everything but
/// the last 32 bytes is hashed, and those 32 bytes must be the digest.
pub struct SnapshotCheck {
    hasher: Hasher,
    tail: Vec<u8>,
    total: u64,
}

impl Default for SnapshotCheck {
    fn default() -> Self {
        Self::new()
    }
}

impl SnapshotCheck {
    pub fn new() -> Self {
        Self {
            hasher: Hasher::new(),
            tail: Vec::with_capacity(2 * DIGEST),
            total: 0,
        }
    }

    pub fn update(&mut self, bytes: &[u8]) {
        self.total += bytes.len() as u64;
        let held = self.tail.len() + bytes.len();
        if held <= DIGEST {
            self.tail.extend_from_slice(bytes);
            return;
        }
        // Hash all but the last 32 bytes of tail + bytes; keep those 32.
        let release = held - DIGEST;
        if release <= self.tail.len() {
            self.hasher.update(&self.tail[..release]);
            self.tail.drain(..release);
            self.tail.extend_from_slice(bytes);
        } else {
            self.hasher.update(&self.tail);
            let from_bytes = release - self.tail.len();
            self.hasher.update(&bytes[..from_bytes]);
            self.tail.clear();
            self.tail.extend_from_slice(&bytes[from_bytes..]);
        }
    }

    /// The snapshot's size, once its digest and length are right.
    pub fn finish(self) -> Result<u64, SnapshotError> {
        let database = self.total.saturating_sub(DIGEST as u64);
        if self.total < DIGEST as u64 + PAGE_MULTIPLE || !database.is_multiple_of(PAGE_MULTIPLE) {
            return Err(SnapshotError::Damaged(format!(
                "{} bytes is not a database of whole pages followed by its sha256",
                self.total
            )));
        }
        let digest = self.hasher.finish();
        let carried = hex::encode(&self.tail);
        if digest != carried {
            return Err(SnapshotError::Damaged(format!(
                "the database's sha256 is {digest} but the snapshot carries {carried}"
            )));
        }
        Ok(self.total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(pages: usize) -> Vec<u8> {
        let mut db: Vec<u8> = (0..pages * 4096).map(|i| (i % 251) as u8).collect();
        let mut hasher = Hasher::new();
        hasher.update(&db);
        db.extend(hex::decode(hasher.finish()).unwrap());
        db
    }

    fn check_in(bytes: &[u8], chunk: usize) -> Result<u64, SnapshotError> {
        let mut check = SnapshotCheck::new();
        for part in bytes.chunks(chunk) {
            check.update(part);
        }
        check.finish()
    }

    #[test]
    fn a_whole_snapshot_passes_in_any_chunking() {
        let bytes = snapshot(3);
        for chunk in [1, 7, 31, 32, 33, 4096, 100_000] {
            assert_eq!(check_in(&bytes, chunk).unwrap(), bytes.len() as u64);
        }
    }

    #[test]
    fn a_changed_or_cut_snapshot_fails() {
        let mut bytes = snapshot(3);
        bytes[5000] ^= 1;
        assert!(matches!(
            check_in(&bytes, 4096),
            Err(SnapshotError::Damaged(_))
        ));
        let bytes = snapshot(3);
        let cut = &bytes[..bytes.len() - 4096];
        assert!(check_in(cut, 4096).is_err());
        assert!(check_in(&[], 1).is_err());
    }

    #[test]
    fn decodes_the_gateways_lines_and_errors() {
        let body = concat!(
            "{\"result\":{\"blob\":\"AAEC\",\"remaining_bytes\":\"3\"}}\n",
            "{\"result\":{\"blob\":\"AwQF\"}}\n",
            "{\"error\":{\"grpc_code\":14,\"message\":\"etcdserver: no leader\"}}\n"
        );
        // Split at awkward places: the decoder joins lines across reads.
        let parts: Vec<Result<Bytes, std::io::Error>> = body
            .as_bytes()
            .chunks(5)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut chunks = GatewayChunks::new(futures_util::stream::iter(parts));
            assert_eq!(chunks.next().await.unwrap(), Some(vec![0, 1, 2]));
            assert_eq!(chunks.next().await.unwrap(), Some(vec![3, 4, 5]));
            match chunks.next().await {
                Err(SnapshotError::Etcd(m)) => assert_eq!(m, "etcdserver: no leader"),
                other => panic!("{other:?}"),
            }
        });
    }
}
