//! The PostgreSQL adapter: where the client tools run and how to call them.
//!
//! In the cluster the tools run inside the database pod (exec), so they
//! always match the server's major version and need no password (the local
//! socket, as the container's own superuser). For servers outside the
//! cluster (RDS, external) they run locally with libpq's environment:
//! host (or the spec's `connect` override), TLS mode and CA file, password.
//!
//! The data path apply runs is built on the `Runner`, one module per step:
//! `backup` (dump, hash, check, manifest), `prepare` (roles, databases),
//! `tune` (settings for loading a fresh server), `restore`, `verify`,
//! `knex` (migration locks); `contents` measures what a database holds
//! (row counts, checksums, sequences), `archive` and `manifest` own the
//! files in the backup directory, `session` an interactive `psql`, and
//! `progress` the callbacks the CLI draws bars from. docs/data-path.md
//! explains the formats, checksums, durability and tuning.

pub mod archive;
pub mod backup;
pub mod contents;
pub mod inventory;
pub mod knex;
pub mod manifest;
pub mod prepare;
pub mod progress;
pub mod restore;
mod session;
pub mod tune;
pub mod verify;

pub use backup::{backup, backup_paths, verify_archive, BackupOptions, BackupPaths};
pub use contents::{Method, SequenceValue, TableContents};
pub use knex::release_knex_locks;
pub use manifest::Manifest;
pub use prepare::{prepare_target, Prepared};
pub use progress::{no_progress, Phase, Progress, ProgressFn};
pub use restore::{restore, RestoreOptions, Restored};
pub use tune::{make_durable, tune_for_loading, untune, wait_accepting, LoadTuning};
pub use verify::{verify, verify_in_sessions, Mismatch, Verified, VerifyFailure, VERIFY_JOBS};

use std::path::PathBuf;
use std::process::Stdio;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::cluster::exec::ExecOutcome;
pub use crate::cluster::exec::Stdin;
use crate::cluster::{Cluster, ClusterError};

/// Why a PostgreSQL command failed.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum PgError {
    #[error("{server}: `{command}` failed (exit {code}): {stderr}")]
    #[diagnostic(code(pgplan::pg::command))]
    Command {
        server: String,
        command: String,
        code: i32,
        stderr: String,
    },
    #[error("{server} refused the connection: {message}")]
    #[diagnostic(
        code(pgplan::pg::connect),
        help("check that the server is up and reachable, the user and password (the `${{VAR}}` of `credentials`), and TLS (`tls.mode`, `tls.caFile`); behind a tunnel, set `connect: {{host, port}}`")
    )]
    Connect { server: String, message: String },
    #[error("cannot run `{program}` locally: {message}")]
    #[diagnostic(code(pgplan::pg::tools), help("install the PostgreSQL client tools (Debian: postgresql-client), at least as new as the server"))]
    Tools { program: String, message: String },
    #[error("{server}: unexpected output from `{command}`: {message}")]
    #[diagnostic(code(pgplan::pg::output))]
    Output {
        server: String,
        command: String,
        message: String,
    },
    #[error("cannot {action} {}: {message}", path.display())]
    #[diagnostic(
        code(pgplan::pg::io),
        help("check that the backup directory exists, is writable by pgplan and has room for the dump")
    )]
    Io {
        action: &'static str,
        path: PathBuf,
        message: String,
    },
    #[error("backup {} cannot be verified: {problem}", path.display())]
    #[diagnostic(
        code(pgplan::pg::archive),
        help("the archive or its manifest is missing, damaged or changed since it was written; never restore from it: take the backup again (apply re-runs the backup step while the source is still authoritative)")
    )]
    Archive { path: PathBuf, problem: String },
    #[error("restore of {database} into {server} failed{at}: {message}")]
    #[diagnostic(
        code(pgplan::pg::restore),
        help("pg_restore stopped at the first error (--exit-on-error), so the database holds a partial copy: fix the cause (an object that already exists means the target database was not empty), drop and re-create the target database, and apply again")
    )]
    Restore {
        database: String,
        server: String,
        /// The archive entry that failed, e.g. `TABLE DATA public.signing_keys`.
        entry: Option<String>,
        /// ` at {entry}` when the entry is known, for the message.
        at: String,
        message: String,
    },
    #[error(transparent)]
    #[diagnostic(transparent)]
    Verify(Box<VerifyFailure>),
    #[error("{server}: {message}")]
    #[diagnostic(code(pgplan::pg::refused), help("{help}"))]
    Refused {
        server: String,
        message: String,
        help: String,
    },
    /// Boxed: the cluster's errors are large and every result here carries
    /// this type.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Cluster(Box<ClusterError>),
}

impl From<ClusterError> for PgError {
    fn from(e: ClusterError) -> Self {
        PgError::Cluster(Box::new(e))
    }
}

