//! A control plane in the emulator: instances, etcd volumes backed by loop devices,
//! a hosted zone, and one agent (own root, own fake IMDS) per instance, all behind the
//! front with the fidelity layer. When the emulator reports a volume attached to an
//! instance, the volume's loop device appears in that node's root (see `disks`).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use aws_sdk_ec2::types::{Placement, ResourceType, Tag, TagSpecification};

use crate::agent::Agent;
use crate::disks::{self, LoopDisk};
use crate::fidelity::{Event, Fidelity};
use crate::front::AwsFront;
use crate::imds::{FakeImds, Instance};
use crate::moto::{Moto, sdk_config_for};
use crate::runtime::block_on;

pub const CLUSTER: &str = "prod.example.com";
pub const ZONE: &str = "us-east-1a";
pub const SPEC_BUCKET: &str = "nodewright-state";
pub const SPEC_KEY: &str = "prod.example.com/control-plane.yaml";

/// Which node root and which loop device go with which ids, for the attach listener.
#[derive(Default)]
struct Registry {
    roots: BTreeMap<String, PathBuf>,
    devices: BTreeMap<String, (u64, u64)>,
    next_node: BTreeMap<String, u32>,
}

pub struct Node {
    pub instance_id: String,
    pub private_ip: Ipv4Addr,
    pub imds: FakeImds,
    pub agent: Agent,
}

/// Fields drop in order: the disks (unmounted, detached) before the node roots; and
/// `Drop` unmounts devices the caller owns from the roots first.
pub struct ControlPlane {
    pub disks: BTreeMap<String, LoopDisk>,
    pub nodes: Vec<Node>,
    pub fidelity: Fidelity,
    pub front: AwsFront,
    pub moto: Moto,
    pub ec2: aws_sdk_ec2::Client,
    pub route53: aws_sdk_route53::Client,
    pub zone_id: String,
    registry: Arc<Mutex<Registry>>,
    image: String,
}

/// Options for the node spec the control plane's nodes boot from.
#[derive(Clone)]
pub struct SpecOptions {
    pub etcd_clusters: Vec<&'static str>,
    pub force_detach: bool,
    pub attach_deadline: u32,
    /// `route53`, `hosts`, `none`, or empty for no dns section.
    pub dns_mode: &'static str,
    pub load_balancer_ips: Vec<&'static str>,
}

impl Default for SpecOptions {
    fn default() -> Self {
        Self {
            etcd_clusters: vec!["main"],
            force_detach: false,
            attach_deadline: 60,
            dns_mode: "route53",
            load_balancer_ips: vec![],
        }
    }
}

impl ControlPlane {
    pub fn start() -> Self {
        let moto = Moto::start();
        let front = AwsFront::start(moto.url());
        let fidelity = Fidelity::install(&front);
        let config = sdk_config_for(&front.url());
        let ec2 = aws_sdk_ec2::Client::new(&config);
        let route53 = aws_sdk_route53::Client::new(&config);
        let image = first_image(&ec2);
        let zone_id = create_hosted_zone(&route53, CLUSTER, "harness");
        let registry: Arc<Mutex<Registry>> = Arc::default();
        let listener = registry.clone();
        fidelity.on_event(move |event| {
            let mut registry = listener.lock().expect("registry");
            match event {
                Event::Attached { instance, volume } => {
                    let (Some(root), Some(number)) = (
                        registry.roots.get(instance).cloned(),
                        registry.devices.get(volume).copied(),
                    ) else {
                        return;
                    };
                    let n = registry.next_node.entry(instance.clone()).or_insert(0);
                    *n += 1;
                    let name = format!("nvme{n}n1");
                    disks::expose(&root, volume, number, &name);
                }
                Event::Detached { instance, volume } => {
                    if let (Some(root), Some(number)) = (
                        registry.roots.get(instance).cloned(),
                        registry.devices.get(volume).copied(),
                    ) {
                        disks::unexpose(&root, volume, number);
                    }
                }
            }
        });
        Self {
            disks: BTreeMap::new(),
            nodes: Vec::new(),
            fidelity,
            front,
            moto,
            ec2,
            route53,
            zone_id,
            registry,
            image,
        }
    }

    /// Like [`add_volume`](Self::add_volume) for this cluster, backed by a device the
    /// caller owns.
    pub fn add_volume_on(
        &mut self,
        etcd_cluster: &str,
        member: &str,
        members: &str,
        zone: &str,
        number: (u64, u64),
    ) -> String {
        let id = self.add_volume(etcd_cluster, member, members, zone, CLUSTER, None);
        self.registry
            .lock()
            .expect("registry")
            .devices
            .insert(id.clone(), number);
        id
    }

