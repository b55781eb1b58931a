//! `nodewright runbook [TOPIC]`: the operator's runbook, built in (works offline).

use super::exit;
use crate::runbook::{self, Topic};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The topic to print; without one, the list of topics.
    topic: Option<String>,
}

pub fn run(args: Args) -> u8 {
    match args.topic {
        None => {
            println!("Runbook topics (nodewright runbook TOPIC):");
            for topic in Topic::ALL {
                let title = topic
                    .section()
                    .and_then(|s| s.lines().next())
                    .map(|l| l.trim_start_matches("## "))
                    .unwrap_or_default();
                println!("  {:<26} {title}", topic.id());
            }
            exit::OK
        }
        Some(id) => match Topic::from_id(&id).and_then(Topic::section) {
            Some(section) => {
                println!("{section}");
                exit::OK
            }
            None => {
                eprintln!(
                    "nodewright: no runbook topic {id:?}; `nodewright runbook` lists them ({} in all)",
                    runbook::Topic::ALL.len()
                );
                exit::USAGE
            }
        },
    }
}
