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

mod dispatch;
pub mod events;
pub mod interrupt;
pub mod journal;
mod kube;
pub mod lock;
pub mod outcome;
mod pgdata;
mod probe;
mod rds;
mod secret;
mod servers;
pub mod world;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::plan::{Operation, Plan, ScalePurpose};
pub use events::Measured;
use futures::stream::{FuturesUnordered, StreamExt};
use interrupt::Interrupts;
use journal::{Journal, JournalError, Record};
use lock::{LockError, Locks, Phase};
use outcome::{Outcome, StepError, Undo};
pub use world::{World, DEFAULT_STALL};

/// How to apply.
#[derive(Debug, Clone)]
pub struct Options {
    pub parallelism: usize,
    pub state_dir: PathBuf,
    pub resume: bool,
    /// The exact command that resumes this apply (spec, environment, state
    /// directory, cluster): told on an interrupt and written on the Lease.
    pub resume_command: String,
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
        /// The original topology is back (the lock can be given back).
        rolled_back: bool,
    },
    #[error(
        "the apply was interrupted ({signal}) and stopped {how}; the world is part-way:\n  {state}"
    )]
    #[diagnostic(
        code(pgplan::apply::interrupted),
        help("resume it with `{resume}` (the lock stays held by this apply until then)")
    )]
    Interrupted {
        signal: String,
        how: String,
        state: String,
        resume: String,
    },
}

/// Test hooks (see `crate::testhooks`, live only in builds with the
/// `test-hooks` feature): a SIGKILL around step N, a failure after a step acted.
fn crash_hook(when: &str, position: usize) {
    crate::testhooks::crash(when, position);
}

/// Where a test may hold an apply (`PGPLAN_TEST_HOLD`: `lock` or `step:N`).
enum HoldPoint {
    Lock,
    /// Before the step at this 1-based position.
    Step(usize),
}

