//! A step's action. Each kind of resource has its own module under `kinds/` with its
//! actions, how it plans them, how it carries them out and what it records; this file
//! only lists the actions, so adding a kind is its module and one line here.

use std::future::Future;

use serde::Serialize;

use super::apply::{Context, Finished, Outcome};
use super::kinds::{
    asset_file, block, directory, file, kernel, packages, permissions, removal, service,
    static_pod, swap, symlink, units,
};
use super::state::State;
use crate::spec::AbsPath;

/// What an action of any kind does once planned.
pub(crate) trait Change {
    /// A short verb phrase ("write", "restart").
    fn verb(&self) -> &'static str;
    /// What the action acts on, for listings.
    fn target(&self) -> String;
    /// The node path the action replaces atomically (a killed run may have left its
    /// temp file beside it).
    fn replaces(&self) -> Option<&AbsPath> {
        None
    }
    /// Whether the action waits for one of apply's slots; downloads have their own
    /// bound and must not hold back the quick steps.
    fn takes_a_slot(&self) -> bool {
        true
    }
    /// Carries the action out, first filling in what only apply can know (digests of
    /// downloads, of inputs as they are on disk now).
    fn run(&mut self, cx: &Context) -> impl Future<Output = Outcome> + Send;
    /// Records in the state what the action changed; only after it succeeded.
    fn record(&self, finished: &Finished<'_>, state: &mut State);
}

/// Declares [`Action`] with one variant per kind's action, and its dispatch.
macro_rules! actions {
    ($( $(#[$attr:meta])* $variant:ident($kind:path), )*) => {
        #[derive(Debug, Clone, PartialEq, Serialize)]
        #[serde(tag = "action", rename_all = "kebab-case")]
        pub enum Action {
            $( $(#[$attr])* $variant($kind), )*
        }

        impl Action {
            /// A short verb phrase.
            pub fn verb(&self) -> &'static str {
                match self { $( Self::$variant(a) => a.verb(), )* }
            }

            /// What the step acts on, for listings.
            pub fn target(&self) -> String {
                match self { $( Self::$variant(a) => a.target(), )* }
            }

            pub(crate) fn replaces(&self) -> Option<&AbsPath> {
                match self { $( Self::$variant(a) => a.replaces(), )* }
            }

            pub(crate) fn takes_a_slot(&self) -> bool {
                match self { $( Self::$variant(a) => a.takes_a_slot(), )* }
            }

            pub(crate) async fn run(&mut self, cx: &Context) -> Outcome {
                match self { $( Self::$variant(a) => a.run(cx).await, )* }
            }

            pub(crate) fn record(&self, finished: &Finished<'_>, state: &mut State) {
                match self { $( Self::$variant(a) => a.record(finished, state), )* }
            }
        }

        $( impl From<$kind> for Action {
            fn from(action: $kind) -> Self {
                Self::$variant(action)
            }
        } )*
    };
}

actions! {
    CreateDirectory(directory::CreateDirectory),
    WriteFile(file::WriteFile),
    /// A static pod manifest is a file to anyone reading the plan.
    #[serde(rename = "write-file")]
    WriteStaticPod(static_pod::WriteStaticPod),
    SetPermissions(permissions::SetPermissions),
    Symlink(symlink::Symlink),
    RemoveFile(removal::RemoveFile),
    /// Rewrites a shared file (e.g. /etc/hosts) with nodewright's blocks set or removed.
    WriteBlocks(block::WriteBlocks),
    /// Download an asset into the cache.
    FetchAsset(asset_file::FetchAsset),
    /// Extract an archive asset in the cache (after its download, if any).
    ExtractAsset(asset_file::ExtractAsset),
    /// Install a file out of the cache, verified by its digest on the way.
    InstallAsset(asset_file::InstallAsset),
    DaemonReload(units::DaemonReload),
    LoadModules(kernel::LoadModules),
    ApplySysctls(kernel::ApplySysctls),
    InstallPackages(packages::InstallPackages),
    SwapOff(swap::SwapOff),
    EnableUnit(service::EnableUnit),
    StartUnit(service::StartUnit),
    RestartUnit(service::RestartUnit),
    StopUnit(service::StopUnit),
}
