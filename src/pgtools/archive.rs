//! Archive files in the backup directory: writing them durably, hashing
//! them (while they stream in, and when read back), and asking
//! `pg_restore --list` whether they are readable.
//!
//! Durability: a file is fsynced before it is renamed into place and its
//! directory is fsynced after, so after a crash a name either is absent or
//! refers to complete, synced contents. The journal relies on it.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWrite, BufWriter};

use super::progress::{ByteMeter, Phase, ProgressFn};
use super::{PgError, Runner};
use crate::spec::DumpFormat;

/// Reads and writes of archives go in pieces of this size: large enough
/// for throughput, small enough that pgplan's memory does not grow with
/// the database.
pub(crate) const CHUNK: usize = 1 << 20;

/// `path` with `suffix` appended to its file name.
pub(crate) fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

/// fsyncs a directory, so the names in it (renames, creations) survive a
/// crash.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), PgError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| PgError::io("fsync", dir, e))
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Writes `bytes` to `path` durably: a temporary file next to it, fsync,
/// rename over `path`, fsync of the directory.
pub(crate) fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), PgError> {
    use std::io::Write;
    let tmp = with_suffix(path, ".tmp");
    let mut f = std::fs::File::create(&tmp).map_err(|e| PgError::io("create", &tmp, e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| PgError::io("write", &tmp, e))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(|e| PgError::io("rename into place", path, e))?;
    sync_dir(parent(path))
}

/// Renames a synced archive (file or directory) into place and syncs the
/// directory holding it.
pub(crate) fn commit(from: &Path, to: &Path) -> Result<(), PgError> {
    remove(to)?;
    std::fs::rename(from, to).map_err(|e| PgError::io("rename into place", to, e))?;
    sync_dir(parent(to))
}

/// Removes a file or a directory tree if it exists.
pub(crate) fn remove(path: &Path) -> Result<(), PgError> {
    let r = match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => Err(e),
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
    };
    r.map_err(|e| PgError::io("remove", path, e))
}

/// fsyncs every file of a directory archive, then the directory.
pub(crate) fn sync_tree(dir: &Path) -> Result<(), PgError> {
    for name in sorted_files(dir)? {
        let p = dir.join(&name);
        std::fs::File::open(&p)
            .and_then(|f| f.sync_all())
            .map_err(|e| PgError::io("fsync", &p, e))?;
    }
    sync_dir(dir)
}

/// The regular files of a directory archive, by name.
pub(crate) fn sorted_files(dir: &Path) -> Result<Vec<String>, PgError> {
    let mut names = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| PgError::io("read", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| PgError::io("read", dir, e))?;
        let kind = entry.file_type().map_err(|e| PgError::io("read", dir, e))?;
        if !kind.is_file() {
            return Err(PgError::archive(
                dir,
                format!(
                    "`{}` in the directory archive is not a regular file",
                    entry.file_name().to_string_lossy()
                ),
            ));
        }
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}

/// Total size of the files of a directory (for progress while pg_dump
/// writes it).
pub(crate) fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

/// A file being written that hashes and counts what passes through.
pub(crate) struct HashingWriter<'p> {
    inner: BufWriter<tokio::fs::File>,
    hasher: Sha256,
    meter: ByteMeter<'p>,
}

impl<'p> HashingWriter<'p> {
    pub(crate) async fn create(
        path: &Path,
        phase: Phase,
        progress: ProgressFn<'p>,
    ) -> Result<HashingWriter<'p>, PgError> {
        let f = tokio::fs::File::create(path)
            .await
            .map_err(|e| PgError::io("create", path, e))?;
        Ok(HashingWriter {
            inner: BufWriter::with_capacity(CHUNK, f),
            hasher: Sha256::new(),
            meter: ByteMeter::new(phase, None, progress),
        })
    }

    /// Flushes and fsyncs the file; returns its size and sha256.
    pub(crate) async fn finish(mut self, path: &Path) -> Result<(u64, String), PgError> {
        use tokio::io::AsyncWriteExt;
        self.inner
            .flush()
            .await
            .map_err(|e| PgError::io("write", path, e))?;
        self.inner
            .get_mut()
            .sync_all()
            .await
            .map_err(|e| PgError::io("fsync", path, e))?;
        self.meter.finish();
        Ok((self.meter.done(), hex::encode(self.hasher.finalize())))
    }
}

impl AsyncWrite for HashingWriter<'_> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let n = ready!(Pin::new(&mut self.inner).poll_write(cx, buf))?;
        self.hasher.update(&buf[..n]);
        self.meter.add(n as u64);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A file being read that hashes and counts what passes through (the
/// archive on its way into a pod).
pub(crate) struct HashingReader<'p> {
    inner: tokio::io::BufReader<tokio::fs::File>,
    hasher: Sha256,
    meter: ByteMeter<'p>,
}

