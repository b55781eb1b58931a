//! Golden list of the certificates the example control-plane node issues (subject,
//! CA, usage, SANs), for a node holding members of etcd clusters `main` and `events`.
//! `NODEWRIGHT_UPDATE_GOLDEN=1` rewrites it; review the diff.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use common::{parse, workspace};
use nodewright::model::pki::{describe, desired_certificates};
use nodewright::model::{EtcdMember, Facts};
use nodewright::spec::AbsPath;

fn facts_with_members() -> Facts {
    let mut facts = Facts::example();
    for cluster in ["main", "events"] {
        let peer =
            |m: &str| nodewright::spec::etcd_peer_name(cluster, m, "internal.prod.example.com");
        facts.control_plane.etcd_members.insert(
            cluster.to_owned(),
            EtcdMember {
                member: "a".to_owned(),
                members: vec!["a".into(), "b".into(), "c".into()],
                peer_names: ["a", "b", "c"]
                    .iter()
                    .map(|m| ((*m).to_owned(), peer(m)))
                    .collect::<BTreeMap<_, _>>(),
                volume_id: "vol-0123456789abcdef0".to_owned(),
                device: "/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol0123456789abcdef0"
                    .to_owned(),
                mount_path: AbsPath::try_from(format!("/mnt/etcd-{cluster}-a").as_str()).unwrap(),
                filesystem: "ext4".to_owned(),
                planned: false,
            },
        );
    }
    facts
}

#[test]
fn the_example_control_plane_issues_the_golden_list() {
    let spec = parse("examples/control-plane/nodespec.yaml");
    let certs = desired_certificates(&spec, &facts_with_members()).unwrap();
    let mut text = String::new();
    for cert in &certs {
        text.push_str(&describe(cert));
        text.push('\n');
    }
    let golden = workspace().join("agent/tests/golden-pki/example-control-plane.txt");
    if std::env::var_os("NODEWRIGHT_UPDATE_GOLDEN").is_some_and(|v| v != "0" && !v.is_empty()) {
        std::fs::create_dir_all(golden.parent().unwrap()).unwrap();
        std::fs::write(&golden, &text).unwrap();
    }
    let expected = std::fs::read_to_string(&golden).unwrap_or_default();
    assert_eq!(
        text,
        expected,
        "(NODEWRIGHT_UPDATE_GOLDEN=1 rewrites {}; review the diff.)",
        golden.display()
    );
}
