//! kops's real AWS cases (`tests/fixtures/kops/cases/`), through `nodewright::kops`:
//! every instance group's user data (and, for workers, its nodeupconfig) translates or
//! is refused naming kops fields. The results are goldens under `tests/kops/<case>/`
//! (`<ig>.yaml`, or `<ig>.refused.txt`); `NODEWRIGHT_UPDATE_GOLDEN=1` rewrites them.
//!
//! The translations are then checked against the nodeupconfig itself (each value kops
//! sets found where the node will read it, each asset pinned) and rendered through the
//! model into what the real checkers accept.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use nodewright::kops::{KopsError, KubeEnv, NodeupConfig, Translation, translate, userdata};
use nodewright::model::{DesiredState, Facts, desired_state};
use serde_json::Value;

pub struct Input {
    pub case: String,
    pub ig: String,
    pub user_data: PathBuf,
    pub nodeup_config: Option<PathBuf>,
}

impl Input {
    pub fn name(&self) -> String {
        format!("{}/{}", self.case, self.ig)
    }

    fn golden(&self, suffix: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/kops")
            .join(&self.case)
            .join(format!("{}.{suffix}", self.ig))
    }
}

pub fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kops/cases")
}

/// Every instance group of every AWS case, sorted.
pub fn inputs() -> Vec<Input> {
    let mut out = Vec::new();
    for case in std::fs::read_dir(cases_dir()).unwrap() {
        let case = case.unwrap().path();
        for file in std::fs::read_dir(&case).unwrap() {
            let file = file.unwrap().path();
            let name = file.file_name().unwrap().to_string_lossy().into_owned();
            let Some(rest) = name
                .strip_prefix("aws_launch_template_")
                .and_then(|r| r.strip_suffix("_user_data"))
            else {
                continue;
            };
            let ig = rest.split('.').next().unwrap().to_owned();
            let config = case.join(format!("aws_s3_object_nodeupconfig-{ig}_content"));
            out.push(Input {
                case: case.file_name().unwrap().to_string_lossy().into_owned(),
                ig,
                user_data: file,
                nodeup_config: config.exists().then_some(config),
            });
        }
    }
    out.sort_by_key(Input::name);
    out
}

/// The instance a case is rendered for: an IPv6 address on IPv6-only clusters.
pub fn facts_for(config: Option<&NodeupConfig>) -> Facts {
    let mut facts = Facts::example();
    if config.is_some_and(|c| c.networking.non_masquerade_cidr == "::/0") {
        facts.instance.ipv6 = Some("2600:1f18:1234:5600::1a".parse().unwrap());
    }
    facts
}

pub struct Translated {
    pub env: KubeEnv,
    pub raw: Value,
    pub translation: Translation,
    pub facts: Facts,
}

pub enum Outcome {
    Translated(Box<Translated>),
    Refused(KopsError),
}

pub fn outcome(input: &Input) -> Outcome {
    let source = input
        .user_data
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let data = match userdata::parse(&source, &std::fs::read(&input.user_data).unwrap()) {
        Ok(data) => data,
        Err(e) => return Outcome::Refused(e),
    };
    let env = KubeEnv::parse(&format!("{source} kube_env"), &data.kube_env)
        .unwrap_or_else(|e| panic!("{}: {e}", input.name()));
    let Some(path) = &input.nodeup_config else {
        return match translate(&env, &NodeupConfig::default(), &Facts::example()) {
            Err(e @ KopsError::Refused { .. }) => Outcome::Refused(e),
            other => panic!(
                "{}: without a nodeupconfig, only a refusal by role is expected: {other:?}",
                input.name()
            ),
        };
    };
    let bytes = std::fs::read(path).unwrap();
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let config = NodeupConfig::parse_checked(&name, &bytes, &env.nodeup_config_hash)
        .unwrap_or_else(|e| panic!("{}: {e}", input.name()));
    let raw: Value = yaml_serde::from_slice(&bytes).unwrap();
    let facts = facts_for(Some(&config));
    match translate(&env, &config, &facts) {
        Ok(translation) => Outcome::Translated(Box::new(Translated {
            env,
            raw,
            translation,
            facts,
        })),
        Err(e @ KopsError::Refused { .. }) => Outcome::Refused(e),
        Err(e) => panic!("{}: {e}", input.name()),
    }
}

/// The golden text of an outcome, and the path it is kept at.
pub fn golden_text(input: &Input, outcome: &Outcome) -> (PathBuf, String) {
    match outcome {
        Outcome::Translated(t) => {
            let source = input
                .nodeup_config
                .as_ref()
                .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
                .unwrap_or_default();
            (
                input.golden("yaml"),
                format!("{}{}", t.translation.header(&source), t.translation.yaml),
            )
        }
        Outcome::Refused(e) => (input.golden("refused.txt"), format!("{e}\n")),
    }
}

pub fn render(t: &Translated) -> DesiredState {
    desired_state(&t.translation.spec, &t.facts).unwrap()
}

pub fn text(desired: &DesiredState, path: &str) -> String {
    String::from_utf8_lossy(
        desired
            .file(path)
            .unwrap_or_else(|| panic!("{path} is not rendered"))
            .content
            .bytes(),
    )
    .into_owned()
}

pub fn yaml(desired: &DesiredState, path: &str) -> Value {
    yaml_serde::from_str(&text(desired, path)).unwrap()
}

/// The kubelet's flags from nodewright's drop-in, as `--name -> value`.
pub fn kubelet_flags(desired: &DesiredState) -> BTreeMap<String, String> {
    let drop_in = text(
        desired,
        "/etc/systemd/system/kubelet.service.d/10-nodewright.conf",
    );
    let args = drop_in
        .lines()
        .find_map(|l| l.strip_prefix("Environment=\"NODEWRIGHT_KUBELET_ARGS="))
        .unwrap()
        .trim_end_matches('"')
        .to_owned();
    args.split_whitespace()
        .map(|f| match f.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => (f.to_owned(), "true".to_owned()),
        })
        .collect()
}
