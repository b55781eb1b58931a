//! Kubeconfig files for the node's components (kubelet, kube-proxy; the control plane
//! reuses it): the API server, the cluster CA, and a client certificate, all by path
//! so that renewing a certificate never rewrites the kubeconfig.

use serde_json::json;

use super::render::to_yaml;

/// One component's kubeconfig.
pub struct Kubeconfig<'a> {
    /// The user and context name, e.g. `kubelet`.
    pub user: &'a str,
    /// `https://api.internal.example.com`.
    pub server: &'a str,
    pub ca_file: &'a str,
    pub client_certificate: &'a str,
    pub client_key: &'a str,
}

impl Kubeconfig<'_> {
    pub fn render(&self) -> String {
        self.render_with(json!({
            "client-certificate": self.client_certificate,
            "client-key": self.client_key,
        }))
    }

    /// The same, authenticating with the token in `token_file` instead of a client
    /// certificate (the kubelet's bootstrap kubeconfig); the certificate fields are
    /// not used.
    pub fn render_token_file(&self, token_file: &str) -> String {
        self.render_with(json!({ "tokenFile": token_file }))
    }

    fn render_with(&self, user: serde_json::Value) -> String {
        let value = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{
                "name": "cluster",
                "cluster": {
                    "certificate-authority": self.ca_file,
                    "server": self.server,
                },
            }],
            "users": [{
                "name": self.user,
                "user": user,
            }],
            "contexts": [{
                "name": self.user,
                "context": {"cluster": "cluster", "user": self.user},
            }],
            "current-context": self.user,
            "preferences": {},
        });
        to_yaml(value)
    }
}
