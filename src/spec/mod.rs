//! The desired-state file: load, expand, overlay, check and validate.
//!
//! `load` turns the bytes of a `pgplan.yaml` into validated [`Placement`]s or
//! into every error at once ([`SpecErrors`]). The pipeline per document:
//! YAML tree (spans kept) → environment overlay → `${VAR}` expansion →
//! structural check against the generated schema → serde → semantic checks.

pub mod check;
pub mod env;
pub mod error;
pub mod types;
pub mod validate;

use std::collections::HashMap;

pub use error::{SourceFile, SpecError, SpecErrors};
pub use types::*;

use crate::yaml::{self, Node, NodeKind, PathSeg, Span};

/// The JSON Schema of one placement document, as checked into `schemas/`.
pub fn json_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(PlacementDoc))
        // A derived schema is plain JSON; serialising it cannot fail.
        .unwrap_or_default()
}

/// One validated placement, with the tree it came from for later diagnostics.
#[derive(Debug, Clone)]
pub struct Placement {
    pub doc: PlacementDoc,
    /// The environment overlay applied, if any.
    pub environment: Option<String>,
    /// Position of the document in the file.
    pub document: usize,
    /// The merged, expanded tree; spans point into the file.
    pub node: Node,
}

impl Placement {
    pub fn name(&self) -> &str {
        &self.doc.metadata.name
    }
    pub fn spec(&self) -> &PlacementSpec {
        &self.doc.spec
    }
    /// Span of a field, for diagnostics raised after loading (by the
    /// planner): a scalar's value, or the key of a section.
    pub fn span_of(&self, path: &[&str]) -> Span {
        let path: Vec<PathSeg> = path
            .iter()
            .map(|s| match s.parse::<usize>() {
                Ok(i) => PathSeg::Index(i),
                Err(_) => PathSeg::Key((*s).to_string()),
            })
            .collect();
        match self.node.at(&path).map(|n| &n.kind) {
            Some(NodeKind::Scalar(_)) | None => self.node.span_at(&path),
            Some(_) => self.node.key_span_at(&path),
        }
    }
}

/// A loaded file: its placements and the values that must never be printed.
#[derive(Debug, Clone)]
pub struct Spec {
    pub file: SourceFile,
    pub placements: Vec<Placement>,
    /// Values that came from the environment (expansions and passwords).
    pub secrets: Vec<String>,
    /// The same values with the variable each came from, so a journal can
    /// store `${VAR}` instead of the value.
    pub expansions: Vec<(String, String)>,
}

/// How to load: which environment, and how to read variables.
pub struct LoadOptions<'a> {
    pub environment: Option<&'a str>,
    /// Check the base and every environment (for `pgplan validate`).
    pub all_environments: bool,
    pub lookup: &'a dyn Fn(&str) -> Option<String>,
}

/// Load a file from raw bytes (checks encoding first).
pub fn load_bytes(name: &str, bytes: &[u8], opts: &LoadOptions<'_>) -> Result<Spec, SpecErrors> {
    match yaml::check_text(bytes) {
        Ok(text) => load(SourceFile::new(name, text), opts),
        Err(e) => {
            let shown = String::from_utf8_lossy(bytes).into_owned();
            let file = SourceFile::new(name, shown);
            Err(SpecErrors::new(&file, vec![SpecError::from_yaml(&file, e)]))
        }
    }
}

