//! Settings for loading a server pgplan has just created (a fresh
//! StatefulSet pod), and taking them back before it serves, as
//! CloudNativePG's import does. While tuned, a crash of the server can
//! corrupt it (no fsync, no full-page writes): that is acceptable only
//! because the server holds nothing but the restore in progress, which is
//! redone from the backup. Never for RDS or any server that already holds
//! data; the planner decides, and a server without a superuser refuses.
//!
//! Everything goes through `ALTER SYSTEM` and a reload. Minimal WAL
//! (`wal_level = minimal`, which lets `pg_restore -j` skip the WAL of the
//! tables and indexes it creates) needs a restart as well: these functions
//! say when one is due and the caller restarts the server (the executor
//! deletes the pod and waits for its StatefulSet to bring it back).

use std::time::Duration;

use super::contents::literal;
use super::{PgError, Runner};

/// Sizes used while loading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadTuning {
    /// Memory per index build; `pg_restore -j N` builds up to N at once,
    /// so keep N times this within the pod's memory.
    pub maintenance_work_mem: String,
    /// WAL kept between checkpoints; must fit on the data volume beside
    /// the data.
    pub max_wal_size: String,
    /// Workers per index build. `pg_restore -j N` already builds N indexes
    /// at once; on a server with few CPUs, more workers per build only
    /// oversubscribe them. `None` leaves the server's setting.
    pub parallel_maintenance_workers: Option<u32>,
    /// Also `wal_level = minimal` (with what it requires: no WAL senders,
    /// no archiving), which takes effect only after a restart.
    pub minimal_wal: bool,
}

impl Default for LoadTuning {
    fn default() -> Self {
        LoadTuning {
            maintenance_work_mem: "256MB".into(),
            max_wal_size: "2GB".into(),
            parallel_maintenance_workers: None,
            minimal_wal: false,
        }
    }
}

impl LoadTuning {
    /// `(setting, value)` pairs applied while loading.
    pub fn settings(&self) -> Vec<(&'static str, String)> {
        let mut settings = vec![
            ("fsync", "off".into()),
            ("full_page_writes", "off".into()),
            ("synchronous_commit", "off".into()),
            ("autovacuum", "off".into()),
            ("checkpoint_timeout", "30min".into()),
            ("maintenance_work_mem", self.maintenance_work_mem.clone()),
            ("max_wal_size", self.max_wal_size.clone()),
        ];
        if let Some(n) = self.parallel_maintenance_workers {
            settings.push(("max_parallel_maintenance_workers", n.to_string()));
        }
        if self.minimal_wal {
            settings.extend(MINIMAL_WAL.iter().map(|(n, v)| (*n, v.to_string())));
        }
        settings
    }
}

/// Minimal WAL and what it requires: the server refuses to start with
/// `wal_level = minimal` and WAL senders, archiving or WAL summaries on.
pub const MINIMAL_WAL: [(&str, &str); 4] = [
    ("wal_level", "minimal"),
    ("max_wal_senders", "0"),
    ("archive_mode", "off"),
    ("summarize_wal", "off"),
];

/// Which of `names` are set on the server's command line (`postgres -c`),
/// where `ALTER SYSTEM` cannot override them. Minimal WAL with one of its
/// requirements pinned there would leave a server that cannot start.
pub async fn set_on_command_line(
    runner: &Runner<'_>,
    names: &[&str],
) -> Result<Vec<String>, PgError> {
    settings_where(
        runner,
        &format!("source = 'command line' AND {}", name_in(names)),
    )
    .await
}

/// Names of the settings in `pg_settings` matching a condition, in name order.
async fn settings_where(runner: &Runner<'_>, condition: &str) -> Result<Vec<String>, PgError> {
    let out = runner
        .query(
            "postgres",
            &format!(
                "SELECT string_agg(name, ',' ORDER BY name) FROM pg_settings WHERE {condition}"
            ),
        )
        .await?;
    Ok(split_names(&out))
}

