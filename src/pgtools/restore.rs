//! Restoring one database from its backup with `pg_restore -j N
//! --exit-on-error`. Where the tools run on this machine, pg_restore reads
//! the archive in the backup directory. In a pod, the archive is first
//! streamed into the pod's filesystem (`pg_restore -j` needs a file it can
//! seek in, not a pipe) under a per-run path, and that copy is removed
//! afterwards whatever happened.
//!
//! The archive is checked against its manifest on the way (sha256 while it
//! streams into the pod, or read back before a local restore) and nothing
//! is restored from one that differs. A failure names the archive entry
//! pg_restore was working on, from its `--verbose` log and the archive's
//! table of contents.

use std::path::Path;

use super::archive::{self, HashingReader, Reread};
use super::manifest::Manifest;
use super::progress::{Phase, ProgressFn};
use super::{PgError, Runner};
use crate::spec::DumpFormat;

/// How to restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreOptions {
    /// pg_restore's parallel jobs.
    pub jobs: u32,
    /// `--no-owner`: objects end up owned by the connecting user. Only for
    /// a target where the owners cannot exist; prepare creates them.
    pub no_owner: bool,
    /// In a pod, the directory under which the per-run copy is made
    /// (`{dir}/pgplan-restore-{run_id}/`); `$TMPDIR`, else `/tmp`, when
    /// `None`. It must have room for the archive.
    pub pod_temp_dir: Option<String>,
    /// Names this run's copy in the pod (the apply's id), so concurrent or
    /// resumed runs never share one.
    pub run_id: String,
    /// Run `ANALYZE` afterwards (`vacuumdb --analyze-only -j N`): a
    /// restored database has no planner statistics, and autovacuum may be
    /// off while loading.
    pub analyze: bool,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        RestoreOptions {
            jobs: 2,
            no_owner: false,
            pod_temp_dir: None,
            run_id: format!("{}", std::process::id()),
            analyze: true,
        }
    }
}

/// What a restore did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    pub database: String,
    /// Archive entries (the manifest's TOC count).
    pub entries: u64,
    /// Bytes streamed into the pod (0 for a local restore).
    pub uploaded: u64,
}

/// Restores the backup described by `manifest_path` into the database of
/// the same name on the runner's server (prepare created it, empty).
pub async fn restore(
    runner: &Runner<'_>,
    manifest_path: &Path,
    options: &RestoreOptions,
    progress: ProgressFn<'_>,
) -> Result<Restored, PgError> {
    let manifest = Manifest::read(manifest_path)?;
    let archive_path = manifest.archive_path(manifest_path);
    let mut restored = Restored {
        database: manifest.database.clone(),
        entries: manifest.toc_entries,
        uploaded: 0,
    };
    if runner.is_local() {
        // Files this run hashed already (the backup's read-back) and not
        // written since are not read a third time.
        let started = std::time::Instant::now();
        let (bytes, sha) =
            archive::hash_archive(&archive_path, manifest.format, Reread::Changed, progress)
                .await?;
        tracing::debug!(
            database = %manifest.database,
            ms = started.elapsed().as_millis() as u64,
            "archive checked against its manifest"
        );
        check_sums(&archive_path, &manifest, bytes, &sha)?;
        let archive = archive_path.to_string_lossy();
        with_write_back(runner, pg_restore(runner, &manifest, &archive, options)).await?;
    } else {
        let dir = pod_dir(runner, options, &manifest.database).await?;
        let result = async {
            let copy = format!("{dir}/{}", manifest.archive);
            restored.uploaded = upload(runner, &manifest, &archive_path, &copy, progress).await?;
            with_write_back(runner, pg_restore(runner, &manifest, &copy, options)).await
        }
        .await;
        let removed = runner
            .output(&["rm".to_string(), "-rf".into(), "--".into(), dir.clone()])
            .await;
        result?;
        if let Err(e) = removed {
            tracing::warn!(%dir, error = %e, "could not remove the archive copy in the pod");
        }
    }
    tracing::debug!(database = %manifest.database, "restored");
    analyze(runner, &manifest.database, options).await?;
    Ok(restored)
}

