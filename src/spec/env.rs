//! `${VAR}` expansion and `environments` overlays, both on the spanned tree
//! so that every later diagnostic still points at the text the user wrote.
//!
//! The environment is passed in as a lookup function: the core never reads
//! the process environment itself.

use crate::yaml::{Entry, Node, NodeKind, PathSeg, Scalar, Span};

/// A `${VAR}` that was replaced, kept so its value can be redacted.
#[derive(Debug, Clone, PartialEq)]
pub struct Expansion {
    pub var: String,
    pub value: String,
}

/// A reference to an unset variable, or a malformed reference.
#[derive(Debug, Clone, PartialEq)]
pub struct EnvIssue {
    pub code: &'static str,
    pub message: String,
    pub help: String,
    pub span: Span,
    /// The whole scalar, left as written, and where it is: what else is
    /// said of it would be about the reference, not a value.
    pub scalar: Span,
    pub path: Vec<PathSeg>,
}

/// Paths whose `${VAR}` references are kept as written (passwords): their
/// values are resolved only when apply needs them, so they never enter a plan.
pub fn is_password_path(path: &[PathSeg]) -> bool {
    matches!(
        path,
        [PathSeg::Key(a), PathSeg::Key(b), PathSeg::Key(c), PathSeg::Key(d)]
            if a == "spec" && b == "credentials" && (c == "source" || c == "target") && d == "password"
    ) || matches!(
        path,
        [PathSeg::Key(a), PathSeg::Key(b), PathSeg::Key(c), PathSeg::Key(_), PathSeg::Key(e)]
            if a == "spec" && b == "credentials" && c == "roles" && e == "password"
    )
}

/// A `${NAME}` reference: its byte range in the text and the name.
pub type Reference<'t> = (std::ops::Range<usize>, &'t str);

/// Parse `${NAME}` references in `text`. Returns (byte range, name) pairs;
/// `$${` is an escaped literal `${`.
pub fn references(text: &str) -> Result<Vec<Reference<'_>>, (usize, &'static str)> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'$' && bytes.get(i + 1) == Some(&b'$') {
            i += 2;
            continue;
        }
        if bytes[i] == b'$' && bytes.get(i + 1) == Some(&b'{') {
            let Some(close) = text[i + 2..].find('}') else {
                return Err((i, "`${` is not closed by `}`"));
            };
            let name = &text[i + 2..i + 2 + close];
            let valid = !name.is_empty()
                && name
                    .bytes()
                    .next()
                    .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !valid {
                return Err((
                    i,
                    "a variable name has letters, digits and `_` and does not start with a digit",
                ));
            }
            out.push((i..i + 3 + close, name));
            i += 3 + close;
            continue;
        }
        i += 1;
    }
    Ok(out)
}

/// Replace every `${VAR}` in the tree's scalars, except under password paths
/// (which are only checked for being set). Returns what was expanded.
pub fn expand(
    node: &mut Node,
    lookup: &dyn Fn(&str) -> Option<String>,
    issues: &mut Vec<EnvIssue>,
) -> Vec<Expansion> {
    let mut expansions = Vec::new();
    let mut path = Vec::new();
    expand_at(node, lookup, issues, &mut expansions, &mut path);
    expansions
}

fn expand_at(
    node: &mut Node,
    lookup: &dyn Fn(&str) -> Option<String>,
    issues: &mut Vec<EnvIssue>,
    out: &mut Vec<Expansion>,
    path: &mut Vec<PathSeg>,
) {
    match &mut node.kind {
        NodeKind::Map(entries) => {
            for e in entries.iter_mut() {
                path.push(PathSeg::Key(e.key.clone()));
                expand_at(&mut e.value, lookup, issues, out, path);
                path.pop();
            }
        }
        NodeKind::Seq(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                path.push(PathSeg::Index(i));
                expand_at(item, lookup, issues, out, path);
                path.pop();
            }
        }
        NodeKind::Scalar(s) => {
            if !s.text.contains('$') {
                return;
            }
            let span = node.span;
            let refs = match references(&s.text) {
                Ok(r) => r,
                Err((at, why)) => {
                    issues.push(EnvIssue {
                        code: "pgplan::spec::env-syntax",
                        message: format!("malformed environment reference: {why}"),
                        help: "write `${NAME}`, or `$${` for a literal `${`".into(),
                        span: sub_span(s, span, at..at + 2),
                        scalar: span,
                        path: path.clone(),
                    });
                    return;
                }
            };
            if is_password_path(path) {
                // Kept as a reference; validation checks its form and that
                // the variable is set.
                return;
            }
            let mut result = String::with_capacity(s.text.len());
            let mut last = 0;
            let mut ok = true;
            for (range, name) in &refs {
                result.push_str(&unescape(&s.text[last..range.start]));
                match lookup(name) {
                    Some(value) => {
                        out.push(Expansion {
                            var: (*name).to_string(),
                            value: value.clone(),
                        });
                        result.push_str(&value);
                    }
                    None => {
                        ok = false;
                        issues.push(EnvIssue {
                            code: "pgplan::spec::env-unset",
                            message: format!("environment variable `{name}` is not set"),
                            help: format!(
                                "export {name}=… before running pgplan, or remove the reference"
                            ),
                            span: sub_span(s, span, range.clone()),
                            scalar: span,
                            path: path.clone(),
                        });
                    }
                }
                last = range.end;
            }
            result.push_str(&unescape(&s.text[last..]));
            if ok {
                s.text = result;
            }
        }
    }
}

