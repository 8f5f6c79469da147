//! Low-level arguments: what clap parses and checks, nothing more. The
//! options each operation runs with are built from these in `cli::run`.
//!
//! Each command takes only the flags it honours. Across commands, `-o` /
//! `--output` (alias of `--format`) is always an output *format* and exists
//! only where there is a choice of format (`plan`, `show`); a file pgplan
//! writes is always named with `--out FILE` (`plan --out` saves the plan,
//! `observe --out` the snapshot), so `plan -o json` can never create a file
//! named `json`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use clap_complete::engine::ArgValueCompleter;

use super::complete;

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
    "Exit codes: 0 success (or no changes), 1 error (usage errors too), 2 changes present (plan --detailed-exitcode).";

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a spec file (the base and every environment) and report every error at once.
    Validate(ValidateArgs),
    /// Show what apply would do.
    Plan(PlanArgs),
    /// Render a plan saved with `pgplan plan --out FILE` again (no cluster needed).
    Show(ShowArgs),
    /// Print the plan's step graph in DOT.
    Graph(GraphArgs),
    /// Write the live state the spec refers to as a snapshot file.
    Observe(ObserveArgs),
    /// Execute a plan (a saved plan file, or a fresh plan of a spec).
    Apply(ApplyArgs),
    /// Release the apply lock of a placement held by a crashed run.
    ForceUnlock(ForceUnlockArgs),
    /// Show what an apply left in the cluster (lock, stopped consumers,
    /// volumes, created objects, backups), read from the cluster alone.
    Status(StatusArgs),
    /// Print the JSON Schema of the spec file.
    Schema,
    /// Print the shell code that completes pgplan's commands, flags and values.
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
        default_value = "pgplan.yaml",
        value_hint = clap::ValueHint::FilePath
    )]
    pub file: PathBuf,
    /// Use an example shipped inside pgplan instead of a file (its saved live
    /// state too, unless --live-state is given): healthcare, backstage-to-rds, pyairtable.
    #[arg(
        long = "example",
        value_name = "NAME",
        conflicts_with = "file",
        add = ArgValueCompleter::new(complete::examples)
    )]
    pub example: Option<String>,
}

#[derive(Debug, Args)]
pub struct EnvArgs {
    /// Apply an environment overlay from `spec.environments`.
    #[arg(
        long = "env",
        value_name = "NAME",
        add = ArgValueCompleter::new(complete::environments)
    )]
    pub env: Option<String>,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    #[command(flatten)]
    pub spec: SpecArgs,
}

#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// Path of the kubeconfig (default: $KUBECONFIG, ~/.kube/config, or in-cluster).
    #[arg(long, value_name = "FILE", value_hint = clap::ValueHint::FilePath)]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context to use.
    #[arg(
        long,
        value_name = "NAME",
        add = ArgValueCompleter::new(complete::contexts)
    )]
    pub context: Option<String>,
    /// How long one request to the Kubernetes API server may take before it
    /// fails, connecting included, e.g. 30s, 2m (0: no limit). Exec sessions
    /// are bounded until they are open, not while they stream.
    #[arg(long, value_name = "DURATION", default_value = "30s", global = true,
          value_parser = request_timeout)]
    pub request_timeout: std::time::Duration,
}

/// A `--request-timeout` (as kubectl reads it); zero for no limit.
fn request_timeout(s: &str) -> Result<std::time::Duration, String> {
    crate::cluster::timeout::parse_request_timeout(s)
        .map(Option::unwrap_or_default)
        .ok_or_else(|| {
            format!("`{s}` is not a duration: use e.g. 30s, 2m, 1m30s, or 0 for no limit")
        })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    Text,
    Json,
    Markdown,
}

/// What a plan is made from: the spec, an environment, and the live state
/// (the cluster, or a snapshot).
#[derive(Debug, Args)]
pub struct PlanInputArgs {
    #[command(flatten)]
    pub spec: SpecArgs,
    #[command(flatten)]
    pub env: EnvArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Plan against a saved snapshot instead of the live cluster and AWS.
    #[arg(long = "live-state", value_name = "FILE", value_hint = clap::ValueHint::FilePath)]
    pub live_state: Option<PathBuf>,
}

/// How a plan is shown (`plan`, `show`).
#[derive(Debug, Args)]
pub struct RenderArgs {
    /// Output format.
    #[arg(
        short = 'o',
        long = "format",
        visible_alias = "output",
        value_name = "FORMAT",
        value_enum,
        default_value_t = FormatArg::Text
    )]
    pub format: FormatArg,
    /// No ANSI colours (also NO_COLOR=1; colours are only used on terminals).
    #[arg(long)]
    pub no_color: bool,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub input: PlanInputArgs,
    #[command(flatten)]
    pub render: RenderArgs,
    /// Save the plan to a file for `pgplan apply FILE` and `pgplan show FILE`.
    #[arg(long = "out", value_name = "FILE", value_hint = clap::ValueHint::FilePath)]
    pub out: Option<PathBuf>,
    /// Write the manifests the plan creates, and what it deletes and changes,
    /// into DIR (for a Helm chart or GitOps repository).
    #[arg(long = "export-manifests", value_name = "DIR")]
    pub export_manifests: Option<PathBuf>,
    /// Exit 2 when the plan has changes (0 when none, 1 on error).
    #[arg(long)]
    pub detailed_exitcode: bool,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// A plan saved with `pgplan plan --out FILE`.
    #[arg(value_name = "PLANFILE", value_hint = clap::ValueHint::FilePath)]
    pub plan_file: PathBuf,
    #[command(flatten)]
    pub render: RenderArgs,
}

#[derive(Debug, Args)]
pub struct GraphArgs {
    #[command(flatten)]
    pub input: PlanInputArgs,
}

#[derive(Debug, Args)]
pub struct ObserveArgs {
    #[command(flatten)]
    pub spec: SpecArgs,
    #[command(flatten)]
    pub env: EnvArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Where to write the snapshot (stdout when omitted).
    #[arg(long = "out", value_name = "FILE", value_hint = clap::ValueHint::FilePath)]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// A plan saved with `pgplan plan --out FILE` (it carries its spec and environment).
    #[arg(
        value_name = "PLANFILE",
        value_hint = clap::ValueHint::FilePath,
        conflicts_with_all = ["file", "example", "env"]
    )]
    pub plan_file: Option<PathBuf>,
    #[command(flatten)]
    pub spec: SpecArgs,
    #[command(flatten)]
    pub env: EnvArgs,
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
    #[arg(long, value_name = "DIR", default_value = ".pgplan", value_hint = clap::ValueHint::DirPath)]
    pub state_dir: PathBuf,
    /// Where the journal lives besides the state directory: `cluster` also
    /// keeps it, record by record, in a Secret beside the placement's Lease,
    /// so `--resume` works from any machine with the kubeconfig; `local`
    /// keeps it on this machine only.
    #[arg(long, value_name = "WHERE", default_value = "cluster", value_parser = ["cluster", "local"])]
    pub state: String,
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
    pub env: EnvArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub spec: SpecArgs,
    #[command(flatten)]
    pub env: EnvArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Where the journal would be (as given to apply).
    #[arg(long, value_name = "DIR", default_value = ".pgplan")]
    pub state_dir: PathBuf,
}
