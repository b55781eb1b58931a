//! Checks of the control plane's components (`controlPlane.etcd`, `.apiServer`, …):
//! flags in `extraArgs`, run modes and the binary assets they name.

use std::collections::BTreeMap;

use super::components::*;
use super::types::{AbsPath, AssetName};
use super::validate::Problems;
use super::values::ImageRef;

/// Checks one `extraArgs` map: flag names as the components spell them (no leading
/// dashes), values on one line.
pub fn check_extra_args(at: &str, args: &ExtraArgs, problems: &mut Problems) {
    for (name, value) in args {
        let here = format!("{at}.extraArgs[{name:?}]");
        let valid = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
            && name.as_bytes()[0].is_ascii_alphanumeric();
        if !valid {
            problems.add(
                &here,
                format!(
                    "{name:?} is not a flag name: give it without dashes, e.g. v or feature-gates"
                ),
            );
        }
        if value.contains('\n') || value.contains('\0') {
            problems.add(&here, "a flag value must be one line".to_owned());
        }
    }
}

fn check_list(at: &str, items: &[String], problems: &mut Problems) {
    for (i, item) in items.iter().enumerate() {
        if item.is_empty() || item.contains([',', ' ', '\n']) {
            problems.add(
                &format!("{at}[{i}]"),
                format!("{item:?} must be one name (no commas or spaces)"),
            );
        }
    }
}

fn check_mode(
    at: &str,
    mode: RunMode,
    image: Option<&ImageRef>,
    asset: Option<&AssetName>,
    problems: &mut Problems,
) {
    match mode {
        RunMode::StaticPod if asset.is_some() => problems.add(
            &format!("{at}.asset"),
            "only used in systemd mode (a static pod runs the image)".to_owned(),
        ),
        RunMode::Systemd if asset.is_none() => problems.add(
            &format!("{at}.asset"),
            "systemd mode needs the asset that installs the binary".to_owned(),
        ),
        RunMode::Systemd if image.is_some() => problems.add(
            &format!("{at}.image"),
            "only used in staticPod mode (systemd mode runs the asset's binary)".to_owned(),
        ),
        _ => {}
    }
}

/// systemd mode: `asset` is one of the spec's assets and installs `binary`.
pub fn check_binary_asset(
    at: &str,
    asset: &AssetName,
    binary: &AbsPath,
    assets: &[super::assets::AssetEntry],
    problems: &mut Problems,
) {
    match assets.iter().find(|a| a.name == *asset) {
        None => problems.add(
            &format!("{at}.asset"),
            format!("asset {asset} is not declared in assets"),
        ),
        Some(entry) if !entry.install.iter().any(|i| i.path == *binary) => problems.add(
            &format!("{at}.asset"),
            format!("asset {asset} does not install {binary} (the binary the service runs)"),
        ),
        Some(_) => {}
    }
}

/// The components, checked alone and against the rest of `controlPlane`.
pub struct Components<'a> {
    pub etcd: Option<&'a EtcdSpec>,
    pub api_server: Option<&'a ApiServerSpec>,
    pub controller_manager: Option<&'a ControllerManagerSpec>,
    pub scheduler: Option<&'a SchedulerSpec>,
    pub controller_shim: Option<&'a ControllerShimSpec>,
    /// `etcdVolumes.clusters`, when set.
    pub volume_clusters: Option<Vec<&'a str>>,
}

