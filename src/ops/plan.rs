//! `pgplan plan` and `pgplan graph`: load, observe (or read a snapshot),
//! diff, render; optionally save the plan for apply.

use std::path::PathBuf;

use crate::cluster::{Cluster, ClusterError, Write};
use crate::diff::{self, Inputs};
use crate::observed::Observed;
use crate::ops::observe::{self, ClusterOptions};
use crate::ops::{self, OpsError, SpecSource};
use crate::plan::Operation;
use crate::plan::{Plan, SavedPlan, PLAN_FORMAT_VERSION};
use crate::redact::Redactor;
use crate::render::{self, Format, RenderOptions};
use crate::spec::Spec;

pub struct PlanOptions {
    pub source: SpecSource,
    pub environment: Option<String>,
    pub live_state: Option<PathBuf>,
    pub format: Format,
    pub out: Option<PathBuf>,
    pub render: RenderOptions,
    pub cluster: ClusterOptions,
}

/// A computed plan with what is needed to show or save it.
pub struct Planned {
    pub spec: Spec,
    pub spec_text: String,
    pub plan: Plan,
    pub redactor: Redactor,
    pub observed: Observed,
}

/// Load the spec, read the live state (a snapshot, or the world) and
/// compute the plan. Online, every manifest the plan would write is also
/// sent to the API server as a dry run.
pub fn compute(opts: &PlanOptions) -> Result<Planned, OpsError> {
    let (spec, spec_text) = opts.source.load(opts.environment.as_deref(), false)?;
    let files = opts.source.files(&spec);
    let plan_against = |observed: &Observed| {
        diff::plan(
            &spec,
            &Inputs {
                observed,
                env: &ops::env_lookup,
                files: &files,
            },
        )
    };
    let (plan, observed) = match opts.source.saved_state(opts.live_state.as_deref(), &spec)? {
        Some(observed) => (plan_against(&observed)?, observed),
        None => observe::runtime()?.block_on(async {
            let (observed, cluster) = observe::observe(&spec, &opts.cluster).await?;
            let plan = plan_against(&observed)?;
            if let Some(c) = &cluster {
                dry_run(c, &plan).await?;
            }
            Ok::<_, OpsError>((plan, observed))
        })?,
    };
    let redactor = Redactor::new(spec.secrets.iter().cloned());
    Ok(Planned {
        spec,
        spec_text,
        plan,
        redactor,
        observed,
    })
}

/// Send every manifest the plan creates or changes to the API server with
/// `dryRun=All`: admission, validation and immutability are checked by the
/// server itself. Replacements are not: their delete-then-create cannot be
/// dry-run as one request.
pub async fn dry_run(cluster: &Cluster, plan: &Plan) -> Result<(), OpsError> {
    for step in &plan.steps {
        let result = match (&step.operation, &step.after) {
            (Operation::Create { .. }, Some(manifest)) => {
                cluster.create(manifest, Write::DryRun).await.map(drop)
            }
            (Operation::Patch { object, patch }, _) => cluster
                .merge_patch(object, patch, Write::DryRun)
                .await
                .map(drop),
            (
                Operation::Scale {
                    object, to, field, ..
                },
                _,
            ) => {
                let path = field.clone().unwrap_or_else(|| "spec.replicas".into());
                let patch = crate::diff::manifests::field_patch(&path, serde_json::json!(to));
                cluster
                    .merge_patch(object, &patch, Write::DryRun)
                    .await
                    .map(drop)
            }
            (Operation::ProtectVolume { volume, .. }, _) => {
                let patch =
                    serde_json::json!({"spec": {"persistentVolumeReclaimPolicy": "Retain"}});
                cluster
                    .merge_patch(volume, &patch, Write::DryRun)
                    .await
                    .map(drop)
            }
            (Operation::Secret { object, .. }, Some(shown)) if step.before.is_none() => {
                // Values are resolved at apply; the dry run checks the object.
                let mut m = shown.clone();
                if let Some(data) = m.get_mut("data").and_then(serde_json::Value::as_object_mut) {
                    for v in data.values_mut() {
                        *v = serde_json::Value::String(String::new());
                    }
                }
                let _ = object;
                cluster.create(&m, Write::DryRun).await.map(drop)
            }
            _ => Ok(()),
        };
        match result {
            Ok(()) => {}
            Err(ClusterError::Rejected {
                object, message, ..
            }) => return Err(OpsError::DryRun { object, message }),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// `pgplan plan`: the rendered plan, and whether it has changes.
pub fn run(opts: &PlanOptions) -> Result<(String, bool), OpsError> {
    let planned = compute(opts)?;
    let out = render::render(&planned.plan, opts.format, &planned.redactor, &opts.render)?;
    if let Some(path) = &opts.out {
        let saved = saved_plan(&planned, opts.environment.clone())?;
        ops::write(path, &saved)?;
    }
    Ok((out, planned.plan.has_changes()))
}

/// `pgplan graph`: the DOT graph.
pub fn graph(opts: &PlanOptions) -> Result<String, OpsError> {
    let planned = compute(opts)?;
    Ok(render::dot(&planned.plan, &planned.redactor)?)
}

/// The saved plan file's text.
pub fn saved_plan(planned: &Planned, environment: Option<String>) -> Result<String, OpsError> {
    let json = render::render(
        &planned.plan,
        Format::Json,
        &planned.redactor,
        &RenderOptions::default(),
    )?;
    let saved = SavedPlan {
        format_version: PLAN_FORMAT_VERSION.into(),
        pgplan_version: env!("CARGO_PKG_VERSION").into(),
        spec_file: planned.spec.file.name.clone(),
        spec_text: planned.spec_text.clone(),
        environment,
        plan: serde_json::from_str(&json).unwrap_or_default(),
    };
    let text = serde_json::to_string_pretty(&saved).unwrap_or_default();
    Ok(planned.redactor.text(&text))
}
