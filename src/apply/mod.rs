//! Apply: walk the plan's steps in dependency order — independent ones
//! concurrently, up to `--parallelism` — each precheck → act → verify, and
//! journal every start and finish durably before anything depends on it.
//! On a failure before the commit point, compensations run newest first
//! and the original topology comes back; after it (the target verified and
//! consumers switched), the apply stops and `--resume` finishes the rest.
//!
//! Architecture invariant: apply executes a plan and nothing else; it never
//! plans. A saved plan is re-planned by the caller and compared before it
//! gets here; a resumed apply takes its plan from the journal.

pub mod act;
pub mod data;
pub mod events;
pub mod journal;
pub mod lock;
mod undo;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use serde_json::Value;

use crate::cluster::Cluster;
use crate::plan::{Operation, Plan, ScalePurpose};
use act::StepError;
use events::Events;
use journal::{Journal, JournalError, Record};
use lock::{Lock, LockError};

/// What the steps reach the world through.
pub struct World<'a> {
    pub cluster: Option<&'a Cluster>,
    /// The RDS client of the plan's region (one region per apply).
    pub rds: Option<&'a crate::aws::Rds>,
    pub lookup: &'a (dyn Fn(&str) -> Option<String> + Send + Sync),
    /// The spec file's directory: CA files and relative backup directories.
    pub base_dir: PathBuf,
    pub events: &'a Events,
    pub run: String,
    /// Per placement, how long a data step may go without progress
    /// (`backup.stallTimeout`); [`DEFAULT_STALL`] for one not listed.
    pub stall_timeouts: BTreeMap<String, Duration>,
}

/// The stall timeout of a placement the apply has no setting for.
pub const DEFAULT_STALL: Duration = Duration::from_secs(300);

/// How to apply.
#[derive(Debug, Clone)]
pub struct Options {
    pub parallelism: usize,
    pub lock_timeout: Duration,
    pub state_dir: PathBuf,
    pub resume: bool,
}

/// What was applied.
#[derive(Debug, Clone)]
pub struct Report {
    pub done: usize,
    pub skipped: usize,
    pub journal: PathBuf,
}

/// The spec an apply came from, recorded in the journal.
pub struct Origin<'a> {
    pub spec_file: &'a str,
    pub spec_text: &'a str,
    pub environment: Option<&'a str>,
    pub expansions: &'a [(String, String)],
    /// Namespace of each placement's lock.
    pub lock_namespaces: BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum ApplyError {
    #[error(transparent)]
    #[diagnostic(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Lock(#[from] LockError),
    #[error("step {address} failed: {message}\n{outcome}")]
    #[diagnostic(code(pgplan::apply::failed), help("{help}"))]
    Failed {
        address: String,
        message: String,
        outcome: String,
        help: String,
    },
}