impl PgError {
    pub(crate) fn io(action: &'static str, path: &std::path::Path, e: std::io::Error) -> PgError {
        PgError::Io {
            action,
            path: path.to_path_buf(),
            message: e.to_string(),
        }
    }

    pub(crate) fn archive(path: &std::path::Path, problem: impl Into<String>) -> PgError {
        PgError::Archive {
            path: path.to_path_buf(),
            problem: problem.into(),
        }
    }
}

/// libpq connection settings for a server reached over the network.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnInfo {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<String>,
    pub sslmode: String,
    pub sslrootcert: Option<PathBuf>,
}

impl ConnInfo {
    fn env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("PGHOST", self.host.clone()),
            ("PGPORT", self.port.to_string()),
            ("PGUSER", self.user.clone()),
            ("PGSSLMODE", self.sslmode.clone()),
            ("PGCONNECT_TIMEOUT", "10".into()),
        ];
        if let Some(pw) = &self.password {
            env.push(("PGPASSWORD", pw.clone()));
        }
        if let Some(ca) = &self.sslrootcert {
            env.push(("PGSSLROOTCERT", ca.display().to_string()));
        }
        env
    }
}

/// Where the PostgreSQL tools run.
pub enum Runner<'a> {
    /// Inside a pod, through exec, as the container's own superuser.
    Pod {
        cluster: &'a Cluster,
        namespace: String,
        pod: String,
        container: Option<String>,
    },
    /// On this machine, against a server on the network.
    Local { conn: ConnInfo },
}

/// The shell prelude in a pod: connect as the official image's
/// `POSTGRES_USER` (its superuser), else `postgres` (the superuser of the
/// official image's default and of the RHEL image). libpq's own default,
/// the OS user, is `root` in the official image and would be refused.
const POD_PRELUDE: &str = r#"export PGUSER="${POSTGRES_USER:-postgres}"; exec "$@""#;

impl Runner<'_> {
    /// A name for messages: `pod ns/name` or `host:port`.
    pub fn server(&self) -> String {
        match self {
            Runner::Pod { namespace, pod, .. } => format!("pod {namespace}/{pod}"),
            Runner::Local { conn } => format!("{}:{}", conn.host, conn.port),
        }
    }

    /// Run a tool with streamed stdin and stdout; stderr is returned.
    pub async fn run<R, W>(
        &self,
        argv: &[String],
        stdin: Stdin<R>,
        stdout: &mut W,
    ) -> Result<ExecOutcome, PgError>
    where
        R: AsyncRead + Unpin + Send,
        W: AsyncWrite + Unpin + Send,
    {
        match self {
            Runner::Pod {
                cluster,
                namespace,
                pod,
                container,
            } => {
                let mut full = vec![
                    "sh".to_string(),
                    "-c".into(),
                    POD_PRELUDE.into(),
                    "pgplan".into(),
                ];
                full.extend(argv.iter().cloned());
                Ok(cluster
                    .exec(namespace, pod, container.as_deref(), &full, stdin, stdout)
                    .await?)
            }
            Runner::Local { conn } => run_local(conn, argv, stdin, stdout).await,
        }
    }

    /// Run a tool and collect its stdout as text; a non-zero exit is an error.
    pub async fn output(&self, argv: &[String]) -> Result<String, PgError> {
        let mut out = Vec::new();
        let outcome = self.run(argv, Stdin::none(), &mut out).await?;
        if outcome.code != 0 {
            return Err(self.failure(argv, outcome));
        }
        String::from_utf8(out).map_err(|e| PgError::Output {
            server: self.server(),
            command: argv.join(" "),
            message: e.to_string(),
        })
    }

    /// One SQL statement in `database`; the unaligned, tuples-only result.
    pub async fn query(&self, database: &str, sql: &str) -> Result<String, PgError> {
        self.output(&psql(database, sql)).await
    }

    /// A script of statements fed to `psql` on stdin, each its own
    /// transaction (so `CREATE DATABASE` and `ALTER SYSTEM` may be among
    /// them), stopping at the first error; the unaligned, tuples-only output.
    pub async fn script(&self, database: &str, sql: &str) -> Result<String, PgError> {
        let mut argv = psql_base(database);
        argv.extend(["-f".to_string(), "-".to_string()]);
        let mut out = Vec::new();
        let outcome = self
            .run(
                &argv,
                Stdin::Sized(sql.as_bytes(), sql.len() as u64),
                &mut out,
            )
            .await?;
        if outcome.code != 0 {
            return Err(self.failure(&argv, outcome));
        }
        String::from_utf8(out).map_err(|e| PgError::Output {
            server: self.server(),
            command: "psql".into(),
            message: e.to_string(),
        })
    }

    /// Whether the tools run on this machine (so they can read local files).
    pub fn is_local(&self) -> bool {
        matches!(self, Runner::Local { .. })
    }

    /// Whether the tools run beside the server, on the kernel that holds
    /// its writes: always in its pod; locally, when the server is reached
    /// over a Unix socket or the loopback.
    pub fn beside_server(&self) -> bool {
        match self {
            Runner::Pod { .. } => true,
            Runner::Local { conn } => {
                conn.host.starts_with('/')
                    || matches!(conn.host.as_str(), "localhost" | "127.0.0.1" | "::1")
            }
        }
    }

    /// Beside the server, `sync`: the kernel writes back what the server
    /// has written (which with `fsync = off` it never asks for). Elsewhere
    /// nothing: the server's disk is out of reach.
    pub async fn write_back(&self) -> Result<(), PgError> {
        if self.beside_server() {
            self.output(&["sync".to_string()]).await?;
        }
        Ok(())
    }

    /// The error for a failed command: a refused connection is told apart.
    pub fn failure(&self, argv: &[String], outcome: ExecOutcome) -> PgError {
        let stderr = outcome.stderr.trim().to_string();
        let refused = [
            "could not connect",
            "connection to server",
            "Connection refused",
            "password authentication failed",
            "could not translate host name",
            "timeout expired",
            "SSL",
        ];
        if refused.iter().any(|r| stderr.contains(r)) && !stderr.contains("ERROR:") {
            return PgError::Connect {
                server: self.server(),
                message: stderr,
            };
        }
        PgError::Command {
            server: self.server(),
            command: argv.first().cloned().unwrap_or_default(),
            code: outcome.code,
            stderr,
        }
    }
}