/// After a restore: `ANALYZE` when asked (`vacuumdb --analyze-only -j N`),
/// while beside the server the kernel writes back what it loaded.
pub(crate) async fn analyze(
    runner: &Runner<'_>,
    database: &str,
    options: &RestoreOptions,
) -> Result<(), PgError> {
    if options.analyze {
        let argv = vec![
            "vacuumdb".to_string(),
            "--analyze-only".into(),
            "--quiet".into(),
            format!("--jobs={}", options.jobs.max(1)),
            format!("--dbname={database}"),
        ];
        let (analyzed, ()) = futures::join!(runner.output(&argv), write_back_logged(runner));
        analyzed?;
        tracing::debug!(database, "analyzed");
    } else {
        write_back_logged(runner).await;
    }
    Ok(())
}

/// [`Runner::write_back`], a failure only logged.
async fn write_back_logged(runner: &Runner<'_>) {
    if let Err(e) = runner.write_back().await {
        tracing::debug!(error = %e, "sync after the restore failed");
    }
}

/// How often the kernel is asked to write back while pg_restore loads.
const WRITE_BACK_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// Runs `load` while, beside the server, a `sync` every
/// [`WRITE_BACK_EVERY`] writes back what the server has written so far. A
/// load tuned with `fsync = off` leaves all of it in the page cache; making
/// it durable afterwards (untune) would then wait for the whole database
/// to reach the disk, while during the load the disk has time to spare
/// (loading is CPU-bound). A failed `sync` is only logged: durability is
/// checked where it is required, not here.
pub(crate) async fn with_write_back<T>(
    runner: &Runner<'_>,
    load: impl std::future::Future<Output = Result<T, PgError>>,
) -> Result<T, PgError> {
    if !runner.beside_server() {
        return load.await;
    }
    let ticker = async {
        let start = tokio::time::Instant::now() + WRITE_BACK_EVERY;
        let mut tick = tokio::time::interval_at(start, WRITE_BACK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            write_back_logged(runner).await;
        }
    };
    tokio::select! {
        r = load => r,
        never = ticker => never,
    }
}

pub(crate) fn check_sums(
    path: &Path,
    manifest: &Manifest,
    bytes: u64,
    sha: &str,
) -> Result<(), PgError> {
    if bytes != manifest.bytes || sha != manifest.sha256 {
        return Err(PgError::archive(
            path,
            format!(
                "checksum mismatch: the manifest records {} bytes with sha256 {}, {bytes} bytes with sha256 {sha} were read",
                manifest.bytes, manifest.sha256
            ),
        ));
    }
    Ok(())
}

/// The name of the directory in the pod that holds one database's archive
/// copy during its restore: the run's id and the database, so restores of
/// several databases into one pod at once (and other runs) never share one
/// (each empties its directory first and removes it after). The database
/// name is kept to safe characters, with a hash of the whole name so names
/// that differ only in other characters stay apart.
fn copy_dir_name(run_id: &str, database: &str) -> String {
    use sha2::{Digest, Sha256};
    let safe = |s: &str, max: usize| -> String {
        s.chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .take(max)
            .collect()
    };
    let digest = Sha256::digest(database.as_bytes());
    let hash: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
    format!("{}-{}-{hash}", safe(run_id, 64), safe(database, 40))
}

/// Makes the private directory in the pod for `database`'s archive copy
/// in this run, and returns its path.
async fn pod_dir(
    runner: &Runner<'_>,
    options: &RestoreOptions,
    database: &str,
) -> Result<String, PgError> {
    let run_id = copy_dir_name(&options.run_id, database);
    let argv = vec![
        "sh".to_string(),
        "-c".into(),
        r#"d="${1:-${TMPDIR:-/tmp}}/pgplan-restore-$2"; umask 077; rm -rf "$d" && mkdir -p "$d" && printf '%s' "$d""#.into(),
        "pgplan".into(),
        options.pod_temp_dir.clone().unwrap_or_default(),
        run_id,
    ];
    let dir = runner.output(&argv).await?;
    if dir.is_empty() {
        return Err(PgError::Output {
            server: runner.server(),
            command: "mkdir".into(),
            message: "no directory was made for the archive copy".into(),
        });
    }
    Ok(dir)
}

