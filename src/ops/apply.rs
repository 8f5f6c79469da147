//! `pgplan apply`: plan (or take a saved plan, or the journal of an
//! interrupted apply), ask for approval, and execute.
//!
//! A saved plan is trusted only as far as the world still matches it: the
//! spec it carries is planned again against the live state, and the apply
//! refuses — having changed nothing — unless the new plan is the saved one.

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use crate::apply::interrupt::Interrupts;
use crate::apply::lock::{Locks, Phase, Takeover};
use crate::apply::{self, events, journal, Options, Origin, World};
use crate::ops::observe::{self, ClusterOptions};
use crate::ops::plan as planop;
use crate::ops::{self, OpsError, SpecSource};
use crate::plan::SavedPlan;
use crate::redact::Redactor;
use crate::render::{self, Format, RenderOptions};
use crate::spec::{Spec, Target};

pub struct ApplyOptions {
    pub source: SpecSource,
    pub plan_file: Option<PathBuf>,
    pub environment: Option<String>,
    pub cluster: ClusterOptions,
    pub auto_approve: bool,
    pub resume: bool,
    pub parallelism: usize,
    pub lock_timeout: Duration,
    pub state_dir: PathBuf,
    /// Where the journal lives besides the state directory.
    pub state: apply::State,
    pub json: bool,
    pub color: bool,
}

/// Parse `30s`, `5m`, `1h`, `0`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, mult) = match s.chars().last()? {
        's' => (&s[..s.len() - 1], 1),
        'm' => (&s[..s.len() - 1], 60),
        'h' => (&s[..s.len() - 1], 3600),
        c if c.is_ascii_digit() => (s, 1),
        _ => return None,
    };
    num.parse::<u64>()
        .ok()
        .map(|n| Duration::from_secs(n * mult))
}

/// The namespace holding each placement's lock.
pub fn lock_namespaces(spec: &Spec) -> BTreeMap<String, String> {
    spec.placements
        .iter()
        .map(|p| (p.name().to_string(), apply::lock::namespace(p)))
        .collect()
}

fn approve(plan_text: &str) -> Result<bool, OpsError> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(OpsError::Approval);
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "{plan_text}\nDo you want to apply this plan? Only 'yes' will be accepted.\n(pgplan takes the lock once you answer, plans again under it, and applies only if nothing moved meanwhile.)"
    );
    let _ = write!(out, "  Enter a value: ");
    let _ = out.flush();
    let mut line = String::new();
    let _ = stdin.lock().read_line(&mut line);
    Ok(line.trim() == "yes")
}

