//! The apply journal: an append-only JSON-lines file, fsynced record by
//! record, that says what an apply started, finished, failed and undid.
//! A crashed or killed apply is resumed from it (`apply --resume`): finished
//! steps are not redone, and the plan comes from the journal, not from a new
//! look at the (half-changed) world.
//!
//! Each line is sealed: `{"v":2,"seq":N,"record":{…},"sum":"…"}`, where
//! `sum` is the SHA-256 of the previous line's sum and this line up to its
//! sum. A changed, removed or reordered record breaks the chain, and a
//! journal that fails the check is refused with the line and what to do —
//! never trusted in part, since what it lost may be the record that a
//! rollback had begun. Only a torn last line (a crash in the middle of a
//! write: no newline yet) is dropped, since its record was never
//! acknowledged. The file is 0600 in 0700 directories (`private`).
//!
//! Every record is written with each environment value put back as its
//! `${VAR}` reference (the plan, step facts, failures, rollback reasons),
//! so the journal holds no secret, and resuming needs the same variables
//! set: a reopened journal reads the references back as values. The seal
//! covers the line as written, references and all.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::outcome::Outcome;
use crate::plan::Plan;
use crate::redact::Redactor;

/// The journal format this pgplan writes and reads.
pub const FORMAT_VERSION: u32 = 3;

/// What the first line's sum chains from.
const GENESIS: &str = "pgplan-journal-3";

/// One line of the journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Record {
    /// The apply began with this plan (environment values as `${VAR}`).
    Begin {
        run: String,
        spec_file: String,
        spec_text: String,
        environment: Option<String>,
        plan: Value,
    },
    Started {
        step: String,
    },
    /// A step finished; its outcome is what its compensation or a later step needs.
    Done {
        step: String,
        outcome: Outcome,
    },
    Failed {
        step: String,
        error: String,
    },
    RollbackStarted {
        reason: String,
    },
    Compensated {
        step: String,
        detail: String,
    },
    NotCompensated {
        step: String,
        reason: String,
    },
    /// An interrupt (SIGINT, SIGTERM) stopped the apply; `running` are the
    /// steps it did not let finish (they run again on resume).
    Interrupted {
        signal: String,
        running: Vec<String>,
    },
    /// The rollback finished: the original topology is back.
    RolledBack,
    /// Every step finished.
    Finished,
}

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum JournalError {
    #[error("cannot write the journal {path}: {message}")]
    #[diagnostic(
        code(pgplan::journal::write),
        help("the state directory must be writable (--state-dir)")
    )]
    Write { path: String, message: String },
    #[error("cannot read the journal {path}: {message}")]
    #[diagnostic(code(pgplan::journal::read))]
    Read { path: String, message: String },
    #[error("the journal {path} is damaged at line {line}: {problem}. It cannot be trusted, so nothing was changed")]
    #[diagnostic(code(pgplan::journal::damaged), help("{help}"))]
    Damaged {
        path: String,
        line: usize,
        problem: String,
        help: String,
    },
    #[error("the journal {path} is in format {found}; this pgplan reads format {FORMAT_VERSION}")]
    #[diagnostic(
        code(pgplan::journal::version),
        help("finish it or roll it back with the pgplan that wrote it (`pgplan apply --resume`), or see what it left with `pgplan status` and docs/recovery.md")
    )]
    Version { path: String, found: String },
    #[error("an interrupted apply of {placements} is recorded in {path}")]
    #[diagnostic(
        code(pgplan::journal::unfinished),
        help("continue it with `pgplan apply --resume` (same spec, same environment variables); pgplan will not start a new apply over a half-finished one")
    )]
    Unfinished { placements: String, path: String },
    #[error("there is no interrupted apply of {placements} to resume in {dir}")]
    #[diagnostic(
        code(pgplan::journal::nothing_to_resume),
        help("run `pgplan apply` without --resume")
    )]
    NothingToResume { placements: String, dir: String },
    #[error("the journal's copy in {secret} was changed or removed by another writer: this apply no longer holds the placement and stops")]
    #[diagnostic(
        code(pgplan::journal::fenced),
        help("another pgplan took the placement over (see its Lease: `pgplan plan` names the holder); let that one finish. Nothing more is done by this one")
    )]
    Fenced { secret: String },
    #[error("cannot keep the journal in {secret}")]
    #[diagnostic(
        code(pgplan::journal::remote),
        help("the apply's identity needs get, create and patch on secrets in that namespace; or keep the journal on this machine with `--state local`")
    )]
    Remote {
        secret: String,
        #[diagnostic_source]
        #[source]
        cause: ClusterCause,
    },
    #[error("the journal ({bytes} bytes) no longer fits in {secret} (a Secret holds 1 MiB)")]
    #[diagnostic(
        code(pgplan::journal::too_large),
        help("apply fewer placements at once, or keep the journal on this machine with `--state local`")
    )]
    TooLarge { secret: String, bytes: usize },
    #[error("the journal here ({path}) and its copy in {secret} disagree: neither is the other with records added")]
    #[diagnostic(
        code(pgplan::journal::diverged),
        help("two machines wrote this apply's journal. Keep the one that went further (move the other aside) and `pgplan apply --resume` again; docs/recovery.md")
    )]
    Diverged { path: String, secret: String },
    #[error("the journal needs the environment variable `{0}` to resume")]
    #[diagnostic(
        code(pgplan::journal::env),
        help("export it with the value it had when the apply started")
    )]
    MissingVariable(String),
}

