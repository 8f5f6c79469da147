//! Backing up one database: `pg_dump` run by the [`Runner`], its archive
//! streamed to `{directory}/{placement}/{database}.dump` and hashed on the
//! way (never held in memory), the source measured in the very snapshot the
//! dump reads (rows, checksums, sequences), the archive read back and
//! checked with `pg_restore --list`, then the manifest written. Also
//! [`verify_archive`], the same checks on an existing backup.
//!
//! Consistency: one `psql` session opens a repeatable-read transaction and
//! exports its snapshot; `pg_dump --snapshot` dumps exactly that snapshot
//! while the session measures it, so the manifest describes the archive
//! even if something writes to the source meanwhile. The session stays open
//! until pg_dump has finished.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::oneshot;

use super::archive::{self, HashingWriter, Reread};
use super::contents::{self, Contents, Measure};
use super::manifest::{Manifest, MANIFEST_VERSION};
use super::progress::{Phase, Progress, ProgressFn};
use super::session::with_session;
use super::{PgError, Runner};
use crate::spec::DumpFormat;

/// How to dump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupOptions {
    /// The format asked for (the spec's `backup.format`, custom by
    /// default). A directory archive cannot stream out of a pod: there it
    /// falls back to custom, and the manifest records the format used.
    pub format: DumpFormat,
    /// Where the tools run on this machine, dump a directory archive
    /// (`pg_dump -Fd -j N`, restored in parallel by file size) whatever
    /// `format` says. On by default: the spec cannot tell an unset format
    /// from `custom`, and locally the directory archive is the faster one.
    pub directory_when_local: bool,
    /// Parallel sessions: pg_dump's jobs for a directory archive, and the
    /// sessions measuring rows and checksums. At least 1.
    pub jobs: u32,
    /// gzip level 0–9. `None`: 1 in a pod, where the archive crosses the
    /// API server and most of gzip's gain costs little; 0 on this machine,
    /// where the archive only goes to local disk and compressing (and
    /// decompressing for the restore) would be most of the CPU time of the
    /// downtime window. pg_dump's own default, 6, is several times slower.
    pub compression: Option<u32>,
}

impl Default for BackupOptions {
    fn default() -> Self {
        BackupOptions {
            format: DumpFormat::Custom,
            directory_when_local: true,
            jobs: 2,
            compression: None,
        }
    }
}

impl BackupOptions {
    /// The format and gzip level used with `runner`.
    pub fn resolve(&self, runner: &Runner<'_>) -> (DumpFormat, u32) {
        let format = match (self.format, runner.is_local()) {
            (_, true) if self.directory_when_local => DumpFormat::Directory,
            (f, true) => f,
            (_, false) => DumpFormat::Custom,
        };
        let level = self
            .compression
            .unwrap_or(if runner.is_local() { 0 } else { 1 })
            .min(9);
        (format, level)
    }
}

/// Where a database's backup lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupPaths {
    /// `{directory}/{placement}`.
    pub dir: PathBuf,
    /// `{dir}/{database}.dump` (a file, or a directory for `-Fd`).
    pub archive: PathBuf,
    /// `{dir}/{database}.manifest.json`.
    pub manifest: PathBuf,
}

/// The paths of `database`'s backup for `placement` under `directory`.
pub fn backup_paths(directory: &Path, placement: &str, database: &str) -> BackupPaths {
    let dir = directory.join(placement);
    BackupPaths {
        archive: dir.join(format!("{database}.dump")),
        manifest: dir.join(format!("{database}.manifest.json")),
        dir,
    }
}

/// What the session learns besides the contents.
pub(crate) struct Source {
    server_version: String,
    owner: String,
    encoding: String,
    contents: Contents,
    privileges: super::roles::Privileges,
}

/// Where the dump's room is checked before it starts: the filesystem of a
/// directory on this machine, or bytes measured free where the tools run.
pub(crate) enum Room<'a> {
    Dir(&'a Path),
    Free { dir: &'a str, free: u64 },
}

impl Room<'_> {
    fn check(&self, database: &str, data_bytes: u64) -> Result<(), PgError> {
        let (dir, free) = match self {
            Room::Dir(dir) => (
                dir.to_path_buf(),
                super::free_bytes(dir).map_err(|e| PgError::io("inspect", dir, e))?,
            ),
            Room::Free { dir, free } => (PathBuf::from(dir), *free),
        };
        if free >= data_bytes {
            return Ok(());
        }
        Err(PgError::NoSpace {
            dir,
            free,
            message: format!(
                "the dump of {database} needs about {} (the size of its tables' data)",
                crate::quantity::human_bytes(data_bytes)
            ),
            needed: format!(" (about {})", crate::quantity::human_bytes(data_bytes)),
        })
    }
}

