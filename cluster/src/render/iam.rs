//! Least-privilege IAM policies, one per role, from the AWS calls nodewright and
//! controller-shim make (`agent/src/cloud/`, `agent/src/source/`, `agent/src/assets/`,
//! `controller-shim/src/server/`):
//!
//! | who | call | why |
//! |---|---|---|
//! | agent, control plane | s3:GetObject | its spec (`nodegroups/control-plane/nodespec/<sha256>.yaml`), the PKI (`pki/`) |
//! | agent, control plane | ec2:DescribeVolumes, ec2:DescribeInstances | finding its etcd volume, its peers |
//! | agent, control plane | ec2:AttachVolume | claiming an etcd volume (tagged for the cluster and the control plane) |
//! | agent, control plane | route53:ChangeResourceRecordSets, route53:ListResourceRecordSets | publishing the API and etcd peer names (`route53` mode only) |
//! | controller-shim | s3:GetObject | the node-group definitions, the workers' specs |
//! | controller-shim | s3:GetObject, s3:PutObject, s3:ListBucket | its bootstrap records (`controller-shim/nodes/`) |
//! | controller-shim | ec2:DescribeInstances | confirming a bootstrapping instance |
//! | kubelet's ecr-credential-provider, every node | ecr:GetAuthorizationToken and the pull calls | images from ECR |
//! | agent, every node | s3:GetObject | assets from an `s3://` mirror, if the Cluster names one |
//!
//! Workers that bootstrap through controller-shim read nothing in the state store.
//! `Describe*` calls cannot be limited to resources (EC2 has no resource-level
//! permissions for them), so they are `*`.

use serde_json::{Value, json};

use super::specs::StoreLayout;
use crate::file::{Bootstrap, Cluster, NodeGroup};

/// The partition of a region's ARNs.
pub fn partition(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else {
        "aws"
    }
}

fn document(statements: Vec<Value>) -> Value {
    json!({"Version": "2012-10-17", "Statement": statements})
}

struct Arns<'a> {
    partition: &'static str,
    region: &'a str,
    bucket: String,
    prefix: String,
}

impl<'a> Arns<'a> {
    fn new(cluster: &'a Cluster) -> Self {
        let layout = StoreLayout::of(cluster);
        Self {
            partition: partition(&cluster.region),
            region: &cluster.region,
            bucket: layout.bucket,
            prefix: layout.prefix,
        }
    }
    fn object(&self, key: &str) -> String {
        format!(
            "arn:{}:s3:::{}/{}{key}",
            self.partition, self.bucket, self.prefix
        )
    }
    fn bucket(&self) -> String {
        format!("arn:{}:s3:::{}", self.partition, self.bucket)
    }
    fn ec2(&self, kind: &str) -> String {
        format!("arn:{}:ec2:{}:*:{kind}/*", self.partition, self.region)
    }
}

/// Statements every node's role has: pulling images from ECR with the kubelet's
/// credential provider, and reading assets from an `s3://` mirror.
fn common(cluster: &Cluster, arns: &Arns) -> Vec<Value> {
    let mut out = vec![
        json!({
            "Sid": "EcrCredentialProviderToken",
            "Effect": "Allow",
            "Action": ["ecr:GetAuthorizationToken"],
            "Resource": "*",
        }),
        json!({
            "Sid": "EcrPullImages",
            "Effect": "Allow",
            "Action": [
                "ecr:BatchCheckLayerAvailability",
                "ecr:BatchGetImage",
                "ecr:GetDownloadUrlForLayer",
            ],
            "Resource": format!("arn:{}:ecr:*:*:repository/*", arns.partition),
        }),
    ];
    let mirrors: Vec<String> = cluster
        .assets
        .mirrors
        .iter()
        .flat_map(|m| &m.mirrors)
        .filter_map(|url| url.as_str().strip_prefix("s3://"))
        .map(|rest| format!("arn:{}:s3:::{rest}*", arns.partition))
        .collect();
    if !mirrors.is_empty() {
        out.push(json!({
            "Sid": "ReadAssetMirror",
            "Effect": "Allow",
            "Action": ["s3:GetObject"],
            "Resource": mirrors,
        }));
    }
    out
}

