//! The cluster kit against the emulator: runs the `nodewright-cluster` binary with the
//! emulator as its AWS, makes the network a Cluster file names (a VPC with a subnet per
//! zone), and deploys a rendered CloudFormation template into the emulator's
//! CloudFormation (its Query API, signed as the AWS CLI would).
//!
//! The emulator's gaps (moto 5.2.5), worked around here and never in the template:
//! - `AWS::ElasticLoadBalancingV2::Listener` with `Protocol: TCP` is refused (moto only
//!   knows HTTP and HTTPS listeners): [`for_emulator`] leaves the listeners out of the
//!   copy it deploys; cfn-lint checks them in the real template
//!   (`cluster/tests/cfn_lint.rs`).
//! - An `AWS::EC2::Volume`'s `Tags` are dropped: [`tag_etcd_volumes`] adds the tags the
//!   template gives each etcd volume after the stack is created.
//! - Instances an Auto Scaling group launches carry no instance profile.
//! - An `AWS::EC2::SecurityGroupIngress` for every protocol (`IpProtocol: "-1"`, or
//!   IP-in-IP's `"4"`) without ports (EC2 needs none) makes moto fail with a 500:
//!   [`for_emulator`] gives such rules `FromPort`/`ToPort` -1 in its copy.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use aws_sdk_ec2::types::Tag;

use crate::moto::{Moto, sdk_config_for};
use crate::runtime::block_on;
use crate::shim::{between, signed_query};

/// The kit's binary, run with the emulator as its AWS endpoint.
pub fn run(moto: &Moto, args: &[&str]) -> Output {
    Command::new(crate::tools::workspace_bin("nodewright-cluster"))
        .args(args)
        .env("AWS_ENDPOINT_URL", moto.url())
        .env("AWS_ACCESS_KEY_ID", "AKIAHARNESS")
        .env("AWS_SECRET_ACCESS_KEY", "harness-secret")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SESSION_TOKEN")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .expect("nodewright-cluster runs")
}

/// The kit's binary with an AWS endpoint where nothing listens.
pub fn kit_unreachable(args: &[&str]) -> Output {
    let port = crate::moto::free_port();
    Command::new(crate::tools::workspace_bin("nodewright-cluster"))
        .args(args)
        .env("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{port}"))
        .env("AWS_ACCESS_KEY_ID", "AKIAHARNESS")
        .env("AWS_SECRET_ACCESS_KEY", "harness-secret")
        .env("AWS_MAX_ATTEMPTS", "1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .expect("nodewright-cluster runs")
}