/// A cluster error as the cause of a journal error, boxed (it is large),
/// keeping its own code and help.
#[derive(Debug)]
pub struct ClusterCause(pub Box<crate::cluster::ClusterError>);

impl std::fmt::Display for ClusterCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for ClusterCause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&*self.0)
    }
}

impl miette::Diagnostic for ClusterCause {
    fn code<'a>(&'a self) -> Option<Box<dyn std::fmt::Display + 'a>> {
        self.0.code()
    }

    fn help<'a>(&'a self) -> Option<Box<dyn std::fmt::Display + 'a>> {
        self.0.help()
    }
}

/// The state of an apply as recorded.
#[derive(Debug, Clone, Default)]
pub struct Replay {
    pub begin: Option<(String, String, String, Option<String>, Value)>,
    pub done: BTreeMap<String, Outcome>,
    pub started: Vec<String>,
    pub failed: Vec<(String, String)>,
    /// Why a rollback began, when one did: a resumed apply then finishes
    /// the rollback and never goes forward again.
    pub rollback: Option<String>,
    /// Steps whose compensation is recorded as done.
    pub compensated: BTreeSet<String>,
    pub rolled_back: bool,
    pub finished: bool,
    /// Where the next record goes.
    chain: Chain,
}

impl Replay {
    /// True when the journal records an apply that neither finished nor
    /// rolled back.
    pub fn unfinished(&self) -> bool {
        self.begin.is_some() && !self.finished && !self.rolled_back
    }
}

/// The end of the verified part of a journal.
#[derive(Debug, Clone)]
struct Chain {
    /// Records read.
    seq: u64,
    /// The last record's sum.
    sum: String,
    /// Bytes up to and including the last complete line.
    len: u64,
}

impl Default for Chain {
    fn default() -> Self {
        Chain {
            seq: 0,
            sum: GENESIS.into(),
            len: 0,
        }
    }
}

/// An open journal.
pub struct Journal {
    path: PathBuf,
    file: File,
    chain: Chain,
    /// Every record passes it on its way to the file.
    redactor: Redactor,
    /// Records written here and not yet copied to the cluster (`seq`, line).
    pending: Vec<(u64, String)>,
}

/// The journal file of a set of placements in a state directory.
pub fn path_for(state_dir: &Path, placements: &[&str]) -> PathBuf {
    let mut names: Vec<&str> = placements.to_vec();
    names.sort();
    state_dir
        .join("journal")
        .join(format!("{}.jsonl", names.join("+")))
}

