//! The command line: parse (`args`), build each operation's options, run it,
//! print, and map the outcome to an exit code.
//!
//! Exit codes: 0 success or no changes, 1 error, 2 changes present (only
//! with `plan --detailed-exitcode`).

pub mod args;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use crate::ops::{self, OpsError, SpecSource};
use crate::render::{Format, RenderOptions};
use args::{Cli, Command, FormatArg};

/// Parse the command line, run it, and return the process exit code.
pub fn run() -> ExitCode {
    install_error_handler();
    // kube and the AWS SDK both bring rustls; one process-wide provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    crate::logging::install(cli.verbose);
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            let report: miette::Report = e.into();
            let _ = writeln!(std::io::stderr(), "{report:?}");
            ExitCode::from(1)
        }
    }
}

/// Diagnostics on a terminal wrap to its width and may use colour; in CI
/// logs and pipes each message stays on one line, so it can be searched.
fn install_error_handler() {
    let tty = std::io::stderr().is_terminal();
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let _ = miette::set_hook(Box::new(move |_| {
        Box::new(
            miette::MietteHandlerOpts::new()
                .wrap_lines(tty)
                .color(tty && !no_color)
                .terminal_links(false)
                .build(),
        )
    }));
}

fn colour(no_color: bool) -> bool {
    !no_color
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        && std::io::stdout().is_terminal()
}

fn print(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    if !text.ends_with('\n') {
        let _ = out.write_all(b"\n");
    }
}

fn cluster_options(a: &args::ClusterArgs) -> ops::observe::ClusterOptions {
    ops::observe::ClusterOptions {
        kubeconfig: a.kubeconfig.clone(),
        context: a.context.clone(),
    }
}

fn dispatch(cli: Cli) -> Result<ExitCode, OpsError> {
    match cli.command {
        Command::Validate(a) => {
            let opts = ops::validate::ValidateOptions {
                source: SpecSource::new(&a.spec.file, a.spec.example.as_deref())?,
            };
            print(&ops::validate::run(&opts)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Plan(a) => {
            let opts = ops::plan::PlanOptions {
                source: SpecSource::new(&a.spec.file, a.spec.example.as_deref())?,
                environment: a.spec.env.clone(),
                live_state: a.live_state.clone(),
                format: match a.format {
                    FormatArg::Text => Format::Text,
                    FormatArg::Json => Format::Json,
                    FormatArg::Markdown => Format::Markdown,
                },
                out: a.out.clone(),
                render: RenderOptions {
                    color: a.format == FormatArg::Text && colour(a.no_color),
                },
                cluster: cluster_options(&a.cluster),
            };
            let (text, changes) = ops::plan::run(&opts)?;
            print(&text);
            Ok(if changes && a.detailed_exitcode {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Graph(a) => {
            let opts = ops::plan::PlanOptions {
                source: SpecSource::new(&a.spec.file, a.spec.example.as_deref())?,
                environment: a.spec.env.clone(),
                live_state: a.live_state.clone(),
                format: Format::Text,
                out: None,
                render: RenderOptions::default(),
                cluster: cluster_options(&a.cluster),
            };
            print(&ops::plan::graph(&opts)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Schema => {
            print(&serde_json::to_string_pretty(&crate::spec::json_schema()).unwrap_or_default());
            Ok(ExitCode::SUCCESS)
        }
        Command::Completions { shell } => {
            let mut cmd = Cli::command();
            clap_complete::generate(shell, &mut cmd, "pgplan", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Observe(a) => {
            let opts = ops::observe::ObserveOptions {
                source: SpecSource::new(&a.spec.file, a.spec.example.as_deref())?,
                environment: a.spec.env.clone(),
                cluster: cluster_options(&a.cluster),
                out: a.out.clone(),
            };
            if let Some(text) = ops::observe::run(&opts)? {
                print(&text);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Apply(a) => {
            let lock_timeout = ops::apply::parse_duration(&a.lock_timeout)
                .ok_or(OpsError::BadDuration(a.lock_timeout.clone()))?;
            let opts = ops::apply::ApplyOptions {
                source: SpecSource::new(&a.spec.file, a.spec.example.as_deref())?,
                plan_file: a.plan_file.clone(),
                environment: a.spec.env.clone(),
                cluster: cluster_options(&a.cluster),
                auto_approve: a.auto_approve,
                resume: a.resume,
                parallelism: a.parallelism as usize,
                lock_timeout,
                state_dir: a.state_dir.clone(),
                json: a.json,
                color: colour(a.no_color),
            };
            ops::apply::run(&opts)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::ForceUnlock(a) => {
            let source = SpecSource::new(&a.spec.file, a.spec.example.as_deref())?;
            print(&ops::apply::force_unlock(
                &source,
                a.spec.env.as_deref(),
                &cluster_options(&a.cluster),
                &a.id,
            )?);
            Ok(ExitCode::SUCCESS)
        }
    }
}