/// Streams one file into `dest` in the pod; returns its sha256 (as read
/// here) after checking the pod received every byte.
async fn upload_file(
    runner: &Runner<'_>,
    local: &Path,
    dest: &str,
    progress: ProgressFn<'_>,
) -> Result<(u64, String), PgError> {
    let len = tokio::fs::metadata(local)
        .await
        .map_err(|e| PgError::io("read", local, e))?
        .len();
    let mut reader = HashingReader::open(local, Phase::Upload, progress).await?;
    let argv = vec![
        "sh".to_string(),
        "-c".into(),
        r#"cat > "$1" && wc -c < "$1""#.into(),
        "pgplan".into(),
        dest.to_string(),
    ];
    let mut out = Vec::new();
    let outcome = runner
        .run(&argv, super::Stdin::Sized(&mut reader, len), &mut out)
        .await?;
    if outcome.code != 0 {
        return Err(runner.failure(&argv, outcome));
    }
    let (bytes, sha) = reader.finish();
    let received: Option<u64> = String::from_utf8_lossy(&out).trim().parse().ok();
    if received != Some(bytes) {
        return Err(PgError::Output {
            server: runner.server(),
            command: "cat".into(),
            message: format!(
                "{bytes} bytes were sent to {dest}, the pod has {}",
                String::from_utf8_lossy(&out).trim()
            ),
        });
    }
    Ok((bytes, sha))
}

/// Copies the archive into the pod at `copy`, checking it against the
/// manifest on the way. Returns the bytes sent.
async fn upload(
    runner: &Runner<'_>,
    manifest: &Manifest,
    archive_path: &Path,
    copy: &str,
    progress: ProgressFn<'_>,
) -> Result<u64, PgError> {
    let (bytes, sha) = match manifest.format {
        DumpFormat::Custom => upload_file(runner, archive_path, copy, progress).await?,
        DumpFormat::Directory => {
            runner
                .output(&["mkdir".to_string(), "--".into(), copy.to_string()])
                .await?;
            let mut listing = String::new();
            let mut total = 0;
            for name in archive::sorted_files(archive_path)? {
                let (n, sha) = upload_file(
                    runner,
                    &archive_path.join(&name),
                    &format!("{copy}/{name}"),
                    progress,
                )
                .await?;
                total += n;
                listing.push_str(&format!("{sha}  {name}\n"));
            }
            use sha2::Digest;
            (total, hex::encode(sha2::Sha256::digest(listing.as_bytes())))
        }
    };
    check_sums(archive_path, manifest, bytes, &sha)?;
    Ok(bytes)
}

/// Runs pg_restore on `archive` (a path where the runner runs); on failure,
/// names the entry it stopped at.
pub(crate) async fn pg_restore(
    runner: &Runner<'_>,
    manifest: &Manifest,
    archive: &str,
    options: &RestoreOptions,
) -> Result<(), PgError> {
    let mut argv: Vec<String> = vec![
        "pg_restore".into(),
        "--exit-on-error".into(),
        "--verbose".into(),
        format!("--jobs={}", options.jobs.max(1)),
        format!("--dbname={}", manifest.database),
    ];
    if options.no_owner {
        argv.push("--no-owner".into());
    }
    argv.push(archive.to_string());
    let outcome = runner
        .run(&argv, super::Stdin::none(), &mut tokio::io::sink())
        .await?;
    if outcome.code == 0 {
        return Ok(());
    }
    let (id, message) = parse_failure(&outcome.stderr);
    if id.is_none() && message.is_empty() {
        return Err(runner.failure(&argv, outcome));
    }
    let entry = match id {
        Some(id) => {
            let listing = runner
                .output(&[
                    "pg_restore".to_string(),
                    "--list".into(),
                    archive.to_string(),
                ])
                .await
                .unwrap_or_default();
            Some(archive::describe_entry(&listing, id).unwrap_or_else(|| format!("TOC entry {id}")))
        }
        None => None,
    };
    Err(PgError::Restore {
        database: manifest.database.clone(),
        server: runner.server(),
        at: entry
            .as_deref()
            .map(|e| format!(" at {e}"))
            .unwrap_or_default(),
        entry,
        message: if message.is_empty() {
            outcome.stderr.trim().to_string()
        } else {
            message
        },
    })
}