impl Journal {
    /// Start a new journal; refuses when an unfinished (or unreadable) one exists.
    /// `expansions` are the spec's `(VAR, value)` pairs, written as `${VAR}`.
    pub fn create(
        path: &Path,
        placements: &str,
        expansions: &[(String, String)],
    ) -> Result<Journal, JournalError> {
        if path.exists() {
            let replay = read(path)?;
            if !replay.finished && !replay.rolled_back {
                return Err(JournalError::Unfinished {
                    placements: placements.into(),
                    path: path.display().to_string(),
                });
            }
            archive(path)?;
        }
        if let Some(dir) = path.parent() {
            crate::private::create_dir_all(dir).map_err(|e| write_err(path, e))?;
        }
        let file = crate::private::create_new(path).map_err(|e| write_err(path, e))?;
        sync_dir(path);
        Ok(Journal {
            path: path.to_path_buf(),
            file,
            chain: Chain::default(),
            redactor: Redactor::referencing(expansions),
            pending: Vec::new(),
        })
    }

    /// Reopen an unfinished journal to continue it. A torn last line is
    /// cut off first, so that the next record starts a line of its own. The
    /// replay has the `${VAR}` references of `expansions` read back as values.
    pub fn reopen(
        path: &Path,
        placements: &str,
        expansions: &[(String, String)],
    ) -> Result<(Journal, Replay), JournalError> {
        let replay = if path.exists() {
            read_resolved(path, expansions)?
        } else {
            Replay::default()
        };
        if !replay.unfinished() {
            return Err(JournalError::NothingToResume {
                placements: placements.into(),
                dir: path
                    .parent()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
            });
        }
        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| write_err(path, e))?;
        let len = file.metadata().map_err(|e| write_err(path, e))?.len();
        if len > replay.chain.len {
            file.set_len(replay.chain.len)
                .and_then(|()| file.sync_data())
                .map_err(|e| write_err(path, e))?;
        }
        Ok((
            Journal {
                path: path.to_path_buf(),
                file,
                chain: replay.chain.clone(),
                redactor: Redactor::referencing(expansions),
                pending: Vec::new(),
            },
            replay,
        ))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Append a record and make it durable before returning. This is the
    /// one place records are written: each goes through the redactor.
    pub fn record(&mut self, r: &Record) -> Result<(), JournalError> {
        let seq = self.chain.seq + 1;
        let mut v = serde_json::to_value(r).map_err(|e| write_err(&self.path, e))?;
        self.redactor.strings_in_place(&mut v);
        let r: Record = serde_json::from_value(v).map_err(|e| write_err(&self.path, e))?;
        let (mut line, sum) =
            seal(&self.chain.sum, seq, &r).map_err(|e| write_err(&self.path, e))?;
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .map_err(|e| write_err(&self.path, e))?;
        self.file
            .sync_data()
            .map_err(|e| write_err(&self.path, e))?;
        self.chain = Chain {
            seq,
            sum,
            len: self.chain.len + line.len() as u64,
        };
        self.pending.push((seq, line));
        Ok(())
    }

    /// The records written since the last call (`seq`, line with its
    /// newline), for the journal's copy in the cluster.
    pub fn take_pending(&mut self) -> Vec<(u64, String)> {
        std::mem::take(&mut self.pending)
    }

    /// Forgets what [`Journal::take_pending`] would return (the copy was
    /// made whole from the file).
    pub fn clear_pending(&mut self) {
        self.pending.clear();
    }

    /// Move a finished journal out of the way, into `history/`.
    pub fn close(self) -> Result<PathBuf, JournalError> {
        archive(&self.path)
    }
}

/// One line as written, before its sum.
#[derive(Serialize)]
struct Sealed<'a> {
    v: u32,
    seq: u64,
    record: &'a Record,
}

/// One line as read.
#[derive(Deserialize)]
struct Unsealed {
    v: u32,
    seq: u64,
    record: Record,
}

/// The sum of a line: the previous line's sum and this one's text up to its own.
fn digest(prev: &str, body: &str) -> String {
    let mut h = Sha256::new();
    h.update(prev.as_bytes());
    h.update(b"\n");
    h.update(body.as_bytes());
    hex::encode(h.finalize())
}

