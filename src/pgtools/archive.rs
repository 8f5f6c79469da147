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
use tokio::io::{AsyncWrite, BufWriter};

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

/// Where an archive is written before it is renamed into place.
pub fn partial_of(archive: &Path) -> PathBuf {
    with_suffix(archive, ".partial")
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
    let mut f = crate::private::create(&tmp).map_err(|e| PgError::io("create", &tmp, e))?;
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
        let f = crate::private::create_async(path)
            .await
            .map_err(|e| PgError::io("create", path, e))?;
        Ok(HashingWriter {
            inner: BufWriter::with_capacity(CHUNK, f),
            hasher: Sha256::new(),
            meter: ByteMeter::new(phase, None, progress),
        })
    }

    /// Flushes the file; returns its size and sha256. Not synced: the
    /// backup fsyncs it while reading it back ([`sync_archive`]).
    pub(crate) async fn finish(mut self, path: &Path) -> Result<(u64, String), PgError> {
        use tokio::io::AsyncWriteExt;
        self.inner
            .flush()
            .await
            .map_err(|e| PgError::io("write", path, e))?;
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

/// A file being read that counts what passes through, for progress.
pub(crate) struct CountingReader<'p> {
    inner: tokio::io::BufReader<tokio::fs::File>,
    meter: ByteMeter<'p>,
}

impl<'p> CountingReader<'p> {
    pub(crate) async fn open(
        path: &Path,
        phase: Phase,
        progress: ProgressFn<'p>,
    ) -> Result<CountingReader<'p>, PgError> {
        let inner = tokio::fs::File::open(path)
            .await
            .map_err(|e| PgError::archive(path, format!("it cannot be opened: {e}")))?;
        let total = inner.metadata().await.ok().map(|m| m.len());
        Ok(CountingReader {
            inner: tokio::io::BufReader::with_capacity(CHUNK, inner),
            meter: ByteMeter::new(phase, total, progress),
        })
    }
}

impl tokio::io::AsyncRead for CountingReader<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        let n = (buf.filled().len() - before) as u64;
        if n == 0 {
            self.meter.finish();
        } else {
            self.meter.add(n);
        }
        Poll::Ready(Ok(()))
    }
}

/// What a file looked like when it was hashed: enough to tell, within this
/// process, that it has not been written since (a write moves its mtime;
/// replacing it changes its inode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
}

impl Stamp {
    fn of(path: &Path) -> Option<Stamp> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path).ok()?;
        Some(Stamp {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        })
    }
}

/// A file's mtime must be at least this much older than the end of its
/// hashing for the hash to be remembered: file times come from a clock
/// that ticks every few milliseconds, so a write just after the hash could
/// otherwise leave the mtime unchanged. (The file's writer has finished
/// before it is hashed: pg_dump has exited, pgplan's own stream is flushed.)
const SETTLED: std::time::Duration = std::time::Duration::from_millis(50);

/// Archive files this process has read through and hashed, by device and
/// inode (a rename keeps them), with the stamp they had and their sha256.
/// The restore right after a backup in the same run reuses them instead of
/// reading the archive a third time; a file written, truncated or replaced
/// since no longer matches its stamp and is read again. A new process (a
/// resumed apply) starts empty and reads everything.
static HASHED: std::sync::Mutex<Vec<(Stamp, String)>> = std::sync::Mutex::new(Vec::new());

/// At most this many files are remembered (the oldest are forgotten).
const REMEMBERED: usize = 4096;

fn remembered(stamp: Stamp) -> Option<String> {
    let hashed = HASHED.lock().unwrap_or_else(|e| e.into_inner());
    hashed
        .iter()
        .find(|(s, _)| *s == stamp)
        .map(|(_, sha)| sha.clone())
}

fn remember(stamp: Stamp, sha: &str) {
    let mut hashed = HASHED.lock().unwrap_or_else(|e| e.into_inner());
    hashed.retain(|(s, _)| (s.dev, s.ino) != (stamp.dev, stamp.ino));
    if hashed.len() >= REMEMBERED {
        hashed.remove(0);
    }
    hashed.push((stamp, sha.to_string()));
}