/// stdout and stderr of a run, for messages.
pub fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A run that must succeed; its stdout.
pub fn run_ok(moto: &Moto, args: &[&str]) -> String {
    let output = run(moto, args);
    assert!(
        output.status.success(),
        "nodewright-cluster {args:?}: {}",
        text(&output)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A VPC with one subnet per zone, in the emulator's region.
pub struct Network {
    pub vpc_id: String,
    pub cidr: String,
    /// (zone, subnet id)
    pub subnets: Vec<(String, String)>,
}

impl Network {
    pub fn create(moto: &Moto, cidr: &str, zones: &[&str]) -> Self {
        let ec2 = aws_sdk_ec2::Client::new(&sdk_config_for(moto.url()));
        let vpc = block_on(ec2.create_vpc().cidr_block(cidr).send()).expect("CreateVpc");
        let vpc_id = vpc
            .vpc()
            .and_then(|v| v.vpc_id())
            .expect("a VPC id")
            .to_owned();
        let base: Vec<u8> = cidr
            .split('/')
            .next()
            .unwrap_or_default()
            .split('.')
            .filter_map(|o| o.parse().ok())
            .collect();
        let subnets = zones
            .iter()
            .enumerate()
            .map(|(i, zone)| {
                let block = format!("{}.{}.{}.0/20", base[0], base[1], i * 16);
                let subnet = block_on(
                    ec2.create_subnet()
                        .vpc_id(&vpc_id)
                        .availability_zone(*zone)
                        .cidr_block(block)
                        .send(),
                )
                .expect("CreateSubnet");
                let id = subnet
                    .subnet()
                    .and_then(|s| s.subnet_id())
                    .expect("a subnet id")
                    .to_owned();
                ((*zone).to_owned(), id)
            })
            .collect();
        Self {
            vpc_id,
            cidr: cidr.to_owned(),
            subnets,
        }
    }
}

/// An example Cluster file with the emulator's VPC and subnets (and `bucket` as its
/// state store) in place of the example's ids.
pub fn cluster_file(example: &str, network: &Network, bucket: &str) -> String {
    let text = std::fs::read_to_string(crate::workspace().join("examples/cluster").join(example))
        .unwrap_or_else(|e| panic!("reading the example {example}: {e}"));
    // The emulator's region is us-east-1: examples in other regions move there first,
    // so their zones find the network's subnets.
    let mut text = text;
    for (from, to) in [("eu-west-1", "us-east-1"), ("us-west-2", "us-east-1")] {
        text = text.replace(from, to);
    }
    let mut out = String::new();
    let mut in_subnets = false;
    for line in text.lines() {
        let trimmed = line.trim_start();
        if let Some(rest) = trimmed.strip_prefix("vpcId: ") {
            out.push_str(&line.replace(rest, &network.vpc_id));
        } else if trimmed.starts_with("vpcCidr: ") {
            out.push_str(&format!("  vpcCidr: {}", network.cidr));
        } else if trimmed.starts_with("stateStore: ") {
            out.push_str(&format!("stateStore: s3://{bucket}"));
        } else if in_subnets && line.starts_with("    ") {
            let zone = trimmed.split(':').next().unwrap_or_default();
            let subnet = network
                .subnets
                .iter()
                .find(|(z, _)| z == zone)
                .map(|(_, s)| s.as_str())
                .unwrap_or_else(|| panic!("the network has no subnet in {zone}"));
            out.push_str(&format!("    {zone}: {subnet}"));
        } else {
            out.push_str(line);
        }
        if trimmed == "subnets:" || trimmed == "publicSubnets:" {
            in_subnets = true;
        } else if !line.starts_with("    ") {
            in_subnets = false;
        }
        out.push('\n');
    }
    out
}

/// Writes `text` as a file in `dir`; its path.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    path
}

/// The copy of a rendered template the emulator can deploy, and what was left out of
/// it (see the module's notes).
pub fn for_emulator(template: &str) -> (String, Vec<String>) {
    let mut value: serde_json::Value =
        yaml_serde::from_str(template).expect("the rendered template parses");
    let resources = value["Resources"]
        .as_object_mut()
        .expect("the template has resources");
    let listeners: Vec<String> = resources
        .iter()
        .filter(|(_, r)| r["Type"] == "AWS::ElasticLoadBalancingV2::Listener")
        .map(|(id, _)| id.clone())
        .collect();
    for id in &listeners {
        resources.remove(id);
    }
    for resource in resources.values_mut() {
        if resource["Type"] == "AWS::EC2::SecurityGroupIngress"
            && resource["Properties"].get("FromPort").is_none()
        {
            resource["Properties"]["FromPort"] = serde_json::json!(-1);
            resource["Properties"]["ToPort"] = serde_json::json!(-1);
        }
    }
    (
        serde_json::to_string(&value).expect("a template serializes"),
        listeners,
    )
}

/// A created stack: its name and its resources (logical id, type, physical id).
pub struct Stack {
    pub name: String,
    pub resources: Vec<(String, String, String)>,
}

impl Stack {
    pub fn physical(&self, logical: &str) -> &str {
        self.resources
            .iter()
            .find(|(id, _, _)| id == logical)
            .map(|(_, _, physical)| physical.as_str())
            .unwrap_or_else(|| panic!("the stack has no {logical}"))
    }

    pub fn of_type(&self, kind: &str) -> Vec<&(String, String, String)> {
        self.resources
            .iter()
            .filter(|(_, t, _)| t == kind)
            .collect()
    }
}

/// Creates the stack in the emulator (CreateStack, with the named-IAM capability the
/// template's named roles need) and waits for CREATE_COMPLETE.
pub fn deploy(moto: &Moto, name: &str, template: &str) -> Stack {
    signed_query(
        moto.url(),
        "cloudformation",
        &[
            ("Action", "CreateStack"),
            ("Version", "2010-05-15"),
            ("StackName", name),
            ("TemplateBody", template),
            ("Capabilities.member.1", "CAPABILITY_NAMED_IAM"),
        ],
        None,
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let xml = signed_query(
            moto.url(),
            "cloudformation",
            &[
                ("Action", "DescribeStacks"),
                ("Version", "2010-05-15"),
                ("StackName", name),
            ],
            None,
        );
        let status = between(&xml, "StackStatus");
        if status == "CREATE_COMPLETE" {
            break;
        }
        assert!(
            status.ends_with("IN_PROGRESS") && std::time::Instant::now() < deadline,
            "stack {name}: {status}: {xml}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let xml = signed_query(
        moto.url(),
        "cloudformation",
        &[
            ("Action", "DescribeStackResources"),
            ("Version", "2010-05-15"),
            ("StackName", name),
        ],
        None,
    );
    let resources = xml
        .split("<member>")
        .skip(1)
        .filter(|m| m.contains("<LogicalResourceId>"))
        .map(|m| {
            (
                between(m, "LogicalResourceId"),
                between(m, "ResourceType"),
                // The emulator gives some resources (security group rules) no
                // physical id.
                if m.contains("<PhysicalResourceId>") {
                    between(m, "PhysicalResourceId")
                } else {
                    String::new()
                },
            )
        })
        .collect();
    Stack {
        name: name.to_owned(),
        resources,
    }
}

/// The tags the template gives each etcd volume, added to the stack's volumes (the
/// emulator drops a volume's own tags).
pub fn tag_etcd_volumes(moto: &Moto, template: &str, stack: &Stack) -> usize {
    let value: serde_json::Value =
        yaml_serde::from_str(template).expect("the rendered template parses");
    let ec2 = aws_sdk_ec2::Client::new(&sdk_config_for(moto.url()));
    let mut tagged = 0;
    for (id, resource) in value["Resources"].as_object().expect("resources") {
        if resource["Type"] != "AWS::EC2::Volume" {
            continue;
        }
        let tags: Vec<Tag> = resource["Properties"]["Tags"]
            .as_array()
            .expect("volume tags")
            .iter()
            .map(|t| {
                Tag::builder()
                    .key(t["Key"].as_str().unwrap_or_default())
                    .value(t["Value"].as_str().unwrap_or_default())
                    .build()
            })
            .collect();
        block_on(
            ec2.create_tags()
                .resources(stack.physical(id))
                .set_tags(Some(tags))
                .send(),
        )
        .unwrap_or_else(|e| panic!("tagging {id}: {e:?}"));
        tagged += 1;
    }
    tagged
}

/// Object keys under `prefix` in `bucket`, sorted.
pub fn keys(moto: &Moto, bucket: &str, prefix: &str) -> Vec<String> {
    let s3 = moto.s3();
    let mut out: Vec<String> = block_on(async {
        s3.list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .send()
            .await
            .expect("ListObjectsV2")
            .contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_owned))
            .collect()
    });
    out.sort();
    out
}

/// An object's bytes.
pub fn get(moto: &Moto, bucket: &str, key: &str) -> Option<Vec<u8>> {
    let s3 = moto.s3();
    block_on(async {
        let object = s3.get_object().bucket(bucket).key(key).send().await.ok()?;
        Some(object.body.collect().await.ok()?.into_bytes().to_vec())
    })
}

pub fn create_bucket(moto: &Moto, bucket: &str) {
    let s3 = moto.s3();
    block_on(s3.create_bucket().bucket(bucket).send()).expect("CreateBucket");
}
