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
//! `roles` (what pg_dump does not carry of roles: passwords, attributes,
//! memberships; and the privileges verify compares),
//! `knex` (migration locks); `contents` measures what a database holds
//! (row counts, checksums, sequences), `archive` and `manifest` own the
//! files in the backup directory, `session` an interactive `psql`, and
//! `progress` the callbacks the CLI draws bars from. docs/data-path.md
//! explains the formats, checksums, durability and tuning.

pub mod archive;
pub mod backup;
pub mod claim;
pub mod contents;
pub mod inventory;
pub mod knex;
pub mod manifest;
pub mod mismatch;
pub mod prepare;
pub mod progress;
pub mod restore;
pub mod roles;
mod session;
pub mod stall;
pub mod tune;
pub mod verify;

pub use backup::{backup, backup_paths, verify_archive, BackupOptions, BackupPaths};
pub use contents::{Method, SequenceValue, TableContents};
pub use knex::release_knex_locks;
pub use manifest::Manifest;
pub use mismatch::Mismatch;
pub use prepare::{drop_prepared, prepare_target, prepare_target_with, Passwords, Prepared};
pub use progress::{no_progress, Phase, Progress, ProgressFn};
pub use restore::{has_tables, reset_database, restore, RestoreOptions, Restored};
pub use tune::{make_durable, tune_for_loading, untune, wait_accepting, LoadTuning};
pub use verify::{
    verify, verify_in_sessions, verify_with_roles, Verified, VerifyFailure, VERIFY_JOBS,
};

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
    /// The server could not be reached or would not let pgplan in; the
    /// problem says which, with its own code and help.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Connect(Box<ConnectError>),
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
    /// A write ran out of space: where, and how much is left.
    #[error("the backup directory {} is full ({} free): {message}", dir.display(), crate::quantity::human_bytes(*free))]
    #[diagnostic(
        code(pgplan::pg::no_space),
        help("free space there, or point `backup.directory` at a filesystem with room for the dump{needed}, then apply again; nothing after the backup ran")
    )]
    NoSpace {
        dir: PathBuf,
        free: u64,
        message: String,
        /// `` (about 1.2 GiB)`` when the size is known, for the help.
        needed: String,
    },
    /// Nothing moved for the stall timeout.
    #[error("no progress for {seconds} s from {server}{last}")]
    #[diagnostic(
        code(pgplan::pg::stalled),
        help("the server stopped answering (frozen, overloaded, or cut off by the network) or a write blocks; check the server and the path to it, then apply again. `backup.stallTimeout` sets how long a data step may go without progress")
    )]
    Stalled {
        server: String,
        seconds: u64,
        /// ` (last progress: …)`, or empty.
        last: String,
    },
    /// The tool's output could not be written where it goes.
    #[error("writing the output of `{program}` failed: {error}")]
    #[diagnostic(code(pgplan::pg::write))]
    Sink {
        program: String,
        #[source]
        error: std::io::Error,
    },
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
        if is_no_space(&e) {
            let dir = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."));
            return PgError::no_space(dir, format!("cannot {action} {}: {e}", path.display()));
        }
        PgError::Io {
            action,
            path: path.to_path_buf(),
            message: e.to_string(),
        }
    }

    /// Out of space in `dir`, with what is free there now.
    pub(crate) fn no_space(dir: &std::path::Path, message: String) -> PgError {
        PgError::NoSpace {
            dir: dir.to_path_buf(),
            free: free_bytes(dir).unwrap_or(0),
            message,
            needed: String::new(),
        }
    }

    pub(crate) fn archive(path: &std::path::Path, problem: impl Into<String>) -> PgError {
        PgError::Archive {
            path: path.to_path_buf(),
            problem: problem.into(),
        }
    }
}

/// Whether an error is a full filesystem or an exhausted quota.
pub(crate) fn is_no_space(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
        || e.kind() == std::io::ErrorKind::StorageFull
        || e.kind() == std::io::ErrorKind::QuotaExceeded
}

