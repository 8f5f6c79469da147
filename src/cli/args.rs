//! Low-level arguments: what clap parses and checks, nothing more. The
//! options each operation runs with are built from these in `cli::run`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Declarative plan/apply for PostgreSQL on Kubernetes and AWS RDS.
#[derive(Debug, Parser)]
#[command(name = "pgplan", version, about, long_about = None, after_help = EXIT_CODES)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// More diagnostic log lines on stderr: -v info, -vv debug, -vvv trace
    /// (`RUST_LOG`, when set, takes precedence).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

pub const EXIT_CODES: &str =
    "Exit codes: 0 success (or no changes), 1 error, 2 changes present (plan --detailed-exitcode).";

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a spec file and report every error at once.
    Validate(ValidateArgs),
    /// Show what apply would do.
    Plan(PlanArgs),
    /// Print the plan's step graph in DOT.
    Graph(PlanArgs),
    /// Write the live state the spec refers to as a snapshot file.
    Observe(ObserveArgs),
    /// Execute a plan (a saved plan file, or a fresh plan of a spec).
    Apply(ApplyArgs),
    /// Release the apply lock of a placement held by a crashed run.
    ForceUnlock(ForceUnlockArgs),
    /// Print the JSON Schema of the spec file.
    Schema,
    /// Print shell completions.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Args)]
pub struct SpecArgs {
    /// The spec file (one or more Placement documents).
    #[arg(
        short = 'f',
        long = "file",
        value_name = "FILE",
        default_value = "pgplan.yaml"
    )]
    pub file: PathBuf,
    /// Apply an environment overlay from `spec.environments`.
    #[arg(long = "env", value_name = "NAME")]
    pub env: Option<String>,
    /// Use an example shipped inside pgplan instead of a file (its saved live
    /// state too, unless --live-state is given): healthcare, backstage-to-rds, pyairtable.
    #[arg(long = "example", value_name = "NAME", conflicts_with = "file")]
    pub example: Option<String>,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    #[command(flatten)]
    pub spec: SpecArgs,
}

#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// Path of the kubeconfig (default: $KUBECONFIG, ~/.kube/config, or in-cluster).
    #[arg(long, value_name = "FILE", global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context to use.
    #[arg(long, value_name = "NAME", global = true)]
    pub context: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    Text,
    Json,
    Markdown,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub spec: SpecArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Plan against a saved snapshot instead of the live cluster and AWS.
    #[arg(long = "live-state", value_name = "FILE")]
    pub live_state: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = FormatArg::Text)]
    pub format: FormatArg,
    /// Save the plan to a file for `pgplan apply FILE`.
    #[arg(short = 'o', long = "out", value_name = "PLANFILE")]
    pub out: Option<PathBuf>,
    /// Exit 2 when the plan has changes (0 when none, 1 on error).
    #[arg(long)]
    pub detailed_exitcode: bool,
    /// No ANSI colours (also NO_COLOR=1; colours are only used on terminals).
    #[arg(long)]
    pub no_color: bool,
}

#[derive(Debug, Args)]
pub struct ObserveArgs {
    #[command(flatten)]
    pub spec: SpecArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Where to write the snapshot (stdout when omitted).
    #[arg(short = 'o', long = "out", value_name = "FILE")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// A plan saved with `pgplan plan -o FILE`.
    #[arg(value_name = "PLANFILE")]
    pub plan_file: Option<PathBuf>,
    #[command(flatten)]
    pub spec: SpecArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Skip the confirmation prompt.
    #[arg(long)]
    pub auto_approve: bool,
    /// Continue an interrupted apply from its journal.
    #[arg(long)]
    pub resume: bool,
    /// How many independent steps may run at once.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub parallelism: u32,
    /// How long to wait for another apply's lock, e.g. 30s, 5m.
    #[arg(long, value_name = "DURATION", default_value = "0s")]
    pub lock_timeout: String,
    /// Where journals and backups' bookkeeping live.
    #[arg(long, value_name = "DIR", default_value = ".pgplan")]
    pub state_dir: PathBuf,
    /// Emit a JSON event per line instead of progress output.
    #[arg(long)]
    pub json: bool,
    /// No ANSI colours.
    #[arg(long)]
    pub no_color: bool,
}

#[derive(Debug, Args)]
pub struct ForceUnlockArgs {
    /// The lock ID printed by the apply that holds it.
    pub id: String,
    #[command(flatten)]
    pub spec: SpecArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}
