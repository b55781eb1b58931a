//! The cluster kit (`nodewright-cluster`) against the AWS emulator: `pki init` in the
//! state store (twice: nothing the second time; a half-made pair refused), `publish`
//! (twice: a no-op; after a change only the changed group's key is new, and the old one
//! is still there), and each rendered CloudFormation template deployed into the
//! emulator's CloudFormation, with what the stack created checked against the render.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use nodewright_e2e::kit::{self, Network};
use nodewright_e2e::moto::Moto;
use nodewright_e2e::shim::{between, signed_query};

// The kit's command lines, shared with the kit's own tests.
#[path = "../../cluster/tests/support/kit_args.rs"]
mod kit_args;

const BUCKET: &str = "nodewright-state";
const HA_ZONES: [&str; 3] = ["us-east-1a", "us-east-1b", "us-east-1c"];

/// A working directory with the HA example's Cluster file, pointed at the emulator's
/// network and bucket.
fn ha_cluster(moto: &Moto) -> (tempfile::TempDir, std::path::PathBuf) {
    let network = Network::create(moto, "10.0.0.0/16", &HA_ZONES);
    let dir = tempfile::tempdir().unwrap();
    let text = kit::cluster_file("ha.yaml", &network, BUCKET);
    let file = kit::write(dir.path(), "cluster.yaml", &text);
    (dir, file)
}

#[test]
fn pki_init_creates_the_store_layout_once_and_never_overwrites() {
    let moto = Moto::start();
    kit::create_bucket(&moto, BUCKET);
    let (dir, file) = ha_cluster(&moto);
    let ca = dir.path().join("ca.crt");
    let args = kit_args::pki_init(&file, &ca);
    let first = kit::run_ok(&moto, &args);
    let prefix = "prod.example.com/pki/";
    let layout = [
        "ca.crt",
        "ca.key",
        "encryption-config.yaml",
        "etcd-ca.crt",
        "etcd-ca.key",
        "front-proxy-ca.crt",
        "front-proxy-ca.key",
        "sa.key",
        "sa.pub",
    ];
    let expected: Vec<String> = layout.iter().map(|n| format!("{prefix}{n}")).collect();
    assert_eq!(kit::keys(&moto, BUCKET, prefix), expected);
    for name in layout {
        assert!(
            first.contains(&format!("created s3://{BUCKET}/{prefix}{name}")),
            "{name}: {first}"
        );
    }
    let stored_ca = kit::get(&moto, BUCKET, &format!("{prefix}ca.crt")).unwrap();
    assert_eq!(
        std::fs::read(&ca).unwrap(),
        stored_ca,
        "--ca-cert is the store's"
    );
    let before: Vec<Vec<u8>> = expected
        .iter()
        .map(|k| kit::get(&moto, BUCKET, k).unwrap())
        .collect();

    // Twice: nothing created, nothing changed, the same CA handed back.
    std::fs::remove_file(&ca).unwrap();
    let second = kit::run_ok(&moto, &args);
    assert!(!second.contains("created "), "{second}");
    assert!(second.contains("nothing created"), "{second}");
    let after: Vec<Vec<u8>> = expected
        .iter()
        .map(|k| kit::get(&moto, BUCKET, k).unwrap())
        .collect();
    assert_eq!(before, after, "an object changed on the second run");
    assert_eq!(std::fs::read(&ca).unwrap(), stored_ca);

    // A half-made pair (the etcd CA's key lost) is refused and nothing is written.
    let s3 = moto.s3();
    nodewright_e2e::runtime::block_on(
        s3.delete_object()
            .bucket(BUCKET)
            .key(format!("{prefix}etcd-ca.key"))
            .send(),
    )
    .unwrap();
    let output = kit::run(&moto, &args);
    assert_eq!(output.status.code(), Some(3), "{}", kit::text(&output));
    let message = kit::text(&output);
    assert!(
        message.contains("etcd-ca.crt") && message.contains("etcd-ca.key"),
        "{message}"
    );
    assert!(kit::get(&moto, BUCKET, &format!("{prefix}etcd-ca.key")).is_none());
    assert_eq!(
        kit::get(&moto, BUCKET, &format!("{prefix}etcd-ca.crt")).unwrap(),
        before[3]
    );

    // An unreachable store is exit 4, not a claim that the input is bad.
    let output = kit::kit_unreachable(&args);
    assert_eq!(output.status.code(), Some(4), "{}", kit::text(&output));
}

