//! `nodewright plan`: what `boot` (or `apply --spec`) would change. Reads only.

use std::path::{Path, PathBuf};

use super::exit;
use super::facts::FactsArgs;
use super::{DeadlineArg, fail};
use crate::boot::{self, Options, SpecSource};
use crate::source::facts::FactsFrom;
use crate::spec::Sha256Hex;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Plan for this spec instead of the one user data names.
    #[arg(long, value_name = "URL")]
    spec: Option<String>,
    /// With --spec: refuse the spec unless its sha256 is this.
    #[arg(long, value_name = "HEX", requires = "spec", value_parser = super::apply::parse_sha256)]
    sha256: Option<Sha256Hex>,
    /// Read user data from this file instead of the instance metadata service.
    #[arg(long, value_name = "FILE", conflicts_with = "spec")]
    user_data: Option<PathBuf>,
    /// Print the plan as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    facts: FactsArgs,
    #[command(flatten)]
    deadline: DeadlineArg,
}

pub async fn run(root: &Path, args: Args) -> u8 {
    // Run by hand (a spec or user data named), maybe off EC2: IMDS only briefly.
    let by_hand = args.spec.is_some() || args.user_data.is_some();
    let facts = match args.facts.resolve() {
        Ok(FactsFrom::ImdsBriefly(_)) if !by_hand => FactsFrom::Imds,
        Ok(facts) => facts,
        Err(error) => return fail(&error),
    };
    let source = match args.spec {
        Some(url) => SpecSource::Url {
            url,
            sha256: args.sha256,
        },
        None => SpecSource::UserData {
            file: args.user_data,
            chain: super::providers(),
        },
    };
    let options = Options {
        root: root.to_owned(),
        source,
        facts,
        deadline: args.deadline.duration(),
        command: "plan".to_owned(),
        repair: false,
        lock_wait: args.deadline.duration(),
        credentials: false,
    };
    match boot::plan_only(&options).await {
        Ok((plan, prepared)) => {
            let control_plane = &prepared.control_plane_report;
            if args.json {
                let mut value = serde_json::to_value(&plan).unwrap_or_default();
                if let Some(object) = value.as_object_mut()
                    && !control_plane.is_empty()
                {
                    object.insert("controlPlane".to_owned(), control_plane.clone().into());
                }
                match serde_json::to_string_pretty(&value) {
                    Ok(json) => println!("{json}"),
                    Err(e) => {
                        eprintln!("nodewright: {e}");
                        return exit::INTERNAL;
                    }
                }
            } else {
                if !control_plane.is_empty() {
                    println!(
                        "Control plane (read from EC2, Route53 and the devices; nothing changed):"
                    );
                    for line in control_plane {
                        println!("  - {line}");
                    }
                }
                print!("{}", plan.render());
            }
            exit::OK
        }
        Err(error) => fail(&error),
    }
}
