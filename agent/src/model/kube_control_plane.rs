//! kube-apiserver, kube-controller-manager and kube-scheduler as static pods, and the
//! kubeconfigs of the controller-manager, the scheduler and the admin. Every file they
//! read is mounted on its own (never the whole PKI directory, which holds the CA keys).

use serde_json::Value;

use super::ModelError;
use super::builder::{StateBuilder, fixed_path};
use super::desired::Ownership;
use super::etcd::local_client_urls;
use super::kubeconfig::Kubeconfig;
use super::pki_paths as pki;
use super::pod::{HostMount, Probe, StaticPod, flag_map, flags, requests};
use crate::facts::Facts;
use crate::spec::{ControlPlaneSpec, NodeSpec};

const COMPONENT: &str = "kube-control-plane";

pub fn render(spec: &NodeSpec, facts: &Facts, out: &mut StateBuilder) -> Result<(), ModelError> {
    let Some(control_plane) = &spec.control_plane else {
        return Ok(());
    };
    let local_api = format!("https://127.0.0.1:{}", secure_port(control_plane));
    if let Some(api) = &control_plane.api_server {
        api_server(spec, control_plane, api, facts, out)?;
        // The admin's kubeconfig, for operators on the node.
        kubeconfig(
            pki::ADMIN_KUBECONFIG,
            "kubernetes-admin",
            &local_api,
            pki::ADMIN_CLIENT_CERT,
            pki::ADMIN_CLIENT_KEY,
            out,
        )?;
    }
    if let Some(kcm) = &control_plane.controller_manager {
        kubeconfig(
            pki::CONTROLLER_MANAGER_KUBECONFIG,
            "system:kube-controller-manager",
            &local_api,
            pki::CONTROLLER_MANAGER_CLIENT_CERT,
            pki::CONTROLLER_MANAGER_CLIENT_KEY,
            out,
        )?;
        let kubeconfig = pki::CONTROLLER_MANAGER_KUBECONFIG.to_owned();
        let mut ours = flag_map([
            ("kubeconfig", kubeconfig.clone()),
            ("authentication-kubeconfig", kubeconfig.clone()),
            ("authorization-kubeconfig", kubeconfig.clone()),
            ("bind-address", "127.0.0.1".to_owned()),
            ("secure-port", "10257".to_owned()),
            ("client-ca-file", pki::CA_CERT.to_owned()),
            (
                "requestheader-client-ca-file",
                pki::FRONT_PROXY_CA_CERT.to_owned(),
            ),
            ("root-ca-file", pki::CA_CERT.to_owned()),
            ("service-account-private-key-file", pki::SA_KEY.to_owned()),
            ("use-service-account-credentials", "true".to_owned()),
            ("cluster-name", spec.cluster.name.to_string()),
            (
                "service-cluster-ip-range",
                spec.cluster.service_cidr.to_string(),
            ),
            ("leader-elect", "true".to_owned()),
            (
                "tls-cert-file",
                pki::CONTROLLER_MANAGER_SERVING_CERT.to_owned(),
            ),
            (
                "tls-private-key-file",
                pki::CONTROLLER_MANAGER_SERVING_KEY.to_owned(),
            ),
        ]);
        let mut files = vec![
            kubeconfig,
            pki::CA_CERT.to_owned(),
            pki::FRONT_PROXY_CA_CERT.to_owned(),
            pki::SA_KEY.to_owned(),
            pki::CONTROLLER_MANAGER_CLIENT_CERT.to_owned(),
            pki::CONTROLLER_MANAGER_CLIENT_KEY.to_owned(),
            pki::CONTROLLER_MANAGER_SERVING_CERT.to_owned(),
            pki::CONTROLLER_MANAGER_SERVING_KEY.to_owned(),
        ];
        // The spec check requires podCidr when CIDRs are allocated.
        if let (true, Some(pod_cidr)) = (kcm.allocate_node_cidrs, spec.cluster.pod_cidr) {
            ours.insert("allocate-node-cidrs".to_owned(), "true".to_owned());
            ours.insert("cluster-cidr".to_owned(), pod_cidr.to_string());
        }
        if kcm.cluster_signing {
            ours.insert(
                "cluster-signing-cert-file".to_owned(),
                pki::CA_CERT.to_owned(),
            );
            ours.insert(
                "cluster-signing-key-file".to_owned(),
                pki::CA_KEY.to_owned(),
            );
            files.push(pki::CA_KEY.to_owned());
        }
        let image = image_of(kcm.image.as_ref(), "kube-controller-manager", spec);
        static_pod(
            "kube-controller-manager",
            &image,
            flags(ours, &kcm.extra_args),
            files,
            healthz(10257),
            requests(
                kcm.cpu_request.as_str(),
                kcm.memory_request.as_ref().map(|q| q.as_str()),
            ),
            out,
        )?;
    }
    if let Some(scheduler) = &control_plane.scheduler {
        kubeconfig(
            pki::SCHEDULER_KUBECONFIG,
            "system:kube-scheduler",
            &local_api,
            pki::SCHEDULER_CLIENT_CERT,
            pki::SCHEDULER_CLIENT_KEY,
            out,
        )?;
        let kubeconfig = pki::SCHEDULER_KUBECONFIG.to_owned();
        let ours = flag_map([
            ("kubeconfig", kubeconfig.clone()),
            ("authentication-kubeconfig", kubeconfig.clone()),
            ("authorization-kubeconfig", kubeconfig.clone()),
            ("bind-address", "127.0.0.1".to_owned()),
            ("secure-port", "10259".to_owned()),
            ("leader-elect", "true".to_owned()),
            ("tls-cert-file", pki::SCHEDULER_SERVING_CERT.to_owned()),
            (
                "tls-private-key-file",
                pki::SCHEDULER_SERVING_KEY.to_owned(),
            ),
        ]);
        let files = vec![
            kubeconfig,
            pki::CA_CERT.to_owned(),
            pki::SCHEDULER_CLIENT_CERT.to_owned(),
            pki::SCHEDULER_CLIENT_KEY.to_owned(),
            pki::SCHEDULER_SERVING_CERT.to_owned(),
            pki::SCHEDULER_SERVING_KEY.to_owned(),
        ];
        let image = image_of(scheduler.image.as_ref(), "kube-scheduler", spec);
        static_pod(
            "kube-scheduler",
            &image,
            flags(ours, &scheduler.extra_args),
            files,
            healthz(10259),
            requests(
                scheduler.cpu_request.as_str(),
                scheduler.memory_request.as_ref().map(|q| q.as_str()),
            ),
            out,
        )?;
    }
    Ok(())
}

