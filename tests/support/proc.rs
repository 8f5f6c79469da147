//! Child processes of the test substrate. Every server and command the substrate starts (postgres,
//! psql, pg_dump through exec, moto) is spawned here, so that each one:
//!
//! - runs as an unprivileged user when the tests run as root (PostgreSQL refuses to run as root);
//! - leads its own process group, so a server and everything it forked can be signalled at once;
//! - dies with the test process (`PR_SET_PDEATHSIG`), even when the test is killed.
//!
//! `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits, not the process. Tokio's
//! blocking threads and test threads come and go, so all children are forked by one spawner thread
//! that lives as long as the process.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The unprivileged identity children run as when the test process is root.
#[derive(Clone, Debug)]
pub struct Identity {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// `Some` when the tests run as root: the user that postgres and exec'd commands run as.
/// `PGPLAN_TEST_USER` picks the user; otherwise `postgres` (Debian's package creates it), then
/// `nobody`.
pub fn unprivileged() -> Option<&'static Identity> {
    static ID: OnceLock<Option<Identity>> = OnceLock::new();
    ID.get_or_init(|| {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return None;
        }
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        let wanted: Vec<String> = match std::env::var("PGPLAN_TEST_USER") {
            Ok(u) if !u.is_empty() => vec![u],
            _ => vec!["postgres".into(), "nobody".into()],
        };
        for name in wanted {
            for line in passwd.lines() {
                let f: Vec<&str> = line.split(':').collect();
                if f.len() >= 4 && f[0] == name {
                    if let (Ok(uid), Ok(gid)) = (f[2].parse(), f[3].parse()) {
                        if uid != 0 {
                            return Some(Identity { name, uid, gid });
                        }
                    }
                }
            }
        }
        panic!(
            "the tests run as root and no unprivileged user (postgres, nobody or \
             $PGPLAN_TEST_USER) exists to run PostgreSQL as"
        )
    })
    .as_ref()
}

/// Hands a directory to the unprivileged identity (when running as root), so postgres can write
/// it. Does nothing for a normal user, who already owns what they create.
pub fn give_to_unprivileged(path: &std::path::Path) -> io::Result<()> {
    if let Some(id) = unprivileged() {
        std::os::unix::fs::chown(path, Some(id.uid), Some(id.gid))?;
    }
    Ok(())
}

/// How to spawn a child.
#[derive(Clone, Copy, Debug)]
pub struct SpawnOptions {
    /// Drop to [`unprivileged`] when root.
    pub unprivileged: bool,
}

impl SpawnOptions {
    pub const UNPRIVILEGED: SpawnOptions = SpawnOptions { unprivileged: true };
    pub const AS_IS: SpawnOptions = SpawnOptions {
        unprivileged: false,
    };
}

type SpawnJob = (Command, mpsc::Sender<io::Result<Child>>);

fn spawner() -> &'static Mutex<mpsc::Sender<SpawnJob>> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnJob>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnJob>();
        std::thread::Builder::new()
            .name("pgplan-test-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("spawn the pgplan-test-spawner thread");
        Mutex::new(tx)
    })
}

