//! The backup manifest, `{database}.manifest.json` next to the archive:
//! what the archive is (format, size, sha256, TOC entries), where it came
//! from (database, owner, server and pg_dump versions) and what the source
//! held in the dump's snapshot (per table rows and checksum, sequences).
//! It is written last and durably, so its presence means a complete,
//! checked backup; verify and restore trust nothing else.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::archive;
use super::contents::{SequenceValue, TableContents};
use super::PgError;
use crate::spec::DumpFormat;

/// The manifest's own format; readers refuse a newer one.
pub const MANIFEST_VERSION: u32 = 1;

/// What a backup holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub manifest_version: u32,
    pub database: String,
    pub owner: String,
    pub encoding: String,
    /// The archive's format (custom: one file; directory: a directory).
    pub format: DumpFormat,
    /// The archive's name, relative to the manifest's directory.
    pub archive: String,
    /// Size in bytes (the sum of the files for a directory archive).
    pub bytes: u64,
    /// sha256 of the file; for a directory archive, of its `sha256sum`
    /// listing (each file's hash and name, in name order).
    pub sha256: String,
    /// Entries in the archive's table of contents (`pg_restore --list`).
    pub toc_entries: u64,
    /// `server_version` of the source, e.g. `15.18`.
    pub server_version: String,
    /// `pg_dump --version` of the tool that wrote the archive.
    pub pg_dump_version: String,
    /// gzip level the archive was written with (0: none).
    pub compression: u32,
    /// Seconds since the Unix epoch when the dump finished.
    pub created_at: u64,
    /// Measured in the snapshot the archive was dumped from.
    pub tables: Vec<TableContents>,
    pub sequences: Vec<SequenceValue>,
    /// Grants and default privileges, measured in the same snapshot (absent
    /// from manifests written before they were recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privileges: Option<super::roles::Privileges>,
}

impl Manifest {
    /// Total rows over all tables.
    pub fn rows(&self) -> u64 {
        self.tables.iter().map(|t| t.rows).sum()
    }

    /// The archive's path, next to the manifest at `manifest_path`.
    pub fn archive_path(&self, manifest_path: &Path) -> PathBuf {
        manifest_path
            .parent()
            .unwrap_or_else(|| Path::new("."))
            .join(&self.archive)
    }

    /// Reads a manifest; a missing, unreadable or newer one is an
    /// [`PgError::Archive`].
    pub fn read(path: &Path) -> Result<Manifest, PgError> {
        let bytes = std::fs::read(path)
            .map_err(|e| PgError::archive(path, format!("its manifest cannot be read: {e}")))?;
        Manifest::parse(&bytes, path)
    }

    /// A manifest's bytes, read from `path` (for messages); a newer or
    /// invalid one is an [`PgError::Archive`].
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Manifest, PgError> {
        let m: Manifest = serde_json::from_slice(bytes)
            .map_err(|e| PgError::archive(path, format!("its manifest is not valid: {e}")))?;
        if m.manifest_version > MANIFEST_VERSION {
            return Err(PgError::archive(
                path,
                format!(
                    "its manifest is version {}, this pgplan reads up to {MANIFEST_VERSION}",
                    m.manifest_version
                ),
            ));
        }
        if m.archive.contains('/') || m.archive.starts_with('.') {
            return Err(PgError::archive(
                path,
                format!(
                    "its manifest names an archive outside its directory: `{}`",
                    m.archive
                ),
            ));
        }
        Ok(m)
    }

    /// Writes the manifest durably (temporary file, fsync, rename, fsync of
    /// the directory).
    pub fn write(&self, path: &Path) -> Result<(), PgError> {
        archive::write_durably(path, &self.to_bytes(path)?)
    }

    /// The manifest as written: pretty JSON and a newline.
    pub fn to_bytes(&self, path: &Path) -> Result<Vec<u8>, PgError> {
        let mut text = serde_json::to_vec_pretty(self).map_err(|e| PgError::Io {
            action: "encode",
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        text.push(b'\n');
        Ok(text)
    }
}