/// Bytes an unprivileged writer may still put on the filesystem of `dir`.
pub fn free_bytes(dir: &std::path::Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: `c` is a valid NUL-terminated path and `st` a zeroed
    // statvfs the call fills in; nothing else is touched.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
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

    /// Run a tool with streamed stdin and stdout; stderr is returned. If
    /// writing its output fails (a full disk), the tool is stopped at once
    /// and that error returned: a tool whose output is no longer read would
    /// otherwise block on it forever.
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
        tracing::debug!(server = %self.server(), command = %argv.join(" "), "running");
        let failed = std::sync::Arc::new(FirstError::default());
        let mut guarded = FailFast {
            inner: stdout,
            failed: failed.clone(),
        };
        let program = argv.first().cloned().unwrap_or_default();
        tokio::select! {
            r = self.run_unguarded(argv, stdin, &mut guarded) => match (r, failed.take()) {
                (_, Some(error)) => Err(PgError::Sink { program, error }),
                (r, None) => r,
            },
            () = failed.notify.notified() => Err(PgError::Sink {
                program,
                error: failed.take().unwrap_or_else(|| std::io::Error::other("the output could not be written")),
            }),
        }
    }

    async fn run_unguarded<R, W>(
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

    /// The error for a failed command: a failure to connect or to log in
    /// is told apart from a command that ran and failed, and says which.
    pub fn failure(&self, argv: &[String], outcome: ExecOutcome) -> PgError {
        let stderr = outcome.stderr.trim().to_string();
        if let Some(problem) = ConnectProblem::of(&stderr) {
            return PgError::Connect(Box::new(ConnectError {
                server: self.server(),
                problem,
                message: stderr,
            }));
        }
        PgError::Command {
            server: self.server(),
            command: argv.first().cloned().unwrap_or_default(),
            code: outcome.code,
            stderr,
        }
    }
}

/// Why a connection to a server failed, read from libpq's message (psql,
/// pg_dump and pg_restore all print it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectProblem {
    /// The server asked for a password and refused the one given.
    Password,
    /// The server wants a password and none was given.
    NoPassword,
    /// pg_hba.conf has no line admitting this host, user and database.
    NotAdmitted,
    /// The login role does not exist.
    NoRole,
    /// Nothing listens at the address (or the local socket).
    Refused,
    /// The host name does not resolve.
    UnknownHost,
    /// No answer in time: a firewall, a security group, a partition.
    Timeout,
    /// TLS could not be negotiated or the certificate was not trusted.
    Tls,
    /// The server is up but not taking sessions (starting, stopping, full).
    NotReady,
    /// Something else went wrong while connecting (the message says what).
    Other,
}

impl ConnectProblem {
    /// The problem libpq's message describes; `None` for a command that
    /// connected and then failed (its error is the server's `ERROR:`).
    pub fn of(stderr: &str) -> Option<ConnectProblem> {
        use ConnectProblem::*;
        // Most specific first: an authentication failure is also "connection
        // to server … failed".
        const PATTERNS: &[(&str, ConnectProblem)] = &[
            ("password authentication failed", Password),
            ("authentication failed for user", Password),
            ("no password supplied", NoPassword),
            ("password is required", NoPassword),
            ("no pg_hba.conf entry", NotAdmitted),
            ("pg_hba.conf rejects connection", NotAdmitted),
            ("could not translate host name", UnknownHost),
            ("Name or service not known", UnknownHost),
            ("timeout expired", Timeout),
            ("Connection timed out", Timeout),
            ("SSL", Tls),
            ("certificate", Tls),
            ("the database system is starting up", NotReady),
            ("the database system is shutting down", NotReady),
            ("the database system is in recovery mode", NotReady),
            ("too many clients already", NotReady),
            ("remaining connection slots are reserved", NotReady),
            ("Connection refused", Refused),
            ("No such file or directory", Refused),
            ("could not connect", Refused),
        ];
        // A command that connected fails with the server's ERROR (or a
        // FATAL later, "terminating connection"); only libpq's connection
        // message, or a FATAL that refuses a login (older tools print it
        // without the "connection to server" prefix), is a connection problem.
        let login_refused =
            stderr.contains("FATAL:") && PATTERNS[..6].iter().any(|(p, _)| stderr.contains(p));
        let connecting = (stderr.contains("connection to server") && stderr.contains("failed"))
            || stderr.contains("could not connect to server")
            || stderr.contains("could not translate host name")
            || stderr.contains("timeout expired")
            || login_refused
            || (stderr.contains("role \"")
                && stderr.contains("does not exist")
                && stderr.contains("FATAL:"));
        if !connecting || stderr.contains("ERROR:") {
            return None;
        }
        let role_missing = stderr.contains("role \"") && stderr.contains("does not exist");
        let database_missing = stderr.contains("database \"") && stderr.contains("does not exist");
        if database_missing && !role_missing {
            // It connected far enough to learn that: the command's own failure.
            return None;
        }
        if role_missing {
            return Some(NoRole);
        }
        Some(
            PATTERNS
                .iter()
                .find(|(p, _)| stderr.contains(p))
                .map_or(Other, |(_, k)| *k),
        )
    }

