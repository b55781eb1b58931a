//! OS package installs against stand-ins for apt-get, dpkg and dpkg-query that answer
//! as the real ones do (the real ones would change this machine): a held lock, a
//! package unknown until `apt-get update`, an interrupted dpkg, an unknown package.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nodewright::host::packages::{Tools, install, missing};
use nodewright::model::PackageManager;
use nodewright::retry::{RetryError, RetryPolicy};

struct FakeApt {
    dir: tempfile::TempDir,
}

impl FakeApt {
    /// `lock_held`: how many install calls find the lock held (apt's own wait gave up).
    fn new(lock_held: u32) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        std::fs::write(dir.path().join("lock-held"), lock_held.to_string()).unwrap();
        script(
            dir.path(),
            "apt-get",
            &format!(
                r#"#!/bin/sh
echo "apt-get $* DEBIAN_FRONTEND=$DEBIAN_FRONTEND" >> {d}/log
for a in "$@"; do last="$a"; done
case " $* " in
  *" update "*) touch {d}/updated; exit 0 ;;
esac
held=$(cat {d}/lock-held)
if [ "$held" -gt 0 ]; then
  echo $((held - 1)) > {d}/lock-held
  echo "E: Could not get lock /var/lib/dpkg/lock-frontend. It is held by process 4242 (unattended-upgr)" >&2
  echo "E: Unable to acquire the dpkg frontend lock (/var/lib/dpkg/lock-frontend), is another process using it?" >&2
  exit 100
fi
if [ -e {d}/interrupted ]; then
  echo "E: dpkg was interrupted, you must manually run 'dpkg --configure -a' to correct the problem." >&2
  exit 100
fi
for a in "$@"; do
  case "$a" in
    conntrakc) echo "E: Unable to locate package conntrakc" >&2; exit 100 ;;
    socat) [ -e {d}/updated ] || {{ echo "E: Unable to locate package socat" >&2; exit 100; }} ;;
  esac
