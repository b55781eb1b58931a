//! Collects what the components render and refuses conflicts: two components may not
//! both own a path, a unit, a sysctl or a module with different values.

use std::collections::BTreeMap;

use super::ModelError;
use super::desired::{
    Content, DesiredAsset, DesiredAssetFile, DesiredBlock, DesiredDirectory, DesiredFile,
    DesiredPackages, DesiredService, DesiredState, DesiredStaticPod, DesiredSymlink, FileKind,
    INPUTS_PLACEHOLDER, Ownership, ProtectedPath,
};
use crate::facts::PackageManager;
use crate::spec::{AbsPath, UnitName};

#[derive(Default)]
pub struct StateBuilder {
    state: DesiredState,
    /// Which component declared each path, for conflict messages.
    owners: BTreeMap<String, &'static str>,
}

impl StateBuilder {
    fn claim(&mut self, path: &AbsPath, component: &'static str) -> Result<(), ModelError> {
        if let Some(first) = self.owners.insert(path.to_string(), component) {
            return Err(ModelError::Conflict {
                what: path.to_string(),
                first,
                second: component,
            });
        }
        Ok(())
    }

    pub fn directory(
        &mut self,
        component: &'static str,
        path: AbsPath,
        ownership: Ownership,
    ) -> Result<(), ModelError> {
        self.claim(&path, component)?;
        self.state
            .directories
            .push(DesiredDirectory { path, ownership });
        Ok(())
    }

    pub fn file(
        &mut self,
        component: &'static str,
        path: AbsPath,
        content: impl Into<Vec<u8>>,
        ownership: Ownership,
    ) -> Result<(), ModelError> {
        self.add_file(
            component,
            path,
            Content::new(content),
            ownership,
            FileKind::Plain,
            false,
        )
    }

    pub fn secret_file(
        &mut self,
        component: &'static str,
        path: AbsPath,
        content: impl Into<Vec<u8>>,
        ownership: Ownership,
    ) -> Result<(), ModelError> {
        self.add_file(
            component,
            path,
            Content::new(content),
            ownership,
            FileKind::Plain,
            true,
        )
    }

    pub fn add_file(
        &mut self,
        component: &'static str,
        path: AbsPath,
        content: Content,
        ownership: Ownership,
        kind: FileKind,
        secret: bool,
    ) -> Result<(), ModelError> {
        self.claim(&path, component)?;
        self.state.files.push(DesiredFile {
            path,
            content,
            ownership,
            kind,
            secret,
            issued: None,
        });
        Ok(())
    }

    /// A static pod manifest whose text carries [`INPUTS_PLACEHOLDER`], filled in by
    /// the engine from the current bytes of `inputs`.
    pub fn static_pod(
        &mut self,
        component: &'static str,
        manifest: AbsPath,
        text: String,
        inputs: Vec<AbsPath>,
    ) -> Result<(), ModelError> {
        if text.matches(INPUTS_PLACEHOLDER).count() != 1 {
            return Err(ModelError::Spec(format!(
                "{manifest}: a static pod manifest must hold the inputs placeholder once"
            )));
        }
        self.add_file(
            component,
            manifest.clone(),
            Content::new(text),
            Ownership::root(0o600),
            FileKind::Plain,
            false,
        )?;
        self.state
            .static_pods
            .push(DesiredStaticPod { manifest, inputs });
        Ok(())
    }

    /// An asset the node downloads. Declaring the same name twice is a conflict unless
    /// both declarations agree.
    pub fn asset(
        &mut self,
        component: &'static str,
        asset: DesiredAsset,
    ) -> Result<(), ModelError> {
        let key = format!("asset:{}", asset.name);
        if let Some(existing) = self.state.assets.get(&asset.name) {
            if *existing == asset {
                return Ok(());
            }
            return Err(ModelError::Conflict {
                what: format!("asset {}", asset.name),
                first: self.owners.get(&key).copied().unwrap_or("?"),
                second: component,
            });
        }
        self.owners.insert(key, component);
        self.state.assets.insert(asset.name.clone(), asset);
        Ok(())
    }