/// `psql` arguments for `database`: no psqlrc, quiet, unaligned,
/// tuples only, stopping at the first error. Statements come after.
pub(crate) fn psql_base(database: &str) -> Vec<String> {
    [
        "psql",
        "-X",
        "-q",
        "-A",
        "-t",
        "-v",
        "ON_ERROR_STOP=1",
        "-d",
        database,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// `psql` arguments for one statement, stopping at the first error.
pub fn psql(database: &str, sql: &str) -> Vec<String> {
    let mut argv = psql_base(database);
    argv.extend(["-c".to_string(), sql.to_string()]);
    argv
}

async fn run_local<R, W>(
    conn: &ConnInfo,
    argv: &[String],
    stdin: Stdin<R>,
    stdout: &mut W,
) -> Result<ExecOutcome, PgError>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    let Some((program, args)) = argv.split_first() else {
        return Err(PgError::Tools {
            program: String::new(),
            message: "empty command".into(),
        });
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .envs(conn.env())
        .stdin(if !matches!(stdin, Stdin::None) {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| PgError::Tools {
        program: program.clone(),
        message: e.to_string(),
    })?;
    let child_in = child.stdin.take();
    let mut child_out = child.stdout.take().ok_or_else(|| PgError::Tools {
        program: program.clone(),
        message: "no stdout".into(),
    })?;
    let mut child_err = child.stderr.take().ok_or_else(|| PgError::Tools {
        program: program.clone(),
        message: "no stderr".into(),
    })?;
    let feed = async {
        let Some(mut w) = child_in else { return };
        let _ = match stdin {
            Stdin::None => Ok(0),
            Stdin::Sized(input, len) => tokio::io::copy(&mut input.take(len), &mut w).await,
            Stdin::Open(mut input) => tokio::io::copy(&mut input, &mut w).await,
        };
        let _ = w.shutdown().await;
    };
    // Reads as large as the pipe holds, not tokio::io::copy's 8 KiB: a
    // dump of gigabytes passes through here.
    let drain = async {
        let mut reader = tokio::io::BufReader::with_capacity(1 << 18, &mut child_out);
        let r = tokio::io::copy_buf(&mut reader, stdout).await;
        let _ = stdout.flush().await;
        r
    };
    // Only the end of stderr is kept, so memory does not grow with the database.
    let errors = crate::cluster::exec::stderr_tail(&mut child_err);
    // Once the child has closed its stdout and stderr (it exited), stop
    // feeding it: a caller's stdin that never ends (an interactive session)
    // must not keep this call waiting.
    let outputs = async { tokio::join!(drain, errors) };
    tokio::pin!(feed);
    tokio::pin!(outputs);
    let mut fed = false;
    let (copied, stderr) = loop {
        tokio::select! {
            () = &mut feed, if !fed => fed = true,
            done = &mut outputs => break done,
        }
    };
    copied.map_err(|e| PgError::Tools {
        program: program.clone(),
        message: format!("writing its output failed: {e}"),
    })?;
    let status = child.wait().await.map_err(|e| PgError::Tools {
        program: program.clone(),
        message: e.to_string(),
    })?;
    Ok(ExecOutcome {
        code: status.code().unwrap_or(-1),
        stderr,
    })
}
