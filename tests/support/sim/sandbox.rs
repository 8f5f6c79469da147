//! A container's process, as the simulated kubelet runs it: in a private mount (and UTS)
//! namespace, chrooted into a root of its own.
//!
//! The root (`{pod dir}/containers/{name}/root`) is a plain directory. The machine's system
//! directories (`/usr`, `/bin`, `/lib*`, `/sbin`, `/opt`) are bound into it read-only — they
//! stand in for the image, so the machine's PostgreSQL tools are the image's — with `/dev` and
//! `/proc` bound as they are. `/etc` is a directory of links to the machine's `/etc` entries
//! (bound at `/.host-etc`), except `hosts`, `hostname` and `resolv.conf`: `hosts` links to the
//! pod's own hosts file (the pod directory's `etc`, bound at `/.pod`), which the kubelet
//! rewrites (atomically, by rename) as Services and pods come and go, so in-cluster names
//! resolve inside pods only. Each volume mount binds the volume's host directory at its
//! `mountPath`; `/tmp` is the pod's. The process runs as root, as in the images it stands in for.
//!
//! Every directory and link is made before the fork; between fork and exec the child only
//! makes syscalls (unshare, mount, chroot, chdir, sethostname) on strings made beforehand.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Directories of the machine that stand in for the image's.
const SYSTEM_DIRS: [&str; 9] = [
    "usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "opt", "dev",
];

/// One bind mount: `source` (a host path) at `target` (a path inside the root).
#[derive(Debug, Clone)]
pub struct Bind {
    pub source: PathBuf,
    pub target: String,
    pub read_only: bool,
}

/// Everything a container process needs, built before the fork.
#[derive(Debug)]
pub struct Sandbox {
    root: PathBuf,
    binds: Vec<Bind>,
    hostname: String,
    workdir: String,
}

/// What the child does between fork and exec, as C strings made in the parent.
struct Prepared {
    binds: Vec<(CString, CString, bool, bool)>,
    root: CString,
    workdir: CString,
    hostname: Vec<u8>,
}

/// A symlink, made once: an exec preparing the same root at the same moment
/// as its container may have made it already.
fn make_link(target: impl AsRef<Path>, at: &Path) -> io::Result<()> {
    match std::os::unix::fs::symlink(target, at) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        r => r,
    }
}

fn cstring(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|e| io::Error::other(e.to_string()))
}

impl Sandbox {
    /// A sandbox rooted at `root` (made here), for a pod whose directory is `pod_dir` (its
    /// `etc` holds the pod's hosts file) and whose `/tmp` is `tmp`.
    pub fn new(
        root: &Path,
        pod_dir: &Path,
        tmp: &Path,
        hostname: &str,
        workdir: &str,
    ) -> io::Result<Sandbox> {
        std::fs::create_dir_all(root)?;
        let mut binds = Vec::new();
        for d in SYSTEM_DIRS {
            let host = Path::new("/").join(d);
            let Ok(meta) = std::fs::symlink_metadata(&host) else {
                continue;
            };
            let inside = root.join(d);
            if meta.file_type().is_symlink() {
                // Merged /usr: `/bin` → `usr/bin`, the same inside.
                if std::fs::symlink_metadata(&inside).is_err() {
                    make_link(std::fs::read_link(&host)?, &inside)?;
                }
            } else if meta.is_dir() {
                binds.push(Bind {
                    source: host,
                    target: format!("/{d}"),
                    read_only: d != "dev",
                });
            }
        }
        binds.push(Bind {
            source: "/proc".into(),
            target: "/proc".into(),
            read_only: false,
        });
        binds.push(Bind {
            source: "/etc".into(),
            target: "/.host-etc".into(),
            read_only: true,
        });
        binds.push(Bind {
            source: pod_dir.join("etc"),
            target: "/.pod".into(),
            read_only: true,
        });
        binds.push(Bind {
            source: tmp.to_path_buf(),
            target: "/tmp".into(),
            read_only: false,
        });
        let etc = root.join("etc");
        std::fs::create_dir_all(&etc)?;
        for entry in std::fs::read_dir("/etc")?.flatten() {
            let name = entry.file_name();
            let link = etc.join(&name);
            if std::fs::symlink_metadata(&link).is_ok() {
                continue;
            }
            let target = match name.to_str() {
                Some("hosts") => PathBuf::from("/.pod/hosts"),
                Some("hostname") => PathBuf::from("/.pod/hostname"),
                Some("resolv.conf") => PathBuf::from("/.pod/resolv.conf"),
                _ => Path::new("/.host-etc").join(&name),
            };
            make_link(target, &link)?;
        }
        for (name, target) in [("hosts", "/.pod/hosts"), ("hostname", "/.pod/hostname")] {
            let link = etc.join(name);
            if std::fs::symlink_metadata(&link).is_err() {
                make_link(target, &link)?;
            }
        }
        for d in ["var/run", "run", "var/tmp", "root", "home"] {
            std::fs::create_dir_all(root.join(d))?;
        }
        std::fs::create_dir_all(root.join(super::kubelet::safe_relative(workdir)))?;
        Ok(Sandbox {
            root: root.to_path_buf(),
            binds,
            hostname: hostname.to_string(),
            workdir: if workdir.is_empty() { "/" } else { workdir }.to_string(),
        })
    }

