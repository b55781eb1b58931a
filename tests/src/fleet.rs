//! A fleet of booted nodes in one emulated AWS account: the baked image, the AWS
//! emulator behind the fault-injecting front, one private network where the emulator
//! answers at [`crate::network::AWS_ADDR`], and the nodes launched into it.
//!
//! Where booted nodes cannot run (not root, no systemd-nspawn...), [`Fleet::start`]
//! says why and returns `None`, and the test skips; with `NODEWRIGHT_REQUIRE_ALL=1`
//! (set by scripts/test.sh, so CI) it fails instead.
//!
//! Instances are run in the emulator's EC2 at their fleet addresses (10.0.1.10, .11, ...)
//! with the tags a test gives, and the VPC's resolver ([`crate::vpc_dns`]) answers the
//! emulator's Route53 records inside the network, as on EC2.
//!
//! Extension points:
//! - more services in the network: [`Network::expose`] (the asset mirror);
//! - image variants: [`Recipe`] (`extra_packages` from Debian, `prebake` for a
//!   baked-vs-not-baked comparison);
//! - several nodes at once ([`Fleet::launch`] as often as needed; they share the
//!   network and reach each other on 10.0.1.x), replacement ([`Fleet::terminate`] then
//!   launch again), and volumes that attach when the emulator says so
//!   ([`Fleet::launch_with_bay`], as [`crate::ha`] does).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use aws_sdk_ec2::types::{ResourceType, Tag, TagSpecification};

use crate::front::AwsFront;
use crate::image::{Image, Recipe};
use crate::imds::Instance;
use crate::moto::{Moto, sdk_config_for};
use crate::network::{AWS_ADDR, Network, Service};
use crate::node::{DeviceBay, Launch, Node};
use crate::runtime::block_on;
use crate::vpc_dns::VpcResolver;

pub struct Fleet {
    pub moto: Moto,
    pub front: AwsFront,
    pub network: Network,
    /// The AWS endpoint as nodes see it; [`Service::set_reachable`] cuts it off.
    pub aws: Service,
    /// The VPC's DNS resolver: Route53's records resolve on every node.
    pub resolver: VpcResolver,
    /// EC2 in the emulator, called directly (not through the front).
    pub ec2: aws_sdk_ec2::Client,
    image: Arc<Image>,
    /// The emulator's AMI and the subnet instances run in.
    ami: String,
    subnet: String,
    /// Instances run so far (addresses 10.0.1.10 onwards), and nodes launched.
    instances: u32,
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
        let config = sdk_config_for(moto.url());
        let resolver = VpcResolver::start(&network, aws_sdk_route53::Client::new(&config));
        let ec2 = aws_sdk_ec2::Client::new(&config);
        let (ami, subnet) = vpc(&ec2);
        Some(Self {
            moto,
            front,
            network,
            aws,
            resolver,
            ec2,
            image,
            ami,
            subnet,
            instances: 0,
            launched: 0,
        })
    }

    pub fn image(&self) -> &Image {
        &self.image
    }

    /// The next instance, run in the emulator's EC2 (so the agent's and the shim's
    /// EC2 calls know it) at the next address in the subnet: 10.0.1.10, .11, ...
    pub fn next_instance(&mut self) -> Instance {
        self.next_instance_tagged(&[])
    }

    /// Like [`Fleet::next_instance`], with instance tags (the control plane's role
    /// tags, a node group).
    pub fn next_instance_tagged(&mut self, tags: &[(&str, &str)]) -> Instance {
        self.instances += 1;
        let n = self.instances;
        let address = Ipv4Addr::new(10, 0, 1, 9 + n as u8);
        let mut request = self
            .ec2
            .run_instances()
            .image_id(&self.ami)
            .instance_type(aws_sdk_ec2::types::InstanceType::M6iLarge)
            .min_count(1)
            .max_count(1)
            .subnet_id(&self.subnet)
            .private_ip_address(address.to_string());
        if !tags.is_empty() {
            let mut spec = TagSpecification::builder().resource_type(ResourceType::Instance);
            for (key, value) in tags {
                spec = spec.tags(Tag::builder().key(*key).value(*value).build());
            }
            request = request.tag_specifications(spec.build());
        }
        let out = block_on(request.send()).expect("RunInstances in the emulator");
        let id = out.instances()[0]
            .instance_id()
            .expect("an instance id")
            .to_owned();
        let mut instance = Instance::example(&id);
        instance.private_ip = address;
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

    /// Launches an instance whose volumes attach through `devices` (see
    /// [`crate::ha`]).
    pub fn launch_with_bay(&mut self, launch: Launch, devices: DeviceBay) -> Node {
        self.launched += 1;
        let name = format!("n{}", self.launched);
        Node::launch_with_bay(&name, self.image.clone(), &self.network, launch, devices)
    }

    /// Terminates a node as EC2 does: it is powered off, then the instance is
    /// terminated in EC2 (through the front, so its volumes detach), and its disk and
    /// network go.
    pub fn terminate(&mut self, mut node: Node) {
        node.shutdown();
        let ec2 = aws_sdk_ec2::Client::new(&sdk_config_for(&self.front.url()));
        block_on(
            ec2.terminate_instances()
                .instance_ids(node.instance().instance_id)
                .send(),
        )
        .expect("TerminateInstances");
        drop(node);
    }

    /// Publishes a node spec at the `s3://` location a boot config names.
    pub fn publish(&self, user_data: &[u8], spec: &[u8]) {
        let (bucket, key) = crate::world::spec_location(user_data)
            .expect("the boot config names an s3:// node spec");
        self.moto.put_object(&bucket, &key, spec);
    }
}

/// The emulator's first AMI, and a VPC 10.0.0.0/16 with one subnet in the nodes' zone
/// (so instances get the addresses they have in the fleet's network).
fn vpc(ec2: &aws_sdk_ec2::Client) -> (String, String) {
    let ami = crate::cluster::first_image(ec2);
    let vpc = block_on(ec2.create_vpc().cidr_block("10.0.0.0/16").send())
        .expect("CreateVpc")
        .vpc()
        .and_then(|v| v.vpc_id())
        .expect("a vpc id")
        .to_owned();
    let zone = Instance::example("i-0").availability_zone;
    let subnet = block_on(
        ec2.create_subnet()
            .vpc_id(vpc)
            .cidr_block("10.0.0.0/16")
            .availability_zone(zone)
            .send(),
    )
    .expect("CreateSubnet")
    .subnet()
    .and_then(|s| s.subnet_id())
    .expect("a subnet id")
    .to_owned();
    (ami, subnet)
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
