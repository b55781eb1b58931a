//! The host settings every Kubernetes node needs: kernel parameters and modules, swap
//! off, OS packages, time sync. (The spec's own `sysctls` and `kernelModules` are
//! rendered by `base`; here are the defaults they override or extend.)

use super::ModelError;
use super::builder::{StateBuilder, fixed_path};
use super::desired::{DesiredService, Ownership};
use crate::facts::Facts;
use crate::facts::PackageManager;
use crate::spec::{NodeIpFamily, NodeSpec, TimeDaemon, UnitName};

const COMPONENT: &str = "host";

/// Kernel modules every node loads: bridge netfilter (the bridge sysctls and kube-proxy
/// need it) and overlayfs (containerd's snapshotter).
pub const DEFAULT_MODULES: &[&str] = &["br_netfilter", "overlay"];

/// kops's sysctls (`nodeup/pkg/model/sysctls.go`), which nodeup sets on every node,
/// with the NodePort range kept out of the ephemeral ports as kops keeps its default
/// one: nodewright's defaults start from them, and the kops translation sets them as
/// nodeup does (with the cluster's own NodePort range).
pub const KOPS_SYSCTLS: &[(&str, &str)] = &[
    // mmap-heavy workloads (Elasticsearch, databases).
    ("vm.max_map_count", "1048576"),
    // A hung CPU should reboot the node rather than leave it half alive.
    ("kernel.softlockup_panic", "1"),
    ("kernel.softlockup_all_cpu_backtrace", "1"),
    // Keep the NodePort range out of the ephemeral port range.
    (RESERVED_PORTS, "30000-32767"),
    ("net.core.somaxconn", "32768"),
    ("net.core.rmem_max", "16777216"),
    ("net.core.wmem_max", "16777216"),
    ("net.ipv4.tcp_wmem", "4096 87380 16777216"),
    ("net.ipv4.tcp_rmem", "4096 87380 16777216"),
    ("net.ipv4.tcp_max_syn_backlog", "8096"),
    ("net.ipv4.tcp_slow_start_after_idle", "0"),
    ("net.ipv4.tcp_tw_reuse", "1"),
    ("net.core.netdev_max_backlog", "16384"),
    ("fs.file-max", "2097152"),
    ("fs.inotify.max_user_instances", "8192"),
    // What the kubelet checks with protectKernelDefaults (the rest: PRODUCTION_SYSCTLS).
    ("vm.overcommit_memory", "1"),
    ("kernel.panic", "10"),
    ("kernel.panic_on_oops", "1"),
    // AWS: neighbour table garbage collection must not drop entries of small subnets.
    ("net.ipv4.neigh.default.gc_thresh1", "0"),
];

/// The sysctl that reserves the NodePort range.
pub const RESERVED_PORTS: &str = "net.ipv4.ip_local_reserved_ports";

/// What nodewright sets beyond kops's set (see docs/kops-differences.md).
const PRODUCTION_SYSCTLS: &[(&str, &str)] = &[
    ("fs.inotify.max_user_watches", "524288"),
    // What the kubelet checks with protectKernelDefaults.
    ("vm.panic_on_oom", "0"),
    ("kernel.keys.root_maxkeys", "1000000"),
    ("kernel.keys.root_maxbytes", "25000000"),
    // Pods' traffic is routed and bridged through the node (kops forwards IPv4 only on
    // IPv4 clusters).
    ("net.ipv4.ip_forward", "1"),
    ("net.bridge.bridge-nf-call-iptables", "1"),
    ("net.bridge.bridge-nf-call-ip6tables", "1"),
];

/// The Amazon Time Sync Service, on every instance's link-local addresses.
pub const AWS_TIME_IPV4: &str = "169.254.169.123";
pub const AWS_TIME_IPV6: &str = "fd00:ec2::123";

const SWAP_TARGET: &str = "/etc/systemd/system/swap.target";

pub fn render(spec: &NodeSpec, facts: &Facts, out: &mut StateBuilder) -> Result<(), ModelError> {
    let host = &spec.host;
    for module in DEFAULT_MODULES {
        out.module(module);
    }
    if host.default_sysctls {
        let overridden = |key: &str| spec.sysctls.keys().any(|k| k.as_str() == key);
        let mut defaults: Vec<(&str, &str)> = KOPS_SYSCTLS
            .iter()
            .chain(PRODUCTION_SYSCTLS)
            .copied()
            .collect();
        let ipv6 = spec
            .kubelet
            .as_ref()
            .is_some_and(|k| k.node_ip != NodeIpFamily::Ipv4);
        if ipv6 {
            defaults.push(("net.ipv6.conf.all.forwarding", "1"));
        }
        for (key, value) in defaults {
            if !overridden(key) {
                out.sysctl(COMPONENT, key, value.to_owned())?;
            }
        }
    }
    if host.disable_swap {
        // Masked, swap.target pulls in no swap unit at boot; swapoff handles the running one.
        out.symlink(COMPONENT, fixed_path(SWAP_TARGET), fixed_path("/dev/null"))?;
        out.swap_off();
    }
    if !host.packages.is_empty() {
        let (distro, version) = (&facts.host.distro, &facts.host.distro_version);
        let manager = PackageManager::for_distro(distro, version).ok_or_else(|| {
            ModelError::Node(format!(
                "host.packages: no package manager known for {distro} {version} (apt for debian and ubuntu, dnf for Amazon Linux 2023, Fedora and the RHEL family from 8)"
            ))
        })?;
        out.packages(
            COMPONENT,
            manager,
            host.packages.iter().map(|p| p.to_string()),
        )?;
    }
    if let Some(time_sync) = &host.time_sync {
        time_sync_files(time_sync.daemon, facts, out)?;
    }
    Ok(())
}

