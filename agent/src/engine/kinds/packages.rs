//! OS packages through the distribution's package manager: on a live host, those not
//! installed; off one (where installing is skipped), the list until nodewright has
//! installed it once.

use serde::Serialize;

use crate::engine::action::Change;
use crate::engine::apply::{Context, Finished, Outcome};
use crate::engine::keys::AppliedKey;
use crate::engine::plan::PlanError;
use crate::engine::planner::Planner;
use crate::engine::state::State;
use crate::engine::trigger::Trigger;
use crate::host::packages;
use crate::model::PackageManager;

pub(crate) async fn plan(p: &mut Planner<'_>) -> Result<Option<usize>, PlanError> {
    let Some(wanted) = &p.desired.packages else {
        return Ok(None);
    };
    let manager = wanted.manager;
    let trigger = Trigger::new(
        AppliedKey::Packages,
        wanted
            .names
            .iter()
            .map(|n| (format!("{}:{n}", manager.as_str()), "installed".to_owned()))
            .collect(),
    );
    let (names, reason) = if p.host.skip_reason().is_none() {
        let missing = packages::missing(&packages::Tools::default(), manager, &wanted.names)
            .await
            .map_err(PlanError::Packages)?;
        if missing.is_empty() {
            return Ok(None);
        }
        let reason = format!("not installed: {}", missing.join(", "));
        (missing, reason)
    } else {
        let Some(changed) = p.changed(&trigger) else {
            return Ok(None);
        };
        let reason = if changed.is_empty() {
            "never installed by nodewright".to_owned()
        } else {
            format!("changed: {}", changed.join(", "))
        };
        (wanted.names.clone(), reason)
    };
    let install = InstallPackages {
        manager,
        packages: names,
        trigger,
    };
    Ok(Some(p.push(install, reason, vec![])))
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InstallPackages {
    pub manager: PackageManager,
    pub packages: Vec<String>,
    pub trigger: Trigger,
}

impl Change for InstallPackages {
    fn verb(&self) -> &'static str {
        "install"
    }

    fn target(&self) -> String {
        format!("{} packages", self.manager.as_str())
    }

    async fn run(&mut self, cx: &Context) -> Outcome {
        if let Some(reason) = cx.host.skip_reason() {
            return Outcome::Skipped(reason.to_owned());
        }
        Outcome::of(
            packages::install(
                &packages::Tools::default(),
                self.manager,
                &self.packages,
                crate::retry::RetryPolicy::with_deadline(packages::DEADLINE),
            )
            .await,
        )
    }

    fn record(&self, finished: &Finished<'_>, state: &mut State) {
        self.trigger.record(state, &finished.at, finished.outcome);
    }
}

#[cfg(test)]
mod tests {
    use crate::engine::keys::AppliedKey;
    use crate::engine::kinds::testing::{Node, outcomes};
    use crate::model::PackageManager;

    fn want(node: &mut Node, names: &[&str]) {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        node.want(|b| b.packages("t", PackageManager::Apt, names).unwrap());
    }

    #[tokio::test]
    async fn off_a_live_host_the_list_is_installed_once_then_again_when_it_changes() {
        let mut node = Node::new();
        want(&mut node, &["conntrack", "socat"]);
        let plan = node.plan().await;
        assert_eq!(
            plan.render(),
            "1 changes:\n  - install apt packages: never installed by nodewright\n"
        );
        let json = serde_json::to_value(&plan.steps[0]).unwrap();
        assert_eq!(json["action"], "install-packages");
        assert_eq!(json["trigger"]["key"], "packages");
        assert_eq!(json["trigger"]["inputs"]["apt:socat"], "installed");
        let report = node.apply(&plan).await;
        assert_eq!(
            outcomes(&report),
            [format!(
                "install apt packages: skipped: root is {}, not /",
                node.root().display()
            )]
        );
        assert!(node.state.applied.contains_key(&AppliedKey::Packages));
        assert!(node.plan().await.is_empty());

        want(&mut node, &["conntrack", "ebtables", "socat"]);
        assert_eq!(
            node.planned().await,
            ["install apt packages: changed: apt:ebtables"]
        );
    }
}
