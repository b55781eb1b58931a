//! `nodewright schema`: the JSON Schema of the node spec (or of the boot config).
//!
//! The schemas are generated from the spec types (`spec::json_schema`) and committed in
//! `agent/schema/`; the binary prints the committed text. Generating them at run time
//! would link schemars' generator and every type's schema code into the shipped agent
//! (~0.5 MB of the 10 MB budget, issue 14) for a command that never runs on a node.
//! The test below fails when a committed file differs from what the types generate.

use super::exit;

const NODE_SPEC: &str = include_str!("../../schema/nodespec.schema.json");
const BOOT_CONFIG: &str = include_str!("../../schema/bootconfig.schema.json");

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The boot config's schema instead of the node spec's.
    #[arg(long)]
    boot_config: bool,
}

pub fn run(args: Args) -> u8 {
    print!(
        "{}",
        if args.boot_config {
            BOOT_CONFIG
        } else {
            NODE_SPEC
        }
    );
    exit::OK
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The text `nodewright schema` printed when it generated the schema itself.
    fn generated(boot_config: bool) -> String {
        let schema = crate::spec::json_schema(boot_config);
        let mut text = serde_json::to_string_pretty(&schema).expect("a JSON value prints");
        text.push('\n');
        text
    }

    #[test]
    fn committed_schemas_are_the_generated_ones() {
        let update =
            std::env::var_os("NODEWRIGHT_UPDATE_GOLDEN").is_some_and(|v| v != "0" && !v.is_empty());
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schema");
        for (boot_config, committed, file) in [
            (false, NODE_SPEC, "nodespec.schema.json"),
            (true, BOOT_CONFIG, "bootconfig.schema.json"),
        ] {
            let fresh = generated(boot_config);
            if update {
                std::fs::write(dir.join(file), &fresh).expect("agent/schema is writable");
                continue;
            }
            assert!(
                committed == fresh,
                "agent/schema/{file} is stale: rerun this test with NODEWRIGHT_UPDATE_GOLDEN=1"
            );
        }
    }
}