impl Components<'_> {
    pub fn check(&self, problems: &mut Problems) {
        if let Some(etcd) = self.etcd {
            let at = "controlPlane.etcd";
            // The image has a default, so only the asset is checked against the mode.
            check_mode(at, etcd.mode, None, etcd.asset.as_ref(), problems);
            let mut ports: BTreeMap<u16, String> = BTreeMap::new();
            for (name, cluster) in &etcd.clusters {
                let here = format!("{at}.clusters.{name}");
                match cluster.ports(name) {
                    None => problems.add(
                        &here,
                        format!(
                            "etcd cluster {name} has no default ports: set clientPort, peerPort and metricsPort"
                        ),
                    ),
                    Some(p) => {
                        for (port, what) in [
                            (p.client, "clientPort"),
                            (p.peer, "peerPort"),
                            (p.metrics, "metricsPort"),
                        ] {
                            let this = format!("{here}.{what}");
                            if port == 0 {
                                problems.add(&this, "0 is not a port".to_owned());
                            } else if let Some(first) = ports.insert(port, this.clone()) {
                                problems.add(
                                    &this,
                                    format!("port {port} is already used by {first}"),
                                );
                            }
                        }
                    }
                }
                check_extra_args(&here, &cluster.extra_args, problems);
                if let Some(backup) = &cluster.backup {
                    backup.check(&format!("{here}.backup"), problems);
                }
            }
            match &self.volume_clusters {
                None => problems.add(
                    at,
                    "etcd's data lives on the etcd volumes: set controlPlane.etcdVolumes"
                        .to_owned(),
                ),
                Some(volumes) => {
                    for name in volumes {
                        if !etcd.clusters.contains_key(*name) {
                            problems.add(
                                &format!("{at}.clusters"),
                                format!(
                                    "etcd cluster {name} (from etcdVolumes.clusters) has no entry here"
                                ),
                            );
                        }
                    }
                    for name in etcd.clusters.keys() {
                        if !volumes.contains(&name.as_str()) {
                            problems.add(
                                &format!("{at}.clusters.{name}"),
                                format!(
                                    "etcd cluster {name} is not in etcdVolumes.clusters: no volume holds its data"
                                ),
                            );
                        }
                    }
                }
            }
        }
        if let Some(api) = self.api_server {
            let at = "controlPlane.apiServer";
            check_list(
                &format!("{at}.authorizationModes"),
                &api.authorization_modes,
                problems,
            );
            check_list(
                &format!("{at}.admissionPlugins"),
                &api.admission_plugins,
                problems,
            );
            if api.authorization_modes.is_empty() {
                problems.add(
                    &format!("{at}.authorizationModes"),
                    "list at least one mode (e.g. Node, RBAC)".to_owned(),
                );
            }
            if api.secure_port == 0 {
                problems.add(&format!("{at}.securePort"), "0 is not a port".to_owned());
            }
            if let Some(issuer) = &api.service_account_issuer
                && !issuer.starts_with("https://")
            {
                problems.add(
                    &format!("{at}.serviceAccountIssuer"),
                    format!("{issuer:?} must be an https:// URL"),
                );
            }
            match self.etcd {
                None => problems.add(
                    at,
                    "the API server stores its data in etcd: add controlPlane.etcd".to_owned(),
                ),
                Some(etcd) if !etcd.clusters.contains_key("main") => problems.add(
                    "controlPlane.etcd.clusters",
                    "the API server needs an etcd cluster named main".to_owned(),
                ),
                Some(_) => {}
            }
            check_extra_args(at, &api.extra_args, problems);
        }
        if let Some(kcm) = self.controller_manager {
            check_extra_args("controlPlane.controllerManager", &kcm.extra_args, problems);
        }
        if let Some(scheduler) = self.scheduler {
            check_extra_args("controlPlane.scheduler", &scheduler.extra_args, problems);
        }
        if let Some(shim) = self.controller_shim {
            let at = "controlPlane.controllerShim";
            check_mode(
                at,
                shim.mode,
                shim.image.as_ref(),
                shim.asset.as_ref(),
                problems,
            );
            if shim.mode == RunMode::StaticPod && shim.image.is_none() {
                problems.add(
                    &format!("{at}.image"),
                    "staticPod mode needs the controller-shim image".to_owned(),
                );
            }
            for (i, group) in shim.node_groups.iter().enumerate() {
                if group.roles.is_empty() {
                    problems.add(
                        &format!("{at}.nodeGroups[{i}].roles"),
                        "list the IAM roles of the group's instances".to_owned(),
                    );
                }
                if !(group.node_specs.starts_with("s3://")
                    || group.node_specs.starts_with("file://"))
                    || !group.node_specs.ends_with('/')
                {
                    problems.add(
                        &format!("{at}.nodeGroups[{i}].nodeSpecs"),
                        format!(
                            "{:?} must be an s3:// or file:// prefix ending in '/' (specs are kept at <prefix>nodespec/<sha256>.yaml)",
                            group.node_specs
                        ),
                    );
                }
            }
            if shim.state_bucket.is_empty() {
                problems.add(
                    &format!("{at}.stateBucket"),
                    "name the S3 bucket of the bootstrap records".to_owned(),
                );
            }
        }
    }
}