/// Reads a file through, hashing it; its size and sha256. The reading and
/// hashing run on the blocking pool a chunk at a time, so several files
/// hash on several cores while progress is reported here. With `reuse`, a
/// file this process already hashed and that has not changed since is not
/// read again.
async fn hash_file(
    path: &Path,
    meter: &std::sync::Mutex<ByteMeter<'_>>,
    reuse: bool,
) -> Result<(u64, String), PgError> {
    let before = Stamp::of(path);
    if reuse {
        if let Some(sha) = before.and_then(remembered) {
            let len = before.map_or(0, |s| s.len);
            meter.lock().unwrap_or_else(|e| e.into_inner()).add(len);
            return Ok((len, sha));
        }
    }
    let opened = std::fs::File::open(path)
        .map_err(|e| PgError::archive(path, format!("it cannot be opened: {e}")))?;
    let mut file = opened;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut size = 0u64;
    loop {
        let read;
        (read, file, hasher, buf) = tokio::task::spawn_blocking(move || {
            use std::io::Read;
            let read = file.read(&mut buf);
            if let Ok(n) = read {
                hasher.update(&buf[..n]);
            }
            (read, file, hasher, buf)
        })
        .await
        .map_err(|e| PgError::archive(path, format!("reading it failed: {e}")))?;
        let n = read.map_err(|e| PgError::archive(path, format!("reading it failed: {e}")))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        meter
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .add(n as u64);
    }
    let sha = hex::encode(hasher.finalize());
    if let Some(b) = before {
        let mtime =
            std::time::UNIX_EPOCH + std::time::Duration::from_nanos(b.mtime_ns.max(0) as u64);
        let settled = mtime + SETTLED <= std::time::SystemTime::now();
        if settled && b.len == size && Stamp::of(path) == Some(b) {
            remember(b, &sha);
        }
    }
    Ok((size, sha))
}

/// Files hashed at once in a directory archive.
fn hash_jobs() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 4))
}

/// Whether [`hash_archive`] reads every byte, or trusts what this process
/// hashed earlier for files unchanged since.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reread {
    /// Read everything: a backup's read-back, `verify_archive`.
    All,
    /// Only files not hashed earlier in this process or changed since: the
    /// check just before a restore.
    Changed,
}

/// The size and sha256 of an archive as it is on disk now: the file's
/// hash, or for a directory the hash of its `sha256sum`-style listing (its
/// files are hashed several at a time, largest first).
pub(crate) async fn hash_archive(
    path: &Path,
    format: DumpFormat,
    reread: Reread,
    progress: ProgressFn<'_>,
) -> Result<(u64, String), PgError> {
    use futures::{StreamExt, TryStreamExt};
    let total = match format {
        DumpFormat::Custom => std::fs::metadata(path).map(|m| m.len()).ok(),
        DumpFormat::Directory => Some(dir_size(path)),
    };
    let meter = std::sync::Mutex::new(ByteMeter::new(Phase::ReadBack, total, progress));
    let reuse = reread == Reread::Changed;
    let r = match format {
        DumpFormat::Custom => hash_file(path, &meter, reuse).await?,
        DumpFormat::Directory => {
            let mut names = sorted_files(path)?;
            let size_of = |n: &String| std::fs::metadata(path.join(n)).map_or(0, |m| m.len());
            names.sort_by_key(|n| std::cmp::Reverse(size_of(n)));
            let meter = &meter;
            let mut hashed: Vec<(String, u64, String)> = futures::stream::iter(names)
                .map(|name| async move {
                    let (n, sha) = hash_file(&path.join(&name), meter, reuse).await?;
                    Ok::<_, PgError>((name, n, sha))
                })
                .buffer_unordered(hash_jobs())
                .try_collect()
                .await?;
            hashed.sort();
            let mut listing = String::new();
            let mut size = 0;
            for (name, n, sha) in hashed {
                size += n;
                listing.push_str(&format!("{sha}  {name}\n"));
            }
            (size, hex::encode(Sha256::digest(listing.as_bytes())))
        }
    };
    meter
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .finish();
    Ok(r)
}

/// fsyncs an archive: the file, or every file of a directory and the
/// directory. Runs on the blocking pool.
pub(crate) async fn sync_archive(path: &Path, format: DumpFormat) -> Result<(), PgError> {
    let owned = path.to_path_buf();
    tokio::task::spawn_blocking(move || match format {
        DumpFormat::Custom => std::fs::File::open(&owned)
            .and_then(|f| f.sync_all())
            .map_err(|e| PgError::io("fsync", &owned, e)),
        DumpFormat::Directory => sync_tree(&owned),
    })
    .await
    .map_err(|e| PgError::io("fsync", path, io::Error::other(e.to_string())))?
}