/// The line for a record (without its newline), and its sum.
fn seal(prev: &str, seq: u64, r: &Record) -> Result<(String, String), serde_json::Error> {
    let text = serde_json::to_string(&Sealed {
        v: FORMAT_VERSION,
        seq,
        record: r,
    })?;
    // An object always ends with its closing brace; the sum goes before it.
    let body = text.strip_suffix('}').unwrap_or(&text);
    let sum = digest(prev, body);
    Ok((format!("{body},\"sum\":\"{sum}\"}}"), sum))
}

/// Why a line is not the record it should be.
enum Problem {
    /// Not a line pgplan wrote (cut, overwritten, edited by hand).
    Unreadable,
    /// A record of the first format (no checksums).
    OldFormat(String),
    Version(u32),
    /// Another record than the next one: records were removed or reordered.
    Sequence(u64),
    /// The content or the chain does not match its sum.
    Sum,
}

/// Check one line against the chain; the record and its sum.
fn unseal(line: &str, prev: &str, seq: u64) -> Result<(Record, String), Problem> {
    const MARK: &str = ",\"sum\":\"";
    let Some(at) = line.rfind(MARK) else {
        // A first-format journal's lines are bare records.
        if let Ok(v) = serde_json::from_str::<Value>(line) {
            if v.get("type").is_some() && v.get("v").is_none() {
                return Err(Problem::OldFormat("1".into()));
            }
        }
        return Err(Problem::Unreadable);
    };
    let (body, tail) = line.split_at(at);
    let sum = tail[MARK.len()..]
        .strip_suffix("\"}")
        .ok_or(Problem::Unreadable)?;
    let parsed: Unsealed = serde_json::from_str(&format!("{body}}}")).map_err(|_| {
        match serde_json::from_str::<Value>(&format!("{body}}}")) {
            Ok(v)
                if v["v"]
                    .as_u64()
                    .is_some_and(|v| v != u64::from(FORMAT_VERSION)) =>
            {
                Problem::Version(v["v"].as_u64().unwrap_or_default() as u32)
            }
            _ => Problem::Unreadable,
        }
    })?;
    if parsed.v != FORMAT_VERSION {
        return Err(Problem::Version(parsed.v));
    }
    if parsed.seq != seq {
        return Err(Problem::Sequence(parsed.seq));
    }
    if digest(prev, body) != sum {
        return Err(Problem::Sum);
    }
    Ok((parsed.record, sum.to_string()))
}

/// The record a damaged line would have been, when it still parses
/// (whatever its sum): only to say what the damage may hide.
fn loosely(line: &str) -> Option<Record> {
    let body = line
        .rfind(",\"sum\":\"")
        .map_or(line.to_string(), |at| format!("{}}}", &line[..at]));
    serde_json::from_str::<Unsealed>(&body)
        .ok()
        .map(|u| u.record)
}

fn archive(path: &Path) -> Result<PathBuf, JournalError> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let name = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("journal");
    let dir = path
        .parent()
        .and_then(Path::parent)
        .unwrap_or(Path::new("."))
        .join("history");
    crate::private::create_dir_all(&dir).map_err(|e| write_err(&dir, e))?;
    let to = dir.join(format!("{name}-{stamp}.jsonl"));
    std::fs::rename(path, &to).map_err(|e| write_err(path, e))?;
    sync_dir(path);
    Ok(to)
}

