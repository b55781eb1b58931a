//! `nodewright boot`: the whole flow from EC2 user data.

use std::path::{Path, PathBuf};

use super::exit;
use super::{DeadlineArg, fail};
use crate::boot::{self, Options, SpecSource};
use crate::source::facts::FactsFrom;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Read user data from this file instead of the instance metadata service.
    #[arg(long, value_name = "FILE")]
    user_data: Option<PathBuf>,
    #[command(flatten)]
    deadline: DeadlineArg,
}

pub async fn run(root: &Path, args: Args) -> u8 {
    let options = Options {
        root: root.to_owned(),
        source: SpecSource::UserData {
            file: args.user_data,
            chain: super::providers(),
        },
        facts: FactsFrom::Imds,
        deadline: args.deadline.duration(),
        command: "boot".to_owned(),
        repair: false,
        lock_wait: args.deadline.duration(),
        credentials: true,
    };
    converge_and_report(&options).await
}

/// Converges and prints the outcome with the timeline; shared with `apply`.
pub async fn converge_and_report(options: &Options) -> u8 {
    match boot::converge(options).await {
        Ok(converged) => {
            let changes = converged.plan.steps.len();
            tracing::info!(changes, "converged");
            if changes == 0 {
                println!("Converged: no changes.");
            } else {
                println!("Converged: {changes} changes.");
            }
            println!("Timeline:");
            print!("{}", crate::engine::timeline::render(&converged.timeline));
            exit::OK
        }
        Err((error, timeline)) => {
            let code = fail(&error);
            if !timeline.is_empty() {
                eprintln!("Timeline:");
                eprint!("{}", crate::engine::timeline::render(&timeline));
            }
            code
        }
    }
}
