//! Redaction: the one place that decides what must never be written.
//!
//! Two rules. (1) Any value that came from the environment (a `${VAR}`
//! expansion or a password reference) is replaced wherever it appears in
//! text pgplan writes — plans in every format, snapshots, journals, logs,
//! diagnostics, the final error. (2) The data of a Kubernetes Secret is
//! never shown, whatever its source.
//!
//! A value is replaced by `(sensitive)`, or, where the reader needs to know
//! which variable it was (a diagnostic about the user's file, a journal a
//! resumed apply reads back), by its `${VAR}` reference
//! ([`Redactor::referencing`]). The edge registers the values of every spec
//! it loads ([`remember`]), so that what is printed last — an error from
//! anywhere — goes through them too ([`remembered`]).

use std::fmt;
use std::sync::Mutex;

use miette::{Diagnostic, LabeledSpan, Severity, SourceCode};
use serde_json::Value;

/// The marker written instead of a secret value.
pub const REDACTED: &str = "(sensitive)";

/// Values shorter than this are not replaced inside text: a one- or
/// two-character "secret" would shred the output and protects nothing.
pub const MIN_SECRET_LEN: usize = 3;

#[derive(Debug, Clone, Default)]
pub struct Redactor {
    /// (value, what is written instead), longest value first, so that a
    /// secret containing another is replaced whole.
    secrets: Vec<(String, String)>,
}

impl Redactor {
    /// Each value is written as `(sensitive)`.
    pub fn new<I, S>(secrets: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::build(
            secrets
                .into_iter()
                .map(|s| (s.into(), REDACTED.to_string())),
        )
    }

    /// Each value is written as the `${VAR}` reference it was expanded from
    /// (`expansions` are `(VAR, value)` pairs, as `Spec::expansions`).
    pub fn referencing(expansions: &[(String, String)]) -> Self {
        Self::build(
            expansions
                .iter()
                .map(|(var, value)| (value.clone(), format!("${{{var}}}"))),
        )
    }

    fn build(pairs: impl Iterator<Item = (String, String)>) -> Self {
        let mut secrets: Vec<(String, String)> =
            pairs.filter(|(s, _)| s.len() >= MIN_SECRET_LEN).collect();
        secrets.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.cmp(b)));
        // One replacement per value (the first variable, when two hold it).
        secrets.dedup_by(|a, b| a.0 == b.0);
        Redactor { secrets }
    }

    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// The same values, each written as `(sensitive)`.
    pub fn values(&self) -> impl Iterator<Item = &str> {
        self.secrets.iter().map(|(v, _)| v.as_str())
    }

    /// Replace every secret value in a piece of text.
    pub fn text(&self, s: &str) -> String {
        let mut out = s.to_string();
        for (secret, replacement) in &self.secrets {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), replacement);
            }
        }
        out
    }

    /// A view of a diagnostic whose every text (message, help, labels,
    /// related diagnostics, causes) is redacted; the file it points into
    /// is shown as it is, since it is the user's own text.
    pub fn diagnostic<'a>(&self, d: &'a dyn Diagnostic) -> RedactedDiagnostic<'a> {
        RedactedDiagnostic::new(d, self)
    }

    /// A copy of a JSON value with secrets replaced in every string and the
    /// data of Secret manifests hidden.
    pub fn value(&self, v: &Value) -> Value {
        let mut out = v.clone();
        self.value_in_place(&mut out);
        out
    }

    pub fn value_in_place(&self, v: &mut Value) {
        hide_secret_data(v);
        self.strings(v);
    }

    /// Replace secret values in every string of a JSON value, and nothing
    /// else (no Secret data is hidden: for records read back verbatim).
    pub fn strings_in_place(&self, v: &mut Value) {
        self.strings(v);
    }

    fn strings(&self, v: &mut Value) {
        match v {
            Value::String(s) if self.secrets.iter().any(|(x, _)| s.contains(x.as_str())) => {
                *s = self.text(s);
            }
            Value::Array(items) => items.iter_mut().for_each(|i| self.strings(i)),
            Value::Object(map) => map.values_mut().for_each(|i| self.strings(i)),
            _ => {}
        }
    }
}

/// Every secret value this process has loaded (see [`remember`]).
static REMEMBERED: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Register the values of a spec the process loaded, so that whatever is
/// printed at the end — the final error above all, wherever it came from —
/// can be redacted without the spec at hand. Called by the edge (`ops`),
/// never by the core.
pub fn remember(r: &Redactor) {
    if let Ok(mut known) = REMEMBERED.lock() {
        known.extend(r.values().map(str::to_string));
        known.sort();
        known.dedup();
    }
}

/// A redactor of every value registered with [`remember`].
pub fn remembered() -> Redactor {
    match REMEMBERED.lock() {
        Ok(known) => Redactor::new(known.iter().cloned()),
        // A panic while registering leaves the list as it was: still usable.
        Err(poisoned) => Redactor::new(poisoned.into_inner().iter().cloned()),
    }
}

/// A diagnostic with its texts redacted (see [`Redactor::diagnostic`]).
pub struct RedactedDiagnostic<'a> {
    inner: &'a dyn Diagnostic,
    message: String,
    code: Option<String>,
    help: Option<String>,
    url: Option<String>,
    labels: Option<Vec<LabeledSpan>>,
    related: Vec<RedactedDiagnostic<'a>>,
    diagnostic_source: Option<Box<RedactedDiagnostic<'a>>>,
    cause: Option<Box<Cause>>,
}

