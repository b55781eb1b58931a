//! The command line: parses arguments, runs one command, maps its errors to exit codes.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::catalogue::Catalogue;
use crate::file::Cluster;
use crate::store::Store;

pub mod exit {
    pub const OK: u8 = 0;
    pub const INTERNAL: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const INVALID_INPUT: u8 = 3;
    pub const UNREACHABLE: u8 = 4;
}

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  internal error
  2  usage error
  3  invalid input: the Cluster file, the catalogue, the CA certificate or a render
     refused (the message names the file, the field and the line)
  4  the state store did not answer or refused the request

Guide: docs/deploy-aws.md.";

#[derive(Debug, Parser)]
#[command(
    name = "nodewright-cluster",
    version,
    about = "The cluster kit: from a Cluster file to the PKI, node specs, user data, IAM policies and CloudFormation of a nodewright cluster",
    after_help = EXIT_CODES
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Args)]
struct ClusterArgs {
    /// The Cluster file.
    #[arg(short = 'f', long = "file", value_name = "CLUSTER_YAML")]
    file: PathBuf,
    /// A catalogue directory to use instead of the built-in one.
    #[arg(long, value_name = "DIR")]
    catalogue: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check a Cluster file (parse, validate, and render in memory) without writing.
    Check {
        #[command(flatten)]
        cluster: ClusterArgs,
        /// The cluster CA's certificate, when the cluster has worker groups.
        #[arg(long, value_name = "PEM")]
        ca_cert: Option<PathBuf>,
    },
    /// Render the node specs, boot configs, node groups, IAM policies and the
    /// CloudFormation template into a directory (pure: no network).
    Render {
        #[command(flatten)]
        cluster: ClusterArgs,
        /// The cluster CA's certificate (`pki init --ca-cert` writes it); needed when
        /// the cluster has worker groups.
        #[arg(long, value_name = "PEM")]
        ca_cert: Option<PathBuf>,
        /// The directory to write (created, or a previous render replaced as a whole).
        #[arg(short = 'o', long, value_name = "DIR")]
        out: PathBuf,
    },
    /// The cluster's PKI in the state store.
    Pki {
        #[command(subcommand)]
        command: PkiCommand,
    },
    /// Upload a render's specs under their content-addressed keys and controller-shim's
    /// node groups; print which groups changed and need a roll.
    Publish {
        /// A directory `render` wrote.
        dir: PathBuf,
    },
    /// The Kubernetes versions of the catalogue, with their files' sources.
    Versions {
        #[arg(long, value_name = "DIR")]
        catalogue: Option<PathBuf>,
    },
    /// Print the Cluster file's JSON Schema.
    Schema,
}

#[derive(Debug, Subcommand)]
enum PkiCommand {
    /// Create the CAs, the service-account keys and the encryption config in the state
    /// store; never overwrite an object; print what was created.
    Init {
        #[command(flatten)]
        cluster: ClusterArgs,
        /// Also write the cluster CA's certificate (public) here, for `render`.
        #[arg(long, value_name = "PEM")]
        ca_cert: Option<PathBuf>,
    },
}

/// A failed command: its message and exit code.
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    fn invalid(message: impl std::fmt::Display) -> Self {
        Self {
            code: exit::INVALID_INPUT,
            message: message.to_string(),
        }
    }
    fn unreachable(message: impl std::fmt::Display) -> Self {
        Self {
            code: exit::UNREACHABLE,
            message: message.to_string(),
        }
    }
}

