//! Operations: one per command, each built from options and calling into
//! the core and the adapters. The shared part — reading the spec (or an
//! embedded example) and the live state — lives here.

pub mod apply;
pub mod observe;
pub mod plan;
pub mod status;
pub mod unfinished;
pub mod validate;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::examples;
use crate::observed::{self, Observed};
use crate::spec::{self, LoadOptions, Spec, SpecErrors, Target};

/// Errors of the operations layer that are not about the user's file.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum OpsError {
    // The cause is the diagnostic's source, which miette prints below the
    // message; repeating it in the message printed it twice.
    #[error("cannot read {path}")]
    #[diagnostic(
        code(pgplan::io::read),
        help("check the path; `-f FILE` names the spec, `--live-state FILE` the snapshot")
    )]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}")]
    #[diagnostic(code(pgplan::io::write))]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("there is no example named `{0}`")]
    #[diagnostic(code(pgplan::example), help("examples: {}", examples::names().join(", ")))]
    NoExample(String),
    #[error("`{0}` is not a duration")]
    #[diagnostic(code(pgplan::duration), help("write e.g. 30s, 5m or 1h"))]
    BadDuration(String),
    #[error("cannot start the async runtime: {0}")]
    #[diagnostic(code(pgplan::runtime))]
    Runtime(String),
    /// A step's write, sent as a server-side dry run, failed: the cause is
    /// the API server's answer (or why it could not be asked).
    #[error("step {address} would fail: its write failed the server-side dry run")]
    #[diagnostic(
        code(pgplan::plan::dry_run),
        help("the plan would fail at this step; the server's reason names what to change (admission policy, quota, immutable field, missing namespace …)")
    )]
    DryRun {
        address: String,
        #[diagnostic_source]
        cause: crate::apply::outcome::StepFailure,
    },
    #[error("apply needs approval, and there is no terminal to ask on")]
    #[diagnostic(
        code(pgplan::apply::approval),
        help("review the plan (`pgplan plan`) and pass --auto-approve in pipelines, or apply a saved plan: `pgplan plan --out plan.json` then `pgplan apply plan.json`")
    )]
    Approval,
    #[error("{path} is not a saved pgplan plan: {message}")]
    #[diagnostic(
        code(pgplan::apply::plan_file),
        help("save plans with `pgplan plan --out FILE`")
    )]
    BadPlanFile { path: String, message: String },
    #[error("cannot use the saved plan {path}: {message}")]
    #[diagnostic(
        code(pgplan::apply::plan_version),
        help("a saved plan is shown and applied only by the pgplan that made it, in the format it wrote; plan again with this pgplan (`pgplan plan --out FILE`)")
    )]
    PlanFileVersion { path: String, message: String },
    #[error("the saved plan file {path} was modified after pgplan wrote it: its checksum does not match its content")]
    #[diagnostic(
        code(pgplan::apply::plan_modified),
        help("a saved plan is applied exactly as it was written and reviewed, so nothing was applied; plan again (`pgplan plan --out FILE`) instead of editing the file")
    )]
    PlanFileModified { path: String },
    #[error("the live state has changed since {file} was planned; nothing was applied:\n  {differences}")]
    #[diagnostic(
        code(pgplan::apply::stale_plan),
        help("plan again, review, and apply the new plan")
    )]
    StalePlan { file: String, differences: String },
    #[error("the live state changed {when}; nothing was applied:\n  {differences}")]
    #[diagnostic(
        code(pgplan::apply::moved),
        help("plan again, review, and apply the new plan")
    )]
    Moved { when: String, differences: String },
    #[error("not planned: {details}")]
    #[diagnostic(
        code(pgplan::plan::unfinished),
        help("an apply of this placement is running or did not finish: wait for it, or resume it where its journal is (`pgplan apply --resume`, the command named above); `pgplan status` shows what it left, docs/recovery.md what to do without its journal")
    )]
    Unfinished { details: String },
    #[error("preflight: {count} would make this apply fail or lose data; nothing was applied:\n  {findings}")]
    #[diagnostic(
        code(pgplan::preflight::blocked),
        help("do what each finding's help says and plan again, or accept a finding you have weighed in the placement's `preflight.accept` (by code and object; docs/preflight.md)")
    )]
    Preflight { count: String, findings: String },
    #[error("interrupted ({signal}) before anything was changed")]
    #[diagnostic(
        code(pgplan::apply::interrupted),
        help("nothing to resume; apply again when ready")
    )]
    InterruptedBeforeChanges { signal: String },
    #[error("the plan changes objects a GitOps tool keeps in sync, and the spec does not acknowledge it; nothing was applied:\n  {findings}")]
    #[diagnostic(code(pgplan::apply::gitops_unacknowledged), help("{help}"))]
    Unacknowledged { findings: String, help: String },
    #[error(transparent)]
    #[diagnostic(transparent)]
    Apply(Box<crate::apply::ApplyError>),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Cluster(Box<crate::cluster::ClusterError>),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Rds(Box<crate::aws::RdsError>),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Pg(Box<crate::pgtools::PgError>),
    #[error("in container `{container}` of pod {namespace}/{pod}: {source}")]
    #[diagnostic(
        code(pgplan::source::container),
        help("pgplan took `{container}` for the PostgreSQL container ({why}); if the server runs in another container of the pod, set `source.kubernetes.container` to its name")
    )]
    InContainer {
        namespace: String,
        pod: String,
        container: String,
        why: String,
        #[source]
        source: Box<crate::pgtools::PgError>,
    },
    #[error("cannot take the inventory of {server} from inside the cluster: {message}")]
    #[diagnostic(
        code("pgplan::observe::client-pod"),
        help("with `backup.dataPath: cluster` pgplan reaches the instance from a short-lived pod in namespace {namespace}; it needs to create and exec into pods there, and the connection Secret to exist (or plan from a snapshot: `--live-state`)")
    )]
    ClientPod {
        server: String,
        namespace: String,
        message: String,
    },
    #[error(transparent)]
    #[diagnostic(transparent)]
    Spec(Box<SpecErrors>),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Plan(Box<crate::diff::PlanError>),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Render(#[from] crate::render::RedactionError),
}