fn sync_dir(path: &Path) {
    if let Some(dir) = path.parent() {
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
}

pub(super) fn write_err(path: &Path, e: impl std::fmt::Display) -> JournalError {
    JournalError::Write {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// Read and check a journal. A torn last line (a crash mid-write) is
/// ignored: the record it would have been was never acknowledged. Any
/// other line that fails the check makes the whole journal refused.
/// References stay as written (see [`Journal::reopen`]).
pub fn read(path: &Path) -> Result<Replay, JournalError> {
    read_resolved(path, &[])
}

/// Read and check a journal, each `${VAR}` of `expansions` read back as its value.
fn read_resolved(path: &Path, expansions: &[(String, String)]) -> Result<Replay, JournalError> {
    let values: Vec<(String, &str)> = expansions
        .iter()
        .map(|(var, value)| (format!("${{{var}}}"), value.as_str()))
        .collect();
    let resolve = |s: &str| {
        let mut out = s.to_string();
        for (placeholder, value) in &values {
            if out.contains(placeholder.as_str()) {
                out = out.replace(placeholder.as_str(), value);
            }
        }
        out
    };
    let read_err = |e: std::io::Error| JournalError::Read {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(read_err)?;
    let mut replay = Replay::default();
    let mut offset = 0usize;
    let mut number = 0usize;
    // The first damaged line, and what the lines around it say.
    let mut damage: Option<(usize, Problem)> = None;
    let mut hints = Hints::default();
    while offset < bytes.len() {
        let Some(end) = bytes[offset..].iter().position(|&b| b == b'\n') else {
            // No newline: the write of this record never completed.
            break;
        };
        number += 1;
        let raw = &bytes[offset..offset + end];
        offset += end + 1;
        let line = String::from_utf8_lossy(raw);
        if damage.is_some() {
            if let Some(r) = loosely(&line) {
                hints.see(number, &r, &replay);
            }
            continue;
        }
        match unseal(&line, &replay.chain.sum, replay.chain.seq + 1) {
            Ok((r, sum)) => {
                hints.see(number, &r, &replay);
                replay.chain = Chain {
                    seq: replay.chain.seq + 1,
                    sum,
                    len: offset as u64,
                };
                let r = if values.is_empty() {
                    r
                } else {
                    resolved(r, &resolve)
                };
                apply_record(&mut replay, r);
            }
            Err(Problem::OldFormat(found)) if number == 1 => {
                return Err(JournalError::Version {
                    path: path.display().to_string(),
                    found,
                })
            }
            // A journal another pgplan wrote: refused whole, naming both formats.
            Err(Problem::Version(v)) if number == 1 => {
                return Err(JournalError::Version {
                    path: path.display().to_string(),
                    found: v.to_string(),
                })
            }
            Err(p) => damage = Some((number, p)),
        }
    }
    let Some((line, problem)) = damage else {
        return Ok(replay);
    };
    Err(damaged(path, line, problem, &hints))
}

/// A record with `f` applied to every string in it.
fn resolved(r: Record, f: &dyn Fn(&str) -> String) -> Record {
    let Ok(mut v) = serde_json::to_value(&r) else {
        return r;
    };
    map_strings(&mut v, f);
    serde_json::from_value(v).unwrap_or(r)
}

fn apply_record(replay: &mut Replay, r: Record) {
    match r {
        Record::Begin {
            run,
            spec_file,
            spec_text,
            environment,
            plan,
        } => replay.begin = Some((run, spec_file, spec_text, environment, plan)),
        Record::Started { step } => replay.started.push(step),
        Record::Done { step, outcome } => {
            replay.done.insert(step, outcome);
        }
        Record::Failed { step, error } => replay.failed.push((step, error)),
        Record::RolledBack => replay.rolled_back = true,
        Record::Finished => replay.finished = true,
        Record::RollbackStarted { reason } => {
            replay.rollback.get_or_insert(reason);
        }
        Record::Compensated { step, .. } => {
            replay.compensated.insert(step);
        }
        // Kept on purpose, or failed: looked at again by a resumed rollback.
        Record::NotCompensated { .. } => {}
        // The steps it stopped were started and not done: they run again.
        Record::Interrupted { .. } => {}
    }
}

/// What the readable lines of a damaged journal say about how far the
/// apply got: the advice depends on it.
#[derive(Default)]
struct Hints {
    /// The first line recording that a rollback began.
    rollback: Option<usize>,
    /// The first destructive step started, and its line.
    destructive: Option<(usize, String)>,
    /// The lock ID of the run (from its first record).
    run: Option<String>,
}

impl Hints {
    fn see(&mut self, line: usize, r: &Record, replay: &Replay) {
        match r {
            Record::Begin { run, .. } => {
                self.run.get_or_insert_with(|| run.clone());
            }
            // A compensation recorded (even on a line after the damage)
            // means a rollback had begun, whatever hid its first record.
            Record::RollbackStarted { .. }
            | Record::Compensated { .. }
            | Record::NotCompensated { .. }
            | Record::RolledBack => {
                self.rollback.get_or_insert(line);
            }
            Record::Started { step } if self.destructive.is_none() => {
                let destructive = replay.begin.as_ref().is_some_and(|(.., plan)| {
                    plan["steps"].as_array().into_iter().flatten().any(|s| {
                        s["address"].as_str() == Some(step.as_str())
                            && s["risk"].as_str() == Some("destructive")
                    })
                });
                if destructive {
                    self.destructive = Some((line, step.clone()));
                }
            }
            _ => {}
        }
    }
}

fn damaged(path: &Path, line: usize, problem: Problem, hints: &Hints) -> JournalError {
    let problem = match problem {
        Problem::Unreadable => "the line is not a journal record pgplan wrote (cut, overwritten or edited)".to_string(),
        Problem::OldFormat(v) => format!("the line is a record of journal format {v}, among format {FORMAT_VERSION} records"),
        Problem::Version(v) => format!("the line is in journal format {v}; this pgplan reads format {FORMAT_VERSION}"),
        Problem::Sequence(seq) => format!("the line holds record {seq} where record {line} belongs: records were removed or reordered"),
        Problem::Sum => "its checksum does not match: the record was changed, or one before it was removed or reordered".to_string(),
    };
    let p = path.display();
    let unlock = hints
        .run
        .as_ref()
        .map(|id| format!("`pgplan force-unlock {id}`"))
        .unwrap_or_else(|| "`pgplan force-unlock ID` (the ID `pgplan status` names)".into());
    let mut help = String::new();
    if let Some(at) = hints.rollback {
        help.push_str(&format!(
            "A rollback had begun (line {at}): finish the rollback, never the move — pgplan will not go forward from this journal. "
        ));
    } else if let Some((at, step)) = &hints.destructive {
        help.push_str(&format!(
            "The destructive step {step} had started (line {at}): the source may be gone; do not start a new apply. "
        ));
    } else if line == 1 {
        help.push_str("Not even the plan it applied can be read. ");
    }
    help.push_str(&format!(
        "`pgplan status` (same -f and --env) shows, from the cluster alone, what the apply left where: its lock, stopped consumers, the volumes, what pgplan created, the backups. docs/recovery.md says how to finish or undo it by hand; then move the journal aside (`mv {p} {p}.damaged`) and release the lock with {unlock}"
    ));
    JournalError::Damaged {
        path: p.to_string(),
        line,
        problem,
        help,
    }
}

/// The plan as stored: each environment value replaced by `${VAR}`.
pub fn store_plan(plan: &Plan, expansions: &[(String, String)]) -> Value {
    let mut v = serde_json::to_value(plan).unwrap_or(Value::Null);
    let mut pairs: Vec<&(String, String)> = expansions
        .iter()
        .filter(|(_, val)| !val.is_empty())
        .collect();
    pairs.sort_by_key(|p| std::cmp::Reverse(p.1.len()));
    map_strings(&mut v, &|s| {
        let mut out = s.to_string();
        for (var, val) in &pairs {
            if out.contains(val.as_str()) {
                out = out.replace(val.as_str(), &format!("${{{var}}}"));
            }
        }
        out
    });
    v
}

/// The plan back from the journal, with `${VAR}` resolved again.
pub fn load_plan(
    stored: &Value,
    vars: &[String],
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Plan, JournalError> {
    let mut values = Vec::new();
    for var in vars {
        let v = lookup(var).ok_or_else(|| JournalError::MissingVariable(var.clone()))?;
        values.push((format!("${{{var}}}"), v));
    }
    let mut v = stored.clone();
    map_strings(&mut v, &|s| {
        let mut out = s.to_string();
        for (placeholder, val) in &values {
            if out.contains(placeholder.as_str()) {
                out = out.replace(placeholder.as_str(), val);
            }
        }
        out
    });
    serde_json::from_value(v).map_err(|e| JournalError::Read {
        path: "journal plan".into(),
        message: e.to_string(),
    })
}

fn map_strings(v: &mut Value, f: &dyn Fn(&str) -> String) {
    match v {
        Value::String(s) => *s = f(s),
        Value::Array(a) => a.iter_mut().for_each(|x| map_strings(x, f)),
        Value::Object(m) => m.values_mut().for_each(|x| map_strings(x, f)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_a_torn_tail_and_resume_is_refused_when_finished() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_for(dir.path(), &["b", "a"]);
        assert!(path.ends_with("journal/a+b.jsonl"));
        let mut j = Journal::create(&path, "a+b", &[]).unwrap();
        j.record(&Record::Started { step: "s1".into() }).unwrap();
        j.record(&Record::Done {
            step: "s1".into(),
            outcome: Outcome::Scaled { replicas_before: 2 },
        })
        .unwrap();
        drop(j);
        // A crash mid-write leaves half a line.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"type\":\"sta")
            .unwrap();
        let r = read(&path).unwrap();
        assert_eq!(r.done["s1"], Outcome::Scaled { replicas_before: 2 });
        assert!(matches!(
            Journal::create(&path, "a+b", &[]),
            Err(JournalError::Unfinished { .. })
        ));
    }

    #[test]
    fn a_torn_tail_is_cut_before_appending_and_any_other_damage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_for(dir.path(), &["a"]);
        let mut j = Journal::create(&path, "a", &[]).unwrap();
        j.record(&Record::Begin {
            run: "h:1:x".into(),
            spec_file: "pgplan.yaml".into(),
            spec_text: String::new(),
            environment: None,
            plan: serde_json::json!({}),
        })
        .unwrap();
        j.record(&Record::Started { step: "s1".into() }).unwrap();
        drop(j);
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"v\":2,\"seq\":3,\"rec")
            .unwrap();
        let (mut j, r) = Journal::reopen(&path, "a", &[]).unwrap();
        assert_eq!(r.started, ["s1"]);
        j.record(&Record::Done {
            step: "s1".into(),
            outcome: Outcome::Deleted { existed: true },
        })
        .unwrap();
        drop(j);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 3, "{text}");
        assert!(read(&path).unwrap().done.contains_key("s1"));

        // Two records swapped: the sequence says so.
        let lines: Vec<&str> = text.lines().collect();
        std::fs::write(&path, format!("{}\n{}\n{}\n", lines[0], lines[2], lines[1])).unwrap();
        match read(&path) {
            Err(JournalError::Damaged {
                line: 2, problem, ..
            }) => {
                assert!(problem.contains("removed or reordered"), "{problem}")
            }
            other => panic!("{other:?}"),
        }
        // A first-format journal is named as such.
        std::fs::write(&path, "{\"type\":\"started\",\"step\":\"s1\"}\n").unwrap();
        assert!(matches!(read(&path), Err(JournalError::Version { .. })));
    }

    #[test]
    fn an_interrupted_rollback_is_remembered_with_what_it_undid() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_for(dir.path(), &["a"]);
        let mut j = Journal::create(&path, "a", &[]).unwrap();
        for r in [
            Record::Begin {
                run: "r".into(),
                spec_file: "pgplan.yaml".into(),
                spec_text: String::new(),
                environment: None,
                plan: serde_json::json!({}),
            },
            Record::Done {
                step: "s1".into(),
                outcome: Outcome::Deleted { existed: true },
            },
            Record::Done {
                step: "s2".into(),
                outcome: Outcome::Deleted { existed: true },
            },
            Record::Failed {
                step: "s3".into(),
                error: "boom".into(),
            },
            Record::RollbackStarted {
                reason: "boom".into(),
            },
            Record::Compensated {
                step: "s3".into(),
                detail: "deleted".into(),
            },
            Record::NotCompensated {
                step: "s2".into(),
                reason: "kept".into(),
            },
            // A resumed rollback records its start again; the first reason stays.
            Record::RollbackStarted {
                reason: "again".into(),
            },
        ] {
            j.record(&r).unwrap();
        }
        drop(j);
        let (_, r) = Journal::reopen(&path, "a", &[]).unwrap();
        assert_eq!(r.rollback.as_deref(), Some("boom"));
        assert_eq!(r.compensated, BTreeSet::from(["s3".to_string()]));
        assert_eq!(r.failed, vec![("s3".to_string(), "boom".to_string())]);
        assert_eq!(r.done.len(), 2);
    }

    #[test]
    fn every_record_holds_references_and_a_reopened_journal_the_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_for(dir.path(), &["a"]);
        let env = [("NS".to_string(), "team-s3cr3t".to_string())];
        let step = "k8s/team-s3cr3t/Deployment/postgres".to_string();
        let mut j = Journal::create(&path, "a", &env).unwrap();
        for r in [
            Record::Begin {
                run: "r".into(),
                spec_file: "pgplan.yaml".into(),
                spec_text: "namespace: ${NS}".into(),
                environment: None,
                plan: serde_json::json!({}),
            },
            Record::Started { step: step.clone() },
            Record::Done {
                step: step.clone(),
                outcome: Outcome::VolumeProtected {
                    from: "Delete-in-team-s3cr3t".into(),
                },
            },
            Record::Failed {
                step: step.clone(),
                error: "probe returned team-s3cr3t".into(),
            },
            Record::RollbackStarted {
                reason: "probe returned team-s3cr3t".into(),
            },
            Record::Compensated {
                step: step.clone(),
                detail: "recreated in team-s3cr3t".into(),
            },
        ] {
            j.record(&r).unwrap();
        }
        drop(j);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("s3cr3t"), "{text}");
        assert_eq!(text.lines().count(), 6);
        assert!(text.contains("k8s/${NS}/Deployment/postgres"), "{text}");
        let (_, r) = Journal::reopen(&path, "a", &env).unwrap();
        assert_eq!(
            r.done[&step],
            Outcome::VolumeProtected {
                from: "Delete-in-team-s3cr3t".into()
            }
        );
        assert_eq!(r.started, vec![step.clone()]);
        assert_eq!(r.rollback.as_deref(), Some("probe returned team-s3cr3t"));
        assert!(r.compensated.contains(&step));
    }

    #[test]
    fn stored_plans_hold_references_not_values() {
        let plan = Plan {
            placements: Vec::new(),
            steps: Vec::new(),
            fingerprints: [(
                "k8s/x".to_string(),
                "image:registry.example/pg:s3cr3t-tag".to_string(),
            )]
            .into(),
            warnings: Vec::new(),
            unfinished: Vec::new(),
            findings: Vec::new(),
        };
        let stored = store_plan(&plan, &[("TAG".into(), "s3cr3t-tag".into())]);
        assert!(!stored.to_string().contains("s3cr3t"));
        let back = load_plan(&stored, &["TAG".into()], &|v| {
            (v == "TAG").then(|| "s3cr3t-tag".to_string())
        })
        .unwrap();
        assert_eq!(back, plan);
        assert!(matches!(
            load_plan(&stored, &["TAG".into()], &|_| None),
            Err(JournalError::MissingVariable(_))
        ));
    }

    #[test]
    fn a_journal_of_the_previous_format_is_refused_naming_both_formats() {
        // Written by the pgplan of journal format 2 (before typed addresses).
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("healthcare.jsonl");
        std::fs::write(&path, include_bytes!("testdata/journal-v2.jsonl")).unwrap();
        let err = read(&path).unwrap_err();
        assert!(
            matches!(&err, JournalError::Version { found, .. } if found == "2"),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(
            text.contains("format 2") && text.contains("reads format 3"),
            "{text}"
        );
        let code = miette::Diagnostic::code(&err).map(|c| c.to_string());
        assert_eq!(code.as_deref(), Some("pgplan::journal::version"));
        let help = miette::Diagnostic::help(&err)
            .map(|h| h.to_string())
            .unwrap_or_default();
        assert!(
            help.contains("the pgplan that wrote it")
                && help.contains("pgplan status")
                && help.contains("docs/recovery.md"),
            "{help}"
        );
        // Resuming it is refused the same way, and the file is left as it was.
        assert!(matches!(
            Journal::reopen(&path, "healthcare", &[]),
            Err(JournalError::Version { .. })
        ));
        assert_eq!(
            std::fs::read(&path).unwrap(),
            include_bytes!("testdata/journal-v2.jsonl")
        );
    }
}
