//! kops as an input provider of the boot flow: it recognises kops's user data (or, run
//! as `nodeup`, kops's `kube_env.yaml` itself), fetches the instance group's
//! nodeupconfig, checks it against `NodeupConfigHash` before reading it, and hands the
//! flow the node spec [`translate`](super::translate()) makes of it. Nothing else in
//! the flow knows about kops.
//!
//! The nodeupconfig is read from the state store kube_env names (`ConfigBase`: `s3://`
//! or `file://`), or from kops-controller (`ConfigServer`, what kops writes for every
//! AWS worker today), which also issues the worker's certificates ([`controller`]).

use std::path::Path;

use nodewright_shim::client::StsSigner;
use serde_json::{Value, json};

use super::boot_config::{ConfigServer, KubeEnv};
use super::controller::{
    self, BootstrapError, ControllerClient, ControllerError, ControllerSettings, Credentials,
    protocol,
};
use super::nodeup_config::NodeupConfig;
use super::{KopsError, translate, userdata};
use crate::cloud::{NetworkSettings, aws};
use crate::source::shim::{CLIENT_CERT, runs_kube_proxy};
use crate::source::{self, BoxFuture, Context, Fetched, Source, SourceError, VerifiedSpec};
use crate::spec::{NodeSpec, ProxySettings, SpecLocation};

impl From<KopsError> for SourceError {
    fn from(error: KopsError) -> Self {
        SourceError::new(error)
    }
}

impl From<BootstrapError> for SourceError {
    fn from(error: BootstrapError) -> Self {
        SourceError::new(error)
    }
}

impl From<ControllerError> for SourceError {
    fn from(error: ControllerError) -> Self {
        SourceError::new(error)
    }
}

/// Recognises kops's nodeup script in EC2 user data (any of its three forms).
pub struct Provider;

impl source::Provider for Provider {
    fn name(&self) -> &'static str {
        "kops"
    }

    fn recognise(&self, user_data: &[u8]) -> Result<Option<Box<dyn Source>>, SourceError> {
        if !userdata::is_kops(user_data) {
            return Ok(None);
        }
        let data = userdata::parse("user data", user_data)?;
        let env = KubeEnv::parse("user data (kube_env.yaml)", &data.kube_env)?;
        let network = NetworkSettings {
            proxy: data.proxy.map(|p| ProxySettings {
                http: Some(p.http_proxy.clone()),
                https: Some(p.http_proxy),
                no_proxy: p.no_proxy,
            }),
            ca_bundle: None,
        };
        log_recognised(&env);
        Ok(Some(Box::new(KopsSource {
            env,
            network,
            boot_unit: None,
        })))
    }
}

/// Run as `nodeup --conf=FILE`: the "user data" is kops's `kube_env.yaml` itself.
pub struct KubeEnvProvider {
    /// `kube_env.yaml`'s path, for messages.
    pub conf: String,
    /// The unit that runs nodewright (as nodeup) at every boot.
    pub boot_unit: BootUnit,
}

impl source::Provider for KubeEnvProvider {
    fn name(&self) -> &'static str {
        "kops kube_env"
    }

    fn recognise(&self, kube_env: &[u8]) -> Result<Option<Box<dyn Source>>, SourceError> {
        let text = std::str::from_utf8(kube_env).map_err(|e| KopsError::Invalid {
            source_name: self.conf.clone(),
            detail: format!("not UTF-8 text (byte {})", e.valid_up_to()),
        })?;
        let env = KubeEnv::parse(&self.conf, text)?;
        log_recognised(&env);
        Ok(Some(Box::new(KopsSource {
            env,
            network: NetworkSettings::default(),
            boot_unit: Some(self.boot_unit.clone()),
        })))
    }
}

/// kops's `kops-configuration.service`: nodeup installs it so that every boot runs
/// nodeup again; nodewright, run as nodeup, keeps the same unit in the spec it applies
/// (so a later run does not remove it as something no longer wanted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootUnit {
    /// The binary, as the unit runs it (its file name must stay `nodeup`).
    pub exec: String,
    /// `kube_env.yaml`.
    pub conf: String,
    /// `--v=N`, passed on as nodeup would.
    pub verbosity: u8,
}

/// nodeup's unit name.
pub const BOOT_UNIT: &str = "kops-configuration.service";

