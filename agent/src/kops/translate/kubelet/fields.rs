//! The KubeletConfiguration being built field by field: typed values into `config`,
//! untyped ones into `extra`, and what does not fit into the ledger.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::kops::refusals::Ledger;
use crate::spec::{GoDuration, LabelKey, LabelValue};

/// The KubeletConfiguration being built, with the ledger for what does not fit.
pub(super) struct Fields<'l> {
    pub(super) ledger: &'l mut Ledger,
    pub(super) config: Map<String, Value>,
    pub(super) extra: Map<String, Value>,
}

impl<'l> Fields<'l> {
    pub(super) fn new(ledger: &'l mut Ledger) -> Self {
        Self {
            ledger,
            config: Map::new(),
            extra: Map::new(),
        }
    }

    pub(super) fn must_be(&mut self, field: &str, value: Option<&str>, wanted: &str, why: &str) {
        match value {
            None => {}
            Some(v) if v == wanted => {}
            Some(v) => self
                .ledger
                .refuse(field, format!("{v:?}: nodewright sets {wanted:?} ({why})")),
        }
    }

    pub(super) fn number<T: Into<Value>>(&mut self, name: &str, value: Option<T>) {
        if let Some(value) = value {
            self.config.insert(name.into(), value.into());
        }
    }

    /// A count the kubelet reads 0 as "unset" for: 0 cannot be carried in its config.
    pub(super) fn nonzero(&mut self, name: &str, value: Option<i32>) {
        match value {
            Some(0) => self.ledger.refuse(
                format!("KubeletConfig.{name}"),
                "0: nodeup passes it as a flag, but in the KubeletConfiguration the kubelet reads 0 as its default",
            ),
            Some(v) => {
                self.config.insert(name.into(), json!(v));
            }
            None => {}
        }
    }

    pub(super) fn boolean(&mut self, name: &str, value: Option<bool>) {
        if let Some(value) = value {
            self.config.insert(name.into(), json!(value));
        }
    }

    pub(super) fn string(&mut self, name: &str, value: Option<&str>) {
        if let Some(value) = value.filter(|v| !v.is_empty()) {
            self.config.insert(name.into(), json!(value));
        }
    }

    pub(super) fn checked<T: serde::Serialize, E: std::fmt::Display>(
        &mut self,
        name: &str,
        value: Result<T, E>,
    ) {
        if let Some(value) = self.ledger.value(&format!("KubeletConfig.{name}"), value) {
            self.config.insert(name.into(), json!(value));
        }
    }

    /// A duration; `zero_is_lost` for fields whose 0 the kubelet reads as its default.
    pub(super) fn duration(&mut self, name: &str, value: Option<&str>, zero_is_lost: bool) {
        let Some(value) = value else { return };
        let field = format!("KubeletConfig.{name}");
        if zero_is_lost && is_zero(value) {
            self.ledger.refuse(field, "0: nodeup passes it as a flag, but in the KubeletConfiguration the kubelet reads 0 as its default");
            return;
        }
        if let Some(d) = self.ledger.value(&field, GoDuration::try_from(value)) {
            self.config.insert(name.into(), json!(d));
        }
    }

    pub(super) fn nonzero_duration(&mut self, name: &str, value: &str) -> Option<String> {
        let field = format!("KubeletConfig.{name}");
        if is_zero(value) {
            self.ledger.refuse(field, "0: nodeup passes it as a flag, but in the KubeletConfiguration the kubelet reads 0 as its default");
            return None;
        }
        self.ledger
            .value(&field, GoDuration::try_from(value))
            .map(|d| d.to_string())
    }

    pub(super) fn extra_value(&mut self, name: &str, value: Option<Value>) {
        if let Some(value) = value {
            self.extra.insert(name.into(), value);
        }
    }

    /// A string for `extra`, left out when empty.
    pub(super) fn extra_string(&mut self, name: &str, value: Option<&str>) {
        if let Some(value) = value.filter(|v| !v.is_empty()) {
            self.extra.insert(name.into(), json!(value));
        }
    }

    pub(super) fn reserved(&mut self, name: &str, value: Option<&BTreeMap<String, String>>) {
        if let Some(map) = value.filter(|m| !m.is_empty()) {
            self.config.insert(name.into(), json!(map));
        }
    }

    /// kops's `memory.available<100Mi,nodefs.available<10%` (or `=` for grace periods
    /// and reclaims) as a map.
    pub(super) fn signals(&mut self, name: &str, value: Option<&str>, separator: char) {
        let Some(list) = value.filter(|l| !l.trim().is_empty()) else {
            return;
        };
        let mut map = Map::new();
        for pair in list.split(',') {
            match pair.split_once(separator) {
                Some((signal, threshold)) => {
                    map.insert(signal.trim().to_owned(), json!(threshold.trim()));
                }
                None => {
                    self.ledger.refuse(
                        format!("KubeletConfig.{name}"),
                        format!("{pair:?} is not signal{separator}value"),
                    );
                    return;
                }
            }
        }
        self.config.insert(name.into(), Value::Object(map));
    }

    pub(super) fn feature_gates(&mut self, gates: Option<&BTreeMap<String, String>>) {
        let Some(gates) = gates.filter(|g| !g.is_empty()) else {
            return;
        };
        let mut map = Map::new();
        for (name, raw) in gates {
            // Go's strconv.ParseBool, as nodeup reads them.
            let value = match raw.as_str() {
                "1" | "t" | "T" | "TRUE" | "true" | "True" => true,
                "0" | "f" | "F" | "FALSE" | "false" | "False" => false,
                other => {
                    self.ledger.refuse(
                        format!("KubeletConfig.featureGates.{name}"),
                        format!("{other:?} is not true or false"),
                    );
                    continue;
                }
            };
            map.insert(name.clone(), json!(value));
        }
        self.config
            .insert("featureGates".into(), Value::Object(map));
    }

    /// kops's `key=value:Effect` or `key:Effect`.
    pub(super) fn taints(&mut self, taints: &[String]) -> Vec<Value> {
        let mut out = Vec::new();
        for (i, taint) in taints.iter().enumerate() {
            let field = format!("KubeletConfig.taints[{i}]");
            let Some((rest, effect)) = taint.rsplit_once(':') else {
                self.ledger
                    .refuse(field, format!("{taint:?} is not key[=value]:Effect"));
                continue;
            };
            if !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
                self.ledger
                    .refuse(field, format!("{effect:?} is not a taint effect"));
                continue;
            }
            let (key, value) = match rest.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (rest, None),
            };
            let Some(key) = self.ledger.value(&field, LabelKey::try_from(key)) else {
                continue;
            };
            let mut entry = json!({"key": key, "effect": effect});
            if let Some(value) = value {
                let Some(value) = self.ledger.value(&field, LabelValue::try_from(value)) else {
                    continue;
                };
                entry["value"] = json!(value);
            }
            out.push(entry);
        }
        out
    }
}

pub(super) fn is_zero(duration: &str) -> bool {
    duration
        .chars()
        .all(|c| c == '0' || c == '.' || c.is_ascii_alphabetic() || c == 'µ')
}
