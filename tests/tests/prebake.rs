//! Image builds: `prebake` fetches and installs what does not depend on the instance,
//! with no instance metadata; a boot of that image then converges with the mirror
//! switched off, downloading nothing.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use nodewright_e2e::assetkit::{Entry, SPEC_HEADER, bytes, sha256, tar_gz};
use nodewright_e2e::imds::Fault as ImdsFault;
use nodewright_e2e::mirror::Mirror;
use nodewright_e2e::world::World;

const SPEC_URL: &str = "s3://nodewright-state/prod.example.com/prebake/nodespec.yaml";

struct Image {
    world: World,
    mirror: Mirror,
    spec_sha: String,
    kubelet: Vec<u8>,
    ctr: Vec<u8>,
}

fn image() -> Image {
    let mirror = Mirror::start();
    let kubelet = bytes(1, 3 << 20);
    let ctr = bytes(2, 1 << 20);
    let archive = tar_gz(&[
        Entry::file("bin/containerd", &bytes(3, 2 << 20)),
        Entry::file("bin/ctr", &ctr),
    ]);
    mirror.put("/kubelet", kubelet.clone());
    mirror.put("/containerd.tgz", archive.clone());
    let spec = format!(
        "{SPEC_HEADER}nodeGroup: nodes-us-east-1a
files:
  - path: /etc/kubernetes/kubelet-env
    content: \"KUBELET_ARGS=--v=2\\n\"
assets:
  - name: kubelet
    sha256: {}
    urls: [{}]
    install:
      - path: /usr/local/bin/kubelet
  - name: containerd
    sha256: {}
    urls: [{}]
    archive: tgz
    install:
      - member: bin/containerd
        path: /usr/local/bin/containerd
      - member: bin/ctr
        path: /usr/local/bin/ctr
systemd:
  units:
    - name: kubelet.service
      content: |
        [Service]
        EnvironmentFile=/etc/kubernetes/kubelet-env
        ExecStart=/usr/local/bin/kubelet $KUBELET_ARGS
      restartOn: [/usr/local/bin/kubelet, /etc/kubernetes/kubelet-env]
",
        sha256(&kubelet),
        mirror.url("/kubelet"),
        sha256(&archive),
        mirror.url("/containerd.tgz"),
    );
    let spec_sha = sha256(spec.as_bytes());
    let user_data = format!(
        "apiVersion: nodewright.io/v1alpha1
kind: BootConfig
clusterName: prod.example.com
nodeGroup: nodes-us-east-1a
role: worker
nodeSpec:
  url: {SPEC_URL}
  sha256: {spec_sha}
"
    );
    let world = World::new(user_data.as_bytes(), spec.as_bytes());
    Image {
        world,
        mirror,
        spec_sha,
        kubelet,
        ctr,
    }
}

/// Runs `prebake` as an image build would: credentials from the environment, and no
/// instance metadata service at all (it is switched off).
fn prebake(image: &mut Image) -> nodewright_e2e::agent::Run {
    image.world.imds.set_fault(ImdsFault::Down);
    let before = image.world.imds.counters();
    let agent = &mut image.world.agent;
    agent.set_env("AWS_ACCESS_KEY_ID", "AKIDPACKERBUILD");
    agent.set_env("AWS_SECRET_ACCESS_KEY", "packer-secret");
    let run = agent.run(&[
        "prebake",
        "--spec",
        SPEC_URL,
        "--sha256",
        &image.spec_sha,
        "--region",
        "us-east-1",
        "--deadline",
        "20",
    ]);
    let after = image.world.imds.counters();
    assert_eq!(before.gets, after.gets, "prebake read instance metadata");
    image.world.imds.set_fault(ImdsFault::None);
    run
}

#[test]
fn prebake_then_boot_with_the_mirror_off_downloads_nothing() {
    let mut image = image();
    let run = prebake(&mut image);
    run.expect_code(0);
    assert!(
        run.stdout.contains("2 assets (2 downloaded"),
        "{}",
        run.stdout
    );
    let agent = &image.world.agent;
    assert_eq!(
        std::fs::read(agent.path("/usr/local/bin/kubelet")).unwrap(),
        image.kubelet
    );
    assert_eq!(
        std::fs::read(agent.path("/usr/local/bin/ctr")).unwrap(),
        image.ctr
    );
    assert!(agent.path("/etc/systemd/system/kubelet.service").is_file());
    // The bake manifest says what, where, and its sha256; no run is recorded yet.
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(agent.path("/var/lib/nodewright/bake.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["specSha256"], image.spec_sha);
    let files = manifest["files"].as_array().unwrap();
    let kubelet = files
        .iter()
        .find(|f| f["path"] == "/usr/local/bin/kubelet")
        .unwrap();
    assert_eq!(kubelet["sha256"], sha256(&image.kubelet));
    assert_eq!(manifest["assets"].as_array().unwrap().len(), 2);
    assert!(!agent.path("/var/lib/nodewright/state.json").exists());

    // The instance boots from this image with the mirror switched off.
    image.mirror.set_offline(true);
    image.mirror.clear_log();
    let boot = agent.run(&["boot", "--deadline", "20"]);
    boot.expect_code(0);
    assert!(
        image.mirror.hits().is_empty(),
        "downloads at boot: {:?}",
        image.mirror.hits()
    );
    let state = agent.state();
    let timeline = state["lastRun"]["timeline"].to_string();
    assert!(timeline.contains("verify baked files"), "{timeline}");
    let baked = format!("{} verified, 0 differ", files.len());
    assert!(timeline.contains(&baked), "{timeline}");
    assert!(!timeline.contains("apply: install"), "{timeline}");
    assert!(!timeline.contains("apply: download"), "{timeline}");
    assert_eq!(
        state["files"]["/usr/local/bin/kubelet"]["digest"],
        sha256(&image.kubelet)
    );
    assert_eq!(
        state["applied"]["service:kubelet.service"]["inputs"]["/usr/local/bin/kubelet"],
        sha256(&image.kubelet)
    );
    let plan = agent.run(&["plan", "--deadline", "20"]);
    plan.expect_code(0);
    assert!(plan.stdout.contains("No changes"), "{}", plan.stdout);
}

#[test]
fn a_baked_file_damaged_in_the_image_is_reinstalled_from_the_baked_cache() {
    let mut image = image();
    prebake(&mut image).expect_code(0);
    let agent = &image.world.agent;
    std::fs::write(agent.path("/usr/local/bin/ctr"), b"damaged").unwrap();
    image.mirror.set_offline(true);
    image.mirror.clear_log();
    let boot = agent.run(&["boot", "--deadline", "20"]);
    boot.expect_code(0);
    assert!(image.mirror.hits().is_empty(), "{:?}", image.mirror.hits());
    assert!(
        boot.stderr.contains("differs from the bake manifest"),
        "{}",
        boot.stderr
    );
    assert_eq!(
        std::fs::read(agent.path("/usr/local/bin/ctr")).unwrap(),
        image.ctr
    );
}
