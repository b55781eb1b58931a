//! Feature gates, the TLS the kubelet serves, and its kernel protections (seccomp,
//! kernel defaults, unsafe sysctls).

use serde_json::{Value, json};

use super::fields::Fields;
use crate::kops::kubelet_config::KubeletConfigSpec;

pub(super) fn config(k: &KubeletConfigSpec, t: &mut Fields<'_>) {
    let KubeletConfigSpec {
        feature_gates,
        tls_cipher_suites,
        tls_min_version,
        rotate_certificates,
        seccomp_default,
        protect_kernel_defaults,
        allowed_unsafe_sysctls,
        ..
    } = k;
    t.feature_gates(feature_gates.as_ref());
    if let Some(suites) = tls_cipher_suites.as_ref().filter(|s| !s.is_empty()) {
        t.config.insert("tlsCipherSuites".into(), json!(suites));
    }
    t.string("tlsMinVersion", tls_min_version.as_deref());
    t.extra_value("rotateCertificates", rotate_certificates.map(Value::from));
    t.boolean("seccompDefault", *seccomp_default);
    t.boolean("protectKernelDefaults", *protect_kernel_defaults);
    if let Some(sysctls) = allowed_unsafe_sysctls.as_ref().filter(|s| !s.is_empty()) {
        t.config
            .insert("allowedUnsafeSysctls".into(), json!(sysctls));
    }
}
