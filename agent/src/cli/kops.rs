//! `nodewright kops translate`: kops's user data (and the instance group's nodeupconfig)
//! to the node spec `boot` would apply, offline. For reviewing a migration, and tests.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use super::{exit, exit_code};
use crate::error::Classified;
use crate::facts::Facts;
use crate::kops::{KopsError, KubeEnv, NodeupConfig, translate, userdata};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Print the node spec a kops instance group's user data and nodeupconfig translate
    /// to (exit 3 naming every kops field that cannot be honoured, or a hash mismatch).
    Translate(TranslateArgs),
}

#[derive(Debug, clap::Args)]
struct TranslateArgs {
    /// The instance group's EC2 user data, as kops writes it (any of its forms).
    #[arg(long, value_name = "FILE")]
    user_data: PathBuf,
    /// The instance group's nodeupconfig.yaml (from the state store's
    /// igconfig/<role>/<ig>/ or kops-controller). Its sha256 must match kube_env's.
    #[arg(long, value_name = "FILE")]
    nodeup_config: Option<PathBuf>,
    #[command(flatten)]
    facts: FactArgs,
}

/// The instance the spec is for; placeholders unless given.
#[derive(Debug, clap::Args)]
struct FactArgs {
    /// `amd64` or `arm64`: picks the assets.
    #[arg(long, default_value = "amd64")]
    arch: String,
    /// os-release ID (`debian`, `ubuntu`, `amzn`...): picks the OS packages.
    #[arg(long, default_value = "debian")]
    distro: String,
    #[arg(long, default_value = "12")]
    distro_version: String,
    #[arg(long)]
    instance_id: Option<String>,
    #[arg(long)]
    region: Option<String>,
    #[arg(long)]
    zone: Option<String>,
    #[arg(long)]
    private_ip: Option<Ipv4Addr>,
    #[arg(long)]
    ipv6: Option<Ipv6Addr>,
    /// The private DNS name.
    #[arg(long)]
    hostname: Option<String>,
}

impl FactArgs {
    fn facts(&self) -> Facts {
        let mut facts = Facts::example();
        facts.host.arch = self.arch.clone();
        facts.host.distro = self.distro.clone();
        facts.host.distro_version = self.distro_version.clone();
        let instance = &mut facts.instance;
        if let Some(id) = &self.instance_id {
            instance.instance_id = id.clone();
        }
        if let Some(region) = &self.region {
            instance.region = region.clone();
        }
        if let Some(zone) = &self.zone {
            instance.availability_zone = zone.clone();
        }
        if let Some(ip) = self.private_ip {
            instance.private_ipv4 = ip;
        }
        instance.ipv6 = self.ipv6.or(instance.ipv6);
        if let Some(name) = &self.hostname {
            instance.hostname = name.clone();
        }
        facts
    }
}

pub fn run(args: Args) -> u8 {
    match args.command {
        Command::Translate(args) => match run_translate(&args) {
            Ok(text) => {
                print!("{text}");
                exit::OK
            }
            Err(Failure::Usage(message)) => {
                eprintln!("nodewright: {message}");
                exit::USAGE
            }
            Err(Failure::Kops(e)) => {
                eprintln!("nodewright: {e}");
                exit_code(e.kind())
            }
        },
    }
}

enum Failure {
    Usage(String),
    Kops(KopsError),
}

impl From<KopsError> for Failure {
    fn from(e: KopsError) -> Self {
        Self::Kops(e)
    }
}

fn read(path: &PathBuf) -> Result<Vec<u8>, Failure> {
    std::fs::read(path).map_err(|e| Failure::Usage(format!("{}: {e}", path.display())))
}

fn run_translate(args: &TranslateArgs) -> Result<String, Failure> {
    let source = args.user_data.display().to_string();
    let user_data = userdata::parse(&source, &read(&args.user_data)?)?;
    let env = KubeEnv::parse(&format!("{source} (kube_env.yaml)"), &user_data.kube_env)?;
    let facts = args.facts.facts();
    let Some(path) = &args.nodeup_config else {
        // The role alone may settle it (control-plane groups are refused).
        translate(&env, &NodeupConfig::default(), &facts)
            .err()
            .filter(|e| matches!(e, KopsError::Refused { .. }) && refused_by_role(e))
            .map_or(Ok(()), Err)?;
        return Err(Failure::Usage(format!(
            "instance group {}: give its nodeupconfig with --nodeup-config (nodeup reads it from {})",
            env.instance_group_name,
            env.describe_source()
        )));
    };
    let name = path.display().to_string();
    let config = NodeupConfig::parse_checked(&name, &read(path)?, &env.nodeup_config_hash)?;
    let translation = translate(&env, &config, &facts)?;
    Ok(format!("{}{}", translation.header(&name), translation.yaml))
}

fn refused_by_role(error: &KopsError) -> bool {
    matches!(error, KopsError::Refused { refusals, .. }
        if refusals.iter().all(|r| matches!(r.field.as_str(), "InstanceGroupRole" | "CloudProvider" | "EtcdIPs")))
}