impl From<crate::render::RenderError> for Failure {
    fn from(error: crate::render::RenderError) -> Self {
        use crate::render::RenderError;
        let code = match &error {
            RenderError::Refused(_) | RenderError::MissingCa(_) => exit::INVALID_INPUT,
            RenderError::Write { .. } | RenderError::Internal(_) => exit::INTERNAL,
        };
        Self {
            code,
            message: error.to_string(),
        }
    }
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            });
        }
    };
    match run(cli.command) {
        Ok(()) => ExitCode::from(exit::OK),
        Err(failure) => {
            eprintln!("error: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

fn run(command: Command) -> Result<(), Failure> {
    match command {
        Command::Check { cluster, ca_cert } => {
            let (cluster, catalogue) = load(&cluster)?;
            let ca = read_ca(ca_cert.as_deref())?;
            let version = version(&cluster, &catalogue)?;
            let rendered = crate::render::render(&cluster, version, ca.as_deref())?;
            println!(
                "{}: valid; Kubernetes {}, {} groups",
                cluster.name,
                version.kubernetes,
                rendered.plan.specs.len()
            );
            Ok(())
        }
        Command::Render {
            cluster,
            ca_cert,
            out,
        } => {
            let (cluster, catalogue) = load(&cluster)?;
            let ca = read_ca(ca_cert.as_deref())?;
            let version = version(&cluster, &catalogue)?;
            let rendered = crate::render::render(&cluster, version, ca.as_deref())?;
            rendered.write(&out)?;
            for spec in &rendered.plan.specs {
                println!("{}: nodespec sha256 {}", spec.group, spec.sha256);
            }
            println!(
                "rendered {} (Kubernetes {}) into {}",
                cluster.name,
                version.kubernetes,
                out.display()
            );
            Ok(())
        }
        Command::Pki {
            command: PkiCommand::Init { cluster, ca_cert },
        } => {
            let (cluster, _) = load(&cluster)?;
            let (bucket, prefix) = cluster.store();
            let pki = crate::pki::Pki::generate().map_err(|e| Failure {
                code: exit::INTERNAL,
                message: e.to_string(),
            })?;
            let report = runtime()?.block_on(async {
                let store = Store::connect(&cluster.region, &bucket).await;
                crate::pki::init(&store, &format!("{prefix}pki/"), &pki).await
            });
            let report = report.map_err(|e| match e {
                crate::pki::PkiError::Store(e) => Failure::unreachable(e),
                other => Failure::invalid(other),
            })?;
            for url in &report.created {
                println!("created {url}");
            }
            if report.created.is_empty() {
                println!(
                    "nothing created: the state store already holds the PKI ({} objects)",
                    report.existing.len()
                );
            }
            if let Some(path) = ca_cert {
                std::fs::write(&path, &report.ca_cert_pem).map_err(|e| Failure {
                    code: exit::INTERNAL,
                    message: format!("writing {}: {e}", path.display()),
                })?;
                println!("wrote the cluster CA's certificate to {}", path.display());
            }
            Ok(())
        }
        Command::Publish { dir } => {
            let (plan, files) = crate::publish::load(&dir).map_err(Failure::invalid)?;
            let (bucket, prefix) = (plan.bucket.clone(), plan.prefix.clone());
            let report = runtime()?.block_on(async {
                let store = Store::connect(&plan.region, &bucket).await;
                crate::publish::publish(&store, &prefix, &plan, &files).await
            });
            let report = report.map_err(|e| match e {
                crate::publish::PublishError::Store(e) => Failure::unreachable(e),
                other => Failure::invalid(other),
            })?;
            print!("{}", report.describe());
            Ok(())
        }
        Command::Versions { catalogue } => {
            let catalogue = load_catalogue(catalogue.as_deref())?;
            for known in catalogue.known() {
                println!("{known}");
            }
            Ok(())
        }
        Command::Schema => {
            let schema = crate::file::json_schema();
            println!(
                "{}",
                serde_json::to_string_pretty(&schema).unwrap_or_default()
            );
            Ok(())
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure {
            code: exit::INTERNAL,
            message: format!("starting the runtime: {e}"),
        })
}

fn load_catalogue(dir: Option<&Path>) -> Result<Catalogue, Failure> {
    match dir {
        Some(dir) => Catalogue::load(dir).map_err(Failure::invalid),
        None => Ok(Catalogue::embedded()),
    }
}

fn load(args: &ClusterArgs) -> Result<(Cluster, Catalogue), Failure> {
    let catalogue = load_catalogue(args.catalogue.as_deref())?;
    let name = args.file.display().to_string();
    let text = std::fs::read_to_string(&args.file)
        .map_err(|e| Failure::invalid(format!("reading {name}: {e}")))?;
    let cluster = Cluster::parse(&name, &text, &catalogue).map_err(Failure::invalid)?;
    Ok((cluster, catalogue))
}

fn version<'a>(
    cluster: &Cluster,
    catalogue: &'a Catalogue,
) -> Result<&'a crate::catalogue::Version, Failure> {
    catalogue
        .find(&cluster.kubernetes_version)
        .ok_or_else(|| Failure::invalid("kubernetesVersion is not in the catalogue"))
}

fn read_ca(path: Option<&Path>) -> Result<Option<String>, Failure> {
    path.map(|p| {
        std::fs::read_to_string(p).map_err(|e| {
            Failure::invalid(format!("reading the CA certificate {}: {e}", p.display()))
        })
    })
    .transpose()
}
