//! `pgplan status`: what pgplan left where, read from the cluster (and the
//! backup directories on this machine), not from the journal: the recovery
//! path when a journal is damaged or lost. Per placement: its Lease and the
//! holder's notes, the source and target workloads, the consumers with
//! their `pgplan.dev/quiesced-replicas`, the volumes of the namespace and
//! their reclaim policies, every object pgplan created (labelled
//! `pgplan.dev/placement`), servers still tuned for loading, the backups on
//! disk, and what the local journal says (or why it cannot be trusted).
//! docs/recovery.md says what to do with it.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::apply::journal;
use crate::cluster;
use crate::observed::{at, labels, str_at, ObjectKey};
use crate::ops::observe::{self, ClusterOptions};
use crate::ops::{OpsError, SpecSource};
use crate::plan::{ObjectRef, QUIESCED_ANNOTATION};
use crate::quantity::human_bytes;
use crate::spec::{Placement, Source, Target};

pub struct StatusOptions {
    pub source: SpecSource,
    pub environment: Option<String>,
    pub cluster: ClusterOptions,
    pub state_dir: PathBuf,
}

/// The report, as text.
pub fn run(opts: &StatusOptions) -> Result<String, OpsError> {
    let (spec, _) = opts.source.load(opts.environment.as_deref(), false)?;
    let names: Vec<&str> = spec.placements.iter().map(|p| p.name()).collect();
    let mut out = String::new();
    observe::runtime()?.block_on(async {
        let c = opts.cluster.connect().await?;
        for p in &spec.placements {
            let objects = cluster::observe::placement(&c, p).await?.objects;
            let unfinished = super::unfinished::observe(&c, &spec, &objects, None).await?;
            let u = unfinished.into_iter().find(|u| u.placement == p.name());
            placement(&mut out, p, &objects, u.as_ref());
        }
        Ok::<_, OpsError>(())
    })?;
    let path = journal::path_for(&opts.state_dir, &names);
    out.push_str(&format!("journal {}: ", path.display()));
    out.push_str(&match journal::read(&path) {
        _ if !path.exists() => {
            "none here (another machine or directory may hold it: see the lock's notes above)"
                .into()
        }
        Ok(r) if r.unfinished() => format!(
            "an unfinished apply: {} step(s) done, {} started{}",
            r.done.len(),
            r.started.len(),
            if r.rollback.is_some() {
                "; a rollback had begun"
            } else {
                ""
            }
        ),
        Ok(_) => "finished or rolled back".into(),
        Err(e) => format!("cannot be trusted: {e}"),
    });
    out.push('\n');
    Ok(out)
}

