//! Structural checking of a YAML tree against the generated JSON Schema.
//!
//! serde stops at the first error; users want every error at once. So the
//! tree is first walked against the schema that schemars derives from the
//! spec types: every unknown field (with a "did you mean"), missing field,
//! wrong type and bad enum value is collected with its span. The walk also
//! produces the JSON value serde then reads, with scalars typed by what the
//! schema expects (so `engineVersion: 15.4` is the string "15.4", as written).

use serde_json::{Map, Value};

use crate::yaml::{path_string, Node, NodeKind, PathSeg, Resolved, Span};

/// One structural problem, located.
#[derive(Debug, Clone, PartialEq)]
pub struct Issue {
    pub code: &'static str,
    pub message: String,
    pub span: Span,
    pub help: Option<String>,
    /// Where in the document: the field at fault (a missing field's own
    /// path, an unknown field's key).
    pub path: Vec<PathSeg>,
}

impl Issue {
    /// Whether the value at [`Issue::path`] is unusable. An unknown field
    /// is left out of the value, so what holds it still reads.
    pub fn breaks(&self) -> bool {
        self.code != "pgplan::spec::unknown-field"
    }
}

/// Walks a [`Node`] against a schema (with its `$defs`).
pub struct Checker<'s> {
    root: &'s Value,
}

impl<'s> Checker<'s> {
    pub fn new(schema: &'s Value) -> Self {
        Checker { root: schema }
    }

    /// Check `node` against the root schema; the value is usable only when
    /// no issues were returned.
    pub fn check(&self, node: &Node) -> (Value, Vec<Issue>) {
        let mut issues = Vec::new();
        let mut path = Vec::new();
        let value = self.walk(self.root, node, &mut path, None, &mut issues);
        (value, issues)
    }

