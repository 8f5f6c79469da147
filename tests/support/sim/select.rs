//! Label and field selectors: the `labelSelector`/`fieldSelector` query strings of list and
//! watch, and the structured `LabelSelector` (matchLabels/matchExpressions) of workloads and PVCs.

use std::collections::BTreeMap;

use serde_json::Value;

use super::error::ApiError;
use super::obj;

#[derive(Debug, Clone, PartialEq)]
enum Req {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

impl Req {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Req::Eq(k, v) => labels.get(k) == Some(v),
            Req::NotEq(k, v) => labels.get(k) != Some(v),
            Req::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Req::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            Req::Exists(k) => labels.contains_key(k),
            Req::NotExists(k) => !labels.contains_key(k),
        }
    }
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelSelector {
    reqs: Vec<Req>,
}

/// Splits on commas that are not inside parentheses.
fn split_top(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn check_key(k: &str, whole: &str) -> Result<String, ApiError> {
    if obj::is_label_key(k) {
        Ok(k.to_string())
    } else {
        Err(ApiError::bad_request(format!(
            "unable to parse requirement: invalid label key \"{k}\" in selector \"{whole}\""
        )))
    }
}

fn parse_set(rest: &str, whole: &str) -> Result<Vec<String>, ApiError> {
    let rest = rest.trim();
    let inner = rest
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "unable to parse requirement: found '{rest}', expected: '(' in \"{whole}\""
            ))
        })?;
    Ok(inner
        .split(',')
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect())
}

impl LabelSelector {
    /// Parses `a=b,c!=d,e in (x,y),f notin (z),g,!h`.
    pub fn parse(s: &str) -> Result<LabelSelector, ApiError> {
        let mut reqs = Vec::new();
        if s.trim().is_empty() {
            return Ok(LabelSelector { reqs });
        }
        for part in split_top(s) {
            let part = part.trim();
            if part.is_empty() {
                return Err(ApiError::bad_request(format!(
                    "unable to parse requirement: empty requirement in \"{s}\""
                )));
            }
            let req = if let Some(k) = part.strip_prefix('!') {
                Req::NotExists(check_key(k.trim(), s)?)
            } else if let Some((k, v)) = part.split_once("!=") {
                Req::NotEq(check_key(k.trim(), s)?, v.trim().to_string())
            } else if let Some((k, v)) = part.split_once("==") {
                Req::Eq(check_key(k.trim(), s)?, v.trim().to_string())
            } else if let Some((k, v)) = part.split_once('=') {
                Req::Eq(check_key(k.trim(), s)?, v.trim().to_string())
            } else if let Some((k, rest)) = part.split_once(" notin ") {
                Req::NotIn(check_key(k.trim(), s)?, parse_set(rest, s)?)
            } else if let Some((k, rest)) = part.split_once(" in ") {
                Req::In(check_key(k.trim(), s)?, parse_set(rest, s)?)
            } else {
                Req::Exists(check_key(part, s)?)
            };
            reqs.push(req);
        }
        Ok(LabelSelector { reqs })
    }

    /// From a structured `LabelSelector` (`matchLabels` and `matchExpressions`); an empty one
    /// matches everything.
    pub fn from_object(v: &Value) -> Result<LabelSelector, String> {
        let mut reqs = Vec::new();
        for (k, v) in obj::string_map(v.get("matchLabels")) {
            reqs.push(Req::Eq(k, v));
        }
        for e in obj::array_at(v, "/matchExpressions") {
            let key = e
                .get("key")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let values: Vec<String> = obj::array_at(e, "/values")
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect();
            let op = e.get("operator").and_then(Value::as_str).unwrap_or("");
            reqs.push(match op {
                "In" => Req::In(key, values),
                "NotIn" => Req::NotIn(key, values),
                "Exists" => Req::Exists(key),
                "DoesNotExist" => Req::NotExists(key),
                other => return Err(format!("\"{other}\" is not a valid selector operator")),
            });
        }
        Ok(LabelSelector { reqs })
    }

    pub fn is_empty(&self) -> bool {
        self.reqs.is_empty()
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.reqs.iter().all(|r| r.matches(labels))
    }

    pub fn matches_object(&self, o: &Value) -> bool {
        self.matches(&obj::labels(o))
    }

    /// The selector as a query string (`app=postgres`), for the scale subresource's status.
    pub fn to_query(&self) -> String {
        self.reqs
            .iter()
            .map(|r| match r {
                Req::Eq(k, v) => format!("{k}={v}"),
                Req::NotEq(k, v) => format!("{k}!={v}"),
                Req::In(k, vs) => format!("{k} in ({})", vs.join(",")),
                Req::NotIn(k, vs) => format!("{k} notin ({})", vs.join(",")),
                Req::Exists(k) => k.clone(),
                Req::NotExists(k) => format!("!{k}"),
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// A parsed field selector: `metadata.name=x,status.phase!=Running`.
#[derive(Debug, Clone, Default)]
pub struct FieldSelector {
    reqs: Vec<(String, bool, String)>,
}

impl FieldSelector {
    /// Any dotted path to a scalar is accepted (the real server allows a fixed set per kind:
    /// `metadata.name`, `metadata.namespace` everywhere, `status.phase`, `spec.nodeName`… on pods).
    pub fn parse(s: &str) -> Result<FieldSelector, ApiError> {
        let mut reqs = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, eq, v) = if let Some((k, v)) = part.split_once("!=") {
                (k, false, v)
            } else if let Some((k, v)) = part.split_once("==") {
                (k, true, v)
            } else if let Some((k, v)) = part.split_once('=') {
                (k, true, v)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: '{s}'; can't understand '{part}'"
                )));
            };
            let k = k.trim();
            if k.is_empty() || !k.split('.').all(|seg| !seg.is_empty()) {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {k}"
                )));
            }
            reqs.push((k.to_string(), eq, v.trim().to_string()));
        }
        Ok(FieldSelector { reqs })
    }

    pub fn matches(&self, o: &Value) -> bool {
        self.reqs.iter().all(|(path, eq, want)| {
            let mut cur = Some(o);
            for seg in path.split('.') {
                cur = cur.and_then(|c| c.get(seg));
            }
            let have = match cur {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Bool(b)) => b.to_string(),
                Some(Value::Number(n)) => n.to_string(),
                _ => String::new(),
            };
            (have == *want) == *eq
        })
    }
}
