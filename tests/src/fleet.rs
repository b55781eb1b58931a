//! A fleet of booted nodes in one emulated AWS account: the baked image, the AWS
//! emulator behind the fault-injecting front, one private network where the emulator
//! answers at [`crate::network::AWS_ADDR`], and the nodes launched into it.
//!
//! Where booted nodes cannot run (not root, no systemd-nspawn...), [`Fleet::start`]
//! says why and returns `None`, and the test skips; with `NODEWRIGHT_REQUIRE_ALL=1`
//! (set by scripts/test.sh, so CI) it fails instead.
//!
//! Extension points for the later end-to-end tests:
//! - more services in the network: [`Network::expose`] (an asset mirror serving the
//!   kubelet stand-in; controller-shim when it runs outside the nodes);
//! - image variants: [`Recipe`] (`extra_packages` for containerd and etcd from Debian,
//!   `prebake` for a baked-vs-not-baked comparison);
//! - several nodes at once ([`Fleet::launch`] as often as needed; they share the
//!   network and reach each other on 10.0.1.x), replacement ([`Fleet::terminate`] then
//!   launch again), and a node's disks ([`Node::path`] for loop devices bound in).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use crate::front::AwsFront;
use crate::image::{Image, Recipe};
use crate::imds::Instance;
use crate::moto::Moto;
use crate::network::{AWS_ADDR, Network, Service};
use crate::node::{Launch, Node};

pub struct Fleet {
    pub moto: Moto,
    pub front: AwsFront,
    pub network: Network,
    /// The AWS endpoint as nodes see it; [`Service::set_reachable`] cuts it off.
    pub aws: Service,
    image: Arc<Image>,
    launched: u32,
}

/// Why booted nodes cannot run on this machine, if they cannot.
pub fn unsupported() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some(
            "booted nodes need root (network namespaces, overlay mounts, systemd-nspawn)"
                .to_owned(),
        );
    }
    for tool in [
        "systemd-nspawn",
        "debootstrap",
        "unshare",
        "nsenter",
        "ip",
        "journalctl",
        "sha256sum",
    ] {
        if !crate::tools::on_path(tool) {
            return Some(format!(
                "{tool} is missing (scripts/setup.sh installs what booted nodes need)"
            ));
        }
    }
    let filesystems = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if !filesystems
        .lines()
        .any(|l| l.trim_end().ends_with("overlay"))
    {
        return Some("the kernel has no overlay filesystem".to_owned());
    }
    None
}

/// Whether booted nodes can run here. If not, prints why (the test then skips), or
/// fails when `NODEWRIGHT_REQUIRE_ALL` says they must.
pub fn supported_or_skip() -> bool {
    let Some(reason) = unsupported() else {
        return true;
    };
    assert!(
        std::env::var_os("NODEWRIGHT_REQUIRE_ALL").is_none(),
        "booted-node tests are required here (NODEWRIGHT_REQUIRE_ALL) but cannot run: {reason}"
    );
    eprintln!("skipped: {reason}");
    false
}

impl Fleet {
    /// A fleet on the default image, or `None` (with the reason printed) where booted
    /// nodes cannot run.
    pub fn start() -> Option<Self> {
        Self::start_with(&Recipe::default())
    }

    pub fn start_with(recipe: &Recipe) -> Option<Self> {
        if !supported_or_skip() {
            return None;
        }
        let image = Arc::new(Image::bake(recipe, &crate::image::node_binary()));
        let moto = Moto::start();
        let front = AwsFront::start(moto.url());
        let network = Network::create();
        let aws = network.expose(AWS_ADDR, front.addr());
        Some(Self {
            moto,
            front,
            network,
            aws,
            image,
            launched: 0,
        })
    }

    pub fn image(&self) -> &Image {
        &self.image
    }

    /// The next instance: a fresh id and the next address in the subnet.
    pub fn next_instance(&self) -> Instance {
        let n = self.launched + 1;
        let mut instance = Instance::example(&format!("i-0b{n:015x}"));
        instance.private_ip = Ipv4Addr::new(10, 0, 1, 9 + n as u8);
        instance.mac = format!("0e:00:00:00:01:{:02x}", 9 + n);
        instance
    }

    /// What every node's boot unit gets in `/etc/default/nodewright`: the AWS endpoint
    /// inside this network (the real endpoints are unreachable from it).
    pub fn environment(&self) -> BTreeMap<String, String> {
        BTreeMap::from([("AWS_ENDPOINT_URL".to_owned(), self.aws.url())])
    }

    /// Launches the next instance with `user_data`.
    pub fn launch(&mut self, user_data: &[u8]) -> Node {
        let launch = Launch {
            instance: self.next_instance(),
            user_data: user_data.to_vec(),
            environment: self.environment(),
        };
        self.launch_with(launch)
    }

    pub fn launch_with(&mut self, launch: Launch) -> Node {
        let image = self.image.clone();
        self.launch_on(image, launch)
    }

    /// Another image for this fleet (e.g. a prebaked one, to compare with the first).
    pub fn bake(&self, recipe: &Recipe) -> Arc<Image> {
        Arc::new(Image::bake(recipe, &crate::image::node_binary()))
    }

    /// Launches an instance of `image` (from [`Fleet::bake`]).
    pub fn launch_on(&mut self, image: Arc<Image>, launch: Launch) -> Node {
        self.launched += 1;
        let name = format!("n{}", self.launched);
        Node::launch(&name, image, &self.network, launch)
    }

    /// Terminates a node: it is powered off and its disk and network go.
    pub fn terminate(&mut self, mut node: Node) {
        node.shutdown();
        drop(node);
    }

    /// Publishes a node spec at the `s3://` location a boot config names.
    pub fn publish(&self, user_data: &[u8], spec: &[u8]) {
        let (bucket, key) = crate::world::spec_location(user_data)
            .expect("the boot config names an s3:// node spec");
        self.moto.put_object(&bucket, &key, spec);
    }
}

/// EC2 user data for a node of `cluster`: a boot config naming the node spec at `url`
/// with the sha256 of `spec`.
pub fn boot_config(cluster: &str, node_group: &str, role: &str, url: &str, spec: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    format!(
        "apiVersion: nodewright.io/v1alpha1\n\
         kind: BootConfig\n\
         clusterName: {cluster}\n\
         nodeGroup: {node_group}\n\
         role: {role}\n\
         nodeSpec:\n  \
           url: {url}\n  \
           sha256: {}\n",
        hex::encode(sha2::Sha256::digest(spec))
    )
    .into_bytes()
}