    fn what(self) -> &'static str {
        match self {
            ConnectProblem::Password => "rejected the password",
            ConnectProblem::NoPassword => "asked for a password and none was given",
            ConnectProblem::NotAdmitted => "does not admit this login (pg_hba.conf)",
            ConnectProblem::NoRole => "has no such login role",
            ConnectProblem::Refused => "refused the connection (nothing listens there)",
            ConnectProblem::UnknownHost => "cannot be found (the host name does not resolve)",
            ConnectProblem::Timeout => "did not answer in time",
            ConnectProblem::Tls => "could not agree on TLS",
            ConnectProblem::NotReady => "is not accepting sessions",
            ConnectProblem::Other => "could not be connected to",
        }
    }

    fn code(self) -> &'static str {
        match self {
            ConnectProblem::Password | ConnectProblem::NoPassword | ConnectProblem::NoRole => {
                "pgplan::pg::auth"
            }
            ConnectProblem::NotAdmitted => "pgplan::pg::hba",
            ConnectProblem::Refused => "pgplan::pg::unreachable",
            ConnectProblem::UnknownHost => "pgplan::pg::unknown-host",
            ConnectProblem::Timeout => "pgplan::pg::timeout",
            ConnectProblem::Tls => "pgplan::pg::tls",
            ConnectProblem::NotReady => "pgplan::pg::not-ready",
            ConnectProblem::Other => "pgplan::pg::connect",
        }
    }

    fn help(self) -> &'static str {
        match self {
            ConnectProblem::Password => "the server is reachable and answered, but the password is wrong for that user: check the `${VAR}` of `credentials` (its value, not its name) and the `username`",
            ConnectProblem::NoPassword => "the server wants a password: give `credentials` a `password: ${VAR}` and export the variable",
            ConnectProblem::NotAdmitted => "the server is reachable but its pg_hba.conf has no line for this client address, user and database (or for this TLS choice): add one on the server, or on RDS check `rds.force_ssl` against `tls.mode`",
            ConnectProblem::NoRole => "the server answered but has no role of that name: check `credentials.*.username`",
            ConnectProblem::Refused => "nothing accepts connections at that address: check the host and port, that the server is running, and for a tunnel or port-forward `connect: {host, port}`",
            ConnectProblem::UnknownHost => "the host name does not resolve from here: check the host name, this machine's DNS, or use `connect: {host, port}` through a tunnel",
            ConnectProblem::Timeout => "nothing answered within the connect timeout: a firewall or security group drops the packets, or the server is frozen; check the network path to the server",
            ConnectProblem::Tls => "TLS failed: check `tls.mode` (the server may not offer TLS, or require it) and `tls.caFile` (the CA that signed the server's certificate)",
            ConnectProblem::NotReady => "the server is starting, stopping or out of connection slots: wait and apply again",
            ConnectProblem::Other => "check that the server is up and reachable, the user and password (the `${VAR}` of `credentials`), and TLS (`tls.mode`, `tls.caFile`); behind a tunnel, set `connect: {host, port}`",
        }
    }
}

/// A server that could not be reached or would not let pgplan in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectError {
    pub server: String,
    pub problem: ConnectProblem,
    /// What the tool printed.
    pub message: String,
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.server,
            self.problem.what(),
            self.message
        )
    }
}

impl std::error::Error for ConnectError {}

impl miette::Diagnostic for ConnectError {
    fn code<'a>(&'a self) -> Option<Box<dyn std::fmt::Display + 'a>> {
        Some(Box::new(self.problem.code()))
    }

    fn help<'a>(&'a self) -> Option<Box<dyn std::fmt::Display + 'a>> {
        Some(Box::new(self.problem.help()))
    }
}

/// The first error a [`FailFast`] writer met, and a wake-up for whoever
/// waits on it.
#[derive(Default)]
struct FirstError {
    error: std::sync::Mutex<Option<std::io::Error>>,
    notify: tokio::sync::Notify,
}

