//! The image pipeline: the Packer template, `packer/provision.sh` and the units it
//! installs, and the baked image. The template and unit checks run anywhere the tools
//! are installed; the provisioning and image checks need root (skipped with the reason
//! elsewhere, required under scripts/test.sh).

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use nodewright_e2e::checks::systemd_verify;
use nodewright_e2e::fleet::supported_or_skip;
use nodewright_e2e::image::{Image, Recipe, Scratch, node_binary, sha256_file};
use nodewright_e2e::tools::installed_or_skip;
use nodewright_e2e::workspace;

fn packer(args: &[&str], dir: &Path) -> Output {
    let home = tempfile::tempdir().unwrap();
    Command::new("packer")
        .args(args)
        .current_dir(dir)
        .env("CHECKPOINT_DISABLE", "1")
        .env("HOME", home.path())
        .output()
        .unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn packer_template_validates_and_is_formatted() {
    if !installed_or_skip("packer") {
        return;
    }
    let binary = tempfile::NamedTempFile::new().unwrap();
    let binary_var = format!("nodewright_binary={}", binary.path().display());
    let validate = packer(
        &[
            "validate",
            "-var",
            "kubernetes_version=1.33.4",
            "-var",
            &binary_var,
            "packer/nodewright.pkr.hcl",
        ],
        &workspace(),
    );
    assert!(validate.status.success(), "{}", text(&validate));
    let fmt = packer(&["fmt", "-check", "packer"], &workspace());
    assert!(
        fmt.status.success(),
        "packer fmt would change:\n{}",
        text(&fmt)
    );
}

#[test]
fn packer_validate_catches_a_missing_file_and_a_missing_variable() {
    if !installed_or_skip("packer") {
        return;
    }
    let copy = tempfile::tempdir().unwrap();
    for file in ["nodewright.pkr.hcl", "provision.sh", "packages.txt"] {
        std::fs::copy(
            workspace().join("packer").join(file),
            copy.path().join(file),
        )
        .unwrap();
    }
    std::fs::create_dir(copy.path().join("units")).unwrap();
    std::fs::copy(
        workspace().join("packer/units/nodewright.service"),
        copy.path().join("units/nodewright.service"),
    )
    .unwrap();
    let binary = tempfile::NamedTempFile::new().unwrap();
    let binary_var = format!("nodewright_binary={}", binary.path().display());
    let validate = packer(
        &[
            "validate",
            "-var",
            "kubernetes_version=1.33.4",
            "-var",
            &binary_var,
            "nodewright.pkr.hcl",
        ],
        copy.path(),
    );
    assert!(!validate.status.success());
    assert!(
        text(&validate).contains("nodewright-watch.service"),
        "{}",
        text(&validate)
    );
    let unset = packer(&["validate", "nodewright.pkr.hcl"], copy.path());
    assert!(!unset.status.success());
    assert!(
        text(&unset).contains("kubernetes_version"),
        "{}",
        text(&unset)
    );
}

fn unit(name: &str) -> String {
    std::fs::read_to_string(workspace().join("packer/units").join(name)).unwrap()
}

#[test]
fn units_pass_systemd_analyze_verify() {
    if !installed_or_skip("systemd-analyze") {
        return;
    }
    let boot = unit("nodewright.service");
    let watch = unit("nodewright-watch.service");
    systemd_verify(
        &[
            ("nodewright.service", &boot),
            ("nodewright-watch.service", &watch),
        ],
        &["/usr/local/bin/nodewright", "/usr/bin/kill"],
    )
    .unwrap();
    // The check can fail: a misspelled key only warns, and that is caught.
    let misspelled = boot.replace("RestartSec=", "RestartSex=");
    let error = systemd_verify(
        &[("nodewright.service", &misspelled)],
        &["/usr/local/bin/nodewright"],
    )
    .unwrap_err();
    assert!(error.contains("RestartSex"), "{error}");
}

#[test]
fn boot_unit_runs_at_every_boot_and_retries_without_hot_looping() {
    let boot = unit("nodewright.service");
    for line in [
        "Type=oneshot",
        "After=network-online.target",
        "Wants=network-online.target",
        "ExecStart=/usr/local/bin/nodewright boot",
        "Restart=on-failure",
        "RestartSec=15s",
        // Never give up for good: the start limit would stop the retries.
        "StartLimitIntervalSec=0",
        "RestartPreventExitStatus=2",
        "EnvironmentFile=-/etc/default/nodewright",
        "WantedBy=multi-user.target",
    ] {
        assert!(
            boot.lines().any(|l| l == line),
            "nodewright.service lacks {line:?}"
        );
    }
    let watch = unit("nodewright-watch.service");
    // Harmless until `nodewright watch` exists: conditioned, and not retried on a
    // usage error (an unknown command).
    assert!(watch.contains("ConditionPathExists=/var/lib/nodewright/state.json"));
    assert!(watch.contains("RestartPreventExitStatus=2"));
}

#[test]
fn provision_sh_passes_shellcheck() {
    if !installed_or_skip("shellcheck") {
        return;
    }
    let output = Command::new("shellcheck")
        .arg(workspace().join("packer/provision.sh"))
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
}

/// The image for these tests: the default recipe with this build's agent.
fn image() -> Option<Image> {
    supported_or_skip().then(|| Image::bake(&Recipe::default(), &node_binary()))
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o7777
}

#[test]
fn baked_image_has_the_agent_and_no_instance_identity() {
    let Some(image) = image() else {
        return;
    };
    let view = image.view();

    // The agent and its units, as provision.sh installs them.
    let agent = view.path("/usr/local/bin/nodewright");
    assert_eq!(sha256_file(&agent), sha256_file(&node_binary()));
    assert_eq!(mode(&agent), 0o755);
    assert_eq!(
        std::fs::read_to_string(view.path("/usr/lib/systemd/system/nodewright.service")).unwrap(),
        unit("nodewright.service")
    );
    let wants = view.path("/etc/systemd/system/multi-user.target.wants");
    assert!(wants.join("nodewright.service").symlink_metadata().is_ok());
    assert!(
        wants
            .join("nodewright-watch.service")
            .symlink_metadata()
            .is_err(),
        "the watch unit must stay disabled until a control-plane spec enables it"
    );
    assert!(
        view.path("/usr/lib/systemd/system/nodewright-watch.service")
            .is_file()
    );
    let release = std::fs::read_to_string(view.path("/etc/nodewright/image-release")).unwrap();
    assert!(
        release.contains("NODEWRIGHT_IMAGE_KUBERNETES_VERSION=\"1.33.4\""),
        "{release}"
    );
    assert!(
        release.contains("NODEWRIGHT_IMAGE_AGENT=\"nodewright "),
        "{release}"
    );
    // The OS prerequisites from packages.txt.
    for tool in [
        "/usr/sbin/conntrack",
        "/usr/sbin/iptables",
        "/usr/bin/socat",
        "/usr/sbin/modprobe",
    ] {
        // (symlink_metadata: alternatives are absolute links, meaningful only inside)
        assert!(
            view.path(tool).symlink_metadata().is_ok(),
            "{tool} is not in the image"
        );
    }

    // No instance identity: every instance starts as a first boot.
    assert_eq!(std::fs::read(view.path("/etc/machine-id")).unwrap(), b"");
    for gone in [
        "/var/lib/dbus/machine-id",
        "/etc/hostname",
        "/var/lib/systemd/random-seed",
        "/var/lib/nodewright/state.json",
        "/var/lib/cloud",
    ] {
        assert!(
            view.path(gone).symlink_metadata().is_err(),
            "{gone} is still in the image"
        );
    }
    let host_keys: Vec<_> = std::fs::read_dir(view.path("/etc/ssh"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        !host_keys
            .iter()
            .any(|n| n.to_string_lossy().starts_with("ssh_host_")),
        "{host_keys:?}"
    );
    let logs = files_under(&view.path("/var/log"));
    assert!(logs.is_empty(), "logs in the image: {logs:?}");
    // The state directory is there, so a failed first boot is recorded.
    assert_eq!(mode(&view.path("/var/lib/nodewright")), 0o700);
    assert!(view.path("/var/log/journal").is_dir());
}

/// Regular files below `dir` (symlinks such as systemd's /var/log/README are not logs).
fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            out.extend(files_under(&path));
        } else if kind.is_file() {
            out.push(path.display().to_string());
        }
    }
    out
}