    /// A file installed from an asset (or one member of an archive asset). The asset
    /// must be declared (see [`Self::asset`]) by the time [`Self::finish`] runs.
    pub fn asset_file(
        &mut self,
        component: &'static str,
        path: AbsPath,
        asset: &str,
        member: Option<&str>,
        ownership: Ownership,
    ) -> Result<(), ModelError> {
        self.claim(&path, component)?;
        self.state.asset_files.push(DesiredAssetFile {
            path,
            asset: asset.to_owned(),
            member: member.map(str::to_owned),
            ownership,
        });
        Ok(())
    }

    pub fn symlink(
        &mut self,
        component: &'static str,
        path: AbsPath,
        target: AbsPath,
    ) -> Result<(), ModelError> {
        self.claim(&path, component)?;
        self.state.symlinks.push(DesiredSymlink { path, target });
        Ok(())
    }

    /// A unit file under /etc/systemd/system; returns its path.
    pub fn unit_file(
        &mut self,
        component: &'static str,
        unit: &UnitName,
        content: &str,
    ) -> Result<AbsPath, ModelError> {
        let path = unit_path(unit, None)?;
        self.add_file(
            component,
            path.clone(),
            Content::new(content),
            Ownership::root(0o644),
            FileKind::Systemd,
            false,
        )?;
        Ok(path)
    }

    /// A drop-in under /etc/systemd/system/<unit>.d; returns its path.
    pub fn drop_in(
        &mut self,
        component: &'static str,
        unit: &UnitName,
        name: &str,
        content: &str,
    ) -> Result<AbsPath, ModelError> {
        let path = unit_path(unit, Some(name))?;
        self.add_file(
            component,
            path.clone(),
            Content::new(content),
            Ownership::root(0o644),
            FileKind::Systemd,
            false,
        )?;
        Ok(path)
    }

    pub fn sysctl(
        &mut self,
        component: &'static str,
        key: &str,
        value: String,
    ) -> Result<(), ModelError> {
        if let Some(existing) = self.state.sysctls.get(key)
            && *existing != value
        {
            return Err(ModelError::Conflict {
                what: format!("sysctl {key}"),
                first: self
                    .owners
                    .get(&format!("sysctl:{key}"))
                    .copied()
                    .unwrap_or("?"),
                second: component,
            });
        }
        self.owners.insert(format!("sysctl:{key}"), component);
        self.state.sysctls.insert(key.to_owned(), value);
        Ok(())
    }

    /// Declares `path` as data nodewright must never delete (etcd's data directory or
    /// volume mount point). No claim: files may be declared under it.
    pub fn protect(&mut self, path: AbsPath, reason: impl Into<String>) {
        if !self.state.protected.iter().any(|p| p.path == path) {
            self.state.protected.push(ProtectedPath {
                path,
                reason: reason.into(),
            });
        }
    }

    pub fn module(&mut self, name: &str) {
        if !self.state.modules.iter().any(|m| m == name) {
            self.state.modules.push(name.to_owned());
        }
    }

    /// OS packages through `manager`; several components may ask for the same one.
    pub fn packages(
        &mut self,
        component: &'static str,
        manager: PackageManager,
        names: impl IntoIterator<Item = String>,
    ) -> Result<(), ModelError> {
        let packages = self.state.packages.get_or_insert(DesiredPackages {
            manager,
            names: Vec::new(),
        });
        if packages.manager != manager {
            return Err(ModelError::Conflict {
                what: "the package manager".to_owned(),
                first: self.owners.get("packages").copied().unwrap_or("?"),
                second: component,
            });
        }
        for name in names {
            if !packages.names.contains(&name) {
                packages.names.push(name);
            }
        }
        self.owners
            .entry("packages".to_owned())
            .or_insert(component);
        Ok(())
    }

    /// Swap off now (the caller keeps it off, e.g. by masking swap.target).
    pub fn swap_off(&mut self) {
        self.state.swap_off = true;
    }