/// Test hooks: `PGPLAN_TEST_CRASH=before:N|after:N` kills the process
/// (SIGKILL) around step N, `undone:N` once step N's compensation acted and
/// before the journal records it; `PGPLAN_TEST_FAIL=ADDRESS` makes that step fail
/// after it acted. They exist so that crash recovery and rollback are tested
/// on the real code path.
fn crash_hook(when: &str, position: usize) {
    if std::env::var("PGPLAN_TEST_CRASH").ok().as_deref() == Some(&format!("{when}:{position}")) {
        // SAFETY: sending SIGKILL to ourselves; nothing runs after it.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}

fn fail_hook(address: &str) -> Option<StepError> {
    (std::env::var("PGPLAN_TEST_FAIL").ok().as_deref() == Some(address)).then(|| {
        StepError(format!(
            "injected failure (PGPLAN_TEST_FAIL) after {address} acted"
        ))
    })
}

/// Steps after which a failure no longer rolls the placement back: its
/// data is verified on the target and consumers use it.
fn commit_positions(plan: &Plan) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for (i, s) in plan.steps.iter().enumerate() {
        let commits = matches!(
            s.operation,
            Operation::Verify { .. } | Operation::SelfHeal { .. }
        ) || (matches!(s.operation, Operation::Patch { .. })
            && s.address.ends_with(":reconfigure"));
        if commits {
            out.insert(s.placement.clone(), i);
        }
    }
    out
}

fn post_commit(plan: &Plan, commits: &BTreeMap<String, usize>, index: usize) -> bool {
    let s = &plan.steps[index];
    let after = commits.get(&s.placement).is_some_and(|&c| index > c);
    after
        && matches!(
            s.operation,
            Operation::Scale {
                purpose: ScalePurpose::Resume,
                ..
            } | Operation::HttpCheck { .. }
                | Operation::Delete { .. }
        )
}

/// The backup steps an operation reads (restore and verify name theirs;
/// dependencies are direct ones only, so they are not always among them).
fn backup_ancestors(s: &crate::plan::Step) -> Vec<String> {
    match &s.operation {
        Operation::Restore { backup_step, .. } | Operation::Verify { backup_step, .. } => {
            vec![backup_step.clone()]
        }
        // The backup that read the source's password verifiers.
        Operation::PrepareTarget {
            verifiers_from: Some(b),
            ..
        } => vec![b.clone()],
        _ => Vec::new(),
    }
}

/// The downtime each placement's consumers saw in this run: from the start
/// of the first step of its window to the end of the last, and how much of
/// that was spent dumping and restoring (the union of those steps' running
/// intervals; the rest is orchestration: stopping and starting, creating
/// objects and waiting for them, verification).
struct Downtime<'p> {
    plan: &'p Plan,
    began: BTreeMap<usize, Instant>,
    spans: Vec<(usize, Instant, Instant)>,
}

/// One placement's measured window.
#[derive(Debug, Clone, PartialEq)]
pub struct Measured {
    pub placement: String,
    pub steps: (usize, usize),
    pub total: Duration,
    pub dump_and_restore: Duration,
}

impl<'p> Downtime<'p> {
    fn new(plan: &'p Plan) -> Self {
        Downtime {
            plan,
            began: BTreeMap::new(),
            spans: Vec::new(),
        }
    }

    fn started(&mut self, i: usize) {
        self.began.insert(i, Instant::now());
    }

    fn ended(&mut self, i: usize, took: Duration) {
        let end = Instant::now();
        let start = self
            .began
            .get(&i)
            .copied()
            .unwrap_or_else(|| end.checked_sub(took).unwrap_or(end));
        self.spans.push((i, start, end));
    }

    /// Windows wholly run by this process (a resumed apply that skipped the
    /// window's first step has no honest figure and reports none).
    fn measured(&self) -> Vec<Measured> {
        let mut out = Vec::new();
        for pp in &self.plan.placements {
            let Some((first, last)) = pp.downtime else {
                continue;
            };
            let span = |pos: usize| self.spans.iter().find(|(i, _, _)| *i + 1 == pos);
            let (Some(&(_, start, _)), Some(&(_, _, end))) = (span(first), span(last)) else {
                continue;
            };
            let mut data: Vec<(Instant, Instant)> = self
                .spans
                .iter()
                .filter(|(i, _, _)| {
                    let s = &self.plan.steps[*i];
                    s.placement == pp.name
                        && matches!(
                            s.operation,
                            Operation::Backup { .. } | Operation::Restore { .. }
                        )
                })
                .map(|&(_, a, b)| (a.max(start), b.min(end)))
                .filter(|(a, b)| a < b)
                .collect();
            data.sort();
            let mut busy = Duration::ZERO;
            let mut cur: Option<(Instant, Instant)> = None;
            for (a, b) in data {
                cur = match cur {
                    Some((ca, cb)) if a <= cb => Some((ca, cb.max(b))),
                    Some((ca, cb)) => {
                        busy += cb - ca;
                        Some((a, b))
                    }
                    None => Some((a, b)),
                };
            }
            if let Some((ca, cb)) = cur {
                busy += cb - ca;
            }
            out.push(Measured {
                placement: pp.name.clone(),
                steps: (first, last),
                total: end.saturating_duration_since(start),
                dump_and_restore: busy,
            });
        }
        out
    }
}

