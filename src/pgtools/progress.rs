//! Progress of the long data-path operations, as plain events: bytes moved
//! for archive transfers, tables done for checksums. The CLI turns them into
//! bars on a terminal or JSON events with `--json`; this module only says
//! what happened and throttles byte events so a callback is cheap to call.

use serde::Serialize;

/// Which part of an operation an event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// `pg_dump` output arriving in the backup directory.
    Dump,
    /// The archive read back from disk to check its sha256.
    ReadBack,
    /// The archive streamed into a pod's filesystem before `pg_restore`.
    Upload,
    /// The archive streamed to `pg_restore --list` in a pod, to check it reads.
    List,
    /// Row counts and checksums of the source, in the dump's snapshot.
    SourceChecksums,
    /// Row counts and checksums of the target, after the restore.
    TargetChecksums,
}

impl Phase {
    /// What moved, for messages: `3 MiB dumped`.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Dump => "dumped",
            Phase::ReadBack => "read back",
            Phase::Upload => "sent into the pod",
            Phase::List => "listed",
            Phase::SourceChecksums => "source checksums",
            Phase::TargetChecksums => "target checksums",
        }
    }
}

/// One progress event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(
    tag = "kind",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum Progress {
    /// Bytes moved so far; `total` when it is known in advance.
    Bytes {
        phase: Phase,
        done: u64,
        total: Option<u64>,
    },
    /// Tables measured so far, and the one just finished.
    Tables {
        phase: Phase,
        done: u64,
        total: u64,
        table: String,
    },
}

/// A progress callback. It is called from the task doing the work, so it
/// should only record or print.
pub type ProgressFn<'a> = &'a (dyn Fn(&Progress) + Send + Sync);

/// A callback that ignores every event.
pub fn no_progress(_: &Progress) {}

/// Byte events at most every this many bytes (plus the last one).
const BYTES_STEP: u64 = 1 << 20;

/// Counts bytes and reports them every [`BYTES_STEP`].
pub(crate) struct ByteMeter<'a> {
    phase: Phase,
    total: Option<u64>,
    done: u64,
    reported: u64,
    callback: ProgressFn<'a>,
}

impl<'a> ByteMeter<'a> {
    pub(crate) fn new(phase: Phase, total: Option<u64>, callback: ProgressFn<'a>) -> Self {
        ByteMeter {
            phase,
            total,
            done: 0,
            reported: 0,
            callback,
        }
    }

    pub(crate) fn add(&mut self, n: u64) {
        self.done += n;
        if self.done - self.reported >= BYTES_STEP {
            self.report();
        }
    }

    pub(crate) fn done(&self) -> u64 {
        self.done
    }

    /// Reports the count now (the final event of a transfer).
    pub(crate) fn finish(&mut self) {
        self.report();
    }

    fn report(&mut self) {
        self.reported = self.done;
        (self.callback)(&Progress::Bytes {
            phase: self.phase,
            done: self.done,
            total: self.total,
        });
    }
}