impl BootUnit {
    fn content(&self) -> String {
        format!(
            "[Unit]\n\
             Description=Run kops bootstrap (nodewright, as nodeup)\n\
             Documentation=https://github.com/kubernetes/kops\n\
             Wants=network-online.target\n\
             After=network-online.target\n\
             \n\
             [Service]\n\
             Type=oneshot\n\
             ExecStart={} --conf={} --v={}\n\
             RemainAfterExit=yes\n\
             \n\
             [Install]\n\
             WantedBy=multi-user.target\n",
            self.exec, self.conf, self.verbosity
        )
    }
}

fn log_recognised(env: &KubeEnv) {
    tracing::info!(
        cluster = %env.cluster_name,
        instance_group = %env.instance_group_name,
        role = %env.instance_group_role,
        nodeup_config = %env.describe_source(),
        "read kops's kube_env"
    );
}

/// One kops instance group's inputs.
pub struct KopsSource {
    env: KubeEnv,
    network: NetworkSettings,
    boot_unit: Option<BootUnit>,
}

impl Source for KopsSource {
    fn describe(&self) -> String {
        self.env.describe_source()
    }

    fn network(&self) -> NetworkSettings {
        self.network.clone()
    }

    /// kops-controller issues the worker's certificates.
    fn issues_credentials(&self) -> bool {
        self.env.config_server.is_some()
    }

    fn fetch<'a>(
        &'a self,
        context: &'a Context<'a>,
    ) -> BoxFuture<'a, Result<Fetched, SourceError>> {
        Box::pin(async move {
            match &self.env.config_server {
                Some(server) => self.fetch_from_controller(server, context).await,
                None => self.fetch_from_store(context).await,
            }
        })
    }
}

impl KopsSource {
    /// `ConfigBase`: the nodeupconfig from the state store; no credentials come with it.
    async fn fetch_from_store(&self, context: &Context<'_>) -> Result<Fetched, SourceError> {
        let location = nodeup_config_location(&self.env)?;
        let sdk = match location {
            SpecLocation::S3 { .. } => {
                Some(aws::sdk_config(&context.facts.instance.region, context.network).await?)
            }
            SpecLocation::File { .. } => None,
        };
        let name = location.to_string();
        let bytes = source::fetch(&location, sdk.as_ref(), context.deadline).await?;
        let (_, spec) = self.translated(&name, &bytes, context)?;
        Ok(Fetched {
            spec,
            credentials: Vec::new(),
        })
    }

    /// `ConfigServer`: the nodeupconfig and the worker's certificates from
    /// kops-controller (`controller`).
    async fn fetch_from_controller(
        &self,
        server: &ConfigServer,
        context: &Context<'_>,
    ) -> Result<Fetched, SourceError> {
        let sdk = aws::sdk_config(&context.facts.instance.region, context.network).await?;
        let signer = StsSigner::from_sdk_config(&sdk).map_err(ControllerError::Sign)?;
        let mut settings = ControllerSettings::new(
            server.servers.clone(),
            server.ca_certificates.clone(),
            context.deadline,
        );
        settings.tls_server_name =
            Some(server.tls_server_name.clone()).filter(|name| !name.is_empty());
        settings.proxies = context.network.reqwest_proxies()?;
        let client = ControllerClient::new(settings)?;
        let name = format!(
            "the nodeupconfig from kops-controller ({})",
            server.servers.join(", ")
        );
        let fetched = controller::nodeup_config(&client, &signer, context.root).await?;
        let name = match &fetched.registered {
            Some(_) => format!("{name}, kept at {}", controller::KEPT_NODEUP_CONFIG),
            None => name,
        };
        let (config, spec) = self.translated(&name, &fetched.bytes, context)?;
        let mut credentials = vec![controller::kept_nodeup_config(&fetched)];
        if context.credentials {
            let registered = match &fetched.registered {
                Some(server) => Some(server.clone()),
                None => {
                    let keypair_id = config
                        .keypair_ids
                        .as_ref()
                        .and_then(|ids| ids.get(protocol::CLUSTER_CA))
                        .filter(|id| !id.is_empty())
                        .ok_or_else(|| KopsError::Invalid {
                            source_name: name.clone(),
                            detail: format!(
                                "KeypairIDs.{}: missing; kops-controller issues the node's                                  certificates only for the keypair the node names (nodeup:                                  \"no keypairID\")",
                                protocol::CLUSTER_CA
                            ),
                        })?;
                    let wanted = controller::Wanted {
                        root: context.root,
                        keypair_id,
                        ca_bundle: &server.ca_certificates,
                        kube_proxy: runs_kube_proxy(&spec.spec),
                    };
                    match controller::credentials(&client, &signer, &wanted).await? {
                        Credentials::Issued(new) => {
                            credentials.extend(new.files_from(&spec.spec, controller::ISSUER));
                            None
                        }
                        Credentials::Held => None,
                        Credentials::Registered { server } => Some(server),
                    }
                }
            };
            if let Some(server) = registered {
                holds_kubelet_certificate(context.root, &server)?;
            }
        }
        Ok(Fetched { spec, credentials })
    }

