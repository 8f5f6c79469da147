//! Backups on a claim in the cluster (`backup.dataPath: cluster`): the
//! archive, its manifest and the roles file live on a PersistentVolumeClaim
//! and are written and read by the PostgreSQL tools running in a *tools
//! pod* that mounts it (`apply::datapod` makes one per data step). The
//! tools reach the database servers over the cluster network, so what
//! crosses the API server is commands, their small outputs (sizes, sha256
//! listings, the table of contents) and the manifest, never the data.
//!
//! The checks are the ones of the local path ([`super::backup`],
//! [`super::restore`]): the dump is taken in the exported snapshot the
//! source session measures; the archive is hashed where it lies (the same
//! definition of its sha256: a file's, or for a directory the hash of its
//! `sha256sum` listing in name order), fsynced, listed with `pg_restore
//! --list`, renamed into place, and only then the manifest is written
//! (temporary file, fsync, rename, fsync of the directory). A restore
//! hashes the archive against its manifest first and restores nothing from
//! one that differs.
//!
//! Paths are strings: they name files in the tools pod's filesystem, not
//! on this machine.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tokio::io::AsyncWrite;

use super::backup::{check_names, in_snapshot, Archived, BackupOptions, Room};
use super::manifest::Manifest;
use super::progress::{Phase, Progress, ProgressFn};
use super::restore::{RestoreOptions, Restored};
use super::{archive, PgError, Runner, Stdin};
use crate::spec::DumpFormat;

/// Where the claim is mounted in a tools pod.
pub const MOUNT: &str = "/pgplan-backups";

/// Where a database's backup lives on the claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimPaths {
    /// `{root}/{placement}`.
    pub dir: String,
    /// `{dir}/{database}.dump`.
    pub archive: String,
    /// `{dir}/{database}.manifest.json`.
    pub manifest: String,
}

/// The paths of `database`'s backup for `placement` under `root` (a
/// directory in the tools pod, e.g. `/pgplan-backups/{run}`).
pub fn claim_paths(root: &str, placement: &str, database: &str) -> ClaimPaths {
    let dir = format!("{}/{placement}", root.trim_end_matches('/'));
    ClaimPaths {
        archive: format!("{dir}/{database}.dump"),
        manifest: format!("{dir}/{database}.manifest.json"),
        dir,
    }
}

/// The manifest's directory joined with the archive it names.
pub fn archive_of(manifest_path: &str, manifest: &Manifest) -> String {
    match manifest_path.rsplit_once('/') {
        Some((dir, _)) => format!("{dir}/{}", manifest.archive),
        None => manifest.archive.clone(),
    }
}

fn sh(script: &str, args: &[&str]) -> Vec<String> {
    let mut argv = vec![
        "sh".to_string(),
        "-c".into(),
        script.into(),
        "pgplan".into(),
    ];
    argv.extend(args.iter().map(|a| a.to_string()));
    argv
}