fn placement(
    out: &mut String,
    p: &Placement,
    objects: &[Value],
    u: Option<&crate::observed::UnfinishedApply>,
) {
    let spec = p.spec();
    let find = |kind: &str, ns: &str, name: &str| {
        let key = ObjectKey::new(kind, ns, name);
        objects
            .iter()
            .find(|o| ObjectKey::of(o).as_ref() == Some(&key))
    };
    let ns = crate::apply::lock::namespace(p);
    out.push_str(&format!("{} (namespace {ns})\n", p.name()));

    match u.and_then(|u| u.lock.as_ref()) {
        Some(l) => {
            out.push_str(&format!(
                "  lock: {} held by {} ({}{}{}{})\n",
                l.lease,
                l.holder,
                l.state.as_str(),
                l.phase
                    .as_deref()
                    .map(|p| format!(", {p}"))
                    .unwrap_or_default(),
                l.since
                    .as_deref()
                    .map(|t| format!(", since {t}"))
                    .unwrap_or_default(),
                l.renewed
                    .as_deref()
                    .map(|t| format!(", renewed {t}"))
                    .unwrap_or_default(),
            ));
            if let Some(j) = &l.journal {
                out.push_str(&format!("    its journal: {j}\n"));
            }
            if let Some(r) = &l.resume {
                out.push_str(&format!("    resume with: {r}\n"));
            }
        }
        None => out.push_str("  lock: none\n"),
    }

    let workload = |out: &mut String, role: &str, kind: &str, wns: &str, name: &str| {
        let r = ObjectRef::new("apps/v1", kind, wns, name);
        match find(kind, wns, name) {
            Some(o) => out.push_str(&format!(
                "  {role}: {} — present, {}/{} ready{}\n",
                r.display(),
                at(o, &["status", "readyReplicas"])
                    .and_then(Value::as_u64)
                    .unwrap_or(0),
                at(o, &["spec", "replicas"])
                    .and_then(Value::as_u64)
                    .unwrap_or(1),
                if o["metadata"]["deletionTimestamp"].is_string() {
                    ", being deleted"
                } else {
                    ""
                }
            )),
            None => out.push_str(&format!("  {role}: {} — absent\n", r.display())),
        }
    };
    let src_ns = match &spec.source {
        Source::Kubernetes(k) => {
            if let Some(name) = &k.workload.name {
                workload(out, "source", k.workload.kind.as_str(), &k.namespace, name);
            }
            k.namespace.clone()
        }
        Source::External(e) => {
            out.push_str(&format!("  source: external {}:{}\n", e.host, e.port));
            "default".into()
        }
    };
    match &spec.target {
        Target::Kubernetes(k) => {
            let tns = k.namespace.clone().unwrap_or_else(|| src_ns.clone());
            workload(out, "target", "StatefulSet", &tns, &k.stateful_set.name);
        }
        Target::Rds(r) => out.push_str(&format!(
            "  target: RDS instance {} in {} (see the AWS console or `aws rds describe-db-instances`)\n",
            r.instance_identifier, r.region
        )),
    }
    for t in u.map(|u| u.tuned_servers.as_slice()).unwrap_or_default() {
        out.push_str(&format!(
            "    tuned for loading: {} still runs with {}\n",
            t.pod,
            t.settings.join(", ")
        ));
    }

    if !spec.consumers.is_empty() {
        out.push_str("  consumers:\n");
    }
    for c in &spec.consumers {
        let cns = c.namespace.clone().unwrap_or_else(|| src_ns.clone());
        let av = c.api_version.clone().unwrap_or_else(|| "apps/v1".into());
        let r = ObjectRef::new(&av, &c.kind, &cns, &c.name);
        let Some(o) = find(&c.kind, &cns, &c.name) else {
            out.push_str(&format!("    {} — absent\n", r.display()));
            continue;
        };
        let replicas = match c.replicas_field() {
            Some(f) if !c.is_workload() => crate::diff::manifests::get_field(o, f),
            _ => at(o, &["spec", "replicas"]),
        }
        .and_then(Value::as_u64);
        let replicas = replicas.map_or("?".to_string(), |n| n.to_string());
        match str_at(o, &["metadata", "annotations", QUIESCED_ANNOTATION]) {
            Some(from) => out.push_str(&format!(
                "    {} — {replicas} replicas; stopped by pgplan, {from} before ({QUIESCED_ANNOTATION}: {from})\n",
                r.display()
            )),
            None => out.push_str(&format!("    {} — {replicas} replicas\n", r.display())),
        }
    }

    let volumes: Vec<&Value> = objects
        .iter()
        .filter(|o| {
            o["kind"] == "PersistentVolume"
                && (str_at(o, &["spec", "claimRef", "namespace"]) == Some(ns.as_str())
                    || str_at(o, &["spec", "claimRef", "namespace"]) == Some(src_ns.as_str())
                    || labels(o).get("pgplan.dev/placement").map(String::as_str) == Some(p.name()))
        })
        .collect();
    if !volumes.is_empty() {
        out.push_str("  volumes:\n");
    }
    for v in volumes {
        out.push_str(&format!(
            "    PersistentVolume {} — reclaim {}, {}{}\n",
            str_at(v, &["metadata", "name"]).unwrap_or("?"),
            str_at(v, &["spec", "persistentVolumeReclaimPolicy"]).unwrap_or("?"),
            str_at(v, &["status", "phase"]).unwrap_or("?"),
            match (
                str_at(v, &["spec", "claimRef", "namespace"]),
                str_at(v, &["spec", "claimRef", "name"])
            ) {
                (Some(n), Some(c)) => format!(", claim {n}/{c}"),
                _ => String::new(),
            }
        ));
    }

    let created: Vec<String> = objects
        .iter()
        .filter(|o| labels(o).get("pgplan.dev/placement").map(String::as_str) == Some(p.name()))
        .filter_map(|o| ObjectRef::of(o).map(|r| r.display()))
        .collect();
    if created.is_empty() {
        out.push_str("  created by pgplan: nothing found\n");
    } else {
        out.push_str(&format!(
            "  created by pgplan (label pgplan.dev/placement={}): {}\n",
            p.name(),
            created.join(", ")
        ));
    }

    let backups = backups(Path::new(&spec.backup.directory), p.name());
    if backups.is_empty() {
        out.push_str(&format!(
            "  backups: none under {} (relative to this directory)\n",
            spec.backup.directory
        ));
    } else {
        out.push_str("  backups:\n");
        for (path, bytes) in backups {
            out.push_str(&format!(
                "    {} ({})\n",
                path.display(),
                human_bytes(bytes)
            ));
        }
    }
}

/// The archives and manifests under `{directory}/{run}/{placement}/`, oldest
/// run first (a run directory is named by its lock ID).
fn backups(directory: &Path, placement: &str) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    let Ok(runs) = std::fs::read_dir(directory) else {
        return out;
    };
    let mut runs: Vec<(std::time::SystemTime, PathBuf)> = runs
        .flatten()
        .filter_map(|e| {
            let m = e.metadata().ok()?;
            Some((m.modified().ok()?, e.path().join(placement)))
        })
        .collect();
    runs.sort();
    for (_, dir) in runs {
        let Ok(files) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut files: Vec<PathBuf> = files.flatten().map(|e| e.path()).collect();
        files.sort();
        for f in files {
            let bytes = if f.is_dir() {
                crate::pgtools::archive::dir_size(&f)
            } else {
                f.metadata().map(|m| m.len()).unwrap_or(0)
            };
            out.push((f, bytes));
        }
    }
    out
}