/// Execute a plan. `journal` is new, or reopened with `done` steps.
pub async fn execute(
    plan: &Plan,
    origin: &Origin<'_>,
    w: &World<'_>,
    opts: &Options,
) -> Result<Report, ApplyError> {
    let names: Vec<&str> = plan.placements.iter().map(|p| p.name.as_str()).collect();
    let label = names.join(", ");
    let path = journal::path_for(&opts.state_dir, &names);

    // Locks first: nothing, not even the journal, before we own the placements.
    let lock_id = w.run.clone();
    let mut locks: Vec<Lock> = Vec::new();
    if let Some(c) = w.cluster {
        for p in &names {
            let ns = origin
                .lock_namespaces
                .get(*p)
                .cloned()
                .unwrap_or_else(|| "default".into());
            match lock::acquire(c, &ns, p, &lock_id, opts.lock_timeout).await {
                Ok(l) => locks.push(l),
                Err(e) => {
                    for l in &locks {
                        let _ = l.release(c).await;
                    }
                    return Err(e.into());
                }
            }
        }
    }
    let result = run(plan, origin, w, opts, &path, &label).await;
    if let Some(c) = w.cluster {
        for l in &locks {
            let _ = l.release(c).await;
        }
    }
    result
}

async fn run(
    plan: &Plan,
    origin: &Origin<'_>,
    w: &World<'_>,
    opts: &Options,
    path: &Path,
    label: &str,
) -> Result<Report, ApplyError> {
    let (mut journal, replay) = if opts.resume {
        Journal::reopen(path, label)?
    } else {
        let mut j = Journal::create(path, label)?;
        j.record(&Record::Begin {
            run: w.run.clone(),
            spec_file: origin.spec_file.into(),
            spec_text: origin.spec_text.into(),
            environment: origin.environment.map(str::to_string),
            plan: journal::store_plan(plan, origin.expansions),
        })?;
        (j, journal::Replay::default())
    };
    let mut done: BTreeMap<String, Value> = replay.done.clone();
    if let Some(reason) = &replay.rollback {
        // The apply was rolling back when it stopped: finish that, and never
        // go forward again over steps the rollback may already have undone.
        return resume_rollback(plan, w, journal, &replay, reason).await;
    }
    w.events
        .begin(&w.run, std::slice::from_ref(&w.run), done.len());
    for (i, s) in plan.steps.iter().enumerate() {
        if done.contains_key(&s.address) {
            w.events.skipped(i + 1, s);
        }
    }
    let commits = commit_positions(plan);
    let mut running: HashSet<usize> = HashSet::new();
    // Every step that failed in this run; the first is the one reported.
    let mut failures: Vec<(usize, StepError)> = Vec::new();
    let mut futs = FuturesUnordered::new();
    let mut applied = 0usize;
    let mut clock = Downtime::new(plan);
    let mut renew = tokio::time::interval(Duration::from_secs((lock::LEASE_SECONDS / 3) as u64));
    renew.tick().await;

    loop {
        if failures.is_empty() {
            for (i, s) in plan.steps.iter().enumerate() {
                if running.len() >= opts.parallelism.max(1) {
                    break;
                }
                if done.contains_key(&s.address) || running.contains(&i) {
                    continue;
                }
                if !s.depends_on.iter().all(|d| done.contains_key(d)) {
                    continue;
                }
                crash_hook("before", i + 1);
                journal.record(&Record::Started {
                    step: s.address.clone(),
                })?;
                w.events.started(i + 1, s);
                clock.started(i);
                running.insert(i);
                let deps: BTreeMap<String, Value> = s
                    .depends_on
                    .iter()
                    .chain(backup_ancestors(s).iter())
                    .filter_map(|d| done.get(d).map(|f| (d.clone(), f.clone())))
                    .collect();
                futs.push(async move {
                    let t = Instant::now();
                    let mut r = act::act(w, s, &deps).await;
                    if r.is_ok() {
                        if let Some(e) = fail_hook(&s.address) {
                            r = Err(e);
                        }
                    }
                    (i, r, t.elapsed())
                });
            }
        }
        if futs.is_empty() {
            break;
        }
        let next = tokio::select! {
            n = futs.next() => n,
            _ = renew.tick() => {
                if let Some(c) = w.cluster {
                    for p in plan.placements.iter() {
                        let ns = origin.lock_namespaces.get(&p.name).cloned().unwrap_or_else(|| "default".into());
                        // A lost lease is reported by the next acquire; keep going.
                        let _ = lock::acquire(c, &ns, &p.name, &w.run, Duration::from_secs(0)).await;
                    }
                }
                continue;
            }
        };
        let Some((i, result, took)) = next else { break };
        running.remove(&i);
        let s = &plan.steps[i];
        w.events.progress_done();
        clock.ended(i, took);
        match result {
            Ok(facts) => {
                journal.record(&Record::Done {
                    step: s.address.clone(),
                    facts: facts.clone(),
                })?;
                let note = facts
                    .get("note")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                done.insert(s.address.clone(), facts);
                applied += 1;
                w.events.done(i + 1, s, took, &note);
                crash_hook("after", i + 1);
            }
            Err(e) => {
                journal.record(&Record::Failed {
                    step: s.address.clone(),
                    error: e.0.clone(),
                })?;
                w.events.failed(i + 1, s, &e.0);
                failures.push((i, e));
            }
        }
    }

    if failures.is_empty() {
        journal.record(&Record::Finished)?;
        let archived = journal.close()?;
        for m in clock.measured() {
            w.events.downtime(&m);
        }
        w.events.finished(
            &format!(
                "Apply complete: {applied} step(s) done, {} already done before.",
                replay.done.len()
            ),
            true,
        );
        return Ok(Report {
            done: applied,
            skipped: replay.done.len(),
            journal: archived,
        });
    };

    let (failed, error) = &failures[0];
    let step = &plan.steps[*failed];
    if post_commit(plan, &commits, *failed) {
        w.events.finished(
            "Apply stopped after the commit point; nothing was rolled back.",
            false,
        );
        return Err(ApplyError::Failed {
            address: step.address.clone(),
            message: error.0.clone(),
            outcome: "The data is verified on the target and consumers use it; nothing was rolled back.".into(),
            help: format!(
                "fix the cause and run `pgplan apply --resume` to finish the remaining steps (journal: {})",
                journal.path().display()
            ),
        });
    }
    journal.record(&Record::RollbackStarted {
        reason: error.0.clone(),
    })?;
    w.events.note("Rolling back:");
    let failed: Vec<usize> = failures.iter().map(|(i, _)| *i).collect();
    roll_back(
        plan,
        w,
        journal,
        &done,
        &failed,
        (&step.address, &error.0),
        &BTreeSet::new(),
    )
    .await
}