impl OpsError {
    /// The refusal of a plan whose preflight found errors not accepted.
    pub fn preflight(plan: &crate::plan::Plan) -> Option<OpsError> {
        let blocking = plan.blocking_findings();
        if blocking.is_empty() {
            return None;
        }
        Some(OpsError::Preflight {
            count: crate::render::count(blocking.len(), "error", "errors"),
            findings: blocking
                .iter()
                .map(|f| crate::render::finding_line(f))
                .collect::<Vec<_>>()
                .join("\n  "),
        })
    }

    /// The refusal of a plan that shows applies running or unfinished.
    pub fn unfinished(plan: &crate::plan::Plan) -> OpsError {
        let mut lines = Vec::new();
        for u in &plan.unfinished {
            lines.push(crate::render::unfinished_headline(u));
            lines.extend(
                crate::render::unfinished_details(u)
                    .into_iter()
                    .map(|l| format!("  {l}")),
            );
        }
        OpsError::Unfinished {
            details: lines.join("\n  "),
        }
    }
}

pub fn read(path: &Path) -> Result<Vec<u8>, OpsError> {
    std::fs::read(path).map_err(|source| OpsError::Read {
        path: path.display().to_string(),
        source,
    })
}

pub fn write(path: &Path, contents: &str) -> Result<(), OpsError> {
    std::fs::write(path, contents).map_err(|source| OpsError::Write {
        path: path.display().to_string(),
        source,
    })
}

/// The directory of a spec file, against which its relative paths resolve.
pub fn spec_dir(file: &str) -> PathBuf {
    crate::spec::model::spec_dir(file)
}

/// The process environment, as the spec loader's lookup.
/// Every value looked up may be a secret, so it is kept out of log lines.
pub fn env_lookup(name: &str) -> Option<String> {
    let value = std::env::var(name).ok();
    if let Some(v) = &value {
        crate::logging::redact_also(v);
    }
    value
}