/// Reads a small file in the tools pod (a manifest, a roles file).
pub async fn read_file(tools: &Runner<'_>, path: &str) -> Result<Vec<u8>, PgError> {
    let argv = sh(r#"exec cat -- "$1""#, &[path]);
    read_output(tools, &argv, path, "it cannot be read").await
}

/// The output of `argv`, which reads the archive file at `path` in the
/// tools pod; a failure is that file's (`failed` says how).
async fn read_output(
    tools: &Runner<'_>,
    argv: &[String],
    path: &str,
    failed: &str,
) -> Result<Vec<u8>, PgError> {
    let mut out = Vec::new();
    let outcome = tools.run(argv, Stdin::none(), &mut out).await?;
    if outcome.code != 0 {
        return Err(PgError::archive(
            Path::new(path),
            format!("{failed} in {}: {}", tools.server(), outcome.stderr.trim()),
        ));
    }
    Ok(out)
}

/// Writes a small file in the tools pod durably and privately: a temporary
/// file (0600) beside it, fsync, rename, fsync of the directory.
pub async fn write_file(tools: &Runner<'_>, path: &str, bytes: &[u8]) -> Result<(), PgError> {
    let argv = sh(
        r#"set -e; umask 077; t="$1.tmp"; rm -f -- "$t"; cat > "$t"; sync -- "$t"; mv -f -- "$t" "$1"; sync -- "$(dirname -- "$1")"; wc -c < "$1""#,
        &[path],
    );
    let mut out = Vec::new();
    let outcome = tools
        .run(&argv, Stdin::Sized(bytes, bytes.len() as u64), &mut out)
        .await?;
    if outcome.code != 0 {
        return Err(no_space_or(tools, path, &argv, outcome));
    }
    let written: Option<u64> = String::from_utf8_lossy(&out).trim().parse().ok();
    if written != Some(bytes.len() as u64) {
        return Err(PgError::Output {
            server: tools.server(),
            command: "cat".into(),
            message: format!(
                "{} bytes were sent to {path}, the file has {}",
                bytes.len(),
                String::from_utf8_lossy(&out).trim()
            ),
        });
    }
    Ok(())
}

/// A failed command in the tools pod: a full claim said so, else the
/// command's own failure.
fn no_space_or(
    tools: &Runner<'_>,
    path: &str,
    argv: &[String],
    outcome: crate::cluster::exec::ExecOutcome,
) -> PgError {
    if outcome.stderr.contains("No space left on device")
        || outcome.stderr.contains("Disk quota exceeded")
    {
        return PgError::NoSpace {
            dir: PathBuf::from(path),
            free: 0,
            message: outcome.stderr.trim().to_string(),
            needed: String::new(),
        };
    }
    tools.failure(argv, outcome)
}

/// Reads the manifest at `path` in the tools pod.
pub async fn read_manifest(tools: &Runner<'_>, path: &str) -> Result<Manifest, PgError> {
    let bytes = read_file(tools, path).await?;
    Manifest::parse(&bytes, Path::new(path))
}

/// The size and sha256 of the archive at `path` in the tools pod, as the
/// manifest defines them. Also fsyncs it (the read-back is where it
/// becomes durable).
async fn hash(
    tools: &Runner<'_>,
    path: &str,
    format: DumpFormat,
) -> Result<(u64, String), PgError> {
    let script = match format {
        DumpFormat::Custom => {
            r#"set -e; [ -f "$1" ] || { echo "$1 is not a file" >&2; exit 3; }; sync -- "$1"; stat -c %s -- "$1"; sha256sum < "$1""#
        }
        DumpFormat::Directory => {
            r#"set -e; cd -- "$1"; odd=$(find . -mindepth 1 ! -type f -print | head -n 1); if [ -n "$odd" ]; then echo "$odd in the directory archive is not a regular file" >&2; exit 3; fi; find . -mindepth 1 -type f -exec sync -- {} +; sync -- .; find . -mindepth 1 -maxdepth 1 -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}'; LC_ALL=C find . -mindepth 1 -maxdepth 1 -type f -printf '%f\n' | LC_ALL=C sort | xargs -r -d '\n' sha256sum --"#
        }
    };
    let argv = sh(script, &[path]);
    let out = tools.output(&argv).await?;
    let (size, rest) = out.split_once('\n').unwrap_or((out.as_str(), ""));
    let bytes: u64 = size.trim().parse().map_err(|_| PgError::Output {
        server: tools.server(),
        command: "stat".into(),
        message: format!("no size of {path} in `{}`", size.trim()),
    })?;
    let sha = match format {
        DumpFormat::Custom => rest
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string(),
        DumpFormat::Directory => hex::encode(Sha256::digest(rest.as_bytes())),
    };
    if sha.len() != 64 {
        return Err(PgError::Output {
            server: tools.server(),
            command: "sha256sum".into(),
            message: format!("no sha256 of {path}"),
        });
    }
    Ok((bytes, sha))
}

/// Bytes free on the claim at `dir` (made first) and the tools' pg_dump version.
async fn prepare_dir(
    tools: &Runner<'_>,
    paths: &ClaimPaths,
    partial: &str,
) -> Result<(u64, String), PgError> {
    let argv = sh(
        r#"set -e; umask 077; mkdir -p -- "$1"; rm -f -- "$2"; rm -rf -- "$3"; sync -- "$1"; df -P -B1 -- "$1" | awk 'NR == 2 {print $4}'; pg_dump --version"#,
        &[&paths.dir, &paths.manifest, partial],
    );
    let out = tools.output(&argv).await?;
    let mut lines = out.lines();
    let free = lines.next().and_then(|l| l.trim().parse().ok());
    let version = lines.next().map(|l| l.trim().to_string());
    match (free, version) {
        (Some(free), Some(version)) => Ok((free, version)),
        _ => Err(PgError::Output {
            server: tools.server(),
            command: "df".into(),
            message: format!("unexpected output preparing {}: {}", paths.dir, out.trim()),
        }),
    }
}

/// Backs up `database`: measured through `source` (a session on the
/// server), dumped by `tools` (whose libpq environment reaches the same
/// server) onto the claim under `root`. Returns the paths and the manifest
/// written there.
pub async fn backup(
    source: &Runner<'_>,
    tools: &Runner<'_>,
    root: &str,
    (placement, database): (&str, &str),
    options: &BackupOptions,
    progress: ProgressFn<'_>,
) -> Result<(ClaimPaths, Manifest), PgError> {
    check_names(&source.server(), placement, database)?;
    let paths = claim_paths(root, placement, database);
    let partial = format!("{}.partial", paths.archive);
    let (free, pg_dump_version) = prepare_dir(tools, &paths, &partial).await?;
    // A filesystem where the tools run: a directory archive, dumped and
    // restored in parallel, at gzip level 1 unless asked: measured on 1.2 GB
    // (scripts/bench-journeys), level 0 made the claim path 0.71× as fast as
    // the local one (five times the bytes written, hashed and read back),
    // level 1 1.05×.
    let (format, compression) = (
        if options.directory_when_local {
            DumpFormat::Directory
        } else {
            options.format
        },
        options.compression.unwrap_or(1).min(9),
    );
    let partial_ref = partial.as_str();
    let room = Room::Free {
        dir: &paths.dir,
        free,
    };
    let dumped = in_snapshot(
        source,
        database,
        options.jobs,
        room,
        progress,
        |snapshot| async move {
            let mut argv = vec![
                "pg_dump".to_string(),
                format!("--snapshot={snapshot}"),
                format!("--compress={compression}"),
                "--no-sync".into(),
            ];
            match format {
                DumpFormat::Custom => argv.push("--format=custom".into()),
                DumpFormat::Directory => {
                    argv.push("--format=directory".into());
                    argv.push(format!("--jobs={}", options.jobs.max(1)));
                }
            }
            argv.push(format!("--file={partial_ref}"));
            argv.push(format!("--dbname={database}"));
            dump(tools, partial_ref, &argv, progress).await
        },
    )
    .await;
    let remove_partial = || async {
        let _ = tools.output(&sh(r#"rm -rf -- "$1""#, &[partial_ref])).await;
    };
    let (source_facts, ()) = match dumped {
        Ok(done) => done,
        Err(e) => {
            remove_partial().await;
            return Err(e);
        }
    };
    let checked = async {
        let (bytes, sha256) = hash(tools, partial_ref, format).await?;
        let listing = list(tools, partial_ref).await?;
        let argv = sh(
            r#"set -e; rm -rf -- "$2"; mv -- "$1" "$2"; sync -- "$(dirname -- "$2")""#,
            &[partial_ref, &paths.archive],
        );
        tools.output(&argv).await?;
        Ok::<_, PgError>((bytes, sha256, archive::toc_entries(&listing)))
    };
    let (bytes, sha256, toc_entries) = match checked.await {
        Ok(c) => c,
        Err(e) => {
            remove_partial().await;
            return Err(e);
        }
    };
    let manifest = source_facts.manifest(
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
    let text = manifest.to_bytes(Path::new(&paths.manifest))?;
    write_file(tools, &paths.manifest, &text).await?;
    Ok((paths, manifest))
}

/// Runs pg_dump in the tools pod, reporting the archive's growing size
/// (printed by the pod twice a second: a few bytes, however large the dump).
async fn dump(
    tools: &Runner<'_>,
    partial: &str,
    pg_dump: &[String],
    progress: ProgressFn<'_>,
) -> Result<(), PgError> {
    let mut argv = sh(
        r#"p="$1"; shift; "$@" & pid=$!; (while sleep 0.5; do du -sb -- "$p" 2>/dev/null | cut -f1; done) & tick=$!; wait "$pid"; rc=$?; kill "$tick" 2>/dev/null; exit "$rc""#,
        &[partial],
    );
    argv.extend(pg_dump.iter().cloned());
    let mut sizes = SizeLines {
        line: Vec::new(),
        progress,
        last: 0,
    };
    let outcome = tools.run(&argv, Stdin::none(), &mut sizes).await?;
    if outcome.code != 0 {
        return Err(no_space_or(tools, partial, pg_dump, outcome));
    }
    Ok(())
}

/// `pg_restore --list` of the archive at `path` in the tools pod.
async fn list(tools: &Runner<'_>, path: &str) -> Result<String, PgError> {
    let argv = vec!["pg_restore".to_string(), "--list".into(), path.to_string()];
    let out = read_output(tools, &argv, path, "`pg_restore --list` cannot read it").await?;
    String::from_utf8(out).map_err(|e| {
        PgError::archive(
            Path::new(path),
            format!("`pg_restore --list` printed non-UTF-8 text: {e}"),
        )
    })
}

/// Restores the backup whose manifest is at `manifest_path` on the claim:
/// the archive hashed against the manifest, then `pg_restore` run by
/// `tools` (whose libpq environment reaches the target) into the database
/// prepare created; the target's own pod (`target`) writes back and
/// analyzes. Returns what was restored and the manifest.
pub async fn restore(
    tools: &Runner<'_>,
    target: &Runner<'_>,
    manifest_path: &str,
    options: &RestoreOptions,
    progress: ProgressFn<'_>,
) -> Result<Restored, PgError> {
    let manifest = read_manifest(tools, manifest_path).await?;
    let archive_path = archive_of(manifest_path, &manifest);
    progress(&Progress::Bytes {
        phase: Phase::ReadBack,
        done: 0,
        total: Some(manifest.bytes),
    });
    let (bytes, sha) = hash(tools, &archive_path, manifest.format).await?;
    super::restore::check_sums(Path::new(&archive_path), &manifest, bytes, &sha)?;
    progress(&Progress::Bytes {
        phase: Phase::ReadBack,
        done: bytes,
        total: Some(manifest.bytes),
    });
    super::restore::with_write_back(
        target,
        super::restore::pg_restore(tools, &manifest, &archive_path, options),
    )
    .await?;
    super::restore::analyze(target, &manifest.database, options).await?;
    Ok(Restored {
        database: manifest.database.clone(),
        entries: manifest.toc_entries,
        uploaded: 0,
    })
}

/// Progress from the sizes the tools pod prints, one per line.
struct SizeLines<'p> {
    line: Vec<u8>,
    progress: ProgressFn<'p>,
    last: u64,
}

impl AsyncWrite for SizeLines<'_> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        for &b in buf {
            if b != b'\n' {
                if self.line.len() < 64 {
                    self.line.push(b);
                }
                continue;
            }
            let size = std::str::from_utf8(&self.line)
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok());
            self.line.clear();
            if let Some(done) = size {
                self.last = done;
                (self.progress)(&Progress::Bytes {
                    phase: Phase::Dump,
                    done,
                    total: None,
                });
            }
        }
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_on_the_claim_are_per_run_placement_and_database() {
        let p = claim_paths("/pgplan-backups/run-1/", "hc", "healthcare");
        assert_eq!(p.dir, "/pgplan-backups/run-1/hc");
        assert_eq!(p.archive, "/pgplan-backups/run-1/hc/healthcare.dump");
        assert_eq!(
            p.manifest,
            "/pgplan-backups/run-1/hc/healthcare.manifest.json"
        );
    }
}
