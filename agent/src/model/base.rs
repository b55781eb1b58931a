//! The host settings and the files and units the spec lists directly.

use super::ModelError;
use super::builder::{StateBuilder, unit_path};
use super::desired::{DesiredService, Ownership};
use crate::spec::{NodeSpec, UnitState};

const COMPONENT: &str = "spec";

pub fn render(spec: &NodeSpec, out: &mut StateBuilder) -> Result<(), ModelError> {
    for (key, value) in &spec.sysctls {
        out.sysctl(COMPONENT, key.as_str(), value.render())?;
    }
    for module in &spec.kernel_modules {
        out.module(module.as_str());
    }
    for dir in &spec.directories {
        out.directory(
            COMPONENT,
            dir.path.clone(),
            Ownership {
                mode: dir.mode,
                owner: dir.owner.clone(),
                group: dir.group.clone(),
            },
        )?;
    }
    for file in &spec.files {
        let ownership = Ownership {
            mode: file.mode,
            owner: file.owner.clone(),
            group: file.group.clone(),
        };
        if file.secret {
            out.secret_file(
                COMPONENT,
                file.path.clone(),
                file.content.clone(),
                ownership,
            )?;
        } else {
            out.file(
                COMPONENT,
                file.path.clone(),
                file.content.clone(),
                ownership,
            )?;
        }
    }
    for link in &spec.symlinks {
        out.symlink(COMPONENT, link.path.clone(), link.target.clone())?;
    }
    for unit in &spec.systemd.units {
        let mut inputs = Vec::new();
        if let Some(content) = &unit.content {
            inputs.push(out.unit_file(COMPONENT, &unit.name, content)?);
        } else {
            // Only drop-ins: the unit itself comes from the OS, and is an input too.
            inputs.push(unit_path(&unit.name, None)?);
        }
        for drop_in in &unit.drop_ins {
            inputs.push(out.drop_in(
                COMPONENT,
                &unit.name,
                drop_in.name.as_str(),
                &drop_in.content,
            )?);
        }
        inputs.extend(unit.restart_on.iter().cloned());
        out.service(
            COMPONENT,
            DesiredService {
                unit: unit.name.clone(),
                enabled: unit.enabled,
                running: unit.state == UnitState::Started,
                inputs,
                ready_with_peers: false,
            },
        )?;
    }
    Ok(())
}
