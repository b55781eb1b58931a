//! Swap, turned off when it is on (the kubelet refuses to run with it by default; the
//! model masks swap.target to keep it off across reboots). In a container, the swap
//! in /proc/swaps is the host's, as its kernel is: nothing is planned.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::engine::action::Change;
use crate::engine::apply::{Context, Finished, Outcome};
use crate::engine::keys::AppliedKey;
use crate::engine::planner::Planner;
use crate::engine::state::State;
use crate::engine::trigger::Trigger;
use crate::host::swap;

pub(crate) fn plan(p: &mut Planner) -> Option<usize> {
    if !p.desired.swap_off {
        return None;
    }
    if let Some(container) = p.host.container() {
        // swapoff would fail ("Not superuser") and every service would wait on it.
        tracing::info!(
            container,
            "swap left alone: running in a container, its swap belongs to the host"
        );
        return None;
    }
    let trigger = Trigger::new(AppliedKey::SwapOff, BTreeMap::new());
    let (swaps, reason) = if p.host.skip_reason().is_none() {
        let active = swap::active(p.host.root()).unwrap_or_default();
        if active.is_empty() {
            return None;
        }
        let reason = format!("swap is on: {}", active.join(", "));
        (active, reason)
    } else {
        p.changed(&trigger)?;
        (Vec::new(), "never turned off by nodewright".to_owned())
    };
    Some(p.push(SwapOff { swaps, trigger }, reason, vec![]))
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SwapOff {
    /// The active swap areas seen when planning (empty off a live host).
    pub swaps: Vec<String>,
    pub trigger: Trigger,
}

impl Change for SwapOff {
    fn verb(&self) -> &'static str {
        "turn off"
    }

    fn target(&self) -> String {
        "swap".to_owned()
    }

    async fn run(&mut self, cx: &Context) -> Outcome {
        if let Some(reason) = cx.host.skip_reason() {
            return Outcome::Skipped(reason.to_owned());
        }
        Outcome::of(swap::off().await)
    }

    fn record(&self, finished: &Finished<'_>, state: &mut State) {
        self.trigger.record(state, &finished.at, finished.outcome);
    }
}

#[cfg(test)]
mod tests {
    use crate::engine::keys::AppliedKey;
    use crate::engine::kinds::testing::{Node, outcomes};

    #[tokio::test]
    async fn off_a_live_host_swap_is_turned_off_once() {
        let mut node = Node::new();
        node.want(|b| b.swap_off());
        let plan = node.plan().await;
        assert_eq!(
            plan.render(),
            "1 changes:\n  - turn off swap: never turned off by nodewright\n"
        );
        let report = node.apply(&plan).await;
        assert_eq!(
            outcomes(&report),
            [format!(
                "turn off swap: skipped: root is {}, not /",
                node.root().display()
            )]
        );
        assert!(node.state.applied[&AppliedKey::SwapOff].inputs.is_empty());
        assert!(node.plan().await.is_empty());
        // Not wanted: nothing planned, whatever the record.
        node.want(|_| {});
        assert!(node.plan().await.is_empty());
    }

    const SWAPS: &str = "Filename\tType\tSize\tUsed\tPriority\n/swapfile file 1048572 0 -2\n";

    #[tokio::test]
    async fn on_a_live_host_active_swap_is_turned_off() {
        let mut node = Node::live(None);
        node.put("/proc/swaps", SWAPS);
        node.want(|b| b.swap_off());
        assert_eq!(
            node.planned().await,
            ["turn off swap: swap is on: /swapfile"]
        );
    }

    #[tokio::test]
    async fn in_a_container_the_hosts_swap_is_left_alone() {
        // systemd-nspawn shows the host's /proc/swaps; swapoff there is refused.
        let mut node = Node::live(Some("systemd-nspawn"));
        node.put("/proc/swaps", SWAPS);
        node.want(|b| b.swap_off());
        assert!(node.plan().await.is_empty());
    }
}