/// Test hook (see `crate::testhooks`): hold at `point` until the test
/// releases it (files `held-{name}`, `release-{name}`).
async fn hold_hook(point: HoldPoint) {
    let (point, name) = match point {
        HoldPoint::Lock => ("lock".to_string(), "lock".to_string()),
        HoldPoint::Step(n) => (format!("step:{n}"), n.to_string()),
    };
    let Some(dir) = crate::testhooks::hold_dir(&point) else {
        return;
    };
    let _ = std::fs::write(dir.join(format!("held-{name}")), b"");
    while !dir.join(format!("release-{name}")).exists() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Hold before taking the locks (see [`hold_hook`]).
pub async fn hold_before_lock() {
    hold_hook(HoldPoint::Lock).await;
}

fn fail_hook(address: &str) -> Option<StepError> {
    crate::testhooks::fail(address).then(|| {
        StepError::new(format!(
            "injected failure (PGPLAN_TEST_FAIL) after {address} acted"
        ))
    })
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

/// How an apply ended, for its Lease: given back only when the world is
/// whole (finished, rolled back, or never touched).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// Nothing was changed: the lock is released.
    Untouched,
    /// Finished or rolled back: the lock is released.
    Ended,
    /// Anything else: the lock stays, marked stopped, for `--resume`.
    Unfinished,
}

/// Execute a plan under locks the caller holds. `journal` is new, or
/// reopened with `done` steps.
pub async fn execute(
    plan: &Plan,
    origin: &Origin<'_>,
    w: &World<'_>,
    opts: &Options,
    locks: &Locks,
    interrupts: &Interrupts,
) -> Result<Report, ApplyError> {
    let names: Vec<&str> = plan.placements.iter().map(|p| p.name.as_str()).collect();
    let label = names.join(", ");
    let path = journal::path_for(&opts.state_dir, &names);
    // A resumed apply holds a lock that already marks an unfinished apply:
    // it must never be given back unless the apply ends.
    let mut ending = if opts.resume {
        Ending::Unfinished
    } else {
        Ending::Untouched
    };
    let cx = Run {
        plan,
        origin,
        w,
        opts,
        path: &path,
        label: &label,
        locks,
        interrupts,
    };
    let result = cx.run(&mut ending).await;
    if let Some(c) = w.cluster {
        match ending {
            Ending::Untouched | Ending::Ended => locks.release(c).await,
            Ending::Unfinished => locks.mark(c, Phase::Stopped, None, None).await,
        }
    }
    result
}

/// Where a journal is, for another machine's user: `host:/absolute/path`.
fn journal_location(path: &Path) -> String {
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    format!("{}:{}", lock::hostname(), abs.display())
}

/// What one apply works with.
struct Run<'r, 'w> {
    plan: &'r Plan,
    origin: &'r Origin<'r>,
    w: &'r World<'w>,
    opts: &'r Options,
    path: &'r Path,
    label: &'r str,
    locks: &'r Locks,
    interrupts: &'r Interrupts,
}

/// What the walk of the steps waits for next (one at a time, never stored).
#[allow(clippy::large_enum_variant)]
enum Next {
    Step(Option<(usize, Result<Outcome, StepError>, Duration)>),
    Renew,
    Interrupt,
}

impl Run<'_, '_> {
    async fn mark(&self, phase: Phase) {
        if let Some(c) = self.w.cluster {
            let journal = journal_location(self.path);
            self.locks
                .mark(c, phase, Some(&journal), Some(&self.opts.resume_command))
                .await;
        }
    }

    async fn run(&self, ending: &mut Ending) -> Result<Report, ApplyError> {
        let (plan, origin, w, opts, path, label) = (
            self.plan,
            self.origin,
            self.w,
            self.opts,
            self.path,
            self.label,
        );
        // Still ours? (A lease can expire while a long plan is made under it.)
        if let Some(c) = w.cluster {
            self.locks.confirm(c).await?;
        }
        let (mut journal, mut replay) = if opts.resume {
            Journal::reopen(path, label, origin.expansions)?
        } else {
            let mut j = Journal::create(path, label, origin.expansions)?;
            *ending = Ending::Unfinished;
            j.record(&Record::Begin {
                run: w.run.to_string(),
                spec_file: origin.spec_file.into(),
                spec_text: origin.spec_text.into(),
                environment: origin.environment.map(str::to_string),
                plan: journal::store_plan(plan, origin.expansions),
            })?;
            (j, journal::Replay::default())
        };
        if replay.rollback.is_none() && self.locks.rollback_recorded() {
            // The Lease says a rollback began, the journal does not: its end
            // was lost. Never go forward from it.
            replay.rollback = Some(
                "the lock records that a rollback had begun, which the journal has lost".into(),
            );
        }
        let mut done: pgdata::Done = replay.done.clone();
        if let Some(reason) = replay.rollback.clone() {
            // The apply was rolling back when it stopped: finish that, and never
            // go forward again over steps the rollback may already have undone.
            self.mark(Phase::RollingBack).await;
            let r = self.resume_rollback(journal, &replay, &reason).await;
            if r.as_ref().err().is_some_and(rolled_back) {
                *ending = Ending::Ended;
            }
            return r;
        }
        self.mark(Phase::Applying).await;
        w.events
            .begin(w.run.as_str(), &[w.run.to_string()], done.len());
        for (i, s) in plan.steps.iter().enumerate() {
            if done.contains_key(&s.address) {
                w.events.skipped(i + 1, s);
            }
        }
        let commits = plan.commit_positions();
        let mut running: HashSet<usize> = HashSet::new();
        // Every step that failed in this run; the first is the one reported.
        let mut failures: Vec<(usize, StepError)> = Vec::new();
        let mut futs = FuturesUnordered::new();
        let mut applied = 0usize;
        let mut clock = Downtime::new(plan);
        let mut renew =
            tokio::time::interval(Duration::from_secs((lock::LEASE_SECONDS / 3) as u64));
        renew.tick().await;
        // Interrupts handled so far; the signal once the apply is stopping.
        let mut seen = self.interrupts.count();
        let mut stopping: Option<&'static str> = None;
        let mut abandoned: Vec<usize> = Vec::new();

        loop {
            if failures.is_empty() && stopping.is_none() {
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
                    let deps: pgdata::Done = s
                        .depends_on
                        .iter()
                        .chain(backup_ancestors(s).iter())
                        .filter_map(|d| done.get(d).map(|f| (d.clone(), f.clone())))
                        .collect();
                    futs.push(async move {
                        hold_hook(HoldPoint::Step(i + 1)).await;
                        let t = Instant::now();
                        let mut r = dispatch::act(w, s, &deps).await;
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
                n = futs.next() => Next::Step(n),
                _ = renew.tick() => Next::Renew,
                _ = self.interrupts.reached(seen + 1) => Next::Interrupt,
            };
            let (i, result, took) = match next {
                Next::Step(Some(n)) => n,
                Next::Step(None) => break,
                Next::Renew => {
                    if let Some(c) = w.cluster {
                        self.locks.renew(c).await;
                    }
                    continue;
                }
                Next::Interrupt => {
                    seen = self.interrupts.count();
                    let mut now: Vec<usize> = running.iter().copied().collect();
                    now.sort_unstable();
                    if stopping.is_none() && seen < 2 {
                        stopping = Some(self.interrupts.signal());
                        w.events.interrupt_received(
                            self.interrupts.signal(),
                            &now.iter()
                                .map(|&i| (i + 1, &plan.steps[i]))
                                .collect::<Vec<_>>(),
                        );
                        continue;
                    }
                    // Again: stop at once. The running steps are dropped
                    // mid-way; each is idempotent and runs again on resume.
                    stopping.get_or_insert(self.interrupts.signal());
                    futs.clear();
                    w.events.progress_done();
                    w.events.stopping_at_once(
                        &now.iter()
                            .map(|&i| (i + 1, &plan.steps[i]))
                            .collect::<Vec<_>>(),
                    );
                    abandoned = now;
                    break;
                }
            };
            running.remove(&i);
            let s = &plan.steps[i];
            w.events.progress_done();
            clock.ended(i, took);
            match result {
                Ok(outcome) => {
                    journal.record(&Record::Done {
                        step: s.address.clone(),
                        outcome: outcome.clone(),
                    })?;
                    let note = outcome.note();
                    done.insert(s.address.clone(), outcome);
                    applied += 1;
                    w.events.done(i + 1, s, took, &note);
                    crash_hook("after", i + 1);
                }
                Err(e) => {
                    journal.record(&Record::Failed {
                        step: s.address.clone(),
                        error: e.to_string(),
                    })?;
                    w.events.failed(i + 1, s, &e);
                    failures.push((i, e));
                }
            }
        }

        let all_done = plan.steps.iter().all(|s| done.contains_key(&s.address));
        if failures.is_empty() && !all_done {
            if let Some(signal) = stopping {
                let running: Vec<String> = abandoned
                    .iter()
                    .map(|&i| plan.steps[i].address.clone())
                    .collect();
                journal.record(&Record::Interrupted {
                    signal: signal.into(),
                    running,
                })?;
                let state = world_state(plan, &done, &abandoned);
                w.events
                    .interrupted(signal, &state, &opts.resume_command, journal.path());
                return Err(ApplyError::Interrupted {
                    signal: signal.into(),
                    how: if abandoned.is_empty() {
                        "after the steps it was running".into()
                    } else {
                        "at once (a second interrupt)".into()
                    },
                    state: state.join("\n  "),
                    resume: opts.resume_command.clone(),
                });
            }
        }
        if failures.is_empty() {
            journal.record(&Record::Finished)?;
            let archived = journal.close()?;
            *ending = Ending::Ended;
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
                message: error.to_string(),
                outcome: "The data is verified on the target and consumers use it; nothing was rolled back.".into(),
                help: format!(
                    "fix the cause and run `{}` to finish the remaining steps (journal: {})",
                    opts.resume_command,
                    journal.path().display()
                ),
                rolled_back: false,
            });
        }
        journal.record(&Record::RollbackStarted {
            reason: error.to_string(),
        })?;
        self.mark(Phase::RollingBack).await;
        w.events.note("Rolling back:");
        let failed: Vec<usize> = failures.iter().map(|(i, _)| *i).collect();
        let r = self
            .roll_back(
                journal,
                &done,
                &failed,
                (&step.address, &error.to_string()),
                &BTreeSet::new(),
            )
            .await;
        if r.as_ref().err().is_some_and(rolled_back) {
            *ending = Ending::Ended;
        }
        r
    }

    /// `apply --resume` of a journal whose rollback had begun: the failed
    /// steps and every compensation not recorded as done are run (again; each
    /// is idempotent), then the apply ends as a rolled-back one.
    async fn resume_rollback(
        &self,
        mut journal: Journal,
        replay: &journal::Replay,
        reason: &str,
    ) -> Result<Report, ApplyError> {
        let (plan, w) = (self.plan, self.w);
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
        w.events.begin(w.run.as_str(), &[w.run.to_string()], 0);
        w.events.note(&format!(
            "Resuming the rollback of {address} ({} compensation(s) already done): the apply failed with: {message}",
            replay.compensated.len()
        ));
        journal.record(&Record::RollbackStarted {
            reason: reason.to_string(),
        })?;
        self.roll_back(
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
    /// rollback did — or, stopped by a second interrupt, in
    /// [`ApplyError::Interrupted`] (`--resume` finishes the rollback).
    async fn roll_back(
        &self,
        mut journal: Journal,
        done: &pgdata::Done,
        failed: &[usize],
        (address, message): (&str, &str),
        already: &BTreeSet<String>,
    ) -> Result<Report, ApplyError> {
        let (plan, w) = (self.plan, self.w);
        let commits = plan.commit_positions();
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
        // An interrupt lets the rollback finish; the second after the
        // apply's first stops it at once.
        let mut seen = self.interrupts.count();
        let stop_at = (seen + 1).max(2);
        for i in first {
            let s = &plan.steps[i];
            if already.contains(&s.address) {
                continue;
            }
            let source = source_of(plan, &s.placement);
            let mut compensation =
                std::pin::pin!(dispatch::undo(w, s, done.get(&s.address), done, source));
            let result = loop {
                tokio::select! {
                    r = &mut compensation => break Some(r),
                    _ = self.interrupts.reached(seen + 1) => {
                        seen = self.interrupts.count();
                        if seen >= stop_at {
                            break None;
                        }
                        w.events.note(&format!(
                            "Interrupt received ({}): finishing the rollback (undoing {}); interrupt again to stop at once.",
                            self.interrupts.signal(),
                            s.address
                        ));
                    }
                }
            };
            let Some(result) = result else {
                let left = vec![format!(
                    "rolling back: stopped while undoing {} (step {}); the rollback has begun and `--resume` finishes it, never the move",
                    s.address,
                    i + 1
                )];
                let signal = self.interrupts.signal();
                journal.record(&Record::Interrupted {
                    signal: signal.into(),
                    running: vec![s.address.clone()],
                })?;
                w.events
                    .interrupted(signal, &left, &self.opts.resume_command, journal.path());
                return Err(ApplyError::Interrupted {
                    signal: signal.into(),
                    how: "in the middle of its rollback".into(),
                    state: left.join("\n  "),
                    resume: self.opts.resume_command.clone(),
                });
            };
            crash_hook("undone", i + 1);
            match result {
                Ok(Undo::Undone(detail)) => {
                    journal.record(&Record::Compensated {
                        step: s.address.clone(),
                        detail: detail.clone(),
                    })?;
                    w.events.rollback("undone", &s.address, &detail);
                    undone.push(detail);
                }
                Ok(Undo::Kept(reason)) => {
                    journal.record(&Record::NotCompensated {
                        step: s.address.clone(),
                        reason: reason.clone(),
                    })?;
                    w.events.rollback("kept", &s.address, &reason);
                    kept.push(reason);
                }
                Ok(Undo::Nothing) => {}
                Err(e) => {
                    journal.record(&Record::NotCompensated {
                        step: s.address.clone(),
                        reason: e.to_string(),
                    })?;
                    w.events.rollback_failed(&s.address, &e);
                    broken.push(format!("{}: {e}", s.address));
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
                rolled_back: true,
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
                    "the journal {} says what was and was not undone; fix the cause, then `{}` rolls back the rest",
                    journal.path().display(),
                    self.opts.resume_command
                ),
                rolled_back: false,
            })
        }
    }
}

/// True for the error of an apply that rolled back completely.
fn rolled_back(e: &ApplyError) -> bool {
    matches!(
        e,
        ApplyError::Failed {
            rolled_back: true,
            ..
        }
    )
}

/// The source server of a placement (what its backups read), which a
/// rollback must see serving again.
fn source_of<'p>(plan: &'p Plan, placement: &str) -> Option<&'p crate::plan::ServerRef> {
    plan.steps.iter().find_map(|s| match &s.operation {
        Operation::Backup { server, .. } if s.placement == placement => Some(server),
        _ => None,
    })
}

