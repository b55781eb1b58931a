//! `nodewright watch`: the control plane's long-running service (see `crate::watch`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{DeadlineArg, exit, fail};
use crate::watch::{self, WatchOptions};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Seconds between rounds (default: the spec's controlPlane.watch.intervalSeconds).
    #[arg(long, value_name = "SECONDS")]
    interval: Option<u64>,
    /// Serve GET /healthz on this loopback address.
    #[arg(long, value_name = "ADDRESS", default_value = "127.0.0.1:3993")]
    health: String,
    /// Serve no health endpoint.
    #[arg(long, conflicts_with = "health")]
    no_health: bool,
    /// Stop after this many rounds.
    #[arg(long, value_name = "N")]
    rounds: Option<u64>,
    /// Read user data from this file instead of the instance metadata service.
    #[arg(long, value_name = "FILE")]
    user_data: Option<PathBuf>,
    #[command(flatten)]
    deadline: DeadlineArg,
}

pub async fn run(root: &Path, args: Args) -> u8 {
    let watch = WatchOptions {
        root: root.to_owned(),
        user_data: args.user_data,
        chain: super::providers(),
        deadline: args.deadline.duration(),
        interval: args.interval.map(|s| Duration::from_secs(s.max(1))),
        health: (!args.no_health).then_some(args.health),
        rounds: args.rounds,
    };
    match watch::run(watch).await {
        Ok(()) => exit::OK,
        Err(e) => fail(&e),
    }
}
