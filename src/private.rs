//! Files and directories only their owner can read: journals, backups and
//! their manifests hold the plan and the patients' rows. Directories are
//! created 0700 and files 0600 by the system call itself, whatever the
//! umask (a umask can only take bits away), so nothing is ever readable by
//! another local user, not even for a moment.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

/// Mode of every directory pgplan creates for its state and backups.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file pgplan writes there.
pub const FILE_MODE: u32 = 0o600;

/// `mkdir -p` with each directory it creates at 0700 (existing ones are
/// left as they are).
pub fn create_dir_all(path: &Path) -> io::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(path)
}

/// Open a new file (it must not exist) for appending, at 0600.
pub fn create_new(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create_new(true)
        .append(true)
        .mode(FILE_MODE)
        .open(path)
}

/// Create or truncate a file for writing, at 0600 when it is created.
pub fn create(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(FILE_MODE)
        .open(path)
}

/// The same, for tokio.
pub async fn create_async(path: &Path) -> io::Result<tokio::fs::File> {
    tokio::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(FILE_MODE)
        .open(path)
        .await
}

/// Take group and other bits off a file, or off a directory and all it
/// holds (an archive a tool wrote by the umask): directories 0700, files 0600.
pub fn restrict_tree(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::symlink_metadata(path)?;
    if meta.is_dir() {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(DIR_MODE))?;
        for entry in std::fs::read_dir(path)? {
            restrict_tree(&entry?.path())?;
        }
    } else if meta.is_file() {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(FILE_MODE))?;
    }
    Ok(())
}
