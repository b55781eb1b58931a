//! Where the control plane's keys and certificates live on the node (kubeadm's layout).
//! The PKI step writes them; the static pods, units and kubeconfigs reference them.

pub const PKI: &str = "/etc/kubernetes/pki";
pub const CA_CERT: &str = "/etc/kubernetes/pki/ca.crt";
pub const CA_KEY: &str = "/etc/kubernetes/pki/ca.key";
pub const FRONT_PROXY_CA_CERT: &str = "/etc/kubernetes/pki/front-proxy-ca.crt";
pub const SA_KEY: &str = "/etc/kubernetes/pki/sa.key";
pub const SA_PUB: &str = "/etc/kubernetes/pki/sa.pub";
pub const ENCRYPTION_CONFIG: &str = "/etc/kubernetes/pki/encryption-config.yaml";
pub const APISERVER_CERT: &str = "/etc/kubernetes/pki/apiserver.crt";
pub const APISERVER_KEY: &str = "/etc/kubernetes/pki/apiserver.key";
pub const APISERVER_KUBELET_CLIENT_CERT: &str = "/etc/kubernetes/pki/apiserver-kubelet-client.crt";
pub const APISERVER_KUBELET_CLIENT_KEY: &str = "/etc/kubernetes/pki/apiserver-kubelet-client.key";
pub const APISERVER_ETCD_CLIENT_CERT: &str = "/etc/kubernetes/pki/apiserver-etcd-client.crt";
pub const APISERVER_ETCD_CLIENT_KEY: &str = "/etc/kubernetes/pki/apiserver-etcd-client.key";
pub const FRONT_PROXY_CLIENT_CERT: &str = "/etc/kubernetes/pki/front-proxy-client.crt";
pub const FRONT_PROXY_CLIENT_KEY: &str = "/etc/kubernetes/pki/front-proxy-client.key";
pub const CONTROLLER_MANAGER_CLIENT_CERT: &str =
    "/etc/kubernetes/pki/controller-manager-client.crt";
pub const CONTROLLER_MANAGER_CLIENT_KEY: &str = "/etc/kubernetes/pki/controller-manager-client.key";
pub const CONTROLLER_MANAGER_SERVING_CERT: &str =
    "/etc/kubernetes/pki/controller-manager-serving.crt";
pub const CONTROLLER_MANAGER_SERVING_KEY: &str =
    "/etc/kubernetes/pki/controller-manager-serving.key";
pub const SCHEDULER_CLIENT_CERT: &str = "/etc/kubernetes/pki/scheduler-client.crt";
pub const SCHEDULER_CLIENT_KEY: &str = "/etc/kubernetes/pki/scheduler-client.key";
pub const SCHEDULER_SERVING_CERT: &str = "/etc/kubernetes/pki/scheduler-serving.crt";
pub const SCHEDULER_SERVING_KEY: &str = "/etc/kubernetes/pki/scheduler-serving.key";
pub const ADMIN_CLIENT_CERT: &str = "/etc/kubernetes/pki/admin-client.crt";
pub const ADMIN_CLIENT_KEY: &str = "/etc/kubernetes/pki/admin-client.key";
pub const ETCD_CA_CERT: &str = "/etc/kubernetes/pki/etcd/ca.crt";
/// etcd's client certificate for health checks and etcdctl (CN `etcd-client`).
pub const ETCD_CLIENT_CERT: &str = "/etc/kubernetes/pki/etcd/client.crt";
pub const ETCD_CLIENT_KEY: &str = "/etc/kubernetes/pki/etcd/client.key";
/// Per etcd cluster (`main`, `events`): server and peer certificates.
pub fn etcd_server_cert(cluster: &str) -> String {
    format!("/etc/kubernetes/pki/etcd/{cluster}-server.crt")
}
pub fn etcd_server_key(cluster: &str) -> String {
    format!("/etc/kubernetes/pki/etcd/{cluster}-server.key")
}
pub fn etcd_peer_cert(cluster: &str) -> String {
    format!("/etc/kubernetes/pki/etcd/{cluster}-peer.crt")
}
pub fn etcd_peer_key(cluster: &str) -> String {
    format!("/etc/kubernetes/pki/etcd/{cluster}-peer.key")
}
/// controller-shim's serving certificate (SANs: the API names, LB IPs, node IP, 127.0.0.1).
pub const SHIM_SERVING_CERT: &str = "/etc/kubernetes/controller-shim/serving.crt";
pub const SHIM_SERVING_KEY: &str = "/etc/kubernetes/controller-shim/serving.key";
/// Kubeconfigs: written by the cpods helper (they name the files above).
pub const ADMIN_KUBECONFIG: &str = "/etc/kubernetes/admin.conf";
pub const CONTROLLER_MANAGER_KUBECONFIG: &str = "/etc/kubernetes/controller-manager.conf";
pub const SCHEDULER_KUBECONFIG: &str = "/etc/kubernetes/scheduler.conf";
/// The kubelet's serving pair: issued here on control-plane nodes, written by the worker
/// flow from controller-shim's answer (`source::shim`) on workers. The client pair is
/// `model::kubelet::CLIENT_CERT`/`CLIENT_KEY`, on both.
pub const KUBELET_SERVING_CERT: &str = "/var/lib/kubelet/pki/kubelet-server.crt";
pub const KUBELET_SERVING_KEY: &str = "/var/lib/kubelet/pki/kubelet-server.key";