fn name_in(names: &[&str]) -> String {
    let list: Vec<String> = names.iter().map(|n| literal(n)).collect();
    format!("name IN ({})", list.join(", "))
}

fn split_names(out: &str) -> Vec<String> {
    out.trim()
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Every setting [`tune_for_loading`] may change, for [`untune`].
const TUNED: [&str; 12] = [
    "fsync",
    "full_page_writes",
    "synchronous_commit",
    "autovacuum",
    "checkpoint_timeout",
    "maintenance_work_mem",
    "max_wal_size",
    "max_parallel_maintenance_workers",
    "wal_level",
    "max_wal_senders",
    "archive_mode",
    "summarize_wal",
];

async fn require_superuser(runner: &Runner<'_>) -> Result<(), PgError> {
    let su = runner
        .query(
            "postgres",
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user",
        )
        .await?;
    if su.trim() != "t" {
        return Err(PgError::Refused {
            server: runner.server(),
            message: "changing server settings needs a superuser".into(),
            help: "load tuning is only for servers pgplan created (StatefulSet targets), never for RDS".into(),
        });
    }
    Ok(())
}

/// Which of `names` this server knows (`summarize_wal` is new in 17).
async fn known(runner: &Runner<'_>, names: &[&str]) -> Result<Vec<String>, PgError> {
    settings_where(runner, &name_in(names)).await
}

/// Runs `ALTER SYSTEM` statements, reloads, and waits until new sessions
/// see the reloaded files. Returns the settings still waiting for a restart.
async fn alter_and_reload(runner: &Runner<'_>, statements: &str) -> Result<Vec<String>, PgError> {
    let loaded = runner
        .query("postgres", "SELECT pg_conf_load_time()")
        .await?;
    let sql = format!("{statements}SELECT pg_reload_conf();\n");
    runner.script("postgres", &sql).await?;
    // pg_reload_conf only signals the postmaster. A new session sees the
    // new load time once it has re-read the files and signalled the other
    // processes (the checkpointer must have fsync back on before a
    // checkpoint, or it would skip the fsyncs it owes); from then on a new
    // session also inherits which settings wait for a restart.
    let check = format!(
        "SELECT pg_conf_load_time() > {}::timestamptz",
        literal(loaded.trim())
    );
    for _ in 0..250 {
        if runner.query("postgres", &check).await?.trim() == "t" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    pending_restart(runner).await
}

/// The settings pgplan tunes that wait for a restart to take effect.
/// (Others may show as pending too: PostgreSQL flags a setting fixed on the
/// command line whenever the files hold another value.)
pub async fn pending_restart(runner: &Runner<'_>) -> Result<Vec<String>, PgError> {
    settings_where(runner, &format!("pending_restart AND {}", name_in(&TUNED))).await
}

/// The loading settings [`tune_for_loading`] left in `postgresql.auto.conf`
/// (`name=value`, in name order): only those set to their loading value,
/// so that a person's own `ALTER SYSTEM` is not taken for pgplan's. What
/// a plan reads to tell a target still tuned by an interrupted apply.
pub async fn still_tuned(runner: &Runner<'_>) -> Result<Vec<String>, PgError> {
    let loading = LoadTuning {
        minimal_wal: true,
        ..LoadTuning::default()
    }
    .settings();
    // The ones that make a server unsafe to serve from.
    let telling = [
        "fsync",
        "full_page_writes",
        "synchronous_commit",
        "autovacuum",
        "wal_level",
    ];
    let out = runner
        .query(
            "postgres",
            &format!(
                "SELECT string_agg(name || '=' || setting, ',' ORDER BY name) FROM pg_file_settings \
                 WHERE sourcefile LIKE '%postgresql.auto.conf' AND {}",
                name_in(&telling)
            ),
        )
        .await?;
    Ok(split_names(&out)
        .into_iter()
        .filter(|kv| {
            loading
                .iter()
                .any(|(n, v)| kv.split_once('=') == Some((n, v.as_str())))
        })
        .collect())
}

/// The server's running `wal_level`.
pub async fn wal_level(runner: &Runner<'_>) -> Result<String, PgError> {
    Ok(runner
        .query("postgres", "SELECT current_setting('wal_level')")
        .await?
        .trim()
        .to_string())
}

/// Applies the loading settings (`ALTER SYSTEM`, then a reload, or nothing
/// more when minimal WAL makes a restart due). Idempotent. Returns the
/// settings that wait for a restart (with `minimal_wal`, until the server
/// has been restarted once).
pub async fn tune_for_loading(
    runner: &Runner<'_>,
    tuning: &LoadTuning,
) -> Result<Vec<String>, PgError> {
    require_superuser(runner).await?;
    let wanted = tuning.settings();
    let names: Vec<&str> = wanted.iter().map(|(n, _)| *n).collect();
    let known = known(runner, &names).await?;
    let mut sql = String::new();
    for (name, value) in wanted.iter().filter(|(n, _)| known.iter().any(|k| k == n)) {
        sql.push_str(&format!("ALTER SYSTEM SET {name} = {};\n", literal(value)));
    }
    if tuning.minimal_wal && wal_level(runner).await? != "minimal" {
        // wal_level changes only with a restart, which is due now and
        // applies everything else too: no reload to wait for first.
        runner.script("postgres", &sql).await?;
        return settings_where(
            runner,
            &format!("context = 'postmaster' AND {}", name_in(&names)),
        )
        .await;
    }
    alter_and_reload(runner, &sql).await
}

/// Takes the loading settings back (`ALTER SYSTEM RESET`, reload).
/// Idempotent. Returns the settings that wait for a restart (`wal_level`
/// after minimal WAL). After the restart, if any, call [`make_durable`]
/// before the server serves; run both on resume or rollback too.
pub async fn untune(runner: &Runner<'_>) -> Result<Vec<String>, PgError> {
    require_superuser(runner).await?;
    let mut sql = String::new();
    for name in known(runner, &TUNED).await? {
        sql.push_str(&format!("ALTER SYSTEM RESET {name};\n"));
    }
    alter_and_reload(runner, &sql).await
}

/// Makes everything written while tuned durable: a `CHECKPOINT`, and beside
/// the server (in its pod, or a local server on this machine) a `sync`,
/// since files written while fsync was off (and relations minimal WAL
/// skipped) may still sit in the page cache with no fsync request left for
/// the checkpoint to make. Needs fsync back on; `restarted`
/// says the server started since (with it on).
pub async fn make_durable(runner: &Runner<'_>, restarted: bool) -> Result<(), PgError> {
    // After a reload the checkpointer takes the signal on its own; give it a
    // moment so that it checkpoints with fsync on.
    let sql = if restarted {
        "CHECKPOINT;\n"
    } else {
        "SELECT pg_sleep(0.2);\nCHECKPOINT;\n"
    };
    runner.script("postgres", sql).await?;
    runner.write_back().await
}

/// Waits until the server accepts sessions (after a restart a pod can be
/// Ready before PostgreSQL is, when its template has no readiness probe).
pub async fn wait_accepting(runner: &Runner<'_>, timeout: Duration) -> Result<(), PgError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match runner.query("postgres", "SELECT 1").await {
            Ok(_) => return Ok(()),
            Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_wal_brings_what_it_requires() {
        let plain = LoadTuning::default().settings();
        assert!(plain.iter().all(|(n, _)| *n != "wal_level"));
        let minimal = LoadTuning {
            minimal_wal: true,
            ..LoadTuning::default()
        }
        .settings();
        for (name, value) in [
            ("wal_level", "minimal"),
            ("max_wal_senders", "0"),
            ("archive_mode", "off"),
        ] {
            assert!(
                minimal.iter().any(|(n, v)| *n == name && v == value),
                "{name} = {value} missing"
            );
        }
        // Whatever is set is reset afterwards.
        for (name, _) in &minimal {
            assert!(TUNED.contains(name), "{name} is never reset");
        }
    }
}