/// From pg_restore's `--verbose` stderr: the dump id of the entry that
/// failed (`from TOC entry 3350; …`) and the error, with the SQL that
/// failed shortened.
fn parse_failure(stderr: &str) -> (Option<u32>, String) {
    let lines: Vec<&str> = stderr.lines().collect();
    let at = lines.iter().rposition(|l| l.contains("from TOC entry "));
    let id = at.and_then(|i| {
        let rest = lines[i].split("from TOC entry ").nth(1)?;
        rest.split(';').next()?.trim().parse().ok()
    });
    // The error is reported after the entry line (or anywhere, without one).
    let start = at.map(|i| i + 1).unwrap_or(0);
    let mut message = String::new();
    let mut iter = lines[start..].iter();
    if let Some(first) = iter.find(|l| l.contains("error:")) {
        message.push_str(
            first
                .trim()
                .trim_start_matches("pg_restore: ")
                .trim_start_matches("error: "),
        );
        for more in iter {
            let more = more.trim();
            if more.starts_with("pg_restore:") || more.is_empty() {
                break;
            }
            message.push(' ');
            message.push_str(more);
        }
    }
    const KEEP: usize = 400;
    if message.len() > KEEP {
        let mut cut = KEEP;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push('…');
    }
    (id, message)
}

/// Whether `database` exists and holds a user table (a restore, or part
/// of one, is there).
pub async fn has_tables(r: &Runner<'_>, database: &str) -> Result<bool, PgError> {
    let exists = r
        .query(
            "postgres",
            &format!(
                "select count(*) from pg_database where datname = {}",
                super::contents::literal(database)
            ),
        )
        .await?;
    if exists.trim() == "0" {
        return Ok(false);
    }
    let n = r
        .query(
            database,
            "select count(*) from pg_class c join pg_namespace n on n.oid = c.relnamespace \
             where c.relkind in ('r','p') and n.nspname not in ('pg_catalog','information_schema') and n.nspname !~ '^pg_toast'",
        )
        .await?;
    Ok(n.trim() != "0")
}

/// Drops `database` (its sessions too) and creates it again, empty, owned
/// by `owner`: a partial restore set aside for a fresh one.
pub async fn reset_database(r: &Runner<'_>, database: &str, owner: &str) -> Result<(), PgError> {
    use super::contents::ident;
    r.query(
        "postgres",
        &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", ident(database)),
    )
    .await?;
    r.query(
        "postgres",
        &format!(
            "CREATE DATABASE {} OWNER {} TEMPLATE template0",
            ident(database),
            ident(owner)
        ),
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn each_database_gets_its_own_copy_directory_in_a_run() {
        let a = super::copy_dir_name("vm-1-ab", "a b;$(x)");
        let b = super::copy_dir_name("vm-1-ab", "healthcare");
        let c = super::copy_dir_name("vm-1-ab", "a_b;x");
        assert_ne!(a, b);
        assert_ne!(a, c, "names differing only in unsafe characters stay apart");
        assert_eq!(a, super::copy_dir_name("vm-1-ab", "a b;$(x)"));
        assert!(a.starts_with("vm-1-ab-abx-"), "{a}");
        assert!(a
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_'));
        assert_ne!(
            super::copy_dir_name("vm-1-ab", "db"),
            super::copy_dir_name("vm-2-cd", "db")
        );
    }

    use super::*;

    #[test]
    fn the_failed_entry_and_its_error_are_read_from_the_log() {
        let stderr = "\
pg_restore: connecting to database for restore
pg_restore: creating TABLE \"public.signing_keys\"
pg_restore: from TOC entry 215; 1259 16390 TABLE signing_keys postgres
pg_restore: error: could not execute query: ERROR:  relation \"signing_keys\" already exists
Command was: CREATE TABLE public.signing_keys (
    kid text NOT NULL
);
";
        let (id, message) = parse_failure(stderr);
        assert_eq!(id, Some(215));
        assert_eq!(
            message,
            "could not execute query: ERROR:  relation \"signing_keys\" already exists \
             Command was: CREATE TABLE public.signing_keys ( kid text NOT NULL );"
        );
    }

    #[test]
    fn a_failure_outside_any_entry_keeps_the_error() {
        let (id, message) = parse_failure(
            "pg_restore: error: connection to server failed: FATAL:  database \"x\" does not exist\n",
        );
        assert_eq!(id, None);
        assert!(message.starts_with("connection to server failed"));
    }
}