/// Points the image's time daemon at the Amazon Time Sync Service and restarts it
/// when that changes.
fn time_sync_files(
    daemon: TimeDaemon,
    facts: &Facts,
    out: &mut StateBuilder,
) -> Result<(), ModelError> {
    let mut servers = vec![AWS_TIME_IPV4];
    if facts.instance.ipv6.is_some() {
        servers.push(AWS_TIME_IPV6);
    }
    let header = "# Managed by nodewright: the Amazon Time Sync Service.\n";
    let (path, content, unit) = match daemon {
        TimeDaemon::Chrony => {
            let distro = facts.host.distro.as_str();
            if !matches!(distro, "debian" | "ubuntu") {
                return Err(ModelError::Node(format!(
                    "host.timeSync: chrony's sources directory is known for debian and ubuntu, not {distro:?} (Amazon Linux already uses {AWS_TIME_IPV4})"
                )));
            }
            let mut text = header.to_owned();
            for server in &servers {
                text.push_str(&format!(
                    "server {server} prefer iburst minpoll 4 maxpoll 4\n"
                ));
            }
            (
                "/etc/chrony/sources.d/nodewright-aws.sources",
                text,
                "chrony.service",
            )
        }
        TimeDaemon::SystemdTimesyncd => (
            "/etc/systemd/timesyncd.conf.d/50-nodewright-aws.conf",
            format!("{header}[Time]\nNTP={}\n", servers.join(" ")),
            "systemd-timesyncd.service",
        ),
    };
    let path = fixed_path(path);
    out.file(COMPONENT, path.clone(), content, Ownership::root(0o644))?;
    out.service(
        COMPONENT,
        DesiredService {
            unit: UnitName::try_from(unit)?,
            enabled: true,
            running: true,
            inputs: vec![path],
            ready_with_peers: false,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{desired_state, test_spec};

    #[test]
    fn the_spec_overrides_a_default_sysctl_without_a_conflict() {
        let spec = test_spec("sysctls:\n  net.core.somaxconn: 65535\n");
        let desired = desired_state(&spec, &Facts::example()).unwrap();
        assert_eq!(desired.sysctls["net.core.somaxconn"], "65535");
        assert_eq!(desired.sysctls["vm.max_map_count"], "1048576");
        let spec =
            test_spec("host:\n  defaultSysctls: false\nsysctls:\n  net.core.somaxconn: 65535\n");
        let desired = desired_state(&spec, &Facts::example()).unwrap();
        assert_eq!(desired.sysctls.len(), 1);
    }

    #[test]
    fn packages_need_a_known_distribution() {
        let spec = test_spec("host:\n  packages: [conntrack]\n");
        let mut facts = Facts::example();
        let desired = desired_state(&spec, &facts).unwrap();
        assert_eq!(desired.packages.unwrap().manager, PackageManager::Apt);
        facts.host.distro = "rocky".to_owned();
        facts.host.distro_version = "9.4".to_owned();
        let desired = desired_state(&spec, &facts).unwrap();
        assert_eq!(desired.packages.unwrap().manager, PackageManager::Dnf);
        // Amazon Linux 2 has yum only.
        facts.host.distro = "amzn".to_owned();
        facts.host.distro_version = "2".to_owned();
        let err = desired_state(&spec, &facts).unwrap_err().to_string();
        assert!(err.contains("amzn 2"), "{err}");
        facts.host.distro = "gentoo".to_owned();
        let err = desired_state(&spec, &facts).unwrap_err().to_string();
        assert!(
            err.contains("host.packages") && err.contains("gentoo"),
            "{err}"
        );
    }

    #[test]
    fn swap_and_time_sync() {
        let desired = desired_state(&test_spec(""), &Facts::example()).unwrap();
        assert!(desired.swap_off);
        assert_eq!(desired.symlinks[0].path.as_str(), SWAP_TARGET);
        let desired = desired_state(
            &test_spec("host:\n  disableSwap: false\n"),
            &Facts::example(),
        )
        .unwrap();
        assert!(!desired.swap_off && desired.symlinks.is_empty());

        let spec = test_spec("host:\n  timeSync:\n    daemon: chrony\n");
        let mut facts = Facts::example();
        facts.instance.ipv6 = Some("2600:1f18::5".parse().unwrap());
        let desired = desired_state(&spec, &facts).unwrap();
        let sources = desired
            .file("/etc/chrony/sources.d/nodewright-aws.sources")
            .unwrap();
        let text = String::from_utf8_lossy(sources.content.bytes());
        assert!(
            text.contains("server 169.254.169.123 prefer iburst"),
            "{text}"
        );
        assert!(
            text.contains("server fd00:ec2::123 prefer iburst"),
            "{text}"
        );
        assert_eq!(desired.services[0].unit.as_str(), "chrony.service");
        facts.host.distro = "amzn".to_owned();
        let err = desired_state(&spec, &facts).unwrap_err().to_string();
        assert!(err.contains("host.timeSync"), "{err}");
    }
}
