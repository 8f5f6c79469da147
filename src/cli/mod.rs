//! The command line: parse (`args`), build each operation's options, run it,
//! print, and map the outcome to an exit code.
//!
//! Exit codes: 0 success or no changes (and `--help`, `--version`), 1 error
//! — usage errors too, so that a mistyped flag can never read as 2 — and 2
//! changes present (only with `plan --detailed-exitcode`).

pub mod args;
pub mod complete;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::{CommandFactory, Parser};

use crate::ops::{self, OpsError, SpecSource};
use crate::render::{Format, RenderOptions};
use args::{Cli, Command, FormatArg};

/// Parse the command line, run it, and return the process exit code.
pub fn run() -> ExitCode {
    // A shell asking for completions (`COMPLETE=bash pgplan -- …`) is
    // answered and the process exits here, before anything else is printed.
    clap_complete::CompleteEnv::with_factory(Cli::command).complete();
    install_error_handler();
    // kube and the AWS SDK both bring rustls; one process-wide provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage(&e),
    };
    crate::logging::install(cli.verbose);
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            // Redacted before it is laid out (a wrapped line could split a
            // value), and the text once more after: the error may come from
            // anywhere, and every value of every spec loaded is known here.
            let redactor = crate::redact::remembered();
            let shown = Shown(&redactor.diagnostic(&e), &error_handler());
            let text = redactor.text(&format!("{shown:?}"));
            let _ = writeln!(std::io::stderr(), "{text}");
            ExitCode::from(1)
        }
    }
}

/// clap's own message, printed as clap prints it (help and version on
/// stdout, errors on stderr), with pgplan's exit codes: 0 for help and
/// version, 1 for every usage error (clap itself exits 2, which under
/// `--detailed-exitcode` would mean "changes present").
fn usage(e: &clap::Error) -> ExitCode {
    let _ = e.print();
    usage_exit_code(e.kind())
}

fn usage_exit_code(kind: ErrorKind) -> ExitCode {
    match kind {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => ExitCode::SUCCESS,
        _ => ExitCode::from(1),
    }
}

/// Diagnostics on a terminal wrap to its width and may use colour; in CI
/// logs and pipes each message stays on one line, so it can be searched.
fn error_handler() -> miette::MietteHandler {
    let tty = std::io::stderr().is_terminal();
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    miette::MietteHandlerOpts::new()
        .wrap_lines(tty)
        .color(tty && !no_color)
        .terminal_links(false)
        .build()
}

fn install_error_handler() {
    let _ = miette::set_hook(Box::new(|_| Box::new(error_handler())));
}

/// A diagnostic laid out by a handler, as `{:?}` of a report would be.
struct Shown<'a>(&'a dyn miette::Diagnostic, &'a dyn miette::ReportHandler);

impl std::fmt::Debug for Shown<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.1.debug(self.0, f)
    }
}

fn colour(no_color: bool) -> bool {
    !no_color
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        && std::io::stdout().is_terminal()
}

/// Everything printed passes the values of the specs loaded (plans are
/// redacted already; this is the net under what is not).
fn print(text: &str) {
    let text = crate::redact::remembered().text(text);
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
        request_timeout: (!a.request_timeout.is_zero()).then_some(a.request_timeout),
    }
}

fn format(f: FormatArg) -> Format {
    match f {
        FormatArg::Text => Format::Text,
        FormatArg::Json => Format::Json,
        FormatArg::Markdown => Format::Markdown,
    }
}

