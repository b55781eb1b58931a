//! The CloudFormation template: IAM roles and instance profiles, security groups,
//! launch templates (user data, IMDSv2 required, hop limit 1), Auto Scaling groups per
//! group and zone, the API's network load balancer, the etcd volumes tagged as the agent
//! claims them, and (without a private zone of the user's) the private hosted zone.
//!
//! Everything is named from the Cluster file; nothing is a parameter, so the template is
//! a pure function of the render. Logical ids are stable across renders: a stack update
//! changes exactly what the Cluster file changed.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::iam;
use crate::file::{CONTROL_PLANE_GROUP, Cluster, Image, IpFamily, LoadBalancerScheme, NodeGroup};
use nodewright_shim::protocol::DEFAULT_PORT as SHIM_PORT;

/// What the template needs besides the Cluster file: each group's user data.
pub struct GroupData<'a> {
    pub name: &'a str,
    pub user_data: &'a str,
}

/// `us-east-1a` → `UsEast1a`, `gpu-nodes` → `GpuNodes`: a logical id part.
pub fn logical(name: &str) -> String {
    name.split(['-', '.'])
        .filter(|p| !p.is_empty())
        .map(|p| {
            let mut chars = p.chars();
            chars
                .next()
                .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect()
}

fn reference(id: &str) -> Value {
    json!({ "Ref": id })
}

fn attribute(id: &str, name: &str) -> Value {
    json!({ "Fn::GetAtt": [id, name] })
}

/// CloudFormation's `Tags` list, sorted by key.
fn tags(pairs: &BTreeMap<String, String>) -> Value {
    Value::Array(
        pairs
            .iter()
            .map(|(k, v)| json!({"Key": k, "Value": v}))
            .collect(),
    )
}

struct Template<'a> {
    cluster: &'a Cluster,
    resources: Map<String, Value>,
    outputs: Map<String, Value>,
}

const CONTROL_PLANE_SG: &str = "ControlPlaneSecurityGroup";
const NODE_SG: &str = "NodeSecurityGroup";
const LB_SG: &str = "ApiLoadBalancerSecurityGroup";
const LOAD_BALANCER: &str = "ApiLoadBalancer";
const API_TARGETS: &str = "ApiTargetGroup";
const SHIM_TARGETS: &str = "ControllerShimTargetGroup";
const INTERNAL_ZONE: &str = "InternalHostedZone";

impl Template<'_> {
    fn add(&mut self, id: &str, kind: &str, properties: Value) -> &mut Map<String, Value> {
        self.resources.insert(
            id.to_owned(),
            json!({"Type": kind, "Properties": properties}),
        );
        self.resources
            .get_mut(id)
            .and_then(Value::as_object_mut)
            .expect("just inserted")
    }

    /// The cluster's own tags plus `extra`.
    fn tags_with(&self, extra: &[(&str, &str)]) -> BTreeMap<String, String> {
        let mut out = self.cluster.tags.clone();
        out.insert(
            format!("kubernetes.io/cluster/{}", self.cluster.name),
            "owned".to_owned(),
        );
        for (k, v) in extra {
            out.insert((*k).to_owned(), (*v).to_owned());
        }
        out
    }

    fn role(&mut self, id: &str, name: &str, policy: Value) {
        let tags = tags(&self.tags_with(&[]));
        self.add(
            &format!("{id}Role"),
            "AWS::IAM::Role",
            json!({
                "RoleName": name,
                "Description": format!("nodewright nodes of {}", self.cluster.name),
                "AssumeRolePolicyDocument": iam::ec2_trust(),
                "Policies": [{"PolicyName": "nodewright", "PolicyDocument": policy}],
                "Tags": tags,
            }),
        );
        self.add(
            &format!("{id}InstanceProfile"),
            "AWS::IAM::InstanceProfile",
            json!({
                "InstanceProfileName": name,
                "Roles": [reference(&format!("{id}Role"))],
            }),
        );
    }

    fn security_groups(&mut self) {
        let name = self.cluster.name.to_string();
        let vpc = self.cluster.network.vpc_id.clone();
        for (id, short, what) in [
            (CONTROL_PLANE_SG, "control-plane", "control-plane nodes"),
            (NODE_SG, "nodes", "worker nodes"),
            (LB_SG, "api-load-balancer", "the API load balancer"),
        ] {
            let tags = tags(&self.tags_with(&[("Name", &format!("{short}.{name}"))]));
            self.add(
                id,
                "AWS::EC2::SecurityGroup",
                json!({
                    "GroupDescription": format!("nodewright: {what} of {name}"),
                    "VpcId": vpc,
                    "Tags": tags,
                }),
            );
        }
        let api = self.cluster.api.port;
        // Who may reach the load balancer: the VPC unless the Cluster says.
        let mut allowed = self.cluster.api.load_balancer.allowed_cidrs.clone();
        if allowed.is_empty() {
            allowed.push(self.cluster.network.vpc_cidr);
            allowed.extend(self.cluster.network.vpc_ipv6_cidr);
        }
        for (i, cidr) in allowed.iter().enumerate() {
            let source = if cidr.addr().is_ipv4() {
                ("CidrIp", cidr.to_string())
            } else {
                ("CidrIpv6", cidr.to_string())
            };
            for (port, what) in [(api, "Api"), (SHIM_PORT, "ControllerShim")] {
                let mut rule = json!({
                    "GroupId": reference(LB_SG),
                    "IpProtocol": "tcp",
                    "FromPort": port,
                    "ToPort": port,
                    "Description": format!("{what} through the load balancer"),
                });
                rule[source.0] = json!(source.1);
                self.add(
                    &format!("LoadBalancer{what}FromAllowed{i}"),
                    "AWS::EC2::SecurityGroupIngress",
                    rule,
                );
            }
        }
        let rules: [(&str, &str, &str, &str, i64, i64, &str); 15] = [
            // (id, to group, from group, protocol, from port, to port, why)
            (
                "ControlPlaneApiFromLoadBalancer",
                CONTROL_PLANE_SG,
                LB_SG,
                "tcp",
                api.into(),
                api.into(),
                "API through the load balancer",
            ),
            (
                "ControlPlaneShimFromLoadBalancer",
                CONTROL_PLANE_SG,
                LB_SG,
                "tcp",
                SHIM_PORT.into(),
                SHIM_PORT.into(),
                "controller-shim through the load balancer",
            ),
            (
                "ControlPlaneApiFromNodes",
                CONTROL_PLANE_SG,
                NODE_SG,
                "tcp",
                api.into(),
                api.into(),
                "API from the workers",
            ),
            (
                "ControlPlaneShimFromNodes",
                CONTROL_PLANE_SG,
                NODE_SG,
                "tcp",
                SHIM_PORT.into(),
                SHIM_PORT.into(),
                "controller-shim from bootstrapping workers",
            ),
            (
                "ControlPlaneApiFromControlPlane",
                CONTROL_PLANE_SG,
                CONTROL_PLANE_SG,
                "tcp",
                api.into(),
                api.into(),
                "API between control-plane nodes",
            ),
            (
                "ControlPlaneEtcdPeers",
                CONTROL_PLANE_SG,
                CONTROL_PLANE_SG,
                "tcp",
                2380,
                2381,
                "etcd peers (main, events): control plane only",
            ),
            (
                "ControlPlaneEtcdClients",
                CONTROL_PLANE_SG,
                CONTROL_PLANE_SG,
                "tcp",
                4001,
                4002,
                "etcd clients (main, events): control plane only",
            ),
            (
                "ControlPlaneKubelet",
                CONTROL_PLANE_SG,
                CONTROL_PLANE_SG,
                "tcp",
                10250,
                10250,
                "kubelet from the API servers",
            ),
            (
                "NodeKubeletFromControlPlane",
                NODE_SG,
                CONTROL_PLANE_SG,
                "tcp",
                10250,
                10250,
                "kubelet from the API servers",
            ),
            // The pod network (any CNI): everything between nodes, except that workers
            // never reach etcd's ports on the control plane.
            (
                "NodePodNetworkFromNodes",
                NODE_SG,
                NODE_SG,
                "-1",
                -1,
                -1,
                "pod network between workers",
            ),
            (
                "NodePodNetworkFromControlPlane",
                NODE_SG,
                CONTROL_PLANE_SG,
                "-1",
                -1,
                -1,
                "pod network from the control plane",
            ),
            (
                "ControlPlanePodNetworkTcpBelowEtcd",
                CONTROL_PLANE_SG,
                NODE_SG,
                "tcp",
                1,
                2379,
                "pod network from workers (not etcd's ports)",
            ),
            (
                "ControlPlanePodNetworkTcpBetweenEtcd",
                CONTROL_PLANE_SG,
                NODE_SG,
                "tcp",
                2382,
                4000,
                "pod network from workers (not etcd's ports)",
            ),
            (
                "ControlPlanePodNetworkTcpAboveEtcd",
                CONTROL_PLANE_SG,
                NODE_SG,
                "tcp",
                4003,
                65535,
                "pod network from workers (not etcd's ports)",
            ),
            (
                "ControlPlanePodNetworkUdp",
                CONTROL_PLANE_SG,
                NODE_SG,
                "udp",
                1,
                65535,
                "pod network from workers (overlays: VXLAN, Geneve)",
            ),
        ];
        for (id, to, from, protocol, low, high, why) in rules {
            let mut rule = json!({
                "GroupId": reference(to),
                "SourceSecurityGroupId": reference(from),
                "IpProtocol": protocol,
                "Description": why,
            });
            if protocol != "-1" {
                rule["FromPort"] = json!(low);
                rule["ToPort"] = json!(high);
            }
            self.add(id, "AWS::EC2::SecurityGroupIngress", rule);
        }
        // IP-in-IP (Calico's default encapsulation) is protocol 4.
        self.add(
            "ControlPlanePodNetworkIpip",
            "AWS::EC2::SecurityGroupIngress",
            json!({
                "GroupId": reference(CONTROL_PLANE_SG),
                "SourceSecurityGroupId": reference(NODE_SG),
                "IpProtocol": "4",
                "Description": "pod network from workers (IP-in-IP)",
            }),
        );
    }

    // Each argument is one CloudFormation property of the resource it declares.
    #[allow(clippy::too_many_arguments)]
    fn launch_template(
        &mut self,
        id: &str,
        name: &str,
        image: &Image,
        instance_type: &str,
        root_volume: u32,
        security_group: &str,
        user_data: &str,
        instance_tags: &BTreeMap<String, String>,
    ) {
        // The root volume: the cluster's and the group's, never the control plane's
        // role tag (that marks etcd volumes the control plane may attach).
        let volume_tags: BTreeMap<String, String> = instance_tags
            .iter()
            .filter(|(k, _)| {
                k.as_str() == "Name"
                    || k.starts_with("kubernetes.io/cluster/")
                    || k.as_str() == super::specs::GROUP_LABEL
                    || self.cluster.tags.contains_key(k.as_str())
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let image_id = match (&image.ami, &image.ssm_parameter) {
            (Some(ami), _) => json!(ami),
            // EC2 resolves the parameter at each launch.
            (None, Some(parameter)) => json!(format!("resolve:ssm:{parameter}")),
            (None, None) => json!(null),
        };
        let ipv6 = self.cluster.network.ip_family == IpFamily::Ipv6;
        let mut data = json!({
            "ImageId": image_id,
            "InstanceType": instance_type,
            "IamInstanceProfile": {"Arn": attribute(&format!("{id}InstanceProfile"), "Arn")},
            "UserData": {"Fn::Base64": user_data},
            // IMDSv2 only, and one hop: a pod (one hop further) cannot reach the node's
            // credentials.
            "MetadataOptions": {
                "HttpEndpoint": "enabled",
                "HttpTokens": "required",
                "HttpPutResponseHopLimit": 1,
                "HttpProtocolIpv6": if ipv6 { "enabled" } else { "disabled" },
                "InstanceMetadataTags": "disabled",
            },
            "BlockDeviceMappings": [{
                "DeviceName": image.root_device_name,
                "Ebs": {
                    "VolumeSize": root_volume,
                    "VolumeType": "gp3",
                    "Encrypted": true,
                    "DeleteOnTermination": true,
                },
            }],
            "TagSpecifications": [
                {"ResourceType": "instance", "Tags": tags(instance_tags)},
                {"ResourceType": "volume", "Tags": tags(&volume_tags)},
            ],
        });
        if ipv6 {
            data["NetworkInterfaces"] = json!([{
                "DeviceIndex": 0,
                "Groups": [reference(security_group)],
                "Ipv6AddressCount": 1,
                "PrimaryIpv6": true,
            }]);
        } else {
            data["SecurityGroupIds"] = json!([reference(security_group)]);
        }
        let tags = tags(&self.tags_with(&[]));
        self.add(
            &format!("{id}LaunchTemplate"),
            "AWS::EC2::LaunchTemplate",
            json!({
                "LaunchTemplateName": name,
                "LaunchTemplateData": data,
                "TagSpecifications": [{"ResourceType": "launch-template", "Tags": tags}],
            }),
        );
    }

    // Each argument is one CloudFormation property of the resource it declares.
    #[allow(clippy::too_many_arguments)]
    fn auto_scaling_group(
        &mut self,
        id: &str,
        template: &str,
        name: &str,
        zone: &str,
        (min, max): (u32, u32),
        target_groups: &[&str],
        instance_tags: &BTreeMap<String, String>,
    ) {
        let subnet = self
            .cluster
            .network
            .subnets
            .get(zone)
            .cloned()
            .unwrap_or_default();
        let tags: Vec<Value> = instance_tags
            .iter()
            .map(|(k, v)| json!({"Key": k, "Value": v, "PropagateAtLaunch": true}))
            .collect();
        let mut properties = json!({
            "AutoScalingGroupName": name,
            "MinSize": min.to_string(),
            "MaxSize": max.to_string(),
            "VPCZoneIdentifier": [subnet],
            "LaunchTemplate": {
                "LaunchTemplateId": reference(&format!("{template}LaunchTemplate")),
                "Version": attribute(&format!("{template}LaunchTemplate"), "LatestVersionNumber"),
            },
            "HealthCheckType": "EC2",
            "Tags": tags,
        });
        if !target_groups.is_empty() {
            properties["TargetGroupARNs"] =
                Value::Array(target_groups.iter().map(|t| reference(t)).collect());
        }
        self.add(id, "AWS::AutoScaling::AutoScalingGroup", properties);
    }

    fn control_plane(&mut self, user_data: &str) {
        let cluster = self.cluster;
        let name = cluster.name.to_string();
        let role = cluster.control_plane_role();
        self.role("ControlPlane", &role, iam::control_plane(cluster));
        let instance_tags = self.tags_with(&[
            ("Name", &format!("{CONTROL_PLANE_GROUP}.{name}")),
            ("k8s.io/role/control-plane", "1"),
            (super::specs::GROUP_LABEL, CONTROL_PLANE_GROUP),
        ]);
        self.launch_template(
            "ControlPlane",
            &role,
            &cluster.image,
            &cluster.control_plane.instance_type,
            cluster.control_plane.root_volume_size,
            CONTROL_PLANE_SG,
            user_data,
            &instance_tags,
        );
        let zones = cluster.control_plane_zones();
        let mut per_zone: BTreeMap<&str, u32> = BTreeMap::new();
        for zone in &zones {
            *per_zone.entry(zone.as_str()).or_default() += 1;
        }
        for (zone, count) in per_zone {
            self.auto_scaling_group(
                &format!("ControlPlane{}AutoScalingGroup", logical(zone)),
                "ControlPlane",
                &format!("{CONTROL_PLANE_GROUP}-{zone}.{name}"),
                zone,
                (count, count),
                &[API_TARGETS, SHIM_TARGETS],
                &instance_tags,
            );
        }
        // One volume per etcd cluster and member, in its member's zone. Retained: a
        // deleted stack or a replaced resource never deletes etcd's data.
        let members: Vec<String> = (0..zones.len())
            .map(|i| char::from(b'a' + i as u8).to_string())
            .collect();
        for etcd in &cluster.control_plane.etcd {
            for (member, zone) in members.iter().zip(&zones) {
                let volume_tags = self.tags_with(&[
                    ("Name", &format!("{member}.etcd-{}.{name}", etcd.name)),
                    ("k8s.io/role/control-plane", "1"),
                    (
                        &format!("k8s.io/etcd/{}", etcd.name),
                        &format!("{member}/{}", members.join(",")),
                    ),
                ]);
                let mut properties = json!({
                    "AvailabilityZone": zone,
                    "Size": etcd.volume_size,
                    "VolumeType": etcd.volume_type.as_str(),
                    "Encrypted": true,
                    "Tags": tags(&volume_tags),
                });
                if let Some(iops) = etcd.volume_iops {
                    properties["Iops"] = json!(iops);
                }
                if let Some(throughput) = etcd.volume_throughput {
                    properties["Throughput"] = json!(throughput);
                }
                let id = format!("Etcd{}{}Volume", logical(&etcd.name), member.to_uppercase());
                let resource = self.add(&id, "AWS::EC2::Volume", properties);
                resource.insert("DeletionPolicy".to_owned(), json!("Retain"));
                resource.insert("UpdateReplacePolicy".to_owned(), json!("Retain"));
                // The zone is the member's, named in the Cluster file: on purpose.
                resource.insert(
                    "Metadata".to_owned(),
                    json!({"cfn-lint": {"config": {"ignore_checks": ["W3010"]}}}),
                );
            }
        }
    }

    fn node_group(&mut self, group: &NodeGroup, user_data: &str) {
        let cluster = self.cluster;
        let name = cluster.name.to_string();
        let id = format!("Group{}", logical(group.name.as_str()));
        let role = super::role_name(group.name.as_str(), &name);
        self.role(&id, &role, iam::worker(cluster, group));
        let mut extra: Vec<(String, String)> = vec![
            ("Name".to_owned(), format!("{}.{name}", group.name)),
            (super::specs::GROUP_LABEL.to_owned(), group.name.to_string()),
            // Cluster Autoscaler's auto-discovery, and what a new node will carry.
            (
                "k8s.io/cluster-autoscaler/enabled".to_owned(),
                "true".to_owned(),
            ),
            (
                format!("k8s.io/cluster-autoscaler/{name}"),
                "owned".to_owned(),
            ),
        ];
        for (key, value) in &group.labels {
            extra.push((
                format!("k8s.io/cluster-autoscaler/node-template/label/{key}"),
                value.to_string(),
            ));
        }
        for taint in &group.taints {
            let effect = serde_json::to_value(taint.effect)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            let value = taint
                .value
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default();
            extra.push((
                format!(
                    "k8s.io/cluster-autoscaler/node-template/taint/{}",
                    taint.key
                ),
                format!("{value}:{effect}"),
            ));
        }
        let extra_refs: Vec<(&str, &str)> = extra
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let instance_tags = self.tags_with(&extra_refs);
        self.launch_template(
            &id,
            &role,
            group.image.as_ref().unwrap_or(&cluster.image),
            &group.instance_type,
            group.root_volume_size,
            NODE_SG,
            user_data,
            &instance_tags,
        );
        let zones = cluster.group_zones(group);
        for (i, zone) in zones.iter().enumerate() {
            let share = |total: u32| {
                let n = zones.len() as u32;
                total / n + u32::from((i as u32) < total % n)
            };
            self.auto_scaling_group(
                &format!("{id}{}AutoScalingGroup", logical(zone)),
                &id,
                &format!("{}-{zone}.{name}", group.name),
                zone,
                (share(group.min), share(group.max)),
                &[],
                &instance_tags,
            );
        }
    }

    fn load_balancer(&mut self) {
        let cluster = self.cluster;
        let network = &cluster.network;
        let lb = &cluster.api.load_balancer;
        let zones: std::collections::BTreeSet<String> =
            cluster.control_plane_zones().into_iter().collect();
        let subnets: Vec<String> = zones
            .iter()
            .filter_map(|zone| match lb.scheme {
                LoadBalancerScheme::Internal => network.subnets.get(zone),
                LoadBalancerScheme::InternetFacing => network.public_subnets.get(zone),
            })
            .cloned()
            .collect();
        let ipv6 = network.ip_family == IpFamily::Ipv6;
        let lb_tags = tags(&self.tags_with(&[("Name", &format!("api.{}", cluster.name))]));
        self.add(
            LOAD_BALANCER,
            "AWS::ElasticLoadBalancingV2::LoadBalancer",
            json!({
                "Type": "network",
                "Scheme": match lb.scheme {
                    LoadBalancerScheme::Internal => "internal",
                    LoadBalancerScheme::InternetFacing => "internet-facing",
                },
                "IpAddressType": if ipv6 { "dualstack" } else { "ipv4" },
                "Subnets": subnets,
                "SecurityGroups": [reference(LB_SG)],
                "LoadBalancerAttributes": [
                    {"Key": "load_balancing.cross_zone.enabled", "Value": "true"},
                ],
                "Tags": lb_tags,
            }),
        );
        for (targets, listener, port) in [
            (API_TARGETS, "ApiListener", cluster.api.port),
            (SHIM_TARGETS, "ControllerShimListener", SHIM_PORT),
        ] {
            let target_tags = tags(&self.tags_with(&[]));
            let mut properties = json!({
                "Protocol": "TCP",
                "Port": port,
                "VpcId": network.vpc_id,
                "TargetType": "instance",
                "HealthCheckProtocol": "TCP",
                "HealthCheckIntervalSeconds": 10,
                "HealthyThresholdCount": 2,
                "UnhealthyThresholdCount": 2,
                "Tags": target_tags,
            });
            if ipv6 {
                properties["IpAddressType"] = json!("ipv6");
            }
            self.add(
                targets,
                "AWS::ElasticLoadBalancingV2::TargetGroup",
                properties,
            );
            self.add(
                listener,
                "AWS::ElasticLoadBalancingV2::Listener",
                json!({
                    "LoadBalancerArn": reference(LOAD_BALANCER),
                    "Port": port,
                    "Protocol": "TCP",
                    "DefaultActions": [{"Type": "forward", "TargetGroupArn": reference(targets)}],
                }),
            );
        }
        self.outputs.insert(
            "ApiLoadBalancerDnsName".to_owned(),
            json!({
                "Description": "The API load balancer's DNS name",
                "Value": attribute(LOAD_BALANCER, "DNSName"),
            }),
        );
    }

    fn alias(&mut self, id: &str, zone: Value, name: &str, record: &str) {
        self.add(
            id,
            "AWS::Route53::RecordSet",
            json!({
                "HostedZoneId": zone,
                "Name": format!("{name}."),
                "Type": record,
                "AliasTarget": {
                    "DNSName": attribute(LOAD_BALANCER, "DNSName"),
                    "HostedZoneId": attribute(LOAD_BALANCER, "CanonicalHostedZoneID"),
                    "EvaluateTargetHealth": false,
                },
            }),
        );
    }

    fn dns(&mut self) {
        let cluster = self.cluster;
        let ipv6 = cluster.network.ip_family == IpFamily::Ipv6;
        let records: &[&str] = if ipv6 { &["A", "AAAA"] } else { &["A"] };
        if cluster.dns.private_zone_id.is_none() {
            let internal = cluster.internal_api_name();
            let zone = internal
                .split_once('.')
                .map(|(_, rest)| rest.to_owned())
                .unwrap_or_default();
            let tags = tags(&self.tags_with(&[]));
            self.add(
                INTERNAL_ZONE,
                "AWS::Route53::HostedZone",
                json!({
                    "Name": zone,
                    "HostedZoneConfig": {
                        "Comment": format!("nodewright: internal names of {}", cluster.name),
                    },
                    "VPCs": [{"VPCId": cluster.network.vpc_id, "VPCRegion": cluster.region}],
                    "HostedZoneTags": tags,
                }),
            );
            for record in records {
                self.alias(
                    &format!("InternalApi{record}Record"),
                    reference(INTERNAL_ZONE),
                    &internal,
                    record,
                );
            }
            self.outputs.insert(
                "InternalHostedZoneId".to_owned(),
                json!({
                    "Description": "The private hosted zone of the internal names",
                    "Value": reference(INTERNAL_ZONE),
                }),
            );
        }
        if let (Some(zone), Some(public)) = (&cluster.dns.public_zone_id, &cluster.api.public_name)
        {
            for record in records {
                self.alias(
                    &format!("PublicApi{record}Record"),
                    json!(zone),
                    public.as_str(),
                    record,
                );
            }
        }
    }
}

/// The template, as a JSON value (written as YAML).
pub fn template(cluster: &Cluster, control_plane_user_data: &str, groups: &[GroupData]) -> Value {
    let mut template = Template {
        cluster,
        resources: Map::new(),
        outputs: Map::new(),
    };
    template.security_groups();
    template.control_plane(control_plane_user_data);
    for group in &cluster.node_groups {
        let user_data = groups
            .iter()
            .find(|g| g.name == group.name.as_str())
            .map(|g| g.user_data)
            .unwrap_or_default();
        template.node_group(group, user_data);
    }
    template.load_balancer();
    template.dns();
    for (id, value) in [
        ("ControlPlaneSecurityGroupId", CONTROL_PLANE_SG),
        ("NodeSecurityGroupId", NODE_SG),
    ] {
        template.outputs.insert(
            id.to_owned(),
            json!({"Description": format!("The {value}"), "Value": reference(value)}),
        );
    }
    json!({
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": format!(
            "nodewright cluster {}: node roles, security groups, launch templates, Auto Scaling groups, the API load balancer, etcd volumes (rendered by nodewright-cluster; do not edit)",
            cluster.name
        ),
        "Resources": template.resources,
        "Outputs": template.outputs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logical_ids() {
        assert_eq!(logical("us-east-1a"), "UsEast1a");
        assert_eq!(logical("gpu-nodes"), "GpuNodes");
        assert_eq!(logical("main"), "Main");
    }
}