/// The control-plane role's policy.
pub fn control_plane(cluster: &Cluster) -> Value {
    let arns = Arns::new(cluster);
    let cluster_tag = format!("aws:ResourceTag/kubernetes.io/cluster/{}", cluster.name);
    let owned = json!({
        "StringEquals": {
            cluster_tag: "owned",
            "aws:ResourceTag/k8s.io/role/control-plane": "1",
        }
    });
    let mut statements = vec![
        json!({
            "Sid": "ReadSpecsAndPki",
            "Effect": "Allow",
            "Action": ["s3:GetObject"],
            "Resource": [
                arns.object("nodegroups/*"),
                arns.object("pki/*"),
                arns.object("controller-shim/node-groups.yaml"),
            ],
        }),
        json!({
            "Sid": "ControllerShimRecords",
            "Effect": "Allow",
            "Action": ["s3:GetObject", "s3:PutObject"],
            "Resource": arns.object("controller-shim/nodes/*"),
        }),
        // The shim lists its records; and only with ListBucket does S3 answer a missing
        // record (a first bootstrap) with 404 rather than 403.
        json!({
            "Sid": "ControllerShimListRecords",
            "Effect": "Allow",
            "Action": ["s3:ListBucket"],
            "Resource": arns.bucket(),
        }),
        json!({
            "Sid": "DiscoverVolumesAndPeers",
            "Effect": "Allow",
            "Action": ["ec2:DescribeInstances", "ec2:DescribeVolumes"],
            "Resource": "*",
        }),
        json!({
            "Sid": "AttachEtcdVolumes",
            "Effect": "Allow",
            "Action": ["ec2:AttachVolume"],
            "Resource": arns.ec2("volume"),
            "Condition": owned,
        }),
        json!({
            "Sid": "AttachToControlPlaneInstances",
            "Effect": "Allow",
            "Action": ["ec2:AttachVolume"],
            "Resource": arns.ec2("instance"),
            "Condition": owned,
        }),
    ];
    if let Some(zone) = &cluster.dns.private_zone_id {
        let domain = internal_domain(cluster);
        statements.push(json!({
            "Sid": "ListControlPlaneNames",
            "Effect": "Allow",
            "Action": ["route53:ListResourceRecordSets"],
            "Resource": format!("arn:{}:route53:::hostedzone/{zone}", arns.partition),
        }));
        statements.push(json!({
            "Sid": "PublishControlPlaneNames",
            "Effect": "Allow",
            "Action": ["route53:ChangeResourceRecordSets"],
            "Resource": format!("arn:{}:route53:::hostedzone/{zone}", arns.partition),
            "Condition": {
                "ForAllValues:StringLike": {
                    "route53:ChangeResourceRecordSetsNormalizedRecordNames": [
                        cluster.internal_api_name(),
                        format!("etcd-*.{domain}"),
                    ],
                },
            },
        }));
    }
    statements.extend(common(cluster, &arns));
    document(statements)
}

/// The domain of the etcd peer names (the agent's default: `internal.<cluster>`).
pub fn internal_domain(cluster: &Cluster) -> String {
    format!("internal.{}", cluster.name)
}

/// A worker group's role's policy.
pub fn worker(cluster: &Cluster, group: &NodeGroup) -> Value {
    let arns = Arns::new(cluster);
    let mut statements = Vec::new();
    if group.bootstrap == Bootstrap::StateStore {
        statements.push(json!({
            "Sid": "ReadOwnSpecs",
            "Effect": "Allow",
            "Action": ["s3:GetObject"],
            "Resource": arns.object(&format!("nodegroups/{}/nodespec/*", group.name)),
        }));
    }
    statements.extend(common(cluster, &arns));
    document(statements)
}

/// The trust policy of every node role: EC2 instances may assume it.
pub fn ec2_trust() -> Value {
    document(vec![json!({
        "Effect": "Allow",
        "Principal": {"Service": "ec2.amazonaws.com"},
        "Action": "sts:AssumeRole",
    })])
}