impl<'p> HashingReader<'p> {
    pub(crate) async fn open(
        path: &Path,
        phase: Phase,
        progress: ProgressFn<'p>,
    ) -> Result<HashingReader<'p>, PgError> {
        let inner = tokio::fs::File::open(path)
            .await
            .map_err(|e| PgError::archive(path, format!("it cannot be opened: {e}")))?;
        let total = inner.metadata().await.ok().map(|m| m.len());
        Ok(HashingReader {
            inner: tokio::io::BufReader::with_capacity(CHUNK, inner),
            hasher: Sha256::new(),
            meter: ByteMeter::new(phase, total, progress),
        })
    }

    /// Bytes read and their sha256.
    pub(crate) fn finish(mut self) -> (u64, String) {
        self.meter.finish();
        (self.meter.done(), hex::encode(self.hasher.finalize()))
    }
}

impl tokio::io::AsyncRead for HashingReader<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        let fresh = &buf.filled()[before..];
        self.hasher.update(fresh);
        let n = fresh.len() as u64;
        self.meter.add(n);
        Poll::Ready(Ok(()))
    }
}

/// Reads a file through, hashing it; its size and sha256.
async fn hash_file(path: &Path, meter: &mut ByteMeter<'_>) -> Result<(u64, String), PgError> {
    let mut f = tokio::fs::File::open(path)
        .await
        .map_err(|e| PgError::archive(path, format!("it cannot be opened: {e}")))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut size = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .await
            .map_err(|e| PgError::archive(path, format!("reading it failed: {e}")))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
        meter.add(n as u64);
    }
    Ok((size, hex::encode(hasher.finalize())))
}

/// The size and sha256 of an archive as it is on disk now: the file's
/// hash, or for a directory the hash of its `sha256sum`-style listing.
pub(crate) async fn hash_archive(
    path: &Path,
    format: DumpFormat,
    progress: ProgressFn<'_>,
) -> Result<(u64, String), PgError> {
    let total = match format {
        DumpFormat::Custom => std::fs::metadata(path).map(|m| m.len()).ok(),
        DumpFormat::Directory => Some(dir_size(path)),
    };
    let mut meter = ByteMeter::new(Phase::ReadBack, total, progress);
    let r = match format {
        DumpFormat::Custom => hash_file(path, &mut meter).await?,
        DumpFormat::Directory => {
            let mut listing = String::new();
            let mut size = 0;
            for name in sorted_files(path)? {
                let (n, sha) = hash_file(&path.join(&name), &mut meter).await?;
                size += n;
                listing.push_str(&format!("{sha}  {name}\n"));
            }
            (size, hex::encode(Sha256::digest(listing.as_bytes())))
        }
    };
    meter.finish();
    Ok(r)
}

/// Entries in an archive's table of contents, as `pg_restore --list` reads
/// them: where the runner runs locally, from the path; in a pod, a custom
/// archive is streamed to it on stdin (it reads the header and the TOC; the
/// rest is drained). Fails with [`PgError::Archive`] when pg_restore cannot read it.
pub(crate) async fn list(
    runner: &Runner<'_>,
    path: &Path,
    format: DumpFormat,
) -> Result<String, PgError> {
    let mut out = Vec::new();
    let outcome = if runner.is_local() {
        let argv = vec![
            "pg_restore".to_string(),
            "--list".into(),
            path.to_string_lossy().into_owned(),
        ];
        runner
            .run(&argv, None::<tokio::io::Empty>, &mut out)
            .await?
    } else {
        if format == DumpFormat::Directory {
            return Err(PgError::Refused {
                server: runner.server(),
                message: "a directory archive cannot be read by tools in a pod".into(),
                help: "directory archives are made and read by tools on this machine; use `format: custom` for servers in the cluster".into(),
            });
        }
        let f = tokio::fs::File::open(path)
            .await
            .map_err(|e| PgError::archive(path, format!("it cannot be opened: {e}")))?;
        // pg_restore stops reading after the table of contents; the rest
        // is read and dropped in the pod, so the exec's stdin is consumed to
        // its end (a client still sending when the server closes the stream
        // can lose the exit status).
        let argv = vec![
            "sh".to_string(),
            "-c".into(),
            "pg_restore --list; rc=$?; cat >/dev/null; exit $rc".into(),
        ];
        runner.run(&argv, Some(f), &mut out).await?
    };
    if outcome.code != 0 {
        return Err(PgError::archive(
            path,
            format!(
                "`pg_restore --list` cannot read it on {}: {}",
                runner.server(),
                outcome.stderr.trim()
            ),
        ));
    }
    String::from_utf8(out).map_err(|e| {
        PgError::archive(
            path,
            format!("`pg_restore --list` printed non-UTF-8 text: {e}"),
        )
    })
}

