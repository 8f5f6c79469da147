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

mod datapod;
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
pub mod remote;
mod secret;
mod servers;
pub mod world;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::plan::{Operation, Plan, ScalePurpose};
pub use datapod::{remove_clients, start_client, ToolsPod};
pub use dispatch::dry_run;
pub use events::Measured;
use futures::stream::{FuturesUnordered, StreamExt};
use interrupt::Interrupts;
use journal::{Journal, JournalError, Record};
use lock::{LockError, Locks, Phase};
use outcome::{Outcome, StepError, StepFailure, Undo};
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
    /// Where the journal lives besides this machine.
    pub state: State,
}

/// Where an apply keeps its journal (`--state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum State {
    /// In the state directory and, record by record, in a Secret beside
    /// the placement's Lease, so any machine with the kubeconfig can
    /// resume (the default).
    #[default]
    Cluster,
    /// Only in the state directory (a laptop).
    Local,
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
    /// A step failed. Its error (with the code it came with) is the cause;
    /// what was done about it (nothing past the commit point, a complete
    /// rollback, or one that did not finish and what it left) follows it.
    #[error("step {address} failed")]
    #[diagnostic(code(pgplan::apply::failed), help("{help}"))]
    Failed {
        address: String,
        #[diagnostic_source]
        cause: StepFailure,
        /// One [`Aftermath`]: a list only so that it renders as related.
        #[related]
        aftermath: Vec<Aftermath>,
        help: String,
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

/// What a failed apply did about its failure, said after the cause.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum Aftermath {
    /// The failure came after the commit point: nothing is undone.
    #[error("The data is verified on the target and consumers use it; nothing was rolled back.")]
    #[diagnostic(code(pgplan::apply::past_commit), severity(Advice))]
    PastCommit,
    /// The original topology is back (the lock can be given back).
    #[error("Rolled back to the original topology.{lines}")]
    #[diagnostic(code(pgplan::apply::rolled_back), severity(Advice))]
    RolledBack { lines: String },
    /// Some compensations failed: each is related, with its own cause.
    #[error("The rollback did not finish:{lines}")]
    #[diagnostic(code(pgplan::apply::rollback_incomplete))]
    Incomplete {
        lines: String,
        #[related]
        not_undone: Vec<NotUndone>,
    },
}

/// A compensation that failed: the step it was for, and why.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[error("NOT undone: {address}")]
#[diagnostic(code(pgplan::apply::not_undone))]
pub struct NotUndone {
    pub address: String,
    #[diagnostic_source]
    pub cause: StepFailure,
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
    remote: Option<remote::Remote<'_>>,
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
        remote: tokio::sync::Mutex::new(remote),
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
    /// The journal's copy in the cluster (`--state cluster`).
    remote: tokio::sync::Mutex<Option<remote::Remote<'w>>>,
}

/// Where a walk over the steps got to.
struct Walked<'p> {
    /// The outcome of every step done, in this run or before it.
    done: pgdata::Done,
    /// Every step that failed in this run; the first is the one reported.
    failures: Vec<(usize, StepError)>,
    /// Steps done in this run.
    applied: usize,
    clock: Downtime<'p>,
    /// The signal, once an interrupt stops the apply.
    stopping: Option<&'static str>,
    /// The steps a second interrupt dropped mid-way.
    abandoned: Vec<usize>,
}

/// The outcomes a step reads: its dependencies' and its backups'.
fn inputs(s: &crate::plan::Step, done: &pgdata::Done) -> pgdata::Done {
    s.depends_on
        .iter()
        .chain(backup_ancestors(s).iter())
        .filter_map(|d| done.get(d).map(|f| (d.clone(), f.clone())))
        .collect()
}

/// What a rollback did, in words, for its report.
#[derive(Default)]
struct Tally {
    undone: Vec<String>,
    kept: Vec<String>,
    /// Compensations that failed.
    broken: Vec<NotUndone>,
}

/// The order steps are undone in: the failed ones first, then every done
/// step in reverse plan order; steps after the commit point are never undone.
fn rollback_order(plan: &Plan, done: &pgdata::Done, failed: &[usize]) -> Vec<usize> {
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
    first
}