#[test]
fn publish_is_idempotent_and_a_change_adds_only_the_changed_groups_key() {
    let moto = Moto::start();
    kit::create_bucket(&moto, BUCKET);
    let (dir, file) = ha_cluster(&moto);
    let ca = dir.path().join("ca.crt");
    kit::run_ok(&moto, &kit_args::pki_init(&file, &ca));
    let out = dir.path().join("out");
    let render = |file: &std::path::Path| kit::run_ok(&moto, &kit_args::render(file, &ca, &out));
    render(&file);
    let publish = || kit::run_ok(&moto, &["publish", out.to_str().unwrap()]);
    let specs = "prod.example.com/nodegroups/";

    let first = publish();
    let published = kit::keys(&moto, BUCKET, specs);
    // One spec per group (by digest), and the record of what was published.
    assert_eq!(published.len(), 3, "{published:?}");
    for group in ["control-plane", "nodes"] {
        let bytes = std::fs::read(out.join(format!("nodegroups/{group}/nodespec.yaml"))).unwrap();
        let key = format!(
            "{specs}{group}/nodespec/{}.yaml",
            nodewright::spec::digest(&bytes)
        );
        assert!(published.contains(&key), "{key}: {published:?}");
        assert_eq!(kit::get(&moto, BUCKET, &key).unwrap(), bytes);
        assert!(first.contains(&format!("{group}: uploaded")), "{first}");
    }
    let groups_key = "prod.example.com/controller-shim/node-groups.yaml";
    assert_eq!(
        kit::get(&moto, BUCKET, groups_key).unwrap(),
        std::fs::read(out.join("controller-shim/node-groups.yaml")).unwrap()
    );

    // Twice: nothing uploaded, nothing to roll.
    let second = publish();
    assert!(second.contains("nothing to publish"), "{second}");
    assert!(!second.contains("uploaded"), "{second}");
    assert_eq!(kit::keys(&moto, BUCKET, specs), published);

    // A change to the workers: only their group's key is new; the old spec stays for
    // the nodes launched with it.
    let text = std::fs::read_to_string(&file).unwrap().replace(
        "      team: platform",
        "      team: platform\n    kubelet:\n      maxPods: 58",
    );
    let changed = kit::write(dir.path(), "cluster.yaml", &text);
    render(&changed);
    let third = publish();
    let now = kit::keys(&moto, BUCKET, specs);
    let new: Vec<&String> = now.iter().filter(|k| !published.contains(k)).collect();
    assert_eq!(new.len(), 1, "{now:?}");
    assert!(
        new[0].starts_with(&format!("{specs}nodes/nodespec/")),
        "{new:?}"
    );
    assert!(
        published.iter().all(|k| now.contains(k)),
        "a spec was removed"
    );
    assert!(third.contains("groups to roll: nodes"), "{third}");
    assert!(
        third.contains("control-plane: already in the store"),
        "{third}"
    );
    // ...and publishing that again is a no-op too.
    assert!(publish().contains("nothing to publish"));
}

/// Deploys the rendered template of `example` into the emulator; the stack and the
/// template as rendered.
fn deploy_example(moto: &Moto, example: &str, zones: &[&str], cidr: &str) -> (kit::Stack, String) {
    let network = Network::create(moto, cidr, zones);
    let dir = tempfile::tempdir().unwrap();
    let mut text = kit::cluster_file(example, &network, BUCKET);
    // Zones the example names by id (existing ones, made outside the stack) are made
    // in the emulator first, and their ids put in place of the example's.
    let route53 = aws_sdk_route53::Client::new(&nodewright_e2e::moto::sdk_config_for(moto.url()));
    for (key, name) in [
        ("privateZoneId: ", format!("private.{example}.example.com")),
        ("publicZoneId: ", format!("public.{example}.example.com")),
    ] {
        let Some(line) = text.lines().find(|l| l.trim_start().starts_with(key)) else {
            continue;
        };
        let example_id = line.trim_start()[key.len()..].trim().to_owned();
        let created = nodewright_e2e::runtime::block_on(
            route53
                .create_hosted_zone()
                .name(name)
                .caller_reference(format!("{example}-{key}"))
                .send(),
        )
        .expect("CreateHostedZone");
        let id = created.hosted_zone().expect("a hosted zone").id();
        text = text.replace(&example_id, id.trim_start_matches("/hostedzone/"));
    }
    let file = kit::write(dir.path(), "cluster.yaml", &text);
    let ca = nodewright_e2e::workspace().join("cluster/tests/fixtures/ca.crt");
    let out = dir.path().join("out");
    kit::run_ok(moto, &kit_args::render(&file, &ca, &out));
    let template = std::fs::read_to_string(out.join("cloudformation.yaml")).unwrap();
    let (deployable, left_out) = kit::for_emulator(&template);
    assert_eq!(left_out, ["ApiListener", "ControllerShimListener"]);
    let stack = kit::deploy(moto, &example.replace(".yaml", ""), &deployable);
    (stack, template)
}