impl FirstError {
    fn set(&self, e: &std::io::Error) {
        if let Ok(mut slot) = self.error.lock() {
            if slot.is_none() {
                *slot = Some(std::io::Error::new(e.kind(), e.to_string()));
                // Keep the OS error (ENOSPC) for the caller's diagnosis.
                if let Some(code) = e.raw_os_error() {
                    *slot = Some(std::io::Error::from_raw_os_error(code));
                }
                self.notify.notify_one();
            }
        }
    }

    fn take(&self) -> Option<std::io::Error> {
        self.error.lock().ok().and_then(|mut e| e.take())
    }
}

/// A writer that reports its first error to a [`FirstError`].
struct FailFast<'w, W> {
    inner: &'w mut W,
    failed: std::sync::Arc<FirstError>,
}

impl<W: AsyncWrite + Unpin> AsyncWrite for FailFast<'_, W> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut *self.inner).poll_write(cx, buf);
        if let std::task::Poll::Ready(Err(e)) = &r {
            self.failed.set(e);
        }
        r
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let r = std::pin::Pin::new(&mut *self.inner).poll_flush(cx);
        if let std::task::Poll::Ready(Err(e)) = &r {
            self.failed.set(e);
        }
        r
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut *self.inner).poll_shutdown(cx)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// What libpq 15's tools print, verbatim.
    #[test]
    fn connection_failures_are_told_apart_by_what_libpq_says() {
        use ConnectProblem::*;
        let at = "psql: error: connection to server at \"127.0.0.1\", port 5432 failed:";
        let cases = [
            (format!("{at} FATAL:  password authentication failed for user \"app\""), Some(Password)),
            (format!("{at} fe_sendauth: no password supplied"), Some(NoPassword)),
            (format!("{at} FATAL:  no pg_hba.conf entry for host \"127.0.0.1\", user \"app\", database \"app\", no encryption"), Some(NotAdmitted)),
            ("psql: error: connection to server on socket \"/run/postgresql/.s.PGSQL.5432\" failed: FATAL:  role \"root\" does not exist".to_string(), Some(NoRole)),
            (format!("{at} Connection refused\n\tIs the server running on that host and accepting TCP/IP connections?"), Some(Refused)),
            ("psql: error: could not translate host name \"db.invalid\" to address: Name or service not known".to_string(), Some(UnknownHost)),
            (format!("{at} timeout expired"), Some(Timeout)),
            (format!("{at} server does not support SSL, but SSL was required"), Some(Tls)),
            (format!("{at} FATAL:  the database system is starting up"), Some(NotReady)),
            // Older tools: no "connection to server" prefix on a refused login.
            ("psql: error: FATAL:  password authentication failed for user \"app\"".to_string(), Some(Password)),
            // Connected, then failed: the command's own errors.
            (format!("{at} FATAL:  database \"nope\" does not exist"), None),
            ("psql:<stdin>:1: ERROR:  permission denied for table pg_authid".to_string(), None),
            ("pg_dump: error: Dumping the contents of table \"t\" failed: PQgetResult() failed.\npg_dump: detail: Error message from server: FATAL:  terminating connection due to administrator command".to_string(), None),
        ];
        for (stderr, want) in cases {
            assert_eq!(ConnectProblem::of(&stderr), want, "{stderr}");
        }
    }

    #[test]
    fn a_wrong_password_is_not_called_a_refused_connection() {
        let runner = Runner::Local {
            conn: ConnInfo {
                host: "db".into(),
                port: 5432,
                user: "app".into(),
                password: None,
                sslmode: "disable".into(),
                sslrootcert: None,
            },
        };
        let e = runner.failure(
            &["psql".into()],
            ExecOutcome {
                code: 2,
                stderr: "psql: error: connection to server at \"db\" (10.0.0.5), port 5432 failed: FATAL:  password authentication failed for user \"app\"\n".into(),
            },
        );
        let text = e.to_string();
        assert!(
            text.starts_with("db:5432 rejected the password: "),
            "{text}"
        );
        assert!(!text.contains("refused"), "{text}");
        let code = miette::Diagnostic::code(&e).map(|c| c.to_string());
        assert_eq!(code.as_deref(), Some("pgplan::pg::auth"));
        let help = miette::Diagnostic::help(&e)
            .map(|h| h.to_string())
            .unwrap_or_default();
        assert!(help.contains("password is wrong"), "{help}");
    }
}