/// Entries in a `pg_restore --list` listing (comments start with `;`).
pub(crate) fn toc_entries(listing: &str) -> u64 {
    listing
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with(';'))
        .count() as u64
}

/// Finds entry `id` in a `pg_restore --list` listing and names it the way
/// people read it: `TABLE DATA public.signing_keys`.
pub(crate) fn describe_entry(listing: &str, id: u32) -> Option<String> {
    let prefix = format!("{id}; ");
    let line = listing.lines().find(|l| l.starts_with(&prefix))?;
    // "{id}; {tableoid} {oid} {DESC} {schema|-} {tag} {owner|-}"
    let rest = line[prefix.len()..].splitn(3, ' ').nth(2)?;
    let desc = ENTRY_KINDS
        .iter()
        .find(|k| rest.starts_with(**k) && rest[k.len()..].starts_with(' '))
        .copied()
        .or_else(|| rest.split(' ').next())?;
    let after = rest[desc.len()..].trim_start();
    let (schema, tail) = after.split_once(' ').unwrap_or((after, ""));
    // The owner is the last word, when there is a tag before it.
    let tag = match tail.rsplit_once(' ') {
        Some((tag, _owner)) => tag,
        None => tail,
    };
    Some(match (schema, tag.is_empty()) {
        ("-", _) => format!("{desc} {tag}"),
        (_, true) => format!("{desc} {schema}"),
        _ => format!("{desc} {schema}.{tag}"),
    })
}

/// Descriptions of archive entries made of several words, longest first so
/// a prefix does not win (pg_dump's `te->desc` values).
const ENTRY_KINDS: &[&str] = &[
    "PUBLICATION TABLES IN SCHEMA",
    "TEXT SEARCH CONFIGURATION",
    "MATERIALIZED VIEW DATA",
    "TEXT SEARCH DICTIONARY",
    "TEXT SEARCH TEMPLATE",
    "FOREIGN DATA WRAPPER",
    "PROCEDURAL LANGUAGE",
    "DATABASE PROPERTIES",
    "SEQUENCE OWNED BY",
    "TEXT SEARCH PARSER",
    "MATERIALIZED VIEW",
    "PUBLICATION TABLE",
    "CHECK CONSTRAINT",
    "OPERATOR FAMILY",
    "DEFAULT ACL",
    "OPERATOR CLASS",
    "FOREIGN SERVER",
    "FOREIGN TABLE",
    "ACCESS METHOD",
    "EVENT TRIGGER",
    "FK CONSTRAINT",
    "LARGE OBJECT",
    "ROW SECURITY",
    "SEQUENCE SET",
    "TABLE ATTACH",
    "INDEX ATTACH",
    "USER MAPPING",
    "TABLE DATA",
    "BLOB DATA",
    "SHELL TYPE",
];

#[cfg(test)]
mod tests {
    use super::*;

    const LISTING: &str = "\
;
; Archive created at 2026-01-29 10:00:00 UTC
;     dbname: backstage_plugin_auth
;
215; 1259 16390 TABLE public signing_keys postgres
3350; 0 16390 TABLE DATA public signing_keys postgres
3199; 2606 16397 CONSTRAINT public signing_keys signing_keys_pkey postgres
3351; 0 0 SEQUENCE SET public patients_id_seq healthcare_user
3352; 0 0 ACL - SCHEMA public pg_database_owner
";

    #[test]
    fn entries_are_counted_without_comments() {
        assert_eq!(toc_entries(LISTING), 5);
    }

    #[test]
    fn entries_are_named_by_kind_schema_and_tag() {
        assert_eq!(
            describe_entry(LISTING, 3350).as_deref(),
            Some("TABLE DATA public.signing_keys")
        );
        assert_eq!(
            describe_entry(LISTING, 215).as_deref(),
            Some("TABLE public.signing_keys")
        );
        assert_eq!(
            describe_entry(LISTING, 3199).as_deref(),
            Some("CONSTRAINT public.signing_keys signing_keys_pkey")
        );
        assert_eq!(
            describe_entry(LISTING, 3351).as_deref(),
            Some("SEQUENCE SET public.patients_id_seq")
        );
        assert_eq!(
            describe_entry(LISTING, 3352).as_deref(),
            Some("ACL SCHEMA public")
        );
        assert_eq!(describe_entry(LISTING, 9), None);
    }

    #[test]
    fn suffixes_append_to_the_file_name() {
        assert_eq!(
            with_suffix(Path::new("/b/p/db.dump"), ".partial"),
            PathBuf::from("/b/p/db.dump.partial")
        );
    }
}
