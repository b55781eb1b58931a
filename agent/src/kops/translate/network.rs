//! `Networking`: what nodeup does on a worker for each CNI kops installs
//! (`nodeup/pkg/model/networking/`). The CNI itself is an add-on kops deploys; the node
//! only gets host settings, and the CNI plugins archive (see `assets`).

use serde_json::json;

use super::Context;
use super::host::{Extras, Family, family};
use crate::kops::nodeup_config::{Calico, Cilium, Cni, Networking};
use crate::kops::refusals::Ledger;

/// kops's mount of the cgroup2 hierarchy Cilium attaches its programs to.
const CILIUM_CGROUP_MOUNT: &str = "[Unit]
Description=Cilium Cgroup2 mounts
Documentation=http://docs.cilium.io/
DefaultDependencies=no
Before=local-fs.target umount.target kubelet.service

[Mount]
What=cgroup2
Where=/run/cilium/cgroupv2
Type=cgroup2

[Install]
WantedBy=multi-user.target
";

const MANAGE_FOREIGN_ROUTES: &str = "
# Do not clobber any routes or rules added by CNI.
[Network]
ManageForeignRoutes=no
ManageForeignRoutingPolicyRules=no
";

const CLOUD_INIT_NO_HOTPLUG: &str =
    "# Disable cloud-init network hotplug to prevent interference with CNI ENI management.
# See: https://github.com/kubernetes/kops/issues/17881
updates:
  network:
    when: [boot-new-instance]
";

pub(super) fn translate(
    context: &Context<'_>,
    networking: &Networking,
    extras: &mut Extras,
    ledger: &mut Ledger,
) {
    let Networking {
        // Read by the cluster section and for IPv6-only (::/0).
        non_masquerade_cidr: _,
        service_cluster_ip_range: _,
        // Refused with the other clouds' fields.
        network_id: _,
        amazon_vpc,
        calico,
        cilium,
        cni,
        flannel,
        kube_router,
        kindnet,
        egress_proxy,
    } = networking;
    let kubelet_max_pods = context.config.kubelet_config.max_pods.is_some();
    if amazon_vpc.is_some() && !kubelet_max_pods {
        ledger.refuse(
            "Networking.amazonVPC",
            "the AWS VPC CNI: nodeup sizes maxPods from the instance type's ENI limits, which nodewright does not know; set kubelet.maxPods in the instance group to translate it",
        );
    }
    ledger.refuse_if(
        egress_proxy.is_some(),
        "Networking.egressProxy",
        "only API server instance groups carry it (workers get the proxy from the user data script)",
    );
    ledger.refuse_if(
        kindnet.is_some(),
        "Networking.kindnet",
        "kindnet: nodeup loads nfnetlink_queue instead of br_netfilter, which nodewright does not do",
    );
    if let Some(Cni { uses_secondary_ip }) = cni
        && *uses_secondary_ip
    {
        ledger.note(
            "Networking.cni.usesSecondaryIP",
            "nodeup then passes the instance's private address as --node-ip; nodewright always does",
        );
    }
    if flannel.is_some() {
        ledger.note(
            "Networking.flannel",
            "nodeup does nothing more for Flannel on a node",
        );
    }
    if kube_router.is_some() {
        ledger.note(
            "Networking.kubeRouter",
            "nodeup does nothing more for kube-router on a node",
        );
    }
    let host = &context.facts.host;
    if let Some(Calico { wireguard_enabled }) = calico {
        // nodeup installs WireGuard on Ubuntu, unless IPv6-only or switched off.
        if host.distro == "ubuntu" && !context.ipv6_only && *wireguard_enabled != Some(false) {
            extras.package("wireguard");
        }
    }
    if let Some(Cilium { ipam }) = cilium {
        if ipam == "eni" {
            ledger.refuse(
                "Networking.cilium.ipam",
                "eni: Cilium's ENI mode needs the instance type's ENI limits and nodeup's ENI udev and networkd changes, which nodewright does not make",
            );
        }
        for key in [
            "net.ipv4.conf.all.rp_filter",
            "net.ipv4.conf.lxc*.rp_filter",
            "net.ipv4.conf.cilium_*.rp_filter",
        ] {
            extras.sysctl("Networking.cilium", key, "0", ledger);
        }
        extras.units.push(json!({
            "name": "run-cilium-cgroupv2.mount",
            "content": CILIUM_CGROUP_MOUNT,
        }));
        ledger.note(
            "Networking.cilium",
            "the BPF filesystem: systemd mounts /sys/fs/bpf itself (nodeup adds sys-fs-bpf.mount only where it is not mounted)",
        );
        let version: f32 = host.distro_version.parse().unwrap_or(0.0);
        let debian12 = host.distro == "debian" && version >= 12.0;
        let ubuntu = |at: f32| host.distro == "ubuntu" && version >= at;
        if family(&host.distro) != Family::Other
            && (debian12 || ubuntu(22.04) || (host.distro == "amzn" && version >= 2023.0))
        {
            extras.files.push(json!({
                "path": "/usr/lib/systemd/networkd.conf.d/40-disable-manage-foreign-routes.conf",
                "content": MANAGE_FOREIGN_ROUTES,
            }));
        }
        if debian12 || ubuntu(24.04) {
            extras.files.push(json!({
                "path": "/etc/cloud/cloud.cfg.d/99-disable-network-hotplug.cfg",
                "content": CLOUD_INIT_NO_HOTPLUG,
            }));
        }
    }
}