    /// The nodeupconfig's bytes checked against `NodeupConfigHash`, parsed, translated.
    fn translated(
        &self,
        name: &str,
        bytes: &[u8],
        context: &Context<'_>,
    ) -> Result<(NodeupConfig, VerifiedSpec), KopsError> {
        let config = NodeupConfig::parse_checked(name, bytes, &self.env.nodeup_config_hash)?;
        let translation = translate(&self.env, &config, context.facts)?;
        for note in &translation.notes {
            tracing::info!(field = %note.field, "kops setting not carried over: {}", note.note);
        }
        let text = match &self.boot_unit {
            Some(unit) => with_boot_unit(&self.env, &translation.spec, unit)?,
            None => translation.yaml,
        };
        let spec = NodeSpec::parse(name, &text).map_err(KopsError::Spec)?;
        Ok((
            config,
            VerifiedSpec {
                spec,
                url: name.to_owned(),
                sha256: crate::spec::digest(text.as_bytes()),
                text,
            },
        ))
    }
}

/// After a 409 the node must already hold the kubelet's certificate: nothing else will
/// issue it.
fn holds_kubelet_certificate(root: &Path, server: &str) -> Result<(), BootstrapError> {
    let path = root.join(CLIENT_CERT.trim_start_matches('/'));
    if path.exists() {
        return Ok(());
    }
    Err(BootstrapError::Registered {
        server: server.to_owned(),
        detail: format!("this node holds no kubelet certificate ({CLIENT_CERT})"),
    })
}

/// Where the nodeupconfig is: `<ConfigBase>/igconfig/<role>/<ig>/nodeupconfig.yaml`.
fn nodeup_config_location(env: &KubeEnv) -> Result<SpecLocation, KopsError> {
    let base = env.config_base.as_deref().unwrap_or_default();
    let url = format!("{}/{}", base.trim_end_matches('/'), env.nodeup_config_key());
    SpecLocation::parse(&url).map_err(|e| KopsError::Unsupported {
        field: "ConfigBase".to_owned(),
        detail: format!("{base:?}: {e}"),
    })
}

/// The translated spec with the boot unit among its units, as YAML.
fn with_boot_unit(env: &KubeEnv, spec: &NodeSpec, unit: &BootUnit) -> Result<String, KopsError> {
    let bug = |e: String| {
        KopsError::Translation(format!(
            "instance group {}: adding {BOOT_UNIT}: {e}",
            env.instance_group_name
        ))
    };
    let mut doc = serde_json::to_value(spec).map_err(|e| bug(e.to_string()))?;
    let units = &mut doc["systemd"]["units"];
    if units.is_null() {
        *units = Value::Array(Vec::new());
    }
    let Some(units) = units.as_array_mut() else {
        return Err(bug("systemd.units is not a list".to_owned()));
    };
    // Started by systemd at boot, never by the run it would start.
    units.push(json!({
        "name": BOOT_UNIT,
        "content": unit.content(),
        "enabled": true,
        "state": "stopped",
    }));
    yaml_serde::to_string(&doc).map_err(|e| bug(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(extra: &str) -> KubeEnv {
        let text = format!(
            "CloudProvider: aws\nClusterName: a.example.com\nInstanceGroupName: nodes\n\
             InstanceGroupRole: Node\nNodeupConfigHash: abc=\n{extra}"
        );
        KubeEnv::parse("kube_env.yaml", &text).unwrap()
    }

    #[test]
    fn the_nodeup_config_is_under_config_base() {
        let location =
            nodeup_config_location(&env("ConfigBase: s3://state/a.example.com/\n")).unwrap();
        assert_eq!(
            location,
            SpecLocation::S3 {
                bucket: "state".into(),
                key: "a.example.com/igconfig/node/nodes/nodeupconfig.yaml".into()
            }
        );
        let error = nodeup_config_location(&env("ConfigBase: memfs://state/a\n")).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("ConfigBase: \"memfs://state/a\""),
            "{error}"
        );
    }
}
