//! What the model renders passes the real tools: systemd-analyze (units and drop-ins),
//! kubernetes-validate --strict (static pod manifests), kubectl (kubeconfigs), and
//! containerd 1.6's own config loader (config.toml, schema 2). Each test also breaks a
//! copy on purpose, to show its check can fail.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::path::Path;

use common::checkers::{
    add_stock_units, containerd_dump, is_root, kubectl_view, kubernetes_validate, not_understood,
    systemd_verify, units_to_verify, write_stand_in_certificates, write_test_certificate,
    write_tree,
};
use common::{CASES, parse, render_case};
use nodewright::model::{controller_shim, kube_proxy, kubelet, pki_paths as pki};

#[test]
fn units_and_drop_ins_pass_systemd_analyze_verify() {
    let mut failures = Vec::new();
    for case in CASES {
        let desired = render_case(case);
        let root = tempfile::tempdir().unwrap();
        add_stock_units(root.path());
        write_tree(root.path(), &desired);
        let units = units_to_verify(&desired);
        assert!(
            units.iter().any(|u| u == "kubelet.service"),
            "{}: {units:?}",
            case.name
        );
        if let Err(e) = systemd_verify(root.path(), &units) {
            failures.push(format!("{}: {e}", case.name));
        }

        // A misspelled key in our drop-in is caught (systemd only warns about it).
        let drop_in = root
            .path()
            .join("etc/systemd/system/kubelet.service.d/10-nodewright.conf");
        let good = std::fs::read_to_string(&drop_in).unwrap();
        std::fs::write(&drop_in, format!("{good}Enviroment=X=1\n")).unwrap();
        let err = systemd_verify(root.path(), &["kubelet.service".to_owned()]).unwrap_err();
        assert!(err.contains("Enviroment"), "{err}");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn manifests_pass_kubernetes_validate_strict() {
    let mut checked = 0;
    for case in CASES {
        let spec = parse(case.spec);
        let desired = render_case(case);
        let version = spec.cluster.kubernetes_version.to_string();
        let dir = tempfile::tempdir().unwrap();
        for file in desired.files.iter().filter(|f| {
            f.path
                .starts_with(&nodewright::model::fixed_path(kubelet::MANIFESTS))
        }) {
            let path = dir.path().join(file.path.as_path().file_name().unwrap());
            std::fs::write(&path, file.content.bytes()).unwrap();
            let passed = kubernetes_validate(&path, &version)
                .unwrap_or_else(|e| panic!("{}: {}: {e}", case.name, file.path));
            let pod = file.path.as_path().file_stem().unwrap().to_string_lossy();
            assert!(passed.contains(&format!("pod/{pod}")), "{passed}");
            checked += 1;

            // An unknown field is refused under --strict.
            let text = String::from_utf8_lossy(file.content.bytes()).replace(
                "  hostNetwork: true\n",
                "  hostNetwork: true\n  hostNetwrok: true\n",
            );
            std::fs::write(&path, text).unwrap();
            let err = kubernetes_validate(&path, &version).unwrap_err();
            assert!(err.contains("hostNetwrok"), "{err}");
        }
    }
    // kube-proxy in the shim worker and control-plane examples, the IPVS case and the systemd-etcd case (not the 2.3
    // case); the example control plane adds apiserver, controller-manager, scheduler,
    // etcd main and events and controller-shim; the systemd-etcd case the first three.
    assert_eq!(checked, 4 + 6 + 3);
}

#[test]
fn kubeconfigs_pass_kubectl_config_view_minify_flatten() {
    if !is_root() {
        eprintln!("skipped: kubectl runs chrooted into the node's root, which needs root");
        return;
    }
    let mut control_plane_checked = 0;
    let mut bootstrap_checked = 0;
    for case in CASES {
        let desired = render_case(case);
        let root = tempfile::tempdir().unwrap();
        write_tree(root.path(), &desired);
        // The client certificates and the CA the kubeconfigs name: stand-ins.
        write_stand_in_certificates(root.path(), &desired);
        let at = |p: &str| root.path().join(p.trim_start_matches('/'));
        // A kubelet that joins by TLS bootstrapping writes its kubeconfig itself; its
        // bootstrap kubeconfig names the token file.
        let mut kubeconfigs = Vec::new();
        if desired.file(kubelet::KUBECONFIG).is_some() {
            kubeconfigs.push(kubelet::KUBECONFIG);
        }
        if desired.file(kubelet::BOOTSTRAP_KUBECONFIG).is_some() {
            let flat = kubectl_view(root.path(), kubelet::BOOTSTRAP_KUBECONFIG)
                .unwrap_or_else(|e| panic!("{}: bootstrap kubeconfig: {e}", case.name));
            assert!(
                flat.contains("tokenFile: /etc/kubernetes/bootstrap-token"),
                "{flat}"
            );
            assert!(flat.contains("certificate-authority-data:"), "{flat}");
            bootstrap_checked += 1;
        }
        if desired.file(kube_proxy::KUBECONFIG).is_some() {
            kubeconfigs.push(kube_proxy::KUBECONFIG);
        }
        // The control plane's, with its certificates at the PKI step's paths.
        for (kubeconfig, cert, key, subject) in [
            (
                pki::ADMIN_KUBECONFIG,
                pki::ADMIN_CLIENT_CERT,
                pki::ADMIN_CLIENT_KEY,
                "/O=system:masters/CN=kubernetes-admin",
            ),
            (
                pki::CONTROLLER_MANAGER_KUBECONFIG,
                pki::CONTROLLER_MANAGER_CLIENT_CERT,
                pki::CONTROLLER_MANAGER_CLIENT_KEY,
                "/CN=system:kube-controller-manager",
            ),
            (
                pki::SCHEDULER_KUBECONFIG,
                pki::SCHEDULER_CLIENT_CERT,
                pki::SCHEDULER_CLIENT_KEY,
                "/CN=system:kube-scheduler",
            ),
        ] {
            if desired.file(kubeconfig).is_some() {
                write_test_certificate(&at(cert), &at(key), subject);
                kubeconfigs.push(kubeconfig);
                control_plane_checked += 1;
            }
        }
        for kubeconfig in kubeconfigs {
            let flat = kubectl_view(root.path(), kubeconfig)
                .unwrap_or_else(|e| panic!("{}: {kubeconfig}: {e}", case.name));
            // Flattened: the CA and the client certificate are embedded.
            assert!(flat.contains("certificate-authority-data:"), "{flat}");
            assert!(flat.contains("client-certificate-data:"), "{flat}");
            let server = if kubeconfig.starts_with("/etc/kubernetes/") {
                // On the control plane, the local API server.
                "server: https://127.0.0.1:"
            } else {
                "server: https://api.internal.prod.example.com"
            };
            assert!(flat.contains(server), "{kubeconfig}: {flat}");
        }
        // A kubeconfig naming a file that is not there is refused.
        if desired.file(kubelet::KUBECONFIG).is_some() {
            std::fs::remove_file(at(kubelet::CLIENT_KEY)).unwrap();
            let err = kubectl_view(root.path(), kubelet::KUBECONFIG).unwrap_err();
            assert!(err.contains("kubelet-client.key"), "{err}");
        }
    }
    // The worker example joins by TLS bootstrapping.
    assert_eq!(bootstrap_checked, 1);
    // admin, controller-manager and scheduler of both control-plane cases.
    assert_eq!(control_plane_checked, 6);
}

#[test]
fn controller_shim_reads_the_config_the_model_writes() {
    let mut checked = 0;
    for case in CASES {
        let desired = render_case(case);
        let Some(file) = desired.file(controller_shim::CONFIG) else {
            continue;
        };
        let text = String::from_utf8_lossy(file.content.bytes());
        let config = nodewright_shim::config::ShimConfig::parse(controller_shim::CONFIG, &text)
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        assert_eq!(config.cluster_name, "prod.example.com");
        assert_eq!(config.tls.cert_file.to_str(), Some(pki::SHIM_SERVING_CERT));
        checked += 1;
    }
    assert_eq!(checked, 2);
}

#[test]
fn containerd_v2_config_is_accepted_and_understood_by_containerd() {
    let mut checked = 0;
    for case in CASES {
        let spec = parse(case.spec);
        if spec
            .containerd
            .as_ref()
            .is_none_or(|c| c.config_version() != 2)
        {
            continue;
        }
        let desired = render_case(case);
        let config = desired.file("/etc/containerd/config.toml").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, config.content.bytes()).unwrap();
        let ours: toml::Table =
            toml::from_str(&String::from_utf8_lossy(config.content.bytes())).unwrap();
        let dump = containerd_dump(&path).unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let ignored = not_understood(&ours, &dump);
        assert!(
            ignored.is_empty(),
            "{}: containerd did not take these as written:\n{}",
            case.name,
            ignored.join("\n")
        );
        checked += 1;

        // A misspelled key is dropped by containerd without a word: the check sees it.
        // (runc's `options` are passed to the shim as they are, so a typo there shows
        // only when a container starts; the spec check guards SystemdCgroup instead.)
        let text = String::from_utf8_lossy(config.content.bytes())
            .replace("default_runtime_name = ", "default_runtime_nam = ");
        std::fs::write(&path, &text).unwrap();
        let misspelled: toml::Table = toml::from_str(&text).unwrap();
        let dump = containerd_dump(&path).unwrap();
        let ignored = not_understood(&misspelled, &dump);
        assert!(
            ignored.iter().any(|i| i.contains("default_runtime_nam:")),
            "{ignored:?}"
        );
        // A wrong type is refused by containerd itself.
        std::fs::write(
            &path,
            text.replace(
                "sandbox_image = \"registry.k8s.io/pause:3.10\"",
                "sandbox_image = 3",
            ),
        )
        .unwrap();
        assert!(containerd_dump(&path).is_err());
    }
    assert!(checked >= 1, "no case renders a schema 2 config");
}

#[test]
fn stub_programs_are_only_for_units() {
    // The helper must not paper over a missing file the model should write.
    let case = &CASES[0];
    let desired = render_case(case);
    let root = tempfile::tempdir().unwrap();
    write_tree(root.path(), &desired);
    assert!(Path::new(&root.path().join("usr/local/bin/kubelet")).exists());
    assert!(
        !root
            .path()
            .join("var/lib/kubelet/pki/kubelet-client.crt")
            .exists()
    );
}