fn secure_port(control_plane: &ControlPlaneSpec) -> u16 {
    control_plane
        .api_server
        .as_ref()
        .map_or(443, |a| a.secure_port)
}

fn image_of(image: Option<&crate::spec::ImageRef>, name: &str, spec: &NodeSpec) -> String {
    image.map_or_else(
        || {
            format!(
                "registry.k8s.io/{name}:v{}",
                spec.cluster.kubernetes_version
            )
        },
        |i| i.to_string(),
    )
}

fn healthz(port: u16) -> Probe {
    Probe {
        scheme: "HTTPS",
        port,
        liveness: "/healthz".to_owned(),
        readiness: "/healthz".to_owned(),
        startup: "/healthz".to_owned(),
    }
}

fn static_pod(
    name: &str,
    image: &str,
    flags: Vec<String>,
    files: Vec<String>,
    probe: Probe,
    requests: Value,
    out: &mut StateBuilder,
) -> Result<(), ModelError> {
    let mut command = vec![name.to_owned()];
    command.extend(flags);
    StaticPod {
        name,
        image,
        command,
        mounts: files.into_iter().map(HostMount::file).collect(),
        probe,
        requests,
        env: vec![],
    }
    .add(COMPONENT, out)
}

fn kubeconfig(
    path: &str,
    user: &str,
    server: &str,
    cert: &str,
    key: &str,
    out: &mut StateBuilder,
) -> Result<(), ModelError> {
    let text = Kubeconfig {
        user,
        server,
        ca_file: pki::CA_CERT,
        client_certificate: cert,
        client_key: key,
    }
    .render();
    out.file(COMPONENT, fixed_path(path), text, Ownership::root(0o600))
}

