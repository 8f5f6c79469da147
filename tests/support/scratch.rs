//! Temporary directories of the test substrate. Every directory the substrate creates lives under
//! one `pgplan-test-{pid}-{random}` root in the system temp dir, is removed when its guard drops,
//! and is swept by the next test process if this one was killed before it could clean up (the
//! name carries the pid, so a root whose process is gone is stale).

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Once;

use super::proc;

/// The prefix of every scratch root; `scripts/test` checks none is left after the suite.
pub const PREFIX: &str = "pgplan-test-";

/// A directory removed (recursively) on drop.
#[derive(Debug)]
pub struct Scratch {
    path: PathBuf,
    keep: bool,
}

impl Scratch {
    /// A new, empty root directory, traversable by the unprivileged postgres user.
    pub fn new(label: &str) -> io::Result<Scratch> {
        sweep_stale();
        let base = std::env::temp_dir();
        for _ in 0..16 {
            let suffix: String = (0..6)
                .map(|_| {
                    let i = rand::random_range(0..36u8);
                    (if i < 10 { b'0' + i } else { b'a' + i - 10 }) as char
                })
                .collect();
            let path = base.join(format!(
                "{PREFIX}{}-{label}{}{suffix}",
                std::process::id(),
                if label.is_empty() { "" } else { "-" }
            ));
            match fs::create_dir(&path) {
                Ok(()) => {
                    fs::set_permissions(&path, fs::Permissions::from_mode(0o755))?;
                    return Ok(Scratch { path, keep: false });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::other("could not create a scratch directory"))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Keep the directory after drop (for debugging a failing test by hand).
    pub fn keep(&mut self) {
        self.keep = true;
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !self.keep {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// Creates `path` (and parents) owned by the unprivileged postgres user when running as root.
pub fn make_dir_for_postgres(path: &Path, mode: u32) -> io::Result<()> {
    fs::create_dir_all(path)?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    proc::give_to_unprivileged(path)
}

/// Removes the roots of test processes that no longer exist.
pub fn sweep_stale() {
    static SWEEP: Once = Once::new();
    SWEEP.call_once(|| {
        let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix(PREFIX) else {
                continue;
            };
            let pid: Option<u32> = rest.split('-').next().and_then(|p| p.parse().ok());
            if let Some(pid) = pid {
                if pid != std::process::id() && !proc::alive(pid) {
                    let _ = fs::remove_dir_all(entry.path());
                }
            }
        }
    });
}
