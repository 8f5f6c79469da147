//! diff(Spec, Observed) → Plan.
//!
//! For each placement the planner finds the source and target in the
//! observed state, decides the journey (Deployment → StatefulSet, a move to
//! RDS, day-2 changes to an existing StatefulSet, or nothing), emits steps
//! with their dependencies, and finally orders them through the step graph.
//! Problems that only the live state reveals (a missing workload, a storage
//! class without a provisioner and no static volumes) are located
//! diagnostics pointing at the spec field they concern.
//!
//! Architecture invariant: every step that can lose data depends,
//! directly or transitively, on a verified backup of that data, and nothing
//! is removed from the source before the target is verified.

mod apis;
mod consumers;
mod data;
pub mod gitops;
pub mod incluster;
mod kube;
pub mod manifests;
mod rds;
pub mod reads;
pub mod source;
pub use data::RESTART_FROM_BYTES;
pub use reads::reads;

use std::collections::BTreeMap;

use serde_json::Value;

use crate::addr::Journey;

use crate::graph::{self, GraphError};
use crate::observed::{Index, Observed};
use crate::plan::{Operation, PlacementPlan, Plan, ScalePurpose, Step};
use crate::spec::{Placement, SourceFile, Spec, SpecError, SpecErrors, Target};

/// What the planner reads besides the spec.
pub struct Inputs<'a> {
    pub observed: &'a Observed,
    /// Environment lookup for password variables (Secret fingerprints only;
    /// values never enter the plan).
    pub env: &'a dyn Fn(&str) -> Option<String>,
    /// Contents of local files the spec names (CA bundles), read by the caller.
    pub files: &'a BTreeMap<String, String>,
}

/// Why a plan could not be made.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum PlanError {
    #[error(transparent)]
    #[diagnostic(transparent)]
    Spec(#[from] SpecErrors),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Graph(#[from] GraphError),
}

/// Plan every placement of a spec against the observed state.
pub fn plan(spec: &Spec, inputs: &Inputs<'_>) -> Result<Plan, PlanError> {
    let idx = Index::new(inputs.observed);
    let mut steps = Vec::new();
    let mut placements = Vec::new();
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let mut fingerprints = BTreeMap::new();
    let mut unfinished = Vec::new();
    let mut findings = Vec::new();
    for p in &spec.placements {
        // An apply in progress or interrupted: the world is mid-change, and
        // a plan of it would mean nothing (or say "No changes" over it).
        if let Some(u) = inputs
            .observed
            .unfinished
            .iter()
            .find(|u| u.placement == p.name() && !u.is_empty())
        {
            unfinished.push(u.clone());
            placements.push(PlacementPlan {
                name: p.name().to_string(),
                environment: p.environment.clone(),
                journey: Journey::Unfinished,
                databases: Vec::new(),
                downtime: None,
            });
            continue;
        }
        let mut cx = Ctx::new(p, &idx, &spec.file, inputs);
        apis::check(&mut cx);
        match &p.spec().target {
            Target::Kubernetes(kt) => kube::plan(&mut cx, kt),
            Target::Rds(rt) => rds::plan(&mut cx, rt),
        }
        gitops::warn(&mut cx);
        preflight(&mut cx);
        findings.append(&mut cx.findings);
        errors.append(&mut cx.errors);
        warnings.extend(
            cx.warnings
                .into_iter()
                .map(|w| format!("{}: {w}", p.name())),
        );
        fingerprints.append(&mut cx.reads);
        placements.push(PlacementPlan {
            name: p.name().to_string(),
            environment: p.environment.clone(),
            journey: if cx.steps.is_empty() {
                Journey::None
            } else {
                cx.journey
            },
            databases: cx.databases,
            downtime: None,
        });
        steps.append(&mut cx.steps);
    }
    if !errors.is_empty() {
        return Err(SpecErrors::new(&spec.file, errors)
            .with_title(format!("cannot plan {}", spec.file.name))
            .redacted(&crate::redact::Redactor::referencing(&spec.expansions))
            .into());
    }
    let steps = graph::order_steps(steps)?;
    let mut plan = Plan {
        placements,
        steps,
        fingerprints,
        warnings,
        unfinished,
        findings,
    };
    mark_downtime(&mut plan);
    Ok(plan)
}

/// Preflight over the placement's source server, for the databases the
/// plan moves (nothing to say when nothing moves).
fn preflight(cx: &mut Ctx<'_>) {
    if cx.steps.is_empty() {
        return;
    }
    let copied: Vec<(String, u64)> = cx
        .steps
        .iter()
        .filter_map(|s| match &s.operation {
            crate::plan::Operation::Backup { database, .. } => {
                Some((database.name.clone(), database.size_bytes))
            }
            _ => None,
        })
        .collect();
    cx.findings
        .extend(crate::preflight::capacity(cx.p, &copied));
    let crate::spec::Source::Kubernetes(src) = &cx.p.spec().source else {
        return;
    };
    let prefix = format!("k8s/{}/{}/", src.namespace, src.workload.kind.as_str());
    let Some(server) = cx.idx.observed.servers.iter().find(|s| {
        s.locator.starts_with(&prefix)
            && src
                .workload
                .name
                .as_ref()
                .is_none_or(|n| s.locator[prefix.len()..] == *n)
    }) else {
        return;
    };
    let moved: Vec<String> = cx.databases.iter().map(|d| d.name.clone()).collect();
    let found = crate::preflight::unlisted_clients(cx.p, cx.idx, server, &moved);
    cx.findings.extend(found);
    cx.findings
        .extend(crate::preflight::transactions(cx.p, server, &moved));
    cx.findings
        .extend(crate::preflight::major_versions(cx.p, server));
    if !copied.is_empty() {
        let target = match &cx.p.spec().target {
            crate::spec::Target::Rds(r) => cx
                .idx
                .server(&crate::addr::Locator::rds(&r.region, &r.instance_identifier).to_string()),
            crate::spec::Target::Kubernetes(_) => None,
        };
        cx.findings
            .extend(crate::preflight::role_attributes_dropped(
                cx.p, server, target,
            ));
    }
}

