//! The apply journal: an append-only JSON-lines file, fsynced record by
//! record, that says what an apply started, finished, failed and undid.
//! A crashed or killed apply is resumed from it (`apply --resume`): finished
//! steps are not redone, and the plan comes from the journal, not from a new
//! look at the (half-changed) world.
//!
//! Every record is written with each environment value put back as its
//! `${VAR}` reference (the plan, step facts, failures, rollback reasons),
//! so the journal holds no secret, and resuming needs the same variables
//! set: a reopened journal reads the references back as values.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::plan::Plan;
use crate::redact::Redactor;

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
    /// A step finished; `facts` is what its compensation or a later step needs.
    Done {
        step: String,
        facts: Value,
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
    #[error("the journal needs the environment variable `{0}` to resume")]
    #[diagnostic(
        code(pgplan::journal::env),
        help("export it with the value it had when the apply started")
    )]
    MissingVariable(String),
}

/// The state of an apply as recorded.
#[derive(Debug, Clone, Default)]
pub struct Replay {
    pub begin: Option<(String, String, String, Option<String>, Value)>,
    pub done: BTreeMap<String, Value>,
    pub started: Vec<String>,
    pub failed: Vec<(String, String)>,
    /// Why a rollback began, when one did: a resumed apply then finishes
    /// the rollback and never goes forward again.
    pub rollback: Option<String>,
    /// Steps whose compensation is recorded as done.
    pub compensated: BTreeSet<String>,
    pub rolled_back: bool,
    pub finished: bool,
}

/// An open journal.
pub struct Journal {
    path: PathBuf,
    file: File,
    /// Every record passes it on its way to the file.
    redactor: Redactor,
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
    /// Start a new journal; refuses when an unfinished one exists.
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
            std::fs::create_dir_all(dir).map_err(|e| write_err(path, e))?;
        }
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(path)
            .map_err(|e| write_err(path, e))?;
        sync_dir(path);
        Ok(Journal {
            path: path.to_path_buf(),
            file,
            redactor: Redactor::referencing(expansions),
        })
    }

    /// Reopen an unfinished journal to continue it; the replay has the
    /// `${VAR}` references of `expansions` read back as their values.
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
        if replay.begin.is_none() || replay.finished || replay.rolled_back {
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
        Ok((
            Journal {
                path: path.to_path_buf(),
                file,
                redactor: Redactor::referencing(expansions),
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
        let mut v = serde_json::to_value(r).map_err(|e| write_err(&self.path, e))?;
        self.redactor.strings_in_place(&mut v);
        let mut line = v.to_string();
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .map_err(|e| write_err(&self.path, e))?;
        self.file.sync_data().map_err(|e| write_err(&self.path, e))
    }

    /// Move a finished journal out of the way, into `history/`.
    pub fn close(self) -> Result<PathBuf, JournalError> {
        archive(&self.path)
    }
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
    std::fs::create_dir_all(&dir).map_err(|e| write_err(&dir, e))?;
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

fn write_err(path: &Path, e: impl std::fmt::Display) -> JournalError {
    JournalError::Write {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// Read a journal. A torn last line (a crash mid-write) is ignored: the
/// record it would have been was never acknowledged. References stay as
/// written (see [`Journal::reopen`]).
pub fn read(path: &Path) -> Result<Replay, JournalError> {
    read_resolved(path, &[])
}

/// Read a journal with each `${VAR}` of `expansions` read back as its value.
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
    let file = File::open(path).map_err(|e| JournalError::Read {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    let mut replay = Replay::default();
    for line in BufReader::new(file).lines() {
        let line = line.map_err(|e| JournalError::Read {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        let Ok(mut v) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        if !values.is_empty() {
            map_strings(&mut v, &resolve);
        }
        let Ok(r) = serde_json::from_value::<Record>(v) else {
            continue;
        };
        match r {
            Record::Begin {
                run,
                spec_file,
                spec_text,
                environment,
                plan,
            } => replay.begin = Some((run, spec_file, spec_text, environment, plan)),
            Record::Started { step } => replay.started.push(step),
            Record::Done { step, facts } => {
                replay.done.insert(step, facts);
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
        }
    }
    Ok(replay)
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
            facts: serde_json::json!({"replicas": 2}),
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
        assert_eq!(r.done["s1"]["replicas"], 2);
        assert!(matches!(
            Journal::create(&path, "a+b", &[]),
            Err(JournalError::Unfinished { .. })
        ));
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
                facts: serde_json::json!({}),
            },
            Record::Done {
                step: "s2".into(),
                facts: serde_json::json!({}),
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
                facts: serde_json::json!({"note": "deleted in team-s3cr3t"}),
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
        assert_eq!(r.done[&step]["note"], "deleted in team-s3cr3t");
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
}
