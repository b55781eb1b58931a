//! `nodewright apply --spec URL`: converge to a spec named on the command line, e.g.
//! by hand on a node, or in an image build.

use std::path::Path;

use super::facts::FactsArgs;
use super::{DeadlineArg, fail};
use crate::boot::{Options, SpecSource};
use crate::spec::Sha256Hex;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The node spec: s3://bucket/key or file:///path.
    #[arg(long, value_name = "URL")]
    spec: String,
    /// Refuse the spec unless its sha256 is this.
    #[arg(long, value_name = "HEX", value_parser = parse_sha256)]
    sha256: Option<Sha256Hex>,
    #[command(flatten)]
    facts: FactsArgs,
    #[command(flatten)]
    deadline: DeadlineArg,
}

pub fn parse_sha256(value: &str) -> Result<Sha256Hex, crate::spec::InvalidValue> {
    Sha256Hex::try_from(value)
}

pub async fn run(root: &Path, args: Args) -> u8 {
    let facts = match args.facts.resolve() {
        Ok(facts) => facts,
        Err(error) => return fail(&error),
    };
    let options = Options {
        root: root.to_owned(),
        source: SpecSource::Url {
            url: args.spec,
            sha256: args.sha256,
        },
        facts,
        deadline: args.deadline.duration(),
        command: "apply".to_owned(),
        repair: false,
        lock_wait: args.deadline.duration(),
        credentials: false,
    };
    super::boot::converge_and_report(&options).await
}