/// The downtime window of each placement: from the first step that stops a
/// consumer to the last step that starts one again; without consumers, from
/// the source's deletion to the end of verification.
fn mark_downtime(plan: &mut Plan) {
    for pp in &mut plan.placements {
        let pos = |pred: &dyn Fn(&Step) -> bool| -> Vec<usize> {
            plan.steps
                .iter()
                .enumerate()
                .filter(|(_, s)| s.placement == pp.name && pred(s))
                .map(|(i, _)| i)
                .collect()
        };
        let quiesce = pos(&|s| {
            matches!(
                s.operation,
                Operation::Scale {
                    purpose: ScalePurpose::Quiesce,
                    ..
                }
            )
        });
        let resume = pos(&|s| {
            matches!(
                s.operation,
                Operation::Scale {
                    purpose: ScalePurpose::Resume,
                    ..
                }
            )
        });
        let window = match (quiesce.first(), resume.last()) {
            (Some(&a), Some(&b)) if b >= a => Some((a, b)),
            (Some(&a), None) => Some((a, a)),
            _ => {
                let stops = pos(&|s| s.risk != crate::plan::Risk::Safe);
                let verify = pos(&|s| matches!(s.operation, Operation::Verify { .. }));
                match (stops.first(), verify.last()) {
                    (Some(&a), Some(&b)) if b >= a => Some((a, b)),
                    _ => None,
                }
            }
        };
        if let Some((a, b)) = window {
            pp.downtime = Some((a + 1, b + 1));
            for s in plan.steps[a..=b]
                .iter_mut()
                .filter(|s| s.placement == pp.name)
            {
                s.in_downtime = true;
            }
        }
    }
}

/// The planner's working state for one placement.
pub(crate) struct Ctx<'a> {
    pub p: &'a Placement,
    pub idx: &'a Index<'a>,
    pub file: &'a SourceFile,
    pub inputs: &'a Inputs<'a>,
    pub steps: Vec<Step>,
    pub errors: Vec<SpecError>,
    pub warnings: Vec<String>,
    pub reads: BTreeMap<String, String>,
    pub journey: Journey,
    pub databases: Vec<crate::plan::DatabaseFacts>,
    pub findings: Vec<crate::plan::Finding>,
}

impl<'a> Ctx<'a> {
    fn new(
        p: &'a Placement,
        idx: &'a Index<'a>,
        file: &'a SourceFile,
        inputs: &'a Inputs<'a>,
    ) -> Self {
        Ctx {
            p,
            idx,
            file,
            inputs,
            steps: Vec::new(),
            errors: Vec::new(),
            warnings: Vec::new(),
            reads: BTreeMap::new(),
            journey: Journey::None,
            databases: Vec::new(),
            findings: Vec::new(),
        }
    }

    /// A located error at a spec field.
    pub fn error(
        &mut self,
        path: &[&str],
        code: &'static str,
        message: String,
        help: impl Into<String>,
    ) {
        let mut full = vec!["spec"];
        full.extend_from_slice(path);
        let span = self.p.span_of(&full);
        let message = match &self.p.environment {
            Some(e) => format!(
                "{message} (placement `{}`, environment `{e}`)",
                self.p.name()
            ),
            None => format!("{message} (placement `{}`)", self.p.name()),
        };
        self.errors
            .push(SpecError::new(self.file, code, message, span).help(help));
    }

    /// Remember the version of a live object the plan depends on.
    pub fn read(&mut self, manifest: &Value) {
        if let Some(key) = crate::observed::ObjectKey::of(manifest) {
            let rv =
                crate::observed::str_at(manifest, &["metadata", "resourceVersion"]).unwrap_or("?");
            self.reads.insert(key.address(), rv.to_string());
        }
    }

    /// Remember that an object the plan depends on does not exist.
    pub fn read_absent(&mut self, address: String) {
        self.reads.insert(address, "absent".into());
    }

    /// Add a step (dependencies sorted and deduplicated); returns its address.
    pub fn push(&mut self, mut step: Step) -> String {
        step.depends_on.sort();
        step.depends_on.dedup();
        let a = step.address.clone();
        self.steps.push(step);
        a
    }

    /// A step of this placement: what it does (`summary`, one line) and
    /// why it is in the plan (`reason`) are part of making one.
    pub fn step(
        &self,
        address: String,
        action: crate::plan::Action,
        risk: crate::plan::Risk,
        operation: Operation,
        summary: String,
        reason: String,
    ) -> Step {
        Step {
            address,
            placement: self.p.name().to_string(),
            action,
            risk,
            summary,
            reason,
            depends_on: Vec::new(),
            in_downtime: false,
            before: None,
            after: None,
            operation,
            warnings: Vec::new(),
        }
    }

    pub fn has_step(&self, address: &str) -> bool {
        self.steps.iter().any(|s| s.address == address)
    }
}