/// A database's names, checked to name files in a backup directory.
pub(crate) fn check_names(server: &str, placement: &str, database: &str) -> Result<(), PgError> {
    for (what, name) in [("database", database), ("placement", placement)] {
        if name.is_empty() || name.starts_with('.') || name.contains(['/', '\\', '\0']) {
            return Err(PgError::Refused {
                server: server.to_string(),
                message: format!("the {what} name `{name}` cannot name a file in the backup directory"),
                help: "back up databases whose names have no `/` and do not start with `.`; rename the database first".into(),
            });
        }
    }
    Ok(())
}

/// Backs up `database` through `runner` into `directory/placement`.
/// Returns the paths and the manifest written. Any previous backup of the
/// database there is replaced (its manifest is removed first, so a crash
/// midway never leaves a manifest describing another archive).
pub async fn backup(
    runner: &Runner<'_>,
    directory: &Path,
    placement: &str,
    database: &str,
    options: &BackupOptions,
    progress: ProgressFn<'_>,
) -> Result<(BackupPaths, Manifest), PgError> {
    check_names(&runner.server(), placement, database)?;
    let paths = backup_paths(directory, placement, database);
    // 0700 whatever the umask: the archive holds every row (crate::private).
    crate::private::create_dir_all(&paths.dir).map_err(|e| PgError::io("create", &paths.dir, e))?;
    archive::sync_dir(directory)?;
    archive::remove(&paths.manifest)?;
    archive::sync_dir(&paths.dir)?;
    let partial = archive::partial_of(&paths.archive);
    archive::remove(&partial)?;

    let (format, compression) = options.resolve(runner);
    if options.format == DumpFormat::Directory && format != DumpFormat::Directory {
        tracing::info!(
            database,
            server = %runner.server(),
            "a directory archive cannot stream out of a pod; dumping in custom format"
        );
    }
    let pg_dump_version = runner
        .output(&["pg_dump".to_string(), "--version".into()])
        .await?
        .trim()
        .to_string();

    let partial_ref = &partial;
    let dumped = in_snapshot(
        runner,
        database,
        options.jobs,
        Room::Dir(&paths.dir),
        progress,
        |snapshot| async move {
            let argv = pg_dump_argv(
                database,
                partial_ref,
                format,
                compression,
                options.jobs,
                &snapshot,
            );
            dump(runner, &argv, partial_ref, format, progress).await
        },
    )
    .await;
    let (source, streamed) = match dumped {
        Ok(done) => done,
        Err(e) => {
            // Said before the partial archive goes: what was free when it failed.
            let e = out_of_space(e, &paths.dir);
            let _ = archive::remove(&partial);
            return Err(e);
        }
    };

    if crate::testhooks::corrupt_backup(database) {
        corrupt_for_test(&partial, format);
    }
    let checked = check_partial(runner, &partial, format, streamed, progress).await;
    let (bytes, sha256, toc_entries) = match checked {
        Ok(c) => c,
        Err(e) => {
            // Said before the partial archive goes: what was free when it failed.
            let e = out_of_space(e, &paths.dir);
            let _ = archive::remove(&partial);
            return Err(e);
        }
    };
    tracing::debug!(database, "archive read back and listed");
    // pg_dump creates a directory archive's files itself, by the umask.
    crate::private::restrict_tree(&partial).map_err(|e| PgError::io("restrict", &partial, e))?;
    archive::commit(&partial, &paths.archive)?;
    let manifest = source.manifest(
        database,
        Archived {
            format,
            compression,
            bytes,
            sha256,
            toc_entries,
            pg_dump_version,
        },
    );
    manifest.write(&paths.manifest)?;
    Ok((paths, manifest))
}

/// What was written: the archive's facts for its manifest.
pub(crate) struct Archived {
    pub format: DumpFormat,
    pub compression: u32,
    pub bytes: u64,
    pub sha256: String,
    pub toc_entries: u64,
    pub pg_dump_version: String,
}

