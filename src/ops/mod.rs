//! Operations: one per command, each built from options and calling into
//! the core and the adapters. The shared part — reading the spec (or an
//! embedded example) and the live state — lives here.

pub mod apply;
pub mod observe;
pub mod plan;
pub mod validate;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::examples;
use crate::observed::{self, Observed};
use crate::spec::{self, LoadOptions, Spec, SpecErrors, Target};

/// Errors of the operations layer that are not about the user's file.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum OpsError {
    #[error("cannot read {path}: {source}")]
    #[diagnostic(
        code(pgplan::io::read),
        help("check the path; `-f FILE` names the spec, `--live-state FILE` the snapshot")
    )]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
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
    #[error("the API server rejects {object} (server-side dry run): {message}")]
    #[diagnostic(
        code(pgplan::plan::dry_run),
        help("the plan would fail at this step; the server's reason names what to change (admission policy, quota, immutable field, missing namespace …)")
    )]
    DryRun { object: String, message: String },
    #[error("apply needs approval, and there is no terminal to ask on")]
    #[diagnostic(
        code(pgplan::apply::approval),
        help("review the plan (`pgplan plan`) and pass --auto-approve in pipelines, or apply a saved plan: `pgplan plan -o plan.json` then `pgplan apply plan.json`")
    )]
    Approval,
    #[error("{path} is not a saved pgplan plan: {message}")]
    #[diagnostic(
        code(pgplan::apply::plan_file),
        help("save plans with `pgplan plan -o FILE`")
    )]
    BadPlanFile { path: String, message: String },
    #[error("the live state has changed since {file} was planned; nothing was applied:\n  {differences}")]
    #[diagnostic(
        code(pgplan::apply::stale_plan),
        help("plan again, review, and apply the new plan")
    )]
    StalePlan { file: String, differences: String },
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
    Path::new(file)
        .parent()
        .map(Path::to_path_buf)
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("."))
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

    /// The saved live state to plan against: a snapshot file, or the
    /// example's own; `None` means "observe the world".
    pub fn saved_state(&self, live_state: Option<&Path>) -> Result<Option<Observed>, OpsError> {
        match (live_state, self) {
            (Some(path), _) => {
                let bytes = read(path)?;
                Ok(Some(observed::load_snapshot(
                    &path.display().to_string(),
                    &bytes,
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
