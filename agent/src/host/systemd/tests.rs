//! Tests of `host::systemd`, kept beside it so the module itself stays short.

use super::*;

#[test]
fn parses_show_blocks() {
    // As systemd 252 prints it for a running and a failed unit.
    let text = "Id=kubelet.service\nLoadState=loaded\nActiveState=active\nSubState=running\nResult=success\nNRestarts=0\nActiveEnterTimestamp=Tue 2026-01-06 10:00:01 UTC\nUnitFileState=enabled\n\nId=containerd.service\nLoadState=loaded\nActiveState=failed\nSubState=failed\nResult=exit-code\nNRestarts=5\nActiveEnterTimestamp=\nUnitFileState=enabled\n";
    let units = parse_show(text);
    assert_eq!(units.len(), 2);
    assert_eq!(units[0].unit, "kubelet.service");
    assert_eq!(units[0].sub_state, "running");
    assert_eq!(units[1].active_state, "failed");
    assert_eq!(units[1].result, "exit-code");
    assert_eq!(units[1].restarts, 5);
}

#[test]
fn parses_load_states_in_the_order_asked() {
    // As systemd 252 prints it for a loaded unit, a drifted one and a masked one.
    let text = "LoadState=loaded\nNeedDaemonReload=no\n\nLoadState=loaded\nNeedDaemonReload=yes\n\nLoadState=masked\nNeedDaemonReload=no\n";
    let states = parse_loaded(text);
    let pairs: Vec<(&str, bool)> = states
        .iter()
        .map(|l| (l.load_state.as_str(), l.need_reload))
        .collect();
    assert_eq!(
        pairs,
        [("loaded", false), ("loaded", true), ("masked", false)]
    );
    // A block without the property counts as needing a reload.
    assert!(parse_loaded("LoadState=not-found\n")[0].need_reload);
}

#[tokio::test]
async fn files_only_cannot_tell_and_skips_every_job_with_its_reason() {
    let files = FilesOnly::new("root is /tmp/x, not /");
    assert_eq!(files.is_active("a.service").await.unwrap(), None);
    assert_eq!(files.is_enabled("a.service").await.unwrap(), None);
    assert_eq!(files.loaded(&["a.service".to_owned()]).await.unwrap(), None);
    let skipped = Job::Skipped("root is /tmp/x, not /".to_owned());
    assert_eq!(files.daemon_reload().await.unwrap(), skipped);
    assert_eq!(files.enable("a.service").await.unwrap(), skipped);
    assert_eq!(files.start("a.service", true).await.unwrap(), skipped);
    assert_eq!(files.restart("a.service", false).await.unwrap(), skipped);
    assert_eq!(stop_unit(&files, "a.service", true).await.unwrap(), skipped);
}

#[tokio::test]
async fn stopping_a_unit_whose_file_is_gone_is_done() {
    let systemd = fake::FakeSystemd::default();
    systemd.fail("stop a.service", "Unit a.service not loaded.");
    systemd.fail("disable a.service", "Unit file a.service does not exist.");
    assert_eq!(
        stop_unit(&systemd, "a.service", true).await.unwrap(),
        Job::Done
    );
    systemd.fail("stop b.service", "Access denied");
    let error = stop_unit(&systemd, "b.service", true).await.unwrap_err();
    assert_eq!(error.to_string(), "systemctl stop b.service: Access denied");
    // Not disabled after a refused stop.
    assert_eq!(
        systemd.calls(),
        ["stop a.service", "disable a.service", "stop b.service"]
    );
}

#[test]
fn the_own_service_is_read_from_the_cgroup() {
    assert_eq!(
        service_of_cgroups("0::/system.slice/nodewright.service\n").as_deref(),
        Some("nodewright.service")
    );
    assert_eq!(
        service_of_cgroups("0::/user.slice/user-0.slice/session-1.scope\n"),
        None
    );
}