impl Source {
    /// The manifest of `database`'s archive, `{database}.dump`.
    pub(crate) fn manifest(self, database: &str, a: Archived) -> Manifest {
        Manifest {
            manifest_version: MANIFEST_VERSION,
            database: database.to_string(),
            owner: self.owner,
            encoding: self.encoding,
            format: a.format,
            archive: format!("{database}.dump"),
            bytes: a.bytes,
            sha256: a.sha256,
            toc_entries: a.toc_entries,
            server_version: self.server_version,
            pg_dump_version: a.pg_dump_version,
            compression: a.compression,
            created_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            tables: self.contents.tables,
            sequences: self.contents.sequences,
            privileges: Some(self.privileges),
        }
    }
}

/// Opens a repeatable-read session on `runner`'s server, exports its
/// snapshot, checks `room` against the tables' size, and measures the
/// snapshot (sequences, rows, checksums, privileges) while `dump` (given
/// the snapshot's name) writes the archive. The session is held until the
/// dump has finished. The first failure ends both: the dump is dropped
/// (its tools stopped) if measuring fails, and the session closed if the
/// dump fails.
pub(crate) async fn in_snapshot<'r, T, F, Fut>(
    runner: &'r Runner<'_>,
    database: &'r str,
    jobs: u32,
    room: Room<'r>,
    progress: ProgressFn<'r>,
    dump: F,
) -> Result<(Source, T), PgError>
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = Result<T, PgError>>,
{
    let (snapshot_tx, snapshot_rx) = oneshot::channel::<String>();
    let (dumped_tx, dumped_rx) = oneshot::channel::<()>();
    let measure = with_session(runner, database, move |mut s| async move {
        // pg_dump runs alongside; the `jobs` sessions are all the
        // parallelism the measuring gets, so the two do not oversubscribe
        // the server's CPUs.
        s.send(
            "SET max_parallel_workers_per_gather = 0; \
             BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY",
        )
        .await?;
        let snapshot = s.line("SELECT pg_export_snapshot()").await?;
        let info = s
            .line(
                "SELECT json_build_array(current_setting('server_version'), \
                 pg_get_userbyid(d.datdba), pg_encoding_to_char(d.encoding), \
                 (SELECT coalesce(sum(pg_table_size(c.oid)), 0)::bigint FROM pg_class c \
                  JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'r' \
                  AND n.nspname NOT IN ('pg_catalog', 'information_schema'))) \
                 FROM pg_database d WHERE d.datname = current_database()",
            )
            .await?;
        let (version, owner, encoding, data_bytes): (String, String, String, u64) =
            serde_json::from_str(&info).map_err(|e| PgError::Output {
                server: s.server().to_string(),
                command: "the database query".into(),
                message: e.to_string(),
            })?;
        // Room for the dump before it starts (pg_dump never starts without
        // the snapshot): the tables' data is what it writes, usually less.
        room.check(database, data_bytes)?;
        // Sequences before pg_dump starts: it reads them (outside any
        // snapshot) after this, so the archive holds these values or later
        // ones, and verify accepts a target at or past them.
        let sequences = contents::sequences(&mut s).await?;
        let _ = snapshot_tx.send(snapshot.clone());
        let contents = contents::measure(
            runner,
            database,
            &mut s,
            Some(&snapshot),
            jobs,
            &Measure {
                checksums: true,
                sequences: false,
                methods: None,
                phase: Phase::SourceChecksums,
            },
            progress,
        )
        .await?;
        let contents = Contents {
            tables: contents.tables,
            sequences,
        };
        // Grants and default privileges, which the dump carries, as they
        // are in its snapshot: verify compares the target with them.
        let listed = s.line(super::roles::PRIVILEGES_SQL).await?;
        let privileges = super::roles::Privileges::parse(s.server(), &listed)?;
        tracing::debug!(tables = contents.tables.len(), "source checksums done");
        // pg_dump imported the snapshot when it started; holding the
        // transaction until it is done costs nothing and is simplest.
        let _ = dumped_rx.await;
        s.send("COMMIT").await?;
        Ok(Source {
            server_version: version
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string(),
            owner,
            encoding,
            contents,
            privileges,
        })
    });
    let started = std::time::Instant::now();
    let dump = async {
        let _dumped = dumped_tx;
        let Ok(snapshot) = snapshot_rx.await else {
            // The session failed before exporting; its error is the one to report.
            return Ok(None);
        };
        let r = dump(snapshot).await.map(Some);
        tracing::debug!(
            database,
            ms = started.elapsed().as_millis() as u64,
            "dump written"
        );
        r
    };
    let measure = async {
        let r = measure.await;
        tracing::debug!(
            database,
            ms = started.elapsed().as_millis() as u64,
            "source measured"
        );
        r
    };
    match futures::future::try_join(measure, dump).await? {
        (source, Some(dumped)) => Ok((source, dumped)),
        (_, None) => Err(PgError::Output {
            server: runner.server(),
            command: "pg_dump".into(),
            message: "the session did not hand over its snapshot".into(),
        }),
    }
}

