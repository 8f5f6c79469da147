//! An interactive `psql` run by a [`Runner`]: statements go in on stdin one
//! at a time and each answer is read back before the next is sent, all in
//! one connection. The backup needs this to hold the transaction whose
//! snapshot `pg_dump` imports while it measures the same snapshot.
//!
//! Framing: every statement sent with [`Session::line`] must return exactly
//! one row of one column with no newline in it (an aggregate, a JSON value),
//! which `psql -A -t` prints as one line and flushes at once.

use std::future::Future;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, DuplexStream};

use super::{PgError, Runner};

/// The connection settings every measuring session uses, so that text
/// forms of values (and hence text checksums) do not depend on the server's
/// or the role's defaults.
pub(crate) const STABLE_SETTINGS: &str = "SET application_name = 'pgplan'; \
SET statement_timeout = 0; SET lock_timeout = 0; \
SET idle_in_transaction_session_timeout = 0; \
SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; SET IntervalStyle = 'postgres'; \
SET extra_float_digits = 1; SET bytea_output = 'hex'; SET lc_monetary = 'C'; \
SET search_path = pg_catalog;";

/// While waiting for an answer, a blank line is sent this often: if psql
/// has exited the write fails, which ends the runner's call instead of
/// waiting forever for a line that will not come. psql ignores blank lines.
const HEARTBEAT: Duration = Duration::from_millis(500);

pub(crate) struct Session {
    input: DuplexStream,
    output: BufReader<DuplexStream>,
    line: String,
    server: String,
}

impl Session {
    /// Sends `sql` (one or more statements, the last returning one line).
    /// Returns that line.
    pub(crate) async fn line(&mut self, sql: &str) -> Result<String, PgError> {
        self.send(sql).await?;
        self.read_line().await
    }

    /// The server, for messages.
    pub(crate) fn server(&self) -> &str {
        &self.server
    }

    /// Sends statements that print nothing (SET, BEGIN, COMMIT).
    pub(crate) async fn send(&mut self, sql: &str) -> Result<(), PgError> {
        let mut text = sql.trim_end().to_string();
        if !text.ends_with(';') {
            text.push(';');
        }
        text.push('\n');
        self.input
            .write_all(text.as_bytes())
            .await
            .map_err(|_| self.closed())?;
        self.input.flush().await.map_err(|_| self.closed())
    }

    async fn read_line(&mut self) -> Result<String, PgError> {
        self.line.clear();
        let mut beat = tokio::time::interval(HEARTBEAT);
        beat.tick().await;
        loop {
            tokio::select! {
                read = self.output.read_line(&mut self.line) => {
                    return match read {
                        Ok(0) | Err(_) => Err(self.closed()),
                        Ok(_) => Ok(self.line.trim_end_matches(['\n', '\r']).to_string()),
                    };
                }
                _ = beat.tick() => {
                    if self.input.write_all(b"\n").await.is_err() {
                        return Err(self.closed());
                    }
                }
            }
        }
    }

    fn closed(&self) -> PgError {
        PgError::Output {
            server: self.server.clone(),
            command: "psql".into(),
            message: "the session ended before answering".into(),
        }
    }
}

/// Runs `work` with a session on `database` through `runner`, with
/// [`STABLE_SETTINGS`] applied. The session ends (psql reads `\q`, and its stdin ends)
/// when `work` returns. If psql fails, its error (stderr, exit code) is
/// returned rather than the broken session's.
pub(crate) async fn with_session<T, F, Fut>(
    runner: &Runner<'_>,
    database: &str,
    work: F,
) -> Result<T, PgError>
where
    F: FnOnce(Session) -> Fut,
    Fut: Future<Output = Result<T, PgError>>,
{
    let (input, psql_stdin) = tokio::io::duplex(1 << 16);
    let (psql_stdout, output) = tokio::io::duplex(1 << 16);
    let argv = super::psql_base(database);
    let mut session = Session {
        input,
        output: BufReader::new(output),
        line: String::new(),
        server: runner.server(),
    };
    let psql = async {
        let mut psql_stdout = psql_stdout;
        // psql ends the session itself on `\q`, sent once `work` is done
        // with it (its input ends): over a v4 exec, the end of stdin cannot
        // be signalled without losing psql's exit status.
        let stdin = super::Stdin::Open(psql_stdin.chain(&b"\\q\n"[..]));
        let r = runner.run(&argv, stdin, &mut psql_stdout).await;
        // Closing our end of psql's stdout ends any read still waiting.
        drop(psql_stdout);
        r
    };
    let job = async {
        session.send(STABLE_SETTINGS).await?;
        work(session).await
    };
    let (ran, worked) = tokio::join!(psql, job);
    let outcome = ran?;
    if outcome.code != 0 {
        return Err(runner.failure(&argv, outcome));
    }
    worked
}