/// Entries in an archive's table of contents, as `pg_restore --list` reads
/// them: where the runner runs locally, from the path; in a pod, a custom
/// archive is streamed to it on stdin (it reads the header and the TOC; the
/// rest is drained). Fails with [`PgError::Archive`] when pg_restore cannot read it.
pub(crate) async fn list(
    runner: &Runner<'_>,
    path: &Path,
    format: DumpFormat,
    progress: ProgressFn<'_>,
) -> Result<String, PgError> {
    let mut out = Vec::new();
    let outcome = if runner.is_local() {
        let argv = vec![
            "pg_restore".to_string(),
            "--list".into(),
            path.to_string_lossy().into_owned(),
        ];
        runner.run(&argv, super::Stdin::none(), &mut out).await?
    } else {
        if format == DumpFormat::Directory {
            return Err(PgError::Refused {
                server: runner.server(),
                message: "a directory archive cannot be read by tools in a pod".into(),
                help: "directory archives are made and read by tools on this machine; use `format: custom` for servers in the cluster".into(),
            });
        }
        // Counted as it streams (not hashed: the read-back did that): the
        // whole archive crosses the exec channel.
        let len = tokio::fs::metadata(path)
            .await
            .map_err(|e| PgError::archive(path, format!("it cannot be read: {e}")))?
            .len();
        let f = CountingReader::open(path, Phase::List, progress).await?;
        // pg_restore stops reading after the table of contents; the rest
        // is read and dropped in the pod, so the exec's stdin is consumed to
        // its end (a client still sending when the server closes the stream
        // can lose the exit status).
        let argv = vec![
            "sh".to_string(),
            "-c".into(),
            "pg_restore --list; rc=$?; cat >/dev/null; exit $rc".into(),
        ];
        runner
            .run(&argv, super::Stdin::Sized(f, len), &mut out)
            .await?
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

    /// Writes `bytes` to `path` and dates it `age` back.
    fn written(path: &Path, bytes: &[u8], age: std::time::Duration) {
        std::fs::write(path, bytes).unwrap();
        let f = std::fs::File::options().write(true).open(path).unwrap();
        f.set_modified(std::time::SystemTime::now() - age).unwrap();
    }

    #[tokio::test]
    async fn a_directory_hashes_as_its_sha256sum_listing() {
        let dir = tempfile::tempdir().unwrap();
        let files: [(&str, Vec<u8>); 3] = [
            ("toc.dat", b"PGDMP".to_vec()),
            ("3356.dat", vec![7u8; 3 * CHUNK + 5]),
            ("3357.dat", Vec::new()),
        ];
        let mut listing = String::new();
        let mut names: Vec<_> = files.iter().collect();
        names.sort_by_key(|(n, _)| *n);
        for (name, bytes) in names {
            written(&dir.path().join(name), bytes, std::time::Duration::ZERO);
            listing.push_str(&format!("{}  {name}\n", hex::encode(Sha256::digest(bytes))));
        }
        let (size, sha) = hash_archive(
            dir.path(),
            DumpFormat::Directory,
            Reread::All,
            &crate::pgtools::no_progress,
        )
        .await
        .unwrap();
        assert_eq!(size, 3 * CHUNK as u64 + 10);
        assert_eq!(sha, hex::encode(Sha256::digest(listing.as_bytes())));
    }

    #[tokio::test]
    async fn only_a_settled_unchanged_file_is_not_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("old.dump");
        let fresh = dir.path().join("fresh.dump");
        let a_minute = std::time::Duration::from_secs(60);
        written(&old, b"first contents", a_minute);
        written(&fresh, b"just written", std::time::Duration::ZERO);
        let hash = |p: PathBuf, reread| async move {
            hash_archive(&p, DumpFormat::Custom, reread, &crate::pgtools::no_progress)
                .await
                .unwrap()
                .1
        };
        let first = hash(old.clone(), Reread::All).await;
        assert_eq!(first, hex::encode(Sha256::digest(b"first contents")));
        assert_eq!(remembered(Stamp::of(&old).unwrap()), Some(first.clone()));
        // Written a moment ago: a write in the same clock tick would not
        // move its mtime, so its hash is not trusted later.
        hash(fresh.clone(), Reread::All).await;
        assert_eq!(remembered(Stamp::of(&fresh).unwrap()), None);

        // Rewritten in place with as many bytes: the mtime moves, so the
        // check before a restore reads it again and sees the change.
        written(&old, b"other contents", std::time::Duration::ZERO);
        assert_eq!(remembered(Stamp::of(&old).unwrap()), None);
        assert_eq!(
            hash(old.clone(), Reread::Changed).await,
            hex::encode(Sha256::digest(b"other contents"))
        );
        // Replaced by another file: another inode, read again.
        let other = dir.path().join("other.dump");
        written(&other, b"first contents", a_minute);
        std::fs::rename(&other, &old).unwrap();
        assert_eq!(remembered(Stamp::of(&old).unwrap()), None);
    }

    #[test]
    fn suffixes_append_to_the_file_name() {
        assert_eq!(
            with_suffix(Path::new("/b/p/db.dump"), ".partial"),
            PathBuf::from("/b/p/db.dump.partial")
        );
    }
}
