//! The command line: one file per subcommand; each parses its arguments and calls the
//! library.

mod apply;
mod boot;
mod cache;
mod check;
mod etcd;
mod facts;
mod kops;
mod nodeup;
mod plan;
mod prebake;
mod repair;
mod reset;
mod runbook;
mod schema;
mod status;
mod support_bundle;
mod verify;
mod watch;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::error::{Classified, ErrorKind};
use crate::source::{Chain, nodewright};

/// Exit codes; documented in `nodewright --help` ([`EXIT_CODES`]), which
/// docs/exit-codes.md quotes (agent/tests/docs.rs keeps the two equal).
pub mod exit {
    pub const OK: u8 = 0;
    pub const INTERNAL: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const INVALID_INPUT: u8 = 3;
    pub const UNREACHABLE: u8 = 4;
    pub const APPLY_FAILED: u8 = 5;
    pub const NO_STATE: u8 = 6;
    pub const DRIFT: u8 = 7;
    pub const BUSY: u8 = 8;
}

/// The exit code of a failure of this kind.
pub fn exit_code(kind: ErrorKind) -> u8 {
    match kind {
        ErrorKind::InvalidInput => exit::INVALID_INPUT,
        ErrorKind::Unreachable => exit::UNREACHABLE,
        ErrorKind::ChangeFailed => exit::APPLY_FAILED,
        ErrorKind::NoState => exit::NO_STATE,
        ErrorKind::Busy => exit::BUSY,
        ErrorKind::Usage => exit::USAGE,
        ErrorKind::Internal => exit::INTERNAL,
    }
}

/// The input providers, asked in this order about user data. A new input format adds
/// its provider here; nodewright's own comes last (it explains user data nobody
/// recognised).
pub fn providers() -> Chain {
    Chain::new(vec![
        Box::new(crate::kops::source::Provider),
        Box::new(nodewright::Provider),
    ])
}

const EXIT_CODES: &str = "\
Exit codes:
  0  success: the node is converged (or, for plan, the plan was printed)
  1  internal error
  2  usage error; etcd restore refused while etcd has quorum (without --force)
  3  invalid input: user data, boot config or node spec refused (parse, validation,
     digest), or controller-shim refused the node
  4  a source (IMDS, the state store, controller-shim) did not answer before the deadline
  5  a change failed (a download failed on every URL, the kubelet's credentials could
     not be written, cache verify found a damaged entry); the node is not converged
  6  nothing recorded: no run (status, verify), no kept spec (repair)
  7  drift: verify found files that differ from their record, or repair left some
  8  another nodewright run holds the run lock (repair, reset; boot after its deadline)

Runbook: `nodewright runbook` (also docs/runbook.md).";

#[derive(Debug, Parser)]
#[command(name = "nodewright", version = crate::VERSION, about = "Bootstraps a Kubernetes node on AWS", after_help = EXIT_CODES)]
pub struct Cli {
    /// The root directory everything is written under.
    #[arg(long, global = true, env = "NODEWRIGHT_ROOT", default_value = "/")]
    root: PathBuf,
    /// Log debug detail.
    #[arg(long, short, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The boot flow: user data, facts, node spec, then converge the node.
    Boot(boot::Args),
    /// Show what would change, without changing anything.
    Plan(plan::Args),
    /// Converge the node to a spec named on the command line.
    Apply(apply::Args),
    /// Check a node spec on any machine: strict parse and every validation; no facts,
    /// no IMDS, nothing written.
    Check(check::Args),
    /// For image builds: download, verify and install what does not depend on the
    /// instance, and write the bake manifest.
    Prebake(prebake::Args),
    /// The download cache: list, verify, prune.
    Cache(cache::Args),
    /// Show runs in progress, the last run, services, drift and problems.
    Status(status::Args),
    /// Re-hash every installed file and compare it with its record; exit 7 on drift.
    Verify(verify::Args),
    /// Restore drifted files from the kept spec, offline; restart what depends on them.
    Repair(repair::Args),
    /// Remove what nodewright installed (never etcd data without two flags).
    Reset(reset::Args),
    /// Write a tar.gz of status, timeline, redacted spec, units, journal, disks.
    SupportBundle(support_bundle::Args),
    /// Print the operator's runbook (a topic, or the list of topics).
    Runbook(runbook::Args),
    /// Control-plane nodes: keep the etcd volumes mounted and the names current.
    Watch(watch::Args),
    /// Control-plane nodes: back etcd up to the state store, restore it from a backup.
    Etcd(etcd::Args),
    /// Print the JSON Schema of the node spec (or of the boot config).
    Schema(schema::Args),
    /// kops: translate an instance group's user data and nodeupconfig to a node spec.
    Kops(kops::Args),
    /// Print the version.
    Version,
}

/// How long remote sources are retried, shared by the commands that read them.
#[derive(Debug, clap::Args)]
struct DeadlineArg {
    /// Seconds to keep retrying IMDS, the state store and controller-shim before giving up.
    #[arg(
        long = "deadline",
        env = "NODEWRIGHT_DEADLINE",
        default_value_t = 180,
        value_name = "SECONDS"
    )]
    seconds: u64,
}

impl DeadlineArg {
    fn duration(&self) -> Duration {
        Duration::from_secs(self.seconds)
    }
}

pub fn main() -> ExitCode {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if nodeup::invoked_as_nodeup(argv.first()) {
        return ExitCode::from(nodeup::main(argv));
    }
    let cli = match Cli::try_parse_from(argv) {
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
    crate::logging::init(cli.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("nodewright: cannot start the async runtime: {e}");
            return ExitCode::from(exit::INTERNAL);
        }
    };
    let code = runtime.block_on(async move {
        match cli.command {
            Command::Boot(args) => boot::run(&cli.root, args).await,
            Command::Plan(args) => plan::run(&cli.root, args).await,
            Command::Apply(args) => apply::run(&cli.root, args).await,
            Command::Check(args) => check::run(args).await,
            Command::Prebake(args) => prebake::run(&cli.root, args).await,
            Command::Cache(args) => cache::run(&cli.root, args).await,
            Command::Status(args) => status::run(&cli.root, args).await,
            Command::Verify(args) => verify::run(&cli.root, args),
            Command::Repair(args) => repair::run(&cli.root, args).await,
            Command::Reset(args) => reset::run(&cli.root, args).await,
            Command::SupportBundle(args) => support_bundle::run(&cli.root, args).await,
            Command::Runbook(args) => runbook::run(args),
            Command::Watch(args) => watch::run(&cli.root, args).await,
            Command::Etcd(args) => etcd::run(&cli.root, args).await,
            Command::Schema(args) => schema::run(args),
            Command::Kops(args) => kops::run(args),
            Command::Version => {
                println!("nodewright {}", crate::VERSION);
                exit::OK
            }
        }
    });
    ExitCode::from(code)
}

/// Reports a failed run on stderr and in the log, and gives its exit code.
fn fail(error: &(impl std::error::Error + Classified)) -> u8 {
    tracing::error!(error = %error, "run failed");
    eprintln!("nodewright: {error}");
    if let Some(topic) = error.topic() {
        eprintln!("{}", topic.hint());
    }
    exit_code(error.kind())
}