    /// A named block of lines in a shared file such as /etc/hosts.
    pub fn file_block(
        &mut self,
        component: &'static str,
        path: AbsPath,
        name: &str,
        lines: String,
    ) -> Result<(), ModelError> {
        let key = format!("{path}#{name}");
        if let Some(first) = self.owners.insert(key.clone(), component) {
            return Err(ModelError::Conflict {
                what: format!("block {name} of {path}"),
                first,
                second: component,
            });
        }
        self.state.blocks.push(DesiredBlock {
            path,
            name: name.to_owned(),
            lines,
        });
        Ok(())
    }

    pub fn service(
        &mut self,
        component: &'static str,
        service: DesiredService,
    ) -> Result<(), ModelError> {
        let key = format!("unit:{}", service.unit);
        if let Some(first) = self.owners.insert(key, component) {
            return Err(ModelError::Conflict {
                what: service.unit.to_string(),
                first,
                second: component,
            });
        }
        self.state.services.push(service);
        Ok(())
    }

    /// Adds the files that persist sysctls and modules, then returns the state.
    pub fn finish(mut self) -> Result<DesiredState, ModelError> {
        // A file is either ours whole or shared through blocks, never both.
        for block in &self.state.blocks {
            if let Some(first) = self.owners.get(block.path.as_str()) {
                return Err(ModelError::Conflict {
                    what: block.path.to_string(),
                    first,
                    second: self
                        .owners
                        .get(&format!("{}#{}", block.path, block.name))
                        .copied()
                        .unwrap_or("?"),
                });
            }
        }
        self.check_asset_files()?;
        if !self.state.sysctls.is_empty() {
            let mut text =
                String::from("# Managed by nodewright; local changes are overwritten.\n");
            for (key, value) in &self.state.sysctls {
                text.push_str(&format!("{key} = {value}\n"));
            }
            let path = fixed_path(SYSCTL_FILE);
            self.file("host", path.clone(), text, Ownership::root(0o644))?;
            self.state.sysctl_file = Some(path);
        }
        if !self.state.modules.is_empty() {
            let mut text =
                String::from("# Managed by nodewright; local changes are overwritten.\n");
            for module in &self.state.modules {
                text.push_str(module);
                text.push('\n');
            }
            let path = fixed_path(MODULES_FILE);
            self.file("host", path.clone(), text, Ownership::root(0o644))?;
            self.state.modules_file = Some(path);
        }
        Ok(self.state)
    }
}

impl StateBuilder {
    /// Every asset file names a declared asset, with a member exactly when the asset is
    /// an archive.
    fn check_asset_files(&self) -> Result<(), ModelError> {
        for file in &self.state.asset_files {
            let Some(asset) = self.state.assets.get(&file.asset) else {
                return Err(ModelError::Spec(format!(
                    "{} is installed from asset {:?}, which the spec's assets do not declare",
                    file.path, file.asset
                )));
            };
            match (asset.archive.is_plain(), &file.member) {
                (true, Some(member)) => {
                    return Err(ModelError::Spec(format!(
                        "{} is installed from member {member} of asset {}, which is a plain file, not an archive",
                        file.path, file.asset
                    )));
                }
                (false, None) => {
                    return Err(ModelError::Spec(format!(
                        "{} is installed from asset {}, an archive: a member must be named",
                        file.path, file.asset
                    )));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

pub const SYSCTL_FILE: &str = "/etc/sysctl.d/99-nodewright.conf";
pub const MODULES_FILE: &str = "/etc/modules-load.d/nodewright.conf";
pub const UNIT_DIR: &str = "/etc/systemd/system";

/// A path the code itself spells; a typo is a bug, so it may panic.
pub fn fixed_path(path: &str) -> AbsPath {
    AbsPath::try_from(path).expect("a valid constant path")
}

pub fn unit_path(unit: &UnitName, drop_in: Option<&str>) -> Result<AbsPath, ModelError> {
    let path = match drop_in {
        None => format!("{UNIT_DIR}/{unit}"),
        Some(name) => format!("{UNIT_DIR}/{unit}.d/{name}"),
    };
    Ok(AbsPath::try_from(path)?)
}