    /// Adds a volume's host directory at `mount_path`. A mount point inside the machine's
    /// system directories cannot be made (they are bound read-only): that is an error.
    pub fn mount(&mut self, source: &Path, mount_path: &str, read_only: bool) -> io::Result<()> {
        let rel = super::kubelet::safe_relative(mount_path);
        let first = rel
            .components()
            .next()
            .map(|c| c.as_os_str().to_string_lossy().into_owned());
        if first
            .as_deref()
            .is_some_and(|f| SYSTEM_DIRS.contains(&f) || f == "proc")
        {
            return Err(io::Error::other(format!(
                "the simulated kubelet cannot mount a volume inside the image's system \
                 directories ({mount_path})"
            )));
        }
        let inside = self.root.join(&rel);
        // A link to the machine's /etc entry gives way to the mount point.
        if std::fs::symlink_metadata(&inside).is_ok_and(|m| m.file_type().is_symlink()) {
            std::fs::remove_file(&inside)?;
        }
        if source.is_dir() {
            std::fs::create_dir_all(&inside)?;
        } else {
            if let Some(parent) = inside.parent() {
                std::fs::create_dir_all(parent)?;
            }
            if !inside.exists() {
                std::fs::write(&inside, b"")?;
            }
        }
        self.binds.push(Bind {
            source: source.to_path_buf(),
            target: format!("/{}", rel.display()),
            read_only,
        });
        Ok(())
    }

    /// The program's path on the machine's PATH directories (which are the same inside), so
    /// exec after chroot needs no search. A path with a `/` is taken as it is.
    pub fn resolve(&self, program: &str, path: &str) -> Option<String> {
        if program.contains('/') {
            return Some(program.to_string());
        }
        path.split(':')
            .filter(|d| !d.is_empty())
            .map(|d| Path::new(d).join(program))
            .find(|p| {
                std::fs::metadata(p).is_ok_and(|m| {
                    use std::os::unix::fs::PermissionsExt;
                    m.is_file() && m.permissions().mode() & 0o111 != 0
                })
            })
            .map(|p| p.to_string_lossy().into_owned())
    }

    fn prepare(&self) -> io::Result<Prepared> {
        // Shallower targets first: a volume under another's mount point lands on top of it.
        let mut binds = self.binds.clone();
        binds.sort_by_key(|b| b.target.matches('/').count());
        let mut out = Vec::new();
        for b in &binds {
            let inside = self.root.join(b.target.trim_start_matches('/'));
            if !inside.exists() {
                if b.source.is_dir() {
                    std::fs::create_dir_all(&inside)?;
                } else {
                    std::fs::write(&inside, b"")?;
                }
            }
            let recursive = matches!(b.target.as_str(), "/dev" | "/proc");
            out.push((
                cstring(&b.source)?,
                cstring(&inside)?,
                b.read_only,
                recursive,
            ));
        }
        Ok(Prepared {
            binds: out,
            root: cstring(&self.root)?,
            workdir: CString::new(self.workdir.as_bytes())
                .map_err(|e| io::Error::other(e.to_string()))?,
            hostname: self.hostname.as_bytes().to_vec(),
        })
    }

    /// Makes `cmd` run inside the sandbox. Call before [`crate::support::proc::spawn`], whose
    /// own setup then runs inside it.
    pub fn apply(&self, cmd: &mut Command) -> io::Result<()> {
        let p = self.prepare()?;
        let slash = CString::new("/").map_err(|e| io::Error::other(e.to_string()))?;
        // SAFETY: the closure runs between fork and exec and makes only syscalls on memory
        // allocated before the fork.
        unsafe {
            cmd.pre_exec(move || {
                let check = |r: libc::c_int| {
                    if r != 0 {
                        Err(io::Error::last_os_error())
                    } else {
                        Ok(())
                    }
                };
                check(libc::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWUTS))?;
                check(libc::mount(
                    std::ptr::null(),
                    slash.as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ))?;
                for (src, dst, read_only, recursive) in &p.binds {
                    let mut flags = libc::MS_BIND;
                    if *recursive {
                        flags |= libc::MS_REC;
                    }
                    check(libc::mount(
                        src.as_ptr(),
                        dst.as_ptr(),
                        std::ptr::null(),
                        flags,
                        std::ptr::null(),
                    ))?;
                    if *read_only {
                        check(libc::mount(
                            std::ptr::null(),
                            dst.as_ptr(),
                            std::ptr::null(),
                            libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
                            std::ptr::null(),
                        ))?;
                    }
                }
                check(libc::sethostname(
                    p.hostname.as_ptr().cast(),
                    p.hostname.len(),
                ))?;
                check(libc::chroot(p.root.as_ptr()))?;
                check(libc::chdir(p.workdir.as_ptr()))?;
                Ok(())
            });
        }
        Ok(())
    }
}
