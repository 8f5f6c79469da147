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

use crate::apply::{self, events, journal, Options, Origin, World};
use crate::ops::observe::{self, ClusterOptions};
use crate::ops::plan as planop;
use crate::ops::{self, OpsError, SpecSource};
use crate::plan::SavedPlan;
use crate::redact::Redactor;
use crate::render::{self, Format, RenderOptions};
use crate::spec::{Source, Spec, Target};

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
fn lock_namespaces(spec: &Spec) -> BTreeMap<String, String> {
    spec.placements
        .iter()
        .map(|p| {
            let s = p.spec();
            let ns = match (&s.source, &s.target) {
                (Source::Kubernetes(k), _) => k.namespace.clone(),
                (_, Target::Kubernetes(k)) => {
                    k.namespace.clone().unwrap_or_else(|| "default".into())
                }
                _ => s
                    .consumers
                    .iter()
                    .find_map(|c| c.namespace.clone())
                    .unwrap_or_else(|| "default".into()),
            };
            (p.name().to_string(), ns)
        })
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
        "{plan_text}\nDo you want to apply this plan? Only 'yes' will be accepted."
    );
    let _ = write!(out, "  Enter a value: ");
    let _ = out.flush();
    let mut line = String::new();
    let _ = stdin.lock().read_line(&mut line);
    Ok(line.trim() == "yes")
}

/// Compare a fresh plan with a saved one; the differences, in words.
fn drift(saved: &serde_json::Value, fresh: &serde_json::Value) -> Vec<String> {
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

pub fn run(opts: &ApplyOptions) -> Result<(), OpsError> {
    let rt = observe::runtime()?;
    rt.block_on(run_async(opts))
}

async fn run_async(opts: &ApplyOptions) -> Result<(), OpsError> {
    // The spec: from the saved plan, or the file.
    let saved: Option<SavedPlan> = match &opts.plan_file {
        Some(path) => {
            let bytes = ops::read(path)?;
            Some(
                serde_json::from_slice(&bytes).map_err(|e| OpsError::BadPlanFile {
                    path: path.display().to_string(),
                    message: e.to_string(),
                })?,
            )
        }
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
            (spec, s.spec_text.clone(), s.environment.clone())
        }
        None => {
            let (spec, text) = opts.source.load(opts.environment.as_deref(), false)?;
            (spec, text, opts.environment.clone())
        }
    };
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
    let cluster = crate::cluster::Cluster::connect(
        opts.cluster.kubeconfig.as_deref(),
        opts.cluster.context.as_deref(),
    )
    .await?;
    let names: Vec<&str> = spec.placements.iter().map(|p| p.name()).collect();

    // A half-finished apply is resumed, never planned over: the world is
    // mid-change and a fresh plan of it means nothing.
    let journal_path = journal::path_for(&opts.state_dir, &names);
    if !opts.resume && journal_path.exists() {
        if let Ok(r) = journal::read(&journal_path) {
            if r.begin.is_some() && !r.finished && !r.rolled_back {
                return Err(
                    apply::ApplyError::Journal(journal::JournalError::Unfinished {
                        placements: names.join(", "),
                        path: journal_path.display().to_string(),
                    })
                    .into(),
                );
            }
        }
    }

    let plan = if opts.resume {
        let path = journal::path_for(&opts.state_dir, &names);
        let replay = journal::read(&path).map_err(|_| {
            OpsError::from(apply::ApplyError::Journal(
                journal::JournalError::NothingToResume {
                    placements: names.join(", "),
                    dir: opts.state_dir.display().to_string(),
                },
            ))
        })?;
        let Some((_, _, _, _, stored)) = replay.begin else {
            return Err(
                apply::ApplyError::Journal(journal::JournalError::NothingToResume {
                    placements: names.join(", "),
                    dir: opts.state_dir.display().to_string(),
                })
                .into(),
            );
        };
        let vars: Vec<String> = spec.expansions.iter().map(|(v, _)| v.clone()).collect();
        journal::load_plan(&stored, &vars, &ops::env_lookup).map_err(apply::ApplyError::from)?
    } else {
        let files = opts.source.files(&spec);
        let (observed, _) = observe::observe(&spec, &opts.cluster).await?;
        let plan = crate::diff::plan(
            &spec,
            &crate::diff::Inputs {
                observed: &observed,
                env: &ops::env_lookup,
                files: &files,
            },
        )?;
        planop::dry_run(&cluster, &plan).await?;
        if let Some(s) = &saved {
            let fresh_json =
                render::render(&plan, Format::Json, &redactor, &RenderOptions::default())?;
            let fresh: serde_json::Value = serde_json::from_str(&fresh_json).unwrap_or_default();
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
        } else if !opts.auto_approve {
            let text = render::render(
                &plan,
                Format::Text,
                &redactor,
                &RenderOptions { color: opts.color },
            )?;
            if !approve(&text)? {
                println!("Apply cancelled.");
                return Ok(());
            }
        }
        plan
    };
    if plan.steps.is_empty() {
        println!("No changes. The live state matches the spec.");
        return Ok(());
    }

    let events = events::Events::new(mode, redactor.clone(), plan.steps.len());
    let rds_region = spec.placements.iter().find_map(|p| match &p.spec().target {
        Target::Rds(r) => Some(r.region.clone()),
        Target::Kubernetes(_) => None,
    });
    let rds = match rds_region {
        Some(region) => Some(crate::aws::Rds::connect(&region).await?),
        None => None,
    };
    let world = World {
        cluster: Some(&cluster),
        rds: rds.as_ref(),
        lookup: &|v: &str| std::env::var(v).ok(),
        base_dir,
        events: &events,
        run: crate::apply::lock::new_id(),
        stall_timeouts: spec
            .placements
            .iter()
            .map(|p| {
                let secs = p.spec().backup.stall_seconds();
                (p.name().to_string(), std::time::Duration::from_secs(secs))
            })
            .collect(),
    };
    let origin = Origin {
        spec_file: &spec.file.name,
        spec_text: &spec_text,
        environment: environment.as_deref(),
        expansions: &spec.expansions,
        lock_namespaces: lock_namespaces(&spec),
    };
    let options = Options {
        parallelism: opts.parallelism,
        lock_timeout: opts.lock_timeout,
        state_dir: opts.state_dir.clone(),
        resume: opts.resume,
    };
    apply::execute(&plan, &origin, &world, &options).await?;
    Ok(())
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
        let c = crate::cluster::Cluster::connect(
            cluster.kubeconfig.as_deref(),
            cluster.context.as_deref(),
        )
        .await?;
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