/// A stand-in agent for provision.sh's own logic: answers `version`, and `prebake`
/// only when `with_prebake` (recording its arguments and leaving what a prebake leaves:
/// a cached asset, a bake record, and a run record that must not survive the seal).
fn stub_agent(dir: &Path, with_prebake: bool) -> std::path::PathBuf {
    let prebake = if with_prebake {
        r#"  prebake)
    [ "$2" = "--help" ] && exit 0
    shift
    echo "$*" > /var/lib/nodewright/prebake-args
    mkdir -p /var/cache/nodewright/sha256 && echo asset > /var/cache/nodewright/sha256/0a1b
    echo '{"baked": true}' > /var/lib/nodewright/bake.json
    echo '{"lastRun": {}}' > /var/lib/nodewright/state.json ;;
"#
    } else {
        ""
    };
    let script = format!(
        "#!/bin/sh\ncase \"$1\" in\n  version) echo 'nodewright 0.0.0-stub' ;;\n{prebake}  *) echo \"error: unrecognized subcommand '$1'\" >&2; exit 2 ;;\nesac\n"
    );
    let path = dir.join("nodewright");
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// A writable tree over the image's OS layers (below the baked one).
fn os_tree(image: &Image) -> Scratch {
    Scratch::over(&image.layers()[1..], true)
}

#[test]
fn provision_prebakes_when_asked_and_the_seal_keeps_what_prebake_made() {
    let Some(image) = image() else {
        return;
    };
    let stubs = tempfile::tempdir().unwrap();
    let agent = stub_agent(stubs.path(), true);
    let tree = os_tree(&image);
    let output = tree.provision(
        Some(&agent),
        &[
            ("NODEWRIGHT_PREBAKE_SPEC", "s3://state/prod/nodespec.yaml"),
            ("NODEWRIGHT_PREBAKE_ARGS", "--sha256 abc123"),
        ],
        &["agent", "seal"],
    );
    assert!(output.status.success(), "{}", text(&output));
    assert!(text(&output).contains("prebaking s3://state/prod/nodespec.yaml"));
    assert_eq!(
        std::fs::read_to_string(tree.path("/var/lib/nodewright/prebake-args")).unwrap(),
        "--spec s3://state/prod/nodespec.yaml --sha256 abc123\n"
    );
    assert!(tree.path("/var/cache/nodewright/sha256/0a1b").is_file());
    assert!(tree.path("/var/lib/nodewright/bake.json").is_file());
    assert!(!tree.path("/var/lib/nodewright/state.json").exists());
    let release = std::fs::read_to_string(tree.path("/etc/nodewright/image-release")).unwrap();
    assert!(
        release.contains("s3://state/prod/nodespec.yaml"),
        "{release}"
    );
}

#[test]
fn provision_refuses_to_prebake_with_an_agent_that_cannot() {
    let Some(image) = image() else {
        return;
    };
    let stubs = tempfile::tempdir().unwrap();
    let agent = stub_agent(stubs.path(), false);
    let tree = os_tree(&image);
    let output = tree.provision(
        Some(&agent),
        &[("NODEWRIGHT_PREBAKE_SPEC", "s3://state/prod/nodespec.yaml")],
        &["agent", "seal"],
    );
    assert!(!output.status.success());
    let said = text(&output);
    assert!(
        said.contains("asked to prebake s3://state/prod/nodespec.yaml")
            && said.contains("has no prebake command"),
        "{said}"
    );
    // Without a spec, the same agent bakes fine: prebake is skipped, and says so.
    let tree = os_tree(&image);
    let output = tree.provision(Some(&agent), &[], &["agent", "seal"]);
    assert!(output.status.success(), "{}", text(&output));
    assert!(text(&output).contains("nothing to prebake"));
}

#[test]
fn provision_fails_clearly_without_a_binary_or_with_an_unknown_stage() {
    let Some(image) = image() else {
        return;
    };
    let tree = os_tree(&image);
    let output = tree.provision(None, &[], &["agent"]);
    assert!(!output.status.success());
    assert!(
        text(&output).contains("the nodewright binary is missing"),
        "{}",
        text(&output)
    );
    assert!(!tree.path("/usr/local/bin/nodewright").exists());
    let output = tree.provision(None, &[], &["bake"]);
    assert!(!output.status.success());
    assert!(
        text(&output).contains("unknown stage: bake"),
        "{}",
        text(&output)
    );
}

#[test]
fn provision_leaves_the_services_of_extra_packages_disabled() {
    let Some(image) = image() else {
        return;
    };
    // e2fsprogs is in the image already (no download) and ships an enabled service.
    let tree = os_tree(&image);
    let wants = tree.path("/etc/systemd/system/multi-user.target.wants/e2scrub_reap.service");
    assert!(
        wants.symlink_metadata().is_ok(),
        "the base enables e2scrub_reap"
    );
    let output = tree.provision(None, &[("NODEWRIGHT_EXTRA_PACKAGES", "e2fsprogs")], &["os"]);
    assert!(output.status.success(), "{}", text(&output));
    assert!(
        text(&output).contains("disabling e2scrub_reap.service from e2fsprogs"),
        "{}",
        text(&output)
    );
    assert!(
        wants.symlink_metadata().is_err(),
        "e2scrub_reap is still enabled"
    );
}
