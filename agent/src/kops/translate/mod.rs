//! `kops::translate`: kube_env + nodeupconfig + the instance's facts -> a NodeSpec, purely.
//!
//! Every field of the nodeupconfig is destructured here without `..`, so adding a field
//! to the kops types does not compile until it is handled: translated, noted as ignored
//! the way nodeup ignores it, or refused by name. Refusals are collected, and the
//! translation fails with all of them before anything is written anywhere.
//!
//! The spec is built as the document a person would write, then read back through
//! [`NodeSpec::parse`], so the result is exactly what `boot` would apply and has passed
//! every check a hand-written spec passes.

mod assets;
mod cluster;
mod containerd;
mod host;
mod kube_proxy;
mod kubelet;
mod network;

use serde_json::{Map, Value, json};

use super::KopsError;
use super::boot_config::{KubeEnv, ROLE_NODE};
use super::nodeup_config::NodeupConfig;
use super::refusals::{Ledger, Note};
use crate::facts::Facts;
use crate::spec::NodeSpec;

pub use assets::{AssetUse, LAYOUT, LayoutRow};

/// The translated spec, its YAML text, and what was left out on purpose.
#[derive(Debug)]
pub struct Translation {
    pub spec: NodeSpec,
    /// The spec as `boot` applies it (and `kops translate` prints it, after [`Self::header`]).
    pub yaml: String,
    /// Fields that are set but have no counterpart, with why (nodeup ignores or
    /// replaces them too).
    pub notes: Vec<Note>,
}

impl Translation {
    /// YAML comments naming the input and every note.
    pub fn header(&self, source: &str) -> String {
        let mut out = format!(
            "# Translated by nodewright {} from kops's nodeupconfig ({source}).\n",
            crate::VERSION
        );
        if !self.notes.is_empty() {
            out.push_str("# Set in the nodeupconfig, not carried over (as nodeup):\n");
            for note in &self.notes {
                out.push_str(&format!("#   {}: {}\n", note.field, note.note));
            }
        }
        out
    }
}

/// What the sections share.
struct Context<'a> {
    env: &'a KubeEnv,
    config: &'a NodeupConfig,
    facts: &'a Facts,
    /// `nonMasqueradeCIDR` is `::/0`: kops's IPv6-only clusters.
    ipv6_only: bool,
}

/// Translates one worker instance group's kube_env and nodeupconfig for this instance.
pub fn translate(
    env: &KubeEnv,
    config: &NodeupConfig,
    facts: &Facts,
) -> Result<Translation, KopsError> {
    let mut ledger = Ledger::default();
    refuse_other_roles(env, &mut ledger);
    // A control-plane or bastion group is refused by its role alone: the fields below
    // would only add noise to that answer.
    if !ledger.refusals.is_empty() {
        return Err(refused(env, ledger));
    }
    let context = Context {
        env,
        config,
        facts,
        ipv6_only: config.networking.non_masquerade_cidr.ends_with("::/0")
            || config.networking.non_masquerade_cidr == "::/0",
    };
    let spec = build(&context, &mut ledger);
    if !ledger.refusals.is_empty() {
        return Err(refused(env, ledger));
    }
    finish(env, spec, ledger.notes)
}

fn refuse_other_roles(env: &KubeEnv, ledger: &mut Ledger) {
    if env.cloud_provider != "aws" {
        ledger.refuse(
            "CloudProvider",
            format!(
                "{:?}: nodewright runs on AWS only (its identity, metadata and credentials come from EC2)",
                env.cloud_provider
            ),
        );
    }
    match env.instance_group_role.as_str() {
        ROLE_NODE => {}
        "ControlPlane" | "Master" => ledger.refuse(
            "InstanceGroupRole",
            "ControlPlane: control-plane instance groups stay on nodeup for now (kops keysets, etcd-manager and kops's static pods are the next step)",
        ),
        "APIServer" => ledger.refuse(
            "InstanceGroupRole",
            "APIServer: API server instance groups stay on nodeup for now, like the control plane",
        ),
        "Bastion" => ledger.refuse(
            "InstanceGroupRole",
            "Bastion: a bastion runs no Kubernetes node",
        ),
        other => ledger.refuse(
            "InstanceGroupRole",
            format!("{other:?} is not a kops instance group role"),
        ),
    }
    if !env.etcd_ips.is_empty() {
        ledger.refuse("EtcdIPs", "only API server instance groups reach etcd");
    }
}

