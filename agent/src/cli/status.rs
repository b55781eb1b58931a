//! `nodewright status`: runs in progress and what they wait for, the last run with its
//! phases, services, drift, and the problems among them.

use std::path::Path;

use super::exit;
use crate::engine::State;
use crate::host::Host;
use crate::ops::status;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(root: &Path, args: Args) -> u8 {
    let host = Host::new(root);
    // A damaged record is reported, not fatal: what runs now still matters.
    let (state, unreadable) = match State::load(&host.state_dir()) {
        Ok(state) => (state, None),
        Err(e) => (State::default(), Some(e)),
    };
    let mut status = status::gather(&host, &state).await;
    if let Some(e) = &unreadable {
        status.problems.insert(
            0,
            format!("{e}; the next boot sets it aside and starts a fresh record"),
        );
    }
    if status.last_run.is_none()
        && status.in_progress.is_empty()
        && status.interrupted.is_empty()
        && unreadable.is_none()
    {
        eprintln!(
            "nodewright: no run is recorded under {} and none is in progress (has nodewright run on this node?)",
            host.state_dir().display()
        );
        return exit::NO_STATE;
    }
    if args.json {
        match serde_json::to_string_pretty(&status) {
            Ok(json) => println!("{json}"),
            Err(e) => {
                eprintln!("nodewright: {e}");
                return exit::INTERNAL;
            }
        }
    } else {
        print!("{}", status::render_text(&status));
    }
    exit::OK
}
