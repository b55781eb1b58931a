//! `nodewright schema`: the JSON Schema generated from the spec types.

use super::exit;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The boot config's schema instead of the node spec's.
    #[arg(long)]
    boot_config: bool,
}

pub fn run(args: Args) -> u8 {
    let schema = crate::spec::json_schema(args.boot_config);
    match serde_json::to_string_pretty(&schema) {
        Ok(text) => {
            println!("{text}");
            exit::OK
        }
        Err(e) => {
            eprintln!("nodewright: {e}");
            exit::INTERNAL
        }
    }
}