done
exit 0
"#
            ),
        );
        script(
            dir.path(),
            "dpkg",
            &format!("#!/bin/sh\necho \"dpkg $*\" >> {d}/log\nrm -f {d}/interrupted\n"),
        );
        script(
            dir.path(),
            "dpkg-query",
            // conntrack is installed, ethtool was removed (config files left), the
            // others are unknown: dpkg-query exits 1 but lists what it knows.
            "#!/bin/sh\necho 'conntrack ii '\necho 'ethtool rc '\necho 'dpkg-query: no packages found matching socat' >&2\nexit 1\n",
        );
        Self { dir }
    }

    fn tools(&self) -> Tools {
        Tools {
            apt_get: self.path("apt-get"),
            dpkg_query: self.path("dpkg-query"),
            dpkg: self.path("dpkg"),
            ..Tools::default()
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn log(&self) -> Vec<String> {
        std::fs::read_to_string(self.path("log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

fn script(dir: &Path, name: &str, text: &str) {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn quick(deadline_ms: u64) -> RetryPolicy {
    RetryPolicy {
        deadline: Duration::from_millis(deadline_ms),
        initial_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(40),
    }
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

#[tokio::test]
async fn a_held_lock_is_waited_for() {
    let apt = FakeApt::new(3);
    install(
        &apt.tools(),
        PackageManager::Apt,
        &names(&["conntrack", "ethtool"]),
        quick(5000),
    )
    .await
    .unwrap();
    let log = apt.log();
    assert_eq!(log.len(), 4, "{log:?}");
    // apt itself waits for the lock too, non-interactively, and names end the options.
    assert!(
        log[0].starts_with(
            "apt-get -o DPkg::Lock::Timeout=120 install -y -q --no-install-recommends -- conntrack ethtool"
        ),
        "{log:?}"
    );
    assert!(
        log[0].ends_with("DEBIAN_FRONTEND=noninteractive"),
        "{log:?}"
    );
}

#[tokio::test]
async fn a_lock_held_past_the_deadline_fails_with_the_holder() {
    let apt = FakeApt::new(1000);
    let err = install(
        &apt.tools(),
        PackageManager::Apt,
        &names(&["conntrack"]),
        quick(300),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, RetryError::Deadline { .. }), "{err}");
    let err = err.to_string();
    assert!(err.contains("gave up after"), "{err}");
    assert!(
        err.contains("unattended-upgr") || err.contains("lock-frontend"),
        "{err}"
    );
}

#[tokio::test]
async fn package_lists_are_fetched_when_a_package_is_unknown() {
    let apt = FakeApt::new(0);
    install(
        &apt.tools(),
        PackageManager::Apt,
        &names(&["socat"]),
        quick(2000),
    )
    .await
    .unwrap();
    let log = apt.log();
    assert_eq!(log.len(), 3, "{log:?}");
    assert!(
        log[1].starts_with("apt-get -o DPkg::Lock::Timeout=120 update"),
        "{log:?}"
    );
}

#[tokio::test]
async fn an_unknown_package_fails_at_once_naming_it() {
    let apt = FakeApt::new(0);
    let err = install(
        &apt.tools(),
        PackageManager::Apt,
        &names(&["conntrakc"]),
        quick(5000),
    )
    .await
    .unwrap_err();
    // A spec error: permanent, not retried until the deadline.
    assert!(matches!(err, RetryError::Permanent(_)), "{err}");
    assert!(
        err.to_string()
            .contains("Unable to locate package conntrakc"),
        "{err}"
    );
    // One install, one update, one install again: no retrying a spec error.
    assert_eq!(apt.log().len(), 3, "{:?}", apt.log());
}

#[tokio::test]
async fn an_interrupted_dpkg_is_repaired() {
    let apt = FakeApt::new(0);
    std::fs::write(apt.path("interrupted"), "").unwrap();
    install(
        &apt.tools(),
        PackageManager::Apt,
        &names(&["conntrack"]),
        quick(2000),
    )
    .await
    .unwrap();
    assert!(
        apt.log().iter().any(|l| l == "dpkg --configure -a"),
        "{:?}",
        apt.log()
    );
}

#[tokio::test]
async fn missing_packages_are_read_from_dpkg() {
    let apt = FakeApt::new(0);
    let missing = missing(
        &apt.tools(),
        PackageManager::Apt,
        &names(&["conntrack", "ethtool", "socat"]),
    )
    .await
    .unwrap();
    assert_eq!(missing, ["ethtool", "socat"]);
}

#[tokio::test]
async fn dnf_installs_and_rpm_reports_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    std::fs::write(dir.path().join("fails"), "1").unwrap();
    script(
        dir.path(),
        "dnf",
        &format!(
            r#"#!/bin/sh
echo "dnf $*" >> {d}/log
if [ "$(cat {d}/fails)" -gt 0 ]; then
  echo 0 > {d}/fails
  echo "Curl error (6): Couldn't resolve host name for https://cdn.amazonlinux.com/" >&2
  exit 1
fi
"#
        ),
    );
    script(
        dir.path(),
        "rpm",
        "#!/bin/sh\necho conntrack-tools\necho 'package iptables-nft is not installed'\nexit 1\n",
    );
    let tools = Tools {
        dnf: dir.path().join("dnf"),
        rpm: dir.path().join("rpm"),
        ..Tools::default()
    };
    let wanted = names(&["conntrack-tools", "iptables-nft"]);
    assert_eq!(
        missing(&tools, PackageManager::Dnf, &wanted).await.unwrap(),
        ["iptables-nft"]
    );
    install(
        &tools,
        PackageManager::Dnf,
        &names(&["iptables-nft"]),
        quick(2000),
    )
    .await
    .unwrap();
    let log = std::fs::read_to_string(dir.path().join("log")).unwrap();
    assert_eq!(
        log.lines().collect::<Vec<_>>(),
        [
            "dnf install -y -q --setopt=install_weak_deps=False -- iptables-nft",
            "dnf install -y -q --setopt=install_weak_deps=False -- iptables-nft"
        ]
    );
}