/// What the walk of the steps waits for next (one at a time, never stored).
#[allow(clippy::large_enum_variant)]
enum Next {
    Step(Option<(usize, Result<Outcome, StepError>, Duration)>),
    Renew,
    Interrupt,
}

impl<'r> Run<'r, '_> {
    async fn mark(&self, phase: Phase) {
        if let Some(c) = self.w.cluster {
            let mut journal = journal_location(self.path);
            if let Some(r) = self.remote.lock().await.as_ref() {
                journal = format!("{} (and {journal})", r.describe());
            }
            self.locks
                .mark(c, phase, Some(&journal), Some(&self.opts.resume_command))
                .await;
        }
    }

    async fn run(&self, ending: &mut Ending) -> Result<Report, ApplyError> {
        let w = self.w;
        // Still ours? (A lease can expire while a long plan is made under it.)
        if let Some(c) = w.cluster {
            self.locks.confirm(c).await?;
        }
        let (mut journal, mut replay) = self.open_journal(ending)?;
        self.adopt(&mut journal).await?;
        if replay.rollback.is_none() && self.locks.rollback_recorded() {
            // The Lease says a rollback began, the journal does not: its end
            // was lost. Never go forward from it.
            replay.rollback = Some(
                "the lock records that a rollback had begun, which the journal has lost".into(),
            );
        }
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
            .begin(w.run.as_str(), &[w.run.to_string()], replay.done.len());
        for (i, s) in self.plan.steps.iter().enumerate() {
            if replay.done.contains_key(&s.address) {
                w.events.skipped(i + 1, s);
            }
        }
        let walked = self.walk(&mut journal, replay.done.clone()).await?;
        self.conclude(journal, &replay, walked, ending).await
    }

    /// Makes the journal's copy in the cluster exactly the journal here, now
    /// that this apply holds the lock (a new apply's first record, or a
    /// resumed one's that got ahead of the copy).
    async fn adopt(&self, journal: &mut Journal) -> Result<(), JournalError> {
        let mut guard = self.remote.lock().await;
        let Some(r) = guard.as_mut() else {
            return Ok(());
        };
        let copy = r.load().await?.unwrap_or_default();
        let here = std::fs::read_to_string(journal.path()).map_err(|e| JournalError::Read {
            path: journal.path().display().to_string(),
            message: e.to_string(),
        })?;
        if copy != here {
            r.reset(&here).await?;
        }
        journal.clear_pending();
        Ok(())
    }

    /// Copies the records written since the last time to the cluster.
    async fn flush(&self, journal: &mut Journal) -> Result<(), JournalError> {
        self.push(journal.take_pending()).await
    }

    async fn push(&self, pending: Vec<(u64, String)>) -> Result<(), JournalError> {
        if pending.is_empty() {
            return Ok(());
        }
        let mut guard = self.remote.lock().await;
        if let Some(r) = guard.as_mut() {
            for (seq, line) in pending {
                r.append(seq, &line).await?;
            }
        }
        Ok(())
    }

    /// The journal of this apply: created (and begun) for a new one,
    /// reopened with what it recorded for `--resume`.
    fn open_journal(
        &self,
        ending: &mut Ending,
    ) -> Result<(Journal, journal::Replay), JournalError> {
        let (origin, path, label) = (self.origin, self.path, self.label);
        if self.opts.resume {
            return Journal::reopen(path, label, origin.expansions);
        }
        let mut j = Journal::create(path, label, origin.expansions)?;
        *ending = Ending::Unfinished;
        j.record(&Record::Begin {
            run: self.w.run.to_string(),
            spec_file: origin.spec_file.into(),
            spec_text: origin.spec_text.into(),
            environment: origin.environment.map(str::to_string),
            plan: journal::store_plan(self.plan, origin.expansions),
        })?;
        Ok((j, journal::Replay::default()))
    }

    /// Runs the steps whose dependencies are done, up to the parallelism,
    /// until every step is done, one failed (the running ones finish), or
    /// an interrupt stops the apply. Each start and end is journalled
    /// before anything else sees it.
    async fn walk(
        &self,
        journal: &mut Journal,
        done: pgdata::Done,
    ) -> Result<Walked<'r>, ApplyError> {
        let (plan, w) = (self.plan, self.w);
        let mut st = Walked {
            done,
            failures: Vec::new(),
            applied: 0,
            clock: Downtime::new(plan),
            stopping: None,
            abandoned: Vec::new(),
        };
        let mut running: HashSet<usize> = HashSet::new();
        let mut futs = FuturesUnordered::new();
        let mut renew =
            tokio::time::interval(Duration::from_secs((lock::LEASE_SECONDS / 3) as u64));
        renew.tick().await;
        // Interrupts handled so far.
        let mut seen = self.interrupts.count();
        loop {
            if st.failures.is_empty() && st.stopping.is_none() {
                for i in self.ready(&st.done, &running) {
                    let s = &plan.steps[i];
                    crash_hook("before", i + 1);
                    journal.record(&Record::Started {
                        step: s.address.clone(),
                    })?;
                    w.events.started(i + 1, s);
                    st.clock.started(i);
                    running.insert(i);
                    let deps = inputs(s, &st.done);
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
            // The starts are in the cluster's copy before any step acts
            // (the futures run only once polled below).
            self.flush(journal).await?;
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
                    if self.on_interrupt(&mut st, &running, seen) {
                        // Again: stop at once. The running steps are dropped
                        // mid-way; each is idempotent and runs again on resume.
                        futs.clear();
                        break;
                    }
                    continue;
                }
            };
            running.remove(&i);
            self.settle(journal, &mut st, i, result, took)?;
            self.flush(journal).await?;
        }
        Ok(st)
    }

    /// The steps to start now: not done, not running, their dependencies
    /// done, as many as the parallelism leaves room for, in plan order.
    fn ready(&self, done: &pgdata::Done, running: &HashSet<usize>) -> Vec<usize> {
        let room = self.opts.parallelism.max(1).saturating_sub(running.len());
        self.plan
            .steps
            .iter()
            .enumerate()
            .filter(|(i, s)| {
                !done.contains_key(&s.address)
                    && !running.contains(i)
                    && s.depends_on.iter().all(|d| done.contains_key(d))
            })
            .map(|(i, _)| i)
            .take(room)
            .collect()
    }

    /// An interrupt: the first lets the running steps finish and starts
    /// nothing more; a second stops at once. Returns whether to stop now.
    fn on_interrupt(&self, st: &mut Walked<'_>, running: &HashSet<usize>, seen: usize) -> bool {
        let (plan, w) = (self.plan, self.w);
        let mut now: Vec<usize> = running.iter().copied().collect();
        now.sort_unstable();
        let steps: Vec<(usize, &crate::plan::Step)> =
            now.iter().map(|&i| (i + 1, &plan.steps[i])).collect();
        if st.stopping.is_none() && seen < 2 {
            st.stopping = Some(self.interrupts.signal());
            w.events
                .interrupt_received(self.interrupts.signal(), &steps);
            return false;
        }
        st.stopping.get_or_insert(self.interrupts.signal());
        w.events.progress_done();
        w.events.stopping_at_once(&steps);
        st.abandoned = now;
        true
    }

    /// A step ended: its outcome (or failure) journalled, then shown.
    fn settle(
        &self,
        journal: &mut Journal,
        st: &mut Walked<'_>,
        i: usize,
        result: Result<Outcome, StepError>,
        took: Duration,
    ) -> Result<(), JournalError> {
        let (s, w) = (&self.plan.steps[i], self.w);
        w.events.progress_done();
        st.clock.ended(i, took);
        match result {
            Ok(outcome) => {
                journal.record(&Record::Done {
                    step: s.address.clone(),
                    outcome: outcome.clone(),
                })?;
                let note = outcome.note();
                st.done.insert(s.address.clone(), outcome);
                st.applied += 1;
                w.events.done(i + 1, s, took, &note);
                crash_hook("after", i + 1);
            }
            Err(e) => {
                journal.record(&Record::Failed {
                    step: s.address.clone(),
                    error: e.to_string(),
                })?;
                w.events.failed(i + 1, s, &e);
                st.failures.push((i, e));
            }
        }
        Ok(())
    }

    /// An interrupt stopped the apply part-way: journalled, the world's
    /// state said, and the error that tells how to resume.
    async fn stopped(
        &self,
        journal: &mut Journal,
        done: &pgdata::Done,
        abandoned: &[usize],
        signal: &str,
    ) -> Result<ApplyError, JournalError> {
        let (plan, w, opts) = (self.plan, self.w, self.opts);
        let running: Vec<String> = abandoned
            .iter()
            .map(|&i| plan.steps[i].address.clone())
            .collect();
        journal.record(&Record::Interrupted {
            signal: signal.into(),
            running,
        })?;
        self.flush(journal).await?;
        let state = world_state(plan, done, abandoned);
        w.events
            .interrupted(signal, &state, &opts.resume_command, journal.path());
        Ok(ApplyError::Interrupted {
            signal: signal.into(),
            how: if abandoned.is_empty() {
                "after the steps it was running".into()
            } else {
                "at once (a second interrupt)".into()
            },
            state: state.join("\n  "),
            resume: opts.resume_command.clone(),
        })
    }

    /// How the walk ended: finished, interrupted part-way, stopped after
    /// the commit point, or rolled back.
    async fn conclude(
        &self,
        mut journal: Journal,
        replay: &journal::Replay,
        st: Walked<'_>,
        ending: &mut Ending,
    ) -> Result<Report, ApplyError> {
        let (plan, w, opts) = (self.plan, self.w, self.opts);
        let Walked {
            done,
            failures,
            applied,
            clock,
            stopping,
            abandoned,
        } = st;
        let all_done = plan.steps.iter().all(|s| done.contains_key(&s.address));
        if failures.is_empty() && !all_done {
            if let Some(signal) = stopping {
                return Err(self
                    .stopped(&mut journal, &done, &abandoned, signal)
                    .await?);
            }
        }
        if failures.is_empty() {
            journal.record(&Record::Finished)?;
            let pending = journal.take_pending();
            let archived = journal.close()?;
            self.push(pending).await?;
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
        }

        let commits = plan.commit_positions();
        let (failed, error) = &failures[0];
        let step = &plan.steps[*failed];
        if post_commit(plan, &commits, *failed) {
            w.events.finished(
                "Apply stopped after the commit point; nothing was rolled back.",
                false,
            );
            return Err(ApplyError::Failed {
                address: step.address.clone(),
                cause: StepFailure(error.clone()),
                aftermath: vec![Aftermath::PastCommit],
                help: format!(
                    "fix the cause and run `{}` to finish the remaining steps (journal: {})",
                    opts.resume_command,
                    journal.path().display()
                ),
            });
        }
        journal.record(&Record::RollbackStarted {
            reason: error.to_string(),
        })?;
        self.flush(&mut journal).await?;
        self.mark(Phase::RollingBack).await;
        w.events.note("Rolling back:");
        let failed: Vec<usize> = failures.iter().map(|(i, _)| *i).collect();
        let r = self
            .roll_back(
                journal,
                &done,
                &failed,
                (&step.address, error),
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
        self.flush(&mut journal).await?;
        self.roll_back(
            journal,
            &replay.done,
            &failed,
            (address, &StepError::new(message)),
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
        (address, cause): (&str, &StepError),
        already: &BTreeSet<String>,
    ) -> Result<Report, ApplyError> {
        let plan = self.plan;
        let mut tally = Tally::default();
        // An interrupt lets the rollback finish; the second after the
        // apply's first stops it at once.
        let mut seen = self.interrupts.count();
        let stop_at = (seen + 1).max(2);
        for i in rollback_order(plan, done, failed) {
            let s = &plan.steps[i];
            if already.contains(&s.address) {
                continue;
            }
            let Some(result) = self.undo_one(s, done, &mut seen, stop_at).await else {
                return Err(self.stopped_rolling_back(&mut journal, s, i).await?);
            };
            crash_hook("undone", i + 1);
            self.record_undo(&mut journal, s, result, &mut tally)?;
            self.flush(&mut journal).await?;
        }
        Err(self
            .rollback_ended(journal, tally, already, (address, cause))
            .await?)
    }

    /// One compensation, run to its end unless interrupts reach `stop_at`
    /// (`None`); an interrupt before that is said and the undo goes on.
    async fn undo_one(
        &self,
        s: &crate::plan::Step,
        done: &pgdata::Done,
        seen: &mut usize,
        stop_at: usize,
    ) -> Option<Result<Undo, StepError>> {
        let w = self.w;
        let source = source_of(self.plan, &s.placement);
        let mut compensation =
            std::pin::pin!(dispatch::undo(w, s, done.get(&s.address), done, source));
        loop {
            tokio::select! {
                r = &mut compensation => return Some(r),
                _ = self.interrupts.reached(*seen + 1) => {
                    *seen = self.interrupts.count();
                    if *seen >= stop_at {
                        return None;
                    }
                    w.events.note(&format!(
                        "Interrupt received ({}): finishing the rollback (undoing {}); interrupt again to stop at once.",
                        self.interrupts.signal(),
                        s.address
                    ));
                }
            }
        }
    }

    /// A second interrupt stopped the rollback while undoing step `i`:
    /// journalled, and the error that says `--resume` finishes it.
    async fn stopped_rolling_back(
        &self,
        journal: &mut Journal,
        s: &crate::plan::Step,
        i: usize,
    ) -> Result<ApplyError, JournalError> {
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
        self.flush(journal).await?;
        self.w
            .events
            .interrupted(signal, &left, &self.opts.resume_command, journal.path());
        Ok(ApplyError::Interrupted {
            signal: signal.into(),
            how: "in the middle of its rollback".into(),
            state: left.join("\n  "),
            resume: self.opts.resume_command.clone(),
        })
    }

    /// A compensation's result: journalled, shown, and counted.
    fn record_undo(
        &self,
        journal: &mut Journal,
        s: &crate::plan::Step,
        result: Result<Undo, StepError>,
        tally: &mut Tally,
    ) -> Result<(), JournalError> {
        let w = self.w;
        match result {
            Ok(Undo::Undone(detail)) => {
                journal.record(&Record::Compensated {
                    step: s.address.clone(),
                    detail: detail.clone(),
                })?;
                w.events.rollback("undone", &s.address, &detail);
                tally.undone.push(detail);
            }
            Ok(Undo::Kept(reason)) => {
                journal.record(&Record::NotCompensated {
                    step: s.address.clone(),
                    reason: reason.clone(),
                })?;
                w.events.rollback("kept", &s.address, &reason);
                tally.kept.push(reason);
            }
            Ok(Undo::Nothing) => {}
            Err(e) => {
                journal.record(&Record::NotCompensated {
                    step: s.address.clone(),
                    reason: e.to_string(),
                })?;
                w.events.rollback_failed(&s.address, &e);
                tally.broken.push(NotUndone {
                    address: s.address.clone(),
                    cause: StepFailure(e),
                });
            }
        }
        Ok(())
    }

    /// The rollback's end: the original topology back (the journal is
    /// archived), or what was not undone and how to finish. Either way the
    /// apply failed, at `failure` (its step and error): the error it ends with.
    async fn rollback_ended(
        &self,
        mut journal: Journal,
        tally: Tally,
        already: &BTreeSet<String>,
        (address, cause): (&str, &StepError),
    ) -> Result<ApplyError, JournalError> {
        let w = self.w;
        let Tally {
            undone,
            kept,
            broken,
        } = tally;
        let mut lines = String::new();
        if broken.is_empty() && !already.is_empty() {
            lines.push_str(&format!(
                "\n  undone before the interruption: {} step(s)",
                already.len()
            ));
        }
        for u in &undone {
            lines.push_str(&format!("\n  undone: {u}"));
        }
        for k in &kept {
            lines.push_str(&format!("\n  kept: {k}"));
        }
        let (aftermath, help) = if broken.is_empty() {
            journal.record(&Record::RolledBack)?;
            let pending = journal.take_pending();
            let archived = journal.close()?;
            self.push(pending).await?;
            lines.push_str(&format!("\n  journal: {}", archived.display()));
            w.events
                .finished("Apply failed and was rolled back.", false);
            (
                Aftermath::RolledBack { lines },
                "the plan can be applied again once the cause is fixed".to_string(),
            )
        } else {
            w.events
                .finished("Apply failed; the rollback needs attention.", false);
            let help = format!(
                "the journal {} says what was and was not undone; fix the cause, then `{}` rolls back the rest",
                journal.path().display(),
                self.opts.resume_command
            );
            let not_undone = broken;
            (Aftermath::Incomplete { lines, not_undone }, help)
        };
        Ok(ApplyError::Failed {
            address: address.to_string(),
            cause: StepFailure(cause.clone()),
            aftermath: vec![aftermath],
            help,
        })
    }
}

/// True for the error of an apply that rolled back completely.
fn rolled_back(e: &ApplyError) -> bool {
    match e {
        ApplyError::Failed { aftermath, .. } => {
            matches!(aftermath.as_slice(), [Aftermath::RolledBack { .. }])
        }
        _ => false,
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered(e: &ApplyError) -> String {
        let mut out = String::new();
        miette::GraphicalReportHandler::new_themed(miette::GraphicalTheme::unicode_nocolor())
            .with_width(10_000)
            .render_report(&mut out, e)
            .expect("render");
        out
    }

    /// A failure of pgplan's own code under a diagnostic of a dependency.
    #[derive(Debug, thiserror::Error, miette::Diagnostic)]
    #[error("pg_restore made no progress for 30s")]
    #[diagnostic(code(pgplan::pg::stalled), help("raise backup.stallTimeout"))]
    struct Stalled;

    #[derive(Debug, thiserror::Error, miette::Diagnostic)]
    #[error("the restored rows do not match the backup")]
    #[diagnostic(code(pgplan::pg::mismatch), help("Drop that database, then resume"))]
    struct Mismatch;

    #[test]
    fn a_failure_keeps_the_steps_code_and_says_what_was_not_undone() {
        let e = ApplyError::Failed {
            address: "pg/app/db/restore".into(),
            cause: StepFailure(Stalled.into()),
            aftermath: vec![Aftermath::Incomplete {
                lines: "\n  undone: deleted Service default/pg".into(),
                not_undone: vec![NotUndone {
                    address: "k8s/default/StatefulSet/pg".into(),
                    cause: StepFailure(Mismatch.into()),
                }],
            }],
            help: "fix the cause, then resume".into(),
        };
        use miette::Diagnostic;
        let cause = e
            .diagnostic_source()
            .expect("the step's error is the cause");
        assert_eq!(
            cause.code().map(|c| c.to_string()).as_deref(),
            Some("pgplan::pg::stalled")
        );
        let related: Vec<String> = e
            .related()
            .expect("the aftermath is related")
            .map(|d| d.code().map(|c| c.to_string()).unwrap_or_default())
            .collect();
        assert_eq!(related, ["pgplan::apply::rollback_incomplete"]);
        assert!(!rolled_back(&e), "an unfinished rollback is not a rollback");

        let text = rendered(&e);
        for part in [
            "pgplan::apply::failed",
            "step pg/app/db/restore failed",
            "pg_restore made no progress for 30s (help: raise backup.stallTimeout)",
            "help: fix the cause, then resume",
            "The rollback did not finish:",
            "undone: deleted Service default/pg",
            "pgplan::apply::not_undone",
            "NOT undone: k8s/default/StatefulSet/pg",
            "the restored rows do not match the backup (help: Drop that database, then resume)",
        ] {
            assert!(text.contains(part), "{part:?} missing from:\n{text}");
        }
        let cause_line = text.find("pg_restore made no progress").unwrap();
        assert!(
            cause_line < text.find("The rollback did not finish").unwrap(),
            "the cause comes before what the rollback did:\n{text}"
        );
        assert_eq!(
            text.matches("pg_restore made no progress").count(),
            1,
            "the cause is said once:\n{text}"
        );
    }

    #[test]
    fn only_a_complete_rollback_gives_the_lock_back() {
        let failed = |aftermath| ApplyError::Failed {
            address: "a".into(),
            cause: StepFailure(StepError::new("x")),
            aftermath: vec![aftermath],
            help: String::new(),
        };
        assert!(rolled_back(&failed(Aftermath::RolledBack {
            lines: String::new()
        })));
        assert!(!rolled_back(&failed(Aftermath::PastCommit)));
    }
}