fn plan_options(
    a: &args::PlanInputArgs,
    format: Format,
    out: Option<std::path::PathBuf>,
) -> Result<ops::plan::PlanOptions, OpsError> {
    Ok(ops::plan::PlanOptions {
        source: SpecSource::new(&a.spec.file, a.spec.example.as_deref())?,
        environment: a.env.env.clone(),
        live_state: a.live_state.clone(),
        format,
        out,
        export_manifests: None,
        render: RenderOptions::default(),
        cluster: cluster_options(&a.cluster),
    })
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
            let opts = plan_options(&a.input, format(a.render.format), a.out.clone())?;
            let opts = ops::plan::PlanOptions {
                render: RenderOptions {
                    color: a.render.format == FormatArg::Text && colour(a.render.no_color),
                },
                export_manifests: a.export_manifests.clone(),
                ..opts
            };
            let (text, changes, unfinished) = ops::plan::run(&opts)?;
            print(&text);
            if let Some(e) = unfinished {
                return Err(e);
            }
            Ok(if changes && a.detailed_exitcode {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Show(a) => {
            let render = RenderOptions {
                color: a.render.format == FormatArg::Text && colour(a.render.no_color),
            };
            print(&ops::plan::show(
                &a.plan_file,
                format(a.render.format),
                &render,
            )?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Graph(a) => {
            print(&ops::plan::graph(&plan_options(
                &a.input,
                Format::Text,
                None,
            )?)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Schema => {
            print(&serde_json::to_string_pretty(&crate::spec::json_schema()).unwrap_or_default());
            Ok(ExitCode::SUCCESS)
        }
        Command::Completions { shell } => {
            print(&completion_script(shell));
            Ok(ExitCode::SUCCESS)
        }
        Command::Observe(a) => {
            let opts = ops::observe::ObserveOptions {
                source: SpecSource::new(&a.spec.file, a.spec.example.as_deref())?,
                environment: a.env.env.clone(),
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
                environment: a.env.env.clone(),
                cluster: cluster_options(&a.cluster),
                auto_approve: a.auto_approve,
                resume: a.resume,
                parallelism: a.parallelism as usize,
                lock_timeout,
                state_dir: a.state_dir.clone(),
                state: if a.state == "local" {
                    crate::apply::State::Local
                } else {
                    crate::apply::State::Cluster
                },
                json: a.json,
                color: colour(a.no_color),
            };
            ops::apply::run(&opts)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Status(a) => {
            let opts = ops::status::StatusOptions {
                source: SpecSource::new(&a.spec.file, a.spec.example.as_deref())?,
                environment: a.env.env.clone(),
                cluster: cluster_options(&a.cluster),
                state_dir: a.state_dir.clone(),
            };
            print(&ops::status::run(&opts)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::ForceUnlock(a) => {
            let source = SpecSource::new(&a.spec.file, a.spec.example.as_deref())?;
            print(&ops::apply::force_unlock(
                &source,
                a.env.env.as_deref(),
                &cluster_options(&a.cluster),
                &a.id,
            )?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The shell code that registers pgplan's completions: it calls pgplan
/// back with `COMPLETE=SHELL`, so values (examples, environments of the
/// spec, kubeconfig contexts) are completed from what is there at the time.
fn completion_script(shell: clap_complete::Shell) -> String {
    use clap_complete::env::{Bash, Elvish, EnvCompleter, Fish, Powershell, Zsh};
    let completer: &dyn EnvCompleter = match shell {
        clap_complete::Shell::Bash => &Bash,
        clap_complete::Shell::Elvish => &Elvish,
        clap_complete::Shell::Fish => &Fish,
        clap_complete::Shell::PowerShell => &Powershell,
        clap_complete::Shell::Zsh => &Zsh,
        // `Shell` is non-exhaustive; a shell clap adds later gets bash's script.
        _ => &Bash,
    };
    let mut buf = Vec::new();
    let _ = completer.write_registration("COMPLETE", "pgplan", "pgplan", "pgplan", &mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_errors_exit_1_and_help_and_version_0() {
        for (args, code) in [
            (&["pgplan", "--help"][..], ExitCode::SUCCESS),
            (&["pgplan", "--version"][..], ExitCode::SUCCESS),
            (&["pgplan", "plan", "-h"][..], ExitCode::SUCCESS),
            (&["pgplan", "frobnicate"][..], ExitCode::from(1)),
            (&["pgplan"][..], ExitCode::from(1)),
            (
                &["pgplan", "plan", "--format", "yaml"][..],
                ExitCode::from(1),
            ),
        ] {
            let e = Cli::try_parse_from(args).expect_err("not a runnable command line");
            assert_eq!(usage_exit_code(e.kind()), code, "{args:?}: {:?}", e.kind());
        }
    }

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }
}
