//! The desired-state file: load, expand, overlay, check and validate.
//!
//! `load` turns the bytes of a `pgplan.yaml` into validated [`Placement`]s or
//! into every error at once ([`SpecErrors`]). The pipeline per document:
//! YAML tree (spans kept) → environment overlay → `${VAR}` expansion →
//! structural check against the generated schema → serde → semantic checks.

pub mod check;
pub mod env;
pub mod error;
pub mod model;
pub mod types;
pub mod validate;

use std::collections::HashMap;

pub use error::{SourceFile, SpecError, SpecErrors};
pub use model::{DatabaseSelector, Endpoint, Model};
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
    /// What the spec means (selector, sizes, endpoints), worked out once.
    pub model: Model,
}

impl Placement {
    pub fn name(&self) -> &str {
        &self.doc.metadata.name
    }
    pub fn spec(&self) -> &PlacementSpec {
        &self.doc.spec
    }
    pub fn model(&self) -> &Model {
        &self.model
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

impl Spec {
    /// Every password variable the placements reference must be set: apply
    /// calls this before it changes anything (validate and plan only record
    /// the references). The errors point at the password in the file.
    pub fn require_passwords(
        &self,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(), SpecErrors> {
        let mut errors = Vec::new();
        for p in &self.placements {
            let credentials = &p.spec().credentials;
            for (side, login) in [
                ("source", &credentials.source),
                ("target", &credentials.target),
            ] {
                let Some(login) = login else { continue };
                let Ok(refs) = env::references(&login.password) else {
                    continue;
                };
                for (_, var) in refs.into_iter().filter(|(_, v)| lookup(v).is_none()) {
                    let span = p.span_of(&["spec", "credentials", side, "password"]);
                    errors.push(
                        SpecError::new(
                            &self.file,
                            "pgplan::spec::env-unset",
                            format!(
                                "environment variable `{var}` is not set; apply needs it for the {side} password of placement `{}`",
                                p.name()
                            ),
                            span,
                        )
                        .help(format!(
                            "export {var}=… before `pgplan apply`; nothing was changed (validate and plan only record the reference)"
                        )),
                    );
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(SpecErrors::new(&self.file, errors))
        }
    }
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
        // Messages may quote an expanded value (a name from `${VAR}` that is
        // not a valid name): they name the reference instead.
        Err(SpecErrors::new(&file, errors)
            .redacted(&crate::redact::Redactor::referencing(&secrets)))
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
    // A scalar with an unset variable is left as written: nothing else is
    // said of it, and its section is not compared with others.
    let unexpanded: Vec<Span> = env_issues.iter().map(|i| i.scalar).collect();
    let not_compared: Vec<&'static str> = ["target", "databases", "credentials"]
        .into_iter()
        .filter(|section| {
            env_issues.iter().any(|i| {
                i.path.get(..2)
                    == Some(&[PathSeg::Key("spec".into()), PathSeg::Key((*section).into())][..])
            })
        })
        .collect();
    let hidden = |span: Span| {
        unexpanded
            .iter()
            .any(|u| u.start <= span.start && span.end <= u.end)
    };
    for i in env_issues {
        errors.push(SpecError::new(file, i.code, i.message, i.span).help(i.help));
    }
    secrets.extend(expansions.into_iter().map(|e| (e.var, e.value)));

    let (value, issues) = checker.check(&node);
    let broken: Vec<Vec<PathSeg>> = issues
        .iter()
        .filter(|i| i.breaks())
        .map(|i| i.path.clone())
        .collect();
    for i in issues.into_iter().filter(|i| !hidden(i.span)) {
        let mut e = SpecError::new(file, i.code, i.message, i.span);
        e.help = i.help;
        e.schema = true;
        errors.push(e);
    }
    let mut semantic = validate::Validator::new(file, &node);
    if !broken.is_empty() {
        // The parts that are well-formed are still checked, so that one
        // run reports every error of the file.
        let parts = WellFormed::read(&value, &broken);
        let mut view = parts.view();
        view.not_compared.extend(not_compared);
        semantic.parts(&view);
        if let Some(c) = &parts.credentials {
            collect_passwords(c, opts, secrets);
        }
        errors.extend(
            semantic
                .errors
                .into_iter()
                .filter(|e| !hidden(e.span) && parts.reports(&node, e)),
        );
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
    let mut view = validate::Parts::of(&parsed);
    view.not_compared = not_compared;
    semantic.parts(&view);
    errors.extend(semantic.errors.into_iter().filter(|e| !hidden(e.span)));
    collect_passwords(&parsed.spec.credentials, opts, secrets);
    let model = Model::of(&parsed.spec, &model::spec_dir(&file.name));
    Some(Placement {
        model,
        doc: parsed,
        environment: environment.map(str::to_string),
        document: doc.index,
        node,
    })
}

/// Every password reference names a variable that is set.
/// Passwords are only recorded here (as `${VAR}`); apply resolves them
/// (`Spec::require_passwords`). A value that is set is still collected, so
/// that it is redacted wherever it might appear.
fn collect_passwords(
    credentials: &Credentials,
    opts: &LoadOptions<'_>,
    secrets: &mut Vec<(String, String)>,
) {
    for login in [&credentials.source, &credentials.target]
        .into_iter()
        .flatten()
    {
        let Ok(refs) = env::references(&login.password) else {
            continue;
        };
        for (_, var) in refs {
            if let Some(value) = (opts.lookup)(var) {
                secrets.push((var.to_string(), value));
            }
        }
    }
    // Role passwords likewise: apply reads them when it sets them.
    for secret in credentials.roles.values() {
        if let Ok(refs) = env::references(&secret.password) {
            for (_, var) in refs {
                if let Some(value) = (opts.lookup)(var) {
                    secrets.push((var.to_string(), value));
                }
            }
        }
    }
}

/// The sections of a document with structural errors that read anyway:
/// each is read on its own, unless an error lies inside it. A field with a
/// structural error is left out of its section when the section reads
/// without it (the field has a default); such a section is `repaired`.
#[derive(Default)]
struct WellFormed {
    name: Option<String>,
    source: Option<Source>,
    target: Option<Target>,
    credentials: Option<Credentials>,
    databases: Option<Vec<String>>,
    consumers: Vec<(usize, Consumer)>,
    verify: Option<Verify>,
    backup: Option<Backup>,
    cleanup: Option<Cleanup>,
    environments: Vec<String>,
    /// Sections read with fields left out.
    repaired: Vec<Vec<PathSeg>>,
}

fn segs(path: &[&str]) -> Vec<PathSeg> {
    path.iter()
        .map(|s| match s.parse::<usize>() {
            Ok(i) => PathSeg::Index(i),
            Err(_) => PathSeg::Key((*s).to_string()),
        })
        .collect()
}

impl WellFormed {
    fn read(value: &serde_json::Value, broken: &[Vec<PathSeg>]) -> Self {
        let mut out = WellFormed::default();
        // A section absent from the value reads as its default where it
        // has one (serde's `default`), else not at all.
        let mut section = |path: &[&str], has_default: bool| -> Option<serde_json::Value> {
            let path = segs(path);
            if broken.iter().any(|b| path.starts_with(b)) {
                return None;
            }
            let inside: Vec<&[PathSeg]> = broken
                .iter()
                .filter(|b| b.starts_with(&path))
                .map(|b| &b[path.len()..])
                .collect();
            let mut v = match at_path(value, &path) {
                Some(v) => v.clone(),
                None if has_default => return Some(serde_json::Value::Object(Default::default())),
                None => return None,
            };
            for rel in &inside {
                if !remove_at(&mut v, rel) {
                    return None;
                }
            }
            if !inside.is_empty() {
                out.repaired.push(path);
            }
            Some(v)
        };
        fn read<T: serde::de::DeserializeOwned>(v: Option<serde_json::Value>) -> Option<T> {
            serde_json::from_value(v?).ok()
        }
        let name = section(&["metadata", "name"], false);
        let source = section(&["spec", "source"], false);
        let target = section(&["spec", "target"], false);
        let credentials = section(&["spec", "credentials"], true);
        let databases = section(&["spec", "databases"], false);
        let verify = section(&["spec", "verify"], true);
        let backup = section(&["spec", "backup"], true);
        let cleanup = section(&["spec", "cleanup"], true);
        let environments = section(&["spec", "environments"], true);
        let count = value
            .pointer("/spec/consumers")
            .and_then(serde_json::Value::as_array)
            .map_or(0, Vec::len);
        let consumers: Vec<(usize, Option<serde_json::Value>)> = (0..count)
            .map(|i| (i, section(&["spec", "consumers", &i.to_string()], false)))
            .collect();
        out.name = name.and_then(|v| v.as_str().map(str::to_string));
        out.source = read(source);
        out.target = read(target);
        out.credentials = read(credentials);
        out.databases = read(databases);
        out.verify = read(verify);
        out.backup = read(backup);
        out.cleanup = read(cleanup);
        out.environments = environments
            .and_then(|v| v.as_object().map(|m| m.keys().cloned().collect()))
            .unwrap_or_default();
        out.consumers = consumers
            .into_iter()
            .filter_map(|(i, v)| Some((i, read(v)?)))
            .collect();
        out
    }

    /// Whether a semantic finding may be reported: in a repaired section
    /// only what is said of one field, not contradictions between fields
    /// or fields found missing (a left-out field could be either).
    fn reports(&self, node: &Node, e: &SpecError) -> bool {
        let within = |path: &[PathSeg]| {
            let s = node.span_at(path);
            s.start <= e.span.start && e.span.end <= s.end
        };
        !matches!(
            e.code,
            "pgplan::spec::contradiction" | "pgplan::spec::missing-field"
        ) || !self.repaired.iter().any(|p| within(p))
    }

    fn view(&self) -> validate::Parts<'_> {
        validate::Parts {
            name: self.name.as_deref(),
            source: self.source.as_ref(),
            target: self.target.as_ref(),
            credentials: self.credentials.as_ref(),
            databases: self.databases.as_deref(),
            consumers: self.consumers.iter().map(|(i, c)| (*i, c)).collect(),
            verify: self.verify.as_ref(),
            backup: self.backup.as_ref(),
            cleanup: self.cleanup.as_ref(),
            environments: self.environments.iter().map(String::as_str).collect(),
            not_compared: ["target", "databases", "credentials"]
                .into_iter()
                .filter(|section| {
                    let path = segs(&["spec", section]);
                    self.repaired.contains(&path)
                })
                .collect(),
        }
    }
}

fn at_path<'v>(v: &'v serde_json::Value, path: &[PathSeg]) -> Option<&'v serde_json::Value> {
    path.iter().try_fold(v, |cur, seg| match seg {
        PathSeg::Key(k) => cur.get(k),
        PathSeg::Index(i) => cur.get(*i),
    })
}

/// Removes the mapping entry at `path`; false when that is not possible
/// (an item of a list: removing it would renumber the rest).
fn remove_at(v: &mut serde_json::Value, path: &[PathSeg]) -> bool {
    let Some((PathSeg::Key(last), parent)) = path.split_last() else {
        return false;
    };
    let mut cur = v;
    for seg in parent {
        let next = match seg {
            PathSeg::Key(k) => cur.get_mut(k),
            PathSeg::Index(i) => cur.get_mut(*i),
        };
        match next {
            Some(n) => cur = n,
            None => return true,
        }
    }
    if let Some(m) = cur.as_object_mut() {
        m.shift_remove(last);
    }
    true
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