fn api_server(
    spec: &NodeSpec,
    control_plane: &ControlPlaneSpec,
    api: &crate::spec::ApiServerSpec,
    facts: &Facts,
    out: &mut StateBuilder,
) -> Result<(), ModelError> {
    let etcd = control_plane
        .etcd
        .as_ref()
        .ok_or_else(|| ModelError::Spec("the API server needs controlPlane.etcd".to_owned()))?;
    let urls = local_client_urls(etcd);
    let main = urls
        .get("main")
        .ok_or_else(|| ModelError::Spec("the API server needs etcd cluster main".to_owned()))?;
    let api_name = spec.cluster.api.as_ref().map_or_else(
        || {
            control_plane.dns.as_ref().map_or_else(
                || format!("api.internal.{}", spec.cluster.name),
                |d| d.api_name(&spec.cluster.name),
            )
        },
        |a| a.name.to_string(),
    );
    let issuer = api
        .service_account_issuer
        .clone()
        .unwrap_or_else(|| format!("https://{api_name}"));
    let mut ours = flag_map([
        ("advertise-address", facts.instance.private_ipv4.to_string()),
        ("allow-privileged", "true".to_owned()),
        ("authorization-mode", api.authorization_modes.join(",")),
        ("enable-admission-plugins", api.admission_plugins.join(",")),
        ("client-ca-file", pki::CA_CERT.to_owned()),
        ("etcd-servers", main.clone()),
        ("etcd-cafile", pki::ETCD_CA_CERT.to_owned()),
        ("etcd-certfile", pki::APISERVER_ETCD_CLIENT_CERT.to_owned()),
        ("etcd-keyfile", pki::APISERVER_ETCD_CLIENT_KEY.to_owned()),
        (
            "kubelet-client-certificate",
            pki::APISERVER_KUBELET_CLIENT_CERT.to_owned(),
        ),
        (
            "kubelet-client-key",
            pki::APISERVER_KUBELET_CLIENT_KEY.to_owned(),
        ),
        (
            "kubelet-preferred-address-types",
            "InternalIP,Hostname,ExternalIP".to_owned(),
        ),
        (
            "proxy-client-cert-file",
            pki::FRONT_PROXY_CLIENT_CERT.to_owned(),
        ),
        (
            "proxy-client-key-file",
            pki::FRONT_PROXY_CLIENT_KEY.to_owned(),
        ),
        (
            "requestheader-allowed-names",
            "front-proxy-client".to_owned(),
        ),
        (
            "requestheader-client-ca-file",
            pki::FRONT_PROXY_CA_CERT.to_owned(),
        ),
        (
            "requestheader-extra-headers-prefix",
            "X-Remote-Extra-".to_owned(),
        ),
        ("requestheader-group-headers", "X-Remote-Group".to_owned()),
        ("requestheader-username-headers", "X-Remote-User".to_owned()),
        ("secure-port", api.secure_port.to_string()),
        ("service-account-issuer", issuer),
        ("service-account-key-file", pki::SA_PUB.to_owned()),
        ("service-account-signing-key-file", pki::SA_KEY.to_owned()),
        (
            "service-cluster-ip-range",
            spec.cluster.service_cidr.to_string(),
        ),
        ("tls-cert-file", pki::APISERVER_CERT.to_owned()),
        ("tls-private-key-file", pki::APISERVER_KEY.to_owned()),
    ]);
    // Events in their own etcd cluster, as kops does, when this spec has one.
    let overrides: Vec<String> = urls
        .iter()
        .filter(|(name, _)| *name == "events")
        .map(|(_, url)| format!("/events#{url}"))
        .collect();
    if !overrides.is_empty() {
        ours.insert("etcd-servers-overrides".to_owned(), overrides.join(","));
    }
    let mut mounts: Vec<HostMount> = [
        pki::CA_CERT,
        pki::FRONT_PROXY_CA_CERT,
        pki::SA_KEY,
        pki::SA_PUB,
        pki::APISERVER_CERT,
        pki::APISERVER_KEY,
        pki::APISERVER_KUBELET_CLIENT_CERT,
        pki::APISERVER_KUBELET_CLIENT_KEY,
        pki::ETCD_CA_CERT,
        pki::APISERVER_ETCD_CLIENT_CERT,
        pki::APISERVER_ETCD_CLIENT_KEY,
        pki::FRONT_PROXY_CLIENT_CERT,
        pki::FRONT_PROXY_CLIENT_KEY,
    ]
    .into_iter()
    .map(HostMount::file)
    .collect();
    if api.encryption_config {
        ours.insert(
            "encryption-provider-config".to_owned(),
            pki::ENCRYPTION_CONFIG.to_owned(),
        );
        mounts.push(HostMount::file(pki::ENCRYPTION_CONFIG));
    }
    if let Some(audit) = &api.audit {
        ours.insert(
            "audit-policy-file".to_owned(),
            audit.policy_file.to_string(),
        );
        ours.insert("audit-log-path".to_owned(), audit.log_path.to_string());
        ours.insert(
            "audit-log-maxage".to_owned(),
            audit.max_age_days.to_string(),
        );
        ours.insert(
            "audit-log-maxbackup".to_owned(),
            audit.max_backups.to_string(),
        );
        ours.insert(
            "audit-log-maxsize".to_owned(),
            audit.max_size_mb.to_string(),
        );
        mounts.push(HostMount::file(audit.policy_file.to_string()));
        let log_dir = audit
            .log_path
            .parent()
            .map_or_else(|| "/var/log".to_owned(), |p| p.to_string());
        mounts.push(HostMount::dir(log_dir));
    }
    let image = image_of(api.image.as_ref(), "kube-apiserver", spec);
    let mut command = vec!["kube-apiserver".to_owned()];
    command.extend(flags(ours, &api.extra_args));
    StaticPod {
        name: "kube-apiserver",
        image: &image,
        command,
        mounts,
        probe: Probe {
            scheme: "HTTPS",
            port: api.secure_port,
            liveness: "/livez".to_owned(),
            readiness: "/readyz".to_owned(),
            startup: "/livez".to_owned(),
        },
        requests: requests(
            api.cpu_request.as_str(),
            api.memory_request.as_ref().map(|q| q.as_str()),
        ),
        env: vec![],
    }
    .add(COMPONENT, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::desired_state;

    fn command_of(desired: &crate::model::DesiredState, pod: &str) -> Vec<String> {
        let file = desired
            .file(&format!("/etc/kubernetes/manifests/{pod}.yaml"))
            .unwrap();
        let value: serde_json::Value = yaml_serde::from_slice(file.content.bytes()).unwrap();
        value["spec"]["containers"][0]["command"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn extra_args_override_a_typed_flag_and_add_new_ones() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../examples/control-plane/nodespec.yaml"
        ))
        .unwrap()
        .replace("    authorizationModes: [Node, RBAC]\n", "    securePort: 6443\n    authorizationModes: [Node, RBAC]\n")
        .replace(
            "      profiling: \"false\"\n      # Overrides",
            "      secure-port: \"8443\"\n      authorization-mode: AlwaysAllow\n      v: \"4\"\n      # Overrides",
        )
        .replace("  scheduler:\n", "  scheduler:\n    extraArgs: {leader-elect: \"false\"}\n")
        .replace("    extraArgs:\n      profiling: \"false\"\n  controllerShim", "  controllerShim");
        let spec = crate::spec::NodeSpec::parse("cp", &text).unwrap();
        let desired = desired_state(&spec, &Facts::example()).unwrap();
        let api = command_of(&desired, "kube-apiserver");
        assert!(api.contains(&"--secure-port=8443".to_owned()), "{api:?}");
        assert!(!api.iter().any(|f| f == "--secure-port=6443"), "{api:?}");
        assert!(api.contains(&"--authorization-mode=AlwaysAllow".to_owned()));
        assert!(api.contains(&"--v=4".to_owned()));
        assert!(api.contains(&"--kubelet-preferred-address-types=InternalIP".to_owned()));
        let scheduler = command_of(&desired, "kube-scheduler");
        assert!(
            scheduler.contains(&"--leader-elect=false".to_owned()),
            "{scheduler:?}"
        );
        assert_eq!(
            scheduler
                .iter()
                .filter(|f| f.starts_with("--leader-elect"))
                .count(),
            1
        );
        // The node-local kubeconfigs reach the API server on the typed port.
        let conf = desired.file(pki::SCHEDULER_KUBECONFIG).unwrap();
        let text = String::from_utf8_lossy(conf.content.bytes());
        assert!(text.contains("server: https://127.0.0.1:6443"), "{text}");
    }
}