    fn resolve(&self, mut schema: &'s Value) -> &'s Value {
        // `$ref` chains are short; the bound guards against a cyclic schema.
        for _ in 0..16 {
            match schema.get("$ref").and_then(Value::as_str) {
                Some(r) => {
                    let name = r.trim_start_matches("#/$defs/");
                    match self.root.get("$defs").and_then(|d| d.get(name)) {
                        Some(s) => schema = s,
                        None => return schema,
                    }
                }
                None => return schema,
            }
        }
        schema
    }

    fn walk(
        &self,
        schema: &'s Value,
        node: &Node,
        path: &mut Vec<PathSeg>,
        key_span: Option<Span>,
        issues: &mut Vec<Issue>,
    ) -> Value {
        let schema = self.resolve(schema);
        if schema.as_bool() == Some(true) || schema.as_object().is_some_and(|o| o.is_empty()) {
            return node.to_json();
        }
        if let Some(branches) = schema.get("oneOf").and_then(Value::as_array) {
            return self.one_of(branches, node, path, key_span, issues);
        }
        if let Some(branches) = schema.get("anyOf").and_then(Value::as_array) {
            return self.any_of(branches, node, path, key_span, issues);
        }
        if let Some(c) = schema.get("const") {
            let v = node.to_json();
            if &v != c {
                issues.push(Issue {
                    code: "pgplan::spec::value",
                    message: format!(
                        "`{}` must be {}, found {}",
                        path_string(path),
                        show(c),
                        describe(node)
                    ),
                    span: node.span,
                    help: Some(format!("write `{}: {}`", last_key(path), plain(c))),
                    path: path.clone(),
                });
            }
            return c.clone();
        }
        if let Some(options) = schema.get("enum").and_then(Value::as_array) {
            let v = match &node.kind {
                NodeKind::Scalar(s) => Value::String(s.text.clone()),
                _ => node.to_json(),
            };
            if !options.contains(&v) {
                let names: Vec<String> = options.iter().map(plain).collect();
                let found = v
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| describe(node));
                issues.push(Issue {
                    code: "pgplan::spec::enum",
                    message: format!(
                        "`{}` is not a valid value for `{}`",
                        found,
                        path_string(path)
                    ),
                    span: node.span,
                    help: Some(
                        match did_you_mean(&found, names.iter().map(String::as_str)) {
                            Some(s) => {
                                format!("did you mean `{s}`? (one of: {})", names.join(", "))
                            }
                            None => format!("use one of: {}", names.join(", ")),
                        },
                    ),
                    path: path.clone(),
                });
            }
            return v;
        }
        let types = types_of(schema);
        if node.is_null() && types.contains(&"null") {
            return Value::Null;
        }
        match &node.kind {
            NodeKind::Map(entries) if types.contains(&"object") || types.is_empty() => {
                let props = schema.get("properties").and_then(Value::as_object);
                let extra = schema.get("additionalProperties");
                let mut out = Map::with_capacity(entries.len());
                for e in entries {
                    path.push(PathSeg::Key(e.key.clone()));
                    let sub = props.and_then(|p| p.get(&e.key));
                    match (sub, extra) {
                        (Some(s), _) => {
                            let v = self.walk(s, &e.value, path, Some(e.key_span), issues);
                            out.insert(e.key.clone(), v);
                        }
                        (None, Some(Value::Bool(false))) => {
                            let known: Vec<&str> = props
                                .map(|p| p.keys().map(String::as_str).collect())
                                .unwrap_or_default();
                            path.pop();
                            issues.push(unknown_field(&e.key, e.key_span, path, &known));
                            path.push(PathSeg::Key(e.key.clone()));
                        }
                        (None, Some(s)) if s.is_object() => {
                            let v = self.walk(s, &e.value, path, Some(e.key_span), issues);
                            out.insert(e.key.clone(), v);
                        }
                        (None, _) => {
                            out.insert(e.key.clone(), e.value.to_json());
                        }
                    }
                    path.pop();
                }
                if let Some(required) = schema.get("required").and_then(Value::as_array) {
                    for r in required.iter().filter_map(Value::as_str) {
                        if !entries.iter().any(|e| e.key == r) {
                            let at = if path.is_empty() {
                                "the document".to_string()
                            } else {
                                format!("`{}`", path_string(path))
                            };
                            issues.push(Issue {
                                code: "pgplan::spec::missing-field",
                                message: format!("missing field `{r}` in {at}"),
                                span: key_span
                                    .unwrap_or(Span::new(node.span.start, node.span.start)),
                                help: field_help(self, props.and_then(|p| p.get(r)), r),
                                path: path
                                    .iter()
                                    .cloned()
                                    .chain([PathSeg::Key(r.to_string())])
                                    .collect(),
                            });
                        }
                    }
                }
                Value::Object(out)
            }
            NodeKind::Seq(items) if types.contains(&"array") => {
                let item_schema = schema.get("items");
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    path.push(PathSeg::Index(i));
                    out.push(match item_schema {
                        Some(s) => self.walk(s, item, path, None, issues),
                        None => item.to_json(),
                    });
                    path.pop();
                }
                Value::Array(out)
            }
            NodeKind::Scalar(s) => {
                let resolved = s.resolve();
                let ok = match &resolved {
                    Resolved::Str => types
                        .contains(&"string")
                        .then(|| Value::String(s.text.clone())),
                    Resolved::Int(i) => {
                        if types.contains(&"integer") || types.contains(&"number") {
                            range_check(schema, *i, node, path, issues);
                            Some(Value::from(*i))
                        } else if types.contains(&"string") {
                            Some(Value::String(s.text.clone()))
                        } else {
                            None
                        }
                    }
                    Resolved::Float(_) => {
                        if types.contains(&"number") {
                            Some(s.to_json())
                        } else if types.contains(&"string") {
                            Some(Value::String(s.text.clone()))
                        } else {
                            None
                        }
                    }
                    Resolved::Bool(b) => types.contains(&"boolean").then_some(Value::Bool(*b)),
                    Resolved::Null => None,
                };
                ok.unwrap_or_else(|| {
                    issues.push(wrong_type(&types, node, path));
                    Value::Null
                })
            }
            _ => {
                issues.push(wrong_type(&types, node, path));
                Value::Null
            }
        }
    }

    fn any_of(
        &self,
        branches: &'s [Value],
        node: &Node,
        path: &mut Vec<PathSeg>,
        key_span: Option<Span>,
        issues: &mut Vec<Issue>,
    ) -> Value {
        if node.is_null()
            && branches
                .iter()
                .any(|b| types_of(self.resolve(b)).contains(&"null"))
        {
            return Value::Null;
        }
        let mut first: Option<(Value, Vec<Issue>)> = None;
        for b in branches {
            let b = self.resolve(b);
            if types_of(b) == ["null"] {
                continue;
            }
            let mut local = Vec::new();
            let v = self.walk(b, node, path, key_span, &mut local);
            if local.is_empty() {
                return v;
            }
            if first.is_none() {
                first = Some((v, local));
            }
        }
        match first {
            Some((v, local)) => {
                issues.extend(local);
                v
            }
            None => node.to_json(),
        }
    }

    /// Externally tagged enums (`target: {rds: …}`) get tailored messages;
    /// anything else falls back to "the branch with fewest issues".
    fn one_of(
        &self,
        branches: &'s [Value],
        node: &Node,
        path: &mut Vec<PathSeg>,
        key_span: Option<Span>,
        issues: &mut Vec<Issue>,
    ) -> Value {
        let tags: Vec<&str> = branches
            .iter()
            .filter_map(|b| {
                let b = self.resolve(b);
                let req = b.get("required")?.as_array()?;
                (req.len() == 1).then(|| req[0].as_str()).flatten()
            })
            .collect();
        if tags.len() == branches.len() {
            let NodeKind::Map(entries) = &node.kind else {
                issues.push(Issue {
                    code: "pgplan::spec::type",
                    message: format!(
                        "`{}` must be a mapping with one of {}, found {}",
                        path_string(path),
                        quoted_list(&tags),
                        describe(node)
                    ),
                    span: node.span,
                    help: None,
                    path: path.clone(),
                });
                return Value::Null;
            };
            let present: Vec<&crate::yaml::Entry> = entries
                .iter()
                .filter(|e| tags.contains(&e.key.as_str()))
                .collect();
            match present.len() {
                1 => {
                    let i = tags.iter().position(|t| *t == present[0].key).unwrap_or(0);
                    return self.walk(&branches[i], node, path, key_span, issues);
                }
                0 => {
                    let hint = entries
                        .iter()
                        .find_map(|e| did_you_mean(&e.key, tags.iter().copied()).map(|s| (e, s)));
                    let (span, help) = match hint {
                        Some((e, s)) => (e.key_span, format!("did you mean `{s}`?")),
                        None => (
                            key_span.unwrap_or(node.span),
                            format!("add exactly one of {}", quoted_list(&tags)),
                        ),
                    };
                    issues.push(Issue {
                        code: "pgplan::spec::one-of",
                        message: format!(
                            "`{}` needs exactly one of {}",
                            path_string(path),
                            quoted_list(&tags)
                        ),
                        span,
                        help: Some(help),
                        path: path.clone(),
                    });
                }
                _ => {
                    let names: Vec<&str> = present.iter().map(|e| e.key.as_str()).collect();
                    issues.push(Issue {
                        code: "pgplan::spec::one-of",
                        message: format!(
                            "`{}` sets {} at once; choose one",
                            path_string(path),
                            quoted_list(&names)
                        ),
                        span: present[1].key_span,
                        help: Some(
                            "a placement has one source and one target; use `environments` for per-environment choices"
                                .into(),
                        ),
                        path: path.clone(),
                    });
                }
            }
            return Value::Null;
        }
        let mut best: Option<(Value, Vec<Issue>)> = None;
        for b in branches {
            let mut local = Vec::new();
            let v = self.walk(b, node, path, key_span, &mut local);
            if local.is_empty() {
                return v;
            }
            if best.as_ref().is_none_or(|(_, l)| local.len() < l.len()) {
                best = Some((v, local));
            }
        }
        let (v, local) = best.unwrap_or((Value::Null, Vec::new()));
        issues.extend(local);
        v
    }
}