/// `apply --resume` of a journal whose rollback had begun: the failed
/// steps and every compensation not recorded as done are run (again; each
/// is idempotent), then the apply ends as a rolled-back one.
async fn resume_rollback(
    plan: &Plan,
    w: &World<'_>,
    mut journal: Journal,
    replay: &journal::Replay,
    reason: &str,
) -> Result<Report, ApplyError> {
    let index: BTreeMap<&str, usize> = plan
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.address.as_str(), i))
        .collect();
    // Failed and never done since (a failure resumed past is undone as a
    // done step).
    let failed: Vec<usize> = replay
        .failed
        .iter()
        .filter(|(a, _)| !replay.done.contains_key(a))
        .filter_map(|(a, _)| index.get(a.as_str()).copied())
        .collect();
    // The failure that started the rollback.
    let (address, message) = replay
        .failed
        .iter()
        .rev()
        .find(|(_, e)| e == reason)
        .or(replay.failed.last())
        .map(|(a, e)| (a.as_str(), e.as_str()))
        .unwrap_or(("(unknown step)", reason));
    w.events.begin(&w.run, std::slice::from_ref(&w.run), 0);
    w.events.note(&format!(
        "Resuming the rollback of {address} ({} compensation(s) already done): the apply failed with: {message}",
        replay.compensated.len()
    ));
    journal.record(&Record::RollbackStarted {
        reason: reason.to_string(),
    })?;
    roll_back(
        plan,
        w,
        journal,
        &replay.done,
        &failed,
        (address, message),
        &replay.compensated,
    )
    .await
}

