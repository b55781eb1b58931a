//! The booted Kubernetes worker: `tests/fixtures/booted-worker/nodespec.yaml` with
//! `kubernetes.yaml` beside it merged in (the API server, the cluster CA, Debian's
//! containerd baked into the image, the kubelet from the asset mirror), and the asset
//! mirror that serves the kubelet stand-in (`src/bin/kubelet-standin.rs`) with its real
//! sha256 at [`MIRROR_ADDR`] inside the fleet's network.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;

use crate::fleet::Fleet;
use crate::image::Recipe;
use crate::mirror::Mirror;
use crate::network::Service;

/// Where nodes reach the asset mirror.
pub const MIRROR_ADDR: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 3), 80);
/// The kubelet's path on the mirror, as on dl.k8s.io.
pub const KUBELET_PATH: &str = "/release/v1.33.4/bin/linux/amd64/kubelet";
/// What a worker booted from the state store adds: TLS bootstrapping with a token kept
/// as a secret file (never baked into an image).
pub const TLS_BOOTSTRAP: &str = "files:
  - path: /etc/kubernetes/bootstrap-token
    mode: \"0600\"
    secret: true
    content: \"07401b.f395accd246ae52d\\n\"
kubelet:
  tlsBootstrap:
    tokenFile: /etc/kubernetes/bootstrap-token
";

/// Where the stand-in records what it was given, on the node.
pub const STANDIN_RECORD: &str = "/var/lib/kubelet-standin/record.json";
/// The kubelet's health endpoint, on the node's loopback.
pub const HEALTHZ_PORT: u16 = 10248;

/// The image of booted workers: the default recipe, which has Debian's containerd
/// and runc. Every booted test uses it, so that they share one cached image.
pub fn recipe() -> Recipe {
    Recipe::default()
}

/// The stand-in binary of this build (`cargo build --workspace --bins` makes it).
pub fn standin_binary() -> PathBuf {
    crate::tools::workspace_bin("kubelet-standin")
}

/// The asset mirror of booted workers, serving the kubelet stand-in.
pub struct AssetMirror {
    pub mirror: Mirror,
    /// The mirror as nodes reach it, once [`AssetMirror::expose`]d in a fleet's
    /// network; [`Service::set_reachable`] takes it down.
    pub service: Option<Service>,
    pub kubelet_sha256: String,
}

impl AssetMirror {
    /// The mirror on the machine's loopback (where image builds reach it).
    pub fn start() -> Self {
        let binary = standin_binary();
        let bytes =
            std::fs::read(&binary).unwrap_or_else(|e| panic!("reading {}: {e}", binary.display()));
        let kubelet_sha256 = crate::assetkit::sha256(&bytes);
        let mirror = Mirror::start();
        mirror.put(KUBELET_PATH, bytes);
        Self {
            mirror,
            service: None,
            kubelet_sha256,
        }
    }

    /// Serves the mirror at [`MIRROR_ADDR`] in `fleet`'s network.
    pub fn expose(&mut self, fleet: &Fleet) {
        let target = self
            .mirror
            .base()
            .trim_start_matches("http://")
            .parse()
            .expect("the mirror listens on an address");
        self.service = Some(fleet.network.expose(MIRROR_ADDR, target));
    }

    /// Makes the mirror reachable from the fleet's nodes or not (connections refused).
    pub fn set_reachable(&self, reachable: bool) {
        self.service
            .as_ref()
            .expect("the mirror is exposed in a fleet")
            .set_reachable(reachable);
    }

    /// The kubelet's URL as nodes see it.
    pub fn kubelet_url(&self) -> String {
        format!("http://{MIRROR_ADDR}{KUBELET_PATH}")
    }

    /// The booted worker's node spec, naming this mirror's kubelet as nodes reach it.
    pub fn worker_spec(&self) -> Vec<u8> {
        worker_spec(&self.kubelet_url(), &self.kubelet_sha256)
    }

    /// [`AssetMirror::worker_spec`] for a worker booted from the state store: its
    /// kubelet joins by TLS bootstrapping (a bootstrap token in a secret file), the
    /// way in a worker without controller-shim has.
    pub fn s3_worker_spec(&self) -> Vec<u8> {
        crate::specs::extend(&self.worker_spec(), TLS_BOOTSTRAP)
    }

    /// The same spec as an image build sees it: the kubelet at the mirror's loopback
    /// address (the build runs in the machine's network, not the fleet's). The assets
    /// and files are the same bytes, so what it bakes is what a boot of
    /// [`AssetMirror::worker_spec`] wants.
    pub fn build_spec(&self) -> Vec<u8> {
        worker_spec(&self.mirror.url(KUBELET_PATH), &self.kubelet_sha256)
    }

    /// A recipe that prebakes [`AssetMirror::build_spec`] into the image, as a Packer
    /// build does: the spec from the state store (`fleet`'s emulator, which the build
    /// reaches on the machine's loopback), with the build's own credentials.
    pub fn prebake_recipe(&self, fleet: &Fleet) -> Recipe {
        let spec = self.build_spec();
        let (bucket, key) = ("nodewright-state", "prod.example.com/prebake/nodespec.yaml");
        fleet.moto.put_object(bucket, key, &spec);
        Recipe {
            prebake: Some((
                format!("s3://{bucket}/{key}"),
                vec![
                    "--sha256".to_owned(),
                    crate::assetkit::sha256(&spec),
                    "--region".to_owned(),
                    "us-east-1".to_owned(),
                ],
            )),
            build_env: vec![
                ("AWS_ENDPOINT_URL".to_owned(), fleet.moto.url().to_owned()),
                ("AWS_ACCESS_KEY_ID".to_owned(), "AKIDPACKERBUILD".to_owned()),
                (
                    "AWS_SECRET_ACCESS_KEY".to_owned(),
                    "packer-secret".to_owned(),
                ),
            ],
            ..recipe()
        }
    }
}

/// A fleet on the booted-worker image with the asset mirror in its network, or `None`
/// where booted nodes cannot run.
pub fn fleet() -> Option<(Fleet, AssetMirror)> {
    let mut mirror = AssetMirror::start();
    let fleet = Fleet::start_with(&recipe())?;
    mirror.expose(&fleet);
    Some((fleet, mirror))
}

/// The booted worker's node spec with the kubelet at `url` with digest `sha256`.
pub fn worker_spec(url: &str, sha256: &str) -> Vec<u8> {
    let dir = crate::workspace().join("tests/fixtures/booted-worker");
    let base = std::fs::read(dir.join("nodespec.yaml")).expect("the booted-worker spec");
    let extra = std::fs::read_to_string(dir.join("kubernetes.yaml"))
        .expect("the booted-worker Kubernetes sections")
        .replace("@KUBELET_URL@", url)
        .replace("@KUBELET_SHA256@", sha256);
    crate::specs::extend(&base, &extra)
}