#[test]
fn the_rendered_templates_deploy_into_the_emulator() {
    let moto = Moto::start();
    kit::create_bucket(&moto, BUCKET);
    let ec2 = aws_sdk_ec2::Client::new(&nodewright_e2e::moto::sdk_config_for(moto.url()));

    // The HA cluster: everything the template declares was created.
    let (stack, template) = deploy_example(&moto, "ha.yaml", &HA_ZONES, "10.0.0.0/16");
    let declared: serde_json::Value = yaml_serde::from_str(&template).unwrap();
    for (id, resource) in declared["Resources"].as_object().unwrap() {
        if resource["Type"] == "AWS::ElasticLoadBalancingV2::Listener" {
            continue;
        }
        assert!(
            stack.resources.iter().any(|(logical, _, _)| logical == id),
            "{id} was not created"
        );
    }
    assert_eq!(stack.of_type("AWS::AutoScaling::AutoScalingGroup").len(), 6);
    assert_eq!(stack.of_type("AWS::EC2::Volume").len(), 6);
    assert_eq!(kit::tag_etcd_volumes(&moto, &template, &stack), 6);

    // The launch templates: the rendered user data, IMDSv2 required, one hop, the
    // group's instance profile.
    for (template_id, group, role) in [
        (
            "ControlPlaneLaunchTemplate",
            "control-plane",
            "control-plane.prod.example.com",
        ),
        (
            "GroupNodesLaunchTemplate",
            "nodes",
            "nodes.prod.example.com",
        ),
    ] {
        let id = stack.physical(template_id);
        let versions = nodewright_e2e::runtime::block_on(
            ec2.describe_launch_template_versions()
                .launch_template_id(id)
                .send(),
        )
        .unwrap();
        let data = versions.launch_template_versions()[0]
            .launch_template_data()
            .unwrap();
        let metadata = data.metadata_options().unwrap();
        assert_eq!(metadata.http_tokens().map(|t| t.as_str()), Some("required"));
        assert_eq!(metadata.http_put_response_hop_limit(), Some(1));
        assert!(
            data.iam_instance_profile()
                .and_then(|p| p.arn())
                .unwrap()
                .ends_with(&format!("instance-profile/{role}")),
            "{data:?}"
        );
        let user_data = base64_decode(data.user_data().unwrap());
        let config = nodewright::spec::BootConfig::parse("user data", &user_data)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.node_group.as_str(), group);
    }

    // The roles carry the rendered policies.
    let role = signed_query(
        moto.url(),
        "iam",
        &[
            ("Action", "GetRolePolicy"),
            ("Version", "2010-05-08"),
            ("RoleName", "nodes.prod.example.com"),
            ("PolicyName", "nodewright"),
        ],
        None,
    );
    assert!(between(&role, "PolicyDocument").contains("ecr"), "{role}");

    // The single node: the stack makes the private zone of the internal names.
    let (stack, _) = deploy_example(&moto, "single-node.yaml", &["us-east-1a"], "172.20.0.0/16");
    let zone = stack.physical("InternalHostedZone").to_owned();
    let route53 = aws_sdk_route53::Client::new(&nodewright_e2e::moto::sdk_config_for(moto.url()));
    let hosted =
        nodewright_e2e::runtime::block_on(route53.get_hosted_zone().id(&zone).send()).unwrap();
    // Route53 answers the name with its final dot; the emulator without it.
    assert_eq!(
        hosted.hosted_zone().map(|z| z.name().trim_end_matches('.')),
        Some("internal.dev.example.com")
    );

    // The IPv6 cluster with two groups.
    let (stack, _) = deploy_example(
        &moto,
        "ipv6.yaml",
        &["us-east-1a", "us-east-1b", "us-east-1c"],
        "10.20.0.0/16",
    );
    assert_eq!(
        stack.of_type("AWS::EC2::LaunchTemplate").len(),
        3,
        "control plane, general, batch"
    );
}

fn base64_decode(text: &str) -> String {
    use base64::Engine;
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .unwrap(),
    )
    .unwrap()
}
