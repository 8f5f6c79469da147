//! Noticing that a data step has stopped moving: a frozen server, a
//! network partition, a disk that blocks. Every progress report touches a
//! [`Watch`]; when none came for a while, the server is asked whether
//! pgplan's sessions there are at work (running, not waiting for a lock or
//! for pgplan) — a long index build or checksum of one big table reports
//! nothing for minutes and is still progress. When neither happened for the
//! stall timeout, [`guard`] fails the step with [`PgError::Stalled`], and
//! dropping the work kills its tools (locally) or closes their exec streams.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::progress::Progress;
use super::{PgError, Runner};

/// When progress was last seen, and what it was.
pub struct Watch {
    start: Instant,
    last_ms: AtomicU64,
    last: Mutex<String>,
}

impl Default for Watch {
    fn default() -> Self {
        Watch {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            last: Mutex::new(String::new()),
        }
    }
}

impl Watch {
    /// Progress now.
    pub fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// A progress report: progress, and what the step was doing.
    pub fn saw(&self, p: &Progress) {
        self.touch();
        let what = match p {
            Progress::Bytes { phase, done, .. } => {
                format!("{} {}", crate::quantity::human_bytes(*done), phase.as_str())
            }
            Progress::Tables {
                phase, done, total, ..
            } => format!("{done} of {total} tables ({})", phase.as_str()),
        };
        if let Ok(mut last) = self.last.lock() {
            *last = what;
        }
    }

    /// How long since the last progress.
    pub fn idle(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }

    fn last(&self) -> String {
        self.last.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

/// Whether pgplan's tools have a session on the server running a
/// statement that is not waiting for a lock or for pgplan itself (in
/// `database`, when given). The probe's own session is left out.
fn busy_sql(database: Option<&str>) -> String {
    let db = database
        .map(|d| format!(" AND datname = {}", super::roles::literal(d)))
        .unwrap_or_default();
    format!(
        "SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid() \
         AND application_name IN ('pgplan', 'pg_dump', 'pg_restore', 'vacuumdb', 'psql') \
         AND state = 'active' AND coalesce(wait_event_type, '') NOT IN ('Lock', 'Client'){db}"
    )
}

async fn busy(runner: &Runner<'_>, database: Option<&str>) -> bool {
    // A short connect timeout: a frozen server accepts the connection and
    // never answers. The name keeps the probe out of its own count.
    let argv: Vec<String> = ["env", "PGCONNECT_TIMEOUT=5", "PGAPPNAME=pgplan-probe"]
        .iter()
        .map(|s| s.to_string())
        .chain(super::psql("postgres", &busy_sql(database)))
        .collect();
    match runner.output(&argv).await {
        Ok(out) => out.trim().parse::<u64>().is_ok_and(|n| n > 0),
        Err(_) => false,
    }
}

/// How often the watch is looked at, for a stall timeout.
fn tick(timeout: Duration) -> Duration {
    (timeout / 6).clamp(Duration::from_millis(200), Duration::from_secs(15))
}

/// Runs `work` and fails it with [`PgError::Stalled`] once `watch` has seen
/// no progress, and `runner`'s server no work of pgplan's (in `database`),
/// for `timeout`.
pub async fn guard<T, E: From<PgError>>(
    work: impl Future<Output = Result<T, E>>,
    watch: &Watch,
    timeout: Duration,
    runner: &Runner<'_>,
    database: Option<&str>,
) -> Result<T, E> {
    let every = tick(timeout);
    let monitor = async {
        loop {
            tokio::time::sleep(every).await;
            if watch.idle() >= every
                && tokio::time::timeout(every, busy(runner, database))
                    .await
                    .unwrap_or(false)
            {
                watch.touch();
            }
            if watch.idle() >= timeout {
                let last = watch.last();
                return PgError::Stalled {
                    server: runner.server(),
                    seconds: watch.idle().as_secs(),
                    last: if last.is_empty() {
                        String::new()
                    } else {
                        format!(" (last progress: {last})")
                    },
                };
            }
        }
    };
    tokio::select! {
        r = work => r,
        e = monitor => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_counts_only_work_that_is_not_waiting() {
        let sql = busy_sql(Some("it's"));
        assert!(sql.contains("datname = 'it''s'"), "{sql}");
        assert!(sql.contains("NOT IN ('Lock', 'Client')"), "{sql}");
        assert_eq!(tick(Duration::from_secs(300)), Duration::from_secs(15));
        assert_eq!(tick(Duration::from_secs(3)), Duration::from_millis(500));
    }

    #[tokio::test]
    async fn a_watch_measures_time_since_the_last_report() {
        let w = Watch::default();
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(w.idle() >= Duration::from_millis(30));
        w.saw(&Progress::Bytes {
            phase: super::super::Phase::Dump,
            done: 3 << 20,
            total: None,
        });
        assert!(w.idle() < Duration::from_millis(30));
        assert_eq!(w.last(), "3 MiB dumped");
    }
}