/// A failure to write the archive for want of space, said so: pgplan's
/// own writes (the stream of a custom archive) and pg_dump's (a directory
/// archive) alike.
pub(crate) fn out_of_space(e: PgError, dir: &Path) -> PgError {
    match e {
        PgError::Sink { program, error } if super::is_no_space(&error) => PgError::no_space(
            dir,
            format!("writing the output of `{program}` failed: {error}"),
        ),
        PgError::Command { stderr, .. }
            if stderr.contains("No space left on device")
                || stderr.contains("Disk quota exceeded") =>
        {
            PgError::no_space(dir, stderr)
        }
        e => e,
    }
}

/// pg_dump's arguments: the snapshot, the format, the compression, and
/// for a directory archive its jobs and path (a custom one goes to stdout).
fn pg_dump_argv(
    database: &str,
    partial: &Path,
    format: DumpFormat,
    compression: u32,
    jobs: u32,
    snapshot: &str,
) -> Vec<String> {
    let mut argv: Vec<String> = vec![
        "pg_dump".into(),
        format!("--snapshot={snapshot}"),
        format!("--compress={compression}"),
        "--no-sync".into(),
    ];
    match format {
        DumpFormat::Custom => argv.push("--format=custom".into()),
        DumpFormat::Directory => {
            argv.push("--format=directory".into());
            argv.push(format!("--jobs={}", jobs.max(1)));
            argv.push(format!("--file={}", partial.display()));
        }
    }
    argv.push(format!("--dbname={database}"));
    argv
}

/// Runs pg_dump (`argv`) into `partial`. For a custom archive, returns the
/// size and sha256 of what streamed in; a directory archive is hashed when
/// read back.
async fn dump(
    runner: &Runner<'_>,
    argv: &[String],
    partial: &Path,
    format: DumpFormat,
    progress: ProgressFn<'_>,
) -> Result<Option<(u64, String)>, PgError> {
    match format {
        DumpFormat::Custom => {
            let mut out = HashingWriter::create(partial, Phase::Dump, progress).await?;
            let outcome = runner.run(argv, super::Stdin::none(), &mut out).await?;
            if outcome.code != 0 {
                return Err(runner.failure(argv, outcome));
            }
            tracing::debug!("pg_dump finished");
            Ok(Some(out.finish(partial).await?))
        }
        DumpFormat::Directory => {
            let mut sink = tokio::io::sink();
            let run = runner.run(argv, super::Stdin::none(), &mut sink);
            tokio::pin!(run);
            // pg_dump writes the files itself; report their growing size.
            let outcome = loop {
                tokio::select! {
                    outcome = &mut run => break outcome?,
                    () = tokio::time::sleep(Duration::from_millis(500)) => {
                        progress(&Progress::Bytes {
                            phase: Phase::Dump,
                            done: archive::dir_size(partial),
                            total: None,
                        });
                    }
                }
            };
            if outcome.code != 0 {
                return Err(runner.failure(argv, outcome));
            }
            progress(&Progress::Bytes {
                phase: Phase::Dump,
                done: archive::dir_size(partial),
                total: None,
            });
            Ok(None)
        }
    }
}

/// Reads the written archive back and lists it: its size, sha256 and TOC
/// entries. A custom archive must read back as it streamed in. The archive
/// is fsynced meanwhile (the disk writes while the CPU hashes).
async fn check_partial(
    runner: &Runner<'_>,
    partial: &Path,
    format: DumpFormat,
    streamed: Option<(u64, String)>,
    progress: ProgressFn<'_>,
) -> Result<(u64, String, u64), PgError> {
    let ((bytes, sha), ()) = futures::future::try_join(
        archive::hash_archive(partial, format, Reread::All, progress),
        archive::sync_archive(partial, format),
    )
    .await?;
    if let Some((streamed_bytes, streamed_sha)) = streamed {
        if (streamed_bytes, &streamed_sha) != (bytes, &sha) {
            return Err(PgError::archive(
                partial,
                format!(
                    "checksum mismatch on re-read: {streamed_bytes} bytes with sha256 {streamed_sha} were written, {bytes} bytes with sha256 {sha} read back"
                ),
            ));
        }
    }
    let listing = archive::list(runner, partial, format, progress).await?;
    Ok((bytes, sha, archive::toc_entries(&listing)))
}