    /// Unmounts every loop device mounted under a node root (before the roots go).
    pub fn unmount_all(&self) {
        let devices: Vec<(u64, u64)> = self
            .registry
            .lock()
            .expect("registry")
            .devices
            .values()
            .copied()
            .collect();
        for number in devices {
            for mount in disks::mount_points_of(number) {
                if self.nodes.iter().any(|n| mount.starts_with(n.agent.root())) {
                    let _ = std::process::Command::new("umount").arg(&mount).status();
                }
            }
        }
    }

    /// Publishes the node spec every node boots from.
    pub fn publish_spec(&self, options: &SpecOptions) -> Vec<u8> {
        let spec = spec_text(options, &self.zone_id);
        self.moto.put_object(SPEC_BUCKET, SPEC_KEY, spec.as_bytes());
        boot_config(spec.as_bytes()).into_bytes()
    }

    /// Launches an instance in `zone` with an agent for it; returns its index.
    pub fn add_node(&mut self, user_data: &[u8], zone: &str) -> usize {
        let instance_id = self.launch(zone, true);
        let private_ip = self.private_ip(&instance_id);
        let mut instance = Instance::example(&instance_id);
        instance.private_ip = private_ip;
        instance.availability_zone = zone.to_owned();
        let imds = FakeImds::start(instance, user_data);
        let agent = Agent::new(&imds.url(), &self.front.url());
        self.registry
            .lock()
            .expect("registry")
            .roots
            .insert(instance_id.clone(), agent.root().to_owned());
        self.nodes.push(Node {
            instance_id,
            private_ip,
            imds,
            agent,
        });
        self.nodes.len() - 1
    }

    /// Launches an instance (tagged as this cluster's control plane when `tagged`).
    pub fn launch(&self, zone: &str, tagged: bool) -> String {
        let mut request = self
            .ec2
            .run_instances()
            .image_id(&self.image)
            .instance_type(aws_sdk_ec2::types::InstanceType::M6iLarge)
            .min_count(1)
            .max_count(1)
            .placement(Placement::builder().availability_zone(zone).build());
        if tagged {
            request = request.tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::Instance)
                    .tags(tag(&format!("kubernetes.io/cluster/{CLUSTER}"), "owned"))
                    .tags(tag("k8s.io/role/control-plane", "1"))
                    .build(),
            );
        }
        let out = block_on(request.send()).expect("RunInstances");
        out.instances()[0]
            .instance_id()
            .expect("an instance id")
            .to_owned()
    }

    pub fn private_ip(&self, instance_id: &str) -> Ipv4Addr {
        let out = block_on(
            self.ec2
                .describe_instances()
                .instance_ids(instance_id)
                .send(),
        )
        .expect("DescribeInstances");
        out.reservations()[0].instances()[0]
            .private_ip_address()
            .and_then(|ip| ip.parse().ok())
            .expect("a private IP")
    }

    /// Creates an etcd volume `member/members` of `etcd_cluster`, backed by `disk` when
    /// given; `cluster` is the cluster tag (this cluster's, or another to test refusal).
    pub fn add_volume(
        &mut self,
        etcd_cluster: &str,
        member: &str,
        members: &str,
        zone: &str,
        cluster: &str,
        disk: Option<LoopDisk>,
    ) -> String {
        let id = create_etcd_volume(&self.ec2, zone, cluster, etcd_cluster, member, members);
        if let Some(disk) = disk {
            self.registry
                .lock()
                .expect("registry")
                .devices
                .insert(id.clone(), disk.number());
            self.disks.insert(id.clone(), disk);
        }
        id
    }

    /// Which instance EC2 (through the fidelity layer) says holds the volume.
    pub fn holder(&self, volume_id: &str) -> Option<String> {
        let out = block_on(self.ec2.describe_volumes().volume_ids(volume_id).send()).ok()?;
        out.volumes()[0]
            .attachments()
            .first()
            .and_then(|a| a.instance_id())
            .map(str::to_owned)
    }

    /// Route53's A records named `name`: (set identifier, values).
    pub fn records(&self, name: &str) -> Vec<(Option<String>, Vec<String>)> {
        a_records(&self.route53, &self.zone_id, name)
    }
}