/// Compare a fresh plan with an approved (or saved) one, both as the JSON
/// plan: the differences, in words. Empty when they are the same plan.
pub fn drift(saved: &serde_json::Value, fresh: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    let fp = |v: &serde_json::Value| -> BTreeMap<String, String> {
        v["fingerprints"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                    .collect()
            })
            .unwrap_or_default()
    };
    let (a, b) = (fp(saved), fp(fresh));
    for (k, v) in &a {
        match b.get(k) {
            Some(w) if w == v => {}
            Some(w) => out.push(format!("{k} changed (version {v} → {w})")),
            None => out.push(format!("{k} is no longer read by the plan")),
        }
    }
    for k in b.keys().filter(|k| !a.contains_key(*k)) {
        out.push(format!("{k} is new"));
    }
    // Applies the plans saw running or unfinished.
    let applies = |v: &serde_json::Value| -> Vec<(String, String)> {
        v["unfinished_applies"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|u| {
                (
                    u["placement"].as_str().unwrap_or("").to_string(),
                    u["summary"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    };
    let (ua, ub) = (applies(saved), applies(fresh));
    for (p, summary) in ua.iter().filter(|x| !ub.contains(x)) {
        out.push(format!("{summary} — no longer (placement {p})"));
    }
    for (_, summary) in ub.iter().filter(|x| !ua.contains(x)) {
        out.push(format!("{summary} — now"));
    }
    let steps = |v: &serde_json::Value| -> Vec<serde_json::Value> {
        v["steps"].as_array().cloned().unwrap_or_default()
    };
    let (sa, sb) = (steps(saved), steps(fresh));
    if sa != sb {
        let addr = |s: &[serde_json::Value]| -> Vec<String> {
            s.iter()
                .map(|x| x["address"].as_str().unwrap_or("").to_string())
                .collect()
        };
        let (aa, ab) = (addr(&sa), addr(&sb));
        for x in aa.iter().filter(|x| !ab.contains(x)) {
            out.push(format!("step {x} would no longer run"));
        }
        for x in ab.iter().filter(|x| !aa.contains(x)) {
            out.push(format!("step {x} would now run"));
        }
        if aa == ab {
            out.push("the steps are the same but their contents differ".into());
        }
    }
    out
}

/// A word of the shell, quoted when it needs to be.
fn shell_word(w: &str) -> String {
    let plain = !w.is_empty()
        && w.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_./:=@%+,-".contains(c));
    if plain {
        w.to_string()
    } else {
        format!("'{}'", w.replace('\'', r"'\''"))
    }
}

/// The exact command that resumes this apply: the same spec (absolute),
/// environment, state directory and cluster.
fn resume_command(opts: &ApplyOptions, spec_file: &str) -> String {
    let abs = |p: &std::path::Path| {
        std::path::absolute(p)
            .unwrap_or_else(|_| p.to_path_buf())
            .display()
            .to_string()
    };
    let mut words: Vec<String> = vec!["pgplan".into(), "apply".into()];
    match &opts.source {
        SpecSource::Example(e) => words.extend(["--example".into(), e.name.to_string()]),
        SpecSource::File(f) => {
            let file = if opts.plan_file.is_some() {
                PathBuf::from(spec_file)
            } else {
                f.clone()
            };
            words.extend(["-f".into(), abs(&file)]);
        }
    }
    if let Some(e) = &opts.environment {
        words.extend(["--env".into(), e.clone()]);
    }
    words.extend(["--state-dir".into(), abs(&opts.state_dir)]);
    if opts.state == apply::State::Local {
        words.extend(["--state".into(), "local".into()]);
    }
    if let Some(k) = &opts.cluster.kubeconfig {
        words.extend(["--kubeconfig".into(), abs(k)]);
    }
    if let Some(c) = &opts.cluster.context {
        words.extend(["--context".into(), c.clone()]);
    }
    words.push("--resume".into());
    // Backups are found relative to the directory the apply ran in.
    let cwd = std::env::current_dir()
        .map(|d| d.display().to_string())
        .unwrap_or_else(|_| ".".into());
    format!(
        "cd {} && {}",
        shell_word(&cwd),
        words
            .iter()
            .map(|w| shell_word(w))
            .collect::<Vec<_>>()
            .join(" ")
    )
}

/// Observe the world and plan the spec against it. `own_lock` is this
/// apply's lock ID once it holds the locks: its own Lease is not an
/// apply in progress.
async fn plan_now(
    spec: &Spec,
    opts: &ApplyOptions,
    own_lock: Option<&str>,
) -> Result<crate::plan::Plan, OpsError> {
    let files = opts.source.files(spec);
    let (observed, _) = observe::observe_as(spec, &opts.cluster, own_lock).await?;
    Ok(crate::diff::plan(
        spec,
        &crate::diff::Inputs {
            observed: &observed,
            env: &ops::env_lookup,
            files: &files,
        },
    )?)
}

/// Apply refuses a plan with warnings the spec does not acknowledge
/// (objects a GitOps tool would put back), before asking for approval.
fn unacknowledged(plan: &crate::plan::Plan) -> Result<(), OpsError> {
    let blocking = plan.blocking_warnings();
    if blocking.is_empty() {
        return Ok(());
    }
    let findings: Vec<String> = blocking
        .iter()
        .map(|(n, s, w)| format!("#{n} {} [{}]: {}", s.address, w.code, w.message))
        .collect();
    let mut helps: Vec<&str> = blocking.iter().map(|(_, _, w)| w.help.as_str()).collect();
    helps.dedup();
    Err(OpsError::Unacknowledged {
        findings: findings.join("\n  "),
        help: helps.join("; "),
    })
}

pub fn run(opts: &ApplyOptions) -> Result<(), OpsError> {
    let rt = observe::runtime()?;
    rt.block_on(run_async(opts))
}

async fn run_async(opts: &ApplyOptions) -> Result<(), OpsError> {
    // The spec: from the saved plan, or the file.
    let saved: Option<SavedPlan> = match &opts.plan_file {
        Some(path) => Some(planop::read_saved(path)?),
        None => None,
    };
    let (spec, spec_text, environment) = match &saved {
        Some(s) => {
            let opts_load = crate::spec::LoadOptions {
                environment: s.environment.as_deref(),
                all_environments: false,
                lookup: &ops::env_lookup,
            };
            let spec = crate::spec::load(
                crate::spec::SourceFile::new(s.spec_file.clone(), s.spec_text.as_str()),
                &opts_load,
            )?;
            ops::remember(&spec);
            (spec, s.spec_text.clone(), s.environment.clone())
        }
        None => {
            let (spec, text) = opts.source.load(opts.environment.as_deref(), false)?;
            (spec, text, opts.environment.clone())
        }
    };
    // Passwords are read at apply, and only here: a missing one stops the
    // apply before anything is touched.
    spec.require_passwords(&ops::env_lookup)?;
    let redactor = Redactor::new(spec.secrets.iter().cloned());
    let base_dir = ops::spec_dir(&spec.file.name);
    let mode = if opts.json {
        events::Mode::Json
    } else {
        events::Mode::Human {
            color: opts.color,
            tty: std::io::stdout().is_terminal(),
        }
    };
    let cluster = opts.cluster.connect().await?;
    let names: Vec<&str> = spec.placements.iter().map(|p| p.name()).collect();
    let namespaces = lock_namespaces(&spec);
    let placements: Vec<(String, String)> = namespaces.clone().into_iter().collect();
    let run_id = crate::apply::lock::new_id();

    // A half-finished apply is resumed, never planned over: the world is
    // mid-change and a fresh plan of it means nothing. A journal that
    // cannot be read is not taken for a finished one.
    let journal_path = journal::path_for(&opts.state_dir, &names);
    // The journal's copy in the cluster, beside the (first) Lease. For
    // `--resume`, a journal here that is missing or behind it is brought up
    // to date first, so that an apply begun on another machine is resumed
    // here. A fresh apply leaves this directory alone: the Lease already
    // stops it at an unfinished apply, naming where its journal is.
    let mut remote = match (opts.state, placements.first()) {
        (apply::State::Cluster, Some((_, ns))) => {
            Some(apply::remote::Remote::new(&cluster, ns, &names))
        }
        _ => None,
    };
    if let Some(r) = remote.as_mut().filter(|_| opts.resume) {
        apply::remote::sync_local(r, &journal_path)
            .await
            .map_err(apply::ApplyError::from)?;
    }
    if !opts.resume && journal_path.exists() {
        let r = journal::read(&journal_path).map_err(apply::ApplyError::from)?;
        if r.unfinished() {
            return Err(
                apply::ApplyError::Journal(journal::JournalError::Unfinished {
                    placements: names.join(", "),
                    path: journal_path.display().to_string(),
                })
                .into(),
            );
        }
    }

    let rds_region = spec.placements.iter().find_map(|p| match &p.spec().target {
        Target::Rds(r) => Some(r.region.clone()),
        Target::Kubernetes(_) => None,
    });
    let origin = Origin {
        spec_file: &spec.file.name,
        spec_text: &spec_text,
        environment: environment.as_deref(),
        expansions: &spec.expansions,
    };
    let options = Options {
        parallelism: opts.parallelism,
        state_dir: opts.state_dir.clone(),
        resume: opts.resume,
        resume_command: resume_command(opts, &spec.file.name),
        state: opts.state,
    };

    let (plan, events, locks, interrupts) = if opts.resume {
        let replay = match journal::read(&journal_path) {
            Ok(r) => r,
            Err(journal::JournalError::Read { .. }) if !journal_path.exists() => {
                journal::Replay::default()
            }
            Err(e) => return Err(apply::ApplyError::from(e).into()),
        };
        let Some((_, _, _, _, stored)) = replay.begin.clone().filter(|_| replay.unfinished())
        else {
            return Err(
                apply::ApplyError::Journal(journal::JournalError::NothingToResume {
                    placements: names.join(", "),
                    dir: opts.state_dir.display().to_string(),
                })
                .into(),
            );
        };
        let vars: Vec<String> = spec.expansions.iter().map(|(v, _)| v.clone()).collect();
        let plan = journal::load_plan(&stored, &vars, &ops::env_lookup)
            .map_err(apply::ApplyError::from)?;
        let events = events::Events::new(mode, redactor.clone(), plan.steps.len());
        events.note(&state_note(remote.as_ref(), &journal_path));
        let interrupts = Interrupts::install();
        let locks = take_locks(
            &cluster,
            &placements,
            &run_id,
            opts.lock_timeout,
            Takeover::Resume,
            &events,
            &interrupts,
        )
        .await?;
        (plan, events, locks, interrupts)
    } else {
        let plan = plan_now(&spec, opts, None).await?;
        planop::dry_run(&cluster, &plan).await?;
        // An apply that is not running (killed, stopped, or only its
        // bookkeeping left) is for `--resume` or a person, not for a plan
        // made over it. A running one is waited for at the lock.
        if plan.unfinished.iter().any(|u| !u.is_running()) {
            return Err(OpsError::unfinished(&plan));
        }
        unacknowledged(&plan)?;
        if let Some(e) = OpsError::preflight(&plan) {
            return Err(e);
        }
        let fresh_json = render::render(&plan, Format::Json, &redactor, &RenderOptions::default())?;
        let fresh: serde_json::Value = serde_json::from_str(&fresh_json).unwrap_or_default();
        let approved = match &saved {
            Some(s) => {
                let differences = drift(&s.plan, &fresh);
                if !differences.is_empty() {
                    return Err(OpsError::StalePlan {
                        file: opts
                            .plan_file
                            .clone()
                            .unwrap_or_default()
                            .display()
                            .to_string(),
                        differences: differences.join("\n  "),
                    });
                }
                s.plan.clone()
            }
            None => fresh,
        };
        if !plan.has_changes() && !plan.is_blocked() {
            println!("No changes. The live state matches the spec.");
            return Ok(());
        }
        if saved.is_none() && !opts.auto_approve {
            let text = render::render(
                &plan,
                Format::Text,
                &redactor,
                &RenderOptions { color: opts.color },
            )?;
            let text = format!("{text}\n{}\n", state_note(remote.as_ref(), &journal_path));
            if !approve(&text)? {
                println!("Apply cancelled.");
                return Ok(());
            }
        }
        apply::hold_before_lock().await;
        let events = events::Events::new(mode, redactor.clone(), plan.steps.len());
        events.note(&state_note(remote.as_ref(), &journal_path));
        let interrupts = Interrupts::install();
        let locks = take_locks(
            &cluster,
            &placements,
            &run_id,
            opts.lock_timeout,
            Takeover::Fresh,
            &events,
            &interrupts,
        )
        .await?;
        // The plan that runs is made under the lock, and must be the one
        // approved: another apply may have moved the world while this one
        // waited for the lock, or someone while a person read the plan.
        let again = tokio::select! {
            p = plan_now(&spec, opts, Some(&run_id)) => Some(p),
            _ = interrupts.reached(1) => None,
        };
        let checked = match again {
            None => Err(OpsError::InterruptedBeforeChanges {
                signal: interrupts.signal().into(),
            }),
            Some(Err(e)) => Err(e),
            Some(Ok(p)) if p.is_blocked() => Err(OpsError::unfinished(&p)),
            Some(Ok(p)) => {
                let json = render::render(&p, Format::Json, &redactor, &RenderOptions::default())?;
                let now: serde_json::Value = serde_json::from_str(&json).unwrap_or_default();
                let differences = drift(&approved, &now);
                if differences.is_empty() {
                    Ok(p)
                } else {
                    let waited = locks.waited_for();
                    Err(OpsError::Moved {
                        when: if waited.is_empty() {
                            "after the plan was made".into()
                        } else {
                            format!("while waiting for the lock (held by {})", waited.join(", "))
                        },
                        differences: differences.join("\n  "),
                    })
                }
            }
        };
        let plan = match checked {
            Ok(p) => p,
            Err(e) => {
                locks.release(&cluster).await;
                return Err(e);
            }
        };
        (plan, events, locks, interrupts)
    };

    let rds = match rds_region {
        Some(region) => match crate::aws::Rds::connect(&region).await {
            Ok(r) => Some(r),
            Err(e) => {
                if !opts.resume {
                    locks.release(&cluster).await;
                } else {
                    locks.mark(&cluster, Phase::Stopped, None, None).await;
                }
                return Err(e.into());
            }
        },
        None => None,
    };
    let world = World {
        cluster: Some(&cluster),
        rds: rds.as_ref(),
        lookup: &|v: &str| std::env::var(v).ok(),
        base_dir,
        events: &events,
        run: crate::addr::RunId::of_lock(&run_id),
        stall_timeouts: spec
            .placements
            .iter()
            .map(|p| {
                let secs = p.spec().backup.stall_seconds();
                (p.name().to_string(), std::time::Duration::from_secs(secs))
            })
            .collect(),
        kept: Default::default(),
        clients: Default::default(),
    };
    let applied = apply::execute(
        &plan,
        &origin,
        &world,
        &options,
        &locks,
        &interrupts,
        remote,
    )
    .await;
    crate::apply::remove_clients(&world).await;
    applied?;
    Ok(())
}

/// Where this apply keeps its journal, as it says before it starts.
fn state_note(remote: Option<&apply::remote::Remote<'_>>, journal: &std::path::Path) -> String {
    match remote {
        Some(r) => format!(
            "State: the journal is kept in the cluster ({}) and in {}: `--resume` and rollback work from any machine with this kubeconfig.",
            r.describe(),
            journal.display()
        ),
        None => format!(
            "State: the journal is kept in {} only (--state local): resume this apply from this machine.",
            journal.display()
        ),
    }
}

/// Take every placement's lock, saying when another apply holds one and
/// this one waits; an interrupt while waiting gives up (nothing changed).
async fn take_locks(
    cluster: &crate::cluster::Cluster,
    placements: &[(String, String)],
    id: &str,
    timeout: Duration,
    takeover: Takeover,
    events: &events::Events,
    interrupts: &Interrupts,
) -> Result<Locks, OpsError> {
    let waiting = |placement: &str, holder: &str| {
        events.note(&format!(
            "Waiting for the lock of {placement}, held by {holder} (up to {} s, --lock-timeout)…",
            timeout.as_secs()
        ));
    };
    let taken = tokio::select! {
        l = Locks::acquire(cluster, placements, id, timeout, takeover, &waiting) => Some(l),
        _ = interrupts.reached(1) => None,
    };
    match taken {
        Some(l) => Ok(l.map_err(apply::ApplyError::from)?),
        None => {
            // Dropped mid-acquire: a lease this apply may just have created
            // is its own, and changed nothing.
            for (placement, ns) in placements {
                let r = crate::apply::lock::lease_ref(ns, placement);
                if let Ok(Some(l)) = cluster.get(&r).await {
                    if l["spec"]["holderIdentity"].as_str() == Some(id) {
                        let _ = cluster.delete(&r, crate::cluster::Write::Apply).await;
                    }
                }
            }
            Err(OpsError::InterruptedBeforeChanges {
                signal: interrupts.signal().into(),
            })
        }
    }
}

/// `pgplan force-unlock ID`.
pub fn force_unlock(
    source: &SpecSource,
    environment: Option<&str>,
    cluster: &ClusterOptions,
    id: &str,
) -> Result<String, OpsError> {
    let (spec, _) = source.load(environment, false)?;
    let namespaces = lock_namespaces(&spec);
    observe::runtime()?.block_on(async {
        let c = cluster.connect().await?;
        let mut released = Vec::new();
        let mut last_err = None;
        for (placement, ns) in &namespaces {
            match crate::apply::lock::force_unlock(&c, ns, placement, id).await {
                Ok(()) => released.push(placement.clone()),
                Err(e) => last_err = Some(e),
            }
        }
        match (released.is_empty(), last_err) {
            (false, _) => Ok(format!(
                "Released the lock of {} held by {id}.",
                released.join(", ")
            )),
            (true, Some(e)) => Err(apply::ApplyError::from(e).into()),
            (true, None) => Ok("Nothing to unlock.".to_string()),
        }
    })
}
