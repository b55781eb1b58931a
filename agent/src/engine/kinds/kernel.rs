//! Kernel settings: modules loaded and sysctls applied on the running kernel (the
//! files that persist them across reboots are plain files). What the running kernel
//! can be asked decides: a live host that owns its kernel is compared key by key; in
//! a container only its own namespaced keys are; off a live host (or for what a
//! container cannot see) the settings are applied again when their file changes.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::engine::action::Change;
use crate::engine::apply::{Context, Finished, Outcome};
use crate::engine::keys::AppliedKey;
use crate::engine::planner::Planner;
use crate::engine::state::State;
use crate::engine::trigger::Trigger;
use crate::host::kernel;

pub(crate) fn plan_modules(p: &mut Planner) -> Option<usize> {
    let file = p.desired.modules_file.clone()?;
    let trigger = Trigger::new(
        AppliedKey::Modules,
        p.input_digests(std::slice::from_ref(&file)),
    );
    // Only a live host that owns its kernel can tell what is loaded; elsewhere (a
    // sandbox root, a container) loading is re-planned when the list changes.
    let (modules, reason) = if p.host.owns_kernel() {
        let missing: Vec<String> = p
            .desired
            .modules
            .iter()
            .filter(|m| !kernel::module_loaded(m))
            .cloned()
            .collect();
        if missing.is_empty() {
            return None;
        }
        let reason = format!("not loaded: {}", missing.join(", "));
        (missing, reason)
    } else {
        let changed = p.changed(&trigger)?;
        let reason = if changed.is_empty() {
            "never loaded by nodewright".to_owned()
        } else {
            format!("{} changed", file)
        };
        (p.desired.modules.clone(), reason)
    };
    let after = p.steps_writing([file.to_string()]);
    Some(p.push(LoadModules { modules, trigger }, reason, after))
}