/// Test hook (`PGPLAN_TEST_CORRUPT_BACKUP=DATABASE`, see `crate::testhooks`): damages the written
/// archive before it is read back, as a bad disk or a truncated stream would,
/// so tests see an unverifiable dump stop the apply. A custom archive gets a
/// flipped byte in its middle (the re-read sha256 differs from the streamed
/// one); a directory archive its table of contents (`pg_restore --list` fails).
fn corrupt_for_test(partial: &Path, format: DumpFormat) {
    use std::io::{Read, Seek, SeekFrom, Write};
    let path = match format {
        DumpFormat::Custom => partial.to_path_buf(),
        DumpFormat::Directory => partial.join("toc.dat"),
    };
    let Ok(mut f) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
    else {
        return;
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let at = match format {
        DumpFormat::Custom => len / 2,
        DumpFormat::Directory => 0,
    };
    let mut b = [0u8; 1];
    if f.seek(SeekFrom::Start(at)).is_ok()
        && f.read_exact(&mut b).is_ok()
        && f.seek(SeekFrom::Start(at)).is_ok()
    {
        let _ = f.write_all(&[b[0] ^ 0xff]);
    }
}

/// Re-checks an existing backup: the manifest reads, the archive has the
/// size and sha256 it records, and `pg_restore --list` (run by `runner`,
/// which needs a pg_restore as new as the dump's) reads the same number of
/// entries. Used on resume and before a restore. Returns the manifest.
pub async fn verify_archive(
    manifest_path: &Path,
    runner: &Runner<'_>,
    progress: ProgressFn<'_>,
) -> Result<Manifest, PgError> {
    let manifest = Manifest::read(manifest_path)?;
    let path = manifest.archive_path(manifest_path);
    if !path.exists() {
        return Err(PgError::archive(&path, "the archive is missing"));
    }
    let (bytes, sha) = archive::hash_archive(&path, manifest.format, Reread::All, progress).await?;
    if bytes != manifest.bytes || sha != manifest.sha256 {
        return Err(PgError::archive(
            &path,
            format!(
                "checksum mismatch on re-read: the manifest records {} bytes with sha256 {}, the archive has {bytes} bytes with sha256 {sha}",
                manifest.bytes, manifest.sha256
            ),
        ));
    }
    let listing = archive::list(runner, &path, manifest.format, progress).await?;
    let entries = archive::toc_entries(&listing);
    if entries != manifest.toc_entries {
        return Err(PgError::archive(
            &path,
            format!(
                "`pg_restore --list` reads {entries} entries, the manifest records {}",
                manifest.toc_entries
            ),
        ));
    }
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pg_dump_reads_the_exported_snapshot_in_the_format_asked() {
        let p = Path::new("/b/p/db.dump.partial");
        assert_eq!(
            pg_dump_argv("db", p, DumpFormat::Custom, 1, 4, "00000003-1"),
            [
                "pg_dump",
                "--snapshot=00000003-1",
                "--compress=1",
                "--no-sync",
                "--format=custom",
                "--dbname=db"
            ]
        );
        assert_eq!(
            pg_dump_argv("db", p, DumpFormat::Directory, 0, 2, "s"),
            [
                "pg_dump",
                "--snapshot=s",
                "--compress=0",
                "--no-sync",
                "--format=directory",
                "--jobs=2",
                "--file=/b/p/db.dump.partial",
                "--dbname=db"
            ]
        );
    }

    #[test]
    fn local_tools_default_to_an_uncompressed_directory_archive() {
        let local = Runner::Local {
            conn: super::super::ConnInfo {
                host: "db".into(),
                port: 5432,
                user: "u".into(),
                password: None,
                sslmode: "require".into(),
                sslrootcert: None,
            },
        };
        assert_eq!(
            BackupOptions::default().resolve(&local),
            (DumpFormat::Directory, 0)
        );
        let asked = BackupOptions {
            format: DumpFormat::Custom,
            directory_when_local: false,
            jobs: 2,
            compression: Some(12),
        };
        assert_eq!(asked.resolve(&local), (DumpFormat::Custom, 9));
        assert_eq!(
            backup_paths(Path::new("/b"), "hc", "healthcare"),
            BackupPaths {
                dir: "/b/hc".into(),
                archive: "/b/hc/healthcare.dump".into(),
                manifest: "/b/hc/healthcare.manifest.json".into(),
            }
        );
    }
}
