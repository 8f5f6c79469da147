//! The PostgreSQL adapter: where the client tools run and how to call them.
//!
//! In the cluster the tools run inside the database pod (exec), so they
//! always match the server's major version and need no password (the local
//! socket, as the container's own superuser). For servers outside the
//! cluster (RDS, external) they run locally with libpq's environment:
//! host (or the spec's `connect` override), TLS mode and CA file, password.

pub mod inventory;

use std::path::PathBuf;
use std::process::Stdio;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::cluster::exec::ExecOutcome;
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
    #[error(transparent)]
    #[diagnostic(transparent)]
    Cluster(Box<ClusterError>),
}

impl From<ClusterError> for PgError {
    fn from(e: ClusterError) -> Self {
        PgError::Cluster(Box::new(e))
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
        stdin: Option<R>,
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
        let outcome = self.run(argv, None::<tokio::io::Empty>, &mut out).await?;
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

/// `psql` arguments for one statement, stopping at the first error.
pub fn psql(database: &str, sql: &str) -> Vec<String> {
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
        "-c",
        sql,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

async fn run_local<R, W>(
    conn: &ConnInfo,
    argv: &[String],
    stdin: Option<R>,
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
        .stdin(if stdin.is_some() {
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
        if let (Some(mut input), Some(mut w)) = (stdin, child_in) {
            let _ = tokio::io::copy(&mut input, &mut w).await;
            let _ = w.shutdown().await;
        }
    };
    let drain = async {
        let r = tokio::io::copy(&mut child_out, stdout).await;
        let _ = stdout.flush().await;
        r
    };
    let errors = async {
        let mut s = Vec::new();
        let _ = child_err.read_to_end(&mut s).await;
        if s.len() > 64 * 1024 {
            s.drain(..s.len() - 64 * 1024);
        }
        String::from_utf8_lossy(&s).into_owned()
    };
    let ((), copied, stderr) = tokio::join!(feed, drain, errors);
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
