//! etcd's client API through its JSON gateway (`/v3/...` on the client port, the same
//! TLS listener and client-certificate check as gRPC): member status, the member list, a
//! linearizable count, and the snapshot stream. HTTP and JSON are already linked into
//! the agent; a gRPC stack would not fit its size budget.
//!
//! The gateway writes 64-bit integers as JSON strings and leaves out zero values.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;

#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("reading the etcd client TLS material {path}: {detail}")]
    Tls { path: String, detail: String },
    #[error("etcd at {endpoint}: {detail}")]
    Unreachable { endpoint: String, detail: String },
    #[error("etcd at {endpoint} answered {call} with HTTP {status}: {body}")]
    Refused {
        endpoint: String,
        call: &'static str,
        status: u16,
        body: String,
    },
    #[error("etcd at {endpoint}: unexpected answer to {call}: {detail}")]
    Protocol {
        endpoint: String,
        call: &'static str,
        detail: String,
    },
}

/// The CA that signs etcd's servers, and the client certificate and key this node
/// presents (PEM).
#[derive(Clone)]
pub struct ClientTls {
    pub ca_pem: Vec<u8>,
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

impl ClientTls {
    pub fn read(ca: &Path, cert: &Path, key: &Path) -> Result<Self, EtcdError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|e| EtcdError::Tls {
                path: path.display().to_string(),
                detail: e.to_string(),
            })
        };
        Ok(Self {
            ca_pem: read(ca)?,
            cert_pem: read(cert)?,
            key_pem: read(key)?,
        })
    }
}

/// One member's view of itself (`Maintenance.Status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub member_id: u64,
    /// The leader this member follows; 0 while there is none.
    pub leader: u64,
    pub version: String,
    pub revision: i64,
    pub db_size: u64,
}

impl Status {
    pub fn is_leader(&self) -> bool {
        self.leader != 0 && self.leader == self.member_id
    }
}

/// What a linearizable count saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyCount {
    pub keys: u64,
    pub revision: i64,
    /// The cluster that answered.
    pub cluster_id: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: u64,
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
}

/// A client of one etcd member.
#[derive(Clone)]
pub struct EtcdClient {
    http: reqwest::Client,
    endpoint: String,
}