/// Plans the sysctls, after the modules (bridge sysctls exist only once
/// br_netfilter is loaded).
pub(crate) fn plan_sysctls(p: &mut Planner, modules: Option<usize>) -> Option<usize> {
    let file = p.desired.sysctl_file.clone()?;
    let trigger = Trigger::new(
        AppliedKey::Sysctls,
        p.input_digests(std::slice::from_ref(&file)),
    );
    let live = p.host.skip_reason().is_none();
    let container = p.host.container().is_some();
    // What the running kernel can be asked: every key on a host that owns its
    // kernel, the namespaced ones in a container; the rest follows the trigger.
    let root = p.host.root();
    let checkable = |key: &str| {
        live && (!container || (kernel::namespaced(key) && kernel::writable(root, key)))
    };
    let differing: BTreeMap<String, String> = p
        .desired
        .sysctls
        .iter()
        .filter(|(key, _)| checkable(key))
        .filter(|(key, value)| {
            kernel::read_sysctl(root, key).ok() != Some(kernel::normalize(value))
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let changed = p.changed(&trigger);
    let mut values = differing.clone();
    if changed.is_some() {
        values.extend(
            p.desired
                .sysctls
                .iter()
                .filter(|(key, _)| !checkable(key))
                .map(|(k, v)| (k.clone(), v.clone())),
        );
    }
    if values.is_empty() {
        return None;
    }
    let reason = if !differing.is_empty() {
        format!(
            "differ on the running kernel: {}",
            differing.keys().cloned().collect::<Vec<_>>().join(", ")
        )
    } else if changed.is_some_and(|c| !c.is_empty()) {
        format!("{file} changed")
    } else {
        "never applied by nodewright".to_owned()
    };
    let mut after = p.steps_writing([file.to_string()]);
    after.extend(modules);
    Some(p.push(ApplySysctls { values, trigger }, reason, after))
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoadModules {
    pub modules: Vec<String>,
    pub trigger: Trigger,
}

impl Change for LoadModules {
    fn verb(&self) -> &'static str {
        "load"
    }

    fn target(&self) -> String {
        "kernel modules".to_owned()
    }

    async fn run(&mut self, cx: &Context) -> Outcome {
        self.trigger.resolve_pending(&cx.fetcher);
        if let Some(reason) = cx.host.skip_reason() {
            return Outcome::Skipped(reason.to_owned());
        }
        if let Some(container) = cx.host.container() {
            return Outcome::Skipped(format!(
                "running in a container ({container}): kernel modules belong to the host"
            ));
        }
        let mut errors = Vec::new();
        for module in &self.modules {
            if let Err(e) = kernel::load_module(module).await {
                errors.push(e);
            }
        }
        Outcome::of(if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        })
    }

    fn record(&self, finished: &Finished<'_>, state: &mut State) {
        self.trigger.record(state, &finished.at, finished.outcome);
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApplySysctls {
    pub values: BTreeMap<String, String>,
    pub trigger: Trigger,
}

impl Change for ApplySysctls {
    fn verb(&self) -> &'static str {
        "apply"
    }

    fn target(&self) -> String {
        "sysctls".to_owned()
    }

    async fn run(&mut self, cx: &Context) -> Outcome {
        self.trigger.resolve_pending(&cx.fetcher);
        if let Some(reason) = cx.host.skip_reason() {
            return Outcome::Skipped(reason.to_owned());
        }
        let root = cx.host.root().to_owned();
        let container = cx.host.container().map(str::to_owned);
        let values = self.values.clone();
        // In a container, kernel-wide keys, keys its kernel view lacks (bridge sysctls
        // without br_netfilter) and keys it may not write are the host's: say so.
        let written = tokio::task::spawn_blocking(move || {
            let mut left = Vec::new();
            for (key, value) in &values {
                if container.is_some()
                    && (!kernel::namespaced(key) || !kernel::sysctl_path(&root, key).exists())
                {
                    left.push(key.clone());
                    continue;
                }
                match kernel::write_sysctl(&root, key, value) {
                    Ok(()) => {}
                    Err(e) if container.is_some() && kernel::refused(&e) => left.push(key.clone()),
                    Err(e) => return Err(format!("{key} = {value}: {e}")),
                }
            }
            Ok(left)
        })
        .await
        .unwrap_or_else(|e| Err(format!("internal error: {e}")));
        match written {
            Ok(left) if !left.is_empty() => Outcome::Skipped(format!(
                "running in a container ({}): left to the host: {}",
                cx.host.container().unwrap_or_default(),
                left.join(", ")
            )),
            Ok(_) => Outcome::Done,
            Err(e) => Outcome::Failed(e),
        }
    }

    fn record(&self, finished: &Finished<'_>, state: &mut State) {
        self.trigger.record(state, &finished.at, finished.outcome);
    }
}

#[cfg(test)]
mod tests {
    use crate::engine::action::Action;
    use crate::engine::keys::AppliedKey;
    use crate::engine::kinds::testing::{Node, outcomes};

    fn want(node: &mut Node, forward: &str) {
        let forward = forward.to_owned();
        node.want(move |b| {
            b.module("br_netfilter");
            b.module("overlay");
            b.sysctl("t", "net.ipv4.ip_forward", forward).unwrap();
        });
    }

    #[tokio::test]
    async fn off_a_live_host_settings_follow_their_files() {
        let mut node = Node::new();
        want(&mut node, "1");
        let plan = node.plan().await;
        let lines: Vec<String> = plan.steps.iter().map(|s| s.describe()).collect();
        assert_eq!(
            lines[lines.len() - 2..],
            [
                "load kernel modules: never loaded by nodewright",
                "apply sysctls: never applied by nodewright",
            ]
        );
        // The sysctls wait for the modules and for their file.
        let load = plan.steps.len() - 2;
        assert!(plan.steps[load + 1].after.contains(&load));
        let Action::ApplySysctls(apply) = &plan.steps[load + 1].action else {
            panic!("not the sysctls")
        };
        assert_eq!(apply.values["net.ipv4.ip_forward"], "1");
        let report = node.apply(&plan).await;
        let skipped = format!("skipped: root is {}, not /", node.root().display());
        assert_eq!(
            outcomes(&report)[outcomes(&report).len() - 2..],
            [
                format!("load kernel modules: {skipped}"),
                format!("apply sysctls: {skipped}"),
            ]
        );
        let record = &node.state.applied[&AppliedKey::Sysctls];
        assert_eq!(record.outcome, skipped);
        assert!(
            record
                .inputs
                .contains_key("/etc/sysctl.d/99-nodewright.conf")
        );
        assert!(node.plan().await.is_empty());

        want(&mut node, "0");
        let lines = node.planned().await;
        assert_eq!(
            lines.last().unwrap(),
            "apply sysctls: /etc/sysctl.d/99-nodewright.conf changed"
        );
        // The module list did not change: nothing to load.
        assert!(!lines.iter().any(|l| l.starts_with("load")));
    }
}
