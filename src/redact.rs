//! Redaction: the one place that decides what must never be written.
//!
//! Two rules. (1) Any value that came from the environment (a `${VAR}`
//! expansion or a password reference) is replaced wherever it appears in
//! text pgplan writes — plans in every format, snapshots, journals, logs.
//! (2) The data of a Kubernetes Secret is never shown, whatever its source.

use serde_json::Value;

/// The marker written instead of a secret value.
pub const REDACTED: &str = "(sensitive)";

/// Values shorter than this are not replaced inside text: a one- or
/// two-character "secret" would shred the output and protects nothing.
pub const MIN_SECRET_LEN: usize = 3;

#[derive(Debug, Clone, Default)]
pub struct Redactor {
    /// Longest first, so that a secret containing another is replaced whole.
    secrets: Vec<String>,
}

impl Redactor {
    pub fn new<I, S>(secrets: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut secrets: Vec<String> = secrets
            .into_iter()
            .map(Into::into)
            .filter(|s: &String| s.len() >= MIN_SECRET_LEN)
            .collect();
        secrets.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
        secrets.dedup();
        Redactor { secrets }
    }

    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// Replace every secret value in a piece of text.
    pub fn text(&self, s: &str) -> String {
        let mut out = s.to_string();
        for secret in &self.secrets {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), REDACTED);
            }
        }
        out
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

    fn strings(&self, v: &mut Value) {
        match v {
            Value::String(s) if self.secrets.iter().any(|x| s.contains(x.as_str())) => {
                *s = self.text(s);
            }
            Value::Array(items) => items.iter_mut().for_each(|i| self.strings(i)),
            Value::Object(map) => map.values_mut().for_each(|i| self.strings(i)),
            _ => {}
        }
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
}
