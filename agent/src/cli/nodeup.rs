//! The binary run under the name `nodeup`: kops's user data downloads "nodeup", checks
//! its hash and runs `nodeup --install-systemd-unit --conf=/opt/kops/conf/kube_env.yaml
//! --v=8`. A cluster whose file repository serves nodewright as nodeup boots its
//! workers through nodewright with kops's user data unchanged (docs/kops.md).
//!
//! The kube_env file is the input (the kops provider reads it as it reads kube_env in
//! user data); the run is `boot`, or `plan` with nodeup's `--dryrun`. The spec applied
//! always holds nodeup's `kops-configuration.service`, which runs this binary again at
//! every boot, with or without `--install-systemd-unit` (so the unit is never removed
//! by a later run). `NODEWRIGHT_ROOT`, `NODEWRIGHT_DEADLINE` and `NODEWRIGHT_LOG` work
//! as for `nodewright`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;

use super::{boot::converge_and_report, exit, fail};
use crate::boot::{self, Options, SpecSource};
use crate::kops::source::{BootUnit, KubeEnvProvider};
use crate::source::Chain;
use crate::source::facts::FactsFrom;

/// Whether the binary was run as `nodeup` (its file name, as kops's script runs it).
pub fn invoked_as_nodeup(arg0: Option<&OsString>) -> bool {
    arg0.and_then(|a| Path::new(a).file_name())
        .is_some_and(|name| name == "nodeup")
}

/// nodeup's flags that kops's user data and its unit pass; any other is refused.
#[derive(Debug, Parser)]
#[command(
    name = "nodeup",
    version = crate::VERSION,
    about = "nodewright, run as kops's nodeup: boots this kops worker from kube_env"
)]
struct Args {
    /// kops's kube_env.yaml (nodeup's BootConfig).
    #[arg(long, value_name = "FILE")]
    conf: PathBuf,
    /// Log verbosity, as nodeup's klog flag; 4 and above log debug detail.
    #[arg(long = "v", value_name = "N", default_value_t = 0)]
    verbosity: u8,
    /// Accepted as nodeup accepts it: the boot unit is kept in every case.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    install_systemd_unit: Option<bool>,
    /// Show what would change and change nothing (nodewright's `plan`).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    dryrun: Option<bool>,
}

/// Where the boot unit runs the binary from: this binary, as it was run.
fn exec_path(arg0: Option<&OsString>) -> PathBuf {
    std::env::current_exe()
        .ok()
        .filter(|p| p.file_name().is_some_and(|n| n == "nodeup"))
        .or_else(|| arg0.map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/opt/kops/bin/nodeup"))
}

pub fn main(argv: Vec<OsString>) -> u8 {
    let args = match Args::try_parse_from(&argv) {
        Ok(args) => args,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
        }
    };
    crate::logging::init(args.verbosity >= 4);
    let root =
        std::env::var_os("NODEWRIGHT_ROOT").map_or_else(|| PathBuf::from("/"), PathBuf::from);
    let deadline = std::env::var("NODEWRIGHT_DEADLINE")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(Duration::from_secs(180), Duration::from_secs);
    let conf = std::path::absolute(&args.conf).unwrap_or_else(|_| args.conf.clone());
    let provider = KubeEnvProvider {
        conf: conf.display().to_string(),
        boot_unit: BootUnit {
            exec: exec_path(argv.first()).display().to_string(),
            conf: conf.display().to_string(),
            verbosity: args.verbosity,
        },
    };
    let dry_run = args.dryrun == Some(true);
    let options = Options {
        root,
        source: SpecSource::UserData {
            file: Some(conf),
            chain: Chain::new(vec![Box::new(provider)]),
        },
        facts: FactsFrom::Imds,
        deadline,
        command: if dry_run { "plan" } else { "boot" }.to_owned(),
        repair: false,
        lock_wait: deadline,
        credentials: !dry_run,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("nodeup (nodewright): cannot start the async runtime: {e}");
            return exit::INTERNAL;
        }
    };
    runtime.block_on(async move {
        if !dry_run {
            return converge_and_report(&options).await;
        }
        match boot::plan_only(&options).await {
            Ok((plan, _)) => {
                print!("{}", plan.render());
                exit::OK
            }
            Err(error) => fail(&error),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(args)
    }

    #[test]
    fn kops_command_lines_parse() {
        // kops's user data, and nodeup's own unit.
        let args = parse(&[
            "nodeup",
            "--install-systemd-unit",
            "--conf=/opt/kops/conf/kube_env.yaml",
            "--v=8",
        ])
        .unwrap();
        assert_eq!(args.conf, Path::new("/opt/kops/conf/kube_env.yaml"));
        assert_eq!(args.verbosity, 8);
        assert_eq!(args.install_systemd_unit, Some(true));
        assert_eq!(args.dryrun, None);
        let args = parse(&["nodeup", "--conf=/c.yaml", "--v=2", "--dryrun"]).unwrap();
        assert_eq!(args.dryrun, Some(true));
        assert!(parse(&["nodeup", "--conf=/c.yaml", "--target=direct"]).is_err());
        assert!(parse(&["nodeup", "--v=8"]).is_err(), "--conf is needed");
    }

    #[test]
    fn only_the_name_nodeup_switches_the_command_line() {
        assert!(invoked_as_nodeup(Some(&OsString::from(
            "/opt/kops/bin/nodeup"
        ))));
        assert!(invoked_as_nodeup(Some(&OsString::from("./nodeup"))));
        assert!(!invoked_as_nodeup(Some(&OsString::from(
            "/usr/local/bin/nodewright"
        ))));
        assert!(!invoked_as_nodeup(None));
    }
}