/// The spec document, section by section.
fn build(context: &Context<'_>, ledger: &mut Ledger) -> Map<String, Value> {
    let NodeupConfig {
        assets,
        images,
        cluster_name,
        apiserver_additional_ips,
        kubernetes_version,
        packages,
        config_store,
        etcd_cluster_names,
        etcd_manifests,
        channels_manifest,
        cas,
        keypair_ids,
        default_machine_type,
        enable_lifecycle_hook,
        static_manifests,
        kubelet_config,
        kube_proxy,
        networking,
        install_cni_assets,
        use_cilium_etcd,
        uses_kubenet,
        ntp_unmanaged,
        service_node_port_range,
        sysctl_parameters,
        update_policy,
        volume_mounts,
        file_assets,
        hooks,
        containerd,
        api_server_config,
        control_plane_config,
        dns_zone,
        nvidia_gpu,
        gvisor,
        disable_security_group_ingress,
        elb_security_group,
        nlb_security_group_mode,
        node_ip_families,
        use_ip_based_node_names,
        warm_pool_images,
        azure_admin_user,
        multizone,
        node_tags,
        node_instance_prefix,
        openstack,
        uses_none_dns,
        discovery_service,
    } = context.config;

    // What only control-plane and API server groups carry.
    let control_plane = "only control-plane and API server instance groups have it";
    ledger.refuse_if(
        !apiserver_additional_ips.is_empty(),
        "ApiserverAdditionalIPs",
        control_plane,
    );
    ledger.refuse_if(config_store.is_some(), "configStore", control_plane);
    ledger.refuse_if(
        !etcd_cluster_names.is_empty(),
        "EtcdClusterNames",
        control_plane,
    );
    ledger.refuse_if(!etcd_manifests.is_empty(), "etcdManifests", control_plane);
    ledger.refuse_if(
        !channels_manifest.is_empty(),
        "channelsManifest",
        control_plane,
    );
    ledger.refuse_if(
        !static_manifests.is_empty(),
        "staticManifests",
        control_plane,
    );
    ledger.refuse_if(
        api_server_config.is_some(),
        "APIServerConfig",
        control_plane,
    );
    ledger.refuse_if(
        control_plane_config.is_some(),
        "ControlPlaneConfig",
        control_plane,
    );
    ledger.refuse_if(!dns_zone.is_empty(), "DNSZone", control_plane);
    ledger.refuse_if(
        disable_security_group_ingress.is_some(),
        "disableSecurityGroupIngress",
        control_plane,
    );
    ledger.refuse_if(
        elb_security_group.is_some(),
        "elbSecurityGroup",
        control_plane,
    );
    ledger.refuse_if(
        nlb_security_group_mode.is_some(),
        "nlbSecurityGroupMode",
        control_plane,
    );
    ledger.refuse_if(
        !node_ip_families.is_empty(),
        "nodeIPFamilies",
        control_plane,
    );
    // Other clouds.
    let other_cloud = "set for another cloud than AWS";
    ledger.refuse_if(!azure_admin_user.is_empty(), "AzureAdminUser", other_cloud);
    ledger.refuse_if(multizone.is_some(), "multizone", other_cloud);
    ledger.refuse_if(node_tags.is_some(), "nodeTags", other_cloud);
    ledger.refuse_if(
        node_instance_prefix.is_some(),
        "nodeInstancePrefix",
        other_cloud,
    );
    ledger.refuse_if(openstack.is_some(), "Openstack", other_cloud);
    ledger.refuse_if(
        !networking.network_id.is_empty(),
        "Networking.networkID",
        other_cloud,
    );
    // What nodewright does not do yet.
    ledger.refuse_if(
        *enable_lifecycle_hook,
        "EnableLifecycleHook",
        "warm pool lifecycle hooks: nodewright does not complete Auto Scaling lifecycle actions yet",
    );
    ledger.refuse_if(
        !warm_pool_images.is_empty(),
        "warmPoolImages",
        "warm pools: nodewright does not pre-initialise instances for a warm pool yet",
    );
    let preloads = images.values().flatten().any(|list| !list.is_empty());
    ledger.refuse_if(
        preloads,
        "images",
        "images to preload: nodewright does not load container images into containerd",
    );
    ledger.refuse_if(
        nvidia_gpu.is_some(),
        "NvidiaGPU",
        "GPU nodes: nodewright does not install NVIDIA drivers or the container toolkit",
    );
    ledger.refuse_if(
        gvisor.is_some(),
        "GVisor",
        "the gVisor runtime: nodewright does not install runsc",
    );
    ledger.refuse_if(
        !volume_mounts.is_empty(),
        "VolumeMounts",
        "volume mounts on workers: nodewright formats and mounts only etcd volumes, on control-plane nodes",
    );
    ledger.refuse_if(
        discovery_service.is_some(),
        "discoveryServiceWithUniverse",
        "the hosted discovery service registration is not done by nodewright",
    );
    for (i, group) in hooks.iter().enumerate() {
        for (j, hook) in group.iter().flatten().enumerate() {
            let name = hook
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("(unnamed)");
            ledger.refuse(
                format!("Hooks[{i}][{j}]"),
                format!("hook {name}: nodewright does not run kops hooks (systemd units or containers of arbitrary content)"),
            );
        }
    }
    ledger.refuse_if(
        *use_cilium_etcd,
        "UseCiliumEtcd",
        "Cilium with its own etcd: the etcd-client-cilium certificate and its keyset are not handled",
    );
    ledger.refuse_if(
        *uses_kubenet,
        "UsesKubenet",
        "kubenet-style networking (kopeio): containerd's CNI template and the IP masquerade unit are not rendered",
    );
    if let Some(machine) = default_machine_type {
        ledger.note(
            "DefaultMachineType",
            format!("{machine}: nodeup reads it only to size maxPods for ENI networking, which is refused or has maxPods set"),
        );
    }
    if *uses_none_dns {
        ledger.note(
            "usesNoneDNS",
            "the API's addresses come from kube_env APIServerIPs, pinned in /etc/hosts",
        );
    }
    if cluster_name != &context.env.cluster_name {
        ledger.refuse(
            "ClusterName",
            format!(
                "{cluster_name:?} is not kube_env's ClusterName {:?}: the nodeupconfig is another cluster's",
                context.env.cluster_name
            ),
        );
    }

    let mut spec = Map::new();
    spec.insert("apiVersion".into(), json!(crate::spec::API_VERSION));
    spec.insert("kind".into(), json!(crate::spec::NODE_SPEC_KIND));
    let installs_containerd = !containerd.as_ref().is_some_and(|c| c.skip_install);
    let assets = assets::translate(
        assets,
        *install_cni_assets,
        installs_containerd,
        context.facts,
        ledger,
    );
    let kubelet = kubelet::translate(
        kubelet_config,
        context,
        *use_ip_based_node_names,
        containerd.as_ref(),
        &assets,
        ledger,
    );
    spec.insert(
        "cluster".into(),
        cluster::translate(
            context,
            kubernetes_version,
            cas.as_ref(),
            keypair_ids.as_ref(),
            &kubelet,
            kube_proxy.as_ref(),
            ledger,
        ),
    );
    spec.insert("role".into(), json!("worker"));
    spec.insert("nodeGroup".into(), json!(context.env.instance_group_name));
    let mut extras = host::Extras::default();
    host::translate(
        context,
        packages,
        *ntp_unmanaged,
        service_node_port_range,
        sysctl_parameters,
        update_policy,
        file_assets,
        kube_proxy.as_ref(),
        &mut extras,
        ledger,
    );
    network::translate(context, networking, &mut extras, ledger);
    extras.insert_into(&mut spec);
    spec.insert(
        "containerd".into(),
        containerd::translate(containerd.as_ref(), &assets, ledger),
    );
    if let Some(cni) = assets.cni_section() {
        spec.insert("cni".into(), cni);
    }
    spec.insert("kubelet".into(), kubelet.section);
    spec.insert(
        "kubeProxy".into(),
        kube_proxy::translate(kube_proxy.as_ref(), ledger),
    );
    spec.insert("assets".into(), Value::Array(assets.entries));
    spec
}

fn refused(env: &KubeEnv, ledger: Ledger) -> KopsError {
    KopsError::Refused {
        instance_group: env.instance_group_name.clone(),
        refusals: ledger.refusals,
    }
}

/// Reads the built document back as a node spec, through the same parser as any spec.
fn finish(
    env: &KubeEnv,
    spec: Map<String, Value>,
    notes: Vec<Note>,
) -> Result<Translation, KopsError> {
    let source = format!(
        "the spec translated for instance group {}",
        env.instance_group_name
    );
    let typed: NodeSpec = serde_json::from_value(Value::Object(spec))
        .map_err(|e| KopsError::Translation(format!("{source} does not fit the node spec: {e}")))?;
    let yaml = yaml_serde::to_string(&typed)
        .map_err(|e| KopsError::Translation(format!("{source}: {e}")))?;
    let spec = NodeSpec::parse(&source, &yaml).map_err(KopsError::Spec)?;
    Ok(Translation { spec, yaml, notes })
}