impl<'a> RedactedDiagnostic<'a> {
    fn new(d: &'a dyn Diagnostic, r: &Redactor) -> Self {
        let text = |t: &dyn fmt::Display| r.text(&t.to_string());
        RedactedDiagnostic {
            inner: d,
            message: text(&d),
            code: d.code().map(|c| text(&c)),
            help: d.help().map(|h| text(&h)),
            url: d.url().map(|u| text(&u)),
            labels: d.labels().map(|ls| {
                ls.map(|mut l| {
                    let label = l.label().map(|t| r.text(t));
                    l.set_label(label);
                    l
                })
                .collect()
            }),
            related: d
                .related()
                .map(|rs| rs.map(|x| RedactedDiagnostic::new(x, r)).collect())
                .unwrap_or_default(),
            diagnostic_source: d
                .diagnostic_source()
                .map(|x| Box::new(RedactedDiagnostic::new(x, r))),
            cause: d.source().map(|c| Box::new(Cause::new(c, r))),
        }
    }
}

impl fmt::Debug for RedactedDiagnostic<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Display for RedactedDiagnostic<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for RedactedDiagnostic<'_> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause
            .as_deref()
            .map(|c| c as &(dyn std::error::Error + 'static))
    }
}

impl Diagnostic for RedactedDiagnostic<'_> {
    fn code<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        self.code
            .as_ref()
            .map(|c| Box::new(c) as Box<dyn fmt::Display>)
    }
    fn severity(&self) -> Option<Severity> {
        self.inner.severity()
    }
    fn help<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        self.help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }
    fn url<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        self.url
            .as_ref()
            .map(|u| Box::new(u) as Box<dyn fmt::Display>)
    }
    fn source_code(&self) -> Option<&dyn SourceCode> {
        self.inner.source_code()
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        self.labels
            .as_ref()
            .map(|ls| Box::new(ls.iter().cloned()) as Box<dyn Iterator<Item = LabeledSpan>>)
    }
    fn related<'b>(&'b self) -> Option<Box<dyn Iterator<Item = &'b dyn Diagnostic> + 'b>> {
        if self.related.is_empty() {
            return None;
        }
        Some(Box::new(self.related.iter().map(|x| x as &dyn Diagnostic)))
    }
    fn diagnostic_source(&self) -> Option<&dyn Diagnostic> {
        self.diagnostic_source
            .as_deref()
            .map(|x| x as &dyn Diagnostic)
    }
}

/// One redacted link of an error's cause chain.
#[derive(Debug)]
struct Cause {
    message: String,
    cause: Option<Box<Cause>>,
}

impl Cause {
    fn new(e: &dyn std::error::Error, r: &Redactor) -> Self {
        Cause {
            message: r.text(&e.to_string()),
            cause: e.source().map(|c| Box::new(Cause::new(c, r))),
        }
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Cause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause
            .as_deref()
            .map(|c| c as &(dyn std::error::Error + 'static))
    }
}

/// Replace the values of `data` and `stringData` in Secret manifests found
/// anywhere in the value (a manifest, a list of them, a step's before/after).
pub fn hide_secret_data(v: &mut Value) {
    match v {
        Value::Object(map) => {
            let is_secret = map.get("kind").and_then(Value::as_str) == Some("Secret")
                && map.contains_key("metadata");
            if is_secret {
                for field in ["data", "stringData"] {
                    if let Some(Value::Object(data)) = map.get_mut(field) {
                        for value in data.values_mut() {
                            *value = Value::String(REDACTED.into());
                        }
                    }
                }
            }
            map.values_mut().for_each(hide_secret_data);
        }
        Value::Array(items) => items.iter_mut().for_each(hide_secret_data),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn replaces_values_and_secret_data() {
        let r = Redactor::new(["hunter22", "x"]);
        let v = json!({
            "url": "postgres://u:hunter22@db",
            "list": [{"kind": "Secret", "metadata": {"name": "s"}, "data": {"PASSWORD": "aHVudGVyMjI="}}],
            "x": "x stays: too short to redact",
        });
        let out = r.value(&v);
        assert_eq!(out["url"], "postgres://u:(sensitive)@db");
        assert_eq!(out["list"][0]["data"]["PASSWORD"], REDACTED);
        assert_eq!(out["x"], "x stays: too short to redact");
        assert_eq!(r.text("a hunter22 b"), "a (sensitive) b");
    }

    #[test]
    fn references_name_the_variable() {
        let r = Redactor::referencing(&[
            ("TEAM".into(), "Canary_XYZ_123".into()),
            ("X".into(), "ab".into()),
        ]);
        assert_eq!(
            r.text("`db-Canary_XYZ_123` is not a valid name; ab stays"),
            "`db-${TEAM}` is not a valid name; ab stays"
        );
    }

    #[derive(Debug, thiserror::Error, miette::Diagnostic)]
    #[error("probe `{0}` failed")]
    #[diagnostic(code(pgplan::test), help("expected {0}"))]
    struct Outer(String, #[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("the server said {0}")]
    struct Inner(String);

    #[test]
    fn a_diagnostic_is_redacted_through_its_causes() {
        let e = Outer("hunter22".into(), Inner("hunter22!".into()));
        let r = Redactor::new(["hunter22"]);
        let d = r.diagnostic(&e);
        let mut out = String::new();
        miette::GraphicalReportHandler::new_themed(miette::GraphicalTheme::unicode_nocolor())
            .render_report(&mut out, &d)
            .unwrap();
        assert!(!out.contains("hunter22"), "{out}");
        assert!(out.contains("probe `(sensitive)` failed"), "{out}");
        assert!(out.contains("the server said (sensitive)!"), "{out}");
        assert!(out.contains("expected (sensitive)"), "{out}");
        assert!(out.contains("pgplan::test"), "{out}");
    }
}
