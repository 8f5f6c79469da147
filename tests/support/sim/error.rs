//! API errors and the `Status` objects they become on the wire, worded like the real API server's
//! so that kube's `Error::Api` carries what a real cluster would send.

use serde_json::{json, Value};

use super::kinds::Kind;

/// A failed API call: becomes `{"kind":"Status","status":"Failure",…}` with `code`.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: u16,
    pub reason: String,
    pub message: String,
    /// Boxed: errors travel in `Result`s everywhere and should stay small.
    pub details: Option<Box<Value>>,
}

/// One field error of a 422.
#[derive(Debug, Clone)]
pub struct Cause {
    /// `FieldValueRequired`, `FieldValueInvalid`, `FieldValueForbidden`, …
    pub reason: &'static str,
    pub field: String,
    /// The part after `field: ` in the message, e.g. `Required value`.
    pub message: String,
}

impl Cause {
    pub fn required(field: impl Into<String>, detail: &str) -> Cause {
        let message = if detail.is_empty() {
            "Required value".to_string()
        } else {
            format!("Required value: {detail}")
        };
        Cause {
            reason: "FieldValueRequired",
            field: field.into(),
            message,
        }
    }

    pub fn invalid(field: impl Into<String>, value: &Value, detail: &str) -> Cause {
        let shown = match value {
            Value::String(s) => format!("\"{s}\""),
            other => other.to_string(),
        };
        Cause {
            reason: "FieldValueInvalid",
            field: field.into(),
            message: format!("Invalid value: {shown}: {detail}"),
        }
    }

    pub fn forbidden(field: impl Into<String>, detail: &str) -> Cause {
        Cause {
            reason: "FieldValueForbidden",
            field: field.into(),
            message: format!("Forbidden: {detail}"),
        }
    }

    pub fn immutable(field: impl Into<String>, value: &Value) -> Cause {
        Cause::invalid(field, value, "field is immutable")
    }

    pub fn duplicate(field: impl Into<String>, value: &Value) -> Cause {
        let shown = match value {
            Value::String(s) => format!("\"{s}\""),
            other => other.to_string(),
        };
        Cause {
            reason: "FieldValueDuplicate",
            field: field.into(),
            message: format!("Duplicate value: {shown}"),
        }
    }
}

impl ApiError {
    pub fn new(code: u16, reason: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            reason: reason.into(),
            message: message.into(),
            details: None,
        }
    }

    fn details(kind: &Kind, name: &str) -> Value {
        let mut d = json!({"name": name, "kind": kind.plural});
        if !kind.group.is_empty() {
            d["group"] = json!(kind.group);
        }
        d
    }

    pub fn not_found(kind: &Kind, name: &str) -> ApiError {
        ApiError {
            code: 404,
            reason: "NotFound".into(),
            message: format!("{} \"{name}\" not found", kind.resource()),
            details: Some(Box::new(Self::details(kind, name))),
        }
    }

    pub fn already_exists(kind: &Kind, name: &str) -> ApiError {
        ApiError {
            code: 409,
            reason: "AlreadyExists".into(),
            message: format!("{} \"{name}\" already exists", kind.resource()),
            details: Some(Box::new(Self::details(kind, name))),
        }
    }

    pub fn conflict(kind: &Kind, name: &str) -> ApiError {
        ApiError {
            code: 409,
            reason: "Conflict".into(),
            message: format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; \
                 please apply your changes to the latest version and try again",
                kind.resource()
            ),
            details: Some(Box::new(Self::details(kind, name))),
        }
    }

    pub fn conflict_msg(kind: &Kind, name: &str, why: &str) -> ApiError {
        ApiError {
            code: 409,
            reason: "Conflict".into(),
            message: format!(
                "Operation cannot be fulfilled on {} \"{name}\": {why}",
                kind.resource()
            ),
            details: Some(Box::new(Self::details(kind, name))),
        }
    }

    /// 422 Invalid, listing every cause like the real server.
    pub fn invalid(kind: &Kind, name: &str, causes: Vec<Cause>) -> ApiError {
        let parts: Vec<String> = causes
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect();
        let joined = if parts.len() == 1 {
            parts[0].clone()
        } else {
            format!("[{}]", parts.join(", "))
        };
        let mut details = json!({"name": name, "kind": kind.kind});
        if !kind.group.is_empty() {
            details["group"] = json!(kind.group);
        }
        details["causes"] = causes
            .iter()
            .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
            .collect();
        ApiError {
            code: 422,
            reason: "Invalid".into(),
            message: format!("{} \"{name}\" is invalid: {joined}", kind.qualified_kind()),
            details: Some(Box::new(details)),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "BadRequest", message)
    }

    pub fn forbidden(kind: &Kind, name: &str, why: &str) -> ApiError {
        ApiError {
            code: 403,
            reason: "Forbidden".into(),
            message: format!("{} \"{name}\" is forbidden: {why}", kind.resource()),
            details: Some(Box::new(Self::details(kind, name))),
        }
    }

    pub fn method_not_allowed(message: impl Into<String>) -> ApiError {
        ApiError::new(405, "MethodNotAllowed", message)
    }

    pub fn gone(message: impl Into<String>) -> ApiError {
        ApiError::new(410, "Expired", message)
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(500, "InternalError", message)
    }

    /// The reason the real server uses for a status code, for injected faults.
    pub fn reason_for(code: u16) -> &'static str {
        match code {
            400 => "BadRequest",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "NotFound",
            405 => "MethodNotAllowed",
            409 => "Conflict",
            410 => "Expired",
            415 => "UnsupportedMediaType",
            422 => "Invalid",
            429 => "TooManyRequests",
            500 => "InternalError",
            503 => "ServiceUnavailable",
            504 => "Timeout",
            _ => "Unknown",
        }
    }

    /// The `Status` object.
    pub fn to_status(&self) -> Value {
        let mut s = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": self.message, "reason": self.reason, "code": self.code,
        });
        if let Some(d) = &self.details {
            s["details"] = (**d).clone();
        }
        s
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.code, self.reason, self.message)
    }
}

impl std::error::Error for ApiError {}

/// A success `Status` (what deleting most objects returns).
pub fn success_status(kind: &Kind, name: &str, uid: &str) -> Value {
    let mut details = json!({"name": name, "kind": kind.plural, "uid": uid});
    if !kind.group.is_empty() {
        details["group"] = json!(kind.group);
    }
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
           "details": details})
}
