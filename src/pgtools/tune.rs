//! Settings for loading a server pgplan has just created (a fresh
//! StatefulSet pod), and taking them back before it serves, as
//! CloudNativePG's import does. While tuned, a crash of the server can
//! corrupt it (no fsync, no full-page writes): that is acceptable only
//! because the server holds nothing but the restore in progress, which is
//! redone from the backup. Never for RDS or any server that already holds
//! data; the executor decides, and a server without a superuser refuses.
//!
//! Everything goes through `ALTER SYSTEM` and a reload, never a restart:
//! settings that need one (`wal_level = minimal`, `wal_buffers`) are out.

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
}

impl Default for LoadTuning {
    fn default() -> Self {
        LoadTuning {
            maintenance_work_mem: "256MB".into(),
            max_wal_size: "2GB".into(),
            parallel_maintenance_workers: None,
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
        settings
    }
}

/// Every setting [`tune_for_loading`] may change, for [`untune`].
const TUNED: [&str; 8] = [
    "fsync",
    "full_page_writes",
    "synchronous_commit",
    "autovacuum",
    "checkpoint_timeout",
    "maintenance_work_mem",
    "max_wal_size",
    "max_parallel_maintenance_workers",
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

/// Applies the loading settings (`ALTER SYSTEM`, reload). Idempotent.
pub async fn tune_for_loading(runner: &Runner<'_>, tuning: &LoadTuning) -> Result<(), PgError> {
    require_superuser(runner).await?;
    let mut sql = String::new();
    for (name, value) in tuning.settings() {
        sql.push_str(&format!("ALTER SYSTEM SET {name} = {};\n", literal(&value)));
    }
    sql.push_str("SELECT pg_reload_conf();\n");
    runner.script("postgres", &sql).await?;
    Ok(())
}

/// Takes the loading settings back (`ALTER SYSTEM RESET`, reload), then
/// makes everything written meanwhile durable: a `CHECKPOINT`, and in a pod
/// a `sync`, since files written while fsync was off may still sit in the
/// page cache with no fsync request left for the checkpoint to make.
/// Idempotent; run it after the restores and before the server serves, and
/// on resume or rollback of an apply that tuned.
pub async fn untune(runner: &Runner<'_>) -> Result<(), PgError> {
    require_superuser(runner).await?;
    let loaded = runner
        .query("postgres", "SELECT pg_conf_load_time()")
        .await?;
    let mut sql = String::new();
    for name in TUNED {
        sql.push_str(&format!("ALTER SYSTEM RESET {name};\n"));
    }
    sql.push_str("SELECT pg_reload_conf();\n");
    runner.script("postgres", &sql).await?;
    // pg_reload_conf only signals the postmaster. A new connection sees the
    // new load time once it has re-read the files and signalled the other
    // processes; the checkpointer must have fsync back on before the
    // checkpoint, or it would skip the fsyncs it owes.
    let check = format!(
        "SELECT pg_conf_load_time() > {}::timestamptz",
        literal(loaded.trim())
    );
    for _ in 0..50 {
        if runner.query("postgres", &check).await?.trim() == "t" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    runner
        .script("postgres", "SELECT pg_sleep(0.2);\nCHECKPOINT;\n")
        .await?;
    if !runner.is_local() {
        runner.output(&["sync".to_string()]).await?;
    }
    Ok(())
}
