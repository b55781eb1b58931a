//! The spec's assets: each becomes a download (its URLs after the mirror table) and
//! each install target a file installed from it.

use super::ModelError;
use super::builder::StateBuilder;
use super::desired::{DesiredAsset, Ownership};
use crate::spec::NodeSpec;

const COMPONENT: &str = "assets";

pub fn render(spec: &NodeSpec, out: &mut StateBuilder) -> Result<(), ModelError> {
    for asset in &spec.assets {
        out.asset(
            COMPONENT,
            DesiredAsset {
                name: asset.name.to_string(),
                sha256: asset.sha256.clone(),
                urls: spec.downloads.sources(&asset.urls),
                archive: asset.archive,
            },
        )?;
        for target in &asset.install {
            out.asset_file(
                COMPONENT,
                target.path.clone(),
                asset.name.as_str(),
                target.member.as_ref().map(|m| m.as_str()),
                Ownership {
                    mode: target.mode,
                    owner: target.owner.clone(),
                    group: target.group.clone(),
                },
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Facts, desired_state};

    const SPEC: &str = r#"
apiVersion: nodewright.io/v1alpha1
kind: NodeSpec
cluster:
  name: prod.example.com
  kubernetesVersion: 1.33.4
  serviceCidr: 100.64.0.0/13
  podCidr: 100.96.0.0/11
  dnsIp: 100.64.0.10
role: worker
downloads:
  mirrors:
    - upstream: https://dl.k8s.io/
      mirrors: [https://mirror.corp/k8s/]
assets:
  - name: kubelet
    sha256: "1111111111111111111111111111111111111111111111111111111111111111"
    urls: [https://dl.k8s.io/v1.33.4/kubelet]
    install:
      - path: /usr/local/bin/kubelet
  - name: containerd
    sha256: "2222222222222222222222222222222222222222222222222222222222222222"
    urls: [https://github.com/containerd.tgz]
    archive: tgz
    install:
      - member: bin/containerd
        path: /usr/local/bin/containerd
      - member: bin/ctr
        path: /usr/local/bin/ctr
        mode: "0750"
"#;

    #[test]
    fn install_targets_become_asset_files() {
        let spec = NodeSpec::parse("spec", SPEC).unwrap();
        let state = desired_state(&spec, &Facts::example()).unwrap();
        assert_eq!(state.assets.len(), 2);
        let kubelet = &state.assets["kubelet"];
        let urls: Vec<&str> = kubelet.urls.iter().map(|u| u.as_str()).collect();
        assert_eq!(
            urls,
            [
                "https://mirror.corp/k8s/v1.33.4/kubelet",
                "https://dl.k8s.io/v1.33.4/kubelet"
            ]
        );
        let ctr = state.asset_file("/usr/local/bin/ctr").unwrap();
        assert_eq!(ctr.asset, "containerd");
        assert_eq!(ctr.member.as_deref(), Some("bin/ctr"));
        assert_eq!(ctr.ownership.mode.bits(), 0o750);
        let kubelet_file = state.asset_file("/usr/local/bin/kubelet").unwrap();
        assert_eq!(kubelet_file.member, None);
        assert_eq!(kubelet_file.ownership.mode.bits(), 0o755);
    }

    #[test]
    fn components_may_install_declared_assets_only() {
        let spec = NodeSpec::parse("spec", SPEC).unwrap();
        let mut out = StateBuilder::default();
        render(&spec, &mut out).unwrap();
        let path = crate::spec::AbsPath::try_from("/opt/bin/x").unwrap();
        out.asset_file("worker", path.clone(), "runc", None, Ownership::root(0o755))
            .unwrap();
        let err = out.finish().unwrap_err().to_string();
        assert!(
            err.contains("/opt/bin/x") && err.contains("\"runc\""),
            "{err}"
        );

        let mut out = StateBuilder::default();
        render(&spec, &mut out).unwrap();
        out.asset_file("worker", path, "containerd", None, Ownership::root(0o755))
            .unwrap();
        let err = out.finish().unwrap_err().to_string();
        assert!(err.contains("a member must be named"), "{err}");
    }

    #[test]
    fn the_same_path_from_two_components_conflicts() {
        let spec = NodeSpec::parse("spec", SPEC).unwrap();
        let mut out = StateBuilder::default();
        render(&spec, &mut out).unwrap();
        let err = out
            .asset_file(
                "kubelet",
                crate::spec::AbsPath::try_from("/usr/local/bin/kubelet").unwrap(),
                "kubelet",
                None,
                Ownership::root(0o755),
            )
            .unwrap_err()
            .to_string();
        assert!(err.contains("assets and kubelet"), "{err}");
    }
}