/// Spawns `cmd` in its own process group, tied to the life of the test process.
pub fn spawn(mut cmd: Command, opts: SpawnOptions) -> io::Result<Child> {
    let identity = if opts.unprivileged {
        unprivileged().cloned()
    } else {
        None
    };
    let parent = std::process::id();
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe syscalls.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setpgid(0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            if let Some(id) = &identity {
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(id.gid) != 0
                    || libc::setuid(id.uid) != 0
                {
                    return Err(io::Error::last_os_error());
                }
            }
            // After setuid: a credential change clears the parent-death signal.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::getppid() as u32 != parent {
                // The test process exited during the spawn (no allocation after fork).
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    let (tx, rx) = mpsc::channel();
    spawner()
        .lock()
        .map_err(|_| io::Error::other("spawner lock poisoned"))?
        .send((cmd, tx))
        .map_err(|_| io::Error::other("the spawner thread is gone"))?;
    rx.recv()
        .map_err(|_| io::Error::other("the spawner thread is gone"))?
}

/// Sends `sig` to the process group led by `pid`.
pub fn signal_group(pid: u32, sig: i32) {
    // SAFETY: kill has no memory-safety preconditions; a stale pid only yields ESRCH.
    unsafe {
        libc::kill(-(pid as i32), sig);
    }
}

/// Stops a process group with SIGSTOP and waits (up to 5 s) until every process in it is stopped:
/// the signal only asks, and a process busy on another CPU or finishing a system call stops a
/// moment later. Returns whether all of them did.
pub fn stop_group(pgid: u32) -> bool {
    signal_group(pgid, libc::SIGSTOP);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        if group_states(pgid)
            .iter()
            .all(|s| matches!(s, 'T' | 't' | 'Z' | 'X'))
        {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// `pid` and its children (from `/proc`). PostgreSQL's backends and helper processes each
/// call `setsid()`, so signalling the postmaster's process group reaches only the postmaster.
fn with_children(pid: u32) -> Vec<u32> {
    let mut out = vec![pid];
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(child) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|f| f.parse::<u32>().ok());
        if ppid == Some(pid) {
            out.push(child);
        }
    }
    out
}

/// Freezes a server and every process it forked (SIGSTOP), as a hung host looks from outside:
/// connections stay open and nothing answers. Returns whether all of them stopped (within 5 s).
pub fn freeze_tree(pid: u32) -> bool {
    let pids = with_children(pid);
    for p in &pids {
        // SAFETY: kill has no memory-safety preconditions; a stale pid only yields ESRCH.
        unsafe {
            libc::kill(*p as i32, libc::SIGSTOP);
        }
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let stopped = pids.iter().all(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit_once(')')
                        .and_then(|(_, r)| r.trim_start().chars().next())
                })
                .is_none_or(|c| matches!(c, 'T' | 't' | 'Z' | 'X'))
        });
        if stopped {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// Lets a frozen server and its processes run again (SIGCONT).
pub fn thaw_tree(pid: u32) {
    for p in with_children(pid) {
        // SAFETY: as in `freeze_tree`.
        unsafe {
            libc::kill(p as i32, libc::SIGCONT);
        }
    }
}

/// The scheduler states (`R`, `S`, `D`, `T`…) of the processes in group `pgid`, from `/proc`.
fn group_states(pgid: u32) -> Vec<char> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut states = Vec::new();
    for e in entries.flatten() {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid pgrp …`; comm may hold spaces and parentheses.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next().and_then(|f| f.chars().next());
        let pgrp = fields.nth(1).and_then(|f| f.parse::<u32>().ok());
        if let (Some(state), Some(g)) = (state, pgrp) {
            if g == pgid {
                states.push(state);
            }
        }
    }
    states
}

/// A spawned child whose whole process group is killed when the guard drops.
#[derive(Debug)]
pub struct ChildGuard {
    child: Option<Child>,
    pid: u32,
}

impl ChildGuard {
    pub fn spawn(cmd: Command, opts: SpawnOptions) -> io::Result<ChildGuard> {
        let child = spawn(cmd, opts)?;
        Ok(ChildGuard {
            pid: child.id(),
            child: Some(child),
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn child_mut(&mut self) -> &mut Child {
        self.child.as_mut().expect("child present until drop")
    }

    /// The exit status if the leader has exited (reaped now), `None` while it runs.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Signals the group, waits up to `grace` for the leader to exit, then kills the group.
    pub fn stop(&mut self, sig: i32, grace: Duration) -> Option<ExitStatus> {
        if let Some(status) = self.try_wait() {
            signal_group(self.pid, libc::SIGKILL);
            return Some(status);
        }
        signal_group(self.pid, sig);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(status) = self.try_wait() {
                // Stragglers in the group (backends) follow their postmaster out.
                signal_group(self.pid, libc::SIGKILL);
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.kill()
    }

    /// Kills the whole group and reaps the leader.
    pub fn kill(&mut self) -> Option<ExitStatus> {
        signal_group(self.pid, libc::SIGKILL);
        self.child.as_mut().and_then(|c| c.wait().ok())
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.kill();
        }
    }
}

/// Waits for `child` to exit without blocking a tokio worker: a pidfd becomes readable when the
/// process exits; where pidfds are unavailable it polls.
pub async fn wait_child(child: &mut Child) -> io::Result<ExitStatus> {
    use std::os::fd::{FromRawFd, OwnedFd};
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, child.id() as libc::pid_t, 0) };
    if fd >= 0 {
        // SAFETY: the kernel just returned this fd to us; nothing else owns it.
        let owned = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        // SAFETY: the AsyncFd owns the OwnedFd, which stays open and unchanged until it drops.
        let registered = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(owned, tokio::io::Interest::READABLE)
        };
        if let Ok(async_fd) = registered {
            let _ = async_fd.readable().await?;
            return child.wait();
        }
    }
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether a process with this pid exists.
pub fn alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks for existence and permission.
    unsafe { libc::kill(pid as i32, 0) == 0 || *libc::__errno_location() == libc::EPERM }
}
