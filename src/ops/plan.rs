//! `pgplan plan` and `pgplan graph`: load, observe (or read a snapshot),
//! diff, render; optionally save the plan for apply.

use std::path::PathBuf;

use crate::diff::{self, Inputs};
use crate::ops::{self, OpsError, SpecSource};
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
}

/// A computed plan with what is needed to show or save it.
pub struct Planned {
    pub spec: Spec,
    pub spec_text: String,
    pub plan: Plan,
    pub redactor: Redactor,
}

/// Load the spec, read the live state and compute the plan.
pub fn compute(opts: &PlanOptions) -> Result<Planned, OpsError> {
    let (spec, spec_text) = opts.source.load(opts.environment.as_deref(), false)?;
    let observed = opts.source.live_state(opts.live_state.as_deref())?;
    let files = opts.source.files(&spec);
    let inputs = Inputs {
        observed: &observed,
        env: &ops::env_lookup,
        files: &files,
    };
    let plan = diff::plan(&spec, &inputs)?;
    let redactor = Redactor::new(spec.secrets.iter().cloned());
    Ok(Planned {
        spec,
        spec_text,
        plan,
        redactor,
    })
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