/// Roll back: the failed steps (they may have half-acted; none of them is
/// in `done`), then every step done before its placement's commit point,
/// newest first; compensations in
/// `already` are recorded as done and not run again. Always ends in
/// [`ApplyError::Failed`], carrying the first failure and what the
/// rollback did.
async fn roll_back(
    plan: &Plan,
    w: &World<'_>,
    mut journal: Journal,
    done: &BTreeMap<String, Value>,
    failed: &[usize],
    (address, message): (&str, &str),
    already: &BTreeSet<String>,
) -> Result<Report, ApplyError> {
    let commits = commit_positions(plan);
    let mut order: Vec<usize> = plan
        .steps
        .iter()
        .enumerate()
        .rev()
        .filter(|(i, s)| done.contains_key(&s.address) && !post_commit(plan, &commits, *i))
        .map(|(i, _)| i)
        .collect();
    let mut first: Vec<usize> = failed
        .iter()
        .copied()
        .filter(|&i| !post_commit(plan, &commits, i))
        .collect();
    first.sort_unstable_by(|a, b| b.cmp(a));
    first.dedup();
    first.append(&mut order);
    let mut undone = Vec::new();
    let mut kept = Vec::new();
    let mut broken = Vec::new();
    for i in first {
        let s = &plan.steps[i];
        if already.contains(&s.address) {
            continue;
        }
        let result = undo::undo(w, s, done.get(&s.address), done).await;
        crash_hook("undone", i + 1);
        match result {
            Ok(undo::Undo::Undone(detail)) => {
                journal.record(&Record::Compensated {
                    step: s.address.clone(),
                    detail: detail.clone(),
                })?;
                w.events.rollback("undone", &s.address, &detail);
                undone.push(detail);
            }
            Ok(undo::Undo::Kept(reason)) => {
                journal.record(&Record::NotCompensated {
                    step: s.address.clone(),
                    reason: reason.clone(),
                })?;
                w.events.rollback("kept", &s.address, &reason);
                kept.push(reason);
            }
            Ok(undo::Undo::Nothing) => {}
            Err(e) => {
                journal.record(&Record::NotCompensated {
                    step: s.address.clone(),
                    reason: e.0.clone(),
                })?;
                w.events
                    .rollback("kept", &s.address, &format!("could not be undone: {}", e.0));
                broken.push(format!("{}: {}", s.address, e.0));
            }
        }
    }
    let mut outcome = String::new();
    if broken.is_empty() {
        journal.record(&Record::RolledBack)?;
        let archived = journal.close()?;
        outcome.push_str("Rolled back to the original topology.");
        if !already.is_empty() {
            outcome.push_str(&format!(
                "\n  undone before the interruption: {} step(s)",
                already.len()
            ));
        }
        for u in &undone {
            outcome.push_str(&format!("\n  undone: {u}"));
        }
        for k in &kept {
            outcome.push_str(&format!("\n  kept: {k}"));
        }
        outcome.push_str(&format!("\n  journal: {}", archived.display()));
        w.events
            .finished("Apply failed and was rolled back.", false);
        Err(ApplyError::Failed {
            address: address.to_string(),
            message: message.to_string(),
            outcome,
            help: "the plan can be applied again once the cause is fixed".into(),
        })
    } else {
        outcome.push_str("The rollback did not finish:");
        for b in &broken {
            outcome.push_str(&format!("\n  NOT undone: {b}"));
        }
        for u in &undone {
            outcome.push_str(&format!("\n  undone: {u}"));
        }
        for k in &kept {
            outcome.push_str(&format!("\n  kept: {k}"));
        }
        w.events
            .finished("Apply failed; the rollback needs attention.", false);
        Err(ApplyError::Failed {
            address: address.to_string(),
            message: message.to_string(),
            outcome,
            help: format!(
                "the journal {} says what was and was not undone; fix the cause, then `pgplan apply --resume` rolls back the rest",
                journal.path().display()
            ),
        })
    }
}
