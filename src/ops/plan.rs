//! `pgplan plan`, `pgplan graph` and `pgplan show`: load, observe (or read
//! a snapshot), diff, render; optionally save the plan for apply. The saved
//! plan file is written and read (versions and checksum checked) here only.

use std::path::{Path, PathBuf};

use crate::cluster::Cluster;
use crate::diff::{self, Inputs};
use crate::observed::Observed;
use crate::ops::observe::{self, ClusterOptions};
use crate::ops::{self, OpsError, SpecSource};
use crate::plan::Operation;
use crate::plan::{Plan, SavedPlan, PLAN_FORMAT_VERSION, SAVED_PLAN_FORMAT_VERSION};
use crate::redact::Redactor;
use crate::render::{self, Format, RenderOptions};
use crate::spec::Spec;

pub struct PlanOptions {
    pub source: SpecSource,
    pub environment: Option<String>,
    pub live_state: Option<PathBuf>,
    pub format: Format,
    pub out: Option<PathBuf>,
    /// `--export-manifests DIR`.
    pub export_manifests: Option<PathBuf>,
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

/// Send every write the plan's steps make to the API server with
/// `dryRun=All`, by the same code apply runs them with (see
/// [`crate::apply::dry_run`]): admission, validation and immutability are
/// checked by the server itself, on the requests apply will send.
pub async fn dry_run(cluster: &Cluster, plan: &Plan) -> Result<(), OpsError> {
    for step in &plan.steps {
        if let Err(e) = crate::apply::dry_run(cluster, step).await {
            return Err(OpsError::DryRun {
                address: step.address.clone(),
                cause: crate::apply::outcome::StepFailure(e),
            });
        }
    }
    Ok(())
}

/// `pgplan plan`: the rendered plan, whether it has changes, and the
/// refusal to print after it when an apply of one of its placements is
/// running or unfinished (exit 1, whatever `--detailed-exitcode` says; such
/// a plan is not saved).
pub fn run(opts: &PlanOptions) -> Result<(String, bool, Option<OpsError>), OpsError> {
    let planned = compute(opts)?;
    let out = render::render(&planned.plan, opts.format, &planned.redactor, &opts.render)?;
    if planned.plan.is_blocked() {
        return Ok((
            out,
            planned.plan.has_changes(),
            Some(OpsError::unfinished(&planned.plan)),
        ));
    }
    // A plan preflight blocks is shown, then refused (exit 1), and not saved.
    if let Some(e) = OpsError::preflight(&planned.plan) {
        return Ok((out, planned.plan.has_changes(), Some(e)));
    }
    if let Some(path) = &opts.out {
        let saved = saved_plan(&planned, opts.environment.clone())?;
        ops::write(path, &saved)?;
    }
    if let Some(dir) = &opts.export_manifests {
        export_manifests(&planned, dir)?;
    }
    Ok((out, planned.plan.has_changes(), None))
}

/// The index file `--export-manifests` writes next to the manifests.
pub const EXPORT_INDEX: &str = "pgplan-export.txt";

/// `plan --export-manifests DIR`: what a chart or GitOps repository must
/// change to agree with the plan once it is applied. One YAML file per
/// object the plan creates or replaces (`KIND-NAMESPACE-NAME.yaml`, as
/// apply writes it), and an index naming those, the objects it deletes and
/// the changes it patches in. Consumers' scaling is left out (apply puts
/// the replicas back), and so are the Secrets pgplan writes, whose values
/// are resolved only at apply. Everything written is redacted.
pub fn export_manifests(planned: &Planned, dir: &Path) -> Result<Vec<PathBuf>, OpsError> {
    let redacted = render::redact(planned.plan.clone(), &planned.redactor)?;
    let write_err = |path: &Path, source: std::io::Error| OpsError::Write {
        path: path.display().to_string(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(|e| write_err(dir, e))?;
    let mut written = Vec::new();
    let (mut add, mut remove, mut change, mut secrets) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for step in &redacted.plan().steps {
        match (&step.operation, &step.after) {
            (Operation::Create { object, .. } | Operation::Replace { object, .. }, Some(m)) => {
                let mut file = format!("{}-", object.kind.to_ascii_lowercase());
                if !object.namespace.is_empty() {
                    file.push_str(&object.namespace);
                    file.push('-');
                }
                file.push_str(&object.name);
                file.push_str(".yaml");
                let path = dir.join(&file);
                let text = crate::yaml::to_string(m).unwrap_or_default();
                std::fs::write(&path, planned.redactor.text(&text))
                    .map_err(|e| write_err(&path, e))?;
                add.push(format!(
                    "{file}  ({} {})",
                    step.action.verb(),
                    object.display()
                ));
                written.push(path);
            }
            (Operation::Delete { object, .. }, _) => remove.push(object.display()),
            (Operation::Patch { object, patch }, _) => {
                change.push(format!("{}: {}", object.display(), patch));
            }
            (Operation::ProtectVolume { volume, .. }, _) => change.push(format!(
                "{}: {{\"spec\":{{\"persistentVolumeReclaimPolicy\":\"Retain\"}}}}",
                volume.display()
            )),
            (Operation::Secret { object, .. }, _) => secrets.push(object.display()),
            _ => {}
        }
    }
    let mut index = format!(
        "# What `pgplan apply` leaves in the cluster for {}: make the chart or\n# repository agree before applying, so that its next sync does not undo it.\n",
        planned.spec.file.name
    );
    for (title, items) in [
        ("Add (the manifests in this directory)", &add),
        ("Remove", &remove),
        ("Change (JSON merge patches)", &change),
        (
            "Secrets pgplan writes at apply (values from the environment; not exported)",
            &secrets,
        ),
    ] {
        if items.is_empty() {
            continue;
        }
        index.push_str(&format!("\n{title}:\n"));
        for i in items {
            index.push_str(&format!("  {i}\n"));
        }
    }
    let path = dir.join(EXPORT_INDEX);
    std::fs::write(&path, planned.redactor.text(&index)).map_err(|e| write_err(&path, e))?;
    written.push(path);
    Ok(written)
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
        format_version: SAVED_PLAN_FORMAT_VERSION.into(),
        pgplan_version: PGPLAN_VERSION.into(),
        spec_file: planned.spec.file.name.clone(),
        spec_text: planned.spec_text.clone(),
        environment,
        plan: serde_json::from_str(&json).unwrap_or_default(),
        checksum: String::new(),
    };
    // Redacted first (a last textual pass over everything), then
    // checksummed: the checksum is over what the file holds.
    let draft = serde_json::to_string(&saved).unwrap_or_default();
    let mut saved: SavedPlan =
        serde_json::from_str(&planned.redactor.text(&draft)).map_err(|e| OpsError::Write {
            path: "the saved plan".into(),
            source: std::io::Error::other(format!("redaction broke the saved plan: {e}")),
        })?;
    saved.checksum = saved.content_checksum();
    Ok(serde_json::to_string_pretty(&saved).unwrap_or_default() + "\n")
}

const PGPLAN_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Read a saved plan file and check it before anything trusts it: the
/// envelope's format, the pgplan that wrote it, the JSON plan's own format
/// and pgplan version (each refused when unknown, both versions named), and
/// the checksum over its content ("the saved plan file was modified").
/// Versions come first: another version may checksum differently.
pub fn read_saved(path: &Path) -> Result<SavedPlan, OpsError> {
    let shown = path.display().to_string();
    let bad = |message: String| OpsError::BadPlanFile {
        path: shown.clone(),
        message,
    };
    let version = |message: String| OpsError::PlanFileVersion {
        path: shown.clone(),
        message,
    };
    let bytes = ops::read(path)?;
    let value: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| bad(format!("not JSON: {e}")))?;
    let Some(object) = value.as_object() else {
        return Err(bad("not a JSON object".into()));
    };
    let text = |key: &str| object.get(key).and_then(serde_json::Value::as_str);
    match (text("format_version"), text("formatVersion")) {
        (Some(v), _) if v == SAVED_PLAN_FORMAT_VERSION => {}
        (Some(v), _) => {
            return Err(version(format!(
                "its saved-plan format is {v}, and this pgplan reads format {SAVED_PLAN_FORMAT_VERSION}"
            )))
        }
        // pgplan 0.1's first saved plans: camelCase keys, no checksum.
        (None, Some(v)) => {
            return Err(version(format!(
                "its saved-plan format is {v} (camelCase keys, no checksum), and this pgplan reads format {SAVED_PLAN_FORMAT_VERSION}"
            )))
        }
        (None, None) => return Err(bad("it has no `format_version`".into())),
    }
    let saved: SavedPlan = serde_json::from_value(value).map_err(|e| bad(e.to_string()))?;
    if saved.pgplan_version != PGPLAN_VERSION {
        return Err(version(format!(
            "it was saved by pgplan {}, and this is pgplan {PGPLAN_VERSION}",
            saved.pgplan_version
        )));
    }
    let inner = |key: &str| saved.plan.get(key).and_then(serde_json::Value::as_str);
    match inner("format_version") {
        Some(v) if v == PLAN_FORMAT_VERSION => {}
        Some(v) => {
            return Err(version(format!(
                "its JSON plan has format_version {v}, and this pgplan reads {PLAN_FORMAT_VERSION}"
            )))
        }
        None => {
            return Err(version(format!(
                "its JSON plan has no format_version, and this pgplan reads {PLAN_FORMAT_VERSION}"
            )))
        }
    }
    match inner("pgplan_version") {
        Some(v) if v == PGPLAN_VERSION => {}
        Some(v) => {
            return Err(version(format!(
                "its JSON plan was made by pgplan {v}, and this is pgplan {PGPLAN_VERSION}"
            )))
        }
        None => {
            return Err(version(format!(
                "its JSON plan names no pgplan_version, and this is pgplan {PGPLAN_VERSION}"
            )))
        }
    }
    if saved.checksum != saved.content_checksum() {
        return Err(OpsError::PlanFileModified { path: shown });
    }
    Ok(saved)
}

/// `pgplan show FILE`: the saved plan rendered again from its JSON, with no
/// spec file, cluster or AWS. The plan was redacted when it was saved.
pub fn show(path: &Path, format: Format, opts: &RenderOptions) -> Result<String, OpsError> {
    let saved = read_saved(path)?;
    let plan = render::plan_from_json(&saved.plan).map_err(|message| OpsError::BadPlanFile {
        path: path.display().to_string(),
        message,
    })?;
    Ok(render::render(&plan, format, &Redactor::default(), opts)?)
}
