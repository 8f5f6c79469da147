//! What the benches share: running a process to completion and reading its
//! peak memory (wait4's rusage), and printing bytes as MiB.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn mb(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// A finished process: wall time, peak RSS (its own and its waited-for
/// children's, bytes), and what it printed (stdout only where the caller
/// piped it).
pub struct Ran {
    pub wall: Duration,
    pub peak: u64,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `cmd` to completion with its stderr captured, and its stdout too
/// when the caller made it a pipe. Panics with its output if it fails.
// Reaped with wait4 (to read its rusage), not Child::wait.
#[allow(clippy::zombie_processes)]
pub fn run(mut cmd: Command, what: &str) -> Ran {
    cmd.stderr(Stdio::piped());
    let t = Instant::now();
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    let mut err_pipe = child.stderr.take().expect("stderr");
    // Read on a thread: a child that fills one pipe while the other is
    // being drained would otherwise block.
    let errs = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err_pipe.read_to_string(&mut s);
        s
    });
    let mut stdout = String::new();
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut stdout);
    }
    let (status, usage) = reap(&child);
    let wall = t.elapsed();
    let stderr = errs.join().unwrap_or_default();
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{what} failed:\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    Ran {
        wall,
        peak: usage.ru_maxrss as u64 * 1024,
        stdout,
        stderr,
    }
}

/// Waits for `child` with wait4: its exit status and its resource usage
/// (peak RSS among it and its own waited-for children).
pub fn reap(child: &Child) -> (libc::c_int, libc::rusage) {
    let mut status = 0;
    // SAFETY: rusage is plain data, zero-initialised; the pid is our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = child.id() as libc::pid_t;
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(rc, pid, "wait4");
    (status, usage)
}