/// What the world is like after an apply stopped part-way, one fact a
/// line: what is stopped, deleted, created or tuned, where the backups
/// are, and which steps did not finish.
fn world_state(plan: &Plan, done: &pgdata::Done, abandoned: &[usize]) -> Vec<String> {
    let is_done = |a: &str| done.contains_key(a);
    let commits = plan.commit_positions();
    let mut out = Vec::new();
    for (i, s) in plan.steps.iter().enumerate() {
        if !is_done(&s.address) {
            continue;
        }
        let n = i + 1;
        match &s.operation {
            Operation::Scale {
                object,
                from,
                to,
                purpose: ScalePurpose::Quiesce,
                ..
            } => {
                let resumed = plan.steps.iter().any(|r| {
                    matches!(&r.operation, Operation::Scale { object: o, purpose: ScalePurpose::Resume, .. } if o == object)
                        && is_done(&r.address)
                });
                if !resumed {
                    out.push(format!(
                        "consumer stopped: {} at {to} replicas, {from} before (step {n})",
                        object.display()
                    ));
                }
            }
            Operation::Delete { object, .. } => {
                let committed = commits
                    .get(&s.placement)
                    .is_some_and(|&c| is_done(&plan.steps[c].address));
                if matches!(object.kind.as_str(), "Deployment" | "StatefulSet") && !committed {
                    out.push(format!(
                        "database down: {} is deleted (step {n}) and its data is not verified on the target yet",
                        object.display()
                    ));
                } else {
                    out.push(format!("deleted: {} (step {n})", object.display()));
                }
            }
            Operation::Replace { object, .. } => {
                out.push(format!("replaced: {} (step {n})", object.display()))
            }
            Operation::Create { object, .. } => {
                out.push(format!("created: {} (step {n})", object.display()))
            }
            Operation::ProtectVolume { volume, from } => out.push(format!(
                "{} kept on reclaim policy Retain, {from} before (step {n})",
                volume.display()
            )),
            Operation::TuneForLoading { pod, .. } => {
                let untuned = plan.steps.iter().any(|u| {
                    matches!(&u.operation, Operation::UntuneAfterLoading { pod: p, .. } if p == pod)
                        && is_done(&u.address)
                });
                if !untuned {
                    out.push(format!(
                        "tuned for loading: {} runs with fsync off (step {n}); it must not serve like this",
                        pod.display()
                    ));
                }
            }
            Operation::Backup { .. } => {
                if let Some(b) = done.get(&s.address).and_then(Outcome::backup) {
                    out.push(format!("backup: {} (step {n})", b.archive.display()));
                }
            }
            _ => {}
        }
    }
    for &i in abandoned {
        out.push(format!(
            "not finished: step {} {} (stopped mid-way; it runs again on resume)",
            i + 1,
            plan.steps[i].address
        ));
    }
    let left = plan.steps.iter().filter(|s| !is_done(&s.address)).count();
    out.push(format!("{left} of {} steps not done yet", plan.steps.len()));
    out
}