/// The A records named `name` in hosted zone `zone_id`: (set identifier, values), sorted.
pub fn a_records(
    route53: &aws_sdk_route53::Client,
    zone_id: &str,
    name: &str,
) -> Vec<(Option<String>, Vec<String>)> {
    let out = block_on(
        route53
            .list_resource_record_sets()
            .hosted_zone_id(zone_id)
            .send(),
    )
    .expect("ListResourceRecordSets");
    let mut records: Vec<(Option<String>, Vec<String>)> = out
        .resource_record_sets()
        .iter()
        .filter(|r| r.name().trim_end_matches('.') == name && r.r#type().as_str() == "A")
        .map(|r| {
            (
                r.set_identifier().map(str::to_owned),
                r.resource_records()
                    .iter()
                    .map(|v| v.value().to_owned())
                    .collect(),
            )
        })
        .collect();
    records.sort();
    records
}

/// Creates an etcd volume as kops tags one: member `member` of `members` (`a` of
/// `a,b,c`) of etcd cluster `etcd_cluster` of `cluster`, in `zone`. Returns its id.
pub fn create_etcd_volume(
    ec2: &aws_sdk_ec2::Client,
    zone: &str,
    cluster: &str,
    etcd_cluster: &str,
    member: &str,
    members: &str,
) -> String {
    let out = block_on(
        ec2.create_volume()
            .availability_zone(zone)
            .size(1)
            .tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::Volume)
                    .tags(tag(&format!("kubernetes.io/cluster/{cluster}"), "owned"))
                    .tags(tag("k8s.io/role/control-plane", "1"))
                    .tags(tag(
                        &format!("k8s.io/etcd/{etcd_cluster}"),
                        &format!("{member}/{members}"),
                    ))
                    .build(),
            )
            .send(),
    )
    .expect("CreateVolume");
    out.volume_id().expect("a volume id").to_owned()
}

/// Creates the hosted zone `name`; returns its id (without `/hostedzone/`).
pub fn create_hosted_zone(
    route53: &aws_sdk_route53::Client,
    name: &str,
    reference: &str,
) -> String {
    let zone = block_on(
        route53
            .create_hosted_zone()
            .name(name)
            .caller_reference(reference)
            .send(),
    )
    .expect("a hosted zone");
    zone.hosted_zone()
        .map(|z| z.id().trim_start_matches("/hostedzone/").to_owned())
        .expect("a zone id")
}

/// The emulator's first AMI.
pub fn first_image(ec2: &aws_sdk_ec2::Client) -> String {
    block_on(ec2.describe_images().send())
        .expect("moto lists images")
        .images()
        .first()
        .and_then(|i| i.image_id())
        .expect("an image")
        .to_owned()
}

pub fn tag(key: &str, value: &str) -> Tag {
    Tag::builder().key(key).value(value).build()
}

pub fn spec_text(options: &SpecOptions, zone_id: &str) -> String {
    let mut text = format!(
        "apiVersion: nodewright.io/v1alpha1
kind: NodeSpec
cluster:
  name: {CLUSTER}
  kubernetesVersion: 1.33.4
  serviceCidr: 100.64.0.0/13
  podCidr: 100.96.0.0/11
  dnsIp: 100.64.0.10
role: control-plane
controlPlane:
  watch:
    intervalSeconds: 3600
"
    );
    if !options.etcd_clusters.is_empty() {
        text.push_str(&format!(
            "  etcdVolumes:
    clusters: [{}]
    forceDetach: {}
    attachDeadlineSeconds: {}
",
            options.etcd_clusters.join(", "),
            if options.force_detach {
                "stoppedOrTerminated"
            } else {
                "never"
            },
            options.attach_deadline
        ));
    }
    match options.dns_mode {
        "" => {}
        "route53" => text.push_str(&format!(
            "  dns:\n    mode: route53\n    hostedZoneId: {zone_id}\n    ttl: 30\n"
        )),
        "none" => text.push_str(&format!(
            "  dns:\n    mode: none\n    loadBalancerIps: [{}]\n",
            options.load_balancer_ips.join(", ")
        )),
        mode => text.push_str(&format!("  dns:\n    mode: {mode}\n")),
    }
    text
}

pub fn boot_config(spec: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    format!(
        "apiVersion: nodewright.io/v1alpha1
kind: BootConfig
clusterName: {CLUSTER}
nodeGroup: control-plane-us-east-1a
role: control-plane
nodeSpec:
  url: s3://{SPEC_BUCKET}/{SPEC_KEY}
  sha256: {}
",
        hex::encode(Sha256::digest(spec))
    )
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.unmount_all();
    }
}