/// Load and validate every placement of a file.
pub fn load(file: SourceFile, opts: &LoadOptions<'_>) -> Result<Spec, SpecErrors> {
    let docs = match yaml::parse(&file.text) {
        Ok(d) => d,
        Err(e) => return Err(SpecErrors::new(&file, vec![SpecError::from_yaml(&file, e)])),
    };
    let schema = json_schema();
    let checker = check::Checker::new(&schema);
    let mut errors = Vec::new();
    let mut placements = Vec::new();
    let mut secrets = Vec::new();
    let mut names: HashMap<String, Span> = HashMap::new();

    let present: Vec<&yaml::Document> = docs.iter().filter(|d| !d.root.is_null()).collect();
    if present.is_empty() {
        errors.push(
            SpecError::new(&file, "pgplan::spec::empty", "the file contains no placements", Span::new(0, 0))
                .help("a pgplan file holds one or more `kind: Placement` documents; see examples/healthcare/pgplan.yaml"),
        );
    }
    let mut env_found = opts.environment.is_none();
    for doc in present {
        if !matches!(doc.root.kind, NodeKind::Map(_)) {
            errors.push(
                SpecError::new(
                    &file,
                    "pgplan::spec::not-a-mapping",
                    format!("document {} must be a mapping, found {}", doc.index + 1, doc.root.type_name()),
                    doc.root.span,
                )
                .help("each document starts with `apiVersion: pgplan.dev/v1alpha1` and `kind: Placement`"),
            );
            continue;
        }
        let env_names = environment_names(&doc.root);
        let runs: Vec<Option<String>> = if opts.all_environments {
            std::iter::once(None)
                .chain(env_names.iter().cloned().map(Some))
                .collect()
        } else {
            match opts.environment {
                Some(e) if env_names.iter().any(|n| n == e) => {
                    env_found = true;
                    vec![Some(e.to_string())]
                }
                Some(e) if !env_names.is_empty() => {
                    let span = doc.root.key_span_at(&[
                        PathSeg::Key("spec".into()),
                        PathSeg::Key("environments".into()),
                    ]);
                    errors.push(
                        SpecError::new(
                            &file,
                            "pgplan::spec::environment",
                            format!("this placement has no environment `{e}`"),
                            span,
                        )
                        .help(format!(
                            "environments defined here: {}",
                            env_names.join(", ")
                        )),
                    );
                    continue;
                }
                // A placement without environments is the same everywhere.
                _ => vec![None],
            }
        };
        let mut base_errors: Vec<(Span, &'static str, String)> = Vec::new();
        for env in runs {
            let mut local = Vec::new();
            let loaded = load_document(
                &file,
                &checker,
                doc,
                env.as_deref(),
                opts,
                &mut local,
                &mut secrets,
            );
            match &env {
                None => {
                    base_errors = local
                        .iter()
                        .map(|e| (e.span, e.code, e.message.clone()))
                        .collect()
                }
                Some(name) => {
                    // With every environment checked, report what an overlay
                    // adds, not the base's errors once per environment.
                    local.retain(|e| !base_errors.contains(&(e.span, e.code, e.message.clone())));
                    for e in &mut local {
                        e.message = format!("{} (environment `{name}`)", e.message);
                    }
                }
            }
            let failed = !local.is_empty();
            errors.append(&mut local);
            let Some(p) = loaded else { continue };
            if failed || (opts.all_environments && env.is_some()) {
                continue;
            }
            let name = p.name().to_string();
            let span = p.span_of(&["metadata", "name"]);
            if let Some(first) = names.get(&name) {
                errors.push(
                    SpecError::new(&file, "pgplan::spec::duplicate", format!("two placements are named `{name}`"), span)
                        .related(*first, "first defined here")
                        .help("placement names must be unique in a file: they name locks, journals and plan addresses"),
                );
                continue;
            }
            names.insert(name, span);
            placements.push(p);
        }
    }
    if let (Some(e), false) = (opts.environment, env_found) {
        if errors.is_empty() {
            errors.push(
                SpecError::new(
                    &file,
                    "pgplan::spec::environment",
                    format!("no placement defines the environment `{e}`"),
                    Span::new(0, 0),
                )
                .help("add it under `spec.environments`, or run without `--env`"),
            );
        }
    }
    if errors.is_empty() {
        secrets.sort();
        secrets.dedup();
        let values = secrets.iter().map(|(_, v)| v.clone()).collect();
        Ok(Spec {
            file,
            placements,
            secrets: values,
            expansions: secrets,
        })
    } else {
        Err(SpecErrors::new(&file, errors))
    }
}

fn environment_names(root: &Node) -> Vec<String> {
    let envs = root.at(&[
        PathSeg::Key("spec".into()),
        PathSeg::Key("environments".into()),
    ]);
    match envs.map(|n| &n.kind) {
        Some(NodeKind::Map(entries)) => entries.iter().map(|e| e.key.clone()).collect(),
        _ => Vec::new(),
    }
}

fn load_document(
    file: &SourceFile,
    checker: &check::Checker<'_>,
    doc: &yaml::Document,
    environment: Option<&str>,
    opts: &LoadOptions<'_>,
    errors: &mut Vec<SpecError>,
    secrets: &mut Vec<(String, String)>,
) -> Option<Placement> {
    let mut node = doc.root.clone();
    if let Some(env) = environment {
        let overlay = doc.root.at(&[
            PathSeg::Key("spec".into()),
            PathSeg::Key("environments".into()),
            PathSeg::Key(env.into()),
        ]);
        if let (Some(overlay), Some(spec)) = (overlay, spec_node_mut(&mut node)) {
            if !matches!(overlay.kind, NodeKind::Map(_)) {
                errors.push(
                    SpecError::new(file, "pgplan::spec::type", format!("environment `{env}` must be a mapping of spec fields"), overlay.span)
                        .help("write the fields to override, e.g. `target: {kubernetes: {statefulSet: {storage: {size: 100Gi}}}}`"),
                );
                return None;
            }
            env::merge(spec, overlay, &["source", "target"]);
        }
    }
    let mut env_issues = Vec::new();
    let expansions = env::expand(&mut node, opts.lookup, &mut env_issues);
    for i in env_issues {
        errors.push(SpecError::new(file, i.code, i.message, i.span).help(i.help));
    }
    secrets.extend(expansions.into_iter().map(|e| (e.var, e.value)));

    let (value, issues) = checker.check(&node);
    let structural = !issues.is_empty();
    for i in issues {
        let mut e = SpecError::new(file, i.code, i.message, i.span);
        e.help = i.help;
        errors.push(e);
    }
    if structural {
        return None;
    }
    let parsed: PlacementDoc = match serde_json::from_value(value) {
        Ok(d) => d,
        Err(e) => {
            // The schema walk accepted it; serde disagreeing is a pgplan bug,
            // but it is still reported as an error, never a panic.
            errors.push(SpecError::new(
                file,
                "pgplan::spec::internal",
                format!("could not read the placement: {e}"),
                doc.root.span,
            ));
            return None;
        }
    };
    let mut v = validate::Validator::new(file, &node);
    v.placement(&parsed);
    errors.append(&mut v.errors);

    for side in ["source", "target"] {
        let login = match side {
            "source" => parsed.spec.credentials.source.as_ref(),
            _ => parsed.spec.credentials.target.as_ref(),
        };
        let Some(login) = login else { continue };
        if let Ok(refs) = env::references(&login.password) {
            for (_, var) in refs {
                match (opts.lookup)(var) {
                    Some(value) => secrets.push((var.to_string(), value)),
                    None => {
                        let span = node.span_at(&[
                            PathSeg::Key("spec".into()),
                            PathSeg::Key("credentials".into()),
                            PathSeg::Key(side.into()),
                            PathSeg::Key("password".into()),
                        ]);
                        errors.push(
                            SpecError::new(
                                file,
                                "pgplan::spec::env-unset",
                                format!("environment variable `{var}` is not set"),
                                span,
                            )
                            .help(format!("export {var}=… before running pgplan")),
                        );
                    }
                }
            }
        }
    }
    // Role passwords are read only when apply sets them (an unset one is
    // an error then); a value already set is a secret to redact from now on.
    for secret in parsed.spec.credentials.roles.values() {
        if let Ok(refs) = env::references(&secret.password) {
            for (_, var) in refs {
                if let Some(value) = (opts.lookup)(var) {
                    secrets.push((var.to_string(), value));
                }
            }
        }
    }
    Some(Placement {
        doc: parsed,
        environment: environment.map(str::to_string),
        document: doc.index,
        node,
    })
}

fn spec_node_mut(root: &mut Node) -> Option<&mut Node> {
    match &mut root.kind {
        NodeKind::Map(entries) => entries
            .iter_mut()
            .find(|e| e.key == "spec")
            .map(|e| &mut e.value),
        _ => None,
    }
}

/// The variable name of a `${VAR}` password reference.
pub fn password_var(password: &str) -> Option<&str> {
    match env::references(password) {
        Ok(r) if r.len() == 1 && r[0].0 == (0..password.len()) => Some(r[0].1),
        _ => None,
    }
}