fn types_of(schema: &Value) -> Vec<&str> {
    match schema.get("type") {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

fn range_check(schema: &Value, i: i64, node: &Node, path: &[PathSeg], issues: &mut Vec<Issue>) {
    // Only the integer type's own range is checked here. The schema's
    // tighter `minimum`/`maximum` (replicas ≥ 1, jobs ≤ 64) are for editors:
    // `spec::validate` reports them with a reason, together with the other
    // semantic errors of the document.
    let (min, max) = match schema.get("format").and_then(Value::as_str) {
        Some("uint16") => (Some(0), Some(u16::MAX as i64)),
        Some("uint32") => (Some(0), Some(u32::MAX as i64)),
        _ => (
            schema.get("minimum").and_then(Value::as_i64),
            schema.get("maximum").and_then(Value::as_i64),
        ),
    };
    if min.is_some_and(|m| i < m) || max.is_some_and(|m| i > m) {
        issues.push(Issue {
            code: "pgplan::spec::range",
            message: format!("`{}` is out of range: {i}", path_string(path)),
            span: node.span,
            help: Some(format!(
                "use a value between {} and {}",
                min.unwrap_or(i64::MIN),
                max.map_or("any".to_string(), |m| m.to_string())
            )),
            path: path.to_vec(),
        });
    }
}

fn wrong_type(types: &[&str], node: &Node, path: &[PathSeg]) -> Issue {
    let wanted: Vec<&str> = types
        .iter()
        .filter(|t| **t != "null")
        .map(|t| match *t {
            "string" => "a string",
            "integer" => "an integer",
            "number" => "a number",
            "boolean" => "true or false",
            "array" => "a list",
            "object" => "a mapping",
            other => other,
        })
        .collect();
    let wanted = if wanted.is_empty() {
        "a value".to_string()
    } else {
        wanted.join(" or ")
    };
    let help = match (&node.kind, types.first()) {
        (NodeKind::Scalar(_), Some(&"string")) => {
            Some("quote the value to make it a string, e.g. \"true\"".to_string())
        }
        (NodeKind::Scalar(_), Some(&"array")) => Some("write a list: `- item`".to_string()),
        _ => None,
    };
    Issue {
        code: "pgplan::spec::type",
        message: format!(
            "`{}` must be {wanted}, found {}",
            if path.is_empty() {
                "the document".to_string()
            } else {
                path_string(path)
            },
            describe(node)
        ),
        span: node.span,
        help,
        path: path.to_vec(),
    }
}

fn unknown_field(key: &str, span: Span, path: &[PathSeg], known: &[&str]) -> Issue {
    let at = if path.is_empty() {
        "at the top level".to_string()
    } else {
        format!("in `{}`", path_string(path))
    };
    let help = match did_you_mean(key, known.iter().copied()) {
        Some(s) => format!("did you mean `{s}`?"),
        None if known.is_empty() => "remove it".to_string(),
        None => format!("known fields here: {}", known.join(", ")),
    };
    Issue {
        code: "pgplan::spec::unknown-field",
        message: format!("unknown field `{key}` {at}"),
        span,
        help: Some(help),
        path: path
            .iter()
            .cloned()
            .chain([PathSeg::Key(key.to_string())])
            .collect(),
    }
}

fn field_help(checker: &Checker<'_>, schema: Option<&Value>, name: &str) -> Option<String> {
    let schema = checker.resolve(schema?);
    let desc = schema.get("description").and_then(Value::as_str)?;
    let first = desc.split("\n\n").next().unwrap_or(desc).replace('\n', " ");
    Some(format!("`{name}`: {first}"))
}

/// The closest candidate to `word`, if it is close enough to be a typo.
pub fn did_you_mean<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    // No typo of a field name is this long, and similarity is quadratic.
    if word.len() > 64 {
        return None;
    }
    let lower = word.to_ascii_lowercase();
    candidates
        .map(|c| (c, strsim::jaro_winkler(&lower, &c.to_ascii_lowercase())))
        .filter(|(_, score)| *score >= 0.8)
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(c, _)| c)
}

fn describe(node: &Node) -> String {
    match &node.kind {
        NodeKind::Scalar(s) if s.resolve() == Resolved::Str => {
            let t: String = s.text.chars().take(40).collect();
            format!("\"{t}\"")
        }
        NodeKind::Scalar(s) if s.resolve() == Resolved::Null => "nothing (null)".into(),
        NodeKind::Scalar(s) => format!("{} ({})", node.type_name(), s.text),
        _ => node.type_name().into(),
    }
}

fn show(v: &Value) -> String {
    format!("`{}`", plain(v))
}

fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn quoted_list(items: &[&str]) -> String {
    items
        .iter()
        .map(|t| format!("`{t}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn last_key(path: &[PathSeg]) -> String {
    path.iter()
        .rev()
        .find_map(|p| match p {
            PathSeg::Key(k) => Some(k.clone()),
            _ => None,
        })
        .unwrap_or_default()
}