/// Register a loaded spec's values with the process's redactor, so that
/// the final error and everything printed are redacted whatever raised them.
pub fn remember(spec: &Spec) {
    crate::redact::remember(&crate::redact::Redactor::new(spec.secrets.iter().cloned()));
}

/// Where a spec comes from.
pub enum SpecSource {
    File(PathBuf),
    Example(&'static examples::Example),
}

impl SpecSource {
    pub fn new(file: &Path, example: Option<&str>) -> Result<Self, OpsError> {
        match example {
            Some(name) => examples::find(name)
                .map(SpecSource::Example)
                .ok_or_else(|| OpsError::NoExample(name.into())),
            None => Ok(SpecSource::File(file.to_path_buf())),
        }
    }

    pub fn name(&self) -> String {
        match self {
            SpecSource::File(p) => p.display().to_string(),
            SpecSource::Example(e) => format!("examples/{}/pgplan.yaml", e.name),
        }
    }

    pub fn bytes(&self) -> Result<Vec<u8>, OpsError> {
        match self {
            SpecSource::File(p) => read(p),
            SpecSource::Example(e) => Ok(e.spec.as_bytes().to_vec()),
        }
    }

    /// Load and validate.
    pub fn load(
        &self,
        environment: Option<&str>,
        all_environments: bool,
    ) -> Result<(Spec, String), OpsError> {
        let bytes = self.bytes()?;
        let opts = LoadOptions {
            environment,
            all_environments,
            lookup: &env_lookup,
        };
        let spec = spec::load_bytes(&self.name(), &bytes, &opts)?;
        remember(&spec);
        Ok((spec, String::from_utf8_lossy(&bytes).into_owned()))
    }

    /// Contents of the local files the spec names (CA bundles), relative to
    /// the spec's directory. Unreadable files are left out; the planner
    /// reports the ones it needs.
    pub fn files(&self, spec: &Spec) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for p in &spec.placements {
            let Target::Rds(r) = &p.spec().target else {
                continue;
            };
            let Some(ca) = &r.tls.ca_file else { continue };
            let content = match self {
                SpecSource::Example(e) => e
                    .files
                    .iter()
                    .find(|(n, _)| n == ca)
                    .map(|(_, c)| c.to_string()),
                SpecSource::File(f) => {
                    let base = f.parent().unwrap_or(Path::new("."));
                    std::fs::read_to_string(base.join(ca)).ok()
                }
            };
            if let Some(c) = content {
                out.insert(ca.clone(), c);
            }
        }
        out
    }

    /// The saved live state to plan `spec` against: a snapshot file (what
    /// of it the spec's plan reads), or the example's own; `None` means
    /// "observe the world".
    pub fn saved_state(
        &self,
        live_state: Option<&Path>,
        spec: &Spec,
    ) -> Result<Option<Observed>, OpsError> {
        match (live_state, self) {
            (Some(path), _) => {
                let bytes = read(path)?;
                let scope = observed::Scope::of(spec);
                Ok(Some(observed::load_snapshot_in(
                    &path.display().to_string(),
                    &bytes,
                    Some(&scope),
                )?))
            }
            (None, SpecSource::Example(e)) => Ok(Some(observed::load_snapshot(
                &format!("examples/{}/live.yaml", e.name),
                e.live.as_bytes(),
            )?)),
            (None, SpecSource::File(_)) => Ok(None),
        }
    }
}

macro_rules! boxed_from {
    ($($variant:ident: $ty:ty),*) => {$(
        impl From<$ty> for OpsError {
            fn from(e: $ty) -> Self {
                OpsError::$variant(Box::new(e))
            }
        }
    )*};
}

// Boxed: these errors are large, and every operation returns OpsError.
boxed_from!(
    Spec: SpecErrors,
    Plan: crate::diff::PlanError,
    Cluster: crate::cluster::ClusterError,
    Pg: crate::pgtools::PgError,
    Apply: crate::apply::ApplyError,
    Rds: crate::aws::RdsError
);