impl EtcdClient {
    /// `endpoint` is the member's client URL (`https://127.0.0.1:4001`). `timeout`
    /// bounds each call but the snapshot, whose stream only has to keep moving.
    pub fn new(endpoint: &str, tls: &ClientTls, timeout: Duration) -> Result<Self, EtcdError> {
        let tls_error = |what: &str, e: reqwest::Error| EtcdError::Tls {
            path: what.to_owned(),
            detail: e.to_string(),
        };
        let roots = reqwest::Certificate::from_pem_bundle(&tls.ca_pem)
            .map_err(|e| tls_error("etcd CA", e))?;
        let mut identity_pem = tls.cert_pem.clone();
        identity_pem.push(b'\n');
        identity_pem.extend_from_slice(&tls.key_pem);
        let identity = reqwest::Identity::from_pem(&identity_pem)
            .map_err(|e| tls_error("etcd client certificate", e))?;
        let http = reqwest::Client::builder()
            .tls_certs_only(roots)
            .identity(identity)
            .no_proxy()
            .http1_only()
            .connect_timeout(timeout)
            .read_timeout(timeout)
            .user_agent(concat!("nodewright/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| EtcdError::Unreachable {
                endpoint: endpoint.to_owned(),
                detail: crate::error::chain(&e),
            })?;
        Ok(Self {
            http,
            endpoint: endpoint.trim_end_matches('/').to_owned(),
        })
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub async fn status(&self) -> Result<Status, EtcdError> {
        #[derive(Deserialize)]
        struct Answer {
            #[serde(default)]
            header: Header,
            #[serde(default)]
            version: String,
            #[serde(default, with = "int_text")]
            leader: u64,
            #[serde(default, rename = "dbSize", with = "int_text")]
            db_size: u64,
        }
        let answer: Answer = self
            .call("maintenance status", "/v3/maintenance/status", "{}")
            .await?;
        Ok(Status {
            member_id: answer.header.member_id,
            leader: answer.leader,
            version: answer.version,
            revision: answer.header.revision,
            db_size: answer.db_size,
        })
    }

    pub async fn members(&self) -> Result<Vec<Member>, EtcdError> {
        #[derive(Deserialize)]
        struct Answer {
            #[serde(default)]
            members: Vec<Raw>,
        }
        #[derive(Deserialize)]
        struct Raw {
            #[serde(default, rename = "ID", with = "int_text")]
            id: u64,
            #[serde(default)]
            name: String,
            #[serde(default, rename = "peerURLs")]
            peer_urls: Vec<String>,
            #[serde(default, rename = "clientURLs")]
            client_urls: Vec<String>,
        }
        let answer: Answer = self
            .call("member list", "/v3/cluster/member/list", "{}")
            .await?;
        Ok(answer
            .members
            .into_iter()
            .map(|m| Member {
                id: m.id,
                name: m.name,
                peer_urls: m.peer_urls,
                client_urls: m.client_urls,
            })
            .collect())
    }

    /// How many keys the cluster holds, by a linearizable read: it succeeds only while
    /// the cluster has quorum.
    pub async fn count_keys(&self) -> Result<KeyCount, EtcdError> {
        #[derive(Deserialize)]
        struct Answer {
            #[serde(default)]
            header: Header,
            #[serde(default, with = "int_text")]
            count: u64,
        }
        // Every key: from "\0" to the end of the keyspace ("\0" as range_end).
        let body = r#"{"key":"AA==","range_end":"AA==","count_only":true}"#;
        let answer: Answer = self.call("range", "/v3/kv/range", body).await?;
        Ok(KeyCount {
            keys: answer.count,
            revision: answer.header.revision,
            cluster_id: answer.header.cluster_id,
        })
    }

    /// Starts the snapshot stream: newline-delimited JSON messages, each a base64 chunk
    /// of the database (see `snapshot.rs`).
    pub async fn snapshot(&self) -> Result<reqwest::Response, EtcdError> {
        let response = self
            .post("snapshot", "/v3/maintenance/snapshot", "{}")
            .await?;
        Ok(response)
    }

    async fn post(
        &self,
        call: &'static str,
        path: &str,
        body: &'static str,
    ) -> Result<reqwest::Response, EtcdError> {
        let response = self
            .http
            .post(format!("{}{path}", self.endpoint))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| EtcdError::Unreachable {
                endpoint: self.endpoint.clone(),
                detail: crate::error::chain(&e),
            })?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            return Err(EtcdError::Refused {
                endpoint: self.endpoint.clone(),
                call,
                status: status.as_u16(),
                body: body.chars().take(300).collect(),
            });
        }
        Ok(response)
    }

    async fn call<T: DeserializeOwned>(
        &self,
        call: &'static str,
        path: &str,
        body: &'static str,
    ) -> Result<T, EtcdError> {
        let response = self.post(call, path, body).await?;
        let bytes = response.bytes().await.map_err(|e| EtcdError::Unreachable {
            endpoint: self.endpoint.clone(),
            detail: crate::error::chain(&e),
        })?;
        serde_json::from_slice(&bytes).map_err(|e| EtcdError::Protocol {
            endpoint: self.endpoint.clone(),
            call,
            detail: e.to_string(),
        })
    }
}

#[derive(Debug, Default, Deserialize)]
struct Header {
    #[serde(default, with = "int_text")]
    cluster_id: u64,
    #[serde(default, with = "int_text")]
    member_id: u64,
    #[serde(default, with = "int_text")]
    revision: i64,
}

/// A 64-bit integer the gateway writes as a string (or, for small ones, a number).
mod int_text {
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D, T>(d: D) -> Result<T, D::Error>
    where
        D: Deserializer<'de>,
        T: std::str::FromStr + TryFrom<i128>,
        T::Err: std::fmt::Display,
    {
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(t) => t.parse().map_err(serde::de::Error::custom),
            serde_json::Value::Number(n) => {
                let wide = n
                    .as_i64()
                    .map(i128::from)
                    .or_else(|| n.as_u64().map(i128::from))
                    .ok_or_else(|| serde::de::Error::custom("not an integer"))?;
                T::try_from(wide).map_err(|_| serde::de::Error::custom("integer out of range"))
            }
            other => Err(serde::de::Error::custom(format!(
                "expected an integer, found {other}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_gateways_status() {
        // As etcd 3.4.23's gateway answers it.
        let text = r#"{"header":{"cluster_id":"15118495548433857066","member_id":"13668033151171901709","revision":"3","raft_term":"2"},"version":"3.4.23","dbSize":"20480","leader":"13668033151171901709","raftIndex":"6","raftTerm":"2","raftAppliedIndex":"6","dbSizeInUse":"16384"}"#;
        #[derive(Deserialize)]
        struct Answer {
            header: Header,
            #[serde(with = "int_text")]
            leader: u64,
        }
        let answer: Answer = serde_json::from_str(text).unwrap();
        assert_eq!(answer.header.member_id, 13_668_033_151_171_901_709);
        assert_eq!(answer.header.cluster_id, 15_118_495_548_433_857_066);
        assert_eq!(answer.header.revision, 3);
        assert_eq!(answer.leader, answer.header.member_id);
    }
}