fn unescape(s: &str) -> String {
    s.replace("$${", "${")
}

/// The span of a byte range inside a scalar, when the scalar's text maps to
/// the source one-to-one (plain or simply quoted); the whole scalar otherwise.
fn sub_span(s: &Scalar, span: Span, range: std::ops::Range<usize>) -> Span {
    let shift = if span.len() == s.text.len() {
        Some(0)
    } else if span.len() == s.text.len() + 2 {
        Some(1)
    } else {
        None
    };
    match shift {
        Some(k) => Span::new(span.start + k + range.start, span.start + k + range.end),
        None => span,
    }
}

/// Merge an overlay over a base tree (JSON merge patch semantics on the
/// spanned tree): mappings merge key by key, `null` removes a key, anything
/// else replaces. At `choice` keys (`source`, `target`) an overlay naming a
/// different variant replaces the whole section instead of adding to it.
pub fn merge(base: &mut Node, overlay: &Node, choice_keys: &[&str]) {
    let (NodeKind::Map(base_entries), NodeKind::Map(over_entries)) =
        (&mut base.kind, &overlay.kind)
    else {
        *base = overlay.clone();
        return;
    };
    for oe in over_entries {
        if oe.value.is_null() {
            base_entries.retain(|be| be.key != oe.key);
            continue;
        }
        match base_entries.iter_mut().find(|be| be.key == oe.key) {
            Some(be) => {
                let switches_variant = choice_keys.contains(&oe.key.as_str())
                    && matches!((&be.value.kind, &oe.value.kind), (NodeKind::Map(b), NodeKind::Map(o))
                        if o.iter().any(|x| !b.iter().any(|y| y.key == x.key)));
                if switches_variant {
                    be.value = oe.value.clone();
                } else {
                    merge(&mut be.value, &oe.value, &[]);
                }
            }
            None => base_entries.push(Entry {
                key: oe.key.clone(),
                key_span: oe.key_span,
                value: oe.value.clone(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::yaml::parse;

    fn root(text: &str) -> Node {
        parse(text).unwrap().remove(0).root
    }

    #[test]
    fn expands_and_reports_unset_variables_at_their_column() {
        let text = "spec:\n  host: db-${REGION}.example\n  other: ${MISSING}\n";
        let mut n = root(text);
        let mut issues = Vec::new();
        let lookup = |v: &str| (v == "REGION").then(|| "eu1".to_string());
        let exp = expand(&mut n, &lookup, &mut issues);
        assert_eq!(
            exp,
            vec![Expansion {
                var: "REGION".into(),
                value: "eu1".into()
            }]
        );
        assert_eq!(
            n.at(&[PathSeg::Key("spec".into()), PathSeg::Key("host".into())])
                .unwrap()
                .as_str(),
            Some("db-eu1.example")
        );
        assert_eq!(issues.len(), 1);
        assert_eq!(
            &text[issues[0].span.start..issues[0].span.end],
            "${MISSING}"
        );
    }

    #[test]
    fn passwords_stay_references() {
        let mut n = root("spec:\n  credentials:\n    target:\n      password: ${PW}\n");
        let mut issues = Vec::new();
        let exp = expand(&mut n, &|_| Some("s3cret".into()), &mut issues);
        assert!(exp.is_empty());
        let pw = n.at(&[
            PathSeg::Key("spec".into()),
            PathSeg::Key("credentials".into()),
            PathSeg::Key("target".into()),
            PathSeg::Key("password".into()),
        ]);
        assert_eq!(pw.unwrap().as_str(), Some("${PW}"));
    }

    #[test]
    fn escaped_dollar_is_literal() {
        let mut n = root("a: pa$${x}\n");
        let mut issues = Vec::new();
        expand(&mut n, &|_| None, &mut issues);
        assert!(issues.is_empty());
        assert_eq!(n.get("a").unwrap().as_str(), Some("pa${x}"));
    }

    #[test]
    fn overlay_merges_and_switches_variants() {
        let mut base = root("target:\n  kubernetes:\n    x: 1\nsize: 5Gi\nkeep: 1\ndrop: 2\n");
        let over = root("target:\n  rds:\n    region: us-east-1\nsize: 100Gi\ndrop: null\n");
        merge(&mut base, &over, &["target", "source"]);
        assert_eq!(
            base.to_json(),
            serde_json::json!({"target": {"rds": {"region": "us-east-1"}}, "size": "100Gi", "keep": 1})
        );
    }
}
